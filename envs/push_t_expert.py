"""Scripted pusher for `envs.push_t.PushTEnv`: pick a contact, walk around the T to it, push."""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np

from envs.push_t import ACTION_SCALE, OUTER_WALL, wrap_angle


class PushTExpert:
    """Greedy quasi-static pusher that reads the true state through ``env.unwrapped``.

    Model: with the block's viscous floor friction, a push of direction ``d`` at the
    block-frame contact ``c`` moves the block with twist proportional to
    ``(d, (c x d) / k^2)``, k the block's radius of gyration. Every step the expert

    1. scores candidate pushes (points every ~1 cm along the T's edges, directions the
       inward normal and +/-`PUSH_ANGLE` inside the friction cone) by the cosine between
       their twist and the twist that closes the pose error (position error, angle
       error times k); pushes whose approach points the agent cannot reach (inside the
       block's pocket, outside the arena) are skipped;
    2. keeps its current push while it is in contact and still scores well (hysteresis),
       else takes the best one;
    3. if touching the contact, pushes through it by an amount proportional to the
       remaining error (slowing down near the goal); else walks to a point behind the
       contact, circling around the block when the straight path would hit it.

    Actions are ``(target - agent) / ACTION_SCALE`` clipped to the unit disc, plus
    Gaussian noise of std `noise` per component, clipped to [-1, 1].
    """

    SPACING = 0.01
    PUSH_ANGLE = 0.35
    GAP = 0.006  # approach point: this far behind the contact, beyond the agent radius
    BACKOFF = 0.05  # pre-approach point: this far behind the contact, beyond the agent radius
    CLEAR = 0.008  # detours keep this far from the block, beyond the agent radius
    KEEP_MARGIN = 0.2  # a new push must beat the current one's score by this much
    MIN_SCORE = 0.3  # the current push is dropped below this score

    def __init__(self, env: gym.Env, noise: float = 0.3) -> None:
        """Bind to `env` (read through ``env.unwrapped``)."""
        self.env = env.unwrapped
        self.noise = float(noise)
        self._rng = np.random.default_rng()
        self._key: tuple | None = None
        self._current: int | None = None

    def reset(self, seed: int | None = None) -> None:
        """Re-seed the noise generator and forget the current push."""
        self._rng = np.random.default_rng(seed)
        self._current = None

    # -- candidate pushes, in the block frame ------------------------------------------
    def _prepare(self) -> None:
        """Candidate contacts, directions and twists for the current block geometry."""
        env = self.env
        f = env.factors
        key = (f["block_scale"], f["stem_length"], f["agent_radius"])
        if key == self._key:
            return
        self._key = key
        r = env.agent_radius
        outline = env.block_outline
        contacts, dirs = [], []
        for i in range(len(outline)):
            a, b = outline[i], outline[(i + 1) % len(outline)]
            edge = b - a
            length = float(np.hypot(*edge))
            t_hat = edge / length
            normal = np.array([-t_hat[1], t_hat[0]])
            mid = (a + b) / 2
            if env.block_distance(mid + normal * 1e-4, (0.0, 0.0, 0.0)) > 0:  # make it point inwards
                normal = -normal
            n = max(int(length / self.SPACING), 1)
            for s in (np.arange(n) + 0.5) / n:
                c = a + edge * s
                for beta in (-self.PUSH_ANGLE, 0.0, self.PUSH_ANGLE):
                    cb, sb = math.cos(beta), math.sin(beta)
                    d = np.array([cb * normal[0] - sb * normal[1], sb * normal[0] + cb * normal[1]])
                    contacts.append(c)
                    dirs.append(d)
        contacts, dirs = np.array(contacts), np.array(dirs)
        approach = contacts - dirs * (r + self.GAP)
        pre = contacts - dirs * (r + self.BACKOFF)
        ok = np.ones(len(contacts), bool)
        for j in range(len(contacts)):  # the agent must fit at and on the way to the approach point
            for s in np.linspace(0.0, 1.0, 6):
                p = pre[j] + (approach[j] - pre[j]) * s
                if env.block_distance(p, (0.0, 0.0, 0.0)) < r + (self.CLEAR if s == 0.0 else 0.5 * self.GAP):
                    ok[j] = False
                    break
        contacts, dirs, approach, pre = contacts[ok], dirs[ok], approach[ok], pre[ok]
        # radius of gyration of the T about its centre (uniform density)
        bar, stem = (np.array(p) for p in _rects(env))
        k2 = _gyration2(bar, stem)
        self._k = math.sqrt(k2)
        torque = contacts[:, 0] * dirs[:, 1] - contacts[:, 1] * dirs[:, 0]
        twist = np.column_stack([dirs, torque / k2 * self._k])  # rotation scaled by k
        self._twist = twist / np.linalg.norm(twist, axis=1, keepdims=True)
        self._contacts, self._dirs, self._approach, self._pre = contacts, dirs, approach, pre
        self._extent = float(np.max(np.hypot(*env.block_outline.T)))
        self._rect_boxes = [(p.mean(0), (p.max(0) - p.min(0)) / 2) for p in (bar, stem)]
        self._current = None

    # -- policy ----------------------------------------------------------------------
    def target(self) -> np.ndarray:
        """The point (2,) the agent heads for now (world units)."""
        self._prepare()
        env = self.env
        s, goal = env.state, env.goal_state
        agent, (bx, by, ang) = s[:2], s[2:5]
        r = env.agent_radius
        c, sn = math.cos(ang), math.sin(ang)
        rot = np.array([[c, sn], [-sn, c]])  # row vectors @ rot = rotated
        centre = np.array([bx, by])
        err = goal[:2] - centre
        err_ang = wrap_angle(float(goal[2]) - ang)
        # desired twist in the block frame (rotation scaled by k, as the candidates')
        err_local = err @ rot.T
        want = np.array([err_local[0], err_local[1], err_ang * self._k])
        size = float(np.linalg.norm(want))
        if size < 1e-9:
            return agent.copy()
        scores = self._twist @ (want / size)
        approach_w = self._approach @ rot + centre
        pre_w = self._pre @ rot + centre
        lo, hi = OUTER_WALL + r + 0.002, 1.0 - OUTER_WALL - r - 0.002
        reachable = np.all((approach_w >= lo) & (approach_w <= hi) & (pre_w >= lo) & (pre_w <= hi), axis=1)
        scores = np.where(reachable, scores, -np.inf)
        best = int(np.argmax(scores))
        cur = self._current
        if cur is not None:
            touch = self._contacts[cur] @ rot + centre - (self._dirs[cur] @ rot) * r
            in_contact = float(np.hypot(*(agent - touch))) < 0.02
            if scores[cur] < self.MIN_SCORE or (scores[best] > scores[cur] + self.KEEP_MARGIN and not in_contact) or (
                scores[best] > scores[cur] + 2 * self.KEEP_MARGIN
            ):
                cur = best
        else:
            cur = best
        self._current = cur
        d = self._dirs[cur] @ rot
        contact = self._contacts[cur] @ rot + centre
        touch = contact - d * r
        app, pre = approach_w[cur], pre_w[cur]
        # pushing: the agent is on the contact's line, near the contact
        rel = agent - touch
        along, across = float(rel @ d), float(rel[0] * d[1] - rel[1] * d[0])
        if abs(across) < 0.012 and -(self.BACKOFF + 0.01) < along < 0.01:
            if along > -(self.GAP + 0.006):
                need = float(np.hypot(*err)) + self._k * abs(err_ang)
                push = min(ACTION_SCALE, 0.5 * need + 0.005)
                return touch + d * push
            return app
        # walk to the pre-approach point around the block
        return self._detour(agent, pre, centre, r, lo, hi, (bx, by, ang))

    def _detour(
        self, agent: np.ndarray, goal: np.ndarray, centre: np.ndarray, r: float, lo: float, hi: float, pose: tuple
    ) -> np.ndarray:
        """First waypoint of the shortest path to `goal` that keeps clear of the block.

        The path runs through nodes on two rings around the block (clipped to the arena);
        an edge is usable when sampled points along it keep ``r + 0.008`` from the T.
        """
        clear = r + self.CLEAR
        ts = np.linspace(0.0, 1.0, 9)[:, None, None]
        if np.all(self._distance(agent + (goal - agent) * ts[:, 0], pose) > clear):
            return goal
        rings = []
        for rad, count in ((self._extent + r + 0.02, 16), (0.65 * self._extent + r + 0.02, 16)):
            phi = np.arange(count) * (2 * math.pi / count)
            rings.append(centre + rad * np.column_stack([np.cos(phi), np.sin(phi)]))
        nodes = np.clip(np.concatenate(rings), lo, hi)
        nodes = nodes[self._distance(nodes, pose) > clear]
        pts = np.concatenate([agent[None], goal[None], nodes])  # 0: start, 1: goal
        n = len(pts)
        a, b = np.triu_indices(n, 1)
        samples = pts[a][None] + (pts[b] - pts[a])[None] * ts  # (9, E, 2)
        # the agent may start grazing the block: edges from the start need less clearance
        need = np.where(a == 0, r + 0.002, clear)
        ok = np.all(self._distance(samples.reshape(-1, 2), pose).reshape(len(ts), -1) > need, axis=0)
        length = np.hypot(*(pts[b] - pts[a]).T)
        cost = np.full((n, n), np.inf)
        cost[a[ok], b[ok]] = length[ok]
        cost[b[ok], a[ok]] = length[ok]
        dist = np.full(n, np.inf)
        prev = np.full(n, -1)
        dist[0] = 0.0
        done = np.zeros(n, bool)
        for _ in range(n):  # Dijkstra on a dense graph of at most 34 nodes
            u = int(np.argmin(np.where(done, np.inf, dist)))
            if not np.isfinite(dist[u]) or u == 1:
                break
            done[u] = True
            alt = dist[u] + cost[u]
            better = alt < dist
            dist[better], prev[better] = alt[better], u
        if not np.isfinite(dist[1]):  # boxed in: step away from the block centre
            away = agent - centre
            return np.clip(agent + 0.05 * away / max(float(np.hypot(*away)), 1e-9), lo, hi)
        node = 1
        while prev[node] != 0:
            node = int(prev[node])
        return pts[node]

    def _distance(self, points: np.ndarray, pose: tuple) -> np.ndarray:
        """Signed distances (N,) from world `points` (N, 2) to the T at `pose`."""
        x, y, ang = pose
        c, s = math.cos(ang), math.sin(ang)
        dx, dy = points[:, 0] - x, points[:, 1] - y
        local = np.column_stack([c * dx + s * dy, -s * dx + c * dy])
        best = np.full(len(points), np.inf)
        for centre, half in self._rect_boxes:
            q = np.abs(local - centre) - half
            d = np.hypot(np.maximum(q[:, 0], 0.0), np.maximum(q[:, 1], 0.0)) + np.minimum(np.maximum(q[:, 0], q[:, 1]), 0.0)
            best = np.minimum(best, d)
        return best

    def __call__(self, obs: np.ndarray, info: dict) -> np.ndarray:
        """Action toward the current target, float32 (2,)."""
        agent = self.env.state[:2]
        move = (self.target() - agent) / ACTION_SCALE
        norm = float(np.hypot(*move))
        if norm > 1.0:
            move = move / norm
        if self.noise > 0.0:
            move = move + self._rng.normal(0.0, self.noise, size=2)
        return np.clip(move, -1.0, 1.0).astype(np.float32)


def _rects(env: Any) -> tuple[np.ndarray, np.ndarray]:
    from envs.push_t import t_parts

    f = env.factors
    return t_parts(f["block_scale"], f["stem_length"])


def _gyration2(bar: np.ndarray, stem: np.ndarray) -> float:
    """Squared radius of gyration about the origin of two uniform rectangles."""
    total, moment = 0.0, 0.0
    for p in (bar, stem):
        size = p.max(0) - p.min(0)
        area = float(size[0] * size[1])
        centre = p.mean(0)
        total += area
        moment += area * (float(size @ size) / 12.0 + float(centre @ centre))
    return moment / total
