"""Training loop: the loss falls, metrics and checkpoints are written, runs resume."""

import json
import math

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from worldmodel import ModelConfig, TrainConfig, load_checkpoint
from worldmodel.device import resolve_device
from worldmodel.progress import JsonlLogger, ProgressBar
from worldmodel.train import collate, get_lr, split_episodes, train

TINY = dict(image_size=32, encoder_width=8, embed_dim=16, projector_hidden=32, predictor_width=32,
            predictor_depth=1, predictor_heads=2, sigreg_projections=64, frameskip=2, action_dim=2)


class MovingSquare(Dataset):
    """Windows of a bright square pushed by the actions, in ``data.WindowDataset``'s item format."""

    def __init__(self, num: int = 256, n: int = 2, size: int = 32, frameskip: int = 2, seed: int = 0):
        rng = np.random.default_rng(seed)
        pos = rng.uniform(6, size - 6, (num, 2))
        actions = rng.uniform(-1, 1, (num, n - 1, frameskip, 2)).astype(np.float32)
        frames = np.zeros((num, n, 3, size, size), np.uint8)
        for k in range(n):
            if k > 0:
                pos = np.clip(pos + 1.5 * actions[:, k - 1].sum(1), 3, size - 4)
            for i, (x, y) in enumerate(pos.astype(int)):
                frames[i, k, :, y - 3 : y + 3, x - 3 : x + 3] = 255
        self.pixels = torch.from_numpy(frames)
        self.actions = torch.from_numpy(actions.reshape(num, n - 1, frameskip * 2))

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, i: int) -> dict:
        return {"pixels": self.pixels[i], "actions": self.actions[i], "episode_id": i, "start": 0}


class BatchedMovingSquare(MovingSquare):
    """Same, with ``__getitems__`` returning one batch dict (as ``data.WindowDataset`` does)."""

    def __getitems__(self, indices: list[int]) -> dict:
        idx = torch.as_tensor(sorted(indices))
        return {"pixels": self.pixels[idx], "actions": self.actions[idx],
                "episode_id": idx, "start": torch.zeros_like(idx)}


def tcfg(tmp_path, **kw) -> TrainConfig:
    base = dict(out=str(tmp_path / "run"), steps=6, batch_size=16, lr=3e-3, warmup_steps=2, log_every=1,
                ckpt_every=3, val_every=3, val_batches=2, device="cpu", progress=False)
    return TrainConfig(**{**base, **kw})


def metrics(tmp_path) -> list[dict]:
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_loss_decreases_on_synthetic_data(tmp_path):
    mcfg = ModelConfig(**TINY)
    summary = train(mcfg, tcfg(tmp_path, steps=60, warmup_steps=5, ckpt_every=60, val_every=30),
                    BatchedMovingSquare(256), val_dataset=MovingSquare(64, seed=1))
    train_lines = [m for m in metrics(tmp_path) if "loss" in m]
    assert [m["step"] for m in train_lines] == list(range(1, 61))
    first = np.mean([m["loss"] for m in train_lines[:5]])
    last = np.mean([m["loss"] for m in train_lines[-5:]])
    assert last < 0.7 * first, (first, last)
    assert summary["steps"] == 60 and summary["steps_run"] == 60
    assert summary["val_pred_loss"] is not None and math.isfinite(summary["val_pred_loss"])
    assert {"step", "loss", "pred_loss", "sigreg_loss", "lr", "seconds", "samples_per_s"} <= set(train_lines[0])
    # the run folder is a loadable checkpoint with the resolved config next to it
    assert load_checkpoint(tmp_path / "run").config == mcfg
    assert json.loads((tmp_path / "run" / "train_config.json").read_text())["device"] == "cpu"


