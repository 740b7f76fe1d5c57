"""Factors of variation: validation, splits, errors, description."""

from __future__ import annotations

import json

import numpy as np
import pytest

from envs.factors import SPLITS, Factor, FactorOutOfRange, FactorSpace, UnknownFactorError, UnknownSplitError


def space() -> FactorSpace:
    return FactorSpace(
        [
            Factor("color", "visual", (0.9, 0.2, 0.2), train=((0.7, 0.0, 0.0), (1.0, 0.35, 0.35)),
                   ood=(((0.0, 0.0, 0.65), (0.3, 0.35, 1.0)),)),
            Factor("door_width", "geometric", 0.2, train=(0.16, 0.24), ood=((0.1, 0.14), (0.26, 0.3))),
            Factor("speed", "physical", 1.0, train=(0.8, 1.2), ood=((0.4, 0.6),)),
        ]
    )


def in_box(value, box) -> bool:
    v, lo, hi = np.asarray(value), np.asarray(box[0]), np.asarray(box[1])
    return bool(np.all((v >= lo) & (v <= hi)))


def test_validate_fills_defaults_and_returns_plain_python_values() -> None:
    out = space().validate({"door_width": np.float32(0.27), "color": np.array([0.1, 0.1, 0.9])})
    assert list(out) == ["color", "door_width", "speed"]
    assert type(out["door_width"]) is float and out["door_width"] == pytest.approx(0.27)
    assert out["color"] == (0.1, 0.1, 0.9) and all(type(c) is float for c in out["color"])
    assert out["speed"] == 1.0
    assert space().validate({}) == space().defaults()


def test_out_of_range_message_names_value_and_ranges() -> None:
    with pytest.raises(FactorOutOfRange) as e:
        space().validate({"door_width": 3.5})
    assert str(e.value) == "door_width=3.5 outside its ranges: train [0.16, 0.24], ood [[0.1, 0.14], [0.26, 0.3]]"
    with pytest.raises(FactorOutOfRange, match=r"color=\(0.5, 0.5, 0.5\)"):
        space().validate({"color": (0.5, 0.5, 0.5)})
    with pytest.raises(FactorOutOfRange, match="3 components"):
        space().validate({"color": (0.9, 0.2)})
    for bad in (float("nan"), "wide", True):
        with pytest.raises(FactorOutOfRange, match="door_width"):
            space().validate({"door_width": bad})


def test_unknown_factor_lists_valid_names_and_suggests() -> None:
    with pytest.raises(UnknownFactorError) as e:
        space().validate({"door_widht": 0.2})
    msg = str(e.value)
    assert "door_widht" in msg and "speed" in msg and "did you mean 'door_width'" in msg
    assert isinstance(e.value, KeyError) and isinstance(e.value, ValueError)


def test_splits_sample_from_the_right_boxes() -> None:
    fs = space()
    rng = np.random.default_rng(0)
    for _ in range(200):
        train = fs.sample(rng, "train")
        assert all(in_box(train[f.name], f.train) for f in fs)
        ood = fs.sample(rng, "ood")
        assert all(f.is_ood(ood[f.name]) and any(in_box(ood[f.name], r) for r in f.ood) for f in fs)
        vis = fs.sample(rng, "ood_visual")
        assert fs["color"].is_ood(vis["color"]) and not fs["speed"].is_ood(vis["speed"])
        phys = fs.sample(rng, "ood_physics")
        assert fs["speed"].is_ood(phys["speed"]) and not fs["door_width"].is_ood(phys["door_width"])
        fs.validate({**train, **ood})  # samples are valid values
    both_ood = {fs.sample(rng, "ood")["door_width"] > 0.2 for _ in range(50)}
    assert both_ood == {True, False}  # every OOD box gets used
    assert set(SPLITS) >= {"train", "ood", "ood_visual", "ood_geometry", "ood_physics", "ood_all"}


def test_sampling_uses_only_the_given_rng() -> None:
    np.random.seed(1)
    before = np.random.random()
    np.random.seed(1)
    a = space().sample(np.random.default_rng(5), "ood_all")
    b = space().sample(np.random.default_rng(5), "ood_all")
    assert a == b
    assert np.random.random() == before


def test_unknown_split() -> None:
    with pytest.raises(UnknownSplitError, match="'ood_visaul'.*ood_visual"):
        space().sample(np.random.default_rng(0), "ood_visaul")


def test_describe_is_json_serialisable() -> None:
    rows = json.loads(json.dumps(space().describe()))
    assert [r["name"] for r in rows] == ["color", "door_width", "speed"]
    assert set(rows[1]) >= {"name", "kind", "default", "train", "ood"}
    assert rows[1]["ood"] == [[0.1, 0.14], [0.26, 0.3]]
    assert rows[0]["train"] == [[0.7, 0.0, 0.0], [1.0, 0.35, 0.35]]


def test_bad_factor_definitions_are_rejected() -> None:
    with pytest.raises(ValueError, match="default"):
        Factor("x", "physical", 2.0, train=(0.0, 1.0), ood=((3.0, 4.0),))
    with pytest.raises(ValueError, match="overlaps"):
        Factor("x", "physical", 0.5, train=(0.0, 1.0), ood=((0.9, 2.0),))
    with pytest.raises(ValueError, match="kind"):
        Factor("x", "colour", 0.5, train=(0.0, 1.0), ood=((2.0, 3.0),))
    with pytest.raises(ValueError, match="duplicate"):
        FactorSpace([space()["speed"], space()["speed"]])


def test_severity_slices_move_away_from_train() -> None:
    from envs.factors import SEVERITY_LEVELS, Factor

    f = Factor("x", "physical", 1.0, train=(0.5, 1.5), ood=((0.0, 0.3), (2.0, 5.0)))
    low = [f.severity_box(f.ood[0], k) for k in range(1, SEVERITY_LEVELS + 1)]
    high = [f.severity_box(f.ood[1], k) for k in range(1, SEVERITY_LEVELS + 1)]
    assert low[0] == pytest.approx((0.2, 0.3)) and low[-1] == pytest.approx((0.0, 0.1))
    assert high[0] == pytest.approx((2.0, 3.0)) and high[-1] == pytest.approx((4.0, 5.0))
    rng = np.random.default_rng(0)
    for _ in range(200):
        v = f.sample(rng, ood=True, severity=3)
        assert 0.0 <= v <= 0.1 or 4.0 <= v <= 5.0
    assert len(f.describe()["ood_severity"][1]) == SEVERITY_LEVELS


def test_severity_on_env_reset_and_errors() -> None:
    import envs

    env = envs.make("wm/TwoRoom-v0")
    space = env.unwrapped.factor_space
    _, info = env.reset(seed=0, options={"split": "ood_physics", "severity": 3})
    speed = info["factors"]["agent_speed"]
    assert speed <= 0.015 + 0.005 / 3 + 1e-9 or speed >= 0.05 - 0.01 / 3 - 1e-9
    assert space.is_ood(info["factors"])["agent_speed"] and not space.is_ood(info["factors"])["agent_color"]
    with pytest.raises(ValueError, match="severity=7"):
        env.reset(options={"split": "ood", "severity": 7})
    with pytest.raises(ValueError, match="needs an OOD split"):
        env.reset(options={"severity": 2})
    with pytest.raises(ValueError, match="needs an OOD split"):
        env.reset(options={"split": "train", "severity": 2})
