"""Planning objectives: each term against a hand computation, the weighted sum against its
terms, one rollout per cost call, the spec parser's errors (also through ``wm eval``), the
goal state reaching the ``state`` term, and the state probe (ridge fit, file, ``wm eval``)."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from benchmarks.planning import PlannerConfig
from planners import CEM, MPCPolicy
from planners.objectives import (
    OBJECTIVES,
    TERMS,
    CompositeObjective,
    StateProbe,
    UnknownObjectiveError,
    get_objective,
    parse_objective,
    parse_step_weights,
)
from worldmodel.cli import main


class AdditiveModel:
    """A 2-d latent world: each block (a0, a1) is added to the embedding. Counts rollouts.

    Raw actions are 1 value, 2 per block (frameskip 2), so a block's two values are two
    consecutive raw actions for the effort terms.
    """

    def __init__(self) -> None:
        self.config = SimpleNamespace(frameskip=2, action_dim=1, context=1)
        self.calls = 0

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels[:, :, 0, 0, :2].float()  # (B, T, 2): the first pixel's first two columns' red values

    def rollout(self, emb: torch.Tensor, actions: torch.Tensor, past_actions: torch.Tensor | None = None) -> torch.Tensor:
        self.calls += 1
        return emb[:, -1, None, None, :] + actions.cumsum(2)  # (B, S, H, 2)


# B=2 envs, S=2 candidates, H=2 blocks of 2 values.
CTX = torch.tensor([[[0.0, 0.0]], [[1.0, 1.0]]])  # (B, T0=1, D=2)
GOAL = torch.tensor([[1.0, 2.0], [0.0, 0.0]])  # (B, D)
ACTIONS = torch.tensor([
    [[[1.0, 0.0], [0.0, 2.0]], [[0.0, 1.0], [1.0, -1.0]]],  # env 0: visits (1,0),(1,2) | (0,1),(1,0)
    [[[-1.0, -1.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]],  # env 1: visits (0,0),(0,0) | (1,1),(1,1)
])
STEP_WEIGHTS = [0.5, 3.0]
# Hand computations, (B, S):
HAND = {
    # last predicted embedding vs goal: env 0 (1,2)->0, (1,0)->0+4; env 1 (0,0)->0, (1,1)->2
    "terminal_l2": [[0.0, 4.0], [0.0, 2.0]],
    # per-step squared distances: env 0 s0 [4, 0], s1 [2, 4]; env 1 s0 [0, 0], s1 [2, 2]; summed (not averaged)
    "all_steps_l2": [[4.0, 6.0], [0.0, 4.0]],
    # the closest step of each plan: env 0 s0 min(4, 0), s1 min(2, 4); env 1 s0 min(0, 0), s1 min(2, 2)
    "min_step_l2": [[0.0, 2.0], [0.0, 2.0]],
    "terminal_l1": [[0.0, 2.0], [0.0, 2.0]],
    # raw actions: env 0 s0 1,0,0,2 -> 5; s1 0,1,1,-1 -> 3; env 1 s0 -1,-1,0,0 -> 2; s1 0
    "effort": [[5.0, 3.0], [2.0, 0.0]],
    # consecutive raw differences: 1,0,0,2 -> -1,0,2 -> 5; 0,1,1,-1 -> 1,0,-2 -> 5; -1,-1,0,0 -> 0,1,0 -> 1; 0
    "effort_diff": [[5.0, 5.0], [1.0, 0.0]],
}
# all_steps_l2 with step weights (0.5, 3): env 0 s0 0.5*4 = 2, s1 0.5*2 + 3*4 = 13; env 1 0, 0.5*2 + 3*2 = 7
WEIGHTED_STEPS = [[2.0, 13.0], [0.0, 7.0]]

# probe(emb) = (x + y + 1, y); the second goal dimension is constant in the data (std 0): left out
PROBE = StateProbe(weight=torch.tensor([[1.0, 0.0], [1.0, 1.0]]), bias=torch.tensor([1.0, 0.0]),
                   std=torch.tensor([2.0, 0.0]))
GOAL_STATE = torch.tensor([[5.0, 9.0], [1.0, 7.0]])
# ((x + y + 1 - g0) / 2)^2 at the last step: env 0 (1,2) -> ((4-5)/2)^2 = 0.25, (1,0) -> ((2-5)/2)^2 = 2.25;
# env 1 (0,0) -> 0, (1,1) -> ((3-1)/2)^2 = 1
HAND_STATE = [[0.25, 2.25], [0.0, 1.0]]
# without a goal state the goal is probe(goal_emb): env 0 (4, 2) -> 0, ((2-4)/2)^2 = 1; env 1 (1, 0) -> 0, 1
HAND_STATE_FROM_GOAL_EMB = [[0.0, 1.0], [0.0, 1.0]]


def cost(spec: str, **kwargs) -> torch.Tensor:
    model = AdditiveModel()
    goal_state = kwargs.pop("goal_state", None)
    out = CompositeObjective(spec, **kwargs)(model, CTX, GOAL, None, goal_state=goal_state)(ACTIONS)
    assert out.shape == (2, 2)
    return out


@pytest.mark.parametrize("name", sorted(HAND))
def test_each_term_matches_a_hand_computation(name: str) -> None:
    torch.testing.assert_close(cost(name), torch.tensor(HAND[name]))
    torch.testing.assert_close(cost(f"{name}=2.5"), 2.5 * torch.tensor(HAND[name]))


def test_step_weights_weight_each_step_of_the_sum() -> None:
    torch.testing.assert_close(cost("all_steps_l2", step_weights=STEP_WEIGHTS), torch.tensor(WEIGHTED_STEPS))
    torch.testing.assert_close(cost("all_steps_l2", step_weights="0.5, 3"), torch.tensor(WEIGHTED_STEPS))
    with pytest.raises(ValueError, match=r"step_weights has 3 values but the plan has H=2 steps"):
        cost("all_steps_l2", step_weights=[1, 1, 1])


def test_state_term_normalises_by_the_dataset_std_and_reads_the_goal_state() -> None:
    torch.testing.assert_close(cost("state", state_probe=PROBE, goal_state=GOAL_STATE), torch.tensor(HAND_STATE))
    torch.testing.assert_close(cost("state", state_probe=PROBE), torch.tensor(HAND_STATE_FROM_GOAL_EMB))
    with pytest.raises(ValueError, match="'state' objective term needs a state probe"):
        CompositeObjective("terminal_l2,state=0.1")
    with pytest.raises(ValueError, match=r"goal_state must have shape \(B, G\) = \(2, 2\)"):
        cost("state", state_probe=PROBE, goal_state=torch.zeros(2, 3))
    wrong = StateProbe(weight=torch.zeros(3, 2), bias=torch.zeros(2), std=torch.ones(2))
    with pytest.raises(ValueError, match="reads 3-d embeddings but the model's are 2-d"):
        cost("state", state_probe=wrong)


def test_composite_is_the_weighted_sum_with_one_rollout_per_call() -> None:
    objective = CompositeObjective({"terminal_l2": 1.0, "all_steps_l2": 0.5, "min_step_l2": 3.0, "terminal_l1": 0.25,
                                    "state": 2.0, "effort": 0.1, "effort_diff": 0.01}, step_weights=STEP_WEIGHTS,
                                   state_probe=PROBE)
    model = AdditiveModel()
    cost_fn = objective(model, CTX, GOAL, None, goal_state=GOAL_STATE)
    total = cost_fn(ACTIONS)
    assert model.calls == 1  # seven terms, six of them read the rollout: computed once
    expected = (torch.tensor(HAND["terminal_l2"]) + 0.5 * torch.tensor(WEIGHTED_STEPS) + 3.0 * torch.tensor(HAND["min_step_l2"])
                + 0.25 * torch.tensor(HAND["terminal_l1"]) + 2.0 * torch.tensor(HAND_STATE) + 0.1 * torch.tensor(HAND["effort"])
                + 0.01 * torch.tensor(HAND["effort_diff"]))
    torch.testing.assert_close(total, expected)
    cost_fn(ACTIONS)
    assert model.calls == 2  # once per call, nothing cached across calls
    terms = objective.terms(model, CTX, GOAL, None, goal_state=GOAL_STATE)(ACTIONS)
    assert model.calls == 3 and sorted(terms) == sorted(TERMS)
    torch.testing.assert_close(sum(objective.weights[k] * v for k, v in terms.items()), total)
    # terms of weight 0 are not computed; effort alone never rolls the model out
    effort_only = CompositeObjective("effort=1,terminal_l2=0")
    assert effort_only.weights == {"effort": 1.0} and effort_only.spec == "effort=1"
    effort_only(model, CTX, GOAL)(ACTIONS)
    assert model.calls == 3


def test_held_actions_count_every_raw_step() -> None:
    """MPCPolicy repeats a held action frameskip times before scoring: the effort terms see
    the raw actions the env would get (a held a costs frameskip * a^2, no change inside a block)."""
    held = torch.tensor([[[[2.0], [-1.0]]]]).repeat(1, 1, 1, 2)  # (1, 1, H=2, 2): blocks (2,2), (-1,-1)
    model = AdditiveModel()
    ctx, goal = CTX[:1], GOAL[:1]
    assert CompositeObjective("effort")(model, ctx, goal)(held).item() == pytest.approx(2 * 4 + 2 * 1)
    assert CompositeObjective("effort_diff")(model, ctx, goal)(held).item() == pytest.approx(9.0)


def test_gradients_flow_through_every_term() -> None:
    actions = ACTIONS.clone().requires_grad_(True)
    objective = CompositeObjective("terminal_l2,all_steps_l2,min_step_l2,terminal_l1,state,effort,effort_diff",
                                   state_probe=PROBE)
    objective(AdditiveModel(), CTX, GOAL, None, goal_state=GOAL_STATE)(actions).sum().backward()
    assert actions.grad is not None and torch.isfinite(actions.grad).all() and actions.grad.abs().sum() > 0


# --- specs ----------------------------------------------------------------------------


def test_spec_parsing() -> None:
    assert parse_objective("terminal_l2") == {"terminal_l2": 1.0}
    assert parse_objective(" terminal_l2 = 1 , effort=0.01 ") == {"terminal_l2": 1.0, "effort": 0.01}
    assert parse_objective("terminal_l2=1,effort=0") == {"terminal_l2": 1.0, "effort": 0.0}
    assert parse_step_weights("1, 2,0") == [1.0, 2.0, 0.0] and parse_step_weights("") is None
    # the old names still give the same objects
    assert get_objective("terminal_l2") is OBJECTIVES["terminal_l2"]
    assert isinstance(get_objective("terminal_l2=1,effort=0.01"), CompositeObjective)


@pytest.mark.parametrize("spec, message", [
    ("terminal_l3", r"unknown objective 'terminal_l3'; did you mean 'terminal_l2'\?"),
    ("terminal_l2=1,efort=0.1", r"unknown objective 'efort'; did you mean 'effort'\?"),
    ("terminal_l2=-1", r"the weight of 'terminal_l2' is -1; expected a finite number >= 0"),
    ("terminal_l2=nan", r"the weight of 'terminal_l2' is nan; expected a finite number >= 0"),
    ("terminal_l2=inf", r"the weight of 'terminal_l2' is inf"),
    ("terminal_l2=abc", r"the weight of 'terminal_l2' is 'abc', not a number"),
    ("terminal_l2=", r"term 'terminal_l2=' is not NAME or NAME=WEIGHT"),
    ("=1", r"term '=1' is not NAME or NAME=WEIGHT"),
    ("terminal_l2=1=2", r"term 'terminal_l2=1=2' is not NAME or NAME=WEIGHT"),
    ("terminal_l2,,effort", r"an empty term"),
    ("", r"expected terms like 'terminal_l2'"),
    ("terminal_l2=1,terminal_l2=2", r"term 'terminal_l2' is given twice"),
    ("terminal_l2=0,effort=0", r"every weight is 0"),
])
def test_bad_specs_are_clear_errors(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_objective(spec)


def test_unknown_term_is_an_unknown_objective_error() -> None:
    with pytest.raises(UnknownObjectiveError):
        get_objective("terminal_l3")
    with pytest.raises(ValueError, match=r"step weights '1,x': 'x' is not a number"):
        parse_step_weights("1,x")
    with pytest.raises(ValueError, match=r"'-1' is not a finite number >= 0"):
        parse_step_weights("1,-1")
    with pytest.raises(ValueError, match=r"--step-weights '1,2' has 2 values; expected one per planned step \(--horizon 3\)"):
        PlannerConfig(horizon=3, step_weights="1,2")
    with pytest.raises(ValueError, match=r"did you mean 'effort'"):
        PlannerConfig(objective="terminal_l2,efort=1")


@pytest.mark.parametrize("flags, message", [
    (["--objective", "terminal_l3"], "unknown objective 'terminal_l3'; did you mean 'terminal_l2'?"),
    (["--objective", "terminal_l2=1,effort=-0.5"], "the weight of 'effort' is -0.5; expected a finite number >= 0"),
    (["--objective", "terminal_l2=nan"], "the weight of 'terminal_l2' is nan"),
    (["--objective", "terminal_l2;effort"], "unknown objective 'terminal_l2;effort'"),
    (["--objective", "terminal_l2==1"], "term 'terminal_l2==1' is not NAME or NAME=WEIGHT"),
    (["--objective", "all_steps_l2", "--step-weights", "1,nan"], "'nan' is not a finite number >= 0"),
])
def test_bad_objectives_through_wm_eval_exit_2_before_any_work(flags, message, tmp_path, capsys) -> None:
    # The checkpoint and data do not exist: the objective is refused before they are read.
    code = main(["eval", "--ckpt", str(tmp_path / "no-ckpt"), "--data", str(tmp_path / "no-data"),
                 "--out", str(tmp_path / "out"), *flags])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("wm eval: error: ") and message in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


# --- the goal state through MPCPolicy ---------------------------------------------------


def test_mpc_passes_the_goal_state_only_to_objectives_that_take_it() -> None:
    seen: list = []

    def with_goal_state(model, context_emb, goal_emb, past_actions=None, goal_state=None):
        seen.append(None if goal_state is None else goal_state.clone())
        return lambda actions: actions.pow(2).sum((-2, -1))

    def without(model, context_emb, goal_emb, past_actions):  # e.g. the oracle's factory
        seen.append("called")
        return lambda actions: actions.pow(2).sum((-2, -1))

    obs = np.zeros((2, 4, 4, 3), np.uint8)
    goal_state = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    for objective in (with_goal_state, without):
        policy = MPCPolicy(AdditiveModel(), CEM(2, 2, -1.0, 1.0, num_samples=8, iterations=1, num_elites=2),
                           objective=objective)
        policy.act(obs, obs, goal_state=goal_state)
    assert torch.equal(seen[0], torch.tensor(goal_state, dtype=torch.float32)) and seen[1] == "called"
    policy = MPCPolicy(AdditiveModel(), CEM(2, 2, -1.0, 1.0, num_samples=8, iterations=1, num_elites=2),
                       objective=with_goal_state)
    policy.act(obs, obs)
    assert seen[2] is None
    with pytest.raises(ValueError, match=r"goal_state must be finite float \(B, G\) with B=2"):
        policy.act(obs, obs, goal_state=np.zeros((3, 2)))


# --- the state probe --------------------------------------------------------------------


class FakeDataset:
    """Two episodes whose frames carry (x, y) in the first pixel; state = (x, y, 7)."""

    path = "fake"
    meta = {"env_id": "fake"}

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.rows = {}
        for eid in (0, 1):
            xy = rng.integers(0, 256, size=(40, 2))
            pixels = np.zeros((40, 4, 4, 3), np.uint8)
            pixels[:, 0, :2, 0] = xy  # encode reads pixels[:, :, 0, 0, :2]: channel 0, row 0, columns 0-1
            state = np.concatenate([xy, np.full((40, 1), 7.0)], axis=1)
            self.rows[eid] = {"pixels": pixels, "state": state}

    def episodes(self) -> list[dict]:
        return [{"episode_id": e, "length": 40} for e in self.rows]

    def load_episode(self, episode_id: int, columns=None) -> dict:
        return self.rows[episode_id]


def test_state_probe_recovers_a_linear_read_out_and_round_trips(tmp_path) -> None:
    from benchmarks.state_probe import PROBE_FILE, fit_state_probe, load_state_probe, save_state_probe
    from worldmodel import JEPA, ModelConfig, save_checkpoint

    ds = FakeDataset()
    # goal layout = (2x - y + 3, state[2]) (a constant second dimension: std 0, left out of the cost)
    probe = fit_state_probe(AdditiveModel(), ds, goal_fn=lambda s: np.array([2 * s[0] - s[1] + 3, s[2]]),
                            ridge=1e-9, max_frames=60)
    assert probe.info["frames"] == 40  # 80 rows strided by 2 to stay under max_frames
    torch.testing.assert_close(probe.weight[:, 0], torch.tensor([2.0, -1.0]), atol=1e-3, rtol=0)
    torch.testing.assert_close(probe.bias[0], torch.tensor(3.0), atol=1e-2, rtol=0)
    assert probe.std[1] == 0 and probe.info["r2"][0] == pytest.approx(1.0) and probe.info["r2"][1] is None
    xy = np.concatenate([ds.rows[e]["state"][::2, :2] for e in (0, 1)])
    assert probe.std[0].item() == pytest.approx(float((2 * xy[:, 0] - xy[:, 1]).std()), rel=1e-5)

    ckpt = tmp_path / "ckpt"
    save_checkpoint(ckpt, JEPA(ModelConfig(image_size=16, encoder_width=4, embed_dim=8, projector_hidden=8,
                                           predictor_width=8, predictor_depth=1, predictor_heads=1, sigreg_projections=4)))
    assert load_state_probe(ckpt) is None
    save_state_probe(ckpt, probe)
    loaded = load_state_probe(ckpt)
    assert loaded is not None and torch.equal(loaded.weight, probe.weight) and loaded.info == json.loads(json.dumps(probe.info))
    # the checkpoint's weights change (trained further): the probe no longer belongs to them
    (ckpt / "model.safetensors").write_bytes((ckpt / "model.safetensors").read_bytes() + b" ")
    assert load_state_probe(ckpt) is None
    (ckpt / PROBE_FILE).write_bytes(b"garbage")
    with pytest.raises(ValueError, match="is not a readable state probe"):
        load_state_probe(ckpt)


def test_wm_eval_with_a_state_term_fits_the_probe_once(tmp_path, capsys) -> None:
    """`wm eval --objective terminal_l2=1,state=0.5,effort=0.01` on a tiny TwoRoom checkpoint:
    the probe is fitted on the training data, saved beside the checkpoint, reused next time."""
    import envs

    train, heldout, ckpt = tmp_path / "train.lance", tmp_path / "heldout.lance", tmp_path / "ckpt"
    for out, n, seed in ((train, 4, 0), (heldout, 2, 1_000_000)):
        assert main(["collect", "--env", "wm/TwoRoom-v0", "--episodes", str(n), "--out", str(out), "--resolution", "16",
                     "--seed", str(seed)]) == 0
    assert main(["train", "--data", str(train), "--out", str(ckpt), "--steps", "2", "--batch-size", "4", "--device", "cpu",
                 "--embed-dim", "8", "--encoder-width", "4", "--projector-hidden", "16", "--predictor-width", "16",
                 "--predictor-depth", "1", "--predictor-heads", "2", "--sigreg-projections", "8", "--no-progress"]) == 0
    capsys.readouterr()
    argv = ["eval", "--ckpt", str(ckpt), "--data", str(heldout), "--episodes", "2", "--budget", "3", "--device", "cpu",
            "--no-video", "--num-samples", "8", "--iterations", "1", "--num-elites", "2", "--horizon", "2",
            "--objective", "terminal_l2=1,state=0.5,effort=0.01"]
    assert main([*argv, "--out", str(tmp_path / "e1")]) == 0
    err = capsys.readouterr().err
    assert "fitting a state probe on" in err and "saved to" in err, err
    from benchmarks.state_probe import PROBE_FILE, load_state_probe

    probe = load_state_probe(ckpt)
    goal_dim = envs.make("wm/TwoRoom-v0").unwrapped.goal_from_state(np.zeros(envs.make("wm/TwoRoom-v0").unwrapped.state_dim)).size
    assert (ckpt / PROBE_FILE).is_file() and probe.weight.shape == (8, goal_dim)
    summary = json.loads((tmp_path / "e1" / "summary.json").read_text())
    assert summary["planner"]["objective"] == "terminal_l2=1,state=0.5,effort=0.01" and summary["episodes"] == 2
    assert main([*argv, "--out", str(tmp_path / "e2")]) == 0
    assert "fitting a state probe" not in capsys.readouterr().err
    assert math.isfinite(json.loads((tmp_path / "e2" / "summary.json").read_text())["success_rate"])
