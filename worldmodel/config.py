"""Configuration dataclasses for the JEPA world model and its training run.

Every field carries a one-line help text in its metadata; the ``wm`` command line
derives its options from them (``worldmodel.configargs``). This module imports no
torch, so ``wm --help`` stays fast.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional, TypeVar

C = TypeVar("C")

#: ModelConfig.pred_steps's name in configs written before it was renamed (config.json of older checkpoints)
OLD_PRED_STEPS_KEY = "horizon"

#: largest training seed (torch seeds are 64-bit; the resumed run seeds with seed + step)
MAX_SEED = 2**63 - 1


def _f(default: Any, help: str) -> Any:
    """A dataclass field with a default and a one-line help text."""
    return field(default=default, metadata={"help": help})


def _check_value(cls_name: str, name: str, value: Any, typ: Any) -> Any:
    """Return ``value`` if it fits annotation ``typ`` (int accepted for float), else raise."""
    is_union = typing.get_origin(typ) in (typing.Union, types.UnionType)
    allowed = typing.get_args(typ) if is_union else (typ,)
    if value is None and type(None) in allowed:
        return None
    for t in allowed:
        if t is bool and isinstance(value, bool):
            return value
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if t is str and isinstance(value, str):
            return value
    names = " | ".join("None" if t is type(None) else t.__name__ for t in allowed)
    raise ValueError(f"{cls_name}.{name} must be {names}, got {value!r} ({type(value).__name__})")


def _from_dict(cls: type[C], values: dict, strict: bool) -> C:
    """Build dataclass ``cls`` from ``values``, rejecting unknown keys and wrong types."""
    if not isinstance(values, dict):
        raise ValueError(f"{cls.__name__} must be built from a dict, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys {unknown}; valid keys are {names}")
    missing = [n for n in names if n not in values]
    if strict and missing:
        raise ValueError(f"{cls.__name__} is missing keys {missing}")
    kwargs = {k: _check_value(cls.__name__, k, v, hints[k]) for k, v in values.items()}
    return cls(**kwargs)


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(message)


def _require_finite(config: Any) -> None:
    """Reject NaN and infinite values in every float field of dataclass ``config``, naming the field."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{type(config).__name__}.{f.name} must be a finite number, got {value}")


#: the regularisers ``WorldModelConfig.regularizers`` may name (``worldmodel.regularizers.REGULARIZERS``)
REGULARIZER_NAMES = ("sigreg", "vicreg", "visreg", "straightening")


