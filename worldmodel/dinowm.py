"""DINO-WM: a frozen DINOv2 encoder's patch tokens and a frame-causal ViT predictor.

After Zhou et al. 2024, "DINO-WM: World Models on Pre-trained Visual Features enable
Zero-shot Planning" (github.com/gaoyuezhou/dino_wm: ``models/vit.py``,
``models/visual_world_model.py``, ``conf/train.yaml``, ``conf/predictor/vit.yaml``)::

    pixels (B, T, C, S, S) uint8 --resize to encoder_size, normalise--> frozen DinoV2
        --> patch tokens (B, T, G*G, d) --[optional average pool to token_pool^2]--> z (B, T, N, d)
    encode(pixels) = z flattened: (B, T, D), D = N * d
    actions (B, T, A_block) --Linear--> (B, T, e), copied to every token of its frame and
        concatenated to it: (B, T, N, d + e)   (DINO-WM's concat_dim=1, num_action_repeat=1)
    --> + learned positions (context * N tokens) --> pre-norm ViT blocks whose attention is
        frame-causal (a token of frame t attends to every token of frames <= t) --> LayerNorm
    --> the first d channels of frame t's tokens predict frame t+1's tokens (B, T, N, d)
    loss = MSE(predictions, z[:, 1:])     (teacher forcing over the window)

Every prediction sees at most ``context`` frames (DINO-WM's ``num_hist``), in training as
in planning: a window longer than ``context`` is predicted with sliding windows of
``context`` frames. The encoder never trains (``requires_grad=False``, always in eval
mode); its weights come from a local DINOv2-layout ``.safetensors`` file
(``encoder_weights``) or from another worldmodel checkpoint's encoder
(``encoder_from_ckpt``: a ``dinowm`` checkpoint, or a ``lewm`` one with a ViT encoder);
with neither, the frozen encoder is randomly initialised (tests; a random-feature
baseline). The frozen weights are part of ``state_dict``, so a saved model is complete.

Not reproduced: DINO-WM's proprioception tokens (the model contract gives the model
pixels and actions only) and its optional VQ-VAE decoder (trained on detached features;
it does not shape the predictor).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from worldmodel.config import WorldModelConfig, _f, _from_dict, _require, _require_finite
from worldmodel.dinov2 import DinoV2, DinoV2Arch, DinoV2WeightsError, check_state, load_dinov2_weights, read_safetensors

FAMILY = "dinowm"
#: ``pixel_norm`` choices: DINO-WM's [-1, 1] (``Normalize(0.5, 0.5)``) or DINOv2's ImageNet statistics
PIXEL_NORMS = ("symmetric", "imagenet")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

#: the DinoWMConfig fields that describe the frozen encoder (copied from a source checkpoint)
ENCODER_FIELDS = (
    "in_channels", "encoder_size", "pixel_norm", "patch_size", "vit_width", "vit_depth", "vit_heads", "vit_mlp_ratio",
    "vit_pos_grid", "vit_registers", "vit_layer_scale", "vit_ln_eps", "vit_interpolate_offset",
    "vit_interpolate_antialias",
)


@dataclass
class DinoWMConfig:
    #: the registry name (``worldmodel.families``); presets: `DINOWM_PRESETS`
    FAMILY: ClassVar[str] = FAMILY
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}
    ADDED_FIELDS: ClassVar[dict[str, Any]] = {}
    """Architecture of a DINO-WM world model (frozen DINOv2 encoder + frame-causal ViT predictor)."""

    family: str = _f(FAMILY, "model family (registry name); always 'dinowm' for this config")
    image_size: int = _f(224, "side of the square input frames in pixels (the dataset's frames)")
    in_channels: int = _f(3, "colour channels of the input frames")
    action_dim: int = _f(2, "size of one raw environment action")
    frameskip: int = _f(5, "raw actions per action block (one model step)")
    context: int = _f(3, "frames a prediction sees (DINO-WM's num_hist), in training and in planning")
    pred_steps: int = _f(1, "frames a training window has beyond the context (window = context + pred_steps)")
    encoder_weights: Optional[str] = _f(
        None, "local .safetensors file of DINOv2 weights (torch-hub or Hugging Face layout); never downloaded")
    encoder_from_ckpt: Optional[str] = _f(
        None, "worldmodel checkpoint folder whose encoder is used frozen (a dinowm one, or a lewm one with a ViT)")
    encoder_size: Optional[int] = _f(
        196, "side the frames are resized to before the encoder (multiple of patch_size; None: image_size). "
             "DINO-WM: 196 for 224 frames (14 x 14 patches)")
    pixel_norm: str = _f("symmetric", "pixel normalisation before the encoder: 'symmetric' ([-1, 1], DINO-WM) "
                                      "or 'imagenet' (DINOv2's mean/std)")
    patch_size: int = _f(14, "encoder patch side in pixels")
    vit_width: int = _f(384, "encoder token width d (ViT-S: 384, ViT-B: 768)")
    vit_depth: int = _f(12, "encoder transformer blocks")
    vit_heads: int = _f(6, "encoder attention heads")
    vit_mlp_ratio: float = _f(4.0, "encoder MLP hidden size as a multiple of vit_width")
    vit_pos_grid: int = _f(37, "side of the encoder's stored position grid (37 for the DINOv2 hub models)")
    vit_registers: int = _f(0, "encoder register tokens (4 for the DINOv2 '_reg' models)")
    vit_layer_scale: bool = _f(True, "encoder blocks have LayerScale (ls1/ls2), as DINOv2's do")
    vit_ln_eps: float = _f(1e-6, "encoder LayerNorm epsilon (DINOv2: 1e-6)")
    vit_interpolate_offset: float = _f(0.1, "DINOv2's position-interpolation offset (0.0 for the '_reg' models)")
    vit_interpolate_antialias: bool = _f(False, "anti-aliased position interpolation (True for the '_reg' models)")
    token_pool: Optional[int] = _f(
        None, "average-pool the patch grid to token_pool x token_pool tokens (None: every patch, as DINO-WM)")
    action_emb_dim: int = _f(10, "width e of the action embedding concatenated to every token (DINO-WM: 10)")
    predictor_depth: int = _f(6, "predictor transformer blocks")
    predictor_heads: int = _f(16, "predictor attention heads")
    predictor_head_dim: int = _f(64, "predictor attention width per head")
    predictor_mlp_dim: int = _f(2048, "predictor MLP hidden size")
    dropout: float = _f(0.1, "dropout in the predictor (attention weights, attention output, MLP)")
    frame_causal: bool = _f(True, "frame-causal attention mask (False: full attention within the window, "
                                  "DINO-WM's ablation)")

    def __post_init__(self) -> None:
        _require_finite(self)
        _require(self.family == FAMILY, f"DinoWMConfig.family must be {FAMILY!r}, got {self.family!r}")
        for name in (
            "image_size", "in_channels", "action_dim", "frameskip", "context", "patch_size", "vit_width", "vit_depth",
            "vit_heads", "vit_pos_grid", "action_emb_dim", "predictor_depth", "predictor_heads", "predictor_head_dim",
            "predictor_mlp_dim",
        ):
            _require(getattr(self, name) >= 1, f"DinoWMConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("pred_steps", "vit_registers"):
            _require(getattr(self, name) >= 0, f"DinoWMConfig.{name} must be >= 0, got {getattr(self, name)}")
        _require(self.window >= 2, f"a training window needs >= 2 frames, got context={self.context} + "
                                   f"pred_steps={self.pred_steps}")
        _require(self.pixel_norm in PIXEL_NORMS,
                 f"DinoWMConfig.pixel_norm must be one of {', '.join(PIXEL_NORMS)}, got {self.pixel_norm!r}")
        _require(self.pixel_norm != "imagenet" or self.in_channels == 3,
                 f"pixel_norm='imagenet' needs in_channels=3, got {self.in_channels}")
        size = self.encoder_input_size
        _require(size >= self.patch_size and size % self.patch_size == 0,
                 f"the encoder input side ({'encoder_size' if self.encoder_size is not None else 'image_size'}={size}) "
                 f"must be a positive multiple of patch_size={self.patch_size}")
        _require(self.vit_width % self.vit_heads == 0,
                 f"vit_width={self.vit_width} must be divisible by vit_heads={self.vit_heads}")
        _require(self.vit_mlp_ratio > 0, f"DinoWMConfig.vit_mlp_ratio must be > 0, got {self.vit_mlp_ratio}")
        _require(self.vit_ln_eps > 0, f"DinoWMConfig.vit_ln_eps must be > 0, got {self.vit_ln_eps}")
        _require(0.0 <= self.vit_interpolate_offset < 1.0,
                 f"DinoWMConfig.vit_interpolate_offset must be in [0, 1), got {self.vit_interpolate_offset}")
        _require(0.0 <= self.dropout < 1.0, f"DinoWMConfig.dropout must be in [0, 1), got {self.dropout}")
        _require(self.token_pool is None or 1 <= self.token_pool <= self.grid,
                 f"DinoWMConfig.token_pool must be None or in [1, {self.grid}] (the patch grid side), "
                 f"got {self.token_pool}")
        _require(not (self.encoder_weights and self.encoder_from_ckpt),
                 f"give encoder_weights or encoder_from_ckpt, not both (got {self.encoder_weights!r} and "
                 f"{self.encoder_from_ckpt!r})")
        if self.encoder_weights and Path(self.encoder_weights).suffix.lower() != ".safetensors":
            raise ValueError(f"DinoWMConfig.encoder_weights must be a .safetensors file, got {self.encoder_weights!r}"
                             " (pickles such as .pth are never loaded: convert them with safetensors)")

    # ----------------------------------------------------------- derived sizes
    block_dim = WorldModelConfig.block_dim  # frameskip * action_dim
    window = WorldModelConfig.window  # context + pred_steps

    @property
    def encoder_input_size(self) -> int:
        """Side of the images the encoder sees (``encoder_size``, or ``image_size`` if None)."""
        return self.image_size if self.encoder_size is None else self.encoder_size

    @property
    def grid(self) -> int:
        """Side of the encoder's patch grid: ``encoder_input_size / patch_size``."""
        return self.encoder_input_size // self.patch_size

    @property
    def num_tokens(self) -> int:
        """Tokens per frame N: ``token_pool**2`` or ``grid**2``."""
        return (self.token_pool or self.grid) ** 2

    @property
    def token_dim(self) -> int:
        """Width d of one token (the encoder's ``vit_width``)."""
        return self.vit_width

    @property
    def embed_dim(self) -> int:
        """Size D of what ``encode`` returns: ``num_tokens * token_dim`` (the tokens flattened)."""
        return self.num_tokens * self.token_dim

    @property
    def arch(self) -> DinoV2Arch:
        """The encoder's `DinoV2Arch`."""
        return DinoV2Arch(
            width=self.vit_width, depth=self.vit_depth, heads=self.vit_heads, patch_size=self.patch_size,
            mlp_ratio=self.vit_mlp_ratio, pos_grid=self.vit_pos_grid, registers=self.vit_registers,
            layer_scale=self.vit_layer_scale, ln_eps=self.vit_ln_eps, interpolate_offset=self.vit_interpolate_offset,
            interpolate_antialias=self.vit_interpolate_antialias, in_channels=self.in_channels,
        )

    # ------------------------------------------------------------ (de)serialise
    def to_dict(self) -> dict:
        """JSON-serialisable copy of every field (``family`` included)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict, strict: bool = False) -> "DinoWMConfig":
        """Build from a dict; unknown keys, wrong types or another family's config raise ``ValueError``.

        With ``strict=True`` every field must be present (checkpoints).
        """
        if isinstance(values, dict) and values.get("family", FAMILY) != FAMILY:
            raise ValueError(f"this is a config of model family {values['family']!r}, not {FAMILY!r}")
        return _from_dict(cls, values, strict)

    #: named configurations, as every family's config (``WorldModelConfig.preset``: close-name
    #: suggestion, and the family of a preset that belongs to another one)
    preset = classmethod(WorldModelConfig.preset.__func__)

    def with_encoder_from_ckpt(self, ckpt_dir: str | os.PathLike) -> "DinoWMConfig":
        """This config with ``encoder_from_ckpt=ckpt_dir`` and the encoder fields of that checkpoint.

        The predictor fields are kept; ``encoder_size`` becomes the source's input size (set
        it again afterwards to resize frames to another multiple of the patch size).
        """
        fields = encoder_fields_of_checkpoint(ckpt_dir)
        return dataclasses.replace(self, encoder_from_ckpt=str(ckpt_dir), encoder_weights=None, **fields)


#: Named configurations (the lead wires them into the preset mechanism).
DINOWM_PRESETS: dict[str, dict[str, Any]] = {
    # DINO-WM as published (conf/train.yaml, conf/predictor/vit.yaml, conf/encoder/dino.yaml,
    # models/visual_world_model.py): frozen dinov2_vits14 patch tokens ("x_norm_patchtokens");
    # 224-px frames resized to 196 px (img_size // 16 = 14 patches a side) -> 196 tokens of 384;
    # frames normalised to [-1, 1]; actions (frameskip 5) through a 10-d linear embedding
    # concatenated to every token; a 6-block ViT predictor (16 heads of 64, MLP 2048, dropout
    # 0.1, learned positions) over num_hist = 3 frames with the frame-causal mask, trained
    # with MSE on the next frame's tokens. About 19 M trainable parameters (DINO-WM also
    # concatenates a 10-d proprioception embedding, not reproduced here).
    "dinowm": dict(
        family=FAMILY, image_size=224, encoder_size=196, pixel_norm="symmetric", frameskip=5, context=3, pred_steps=1,
        patch_size=14, vit_width=384, vit_depth=12, vit_heads=6, vit_mlp_ratio=4.0, vit_pos_grid=37, vit_registers=0,
        vit_layer_scale=True, vit_ln_eps=1e-6, vit_interpolate_offset=0.1, vit_interpolate_antialias=False,
        token_pool=None, action_emb_dim=10, predictor_depth=6, predictor_heads=16, predictor_head_dim=64,
        predictor_mlp_dim=2048, dropout=0.1, frame_causal=True,
    ),
    # The same structure, small enough for CPU tests and benchmarks: 64-px frames resized to
    # 42 px -> 3 x 3 patches of a 32-wide, 2-block DINOv2-shaped ViT (D = 9 * 32 = 288).
    "dinowm-tiny": dict(
        family=FAMILY, image_size=64, encoder_size=42, pixel_norm="symmetric", frameskip=5, context=3, pred_steps=1,
        patch_size=14, vit_width=32, vit_depth=2, vit_heads=2, vit_mlp_ratio=4.0, vit_pos_grid=3, vit_registers=0,
        vit_layer_scale=True, vit_ln_eps=1e-6, vit_interpolate_offset=0.1, vit_interpolate_antialias=False,
        token_pool=None, action_emb_dim=10, predictor_depth=2, predictor_heads=4, predictor_head_dim=16,
        predictor_mlp_dim=128, dropout=0.1, frame_causal=True,
    ),
}


DinoWMConfig.PRESETS = DINOWM_PRESETS


# ------------------------------------------------------ encoder from a checkpoint
_LEWM_PREFIX = "encoder.backbone."
_LEWM_TOP = {"patchify.weight": "patch_embed.proj.weight", "patchify.bias": "patch_embed.proj.bias",
             "cls": "cls_token", "pos": "pos_embed", "ln.weight": "norm.weight", "ln.bias": "norm.bias"}
_LEWM_BLOCK = {"ln1": "norm1", "ln2": "norm2", "attn.qkv": "attn.qkv", "attn.proj": "attn.proj",
               "mlp.net.0": "mlp.fc1", "mlp.net.2": "mlp.fc2"}


def _checkpoint_model_section(ckpt_dir: str | os.PathLike) -> tuple[str, dict]:
    """(family, model config dict) of a worldmodel checkpoint folder; a config without a family is 'lewm'."""
    path = Path(ckpt_dir)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise DinoV2WeightsError(f"encoder_from_ckpt={str(ckpt_dir)!r}: {cfg_file} is missing (expected a worldmodel "
                                 "checkpoint folder with config.json and model.safetensors)")
    try:
        cfg = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DinoV2WeightsError(f"{cfg_file} is not valid JSON: {e}") from None
    model = cfg.get("model") if isinstance(cfg, dict) else None
    if not isinstance(model, dict):
        raise DinoV2WeightsError(f"{cfg_file} has no 'model' section")
    family = cfg.get("family") or model.get("family") or "lewm"
    return str(family), model


def encoder_fields_of_checkpoint(ckpt_dir: str | os.PathLike) -> dict[str, Any]:
    """The `ENCODER_FIELDS` values that describe the encoder of the checkpoint in ``ckpt_dir``.

    Accepts a ``dinowm`` checkpoint or a ``lewm`` one whose encoder is a ViT (mapped to the
    DINOv2 layout: no LayerScale, LayerNorm eps 1e-5, frames in [-1, 1] as it saw them).
    Raises ``DinoV2WeightsError`` for any other encoder, naming it.
    """
    family, model = _checkpoint_model_section(ckpt_dir)
    if family == FAMILY:
        src = DinoWMConfig.from_dict(model)
        return {name: getattr(src, name) for name in ENCODER_FIELDS} | {"encoder_size": src.encoder_input_size}
    if family == "lewm":
        if model.get("encoder") != "vit":
            raise DinoV2WeightsError(
                f"encoder_from_ckpt={str(ckpt_dir)!r}: that lewm checkpoint's encoder is {model.get('encoder')!r}, "
                "which has no patch tokens; dinowm needs a ViT encoder (a lewm checkpoint trained with encoder='vit', "
                "another dinowm checkpoint, or DINOv2 weights via encoder_weights)")
        try:
            patch, size = int(model["patch_size"]), int(model["image_size"])
            return dict(
                in_channels=int(model["in_channels"]), encoder_size=size, pixel_norm="symmetric", patch_size=patch,
                vit_width=int(model["vit_width"]), vit_depth=int(model["vit_depth"]),
                vit_heads=int(model["vit_heads"]), vit_mlp_ratio=float(model["mlp_ratio"]),
                vit_pos_grid=size // patch, vit_registers=0, vit_layer_scale=False, vit_ln_eps=1e-5,
                vit_interpolate_offset=0.1, vit_interpolate_antialias=False,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise DinoV2WeightsError(f"encoder_from_ckpt={str(ckpt_dir)!r}: its lewm config lacks or has a bad {e}") \
                from None
    raise DinoV2WeightsError(f"encoder_from_ckpt={str(ckpt_dir)!r} is a {family!r} checkpoint; dinowm takes the "
                             f"encoder of a 'dinowm' checkpoint or of a 'lewm' one with a ViT encoder")


def encoder_state_of_checkpoint(ckpt_dir: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The encoder weights of the checkpoint in ``ckpt_dir``, in the DINOv2 layout (see
    `encoder_fields_of_checkpoint` for what is accepted)."""
    family, model = _checkpoint_model_section(ckpt_dir)
    encoder_fields_of_checkpoint(ckpt_dir)  # refuses encoders without patch tokens
    state = read_safetensors(Path(ckpt_dir) / "model.safetensors", f"checkpoint {ckpt_dir}'s model")
    if family == FAMILY:
        return {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not key.startswith(_LEWM_PREFIX):
            continue
        name = key[len(_LEWM_PREFIX):]
        if name in _LEWM_TOP:
            out[_LEWM_TOP[name]] = value
            continue
        parts = name.split(".")  # blocks.N.<module...>.<weight|bias>
        inner = ".".join(parts[2:-1])
        if parts[0] != "blocks" or inner not in _LEWM_BLOCK:
            raise DinoV2WeightsError(f"checkpoint {ckpt_dir}: encoder tensor {key!r} has no DINOv2-layout counterpart")
        out[f"blocks.{parts[1]}.{_LEWM_BLOCK[inner]}.{parts[-1]}"] = value
    if "cls_token" in out:
        out["mask_token"] = out["cls_token"].new_zeros(1, out["cls_token"].shape[-1])  # unused; the layout has one
    return out


# ------------------------------------------------------------------ predictor
class PredictorAttention(nn.Module):
    """Pre-norm multi-head attention with an optional mask: (B, L, W) -> (B, L, W) (DINO-WM's ``Attention``)."""

    def __init__(self, width: int, heads: int, head_dim: int, dropout: float):
        super().__init__()
        self.heads, self.head_dim, self.dropout = heads, head_dim, dropout
        inner = heads * head_dim
        self.norm = nn.LayerNorm(width)
        self.to_qkv = nn.Linear(width, 3 * inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, width), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x (B, L, W), mask bool (L, L) (True: may attend) or None -> (B, L, W)."""
        B, L, _ = x.shape
        q, k, v = self.to_qkv(self.norm(x)).view(B, L, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.to_out(y.transpose(1, 2).reshape(B, L, self.heads * self.head_dim))

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, L, W) -> queries, keys, values, each (B, heads, L, head_dim)."""
        B, L, _ = x.shape
        q, k, v = self.to_qkv(self.norm(x)).view(B, L, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return q, k, v

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """q (B, heads, Lq, hd), k and v (B, heads, Lk, hd), mask bool (Lq, Lk) or None -> (B, Lq, W); no dropout."""
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.to_out(y.transpose(1, 2).reshape(q.shape[0], q.shape[2], self.heads * self.head_dim))


class PredictorFeedForward(nn.Module):
    """LayerNorm -> Linear -> GELU -> Dropout -> Linear -> Dropout: (..., W) -> (..., W)."""

    def __init__(self, width: int, hidden: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, width), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., W) -> (..., W)."""
        return self.net(x)


def frame_causal_mask(frames: int, tokens: int, device: torch.device | None = None) -> torch.Tensor:
    """bool (frames * tokens, frames * tokens): True where the query's frame >= the key's frame.

    Token i belongs to frame ``i // tokens``; a token of frame t attends to every token of
    frames 0..t (DINO-WM's ``generate_mask_matrix``).
    """
    frame = torch.arange(frames * tokens, device=device) // tokens
    return frame[None, :] <= frame[:, None]


class FrameCausalPredictor(nn.Module):
    """ViT over the tokens of at most ``frames`` frames with a frame-causal mask: (B, T*N, W) -> (B, T*N, W)."""

    def __init__(self, tokens: int, frames: int, width: int, depth: int, heads: int, head_dim: int, mlp_dim: int,
                 dropout: float, frame_causal: bool = True):
        super().__init__()
        self.tokens, self.frames, self.frame_causal = tokens, frames, frame_causal
        self.pos_embedding = nn.Parameter(torch.randn(1, frames * tokens, width))  # as DINO-WM: N(0, 1)
        self.layers = nn.ModuleList(
            nn.ModuleList([PredictorAttention(width, heads, head_dim, dropout), PredictorFeedForward(width, mlp_dim, dropout)])
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(width)
        self.register_buffer("mask", frame_causal_mask(frames, tokens), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T*N, W) with T <= frames -> (B, T*N, W); with the mask, outputs of frame t see frames <= t only."""
        L = x.shape[1]
        if L % self.tokens or L > self.frames * self.tokens:
            raise ValueError(f"the predictor takes T * {self.tokens} tokens with T <= {self.frames} frames, got {L}")
        x = x + self.pos_embedding[:, :L]
        mask = self.mask[:L, :L] if self.frame_causal else None
        for attn, ff in self.layers:
            x = x + attn(x, mask)
            x = x + ff(x)
        return self.norm(x)

    def last_frame(self, prefix: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
        """The final outputs of the last frame's tokens, computing only what they depend on (eval mode).

        Args:
            prefix: (B, Lp, W) the window's leading tokens shared by the S sequences of each
                batch element (frames the frame-causal mask keeps from seeing ``x``), or None.
            x: (B * S, Lx, W) the rest of each window, sample-major within each batch element.

        Returns:
            (B * S, N, W): equal to ``forward(cat(prefix expanded over S, x))[:, -N:]``. The
            prefix runs for B rather than B * S sequences, and the last layer computes its
            queries, feed-forward and norm for the last frame's N tokens only (the only ones read).
        """
        N = self.tokens
        Lp = 0 if prefix is None else prefix.shape[1]
        BS, Lx, _ = x.shape
        L = Lp + Lx
        if L % N or Lx < N or L > self.frames * N:
            raise ValueError(f"the predictor takes T * {N} tokens with T <= {self.frames} frames, got {Lp} + {Lx}")
        if Lp and not self.frame_causal:
            raise ValueError("a shared prefix needs the frame-causal mask (frame_causal=True)")
        S = BS // prefix.shape[0] if Lp else 1
        x = x + self.pos_embedding[:, Lp:L]
        if Lp:
            prefix = prefix + self.pos_embedding[:, :Lp]
        mask = self.mask[:L, :L] if self.frame_causal else None
        last = len(self.layers) - 1
        for i, (attn, ff) in enumerate(self.layers):
            q, k, v = attn.qkv(x)  # (BS, h, Lx, hd)
            if Lp:
                qp, kp, vp = attn.qkv(prefix)  # (B, h, Lp, hd)
                if i < last:  # the prefix's own outputs are read by the next layer only
                    prefix = prefix + attn.attend(qp, kp, vp, mask[:Lp, :Lp])
                    prefix = prefix + ff(prefix)
                B, h, _, hd = kp.shape
                k = torch.cat([kp[:, None].expand(B, S, h, Lp, hd).reshape(BS, h, Lp, hd), k], dim=2)
                v = torch.cat([vp[:, None].expand(B, S, h, Lp, hd).reshape(BS, h, Lp, hd), v], dim=2)
            if i == last:  # the last frame attends to every frame of the window: no mask
                x = x[:, Lx - N :]
                x = x + attn.attend(q[:, :, Lx - N :], k, v, None)
            else:
                x = x + attn.attend(q, k, v, None if mask is None else mask[Lp:L, :L])
            x = x + ff(x)
        return self.norm(x)


# ---------------------------------------------------------------------- model
def _shape_error(name: str, tensor: Any, expected: str) -> ValueError:
    got = f"{tuple(tensor.shape)} ({tensor.dtype})" if isinstance(tensor, torch.Tensor) else type(tensor).__name__
    return ValueError(f"{name} must have shape {expected}, got {got}")


class DinoWM(nn.Module):
    """Frozen DINOv2 encoder + frame-causal ViT predictor, configured by a ``DinoWMConfig``.

    Args:
        config: the architecture and the encoder's source.
        load_encoder: read the encoder weights named by the config (``encoder_weights`` or
            ``encoder_from_ckpt``). Pass False when the weights come next from a saved
            ``state_dict`` (loading a checkpoint of this model: its ``model.safetensors``
            holds the frozen encoder, so the original source need not exist any more).
    """

    @classmethod
    def for_checkpoint(cls, config: DinoWMConfig) -> "DinoWM":
        """The model built to receive a checkpoint's weights (which include the frozen encoder):
        the encoder's weights file or source checkpoint is not read."""
        return cls(config, load_encoder=False)

    def __init__(self, config: DinoWMConfig, load_encoder: bool = True):
        super().__init__()
        if not isinstance(config, DinoWMConfig):
            raise TypeError(f"DinoWM needs a DinoWMConfig, got {type(config).__name__}")
        c = self.config = config
        self.encoder = DinoV2(c.arch)
        if load_encoder:
            self._load_encoder()
        self.encoder.requires_grad_(False)
        self.encoder.eval()
        self.action_encoder = nn.Linear(c.block_dim, c.action_emb_dim)  # DINO-WM: Conv1d with kernel 1
        self.predictor = FrameCausalPredictor(
            c.num_tokens, c.context, c.token_dim + c.action_emb_dim, c.predictor_depth, c.predictor_heads,
            c.predictor_head_dim, c.predictor_mlp_dim, c.dropout, c.frame_causal,
        )
        if c.pixel_norm == "imagenet":
            mean, std = torch.tensor(IMAGENET_MEAN) * 255.0, torch.tensor(IMAGENET_STD) * 255.0
        else:  # [-1, 1]: x / 127.5 - 1, as lewm's encoder sees its frames
            mean, std = torch.full((c.in_channels,), 127.5), torch.full((c.in_channels,), 127.5)
        self.register_buffer("pixel_mean", mean.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", std.view(1, -1, 1, 1), persistent=False)

    def _load_encoder(self) -> None:
        c = self.config
        if c.encoder_weights:
            load_dinov2_weights(c.encoder_weights, self.encoder)
        elif c.encoder_from_ckpt:
            fields = encoder_fields_of_checkpoint(c.encoder_from_ckpt)
            resizable = ("encoder_size", "vit_interpolate_offset", "vit_interpolate_antialias")  # may differ
            differ = {k: (getattr(c, k), v) for k, v in fields.items() if k not in resizable and getattr(c, k) != v}
            if differ:
                detail = ", ".join(f"{k}={mine!r} (checkpoint: {theirs!r})" for k, (mine, theirs) in differ.items())
                raise DinoV2WeightsError(
                    f"the config's encoder does not match the encoder of {c.encoder_from_ckpt}: {detail}; build the "
                    f"config with DinoWMConfig.with_encoder_from_ckpt({str(c.encoder_from_ckpt)!r})")
            state = encoder_state_of_checkpoint(c.encoder_from_ckpt)
            check_state(self.encoder, state, f"the encoder of checkpoint {c.encoder_from_ckpt}")
            self.encoder.load_state_dict(state, strict=True)

    def train(self, mode: bool = True) -> "DinoWM":
        """Set train/eval mode for the predictor; the frozen encoder always stays in eval mode."""
        super().train(mode)
        self.encoder.eval()
        return self

    # ----------------------------------------------------------------- checks
    def _check_pixels(self, pixels: torch.Tensor) -> None:
        c = self.config
        expected = f"(B, T, {c.in_channels}, {c.image_size}, {c.image_size}) uint8"
        if not isinstance(pixels, torch.Tensor) or pixels.ndim != 5 \
                or tuple(pixels.shape[2:]) != (c.in_channels, c.image_size, c.image_size):
            raise _shape_error("pixels", pixels, expected)
        if pixels.dtype != torch.uint8:
            raise ValueError(f"pixels must be uint8 {expected}, got dtype {pixels.dtype}")

    def _check_emb(self, emb: torch.Tensor, name: str = "emb") -> None:
        D = self.config.embed_dim
        if not isinstance(emb, torch.Tensor) or emb.ndim != 3 or emb.shape[-1] != D or emb.shape[1] < 1:
            raise _shape_error(name, emb, f"(B, T, {D}) (D = {self.config.num_tokens} tokens x "
                                          f"{self.config.token_dim})")

    def _check_actions(self, actions: torch.Tensor, leading: tuple[int, ...], expected: str) -> None:
        A = self.config.block_dim
        if not isinstance(actions, torch.Tensor) or tuple(actions.shape) != (*leading, A):
            raise _shape_error("actions", actions, f"{expected} = {(*leading, A)} (A_block = frameskip * action_dim "
                                                   f"= {A})")
        if not actions.is_floating_point():
            raise ValueError(f"actions must be a floating-point tensor, got dtype {actions.dtype}")

    # ------------------------------------------------------------- encoding
    def encode_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels uint8 (B, T, C, S, S) -> patch tokens (B, T, N, d) of the frozen encoder (no gradient)."""
        self._check_pixels(pixels)
        c = self.config
        B, T = pixels.shape[:2]
        x = pixels.reshape(B * T, *pixels.shape[2:])
        with torch.no_grad():  # the encoder is frozen: nothing upstream of its output trains
            x = x.to(self.pixel_mean.device, torch.float32)
            if c.encoder_input_size != c.image_size:
                size = (c.encoder_input_size, c.encoder_input_size)
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
            x = (x - self.pixel_mean) / self.pixel_std
            tokens = self.encoder(x.to(self.encoder.pos_embed.dtype))  # (BT, G*G, d)
            if c.token_pool is not None and c.token_pool != c.grid:
                g = c.grid
                grid = tokens.transpose(1, 2).reshape(B * T, -1, g, g)  # (BT, d, G, G)
                tokens = F.adaptive_avg_pool2d(grid, c.token_pool).flatten(2).transpose(1, 2)  # (BT, N, d)
        return tokens.reshape(B, T, c.num_tokens, c.token_dim)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels uint8 (B, T, C, S, S) -> embeddings (B, T, D): the N patch tokens of d channels, flattened."""
        return self.encode_tokens(pixels).flatten(2)

    # ----------------------------------------------------------- prediction
    def _predict_window(self, z: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """z (B, T, N, d), actions (B, T, A_block), T <= context -> next-frame tokens (B, T, N, d).

        Output t sees z[:, :t+1] and actions[:, :t+1] (frame-causal mask).
        """
        B, T, N, d = z.shape
        y = self.predictor(self._predictor_input(z, actions))
        return y.view(B, T, N, -1)[..., :d]

    def _predictor_input(self, z: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """z (B, T, N, d), actions (B, T, A_block) -> (B, T * N, d + e): each token with its frame's encoded action."""
        B, T, N, _ = z.shape
        a = self.action_encoder(actions.to(z.dtype))  # (B, T, e)
        return torch.cat([z, a[:, :, None].expand(B, T, N, a.shape[-1])], dim=-1).reshape(B, T * N, -1)

    def predict_tokens(self, z: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """z (B, T, N, d), actions (B, T, A_block) -> next-frame tokens (B, T, N, d), any T >= 1.

        Output t predicts frame t+1 from frames ``max(0, t - context + 1) .. t``: the first
        ``context`` outputs come from one window, each later one from the window of the
        ``context`` frames ending at t (the history planning gives the predictor).
        """
        k = self.config.context
        B, T, N, d = z.shape
        if T <= k:
            return self._predict_window(z, actions)
        first = self._predict_window(z[:, :k], actions[:, :k])  # (B, k, N, d)
        zw = z.unfold(1, k, 1)[:, 1:].permute(0, 1, 4, 2, 3).reshape(B * (T - k), k, N, d)  # windows ending at k..T-1
        aw = actions.unfold(1, k, 1)[:, 1:].permute(0, 1, 3, 2).reshape(B * (T - k), k, -1)
        rest = self._predict_window(zw, aw)[:, -1].view(B, T - k, N, d)
        return torch.cat([first, rest], dim=1)

    def predict(self, emb: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """emb (B, T, D), actions (B, T, A_block) -> predicted next embeddings (B, T, D).

        Causal: output t predicts embedding t+1 from emb[:, :t+1] and actions[:, :t+1]
        (the last ``context`` of them; see `predict_tokens`).
        """
        self._check_emb(emb)
        B, T, _ = emb.shape
        self._check_actions(actions, (B, T), "(B, T, A_block)")
        c = self.config
        return self.predict_tokens(emb.view(B, T, c.num_tokens, c.token_dim), actions).reshape(B, T, -1)

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

        The last ``min(T0, context)`` embeddings are kept; each step predicts one frame's
        tokens from the window, appends them and drops the oldest beyond ``context``. All
        B * S sequences run in one batch; the loop runs over H. Wrap the call in
        ``torch.inference_mode()`` when no gradient is needed.

        In eval mode the rollout skips work that cannot change the result: the window's
        leading context frames, which the frame-causal mask keeps candidate-independent, run
        for B rather than B * S sequences, and the last layer runs for the predicted frame's
        tokens only (`FrameCausalPredictor.last_frame`). It equals the sliding-window
        computation (`rollout_reference`) to float tolerance; train mode runs that.
        """
        if self.training:
            return self.rollout_reference(emb, actions, past_actions)
        ctx, ctx_actions, future = self._rollout_inputs(emb, actions, past_actions)
        c = self.config
        (B, keep, N, d), (S, H, A) = ctx.shape, future.shape[1:]
        BS = B * S
        future = future.reshape(BS, H, A)
        # frame j of each sequence (context, then predictions) and the block taken after it
        frames = list(ctx.unsqueeze(1).expand(B, S, keep, N, d).reshape(BS, keep, N, d).unbind(1))
        blocks = list(ctx_actions.unsqueeze(1).expand(B, S, keep - 1, A).reshape(BS, keep - 1, A).unbind(1))
        blocks.append(future[:, 0])
        preds = []
        for h in range(H):
            end = keep + h  # the window holds frames start .. end - 1
            start = max(0, end - c.context)
            shared = max(0, keep - 1 - start) if c.frame_causal else 0  # context frames with a past block
            prefix = None
            if shared:
                prefix = self._predictor_input(ctx[:, start : start + shared], ctx_actions[:, start : start + shared])
            x = self._predictor_input(torch.stack(frames[start + shared : end], 1),
                                      torch.stack(blocks[start + shared : end], 1))
            pred = self.predictor.last_frame(prefix, x)[..., :d]  # (BS, N, d)
            preds.append(pred)
            frames.append(pred)
            if h + 1 < H:
                blocks.append(future[:, h + 1])
        return torch.stack(preds, dim=1).reshape(B, S, H, N * d)

    def _rollout_inputs(
        self, emb: torch.Tensor, actions: torch.Tensor, past_actions: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Check the rollout's inputs -> context tokens (B, k, N, d), their blocks (B, k - 1, A_block),
        candidates (B, S, H, A_block); k = min(T0, context), 1 without past actions."""
        self._check_emb(emb)
        B, T0, D = emb.shape
        if not isinstance(actions, torch.Tensor) or actions.ndim != 4 or actions.shape[0] != B \
                or actions.shape[1] < 1 or actions.shape[2] < 1:
            raise _shape_error("actions", actions, f"(B, S, H, A_block) with B={B}, S >= 1, H >= 1")
        S, H = actions.shape[1:3]
        self._check_actions(actions, (B, S, H), "(B, S, H, A_block)")
        A = self.config.block_dim
        if past_actions is None:
            emb, past_actions = emb[:, -1:], actions.new_zeros(B, 0, A)
        else:
            self._check_actions(past_actions, (B, T0 - 1), "past_actions (B, T0 - 1, A_block)")
        c = self.config
        keep = min(emb.shape[1], c.context)
        ctx = emb[:, emb.shape[1] - keep :].reshape(B, keep, c.num_tokens, c.token_dim)
        ctx_actions = past_actions[:, past_actions.shape[1] - (keep - 1) :].to(emb.dtype)  # (B, k - 1, A)
        return ctx, ctx_actions, actions.to(emb.dtype)

    def rollout_reference(
        self,
        emb: torch.Tensor,
        actions: torch.Tensor,
        past_actions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`rollout` computed as written: the predictor over each step's whole window of B * S
        sequences. Same arguments and result (B, S, H, D)."""
        ctx, ctx_actions, future = self._rollout_inputs(emb, actions, past_actions)
        c = self.config
        (B, keep, N, d), (S, H, A) = ctx.shape, future.shape[1:]
        # B * S sequences, sample-major within each batch element
        z = ctx.unsqueeze(1).expand(B, S, keep, N, d).reshape(B * S, keep, N, d)
        ctx_actions = ctx_actions.unsqueeze(1).expand(B, S, keep - 1, A).reshape(B * S, keep - 1, A)
        future = future.reshape(B * S, H, A)
        preds = []
        for h in range(H):
            step_actions = torch.cat([ctx_actions, future[:, h : h + 1]], dim=1)  # (BS, k', A)
            pred = self._predict_window(z, step_actions)[:, -1]  # (BS, N, d)
            preds.append(pred)
            z = torch.cat([z, pred[:, None]], dim=1)[:, -c.context :]
            ctx_actions = step_actions[:, step_actions.shape[1] - (z.shape[1] - 1) :]
        return torch.stack(preds, dim=1).reshape(B, S, H, N * d)

    # ------------------------------------------------------------------ loss
    def loss(self, pixels: torch.Tensor, actions: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training loss on a batch of windows.

        Args:
            pixels: uint8 (B, n, C, H, W), n >= 2 frames (``window`` in training).
            actions: (B, n - 1, A_block), block k taken between frames k and k+1.

        Returns:
            ``{"loss", "pred_loss"}`` (equal): the MSE between the teacher-forced predictions
            of frames 1..n-1's tokens (each from at most ``context`` frames) and the encoded
            tokens of those frames.
        """
        self._check_pixels(pixels)
        B, n = pixels.shape[:2]
        if n < 2:
            raise _shape_error("pixels", pixels, "(B, n, C, H, W) with n >= 2 frames")
        self._check_actions(actions, (B, n - 1), "(B, n - 1, A_block)")
        if not torch.isfinite(actions).all():  # one sync per step; training data only
            raise ValueError("actions hold NaN or infinite values")
        z = self.encode_tokens(pixels)  # (B, n, N, d), no gradient
        pred = self.predict_tokens(z[:, :-1], actions)  # (B, n - 1, N, d)
        pred_loss = F.mse_loss(pred.float(), z[:, 1:].float())
        return {"loss": pred_loss, "pred_loss": pred_loss}
