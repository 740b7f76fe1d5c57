"""The long protocol (issue 11: LeWorldModel's TwoRoom offset 100 / budget 150): the tour
expert, long held-out episodes and their pairs, the recipe field and its digests, and the
``long`` stages of ``wm bench planning`` (run, reused, added to a finished run)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

import data
import envs
from benchmarks.protocol import PlanningProtocol, pair_candidates, sample_pairs
from benchmarks.recipes import RECIPES, LongProtocol, Recipe, get_recipe
from tests.cli_helpers import tiny_recipe, wm

TWO_ROOM = "wm/TwoRoom-v0"

#: the stage digests of every registered recipe (and its factor-randomised variant) before the long
#: protocol existed: finished data, checkpoints and evaluations must keep being reused
PUBLISHED_STAGE_HASHES = {
    # env, split: (data, data+train, data+eval, data+train+eval)
    # TwoRoom trains with bf16 autocast since 2026-11-30 (train.amp): its data and oracle stages are
    # unchanged, its train and eval stages were ("81152ab247b2", "99eee73e8495"), randomised
    # ("18b86c1dc26b", "4cd2c937ee07") before. Its planner's objective is min_step_l2 since 2026-12-01
    # (data and train stages unchanged; the eval stages were ("773836f66259", "eba94a936558"), randomised
    # ("ab9799ab4b82", "a6beaa6d3ada"))
    (TWO_ROOM, None): ("eb8ff99cff1c", "f6fb042d1f36", "f369aef9d94c", "da14d30da07d"),
    # Its randomised variant trains differently since 2026-12-02 (`RANDOMISED_TRAIN`: episode-centred SIGReg,
    # episode-color, 6,000 steps; data and eval stages unchanged, its train and train+eval stages were
    # ("57b555f0e212", "23e14a9a057e"))
    (TWO_ROOM, "train"): ("e02fe4d4aef4", "a7a9c6fdcb19", "4b3bede3d43b", "5d7be5a9c050"),
    # PushT's model has the inverse-dynamics term since 2026-12-01 (data stage and oracle unchanged; the train
    # and eval stages were ("d94b255a30fa", "5026a393cb8a"), randomised ("e2cca2dfdc14", "9fa25a00a8a0"))
    # then twice the data and steps, as Cube (every stage moves; they were ("5ce08c33843c", "dfb7aff4cdfa",
    # "965c27f47562", "46e7bde92f49"), randomised ("6e2af20c69cc", "f1512c000129", "110455c86014", "6b01cab6c02f"))
    # then the keypoint encoder with the reconstruction term, trained in bf16, since 2026-12-03 (data and eval stages
    # unchanged; the train and train+eval stages were ("907d152553b4", "2a73a3a99055"), randomised ("791546964360",
    # "5d9bb7e9d734"))
    ("wm/PushT-v0", None): ("26bb8741a5ba", "191d5f974e2c", "95dee4dd9d56", "1beb8226d928"),
    ("wm/PushT-v0", "train"): ("27a235daff2a", "bce7079e0ae7", "f2623d6591c5", "e65a6a670874"),
    # PointMaze's objective is min_step_l2 since 2026-12-01 (data and train stages unchanged; the eval stages
    # were ("c564ae818f42", "6fc36276ea35"), randomised ("acf9957e4b6d", "f592badfed35")), then with 600 iCEM
    # samples (eval stages ("a7764025f38d", "bbbbeb4762a9"), randomised ("b27f1f7e199d", "5c28afbabcc8") before)
    ("wm/PointMaze-v0", None): ("2643ddb83283", "a7f1f6eea551", "145967752fe3", "90e0a2dda1a7"),
    # Its randomised variant trains as TwoRoom's since 2026-12-02 (`RANDOMISED_TRAIN`; data and eval stages
    # unchanged, its train and train+eval stages were ("ba479173ecb4", "3fb62d536503"))
    ("wm/PointMaze-v0", "train"): ("ce11bbe388c3", "971fe95c4ee9", "c3853b1df635", "110c08f8cb41"),
    # Reacher's episodes run to the time limit since 2026-11-30 (none stopping at success held a pair;
    # no Reacher result had been produced): ("64f8a70bdd6a", ...) and full hash 2b4f2fe00deb before.
    # Its planner's objective is all_steps_l2 since 2026-11-30 (data and train stages unchanged; the
    # eval stages were ("d184f04d9370", "db0f53ad1697"), randomised ("021adad5cbe5", "a385f02fe6c2"))
    ("wm/Reacher-v0", None): ("c1be63375cc1", "b658739fd457", "8e4973605d5b", "fbf77bbbda9a"),
    ("wm/Reacher-v0", "train"): ("cb7cba97662a", "fc89eb96a3e6", "0f95c48f6819", "d1870ddec337"),
    # Cube's model has the inverse-dynamics term since 2026-12-01 (data stage and oracle unchanged; the train
    # and eval stages were ("8129f58f8fb1", "0bc24e94a9cc"), randomised ("34088ac3a33d", "2d33ee980dd1")), then
    # twice the data and steps (every stage moves; they were ("aa1ad3f2f962", "7eda7b9856eb", "5b9e7c517b14",
    # "3a8c79e1bf3c"), randomised ("3d94b0be34b7", "eeaf6e0307d6", "ece7dc132799", "e4230e74533c"))
    ("wm/Cube-v0", None): ("bfd4cb172bf9", "bf5bedd8528d", "d674cb5b7d19", "89dc2f98e7d4"),
    ("wm/Cube-v0", "train"): ("82310bfcdcf7", "f300286632a7", "6cc7f79e23c4", "521855041285"),
}
#: full hashes of the recipes without a long protocol (unchanged) and of TwoRoom's before it had one
PUBLISHED_HASHES = {"wm/PushT-v0": "8e30b871e882", "wm/PointMaze-v0": "4f1d3cfb73a3", "wm/Reacher-v0": "5db566849d26",
                    "wm/Cube-v0": "1c5d756e1c98", TWO_ROOM: "0edf7c63af75"}


# ---- the tour expert ------------------------------------------------------------------------

def test_tour_expert_retargets_and_runs_past_its_first_target() -> None:
    env = envs.make(TWO_ROOM, resolution=16, max_episode_steps=200)
    env.unwrapped.terminate_on_success = False
    tour = envs.make_policy("expert-tour", env)
    assert not tour.pursues_env_goal and envs.make_policy("expert", env).__class__.__name__ == "TwoRoomExpert"
    obs, info = env.reset(seed=3)
    tour.reset(3)
    first = None
    targets, positions = [], []
    for _ in range(200):
        obs, _, terminated, truncated, info = env.step(tour(obs, info))
        first = tour.destination().copy() if first is None else first
        targets.append(tour.destination().copy())
        positions.append(info["state"])
        assert not terminated
    assert truncated  # the time limit given (200), not the registered 100
    distinct = {tuple(t) for t in targets}
    assert tour.targets_reached >= 4 and len(distinct) == tour.targets_reached + 1
    assert not np.allclose(first, env.unwrapped.goal_state)  # its own targets, not the episode's goal
    # a new target is drawn exactly when the agent is within REACH of the current one (at the call of step k,
    # the agent is where step k - 1 left it)
    for k in range(1, len(targets)):
        reached = np.hypot(*(positions[k - 1] - targets[k - 1])) < tour.REACH
        assert reached == (not np.array_equal(targets[k], targets[k - 1])), k
    # the same seed gives the same tour
    again = envs.make_policy("expert-tour", env)
    obs, info = env.reset(seed=3)
    again.reset(3)
    replay = []
    for _ in range(200):
        obs, *_, info = env.step(again(obs, info))
        replay.append(info["state"])
    np.testing.assert_array_equal(np.stack(replay), np.stack(positions))


def test_tour_policy_registry_errors() -> None:
    env = envs.make(TWO_ROOM, resolution=16)
    with pytest.raises(ValueError, match="did you mean 'expert-tour'"):
        envs.make_policy("expert-tuor", env)
    with pytest.raises(ValueError, match="no tour expert .* PushTEnv"):
        envs.make_policy("expert-tour", envs.make("wm/PushT-v0", resolution=16))
    with pytest.raises(ValueError, match="does not pursue the episode's goal"):
        data.collect(TWO_ROOM, 1, "/nonexistent/x.lance", policy="expert-tour", stop_on_success=True, resolution=16)


def test_tour_episodes_past_the_time_limit_give_offset_100_pairs(tmp_path: Path) -> None:
    path = tmp_path / "long.lance"
    data.collect(TWO_ROOM, 3, path, policy="expert-tour", seed=1_700_000, max_steps=130, resolution=16)
    ds = data.open_dataset(path)
    eps = ds.episodes()
    assert [e["length"] for e in eps] == [131, 131, 131] and {e["policy"] for e in eps} == {"expert-tour"}
    assert set(ds.success_steps().values()) == {None}  # no first success recorded: every start counts
    protocol = PlanningProtocol(offset=100, budget=150, episodes=40, seed=1)
    assert [n for _, n in pair_candidates(ds, protocol)] == [31, 31, 31]  # t = 0 .. L - 101
    env = envs.make(TWO_ROOM, resolution=16)
    pairs = sample_pairs(ds, protocol, env)
    assert len(pairs) == 40 and len({(p.episode_id, p.start_step) for p in pairs}) == 40
    for p in pairs:
        states = ds.load_episode(p.episode_id, columns=("state",))["state"]
        assert 0 <= p.start_step <= len(states) - 101
        np.testing.assert_array_equal(p.start_state, states[p.start_step])
        np.testing.assert_array_equal(p.goal_state, env.unwrapped.goal_from_state(states[p.start_step + 100]))
        assert np.hypot(*(p.start_state - p.goal_state)) >= 0.06  # starts at the goal already: rejected
    # reproducible from the seeds
    data.collect(TWO_ROOM, 3, tmp_path / "again.lance", policy="expert-tour", seed=1_700_000, max_steps=130,
                 resolution=16)
    again = data.open_dataset(tmp_path / "again.lance")
    for e in range(3):
        np.testing.assert_array_equal(again.load_episode(e, columns=("state",))["state"],
                                      ds.load_episode(e, columns=("state",))["state"])
    # expert episodes of the same length keep their recorded first success: their starts stop there
    data.collect(TWO_ROOM, 2, tmp_path / "expert.lance", seed=1_700_000, max_steps=130, resolution=16)
    expert = data.open_dataset(tmp_path / "expert.lance")
    success = expert.success_steps()
    assert all(s is not None and 0 < s < 31 for s in success.values())
    assert [n for _, n in pair_candidates(expert, protocol)] == [success[0], success[1]]


def test_wm_collect_takes_the_tour_policy_and_max_steps(tmp_path: Path, capsys) -> None:
    code, out, err = wm(capsys, "collect", "--env", TWO_ROOM, "--episodes", 1, "--out", tmp_path / "t.lance",
                        "--policy", "expert-tour", "--max-steps", 120, "--resolution", 16)
    assert code == 0, err
    assert json.loads(out)["steps"] == 121
    code, _, err = wm(capsys, "collect", "--env", TWO_ROOM, "--episodes", 1, "--out", tmp_path / "u.lance",
                      "--policy", "expert-tuor", "--resolution", 16)
    assert code == 2 and "did you mean 'expert-tour'" in err


# ---- the recipe field -----------------------------------------------------------------------

def test_stage_hashes_of_the_published_recipes_are_unchanged() -> None:
    for (env_id, split), hashes in PUBLISHED_STAGE_HASHES.items():
        r = get_recipe(env_id, split)
        got = (r.section_hash("data"), r.section_hash("data", "train"), r.section_hash("data", "eval"),
               r.section_hash("data", "train", "eval"))
        assert got == hashes, (env_id, split)
    for env_id, digest in PUBLISHED_HASHES.items():
        r = get_recipe(env_id)
        assert (r.long() is not None) == (env_id == TWO_ROOM)
        if env_id == TWO_ROOM:  # its eval section gains the long protocol: its hash changes, nothing else does
            assert r.hash() != digest
            r.eval.long_protocol, r.train.amp = None, None  # and its training gains bf16 autocast
            r.eval.planner = {"planner": "icem"}  # and its objective min_step_l2
        if env_id in ("wm/Reacher-v0", "wm/PointMaze-v0"):  # its planner (objective; PointMaze's samples) changed, nothing else
            assert r.hash() != digest
            r.eval.planner = {"planner": "icem"}
        if env_id in ("wm/Cube-v0", "wm/PushT-v0"):  # its model gained the inverse-dynamics term, then twice
            assert r.hash() != digest  # the data and steps with a note saying so; nothing else
            r.train.model = {"pred_steps": 3}
            assert r.hash() != digest
            r.data.expert_episodes, r.data.random_episodes, r.train.steps = 300, 200, 3000
            r.notes = get_recipe("wm/Reacher-v0").notes  # the common note they had
        if env_id == "wm/PushT-v0":  # then the keypoint encoder, the reconstruction term and bf16 (after the above)
            r.train.amp = None
        assert r.hash() == digest, env_id
    # the long stages' digests follow the long protocol; the standard ones never do
    r = get_recipe(TWO_ROOM)
    before = (r.section_hash("data", "eval"), r.section_hash("data", "train", "eval"))
    long_before = (r.long_data_hash(), r.section_hash("data", "train", "eval", long=True))
    r.eval.long_protocol = {**r.eval.long_protocol, "budget": 200}
    assert (r.section_hash("data", "eval"), r.section_hash("data", "train", "eval")) == before
    assert r.long_data_hash() == long_before[0]  # the same episodes
    assert r.section_hash("data", "train", "eval", long=True) != long_before[1]
    r.eval.long_protocol = {**r.eval.long_protocol, "max_steps": 250}
    assert r.long_data_hash() != long_before[0]


def test_twoRoom_long_protocol_is_leworldmodels_and_bad_ones_are_refused() -> None:
    lp = get_recipe(TWO_ROOM).long()
    assert (lp.offset, lp.budget, lp.episodes, lp.policy, lp.max_steps) == (100, 150, 50, "expert-tour", 300)
    d = get_recipe(TWO_ROOM).to_dict()
    assert Recipe.from_dict(json.loads(json.dumps(d))) == get_recipe(TWO_ROOM)

    def bad(**long: object) -> dict:
        return {**d, "eval": {**d["eval"], "long_protocol": {**d["eval"]["long_protocol"], **long}}}

    for values, message in ((bad(ofset=3), "did you mean 'offset'"),
                            (bad(budget=0), "budget=0"),
                            (bad(policy="expert-tuor"), "did you mean 'expert-tour'"),
                            (bad(max_steps=99), "max_steps=99 leaves no start"),
                            (bad(heldout_episodes=1, max_steps=120, episodes=30), "more than the 21 starts"),
                            (bad(heldout_seed=1_500_010), "overlap the held-out episodes"),
                            (bad(heldout_seed=0), "overlap the training episodes")):
        with pytest.raises(ValueError, match=message):
            Recipe.from_dict(values)
    pusht = get_recipe("wm/PushT-v0").to_dict()
    pusht["eval"]["long_protocol"] = dataclasses.asdict(LongProtocol())
    with pytest.raises(ValueError, match="wm/PushT-v0 has no tour expert"):
        Recipe.from_dict(pusht)
    assert set(RECIPES) >= {TWO_ROOM}


# ---- the long stages of wm bench planning ---------------------------------------------------

def tiny(long: bool = True) -> Recipe:
    return tiny_recipe(TWO_ROOM, long={"heldout_episodes": 2, "max_steps": 110, "episodes": 3, "budget": 105}
                       if long else None)


def test_long_stage_is_added_to_a_finished_run_then_reused(tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench"
    # a finished run of the recipe before it had a long protocol
    before = tiny(long=False).save(tmp_path / "before.json")
    code, stdout, err = wm(capsys, "bench", "planning", "--recipe", before, "--out", out, "--device", "cpu", "--json")
    assert code == 0, err
    (standard,) = json.loads(stdout)
    root = out / "TwoRoom-v0"
    assert not (root / "data" / "heldout_long.lance").exists() and not (root / "result_long.json").exists()
    summary = (root / "seed0" / "eval" / "summary.json").read_text()

    # the recipe with its long protocol: every standard stage reused, only the long stages run
    recipe = tiny()
    path = recipe.save(tmp_path / "recipe.json")
    code, stdout, err = wm(capsys, "bench", "planning", "--recipe", path, "--out", out, "--device", "cpu", "--json")
    assert code == 0, err
    for stage in ("data reused", "oracle reused", "checkpoint reused", "evaluation reused"):
        assert f"TwoRoom-v0: {stage}" in err or f"seed 0: {stage}" in err, stage
    assert (root / "seed0" / "eval" / "summary.json").read_text() == summary
    lines = json.loads(stdout)
    assert [x["protocol"] for x in lines] == ["standard", "long"]
    assert lines[0]["successes"] == standard["successes"] and lines[0]["recipe_hash"] == recipe.hash()
    long = lines[1]
    assert long["recipe_hash"] == recipe.hash() and long["episodes"] == 3
    assert long["protocol_settings"] == {"offset": 100, "budget": 105, "episodes": 3, "seed": 0}
    assert long["long_data"]["policy"] == "expert-tour" and long["oracle_success_rate"] is not None
    assert json.loads((root / "result_long.json").read_text()) == long
    assert json.loads((root / "result.json").read_text())["protocol"] == "standard"
    assert [json.loads(x)["protocol"] for x in (out / "results.jsonl").read_text().splitlines()] == ["standard", "long"]
    ev = json.loads((root / "seed0" / "eval_long" / "summary.json").read_text())
    assert ev["dataset"].endswith("heldout_long.lance") and ev["train_overlap_pairs"] == 0  # leak-checked
    assert ev["protocol"]["offset"] == 100 and ev["protocol_name"] == "long"
    held = data.open_dataset(root / "data" / "heldout_long.lance")
    assert [e["seed"] for e in held.episodes()] == [1_700_000, 1_700_001]
    assert [e["length"] for e in held.episodes()] == [111, 111]
    episodes = [json.loads(x) for x in (root / "seed0" / "eval_long" / "episodes.jsonl").read_text().splitlines()]
    assert {e["policy"] for e in episodes} == {"icem", "random"}
    # the budget runs past TwoRoom's 100-step time limit
    assert max(e["steps"] for e in episodes) > 100 and all(e["steps"] <= 105 for e in episodes)
    oracle = [json.loads(x) for x in (root / "oracle_long" / "episodes.jsonl").read_text().splitlines()]
    assert sorted((e["episode_id"], e["start_step"]) for e in oracle if e["policy"] == "oracle") == \
        sorted((e["episode_id"], e["start_step"]) for e in episodes if e["policy"] == "icem")  # the same pairs

    # re-run: everything reused, the same lines
    code, stdout, err = wm(capsys, "bench", "planning", "--recipe", path, "--out", out, "--device", "cpu", "--json")
    assert code == 0, err
    for stage in ("long-protocol data reused", "long-protocol oracle reused", "long-protocol evaluation reused"):
        assert stage in err, stage
    assert json.loads(stdout) == lines

    # another long protocol into the same folder: the finished long evaluation is not overwritten
    changed = tiny()
    changed.eval.long_protocol["budget"] = 104
    code, _, err = wm(capsys, "bench", "planning", "--recipe", changed.save(tmp_path / "c.json"), "--out", out,
                      "--device", "cpu")
    assert code == 2 and "holds a long-protocol oracle stage of another recipe" in err
    assert "evaluation reused" in err  # its standard stages were still reused
