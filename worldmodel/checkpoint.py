"""Checkpoints as folders of JSON + safetensors; nothing is ever pickled or unpickled.

    DIR/
      config.json               {"format_version": 1, "model": {"family": NAME, the family config's fields},
                                 "step": .., "extra": {..}}   (no "family": an older checkpoint, family lewm)
      model.safetensors         the raw model state_dict
      train_state.safetensors   optimizer (and scheduler) tensors, for resuming   (optional)
      train_state.json          step, the non-tensor optimizer/scheduler state and
                                the caller's ``train_state`` dict                 (optional)
      episodes.<sha>.json       the episodes training and validation read (`worldmodel.episode_record`),
                                named by its content's SHA-256 and referenced from config.json's
                                ``extra["episodes"]``                             (optional)

A save is crash-safe at every point: the new files are written (and fsynced) into a
fresh folder ``DIR/.staging-<pid>/``, which is then renamed to ``DIR/.pending/`` in one
atomic step (the commit point: ``.pending/`` only ever holds a complete checkpoint), and
its files are moved onto DIR's with ``os.replace``, ``train_state.json`` last. Readers see
a file of ``.pending/`` in place of DIR's (`current_file`), so an interruption before the
commit leaves the previous step readable and resumable, one after it the new step; the
next save completes (rolls forward) an interrupted one and removes stale staging folders.
Every file also records the step, so a folder mixed by other means (an older version, a
hand copy) is detected on resume instead of mixing two steps.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from worldmodel.config import ADDED_MODEL_FIELDS, WorldModelConfig
from worldmodel.families import UnknownFamilyError, WorldModel, get_family, model_for_checkpoint

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
TRAIN_TENSORS_FILE = "train_state.safetensors"
TRAIN_JSON_FILE = "train_state.json"
PENDING_DIR = ".pending"  # a complete checkpoint whose files are being moved into place
STAGING_PREFIX = ".staging-"  # a checkpoint being written (incomplete until renamed to PENDING_DIR)
#: the order in which a save moves its files into place: train_state.json, the mark of a
#: complete resumable checkpoint, last
SAVE_ORDER = (TRAIN_TENSORS_FILE, MODEL_FILE, CONFIG_FILE, TRAIN_JSON_FILE)


class CheckpointError(ValueError):
    """A checkpoint folder is missing, incomplete, corrupted or does not fit the model."""


# ------------------------------------------------------------------ helpers
def current_file(directory: str | os.PathLike, name: str) -> Path:
    """The file ``name`` of checkpoint ``directory`` as it currently stands: the copy in
    ``.pending/`` that an interrupted save had not yet moved into place, else ``directory/name``."""
    pending = Path(directory) / PENDING_DIR / name
    return pending if pending.is_file() else Path(directory) / name


def _fsync_dir(path: Path) -> None:
    """Make a folder's entries (renames, new files) durable; a no-op where folders cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _finish_pending(out: Path) -> None:
    """Move the files of a committed save (``out/.pending/``) into place, then drop the folder."""
    pending = out / PENDING_DIR
    if not pending.is_dir():
        return
    names = [n for n in SAVE_ORDER if (pending / n).exists()]
    names += sorted(p.name for p in pending.iterdir() if p.name not in SAVE_ORDER)
    for name in names:
        os.replace(pending / name, out / name)
    _fsync_dir(out)
    os.rmdir(pending)
    _fsync_dir(out)


