"""A DINOv2 vision transformer whose state dict is that of the official torch-hub models.

    pixels (M, C, H, W) float, normalised --patch_embed--> (M, P, W) + [CLS] (+ registers)
        + interpolated positions --blocks--> final LayerNorm --> patch tokens (M, P, W)

Names and shapes follow facebookresearch/dinov2 (``dinov2/models/vision_transformer.py``,
``dinov2/layers``) as the hub builds it (``block_chunks=0``, ``init_values=1.0``, MLP
feed-forward, LayerNorm eps 1e-6, qkv bias), so a hub state dict loads with
``strict=True``::

    cls_token (1, 1, W)             pos_embed (1, 1 + G*G, W)     mask_token (1, W)
    register_tokens (1, R, W)       (only for the "_reg" models, R = 4)
    patch_embed.proj.weight (W, C, p, p), .bias (W,)
    blocks.N.norm1.{weight,bias}    blocks.N.attn.qkv.{weight (3W, W), bias (3W,)}
    blocks.N.attn.proj.{weight,bias}                blocks.N.ls1.gamma (W,)
    blocks.N.norm2.{weight,bias}    blocks.N.mlp.fc1.{weight (4W, W), bias}
    blocks.N.mlp.fc2.{weight (W, 4W), bias}         blocks.N.ls2.gamma (W,)
    norm.{weight,bias}

The hub models store positions for a G = 37 grid (518 px at patch 14); other image sizes
interpolate them bicubically as DINOv2 does (with its 0.1 offset, or with anti-aliasing
and no offset for the register models).

Weights are read only from a local ``.safetensors`` file (`load_dinov2_weights`), in this
layout or in the Hugging Face ``transformers`` one (``facebook/dinov2-small`` etc.);
pickles (``.pth``) are refused and nothing is ever downloaded.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

#: file suffixes of pickled weights, refused by `load_dinov2_weights`
PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".pkl", ".ckpt")


class DinoV2WeightsError(ValueError):
    """A DINOv2 weights file that is missing, a pickle, of an unknown layout, or does not fit the model."""


@dataclass(frozen=True)
class DinoV2Arch:
    """Shape of a DINOv2-layout ViT (what its state dict's keys and shapes depend on)."""

    width: int = 384  #: token width W
    depth: int = 12  #: transformer blocks
    heads: int = 6  #: attention heads (W must be divisible by it)
    patch_size: int = 14  #: patch side p in pixels
    mlp_ratio: float = 4.0  #: MLP hidden size / W
    pos_grid: int = 37  #: side G of the stored position grid (518 px / 14 for the hub models)
    registers: int = 0  #: register tokens R (4 for the "_reg" models)
    layer_scale: bool = True  #: LayerScale ``ls1``/``ls2`` in every block (the hub models have it)
    ln_eps: float = 1e-6  #: LayerNorm epsilon
    interpolate_offset: float = 0.1  #: DINOv2's position-interpolation offset (0.0 for the "_reg" models)
    interpolate_antialias: bool = False  #: anti-aliased position interpolation (True for the "_reg" models)
    in_channels: int = 3  #: image channels C

    def __post_init__(self) -> None:
        for name in ("width", "depth", "heads", "patch_size", "pos_grid", "in_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"DinoV2Arch.{name} must be >= 1, got {getattr(self, name)}")
        if self.registers < 0:
            raise ValueError(f"DinoV2Arch.registers must be >= 0, got {self.registers}")
        if self.width % self.heads:
            raise ValueError(f"DinoV2Arch.width={self.width} must be divisible by heads={self.heads}")
        if not (self.mlp_ratio > 0 and self.ln_eps > 0 and self.interpolate_offset >= 0):
            raise ValueError(f"DinoV2Arch needs mlp_ratio > 0, ln_eps > 0 and interpolate_offset >= 0, got {self}")

    @property
    def mlp_hidden(self) -> int:
        """Hidden size of the block MLPs: ``int(width * mlp_ratio)``."""
        return int(self.width * self.mlp_ratio)


def _hub(width: int, depth: int, heads: int, reg: bool) -> DinoV2Arch:
    if reg:
        return DinoV2Arch(width, depth, heads, registers=4, interpolate_offset=0.0, interpolate_antialias=True)
    return DinoV2Arch(width, depth, heads)


#: the torch-hub DINOv2 models with an MLP feed-forward (ViT-g/14 uses SwiGLU and is not provided)
DINOV2_ARCHS: dict[str, DinoV2Arch] = {
    "dinov2_vits14": _hub(384, 12, 6, False),
    "dinov2_vitb14": _hub(768, 12, 12, False),
    "dinov2_vitl14": _hub(1024, 24, 16, False),
    "dinov2_vits14_reg": _hub(384, 12, 6, True),
    "dinov2_vitb14_reg": _hub(768, 12, 12, True),
    "dinov2_vitl14_reg": _hub(1024, 24, 16, True),
}


# ----------------------------------------------------------------- modules
class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches -> tokens: (M, C, H, W) -> (M, (H/p) * (W/p), W), row-major."""

    def __init__(self, in_channels: int, width: int, patch_size: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, width, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (M, C, H, W) -> (M, P, W)."""
        return self.proj(x).flatten(2).transpose(1, 2)


class LayerScale(nn.Module):
    """Per-channel scale ``gamma`` (W,): x * gamma."""

    def __init__(self, width: int, init_value: float = 1.0):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((width,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., W) -> (..., W)."""
        return x * self.gamma


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2: (..., W) -> (..., W)."""

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., W) -> (..., W)."""
        return self.fc2(self.act(self.fc1(x)))


class DinoAttention(nn.Module):
    """Bidirectional multi-head self-attention with one fused ``qkv`` projection: (M, L, W) -> (M, L, W)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (M, L, W) -> (M, L, W)."""
        M, L, W = x.shape
        q, k, v = self.qkv(x).view(M, L, 3, self.heads, W // self.heads).permute(2, 0, 3, 1, 4)  # 3 x (M, h, L, W/h)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(M, L, W))


class DinoBlock(nn.Module):
    """x + ls1(attn(norm1(x))); x + ls2(mlp(norm2(x))): (M, L, W) -> (M, L, W)."""

    def __init__(self, arch: DinoV2Arch):
        super().__init__()
        w = arch.width
        self.norm1 = nn.LayerNorm(w, eps=arch.ln_eps)
        self.attn = DinoAttention(w, arch.heads)
        self.ls1 = LayerScale(w) if arch.layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(w, eps=arch.ln_eps)
        self.mlp = Mlp(w, arch.mlp_hidden)
        self.ls2 = LayerScale(w) if arch.layer_scale else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (M, L, W) -> (M, L, W)."""
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoV2(nn.Module):
    """DINOv2 ViT in the official state-dict layout; ``forward`` returns normalised patch tokens."""

    def __init__(self, arch: DinoV2Arch):
        super().__init__()
        self.arch = arch
        w = arch.width
        self.patch_embed = PatchEmbed(arch.in_channels, w, arch.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, w))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + arch.pos_grid**2, w))
        self.register_tokens = nn.Parameter(torch.zeros(1, arch.registers, w)) if arch.registers else None
        self.blocks = nn.ModuleList(DinoBlock(arch) for _ in range(arch.depth))
        self.norm = nn.LayerNorm(w, eps=arch.ln_eps)
        self.mask_token = nn.Parameter(torch.zeros(1, w))  # used by DINOv2's masked training only; kept for the layout
        self._init_weights()

    def _init_weights(self) -> None:
        """DINOv2's initialisation: truncated normal 0.02 for positions and linear weights."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        if self.register_tokens is not None:
            nn.init.normal_(self.register_tokens, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """Patch grid (rows, columns) of an image of ``height`` x ``width`` pixels."""
        return height // self.arch.patch_size, width // self.arch.patch_size

    def interpolate_pos_embed(self, height: int, width: int) -> torch.Tensor:
        """Position embeddings (1, 1 + rows * cols, W) for an image of ``height`` x ``width`` pixels.

        The stored G x G grid is used as is when the image has G x G patches, else resized
        bicubically in float32 as DINOv2 does: with a scale factor ``(n + offset) / G`` when
        ``interpolate_offset`` > 0, else to the target size, anti-aliased if the arch says so.
        """
        rows, cols = self.grid(height, width)
        G = self.arch.pos_grid
        if rows == G and cols == G:
            return self.pos_embed
        dim = self.pos_embed.shape[-1]
        pos = self.pos_embed.float()
        patch_pos = pos[:, 1:].reshape(1, G, G, dim).permute(0, 3, 1, 2)  # (1, W, G, G)
        off = self.arch.interpolate_offset
        if off:
            kwargs: dict = {"scale_factor": ((rows + off) / G, (cols + off) / G)}
        else:
            kwargs = {"size": (rows, cols)}
        patch_pos = F.interpolate(patch_pos, mode="bicubic", antialias=self.arch.interpolate_antialias, **kwargs)
        if tuple(patch_pos.shape[-2:]) != (rows, cols):  # cannot happen for offsets < 1; guards odd arches
            raise ValueError(f"position interpolation gave a {tuple(patch_pos.shape[-2:])} grid, expected {(rows, cols)}")
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, rows * cols, dim)
        return torch.cat([pos[:, :1], patch_pos], dim=1).to(self.pos_embed.dtype)

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """x (M, C, H, W) float -> all tokens after the final norm (M, 1 + R + P, W): [CLS, registers, patches]."""
        arch = self.arch
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != arch.in_channels:
            raise ValueError(f"DinoV2 input must have shape (M, {arch.in_channels}, H, W), "
                             f"got {tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        M, _, H, W = x.shape
        p = arch.patch_size
        if H % p or W % p or H < p or W < p:
            raise ValueError(f"DinoV2 input of {H}x{W} pixels: both sides must be positive multiples of "
                             f"patch_size={p}")
        tokens = self.patch_embed(x)  # (M, P, W)
        tokens = torch.cat([self.cls_token.expand(M, -1, -1), tokens], dim=1) + self.interpolate_pos_embed(H, W)
        if self.register_tokens is not None:
            tokens = torch.cat([tokens[:, :1], self.register_tokens.expand(M, -1, -1), tokens[:, 1:]], dim=1)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (M, C, H, W) float -> patch tokens (M, (H/p) * (W/p), W) after the final norm (row-major)."""
        return self.forward_tokens(x)[:, 1 + self.arch.registers :]


