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
import time
import traceback
from typing import Any, Sequence

WORKER_POLL_SECONDS = 1.0
SEED_LIMIT = 2**63  # seeds are stored as int64: seed + episodes - 1 must stay below this


class CollectInterrupted(KeyboardInterrupt):
    """Collection stopped by Ctrl-C (or SIGTERM under `data.interrupts.StopOnSignal`) after the
    writer committed every whole episode it had: `saved` episodes are in the dataset at
    `path`, `new` of them from this call; `signal` is ``"SIGINT"`` or ``"SIGTERM"``."""

    def __init__(self, path: str, saved: int, new: int, signal: str):
        super().__init__(f"{path}: interrupted by {signal}; {saved} episodes saved ({new} new)")
        self.path, self.saved, self.new, self.signal = path, saved, new, signal


def next_seed(out: str | os.PathLike) -> int:
    """The first seed after every episode seed already in the dataset at `out` (0 when
    there is no dataset or no seeded episode there)."""
    from .dataset import EpisodeDataset
    from .errors import DatasetError

    try:
        rows = EpisodeDataset(out)._episode_rows
    except DatasetError:
        return 0
    seeds = [r["seed"] for r in rows if r.get("seed") is not None]
    return max(seeds) + 1 if seeds else 0


def check_seed(seed: Any, episodes: int) -> int:
    """`seed` as an int if episodes ``seed .. seed + episodes - 1`` are valid seeds (>= 0,
    below 2**63); a ValueError naming the value and the range otherwise."""
    import numpy as np

    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed={seed!r}: expected an integer")
    top = SEED_LIMIT - max(int(episodes), 1)
    if not 0 <= int(seed) <= top:
        raise ValueError(f"seed={seed}: expected an integer in [0, {top}] (episode i uses seed + i, stored as int64)")
    return int(seed)


