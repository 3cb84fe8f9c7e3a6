"""benchmarks/kernel_loops.py: the parsing and arithmetic of its figures, and (slow: it builds
the C++ program, about a minute) a run that times every kernel mca_kernels.py models."""

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load(name):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


loops = load("kernel_loops")

OUTPUT = (
    "peak\tavx512\tfloat\t100.000\n"
    "peak\tavx512\tdouble\t50.000\n"
    "loop\tavx512\tdirect_fwd\tfloat\tdirect_micro<float, 14, 2, 1>\t1000\t2e-07\n"
    "loop\tavx512\tgemm\tdouble\trow_micro<double, 8, 3>\t1000\t8e-07\n"
)


def test_parse_output_and_percent_of_peak():
    direct, gemm = loops.parse_output(OUTPUT)
    assert (direct.isa, direct.kernel, direct.type, direct.instance) == (
        "avx512",
        "direct_fwd",
        "float",
        "direct_micro<float, 14, 2, 1>",
    )
    # 1000 FMAs x 16 lanes x 2 flops in 0.2 us: 160 GFLOP/s, 160 % of a 100 GFLOP/s peak.
    assert direct.gflops == pytest.approx(160.0)
    assert direct.percent_of_peak == pytest.approx(160.0)
    # float64: 8 lanes; 1000 x 8 x 2 in 0.8 us = 20 GFLOP/s of 50.
    assert gemm.gflops == pytest.approx(20.0)
    assert gemm.percent_of_peak == pytest.approx(40.0)


def test_table_marks_rows_below_the_threshold():
    rows = loops.table(loops.parse_output(OUTPUT), threshold=90.0).splitlines()
    assert rows[1].rstrip().endswith("160.0%")
    assert rows[2].rstrip().endswith("40.0% <")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cmake") is None, reason="no cmake")
def test_every_modelled_kernel_is_timed(tmp_path):
    """The program builds from the kernels' sources and times, for every instruction set this
    CPU runs and both types, each kernel of mca_kernels.py's table that the instruction set
    builds, with a positive, finite figure."""
    mca = load("mca_kernels")
    out_json = tmp_path / "loops.json"
    assert loops.main(["--seconds", "0.01", "--build-dir", str(tmp_path / "build"), "--json", str(out_json)]) == 0
    import json

    from fastconv import _core

    timed = json.loads(out_json.read_text())["loops"]
    isas = [isa for isa in ("avx2", "avx512") if isa in _core.supported_isas()]
    for isa in isas:
        expected = {k.name for k in mca.KERNELS if isa in k.isas}
        for type_ in ("float", "double"):
            got = {r["kernel"] for r in timed if r["isa"] == isa and r["type"] == type_}
            assert got == expected, (isa, type_)
    assert all(0 < r["percent_of_peak"] < 1000 for r in timed)
