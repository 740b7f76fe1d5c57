"""The options of ``wm train``: nested config dataclasses parsed by tyro, with family presets and config files.

    wm train --data D --out O [--model FAMILY] [--preset NAME] [--config FILE.json] [training and model options]

Values are layered, later winning: the family config's defaults, the preset's fields,
the config file, the options on the command line; the dataset's frame size and action
size come last (``image_size``, ``in_channels``, ``action_dim`` are never options). The
options themselves come from the dataclasses (``TrainConfig`` and the family's config
class): tyro builds them, with each field's help text and the layered value as the
default shown by ``--help``, in two groups ("training options", "architecture options";
flag names without a prefix, as before: ``--lr``, ``--embed-dim``, ``--no-progress``).

A config file is a JSON object with an optional ``model`` section (family config fields,
``family`` included) and an optional ``train`` section (``TrainConfig`` fields); a
checkpoint's ``config.json`` is accepted too (its ``model`` section; ``format_version``,
``step`` and ``extra`` are ignored).

The subcommand itself is dispatched by argparse (``worldmodel/cli.py``), which reads
``--model``, ``--preset``, ``--config`` first (they decide the defaults) and hands the
rest of the command line to ``parse_train_options``.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Annotated, Any

from worldmodel.config import TrainConfig, UnknownPresetError, WorldModelConfig, all_presets

#: model config fields that come from the dataset, never from options
DATA_FIELDS = ("image_size", "in_channels", "action_dim")
#: top-level keys a config file may have (a checkpoint's config.json has the last three too)
CONFIG_FILE_KEYS = ("model", "train", "format_version", "step", "extra")
DEFAULT_FAMILY = "lewm"


@dataclasses.dataclass
class TrainOptions:
    """What ``wm train``'s command line resolves to."""

    family: str
    """the registry name of the model's family"""
    model: dict[str, Any]
    """the family config's fields, except those taken from the data (``DATA_FIELDS``)"""
    train: TrainConfig
    """the run's settings (validated)"""

    def model_config(self, **data_sizes: Any) -> WorldModelConfig:
        """The family's config with ``data_sizes`` (``image_size``, ``action_dim``, ...) filled in (validated)."""
        from worldmodel.families import get_family

        config = get_family(self.family).config_cls.from_dict({**self.model, **data_sizes})
        source = getattr(config, "encoder_from_ckpt", None)
        if source and hasattr(config, "with_encoder_from_ckpt"):  # dinowm: the source encoder's shape
            config = config.with_encoder_from_ckpt(source)
        return config


