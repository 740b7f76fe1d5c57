"""``wm diagnose``: what a checkpoint's embeddings and predictor know, on held-out episodes.

The figures the seed papers judge a world model by beyond planning success, computed for
any model family through the model contract only (``config``, ``encode``, ``rollout``):

``rankme``
    RankMe (Garrido et al., ICML 2023): ``exp`` of the entropy of the normalised singular
    values of the (N, D) matrix of every held-out frame's embedding (uncentred, as in the
    paper; the centred value is in the details). In (0, min(N, D)]; 1 = collapsed.
``probe_r2``
    Linear identifiability of the true state: a ridge regression (`benchmarks.state_probe.
    ridge_fit`) from a frame's embedding to the dataset's ``state`` row, fitted on the
    frames of some episodes and scored on the frames of the *other* episodes (split by
    episode, never by frame: consecutive frames are near copies). The value is the mean
    over state dimensions of the held-out R^2 (`worldmodel.diagnostics.heldout_r2`; a
    constant dimension is left out). Per dimension, and for the env's goal layout
    (``env.goal_from_state(state)``, e.g. PushT's block pose), in the details; where the
    layout holds angles (the env's ``goal_angle_dims``), also with each angle as its
    (cos, sin), which a linear read-out can follow across the wrap at ±π
    (``details.probe.goal.angles``).
``open_loop_mse``
    A list by step k = 1..K: the model rolls out (``model.rollout``) from ``context``
    true embeddings with the true action blocks, open loop, and each predicted embedding
    is compared with the encoded true frame k blocks later. The error is normalised per
    dimension by the variance of that dimension over the held-out frames and averaged
    over dimensions and starts: 1.0 = as far off as an arbitrary frame from the mean
    embedding, so models with differently scaled embeddings compare. Every start has all
    K steps (the same starts at every k). The raw squared error (``open_loop_mse_raw``)
    and the "nothing moves" baseline (the last context embedding as the prediction, same
    normalisation) are beside it.
``surprise_ratio``
    The violation-of-expectation test of LeWorldModel (Maes, Le Lidec, Scieur, LeCun,
    Balestriero, arXiv:2603.19312): the one-step prediction error (normalised as above)
    on implausible transitions divided by the error on the real ones, from the same
    contexts. Kinds: ``teleport`` (the next frame is a random frame of another episode),
    ``frozen`` (the next frame is the current one), ``swapped_actions`` (the action block
    is a random block of another episode; the next frame is the real one). Each kind's
    ratio is mean(implausible error) / mean(real error); ``surprise_ratio`` pools the
    three kinds' errors (equal counts), i.e. it is the mean of the three ratios. The
    AUROC of each kind's error against the real one is in the details.
``straightness``
    The mean cosine similarity of consecutive latent velocities ``z_{t+1} - z_t`` along
    held-out trajectories at the model's step (one action block, ``frameskip`` raw
    steps), every raw offset; 1 = straight (Wang et al., "Temporal Straightening for
    Latent Planning", arXiv:2603.12231). The same measure on the true state trajectories
    is beside it, for reference.

Outputs in ``OUT/``: ``diagnostics.json`` (the keys above, ``details``, the checkpoint,
dataset, env and episode ids used), ``surprise.jsonl`` (one line per tested transition
with its four errors), and the plots made from those files: ``open_loop.png`` (error vs
step) and ``surprise.png`` (error distributions by kind).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from worldmodel.diagnostics import auroc, heldout_r2, normalised_sq_error, rankme, straightness

__all__ = [
    "DIAGNOSTICS_FILE", "SURPRISE_FILE", "SURPRISE_KINDS", "EpisodeEmbeddings", "encode_episodes", "probe_r2",
    "angle_probe", "open_loop_errors", "surprise_errors", "surprise_summary", "diagnose", "run_diagnose", "summary_lines",
    "plot_diagnostics",
]

DIAGNOSTICS_FILE = "diagnostics.json"
SURPRISE_FILE = "surprise.jsonl"
#: implausible transition kinds, in the order of ``surprise.jsonl``'s columns
SURPRISE_KINDS: tuple[str, ...] = ("teleport", "frozen", "swapped_actions")
#: share of the (shuffled) episodes the probe is fitted on; the rest score it
PROBE_FIT_FRACTION = 0.7
#: relative L2 penalty of the probe (``ridge_fit``'s, as the planning state probe)
PROBE_RIDGE = 1e-3
#: per-dimension variance floor, relative to the mean variance (a dead dimension must not divide by ~0)
VAR_FLOOR = 1e-6
#: a dimension varying less than this fraction of the mean dimension's variance counts as near-constant:
#: the normalised errors divide by its variance, so its small absolute errors can dominate them
NEAR_CONSTANT_FRACTION = 0.01


@dataclass
class EpisodeEmbeddings:
    """One held-out episode, encoded: ``emb`` (T, D) float32, ``state`` (T, S) float64,
    ``blocks`` (T - f, f * A) float32 (row s: the raw actions s..s+f-1 flattened, the block
    taken from frame s to frame s + f), ``goal`` (T, G) float64 or None."""

    episode_id: int
    emb: np.ndarray
    state: np.ndarray
    blocks: np.ndarray
    goal: np.ndarray | None = None


# --------------------------------------------------------------------------- encoding
@torch.inference_mode()
def encode_episodes(
    model: Any,
    dataset: Any,
    episode_ids: Sequence[int],
    frameskip: int,
    goal_fn: Callable[[np.ndarray], np.ndarray] | None = None,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> list[EpisodeEmbeddings]:
    """Encode every frame of the given episodes with ``model.encode``.

    Args:
        model: a world model in eval mode (``encode(uint8 (B, T, C, H, W)) -> (B, T, D)``).
        dataset: an opened ``data.EpisodeDataset``.
        episode_ids: the episodes to read, in order.
        frameskip: raw actions per action block (the model's ``config.frameskip``).
        goal_fn: recorded state (S,) -> goal layout (G,), or None.
        batch_size: frames per ``encode`` call.
        device: where to encode.
        progress: a ``ProgressBar`` over the episodes on stderr.

    Raises:
        ValueError: the model returns embeddings of another shape than (b, 1, D) or
        non-finite ones (named by episode).
    """
    from worldmodel.progress import ProgressBar

    out = []
    with ProgressBar(len(episode_ids), desc="diagnose: encode", unit="episodes", enabled=progress) as bar:
        for eid in episode_ids:
            rows = dataset.load_episode(int(eid), columns=("pixels", "action", "state"))
            pixels, actions = rows["pixels"], np.asarray(rows["action"], np.float32)
            embs = []
            for i in range(0, len(pixels), batch_size):
                px = torch.from_numpy(np.array(pixels[i : i + batch_size])).to(device)  # a writable copy
                e = model.encode(px.permute(0, 3, 1, 2).unsqueeze(1))
                if e.ndim != 3 or e.shape[:2] != (px.shape[0], 1):
                    raise ValueError(f"model.encode returned shape {tuple(e.shape)} for {px.shape[0]} frames, "
                                     f"expected ({px.shape[0]}, 1, D)")
                embs.append(e[:, 0].float().cpu().numpy())
            emb = np.concatenate(embs)
            if not np.all(np.isfinite(emb)):
                raise ValueError(f"model.encode returned non-finite embeddings (NaN or inf) for episode {eid} of "
                                 f"{getattr(dataset, 'path', 'the dataset')}: the checkpoint's weights are broken")
            state = np.asarray(rows["state"], np.float64).reshape(len(pixels), -1)
            n_blocks = max(len(pixels) - frameskip, 0)
            blocks = np.stack([actions[s : s + frameskip].ravel() for s in range(n_blocks)]) if n_blocks else \
                np.zeros((0, frameskip * actions.shape[1]), np.float32)
            goal = np.stack([np.asarray(goal_fn(s), np.float64).ravel() for s in state]) if goal_fn else None
            out.append(EpisodeEmbeddings(int(eid), emb, state, blocks, goal))
            bar.update(1)
    return out


# --------------------------------------------------------------------------- probe
def probe_r2(
    fit_x: np.ndarray, fit_y: np.ndarray, score_x: np.ndarray, score_y: np.ndarray, ridge: float = PROBE_RIDGE
) -> dict[str, Any]:
    """A linear probe fitted on one set and scored on another.

    Args:
        fit_x: (N, D) embeddings and fit_y: (N, G) targets to fit on (``ridge_fit``).
        score_x: (M, D) embeddings and score_y: (M, G) targets to score on (other episodes).
        ridge: L2 penalty relative to the embeddings' scale.

    Returns:
        ``{"r2": mean held-out R^2 over non-constant dimensions (None when every one is
        constant), "r2_per_dim": [G values or None], "fit_frames", "score_frames"}``.
    """
    from benchmarks.state_probe import ridge_fit

    fit_x, score_x = np.asarray(fit_x, np.float64), np.asarray(score_x, np.float64)
    fit_y, score_y = np.asarray(fit_y, np.float64), np.asarray(score_y, np.float64)
    if fit_x.ndim != 2 or score_x.ndim != 2 or fit_x.shape[1] != score_x.shape[1]:
        raise ValueError(f"probe inputs must be (N, D) and (M, D), got {fit_x.shape} and {score_x.shape}")
    if fit_y.shape[:1] != fit_x.shape[:1] or score_y.shape[:1] != score_x.shape[:1] or fit_y.shape[1:] != score_y.shape[1:]:
        raise ValueError(f"probe targets {fit_y.shape} / {score_y.shape} do not match inputs {fit_x.shape} / {score_x.shape}")
    if len(fit_x) < 2 or len(score_x) < 2:
        raise ValueError(f"a probe needs at least 2 frames to fit and 2 to score, got {len(fit_x)} and {len(score_x)}")
    w, b, _ = ridge_fit(fit_x, fit_y, ridge)
    per_dim = heldout_r2(score_y, score_x @ w + b)
    valid = [v for v in per_dim if v is not None]
    return {"r2": float(np.mean(valid)) if valid else None, "r2_per_dim": per_dim,
            "fit_frames": int(len(fit_x)), "score_frames": int(len(score_x))}


def angle_probe(
    fit_x: np.ndarray, fit_goal: np.ndarray, score_x: np.ndarray, score_goal: np.ndarray, angle_dims: Sequence[int],
    ridge: float = PROBE_RIDGE,
) -> dict[str, Any]:
    """`probe_r2` of the goal layout's angles read as (cos, sin): a wrapped angle jumps by 2π where the
    scene does not change, so its own R^2 understates what a read-out knows.

    Args:
        fit_x: (N, D) and score_x: (M, D) embeddings; fit_goal: (N, G) and score_goal: (M, G)
            goal layouts; angle_dims: the indices of G that are angles in radians.

    Returns:
        ``{"angle_dims", "targets": ["cos k", "sin k", ...], "r2_per_dim" (2 per angle, in that
        order), "r2" (their mean), "fit_frames", "score_frames"}``.

    Raises:
        ValueError: an index outside the layout, or none given.
    """
    dims = [int(k) for k in angle_dims]
    g = np.asarray(fit_goal).shape[-1]
    if not dims or any(not 0 <= k < g for k in dims):
        raise ValueError(f"angle_dims={list(angle_dims)}: expected indices of the {g}-dim goal layout")

    def periodic(goal: np.ndarray) -> np.ndarray:
        a = np.asarray(goal, np.float64)[:, dims]
        return np.stack([np.cos(a), np.sin(a)], -1).reshape(len(a), 2 * len(dims))

    out = probe_r2(fit_x, periodic(fit_goal), score_x, periodic(score_goal), ridge)
    return {"angle_dims": dims, "targets": [f"{t} {k}" for k in dims for t in ("cos", "sin")], **out}


# --------------------------------------------------------------------------- dynamics
def _windows(ep: EpisodeEmbeddings, t: int, context: int, f: int, steps: int) -> tuple[np.ndarray, ...]:
    """Context embeddings (c, D), past blocks (c-1, A), future blocks (steps, A) and targets
    (steps, D) of the window starting at raw step ``t``."""
    ctx_t = t + f * np.arange(context)
    fut_t = t + f * np.arange(context - 1, context - 1 + steps)
    return ep.emb[ctx_t], ep.blocks[ctx_t[:-1]], ep.blocks[fut_t], ep.emb[fut_t + f]


def _starts(eps: Sequence[EpisodeEmbeddings], context: int, f: int, steps: int) -> list[tuple[int, int]]:
    """(episode index, raw start step) of every window with ``context`` frames and ``steps`` blocks after them."""
    span = (context - 1 + steps) * f
    return [(i, t) for i, ep in enumerate(eps) for t in range(len(ep.emb) - span)]


@torch.inference_mode()
def _rollout(model: Any, ctx: np.ndarray, past: np.ndarray, future: np.ndarray, device: str | torch.device) -> np.ndarray:
    """``model.rollout`` on NumPy arrays: ctx (B, c, D), past (B, c-1, A), future (B, S, H, A) -> (B, S, H, D)."""
    emb = torch.from_numpy(np.ascontiguousarray(ctx, np.float32)).to(device)
    acts = torch.from_numpy(np.ascontiguousarray(future, np.float32)).to(device)
    past_t = torch.from_numpy(np.ascontiguousarray(past, np.float32)).to(device)
    out = model.rollout(emb, acts, past_actions=past_t).float().cpu().numpy()
    if out.shape != (*future.shape[:3], ctx.shape[-1]):
        raise ValueError(f"model.rollout returned shape {out.shape}, expected (B, S, H, D) = {(*future.shape[:3], ctx.shape[-1])}")
    if not np.all(np.isfinite(out)):
        raise ValueError("model.rollout returned non-finite predictions (NaN or inf): the checkpoint's predictor is broken")
    return out


def open_loop_errors(
    model: Any,
    eps: Sequence[EpisodeEmbeddings],
    steps: int,
    var: np.ndarray,
    rng: np.random.Generator,
    max_starts: int = 2048,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> dict[str, Any]:
    """Open-loop rollout error by step.

    Args:
        model: the world model (``config.context``, ``config.frameskip``, ``rollout``).
        eps: the encoded episodes.
        steps: K, rollout length in action blocks.
        var: (D,) per-dimension variance the errors are divided by.
        rng: draws ``max_starts`` of the possible starts when there are more.

    Returns:
        ``{"mse": [K normalised errors], "mse_raw": [K raw mean squared errors], "copy_baseline": [K
        normalised errors of predicting the last context embedding], "starts": n}``.

    Raises:
        ValueError: no episode is long enough for ``context`` frames and K blocks (names the
        longest K possible).
    """
    from worldmodel.progress import ProgressBar

    c, f = int(model.config.context), int(model.config.frameskip)
    starts = _starts(eps, c, f, steps)
    if not starts:
        longest = max(len(ep.emb) for ep in eps)
        k_max = (longest - 1) // f - (c - 1)
        raise ValueError(f"--steps {steps}: no held-out episode is long enough for {c} context frame(s) and {steps} "
                         f"blocks of {f} steps (the longest has {longest} frames: at most --steps {max(k_max, 0)})")
    if len(starts) > max_starts:
        starts = [starts[i] for i in np.sort(rng.choice(len(starts), max_starts, replace=False))]
    sq, norm, copy = [], [], []
    with ProgressBar(len(starts), desc="diagnose: open loop", unit="starts", enabled=progress) as bar:
        for lo in range(0, len(starts), batch_size):
            wins = [_windows(eps[i], t, c, f, steps) for i, t in starts[lo : lo + batch_size]]
            ctx, past, fut, tgt = (np.stack(x) for x in zip(*wins))
            pred = _rollout(model, ctx, past, fut[:, None], device)[:, 0]  # (b, K, D)
            sq.append(((pred.astype(np.float64) - tgt) ** 2).mean(-1))
            norm.append(normalised_sq_error(pred, tgt, var))
            copy.append(normalised_sq_error(np.broadcast_to(ctx[:, -1:], tgt.shape), tgt, var))
            bar.update(len(wins))
    return {"mse": np.concatenate(norm).mean(0).tolist(), "mse_raw": np.concatenate(sq).mean(0).tolist(),
            "copy_baseline": np.concatenate(copy).mean(0).tolist(), "starts": len(starts)}


def surprise_errors(
    model: Any,
    eps: Sequence[EpisodeEmbeddings],
    var: np.ndarray,
    rng: np.random.Generator,
    max_transitions: int = 2048,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> dict[str, Any]:
    """One-step prediction errors on real transitions and on implausible versions of them.

    For each drawn transition (``context`` true frames, the true block, the true next
    frame) the model predicts the next embedding twice in one rollout call: with the true
    block and with a block of another episode. Errors (normalised by ``var``):
    ``normal`` (prediction vs the true next frame), ``teleport`` (vs a random frame of
    another episode), ``frozen`` (vs the current frame), ``swapped_actions`` (the
    other block's prediction vs the true next frame).

    Returns:
        ``{"episode_id": (N,), "step": (N,), "normal": (N,), "teleport": (N,), "frozen": (N,),
        "swapped_actions": (N,)}`` arrays.

    Raises:
        ValueError: fewer than 2 episodes with a transition (implausible versions need another episode).
    """
    from worldmodel.progress import ProgressBar

    c, f = int(model.config.context), int(model.config.frameskip)
    starts = _starts(eps, c, f, 1)
    with_blocks = [i for i, ep in enumerate(eps) if len(ep.blocks)]
    if not starts or len(with_blocks) < 2:
        raise ValueError(f"the surprise test needs at least 2 episodes longer than {c - 1} block(s) + 1 of {f} steps "
                         f"(implausible transitions borrow a frame or an action block from another episode); "
                         f"{len(with_blocks)} of the {len(eps)} are")
    if len(starts) > max_transitions:
        starts = [starts[i] for i in np.sort(rng.choice(len(starts), max_transitions, replace=False))]
    n = len(starts)
    res = {k: np.zeros(n) for k in ("normal", *SURPRISE_KINDS)}
    res["episode_id"] = np.array([eps[i].episode_id for i, _ in starts], np.int64)
    res["step"] = np.array([t for _, t in starts], np.int64)
    # the donors: another episode (uniform over the others), then a uniform frame / block of it
    others = [rng.integers(0, len(eps) - 1) for _ in range(n)]
    tele = [(o + (o >= i)) for (i, _), o in zip(starts, others)]
    donors_b = [rng.integers(0, len(with_blocks) - 1) for _ in range(n)]  # a transition's episode has blocks
    swap = [with_blocks[d + (d >= with_blocks.index(i))] for (i, _), d in zip(starts, donors_b)]
    tele_frames = np.stack([eps[j].emb[rng.integers(0, len(eps[j].emb))] for j in tele])
    swap_blocks = np.stack([eps[j].blocks[rng.integers(0, len(eps[j].blocks))] for j in swap])
    with ProgressBar(n, desc="diagnose: surprise", unit="transitions", enabled=progress) as bar:
        for lo in range(0, n, batch_size):
            sl = slice(lo, min(lo + batch_size, n))
            wins = [_windows(eps[i], t, c, f, 1) for i, t in starts[sl]]
            ctx, past, fut, tgt = (np.stack(x) for x in zip(*wins))  # fut (b, 1, A), tgt (b, 1, D)
            cand = np.stack([fut, swap_blocks[sl][:, None]], axis=1)  # (b, 2, 1, A): true block, swapped block
            pred = _rollout(model, ctx, past, cand, device)[:, :, 0]  # (b, 2, D)
            res["normal"][sl] = normalised_sq_error(pred[:, 0], tgt[:, 0], var)
            res["teleport"][sl] = normalised_sq_error(pred[:, 0], tele_frames[sl], var)
            res["frozen"][sl] = normalised_sq_error(pred[:, 0], ctx[:, -1], var)
            res["swapped_actions"][sl] = normalised_sq_error(pred[:, 1], tgt[:, 0], var)
            bar.update(len(wins))
    return res


def surprise_summary(errors: dict[str, np.ndarray]) -> dict[str, Any]:
    """Ratios and AUROCs from `surprise_errors`' arrays.

    Returns:
        ``{"surprise_ratio": mean of the implausible errors of every kind pooled (equal counts:
        the mean of the kinds' ratios) / mean normal error, "kinds": {kind: {"mean", "ratio",
        "auroc"}}, "normal_mean", "transitions"}``.
    """
    normal = np.asarray(errors["normal"], np.float64)
    base = float(normal.mean())
    if not base > 0:
        raise ValueError(f"the mean prediction error on real transitions is {base}: the surprise ratio is undefined "
                         "(every embedding equal? a collapsed encoder)")
    kinds = {}
    for k in SURPRISE_KINDS:
        e = np.asarray(errors[k], np.float64)
        kinds[k] = {"mean": float(e.mean()), "ratio": float(e.mean() / base), "auroc": auroc(e, normal)}
    pooled = float(np.mean([errors[k] for k in SURPRISE_KINDS]))
    return {"surprise_ratio": pooled / base, "kinds": kinds, "normal_mean": base, "transitions": int(len(normal))}


# --------------------------------------------------------------------------- the whole diagnosis
def _split_episodes(ids: Sequence[int], rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """Shuffle ``ids`` and split them: ``PROBE_FIT_FRACTION`` (at least 1) to fit, the rest (at least 1) to score."""
    perm = [int(ids[i]) for i in rng.permutation(len(ids))]
    n_fit = min(max(1, round(PROBE_FIT_FRACTION * len(perm))), len(perm) - 1)
    return sorted(perm[:n_fit]), sorted(perm[n_fit:])


def diagnose(
    model: Any,
    eps: Sequence[EpisodeEmbeddings],
    steps: int = 5,
    seed: int = 0,
    device: str | torch.device = "cpu",
    max_transitions: int = 2048,
    progress: bool = False,
    goal_angle_dims: Sequence[int] = (),
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Every diagnostic on already encoded episodes (`encode_episodes`).

    Args:
        model: the world model (its ``config``, ``rollout``), in eval mode.
        eps: at least 2 encoded episodes.
        steps: K, the open-loop rollout length in action blocks.
        seed: draws the probe's episode split, the open-loop starts and the surprise transitions and donors.
        goal_angle_dims: indices of the goal layout that are angles (the env's ``goal_angle_dims``):
            also probed as (cos, sin), in ``details.probe.goal.angles``.

    Returns:
        (the metrics: ``rankme``, ``probe_r2``, ``open_loop_mse``, ``surprise_ratio``,
        ``straightness`` and ``details``; the per-transition surprise errors).
    """
    if len(eps) < 2:
        raise ValueError(f"diagnose needs at least 2 held-out episodes (the probe is fitted on some and scored on "
                         f"others), got {len(eps)}")
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise ValueError(f"steps={steps!r}: expected a positive integer (open-loop rollout length in action blocks)")
    rng = np.random.default_rng(seed)
    f = int(model.config.frameskip)
    all_emb = np.concatenate([ep.emb for ep in eps]).astype(np.float64)
    raw_var = all_emb.var(0)
    var = np.maximum(raw_var, VAR_FLOOR * max(float(raw_var.mean()), 1e-30))
    near_constant = raw_var < NEAR_CONSTANT_FRACTION * float(raw_var.mean())

    rank = {"value": rankme(all_emb), "centered": rankme(all_emb, center=True), "frames": int(all_emb.shape[0]),
            "embed_dim": int(all_emb.shape[1]), "max": int(min(all_emb.shape))}

    fit_ids, score_ids = _split_episodes([ep.episode_id for ep in eps], rng)
    fit = [ep for ep in eps if ep.episode_id in set(fit_ids)]
    score = [ep for ep in eps if ep.episode_id in set(score_ids)]

    def stack(items: list[EpisodeEmbeddings], key: str) -> np.ndarray:
        return np.concatenate([getattr(ep, key) for ep in items])

    probe = probe_r2(stack(fit, "emb"), stack(fit, "state"), stack(score, "emb"), stack(score, "state"))
    probe.update({"target": "state", "ridge": PROBE_RIDGE, "fit_episode_ids": fit_ids, "score_episode_ids": score_ids})
    goal = None
    if eps[0].goal is not None:
        same = all(ep.goal.shape == ep.state.shape and np.array_equal(ep.goal, ep.state) for ep in eps)
        goal = {"goal_is_state": same}
        goal.update(probe if same else probe_r2(stack(fit, "emb"), stack(fit, "goal"), stack(score, "emb"), stack(score, "goal")))
        goal["target"] = "goal_from_state"
        if goal_angle_dims:
            goal["angles"] = angle_probe(stack(fit, "emb"), stack(fit, "goal"), stack(score, "emb"), stack(score, "goal"),
                                         goal_angle_dims)

    open_loop = open_loop_errors(model, eps, int(steps), var, rng, device=device, progress=progress)
    errors = surprise_errors(model, eps, var, rng, max_transitions=max_transitions, device=device, progress=progress)
    surprise = surprise_summary(errors)

    # straightness at the model's step (f raw steps), every raw offset
    def strided(key: str) -> list[np.ndarray]:
        return [getattr(ep, key)[o::f] for ep in eps for o in range(min(f, len(ep.emb)))]

    straight, pairs, skipped = straightness(strided("emb"))
    s_straight, s_pairs, _ = straightness(strided("state"))
    metrics = {
        "rankme": rank["value"],
        "probe_r2": probe["r2"],
        "open_loop_mse": open_loop["mse"],
        "surprise_ratio": surprise["surprise_ratio"],
        "straightness": straight,
        "probe_r2_goal": None if goal is None else goal["r2"],
        "surprise_ratio_by_kind": {k: v["ratio"] for k, v in surprise["kinds"].items()},
        "open_loop_mse_raw": open_loop["mse_raw"],
        "details": {
            "rankme": {**rank, "eps": 1e-7, "definition": "exp(-sum p log p), p_k = s_k / sum(s) + eps, singular "
                       "values s of the uncentred (frames x D) embedding matrix (Garrido et al. 2023)"},
            "probe": {**probe, "goal": goal, "definition": "ridge regression embedding -> target fitted on the frames "
                      "of fit_episode_ids, R^2 on the frames of score_episode_ids (around their mean), mean over "
                      "non-constant dimensions"},
            "open_loop": {**open_loop, "steps": int(steps), "context": int(model.config.context), "frameskip": f,
                          "normalisation": "mean over starts and dimensions of (pred - true)^2 / var_d, var_d the "
                          "variance of embedding dimension d over the held-out frames (1.0 = a random frame's "
                          "distance from the mean embedding); mse_raw without the division; copy_baseline: the last "
                          "context embedding as the prediction"},
            "surprise": {**surprise, "context": int(model.config.context), "frameskip": f,
                         "aggregation": "each kind: mean implausible error / mean normal error over the same "
                         "transitions; surprise_ratio: the three kinds pooled (equal counts) / mean normal error = "
                         "the mean of the kinds' ratios; errors normalised as open_loop; auroc: P(implausible error "
                         "> normal error)"},
            "variance": {"near_constant_dims": int(near_constant.sum()), "embed_dim": int(all_emb.shape[1]),
                         "fraction": NEAR_CONSTANT_FRACTION, "mean": float(raw_var.mean()),
                         "definition": "dimensions whose variance over the held-out frames is below fraction x the "
                         "mean dimension's variance (e.g. the cells of a spatial embedding that see only a wall)"},
            "straightness": {"value": straight, "pairs": pairs, "skipped_still": skipped, "state_straightness": s_straight,
                             "state_pairs": s_pairs, "stride": f, "definition": "mean cos(z[t+f] - z[t], z[t+2f] - "
                             "z[t+f]) over held-out trajectories and raw offsets; pairs with a near-zero velocity "
                             "skipped (Wang et al. 2026, arXiv:2603.12231)"},
        },
    }
    return metrics, errors


def variance_note(details: dict[str, Any]) -> str | None:
    """The note ``wm diagnose`` prints when near-constant embedding dimensions dominate the normalised
    errors (``details["variance"]`` of `diagnose`), else None."""
    v = details.get("variance") or {}
    n = int(v.get("near_constant_dims", 0))
    if n == 0:
        return None
    return (f"{n} of {v['embed_dim']} embedding dimensions vary less than {v['fraction']:g} x the mean dimension's "
            f"variance: open_loop_mse and the surprise ratios divide each dimension's error by its variance, so these "
            f"dimensions can dominate them; read open_loop_mse_raw (undivided) beside them")


def _check_model_fits(model: Any, dataset: Any) -> None:
    """Refuse a dataset whose frame size or action size is not the checkpoint's, by name."""
    meta = dataset.meta
    res, adim = int(meta["image_shape"][0]), int(meta["action_dim"])
    cfg = model.config
    if res != int(cfg.image_size) or int(meta["image_shape"][-1]) != int(getattr(cfg, "in_channels", 3)):
        raise ValueError(f"{dataset.path} has {tuple(meta['image_shape'])} frames ({meta.get('env_id')}) but the "
                         f"model expects image_size={cfg.image_size}: it was trained on other data (another env or "
                         f"resolution)")
    if adim != int(cfg.action_dim):
        raise ValueError(f"{dataset.path} has action_dim={adim} ({meta.get('env_id')}) but the model expects "
                         f"action_dim={cfg.action_dim}: it was trained on another environment's data")


def open_checked(ckpt: str | os.PathLike, data: str | os.PathLike, out_dir: str | os.PathLike, device: str,
                 model: Any = None) -> tuple[Path, Any, Any, dict, list[str]]:
    """Check the output folder, load the checkpoint (unless ``model`` is given; eval mode) and open the dataset,
    refusing another env's data or a frame or action size the model was not trained on, by name.

    Returns:
        (output folder, model, opened dataset, what the checkpoint records of its training data
        (`benchmarks.planning.checkpoint_data`), notes of what could not be checked).
    """
    from benchmarks.planning import check_trained_on, checkpoint_data
    from data import open_dataset
    from worldmodel.checkpoint import load_checkpoint
    from worldmodel.paths import check_output_dir

    out = check_output_dir(out_dir)
    if not Path(data).exists():
        raise FileNotFoundError(f"dataset {data} does not exist (expected a folder written by wm collect)")
    if model is None:
        model = load_checkpoint(ckpt, device=device)
    model.eval()
    dataset = open_dataset(data)
    trained_on = checkpoint_data(ckpt)
    notes = check_trained_on(trained_on, dataset)  # another env's data: refused by name
    _check_model_fits(model, dataset)
    return out, model, dataset, trained_on, notes


def run_diagnose(
    ckpt: str | os.PathLike,
    data: str | os.PathLike,
    out_dir: str | os.PathLike,
    episodes: int | None = 100,
    steps: int = 5,
    seed: int = 0,
    device: str = "cpu",
    allow_train_episodes: bool = False,
    log: Callable[[str], None] | None = None,
    progress: bool = False,
    model: Any = None,
) -> dict[str, Any]:
    """``wm diagnose``: load ``ckpt``, encode held-out episodes of ``data``, write ``out_dir/diagnostics.json``,
    ``surprise.jsonl`` and the plots.

    Args:
        ckpt: checkpoint folder.
        data: a dataset of held-out episodes of the env the checkpoint trained on.
        out_dir: output folder (created).
        episodes: at most this many episodes, drawn with ``seed`` (None: all).
        steps: K, open-loop rollout length in action blocks.
        seed: episode draw, probe split, sampled starts and implausible donors.
        device: torch device name.
        allow_train_episodes: use episodes the checkpoint trained on (refused by default).
        log: a line-printing function for notes.
        progress: progress lines on stderr.
        model: an already built model to use instead of loading ``ckpt``'s (tests); ``ckpt``
            is still read for its training record.

    Raises:
        ValueError (or its subclasses): missing or unreadable checkpoint or dataset, a dataset of another
        env, frame size or action size, fewer than 2 episodes, episodes too short, episodes the checkpoint
        trained on (without ``allow_train_episodes``).
    """
    import envs
    from benchmarks.leaks import check_train_episodes, checkpoint_record

    t0 = time.perf_counter()
    if episodes is not None and (isinstance(episodes, bool) or int(episodes) != episodes or episodes < 2):
        raise ValueError(f"episodes={episodes!r}: expected an integer >= 2 (the probe is fitted on some episodes and "
                         "scored on others)")
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise ValueError(f"steps={steps!r}: expected a positive integer (open-loop rollout length in action blocks)")
    out, model, dataset, trained_on, notes = open_checked(ckpt, data, out_dir, device, model)
    env_id = dataset.meta["env_id"]
    all_ids = [int(e["episode_id"]) for e in dataset.episodes()]
    if len(all_ids) < 2:
        raise ValueError(f"{dataset.path} has {len(all_ids)} episode(s): diagnose needs at least 2 (the probe is fitted "
                         "on some episodes and scored on others)")
    rng = np.random.default_rng(seed)
    ids = all_ids if episodes is None or episodes >= len(all_ids) else \
        sorted(int(all_ids[i]) for i in rng.choice(len(all_ids), int(episodes), replace=False))
    leak, leak_notes = check_train_episodes(checkpoint_record(trained_on), dataset, ids, allow=allow_train_episodes,
                                            what="episodes")
    notes += leak_notes
    for note in notes:
        if log:
            log(f"note: {note}")
    goal_fn, angle_dims = None, ()
    try:
        env = envs.make(env_id, resolution=int(dataset.meta["image_shape"][0]))
        goal_fn = env.unwrapped.goal_from_state
        angle_dims = tuple(getattr(env.unwrapped, "goal_angle_dims", ()))
    except Exception as err:  # an env that cannot be built here (a missing optional dependency): no goal probe
        notes.append(f"no goal-layout probe: {env_id} could not be built here ({err})")
        env = None
    if log:
        log(f"diagnosing {ckpt} on {len(ids)} episodes of {dataset.path} ({env_id})")
    eps = encode_episodes(model, dataset, ids, int(model.config.frameskip), goal_fn=goal_fn, device=device,
                          progress=progress)
    if env is not None:
        env.close()
    metrics, errors = diagnose(model, eps, steps=steps, seed=seed, device=device, progress=progress,
                               goal_angle_dims=angle_dims)
    note = variance_note(metrics["details"])
    if note is not None:
        notes.append(note)
    cfg = model.config
    result = {
        **metrics,
        "checkpoint": str(ckpt),
        "dataset": str(dataset.path),
        "env_id": env_id,
        "episode_ids": ids,
        "episodes": len(ids),
        "frames": int(sum(len(ep.emb) for ep in eps)),
        "steps": int(steps),
        "seed": int(seed),
        "family": getattr(cfg, "family", "lewm"),
        "model": cfg.to_dict() if hasattr(cfg, "to_dict") else None,
        "trained_on": {k: v for k, v in trained_on.items() if k != "episodes"} or None,
        **leak,
        "notes": notes,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / DIAGNOSTICS_FILE, result)
    with open(out / SURPRISE_FILE, "w") as fh:
        for i in range(len(errors["normal"])):
            row = {"episode_id": int(errors["episode_id"][i]), "step": int(errors["step"][i]),
                   **{k: float(errors[k][i]) for k in ("normal", *SURPRISE_KINDS)}}
            fh.write(json.dumps(row) + "\n")
    plot_diagnostics(out)
    return result


def summary_lines(result: dict[str, Any]) -> list[str]:
    """A few human-readable lines of a `run_diagnose` result (``wm diagnose`` without ``--json``)."""
    d = result["details"]

    def f(v: Any, fmt: str = ".3f") -> str:
        return "-" if v is None else format(v, fmt)

    probe = d["probe"]
    goal = probe.get("goal")
    lines = [
        f"{result['env_id']}: {result['episodes']} episodes, {result['frames']} frames of {result['dataset']}",
        f"rankme          {f(result['rankme'], '.2f')} of at most {d['rankme']['max']} (centred {f(d['rankme']['centered'], '.2f')})",
        f"probe_r2        {f(result['probe_r2'])} (per state dim [{', '.join(f(v) for v in probe['r2_per_dim'])}]; "
        f"fit on {len(probe['fit_episode_ids'])} episodes, scored on {len(probe['score_episode_ids'])} others)"
        + ("" if goal is None or goal.get("goal_is_state") else f"; goal layout {f(goal['r2'])}")
        + ("" if goal is None or "angles" not in goal else "; angles as (cos, sin) ["
           + ", ".join(f"{t} {f(v)}" for t, v in zip(goal["angles"]["targets"], goal["angles"]["r2_per_dim"])) + "]"),
        f"open_loop_mse   [{', '.join(f(v, '.3g') for v in result['open_loop_mse'])}] by step (normalised; nothing-moves "
        f"baseline [{', '.join(f(v, '.3g') for v in d['open_loop']['copy_baseline'])}])",
        f"surprise_ratio  {f(result['surprise_ratio'], '.2f')} ("
        + ", ".join(f"{k} {f(v['ratio'], '.2f')} auroc {f(v['auroc'], '.2f')}" for k, v in d["surprise"]["kinds"].items())
        + f"; {d['surprise']['transitions']} transitions)",
        f"straightness    {f(result['straightness'])} (true states {f(d['straightness']['state_straightness'])})",
    ]
    return lines + [f"note: {n}" for n in result.get("notes", [])]


def _write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically (NaN/inf refused: the file is for other programs)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=2, allow_nan=False)
        fh.write("\n")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- plots (from the files)
