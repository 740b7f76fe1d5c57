"""Every registered solver: finds optima per environment, respects bounds, is deterministic,
warm-starts, scores each iteration in one batched call, handles NaN and bad input; the
registry and ``wm eval --planner``; gradients through a real JEPA rollout."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tests.cli_helpers import wm
import torch

import planners
from planners import MPCPolicy, NonDifferentiableCostError, UnknownSolverError, terminal_l2
from planners.icem import ICEM, coloured_noise
from planners.mppi import mppi_weights
from tests.test_planners_mpc import PointModel, render, step_env

B, H, A = 3, 5, 2
SOLVERS = planners.available()

#: per solver: options for the toy problems, max |error| at the optimum, max |error| to a bound
#: (None: not expected to land exactly, only to stay inside), options that make one iteration
#: with a tiny spread (warm-start test), and the number of cost_fn calls of one plan.
CASES = {
    "cem": dict(options={}, tol=0.05, bound_tol=0.01, narrow=dict(iterations=1, init_std=1e-3), calls=30),
    "icem": dict(options={}, tol=0.05, bound_tol=0.02, narrow=dict(iterations=1, init_std=1e-3), calls=30),
    "mppi": dict(options={}, tol=0.2, bound_tol=0.01, narrow=dict(iterations=1, noise_std=1e-3), calls=30),
    "gd": dict(options={}, tol=0.1, bound_tol=1e-6, narrow=dict(iterations=1, init_std=1e-3), calls=30),
    "cem_gd": dict(options={}, tol=0.05, bound_tol=0.01, narrow=dict(iterations=1, init_std=1e-3, gd_iterations=1), calls=20),
    # one round of uniform samples: near the optimum only with many samples, never on a bound
    "random_shooting": dict(options=dict(num_samples=20_000), tol=0.7, bound_tol=None, narrow={}, calls=1),
}


#: smaller budgets where the optimum is not the point (seeds, NaN): fast tests
SMALL = {
    "cem": dict(num_samples=64, iterations=5, num_elites=8),
    "icem": dict(num_samples=64, iterations=5, num_elites=8),
    "mppi": dict(num_samples=64, iterations=5, num_elites=8),
    # restart 0 starts at the (deterministic) warm start and often wins; action noise makes the seed show
    "gd": dict(num_samples=16, iterations=5, action_noise=0.05),
    "cem_gd": dict(num_samples=64, iterations=3, num_elites=8, num_refine=4, gd_iterations=3),
    "random_shooting": dict(num_samples=64),
}


def test_every_registered_solver_has_a_test_case():
    assert set(SOLVERS) == set(CASES) == {"cem", "icem", "mppi", "gd", "cem_gd", "random_shooting"}


def make(name: str, low=-1.0, high=1.0, **options) -> planners.Solver:
    return planners.get(name, horizon=H, action_dim=A, low=low, high=high, **(CASES[name]["options"] | options))


def quadratic(target: torch.Tensor):
    """cost_fn (B, S, H, A) -> (B, S): squared distance to a per-env target (B, H, A)."""

    def cost_fn(actions: torch.Tensor) -> torch.Tensor:
        return (actions - target[:, None]).pow(2).sum(dim=(-1, -2))

    return cost_fn


def make_target(seed: int = 1, scale: float = 0.8) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand((B, H, A), generator=g) * 2 - 1) * scale


# --- the solver contract, every solver ---------------------------------------------------


@pytest.mark.parametrize("name", SOLVERS)
def test_reaches_each_envs_own_optimum(name):
    target = make_target()  # a different optimum for each of the B environments
    result = make(name).plan(quadratic(target), B)
    assert result.actions.shape == (B, H, A) and result.cost.shape == (B,)
    err = (result.actions - target).abs().amax(dim=(1, 2))  # (B,)
    assert (err < CASES[name]["tol"]).all(), f"{name}: max errors per env {err.tolist()}"
    # the reported cost is the cost of the returned actions
    torch.testing.assert_close(result.cost, quadratic(target)(result.actions[:, None])[:, 0])


@pytest.mark.parametrize("name", SOLVERS)
def test_optimum_outside_the_box_lands_on_its_boundary_and_samples_stay_inside(name):
    target = torch.full((B, H, A), 3.0)
    target[..., 1] = -2.5
    low, high = torch.tensor([-1.0, -0.5]), torch.tensor([1.0, 0.5])
    seen = []

    def cost_fn(actions):
        seen.append(actions.detach().clone())
        return quadratic(target)(actions)

    result = make(name, low=low, high=high).plan(cost_fn, B)
    for samples in seen + [result.actions[:, None]]:
        assert (samples >= low).all() and (samples <= high).all()
    tol = CASES[name]["bound_tol"]
    if tol is not None:
        torch.testing.assert_close(result.actions[..., 0], torch.full((B, H), 1.0), rtol=0, atol=tol)
        torch.testing.assert_close(result.actions[..., 1], torch.full((B, H), -0.5), rtol=0, atol=tol)


@pytest.mark.parametrize("name", SOLVERS)
def test_same_seed_same_plan_other_seed_other_plan(name):
    target = make_target()
    a = make(name, seed=7, **SMALL[name]).plan(quadratic(target), B)
    b = make(name, seed=7, **SMALL[name]).plan(quadratic(target), B)
    c = make(name, seed=8, **SMALL[name]).plan(quadratic(target), B)
    assert torch.equal(a.actions, b.actions) and torch.equal(a.cost, b.cost)
    assert not torch.equal(a.actions, c.actions)


@pytest.mark.parametrize("name", SOLVERS)
def test_warm_start_is_used(name):
    """One iteration with a tiny spread: starting at the optimum beats starting at the centre."""
    target = make_target()
    narrow = CASES[name]["narrow"]
    warm = make(name, **narrow).plan(quadratic(target), B, init=target + 0.01)
    cold = make(name, **narrow).plan(quadratic(target), B)
    assert (warm.cost < 0.01).all(), warm.cost
    assert (cold.cost > 100 * warm.cost).all(), (cold.cost, warm.cost)


@pytest.mark.parametrize("name", SOLVERS)
def test_one_batched_cost_call_per_iteration(name):
    shapes = []

    def cost_fn(actions):
        shapes.append(tuple(actions.shape))
        return actions.pow(2).sum(dim=(-1, -2))

    solver = make(name)
    result = solver.plan(cost_fn, B)
    sizes = solver.call_sizes()
    assert len(sizes) == CASES[name]["calls"] == result.stats["iterations"]
    assert shapes == [(B, s, H, A) for s in sizes]  # all envs and candidates at once, every call
    assert result.stats["cost_history"].shape == (len(sizes), B)
    torch.testing.assert_close(result.cost, result.stats["cost_history"].min(dim=0).values)


@pytest.mark.parametrize("name", SOLVERS)
def test_nan_costs_count_as_infinite(name):
    target = make_target()

    def cost_fn(actions):
        cost = quadratic(target)(actions)
        return torch.where(actions[..., 0, 0] > 0, torch.full_like(cost, math.nan), cost)

    result = make(name, **SMALL[name]).plan(cost_fn, B)
    assert torch.isfinite(result.cost).all()
    assert (result.actions[:, 0, 0] <= 0).all()


@pytest.mark.parametrize("name", SOLVERS)
def test_cost_of_the_wrong_shape_is_a_clear_error(name):
    with pytest.raises(ValueError, match=r"cost_fn must return shape \(B, S\) = \(3, \d+\), got \(3, \d+, 5\)"):
        make(name).plan(lambda a: a.sum(dim=-1), B)
    with pytest.raises(ValueError, match=r"cost_fn must return a torch.Tensor"):
        make(name).plan(lambda a: a.sum(dim=(-1, -2)).tolist(), B)


@pytest.mark.parametrize("name", SOLVERS)
@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_samples=0), r"num_samples must be a positive int, got 0"),
        (dict(num_samples=-5), r"num_samples must be a positive int, got -5"),
        (dict(iterations=0), r"iterations must be a positive int, got 0"),
        (dict(low=1.0, high=1.0), r"low must be < high in every dimension, got low=\[1.0, 1.0\]"),
        (dict(low=[0.0, 2.0], high=1.0), r"low must be < high"),
        (dict(high=math.inf), r"high must be finite"),
        (dict(init_std=math.nan), r"init_std must be a finite float >=? 0, got nan"),
        (dict(init_std=math.inf), r"init_std must be a finite float"),
        (dict(horizon=0), r"horizon must be a positive int, got 0"),
    ],
)
def test_bad_arguments_are_clear_errors(name, kwargs, message):
    options = planners.solver_options(name)
    if any(k not in options and k not in ("low", "high", "horizon") for k in kwargs):
        with pytest.raises(ValueError, match=rf"solver '{name}' has no option"):
            planners.get(name, horizon=H, action_dim=A, low=-1.0, high=1.0, **kwargs)
        return
    args = dict(horizon=H, action_dim=A, low=-1.0, high=1.0) | kwargs
    with pytest.raises(ValueError, match=message):
        planners.get(name, **args)


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("cem", dict(num_elites=301), r"num_elites=301 must be <= num_samples=300"),
        ("icem", dict(beta=math.nan), r"beta must be a finite float >= 0, got nan"),
        ("icem", dict(decay=0.5), r"decay must be a finite float >= 1, got 0.5"),
        ("icem", dict(keep_fraction=1.5), r"keep_fraction must be a finite float >= 0 and <= 1, got 1.5"),
        ("icem", dict(momentum=1.0), r"momentum must be a finite float in \[0, 1\), got 1.0"),
        ("mppi", dict(temperature=0.0), r"temperature must be a finite float > 0, got 0.0"),
        ("mppi", dict(temperature=math.inf), r"temperature must be a finite float > 0, got inf"),
        ("mppi", dict(noise_std=math.nan), r"noise_std must be a finite float > 0, got nan"),
        ("gd", dict(lr=math.nan), r"lr must be a finite float > 0, got nan"),
        ("gd", dict(action_noise=-1.0), r"action_noise must be a finite float >= 0, got -1.0"),
        ("cem_gd", dict(num_refine=0), r"num_refine must be a positive int, got 0"),
        ("cem_gd", dict(gd_iterations=0), r"gd_iterations must be a positive int, got 0"),
    ],
)
def test_solver_specific_bad_options(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        planners.get(name, horizon=H, action_dim=A, low=-1.0, high=1.0, **kwargs)


@pytest.mark.parametrize("name", SOLVERS)
def test_batch_size_and_init_shape_are_checked(name):
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        make(name).plan(quadratic(make_target()), 0)
    with pytest.raises(ValueError, match=r"init must have shape \(3, 5, 2\)"):
        make(name).plan(quadratic(make_target()), B, init=torch.zeros(B, H + 1, A))
    init = torch.zeros(B, H, A)
    init[1, 2, 0] = math.nan
    with pytest.raises(ValueError, match=r"init must be finite, got 1 NaN/inf values"):
        make(name).plan(quadratic(make_target()), B, init=init)


# --- the registry ------------------------------------------------------------------------


def test_registry_builds_each_solver_and_records_its_settings():
    for name in SOLVERS:
        solver = planners.get(name, horizon=H, action_dim=A, low=-1.0, high=1.0)
        assert solver.name == name and isinstance(solver, planners.Planner)
        settings = solver.settings()
        assert json.loads(json.dumps(settings)) == settings  # JSON-ready for summary.json
        assert {k: settings[k] for k in planners.solver_options(name)} == planners.solver_options(name)
        assert settings["horizon"] == H and settings["low"] == [-1.0, -1.0]
    assert planners.get("icem", horizon=H, action_dim=A, low=-1.0, high=1.0, beta=3.0).settings()["beta"] == 3.0


def test_unknown_solver_suggests_the_closest_name():
    with pytest.raises(UnknownSolverError, match=r"unknown solver 'cme'; did you mean 'cem'.*available: cem, cem_gd"):
        planners.get("cme", horizon=H, action_dim=A, low=-1.0, high=1.0)
    with pytest.raises(UnknownSolverError, match=r"did you mean 'mppi'"):
        planners.solver_class("mmpi")
    with pytest.raises(UnknownSolverError, match=r"did you mean 'random_shooting'"):
        planners.solver_class("random_shoting")


def test_unknown_option_suggests_the_closest_one():
    with pytest.raises(ValueError, match=r"solver 'icem' has no option 'betta'; did you mean 'beta'\?.*its options: beta"):
        planners.get("icem", horizon=H, action_dim=A, low=-1.0, high=1.0, betta=2.0)
    with pytest.raises(ValueError, match=r"solver 'random_shooting' has no option 'iterations'"):
        planners.get("random_shooting", horizon=H, action_dim=A, low=-1.0, high=1.0, iterations=3)


def test_parse_options_types_values_by_the_defaults():
    assert planners.parse_options("icem", ["beta=2.5", "iterations=4", "execute_best=false", "keep-fraction=0"]) == {
        "beta": 2.5, "iterations": 4, "execute_best": False, "keep_fraction": 0.0,
    }
    for items, message in [
        (["beta"], r"solver option 'beta': expected KEY=VALUE"),
        (["beta=x"], r"option beta='x' of solver 'icem': expected a number"),
        (["beta=nan"], r"option beta='nan' of solver 'icem': expected a finite number"),
        (["iterations=2.5"], r"option iterations='2.5' of solver 'icem': expected an integer"),
        (["execute_best=maybe"], r"expected true or false"),
        (["horizon=3"], r"horizon is not a solver option"),
        (["beta=1", "beta=2"], r"solver option 'beta' given twice"),
        (["bta=1"], r"has no option 'bta'; did you mean 'beta'"),
    ]:
        with pytest.raises(ValueError, match=message):
            planners.parse_options("icem", items)


def test_planner_config_refuses_what_the_solver_does_not_take():
    from benchmarks.planning import PlannerConfig

    assert PlannerConfig().solver_kwargs() == {}
    assert PlannerConfig(planner="mppi", iterations=3, planner_options={"temperature": 0.1}).solver_kwargs() == {
        "iterations": 3, "temperature": 0.1,
    }
    with pytest.raises(UnknownSolverError, match="did you mean 'cem'"):
        PlannerConfig(planner="cme")
    with pytest.raises(ValueError, match=r"--num-elites=4 does not apply to solver 'random_shooting' \(its options: num_samples\)"):
        PlannerConfig(planner="random_shooting", num_elites=4)
    with pytest.raises(ValueError, match=r"'iterations' given both as --iterations and in the planner options"):
        PlannerConfig(iterations=3, planner_options={"iterations": 4})


# --- solver-specific behaviour ----------------------------------------------------------


def test_mppi_weights_match_hand_computation_and_ignore_infinite_costs():
    costs = torch.tensor([[1.0, 2.0, math.inf], [math.inf, math.inf, math.inf]])
    w = mppi_weights(costs, temperature=0.5)
    e = math.exp(-2.0)  # exp(-(2 - 1) / 0.5)
    torch.testing.assert_close(w[0], torch.tensor([1 / (1 + e), e / (1 + e), 0.0]))
    torch.testing.assert_close(w[1], torch.full((3,), 1 / 3))  # nothing finite: plain average


def test_icem_noise_is_coloured_by_beta_and_unit_variance():
    g = torch.Generator().manual_seed(0)
    white = coloured_noise((4000, 10, 1), beta=0.0, generator=g, device=torch.device("cpu"))[..., 0]
    red = coloured_noise((4000, 10, 1), beta=2.0, generator=g, device=torch.device("cpu"))[..., 0]

    def lag1(x):
        return (x[:, 1:] * x[:, :-1]).mean().item()

    assert abs(lag1(white)) < 0.05 and lag1(red) > 0.5  # smooth in time with beta = 2
    assert abs(white.var().item() - 1) < 0.05 and abs(red.var().item() - 1) < 0.05


def test_icem_population_decays_and_elites_carry_over_and_shift_across_plans():
    solver = ICEM(H, A, -1.0, 1.0, num_samples=100, iterations=4, num_elites=10, keep_fraction=0.3, decay=2.0)
    assert solver.call_sizes() == [100, 50, 25, 20]  # floor 2k = 20
    target = make_target()
    first = solver.plan(quadratic(target), B)
    kept = solver._kept.clone()  # (B, 3, H, A): the best 3 of the last iteration
    assert kept.shape == (B, 3, H, A)
    torch.testing.assert_close(kept[:, 0], first.actions)  # the best seen came last here

    seen = []

    def cost_fn(actions):
        seen.append(actions.clone())
        return quadratic(target)(actions)

    solver.shift(2)  # two blocks executed: the kept elites move two blocks earlier
    init = torch.zeros(B, H, A)
    solver.plan(cost_fn, B, init=init)
    torch.testing.assert_close(seen[0][:, 1:4, : H - 2], kept[:, :, 2:])
    torch.testing.assert_close(seen[0][:, 1:4, H - 2 :], torch.zeros(B, 3, 2, A))  # tail from the new mean

    solver.plan(quadratic(target[:2]), 2)  # another batch size: nothing carried over
    solver.reset()
    assert solver._kept is None


def test_icem_execute_best_false_returns_the_last_mean_with_its_cost():
    target = make_target()
    seen = []

    def cost_fn(actions):
        seen.append(actions.clone())
        return quadratic(target)(actions)

    result = ICEM(H, A, -1.0, 1.0, iterations=3, execute_best=False).plan(cost_fn, B)
    torch.testing.assert_close(result.actions, seen[-1][:, 0])
    torch.testing.assert_close(result.cost, quadratic(target)(result.actions[:, None])[:, 0])


@pytest.mark.parametrize("name", ["gd", "cem_gd"])
def test_gradient_solvers_refuse_a_cost_without_gradient(name):
    target = make_target()

    def simulator(actions):  # e.g. a cost computed by stepping a simulator in numpy
        return torch.from_numpy(quadratic(target)(actions).detach().numpy())

    with pytest.raises(NonDifferentiableCostError, match=rf"solver '{name}' needs a cost_fn differentiable"):
        make(name).plan(simulator, B)
    with pytest.raises(NonDifferentiableCostError, match="use a sampling solver"):
        make(name).plan(lambda a: torch.zeros(a.shape[:2], requires_grad=True) + 0, B)
    assert planners.solver_class(name).requires_grad
    assert not any(planners.solver_class(n).requires_grad for n in ("cem", "icem", "mppi", "random_shooting"))


def tiny_jepa(context: int = 1):
    from worldmodel.config import ModelConfig
    from worldmodel.model import JEPA

    torch.manual_seed(0)
    cfg = ModelConfig(image_size=16, action_dim=2, frameskip=2, context=context, embed_dim=16, encoder_width=8,
                      predictor_width=32, predictor_depth=1, predictor_heads=2, projector_hidden=32)
    model = JEPA(cfg).eval()
    with torch.no_grad():  # as after training: AdaLN-zero's zero init would make the actions irrelevant
        for p in model.parameters():
            if (p == 0).all():
                p.normal_(0.0, 0.05)
    return model


@pytest.mark.parametrize("name", ["gd", "cem_gd"])
def test_gradients_reach_the_actions_through_a_real_jepa_rollout(name):
    model = tiny_jepa()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        pixels = torch.randint(0, 256, (B, 2, 3, 16, 16), generator=g, dtype=torch.uint8)
        emb = model.encode(pixels)  # (B, 2, D)
    cost_fn = terminal_l2(model, emb[:, :1], emb[:, 1])
    grads = []

    def recording(actions):
        if actions.requires_grad:
            actions.register_hook(lambda grad: grads.append(grad.clone()))
        return cost_fn(actions)

    block = model.config.frameskip * model.config.action_dim
    solver = planners.get(name, horizon=3, action_dim=block, low=-1.0, high=1.0, num_samples=8, iterations=6,
                          **({"num_elites": 4, "num_refine": 4} if name == "cem_gd" else {}))
    result = solver.plan(recording, B)
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert all(g.abs().sum(dim=(2, 3)).gt(0).all() for g in grads)  # every env, every candidate
    history = result.stats["cost_history"]  # (iterations, B)
    gd_part = history[-solver.gd_iterations:] if name == "cem_gd" else history
    assert (gd_part[-1] < gd_part[0]).all(), gd_part  # the descent lowers every env's cost
    assert all(p.grad is None for p in model.parameters())  # only the actions get gradients


# --- through MPCPolicy --------------------------------------------------------------------


@pytest.mark.parametrize("name", SOLVERS)
def test_every_solver_drives_the_point_model_to_its_goals_through_mpc(name):
    model = PointModel(frameskip=2, action_dim=2)
    fast = {"random_shooting": dict(num_samples=2000), "gd": dict(num_samples=16)}.get(name, dict(num_samples=100, iterations=8))
    if name in ("cem", "icem", "mppi", "cem_gd"):
        fast["num_elites"] = 10
    solver = planners.get(name, horizon=3, action_dim=4, low=-1.0, high=1.0, seed=0, **fast)
    policy = MPCPolicy(model, solver, objective="all_steps_l2")
    start = np.array([[0.0, 0.0], [1.0, 1.0], [-1.0, 0.5]])
    goal_pos = np.array([[1.0, -1.0], [0.0, 0.0], [0.5, 1.0]])
    pos = start.copy()
    policy.reset(3)
    for _ in range(24):
        pos = step_env(pos, policy.act(render(pos), render(goal_pos)))
    assert np.linalg.norm(pos - goal_pos, axis=1).max() < 0.15, (name, pos)


def test_mpc_enables_gradients_only_for_gradient_solvers_and_resets_icem_memory():
    seen = {}

    class SpyModel(PointModel):
        def encode(self, pixels):
            seen["encode"] = torch.is_grad_enabled()
            return super().encode(pixels)

    def spy(cls):
        class Spy(cls):
            def plan(self, cost_fn, batch_size, init=None):
                seen["plan"] = torch.is_grad_enabled()
                return super().plan(cost_fn, batch_size, init)

        return Spy

    model = SpyModel(frameskip=2, action_dim=2)
    obs = render(np.zeros((2, 2)))
    for solver, plan_grad in ((spy(planners.GD)(3, 4, -1.0, 1.0, num_samples=4, iterations=2), True),
                              (spy(planners.CEM)(3, 4, -1.0, 1.0, num_samples=4, iterations=2, num_elites=2), False)):
        seen.clear()
        MPCPolicy(model, solver).act(obs, obs)
        assert seen == {"encode": False, "plan": plan_grad}  # autograd only around a gradient solver's plan

    icem = ICEM(3, 4, -1.0, 1.0, num_samples=20, iterations=2, num_elites=5)
    policy = MPCPolicy(model, icem, receding_horizon=1)
    policy.act(obs, obs)
    assert icem._kept is not None
    policy.act(obs, obs)
    policy.act(obs, obs)  # second plan: the kept elites were shifted by one block first
    policy.reset(2)
    assert icem._kept is None


# --- wm eval --planner ---------------------------------------------------------------------


def test_wm_eval_unknown_planner_suggests_the_closest(tmp_path, capsys):
    code, _, err = wm(capsys, "eval", "--ckpt", tmp_path / "ckpt", "--data", tmp_path / "d", "--out", tmp_path / "o",
                      "--planner", "cme")
    assert code == 2
    assert err.strip().splitlines() == [
        "wm eval: error: unknown solver 'cme'; did you mean 'cem' or 'icem'? available: cem, cem_gd, gd, icem, mppi, random_shooting"
    ]
    code, _, err = wm(capsys, "eval", "--ckpt", tmp_path / "ckpt", "--data", tmp_path / "d", "--out", tmp_path / "o",
                      "--planner", "mppi", "--planner-opt", "temprature=0.1")
    assert code == 2 and "no option 'temprature'; did you mean 'temperature'" in err and "Traceback" not in err



@pytest.mark.parametrize("command", ["eval", "ood", "model-or-solver"])
def test_every_planning_command_refuses_a_bad_objective_before_loading(command: str, tmp_path, capsys) -> None:
    """A misspelt objective term is one line naming it, before the (missing) checkpoint is looked at."""
    where = {"eval": ["--ckpt", tmp_path / "ckpt", "--data", tmp_path / "d"], "ood": ["--ckpt", tmp_path / "ckpt",
             "--env", "wm/TwoRoom-v0"], "model-or-solver": [tmp_path / "ckpt", "--data", tmp_path / "d"]}[command]
    code, _, err = wm(capsys, command, *where, "--out", tmp_path / "o", "--objective", "terminal_l3")
    assert code == 2 and "terminal_l3" in err and "ckpt" not in err and "Traceback" not in err


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A TwoRoom checkpoint trained for 3 steps on 4 episodes at 32x32, and 2 held-out episodes."""
    from worldmodel.cli import main

    tmp = tmp_path_factory.mktemp("solvers")
    train, heldout, ckpt = tmp / "train.lance", tmp / "heldout.lance", tmp / "ckpt"
    for out, n, seed in ((train, 4, 0), (heldout, 2, 1_000_000)):
        assert main(["collect", "--env", "wm/TwoRoom-v0", "--episodes", str(n), "--out", str(out), "--resolution", "32",
                     "--seed", str(seed)]) == 0
    assert main(["train", "--data", str(train), "--out", str(ckpt), "--steps", "3", "--batch-size", "4", "--device", "cpu",
                 "--embed-dim", "16"]) == 0
    return ckpt, heldout


