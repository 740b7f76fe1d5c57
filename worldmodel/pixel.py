"""Family ``pixel``: the JEPA encoder + predictor trained through a pixel decoder (the reconstruction baseline).

    pixels (B, n, C, H, W) --encode--> emb (B, n, D) --decode--> frames (B, n, C, H, W)
    emb[:, :-1], actions --predict--> pred (B, n-1, D) --decode--> next frames

    loss = recon_weight * MSE(decode(emb), frames)
         + pred_recon_weight * MSE(decode(pred), frames[:, 1:])
         + pred_weight * MSE(pred, stopgrad(emb[:, 1:]))
         + rollout_weight * open-loop rollout MSE

Frames are compared in the encoder's input scale, [-1, 1]. The encoder is shaped only by
reconstruction (the latent targets are detached, so the latent term cannot pull the
embeddings together); no SIGReg or VICReg is needed. Planning uses ``encode`` and
``rollout`` unchanged, in the latent space the decoder reads: the JEPA-vs-reconstruction
comparison of LeWorldModel (adding a decoder loss: 96 -> 86% on PushT) and of the
noisy-feature experiment (reconstruction must encode the distractors, a JEPA need not).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from worldmodel.config import PixelConfig
from worldmodel.model import LatentPredictorModel

#: most 2x up-sampling stages of the decoder
MAX_UP_STAGES = 4


def decoder_stages(image_size: int) -> tuple[int, int]:
    """(stages, start side): ``stages`` 2x up-samplings from a ``start``-pixel square reach at least ``image_size``.

    As many stages as keep the start side >= 4 (at most ``MAX_UP_STAGES``); 28 -> (2, 7), 64 -> (4, 4),
    224 -> (4, 14). The output is cropped to ``image_size`` when start * 2**stages exceeds it.
    """
    stages = max(0, min(MAX_UP_STAGES, int(math.floor(math.log2(max(image_size, 4) / 4)))))
    return stages, math.ceil(image_size / 2**stages)


class PixelDecoder(nn.Module):
    """Embedding (N, D) -> frame (N, C, S, S) in [-1, 1] scale (not clamped).

    Linear to a (width * 2**stages, s0, s0) map, then ``stages`` blocks of nearest 2x
    up-sampling + 3x3 conv + GELU halving the channels, then a 3x3 conv to C channels.
    """

    def __init__(self, embed_dim: int, image_size: int, channels: int, width: int):
        super().__init__()
        self.image_size = image_size
        self.stages, self.start = decoder_stages(image_size)
        top = width * 2**self.stages
        self.fc = nn.Linear(embed_dim, top * self.start * self.start)
        blocks: list[nn.Module] = []
        ch = top
        for _ in range(self.stages):
            blocks += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, ch // 2, 3, padding=1), nn.GELU()]
            ch //= 2
        self.up = nn.Sequential(*blocks)
        self.out = nn.Conv2d(ch, channels, 3, padding=1)
        self.top = top

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z (N, D) -> (N, C, image_size, image_size)."""
        x = F.gelu(self.fc(z)).view(len(z), self.top, self.start, self.start)
        x = self.out(self.up(x))
        return x[..., : self.image_size, : self.image_size]


class PixelModel(LatentPredictorModel):
    """Family ``pixel``: the JEPA encoder + predictor, trained to reconstruct frames through ``decoder``."""

    CONFIG_CLS = PixelConfig
    FAMILY = "pixel"

    def __init__(self, config: PixelConfig):
        super().__init__(config)
        self.decoder = PixelDecoder(config.embed_dim, config.image_size, config.in_channels, config.decoder_width)

    def decode(self, emb: torch.Tensor) -> torch.Tensor:
        """emb (B, T, D) -> reconstructed frames (B, T, C, H, W) in [-1, 1] scale (float)."""
        self._check_emb(emb)
        B, T, D = emb.shape
        return self.decoder(emb.reshape(B * T, D)).view(B, T, *self.decoder_shape)

    @property
    def decoder_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one decoded frame."""
        c = self.config
        return (c.in_channels, c.image_size, c.image_size)

    def loss(self, pixels: torch.Tensor, actions: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training loss on a batch of windows.

        Args:
            pixels: uint8 (B, n, C, H, W), n >= 2 frames.
            actions: (B, n - 1, A_block), block k taken between frames k and k+1.

        Returns:
            dict of scalars: ``loss`` (the weighted sum in the module docstring),
            ``recon_loss``, ``pred_recon_loss``, ``pred_loss``, ``rollout_loss``.
        """
        self._check_window(pixels, actions)
        c = self.config
        target = pixels.float().div(127.5).sub(1.0)  # (B, n, C, H, W), the encoder's input scale
        emb = self.encode(pixels)  # (B, n, D)
        pred = self.predict(emb[:, :-1], actions)  # (B, n - 1, D)
        recon_loss = F.mse_loss(self.decode(emb).float(), target)
        pred_recon_loss = F.mse_loss(self.decode(pred).float(), target[:, 1:])
        pred_loss = F.mse_loss(pred.float(), emb[:, 1:].detach().float())
        rollout_loss = self.rollout_loss(emb.detach(), actions)
        loss = (c.recon_weight * recon_loss + c.pred_recon_weight * pred_recon_loss + c.pred_weight * pred_loss
                + c.rollout_weight * rollout_loss)
        return self.add_regularizers({"loss": loss, "pred_loss": pred_loss, "recon_loss": recon_loss,
                                      "pred_recon_loss": pred_recon_loss, "rollout_loss": rollout_loss}, emb)
