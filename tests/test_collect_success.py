"""Collection past success: fixed-length episodes by default, the first success step
recorded per episode (and shown by ``wm data info``), ``stop_on_success`` for the old
behaviour, and datasets written before the ``success_step`` column still readable."""

from __future__ import annotations

import json

import lance
import numpy as np
import pytest

import data
from data import columns as C
from data import open_dataset, validate_dataset
from worldmodel.cli import main

TWO_ROOM = "wm/TwoRoom-v0"  # time limit 100 steps: 101 rows


def test_default_runs_to_the_time_limit_and_records_the_first_success(tmp_path) -> None:
    full, short = tmp_path / "full.lance", tmp_path / "short.lance"
    data.collect(TWO_ROOM, 3, full, resolution=16)
    data.collect(TWO_ROOM, 3, short, resolution=16, stop_on_success=True)
    a, b = open_dataset(full), open_dataset(short)
    sa, sb = a.success_steps(), b.success_steps()
    for ep in a.episodes():
        eid, s = ep[C.EPISODE_ID], sa[ep[C.EPISODE_ID]]
        assert ep[C.LENGTH] == 101  # fixed length: the time limit, not the success
        assert 0 < s < 100
        rows = a.load_episode(eid)
        assert not rows["terminated"].any() and rows["truncated"][-1] and not rows["truncated"][:-1].any()
        # the same seeded rollout up to the success: stop_on_success ends it exactly there
        short_rows = b.load_episode(eid)
        assert sb[eid] == s and len(short_rows["state"]) == s + 1 and short_rows["terminated"][-1]
        np.testing.assert_array_equal(rows["state"][: s + 1], short_rows["state"])
        # the expert stays at the goal after its success (reward = -goal_distance < success radius 0.06)
        assert np.all(-rows["reward"][s:] < 0.06)
    assert validate_dataset(full) == []
    info = a.info()["success"]
    assert info == {"recorded": 3, "succeeded": 3, "continued_after_success": 3,
                    "first_success_step": {"min": min(sa.values()), "mean": pytest.approx(np.mean(list(sa.values())), abs=0.01),
                                           "max": max(sa.values())}}
    assert b.info()["success"]["continued_after_success"] == 0


def test_cli_stop_on_success_and_data_info(tmp_path, capsys) -> None:
    out = tmp_path / "d.lance"
    assert main(["collect", "--env", TWO_ROOM, "--episodes", "2", "--out", str(out), "--resolution", "16",
                 "--stop-on-success"]) == 0
    capsys.readouterr()
    assert main(["data", "info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["success"]["recorded"] == 2 and info["success"]["continued_after_success"] == 0
    assert info["steps"] == sum(s + 1 for s in open_dataset(out).success_steps().values())


def test_datasets_without_the_success_column_still_work(tmp_path) -> None:
    """A dataset written before ``success_step`` existed: read (None), summarised, appended to."""
    path = tmp_path / "old.lance"
    data.collect(TWO_ROOM, 2, path, resolution=16, max_steps=5)
    table = lance.dataset(str(path / C.EPISODES_TABLE)).to_table().drop_columns([C.SUCCESS_STEP])
    lance.write_dataset(table, str(path / C.EPISODES_TABLE), mode="overwrite")
    old = open_dataset(path)
    assert old.success_steps() == {0: None, 1: None}
    assert old.info()["success"] == {"recorded": 0, "succeeded": 0, "continued_after_success": 0, "first_success_step": None}
    data.collect(TWO_ROOM, 1, path, resolution=16, max_steps=5, seed=2)  # appending leaves the column out
    ds = open_dataset(path)
    assert [e[C.EPISODE_ID] for e in ds.episodes()] == [0, 1, 2]
    assert ds.success_steps() == {0: None, 1: None, 2: None}
    assert validate_dataset(path) == []


def test_bad_success_step_is_a_clear_error(tmp_path) -> None:
    with data.EpisodeWriter(tmp_path / "w.lance", codec="raw", env_id="x", action_dim=2) as w:
        for t in range(3):
            w.add_step(np.zeros((8, 8, 3), np.uint8), np.zeros(2), None if t == 2 else np.zeros(2, np.float32))
        with pytest.raises(ValueError, match=r"success_step=3.*\[0, 3\)"):
            w.save_episode(success_step=3)
        w.save_episode(success_step=2)
    assert open_dataset(tmp_path / "w.lance").success_steps() == {0: 2}
