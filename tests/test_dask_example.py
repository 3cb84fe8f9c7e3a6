"""examples/dask_large_image.py out of core: a stack 2.5 times each worker's
memory limit (1.3x both workers' together) filtered on a LocalCluster, its
peak worker memory under the limit, random tiles equal to the in-memory call."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("dask.array")
pytest.importorskip("distributed")
pytest.importorskip("zarr")

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "dask_large_image.py"


@pytest.mark.slow
def test_the_large_image_example_runs_out_of_core(tmp_path):
    limit_mib, images, size = 300, 12, 4096
    stack_mib = images * size * size * 4 / 2**20  # 768 MiB
    assert stack_mib >= 2.5 * limit_mib
    out = subprocess.run(
        [
            sys.executable,
            str(EXAMPLE),
            "--images",
            str(images),
            "--size",
            str(size),
            "--chunk",
            "2048",
            "--worker-memory",
            f"{limit_mib}MiB",
            "--tiles",
            "3",
            "--store",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "tiles agree" in out.stdout
    peaks = [float(m) for m in re.findall(r"peak memory of worker \S+: ([\d.]+) MiB", out.stdout)]
    assert len(peaks) == 2 and all(peak < limit_mib for peak in peaks), out.stdout
    assert (tmp_path / "filtered.zarr").exists()
