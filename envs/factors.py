"""Factors of variation (FoV): typed, bounded knobs of an environment, with splits.

A `Factor` is one knob (a scalar such as ``door_width`` or a vector such as an RGB
``agent_color``) with a default, a *train* box and one or more disjoint *OOD* boxes.
A value is valid if it lies in the train box or in any OOD box (component-wise,
bounds inclusive); it is out of distribution (OOD) if it lies outside the train box.

A `FactorSpace` groups the factors of one environment and offers defaults, validation
and sampling by split::

    train        every factor from its train box
    ood, ood_all every factor from its OOD boxes
    ood_visual   visual factors OOD, the rest train   (likewise ood_geometry, ood_physics)

An OOD split takes an optional *severity* level 1..`SEVERITY_LEVELS`: each OOD box is
cut into equal slices by distance from the train box (component-wise; a component where
the OOD box overlaps the train range is not sliced), level 1 the nearest slice and the
last level the farthest. Without a severity the whole OOD box is used.

Sampling draws only from the generator passed in, in the space's factor order, so a
seeded environment reproduces its factors exactly. A factor marked ``own_stream`` (one
added after the space's results were published, such as the ``distractor``) is drawn
from a stream derived from that generator without advancing it (`side_stream`), so adding
it changed no other draw: every other factor, start and goal of a seeded reset stays as it was. `factors_from_options` turns an
env's ``reset(options=...)`` into validated factor values the same way for every env. Nothing here knows a particular
environment; every env reuses these classes.
"""

from __future__ import annotations

import copy
import difflib
import math
from dataclasses import dataclass, field
from typing import Any, Iterator, Literal, Mapping, Sequence, Union

import numpy as np

Scalar = float
Vector = tuple[float, ...]
Value = Union[Scalar, Vector]
Range = tuple[Any, Any]
"""``(low, high)``: floats for a scalar factor, equal-length tuples of floats for a vector one."""

Kind = Literal["visual", "geometric", "physical"]
KINDS: tuple[str, ...] = ("visual", "geometric", "physical")

SPLITS: tuple[str, ...] = ("train", "ood", "ood_visual", "ood_geometry", "ood_physics", "ood_all")
SEVERITY_LEVELS = 3
"""OOD severity levels: 1 (just outside the train range) .. 3 (farthest)."""
RESET_OPTION_KEYS: tuple[str, ...] = ("factors", "split", "severity", "ood_factors", "state", "goal_state")
"""Keys every ``wm/`` env accepts in ``reset(options=...)``."""
_SPLIT_KIND = {"ood_visual": "visual", "ood_geometry": "geometric", "ood_physics": "physical"}


