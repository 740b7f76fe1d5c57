"""Frame encoders: uint8 pixels -> embedding (CNN, CNN map kept spatial, or small ViT) + BatchNorm projector.

Also holds the transformer pieces shared with the predictor (``Attention``,
``FeedForward``) and the ``Projector`` MLP used after both encoder and predictor.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from worldmodel.config import SPATIAL_GRID, WorldModelConfig


class Projector(nn.Module):
    """Linear -> BatchNorm1d -> GELU -> Linear, as in LeWM: (N, d_in) -> (N, d_out).

    BatchNorm uses batch statistics in train mode and running ones in eval mode.
    """

    def __init__(self, d_in: int, hidden: int, d_out: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, hidden), nn.BatchNorm1d(hidden), nn.GELU(), nn.Linear(hidden, d_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, d_in) -> (N, d_out)."""
        return self.net(x)


class Attention(nn.Module):
    """Multi-head self-attention via ``scaled_dot_product_attention``: (B, L, W) -> (B, L, W).

    ``heads`` heads of ``head_dim`` each (default ``W / heads``); the attention width
    ``I = heads * head_dim`` may differ from W (LeWorldModel: W=192, 16 heads of 64).
    """

    def __init__(self, width: int, heads: int, dropout: float = 0.0, causal: bool = False,
                 head_dim: int | None = None):
        super().__init__()
        self.heads, self.causal, self.dropout = heads, causal, dropout
        self.head_dim = width // heads if head_dim is None else head_dim
        self.inner = heads * self.head_dim  # I, the attention width (W unless head_dim is given)
        self.qkv = nn.Linear(width, 3 * self.inner)
        self.proj = nn.Linear(self.inner, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, L, W) -> (B, L, W); causal if built so (token i sees tokens <= i)."""
        B, L, W = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 3 x (B, h, L, I/h)
        dropout = self.dropout if self.training else 0.0
        if dropout == 0.0 and use_matmul_attention(q):
            y = matmul_attention(q, k, v, causal_mask(L, L, x.device) if self.causal else None)
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal, dropout_p=dropout)
        return self.proj(y.transpose(1, 2).reshape(B, L, self.inner))


def use_matmul_attention(q: torch.Tensor) -> bool:
    """Whether ``matmul_attention`` beats ``scaled_dot_product_attention`` for queries ``q`` (N, h, L, d).

    On the CPU in bf16 it does, forward and backward alike (one thread: 14 ms vs 81 ms for
    128 x 2 heads x 65 tokens of 64; 0.9 ms vs 2.0 ms for 3 causal tokens; a ``lewm-tiny``
    training step under bf16 autocast: 0.35 s vs 0.57 s CPU time). In float32 the two are
    within noise of each other on a whole training step, and on other devices the fused
    kernels win: SDPA there.
    """
    return MATMUL_ATTENTION and q.device.type == "cpu" and q.dtype == torch.bfloat16


#: use ``matmul_attention`` where ``use_matmul_attention`` says it is faster (False: always SDPA)
MATMUL_ATTENTION = True


def causal_mask(lq: int, lk: int, device: torch.device) -> torch.Tensor:
    """(lq, lk) bool, True where query i may attend key j: j <= i + lk - lq (the queries are the last lq tokens)."""
    return torch.ones(lq, lk, dtype=torch.bool, device=device).tril(lk - lq)


def matmul_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Softmax attention of q (N, h, Lq, d) over k, v (N, h, L, d) with two batched matmuls;
    mask (Lq, L) bool, True = may attend. Equals ``scaled_dot_product_attention`` (no dropout)."""
    scores = torch.matmul(q, k.transpose(-1, -2)) * q.shape[-1] ** -0.5  # (N, h, Lq, L)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.matmul(scores.softmax(-1), v)


