"""benchmarks/dask_scaling.py runs end to end at a small size: its three
clusters start, the input blocks lie in equal shares on the workers, and its
JSON line holds a finite time for every path. (A smoke test: nothing here is
timed against a target.)"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("dask.array")
pytest.importorskip("distributed")
pytest.importorskip("psutil")

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "dask_scaling.py"


@pytest.mark.slow
def test_the_dask_scaling_benchmark_runs_and_reports_every_path():
    args = ["--batch", "4", "--size", "64", "--image", "256", "--chunk-mb", "0.25"]
    out = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--repeats", "1", "--warmup", "0", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    workloads = report["workloads"]
    assert set(workloads) == {"batch 4x16x64x64", "image 1x16x256x256"}
    # 4 single-image blocks; 16 tiles of 64 x 64, plus a halo task for each
    # tile with a neighbour above or to the left (all but the first).
    assert workloads["batch 4x16x64x64"]["tasks"] == 4
    assert workloads["image 1x16x256x256"]["tasks"] == 16 + 15
    for result in workloads.values():
        seconds = result["seconds"]
        assert set(seconds) == {"memory 1", "memory 2", "memory 1x2", "dask 1", "dask 2", "dask 1x2"}
        assert all(math.isfinite(t) and t > 0 for t in seconds.values()), seconds