class UnknownFactorError(KeyError, ValueError):
    """A factor name that the environment does not have; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would repr-quote the message
        return str(self.args[0]) if self.args else ""


class FactorOutOfRange(ValueError):
    """A factor value outside its train range and every OOD range (or not a valid value at all)."""


class UnknownSplitError(ValueError):
    """A split name outside `SPLITS`."""


def _suggest(name: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


def _fmt_num(x: float) -> str:
    return format(x, ".6g")


def _fmt_value(v: Value) -> str:
    if isinstance(v, tuple):
        return "(" + ", ".join(_fmt_num(x) for x in v) + ")"
    return _fmt_num(v)


def _fmt_range(r: Range) -> str:
    return f"[{_fmt_value(r[0])}, {_fmt_value(r[1])}]"


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    return v


@dataclass(frozen=True)
class Factor:
    """One factor of variation.

    Args:
        name: identifier used in ``reset(options={"factors": {name: value}})`` and ``info["factors"]``.
        kind: ``"visual"``, ``"geometric"`` or ``"physical"``; picks the ``ood_<kind>`` split.
        default: value used when neither a split nor an explicit value is given; inside ``train``.
        train: ``(low, high)`` box of in-distribution values (inclusive).
        ood: one or more ``(low, high)`` boxes, each disjoint from ``train``.
        doc: one line saying what the factor changes.
        own_stream: draw it from a stream of its own (`side_stream` of the generator a
            space samples with) instead of the generator itself, so that adding this
            factor to an existing space leaves every other draw unchanged.

    Scalars are normalised to ``float``, vectors to ``tuple[float, ...]``.
    """

    name: str
    kind: Kind
    default: Value
    train: Range
    ood: tuple[Range, ...]
    doc: str = ""
    own_stream: bool = False
    _size: Union[int, None] = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"factor name must be a non-empty string, got {self.name!r}")
        if self.kind not in KINDS:
            raise ValueError(f"factor {self.name!r}: kind={self.kind!r}, expected one of {list(KINDS)}")
        if not isinstance(self.own_stream, (bool, np.bool_)):
            raise ValueError(f"factor {self.name!r}: own_stream={self.own_stream!r}, expected True or False")
        size = None if np.ndim(self.default) == 0 else len(self.default)
        object.__setattr__(self, "_size", size)
        default = self._coerce(self.default, "default")
        train = self._coerce_range(self.train, "train")
        if not isinstance(self.ood, (tuple, list)) or len(self.ood) == 0:
            raise ValueError(f"factor {self.name!r}: ood must be a non-empty tuple of (low, high) ranges")
        ood = tuple(self._coerce_range(r, "ood") for r in self.ood)
        object.__setattr__(self, "default", default)
        object.__setattr__(self, "train", train)
        object.__setattr__(self, "ood", ood)
        if not self._in_box(default, train):
            raise ValueError(f"factor {self.name!r}: default {_fmt_value(default)} outside its train range {_fmt_range(train)}")
        for r in ood:
            if not self._disjoint(r, train):
                raise ValueError(f"factor {self.name!r}: ood range {_fmt_range(r)} overlaps its train range {_fmt_range(train)}")

    # -- normalisation ---------------------------------------------------------------
    @property
    def is_vector(self) -> bool:
        """True for vector factors (e.g. RGB colours)."""
        return self._size is not None

    @property
    def size(self) -> int:
        """Number of components (1 for a scalar factor)."""
        return 1 if self._size is None else self._size

    def _coerce(self, value: Any, what: str) -> Value:
        """Plain float / tuple of floats, or ValueError naming the factor and value."""
        if self._size is None:
            if isinstance(value, (bool, np.bool_)) or np.ndim(value) != 0:
                raise FactorOutOfRange(f"{self.name}={value!r}: {what} must be a number")
            try:
                x = float(value)
            except (TypeError, ValueError):
                raise FactorOutOfRange(f"{self.name}={value!r}: {what} must be a number") from None
            if not math.isfinite(x):
                raise FactorOutOfRange(f"{self.name}={value!r}: {what} must be finite")
            return x
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise FactorOutOfRange(
                f"{self.name}={value!r}: {what} must be a sequence of {self._size} numbers"
            ) from None
        if arr.shape != (self._size,):
            raise FactorOutOfRange(
                f"{self.name}={value!r}: {what} must have {self._size} components, got shape {arr.shape}"
            )
        if not np.all(np.isfinite(arr)):
            raise FactorOutOfRange(f"{self.name}={value!r}: {what} must be finite")
        return tuple(float(x) for x in arr)

    def _coerce_range(self, r: Any, what: str) -> Range:
        if not isinstance(r, (tuple, list)) or len(r) != 2:
            raise ValueError(f"factor {self.name!r}: {what} range must be (low, high), got {r!r}")
        low, high = self._coerce(r[0], f"{what} low"), self._coerce(r[1], f"{what} high")
        if np.any(np.asarray(low) > np.asarray(high)):
            raise ValueError(f"factor {self.name!r}: {what} range {r!r} has low > high")
        return (low, high)

    @staticmethod
    def _in_box(value: Value, box: Range) -> bool:
        v, lo, hi = np.asarray(value), np.asarray(box[0]), np.asarray(box[1])
        return bool(np.all((v >= lo) & (v <= hi)))

    @staticmethod
    def _disjoint(a: Range, b: Range) -> bool:
        a_lo, a_hi, b_lo, b_hi = (np.asarray(x) for x in (a[0], a[1], b[0], b[1]))
        return bool(np.any((a_hi < b_lo) | (a_lo > b_hi)))

    # -- public API --------------------------------------------------------------------
    def validate(self, value: Any) -> Value:
        """Return `value` as a plain float / tuple of floats, or raise `FactorOutOfRange`."""
        v = self._coerce(value, "value")
        if self._in_box(v, self.train) or any(self._in_box(v, r) for r in self.ood):
            return v
        oods = ", ".join(_fmt_range(r) for r in self.ood)
        raise FactorOutOfRange(
            f"{self.name}={_fmt_value(v)} outside its ranges: train {_fmt_range(self.train)}, ood [{oods}]"
        )

    def is_ood(self, value: Any) -> bool:
        """True if a (valid) `value` lies outside the train box."""
        return not self._in_box(self._coerce(value, "value"), self.train)

    def severity_box(self, box: Range, severity: int) -> Range:
        """The slice of OOD `box` for `severity` (1..`SEVERITY_LEVELS`), see the module docstring."""
        check_severity(severity)
        lo, hi = np.atleast_1d(np.asarray(box[0], float)), np.atleast_1d(np.asarray(box[1], float))
        t_lo, t_hi = np.atleast_1d(np.asarray(self.train[0], float)), np.atleast_1d(np.asarray(self.train[1], float))
        a, b = (severity - 1) / SEVERITY_LEVELS, severity / SEVERITY_LEVELS
        out_lo, out_hi = lo.copy(), hi.copy()
        above, below = lo >= t_hi, hi <= t_lo  # box beyond the train range in this component
        span = hi - lo
        out_lo[above], out_hi[above] = lo[above] + a * span[above], lo[above] + b * span[above]
        out_lo[below], out_hi[below] = hi[below] - b * span[below], hi[below] - a * span[below]
        if self._size is None:
            return (float(out_lo[0]), float(out_hi[0]))
        return (tuple(float(x) for x in out_lo), tuple(float(x) for x in out_hi))

    def sample(self, rng: np.random.Generator, ood: bool = False, severity: int | None = None) -> Value:
        """Uniform draw from the train box, or (``ood=True``) from one OOD box picked uniformly.

        With `severity` (OOD only), from that box's severity slice (`severity_box`).
        """
        box = self.ood[int(rng.integers(len(self.ood)))] if ood else self.train
        if ood and severity is not None:
            box = self.severity_box(box, severity)
        if self._size is None:
            return float(rng.uniform(box[0], box[1]))
        return tuple(float(x) for x in rng.uniform(box[0], box[1]))

    def describe(self) -> dict:
        """JSON-serialisable summary: ``name, kind, default, train, ood, ood_severity, doc``.

        ``ood_severity[i][k - 1]`` is the range of OOD box ``i`` at severity ``k``.
        """
        return {
            "name": self.name,
            "kind": self.kind,
            "default": _jsonable(self.default),
            "train": _jsonable(self.train),
            "ood": _jsonable(self.ood),
            "ood_severity": [
                [_jsonable(self.severity_box(r, k)) for k in range(1, SEVERITY_LEVELS + 1)] for r in self.ood
            ],
            "doc": self.doc,
        }


class FactorSpace:
    """The factors of one environment, in a fixed order.

    Args:
        factors: `Factor` objects with distinct names.
    """

    def __init__(self, factors: Sequence[Factor]) -> None:
        self._factors: dict[str, Factor] = {}
        for f in factors:
            if not isinstance(f, Factor):
                raise TypeError(f"FactorSpace takes Factor objects, got {type(f).__name__}")
            if f.name in self._factors:
                raise ValueError(f"duplicate factor name {f.name!r}")
            self._factors[f.name] = f

    @property
    def names(self) -> tuple[str, ...]:
        """Factor names in order."""
        return tuple(self._factors)

    def __getitem__(self, name: str) -> Factor:
        """The factor called `name`; `UnknownFactorError` otherwise."""
        try:
            return self._factors[name]
        except (KeyError, TypeError):
            raise UnknownFactorError(
                f"unknown factor {name!r}; valid names: {list(self._factors)}{_suggest(str(name), self.names)}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._factors

    def __iter__(self) -> Iterator[Factor]:
        return iter(self._factors.values())

    def __len__(self) -> int:
        return len(self._factors)

    def __repr__(self) -> str:
        return f"FactorSpace({list(self._factors)})"

    def defaults(self) -> dict[str, Value]:
        """Every factor at its default value."""
        return {f.name: f.default for f in self}

    def validate(self, values: Mapping[str, Any]) -> dict[str, Value]:
        """Check `values` (any subset of the names), fill the rest with defaults.

        Returns a new dict in factor order holding plain floats / tuples of floats.
        Raises `UnknownFactorError` for a name not in the space and `FactorOutOfRange`
        for a value outside every range.
        """
        if not isinstance(values, Mapping):
            raise TypeError(f"factors must be a dict of name -> value, got {type(values).__name__}")
        for name in values:
            self[name]  # raises UnknownFactorError
        return {f.name: (f.validate(values[f.name]) if f.name in values else f.default) for f in self}

    def sample(self, rng: np.random.Generator, split: str = "train", severity: int | None = None) -> dict[str, Value]:
        """Draw every factor for `split` (see the module docstring) from `rng` only.

        `severity` (1..`SEVERITY_LEVELS`, OOD splits only) picks the slice of each OOD box.
        """
        if split not in SPLITS:
            raise UnknownSplitError(f"unknown split {split!r}; valid splits: {list(SPLITS)}{_suggest(str(split), SPLITS)}")
        if severity is not None:
            check_severity(severity)
            if split == "train":
                raise ValueError(f"severity={severity!r} needs an OOD split, got split='train'")
        ood_kind = _SPLIT_KIND.get(split)
        side = side_stream(rng, 1) if any(f.own_stream for f in self) else None
        out: dict[str, Value] = {}
        for f in self:
            ood = split in ("ood", "ood_all") or f.kind == ood_kind
            out[f.name] = f.sample(side if f.own_stream else rng, ood=ood, severity=severity if ood else None)
        return out

    def is_ood(self, values: Mapping[str, Any]) -> dict[str, bool]:
        """Per factor: whether its value in `values` (defaults filled in) lies outside the train box."""
        full = self.validate(values)
        return {name: self._factors[name].is_ood(v) for name, v in full.items()}

    def describe(self) -> list[dict]:
        """JSON-serialisable list, one dict per factor (see `Factor.describe`)."""
        return [f.describe() for f in self]


def side_stream(rng: np.random.Generator, n: int = 1) -> np.random.Generator:
    """A generator derived from `rng`'s current state without advancing `rng`.

    The same state and `n` give the same stream; different `n` give unrelated streams
    (PCG64 and the other jumpable bit generators: `rng`'s state jumped `n` times, far
    from anything `rng` itself will draw; others: a `SeedSequence` of two numbers drawn
    from a copy of `rng`, and `n`). Draws from it leave `rng` exactly as it was.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"side_stream: n={n!r}, expected an integer >= 1")
    bits = rng.bit_generator
    if hasattr(bits, "jumped"):
        return np.random.Generator(bits.jumped(int(n)))
    a, b = copy.deepcopy(rng).integers(0, 2**63, 2).tolist()
    return np.random.default_rng([a, b, int(n)])