def read_config_file(path: str | Path) -> dict[str, dict]:
    """``{"model": {...}, "train": {...}}`` from a config file (either may be empty); ValueError naming the problem."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"--config {path}: no such file")
    try:
        data = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"--config {path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"--config {path} must hold a JSON object with 'model' and/or 'train' sections, "
                         f"got {type(data).__name__}")
    unknown = sorted(set(data) - set(CONFIG_FILE_KEYS))
    if unknown:
        raise ValueError(f"--config {path} has unknown sections {unknown}; expected 'model' and/or 'train'")
    sections = {}
    for key in ("model", "train"):
        value = data.get(key, {})
        if not isinstance(value, dict):
            raise ValueError(f"--config {path}: section {key!r} must be a JSON object, got {type(value).__name__}")
        sections[key] = value
    return sections


def resolve_family(model: str | None, preset: str | None, file_family: str | None) -> str:
    """The family named by ``--model``, the preset and the config file (they must agree); default ``lewm``.

    Raises ``UnknownFamilyError`` / ``UnknownPresetError`` (close-name suggestions) and
    ``ValueError`` when two of them name different families.
    """
    from worldmodel.families import get_family

    named: dict[str, str] = {}
    if model is not None:
        named["--model"] = get_family(model).name
    if preset is not None:
        presets = all_presets()
        if preset not in presets:
            import difflib

            close = difflib.get_close_matches(preset, list(presets), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UnknownPresetError(f"unknown model preset {preset!r}{hint} (presets: "
                                     + ", ".join(f"{n} ({f})" for n, f in presets.items()) + ")")
        named[f"--preset {preset}"] = presets[preset]
    if file_family is not None:
        named["--config's model.family"] = get_family(file_family).name
    families = set(named.values())
    if len(families) > 1:
        raise ValueError("the model family is named twice, differently: "
                         + ", ".join(f"{k} is {v!r}" for k, v in named.items()))
    return families.pop() if families else DEFAULT_FAMILY


def _spec(name: str, cls: type, defaults: dict[str, Any], exclude: tuple[str, ...] = ()) -> type:
    """A dataclass for tyro mirroring dataclass ``cls``: one annotated field per init field of ``cls``
    (help text from its metadata, default from ``defaults``)."""
    import tyro

    hints = typing.get_type_hints(cls)
    fields = []
    for f in dataclasses.fields(cls):
        if not f.init or f.name in exclude:
            continue
        help_text = f.metadata.get("help", f.name.replace("_", " "))
        typ = Annotated[hints[f.name], tyro.conf.arg(help=help_text)]
        fields.append((f.name, typ, dataclasses.field(default=defaults[f.name])))
    return dataclasses.make_dataclass(name, fields)


def _optional_bool_flags(argv: list[str], classes: tuple[type, ...]) -> list[str]:
    """``--NAME`` / ``--no-NAME`` for the ``Optional[bool]`` fields of ``classes`` (unset = None),
    as tyro's ``--NAME {None,True,False}``: a bare ``--amp`` is ``--amp True``, ``--no-amp`` is
    ``--amp False``; ``--amp VALUE`` passes through."""
    names = set()
    for cls in classes:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if hints.get(f.name) == typing.Optional[bool]:
                names.add(f.name.replace("_", "-"))
    out: list[str] = []
    for i, arg in enumerate(argv):
        flag = arg[2:] if arg.startswith("--") else None
        if flag in names and (i + 1 >= len(argv) or argv[i + 1] not in ("None", "True", "False")):
            out += [arg, "True"]
        elif flag is not None and flag.startswith("no-") and flag[3:] in names:
            out += [f"--{flag[3:]}", "False"]
        else:
            out.append(arg)
    return out


def parse_train_options(argv: list[str], model: str | None = None, preset: str | None = None,
                        config: str | None = None, prog: str = "wm train") -> TrainOptions:
    """Parse ``wm train``'s training and model options from ``argv`` (tyro), over the defaults that
    ``model`` (family), ``preset`` and ``config`` (a JSON file) give.

    ``--help`` prints the options (for that family, with the layered defaults) and raises
    ``SystemExit(0)``; a malformed option raises ``SystemExit(2)`` after tyro's message. A bad
    value (out of range, NaN, ...) raises ``ValueError`` naming the field.
    """
    import tyro

    from worldmodel.families import FAMILIES, get_family

    sections = read_config_file(config) if config is not None else {"model": {}, "train": {}}
    file_family = sections["model"].get("family")
    family = get_family(resolve_family(model, preset, file_family))
    cls = family.config_cls

    model_values = cls().to_dict() if _buildable(cls) else {f.name: f.default for f in dataclasses.fields(cls)}
    if preset is not None:
        model_values.update(cls.PRESETS[preset])
    if sections["model"]:
        cls.from_dict({**model_values, **sections["model"]})  # unknown keys / wrong types: named, before parsing
        model_values.update(sections["model"])
    train_values = TrainConfig().to_dict()
    if sections["train"]:
        TrainConfig.from_dict({**train_values, **sections["train"]})
        train_values.update(sections["train"])

    Training = _spec("training", TrainConfig, train_values)
    Architecture = _spec("architecture", cls, model_values, exclude=(*DATA_FIELDS, "family"))
    Spec = dataclasses.make_dataclass("Spec", [
        ("model", Annotated[str, tyro.conf.arg(
            help=f"world-model family: {', '.join(f'{n} ({f.help})' for n, f in FAMILIES.items())}; "
                 f"read before the other options: give it first with --help")],
         dataclasses.field(default=family.name)),
        ("preset", Annotated[typing.Optional[str], tyro.conf.arg(
            help="start from a named configuration: " + ", ".join(f"{n} ({f})" for n, f in all_presets().items())
                 + " (worldmodel/config.py); options given override it")],
         dataclasses.field(default=preset)),
        ("config", Annotated[typing.Optional[str], tyro.conf.arg(
            help="JSON file with 'model' and/or 'train' sections (a checkpoint's config.json works): "
                 "defaults that options given override")],
         dataclasses.field(default=config)),
        ("training", Training, dataclasses.field(default_factory=Training)),
        ("architecture", Architecture, dataclasses.field(default_factory=Architecture)),
    ])
    argv = _optional_bool_flags(list(argv), (TrainConfig, cls))
    parsed = tyro.cli(Spec, args=argv, prog=prog, config=(tyro.conf.OmitArgPrefixes,),
                      description=f"train a world model of family {family.name!r} ({family.help}) on a dataset")
    model_out = {**{k: v for k, v in model_values.items() if k in DATA_FIELDS}, **dataclasses.asdict(parsed.architecture),
                 "family": family.name}
    train_cfg = TrainConfig.from_dict(dataclasses.asdict(parsed.training))
    return TrainOptions(family=family.name, model=model_out, train=train_cfg)


def _buildable(cls: type) -> bool:
    """Whether ``cls()`` (all defaults) is a valid config (a family may need options given)."""
    try:
        cls()
    except (ValueError, TypeError):
        return False
    return True