def _did_you_mean(name: str, known: typing.Sequence[str]) -> str:
    """'; did you mean 'X'?' for the closest of `known` to `name`, or '' when none is close."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def parse_regularizers(spec: str) -> dict[str, float]:
    """``"NAME=WEIGHT[,NAME=WEIGHT...]"`` -> ``{NAME: WEIGHT}`` (empty string: ``{}``).

    Raises ``ValueError`` naming the bad item: an unknown name (the closest suggested), a
    weight that is not a finite number >= 0, or a name given twice.
    """
    if not isinstance(spec, str):
        raise ValueError(f"regularizers must be a string 'NAME=WEIGHT[,NAME=WEIGHT...]', got {spec!r}")
    out: dict[str, float] = {}
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        name, sep, weight = (x.strip() for x in item.partition("="))
        if not sep:
            raise ValueError(f"regularizers item {item!r}: expected NAME=WEIGHT (e.g. 'straightening=0.1')")
        if name not in REGULARIZER_NAMES:
            raise ValueError(f"regularizers: unknown regulariser {name!r}{_did_you_mean(name, REGULARIZER_NAMES)} "
                             f"(known: {', '.join(REGULARIZER_NAMES)})")
        try:
            value = float(weight)
        except ValueError:
            raise ValueError(f"regularizers item {item!r}: the weight {weight!r} is not a number") from None
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"regularizers item {item!r}: the weight must be a finite number >= 0, got {weight}")
        if name in out:
            raise ValueError(f"regularizers: {name!r} is named twice in {spec!r}")
        out[name] = value
    return out


#: the encoder projectors a `WorldModelConfig` may name (``worldmodel/encoder.py``)
PROJECTORS = ("mlp", "linear", "none")

#: side of the spatial map of the ``cnn-spatial`` encoder (its embedding is SPATIAL_GRID^2 cells of D / 16 channels)
SPATIAL_GRID = 4

#: the frame encoders a `WorldModelConfig` may name (``worldmodel/encoder.py``)
ENCODERS = ("cnn", "cnn-spatial", "cnn-keypoints", "vit")


@dataclass
class WorldModelConfig:
    """What every world-model family shares: the planner-facing sizes and the encoder/predictor backbone.

    A family's config subclasses this, names itself in ``family`` (its registry name,
    ``worldmodel/families.py``) and adds the fields of its loss. Planners read
    ``image_size``, ``in_channels``, ``action_dim``, ``frameskip``, ``block_dim``,
    ``context``, ``pred_steps``, ``window`` and ``embed_dim``.
    """

    #: the registry name of the family this config class belongs to (``family`` must equal it)
    FAMILY: ClassVar[str] = ""
    #: named configurations of this family (``preset``, ``wm train --preset NAME``)
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}
    #: fields added after checkpoints of this family were first written, with the value that
    #: reproduces the older model (a config.json without them loads with these)
    ADDED_FIELDS: ClassVar[dict[str, Any]] = {"regularizers": "", "projector": "mlp"}

    family: str = _f("", "world-model family (registry name; wm train --model NAME)")
    image_size: int = _f(64, "side of the square input frames in pixels")
    in_channels: int = _f(3, "colour channels of the input frames")
    action_dim: int = _f(2, "size of one raw environment action")
    frameskip: int = _f(5, "raw actions per action block (one model step)")
    context: int = _f(1, "past embeddings the predictor sees (in training as in planning)")
    pred_steps: int = _f(1, "frames a training window predicts beyond the context (window = context + pred_steps; formerly horizon)")
    embed_dim: int = _f(64, "size D of the latent embedding")
    encoder: str = _f("cnn", "encoder backbone: 'cnn', 'cnn-spatial' (the CNN's 4x4 map kept as D/16 channels per "
                             "cell, the projector per cell: the embedding keeps where things are), 'cnn-keypoints' "
                             "(spatial-softmax keypoint positions on an S/4 map, then the projector) or 'vit'")
    encoder_width: int = _f(32, "CNN base channels (doubled at each of the 4 stride-2 blocks)")
    patch_size: int = _f(8, "ViT patch side in pixels (must divide image_size)")
    vit_width: int = _f(192, "ViT token width")
    vit_depth: int = _f(4, "ViT transformer blocks")
    vit_heads: int = _f(3, "ViT attention heads")
    projector: str = _f("mlp", "the encoder's projector: 'mlp' (Linear -> BatchNorm -> GELU -> Linear, as LeWM) or "
                               "'linear' (one linear map: the embedding stays linear in the backbone's features) or 'none' (the "
                               "backbone's features are the embedding; embed_dim must be their number)")
    projector_hidden: int = _f(256, "hidden width of the BatchNorm projector MLPs")
    predictor_width: int = _f(128, "predictor transformer width")
    predictor_depth: int = _f(3, "predictor transformer blocks")
    predictor_heads: int = _f(4, "predictor attention heads")
    predictor_head_dim: Optional[int] = _f(
        None, "predictor attention width per head (default: predictor_width / predictor_heads)"
    )
    predictor_mlp_dim: Optional[int] = _f(None, "predictor MLP hidden size (default: mlp_ratio * predictor_width)")
    predictor_residual: bool = _f(True, "predict the change of the embedding (output = input + predictor)")
    mlp_ratio: float = _f(4.0, "transformer MLP hidden size as a multiple of the width")
    dropout: float = _f(0.0, "dropout in the transformers")
    rollout_weight: float = _f(
        1.0, "weight of the open-loop rollout loss over the window's predicted steps (needs pred_steps >= 2)"
    )
    regularizers: str = _f(
        "", "extra regularisers of the embeddings added to the family's loss: 'NAME=WEIGHT[,NAME=WEIGHT...]' "
            "with NAME in " + ", ".join(REGULARIZER_NAMES) + " (worldmodel/regularizers.py); each term is "
            "logged as NAME_reg (empty: none)"
    )

    def backbone_features(self) -> int:
        """How many features the encoder's backbone hands its projector, flattened: 8 * encoder_width for
        ``cnn`` and ``cnn-keypoints``, x SPATIAL_GRID^2 = 16 cells for ``cnn-spatial``, vit_width for ``vit``. With
        projector 'none' they are the embedding, so embed_dim must equal this. The one statement of it that
        imports no torch: ``worldmodel.encoder.Encoder`` checks its backbone against it when it is built."""
        return {"cnn": 8 * self.encoder_width, "cnn-keypoints": 8 * self.encoder_width,
                "cnn-spatial": 8 * self.encoder_width * SPATIAL_GRID**2, "vit": self.vit_width}[self.encoder]

    def __post_init__(self) -> None:
        name_ = type(self).__name__
        parse_regularizers(self.regularizers)
        if type(self).FAMILY and self.family != type(self).FAMILY:
            raise ValueError(f"{name_}.family must be {type(self).FAMILY!r} ({name_} is the config of family "
                             f"{type(self).FAMILY!r}), got {self.family!r}: build a config of family {self.family!r} "
                             f"with that family's config class")
        _require_finite(self)
        for name in (
            "image_size", "in_channels", "action_dim", "frameskip", "context", "embed_dim",
            "encoder_width", "patch_size", "vit_width", "vit_depth", "vit_heads", "projector_hidden",
            "predictor_width", "predictor_depth", "predictor_heads",
        ):
            _require(getattr(self, name) >= 1, f"{name_}.{name} must be >= 1, got {getattr(self, name)}")
        _require(self.pred_steps >= 0, f"{name_}.pred_steps must be >= 0, got {self.pred_steps}")
        _require(self.context + self.pred_steps >= 2,
                 f"a training window needs >= 2 frames, got context={self.context} + pred_steps={self.pred_steps}")
        _require(self.encoder in ENCODERS, f"{name_}.encoder must be one of {', '.join(map(repr, ENCODERS))}, got "
                                           f"{self.encoder!r}{_did_you_mean(self.encoder, ENCODERS)}")
        _require(self.projector in PROJECTORS, f"{name_}.projector must be one of {', '.join(map(repr, PROJECTORS))}, "
                                               f"got {self.projector!r}{_did_you_mean(self.projector, PROJECTORS)}")
        _require(0.0 <= self.dropout < 1.0, f"{name_}.dropout must be in [0, 1), got {self.dropout}")
        _require(self.mlp_ratio > 0, f"{name_}.mlp_ratio must be > 0, got {self.mlp_ratio}")
        _require(self.rollout_weight >= 0, f"{name_}.rollout_weight must be >= 0, got {self.rollout_weight}")
        if self.projector == "none":
            features = self.backbone_features()
            _require(self.embed_dim == features,
                     f"{name_}.embed_dim={self.embed_dim}: with projector 'none' the embedding is the {self.encoder} "
                     f"backbone's {features} features, so embed_dim must be {features}")
        for name in ("predictor_head_dim", "predictor_mlp_dim"):
            value = getattr(self, name)
            _require(value is None or value >= 1, f"{name_}.{name} must be >= 1 or None, got {value}")
        _require(self.predictor_head_dim is not None or self.predictor_width % self.predictor_heads == 0,
                 f"predictor_width={self.predictor_width} must be divisible by predictor_heads={self.predictor_heads} "
                 f"(or set predictor_head_dim)")
        if self.encoder in ("cnn", "cnn-spatial", "cnn-keypoints"):
            _require(self.image_size >= 16, f"the CNN encoder needs image_size >= 16, got {self.image_size}")
            _require(self.encoder != "cnn-spatial" or self.projector == "none" or self.embed_dim % SPATIAL_GRID**2 == 0,
                     f"{name_}.embed_dim={self.embed_dim}: the cnn-spatial encoder needs a multiple of 16 "
                     f"(4 x 4 cells of embed_dim / 16 channels)")
        else:
            _require(self.image_size % self.patch_size == 0,
                     f"image_size={self.image_size} must be divisible by patch_size={self.patch_size}")
            _require(self.vit_width % self.vit_heads == 0,
                     f"vit_width={self.vit_width} must be divisible by vit_heads={self.vit_heads}")

    @property
    def block_dim(self) -> int:
        """Size of one action block: ``frameskip * action_dim``."""
        return self.frameskip * self.action_dim

    @property
    def window(self) -> int:
        """Frames in one training window: ``context + pred_steps``."""
        return self.context + self.pred_steps

    def to_dict(self) -> dict:
        """JSON-serialisable copy of every field (``family`` included)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[W], values: dict, strict: bool = False) -> W:
        """Build from a dict; unknown keys or wrong types raise ``ValueError``.

        With ``strict=True`` every field must be present (used for checkpoints), except
        those in ``ADDED_FIELDS`` (added later; a config without them loads as the older
        model). A config written before the rename of ``horizon`` to ``pred_steps`` loads:
        its ``horizon`` key is read as ``pred_steps`` (both at once is a ``ValueError``).
        A ``family`` other than this class's is a ``ValueError`` naming both.
        """
        if isinstance(values, dict) and cls.FAMILY and values.get("family", cls.FAMILY) != cls.FAMILY:
            raise ValueError(f"a config of family {values['family']!r} was given to {cls.__name__}, the config of "
                             f"family {cls.FAMILY!r}; build it with family {values['family']!r}'s config class")
        if isinstance(values, dict) and OLD_PRED_STEPS_KEY in values:
            if "pred_steps" in values:
                raise ValueError(f"{cls.__name__} has both 'pred_steps' and its old name {OLD_PRED_STEPS_KEY!r}; keep 'pred_steps'")
            values = {("pred_steps" if k == OLD_PRED_STEPS_KEY else k): v for k, v in values.items()}
        if isinstance(values, dict):  # configs written before these fields existed load as before
            values = {**cls.ADDED_FIELDS, **values}
        return _from_dict(cls, values, strict)

    @classmethod
    def preset(cls: type[W], name: str, **overrides: Any) -> W:
        """A named configuration from ``cls.PRESETS`` with some fields ``overrides``.

        Raises ``UnknownPresetError`` (a ``ValueError``) naming the closest preset on a typo,
        and naming the family of a preset that belongs to another family.
        """
        if not isinstance(name, str) or name not in cls.PRESETS:
            other = preset_family(name) if isinstance(name, str) else None
            if other is not None:
                raise UnknownPresetError(f"preset {name!r} belongs to family {other!r}, not {cls.FAMILY!r} "
                                         f"(presets of {cls.FAMILY!r}: {', '.join(cls.PRESETS) or 'none'})")
            raise UnknownPresetError(f"unknown model preset {name!r}{_did_you_mean(str(name), cls.PRESETS)} "
                                     f"(presets: {', '.join(cls.PRESETS)})")
        return cls.from_dict({**cls.PRESETS[name], **overrides})