def check_severity(severity: Any) -> int:
    """`severity` as an int in 1..`SEVERITY_LEVELS`, or ValueError naming the value."""
    if isinstance(severity, (bool, np.bool_)) or not isinstance(severity, (int, np.integer)) or not (
        1 <= int(severity) <= SEVERITY_LEVELS
    ):
        raise ValueError(f"severity={severity!r}: expected an integer in 1..{SEVERITY_LEVELS}")
    return int(severity)


def check_reset_options(options: Any) -> dict[str, Any]:
    """``reset(options=...)`` as a dict, or ValueError naming unknown keys (see `RESET_OPTION_KEYS`)."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise ValueError(f"options must be a dict, got {type(options).__name__}")
    unknown = sorted(set(options) - set(RESET_OPTION_KEYS))
    if unknown:
        raise ValueError(f"unknown reset option(s) {unknown}; valid options: {list(RESET_OPTION_KEYS)}")
    return dict(options)


def factors_from_options(space: FactorSpace, options: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Value]:
    """Validated factor values for a reset: defaults, or a sample of ``options["split"]``
    (at ``options["severity"]`` if given), then the factors named in ``options["ood_factors"]``
    drawn from their OOD ranges (at that severity; a one-factor-at-a-time shift), overridden
    by the explicit ``options["factors"]``.

    Explicit values are checked before anything is merged, so the error names the
    offending key and value.
    """
    split, severity = options.get("split"), options.get("severity")
    shifted = options.get("ood_factors") or ()
    if isinstance(shifted, str) or not isinstance(shifted, (list, tuple)):
        raise ValueError(f"options['ood_factors'] must be a list of factor names, got {shifted!r}")
    for name in shifted:
        space[name]  # UnknownFactorError naming the closest
    if severity is not None and (split is None or split == "train") and not shifted:
        raise ValueError(f"severity={severity!r} needs an OOD split, e.g. options={{'split': 'ood', 'severity': 2}}, "
                         f"or ood_factors")
    if severity is not None:
        check_severity(severity)
    split_severity = severity if split not in (None, "train") else None
    base = space.defaults() if split is None else space.sample(rng, split, split_severity)
    side = side_stream(rng, 2) if any(space[n].own_stream for n in shifted) else None
    for f in space:  # in the space's order, from the same generator: reproducible
        if f.name in shifted:
            base[f.name] = f.sample(side if f.own_stream else rng, ood=True, severity=severity)
    explicit = options.get("factors") or {}
    if not isinstance(explicit, Mapping):
        raise ValueError(f"options['factors'] must be a dict of name -> value, got {type(explicit).__name__}")
    space.validate(explicit)
    return space.validate({**base, **explicit})


def parse_factor_value(text: str) -> Value:
    """One ``--factor`` value as text: a number (``0.5``), or a vector as a JSON list
    (``[0.9,0.1,0.1]``) or comma-separated numbers (``0.9,0.1,0.1``).

    Raises:
        ValueError: text that is none of these, naming it.
    """
    import json

    s = text.strip()
    try:
        value = json.loads(s)
    except json.JSONDecodeError:
        try:
            value = [float(x) for x in s.split(",")]
        except ValueError:
            raise ValueError(f"factor value {text!r}: expected a number, or numbers separated by commas") from None
    if isinstance(value, bool) or not (isinstance(value, (int, float)) or (
            isinstance(value, list) and value and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value))):
        raise ValueError(f"factor value {text!r}: expected a number, or numbers separated by commas")
    return float(value) if isinstance(value, (int, float)) else tuple(float(x) for x in value)


def parse_factor_args(space: FactorSpace, items: Sequence[str] | None) -> dict[str, Value]:
    """``["NAME=VALUE", ...]`` (``--factor``, repeatable) -> validated ``{name: value}``.

    Every name must be a factor of `space` (the error suggests the closest) and every value
    inside one of its ranges (`Factor.validate`: train or OOD); only the given names are returned.

    Raises:
        ValueError / UnknownFactorError / FactorOutOfRange: naming the item and what was expected.
    """
    out: dict[str, Value] = {}
    for item in items or ():
        name, sep, text = str(item).partition("=")
        name = name.strip()
        if not sep or not name or not text.strip():
            raise ValueError(f"--factor {item!r}: expected NAME=VALUE, e.g. agent_size=0.08 or bg_color=0.9,0.9,0.9")
        if name in out:
            raise ValueError(f"--factor {name} given twice")
        out[name] = space[name].validate(parse_factor_value(text))
    return out