class FeedForward(nn.Module):
    """Transformer MLP: (..., W) -> (..., W) with hidden size ``hidden`` (default ``mlp_ratio * W``)."""

    def __init__(self, width: int, mlp_ratio: float, dropout: float = 0.0, hidden: int | None = None):
        super().__init__()
        hidden = int(width * mlp_ratio) if hidden is None else hidden
        self.net = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., W) -> (..., W)."""
        return self.net(x)


def cnn_blocks(in_channels: int, width: int, strides: tuple[int, ...] = (2, 2, 2, 2)) -> nn.Sequential:
    """Conv blocks (Conv 3x3 -> GroupNorm -> GELU), one per stride, channels width, 2w, 4w, ...: by default
    4 stride-2 blocks, (N, C, S, S) -> (N, 8 * width, S/16, S/16)."""
    chans = [in_channels] + [width * 2**i for i in range(len(strides))]
    layers: list[nn.Module] = []
    for c_in, c_out, stride in zip(chans[:-1], chans[1:], strides):
        layers += [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.GroupNorm(min(8, c_out), c_out), nn.GELU()]
    return nn.Sequential(*layers)


class CNNBackbone(nn.Module):
    """4 stride-2 conv blocks (Conv -> GroupNorm -> GELU), pool to 4x4, flatten, linear.

    (N, C, S, S) float -> (N, out_dim); 64x64 becomes 4x4 after the convs, other sizes
    are brought to 4x4 by adaptive average pooling.
    """

    def __init__(self, in_channels: int, width: int):
        super().__init__()
        self.convs = cnn_blocks(in_channels, width)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.out_dim = 8 * width
        self.fc = nn.Linear(8 * width * 16, self.out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, C, S, S) float -> (N, 8 * width)."""
        return self.fc(self.pool(self.convs(x)).flatten(1))




class CNNMap(nn.Module):
    """The CNN backbone's conv blocks and 4x4 pooling without the linear layer that mixes the cells:
    (N, C, S, S) float -> (N, 8 * width, 4, 4)."""

    def __init__(self, in_channels: int, width: int):
        super().__init__()
        self.convs = cnn_blocks(in_channels, width)
        self.pool = nn.AdaptiveAvgPool2d(SPATIAL_GRID)
        self.out_dim = 8 * width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, C, S, S) float -> (N, 8 * width, 4, 4)."""
        return self.pool(self.convs(x))


class SpatialProjector(nn.Module):
    """The BatchNorm projector applied to every cell of a map on its own (1x1 convolutions), then
    flattened: (N, d_in, G, G) -> (N, d_out * G * G), channel-major (``(N, d_out, G, G).flatten(1)``).

    Each cell's output depends on that cell's input only, so the embedding keeps the map's layout
    (where in the frame each feature is): the ``cnn-spatial`` encoder.
    """

    def __init__(self, d_in: int, hidden: int, d_out: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(d_in, hidden, 1), nn.BatchNorm2d(hidden), nn.GELU(), nn.Conv2d(hidden, d_out, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, d_in, G, G) -> (N, d_out * G * G)."""
        return self.net(x).flatten(1)


def spatial_softmax(maps: torch.Tensor, temperature: torch.Tensor | float = 1.0) -> torch.Tensor:
    """Each channel's softmax over its map, then the expected (x, y) under it (Levine et al. 2016):
    maps (N, K, H, W) -> (N, 2K), all K x-coordinates then all K y-coordinates, in [-1, 1]
    (-1: the left / top pixel's centre, +1: the right / bottom one's). Computed in float32."""
    n, k, h, w = maps.shape
    attn = (maps.float().flatten(2) / temperature).softmax(-1).view(n, k, h, w)
    xs = torch.linspace(-1.0, 1.0, w, device=maps.device)
    ys = torch.linspace(-1.0, 1.0, h, device=maps.device)
    return torch.cat([(attn.sum(2) * xs).sum(-1), (attn.sum(3) * ys).sum(-1)], dim=1)


