"""``wm bench envs``: single-process environment speed with a frame rendered every step.

Protocol (the same for every env, so the numbers compare): one process, the env made
with `envs.make` (the gymnasium wrappers users get included) at the requested
resolution; actions drawn up front from the action space with a fixed seed; ``reset``
when an episode ends, its time counted; a short warm-up (renderer creation, first
compiles) excluded; steps timed until both ``min_steps`` and ``min_seconds`` are reached.
Every step returns a freshly rendered observation, so the number is steps *and*
frames per second. With ``factors`` every reset sets them (e.g. ``distractor=4`` to time
the rendering of noise patches); without, the envs run at their default factors.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from worldmodel.progress import ProgressBar

WARMUP_STEPS = 20


@dataclass
class EnvSpeed:
    """One env's measurement."""

    env_id: str
    resolution: int
    steps: int
    seconds: float
    resets: int

    @property
    def steps_per_s(self) -> float:
        """Environment steps (each with a rendered frame) per second."""
        return self.steps / self.seconds


def bench_env(
    env_id: str, resolution: int = 224, min_steps: int = 200, min_seconds: float = 2.0, seed: int = 0,
    on_steps: Callable[[int], None] | None = None, factors: Mapping[str, Any] | None = None,
) -> EnvSpeed:
    """Measure one env (see the module docstring); returns an `EnvSpeed`.

    ``on_steps(n)`` is called after every ``n`` timed steps (progress reporting; its time is counted).
    ``factors`` (``{name: value}``) are set at every reset (the env validates them).
    """
    import envs

    env = envs.make(env_id, resolution=resolution)
    options = {"factors": dict(factors)} if factors else None
    try:
        env.action_space.seed(seed)
        pool = np.stack([env.action_space.sample() for _ in range(1024)])
        env.reset(seed=seed, options=options)
        for i in range(WARMUP_STEPS):
            _, _, terminated, truncated, _ = env.step(pool[i])
            if terminated or truncated:
                env.reset(options=options)
        env.reset(seed=seed + 1, options=options)
        steps = resets = 0
        t0 = time.perf_counter()
        elapsed = 0.0
        while steps < min_steps or elapsed < min_seconds:
            for _ in range(50):
                _, _, terminated, truncated, _ = env.step(pool[steps % len(pool)])
                steps += 1
                if terminated or truncated:
                    env.reset(options=options)
                    resets += 1
            if on_steps is not None:
                on_steps(50)
            elapsed = time.perf_counter() - t0
        return EnvSpeed(env_id, resolution, steps, elapsed, resets)
    finally:
        env.close()


def bench_envs(
    env_ids: Sequence[str] | None = None,
    resolution: int = 224,
    min_steps: int = 200,
    min_seconds: float = 2.0,
    log: Callable[[str], None] | None = None,
    progress: bool = False,
    factors: Mapping[str, Any] | None = None,
) -> dict[str, EnvSpeed]:
    """Measure every env in `env_ids` (default: all registered ``wm/`` envs), one after another.

    ``log`` gets one line per env; ``progress`` shows a `ProgressBar` of timed steps on
    stderr (a plain line every 15 s when stderr is not a terminal). ``factors`` are set at
    every reset of every env; each env must have them (checked before anything is timed:
    `UnknownFactorError` / `FactorOutOfRange` naming the env and the value otherwise).
    """
    import envs

    ids = list(env_ids) if env_ids else envs.list_envs()
    for env_id in ids:
        space = envs.factor_space(env_id)  # an unknown id: refused here, with a suggestion
        try:
            space.validate(dict(factors or {}))
        except (KeyError, ValueError) as e:
            raise type(e)(f"{env_id}: {e}") from None
    out: dict[str, EnvSpeed] = {}
    with ProgressBar(None, desc="bench envs", unit="step", enabled=progress) as bar:
        for k, env_id in enumerate(ids):
            def on_steps(n: int, label: str = f"{env_id} ({k + 1}/{len(ids)})") -> None:
                bar.update(n, env=label)

            out[env_id] = r = bench_env(env_id, resolution, min_steps, min_seconds, on_steps=on_steps, factors=factors)
            if log is not None:
                log(f"{env_id:<18} {r.steps_per_s:>10,.0f} steps/s at {resolution}x{resolution} "
                    f"({r.steps} steps, {r.resets} resets)")
    return out


TARGETS_224 = {
    "wm/TwoRoom-v0": 10_000,
    "wm/PushT-v0": 3_000,
    "wm/Reacher-v0": 300,
    "wm/PointMaze-v0": 300,
    "wm/Cube-v0": 100,
}
"""Issue #3's steps/s targets at 224x224 (for the Markdown table; not asserted anywhere)."""


def markdown_table(results: dict[str, EnvSpeed]) -> str:
    """A Markdown table of results with the 224x224 targets beside them."""
    lines = ["| env | resolution | steps/s | target at 224² |", "|---|---|---|---|"]
    for env_id, r in results.items():
        target = TARGETS_224.get(env_id)
        lines.append(f"| {env_id} | {r.resolution}² | {r.steps_per_s:,.0f} | {'' if target is None else f'{target:,}'} |")
    return "\n".join(lines)