W = TypeVar("W", bound=WorldModelConfig)


@dataclass
class ModelConfig(WorldModelConfig):
    """Family ``lewm``: the LeWorldModel-style JEPA (encoder, predictor, SIGReg; ``worldmodel.model.JEPA``)."""

    FAMILY: ClassVar[str] = "lewm"

    family: str = _f("lewm", "world-model family (registry name; wm train --model NAME)")
    sigreg_weight: float = _f(0.1, "weight of the SIGReg term in the loss")
    sigreg_projections: int = _f(512, "random 1-D projections per SIGReg evaluation")
    sigreg_knots: int = _f(17, "integration knots of the Epps-Pulley statistic on [0, 3]")
    sigreg_center: str = _f(
        "none", "what SIGReg shapes: 'none' (each time step's embeddings over the batch, as LeWorldModel) or "
                "'window' (the embeddings minus their window's mean: only the variation within an episode is pushed "
                "towards an isotropic Gaussian; what is constant over an episode, e.g. its colours, is left free) or "
                "'both' (the mean of the two terms) or 'episode' (the embeddings minus their episode's mean over "
                "the batch, whose windows come sigreg_group per episode: the variation over an episode is shaped, "
                "not only within one window)")
    sigreg_group: int = _f(
        4, "with sigreg_center='episode': windows of one episode in each training batch (batch_size must be a "
           "multiple); unused otherwise")
    sigreg_expander: int = _f(
        0, "when > 0: SIGReg shapes an expander's output (a BatchNorm MLP, projector_hidden wide, to this many "
           "dimensions, as VICReg's expander) instead of the embedding itself; the predictor and the planner "
           "keep the embedding (0: SIGReg on the embedding, as LeWorldModel)")

    idm_weight: float = _f(
        0.0, "weight of an inverse-dynamics term: MSE of an MLP's prediction of the action block a_t from "
             "(emb[t], emb[t+1]), as PLDM's; it asks the embedding to keep what the actions move (0: none, "
             "LeWorldModel's loss)")
    idm_hidden: int = _f(256, "hidden width of the inverse-dynamics MLP (used when idm_weight > 0)")
    recon_weight: float = _f(
        0.0, "weight of a reconstruction term: a small MLP decoder reads each frame's embedding and reconstructs "
             "the frame's deviation from the batch's mean frame, in recon_size x recon_size grayscale; the term is "
             "sum(err^2) / sum(per-pixel variance) (1 - R^2: static pixels carry no weight, moving objects all "
             "of it). It asks the embedding to keep what the frames show, pose included (0: none, LeWorldModel's "
             "loss); the planner does not use the decoder")
    recon_size: int = _f(32, "side of the grayscale frame the reconstruction term targets (used when recon_weight > 0)")
    recon_hidden: int = _f(512, "hidden width of the reconstruction decoder MLP (used when recon_weight > 0)")
    recon_standardise: bool = _f(
        False, "standardise each target frame over its pixels (zero mean, unit variance) before the batch's mean "
               "frame is subtracted, so brightness and contrast that differ between episodes (randomised colours) "
               "carry no weight in the reconstruction term (used when recon_weight > 0)")

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.idm_weight >= 0, f"ModelConfig.idm_weight must be >= 0, got {self.idm_weight}")  # NaN/inf: base
        _require(self.idm_hidden >= 1, f"ModelConfig.idm_hidden must be >= 1, got {self.idm_hidden}")
        _require(self.recon_weight >= 0, f"ModelConfig.recon_weight must be >= 0, got {self.recon_weight}")
        _require(self.recon_size >= 1, f"ModelConfig.recon_size must be >= 1, got {self.recon_size}")
        _require(self.recon_weight == 0 or self.recon_size <= self.image_size,  # unused without the term
                 f"ModelConfig.recon_size must be in 1..image_size ({self.image_size}) with recon_weight > 0, "
                 f"got {self.recon_size}")
        _require(self.recon_hidden >= 1, f"ModelConfig.recon_hidden must be >= 1, got {self.recon_hidden}")
        _require(self.sigreg_center in SIGREG_CENTERS,
                 f"ModelConfig.sigreg_center must be one of {', '.join(SIGREG_CENTERS)}, got {self.sigreg_center!r}")
        _require(self.sigreg_group >= 1, f"ModelConfig.sigreg_group must be >= 1, got {self.sigreg_group}")
        _require(self.sigreg_expander >= 0, f"ModelConfig.sigreg_expander must be >= 0, got {self.sigreg_expander}")
        _require(self.sigreg_projections >= 1, f"ModelConfig.sigreg_projections must be >= 1, got {self.sigreg_projections}")
        _require(self.sigreg_knots >= 2, f"ModelConfig.sigreg_knots must be >= 2, got {self.sigreg_knots}")
        _require(self.sigreg_weight >= 0, f"ModelConfig.sigreg_weight must be >= 0, got {self.sigreg_weight}")


