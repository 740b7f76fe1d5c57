"""Training-frame augmentation (worldmodel/augment.py) and its use in training."""

from __future__ import annotations

import itertools

import pytest
import torch

from worldmodel.augment import FRAME_COLOR_GAIN, augment_frames, augment_generator
from worldmodel.config import TrainConfig


def _frames(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 190, (3, 4, 3, 8, 8), generator=g, dtype=torch.uint8)  # below 255 / max gain: no clipping


def _transform(x: torch.Tensor, y: torch.Tensor) -> tuple | None:
    """The (channel permutation, per-channel gains) that map frame x (C, H, W) to y, or None."""
    xf, yf = x.float(), y.float()
    for perm in itertools.permutations(range(3)):
        src = xf[list(perm)]
        gain = (yf * src).sum((1, 2)) / (src * src).sum((1, 2))  # least-squares gain per channel
        if torch.all((gain - 1).abs() <= FRAME_COLOR_GAIN + 0.01) and torch.allclose(
                (src * gain[:, None, None]).round().clamp(0, 255), yf, atol=1.0):
            return perm, tuple(round(v, 3) for v in gain.tolist())
    return None


def test_frame_color_is_a_channel_permutation_times_a_gain_per_frame() -> None:
    x = _frames()
    y = augment_frames(x, "frame-color", augment_generator(0, 5))
    assert y.shape == x.shape and y.dtype == torch.uint8
    transforms = set()
    for b, t in itertools.product(range(3), range(4)):
        found = _transform(x[b, t], y[b, t])
        assert found is not None, (b, t)
        transforms.add(found)
    assert len(transforms) == 12  # every frame its own transform, within a window too


def test_window_color_is_one_transform_per_window_shared_by_its_frames() -> None:
    x = _frames()
    y = augment_frames(x, "window-color", augment_generator(0, 5))
    assert y.shape == x.shape and y.dtype == torch.uint8 and not torch.equal(x, y)
    per_window = []
    for b in range(3):
        found = [_transform(x[b, t], y[b, t]) for t in range(4)]
        assert None not in found, (b, found)
        perms, gains = {f[0] for f in found}, torch.tensor([f[1] for f in found])
        # all frames of a window: the same transform (gains estimated through uint8 rounding)
        assert len(perms) == 1 and (gains - gains[0]).abs().max() < 0.005, (b, found)
        per_window.append(found[0])
    for (pa, ga), (pb, gb) in itertools.combinations(per_window, 2):  # each window its own
        assert pa != pb or (torch.tensor(ga) - torch.tensor(gb)).abs().max() > 0.01
    assert torch.equal(y, augment_frames(x, "window-color", augment_generator(0, 5)))
    assert not torch.equal(y, augment_frames(x, "window-color", augment_generator(0, 6)))
    TrainConfig(augment="window-color")  # a known name for `wm train --augment`


def test_episode_color_is_one_transform_per_episode_shared_by_its_windows() -> None:
    """Windows 0 and 2 are of one episode: every frame of both gets one transform; window 1 its own."""
    x = _frames()
    ids = torch.tensor([5, 9, 5])
    y = augment_frames(x, "episode-color", augment_generator(0, 5), ids)
    assert y.shape == x.shape and y.dtype == torch.uint8
    found = {b: [_transform(x[b, t], y[b, t]) for t in range(4)] for b in range(3)}
    assert all(None not in f for f in found.values()), found
    same = found[0] + found[2]
    gains = torch.tensor([f[1] for f in same])
    assert len({f[0] for f in same}) == 1 and (gains - gains[0]).abs().max() < 0.005, same
    (pa, ga), (pb, gb) = found[0][0], found[1][0]
    assert pa != pb or (torch.tensor(ga) - torch.tensor(gb)).abs().max() > 0.01
    assert torch.equal(y, augment_frames(x, "episode-color", augment_generator(0, 5), ids))
    with pytest.raises(ValueError, match=r"episode-color needs each window's episode id, int \(3,\), got None"):
        augment_frames(x, "episode-color", augment_generator(0, 5))
    TrainConfig(augment="episode-color")


def test_window_color_draws_are_those_it_made_before_episode_color() -> None:
    """Adding episode-color left the other augmentations' draws as they were: runs made with them reproduce."""
    x = _frames()
    g = augment_generator(0, 5)
    perm = torch.argsort(torch.rand(3, 1, 3, generator=g), dim=-1)
    gain = 1.0 + FRAME_COLOR_GAIN * (2.0 * torch.rand(3, 1, 3, 1, 1, generator=g) - 1.0)
    want = torch.gather(x, 2, perm.expand(3, 4, 3)[..., None, None].expand(x.shape)).float().mul_(gain).round_()
    assert torch.equal(augment_frames(x, "window-color", augment_generator(0, 5)), want.clamp_(0, 255).to(torch.uint8))