# ------------------------------------------------------------------ loading
_HF_BLOCK = re.compile(r"^encoder\.layer\.(\d+)\.(.+)$")
_HF_BLOCK_PARTS = {
    "norm1.weight": "norm1.weight", "norm1.bias": "norm1.bias",
    "norm2.weight": "norm2.weight", "norm2.bias": "norm2.bias",
    "attention.output.dense.weight": "attn.proj.weight", "attention.output.dense.bias": "attn.proj.bias",
    "layer_scale1.lambda1": "ls1.gamma", "layer_scale2.lambda1": "ls2.gamma",
    "mlp.fc1.weight": "mlp.fc1.weight", "mlp.fc1.bias": "mlp.fc1.bias",
    "mlp.fc2.weight": "mlp.fc2.weight", "mlp.fc2.bias": "mlp.fc2.bias",
}
_HF_TOP = {
    "embeddings.cls_token": "cls_token",
    "embeddings.mask_token": "mask_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.register_tokens": "register_tokens",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
}
_HF_QKV = ("query", "key", "value")
#: the key that identifies each layout
LAYOUT_MARKERS = {"dinov2": "patch_embed.proj.weight", "hf": "embeddings.patch_embeddings.projection.weight"}


def detect_layout(state: dict[str, torch.Tensor]) -> str:
    """'dinov2' (official torch-hub keys) or 'hf' (Hugging Face ``Dinov2Model``, optionally under ``dinov2.``).

    Raises ``DinoV2WeightsError`` naming some of the keys found when it is neither.
    """
    if LAYOUT_MARKERS["dinov2"] in state:
        return "dinov2"
    if LAYOUT_MARKERS["hf"] in state or f"dinov2.{LAYOUT_MARKERS['hf']}" in state:
        return "hf"
    found = sorted(state)[:6]
    raise DinoV2WeightsError(
        f"unknown weights layout: expected the DINOv2 torch-hub keys (e.g. {LAYOUT_MARKERS['dinov2']!r}) or the "
        f"Hugging Face ones (e.g. {LAYOUT_MARKERS['hf']!r}); found {len(state)} tensors such as {found}"
    )


