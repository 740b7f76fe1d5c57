"""Leak-free evaluation: a checkpoint records the episodes it trained and validated on
(compactly, beside it), and ``wm eval`` refuses pairs from them, whether the evaluation
data is the training dataset itself or the same rollouts collected again, unless
``--allow-train-episodes`` (then the summary says so); held-out data passes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.cli_helpers import wm

from worldmodel.cli import main
from worldmodel.episode_record import (
    dataset_entry,
    factors_digest,
    merge_records,
    record_counts,
    seen_episodes,
)

RES = "16"
TINY_MODEL = ("--embed-dim", "8", "--encoder-width", "4", "--projector-hidden", "16", "--predictor-width", "16",
              "--predictor-depth", "1", "--predictor-heads", "2", "--sigreg-projections", "8", "--no-progress")
TINY_EVAL = ("--episodes", "3", "--offset", "5", "--budget", "4", "--device", "cpu", "--no-video",
             "--num-samples", "8", "--iterations", "1", "--num-elites", "2", "--horizon", "2")


def rows(n: int, first_seed: int = 0, factors=None, policy: str = "expert") -> list[dict]:
    """Episode rows as `EpisodeDataset.episodes()` gives them: ids 0.., consecutive seeds."""
    return [{"episode_id": i, "env_id": "wm/TwoRoom-v0", "seed": first_seed + i, "policy": policy, "split": "default",
             "factors": factors(i) if callable(factors) else (factors or {"door_width": 0.2}), "length": 101}
            for i in range(n)]


# ----------------------------------------------------------------- the record itself
def test_factor_digest_ignores_spelling_not_values() -> None:
    f = {"agent_color": (0.9, 0.2, 0.2), "door_width": 0.2, "steps": 3}
    same = {"steps": 3.0, "door_width": float(np.float32(0.2)), "agent_color": [0.9, 0.2, 0.2]}  # float32 round trip
    assert factors_digest(f) == factors_digest(same)
    assert factors_digest(f) != factors_digest({**f, "door_width": 0.21})
    assert factors_digest({}) == factors_digest(None) and len(factors_digest(f)) == 8


def test_record_of_10k_episodes_is_compact_and_decodes_exactly() -> None:
    eps = rows(10_000, first_seed=5)
    train, val = list(range(9_000)), list(range(9_000, 10_000))
    entry = dataset_entry("d.lance", eps, train, val)
    assert entry["train"] == [[0, 9_000, 5, 0, 0, factors_digest({"door_width": 0.2})]]  # one run per role
    assert len(entry["val"]) == 1
    # factors randomised per episode: one digest each, still small
    randomised = dataset_entry("d.lance", rows(10_000, factors=lambda i: {"door_width": 0.1 + i * 1e-5}), train, val)
    assert len(json.dumps(randomised, separators=(",", ":"))) < 100_000
    record = {"format": 1, "datasets": [randomised]}
    seen = seen_episodes(record)
    assert [s.episode_id for s in seen] == train + val and [s.role for s in seen] == ["train"] * 9_000 + ["val"] * 1_000
    assert all(s.seed == s.episode_id and s.factors == factors_digest({"door_width": 0.1 + s.episode_id * 1e-5})
               for s in seen[::997])
    assert record_counts(record) == {"train": 9_000, "val": 1_000}
    # gaps in ids or seeds, another policy: new runs, decoded back exactly
    mixed = rows(6) + [{**rows(1)[0], "episode_id": 9, "seed": None, "policy": "random"}]
    mixed[3]["seed"] = 40
    entry = dataset_entry("m.lance", mixed, [0, 1, 2, 3, 4, 5, 9])
    got = [(s.episode_id, s.seed, s.policy) for s in seen_episodes({"format": 1, "datasets": [entry]})]
    assert got == [(0, 0, "expert"), (1, 1, "expert"), (2, 2, "expert"), (3, 40, "expert"), (4, 4, "expert"),
                   (5, 5, "expert"), (9, None, "random")]
    with pytest.raises(KeyError, match="episode 12 is not in m.lance"):
        dataset_entry("m.lance", mixed, [12])


def test_merged_records_keep_what_both_runs_saw() -> None:
    eps = rows(10)
    a = {"format": 1, "datasets": [dataset_entry("d.lance", eps, range(0, 6), [6])]}
    b = {"format": 1, "datasets": [dataset_entry("d.lance", eps, range(0, 8), [8, 9])]}
    merged = seen_episodes(merge_records(a, b))
    assert sorted(s.episode_id for s in merged if s.role == "train") == list(range(8))
    assert sorted(s.episode_id for s in merged if s.role == "val") == [6, 8, 9]


def test_malformed_record_is_named() -> None:
    with pytest.raises(ValueError, match="format 1"):
        seen_episodes({"format": 7})
    entry = dataset_entry("d.lance", rows(3), [0, 1, 2])
    entry["train"][0][5] = "abc"
    with pytest.raises(ValueError, match="malformed train run"):
        seen_episodes({"format": 1, "datasets": [entry]})


# ----------------------------------------------------------------- training and wm eval
@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """6 TwoRoom episodes (seeds 0..5; training splits 5 + 1 held out for validation), a
    checkpoint trained 2 steps on them, and evaluation datasets: the same seeds collected
    again with another codec, the same seeds with another policy, held-out seeds."""
    tmp = tmp_path_factory.mktemp("leaks")
    paths = {name: tmp / f"{name}.lance" for name in ("train", "again", "random_policy", "heldout")}
    for name, seed, extra in (("train", 0, ()), ("again", 2, ("--codec", "png")),
                              ("random_policy", 0, ("--policy", "random")), ("heldout", 1000, ())):
        n = 6 if name == "train" else 3
        assert main(["collect", "--env", "wm/TwoRoom-v0", "--episodes", str(n), "--out", str(paths[name]),
                     "--resolution", RES, "--seed", str(seed), *extra]) == 0
    paths["ckpt"] = tmp / "ckpt"
    assert main(["train", "--data", str(paths["train"]), "--out", str(paths["ckpt"]), "--steps", "2",
                 "--batch-size", "4", "--device", "cpu", *TINY_MODEL]) == 0
    return paths


def test_checkpoint_records_the_episodes_it_trained_and_validated_on(trained) -> None:
    from worldmodel.checkpoint import load_episode_record, load_extra

    ckpt = trained["ckpt"]
    info = load_extra(ckpt)["episodes"]
    assert (info["train"], info["val"]) == (5, 1)  # split_episodes holds out the last one
    files = sorted(p.name for p in ckpt.glob("episodes.*.json"))
    assert files == [info["file"]]
    seen = seen_episodes(load_episode_record(ckpt))
    assert [(s.role, s.episode_id, s.seed, s.policy, s.split) for s in seen] == (
        [("train", i, i, "expert", "default") for i in range(5)] + [("val", 5, 5, "expert", "default")])
    assert {s.realpath for s in seen} == {str(trained["train"].resolve())}


def test_an_altered_or_missing_record_is_refused(trained, tmp_path) -> None:
    import shutil

    from worldmodel.checkpoint import CheckpointError, load_episode_record, load_extra

    ckpt = tmp_path / "ckpt"
    shutil.copytree(trained["ckpt"], ckpt)
    record = ckpt / load_extra(ckpt)["episodes"]["file"]
    record.write_text(record.read_text().replace('"train":[[0,5', '"train":[[0,4'))
    with pytest.raises(CheckpointError, match="does not match the SHA-256"):
        load_episode_record(ckpt)
    record.unlink()
    with pytest.raises(CheckpointError, match="is missing"):
        load_episode_record(ckpt)


def test_resumed_training_keeps_the_earlier_record(tmp_path) -> None:
    from worldmodel.checkpoint import load_episode_record

    data, ckpt = tmp_path / "d.lance", tmp_path / "ckpt"
    assert main(["collect", "--env", "wm/TwoRoom-v0", "--episodes", "4", "--out", str(data), "--resolution", RES]) == 0
    args = ["--data", str(data), "--out", str(ckpt), "--batch-size", "4", "--device", "cpu", "--val-fraction", "0.25",
            *TINY_MODEL]
    assert main(["train", *args, "--steps", "1"]) == 0
    # more episodes appended: the resumed run's split moves (episode 3 now trains), the record keeps both
    assert main(["collect", "--env", "wm/TwoRoom-v0", "--episodes", "4", "--out", str(data), "--resolution", RES,
                 "--mode", "append"]) == 0
    assert main(["train", *args, "--steps", "2"]) == 0
    seen = seen_episodes(load_episode_record(ckpt))
    assert sorted(s.episode_id for s in seen if s.role == "train") == [0, 1, 2, 3, 4, 5]
    assert sorted(s.episode_id for s in seen if s.role == "val") == [3, 6, 7]
    assert len(list(ckpt.glob("episodes.*.json"))) == 1


def test_wm_eval_refuses_training_episodes_of_the_same_dataset(trained, tmp_path, capsys) -> None:
    code, _, err = wm(capsys, "eval", "--ckpt", trained["ckpt"], "--data", trained["train"], "--out", tmp_path / "e",
                      *TINY_EVAL)
    assert code == 2, err
    assert "start/goal pairs come from episodes the checkpoint trained or validated on" in err
    assert "--allow-train-episodes" in err and "training episode" in err and "of this dataset" in err
    assert "Traceback" not in err and not (tmp_path / "e" / "summary.json").exists()


def test_wm_eval_refuses_the_same_rollouts_collected_again(trained, tmp_path, capsys) -> None:
    """Seeds 2..4 again (PNG frames instead of raw): episodes 0..2 there are training episodes 2..4."""
    code, _, err = wm(capsys, "eval", "--ckpt", trained["ckpt"], "--data", trained["again"], "--out", tmp_path / "e",
                      *TINY_EVAL)
    assert code == 2, err
    assert "3 of the 3 start/goal pairs" in err and "episodes 0, 1, 2 of" in err
    assert "the same rollout (seed" in err and "as training episode" in err and "--allow-train-episodes" in err


def test_allow_train_episodes_evaluates_and_says_so(trained, tmp_path, capsys) -> None:
    out = tmp_path / "e"
    code, stdout, err = wm(capsys, "eval", "--ckpt", trained["ckpt"], "--data", trained["again"], "--out", out,
                           "--allow-train-episodes", *TINY_EVAL)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["allow_train_episodes"] is True and summary["train_overlap_pairs"] == 3
    assert summary["train_overlap_episode_ids"] == [0, 1, 2]
    assert any("--allow-train-episodes" in note for note in summary["notes"])
    lines = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert lines and all(line["seen_in_training"] is True for line in lines)


def test_held_out_data_passes(trained, tmp_path, capsys) -> None:
    for name in ("heldout", "random_policy"):  # other seeds; the same seeds under another policy
        out = tmp_path / name
        code, _, err = wm(capsys, "eval", "--ckpt", trained["ckpt"], "--data", trained[name], "--out", out, *TINY_EVAL)
        assert code == 0, err
        summary = json.loads((out / "summary.json").read_text())
        assert summary["allow_train_episodes"] is False and summary["train_overlap_pairs"] == 0
        assert summary["train_overlap_episode_ids"] == [] and summary["notes"] == []
        assert summary["trained_on"]["episodes"]["train"] == 5


def test_an_older_checkpoint_gets_a_note_not_an_error(trained, tmp_path, capsys) -> None:
    import shutil

    ckpt = tmp_path / "ckpt"
    shutil.copytree(trained["ckpt"], ckpt)
    cfg = json.loads((ckpt / "config.json").read_text())
    del cfg["extra"]["episodes"]  # as written before episodes were recorded
    (ckpt / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "e"
    code, _, err = wm(capsys, "eval", "--ckpt", ckpt, "--data", trained["train"], "--out", out, *TINY_EVAL)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train_overlap_pairs"] is None
    assert any("does not record the episodes it trained on" in note for note in summary["notes"])


def test_the_check_comes_before_any_planning(trained, tmp_path, monkeypatch) -> None:
    import benchmarks.planning as planning
    from benchmarks.leaks import TrainEpisodesError
    from benchmarks.protocol import PlanningProtocol
    from data import open_dataset
    from worldmodel.checkpoint import load_checkpoint

    def no_planning(*args, **kwargs):
        raise AssertionError("planning started before the leak check")

    monkeypatch.setattr(planning, "build_mpc", no_planning)
    with pytest.raises(TrainEpisodesError, match="episodes 0, 1, 2 of"):
        planning.evaluate_planning(load_checkpoint(trained["ckpt"]), open_dataset(trained["again"]), tmp_path / "e",
                                   protocol=PlanningProtocol(episodes=3, offset=5, budget=4), video=False,
                                   trained_on=planning.checkpoint_data(trained["ckpt"]))