#: the values of ``ModelConfig.sigreg_center``
SIGREG_CENTERS = ("none", "window", "both", "episode")


class UnknownPresetError(ValueError):
    """A model preset name that no family defines (or that another family defines)."""


#: ModelConfig fields added after checkpoints were first written, with the value that
#: reproduces the older architecture (a config.json without them loads with these). A
#: config.json without ``family`` was written before families existed: it is ``lewm``.
ADDED_MODEL_FIELDS: dict[str, Any] = {"predictor_head_dim": None, "predictor_mlp_dim": None, "family": "lewm",
                                      "regularizers": "", "sigreg_center": "none", "idm_weight": 0.0,
                                      "idm_hidden": 256, "sigreg_group": 4, "projector": "mlp",
                                      "sigreg_expander": 0, "recon_weight": 0.0, "recon_size": 32,
                                      "recon_hidden": 512, "recon_standardise": False}
ModelConfig.ADDED_FIELDS = ADDED_MODEL_FIELDS

#: Named architectures (``ModelConfig.preset(name)``, ``wm train --preset NAME``); fields
#: not named keep ModelConfig's defaults.
MODEL_PRESETS: dict[str, dict[str, Any]] = {
    # LeWorldModel (Maes et al. 2026, github.com/lucas-maes/le-wm, config/train/model/lewm.yaml
    # and config/train/lewm.yaml): ViT-Tiny encoder (patch 14, 224x224, width 192, 12 blocks,
    # 3 heads) -> CLS -> BatchNorm projector (hidden 2048) -> 192-d embedding; a 6-block
    # AdaLN-zero causal predictor of width 192 with 16 heads of 64 and MLP 2048 over a
    # history of 3 embeddings, output through a BatchNorm projector (not residual);
    # frameskip 5; SIGReg weight 0.09 with 1024 projections, 17 knots; one predicted step
    # per window, no rollout loss. Not reproduced: its 0.1 predictor dropout (our
    # ``dropout`` would also apply to the encoder) and its action encoder (Conv1d + MLP).
    "lewm": dict(
        image_size=224, frameskip=5, context=3, pred_steps=1, embed_dim=192, encoder="vit",
        patch_size=14, vit_width=192, vit_depth=12, vit_heads=3, mlp_ratio=4.0, projector_hidden=2048,
        predictor_width=192, predictor_depth=6, predictor_heads=16, predictor_head_dim=64,
        predictor_mlp_dim=2048, predictor_residual=False, sigreg_weight=0.09, sigreg_projections=1024,
        sigreg_knots=17, rollout_weight=0.0,
    ),
    # The same structure at CPU scale, on the 64x64 frames of the benchmark recipes: ViT on 8x8
    # patches (64 tokens + CLS), width 128 in 4 blocks of 2 heads of 64 (LeWorldModel's head
    # width), BatchNorm projectors (hidden 512) to a 128-d embedding, a 3-block AdaLN-zero
    # predictor of width 128 (2 heads of 64, MLP 512), the published SIGReg (0.09, 1024
    # projections, 17 knots). 2.0 M parameters, 40 GFLOP per training step of 32 windows
    # (wm bench train; ~0.6 s on one core of this CPU).
    "lewm-tiny": dict(
        image_size=64, frameskip=5, context=3, pred_steps=1, embed_dim=128, encoder="vit",
        patch_size=8, vit_width=128, vit_depth=4, vit_heads=2, mlp_ratio=4.0, projector_hidden=512,
        predictor_width=128, predictor_depth=3, predictor_heads=2, predictor_head_dim=64,
        predictor_mlp_dim=512, predictor_residual=False, sigreg_weight=0.09, sigreg_projections=1024,
        sigreg_knots=17, rollout_weight=0.0,
    ),
    # The same structure, test-sized (28x28 frames, width 32): unit tests and smoke runs.
    "lewm-micro": dict(
        image_size=28, frameskip=5, context=3, pred_steps=1, embed_dim=32, encoder="vit",
        patch_size=14, vit_width=32, vit_depth=2, vit_heads=2, mlp_ratio=4.0, projector_hidden=64,
        predictor_width=32, predictor_depth=2, predictor_heads=4, predictor_head_dim=16,
        predictor_mlp_dim=64, predictor_residual=False, sigreg_weight=0.09, sigreg_projections=64,
        sigreg_knots=17, rollout_weight=0.0,
    ),
}


