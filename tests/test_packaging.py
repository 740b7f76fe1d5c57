"""The generic top-level package names must resolve to this repository."""

import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["envs", "data", "planners", "benchmarks", "worldmodel"])
def test_package_imports_from_this_repository(name: str) -> None:
    module = importlib.import_module(name)
    assert Path(module.__file__).resolve().parent == REPO / name


def test_import_has_no_global_side_effects() -> None:
    import subprocess
    import sys

    code = (
        # numpy, gymnasium and torch add warning filters of their own at import: load them first.
        "import numpy, gymnasium, torch, lance, cv2;"
        "import os, multiprocessing, warnings; before = dict(os.environ); n = len(warnings.filters);"
        "import envs, data, planners, worldmodel, benchmarks, worldmodel.cli;"
        "assert dict(os.environ) == before, set(os.environ) ^ set(before);"
        "assert len(warnings.filters) == n;"
        "assert multiprocessing.get_start_method(allow_none=True) is None"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