def plot_diagnostics(out_dir: str | os.PathLike) -> list[Path]:
    """``open_loop.png`` (normalised error vs step, with the copy baseline) and ``surprise.png``
    (histograms of the normal and implausible errors, log scale) from the files in ``out_dir``."""
    from benchmarks.report import _figure, _save

    out = Path(out_dir)
    result = json.loads((out / DIAGNOSTICS_FILE).read_text())
    ol = result["details"]["open_loop"]
    k = np.arange(1, len(ol["mse"]) + 1)
    fig = _figure(5.5, 3.8)
    ax = fig.add_subplot()
    ax.plot(k, ol["mse"], "o-", label="model rollout")
    ax.plot(k, ol["copy_baseline"], "s--", color="gray", label="last context embedding (nothing moves)")
    ax.set_xlabel(f"open-loop step (action blocks of {ol['frameskip']} steps)")
    ax.set_ylabel("squared error / embedding variance")
    ax.set_xticks(k)
    if min(ol["mse"] + ol["copy_baseline"]) > 0:
        ax.set_yscale("log")  # a good model sits orders of magnitude below the baseline
    ax.set_title(f"open-loop prediction error ({ol['starts']} starts)", fontsize=10)
    ax.legend(fontsize=8)
    paths = [out / "open_loop.png"]
    _save(fig, paths[-1])

    rows = [json.loads(line) for line in (out / SURPRISE_FILE).read_text().splitlines() if line.strip()]
    fig = _figure(6.0, 3.8)
    ax = fig.add_subplot()
    values = {k: np.array([r[k] for r in rows]) for k in ("normal", *SURPRISE_KINDS)}
    pos = np.concatenate(list(values.values()))
    pos = pos[pos > 0]
    lo, hi = (float(pos.min()), float(pos.max())) if len(pos) else (1e-6, 1.0)
    bins = np.geomspace(max(lo, 1e-12), max(hi, lo * 10, 1e-11), 40)
    ratios = result["surprise_ratio_by_kind"]
    for name, v in values.items():
        label = name if name == "normal" else f"{name} (x{ratios[name]:.2f})"
        ax.hist(np.clip(v, bins[0], bins[-1]), bins=bins, histtype="step", linewidth=1.5, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("one-step prediction error / embedding variance")
    ax.set_ylabel("transitions")
    ax.set_title(f"surprise: real vs implausible transitions (ratio {result['surprise_ratio']:.2f})", fontsize=10)
    ax.legend(fontsize=8)
    paths.append(out / "surprise.png")
    _save(fig, paths[-1])
    return paths
