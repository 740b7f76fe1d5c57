"""World-model families: the interface every model implements, and the registry that names them.

    register_family("lewm", "worldmodel.model:JEPA", ModelConfig, "LeWorldModel-style JEPA ...")
    get_family("lewm")            -> Family(name, model_cls, config_cls, help)
    build_model(config)           -> the family's model, built from its config

A family is a ``WorldModel`` subclass (encode / predict / rollout / loss, shapes below) and a
config dataclass (a ``worldmodel.config.WorldModelConfig`` subclass) whose ``family`` field
is the registry name. A checkpoint's ``config.json`` records that name, so loading builds
the right class (``worldmodel.checkpoint.load_checkpoint``). Planners see only ``encode``
and ``rollout`` (``planners.base.WorldModel``); training calls ``loss`` and logs every term
it returns.

Model classes may be registered as ``"module:attr"`` strings: they are imported on first
use, so this registry does not import every family's code (and ``worldmodel.model`` can
import ``WorldModel`` from here).
"""

from __future__ import annotations

import abc
import difflib
import importlib
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from worldmodel.config import ModelConfig, PixelConfig, PLDMConfig, WorldModelConfig


class UnknownFamilyError(ValueError):
    """A world-model family name that is not registered."""


class WorldModel(nn.Module, abc.ABC):
    """An action-conditioned latent world model: the contract every family implements.

    Shapes: B batch, T time, S candidates, H horizon, D embedding size (``config.embed_dim``;
    a family with patch tokens returns them flattened), A_block = ``config.block_dim``
    (``frameskip * action_dim``).

    ``config`` is the family's config (a ``WorldModelConfig``): it has at least
    ``image_size``, ``in_channels``, ``action_dim``, ``frameskip``, ``block_dim``,
    ``context``, ``pred_steps``, ``window``, ``embed_dim``, ``family`` and ``to_dict()``.
    """

    config: WorldModelConfig

    @abc.abstractmethod
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels uint8 (B, T, C, H, W) -> float embeddings (B, T, D)."""

    @abc.abstractmethod
    def predict(self, emb: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """emb (B, T, D), actions (B, T, A_block) -> next-embedding predictions (B, T, D).

        Output t predicts embedding t+1 from the history planning would give it: the last
        ``min(t + 1, context)`` embeddings and their action blocks.
        """

    @abc.abstractmethod
    def rollout(self, emb: torch.Tensor, actions: torch.Tensor,
                past_actions: torch.Tensor | None = None) -> torch.Tensor:
        """emb (B, T0, D), actions (B, S, H, A_block), past_actions (B, T0 - 1, A_block) or None
        -> (B, S, H, D): the embedding after each of the H blocks, keeping the last ``context``."""

    @abc.abstractmethod
    def loss(self, pixels: torch.Tensor, actions: torch.Tensor) -> dict[str, torch.Tensor]:
        """pixels uint8 (B, n, C, H, W), actions (B, n - 1, A_block) -> dict of scalar tensors.

        ``"loss"`` is the total that training back-propagates; every other key is a named
        term that training logs under its own name. A model whose `uses_episode_ids` is True
        also takes ``episode_ids`` (int (B,), each window's episode) by keyword.
        """

    @property
    def uses_episode_ids(self) -> bool:
        """Whether `loss` needs ``episode_ids=`` and batches with several windows per episode
        (``data.EpisodeGroupSampler``); False unless a family says otherwise."""
        return False


@dataclass(frozen=True)
class Family:
    """One registered family: its name, model class (or ``"module:attr"``), config class and help line."""

    name: str
    model_ref: Any
    config_cls: type[WorldModelConfig]
    help: str

    @property
    def model_cls(self) -> type[WorldModel]:
        """The model class, imported on first use when registered as ``"module:attr"``."""
        if isinstance(self.model_ref, str):
            module, _, attr = self.model_ref.partition(":")
            return getattr(importlib.import_module(module), attr)
        return self.model_ref


#: registered families by name (``register_family``); read through ``get_family``
FAMILIES: dict[str, Family] = {}


def register_family(name: str, model_cls: type[WorldModel] | str, config_cls: type[WorldModelConfig],
                    help: str) -> Family:
    """Register family ``name``: ``model_cls`` (a ``WorldModel`` subclass, or ``"module:attr"``
    naming one) built from ``config_cls`` (a ``WorldModelConfig`` dataclass whose ``FAMILY`` is
    ``name``). Registering a name twice is a ``ValueError``.
    """
    if not isinstance(name, str) or not name or name != name.strip():
        raise ValueError(f"a family name must be a non-empty string without surrounding spaces, got {name!r}")
    if name in FAMILIES:
        raise ValueError(f"world-model family {name!r} is already registered")
    if not (isinstance(config_cls, type) and (issubclass(config_cls, WorldModelConfig) or _is_config_class(config_cls))):
        raise TypeError(f"family {name!r}: config_cls must be a WorldModelConfig subclass (or a dataclass with FAMILY, "
                        f"PRESETS, from_dict, to_dict and preset), got {config_cls!r}")
    if config_cls.FAMILY != name:
        raise ValueError(f"family {name!r}: {config_cls.__name__}.FAMILY is {config_cls.FAMILY!r}, expected {name!r}")
    if not isinstance(model_cls, str) and not (isinstance(model_cls, type) and issubclass(model_cls, WorldModel)):
        raise TypeError(f"family {name!r}: model_cls must be a WorldModel subclass or 'module:attr', got {model_cls!r}")
    family = Family(name, model_cls, config_cls, help)
    FAMILIES[name] = family
    return family


def get_family(name: str) -> Family:
    """The registered family ``name``; ``UnknownFamilyError`` naming the closest on a typo."""
    if isinstance(name, str) and name in FAMILIES:
        return FAMILIES[name]
    close = difflib.get_close_matches(str(name), list(FAMILIES), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise UnknownFamilyError(f"unknown world-model family {name!r}{hint} (families: {', '.join(FAMILIES)})")


def _is_config_class(cls: type) -> bool:
    """A family config class that does not derive from ``WorldModelConfig`` (its backbone fields
    do not apply, e.g. ``dinowm``'s): a dataclass with the same class attributes and methods."""
    import dataclasses

    return dataclasses.is_dataclass(cls) and all(
        hasattr(cls, a) for a in ("FAMILY", "PRESETS", "from_dict", "to_dict", "preset"))


def build_model(config: WorldModelConfig) -> WorldModel:
    """The model of ``config.family`` built from ``config`` (freshly initialised, train mode)."""
    family_name = getattr(config, "family", None)
    if not isinstance(family_name, str):
        raise TypeError(f"build_model needs a family config (WorldModelConfig), got {type(config).__name__}")
    family = get_family(family_name)
    if not isinstance(config, family.config_cls):
        raise TypeError(f"family {family_name!r} needs a {family.config_cls.__name__}, got {type(config).__name__}")
    return family.model_cls(config)


def model_for_checkpoint(config: WorldModelConfig) -> WorldModel:
    """The model of ``config.family`` built to receive a checkpoint's weights: like `build_model`,
    but a family whose constructor loads external weights (``dinowm``'s frozen encoder) skips
    that, since the checkpoint holds them (its class's ``for_checkpoint``)."""
    cls = get_family(config.family).model_cls
    build = getattr(cls, "for_checkpoint", None)
    return build(config) if build is not None else cls(config)


def check_config(model: str | type, config: Any, expected: type[WorldModelConfig], family: str) -> None:
    """Refuse a config that is not family ``family``'s (class ``expected``), naming both families.

    ``model`` names the class being built (for the message).
    """
    name = model if isinstance(model, str) else model.__name__
    if type(config) is not expected and not (isinstance(config, expected) and config.family == family):
        given = getattr(config, "family", None)
        given_txt = f"a config of family {given!r} ({type(config).__name__})" if given else type(config).__name__
        raise TypeError(f"{name} (family {family!r}) needs a {expected.__name__}, got {given_txt}; "
                        f"build that config's model with worldmodel.families.build_model(config)")


register_family("lewm", "worldmodel.model:JEPA", ModelConfig,
                "LeWorldModel-style JEPA: encoder + AdaLN-zero predictor, MSE + SIGReg")
register_family("pldm", "worldmodel.pldm:PLDM", PLDMConfig,
                "PLDM / EB-JEPA: VICReg variance + covariance, temporal similarity, inverse dynamics")
register_family("pixel", "worldmodel.pixel:PixelModel", PixelConfig,
                "reconstruction baseline: the same encoder + predictor trained through a pixel decoder")

# DINO-WM: its config is not a WorldModelConfig (no CNN/ViT backbone fields of its own to
# train), and its module does not import this one (no import cycle); the model class is
# declared a WorldModel (virtual subclass) here.
from worldmodel.dinowm import DinoWM, DinoWMConfig  # noqa: E402

WorldModel.register(DinoWM)
register_family("dinowm", DinoWM, DinoWMConfig,
                "DINO-WM: frozen DINOv2-layout patch tokens (local safetensors weights or another checkpoint's "
                "encoder) + frame-causal ViT predictor")
