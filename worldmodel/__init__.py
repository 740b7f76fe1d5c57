"""World models: the families (JEPA ``lewm``, ``pldm``, ``pixel``; ``worldmodel.families``), SIGReg,
training, checkpoints and the ``wm`` CLI.

Public names are imported lazily (PEP 562), so ``import worldmodel`` (and ``wm --help``)
does not load torch until a model-side name is used. The training entry point is
``from worldmodel.train import train`` (``worldmodel.train`` is the module).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ModelConfig": "worldmodel.config",
    "WorldModelConfig": "worldmodel.config",
    "PLDMConfig": "worldmodel.config",
    "PixelConfig": "worldmodel.config",
    "TrainConfig": "worldmodel.config",
    "WorldModel": "worldmodel.families",
    "build_model": "worldmodel.families",
    "get_family": "worldmodel.families",
    "register_family": "worldmodel.families",
    "FAMILIES": "worldmodel.families",
    "JEPA": "worldmodel.model",
    "PLDM": "worldmodel.pldm",
    "PixelModel": "worldmodel.pixel",
    "SIGReg": "worldmodel.sigreg",
    "Encoder": "worldmodel.encoder",
    "Predictor": "worldmodel.predictor",
    "CheckpointError": "worldmodel.checkpoint",
    "save_checkpoint": "worldmodel.checkpoint",
    "load_checkpoint": "worldmodel.checkpoint",
    "load_config": "worldmodel.checkpoint",
    "load_train_state": "worldmodel.checkpoint",
    "resolve_device": "worldmodel.device",
    "ProgressBar": "worldmodel.progress",
    "JsonlLogger": "worldmodel.progress",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'worldmodel' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
