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

Sampling draws only from the generator passed in, in the space's factor order, so a
seeded environment reproduces its factors exactly. Nothing here knows a particular
environment; every env reuses these classes.
"""

from __future__ import annotations

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

    Scalars are normalised to ``float``, vectors to ``tuple[float, ...]``.
    """

    name: str
    kind: Kind
    default: Value
    train: Range
    ood: tuple[Range, ...]
    doc: str = ""
    _size: Union[int, None] = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"factor name must be a non-empty string, got {self.name!r}")
        if self.kind not in KINDS:
            raise ValueError(f"factor {self.name!r}: kind={self.kind!r}, expected one of {list(KINDS)}")
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

    def sample(self, rng: np.random.Generator, ood: bool = False) -> Value:
        """Uniform draw from the train box, or (``ood=True``) from one OOD box picked uniformly."""
        box = self.ood[int(rng.integers(len(self.ood)))] if ood else self.train
        if self._size is None:
            return float(rng.uniform(box[0], box[1]))
        return tuple(float(x) for x in rng.uniform(box[0], box[1]))

    def describe(self) -> dict:
        """JSON-serialisable summary: ``name, kind, default, train, ood, doc``."""
        return {
            "name": self.name,
            "kind": self.kind,
            "default": _jsonable(self.default),
            "train": _jsonable(self.train),
            "ood": _jsonable(self.ood),
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

    def sample(self, rng: np.random.Generator, split: str = "train") -> dict[str, Value]:
        """Draw every factor for `split` (see the module docstring) from `rng` only."""
        if split not in SPLITS:
            raise UnknownSplitError(f"unknown split {split!r}; valid splits: {list(SPLITS)}{_suggest(str(split), SPLITS)}")
        ood_kind = _SPLIT_KIND.get(split)
        out: dict[str, Value] = {}
        for f in self:
            ood = split in ("ood", "ood_all") or f.kind == ood_kind
            out[f.name] = f.sample(rng, ood=ood)
        return out

    def is_ood(self, values: Mapping[str, Any]) -> dict[str, bool]:
        """Per factor: whether its value in `values` (defaults filled in) lies outside the train box."""
        full = self.validate(values)
        return {name: self._factors[name].is_ood(v) for name, v in full.items()}

    def describe(self) -> list[dict]:
        """JSON-serialisable list, one dict per factor: ``name, kind, default, train, ood, doc``."""
        return [f.describe() for f in self]
