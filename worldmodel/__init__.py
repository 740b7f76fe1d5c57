"""World models: the action-conditioned JEPA, SIGReg, training, checkpoints and the ``wm`` CLI.

Public names are imported lazily (PEP 562), so ``import worldmodel`` (and ``wm --help``)
does not load torch until a model-side name is used. The training entry point is
``from worldmodel.train import train`` (``worldmodel.train`` is the module).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ModelConfig": "worldmodel.config",
    "TrainConfig": "worldmodel.config",
    "JEPA": "worldmodel.model",
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
