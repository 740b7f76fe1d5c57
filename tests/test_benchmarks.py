"""Benchmark statistics and the standard planning protocol."""

import numpy as np
import pytest

from benchmarks.protocol import PlanningProtocol
from benchmarks.stats import ratio_interval, wilson_interval


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


def test_sample_pairs_are_distinct_and_refused_beyond_what_the_data_has(tmp_path) -> None:
    import envs
    from benchmarks.protocol import pair_candidates, sample_pairs
    from data import EpisodeWriter, collect, open_dataset

    collect("wm/TwoRoom-v0", 2, tmp_path / "d.lance", resolution=16, max_steps=8)  # 9 rows: starts 0..3 at offset 5
    ds = open_dataset(tmp_path / "d.lance")
    env = envs.make("wm/TwoRoom-v0", resolution=16)
    proto = PlanningProtocol(offset=5, episodes=8, seed=0)
    assert sum(n for _, n in pair_candidates(ds, proto)) == 8
    pairs = sample_pairs(ds, proto, env)
    assert sorted((p.episode_id, p.start_step) for p in pairs) == [(e, t) for e in (0, 1) for t in range(4)]
    with pytest.raises(ValueError, match=r"episodes=9 is more than the 8 distinct start/goal pairs .*--episodes 8 or fewer"):
        sample_pairs(ds, PlanningProtocol(offset=5, episodes=9), env)

    # an agent that never moves: every start is at its goal, so every pair is rejected
    still = tmp_path / "still.lance"
    with EpisodeWriter(still, codec="raw", env_id="wm/TwoRoom-v0", action_dim=2) as w:
        for t in range(9):
            w.add_step(np.zeros((16, 16, 3), np.uint8), np.array([0.25, 0.5]), None if t == 8 else np.zeros(2, np.float32))
        w.save_episode(seed=0, factors=envs.factor_space("wm/TwoRoom-v0").defaults(), policy="none", success_step=0)
    with pytest.raises(ValueError, match=r"no episode .* longer than offset=5 steps before its first success"):
        sample_pairs(open_dataset(still), PlanningProtocol(offset=5, episodes=1), env)


def test_sample_pairs_rejects_starts_at_the_goal_until_none_are_left(tmp_path) -> None:
    import envs
    from benchmarks.protocol import sample_pairs
    from data import EpisodeWriter, open_dataset

    path = tmp_path / "still.lance"
    with EpisodeWriter(path, codec="raw", env_id="wm/TwoRoom-v0", action_dim=2) as w:
        for t in range(9):
            w.add_step(np.zeros((16, 16, 3), np.uint8), np.array([0.25, 0.5]), None if t == 8 else np.zeros(2, np.float32))
        w.save_episode(seed=0, factors=envs.factor_space("wm/TwoRoom-v0").defaults(), policy="none")  # success not recorded
    env = envs.make("wm/TwoRoom-v0", resolution=16)
    with pytest.raises(ValueError, match=r"could only draw 0 of 2 .*4 of its 4 distinct pairs start already within the success radius"):
        sample_pairs(open_dataset(path), PlanningProtocol(offset=5, episodes=2), env)
    with pytest.raises(ValueError, match=r"states of size 2 .*PushT-v0 has states of size 10: the data comes from another environment"):
        sample_pairs(open_dataset(path), PlanningProtocol(offset=5, episodes=2), envs.make("wm/PushT-v0", resolution=16))


def test_ratio_interval_of_two_proportions() -> None:
    """Katz's log interval of (81/150) / (111/150) = 0.73: exp(log 0.73 -/+ 1.96 * 0.0896) (hand-computed)."""
    lo, hi = ratio_interval(81, 150, 111, 150)
    assert lo == pytest.approx(0.6122, abs=1e-4) and hi == pytest.approx(0.8698, abs=1e-4)
    assert lo * hi == pytest.approx((81 / 111) ** 2)  # symmetric about the ratio on the log scale
    lo2, hi2 = ratio_interval(810, 1500, 1110, 1500)
    assert lo < lo2 < 81 / 111 < hi2 < hi  # narrows with n
    assert ratio_interval(50, 50, 50, 50) == (1.0, 1.0)
    lo0, hi0 = ratio_interval(0, 50, 10, 50)  # no success: 0.5 added to each cell, bound below 0
    assert lo0 == 0.0 and 0.05 < hi0 < 1.0
    assert ratio_interval(5, 10, 0, 10) is None  # undefined without a reference success
    with pytest.raises(ValueError, match="successes=11, n=10"):
        ratio_interval(11, 10, 5, 10)
    with pytest.raises(ValueError, match="successes=0, n=0"):
        ratio_interval(1, 10, 0, 0)