class KeypointBackbone(nn.Module):
    """Spatial-softmax keypoints (the deep spatial autoencoder's encoder, Finn et al. 2016): two stride-2
    conv blocks and one stride-1 block to an (S/4)-square map of 4 * width channels, a 1x1 conv to
    K = 4 * width keypoint maps, and each map's expected (x, y) position (``spatial_softmax``, a learned
    temperature): (N, C, S, S) float -> (N, 2K) = (N, 8 * width).

    Every feature is a position in the frame, so a rigid shape's pose is linear in them: the vector
    between two keypoints held by the same body turns as the body turns (the ``cnn-keypoints`` encoder).
    """

    def __init__(self, in_channels: int, width: int):
        super().__init__()
        self.convs = cnn_blocks(in_channels, width, strides=(2, 2, 1))
        self.keypoints = nn.Conv2d(4 * width, 4 * width, 1)
        self.log_temperature = nn.Parameter(torch.zeros(()))
        self.out_dim = 8 * width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, C, S, S) float -> keypoint coordinates (N, 8 * width): 4 * width x's, then as many y's."""
        return spatial_softmax(self.keypoints(self.convs(x)), self.log_temperature.exp()).to(x.dtype)


class ViTBlock(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)); x + mlp(ln(x)). (B, L, W) -> (B, L, W)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = Attention(width, heads, dropout)
        self.mlp = FeedForward(width, mlp_ratio, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, L, W) -> (B, L, W)."""
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class ViTBackbone(nn.Module):
    """ViT-Tiny-like encoder: patchify, CLS token, learned positions, blocks; returns CLS.

    (N, C, S, S) float -> (N, width). ``S`` must be divisible by ``patch``.
    """

    def __init__(self, in_channels: int, image_size: int, patch: int, width: int, depth: int, heads: int,
                 mlp_ratio: float, dropout: float):
        super().__init__()
        num_patches = (image_size // patch) ** 2
        self.patchify = nn.Conv2d(in_channels, width, patch, stride=patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, width))
        self.pos = nn.Parameter(torch.randn(1, num_patches + 1, width) * 0.02)
        self.blocks = nn.ModuleList(ViTBlock(width, heads, mlp_ratio, dropout) for _ in range(depth))
        self.ln = nn.LayerNorm(width)
        self.out_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, C, S, S) float -> CLS features (N, width)."""
        tokens = self.patchify(x).flatten(2).transpose(1, 2)  # (N, P, W)
        tokens = torch.cat([self.cls.expand(len(tokens), -1, -1), tokens], dim=1) + self.pos  # (N, P + 1, W)
        for block in self.blocks:
            tokens = block(tokens)
        return self.ln(tokens[:, 0])


class Encoder(nn.Module):
    """uint8 frames (N, C, S, S) -> embeddings (N, D): scale to [-1, 1], backbone, projector.

    ``encoder`` ``cnn``: CNN features mixed by a linear layer, then the BatchNorm projector;
    ``cnn-spatial``: the CNN's 4x4 map, the projector applied per cell (D / 16 channels each), flattened;
    ``vit``: the ViT's CLS token, then the projector. The projector is the BatchNorm MLP
    (``projector`` 'mlp'), one linear map ('linear'; per cell for ``cnn-spatial``) or nothing
    ('none': the backbone's features are the embedding, D their number).
    """

    def __init__(self, config: WorldModelConfig):
        super().__init__()
        c = config
        if c.encoder == "cnn":
            self.backbone: nn.Module = CNNBackbone(c.in_channels, c.encoder_width)
        elif c.encoder == "cnn-spatial":
            self.backbone = CNNMap(c.in_channels, c.encoder_width)
        elif c.encoder == "cnn-keypoints":
            self.backbone = KeypointBackbone(c.in_channels, c.encoder_width)
        else:
            self.backbone = ViTBackbone(c.in_channels, c.image_size, c.patch_size, c.vit_width, c.vit_depth,
                                        c.vit_heads, c.mlp_ratio, c.dropout)
        grid = SPATIAL_GRID**2 if c.encoder == "cnn-spatial" else 1
        if self.backbone.out_dim * grid != c.backbone_features():
            raise RuntimeError(f"the {c.encoder} backbone gives {self.backbone.out_dim * grid} features but "
                               f"WorldModelConfig.backbone_features() says {c.backbone_features()}: update one to the other")
        self.projector: nn.Module
        if c.projector == "none":
            self.projector = nn.Flatten(1)  # the backbone's features are the embedding (the config checks D)
        elif c.encoder == "cnn-spatial":
            d_cell = c.embed_dim // SPATIAL_GRID**2
            self.projector = (SpatialProjector(self.backbone.out_dim, c.projector_hidden, d_cell) if c.projector == "mlp"
                              else nn.Sequential(nn.Conv2d(self.backbone.out_dim, d_cell, 1), nn.Flatten(1)))
        elif c.projector == "mlp":
            self.projector = Projector(self.backbone.out_dim, c.projector_hidden, c.embed_dim)
        else:
            self.projector = nn.Linear(self.backbone.out_dim, c.embed_dim)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels uint8 (N, C, S, S) -> (N, D)."""
        x = pixels.float().div_(127.5).sub_(1.0)
        return self.projector(self.backbone(x))
