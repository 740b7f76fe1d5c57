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


def ratio_interval(successes: int, n: int, ref_successes: int, ref_n: int,
                   z: float = 1.959964) -> tuple[float, float] | None:
    """Interval for the ratio of two independent binomial proportions, (successes/n) ÷ (ref_successes/ref_n).

    Katz's log interval, ``exp(log(ratio) ± z * sqrt(1/x - 1/n + 1/x0 - 1/n0))``, as for a risk ratio;
    with no success in the numerator 0.5 is added to each cell of the 2x2 table (the bound below is
    then 0). This is `wm ood`'s ``retained`` (an OOD condition's success ÷ the ID condition's), whose
    two rates come from different start/goal pairs.

    Args:
        successes, n: the numerator's successes out of n trials (n >= 1).
        ref_successes, ref_n: the reference's (denominator's) successes out of ref_n trials (ref_n >= 1).
        z: normal quantile; the default gives a 95% interval.

    Returns:
        ``(low, high)``, or None when ``ref_successes == 0`` (the ratio is undefined).
    """
    for x, m in ((successes, n), (ref_successes, ref_n)):
        if m < 1 or not 0 <= x <= m:
            raise ValueError(f"successes={x}, n={m}: expected 0 <= successes <= n and n >= 1")
    if ref_successes == 0:
        return None
    x, m, x0, m0 = float(successes), float(n), float(ref_successes), float(ref_n)
    if successes == 0:
        x, m, x0, m0 = x + 0.5, m + 1.0, x0 + 0.5, m0 + 1.0
    ratio = (x / m) / (x0 / m0)
    half = z * math.sqrt(max(0.0, 1 / x - 1 / m + 1 / x0 - 1 / m0))
    low = 0.0 if successes == 0 else ratio * math.exp(-half)
    return low, ratio * math.exp(half)
