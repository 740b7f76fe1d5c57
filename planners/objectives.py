"""Planning objectives: turn a world model, a context and a goal into a ``CostFn``.

An objective is a factory ``(model, context_emb (B, T0, D), goal_emb (B, D),
past_actions=None, goal_state=None) -> CostFn``. Objectives here are weighted sums of
registered *terms* (``TERMS``), written as a spec string on the command line::

    terminal_l2                      # LeWorldModel's cost, weight 1
    terminal_l2=1,effort=0.01        # plus a small control-effort penalty
    all_steps_l2=1,state=0.1         # every step towards the goal, plus the state probe

Terms (all (B, S), lower is better; pred = predicted embeddings (B, S, H, D)):

- ``terminal_l2``: ``sum_D (pred[:, :, -1] - goal)^2``, LeWorldModel's planning cost (the
  squared distance summed over dimensions, not averaged).
- ``all_steps_l2``: ``sum_h w_h sum_D (pred[:, :, h] - goal)^2``, a true sum over the H
  planned steps with per-step weights ``w`` (default all 1).
- ``min_step_l2``: ``min_h sum_D (pred[:, :, h] - goal)^2``, the closest the plan comes to the
  goal at any planned step: the model-side analogue of the oracle's ``--oracle-reduce min``
  (a candidate that passes the goal is not charged for drifting past it before the horizon ends).
- ``terminal_l1``: ``sum_D |pred[:, :, -1] - goal|``.
- ``state``: ``sum_g ((probe(pred[:, :, -1]) - goal_state) / std)_g^2`` with a
  ``StateProbe`` (a linear map from an embedding to the env's goal layout, fitted on the
  training data: ``benchmarks.state_probe``), dimensions normalised by the dataset's standard
  deviation. ``goal_state`` (B, G) is the env's goal when known, else ``probe(goal_emb)``.
- ``effort``: ``sum_t ||a_t||^2`` over the raw actions of the plan.
- ``effort_diff``: ``sum_t ||a_{t+1} - a_t||^2`` over consecutive raw actions.

Raw actions: a planning action (A values per block) is split into raw actions of
``model.config.action_dim`` values (``frameskip`` of them per block; one per block
when the planner searches held actions and ``MPCPolicy`` repeats them, which it does
before calling the cost, so the terms always see ``frameskip`` raw actions per block).

The rollout is computed once per ``CostFn`` call and shared by every term; terms that do
not need it (the effort terms) never cause one.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from planners.base import CostFn, WorldModel

__all__ = [
    "OBJECTIVES",
    "TERMS",
    "CompositeObjective",
    "Objective",
    "ObjectiveTerm",
    "StateProbe",
    "TermInputs",
    "UnknownObjectiveError",
    "all_steps_l2",
    "get_objective",
    "parse_objective",
    "parse_step_weights",
    "terminal_l2",
]

Objective = Callable[..., CostFn]
"""(model, context_emb (B, T0, D), goal_emb (B, D), past_actions (B, T0-1, A) | None[, goal_state (B, G)]) -> CostFn."""


class UnknownObjectiveError(ValueError):
    """An objective term name that is not in ``TERMS`` (the message suggests the closest)."""


# ---------------------------------------------------------------------------- the state probe


@dataclass
class StateProbe:
    """A linear read-out of the env's goal layout from an embedding: ``emb @ weight + bias``.

    Fitted by ridge regression on a training dataset's embeddings and goal layouts
    (``benchmarks.state_probe.fit_state_probe``); the ``state`` term divides its errors by
    ``std``, the dataset's standard deviation of each goal dimension (a dimension with
    ``std == 0`` is constant in the data and is left out of the cost).
    """

    weight: torch.Tensor
    """(D, G) embedding -> goal layout."""
    bias: torch.Tensor
    """(G,)."""
    std: torch.Tensor
    """(G,) dataset standard deviation of each goal dimension (>= 0)."""
    info: dict = field(default_factory=dict)
    """Where it came from (dataset, frames, fit quality); JSON-able."""

    def __post_init__(self) -> None:
        if self.weight.ndim != 2:
            raise ValueError(f"StateProbe.weight must be (D, G), got shape {tuple(self.weight.shape)}")
        G = self.weight.shape[1]
        for name in ("bias", "std"):
            t = getattr(self, name)
            if t.shape != (G,):
                raise ValueError(f"StateProbe.{name} must have shape ({G},), got {tuple(t.shape)}")
        for name in ("weight", "bias", "std"):
            if not torch.isfinite(getattr(self, name)).all():
                raise ValueError(f"StateProbe.{name} holds NaN or inf")
        if (self.std < 0).any():
            raise ValueError("StateProbe.std must be >= 0")

    @property
    def embed_dim(self) -> int:
        """D."""
        return int(self.weight.shape[0])

    @property
    def goal_dim(self) -> int:
        """G."""
        return int(self.weight.shape[1])

    def __call__(self, emb: torch.Tensor) -> torch.Tensor:
        """emb (..., D) -> goal layout (..., G)."""
        return emb @ self.weight.to(emb) + self.bias.to(emb)

    def scaled_sq_error(self, emb: torch.Tensor, goal_state: torch.Tensor) -> torch.Tensor:
        """``sum_g ((probe(emb) - goal_state) / std)_g^2`` over the dimensions with std > 0.

        Args:
            emb: (B, S, D) embeddings.
            goal_state: (B, G) goal layouts.

        Returns:
            (B, S).
        """
        std = self.std.to(emb)
        keep = std > 0
        inv = torch.where(keep, 1.0 / torch.where(keep, std, torch.ones_like(std)), torch.zeros_like(std))
        return ((self(emb) - goal_state[:, None].to(emb)) * inv).pow(2).sum(-1)


# ---------------------------------------------------------------------------- terms


@dataclass
class TermInputs:
    """What a term reads; ``pred`` is rolled out on first use and then shared."""

    actions: torch.Tensor
    """(B, S, H, A) the candidates being scored."""
    goal_emb: torch.Tensor
    """(B, D)."""
    raw_action_dim: int
    """Size of one raw action (A is a multiple of it)."""
    rollout: Callable[[], torch.Tensor]
    """() -> (B, S, H, D), computed at most once."""
    step_weights: torch.Tensor | None = None
    """(H,) per-step weights of ``all_steps_l2`` (None: all 1)."""
    probe: StateProbe | None = None
    goal_state: torch.Tensor | None = None
    """(B, G) or None (the probe's read-out of ``goal_emb`` is used)."""
    _pred: torch.Tensor | None = None

    @property
    def pred(self) -> torch.Tensor:
        """(B, S, H, D) predicted embeddings (one rollout, however many terms read it)."""
        if self._pred is None:
            self._pred = self.rollout()
        return self._pred

    def raw_actions(self) -> torch.Tensor:
        """(B, S, H * A / a, a) the plan as consecutive raw actions of a = ``raw_action_dim`` values."""
        B, S, H, A = self.actions.shape
        return self.actions.reshape(B, S, H * (A // self.raw_action_dim), self.raw_action_dim)


@dataclass(frozen=True)
class ObjectiveTerm:
    """One registered cost term: ``fn(TermInputs) -> (B, S)``."""

    name: str
    fn: Callable[[TermInputs], torch.Tensor]
    help: str
    needs_probe: bool = False


def _terminal_l2(x: TermInputs) -> torch.Tensor:
    return (x.pred[:, :, -1] - x.goal_emb[:, None]).pow(2).sum(-1)


def _all_steps_l2(x: TermInputs) -> torch.Tensor:
    per_step = (x.pred - x.goal_emb[:, None, None]).pow(2).sum(-1)  # (B, S, H)
    if x.step_weights is None:
        return per_step.sum(-1)
    H = per_step.shape[-1]
    if x.step_weights.shape != (H,):
        raise ValueError(f"step_weights has {x.step_weights.numel()} values but the plan has H={H} steps: "
                         f"give one weight per planned step")
    return (per_step * x.step_weights.to(per_step)).sum(-1)


def _min_step_l2(x: TermInputs) -> torch.Tensor:
    return (x.pred - x.goal_emb[:, None, None]).pow(2).sum(-1).amin(-1)  # (B, S, H) -> (B, S)


def _terminal_l1(x: TermInputs) -> torch.Tensor:
    return (x.pred[:, :, -1] - x.goal_emb[:, None]).abs().sum(-1)


def _state(x: TermInputs) -> torch.Tensor:
    probe = x.probe
    assert probe is not None  # checked when the objective is built
    goal_state = x.goal_state if x.goal_state is not None else probe(x.goal_emb)
    return probe.scaled_sq_error(x.pred[:, :, -1], goal_state)


def _effort(x: TermInputs) -> torch.Tensor:
    return x.actions.pow(2).sum((-2, -1))


def _effort_diff(x: TermInputs) -> torch.Tensor:
    raw = x.raw_actions()  # (B, S, N, a)
    return (raw[:, :, 1:] - raw[:, :, :-1]).pow(2).sum((-2, -1))


TERMS: dict[str, ObjectiveTerm] = {
    t.name: t
    for t in (
        ObjectiveTerm("terminal_l2", _terminal_l2, "sum_D (pred[H] - goal)^2, LeWorldModel's cost"),
        ObjectiveTerm("all_steps_l2", _all_steps_l2, "sum_h w_h sum_D (pred[h] - goal)^2 (step weights w, default 1)"),
        ObjectiveTerm("min_step_l2", _min_step_l2, "min_h sum_D (pred[h] - goal)^2, the plan's closest step"),
        ObjectiveTerm("terminal_l1", _terminal_l1, "sum_D |pred[H] - goal|"),
        ObjectiveTerm("state", _state, "sum_g ((probe(pred[H]) - goal_state) / std)^2, a linear state probe",
                      needs_probe=True),
        ObjectiveTerm("effort", _effort, "sum of squared raw actions"),
        ObjectiveTerm("effort_diff", _effort_diff, "sum of squared differences of consecutive raw actions"),
    )
}
"""Registered objective terms by name."""

_ROLLOUT_FREE = {"effort", "effort_diff"}


# ---------------------------------------------------------------------------- parsing


def _unknown(name: str) -> UnknownObjectiveError:
    close = difflib.get_close_matches(name, list(TERMS), n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return UnknownObjectiveError(f"unknown objective {name!r}{hint} (terms: {', '.join(TERMS)})")


def parse_objective(spec: str) -> dict[str, float]:
    """Parse ``"name[=weight],name[=weight],..."`` into ``{name: weight}`` (weight 1 when omitted).

    Raises:
        UnknownObjectiveError: a name not in ``TERMS`` (the closest is suggested).
        ValueError: an empty or malformed spec, a repeated name, a weight that is not a
            finite number >= 0, or no positive weight at all; the message names the value.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"objective {spec!r}: expected terms like 'terminal_l2' or 'terminal_l2=1,effort=0.01' "
                         f"(terms: {', '.join(TERMS)})")
    weights: dict[str, float] = {}
    for part in spec.split(","):
        item = part.strip()
        if not item:
            raise ValueError(f"objective {spec!r}: an empty term (two commas, or a comma at an end)")
        name, sep, value = (s.strip() for s in item.partition("="))
        if not name or (sep and not value) or "=" in value:
            raise ValueError(f"objective {spec!r}: term {item!r} is not NAME or NAME=WEIGHT")
        if name not in TERMS:
            raise _unknown(name)
        if name in weights:
            raise ValueError(f"objective {spec!r}: term {name!r} is given twice")
        try:
            weight = float(value) if sep else 1.0
        except ValueError:
            raise ValueError(f"objective {spec!r}: the weight of {name!r} is {value!r}, not a number") from None
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"objective {spec!r}: the weight of {name!r} is {value}; expected a finite number >= 0")
        weights[name] = weight
    if not any(w > 0 for w in weights.values()):
        raise ValueError(f"objective {spec!r}: every weight is 0; at least one term needs a positive weight")
    return weights


def parse_step_weights(text: str | Sequence[float] | None) -> list[float] | None:
    """Per-step weights of ``all_steps_l2`` from ``"w1,w2,..."`` (or a sequence); None/"" -> None.

    Raises:
        ValueError: a value that is not a finite number >= 0, or all zero, named.
    """
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    items = [s.strip() for s in text.split(",")] if isinstance(text, str) else list(text)
    weights = []
    for item in items:
        try:
            w = float(item)
        except (TypeError, ValueError):
            raise ValueError(f"step weights {text!r}: {item!r} is not a number") from None
        if not math.isfinite(w) or w < 0:
            raise ValueError(f"step weights {text!r}: {item!r} is not a finite number >= 0")
        weights.append(w)
    if not any(w > 0 for w in weights):
        raise ValueError(f"step weights {text!r}: every weight is 0")
    return weights


# ---------------------------------------------------------------------------- objectives


def _check_inputs(context_emb: torch.Tensor, goal_emb: torch.Tensor, past_actions: torch.Tensor | None) -> None:
    if context_emb.ndim != 3:
        raise ValueError(f"context_emb must have shape (B, T0, D), got {tuple(context_emb.shape)}")
    B, T0, D = context_emb.shape
    if goal_emb.shape != (B, D):
        raise ValueError(f"goal_emb must have shape (B, D) = {(B, D)}, got {tuple(goal_emb.shape)}")
    if past_actions is not None and (past_actions.ndim != 3 or past_actions.shape[:2] != (B, T0 - 1)):
        raise ValueError(f"past_actions must have shape (B, T0 - 1, A) = ({B}, {T0 - 1}, A), got {tuple(past_actions.shape)}")


def _rollout(
    model: WorldModel, context_emb: torch.Tensor, actions: torch.Tensor, past_actions: torch.Tensor | None
) -> torch.Tensor:
    """actions (B, S, H, A) -> predicted embeddings (B, S, H, D), shape-checked.

    ``past_actions`` is passed only when given, so models without that argument work
    with a single context frame.
    """
    if past_actions is None:
        pred = model.rollout(context_emb, actions)
    else:
        pred = model.rollout(context_emb, actions, past_actions=past_actions)
    B, S, H = actions.shape[:3]
    D = context_emb.shape[-1]
    if pred.shape != (B, S, H, D):
        raise ValueError(f"model.rollout must return (B, S, H, D) = {(B, S, H, D)}, got {tuple(pred.shape)}")
    return pred


class CompositeObjective:
    """A weighted sum of ``TERMS``: an objective factory sharing one rollout between its terms.

    Args:
        weights: ``{term name: weight >= 0}`` (a spec string goes through ``parse_objective``
            first); terms of weight 0 are not computed.
        step_weights: (H,) weights of ``all_steps_l2``'s steps (None: all 1).
        state_probe: the ``StateProbe`` the ``state`` term needs.

    Calling it as ``objective(model, context_emb (B, T0, D), goal_emb (B, D), past_actions
    (B, T0-1, A) | None, goal_state (B, G) | None)`` returns the ``CostFn`` actions (B, S, H, A)
    -> cost (B, S) = ``sum_k weight_k * term_k``; ``.terms(...)`` gives each term apart.
    """

    def __init__(
        self,
        weights: Mapping[str, float] | str,
        step_weights: Sequence[float] | torch.Tensor | None = None,
        state_probe: StateProbe | None = None,
    ) -> None:
        if isinstance(weights, str):
            weights = parse_objective(weights)
        else:
            weights = parse_objective(",".join(f"{k}={v}" for k, v in dict(weights).items()))
        self.weights = {k: w for k, w in weights.items() if w > 0}
        sw = parse_step_weights(step_weights.tolist() if isinstance(step_weights, torch.Tensor) else step_weights)
        self.step_weights = None if sw is None else torch.tensor(sw, dtype=torch.float32)
        if "state" in self.weights and state_probe is None:
            raise ValueError("the 'state' objective term needs a state probe (fitted on the training data: "
                             "benchmarks.state_probe.load_or_fit_state_probe); none was given")
        self.state_probe = state_probe
        self.needs_rollout = any(k not in _ROLLOUT_FREE for k in self.weights)

    @property
    def spec(self) -> str:
        """The objective as a spec string, e.g. ``"terminal_l2=1.0,effort=0.01"``."""
        return ",".join(f"{k}={w:g}" for k, w in self.weights.items())

    def __repr__(self) -> str:
        return f"CompositeObjective({self.spec!r})"

    def _inputs_fn(
        self,
        model: WorldModel,
        context_emb: torch.Tensor,
        goal_emb: torch.Tensor,
        past_actions: torch.Tensor | None,
        goal_state: torch.Tensor | None,
    ) -> Callable[[torch.Tensor], TermInputs]:
        _check_inputs(context_emb, goal_emb, past_actions)
        probe = self.state_probe if "state" in self.weights else None
        if probe is not None:
            if probe.embed_dim != goal_emb.shape[-1]:
                raise ValueError(f"the state probe reads {probe.embed_dim}-d embeddings but the model's are "
                                 f"{goal_emb.shape[-1]}-d: it was fitted for another model")
            if goal_state is not None and tuple(goal_state.shape) != (goal_emb.shape[0], probe.goal_dim):
                raise ValueError(f"goal_state must have shape (B, G) = {(goal_emb.shape[0], probe.goal_dim)}, "
                                 f"got {tuple(goal_state.shape)}")
        raw_dim = int(getattr(model.config, "action_dim", 0) or 0)

        def inputs(actions: torch.Tensor) -> TermInputs:
            if actions.ndim != 4 or actions.shape[0] != goal_emb.shape[0]:
                raise ValueError(f"actions must have shape (B, S, H, A) with B={goal_emb.shape[0]}, got {tuple(actions.shape)}")
            a = raw_dim if raw_dim and actions.shape[-1] % raw_dim == 0 else actions.shape[-1]
            return TermInputs(
                actions=actions,
                goal_emb=goal_emb,
                raw_action_dim=a,
                rollout=lambda: _rollout(model, context_emb, actions, past_actions),
                step_weights=self.step_weights,
                probe=probe,
                goal_state=goal_state,
            )

        return inputs

    def __call__(
        self,
        model: WorldModel,
        context_emb: torch.Tensor,
        goal_emb: torch.Tensor,
        past_actions: torch.Tensor | None = None,
        goal_state: torch.Tensor | None = None,
    ) -> CostFn:
        """The ``CostFn`` (B, S, H, A) -> (B, S): one rollout, the weighted sum of the terms."""
        inputs = self._inputs_fn(model, context_emb, goal_emb, past_actions, goal_state)
        weights = self.weights

        def cost_fn(actions: torch.Tensor) -> torch.Tensor:
            x = inputs(actions)
            total = None
            for name, w in weights.items():
                term = TERMS[name].fn(x) * w
                total = term if total is None else total + term
            return total

        return cost_fn

    def terms(
        self,
        model: WorldModel,
        context_emb: torch.Tensor,
        goal_emb: torch.Tensor,
        past_actions: torch.Tensor | None = None,
        goal_state: torch.Tensor | None = None,
    ) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
        """Like calling the objective, but the function returns each unweighted term (B, S) by name."""
        inputs = self._inputs_fn(model, context_emb, goal_emb, past_actions, goal_state)

        def term_fn(actions: torch.Tensor) -> dict[str, torch.Tensor]:
            x = inputs(actions)
            return {name: TERMS[name].fn(x) for name in self.weights}

        return term_fn


terminal_l2 = CompositeObjective({"terminal_l2": 1.0})
"""Cost = ``sum_D (pred[:, :, -1] - goal)^2`` (B, S): LeWorldModel's terminal latent distance."""

all_steps_l2 = CompositeObjective({"all_steps_l2": 1.0})
"""Cost = ``sum_h sum_D (pred[:, :, h] - goal)^2`` (B, S): a true sum over the H steps."""

OBJECTIVES: dict[str, Objective] = {
    "terminal_l2": terminal_l2,
    "all_steps_l2": all_steps_l2,
    **{name: CompositeObjective({name: 1.0}) for name in TERMS if name not in ("terminal_l2", "all_steps_l2", "state")},
}
"""Single-term objectives by name (``state`` needs a probe: build it with ``get_objective``)."""


def get_objective(
    spec: str,
    step_weights: Sequence[float] | str | None = None,
    state_probe: StateProbe | None = None,
) -> Objective:
    """The objective a spec names: ``"terminal_l2"`` or a weighted sum ``"terminal_l2=1,effort=0.01"``.

    Args:
        spec: term names with optional weights (``parse_objective``).
        step_weights: per-step weights of ``all_steps_l2`` (``"1,1,2"`` or a sequence).
        state_probe: needed by the ``state`` term.

    Returns:
        an objective factory; a bare registered name without options returns ``OBJECTIVES[name]``.

    Raises:
        UnknownObjectiveError / ValueError as ``parse_objective``; ``state`` without a probe.
    """
    if not isinstance(spec, str):
        raise UnknownObjectiveError(f"unknown objective {spec!r}; expected a spec string such as 'terminal_l2'")
    sw = parse_step_weights(step_weights) if isinstance(step_weights, str) else step_weights
    if spec.strip() in OBJECTIVES and sw is None and state_probe is None:
        return OBJECTIVES[spec.strip()]
    return CompositeObjective(spec, step_weights=sw, state_probe=state_probe)
