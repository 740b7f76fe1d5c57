"""Reading a dataset with Ray Data (optional extra; skipped when ray is not installed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import data
from data import columns as C
from data import open_dataset
from data.errors import DatasetError
from data.ray_io import decode_pixels, join_uri, read_meta_uri


def test_uris_pass_through_unchanged() -> None:
    assert join_uri("s3://bucket/runs/ds.lance/", "steps.lance") == "s3://bucket/runs/ds.lance/steps.lance"
    assert join_uri("gs://b/x", "meta.json") == "gs://b/x/meta.json"
    assert join_uri("/data/x", "episodes.lance") == "/data/x/episodes.lance"


def test_meta_from_path_and_file_uri(tmp_path: Path) -> None:
    data.collect("wm/TwoRoom-v0", 2, tmp_path / "ds", resolution=16, max_steps=4)
    meta = open_dataset(tmp_path / "ds").meta
    assert read_meta_uri(str(tmp_path / "ds")) == meta
    assert read_meta_uri("file://" + str(tmp_path / "ds")) == meta
    with pytest.raises(DatasetError, match="cannot read meta.json"):
        read_meta_uri(str(tmp_path / "nothing"))


@pytest.mark.slow  # starting a Ray runtime takes ~30 s on 2 cores
@pytest.mark.parametrize("codec", ["raw", "png"])
def test_ray_reads_the_same_rows(tmp_path: Path, codec: str) -> None:
    pytest.importorskip("ray.data")
    import ray

    from data.ray_io import read_episodes, read_steps

    path = tmp_path / "ds"
    data.collect("wm/TwoRoom-v0", 3, path, resolution=16, max_steps=5, codec=codec)
    ds = open_dataset(path)
    ray.init(num_cpus=1, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    try:
        meta = read_meta_uri(str(path))
        rows = read_steps("file://" + str(path), columns=[C.EPISODE_ID, C.STEP, C.PIXELS, C.ACTION])
        batch = rows.map_batches(decode_pixels, fn_kwargs={"meta": meta}, batch_format="numpy").take_all()
        assert len(batch) == ds.num_steps
        by_key = {(int(r[C.EPISODE_ID]), int(r[C.STEP])): r for r in batch}
        for eid in range(3):
            ep = ds.load_episode(eid)
            for t in range(len(ep["pixels"])):
                np.testing.assert_array_equal(by_key[(eid, t)][C.PIXELS], ep["pixels"][t])
                np.testing.assert_array_equal(by_key[(eid, t)][C.ACTION], ep["action"][t])
        assert sorted(r[C.EPISODE_ID] for r in read_episodes(str(path)).take_all()) == [0, 1, 2]
    finally:
        ray.shutdown()
