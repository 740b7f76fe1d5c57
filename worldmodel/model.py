"""JEPA: the action-conditioned joint-embedding predictive world model (LeWorldModel-style; family ``lewm``).

    pixels (B, T, 3, H, W) uint8 --encode--> emb (B, T, D)
    emb[:, :-1], actions --predict--> pred (B, T-1, D) ~ emb[:, 1:]
    loss = MSE(pred, emb[:, 1:]) + sigreg_weight * SIGReg(emb)
         [+ idm_weight * MSE(idm(emb[:, t], emb[:, t+1]), a_t): an optional inverse-dynamics term]

No stop-gradient and no EMA target: SIGReg keeps the embeddings from collapsing.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

from worldmodel.config import ModelConfig, WorldModelConfig, parse_regularizers
from worldmodel.encoder import Encoder, Projector
from worldmodel.families import WorldModel, check_config
from worldmodel.predictor import Predictor
from worldmodel.regularizers import get_regularizer
from worldmodel.sigreg import SIGReg

#: rows (environments x candidates x window tokens) per fast-rollout call: larger batches of
#: candidates are rolled out in chunks of at most this many rows. Every op is per candidate,
#: so the result is the same; the activations of a chunk stay small enough for the allocator
#: to reuse memory rather than map fresh pages for each op (glibc maps blocks above 32 MB
#: anew every time). None: one call. 2048 measured best of None/8192/4096/2048/1024 (RESULTS.md: bf16 -6%, fp32 -21% per CEM iteration).
ROLLOUT_CHUNK_ROWS: int | None = 2048


def _shape_error(name: str, tensor: torch.Tensor, expected: str) -> ValueError:
    return ValueError(f"{name} must have shape {expected}, got {tuple(tensor.shape)} ({tensor.dtype})")


class LatentPredictorModel(WorldModel):
    """Encoder + action-conditioned predictor: what the ``lewm``, ``pldm`` and ``pixel`` families share.

    ``encode``, ``predict`` and ``rollout`` (with its fast eval-mode path) live here; a family
    adds its loss (and whatever modules the loss needs). ``CONFIG_CLS`` / ``FAMILY`` name the
    config class and registry name a subclass accepts.
    """

    CONFIG_CLS: type[WorldModelConfig] = WorldModelConfig
    FAMILY: str = ""

    def __init__(self, config: WorldModelConfig):
        super().__init__()
        check_config(type(self), config, self.CONFIG_CLS, self.FAMILY)
        self.config = config
        self.encoder = Encoder(config)
        self.predictor = Predictor(config)
        self._prefix_memo: tuple | None = None  # rollout: (state, ctx, ctx_actions, prefix) of the last call
        weights = parse_regularizers(config.regularizers)
        self.extra_regularizers = nn.ModuleDict({name: get_regularizer(name) for name in weights})
        self._extra_weights = weights

    def add_regularizers(self, losses: dict[str, torch.Tensor], emb: torch.Tensor) -> dict[str, torch.Tensor]:
        """Add ``config.regularizers``' terms of embeddings ``emb`` (B, n, D) to ``losses``: each as
        ``NAME_reg`` and, times its weight, into ``losses["loss"]``; returns ``losses``."""
        if not self._extra_weights:
            return losses
        z = emb.transpose(0, 1)  # (n, B, D): time first, as the regularisers take it
        for name, module in self.extra_regularizers.items():
            value = module(z)
            losses[f"{name}_reg"] = value
            losses["loss"] = losses["loss"] + self._extra_weights[name] * value
        return losses

    # ----------------------------------------------------------------- checks
    def _check_pixels(self, pixels: torch.Tensor) -> None:
        c = self.config
        expected = f"(B, T, {c.in_channels}, {c.image_size}, {c.image_size}) uint8"
        if not isinstance(pixels, torch.Tensor):
            raise TypeError(f"pixels must be a torch.Tensor {expected}, got {type(pixels).__name__}")
        if pixels.ndim != 5 or tuple(pixels.shape[2:]) != (c.in_channels, c.image_size, c.image_size):
            raise _shape_error("pixels", pixels, expected)
        if pixels.dtype != torch.uint8:
            raise ValueError(f"pixels must be uint8 {expected}, got dtype {pixels.dtype}")

    def _check_emb(self, emb: torch.Tensor, name: str = "emb") -> None:
        D = self.config.embed_dim
        if not isinstance(emb, torch.Tensor) or emb.ndim != 3 or emb.shape[-1] != D or emb.shape[1] < 1:
            raise _shape_error(name, emb, f"(B, T, {D})")

    def _check_actions(self, actions: torch.Tensor, leading: tuple[int, ...], expected: str) -> None:
        if not isinstance(actions, torch.Tensor) or tuple(actions.shape) != (*leading, self.config.block_dim):
            raise _shape_error("actions", actions, f"{expected} = {(*leading, self.config.block_dim)} "
                               f"(A_block = frameskip * action_dim = {self.config.block_dim})")
        if not actions.is_floating_point():
            raise ValueError(f"actions must be a floating-point tensor, got dtype {actions.dtype}")

    # ------------------------------------------------------------- public API
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels uint8 (B, T, C, H, W) -> embeddings (B, T, D)."""
        self._check_pixels(pixels)
        B, T = pixels.shape[:2]
        return self.encoder(pixels.reshape(B * T, *pixels.shape[2:])).view(B, T, -1)

    def predict(self, emb: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """emb (B, T, D), actions (B, T, A_block) -> predicted next embeddings (B, T, D).

        Teacher-forced with the history planning gives: output t predicts embedding t+1 from
        the last ``min(t + 1, context)`` embeddings and action blocks (emb[:, s:t+1],
        actions[:, s:t+1], s = max(0, t + 1 - context)) at window positions 0.., as
        ``rollout`` does from the same history (``Predictor.teacher_forced``).
        """
        self._check_emb(emb)
        B, T, _ = emb.shape
        self._check_actions(actions, (B, T), "(B, T, A_block)")
        return self.predictor.teacher_forced(emb, actions.to(emb.dtype))

    def rollout(
        self,
        emb: torch.Tensor,
        actions: torch.Tensor,
        past_actions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Autoregressively predict H future embeddings for S candidate action sequences.

        Args:
            emb: (B, T0, D) context embeddings, oldest first; the last is the current one.
            actions: (B, S, H, A_block) candidate future action blocks.
            past_actions: (B, T0 - 1, A_block) blocks executed between the context
                embeddings. If None, only the last embedding is used as context.

        Returns:
            (B, S, H, D): the predicted embedding after each of the H blocks.

        The last ``min(T0, context)`` embeddings are kept; each step predicts one
        embedding, appends it and drops the oldest beyond ``context``. All B * S
        sequences are rolled out in one batch; the loop runs over H only. Wrap the
        call in ``torch.inference_mode()`` (or ``no_grad``) when no gradient is needed.

        In eval mode the rollout skips work that cannot change the result
        (``Predictor.rollout``): the candidate-independent leading tokens of each window
        are computed for B rather than B * S and reused by the next call with equal
        context tensors (no gradient, same weights and precision: a CEM plan's
        iterations), and per-layer work whose output is never read is not done. It equals
        the sliding-window computation (``rollout_reference``) to float tolerance. In
        train mode (batch statistics, dropout) the sliding window itself runs.
        """
        if self.training:
            return self.rollout_reference(emb, actions, past_actions)
        ctx, ctx_actions, future = self._rollout_inputs(emb, actions, past_actions)
        prefix = self._cached_prefix(ctx, ctx_actions, future.shape[2])
        return chunked_rollout(self.predictor.rollout, ctx, ctx_actions, future, prefix)

    def _rollout_inputs(
        self, emb: torch.Tensor, actions: torch.Tensor, past_actions: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Check the rollout's inputs -> context (B, k, D), its blocks (B, k - 1, A), candidates (B, S, H, A)."""
        self._check_emb(emb)
        B, T0, D = emb.shape
        if not isinstance(actions, torch.Tensor) or actions.ndim != 4 or actions.shape[0] != B:
            raise _shape_error("actions", actions, f"(B, S, H, A_block) with B={B}")
        S, H = actions.shape[1:3]
        self._check_actions(actions, (B, S, H), "(B, S, H, A_block)")
        if past_actions is None:
            emb, past_actions = emb[:, -1:], actions.new_zeros(B, 0, self.config.block_dim)
        else:
            self._check_actions(past_actions, (B, T0 - 1), "past_actions (B, T0 - 1, A_block)")
        keep = min(emb.shape[1], self.config.context)
        ctx = emb[:, emb.shape[1] - keep :]  # (B, k, D)
        ctx_actions = past_actions[:, past_actions.shape[1] - (keep - 1) :].to(emb.dtype)  # (B, k - 1, A)
        return ctx, ctx_actions, actions.to(emb.dtype)

    def _cached_prefix(self, ctx: torch.Tensor, ctx_actions: torch.Tensor, steps: int) -> list:
        """``predictor.rollout_prefix``, reused while context, weights and precision are unchanged.

        Only without gradient: a cached prefix would cut the graph to the context and weights.
        """
        if torch.is_grad_enabled():
            return self.predictor.rollout_prefix(ctx, ctx_actions, steps)
        device_type = ctx.device.type
        autocast = torch.is_autocast_enabled(device_type)
        state = (
            steps, ctx.dtype, ctx.device, autocast, torch.get_autocast_dtype(device_type) if autocast else None,
            _versions(self.predictor),
        )
        memo = self._prefix_memo
        if (
            memo is not None and memo[0] == state and memo[1].shape == ctx.shape
            and memo[2].shape == ctx_actions.shape and torch.equal(memo[1], ctx) and torch.equal(memo[2], ctx_actions)
        ):
            return memo[3]
        prefix = self.predictor.rollout_prefix(ctx, ctx_actions, steps)
        self._prefix_memo = (state, ctx.clone(), ctx_actions.clone(), prefix)
        return prefix

    def rollout_reference(
        self,
        emb: torch.Tensor,
        actions: torch.Tensor,
        past_actions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``rollout`` computed as written: ``predictor.forward`` over each step's whole window.

        Same arguments and result (B, S, H, D); the training loss uses it (batch
        statistics and dropout see every token, as in ``predict``).
        """
        ctx, ctx_actions, future = self._rollout_inputs(emb, actions, past_actions)
        (B, keep, D), (S, H, A) = ctx.shape, future.shape[1:]

        # Expand to B * S sequences (sample-major within each batch element).
        ctx = ctx.unsqueeze(1).expand(B, S, keep, D).reshape(B * S, keep, D)
        ctx_actions = ctx_actions.unsqueeze(1).expand(B, S, keep - 1, A).reshape(B * S, keep - 1, A)
        future = future.reshape(B * S, H, A)

        preds = []
        for h in range(H):
            step_actions = torch.cat([ctx_actions, future[:, h : h + 1]], dim=1)  # (BS, k, A)
            pred = self.predictor(ctx, step_actions)[:, -1]  # (BS, D)
            preds.append(pred)
            ctx = torch.cat([ctx, pred[:, None]], dim=1)[:, -self.config.context :]
            ctx_actions = step_actions[:, step_actions.shape[1] - (ctx.shape[1] - 1) :]
        return torch.stack(preds, dim=1).view(B, S, H, D)

    def _check_window(self, pixels: torch.Tensor, actions: torch.Tensor) -> None:
        """Check a training batch: pixels uint8 (B, n, C, H, W) with n >= 2, actions (B, n - 1, A_block)."""
        self._check_pixels(pixels)
        B, n = pixels.shape[:2]
        if n < 2:
            raise _shape_error("pixels", pixels, "(B, n, C, H, W) with n >= 2 frames")
        self._check_actions(actions, (B, n - 1), "(B, n - 1, A_block)")

    def rollout_loss(self, emb: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """MSE of an open-loop rollout from the first ``context`` embeddings over the rest of the window.

        emb (B, n, D), actions (B, n - 1, A_block) -> scalar; 0 when ``rollout_weight`` is 0 or
        the window has fewer than two frames after the context. It trains the predictor on its
        own outputs, as planning uses it, so errors do not compound.
        """
        n = emb.shape[1]
        k = min(self.config.context, n - 1)  # context frames the rollout starts from
        if self.config.rollout_weight <= 0 or n - k < 2:
            return emb.new_zeros((), dtype=torch.float32)
        future = actions[:, None, k - 1 :]  # (B, 1, n - k, A_block)
        rolled = self.rollout_reference(emb[:, :k], future, past_actions=actions[:, : k - 1])  # (B, 1, n - k, D)
        return F.mse_loss(rolled[:, 0].float(), emb[:, k:].float())


class InverseDynamics(nn.Module):
    """MLP from two consecutive embeddings to the action block between them: (..., 2D) -> (..., A_block)."""

    def __init__(self, embed_dim: int, hidden: int, block_dim: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(2 * embed_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, block_dim)
        )

    def forward(self, z_t: torch.Tensor, z_next: torch.Tensor) -> torch.Tensor:
        """z_t, z_next (..., D) -> predicted action block (..., A_block)."""
        return self.net(torch.cat([z_t, z_next], dim=-1))


class JEPA(LatentPredictorModel):
    """Family ``lewm``: encoder + action-conditioned predictor + SIGReg, configured by a ``ModelConfig``."""

    CONFIG_CLS = ModelConfig
    FAMILY = "lewm"

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.sigreg = SIGReg(config.sigreg_knots, config.sigreg_projections)
        # SIGReg's expander exists only when asked for: older checkpoints keep their state dict
        self.expander = (Projector(config.embed_dim, config.projector_hidden, config.sigreg_expander)
                         if config.sigreg_expander > 0 else None)
        # the inverse-dynamics head exists only when its term is on: older checkpoints keep their state dict
        self.idm = InverseDynamics(config.embed_dim, config.idm_hidden, config.block_dim) if config.idm_weight > 0 else None
        # the reconstruction decoder exists only when its term is on: older checkpoints keep their state dict
        self.recon = (FrameDecoder(config.embed_dim, config.recon_hidden, config.recon_size, config.recon_standardise)
                      if config.recon_weight > 0 else None)

    @property
    def uses_episode_ids(self) -> bool:
        """Whether `loss` needs the windows' episode ids (``sigreg_center="episode"``)."""
        return self.config.sigreg_center == "episode"

    def loss(self, pixels: torch.Tensor, actions: torch.Tensor,
             episode_ids: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Training loss on a batch of windows.

        Args:
            pixels: uint8 (B, n, C, H, W), n = context + pred_steps frames (2 <= n).
            actions: (B, n - 1, A_block), block k taken between frames k and k+1.
            episode_ids: int (B,), each window's episode; needed (only) with
                ``sigreg_center="episode"``, whose batches hold several windows per episode
                (``data.EpisodeGroupSampler``).

        Returns:
            dict of scalars: ``loss`` = ``pred_loss + sigreg_weight * sigreg_loss
            + rollout_weight * rollout_loss``, ``pred_loss`` (MSE of teacher-forced
            next-embedding predictions, each from the history planning gives it: ``predict``),
            ``sigreg_loss`` (SIGReg over the batch, per time step, of the embeddings (with
            ``sigreg_expander > 0``: of the expander's outputs of them, here and below) or, with
            ``sigreg_center="window"``, of their deviations from the window's mean; ``"both"``: the mean
            of the two; ``"episode"``: of their deviations from the mean over all frames of the
            batch's windows of the same episode) and ``rollout_loss``
            (``rollout_loss``; 0 when the window has fewer than two frames after the context);
            with ``idm_weight > 0`` also ``idm_loss`` (MSE of the inverse-dynamics head's action
            blocks from consecutive embeddings, (B, n-1, A_block) against ``actions``), added to
            ``loss`` times ``idm_weight``; with ``recon_weight > 0`` also ``recon_loss``
            (``FrameDecoder.loss`` of every frame from its embedding), added times ``recon_weight``.
        """
        self._check_window(pixels, actions)
        emb = self.encode(pixels)  # (B, n, D)
        pred = self.predict(emb[:, :-1], actions)  # (B, n - 1, D)
        pred_loss = F.mse_loss(pred.float(), emb[:, 1:].float())
        center = self.config.sigreg_center
        z = emb if self.expander is None else self.expander(emb.flatten(0, 1)).view(*emb.shape[:2], -1)
        sigreg_loss = emb.new_zeros((), dtype=torch.float32)
        if center in ("none", "both"):
            sigreg_loss = sigreg_loss + self.sigreg(z.transpose(0, 1))  # (n, B, D) -> scalar
        if center in ("window", "both"):
            sigreg_loss = sigreg_loss + self.sigreg((z - z.mean(1, keepdim=True)).transpose(0, 1))
        if center == "both":
            sigreg_loss = sigreg_loss / 2
        if center == "episode":
            sigreg_loss = self.sigreg((z - episode_means(z, episode_ids)).transpose(0, 1))
        rollout_loss = self.rollout_loss(emb, actions)
        loss = pred_loss + self.config.sigreg_weight * sigreg_loss + self.config.rollout_weight * rollout_loss
        losses = {"loss": loss, "pred_loss": pred_loss, "sigreg_loss": sigreg_loss, "rollout_loss": rollout_loss}
        if self.idm is not None:
            idm_loss = F.mse_loss(self.idm(emb[:, :-1], emb[:, 1:]).float(), actions.float())
            losses["idm_loss"] = idm_loss
            losses["loss"] = losses["loss"] + self.config.idm_weight * idm_loss
        if self.recon is not None:
            recon_loss = self.recon.loss(emb.flatten(0, 1), pixels.flatten(0, 1))
            losses["recon_loss"] = recon_loss
            losses["loss"] = losses["loss"] + self.config.recon_weight * recon_loss
        return self.add_regularizers(losses, emb)


class FrameDecoder(nn.Module):
    """A small MLP from an embedding to its frame's deviation from the batch's mean frame, the frame
    downsampled to ``size`` x ``size`` grayscale: Linear(D, hidden) -> GELU -> Linear(hidden, size**2),
    the last layer zero-initialised (so the term starts at 1, the mean frame's score). The
    reconstruction term's decoder (``ModelConfig.recon_weight``); planning never uses it. With
    ``standardise`` each target frame is first standardised over its pixels (``recon_standardise``)."""

    def __init__(self, embed_dim: int, hidden: int, size: int, standardise: bool = False):
        super().__init__()
        self.size, self.standardise = size, standardise
        self.net = nn.Sequential(nn.Linear(embed_dim, hidden), nn.GELU(), nn.Linear(hidden, size * size))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        """emb (N, D) -> each frame's reconstructed deviation from the mean frame (N, size * size), in `target`'s units."""
        return self.net(emb)

    def target(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 pixels (N, C, H, W) -> grayscale (mean over C) area-downsampled to (N, size * size) in [0, 1]
        (with ``standardise``: each frame's zero-mean, unit-variance version; a uniform frame gives zeros)."""
        gray = pixels.float().mean(1, keepdim=True) / 255.0
        small = F.adaptive_avg_pool2d(gray, self.size).flatten(1)
        if self.standardise:
            centred = small - small.mean(1, keepdim=True)
            return centred / centred.square().mean(1, keepdim=True).sqrt().clamp_min(1e-3)
        return small

    def loss(self, emb: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        """emb (N, D), uint8 pixels (N, C, H, W) -> normalised error sum(err^2) / sum(var), a float32 scalar.

        The target is each frame minus the N frames' mean frame, so ``var`` sums each pixel's
        variance over the N frames: the mean frame (an all-zero output) scores 1, a perfect
        reconstruction 0, and pixels that never change carry no weight."""
        target = self.target(pixels)
        target = target - target.mean(0, keepdim=True)
        return (self(emb).float() - target).square().sum() / target.square().sum().clamp_min(1e-8)


def episode_means(emb: torch.Tensor, episode_ids: torch.Tensor | None) -> torch.Tensor:
    """Each window's episode mean: the mean of `emb` over all frames of the windows with its episode id.

    Args:
        emb: (B, n, D) embeddings of B windows of n frames.
        episode_ids: int (B,), the windows' episodes.

    Returns:
        (B, 1, D), broadcastable against `emb`.
    """
    if episode_ids is None:
        raise ValueError("sigreg_center='episode' needs the windows' episode ids (loss(..., episode_ids=...)); "
                         "train with batches of several windows per episode (data.EpisodeGroupSampler)")
    B = emb.shape[0]
    if tuple(episode_ids.shape) != (B,):
        raise ValueError(f"episode_ids: expected shape ({B},), one id per window, got {tuple(episode_ids.shape)}")
    uniq, inverse = torch.unique(episode_ids.to(emb.device), return_inverse=True)  # (B,) group of each window
    groups = len(uniq)
    sums = emb.new_zeros((groups, emb.shape[-1]), dtype=torch.float32).index_add_(0, inverse, emb.float().sum(1))
    frames = torch.bincount(inverse, minlength=groups).to(torch.float32) * emb.shape[1]  # (G,)
    return (sums / frames[:, None])[inverse][:, None].to(emb.dtype)


def chunked_rollout(rollout, ctx: torch.Tensor, ctx_actions: torch.Tensor, future: torch.Tensor, prefix: list,
                    chunk_rows: int | None = None) -> torch.Tensor:
    """``rollout(ctx, ctx_actions, future[:, chunk], prefix=prefix)`` over chunks of candidates.

    Args:
        rollout: ``Predictor.rollout`` (or its compiled form); ctx (B, k, D), ctx_actions
            (B, k - 1, A), future (B, S, H, A), prefix: its ``rollout_prefix``.
        chunk_rows: rows per call (B x candidates x context); None: `ROLLOUT_CHUNK_ROWS`.

    Returns:
        (B, S, H, D), equal to one call over all S candidates.
    """
    rows = ROLLOUT_CHUNK_ROWS if chunk_rows is None else chunk_rows
    B, S = future.shape[:2]
    per = S if not rows else max(1, rows // (B * max(1, ctx.shape[1])))
    if per >= S:
        return rollout(ctx, ctx_actions, future, prefix=prefix)
    return torch.cat([rollout(ctx, ctx_actions, future[:, i : i + per], prefix=prefix) for i in range(0, S, per)], dim=1)


def _versions(module: nn.Module) -> tuple:
    """Version counters of ``module``'s parameters (bumped by in-place updates, e.g. an optimiser
    step); parameters made in inference mode have none and count by identity."""
    return tuple(id(p) if p.is_inference() else p._version for p in module.parameters())


#: planning precisions ``planning_model`` accepts
PLANNING_DTYPES = ("float32", "bfloat16")


class PlanningModel(nn.Module):
    """A world model as planning runs it: in a chosen precision, optionally compiled.

    ``encode`` and ``rollout`` take and return float32 tensors, so objectives and solvers
    keep float32 costs. For ``dtype`` bfloat16 a copy of the model runs in bf16 (weights
    and activations): on CPU, ``torch.autocast``'s per-op casts of activations cost as much
    as the bf16 matrix products save (measured: 15.6 s vs 15.2 s float32 for one CEM
    iteration of 8 x 300 candidates at LeWorldModel scale). For float32 the model itself
    is used. Gradients flow through the casts (gradient solvers).

    ``compile``: the eval-mode fast rollout (``Predictor.rollout``) goes through
    ``torch.compile`` when no gradient is needed; the first call of each new input shape
    compiles (minutes on a 2-core CPU), later ones run fused kernels. Gradient solvers
    and train mode keep the eager rollout.
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype = torch.float32, compile: bool = False):
        super().__init__()
        import copy

        from worldmodel.device import keep_freed_memory

        # rollouts allocate and free the same multi-MB activations every iteration: keep them in
        # the heap rather than mapping fresh pages each time (process-wide; worldmodel/device.py)
        keep_freed_memory()

        self.model = model  # float32: encodes observations (once per step; any encoder, CNN included)
        if dtype == torch.float32:
            self.inner = model
        else:
            with torch.inference_mode(False):  # normal tensors even when built inside inference mode
                self.inner = copy.deepcopy(model).to(dtype)
            if dtype == torch.bfloat16 and not compile:
                from worldmodel.cpu_fused import pack_linears

                pack_linears(self.inner)  # oneDNN GEMMs with bias and GELU fused, on CPU without autograd
        self.config = model.config
        self.dtype = dtype
        if compile and not isinstance(model, LatentPredictorModel):
            raise ValueError(f"compiled planning needs a model with the JEPA predictor (families lewm, pldm, pixel), "
                             f"got {type(model).__name__}")
        self._compiled = torch.compile(self.inner.predictor.rollout) if compile else None

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels uint8 (B, T, C, H, W) -> float32 embeddings (B, T, D), by the float32 model:
        encoding runs once per observation, not per candidate, so bf16 would save little there
        (and the CNN encoder's convolutions take float32 input)."""
        return self.model.encode(pixels).float()

    def rollout(
        self, emb: torch.Tensor, actions: torch.Tensor, past_actions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``JEPA.rollout`` in ``dtype``: float32 (B, T0, D), (B, S, H, A) -> float32 (B, S, H, D)."""
        emb, actions = emb.to(self.dtype), actions.to(self.dtype)
        past = None if past_actions is None else past_actions.to(self.dtype)
        inner = self.inner
        if self._compiled is None or inner.training or torch.is_grad_enabled():
            return inner.rollout(emb, actions, past_actions=past).float()
        ctx, ctx_actions, future = inner._rollout_inputs(emb, actions, past)
        prefix = inner._cached_prefix(ctx, ctx_actions, future.shape[2])
        return chunked_rollout(self._compiled, ctx, ctx_actions, future, prefix).float()


def planning_model(model: nn.Module, dtype: str = "float32", compile: bool = False) -> nn.Module:
    """The model a planner should roll out, in precision ``dtype`` ('float32' or 'bfloat16').

    float32 without ``compile`` returns ``model`` itself (any world model); otherwise a
    ``PlanningModel`` in eval mode (float32 in and out): for bfloat16 around any world model
    (a bf16 copy runs its ``rollout``), compiled only around a ``LatentPredictorModel``
    (``JEPA`` and the other families built on the same predictor).
    """
    if dtype not in PLANNING_DTYPES:
        raise ValueError(f"planning dtype must be one of {', '.join(PLANNING_DTYPES)}, got {dtype!r}")
    if dtype == "float32" and not compile:
        return model
    if dtype == "bfloat16" and next(model.parameters()).device.type == "cpu":
        from worldmodel.device import cpu_has_fast_bf16

        if not cpu_has_fast_bf16():
            warnings.warn("bfloat16 planning on a CPU without native bf16 matrix products (AVX2 only): emulated, "
                          "~100x slower than float32 here; plan in float32 (--dtype float32)", stacklevel=2)
    return PlanningModel(model, getattr(torch, dtype), compile=compile).eval()
