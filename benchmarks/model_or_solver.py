"""``wm model-or-solver``: is planning failing because of the world model or because of the solver?

On the standard planning pairs of a held-out dataset (`benchmarks.protocol.sample_pairs`:
start at step t of an expert episode, goal the state ``offset`` steps later), the first
decision of ``wm eval``'s MPC is made once per pair and set beside the expert's own path,
the recorded actions from the start to the goal, which reach the goal in the simulator by
construction. Per pair:

``cost_plan``, ``cost_expert``, ``cost_expert_held``
    The planning objective's cost under the model (`planners.MPCPolicy.score`, the numbers
    the solver compares its candidates by) of the solver's plan, of the expert's recorded
    actions, and of the expert's actions averaged over each action block and held (what a
    solver that holds one action per block, ``hold_actions``, can express; the expert's
    own actions otherwise).
``reached_plan``, ``reached_expert``, ``reached_expert_held``
    Whether each sequence, run open loop in the true env from the pair's start (the plan
    clipped to the action bounds as the policy clips it), reaches the env's success test at
    some step, as ``wm eval``'s episode does (it ends at the first success).
``true_distance_*``, ``final_distance_*``
    The env's smallest goal distance along each sequence, and the distance at its end
    (the step it reached the goal, or its last step).
``true_frame_cost_plan``, ...
    The squared distance between the encoding of each sequence's true final frame and the
    goal's (``terminal_l2``): what the plan would score with a perfect predictor.
``open_loop_error``, ``still_error``
    ``||rollout(z0, expert)[-1] - enc(true final frame)||^2`` and the nothing-moves error
    ``||z0 - enc(true final frame)||^2`` on the expert's path.

Summary (``model_or_solver.json``):

``solver_short``
    Pairs whose plan the model scores worse than the held expert path: a sequence the
    solver could express and the model prefers exists, and the solver did not find it.
    Many such pairs: a larger budget or a better solver would help under this model.
``model_misranks``
    Pairs whose plan the model scores at least as well as the held expert path although it
    truly does not reach the goal: the model leads the solver astray (a better solver
    would only find more such plans).
``reached_plan``, ``reached_expert``, ``reached_expert_held``
    Pairs whose sequence reaches the goal (``reached_expert`` should be every pair).
``open_loop_error_ratio``
    Sum of ``open_loop_error`` over sum of ``still_error``: the predictor's error on the
    expert's path as a fraction of the motion (0 perfect; 1 no better than predicting
    that nothing moves).
``verdict``
    ``"solver"`` when more than half the pairs are ``solver_short``, ``"model"`` when more
    than half are ``model_misranks``, else ``"mixed"``.

Reading it: the test judges the first plan only, open loop, while ``wm eval`` executes one
block of it and replans, so a model that plans well closed loop can still have many
``model_misranks`` (its first plans head the right way without arriving). ``solver_short``
near 0 says the search finds what the model asks for: more samples or iterations will not
raise success, a better model will. Compare checkpoints by ``model_misranks``,
``reached_plan`` and ``open_loop_error_ratio`` on the same pairs rather than reading one alone.

The test needs the plan and the expert path to span the same steps: the planner's
horizon times the model's frameskip must equal the protocol's offset (25 = 5 x 5 with
the defaults).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable

import numpy as np
import torch

from benchmarks.planning import PlannerConfig
from benchmarks.protocol import PlanningProtocol

SUMMARY_FILE = "model_or_solver.json"
PAIRS_FILE = "pairs.jsonl"
#: pairs whose environments are built and stepped at once
CHUNK = 16
#: relative slack before a plan counts as scored worse than the expert path (float noise of the batched rollout)
TOLERANCE = 1e-5


def check_spans(protocol: PlanningProtocol, planner_cfg: PlannerConfig, frameskip: int) -> None:
    """Refuse a protocol whose offset is not the plan's length (horizon x frameskip), by name."""
    steps = planner_cfg.horizon * frameskip
    if protocol.offset != steps:
        hint = (f" or --horizon {protocol.offset // frameskip}" if protocol.offset % frameskip == 0 else "")
        raise ValueError(
            f"offset={protocol.offset} but the plan spans horizon x frameskip = {planner_cfg.horizon} x {frameskip} = "
            f"{steps} steps: the test compares the plan with the expert's {protocol.offset} recorded steps from the "
            f"start to the goal; pass --offset {steps}{hint}")


