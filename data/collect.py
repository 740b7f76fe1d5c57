"""`collect`: roll a scripted policy in an environment and write the episodes.

With ``workers > 1`` the environments run in worker processes (started with the
method chosen for this call, ``forkserver`` by default: safe with MuJoCo's GL contexts
and Lance's threads; the process-wide default start method is never touched). Workers
roll out and encode whole episodes; the parent is the one `EpisodeWriter` and commits
them in seed order, so a dataset collected with any number of workers holds the same
episodes under the same ids.

Imports nothing heavy at module level: `data/__init__.py` imports this module eagerly
so that `data.collect` is the function, not this module.
"""

from __future__ import annotations

import os
import queue
import sys
import time
import traceback
from typing import Any

WORKER_POLL_SECONDS = 1.0


def collect(
    env_id: str,
    episodes: int,
    out: str | os.PathLike,
    policy: str = "expert",
    split: str | None = None,
    codec: str | None = None,
    seed: int = 0,
    mode: str = "append",
    progress: bool = False,
    max_steps: int | None = None,
    env_kwargs: dict | None = None,
    workers: int = 1,
    start_method: str | None = None,
    severity: int | None = None,
    noise: float | None = None,
    commit_every: int = 1,
    **kwargs: Any,
) -> dict:
    """Collect `episodes` episodes of `env_id` with `envs.make_policy(policy)` into `out`.

    Episode i is reset with seed `seed + i` (env and policy) and, when `split` is given,
    ``options={"split": split}`` (plus ``"severity"`` when given); the split and seed are
    recorded per episode, so any episode can be replayed exactly. Rows follow the store's
    convention (N actions -> N+1 rows; the recorded action is the one the env executed,
    clipped to its action box). `max_steps` caps actions per episode (the last row is
    then marked truncated). `workers` > 1 runs the envs in that many processes started
    with `start_method` (default ``forkserver``); `noise` is the expert's action-noise
    std (None: the policy default). `commit_every` > 1 commits that many whole episodes
    at once (faster for short episodes; a crash loses at most the uncommitted ones, see
    `EpisodeWriter`). `env_kwargs` (and any other keyword, e.g.
    ``resolution=32``) go to `envs.make`.

    Returns ``{"episodes", "steps" (rows written), "seconds", "steps_per_s", "path", "workers"}``.
    """
    import numpy as np

    import envs  # lazy: `import data` stays light and free of env dependencies

    from .codecs import check_codec, default_codec
    from .dataset import read_meta
    from .writer import EpisodeWriter

    if isinstance(episodes, bool) or not isinstance(episodes, (int, np.integer)) or episodes < 0:
        raise ValueError(f"episodes must be an integer >= 0, got {episodes!r}")
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    if codec is not None:
        check_codec(codec)
    make_kwargs = {**(env_kwargs or {}), **kwargs}
    options = _reset_options(split, severity)

    # One env in the parent: checks the id, the policy and the options before any work
    # starts, and gives the frame shape, action box and time limit.
    env = envs.make(env_id, **make_kwargs)
    try:
        if max_steps is None and _time_limit(env) is None:
            raise ValueError(f"{env_id} has no time limit; pass max_steps to bound the episodes")
        envs.make_policy(policy, env, noise)
        obs, _ = env.reset(seed=seed, options=options)
        image_shape = tuple(np.asarray(obs).shape)
        space = env.action_space
        action_dim = int(np.prod(space.shape)) if getattr(space, "shape", None) else None
        fps = env.metadata.get("render_fps")
    finally:
        env.close()
    if codec is None:
        try:
            codec = read_meta(out)["codec"] if mode == "append" else None
        except Exception:
            codec = None
        codec = codec or default_codec(image_shape)

    job = dict(
        env_id=env_id, make_kwargs=make_kwargs, policy=policy, noise=noise, options=options,
        max_steps=max_steps, codec=codec, seed=int(seed),
    )
    show = progress and sys.stderr.isatty()
    rows = 0
    t0 = time.perf_counter()
    with EpisodeWriter(out, mode=mode, codec=codec, env_id=env_id, action_dim=action_dim, fps=fps, commit_every=commit_every) as writer:
        source = _episodes_in_process(job, episodes) if workers == 1 else _episodes_in_workers(job, episodes, workers, start_method)
        for i, ep in source:
            for t in range(len(ep["frames"])):
                last = t == len(ep["frames"]) - 1
                writer.add_step(
                    ep["frames"][t],
                    ep["states"][t],
                    None if last else ep["actions"][t],
                    float(ep["rewards"][t]),
                    bool(last and ep["terminated"]),
                    bool(last and ep["truncated"]),
                )
            rows += writer.buffered_steps
            writer.save_episode(seed=int(seed) + i, factors=ep["factors"], policy=policy, split=split or "default")
            if show:
                rate = rows / max(time.perf_counter() - t0, 1e-9)
                print(f"\rcollect {env_id}: episode {i + 1}/{episodes}, {rows} steps, {rate:,.0f} steps/s", end="", file=sys.stderr, flush=True)
    if show:
        print(file=sys.stderr)
    seconds = time.perf_counter() - t0
    return {
        "episodes": int(episodes),
        "steps": rows,
        "seconds": seconds,
        "steps_per_s": rows / seconds if seconds > 0 else 0.0,
        "path": str(out),
        "workers": int(workers),
    }