def hf_to_dinov2(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a Hugging Face ``Dinov2Model`` state dict to the official layout.

    Each block's separate ``query``/``key``/``value`` projections are concatenated (in that
    order) into ``attn.qkv``. Keys may carry a ``dinov2.`` prefix (the classification model).
    Raises ``DinoV2WeightsError`` naming a key that has no counterpart (e.g. a SwiGLU MLP
    or a classifier head) or a missing part of a q/k/v triple.
    """
    state = {(k[len("dinov2."):] if k.startswith("dinov2.") else k): v for k, v in state.items()}
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key in _HF_TOP:
            out[_HF_TOP[key]] = value
            continue
        m = _HF_BLOCK.match(key)
        part = m.group(2) if m else None
        if m and part in _HF_BLOCK_PARTS:
            out[f"blocks.{m.group(1)}.{_HF_BLOCK_PARTS[part]}"] = value
            continue
        q = re.fullmatch(r"attention\.attention\.(query|key|value)\.(weight|bias)", part or "")
        if m and q:
            qkv.setdefault((int(m.group(1)), q.group(2)), {})[q.group(1)] = value
            continue
        raise DinoV2WeightsError(f"Hugging Face DINOv2 key {key!r} (shape {tuple(value.shape)}) has no counterpart "
                                 "in the DINOv2 layout (SwiGLU MLPs and classifier heads are not supported)")
    for (layer, kind), parts in sorted(qkv.items()):
        missing = [n for n in _HF_QKV if n not in parts]
        if missing:
            raise DinoV2WeightsError(f"Hugging Face DINOv2 weights lack "
                                     f"{', '.join(repr(f'encoder.layer.{layer}.attention.attention.{n}.{kind}') for n in missing)}")
        out[f"blocks.{layer}.attn.qkv.{kind}"] = torch.cat([parts[n] for n in _HF_QKV], dim=0)
    return out


def dinov2_to_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of `hf_to_dinov2` (official layout -> Hugging Face keys): used to test the mapping."""
    top = {v: k for k, v in _HF_TOP.items()}
    parts = {v: k for k, v in _HF_BLOCK_PARTS.items()}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key in top:
            out[top[key]] = value
            continue
        m = re.fullmatch(r"blocks\.(\d+)\.(.+)", key)
        if not m:
            raise DinoV2WeightsError(f"DINOv2 key {key!r} has no Hugging Face counterpart")
        layer, part = m.groups()
        if part in parts:
            out[f"encoder.layer.{layer}.{parts[part]}"] = value
        elif part in ("attn.qkv.weight", "attn.qkv.bias"):
            for name, chunk in zip(_HF_QKV, value.chunk(3, dim=0)):
                out[f"encoder.layer.{layer}.attention.attention.{name}.{part.rsplit('.', 1)[1]}"] = chunk.clone()
        else:
            raise DinoV2WeightsError(f"DINOv2 key {key!r} has no Hugging Face counterpart")
    return out


