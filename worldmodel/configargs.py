"""Derive command-line options from config dataclasses (one source of truth)."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")


def _field_help(f: dataclasses.Field) -> str:
    return f.metadata.get("help", f.name.replace("_", " "))


def add_dataclass_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    exclude: tuple[str, ...] = (),
    defaults: dict[str, Any] | None = None,
    unset_default: bool = False,
) -> None:
    """Add a ``--field-name`` option for every scalar field of dataclass ``cls``.

    The option's type and default come from the field; its help from
    ``field(metadata={"help": ...})``. Booleans take ``--x/--no-x``. ``defaults``
    overrides the dataclass defaults shown and used (e.g. a demo's smaller budget).
    ``unset_default``: options not given parse as None (the help still shows the
    default), so a caller can tell given options from defaults (``wm train --preset``).
    """
    hints = typing.get_type_hints(cls)
    defaults = defaults or {}
    for f in dataclasses.fields(cls):
        if f.name in exclude or not f.init:
            continue
        typ = hints[f.name]
        origin = typing.get_origin(typ)
        if origin is typing.Union or origin is types.UnionType:
            args = [a for a in typing.get_args(typ) if a is not type(None)]
            typ = args[0] if len(args) == 1 else str
        default = defaults.get(f.name, f.default if f.default is not dataclasses.MISSING else None)
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{_field_help(f)} (default: {default})"
        if unset_default:
            default = None
        if typ is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif typ in (int, float, str):
            parser.add_argument(flag, dest=f.name, type=typ, default=default, help=help_text, metavar=typ.__name__.upper())


def dataclass_from_args(cls: type[T], args: argparse.Namespace, **overrides: Any) -> T:
    """Build ``cls`` from the parsed options that match its fields (plus ``overrides``)."""
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    values = {k: v for k, v in vars(args).items() if k in names and v is not None}
    values.update(overrides)
    return cls(**values)