ModelConfig.PRESETS = MODEL_PRESETS

#: The backbone of ``lewm-micro`` (ViT on 28x28 frames, history 3): the tiny presets of the other families use it.
_TINY_BACKBONE = {k: v for k, v in MODEL_PRESETS["lewm-micro"].items() if not k.startswith("sigreg") and k != "rollout_weight"}


@dataclass
class PLDMConfig(WorldModelConfig):
    """Family ``pldm``: encoder + predictor trained with VICReg variance and covariance, temporal
    similarity and an inverse-dynamics head (PLDM, Sobal et al. 2025; EB-JEPA) (``worldmodel.pldm.PLDM``).

    loss = pred_weight * MSE(pred, emb[1:]) + std_weight * std + cov_weight * cov
           + sim_t_weight * |emb[t+1] - emb[t]|^2 + idm_weight * MSE(idm(emb[t], emb[t+1]), a_t)
           + rollout_weight * rollout

    Defaults are EB-JEPA's best two-rooms model (github.com/facebookresearch/eb_jepa,
    examples/ac_video_jepa/cfgs/train.yaml ``model.regularizer``: cov_coeff 8, std_coeff 16,
    sim_coeff_t 12, idm_coeff 1, std/cov over every time step, no projector; README: removing the
    IDM term drops success to 1%). The ``pldm-wall`` preset has PLDM's own wall coefficients
    (github.com/vladisai/PLDM, pldm/configs/wall/icml/ds_1500k.yaml: std_coeff 3.9843, cov_coeff
    6.9238, sim_coeff_t 0.74242, idm coeff 1.072; its std_coeff_t 0.24535 term is not reproduced).
    """

    FAMILY: ClassVar[str] = "pldm"

    family: str = _f("pldm", "world-model family (registry name; wm train --model NAME)")
    pred_weight: float = _f(1.0, "weight of the teacher-forced prediction MSE")
    std_weight: float = _f(16.0, "weight of the VICReg variance hinge (alpha; EB-JEPA 16)")
    cov_weight: float = _f(8.0, "weight of the VICReg covariance term (beta; EB-JEPA 8)")
    sim_t_weight: float = _f(12.0, "weight of the temporal similarity |z_t+1 - z_t|^2 (delta; EB-JEPA 12)")
    idm_weight: float = _f(1.0, "weight of the inverse-dynamics action MSE (omega; EB-JEPA 1)")
    std_margin: float = _f(1.0, "target standard deviation of each embedding dimension (VICReg gamma)")
    idm_hidden: int = _f(256, "hidden width of the inverse-dynamics MLP")

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("pred_weight", "std_weight", "cov_weight", "sim_t_weight", "idm_weight"):
            _require(getattr(self, name) >= 0, f"PLDMConfig.{name} must be >= 0, got {getattr(self, name)}")
        _require(self.std_margin > 0, f"PLDMConfig.std_margin must be > 0, got {self.std_margin}")
        _require(self.idm_hidden >= 1, f"PLDMConfig.idm_hidden must be >= 1, got {self.idm_hidden}")


