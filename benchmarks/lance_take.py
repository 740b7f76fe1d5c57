"""Probe: how long one Lance ``take`` of a training batch's frames costs, nothing else.

The 64² raw window target of issue #4 is bounded by this number: a batch of 64
four-frame windows needs ~246 distinct, scattered rows, and `WindowDataset` reads
them with one sorted, de-duplicated ``take``. This probe writes a table of random
64×64 raw frames (incompressible, like the bench's worst case) once per Lance file
version, then times takes of 256 uniformly drawn rows (sorted, unique) and reports the
best of three rounds as ms per take and the windows/s that take alone would allow.

    python -m benchmarks.lance_take [--rows 3000] [--takes 300] [--versions 2.0 2.1 2.2]

The numbers vary with the machine's moment (on the 2-core reference machine the same
take measured 3-8 ms within an hour); compare versions within one run only.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

SIDE = 64
WINDOWS_PER_BATCH = 64


def probe(rows: int = 3000, takes: int = 300, versions: tuple[str, ...] = ("2.0", "2.1", "2.2"), seed: int = 0) -> dict:
    """``{version: {"ms_per_take", "rows_per_take", "windows_per_s"}}`` for each Lance file version."""
    import lance
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    size = SIDE * SIDE * 3
    pixels = pa.FixedSizeListArray.from_arrays(pa.array(rng.integers(0, 256, rows * size, dtype=np.uint8)), size)
    table = pa.table({"episode_id": pa.array(np.arange(rows) // 100, type=pa.int64()), "pixels": pixels})
    batches = [np.unique(rng.integers(0, rows, 4 * WINDOWS_PER_BATCH)) for _ in range(takes)]
    out = {}
    root = Path(tempfile.mkdtemp(prefix="wm-lance-take-"))
    try:
        for version in versions:
            ds = lance.write_dataset(table, str(root / version), data_storage_version=version)
            for r in batches[:5]:
                ds.take(r, columns=["pixels"])  # warm-up: open files, page cache
            best = float("inf")
            for _ in range(3):
                t0 = time.perf_counter()
                for r in batches:
                    ds.take(r, columns=["pixels"])
                best = min(best, time.perf_counter() - t0)
            out[version] = {
                "ms_per_take": 1e3 * best / takes,
                "rows_per_take": float(np.mean([len(r) for r in batches])),
                "windows_per_s": WINDOWS_PER_BATCH * takes / best,
            }
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> None:
    """Command line of the probe (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.lance_take", description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=3000, help="rows in the probe table")
    p.add_argument("--takes", type=int, default=300, help="takes per timed round")
    p.add_argument("--versions", nargs="+", default=["2.0", "2.1", "2.2"], help="Lance data storage versions")
    args = p.parse_args(argv)
    if args.rows < 4 * WINDOWS_PER_BATCH or args.takes < 1:
        p.error(f"--rows must be >= {4 * WINDOWS_PER_BATCH} and --takes >= 1")
    import lance

    for version, r in probe(args.rows, args.takes, tuple(args.versions)).items():
        print(f"pylance {lance.__version__} file {version}: {r['ms_per_take']:.2f} ms per take of "
              f"{r['rows_per_take']:.0f} rows -> {r['windows_per_s']:,.0f} windows/s (take alone)")


if __name__ == "__main__":
    main()
