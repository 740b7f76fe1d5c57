"""Small statistics helpers for result summaries."""

from __future__ import annotations

import math


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion.

    Args:
        successes: number of successes (0 <= successes <= n).
        n: number of trials.
        z: normal quantile; the default gives a 95% interval.

    Returns:
        ``(low, high)`` bounds in [0, 1]; ``(0.0, 1.0)`` when ``n == 0``.
    """
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError(f"successes={successes}, n={n}: expected 0 <= successes <= n")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high