PLDM_PRESETS: dict[str, dict[str, Any]] = {
    # lewm-micro's backbone (28x28 frames, width 32) with EB-JEPA's coefficients (the defaults): tests and smoke runs.
    "pldm-tiny": dict(_TINY_BACKBONE, rollout_weight=0.0),
    # PLDM's published wall coefficients (see PLDMConfig) on the default CNN backbone.
    "pldm-wall": dict(std_weight=3.9843, cov_weight=6.9238, sim_t_weight=0.74242, idm_weight=1.072),
}
PLDMConfig.PRESETS = PLDM_PRESETS


@dataclass
class PixelConfig(WorldModelConfig):
    """Family ``pixel``: the same encoder + predictor, trained to reconstruct pixels through a decoder
    (the JEPA-vs-reconstruction baseline; ``worldmodel.pixel.PixelModel``). No SIGReg: the
    reconstruction keeps the embeddings informative.

    loss = recon_weight * MSE(decode(emb), frames) + pred_recon_weight * MSE(decode(pred), next frames)
           + pred_weight * MSE(pred, stopgrad(emb[1:])) + rollout_weight * rollout
    """

    FAMILY: ClassVar[str] = "pixel"

    family: str = _f("pixel", "world-model family (registry name; wm train --model NAME)")
    decoder_width: int = _f(8, "channels of the decoder's last up-sampling stage (doubled per earlier stage); the "
                               "default 8 makes decoding a 64x64 frame cost about what encoding it does with the "
                               "default CNN (40 vs 32 MFLOP; 32 would be 612 MFLOP, 19x the encoder)")
    recon_weight: float = _f(1.0, "weight of reconstructing each frame from its own embedding")
    pred_recon_weight: float = _f(1.0, "weight of reconstructing the next frame from the predicted embedding")
    pred_weight: float = _f(1.0, "weight of the latent prediction MSE (targets not back-propagated into the encoder)")

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.decoder_width >= 1, f"PixelConfig.decoder_width must be >= 1, got {self.decoder_width}")
        for name in ("recon_weight", "pred_recon_weight", "pred_weight"):
            _require(getattr(self, name) >= 0, f"PixelConfig.{name} must be >= 0, got {getattr(self, name)}")


