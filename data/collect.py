"""`collect`: roll a scripted policy in an environment and write the episodes.

Imports nothing heavy at module level: `data/__init__.py` imports this module eagerly
so that `data.collect` is the function, not this module.
"""

from __future__ import annotations

import os
import sys
import time



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
    **kwargs,
) -> dict:
    """Collect `episodes` episodes of `env_id` with `envs.make_policy(policy)` into `out`.

    Episode i is reset with seed `seed + i` (env and policy) and, when `split` is given,
    `options={"split": split}`. Rows follow the store's convention (N actions -> N+1 rows;
    the recorded action is the one the env executed, clipped to its action box).
    `max_steps` caps actions per episode (the last row is then marked truncated).
    `env_kwargs` (and any other keyword, e.g. `resolution=32`) go to `envs.make`.
    Returns `{"episodes", "steps" (rows written), "seconds", "steps_per_s", "path"}`.
    """
    import numpy as np

    import envs  # lazy: `import data` stays light and free of env dependencies

    from .writer import EpisodeWriter

    if episodes < 0:
        raise ValueError(f"episodes must be >= 0, got {episodes}")
    env = envs.make(env_id, **{**(env_kwargs or {}), **kwargs})
    if max_steps is None and _time_limit(env) is None:
        raise ValueError(f"{env_id} has no time limit; pass max_steps to bound the episodes")
    pol = envs.make_policy(policy, env)
    space = env.action_space
    low = np.asarray(getattr(space, "low", -np.inf), np.float32)
    high = np.asarray(getattr(space, "high", np.inf), np.float32)
    show = progress and sys.stderr.isatty()
    rows = 0
    t0 = time.perf_counter()
    try:
        action_dim = int(np.prod(space.shape)) if getattr(space, "shape", None) else None
        with EpisodeWriter(out, mode=mode, codec=codec, env_id=env_id, action_dim=action_dim) as writer:
            for i in range(episodes):
                ep_seed = seed + i
                obs, info = env.reset(seed=ep_seed, options={"split": split} if split else None)
                pol.reset(ep_seed)
                factors = info.get("factors", {})
                reward, terminated, truncated, n_actions = 0.0, False, False, 0
                while True:
                    if max_steps is not None and n_actions >= max_steps and not terminated:
                        truncated = True
                    if terminated or truncated:
                        writer.add_step(obs, info["state"], None, reward, terminated, truncated)
                        break
                    action = np.clip(np.asarray(pol(obs, info), np.float32), low, high)
                    writer.add_step(obs, info["state"], action, reward)
                    obs, reward, terminated, truncated, info = env.step(action)
                    n_actions += 1
                rows += writer.buffered_steps
                writer.save_episode(seed=ep_seed, factors=factors, policy=policy, split=split or "default")
                if show:
                    rate = rows / max(time.perf_counter() - t0, 1e-9)
                    print(f"\rcollect {env_id}: episode {i + 1}/{episodes}, {rows} steps, {rate:,.0f} steps/s", end="", file=sys.stderr, flush=True)
    finally:
        env.close()
        if show:
            print(file=sys.stderr)
    seconds = time.perf_counter() - t0
    return {"episodes": episodes, "steps": rows, "seconds": seconds, "steps_per_s": rows / seconds if seconds > 0 else 0.0, "path": str(out)}


def _time_limit(env) -> int | None:
    """The env's step limit: its spec's, or a TimeLimit wrapper's anywhere in the chain."""
    limit = getattr(getattr(env, "spec", None), "max_episode_steps", None)
    while limit is None and env is not None:
        limit = getattr(env, "_max_episode_steps", None)
        env = getattr(env, "env", None)
    return limit