def test_resume_continues_from_saved_step_and_finished_run_is_noop(tmp_path):
    mcfg = ModelConfig(**TINY)
    ds = MovingSquare(64)
    def saved_seconds() -> float:  # the training seconds the last checkpoint recorded
        return json.loads((tmp_path / "run" / "train_state.json").read_text())["train_state"]["elapsed_seconds"]

    first = train(mcfg, tcfg(tmp_path, steps=4, ckpt_every=2), ds)
    assert first["steps"] == 4
    first_saved = saved_seconds()
    assert 0 < first_saved <= first["seconds"]
    resumed = train(mcfg, tcfg(tmp_path, steps=7, ckpt_every=2), ds)
    assert resumed["start_step"] == 4 and resumed["steps"] == 7 and resumed["steps_run"] == 3
    assert [m["step"] for m in metrics(tmp_path) if "loss" in m] == [1, 2, 3, 4, 5, 6, 7]
    # training time adds up over sessions: this one's plus the first's up to its last checkpoint write
    # (compared with what the checkpoints recorded, not with wall-clock ratios: a slow disk's write time varies)
    assert resumed["total_seconds"] - resumed["seconds"] == pytest.approx(first_saved, abs=1e-3)
    assert first_saved < saved_seconds() <= resumed["total_seconds"]
    before = (tmp_path / "run" / "model.safetensors").read_bytes()
    again = train(mcfg, tcfg(tmp_path, steps=7), ds)
    assert again["steps_run"] == 0 and again["steps"] == 7
    assert again["total_seconds"] == pytest.approx(saved_seconds())  # a finished run reports the recorded total
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == before
    with pytest.raises(ValueError, match="embed_dim: saved 16 vs given 32"):
        train(ModelConfig(**{**TINY, "embed_dim": 32}), tcfg(tmp_path, steps=9), ds)


def test_resume_restores_weights(tmp_path):
    mcfg = ModelConfig(**TINY)
    ds = MovingSquare(64)
    train(mcfg, tcfg(tmp_path, steps=3, ckpt_every=3, lr=1e-9, warmup_steps=0, weight_decay=0.0), ds)
    saved = load_checkpoint(tmp_path / "run").state_dict()
    # with a ~0 learning rate, resuming must start from the saved weights, not a fresh init
    train(mcfg, tcfg(tmp_path, steps=4, lr=1e-9, warmup_steps=0, weight_decay=0.0, seed=123), ds)
    resumed = load_checkpoint(tmp_path / "run").state_dict()
    for name, tensor in saved.items():
        if tensor.is_floating_point() and "running" not in name:
            torch.testing.assert_close(resumed[name], tensor, rtol=1e-5, atol=1e-6)


def test_too_small_dataset_and_missing_data_are_clear(tmp_path):
    with pytest.raises(ValueError, match="8 windows, fewer than batch_size=16"):
        train(ModelConfig(**TINY), tcfg(tmp_path), MovingSquare(8))
    with pytest.raises(ValueError, match="no dataset given"):
        train(ModelConfig(**TINY), tcfg(tmp_path))


def test_lr_schedule():
    cfg = TrainConfig(steps=100, warmup_steps=10, lr=1.0, min_lr_ratio=0.1)
    assert get_lr(0, cfg) == pytest.approx(0.1)
    assert get_lr(9, cfg) == pytest.approx(1.0)
    assert get_lr(10, cfg) == pytest.approx(1.0)
    assert get_lr(55, cfg) == pytest.approx(0.55)
    assert get_lr(100, cfg) == pytest.approx(0.1)
    lrs = [get_lr(s, cfg) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_split_episodes_holds_out_the_last():
    assert split_episodes([4, 0, 3, 1, 2, 5, 6, 7, 8, 9], 0.2) == ([0, 1, 2, 3, 4, 5, 6, 7], [8, 9])
    assert split_episodes([0, 1, 2], 0.1) == ([0, 1], [2])  # at least one held out
    assert split_episodes([0], 0.5) == ([0], [])  # but never the only one
    assert split_episodes([0, 1, 2], 0.0) == ([0, 1, 2], [])


def test_collate_keeps_batch_dicts():
    batch = {"pixels": torch.zeros(2, 2, 3, 4, 4)}
    assert collate(batch) is batch
    items = [{"pixels": torch.zeros(2, 3), "episode_id": 1}, {"pixels": torch.ones(2, 3), "episode_id": 2}]
    out = collate(items)
    assert out["pixels"].shape == (2, 2, 3) and out["episode_id"].tolist() == [1, 2]


def test_train_config_round_trip_and_errors():
    cfg = TrainConfig(data="d", steps=10)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match=r"unknown TrainConfig keys \['step'\]"):
        TrainConfig.from_dict({"step": 3})
    with pytest.raises(ValueError, match="val_fraction must be in"):
        TrainConfig(val_fraction=1.0)


