"""``wm bench planning``: recipes (round trip, hash), the staged runner (reuse, refusal to
overwrite another recipe's stage) and its result lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.recipes import RANDOMISED_TRAIN, RECIPES, Recipe, TrainRecipe, get_recipe, load_recipe
from tests.cli_helpers import tiny_recipe, wm


def tiny(env_id: str = "wm/TwoRoom-v0") -> Recipe:
    return tiny_recipe(env_id)  # the standard stages (the long ones: tests/test_long_protocol.py)


def test_every_env_has_a_recipe_that_round_trips_and_whose_hash_follows_every_field(tmp_path: Path) -> None:
    import envs

    assert set(RECIPES) == set(envs.list_envs())
    for env_id in RECIPES:
        r = get_recipe(env_id)
        assert Recipe.from_dict(json.loads(json.dumps(r.to_dict()))) == r
        assert load_recipe(r.save(tmp_path / "r.json")) == r and load_recipe(tmp_path / "r.json").hash() == r.hash()
    r = get_recipe("wm/TwoRoom-v0")
    seen = {r.hash()}
    d = r.to_dict()
    for section in ("data", "train", "eval"):
        for key, value in d[section].items():
            changed = json.loads(json.dumps(d))
            new = {bool: lambda v: not v, int: lambda v: v + 1, float: lambda v: v * 2, str: lambda v: v + "x",
                   dict: lambda v: {**v, "extra": 1}, type(None): lambda v: "train" if key == "split" else 1}
            changed[section][key] = new[type(value)](value)
            digest = Recipe(**{**{k: v for k, v in changed.items() if k not in ("data", "train", "eval")},
                               **{s: type(getattr(r, s))(**changed[s]) for s in ("data", "train", "eval")}}).hash()
            assert digest not in seen, (section, key)
            seen.add(digest)
    for key in ("name", "env_id", "version", "notes"):
        changed = dict(d, **{key: d[key] + 1 if isinstance(d[key], int) else "wm/PushT-v0" if key == "env_id" else d[key] + "x"})
        if key == "env_id":  # PushT has no tour expert for TwoRoom's long protocol
            changed["eval"] = {**d["eval"], "long_protocol": None}
        assert Recipe.from_dict(changed).hash() not in seen
    assert get_recipe("wm/TwoRoom-v0", "train").data.split == "train"
    assert get_recipe("wm/TwoRoom-v0", "train").hash() != r.hash()


def test_a_split_variant_says_in_its_notes_what_its_data_is() -> None:
    # every registered recipe's notes describe default-factor data; the variant must not repeat that unqualified
    for env_id in RECIPES:
        base, randomised = get_recipe(env_id), get_recipe(env_id, "train")
        assert randomised.notes.startswith(base.notes) and "'train' split's factor ranges" in randomised.notes
        # stage outputs are reused by section digests, which the notes do not enter: the wording moved no stage
        reworded = Recipe.from_dict({**randomised.to_dict(), "notes": base.notes})
        assert reworded.section_hash("data", "train", "eval") == randomised.section_hash("data", "train", "eval")
        assert reworded.hash() != randomised.hash()
        assert get_recipe(env_id, "ood_visual").notes.endswith("drawn over the 'ood_visual' split's factor ranges "
                                                               "(data.split), not at the default factors.")


def test_the_randomised_variant_trains_as_registered_and_the_recipe_is_untouched() -> None:
    for env_id in RECIPES:
        base, randomised = get_recipe(env_id), get_recipe(env_id, "train")
        changes = RANDOMISED_TRAIN.get(env_id, {})
        assert randomised.train.model == {**base.train.model, **changes.get("model", {})}
        for name in TrainRecipe.__dataclass_fields__:
            if name != "model":
                assert getattr(randomised.train, name) == changes.get(name, getattr(base.train, name)), (env_id, name)
        assert randomised.data.split == "train" and randomised.eval == base.eval
        # only the 'train' variant: a recipe over another split trains as the registered one
        assert get_recipe(env_id, "ood_visual").train == base.train
        if changes:
            assert randomised.section_hash("data", "train") != Recipe.from_dict(
                {**randomised.to_dict(), "train": base.to_dict()["train"]}).section_hash("data", "train")
            assert "RANDOMISED_TRAIN" in randomised.notes
    # TwoRoom's: the episode-centred SIGReg at weight 1.0, episode-color, 6,000 steps (RESULTS.md, issue 11 item 4)
    tworoom = get_recipe("wm/TwoRoom-v0", "train").train
    assert (tworoom.steps, tworoom.augment) == (6000, "episode-color")
    assert {k: tworoom.model[k] for k in ("sigreg_center", "sigreg_group", "sigreg_weight")} == {
        "sigreg_center": "episode", "sigreg_group": 4, "sigreg_weight": 1.0}
    assert get_recipe("wm/TwoRoom-v0").train.model == {"pred_steps": 3}  # the registered recipe is not mutated
    # PointMaze's: the same changes, with bf16 autocast as TwoRoom's recipe has (RESULTS.md, issue 11 item 4)
    pointmaze = get_recipe("wm/PointMaze-v0", "train").train
    assert (pointmaze.steps, pointmaze.augment, pointmaze.amp, pointmaze.model) == (
        tworoom.steps, tworoom.augment, True, tworoom.model)
    assert get_recipe("wm/PointMaze-v0").train.amp is None
    # chosen for the recipe's family: another family's variant trains as the recipe does, the own family's does not
    assert get_recipe("wm/TwoRoom-v0", "train", family="pixel").train.model == {"pred_steps": 3, "family": "pixel"}
    assert get_recipe("wm/TwoRoom-v0", "train", family="lewm").train == tworoom


def test_bad_recipes_are_refused_by_name(tmp_path: Path) -> None:
    d = get_recipe("wm/TwoRoom-v0").to_dict()
    with pytest.raises(ValueError, match="unknown keys \\['epsiodes'\\] in recipe section 'data'"):
        Recipe.from_dict({**d, "data": {**d["data"], "epsiodes": 3}})
    with pytest.raises(ValueError, match="did you mean 'wm/TwoRoom-v0'"):
        Recipe.from_dict({**d, "env_id": "wm/TwoRom-v0"})
    with pytest.raises(ValueError, match="train.amp='yes', expected null, true or false"):
        Recipe.from_dict({**d, "train": {**d["train"], "amp": "yes"}})
    with pytest.raises(ValueError, match="train.augment: unknown augmentation 'frame-colour'.*did you mean 'frame-color'"):
        Recipe.from_dict({**d, "train": {**d["train"], "augment": "frame-colour"}})
    with pytest.raises(ValueError, match="icme"):
        Recipe.from_dict({**d, "eval": {**d["eval"], "planner": {"planner": "icme"}}})
    with pytest.raises(ValueError, match="did you mean 'wm/PushT-v0'"):
        get_recipe("wm/PushT-v1")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_recipe(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="does not exist"):
        load_recipe(tmp_path / "none.json")


def test_bench_planning_runs_every_stage_then_reuses_them(tmp_path: Path, capsys) -> None:
    recipe = tiny()
    recipe.train.amp = True  # bf16 autocast on the CPU too: it reaches the training run
    recipe.train.augment = "frame-color"  # likewise
    path = recipe.save(tmp_path / "recipe.json")
    out = tmp_path / "bench"
    code, stdout, err = wm(capsys, "bench", "planning", "--recipe", path, "--out", out, "--seeds", 0, 1,
                           "--device", "cpu", "--json")
    assert code == 0, err
    (line,) = json.loads(stdout)
    assert [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()] == [line]
    for key in ("env_id", "recipe", "recipe_hash", "protocol", "success_rate", "success_ci95", "baseline_success_rate",
                "baseline_success_ci95", "oracle_success_rate", "oracle_success_ci95", "seconds_per_decision",
                "train_seconds", "episodes"):
        assert key in line, key
    assert line["recipe_hash"] == recipe.hash() and line["seeds"] == [0, 1] and line["episodes"] == 4
    root = out / "TwoRoom-v0"
    assert load_recipe(root / "recipe.json") == recipe
    for seed in (0, 1):
        ev = json.loads((root / f"seed{seed}" / "eval" / "summary.json").read_text())
        assert ev["recipe_hash"] == recipe.hash() and ev["dataset"].endswith("heldout.lance")
        assert line["per_seed"][seed]["successes"] == ev["successes"]
        used = json.loads((root / f"seed{seed}" / "ckpt" / "train_config.json").read_text())
        assert used["amp"] is True and used["augment"] == "frame-color"
    assert line["successes"] == sum(s["successes"] for s in line["per_seed"])
    oracle = json.loads((root / "oracle" / "summary.json").read_text())
    assert oracle["oracle_success_rate"] == line["oracle_success_rate"]
    # the oracle planned the 2 shared pairs once: its own count, not the two seeds' pooled 4 episodes
    assert (line["oracle_successes"], line["oracle_episodes"]) == (oracle["oracle_successes"], 2)
    assert {e["seed"] for e in __import__("data").open_dataset(root / "data" / "heldout.lance").episodes()} == {
        1_500_000, 1_500_001, 1_500_002}

    code, stdout, err = wm(capsys, "bench", "planning", "--recipe", path, "--out", out, "--seeds", 0, 1,
                           "--device", "cpu", "--json")
    assert code == 0, err
    assert "data reused" in err and "oracle reused" in err and err.count("checkpoint reused") == 2
    assert err.count("evaluation reused") == 2 and json.loads(stdout) == [line]

    cfg_file = root / "seed1" / "ckpt" / "config.json"  # a family default changed since seed 1 was trained
    saved = json.loads(cfg_file.read_text())
    cfg_file.write_text(json.dumps({**saved, "model": {**saved["model"], "dropout": 0.25}}))
    code, _, err = wm(capsys, "bench", "planning", "--recipe", path, "--out", out, "--seeds", 0, 1, "--device", "cpu")
    assert code == 2 and "dropout: checkpoint 0.25, recipe now 0.0" in err, err
    cfg_file.write_text(json.dumps(saved))

    changed = tiny()
    changed.train.steps = 4  # another recipe into the same folder: its stages are refused, nothing overwritten
    changed.save(tmp_path / "changed.json")
    code, _, err = wm(capsys, "bench", "planning", "--recipe", tmp_path / "changed.json", "--out", out, "--device", "cpu")
    assert code == 2 and "holds a train stage of another recipe" in err
    assert json.loads((root / "seed0" / "train_stage.json").read_text())["steps"] == 3


def test_bench_planning_refuses_bad_arguments(tmp_path: Path, capsys) -> None:
    for args, message in ((("--env", "wm/TwoRom-v0"), "did you mean 'wm/TwoRoom-v0'"),
                          ((), "needs --env ID"),
                          (("--recipe", tmp_path / "x.json", "--split", "train"), "not to --recipe")):
        code, _, err = wm(capsys, "bench", "planning", "--out", tmp_path / "o", *args)
        assert code == 2 and message in err, err


def test_family_variants_of_the_registered_recipes(tmp_path: Path, capsys) -> None:
    base = get_recipe("wm/TwoRoom-v0")
    pldm = get_recipe("wm/TwoRoom-v0", family="pldm")
    assert pldm.name == "tworoom-cpu-pldm" and pldm.train.model == {**base.train.model, "family": "pldm"}
    assert pldm.hash() != base.hash() and pldm.section_hash("data") == base.section_hash("data")
    assert type(pldm.model_config(image_size=64, action_dim=2)).__name__ == "PLDMConfig"
    assert get_recipe("wm/TwoRoom-v0", family="lewm") == base  # the recipe's own family: unchanged
    assert get_recipe("wm/TwoRoom-v0", "train", family="pixel").name == "tworoom-cpu-randomised-pixel"
    with pytest.raises(ValueError, match="did you mean 'pldm'"):
        get_recipe("wm/TwoRoom-v0", family="pldn")
    with pytest.raises(ValueError, match="pretrained frozen encoder.*encoder_weights.*--recipe FILE"):
        get_recipe("wm/TwoRoom-v0", family="dinowm")

    # wm bench recipe writes what --env/--family would run; a file round-trips with its hash
    code, stdout, err = wm(capsys, "bench", "recipe", "--env", "wm/TwoRoom-v0", "--family", "pldm")
    assert code == 0 and Recipe.from_dict(json.loads(stdout)) == pldm and pldm.hash() in err
    code, _, err = wm(capsys, "bench", "recipe", "--env", "wm/TwoRoom-v0", "--family", "pldm", "--out",
                      tmp_path / "pldm.json")
    assert code == 0 and load_recipe(tmp_path / "pldm.json").hash() == pldm.hash()
    blocker = tmp_path / "o"  # a file where --out's folder would go: a run that got past the checks fails fast
    blocker.write_text("")
    for args, message in ((("--env", "wm/TwoRoom-v0", "--family", "pldn"), "did you mean 'pldm'"),
                          (("--recipe", tmp_path / "pldm.json", "--family", "pldm"), "not to --recipe")):
        code, _, err = wm(capsys, "bench", "planning", "--out", blocker, *args)
        assert code == 2 and message in err, err

    # the family reaches training: every stage runs with it
    from benchmarks.bench_planning import run_planning_bench

    def shrink(recipe: Recipe) -> Recipe:
        small = tiny_recipe()
        small.name, small.train.model = recipe.name, {**small.train.model, "family": recipe.train.model["family"]}
        return small

    (line,) = run_planning_bench(["wm/TwoRoom-v0"], tmp_path / "bench", family="pixel", overrides=shrink)
    assert line["recipe"] == "tworoom-cpu-pixel"
    saved = json.loads((tmp_path / "bench" / "TwoRoom-v0" / "seed0" / "ckpt" / "config.json").read_text())
    assert saved["model"]["family"] == "pixel"


@pytest.mark.parametrize("env_id", sorted(RECIPES))
def test_every_recipe_held_out_data_gives_its_protocol_enough_pairs(env_id: str, tmp_path: Path) -> None:
    """The held-out episodes a recipe collects (its policy, seeds, episode ends; 16-px frames here)
    hold at least ``protocol.episodes`` distinct start/goal pairs at its offset: Reacher's expert
    reaches in ~15 steps, so with episodes that stop at success no pair 25 steps apart exists."""
    from benchmarks.protocol import PlanningProtocol, pair_candidates
    from data import collect, open_dataset

    r = get_recipe(env_id)
    d = r.data
    path = tmp_path / "heldout.lance"
    collect(env_id, d.heldout_episodes, path, policy="expert", seed=d.heldout_seed, mode="error",
            stop_on_success=d.stop_on_success, noise=d.noise, split=d.split, codec=d.codec, resolution=16,
            factors=d.factors or None)
    protocol = PlanningProtocol(**r.eval.protocol)
    pairs = sum(n for _, n in pair_candidates(open_dataset(path), protocol))
    assert pairs >= 2 * protocol.episodes, (env_id, pairs)


def test_validation_pairs_choose_a_recipe_change_without_the_held_out_ones(tmp_path: Path, capsys) -> None:
    """``--validation``: the shared data and training stages, then the model and the random baseline
    on pairs of expert episodes from seeds 3,000,000.. (no oracle, no held-out evaluation); a
    later standard run in the same folder reuses the data and the checkpoint."""
    from data import open_dataset

    recipe = tiny()
    path = recipe.save(tmp_path / "recipe.json")
    out = tmp_path / "bench"
    args = ("bench", "planning", "--recipe", path, "--out", out, "--device", "cpu", "--json")
    code, stdout, err = wm(capsys, *args, "--validation")
    assert code == 0, err
    (line,) = json.loads(stdout)
    assert line["protocol"] == "validation" and line["recipe_hash"] == recipe.hash() and line["episodes"] == 2
    assert line["oracle_success_rate"] is None and line["oracle_successes"] is None
    root = out / "TwoRoom-v0"
    assert json.loads((root / "result_validation.json").read_text()) == line
    assert [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()] == [line]
    assert {e["seed"] for e in open_dataset(root / "data" / "validation.lance").episodes()} == {
        3_000_000, 3_000_001, 3_000_002}
    ev = json.loads((root / "seed0" / "eval_validation" / "summary.json").read_text())
    assert ev["dataset"].endswith("validation.lance") and ev["successes"] == line["successes"]
    assert ev["protocol_name"] == "validation"
    assert not (root / "oracle").exists() and not (root / "seed0" / "eval").exists()  # held-out pairs unseen

    code, stdout, err = wm(capsys, *args, "--validation")  # everything reused
    assert code == 0 and json.loads(stdout) == [line], err
    assert "validation data reused" in err and "checkpoint reused" in err and "evaluation reused" in err

    code, stdout, err = wm(capsys, *args)  # the held-out run after adoption: data and checkpoint reused
    assert code == 0, err
    (held,) = json.loads(stdout)
    assert "data reused" in err and "checkpoint reused" in err and "training" not in err
    assert held["protocol"] == "standard" and held["oracle_episodes"] == 2
    assert {x["protocol"] for x in map(json.loads, (out / "results.jsonl").read_text().splitlines())} == {
        "validation", "standard"}

    near = tiny()  # training seeds that reach the validation seeds: refused before any work
    near.data.seed = 3_000_000 - 5
    near.save(tmp_path / "near.json")
    code, _, err = wm(capsys, "bench", "planning", "--recipe", tmp_path / "near.json", "--out", tmp_path / "o2",
                      "--validation")
    assert code == 2 and "training episodes' seeds 2999995..3000000 overlap the validation seeds 3000000..3000002" in err
    assert not (tmp_path / "o2").exists() or not any((tmp_path / "o2").rglob("*.lance"))
    tours = tiny_recipe(long={"heldout_seed": 3_000_001, "heldout_episodes": 2})  # the long protocol's too
    tours.save(tmp_path / "tours.json")
    code, _, err = wm(capsys, "bench", "planning", "--recipe", tmp_path / "tours.json", "--out", tmp_path / "o3",
                      "--validation")
    assert code == 2 and "long-protocol held-out episodes' seeds 3000001..3000002 overlap" in err, err
