"""``wm model-or-solver`` (benchmarks/model_or_solver.py): the first plan beside the expert's path."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from benchmarks.leaks import TrainEpisodesError
from benchmarks.model_or_solver import PAIRS_FILE, SUMMARY_FILE, check_spans, run_model_or_solver, summarize
from benchmarks.planning import PlannerConfig
from benchmarks.protocol import PlanningProtocol
from tests.cli_helpers import train_tiny, wm

# frameskip 2, horizon 3: the plan spans 6 steps, the protocol's offset
PROTOCOL = PlanningProtocol(offset=6, budget=6, episodes=6, seed=0)


def _row(plan: float, held: float, reached: bool, ol: float = 1.0, still: float = 4.0) -> dict:
    return {"start_distance": 1.0, "cost_plan": plan, "cost_expert": held, "cost_expert_held": held,
            "reached_plan": reached, "reached_expert": True, "reached_expert_held": True,
            "true_distance_plan": 0.0 if reached else 0.5, "true_distance_expert": 0.0, "true_distance_expert_held": 0.0,
            "true_frame_cost_plan": 0.0, "true_frame_cost_expert": 0.0, "true_frame_cost_expert_held": 0.0,
            "open_loop_error": ol, "still_error": still}


def test_summarize_counts_solver_short_and_model_misranks_and_gives_the_verdict() -> None:
    short = _row(plan=2.0, held=1.0, reached=False)  # the model prefers the expert path: the solver missed it
    misled = _row(plan=0.5, held=1.0, reached=False)  # preferred over the expert path, does not reach the goal
    fine = _row(plan=0.5, held=1.0, reached=True)  # preferred, and reaches the goal
    s = summarize([short, short, misled])
    assert (s["solver_short"], s["model_misranks"], s["verdict"]) == (2, 1, "solver")
    s = summarize([short, misled, misled])
    assert (s["solver_short"], s["model_misranks"], s["verdict"]) == (1, 2, "model")
    s = summarize([short, misled, fine, fine])
    assert (s["solver_short"], s["model_misranks"], s["verdict"]) == (1, 1, "mixed")
    assert s["open_loop_error_ratio"] == pytest.approx(0.25) and s["median"]["cost_plan"] == pytest.approx(0.5)
    assert (s["reached_plan"], s["reached_expert"]) == (2, 4)
    # a plan scored equal to the expert path up to float noise is not the solver's shortfall
    assert summarize([_row(plan=1.0 + 1e-7, held=1.0, reached=False)])["solver_short"] == 0
    with pytest.raises(ValueError, match="no pairs"):
        summarize([])


def test_the_plan_and_the_expert_path_must_span_the_same_steps() -> None:
    check_spans(PlanningProtocol(offset=25), PlannerConfig(horizon=5), 5)
    with pytest.raises(ValueError, match=r"offset=20 .* 5 x 5 = 25 steps.*--offset 25 or --horizon 4"):
        check_spans(PlanningProtocol(offset=20), PlannerConfig(horizon=5), 5)
    with pytest.raises(ValueError, match=r"offset=7 .*--offset 25$"):
        check_spans(PlanningProtocol(offset=7), PlannerConfig(horizon=5), 5)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> SimpleNamespace:
    """TwoRoom expert data at 32x32 (training and held-out) and a 20-step checkpoint trained on it."""
    from data.collect import collect

    root = tmp_path_factory.mktemp("model_or_solver")
    collect("wm/TwoRoom-v0", 4, root / "train.lance", seed=0, resolution=32, max_steps=24)
    collect("wm/TwoRoom-v0", 4, root / "heldout.lance", seed=5000, resolution=32, max_steps=24)
    train_tiny(root / "train.lance", root / "ckpt", steps=20)
    return SimpleNamespace(root=root, ckpt=root / "ckpt", heldout=root / "heldout.lance", train=root / "train.lance")


def _run(tiny, out, **planner) -> dict:
    cfg = PlannerConfig(**{"horizon": 3, "planner": "cem", "num_samples": 64, "iterations": 6, "num_elites": 8,
                           **planner})
    return run_model_or_solver(tiny.ckpt, tiny.heldout, out, protocol=PROTOCOL, planner_cfg=cfg)


def test_writes_the_summary_and_one_line_per_pair_and_the_expert_path_reaches_the_goal(tiny) -> None:
    out = tiny.root / "out"
    result = _run(tiny, out)
    assert json.loads((out / SUMMARY_FILE).read_text()) == json.loads(json.dumps(result))
    rows = [json.loads(line) for line in (out / PAIRS_FILE).read_text().splitlines()]
    assert len(rows) == result["pairs"] == 6 and result["env_id"] == "wm/TwoRoom-v0"
    # the expert's recorded actions from the start, replayed in the simulator, end at the goal (the state offset
    # steps later): the plan and the expert path are aligned with the pair
    assert max(r["true_distance_expert"] for r in rows) < 1e-9 and result["reached_expert"] == 6
    assert min(r["start_distance"] for r in rows) > 0.0
    assert result["verdict"] in ("solver", "model", "mixed") and result["train_overlap_pairs"] == 0
    ratio = sum(r["open_loop_error"] for r in rows) / sum(r["still_error"] for r in rows)
    assert result["open_loop_error_ratio"] == pytest.approx(ratio) and ratio > 0.0


def test_a_solver_with_one_random_sample_falls_short_where_cem_does_not(tiny) -> None:
    """The held expert path is one sequence the solver can express: CEM (64 x 6) finds one the model scores at least
    as well on (nearly) every pair, one random sample on few."""
    cem = _run(tiny, tiny.root / "cem")
    one = _run(tiny, tiny.root / "one", planner="random_shooting", num_samples=1, iterations=None,
               num_elites=None)
    assert cem["solver_short"] <= 1 < one["solver_short"], (cem["solver_short"], one["solver_short"])


def test_pairs_from_training_episodes_and_mismatched_spans_are_refused(tiny) -> None:
    cfg = PlannerConfig(horizon=3, planner="cem", num_samples=8, iterations=1, num_elites=2)
    with pytest.raises(TrainEpisodesError, match="--allow-train-episodes"):
        run_model_or_solver(tiny.ckpt, tiny.train, tiny.root / "leak", protocol=PROTOCOL, planner_cfg=cfg)
    assert not (tiny.root / "leak" / SUMMARY_FILE).exists()
    with pytest.raises(ValueError, match=r"offset=5 .*--offset 6"):
        run_model_or_solver(tiny.ckpt, tiny.heldout, tiny.root / "span", planner_cfg=cfg,
                            protocol=PlanningProtocol(offset=5, budget=5, episodes=2))


def test_cli_prints_the_summary_and_the_json(tiny, capsys) -> None:
    args = ("model-or-solver", tiny.ckpt, "--data", tiny.heldout, "--horizon", 3, "--offset", 6, "--episodes", 4,
            "--planner", "cem", "--num-samples", 16, "--iterations", 2, "--num-elites", 4)
    code, out, _ = wm(capsys, *args, "--out", tiny.root / "cli")
    assert code == 0 and "solver_short" in out and "verdict" in out
    code, out, _ = wm(capsys, *args, "--out", tiny.root / "cli_json", "--json")
    data = json.loads(out)
    assert code == 0 and data["pairs"] == 4 and {"solver_short", "model_misranks", "open_loop_error_ratio",
                                                  "verdict", "median"} <= set(data)
    code, _, err = wm(capsys, *args[:-6], "--planner", "cme", "--out", tiny.root / "cli_bad")
    assert code != 0 and "cem" in err