def test_resolve_device(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    # "auto" prefers CUDA, then MPS, then the CPU: pretend each is (not) there
    for cuda, mps, expected in ((True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"), (False, False, "cpu")):
        monkeypatch.setattr(torch.cuda, "is_available", lambda cuda=cuda: cuda)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda mps=mps: mps)
        assert resolve_device("auto") == torch.device(expected), (cuda, mps)
        assert resolve_device(" AUTO ") == torch.device(expected)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match="'mps' was requested but MPS is not available"):
        resolve_device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("mps") == torch.device("mps")
    monkeypatch.undo()
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:1")


def test_jsonl_logger_and_silent_progress(tmp_path, capsys):
    with JsonlLogger(tmp_path / "sub" / "m.jsonl") as log:
        log.log({"step": 1, "loss": 0.5})
        log.log({"step": 2, "loss": 0.25})
    with JsonlLogger(tmp_path / "sub" / "m.jsonl") as log:  # appends
        log.log({"step": 3})
    lines = (tmp_path / "sub" / "m.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2, 3]
    with ProgressBar(10, desc="x", enabled=False) as bar:  # disabled: prints nothing
        bar.update(5, loss=0.1)
    assert capsys.readouterr().err == ""


def test_progress_prints_periodic_lines_when_not_a_terminal(capsys, monkeypatch):
    import worldmodel.progress as progress

    clock = [0.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: clock[0])
    bar = ProgressBar(100, desc="train", interval=10.0)  # captured stderr is not a TTY
    for _ in range(100):
        clock[0] += 1.0  # one step a second: a line every 10 steps
        bar.update(1, loss=0.5)
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 11  # 10 periodic lines + the final one
    assert lines[0].startswith("train: 10/100 (10%)") and "loss=0.5" in lines[0]
    assert lines[-1].startswith("train: 100/100 (100%)")


class EpisodicMovingSquare(BatchedMovingSquare):
    """BatchedMovingSquare whose windows come 4 to an episode (`window_episodes`, ``episode_id``)."""

    @property
    def window_episodes(self) -> np.ndarray:
        return np.arange(len(self)) // 4

    def __getitems__(self, indices: list[int]) -> dict:
        batch = super().__getitems__(indices)
        return {**batch, "episode_id": batch["episode_id"] // 4}


def test_episode_centred_sigreg_trains_on_batches_of_whole_episode_groups(tmp_path, monkeypatch):
    """``sigreg_center="episode"``: training draws batches of `sigreg_group` windows per episode
    (data.EpisodeGroupSampler) and hands the loss their episode ids; a batch size that is not a multiple
    of the group, or a dataset that cannot name each window's episode, is refused before training."""
    import worldmodel.model as model_module

    seen: list[torch.Tensor] = []
    real = model_module.episode_means

    def spy(emb, episode_ids):
        seen.append(episode_ids.clone())
        return real(emb, episode_ids)

    monkeypatch.setattr(model_module, "episode_means", spy)
    mcfg = ModelConfig(**TINY, sigreg_center="episode", sigreg_group=2)
    summary = train(mcfg, tcfg(tmp_path, steps=4, val_every=4), EpisodicMovingSquare(64),
                    val_dataset=EpisodicMovingSquare(64, seed=1))
    assert summary["steps_run"] == 4 and len(seen) == 4 + 2  # 4 steps, then 2 validation batches
    for ids in seen[:4]:  # 16 windows: 8 groups of 2 windows, each group one episode
        assert len(ids) == 16 and torch.equal(ids[0::2], ids[1::2])
    assert math.isfinite(summary["val_pred_loss"])
    assert load_checkpoint(tmp_path / "run").config.sigreg_center == "episode"
    with pytest.raises(ValueError, match="sigreg_group=3 windows per episode: the batch of 16 windows must be a "
                                         "multiple of 3"):
        train(ModelConfig(**TINY, sigreg_center="episode", sigreg_group=3), tcfg(tmp_path / "b"),
              EpisodicMovingSquare(64))
    with pytest.raises(ValueError, match="needs each window's episode: a data.WindowDataset, got BatchedMovingSquare"):
        train(mcfg, tcfg(tmp_path / "c"), BatchedMovingSquare(64))

    class OnePerEpisode(EpisodicMovingSquare):
        @property
        def window_episodes(self) -> np.ndarray:
            return np.arange(len(self))

    with pytest.raises(ValueError, match="0 groups of 2 windows of one episode in 64 windows, fewer than one batch"):
        train(mcfg, tcfg(tmp_path / "d"), OnePerEpisode(64))