def _reset_options(split: str | None, severity: int | None) -> dict | None:
    if severity is not None and split is None:
        raise ValueError(f"severity={severity!r} needs an OOD split (e.g. split='ood')")
    if split is None:
        return None
    return {"split": split} if severity is None else {"split": split, "severity": severity}


def _time_limit(env: Any) -> int | None:
    """The env's step limit: its spec's, or a TimeLimit wrapper's anywhere in the chain."""
    limit = getattr(getattr(env, "spec", None), "max_episode_steps", None)
    while limit is None and env is not None:
        limit = getattr(env, "_max_episode_steps", None)
        env = getattr(env, "env", None)
    return limit


class _Roller:
    """One env + policy; `episode(i)` rolls episode i and returns it encoded."""

    def __init__(self, job: dict) -> None:
        import numpy as np

        import envs

        self.job = job
        self.env = envs.make(job["env_id"], **job["make_kwargs"])
        self.policy = envs.make_policy(job["policy"], self.env, job["noise"])
        space = self.env.action_space
        self.low = np.asarray(getattr(space, "low", -np.inf), np.float32)
        self.high = np.asarray(getattr(space, "high", np.inf), np.float32)

    def episode(self, i: int) -> dict:
        """Episode i (seed = job seed + i): encoded frames (T,), states (T, S), actions (T-1, A), rewards (T,), flags, factors."""
        import numpy as np

        from .codecs import EncodedFrame

        job, env, pol = self.job, self.env, self.policy
        ep_seed = job["seed"] + i
        obs, info = env.reset(seed=ep_seed, options=job["options"])
        pol.reset(ep_seed)
        frames, states, actions, rewards = [EncodedFrame.encode(obs, job["codec"])], [info["state"]], [], [0.0]
        terminated = truncated = False
        max_steps = job["max_steps"]
        while not (terminated or truncated):
            if max_steps is not None and len(actions) >= max_steps:
                truncated = True
                break
            action = np.clip(np.asarray(pol(obs, info), np.float32), self.low, self.high)
            obs, reward, terminated, truncated, info = env.step(action)
            actions.append(action)
            frames.append(EncodedFrame.encode(obs, job["codec"]))
            states.append(info["state"])
            rewards.append(float(reward))
        return {
            "frames": frames,
            "states": np.stack(states),
            "actions": np.stack(actions) if actions else np.zeros((0,) + self.low.shape, np.float32),
            "rewards": np.asarray(rewards, np.float32),
            "terminated": bool(terminated),
            "truncated": bool(truncated),
            "factors": dict(info.get("factors", {})),
        }

    def close(self) -> None:
        self.env.close()


def _episodes_in_process(job: dict, episodes: int):
    roller = _Roller(job)
    try:
        for i in range(episodes):
            yield i, roller.episode(i)
    finally:
        roller.close()


def _worker_main(job: dict, worker: int, workers: int, episodes: int, results: Any, parent_pid: int) -> None:
    """Roll episodes worker, worker + workers, ... and put ``(i, episode)`` on `results`
    (``(-1, traceback)`` on failure)."""
    try:
        roller = _Roller(job)
        for i in range(worker, episodes, workers):
            item = (i, roller.episode(i))
            while True:  # bounded queue: wait for the parent, but not for a dead one
                try:
                    results.put(item, timeout=WORKER_POLL_SECONDS)
                    break
                except queue.Full:
                    if os.getppid() != parent_pid:
                        return
        roller.close()
    except BaseException:
        results.put((-1, traceback.format_exc()))


def _episodes_in_workers(job: dict, episodes: int, workers: int, start_method: str | None):
    """Yield ``(i, episode)`` in order of i from `workers` processes.

    Worker w rolls episodes w, w + workers, ...; each has its own queue of two
    episodes, so the parent reads them back in order with bounded memory.
    """
    import multiprocessing as mp

    method = start_method or ("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
    if method not in mp.get_all_start_methods():
        raise ValueError(f"start_method={method!r}: expected one of {mp.get_all_start_methods()}")
    ctx = mp.get_context(method)  # this call only; the global default is left alone
    workers = min(workers, max(episodes, 1))
    queues = [ctx.Queue(maxsize=2) for _ in range(workers)]
    procs = [
        ctx.Process(target=_worker_main, args=(job, w, workers, episodes, queues[w], os.getpid()), daemon=True)
        for w in range(workers)
    ]
    for p in procs:
        p.start()
    try:
        for want in range(episodes):
            w = want % workers
            while True:
                alive = procs[w].is_alive()  # checked *before* waiting: a worker may put its last item and exit
                try:
                    i, ep = queues[w].get(timeout=WORKER_POLL_SECONDS)
                    break
                except queue.Empty:
                    if not alive:
                        raise RuntimeError(
                            f"collection worker {w} exited (code {procs[w].exitcode}) before sending episode {want}"
                        ) from None
            if i < 0:
                raise RuntimeError(f"collection worker {w} failed:\n{ep}")
            if i != want:
                raise RuntimeError(f"collection worker {w} sent episode {i}, expected {want}")
            yield want, ep
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout=5)
        for q in queues:
            q.close()
            q.cancel_join_thread()
