"""Representation metrics of a world model's embeddings, on plain arrays.

These are the figures the seed papers judge a world model by beyond planning success;
``benchmarks/diagnose.py`` (``wm diagnose``) computes them on a checkpoint and held-out
episodes. Everything here takes NumPy arrays and reads no files.

- `rankme`: effective rank of an embedding matrix (Garrido, Balestriero, Najman, LeCun,
  "RankMe: Assessing the downstream performance of pretrained self-supervised
  representations by their rank", ICML 2023).
- `heldout_r2`: coefficient of determination of predictions on data not fitted on.
- `straightness`: mean cosine of consecutive latent velocities along trajectories (Wang,
  Bounou, Zhou, Balestriero, Rudner, LeCun, Ren, "Temporal Straightening for Latent
  Planning", arXiv:2603.12231, 2026: their curvature is ``1 - cos(z_{t+1} - z_t,
  z_{t+2} - z_{t+1})``; 1 = straight).
- `normalised_sq_error`: squared error per dimension divided by a per-dimension variance.
- `auroc`: probability that a score of one set exceeds one of another (ties count half).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["RANKME_EPS", "rankme", "heldout_r2", "straightness", "normalised_sq_error", "auroc"]

#: the epsilon RankMe adds to each normalised singular value (Garrido et al. 2023, eq. 1), so log 0 never occurs
RANKME_EPS = 1e-7


def _matrix(x: np.ndarray, name: str, min_rows: int = 1) -> np.ndarray:
    """``x`` as a finite float64 (N, D) array, else a ValueError naming ``name``."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] < min_rows or a.shape[1] < 1:
        raise ValueError(f"{name} must be a 2-D array (N, D) with N >= {min_rows} and D >= 1, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        bad = int((~np.isfinite(a)).any(axis=1).sum())
        raise ValueError(f"{name} has non-finite values in {bad} of its {a.shape[0]} rows (NaN or inf)")
    return a


def rankme(emb: np.ndarray, eps: float = RANKME_EPS, center: bool = False) -> float:
    """RankMe: exp of the entropy of the normalised singular values of ``emb``.

    ``p_k = s_k / sum_j s_j + eps`` over the singular values ``s`` of the (N, D) matrix,
    ``RankMe = exp(-sum_k p_k log p_k)`` (Garrido et al. 2023, eq. 1; no centring there).
    It lies in (0, min(N, D)] up to eps: ``min(N, D)`` when every singular value is equal,
    ``k`` when ``k`` are equal and the rest zero, 1 for a rank-1 (collapsed) matrix.

    Args:
        emb: (N, D) embeddings, one row per frame.
        eps: the epsilon added to each ``p_k``.
        center: subtract the column means first (the spread around the mean only; a large
            shared offset otherwise counts as one more direction).

    Raises:
        ValueError: not a finite (N, D) array, or all zeros (no direction at all).
    """
    a = _matrix(emb, "emb")
    if center:
        a = a - a.mean(0)
    s = np.linalg.svd(a, compute_uv=False)
    total = float(s.sum())
    if total <= 0.0:
        raise ValueError(f"emb ({a.shape[0]} x {a.shape[1]}) is all zeros{' after centring' if center else ''}: "
                         "RankMe is undefined for a matrix without a single direction")
    p = s / total + eps
    return float(np.exp(-(p * np.log(p)).sum()))


def heldout_r2(y_true: np.ndarray, y_pred: np.ndarray) -> list[float | None]:
    """R^2 of each column of ``y_pred`` against ``y_true``, around ``y_true``'s own mean.

    ``1 - sum (y - y_hat)^2 / sum (y - mean(y))^2`` per column: 1 is perfect, 0 is no
    better than predicting the mean of the scored data, and it is negative when worse.

    Args:
        y_true, y_pred: (N, G) arrays, N >= 2.

    Returns:
        G values; None for a column that is constant in ``y_true`` (R^2 undefined).
    """
    y = _matrix(y_true, "y_true", 2)
    p = _matrix(y_pred, "y_pred", 2)
    if p.shape != y.shape:
        raise ValueError(f"y_pred has shape {p.shape}, expected y_true's {y.shape}")
    ss_res = ((y - p) ** 2).sum(0)
    ss_tot = ((y - y.mean(0)) ** 2).sum(0)
    scale = np.maximum((y**2).sum(0), 1e-300)
    return [None if t <= 1e-12 * s else float(1.0 - r / t) for r, t, s in zip(ss_res, ss_tot, scale)]


def straightness(trajectories: Sequence[np.ndarray], min_speed: float = 1e-8) -> tuple[float | None, int, int]:
    """Mean cosine similarity of consecutive velocities along trajectories.

    For each trajectory ``z`` (T, D): ``v_t = z_{t+1} - z_t`` and the cosine of
    ``(v_t, v_{t+1})`` for t = 0..T-3, averaged over all such pairs of all trajectories.
    A pair where either velocity is shorter than ``min_speed`` times the trajectories'
    median speed has no direction (the point stands still) and is skipped.

    Args:
        trajectories: arrays (T_i, D) with the same D; those with T_i < 3 give no pair.
        min_speed: relative threshold on a velocity's norm.

    Returns:
        (mean cosine or None when no pair counts, pairs counted, pairs skipped).
    """
    vels = []
    for i, z in enumerate(trajectories):
        a = _matrix(z, f"trajectories[{i}]")
        if len(a) >= 3:
            vels.append(np.diff(a, axis=0))
    if not vels:
        return None, 0, 0
    dims = {v.shape[1] for v in vels}
    if len(dims) > 1:
        raise ValueError(f"trajectories have different widths D: {sorted(dims)}")
    speeds = np.concatenate([np.linalg.norm(v, axis=1) for v in vels])
    floor = min_speed * max(float(np.median(speeds)), 1e-300)
    cosines, skipped = [], 0
    for v in vels:
        n = np.linalg.norm(v, axis=1)
        a, b, na, nb = v[:-1], v[1:], n[:-1], n[1:]
        ok = (na > floor) & (nb > floor)
        skipped += int((~ok).sum())
        cosines.append((a[ok] * b[ok]).sum(1) / (na[ok] * nb[ok]))
    c = np.concatenate(cosines)
    return (float(c.mean()) if len(c) else None), int(len(c)), skipped


def normalised_sq_error(pred: np.ndarray, target: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Mean over the last axis of ``(pred - target)^2 / var``.

    Args:
        pred, target: (..., D) arrays of the same shape.
        var: (D,) positive per-dimension variances (the scale that makes 1.0 mean "as far
            off as a random frame's embedding is from the mean one").

    Returns:
        (...) float64 errors.
    """
    p, t, v = np.asarray(pred, np.float64), np.asarray(target, np.float64), np.asarray(var, np.float64)
    if p.shape != t.shape or v.shape != p.shape[-1:]:
        raise ValueError(f"pred {p.shape}, target {t.shape} and var {v.shape} must be (..., D), (..., D) and (D,)")
    if not np.all(v > 0):
        raise ValueError(f"var must be positive in every dimension, got min {float(v.min())}")
    return (((p - t) ** 2) / v).mean(-1)


def auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(a positive score > a negative score), ties counting one half (the Mann-Whitney AUC).

    Args:
        positive: (P,) scores that should be high; negative: (N,) scores that should be low.
    """
    pos = np.asarray(positive, np.float64).ravel()
    neg = np.asarray(negative, np.float64).ravel()
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError(f"auroc needs scores in both sets, got {len(pos)} positive and {len(neg)} negative")
    allv = np.concatenate([pos, neg])
    order = np.argsort(allv, kind="mergesort")
    ranks = np.empty(len(allv), np.float64)
    sorted_v = allv[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_v, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2.0
    return float(u / (len(pos) * len(neg)))
