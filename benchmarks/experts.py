"""``wm bench experts``: success rate of every env's scripted expert on its train split.

Protocol: for each env, `episodes` seeded resets (seeds 0..N-1) with
``options={"split": "train"}`` (factors drawn from their train ranges), the expert from
`envs.make_policy("expert", env, noise)` run until the registered step limit; success
is the env's own ``info["success"]`` at termination. Measured for the clean expert
(noise 0) and the noisy one used for data collection (the policy's default noise).
"""

from __future__ import annotations

import functools
import time
from typing import Callable, Sequence

from benchmarks.stats import wilson_interval
from worldmodel.progress import ProgressBar


def expert_success(env_id: str, episodes: int = 50, noise: float | None = 0.0, split: str = "train",
                   on_episode: Callable[[], None] | None = None) -> dict:
    """``{"success_rate", "successes", "episodes", "ci95", "mean_steps", "seconds"}`` for one env and noise.

    ``on_episode`` is called after each episode (progress reporting).
    """
    import envs

    env = envs.make(env_id)
    policy = envs.make_policy("expert", env, noise)
    successes, steps = 0, []
    t0 = time.perf_counter()
    try:
        for seed in range(episodes):
            obs, info = env.reset(seed=seed, options={"split": split})
            policy.reset(seed)
            n, done = 0, False
            while not done:
                obs, _, terminated, truncated, info = env.step(policy(obs, info))
                n += 1
                done = terminated or truncated
            successes += bool(info["success"])
            steps.append(n)
            if on_episode is not None:
                on_episode()
    finally:
        env.close()
    lo, hi = wilson_interval(successes, episodes)
    return {
        "success_rate": successes / episodes if episodes else 0.0,
        "successes": successes,
        "episodes": episodes,
        "ci95": [lo, hi],
        "mean_steps": sum(steps) / len(steps) if steps else 0.0,
        "seconds": time.perf_counter() - t0,
    }


def bench_experts(
    env_ids: Sequence[str] | None = None, episodes: int = 50, log: Callable[[str], None] | None = None,
    progress: bool = False,
) -> dict[str, dict[str, dict]]:
    """``{env_id: {"clean": expert_success(noise=0), "noisy": expert_success(noise=default)}}``.

    ``log`` gets one line per env; ``progress`` shows a `ProgressBar` over all episodes on
    stderr (a plain line every 15 s when stderr is not a terminal).
    """
    import envs

    ids = list(env_ids or envs.list_envs())
    out: dict[str, dict[str, dict]] = {}
    with ProgressBar(len(ids) * 2 * episodes, desc="bench experts", unit="episode", enabled=progress) as bar:
        for env_id in ids:
            tick = functools.partial(bar.update, 1, env=env_id)
            out[env_id] = {"clean": expert_success(env_id, episodes, 0.0, on_episode=tick),
                           "noisy": expert_success(env_id, episodes, None, on_episode=tick)}
            if log is not None:
                c, n = out[env_id]["clean"], out[env_id]["noisy"]
                log(f"{env_id:<18} clean {c['successes']}/{episodes} ({c['mean_steps']:.0f} steps)   "
                    f"noisy {n['successes']}/{episodes} ({n['mean_steps']:.0f} steps)")
    return out


def markdown_table(results: dict[str, dict[str, dict]]) -> str:
    """Markdown table of `bench_experts` results."""
    lines = ["| env | clean expert | noisy expert (collection) | mean steps clean / noisy |", "|---|---|---|---|"]
    for env_id, r in results.items():
        c, n = r["clean"], r["noisy"]
        lines.append(
            f"| {env_id} | {c['success_rate']:.0%} ({c['successes']}/{c['episodes']}) | "
            f"{n['success_rate']:.0%} ({n['successes']}/{n['episodes']}) | {c['mean_steps']:.0f} / {n['mean_steps']:.0f} |"
        )
    return "\n".join(lines)
