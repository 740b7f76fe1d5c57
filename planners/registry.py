"""The solvers by name: ``planners.get("cem", horizon=5, action_dim=2, low=-1, high=1, ...)``.

Every solver implements ``Planner.plan(cost_fn, batch_size, init) -> PlanResult`` (see
``planners/base.py``), scores all B x S candidates in one ``cost_fn`` call per iteration,
clips to the bounds, warm-starts from ``init`` and draws from its own ``torch.Generator``.

    >>> import planners
    >>> planners.available()
    ['cem', 'cem_gd', 'gd', 'icem', 'mppi', 'random_shooting']
    >>> planners.solver_options("mppi")["temperature"]
    0.5
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import math
from collections.abc import Iterable
from typing import Any

from planners.solver import Solver

__all__ = [
    "SOLVERS",
    "UnknownSolverError",
    "available",
    "get",
    "parse_options",
    "solver_class",
    "solver_options",
    "check_options",
]

#: name -> "module:Class"
SOLVERS: dict[str, str] = {
    "cem": "planners.cem:CEM",
    "icem": "planners.icem:ICEM",
    "mppi": "planners.mppi:MPPI",
    "gd": "planners.gd:GD",
    "cem_gd": "planners.cem_gd:CEMGD",
    "random_shooting": "planners.random_shooting:RandomShooting",
}

#: constructor arguments that describe the problem, not the solver's settings
PROBLEM_ARGS = ("horizon", "action_dim", "low", "high", "seed", "device")


class UnknownSolverError(ValueError):
    """A solver name that is not registered; the message suggests the closest names."""


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.5)
    return ("did you mean " + " or ".join(repr(c) for c in close) + "? ") if close else ""


def available() -> list[str]:
    """Sorted names of every registered solver."""
    return sorted(SOLVERS)


def solver_class(name: str) -> type[Solver]:
    """The class registered as ``name``.

    Raises:
        UnknownSolverError: ``name`` is not registered (suggests the closest names).
    """
    if not isinstance(name, str) or name not in SOLVERS:
        hint = _did_you_mean(name, SOLVERS) if isinstance(name, str) else ""
        raise UnknownSolverError(f"unknown solver {name!r}; {hint}available: {', '.join(available())}")
    module, cls = SOLVERS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def solver_options(name: str) -> dict[str, Any]:
    """The settings of solver ``name`` with their defaults (problem arguments excluded)."""
    params = inspect.signature(solver_class(name).__init__).parameters
    return {k: p.default for k, p in params.items() if k != "self" and k not in PROBLEM_ARGS}


def check_options(name: str, options: dict[str, Any]) -> None:
    """Refuse options that solver ``name`` does not take, suggesting the closest ones.

    Raises:
        UnknownSolverError: unknown solver; ValueError: an unknown option.
    """
    known = solver_options(name)
    for key in options:
        if key not in known:
            raise ValueError(
                f"solver {name!r} has no option {key!r}; {_did_you_mean(key, known)}"
                f"its options: {', '.join(sorted(known))}"
            )


def get(name: str, **kwargs: Any) -> Solver:
    """Build solver ``name`` from keyword arguments (``horizon``, ``action_dim``, ``low``,
    ``high`` and any of ``solver_options(name)``; ``seed``, ``device``).

    Raises:
        UnknownSolverError: unknown name; ValueError: unknown option or bad value.
    """
    cls = solver_class(name)
    check_options(name, {k: v for k, v in kwargs.items() if k not in PROBLEM_ARGS})
    return cls(**kwargs)


def _convert(name: str, key: str, text: str, default: Any) -> Any:
    """``text`` from the command line as the type of the option's default."""
    if isinstance(default, bool):
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"option {key}={text!r} of solver {name!r}: expected true or false")
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"option {key}={text!r} of solver {name!r}: expected an integer") from None
    if isinstance(default, float):
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"option {key}={text!r} of solver {name!r}: expected a number") from None
        if not math.isfinite(value):
            raise ValueError(f"option {key}={text!r} of solver {name!r}: expected a finite number")
        return value
    return text


def parse_options(name: str, items: Iterable[str]) -> dict[str, Any]:
    """``["beta=2.5", "iterations=10"]`` -> ``{"beta": 2.5, "iterations": 10}``, typed like
    each option's default and checked against solver ``name``'s options.

    Raises:
        UnknownSolverError: unknown solver; ValueError: not KEY=VALUE, unknown or repeated
        option, or a value of the wrong type (each naming the item).
    """
    known = solver_options(name)
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ValueError(f"solver option {item!r}: expected KEY=VALUE, e.g. iterations=10")
        if key in PROBLEM_ARGS:
            raise ValueError(f"solver option {item!r}: {key} is not a solver option (it is set by the planner settings)")
        check_options(name, {key: None})
        if key in out:
            raise ValueError(f"solver option {key!r} given twice")
        out[key] = _convert(name, key, text, known[key])
    return out
