"""Interruptions never damage a dataset: Ctrl-C / SIGTERM / an exception at every point of
the commit path, `wm collect` stopped by signals, and `wm data repair` for datasets
damaged before this was fixed."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import data
from data import columns as C
from data import interrupts, open_dataset, validate_dataset
from data.writer import EpisodeWriter
from tests.test_data_store import REPO, fake_episode

LENGTH = 4


def snapshot(path: Path) -> dict:
    """Every committed episode's arrays (as bytes) and its episodes row, by id."""
    ds = open_dataset(path)
    return {e[C.EPISODE_ID]: (e, {k: v.tobytes() for k, v in ds.load_episode(e[C.EPISODE_ID]).items()}) for e in ds.episodes()}


@pytest.fixture(autouse=True)
def python_sigint_handler():
    """These tests send SIGINT to this process and expect Python's KeyboardInterrupt: install
    Python's own handler for them, whatever was inherited (a shell starts background jobs
    with SIGINT ignored, and then ``raise_signal(SIGINT)`` would do nothing)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


class Hook:
    """A `commit_hook` that interrupts at its `at`-th call: a real SIGINT sent to this
    process (``"signal"``) or a KeyboardInterrupt raised right there (``"raise"``, as an
    exception from inside Lance would be)."""

    def __init__(self, at: int, action: str):
        self.at, self.action, self.calls, self.points, self.armed = at, action, 0, [], True

    def __call__(self, where: str) -> None:
        self.points.append(where)
        self.calls += 1
        if self.armed and self.calls == self.at:
            if self.action == "signal":
                signal.raise_signal(signal.SIGINT)
            else:
                raise KeyboardInterrupt(where)


def write_with_hook(path: Path, episodes: int, commit_every: int, hook: Hook, first_id: int = 0) -> tuple[int, bool, bool]:
    """Write `episodes` fake episodes (seeded by id) under `hook`, as ``with EpisodeWriter``
    would; returns (save_episode calls made, whether interrupted, whether a batch was left
    half-committed when the interrupt surfaced)."""
    saves, interrupted, half = 0, False, False
    interrupts.commit_hook = hook
    w = None
    try:
        w = EpisodeWriter(path, env_id="fake/Env-v0", commit_every=commit_every)
        for i in range(episodes):
            pixels, states, actions, rewards = fake_episode(np.random.default_rng(first_id + i), LENGTH)
            for t in range(LENGTH):
                last = t == LENGTH - 1
                w.add_step(pixels[t], states[t], None if last else actions[t], rewards[t], terminated=last)
            saves += 1
            w.save_episode(seed=first_id + i, factors={"a": float(i)}, policy="random", split="train")
    except KeyboardInterrupt:
        interrupted = True
        half = bool(w is not None and w._retry)
    finally:
        if hook.action == "raise":
            hook.armed = False  # an exception inside close's own commit is an error, not this test's subject
        try:
            if w is not None:
                w._buf = []
                w.close(compact=not interrupted)
        except KeyboardInterrupt:
            interrupted = True
        interrupts.commit_hook = None
    return saves, interrupted, half


def expected_episodes(first: int, count: int) -> dict:
    out = {}
    for i in range(first, first + count):
        pixels, states, actions, rewards = fake_episode(np.random.default_rng(i), LENGTH)
        out[i] = pixels
    return out


@pytest.mark.parametrize("action", ["signal", "raise"])
@pytest.mark.parametrize("append", [False, True], ids=["new", "append"])
def test_an_interrupt_at_every_point_of_the_commit_path_keeps_every_saved_episode_once(
    tmp_path: Path, action: str, append: bool
) -> None:
    base = tmp_path / "base"
    if append:
        write_with_hook(base, 2, 1, Hook(0, action))
    for commit_every in (1, 2):
        probe = Hook(0, action)
        write_with_hook(tmp_path / f"probe{commit_every}", 3, commit_every, probe)
        points = probe.calls
        assert {"flush:start", "flush:committed", "flush:done"} <= set(probe.points)
        assert ("create:written" in probe.points) and ("append:steps" in probe.points)
        for at in range(1, points + 1):
            path = tmp_path / f"ds{commit_every}_{at}"
            if append:
                shutil.copytree(base, path)
            first = 2 if append else 0
            hook = Hook(at, action)
            saves, interrupted, half = write_with_hook(path, 3, commit_every, hook, first_id=first)
            where = f"{action} at {hook.points[at - 1] if at <= len(hook.points) else '?'} (call {at}, commit_every={commit_every})"
            assert interrupted or action == "raise", where  # "raise" is disarmed inside close
            if action == "signal":
                assert not half, f"{where}: the interrupt surfaced with a batch half-committed"
            assert validate_dataset(path) == [], where
            ds = open_dataset(path)
            ids = [e[C.EPISODE_ID] for e in ds.episodes()]
            # every episode whose save_episode was called is on disk, exactly once
            assert ids == list(range(first + saves)), where
            want = expected_episodes(0, first + saves)
            for eid in ids:
                np.testing.assert_array_equal(ds.load_episode(eid)["pixels"], want[eid], err_msg=where)
            shutil.rmtree(path)


def _wait_for_episodes(path: Path, at_least: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    """Wait until the dataset at `path` holds `at_least` committed episodes."""
    import lance

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        assert proc.poll() is None, proc.communicate()
        try:
            if lance.dataset(str(path / C.EPISODES_TABLE)).count_rows() >= at_least:
                return
        except Exception:
            pass
        time.sleep(0.02)
    raise AssertionError(f"no {at_least} episodes in {path} after {timeout}s")


def test_a_second_signal_after_the_cleanup_does_not_kill_a_stopping_command() -> None:
    """`StopOnSignal`: the first SIGTERM stops the block; one delivered after the block (a process signalled twice,
    the second late) is ignored, so the command still exits with its own status (143), not killed (-15). Without a
    signal the block leaves the handlers as it found them."""
    script = (
        "import signal, sys\n"
        "from data.interrupts import StopOnSignal, Terminated\n"
        "before = signal.getsignal(signal.SIGTERM)\n"
        "with StopOnSignal():\n"
        "    pass\n"
        "assert signal.getsignal(signal.SIGTERM) is before, signal.getsignal(signal.SIGTERM)\n"
        "try:\n"
        "    with StopOnSignal() as stop:\n"
        "        signal.raise_signal(signal.SIGTERM)\n"
        "except Terminated:\n"
        "    pass\n"
        "signal.raise_signal(signal.SIGTERM)\n"
        "signal.raise_signal(signal.SIGINT)\n"
        "sys.exit(143 if stop.fired == 'SIGTERM' else 1)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 143, (proc.returncode, proc.stderr)


CASES = [  # (append, workers, signal, delay after the first commits, signals sent)
    (False, 1, signal.SIGINT, 0.0, 1),
    (True, 2, signal.SIGINT, 0.13, 2),  # twice, as `timeout -s INT` does (child and group)
    (False, 2, signal.SIGTERM, 0.05, 1),
    (True, 1, signal.SIGTERM, 0.21, 2),
]


@pytest.mark.parametrize("append, workers, sig, delay, times", CASES,
                         ids=[f"{'append' if a else 'new'}-w{w}-{s.name}" for a, w, s, _, _ in CASES])
def test_wm_collect_stops_cleanly_on_sigint_and_sigterm(tmp_path: Path, append: bool, workers: int, sig: int,
                                                        delay: float, times: int) -> None:
    path = tmp_path / "ds.lance"
    before: dict = {}
    if append:
        data.collect("wm/TwoRoom-v0", 3, path, resolution=16, max_steps=5)
        before = snapshot(path)
    cmd = [sys.executable, "-m", "worldmodel", "collect", "--env", "wm/TwoRoom-v0", "--episodes", "100000",
           "--out", str(path), "--resolution", "16", "--workers", str(workers)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group, signalled like a terminal's
    try:
        _wait_for_episodes(path, len(before) + 2, proc)
        time.sleep(delay)
        for _ in range(times):
            os.killpg(proc.pid, sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == (130 if sig == signal.SIGINT else 143), err
    assert "Traceback" not in err and out == "", err
    lines = [ln for ln in err.splitlines() if not ln.startswith("wm collect: appending")]
    assert len(lines) == 1 and lines[0].startswith(f"wm collect: interrupted by {signal.Signals(sig).name}; "), err
    saved = int(lines[0].split("; ")[1].split()[0])
    assert validate_dataset(path) == []
    after = snapshot(path)
    assert sorted(after) == list(range(saved)) and saved > len(before)
    assert all(after[eid] == before[eid] for eid in before)  # earlier episodes untouched
    if append:  # default --seed continues after the highest seed on disk
        assert "seeds 3.." in err
        assert [after[eid][0][C.SEED] for eid in sorted(after)] == list(range(saved))


# -- repair -----------------------------------------------------------------------------


def damage_like_issue_9(path: Path) -> None:
    """What an interrupted writer left before the fix: the last episode's step rows
    committed twice (validate: '... 2N step rows, its length says N'), plus stray partial
    rows of an episode whose episodes row never landed."""
    import lance
    import pyarrow as pa

    steps = lance.dataset(str(path / C.STEPS_TABLE))
    last = max(e[C.EPISODE_ID] for e in open_dataset(path).episodes())
    rows = steps.to_table(filter=f"{C.EPISODE_ID} = {last}")
    lance.write_dataset(rows, str(path / C.STEPS_TABLE), mode="append")
    partial = rows.slice(0, 2).set_column(0, C.EPISODE_ID, pa.array([last + 1] * 2, pa.int64()))
    lance.write_dataset(partial, str(path / C.STEPS_TABLE), mode="append")


def test_repair_mends_duplicated_and_partial_rows_keeping_every_whole_episode(tmp_path: Path, capsys) -> None:
    import lance

    from worldmodel.cli import main

    path = tmp_path / "ds"
    data.collect("wm/TwoRoom-v0", 5, path, resolution=16, max_steps=6)
    before = snapshot(path)
    damage_like_issue_9(path)
    problems = validate_dataset(path)
    assert any("episode 4: 14 step rows, its length says 7" in p for p in problems), problems
    assert main(["data", "validate", str(path)]) == 1
    assert f"`wm data repair {path}`" in capsys.readouterr().err  # validate points to the cure
    assert main(["data", "repair", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"REPAIRED: {path}: 5 whole episodes kept") and "7 duplicated step rows (episodes 4)" in err
    assert validate_dataset(path) == [] and snapshot(path) == before
    versions = [lance.dataset(str(path / t)).version for t in (C.STEPS_TABLE, C.EPISODES_TABLE)]
    result = data.repair_dataset(path)  # a sound dataset: nothing to do, nothing written
    assert not result["changed"] and result["episodes"] == 5
    assert [lance.dataset(str(path / t)).version for t in (C.STEPS_TABLE, C.EPISODES_TABLE)] == versions

    # an episode with rows missing is not whole: dropped and named; duplicated episodes rows merged
    steps = lance.dataset(str(path / C.STEPS_TABLE))
    steps.delete(f"{C.EPISODE_ID} = 1 AND {C.STEP} = 3")
    eps = lance.dataset(str(path / C.EPISODES_TABLE))
    lance.write_dataset(eps.to_table(filter=f"{C.EPISODE_ID} = 2"), str(path / C.EPISODES_TABLE), mode="append")
    assert validate_dataset(path) != []
    result = data.repair_dataset(path)
    assert result["changed"] and result["episodes_dropped"] == [1] and result["duplicate_episode_rows"] == 1
    assert any("episode 1: 6 of its 7 step rows exist" in n for n in result["notes"])
    assert validate_dataset(path) == []
    assert snapshot(path) == {k: v for k, v in before.items() if k != 1}


@pytest.mark.parametrize("point", ["repair:episodes", "repair:steps"])
def test_an_interrupted_repair_is_finished_by_the_next_one(tmp_path: Path, point: str) -> None:
    path = tmp_path / "ds"
    data.collect("wm/TwoRoom-v0", 4, path, resolution=16, max_steps=5)
    before = snapshot(path)
    damage_like_issue_9(path)

    def hook(where: str) -> None:
        if where == point:
            raise KeyboardInterrupt(where)

    interrupts.commit_hook = hook
    try:
        with pytest.raises(KeyboardInterrupt):
            data.repair_dataset(path)
    finally:
        interrupts.commit_hook = None
    open_dataset(path).episodes()  # readable in between
    data.repair_dataset(path)
    assert validate_dataset(path) == [] and snapshot(path) == before