def test_frame_color_draws_are_deterministic_and_none_is_the_identity() -> None:
    x = _frames()
    a = augment_frames(x, "frame-color", augment_generator(3, 7))
    assert torch.equal(a, augment_frames(x, "frame-color", augment_generator(3, 7)))
    assert not torch.equal(a, augment_frames(x, "frame-color", augment_generator(3, 8)))
    assert augment_frames(x, "none", augment_generator(3, 7)) is x


def test_bad_augmentations_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown augmentation 'frame-colour'.*did you mean 'frame-color'"):
        augment_frames(_frames(), "frame-colour", augment_generator(0, 0))
    with pytest.raises(ValueError, match="did you mean 'frame-color'"):
        TrainConfig(augment="frame_color")
    with pytest.raises(ValueError, match="uint8 \\(B, n, C, H, W\\)"):
        augment_frames(_frames().float(), "frame-color", augment_generator(0, 0))


def test_training_feeds_the_model_augmented_frames_of_its_draw() -> None:
    from worldmodel.train import accumulate_gradients

    x = _frames()
    batches = iter([{"pixels": x, "actions": torch.zeros(3, 3, 10)}] * 2)
    seen = []

    def runner(pixels: torch.Tensor, actions: torch.Tensor) -> dict:
        seen.append(pixels)
        return {"loss": (w * pixels.float().mean()).sum()}

    w = torch.nn.Parameter(torch.ones(1))
    model = torch.nn.Linear(1, 1)
    accumulate_gradients(runner, model, batches, 2, [], torch.device("cpu"), seed=4, first=10, augment="frame-color")
    assert torch.equal(seen[0], augment_frames(x, "frame-color", augment_generator(4, 10)))
    assert torch.equal(seen[1], augment_frames(x, "frame-color", augment_generator(4, 11)))
    seen.clear()
    accumulate_gradients(runner, model, iter([{"pixels": x, "actions": torch.zeros(3, 3, 10)}]), 1, [],
                         torch.device("cpu"), seed=4, first=10)
    assert seen[0] is x or torch.equal(seen[0], x)
    ids = torch.tensor([2, 2, 7])
    seen.clear()
    accumulate_gradients(runner, model, iter([{"pixels": x, "actions": torch.zeros(3, 3, 10), "episode_id": ids}]), 1,
                         [], torch.device("cpu"), seed=4, first=10, augment="episode-color")
    assert torch.equal(seen[0], augment_frames(x, "episode-color", augment_generator(4, 10), ids))


def test_episode_mix_is_one_colour_matrix_per_episode_that_mixes_channels() -> None:
    """Windows 0 and 2 are of one episode: one 3 x 3 colour matrix for all their frames, found by least squares;
    window 1 its own; some matrices mix channels (more than one non-zero entry per row), which episode-color's
    permutations never do."""
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 255, (3, 4, 3, 8, 8), generator=g, dtype=torch.uint8)
    ids = torch.tensor([5, 9, 5])
    y = augment_frames(x, "episode-mix", augment_generator(0, 5), ids)
    assert y.shape == x.shape and y.dtype == torch.uint8

    def matrix(b: int, out: torch.Tensor = y) -> torch.Tensor:  # least-squares M with out = M x over window b
        xs = x[b].permute(1, 0, 2, 3).reshape(3, -1).double()  # (few pixels are clipped)
        ys = out[b].permute(1, 0, 2, 3).reshape(3, -1).double()
        return torch.linalg.lstsq(xs.T, ys.T).solution.T

    m0, m1, m2 = matrix(0), matrix(1), matrix(2)
    assert torch.allclose(m0, m2, atol=0.02) and not torch.allclose(m0, m1, atol=0.05)
    for m in (m0, m1):  # rows: non-negative weights; row sums within episode-color's gains (convex mix of the two)
        assert (m > -0.02).all() and ((m.sum(1) - 1).abs() <= FRAME_COLOR_GAIN + 0.02).all()
    draws = [augment_frames(x, "episode-mix", augment_generator(0, k), ids) for k in range(6)]
    mixing = sum(int(((matrix(1, d) > 0.05).sum(1) > 1).any()) for d in draws)
    assert mixing >= 3
    assert torch.equal(y, augment_frames(x, "episode-mix", augment_generator(0, 5), ids))
    with pytest.raises(ValueError, match=r"episode-mix needs each window's episode id"):
        augment_frames(x, "episode-mix", augment_generator(0, 5))
    TrainConfig(augment="episode-mix")
