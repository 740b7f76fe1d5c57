"""Arrow schemas of the two tables and the `meta.json` record of a dataset.

`SCHEMA_VERSION` describes the on-disk layout and is independent of the package
version: bump it when a column changes meaning or type.
"""

from __future__ import annotations

import numbers
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa

from . import columns as C
from .codecs import GROUPED_CODECS, check_codec

SCHEMA_VERSION = 1
FORMAT = "worldmodel-episodes"
STATE_DTYPES = ("float16", "float32", "float64")
ACTION_DTYPES = ("float16", "float32", "float64", "int8", "int16", "int32", "int64")
EXTRA_DTYPES = ACTION_DTYPES + ("uint8", "uint16", "bool")
EXTRA_PREFIX = "extra_"
"""Extra per-step observation columns are named ``extra_<name>`` (see `steps_schema`)."""

# JPEG/PNG bytes are already compressed: ask Lance not to zstd them again.
_NO_COMPRESSION = {"lance-encoding:compression": "none"}


def pixels_type(codec: str, image_shape: Sequence[int]) -> pa.DataType:
    """Arrow type of the pixels column: fixed_size_list<uint8>[H*W*3] for raw, binary otherwise
    (one JPEG/PNG per row; h264: a group blob on each group's first row, empty values between)."""
    check_codec(codec)
    if codec == "raw":
        h, w, c = (int(s) for s in image_shape)
        return pa.list_(pa.uint8(), h * w * c)
    return pa.binary()


def is_camera(spec: Mapping[str, Any]) -> bool:
    """True for an extra observation that is an RGB image (uint8 (H, W, 3)): stored with the dataset's codec."""
    shape = list(spec["shape"])
    return spec["dtype"] == "uint8" and len(shape) == 3 and shape[2] == 3


def extra_type(codec: str, spec: Mapping[str, Any]) -> pa.DataType:
    """Arrow type of an extra column: like `pixels` for cameras, else fixed_size_list<dtype>[prod(shape)]."""
    if is_camera(spec):
        return pixels_type(codec, spec["shape"])
    return pa.list_(pa.from_numpy_dtype(np.dtype(spec["dtype"])), int(np.prod(spec["shape"], dtype=np.int64)))


def steps_schema(
    codec: str,
    image_shape: Sequence[int],
    action_dim: int,
    state_dim: int,
    state_dtype: str = "float64",
    action_dtype: str = "float32",
    extras: Mapping[str, Mapping[str, Any]] | None = None,
) -> pa.Schema:
    """Schema of the steps table (one row per observation).

    `extras` maps an extra observation name to ``{"dtype", "shape"}``; each becomes a
    column ``extra_<name>`` after the fixed ones.
    """
    if state_dtype not in STATE_DTYPES:
        raise ValueError(f"state dtype {state_dtype!r} not supported; expected one of {STATE_DTYPES}")
    if action_dtype not in ACTION_DTYPES:
        raise ValueError(f"action dtype {action_dtype!r} not supported; expected one of {ACTION_DTYPES}")
    pix_meta = None if codec == "raw" else _NO_COMPRESSION
    fields = [
        pa.field(C.EPISODE_ID, pa.int64(), nullable=False),
        pa.field(C.STEP, pa.int32(), nullable=False),
        pa.field(C.PIXELS, pixels_type(codec, image_shape), nullable=False, metadata=pix_meta),
        pa.field(C.ACTION, pa.list_(pa.from_numpy_dtype(np.dtype(action_dtype)), int(action_dim)), nullable=False),
        pa.field(C.STATE, pa.list_(pa.from_numpy_dtype(np.dtype(state_dtype)), int(state_dim)), nullable=False),
        pa.field(C.REWARD, pa.float32(), nullable=False),
        pa.field(C.TERMINATED, pa.bool_(), nullable=False),
        pa.field(C.TRUNCATED, pa.bool_(), nullable=False),
    ]
    for name, spec in (extras or {}).items():
        meta = _NO_COMPRESSION if is_camera(spec) and codec != "raw" else None
        fields.append(pa.field(EXTRA_PREFIX + name, extra_type(codec, spec), nullable=False, metadata=meta))
    return pa.schema(fields)


def _factor_value_type(name: str, value: Any) -> pa.DataType:
    if isinstance(value, (bool, np.bool_)):
        return pa.bool_()
    if isinstance(value, numbers.Integral):
        return pa.int64()
    if isinstance(value, numbers.Real):
        return pa.float64()
    if isinstance(value, str):
        return pa.string()
    if isinstance(value, (tuple, list, np.ndarray)) and all(isinstance(v, numbers.Real) for v in np.asarray(value).ravel().tolist()):
        return pa.list_(pa.float64())
    raise ValueError(f"factor {name}={value!r}: unsupported type {type(value).__name__} (expected number, bool, str or vector of numbers)")


# Lance (14.0.2) misreads a table holding a struct with no fields, so an empty factor
# dict is stored as a struct with this one placeholder field, hidden from readers.
EMPTY_FACTORS_FIELD = "__no_factors__"


def factors_type(factors: Mapping[str, Any]) -> pa.StructType:
    """Struct type inferred from one factor dict: numbers -> double/int64, vectors -> list<double>."""
    if not factors:
        return pa.struct([pa.field(EMPTY_FACTORS_FIELD, pa.bool_())])
    return pa.struct([pa.field(str(k), _factor_value_type(str(k), v)) for k, v in factors.items()])