PIXEL_PRESETS: dict[str, dict[str, Any]] = {
    "pixel-tiny": dict(_TINY_BACKBONE, decoder_width=16, rollout_weight=0.0),
}
PixelConfig.PRESETS = PIXEL_PRESETS

#: the config class of each built-in family (``worldmodel.families`` registers them with their models)
BUILTIN_CONFIGS: dict[str, type[WorldModelConfig]] = {"lewm": ModelConfig, "pldm": PLDMConfig, "pixel": PixelConfig}


def preset_family(name: str) -> str | None:
    """The family whose config class defines preset ``name`` (None if none does)."""
    from_registry = _registered_config_classes()
    for family, cls in from_registry.items():
        if name in cls.PRESETS:
            return family
    return None


def all_presets() -> dict[str, str]:
    """Every preset name -> its family, over the registered families."""
    return {name: family for family, cls in _registered_config_classes().items() for name in cls.PRESETS}


def _registered_config_classes() -> dict[str, type[WorldModelConfig]]:
    """The config class of every family: the built-ins plus those registered in ``worldmodel.families``
    (read only if that module was imported: this module imports no torch)."""
    import sys

    families = sys.modules.get("worldmodel.families")
    extra = {} if families is None else {name: f.config_cls for name, f in families.FAMILIES.items()}
    return {**BUILTIN_CONFIGS, **extra}


