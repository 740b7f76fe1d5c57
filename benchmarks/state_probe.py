"""A linear state probe for a checkpoint: the read-out the ``state`` planning objective uses.

Our JEPA sees pixels only (no proprioceptive input), so the ``state`` term of
``planners.objectives`` compares a *linear read-out* of the predicted embedding with the
env's goal. The probe maps an embedding (D,) to the env's goal layout (G,) (the state
for TwoRoom, the block pose for PushT, ...: ``env.goal_from_state(state)``, what
``info["goal_state"]`` holds), fitted by ridge regression on the training dataset's
frames and recorded states, and is saved beside the checkpoint (it lives in
``benchmarks`` because it reads datasets and envs, which ``planners`` and ``worldmodel``
never do)::

    CKPT/state_probe.safetensors   weight (D, G), bias (G,), std (G,) float32; metadata:
                                   format, model_sha256 (the weights it was fitted for),
                                   info (JSON: dataset, env_id, frames, ridge, r2)

``std`` is the dataset's standard deviation of each goal dimension, the scale the
objective divides by. A probe fitted for other weights (the checkpoint was trained
further) is refitted by ``load_or_fit_state_probe``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from planners.objectives import StateProbe

__all__ = ["PROBE_FILE", "fit_state_probe", "embed_dataset", "probe_r2", "save_state_probe", "load_state_probe",
           "load_or_fit_state_probe"]

PROBE_FILE = "state_probe.safetensors"
_FORMAT = "worldmodel-state-probe-1"


def _model_sha256(ckpt_dir: Path) -> str:
    """sha256 of the checkpoint's weights file (a probe belongs to those weights)."""
    from worldmodel.checkpoint import MODEL_FILE

    h = hashlib.sha256()
    with open(ckpt_dir / MODEL_FILE, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def ridge_fit(x: np.ndarray, y: np.ndarray, ridge: float = 1e-3) -> tuple[np.ndarray, np.ndarray, list[float | None]]:
    """Least squares ``y ~ x @ W + b`` with an L2 penalty ``ridge * mean(diag(Xc^T Xc))`` on W.

    Args:
        x: (N, D) inputs; y: (N, G) targets; ridge >= 0 (relative to the inputs' scale).

    Returns:
        W (D, G), b (G,) float64, and the in-sample R^2 of each target dimension (None
        where the target is constant).

    With more input dimensions than rows (D > N, e.g. flattened patch tokens) it solves the
    same problem in its dual form, ``W = Xc^T (Xc Xc^T + lam I_N)^-1 Yc``: an (N, N) system
    instead of a (D, D) one (equal for lam > 0, since ``Xc^T (Xc Xc^T + lam I) = (Xc^T Xc + lam I) Xc^T``).
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    xm, ym = x.mean(0), y.mean(0)
    xc, yc = x - xm, y - ym
    n, d = xc.shape
    if d > n:  # the dual: an (N, N) Gram matrix; trace(Xc Xc^T) = trace(Xc^T Xc), so lam is the same
        kernel = xc @ xc.T
        lam = ridge * max(float(np.trace(kernel)) / max(d, 1), 1e-12)
        w = xc.T @ np.linalg.solve(kernel + lam * np.eye(n), yc)
    else:
        gram = xc.T @ xc
        lam = ridge * max(float(np.trace(gram)) / max(d, 1), 1e-12)
        w = np.linalg.solve(gram + lam * np.eye(d), xc.T @ yc)
    b = ym - xm @ w
    ss_res = ((xc @ w - yc) ** 2).sum(0)
    ss_tot = (yc**2).sum(0)
    r2 = [None if t <= 1e-12 * max(len(y), 1) else float(1.0 - r / t) for r, t in zip(ss_res, ss_tot)]
    return w, b, r2


@torch.inference_mode()
def fit_state_probe(
    model: Any,
    dataset: Any,
    goal_fn: Callable[[np.ndarray], np.ndarray] | None = None,
    max_frames: int = 20_000,
    ridge: float = 1e-3,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> StateProbe:
    """Fit a ``StateProbe`` on ``dataset``'s frames: ridge regression from ``model.encode``
    embeddings to ``goal_fn(state)`` of the same rows.

    Args:
        model: a world model with ``encode(uint8 (B, T, 3, H, W)) -> (B, T, D)``, in eval mode.
        dataset: an opened ``data.EpisodeDataset`` (``episodes()``, ``load_episode``).
        goal_fn: recorded state (S,) -> goal layout (G,), e.g. ``env.unwrapped.goal_from_state``;
            None: the state itself.
        max_frames: at most this many rows, evenly strided over every episode.
        ridge: L2 penalty relative to the embeddings' scale.
        batch_size: frames per ``encode`` call.
        device: where to encode.
        progress: a ``ProgressBar`` over the episodes on stderr.

    Raises:
        ValueError: fewer than 2 frames, or a non-positive ``max_frames``.
    """
    x, y = embed_dataset(model, dataset, goal_fn, max_frames, batch_size, device, progress)
    w, b, r2 = ridge_fit(x, y, ridge)
    info = {"dataset": str(getattr(dataset, "path", "")), "env_id": getattr(dataset, "meta", {}).get("env_id"),
            "frames": int(len(x)), "ridge": ridge, "r2": r2}
    return StateProbe(
        weight=torch.from_numpy(w).float(), bias=torch.from_numpy(b).float(),
        std=torch.from_numpy(y.std(0)).float(), info=info,
    )


def probe_r2(probe: StateProbe, x: np.ndarray, y: np.ndarray) -> list[float | None]:
    """R^2 of each target dimension of `probe`'s read-out on other rows (e.g. held-out episodes).

    Args:
        probe: a fitted ``StateProbe`` (weight (D, G), bias (G,)).
        x: (N, D) embeddings; y: (N, G) targets (the layout the probe was fitted on).

    Returns:
        per dimension ``1 - SS_res / SS_tot`` around these rows' own mean (negative when the
        read-out is worse than that mean; None where the target is constant here).

    Raises:
        ValueError: shapes that do not match the probe's, or fewer than 2 rows.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    w = probe.weight.detach().double().cpu().numpy()
    b = probe.bias.detach().double().cpu().numpy()
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y) or x.shape[1] != w.shape[0] or y.shape[1] != w.shape[1]:
        raise ValueError(f"probe_r2: x {x.shape} and y {y.shape} do not fit a probe of weight {tuple(w.shape)} "
                         f"(expected (N, {w.shape[0]}) and (N, {w.shape[1]}))")
    if len(x) < 2:
        raise ValueError(f"probe_r2: {len(x)} rows, expected at least 2")
    ss_res = ((x @ w + b - y) ** 2).sum(0)
    ss_tot = ((y - y.mean(0)) ** 2).sum(0)
    return [None if t <= 1e-12 * len(y) else float(1.0 - r / t) for r, t in zip(ss_res, ss_tot)]