def _replace_atomically(path: Path, write) -> None:
    """Call ``write(tmp_path)``, fsync, then ``os.replace`` tmp onto ``path``."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_json(path: Path, obj: Any) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")

    _replace_atomically(path, write)


def _write_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    _replace_atomically(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from None


def _read_tensors(path: Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from None


def _step_of_tensors(path: Path) -> int | None:
    from safetensors import safe_open

    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from None
    return int(meta["step"]) if "step" in meta else None


def _flatten(obj: Any, name: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace every tensor in a nested state dict by a reference; return JSON-able data."""
    if isinstance(obj, torch.Tensor):
        tensors[name] = obj
        return {"__tensor__": name}
    if isinstance(obj, dict):
        return {"__items__": [[k, _flatten(v, f"{name}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_flatten(v, f"{name}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_flatten(v, f"{name}.{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise CheckpointError(f"cannot store {name} of type {type(obj).__name__} without pickle")


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of ``_flatten``."""
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            name = obj["__tensor__"]
            if name not in tensors:
                raise CheckpointError(f"train state refers to tensor {name!r}, missing from {TRAIN_TENSORS_FILE}")
            return tensors[name]
        if "__tuple__" in obj:
            return tuple(_unflatten(v, tensors) for v in obj["__tuple__"])
        if "__items__" in obj:
            return {k: _unflatten(v, tensors) for k, v in obj["__items__"]}
        return {k: _unflatten(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    return obj


# ---------------------------------------------------------------- public API
def save_checkpoint(
    directory: str | os.PathLike,
    model: WorldModel,
    train_state: dict | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    step: int | None = None,
    extra: dict | None = None,
) -> Path:
    """Write ``model`` (and optionally what a resume needs) to ``directory``.

    Args:
        directory: folder, created if needed; other files in it are left alone.
        model: the raw ``WorldModel`` of any family (not a compiled/DDP wrapper); its
            ``state_dict`` is saved and its config (``family`` included) goes into config.json.
        train_state: JSON-able dict stored in ``train_state.json`` (e.g. last metrics).
        optimizer, scheduler: their state dicts are stored without pickle, tensors in
            ``train_state.safetensors``, the rest in ``train_state.json``.
        step: the optimisation step reached; recorded in every file.
        extra: JSON-able metadata stored in ``config.json`` under ``"extra"``.

    A train state is written when any of ``train_state``, ``optimizer``, ``scheduler``
    is given. Returns the folder path.
    """
    model = getattr(model, "_orig_mod", model)  # unwrap torch.compile
    model = getattr(model, "module", model) if not isinstance(model, WorldModel) else model  # unwrap DDP
    if not isinstance(model, WorldModel):
        raise TypeError(f"save_checkpoint needs a WorldModel (any family), got {type(model).__name__}")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    step_meta = {"step": str(step)} if step is not None else {}
    with_train_state = train_state is not None or optimizer is not None or scheduler is not None

    # Tensors and JSON of the train state are prepared first so that a value that
    # cannot be stored fails before anything on disk changes.
    tensors: dict[str, torch.Tensor] = {}
    train_json: dict[str, Any] = {"format_version": FORMAT_VERSION, "step": step}
    if with_train_state:
        train_json["optimizer"] = _flatten(optimizer.state_dict(), "optimizer", tensors) if optimizer else None
        train_json["scheduler"] = _flatten(scheduler.state_dict(), "scheduler", tensors) if scheduler else None
        train_json["train_state"] = dict(train_state or {})
    config = {"format_version": FORMAT_VERSION, "model": model.config.to_dict(), "step": step, "extra": extra or {}}
    for name, obj in (("extra", config), ("train_state", train_json)):
        try:
            json.dumps(obj)
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{name} must be JSON-serialisable: {e}") from None

    _finish_pending(out)  # an earlier save interrupted after its commit point: complete it first
    for stale in out.glob(f"{STAGING_PREFIX}*"):  # saves interrupted before it: incomplete, dropped
        shutil.rmtree(stale, ignore_errors=True)
    stage = out / f"{STAGING_PREFIX}{os.getpid()}"
    stage.mkdir()
    if with_train_state:
        _write_tensors(stage / TRAIN_TENSORS_FILE, tensors, step_meta)
    _write_tensors(stage / MODEL_FILE, model.state_dict(), step_meta)
    _write_json(stage / CONFIG_FILE, config)
    if with_train_state:
        _write_json(stage / TRAIN_JSON_FILE, train_json)
    _fsync_dir(stage)
    os.rename(stage, out / PENDING_DIR)  # the commit point: from here on readers see the new step
    _fsync_dir(out)
    _finish_pending(out)
    return out


def _check_dir(directory: str | os.PathLike) -> Path:
    path = Path(directory)
    if not path.exists():
        raise CheckpointError(f"checkpoint directory {path} does not exist")
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} is not a directory (expected a folder with {CONFIG_FILE} and {MODEL_FILE})")
    return path


def load_extra(directory: str | os.PathLike) -> dict:
    """The ``extra`` metadata stored in ``directory/config.json`` (``{}`` if there is none).

    Training stores ``train_config`` and, since they were added, ``dataset`` (see
    `dataset_identity`) and ``episodes`` (see `save_episode_record`): what ``wm eval``
    compares with the evaluation data.
    """
    path = _check_dir(directory)
    cfg = _read_json(current_file(path, CONFIG_FILE))
    extra = cfg.get("extra") if isinstance(cfg, dict) else None
    return extra if isinstance(extra, dict) else {}


EPISODES_PREFIX, EPISODES_SUFFIX = "episodes.", ".json"


def save_episode_record(directory: str | os.PathLike, record: dict) -> dict:
    """Write an episode record (`worldmodel.episode_record`) into ``directory``, compactly.

    The file is named by its content (``episodes.<sha256[:12]>.json``), so writing a new
    record never replaces the one a saved ``config.json`` refers to; pass the returned
    dict as ``save_checkpoint(extra={"episodes": ...})``, then `prune_episode_records`.

    Returns:
        ``{"file", "sha256", "train", "val"}``: the file name, its digest and the number
        of training and validation episodes recorded.
    """
    from worldmodel.episode_record import record_counts

    text = json.dumps(record, separators=(",", ":")) + "\n"
    digest = hashlib.sha256(text.encode()).hexdigest()
    name = f"{EPISODES_PREFIX}{digest[:12]}{EPISODES_SUFFIX}"
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        tmp.write_text(text)

    if not (out / name).is_file() or hashlib.sha256((out / name).read_bytes()).hexdigest() != digest:
        _replace_atomically(out / name, write)
    return {"file": name, "sha256": digest, **record_counts(record)}


def prune_episode_records(directory: str | os.PathLike, keep: str) -> None:
    """Delete the episode record files in ``directory`` other than ``keep`` (left by earlier runs)."""
    for path in Path(directory).glob(f"{EPISODES_PREFIX}*{EPISODES_SUFFIX}"):
        if path.name != keep:
            path.unlink(missing_ok=True)


def load_episode_record(directory: str | os.PathLike) -> dict | None:
    """The episode record a checkpoint refers to, or None when it has none (a checkpoint
    written before records existed, or by a caller that gave no dataset to record).

    Raises:
        CheckpointError: config.json names a record that is missing, altered (its SHA-256
        differs) or not a valid record.
    """
    from worldmodel.episode_record import seen_episodes

    path = _check_dir(directory)
    info = load_extra(path).get("episodes")
    if not isinstance(info, dict) or not info.get("file"):
        return None
    name = str(info["file"])
    if Path(name).name != name:
        raise CheckpointError(f"{path / CONFIG_FILE} names episode record {name!r}: expected a file name in {path}")
    file = path / name
    if not file.is_file():
        raise CheckpointError(f"{file} is missing: {path / CONFIG_FILE} says the episodes training read are recorded "
                              "there (copy it with the checkpoint)")
    data = file.read_bytes()
    if hashlib.sha256(data).hexdigest() != info.get("sha256"):
        raise CheckpointError(f"{file} does not match the SHA-256 that {path / CONFIG_FILE} records: it was altered "
                              "or belongs to another run")
    try:
        record = json.loads(data)
        seen_episodes(record)  # decodes, or names what is malformed
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"{file} is not a valid episode record: {e}") from None
    return record


def dataset_identity(path: str | os.PathLike | None) -> dict | None:
    """What a checkpoint records about its training dataset: ``{"path", "env_id", "state_dim",
    "action_dim", "image_shape"}`` from the dataset's ``meta.json``, or None (no path, or no
    readable dataset there)."""
    if not path:
        return None
    from data.dataset import read_meta  # lazy: the data layer pulls in Lance

    try:
        meta = read_meta(path)
    except (OSError, ValueError):
        return None
    return {"path": str(path), **{k: meta.get(k) for k in ("env_id", "state_dim", "action_dim", "image_shape")}}


def load_config(directory: str | os.PathLike) -> WorldModelConfig:
    """Read the model config stored in ``directory/config.json``, as its family's config class.

    ``model.family`` names the family (``worldmodel.families``); a config without it was
    written before families existed and loads as ``lewm`` (``ModelConfig``), as before.
    An unknown family is a ``CheckpointError`` naming it (and the closest registered name).
    """
    path = _check_dir(directory)
    cfg = _read_json(current_file(path, CONFIG_FILE))
    if not isinstance(cfg, dict) or "model" not in cfg:
        raise CheckpointError(f"{path / CONFIG_FILE} has no 'model' section")
    version = cfg.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path / CONFIG_FILE} has format_version={version!r}; this version reads {FORMAT_VERSION}"
        )
    values = cfg["model"]
    name = values.get("family", ADDED_MODEL_FIELDS["family"]) if isinstance(values, dict) else None
    try:
        family = get_family(name)
    except UnknownFamilyError as e:
        raise CheckpointError(f"{path / CONFIG_FILE}: model.family={name!r} is not a registered world-model family: "
                              f"{e}") from None
    try:
        return family.config_cls.from_dict(values, strict=True)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path / CONFIG_FILE}: {e}") from None


def load_checkpoint(directory: str | os.PathLike, device: str | torch.device = "cpu") -> WorldModel:
    """Build the model stored in ``directory`` (its family's class) and load its weights (eval mode).

    Raises ``CheckpointError`` naming the problem: missing folder or file, bad or unknown
    family, bad config, missing/unexpected tensors, or a tensor whose shape does not fit.
    """
    path = _check_dir(directory)
    config = load_config(path)
    model = model_for_checkpoint(config)
    load_model_weights(path, model)
    return model.to(device).eval()


def load_model_weights(directory: str | os.PathLike, model: torch.nn.Module) -> None:
    """Load ``directory/model.safetensors`` into an existing ``model`` (any device), checking shapes."""
    path = _check_dir(directory)
    load_weights(model, _read_tensors(current_file(path, MODEL_FILE)), source=current_file(path, MODEL_FILE))


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str | os.PathLike = "state dict") -> None:
    """Copy ``state`` into ``model`` after checking names and shapes (CheckpointError on mismatch)."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{source} does not fit the model: missing tensors {missing[:10]}, "
                              f"unexpected tensors {unexpected[:10]}")
    for name, tensor in expected.items():
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{source}: tensor {name!r} has shape {tuple(state[name].shape)}, "
                f"the model expects {tuple(tensor.shape)}"
            )
    model.load_state_dict(state, strict=True)


def has_train_state(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` holds a complete resumable checkpoint."""
    path = Path(directory)
    return current_file(path, TRAIN_JSON_FILE).is_file() and current_file(path, MODEL_FILE).is_file()


def read_train_state(directory: str | os.PathLike) -> dict:
    """The JSON side of the train state: ``step`` and the caller's ``train_state`` dict."""
    info = _read_json(current_file(directory, TRAIN_JSON_FILE))
    if not isinstance(info, dict) or info.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{Path(directory) / TRAIN_JSON_FILE} is not a train state of format {FORMAT_VERSION}")
    return {"step": info.get("step"), "train_state": info.get("train_state") or {}}


def load_train_state(
    directory: str | os.PathLike,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
) -> int:
    """Restore ``optimizer``/``scheduler`` from ``directory``; return the saved step.

    Checks that the model weights and the train state come from the same step.
    """
    path = _check_dir(directory)
    info = _read_json(current_file(path, TRAIN_JSON_FILE))
    if not isinstance(info, dict) or info.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path / TRAIN_JSON_FILE} is not a train state of format {FORMAT_VERSION}")
    step = info.get("step")
    steps = {"model": _step_of_tensors(current_file(path, MODEL_FILE)),
             "train state": _step_of_tensors(current_file(path, TRAIN_TENSORS_FILE))}
    for what, s in steps.items():
        if s != step:
            raise CheckpointError(
                f"checkpoint in {path} is inconsistent: {TRAIN_JSON_FILE} is at step {step} but the {what} "
                f"at step {s} (a save was interrupted); delete the folder or restore a complete copy"
            )
    tensors = _read_tensors(current_file(path, TRAIN_TENSORS_FILE))
    if optimizer is not None:
        if info.get("optimizer") is None:
            raise CheckpointError(f"{path} holds no optimizer state")
        try:
            optimizer.load_state_dict(_unflatten(info["optimizer"], tensors))
        except (ValueError, KeyError, RuntimeError) as e:
            raise CheckpointError(f"optimizer state in {path} does not fit this optimizer: {e}") from None
    if scheduler is not None:
        if info.get("scheduler") is None:
            raise CheckpointError(f"{path} holds no scheduler state")
        scheduler.load_state_dict(_unflatten(info["scheduler"], tensors))
    return int(step) if step is not None else 0
