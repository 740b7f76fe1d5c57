"""CEM: finds optima, respects bounds, is deterministic, batches its scoring, warm-starts."""

from __future__ import annotations

import math

import pytest
import torch

from planners import CEM, PlanResult

B, H, A = 3, 5, 2


def quadratic(target: torch.Tensor):
    """cost_fn (B, S, H, A) -> (B, S): squared distance to a per-env target (B, H, A)."""

    def cost_fn(actions: torch.Tensor) -> torch.Tensor:
        return (actions - target[:, None]).pow(2).sum(dim=(-1, -2))

    return cost_fn


def make_target(seed: int = 1, scale: float = 0.8) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand((B, H, A), generator=g) * 2 - 1) * scale


def test_finds_quadratic_optimum_per_env():
    target = make_target()
    result = CEM(H, A, low=-1.0, high=1.0).plan(quadratic(target), batch_size=B)
    assert isinstance(result, PlanResult)
    assert result.actions.shape == (B, H, A)
    assert result.cost.shape == (B,)
    assert (result.actions - target).abs().max() < 0.05
    # The reported cost is the cost of the returned actions.
    torch.testing.assert_close(result.cost, quadratic(target)(result.actions[:, None])[:, 0])


def test_lands_on_bound_when_optimum_is_outside():
    target = torch.full((B, H, A), 3.0)
    target[..., 1] = -2.5
    low, high = torch.tensor([-1.0, -0.5]), torch.tensor([1.0, 0.5])
    seen = []

    def cost_fn(actions):
        seen.append(actions.clone())
        return quadratic(target)(actions)

    result = CEM(H, A, low=low, high=high).plan(cost_fn, batch_size=B)
    torch.testing.assert_close(result.actions[..., 0], torch.full((B, H), 1.0), rtol=0, atol=0.01)
    torch.testing.assert_close(result.actions[..., 1], torch.full((B, H), -0.5), rtol=0, atol=0.01)
    samples = torch.stack(seen)
    assert (samples >= low).all() and (samples <= high).all()


def test_deterministic_under_seed():
    target = make_target()
    kwargs = dict(horizon=H, action_dim=A, low=-1.0, high=1.0, num_samples=50, iterations=5, num_elites=5)
    a = CEM(**kwargs, seed=7).plan(quadratic(target), B)
    b = CEM(**kwargs, seed=7).plan(quadratic(target), B)
    c = CEM(**kwargs, seed=8).plan(quadratic(target), B)
    assert torch.equal(a.actions, b.actions) and torch.equal(a.cost, b.cost)
    assert not torch.equal(a.actions, c.actions)


def test_scores_all_envs_and_samples_in_one_call_per_iteration():
    shapes = []

    def cost_fn(actions):
        shapes.append(tuple(actions.shape))
        assert not torch.is_grad_enabled()
        return actions.pow(2).sum(dim=(-1, -2))

    result = CEM(H, A, -1.0, 1.0, num_samples=40, iterations=6, num_elites=4).plan(cost_fn, B)
    assert shapes == [(B, 40, H, A)] * 6
    assert result.stats["iterations"] == 6
    assert result.stats["cost_history"].shape == (6, B)
    # The answer is the best candidate seen over all iterations.
    torch.testing.assert_close(result.cost, result.stats["cost_history"].min(dim=0).values)
    assert result.stats["std_mean"] >= 0.05


def test_warm_start_is_used():
    target = make_target()
    result = CEM(H, A, -1.0, 1.0, iterations=1).plan(quadratic(target), B, init=target)
    assert result.cost.max() < 1e-10
    torch.testing.assert_close(result.actions, target)


def test_init_of_shape_h_a_broadcasts_and_bad_init_shape_raises():
    target = make_target()
    shared = target[0]
    result = CEM(H, A, -1.0, 1.0, iterations=1).plan(quadratic(shared.expand(B, H, A)), B, init=shared)
    assert result.cost.max() < 1e-10
    with pytest.raises(ValueError, match=r"init must have shape"):
        CEM(H, A, -1.0, 1.0).plan(quadratic(target), B, init=torch.zeros(B, H + 1, A))


def test_nan_costs_are_never_chosen():
    target = make_target()

    def cost_fn(actions):
        cost = quadratic(target)(actions)
        return torch.where(actions[..., 0, 0] > 0, torch.full_like(cost, math.nan), cost)

    result = CEM(H, A, -1.0, 1.0, iterations=5).plan(cost_fn, B)
    assert torch.isfinite(result.cost).all()
    assert (result.actions[:, 0, 0] <= 0).all()


def test_cost_fn_of_wrong_shape_raises():
    with pytest.raises(ValueError, match=r"cost_fn must return shape"):
        CEM(H, A, -1.0, 1.0, num_samples=10, num_elites=2).plan(lambda a: a.sum(dim=(-1,)), B)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(horizon=0), "horizon must be a positive int"),
        (dict(horizon=2.5), "horizon must be a positive int"),
        (dict(action_dim=-1), "action_dim must be a positive int"),
        (dict(num_samples=0), "num_samples must be a positive int"),
        (dict(iterations=True), "iterations must be a positive int"),
        (dict(num_samples=10, num_elites=11), r"num_elites=11 must be <= num_samples=10"),
        (dict(low=1.0, high=1.0), "low must be < high"),
        (dict(low=[-1.0, -1.0, -1.0]), r"low must be a float or have shape \(2,\)"),
        (dict(high=float("inf")), "high must be finite"),
        (dict(init_std=0.0), "init_std must be a finite float > 0"),
        (dict(min_std=-0.1), "min_std must be a finite float >= 0"),
        (dict(seed="x"), "seed must be an int"),
    ],
)
def test_argument_validation(kwargs, message):
    args = dict(horizon=H, action_dim=A, low=-1.0, high=1.0) | kwargs
    with pytest.raises(ValueError, match=message):
        CEM(**args)


def test_batch_size_validation():
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        CEM(H, A, -1.0, 1.0).plan(quadratic(make_target()), 0)