def read_safetensors(path: str | os.PathLike, what: str = "weights") -> dict[str, torch.Tensor]:
    """Read a local ``.safetensors`` file on the CPU; refuse pickles and unreadable files with a clear error."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = Path(path)
    if p.suffix.lower() in PICKLE_SUFFIXES:
        raise DinoV2WeightsError(
            f"{what} file {p} is a pickle ({p.suffix}); pickles are never loaded. Convert it once with safetensors "
            f"(python -c \"import torch; from safetensors.torch import save_file; "
            f"save_file(torch.load('{p.name}', weights_only=True), '{p.stem}.safetensors')\") and pass the "
            f".safetensors file"
        )
    if not p.is_file():
        raise DinoV2WeightsError(f"{what} file {p} does not exist (weights are read from a local .safetensors file, "
                                 "never downloaded)")
    try:
        return load_file(str(p), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise DinoV2WeightsError(f"{what} file {p} is not a readable safetensors file: {e}") from None


def check_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Raise ``DinoV2WeightsError`` naming the first missing/unexpected key or wrong shape, else return."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    if missing:
        k = missing[0]
        raise DinoV2WeightsError(f"{source} lacks tensor {k!r} (expected shape {tuple(expected[k].shape)})"
                                 + (f" and {len(missing) - 1} more: {missing[1:6]}" if len(missing) > 1 else ""))
    unexpected = [k for k in state if k not in expected]
    if unexpected:
        k = unexpected[0]
        raise DinoV2WeightsError(f"{source} has tensor {k!r} (shape {tuple(state[k].shape)}) that the model does not "
                                 f"have" + (f", and {len(unexpected) - 1} more: {unexpected[1:6]}" if len(unexpected) > 1
                                            else "") + " (a different architecture? check depth and registers)")
    for k, t in expected.items():
        if tuple(state[k].shape) != tuple(t.shape):
            raise DinoV2WeightsError(f"{source}: tensor {k!r} has shape {tuple(state[k].shape)}, the model expects "
                                     f"{tuple(t.shape)} (a different architecture? check width, patch size and "
                                     f"position grid)")
        if not state[k].is_floating_point():
            raise DinoV2WeightsError(f"{source}: tensor {k!r} has dtype {state[k].dtype}, expected floating point")
        if not torch.isfinite(state[k]).all():
            raise DinoV2WeightsError(f"{source}: tensor {k!r} holds NaN or infinite values")


def load_dinov2_weights(path: str | os.PathLike, model: DinoV2 | None = None) -> dict[str, torch.Tensor]:
    """Read DINOv2 weights from a local ``.safetensors`` file, in the official layout.

    Args:
        path: a ``.safetensors`` file holding a DINOv2 state dict in the torch-hub layout
            or the Hugging Face one (mapped; see `hf_to_dinov2`). Pickles are refused.
        model: if given, the weights are checked against it (every key, every shape) and
            loaded into it.

    Returns:
        the state dict in the official layout (CPU tensors).

    Raises:
        DinoV2WeightsError: a pickle, a missing or unreadable file, an unknown layout, or
        (with ``model``) a missing/unexpected key or a wrong shape, naming the key, the
        expected and the found shape.
    """
    state = read_safetensors(path, "DINOv2 weights")
    if detect_layout(state) == "hf":
        state = hf_to_dinov2(state)
    if model is not None:
        check_state(model, state, f"DINOv2 weights {path}")
        model.load_state_dict(state, strict=True)
    return state