def _held(blocks: np.ndarray, frameskip: int, action_dim: int) -> np.ndarray:
    """(P, H, f*A) -> (P, H, f*A): each block's f actions replaced by their mean, held."""
    P, H = blocks.shape[:2]
    mean = blocks.reshape(P, H, frameskip, action_dim).mean(2, keepdims=True)
    return np.broadcast_to(mean, (P, H, frameskip, action_dim)).reshape(P, H, frameskip * action_dim).copy()


def model_or_solver(
    model: Any,
    dataset: Any,
    protocol: PlanningProtocol,
    planner_cfg: PlannerConfig,
    device: str = "cpu",
    state_probe: Any = None,
    progress: Callable[[int, int], None] | None = None,
    pairs: list | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The test on ``protocol.episodes`` pairs of ``dataset`` (see the module docstring).

    Args:
        model: a world model (``config``, ``encode``, ``rollout``), in eval mode.
        dataset: an opened ``data.EpisodeDataset`` of held-out expert episodes.
        protocol: the pairs (offset = the plan's length in steps, episodes, seed).
        planner_cfg: the solver and objective, as ``wm eval`` takes them.
        device: torch device of the model.
        state_probe: the ``planners.StateProbe`` an objective with a ``state`` term reads.
        progress: called with (pairs done, pairs) after each chunk.
        pairs: the pairs, already drawn with ``protocol`` (`benchmarks.protocol.sample_pairs`);
            None draws them.

    Returns:
        (summary dict, one dict per pair).
    """
    import envs
    from benchmarks.planning import MPCChunks, build_mpc

    cfg = model.config
    f, A = int(cfg.frameskip), int(cfg.action_dim)
    check_spans(protocol, planner_cfg, f)
    H = planner_cfg.horizon
    env_id = dataset.meta["env_id"]
    resolution = int(dataset.meta["image_shape"][0])
    make = lambda: envs.make(env_id, resolution=resolution, render_mode="rgb_array")  # noqa: E731
    probe_env = make()
    if pairs is None:
        from benchmarks.protocol import sample_pairs

        pairs = sample_pairs(dataset, protocol, probe_env)
    policy = build_mpc(model, planner_cfg, probe_env.action_space, device=device, state_probe=state_probe)
    goal_states = None if state_probe is None else np.stack([np.asarray(p.goal_state, np.float32) for p in pairs])
    chunks = MPCChunks(policy, planner_cfg.seed, goal_states)  # each pair's solver stream as wm eval seeds it
    rows: list[dict[str, Any]] = []
    for lo in range(0, len(pairs), CHUNK):
        chunk = pairs[lo:lo + CHUNK]
        B = len(chunk)
        chunk_envs = [make() for _ in chunk]
        obs, goals, expert, start_distance = [], [], [], []
        for env, p in zip(chunk_envs, chunk):
            o, info = env.reset(seed=p.seed, options={"factors": p.factors, "state": p.start_state,
                                                      "goal_state": p.goal_state})
            obs.append(o)
            goals.append(env.unwrapped.render_goal())
            start_distance.append(float(info["goal_distance"]))
            acts = np.asarray(dataset.load_episode(p.episode_id, columns=("action",))["action"], np.float32)
            expert.append(acts[p.start_step:p.start_step + H * f].reshape(H, f * A))
        expert_blocks = np.stack(expert)  # (B, H, f*A)
        held_blocks = _held(expert_blocks, f, A) if planner_cfg.hold_actions else expert_blocks
        chunks.start(range(lo, lo + B))(np.stack(obs), np.stack(goals))  # the first decision: one plan per env
        plan = policy.last_result.actions
        plan = plan.repeat(1, 1, f) if policy.hold_actions else plan  # (B, H, f*A)
        low = torch.from_numpy(np.tile(policy.action_low, f)).to(plan.device)
        high = torch.from_numpy(np.tile(policy.action_high, f)).to(plan.device)
        plan = torch.minimum(torch.maximum(plan.float(), low), high)  # as the policy clips what it executes
        cand = torch.stack([plan, torch.from_numpy(expert_blocks).to(plan.device),
                            torch.from_numpy(held_blocks).to(plan.device)], dim=1)  # (B, 3, H, f*A)
        costs_b = policy.score(cand).float().cpu().numpy()  # (B, 3): plan, expert, held
        plan_np = plan.cpu().numpy()
        seqs = np.stack([plan_np, expert_blocks, held_blocks], 1).reshape(B, 3, H * f, A)
        nearest = np.full((B, 3), np.inf)
        final = np.zeros((B, 3))
        reached = np.zeros((B, 3), bool)
        frames = np.zeros((B, 3) + obs[0].shape, np.uint8)
        for i, (env, p) in enumerate(zip(chunk_envs, chunk)):
            for j in range(3):  # run open loop as wm eval runs an episode: it ends at the first success
                frames[i, j], _ = env.reset(seed=p.seed, options={"factors": p.factors, "state": p.start_state,
                                                                  "goal_state": p.goal_state})
                for action in seqs[i, j]:
                    frames[i, j], _, _, _, info = env.step(action)
                    nearest[i, j] = min(nearest[i, j], float(info["goal_distance"]))
                    final[i, j] = float(info["goal_distance"])
                    if info["success"]:
                        reached[i, j] = True
                        if j != 1:  # the expert path runs to its end: its last frame is the open-loop target
                            break
            env.close()
        with torch.inference_mode():
            px = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device).permute(0, 1, 4, 2, 3)  # noqa: E731
            z0_raw = model.encode(px(np.stack(obs)[:, None]))  # (B, 1, D)
            z0 = z0_raw[:, -1].float()  # (B, D)
            zg = model.encode(px(np.stack(goals)[:, None]))[:, -1].float()  # (B, D)
            zt = model.encode(px(frames.reshape((B * 3, 1) + obs[0].shape))).reshape(B, 3, -1).float()  # (B, 3, D)
            pred = model.rollout(z0_raw, torch.from_numpy(expert_blocks[:, None]).to(device))  # (B, 1, H, D)
            pred_final = pred[:, 0, -1].float()  # (B, D)
        true_cost = ((zt - zg[:, None]) ** 2).sum(-1).cpu().numpy()  # (B, 3)
        ol = ((pred_final - zt[:, 1]) ** 2).sum(-1).cpu().numpy()
        still = ((z0 - zt[:, 1]) ** 2).sum(-1).cpu().numpy()
        for i, p in enumerate(chunk):
            rows.append({
                "episode_id": int(p.episode_id), "start_step": int(p.start_step),
                "start_distance": start_distance[i],
                **{f"cost_{k}": float(costs_b[i, j]) for j, k in enumerate(("plan", "expert", "expert_held"))},
                **{f"reached_{k}": bool(reached[i, j]) for j, k in enumerate(("plan", "expert", "expert_held"))},
                **{f"true_distance_{k}": float(nearest[i, j]) for j, k in enumerate(("plan", "expert", "expert_held"))},
                **{f"final_distance_{k}": float(final[i, j]) for j, k in enumerate(("plan", "expert", "expert_held"))},
                **{f"true_frame_cost_{k}": float(true_cost[i, j]) for j, k in enumerate(("plan", "expert", "expert_held"))},
                "open_loop_error": float(ol[i]), "still_error": float(still[i]),
            })
        if progress is not None:
            progress(len(rows), len(pairs))
    probe_env.close()
    return summarize(rows), rows


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The summary keys (module docstring) of the per-pair rows of `model_or_solver`."""
    if not rows:
        raise ValueError("no pairs to summarize")
    n = len(rows)
    short = [r["cost_plan"] > r["cost_expert_held"] + TOLERANCE * max(abs(r["cost_expert_held"]), 1e-12) for r in rows]
    misranks = [not s and not r["reached_plan"] for s, r in zip(short, rows)]
    med = lambda k: float(np.median([r[k] for r in rows]))  # noqa: E731
    still = sum(r["still_error"] for r in rows)
    out = {
        "pairs": n,
        "solver_short": int(sum(short)),
        "solver_short_fraction": sum(short) / n,
        "model_misranks": int(sum(misranks)),
        "model_misranks_fraction": sum(misranks) / n,
        **{f"reached_{k}": int(sum(r[f"reached_{k}"] for r in rows)) for k in ("plan", "expert", "expert_held")},
        "open_loop_error_ratio": (sum(r["open_loop_error"] for r in rows) / still) if still > 0 else None,
        "median": {k: med(k) for k in ("start_distance", "cost_plan", "cost_expert", "cost_expert_held",
                                       "true_distance_plan", "true_distance_expert", "true_distance_expert_held",
                                       "true_frame_cost_plan", "true_frame_cost_expert", "true_frame_cost_expert_held")},
    }
    out["verdict"] = ("solver" if out["solver_short_fraction"] > 0.5 else
                      "model" if out["model_misranks_fraction"] > 0.5 else "mixed")
    return out


def summary_lines(result: dict[str, Any]) -> list[str]:
    """A few human-readable lines of a `run_model_or_solver` result."""
    m = result["median"]
    n = result["pairs"]
    ratio = result["open_loop_error_ratio"]
    return [
        f"{result['env_id']}: {n} pairs of {result['dataset']}, solver {result['planner']['planner']}",
        f"solver_short    {result['solver_short']}/{n}: the solver's plan scores worse under the model than the "
        f"expert's path held per block",
        f"model_misranks  {result['model_misranks']}/{n}: the plan scores at least as well as the expert's path but "
        f"truly does not reach the goal",
        f"reached         plan {result['reached_plan']}/{n}, expert {result['reached_expert']}/{n}, expert held "
        f"{result['reached_expert_held']}/{n} (open loop in the true env)",
        f"median cost     plan {m['cost_plan']:.4g}, expert {m['cost_expert']:.4g}, expert held "
        f"{m['cost_expert_held']:.4g} (predicted); true final frames: plan {m['true_frame_cost_plan']:.4g}, expert "
        f"{m['true_frame_cost_expert']:.4g}",
        f"median distance start {m['start_distance']:.4g}; nearest along the sequence: plan {m['true_distance_plan']:.4g}, "
        f"expert {m['true_distance_expert']:.4g}, expert held {m['true_distance_expert_held']:.4g}",
        "open_loop       " + ("-" if ratio is None else f"{ratio:.3f}") + " of the nothing-moves error on the expert's path",
        f"verdict         {result['verdict']}",
    ] + [f"note: {x}" for x in result.get("notes", [])]


def run_model_or_solver(
    ckpt: str | os.PathLike,
    data: str | os.PathLike,
    out_dir: str | os.PathLike,
    protocol: PlanningProtocol | None = None,
    planner_cfg: PlannerConfig | None = None,
    device: str = "cpu",
    allow_train_episodes: bool = False,
    log: Callable[[str], None] | None = None,
    model: Any = None,
) -> dict[str, Any]:
    """``wm model-or-solver``: load ``ckpt``, run the test on ``data``'s pairs, write
    ``out_dir/model_or_solver.json`` (the summary, settings and notes) and ``pairs.jsonl``.

    Args:
        ckpt: checkpoint folder.
        data: held-out expert episodes of the env the checkpoint trained on.
        out_dir: output folder (created).
        protocol: the pairs (default: ``PlanningProtocol()``, offset 25, 50 pairs).
        planner_cfg: solver and objective (default: ``PlannerConfig()``).
        device: torch device name.
        allow_train_episodes: pairs from episodes the checkpoint trained on are refused unless set.
        log: a line-printing function for notes and progress.
        model: an already built model instead of ``ckpt``'s (tests); ``ckpt`` is still read for its record.

    Raises:
        ValueError (or subclasses): offset != horizon x frameskip, a dataset of another env, frame or
        action size, too few pairs, pairs from training episodes (without ``allow_train_episodes``).
    """
    from benchmarks.diagnose import _write_json, open_checked
    from benchmarks.leaks import check_train_episodes, checkpoint_record
    from benchmarks.protocol import sample_pairs

    t0 = time.perf_counter()
    protocol = protocol or PlanningProtocol()
    planner_cfg = planner_cfg or PlannerConfig()
    out, model, dataset, trained_on, notes = open_checked(ckpt, data, out_dir, device, model)
    check_spans(protocol, planner_cfg, int(model.config.frameskip))
    state_probe = None
    from planners.objectives import parse_objective

    if parse_objective(planner_cfg.objective).get("state", 0) > 0:
        from benchmarks.state_probe import load_or_fit_state_probe

        state_probe = load_or_fit_state_probe(ckpt, model, device=device, log=log)
    # the leak check needs the pairs' episodes: draw them as the test will (same protocol, same env)
    import envs

    env = envs.make(dataset.meta["env_id"], resolution=int(dataset.meta["image_shape"][0]))
    drawn = sample_pairs(dataset, protocol, env)
    env.close()
    leak, leak_notes = check_train_episodes(checkpoint_record(trained_on), dataset, [p.episode_id for p in drawn],
                                            allow=allow_train_episodes)
    notes += leak_notes
    for note in notes:
        if log:
            log(f"note: {note}")
    say = (lambda done, total: log(f"model-or-solver: {done}/{total} pairs, {time.perf_counter() - t0:.0f} s")) \
        if log else None
    summary, rows = model_or_solver(model, dataset, protocol, planner_cfg, device=device, state_probe=state_probe,
                                    progress=say, pairs=drawn)
    result = {
        **summary,
        "checkpoint": str(ckpt),
        "dataset": str(dataset.path),
        "env_id": dataset.meta["env_id"],
        "protocol": protocol.to_dict(),
        "planner": planner_cfg.to_dict(),
        **leak,
        "notes": notes,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / SUMMARY_FILE, result)
    with open(out / PAIRS_FILE, "w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    return result