@torch.inference_mode()
def embed_dataset(
    model: Any,
    dataset: Any,
    goal_fn: Callable[[np.ndarray], np.ndarray] | None = None,
    max_frames: int = 20_000,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings and targets of ``dataset``'s frames (the rows `fit_state_probe` fits on).

    Returns:
        x float32 (N, D): ``model.encode`` of at most `max_frames` frames evenly strided over
        every episode; y float64 (N, G): ``goal_fn(state)`` of the same rows (the state itself
        when `goal_fn` is None). Arguments as in `fit_state_probe`.

    Raises:
        ValueError: fewer than 2 frames, or ``max_frames`` below 2.
    """
    from worldmodel.progress import ProgressBar

    if max_frames < 2:
        raise ValueError(f"max_frames={max_frames}: expected at least 2")
    episodes = dataset.episodes()
    total = int(sum(int(e["length"]) for e in episodes))
    stride = max(1, math.ceil(total / max_frames))
    embs: list[np.ndarray] = []
    goals: list[np.ndarray] = []
    with ProgressBar(len(episodes), desc="state probe", unit="episodes", enabled=progress) as bar:
        for ep in episodes:
            rows = dataset.load_episode(int(ep["episode_id"]), columns=("pixels", "state"))
            pixels, states = rows["pixels"][::stride], rows["state"][::stride]
            for i in range(0, len(pixels), batch_size):
                px = torch.from_numpy(np.array(pixels[i : i + batch_size])).to(device)  # a writable copy
                emb = model.encode(px.permute(0, 3, 1, 2).unsqueeze(1))[:, 0]  # (b, D)
                embs.append(emb.float().cpu().numpy())
            flat = states.reshape(len(states), -1)
            goals.append(np.stack([np.asarray(goal_fn(s) if goal_fn else s, np.float64).ravel() for s in flat])
                         if len(flat) else np.zeros((0, 0)))
            bar.update(1)
    x = np.concatenate(embs) if embs else np.zeros((0, 0))
    y = np.concatenate([g for g in goals if len(g)]) if any(len(g) for g in goals) else np.zeros((0, 0))
    if len(x) < 2:
        raise ValueError(f"{getattr(dataset, 'path', 'the dataset')} has {len(x)} frames; a state probe needs at least 2")
    return x, y


def save_state_probe(ckpt_dir: str | os.PathLike, probe: StateProbe) -> Path:
    """Write ``probe`` to ``ckpt_dir/state_probe.safetensors`` (atomically), tied to the
    checkpoint's current weights. Returns the file's path."""
    from safetensors.torch import save_file

    ckpt = Path(ckpt_dir)
    path = ckpt / PROBE_FILE
    tmp = path.with_name(f".{PROBE_FILE}.tmp{os.getpid()}")
    tensors = {"weight": probe.weight.detach().float().contiguous().cpu(), "bias": probe.bias.detach().float().contiguous().cpu(),
               "std": probe.std.detach().float().contiguous().cpu()}
    meta = {"format": _FORMAT, "model_sha256": _model_sha256(ckpt), "info": json.dumps(probe.info)}
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path


def load_state_probe(ckpt_dir: str | os.PathLike) -> StateProbe | None:
    """The probe saved beside the checkpoint, or None when there is none or it was fitted
    for other weights than the checkpoint's.

    Raises:
        ValueError: the file exists but is not a readable state probe (named).
    """
    from safetensors import safe_open

    ckpt = Path(ckpt_dir)
    path = ckpt / PROBE_FILE
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in ("weight", "bias", "std")}
    except Exception as err:  # safetensors raises several types for damaged files
        raise ValueError(f"{path} is not a readable state probe ({err}); delete it to refit") from None
    if meta.get("format") != _FORMAT:
        raise ValueError(f"{path} has format {meta.get('format')!r}, expected {_FORMAT!r}; delete it to refit")
    if meta.get("model_sha256") != _model_sha256(ckpt):
        return None
    return StateProbe(**tensors, info=json.loads(meta.get("info") or "{}"))


def load_or_fit_state_probe(
    ckpt_dir: str | os.PathLike,
    model: Any,
    data: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    log: Callable[[str], None] | None = None,
    max_frames: int = 20_000,
) -> StateProbe:
    """The checkpoint's state probe: loaded from ``state_probe.safetensors`` when it belongs
    to these weights, else fitted on the training dataset (``data``, default the one the
    checkpoint records) and saved there.

    Raises:
        ValueError: no probe and no readable training dataset to fit one on (named).
    """
    import envs
    from data import open_dataset
    from worldmodel.checkpoint import load_extra

    probe = load_state_probe(ckpt_dir)
    if probe is not None:
        return probe
    if data is None:
        extra = load_extra(ckpt_dir)
        data = (extra.get("dataset") or {}).get("path") or (extra.get("train_config") or {}).get("data")
    if not data or not (Path(data) / "meta.json").is_file():
        raise ValueError(f"the 'state' objective needs a state probe: {Path(ckpt_dir) / PROBE_FILE} is missing and the "
                         f"checkpoint's training dataset ({data or 'not recorded'}) is not readable to fit one on")
    dataset = open_dataset(data)
    env = envs.make(dataset.meta["env_id"], resolution=int(dataset.meta["image_shape"][0]))
    if log:
        log(f"fitting a state probe on {data} (at most {max_frames} frames)")
    probe = fit_state_probe(model, dataset, goal_fn=env.unwrapped.goal_from_state, max_frames=max_frames,
                            device=device, progress=log is not None)
    env.close()
    path = save_state_probe(ckpt_dir, probe)
    if log:
        r2 = ", ".join("-" if v is None else f"{v:.3f}" for v in probe.info["r2"])
        log(f"state probe: {probe.info['frames']} frames, in-sample R^2 per goal dimension [{r2}], saved to {path}")
    return probe