TINY = {
    "cem": ["--num-samples", "8", "--iterations", "2", "--num-elites", "2"],
    "icem": ["--num-samples", "8", "--iterations", "2", "--num-elites", "2", "--planner-opt", "beta=2.5"],
    "mppi": ["--num-samples", "8", "--iterations", "2", "--num-elites", "4", "--planner-opt", "temperature=0.1"],
    "gd": ["--num-samples", "4", "--iterations", "2", "--planner-opt", "lr=0.05"],
    "cem_gd": ["--num-samples", "8", "--iterations", "2", "--num-elites", "2", "--planner-opt", "num_refine=2",
               "--planner-opt", "gd_iterations=2"],
    "random_shooting": ["--num-samples", "8"],
}


@pytest.mark.parametrize("name", SOLVERS)
def test_wm_eval_plans_with_every_solver_and_records_its_settings(name, tiny_run, tmp_path, capsys):
    ckpt, heldout = tiny_run
    out = tmp_path / "eval"
    code, stdout, err = wm(capsys, "eval", "--ckpt", ckpt, "--data", heldout, "--out", out, "--episodes", 2,
                           "--offset", 3, "--budget", 4, "--device", "cpu", "--no-video", "--horizon", 2,
                           "--planner", name, *TINY[name])
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["planner"]["planner"] == name
    solver = summary["solver"]
    assert solver["name"] == name
    assert set(solver["settings"]) >= set(planners.solver_options(name)) | {"horizon", "low", "high", "seed"}
    assert solver["settings"]["num_samples"] == int(TINY[name][1]) and solver["settings"]["horizon"] == 2
    for item in TINY[name]:
        if "=" in item:
            key, value = item.split("=")
            assert solver["settings"][key] == planners.parse_options(name, [item])[key]
    assert summary["decisions"] >= 1 and summary["seconds_per_decision"] > 0
    lines = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert [line["policy"] for line in lines] == [name] * 2 + ["random"] * 2
