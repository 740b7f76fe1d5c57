"""Family ``pldm``: PLDM / EB-JEPA, an encoder + predictor kept from collapse by VICReg and inverse dynamics.

    pixels (B, n, C, H, W) --encode--> emb (B, n, D)
    emb[:, :-1], actions --predict--> pred (B, n-1, D) ~ emb[:, 1:]
    cat(emb[:, t], emb[:, t+1]) --idm--> the action block a_t (B, n-1, A_block)

    loss = pred_weight * MSE(pred, emb[:, 1:])
         + std_weight * mean_j relu(std_margin - sqrt(Var_b(z_j) + 1e-4))      (VICReg variance)
         + cov_weight * sum_{i != j} C(z)_ij^2 / (D (D - 1))                  (VICReg covariance)
         + sim_t_weight * mean |emb[:, t+1] - emb[:, t]|^2                     (temporal similarity)
         + idm_weight * MSE(idm(emb[:, t], emb[:, t+1]), a_t)                  (inverse dynamics)
         + rollout_weight * open-loop rollout MSE

The variance and covariance terms treat every (window, time) embedding as a sample, as
EB-JEPA does (``first_t_only: false``), on the embeddings themselves (no projector). No
stop-gradient and no EMA: the regularisers keep the embeddings spread, the inverse-dynamics
head keeps the action's effect in them (EB-JEPA: removing it drops planning success to 1%).

Published coefficients (``PLDMConfig`` defaults and presets): EB-JEPA's best two-rooms model,
github.com/facebookresearch/eb_jepa examples/ac_video_jepa/cfgs/train.yaml
(cov 8, std 16, sim_t 12, idm 1; its README: (beta, alpha, delta, omega) = (8, 16, 12, 1));
PLDM's wall runs, github.com/vladisai/PLDM pldm/configs/wall/icml/ds_1500k.yaml (std 3.9843,
cov 6.9238, sim_t 0.74242, idm 1.072): preset ``pldm-wall``. The inverse-dynamics MLP has two
hidden ReLU layers, as EB-JEPA's ``InverseDynamicsModel``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from worldmodel.config import PLDMConfig
from worldmodel.model import InverseDynamics, LatentPredictorModel
from worldmodel.regularizers import VICReg


class PLDM(LatentPredictorModel):
    """Family ``pldm``: the JEPA encoder + predictor, VICReg + temporal similarity + inverse dynamics."""

    CONFIG_CLS = PLDMConfig
    FAMILY = "pldm"

    def __init__(self, config: PLDMConfig):
        super().__init__(config)
        self.idm = InverseDynamics(config.embed_dim, config.idm_hidden, config.block_dim)
        # the variance and covariance terms, weighted here (std_weight, cov_weight); under DDP
        # their statistics are those of the union batch
        self.vicreg = VICReg(std_coeff=1.0, cov_coeff=1.0, gamma=config.std_margin, cov_norm="pairs")

    def loss(self, pixels: torch.Tensor, actions: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training loss on a batch of windows.

        Args:
            pixels: uint8 (B, n, C, H, W), n >= 2 frames; B * n >= 2 (VICReg statistics).
            actions: (B, n - 1, A_block), block k taken between frames k and k+1.

        Returns:
            dict of scalars: ``loss`` (the weighted sum in the module docstring), ``pred_loss``,
            ``std_loss``, ``cov_loss``, ``sim_t_loss``, ``idm_loss``, ``rollout_loss``.
        """
        self._check_window(pixels, actions)
        c = self.config
        emb = self.encode(pixels)  # (B, n, D)
        B, n, D = emb.shape
        pred = self.predict(emb[:, :-1], actions)  # (B, n - 1, D)
        pred_loss = F.mse_loss(pred.float(), emb[:, 1:].float())
        vic = self.vicreg.terms(emb.reshape(1, B * n, D))  # statistics over every frame of the batch
        std_loss, cov_loss = vic["variance"], vic["covariance"]
        sim_t_loss = (emb[:, 1:].float() - emb[:, :-1].float()).pow(2).mean()
        idm_loss = F.mse_loss(self.idm(emb[:, :-1], emb[:, 1:]).float(), actions.float())
        rollout_loss = self.rollout_loss(emb, actions)
        loss = (c.pred_weight * pred_loss + c.std_weight * std_loss + c.cov_weight * cov_loss
                + c.sim_t_weight * sim_t_loss + c.idm_weight * idm_loss + c.rollout_weight * rollout_loss)
        return self.add_regularizers({"loss": loss, "pred_loss": pred_loss, "std_loss": std_loss, "cov_loss": cov_loss,
                                      "sim_t_loss": sim_t_loss, "idm_loss": idm_loss, "rollout_loss": rollout_loss}, emb)
