"""Reading a dataset with Ray Data, for multi-node training (optional extra ``worldmodel[ray]``).

The same dataset directory serves one process (`WindowDataset`) and a Ray cluster:
its tables are plain Lance datasets, read here with ``ray.data.read_lance``. URIs go to
Lance unchanged, so object stores work the way Lance supports them
(``s3://bucket/runs/tworoom.lance``, ``gs://...``, ``az://...``; credentials through
``storage_options``), as do local paths and ``file://`` URIs.

    >>> from data.ray_io import read_meta_uri, read_steps, decode_pixels
    >>> meta = read_meta_uri("s3://bucket/runs/tworoom.lance")
    >>> steps = read_steps("s3://bucket/runs/tworoom.lance", columns=["episode_id", "step", "pixels", "action"])
    >>> frames = steps.map_batches(decode_pixels, fn_kwargs={"meta": meta}, batch_format="numpy")

Only committed episodes are training data: join or filter on the ids of
`read_episodes` (a crash can leave orphan step rows, see `data/dataset.py`).
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

import numpy as np

from . import columns as C
from .codecs import decode_arrow
from .errors import DatasetError


def join_uri(uri: str, name: str) -> str:
    """``uri/name`` for a local path or any URI scheme, without normalising the URI."""
    return str(uri).rstrip("/") + "/" + name


def read_meta_uri(uri: str, storage_options: Mapping[str, str] | None = None) -> dict:
    """The dataset's ``meta.json`` from a local path or an object-store URI (via pyarrow.fs)."""
    import pyarrow.fs as pafs

    target = join_uri(uri, C.META_FILE)
    try:
        if "://" in str(uri):
            fs, path = pafs.FileSystem.from_uri(target)
        else:
            fs, path = pafs.LocalFileSystem(), target
        with fs.open_input_stream(path) as f:
            return json.loads(f.read().decode())
    except (OSError, ValueError) as e:
        raise DatasetError(f"{uri}: cannot read {C.META_FILE} ({e}); is it a worldmodel dataset?") from e


def _ray_data() -> Any:
    try:
        import ray.data
    except ImportError:
        raise ImportError("reading datasets with Ray needs the optional extra: pip install 'worldmodel[ray]'") from None
    return ray.data


def read_steps(
    uri: str, columns: Sequence[str] | None = None, storage_options: Mapping[str, str] | None = None, **kwargs: Any
) -> Any:
    """The steps table as a ``ray.data.Dataset`` (one row per observation; `columns` to read a subset)."""
    return _ray_data().read_lance(
        join_uri(uri, C.STEPS_TABLE), columns=list(columns) if columns else None,
        storage_options=dict(storage_options) if storage_options else None, **kwargs,
    )


def read_episodes(uri: str, storage_options: Mapping[str, str] | None = None, **kwargs: Any) -> Any:
    """The episodes table (one row per committed episode) as a ``ray.data.Dataset``."""
    return _ray_data().read_lance(
        join_uri(uri, C.EPISODES_TABLE), storage_options=dict(storage_options) if storage_options else None, **kwargs
    )


def decode_pixels(batch: dict[str, np.ndarray], meta: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """``map_batches`` function: replace the encoded ``pixels`` column by uint8 frames (B, H, W, 3).

    Per-frame codecs only (raw, jpeg, png): an h264 dataset stores groups of frames
    (`data/video.py`), which a batch of arbitrary rows cannot decode; a ValueError says so."""
    import pyarrow as pa

    if meta["codec"] == "h264":
        raise ValueError("decode_pixels decodes one row at a time; an h264 dataset stores groups of frames: decode a "
                         "group's row (step % gop == 0) with data.video.decode_group, or convert the dataset "
                         "(wm data convert SRC DST --to lance --codec jpeg)")
    shape = tuple(int(s) for s in meta["image_shape"])
    col = batch[C.PIXELS]
    if meta["codec"] == "raw":
        frames = np.stack([np.asarray(x, np.uint8) for x in col]).reshape((len(col), *shape))
    else:
        frames = decode_arrow(pa.array(list(col), pa.binary()), meta["codec"], shape)
    return {**batch, C.PIXELS: frames}
