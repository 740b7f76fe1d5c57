"""End to end: collect a tiny Lance dataset, train on it by path, load the checkpoint."""

import json

import pytest

pytest.importorskip("lance")

from worldmodel import ModelConfig, TrainConfig, load_checkpoint  # noqa: E402
from worldmodel.train import build_datasets, train  # noqa: E402

TINY = dict(image_size=32, encoder_width=8, embed_dim=16, projector_hidden=32, predictor_width=32,
            predictor_depth=1, predictor_heads=2, sigreg_projections=32, frameskip=2, action_dim=2)


@pytest.fixture(scope="module")
def dataset_path(tmp_path_factory):
    import data

    path = tmp_path_factory.mktemp("data") / "tworoom"
    data.collect("wm/TwoRoom-v0", 6, path, resolution=32, max_steps=30, seed=0)
    return path


def test_episode_split_holds_out_last_episodes(dataset_path, tmp_path):
    cfg = TrainConfig(data=str(dataset_path), out=str(tmp_path), val_fraction=0.34)
    train_ds, val_ds = build_datasets(ModelConfig(**TINY), cfg)
    assert train_ds.episode_ids.tolist() == [0, 1, 2, 3] and val_ds.episode_ids.tolist() == [4, 5]
    item = train_ds[0]
    assert item["pixels"].shape == (2, 3, 32, 32) and item["actions"].shape == (1, 4)


@pytest.mark.parametrize("num_workers", [0, 1])
def test_train_from_path(dataset_path, tmp_path, num_workers):
    cfg = TrainConfig(data=str(dataset_path), out=str(tmp_path / "run"), steps=3, batch_size=8, log_every=1,
                      ckpt_every=3, val_every=3, val_batches=1, device="cpu", num_workers=num_workers,
                      val_fraction=0.34, progress=False)
    summary = train(ModelConfig(**TINY), cfg)
    assert summary["steps"] == 3 and summary["val_pred_loss"] is not None
    assert load_checkpoint(tmp_path / "run").config == ModelConfig(**TINY)
    assert json.loads((tmp_path / "run" / "train_config.json").read_text())["data"] == str(dataset_path)


def test_mismatched_model_config_is_clear(dataset_path, tmp_path):
    cfg = TrainConfig(data=str(dataset_path), out=str(tmp_path))
    with pytest.raises(ValueError, match="image_size=64"):
        build_datasets(ModelConfig(**{**TINY, "image_size": 64}), cfg)
