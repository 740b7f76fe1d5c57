"""Training-time image augmentations (``wm train --augment NAME``).

``frame-color``: every frame of a training window gets its own random colour transform: a
random permutation of the colour channels and a random gain per channel (uniform in
``[1 - FRAME_COLOR_GAIN, 1 + FRAME_COLOR_GAIN]``), the same over the whole frame. The
transform changes from one frame to the next within a window, so colour is unpredictable
from the past frames and actions: a predictive objective gains nothing from encoding it,
while the layout (agent, walls, objects: the contrast structure the transform keeps) stays
predictable. This is the distractor experiment's lesson (RESULTS.md: a JEPA ignores
per-step random patches) turned on colour, which factor-randomised data otherwise makes a
per-episode constant that the embedding spends itself on (issue #11 item 4).

``window-color``: the same transform family, drawn once per training window and applied to all of
its frames. Colour stays predictable within the window (no pressure to drop it, unlike
``frame-color``), but the encoder sees every scene under many colourings, so colours outside the
data's own ranges (a visual OOD shift) are less foreign: domain randomisation of colour,
beside factor-randomised data.

``episode-color``: the same transform family, drawn once per episode of the batch and applied to
every frame of that episode's windows (`augment_frames`'s ``episode_ids``). With
``sigreg_center="episode"``, whose batches hold several windows per episode and whose SIGReg
counts what varies over an episode as spread, colour stays constant over the episode (as in the
data) while the encoder still sees every scene under many colourings; ``window-color`` would make
colour vary between an episode's windows.

``episode-mix``: once per episode as ``episode-color``, a colour matrix that also mixes the channels:
``M = (1 - a) * G P + a * R``, where ``G P`` is ``episode-color``'s draw (a permutation and gains), ``R`` a
random row-stochastic matrix (each output channel a random convex combination of the input channels,
rows drawn uniformly on the simplex) and ``a`` uniform in [0, 1]. Permutations and gains keep the relative hues
of a scene's objects (a red agent stays the odd channel out); mixing changes them, so objects take colours
relative to one another that the data never pairs (random colour mixing as in random-convolution
augmentation, a 1 x 1 kernel). Greys stay greys under ``R``; the gains tint them.

Validation and planning see the frames unchanged.

Draws are deterministic in ``(seed, draw)`` (`augment_frames`'s ``generator``): a resumed run
augments its batches as the uninterrupted run would.
"""

from __future__ import annotations

import difflib

import torch

#: the augmentations `augment_frames` knows
AUGMENTATIONS = ("none", "frame-color", "window-color", "episode-color", "episode-mix")
#: the augmentations drawn once per episode (`augment_frames` needs each window's episode id)
PER_EPISODE = ("episode-color", "episode-mix")
#: half-width of the per-channel gain range of the colour augmentations
FRAME_COLOR_GAIN = 0.3


def check_augment(name: str) -> str:
    """Return `name` if it is a known augmentation; else raise ``ValueError`` naming the closest."""
    if name not in AUGMENTATIONS:
        close = difflib.get_close_matches(str(name), AUGMENTATIONS, n=1)
        raise ValueError(f"unknown augmentation {name!r}; expected one of {list(AUGMENTATIONS)}"
                         + (f"; did you mean {close[0]!r}?" if close else ""))
    return name


def augment_generator(seed: int, draw: int) -> torch.Generator:
    """The CPU generator of draw number `draw` (a micro-batch's index in the run) of a run seeded `seed`."""
    g = torch.Generator()
    g.manual_seed((int(seed) * 1_000_003 + int(draw) * 7919 + 12345) % (2**63 - 1))
    return g


def augment_frames(pixels: torch.Tensor, name: str, generator: torch.Generator,
                   episode_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Augment training frames.

    Args:
        pixels: uint8 (B, n, C, H, W) windows of n frames.
        name: one of `AUGMENTATIONS` (``"none"`` returns `pixels` itself).
        generator: CPU generator of the draws (`augment_generator`).
        episode_ids: int (B,), each window's episode; needed (only) by the `PER_EPISODE` ones.

    Returns:
        uint8 (B, n, C, H, W), on `pixels`' device.
    """
    check_augment(name)
    if name == "none":
        return pixels
    if pixels.dtype != torch.uint8 or pixels.dim() != 5:
        raise ValueError(f"augment_frames expects uint8 (B, n, C, H, W) frames, got {tuple(pixels.shape)} "
                         f"{pixels.dtype}")
    b, n, c = pixels.shape[:3]
    m = n if name == "frame-color" else 1  # window-color: one draw per window, broadcast over its n frames
    rows = b
    if name in PER_EPISODE:  # one draw per episode, shared by its windows
        if episode_ids is None or tuple(episode_ids.shape) != (b,):
            raise ValueError(f"{name} needs each window's episode id, int ({b},), got "
                             f"{None if episode_ids is None else tuple(episode_ids.shape)}")
        uniq, which = torch.unique(episode_ids.cpu(), return_inverse=True)  # (B,) episode of each window
        rows = len(uniq)
    perm = torch.argsort(torch.rand(rows, m, c, generator=generator), dim=-1)
    gain = 1.0 + FRAME_COLOR_GAIN * (2.0 * torch.rand(rows, m, c, 1, 1, generator=generator) - 1.0)
    if name == "episode-mix":  # (E, 3, 3) per episode: (1 - a) G P + a R, applied to every frame
        mix = torch.rand(rows, c, c, generator=generator).add_(1e-12).log_().neg_()  # Exp(1): rows on the simplex
        mix = mix / mix.sum(-1, keepdim=True)
        a = torch.rand(rows, 1, 1, generator=generator)
        gp = torch.zeros(rows, c, c).scatter_(2, perm[:, 0, :, None], gain[:, 0, :, :, 0])  # row i picks perm[i]
        matrix = ((1 - a) * gp + a * mix)[which].to(pixels.device)  # (B, C, C)
        out = torch.einsum("bij,bnjhw->bnihw", matrix, pixels.float())
        return out.round_().clamp_(0, 255).to(torch.uint8)
    if name == "episode-color":
        perm, gain = perm[which], gain[which]
    perm = perm.expand(b, n, c).to(pixels.device)
    gain = gain.expand(b, n, c, 1, 1).to(pixels.device)
    index = perm[..., None, None].expand(pixels.shape)
    out = torch.gather(pixels, 2, index).float().mul_(gain).round_().clamp_(0, 255)
    return out.to(torch.uint8)
