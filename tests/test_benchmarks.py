"""Benchmark statistics and the standard planning protocol."""

import numpy as np
import pytest

from benchmarks.protocol import PlanningProtocol
from benchmarks.stats import wilson_interval


def test_wilson_interval_contains_rate_and_narrows_with_n() -> None:
    lo, hi = wilson_interval(35, 50)
    assert lo < 0.7 < hi
    lo2, hi2 = wilson_interval(350, 500)
    assert hi2 - lo2 < hi - lo
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    # Matches the textbook value for 7/10: about [0.397, 0.892].
    lo, hi = wilson_interval(7, 10)
    assert abs(lo - 0.3968) < 1e-3 and abs(hi - 0.8922) < 1e-3


def test_wilson_interval_rejects_bad_counts() -> None:
    with pytest.raises(ValueError, match="successes=11"):
        wilson_interval(11, 10)


def test_protocol_defaults_and_validation() -> None:
    p = PlanningProtocol()
    assert (p.offset, p.budget, p.episodes) == (25, 50, 50)
    with pytest.raises(ValueError, match="budget=0"):
        PlanningProtocol(budget=0)


def test_sample_pairs_uses_goal_offset_and_rejects_solved_starts(tmp_path) -> None:
    import envs
    from benchmarks.protocol import sample_pairs
    from data import collect, open_dataset

    collect("wm/TwoRoom-v0", 6, tmp_path / "d.lance", policy="expert", split="train", seed=3)
    ds = open_dataset(tmp_path / "d.lance")
    env = envs.make("wm/TwoRoom-v0")
    proto = PlanningProtocol(offset=5, episodes=12, seed=1)
    pairs = sample_pairs(ds, proto, env)
    assert len(pairs) == 12
    for pair in pairs:
        states = ds.load_episode(pair.episode_id)["state"]
        np.testing.assert_array_equal(pair.start_state, states[pair.start_step])
        np.testing.assert_array_equal(pair.goal_state, states[pair.start_step + 5])
        _, info = env.reset(options={"factors": pair.factors, "state": pair.start_state, "goal_state": pair.goal_state})
        assert not info["success"]
    # Same seed, same pairs.
    again = sample_pairs(ds, proto, env)
    assert [(p.episode_id, p.start_step) for p in again] == [(p.episode_id, p.start_step) for p in pairs]