def normalize_factors(factors: Mapping[str, Any], struct: pa.StructType) -> dict:
    """Plain-Python factor dict matching `struct`; raises SchemaMismatchError on other names."""
    from .errors import SchemaMismatchError

    expected = [struct.field(i).name for i in range(struct.num_fields)]
    if expected == [EMPTY_FACTORS_FIELD] and not factors:
        return {EMPTY_FACTORS_FIELD: None}
    if expected == [EMPTY_FACTORS_FIELD]:
        expected = []
    if sorted(expected) != sorted(str(k) for k in factors):
        raise SchemaMismatchError(f"factor names {sorted(str(k) for k in factors)} do not match the dataset's {sorted(expected)}")
    out = {}
    for name in expected:
        value = factors[name]
        typ = struct.field(name).type
        if pa.types.is_list(typ):
            arr = np.asarray(value, dtype=np.float64).ravel()
            out[name] = [float(v) for v in arr]
        elif pa.types.is_boolean(typ):
            out[name] = bool(value)
        elif pa.types.is_integer(typ):
            out[name] = int(value)
        elif pa.types.is_floating(typ):
            out[name] = float(value)
        else:
            out[name] = str(value)
    return out


def factors_from_row(row: Mapping[str, Any] | None) -> dict:
    """Factor dict as read back: vectors become tuples of floats (as `FactorSpace.validate` returns)."""
    if not row:
        return {}
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in row.items() if k != EMPTY_FACTORS_FIELD}


def episodes_schema(factors: pa.StructType, success_step: bool = True) -> pa.Schema:
    """Schema of the episodes table (one row per committed episode).

    `success_step`: with the optional ``success_step`` column (int32, nullable; datasets
    created before it existed lack it, and appends to them leave it out).
    """
    fields = [
        pa.field(C.EPISODE_ID, pa.int64(), nullable=False),
        pa.field(C.ENV_ID, pa.string()),
        pa.field(C.SEED, pa.int64()),
        pa.field(C.FACTORS, factors),
        pa.field(C.POLICY, pa.string()),
        pa.field(C.LENGTH, pa.int32(), nullable=False),
        pa.field(C.SPLIT, pa.string()),
    ]
    if success_step:
        fields.append(pa.field(C.SUCCESS_STEP, pa.int32()))
    return pa.schema(fields)


def make_meta(
    codec: str,
    image_shape: Sequence[int],
    action_dim: int,
    state_dim: int,
    state_dtype: str,
    env_id: str | None,
    fps: float | None = None,
    action_dtype: str = "float32",
    state_shape: Sequence[int] | None = None,
    extras: Mapping[str, Mapping[str, Any]] | None = None,
    codec_options: Mapping[str, Any] | None = None,
) -> dict:
    """The `meta.json` record written once at creation (older datasets may lack
    ``action_dtype`` (float32), ``state_shape`` ([state_dim]) and ``extras`` ({})).

    ``frameskip`` is 1 (one row per env step); ``fps`` is the recording's frame rate
    (None when unknown); ``created_by`` names the package version that wrote it.
    ``codec_options`` (h264 datasets only): the codec's settings,
    `data.video.VideoOptions.to_meta` of `codec_options` (defaults when None).
    """
    try:
        from importlib.metadata import version

        created_by = f"worldmodel {version('worldmodel')}"
    except Exception:  # package not installed (running from a checkout)
        created_by = "worldmodel"
    return {
        "schema_version": SCHEMA_VERSION,
        "format": FORMAT,
        "codec": codec,
        "image_shape": [int(s) for s in image_shape],
        "action_dim": int(action_dim),
        "state_dim": int(state_dim),
        "state_dtype": state_dtype,
        "state_shape": [int(state_dim)] if state_shape is None else [int(x) for x in state_shape],
        "action_dtype": action_dtype,
        "extras": {str(k): {"dtype": str(v["dtype"]), "shape": [int(x) for x in v["shape"]]} for k, v in (extras or {}).items()},
        "env_id": env_id,
        "frameskip": 1,
        "fps": None if fps is None else float(fps),
        "created_by": created_by,
        **({"codec_options": _video_meta(codec_options)} if codec in GROUPED_CODECS else {}),
    }


def _video_meta(options: Mapping[str, Any] | None) -> dict:
    from .video import VideoOptions

    return VideoOptions.build(options if not isinstance(options, Mapping) or "format_version" not in options
                              else VideoOptions.from_meta(options)).to_meta()


def meta_steps_schema(meta: Mapping[str, Any]) -> pa.Schema:
    """Steps schema implied by a meta record."""
    return steps_schema(
        meta["codec"], meta["image_shape"], meta["action_dim"], meta["state_dim"], meta.get("state_dtype", "float64"),
        meta.get("action_dtype", "float32"), meta.get("extras") or {},
    )


def schema_differences(expected: pa.Schema, actual: pa.Schema) -> list[str]:
    """Human-readable differences between two schemas (names and types only)."""
    problems = []
    exp = {f.name: f.type for f in expected}
    act = {f.name: f.type for f in actual}
    for name, typ in exp.items():
        if name not in act:
            problems.append(f"column {name!r} missing (expected {typ})")
        elif act[name] != typ:
            problems.append(f"column {name!r} has type {act[name]}, expected {typ}")
    for name in act:
        if name not in exp:
            problems.append(f"unexpected column {name!r}")
    return problems