def collect(
    env_id: str,
    episodes: int,
    out: str | os.PathLike,
    policy: str = "expert",
    split: str | None = None,
    codec: str | None = None,
    seed: int | None = None,
    mode: str = "append",
    progress: bool = False,
    max_steps: int | None = None,
    env_kwargs: dict | None = None,
    workers: int = 1,
    start_method: str | None = None,
    severity: int | None = None,
    noise: float | None = None,
    commit_every: int = 1,
    stop_on_success: bool = False,
    factors: dict | None = None,
    ood_factors: Sequence[str] | None = None,
    codec_options: Any = None,
    **kwargs: Any,
) -> dict:
    """Collect `episodes` episodes of `env_id` with `envs.make_policy(policy)` into `out`.

    Episode i is reset with seed `seed + i` (env and policy) and, when `split` is given,
    ``options={"split": split}`` (plus ``"severity"`` when given); the split and seed are
    recorded per episode, so any episode can be replayed exactly (`seed` None: 0, or when
    appending, the seed after the highest one on disk, see `next_seed`). Rows follow the store's
    convention (N actions -> N+1 rows; the recorded action is the one the env executed,
    clipped to its action box). `max_steps` caps actions per episode (the last row is
    then marked truncated); a `max_steps` above the env's time limit lifts the limit to it
    (``max_episode_steps``), so episodes can run longer than the registered limit. `workers` > 1 runs the envs in that many processes started
    with `start_method` (default ``forkserver``); `noise` is the expert's action-noise
    std (None: the policy default). `commit_every` > 1 commits that many whole episodes
    at once (faster for short episodes; a crash loses at most the uncommitted ones, see
    `EpisodeWriter`). `codec_options`: settings of the ``h264`` codec (gop, crf, preset,
    pix_fmt, lossless; see `EpisodeWriter`); h264 episodes are encoded whole, in the
    worker that rolled them. `env_kwargs` (and any other keyword, e.g.
    ``resolution=32``) go to `envs.make`.

    Episodes run on past success to the env's time limit (or `max_steps`), as fixed-length
    datasets are recorded, through the env's ``terminate_on_success=False`` switch (a
    terminated env is never stepped; an env without the switch still ends at termination).
    `stop_on_success` ends each episode at its first success instead. `factors` (``{name:
    value}``) fixes those factors in every episode, on top of the `split`'s draw of the others
    (the env validates them; each episode records the values it ran with). `ood_factors`
    (names) draws those factors from their OOD ranges in every episode (at `severity` if
    given), the others following `split` (a one-factor-at-a-time shift). Either way the
    first success row is recorded per episode (``success_step``, -1 if none; see
    `EpisodeDataset.success_summary`), except for a policy that does not pursue the
    episode's goal (``pursues_env_goal = False``: ``"expert-tour"``), whose episodes record
    none (None) and which `stop_on_success` refuses.

    Ctrl-C (KeyboardInterrupt) stops it after committing every whole episode rolled so
    far and raises `CollectInterrupted` saying how many are saved; the dataset stays sound.
    `progress` shows a bar on a terminal and a line every 15 s elsewhere.

    Returns ``{"episodes", "steps" (rows written), "seconds", "steps_per_s", "path", "workers", "seed"}``.
    """
    import numpy as np

    import envs  # lazy: `import data` stays light and free of env dependencies

    from .codecs import check_codec, default_codec
    from .dataset import read_meta
    from .interrupts import Terminated
    from .writer import EpisodeWriter
    from worldmodel.progress import ProgressBar

    if isinstance(episodes, bool) or not isinstance(episodes, (int, np.integer)) or episodes < 0:
        raise ValueError(f"episodes must be an integer >= 0, got {episodes!r}")
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    if codec is not None:
        check_codec(codec)
    if seed is None:
        seed = next_seed(out) if mode == "append" else 0
    seed = check_seed(seed, episodes)
    make_kwargs = {**(env_kwargs or {}), **kwargs}
    options = _reset_options(split, severity, factors, ood_factors)
    envs.env_class(env_id)  # an id this project does not register: UnknownEnvError naming it
    if max_steps is not None:
        if isinstance(max_steps, bool) or not isinstance(max_steps, (int, np.integer)) or max_steps < 1:
            raise ValueError(f"max_steps={max_steps!r}: expected a positive integer (actions per episode)")
        limit = gym_time_limit(env_id)
        if limit is not None and max_steps > limit and "max_episode_steps" not in make_kwargs:
            make_kwargs["max_episode_steps"] = int(max_steps)  # episodes longer than the registered limit

    # One env in the parent: checks the id, the policy and the options before any work
    # starts, and gives the frame shape, action box and time limit.
    env = envs.make(env_id, **make_kwargs)
    try:
        if max_steps is None and _time_limit(env) is None:
            raise ValueError(f"{env_id} has no time limit; pass max_steps to bound the episodes")
        pol = envs.make_policy(policy, env, noise)
        if stop_on_success and not getattr(pol, "pursues_env_goal", True):
            raise ValueError(f"stop_on_success: policy {policy!r} does not pursue the episode's goal, so its first "
                             "success means nothing; collect it without stop_on_success (bound it with max_steps)")
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
        max_steps=max_steps, codec=codec, seed=int(seed), stop_on_success=bool(stop_on_success),
    )
    rows = 0
    t0 = time.perf_counter()
    writer = before = None
    bar = ProgressBar(episodes, desc=f"collect {env_id}", unit="episodes", enabled=bool(progress))
    try:
        with EpisodeWriter(out, mode=mode, codec=codec, env_id=env_id, action_dim=action_dim, fps=fps,
                           commit_every=commit_every, codec_options=codec_options) as writer:
            before = writer.committed_episodes
            job["codec_options"] = writer.codec_options  # h264: the dataset's settings (new or on disk)
            # fixed factors are part of the episode's condition: 'default+factors', 'ood_visual+factors'
            label = (split or "default") + ("+ood_factors" if ood_factors else "") + ("+factors" if factors else "")
            rows = _write_episodes(writer, job, episodes, workers, start_method, label, bar)
        bar.close()
    except BaseException as e:
        if not bar.is_tty:
            bar.enabled = False  # no final progress line: the caller reports the error or interruption in one line
        bar.close()
        if not isinstance(e, KeyboardInterrupt):
            raise
        saved = 0 if writer is None else writer.committed_episodes
        new = 0 if before is None else saved - before
        name = "SIGTERM" if isinstance(e, Terminated) else "SIGINT"
        raise CollectInterrupted(str(out), saved, new, name) from None
    seconds = time.perf_counter() - t0
    return {
        "episodes": int(episodes),
        "steps": rows,
        "seconds": seconds,
        "steps_per_s": rows / seconds if seconds > 0 else 0.0,
        "path": str(out),
        "workers": int(workers),
        "seed": int(seed),
    }


