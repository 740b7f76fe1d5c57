"""Action-conditioned causal transformer predicting the next embedding.

    emb (B, T, D) --in_proj + pos--> (B, T, W) --[AdaLN-zero blocks, causal]--> norm, linear
        --> projector --> (B, T, D)      (output t predicts embedding t+1)
    actions (B, T, A_block) --ActionEncoder--> (B, T, W): the conditioning of each block
"""

from __future__ import annotations

import torch
import torch.nn as nn

from worldmodel.config import ModelConfig
from worldmodel.encoder import Attention, FeedForward, Projector


class ActionEncoder(nn.Module):
    """MLP over one action block: (..., frameskip * action_dim) -> (..., W)."""

    def __init__(self, block_dim: int, width: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(block_dim, width), nn.GELU(), nn.Linear(width, width))

    def forward(self, actions: torch.Tensor) -> torch.Tensor:
        """actions (..., A_block) -> (..., W)."""
        return self.net(actions)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """AdaLN modulation: x * (1 + scale) + shift, all (B, T, W)."""
    return x * (1 + scale) + shift


class AdaLNBlock(nn.Module):
    """Causal transformer block with AdaLN-zero conditioning (as in DiT).

    The conditioning vector c (B, T, W) gives a shift, scale and gate for both the
    attention and the MLP branch. The modulation layer is zero-initialised, so every
    block starts as the identity.
    """

    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(width, elementwise_affine=False)
        self.ln2 = nn.LayerNorm(width, elementwise_affine=False)
        self.attn = Attention(width, heads, dropout, causal=True)
        self.mlp = FeedForward(width, mlp_ratio, dropout)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))
        nn.init.zeros_(self.ada[1].weight)
        nn.init.zeros_(self.ada[1].bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """x (B, T, W), c (B, T, W) -> (B, T, W)."""
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c).chunk(6, dim=-1)
        x = x + gate1 * self.attn(modulate(self.ln1(x), shift1, scale1))
        return x + gate2 * self.mlp(modulate(self.ln2(x), shift2, scale2))


class Predictor(nn.Module):
    """Causal, action-conditioned predictor over at most ``context + pred_steps`` time steps."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        c, w = config, config.predictor_width
        self.max_len = c.context + c.pred_steps
        self.action_encoder = ActionEncoder(c.block_dim, w)
        self.in_proj = nn.Linear(c.embed_dim, w)
        self.pos = nn.Parameter(torch.randn(1, self.max_len, w) * 0.02)
        self.blocks = nn.ModuleList(
            AdaLNBlock(w, c.predictor_heads, c.mlp_ratio, c.dropout) for _ in range(c.predictor_depth)
        )
        self.ln = nn.LayerNorm(w)
        self.out_proj = nn.Linear(w, c.embed_dim)
        self.projector = Projector(c.embed_dim, c.projector_hidden, c.embed_dim)
        self.residual = c.predictor_residual

    def forward(self, emb: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """emb (B, T, D), actions (B, T, A_block) -> next-embedding predictions (B, T, D).

        Output t depends only on emb[:, :t+1] and actions[:, :t+1] (in eval mode; in
        train mode the projector's BatchNorm mixes statistics over the whole batch).
        """
        B, T, _ = emb.shape
        if T > self.max_len:
            raise ValueError(
                f"the predictor handles at most context + pred_steps = {self.max_len} time steps, got T={T}"
            )
        x = self.in_proj(emb) + self.pos[:, :T]  # (B, T, W)
        c = self.action_encoder(actions)  # (B, T, W)
        for block in self.blocks:
            x = block(x, c)
        x = self.out_proj(self.ln(x))  # (B, T, D)
        out = self.projector(x.reshape(B * T, -1)).view(B, T, -1)
        # Residual: the network only has to model how the embedding moves.
        return emb + out if self.residual else out
