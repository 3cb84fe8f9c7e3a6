"""Packaging promises: what `import fastconv` does and does not do."""

import subprocess
import sys

import fastconv


def test_import_does_not_import_torch():
    code = "import sys, fastconv; assert 'torch' not in sys.modules, 'torch imported'; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


def test_public_api():
    assert set(fastconv.__all__) >= {"Conv2D", "conv2d", "conv2d_backward", "ConvGradients", "reference"}
    assert fastconv.__version__ != "0+unknown"


def test_demo_runs_and_agrees_with_pytorch():
    out = subprocess.run([sys.executable, "-m", "fastconv", "demo"], capture_output=True, text=True, check=True)
    assert "output (10, 8, 4, 4)" in out.stdout
    assert "vs PyTorch" in out.stdout or "PyTorch not installed" in out.stdout


def test_instruction_set_sources_link_last_in_increasing_order():
    # A function compiled in several sources is kept from the first one
    # linked; baseline code must never get a copy built for AVX2 or AVX-512.
    import re
    from pathlib import Path

    cmake = (Path(__file__).parents[1] / "CMakeLists.txt").read_text()
    sources = re.search(r"pybind11_add_module\(_core\s+(.*?)\)", cmake, re.S).group(1).split()
    isa_sources = [s for s in sources if re.search(r"kernels_avx", s)]
    assert isa_sources == ["csrc/kernels_avx2.cpp", "csrc/kernels_avx512.cpp"]
    assert sources[-len(isa_sources) :] == isa_sources