@dataclass
class TrainConfig:
    """One training run: data, output folder, optimisation and logging."""

    # Optional[...] rather than `X | None`: configargs maps typing.Union fields to options.
    data: Optional[str] = _f(None, "dataset directory (holds steps.lance/, episodes.lance/, meta.json)")
    out: str = _f("runs/jepa", "output directory for checkpoints, metrics.jsonl and train_config.json")
    steps: int = _f(3000, "optimisation steps in total (a resumed run continues up to this)")
    batch_size: int = _f(64, "windows per batch (at least 2: BatchNorm and SIGReg use batch statistics)")
    lr: float = _f(1e-3, "peak learning rate")
    min_lr_ratio: float = _f(0.1, "final learning rate of the cosine decay, as a fraction of lr")
    weight_decay: float = _f(0.05, "AdamW weight decay (not applied to norms and biases)")
    warmup_steps: int = _f(100, "linear warm-up steps")
    grad_clip: float = _f(1.0, "clip the global gradient norm to this (0 disables)")
    seed: int = _f(0, "random seed (model init, data order, SIGReg projections)")
    device: str = _f("auto", "auto | cpu | cuda | cuda:N | mps")
    amp: Optional[bool] = _f(None, "bfloat16 autocast: --amp on any device (CPU included), --no-amp never; "
                                   "unset: on CUDA only")
    log_every: int = _f(25, "steps between metric lines in metrics.jsonl")
    val_every: int = _f(250, "steps between held-out evaluations (0 disables)")
    val_batches: int = _f(8, "batches per held-out evaluation")
    ckpt_every: int = _f(500, "steps between checkpoints (one is always written at the end)")
    num_workers: int = _f(0, "DataLoader worker processes")
    num_threads: Optional[int] = _f(None, "torch CPU threads (default: leave torch's setting alone)")
    val_fraction: float = _f(0.1, "fraction of episodes (the last ones) held out for validation")
    cache: bool = _f(True, "keep decoded training windows in RAM")
    progress: bool = _f(True, "show progress on stderr: a bar on a terminal, else a plain line every 15 s")
    grad_accum: int = _f(1, "micro-batches of batch_size accumulated per optimisation step (effective batch: "
                            "grad_accum x batch_size; BatchNorm and SIGReg statistics stay per micro-batch)")
    compile: bool = _f(False, "run the model's loss through torch.compile (the first steps compile: minutes on CPU)")
    tensorboard: bool = _f(True, "also write TensorBoard event files beside metrics.jsonl (rank 0)")
    augment: str = _f("none", "training-frame augmentation: none | frame-color (each frame its own random channel "
                              "permutation and gains: colour becomes unpredictable) | window-color (one such "
                              "transform per window, all its frames: colour randomised, still predictable) | "
                              "episode-color (one per episode of the batch, all its windows: for "
                              "sigreg_center=episode) | episode-mix (per episode, a colour matrix that also mixes "
                              "the channels, so objects' colours change relative to one another; worldmodel/augment.py)")

    def __post_init__(self) -> None:
        _require_finite(self)
        for name in ("steps", "log_every", "ckpt_every", "val_batches", "grad_accum"):
            _require(getattr(self, name) >= 1, f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "val_every", "num_workers"):
            _require(getattr(self, name) >= 0, f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        _require(self.batch_size >= 2, f"TrainConfig.batch_size must be >= 2 (the model's BatchNorm and SIGReg "
                                       f"need at least two windows per batch), got {self.batch_size}")
        _require(0 <= self.seed <= MAX_SEED, f"TrainConfig.seed must be in [0, {MAX_SEED}], got {self.seed}")
        _require(self.lr > 0, f"TrainConfig.lr must be > 0, got {self.lr}")
        _require(0.0 <= self.min_lr_ratio <= 1.0, f"TrainConfig.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        _require(self.weight_decay >= 0, f"TrainConfig.weight_decay must be >= 0, got {self.weight_decay}")
        _require(self.grad_clip >= 0, f"TrainConfig.grad_clip must be >= 0, got {self.grad_clip}")
        _require(0.0 <= self.val_fraction < 1.0, f"TrainConfig.val_fraction must be in [0, 1), got {self.val_fraction}")
        from worldmodel.augment import check_augment

        check_augment(self.augment)
        _require(self.num_threads is None or self.num_threads >= 1,
                 f"TrainConfig.num_threads must be >= 1 or None, got {self.num_threads}")

    def to_dict(self) -> dict:
        """JSON-serialisable copy of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict, strict: bool = False) -> "TrainConfig":
        """Build from a dict; unknown keys or wrong types raise ``ValueError``."""
        return _from_dict(cls, values, strict)