def _write_episodes(writer: Any, job: dict, episodes: int, workers: int, start_method: str | None,
                    split: str, bar: Any) -> int:
    """Roll episodes 0..episodes-1 (in this process or in workers) and save each to `writer`
    in order, each recorded with the condition label `split`; returns the rows saved."""
    rows = 0
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
        writer.save_episode(seed=job["seed"] + i, factors=ep["factors"], policy=job["policy"], split=split,
                            success_step=ep["success_step"])
        bar.update(1, steps=rows)
    return rows


def _reset_options(split: str | None, severity: int | None, factors: dict | None = None,
                   ood_factors: Sequence[str] | None = None) -> dict | None:
    if severity is not None and split is None and not ood_factors:
        raise ValueError(f"severity={severity!r} needs an OOD split (e.g. split='ood') or ood_factors")
    options: dict[str, Any] = {}
    if split is not None:
        options["split"] = split
    if severity is not None:
        options["severity"] = severity
    if factors:
        options["factors"] = dict(factors)
    if ood_factors:
        options["ood_factors"] = list(ood_factors)
    return options or None


def gym_time_limit(env_id: str) -> int | None:
    """The registered step limit of `env_id` (``max_episode_steps`` of its gymnasium spec), or None."""
    import gymnasium as gym

    bare = env_id.split(":", 1)[1] if ":" in env_id else env_id
    spec = gym.registry.get(bare)
    return None if spec is None else spec.max_episode_steps


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
        if not job["stop_on_success"] and hasattr(self.env.unwrapped, "terminate_on_success"):
            # run on past success to the time limit through the env's own switch
            # (never by stepping a terminated env)
            self.env.unwrapped.terminate_on_success = False
        self.policy = envs.make_policy(job["policy"], self.env, job["noise"])
        space = self.env.action_space
        self.low = np.asarray(getattr(space, "low", -np.inf), np.float32)
        self.high = np.asarray(getattr(space, "high", np.inf), np.float32)

    def episode(self, i: int) -> dict:
        """Episode i (seed = job seed + i): encoded frames (T,), states (T, S), actions (T-1, A), rewards (T,), flags,
        factors and ``success_step`` (first row with ``info["success"]``; -1 never, None if the env reports none)."""
        import numpy as np

        from .codecs import GROUPED_CODECS, EncodedFrame, encode_frames

        job, env, pol = self.job, self.env, self.policy
        codec = job["codec"]
        whole = codec in GROUPED_CODECS  # h264: the episode's frames are encoded together at its end

        def keep(frame: np.ndarray) -> Any:
            return np.array(frame, np.uint8, copy=True) if whole else EncodedFrame.encode(frame, codec)

        ep_seed = job["seed"] + i
        obs, info = env.reset(seed=ep_seed, options=job["options"])
        pol.reset(ep_seed)
        frames, states, actions, rewards = [keep(obs)], [info["state"]], [], [0.0]
        terminated = truncated = False
        max_steps = job["max_steps"]
        # a policy that ignores the episode's goal (the tour expert): its success flag means nothing
        records = "success" in info and getattr(pol, "pursues_env_goal", True)
        success_step = None if not records else (0 if info["success"] else -1)
        while not (terminated or truncated):
            if max_steps is not None and len(actions) >= max_steps:
                truncated = True
                break
            action = np.clip(np.asarray(pol(obs, info), np.float32), self.low, self.high)
            obs, reward, terminated, truncated, info = env.step(action)
            actions.append(action)
            frames.append(keep(obs))
            states.append(info["state"])
            rewards.append(float(reward))
            if success_step == -1 and info.get("success"):
                success_step = len(actions)
        if whole:
            frames = encode_frames(np.stack(frames), codec, job["codec_options"])
        return {
            "frames": frames,
            "states": np.stack(states),
            "actions": np.stack(actions) if actions else np.zeros((0,) + self.low.shape, np.float32),
            "rewards": np.asarray(rewards, np.float32),
            "terminated": bool(terminated),
            "truncated": bool(truncated),
            "factors": dict(info.get("factors", {})),
            "success_step": success_step,
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
    (``(-1, traceback)`` on failure). Ctrl-C is the parent's to handle: it commits what it
    has and stops the workers, so workers ignore SIGINT."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
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
