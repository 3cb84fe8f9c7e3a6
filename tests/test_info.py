"""`python -m fastconv info` and _core.cpu_facts: the microarchitecture facts the
kernels use, measured (clock, FMA peak, FMAs per cycle) or read from the OS
(cache sizes), never looked up by the CPU's name."""

import math
import os
import re
from pathlib import Path

import pytest

from fastconv import _backend
from fastconv.__main__ import main
from fastconv.bench.machine import format_caches, format_fma

pytestmark = pytest.mark.skipif(_backend.core is None, reason="the C++ core is not built")
core = _backend.core

# Width in bits and number of the vector registers each ISA's kernels use.
REGISTERS = {"avx512": (512, 32), "avx2": (256, 16), "generic": (128, 16)}
FEW = 400_000  # FMA loop iterations: a few milliseconds per measurement


def sysfs_cache_bytes(level: int, kind: str) -> int | None:
    """cpu0's cache of this level and type ("Data" or "Unified") from sysfs, or None."""
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            if int((index / "level").read_text()) == level and (index / "type").read_text().strip() == kind:
                size = (index / "size").read_text().strip()
                return int(size[:-1]) * {"K": 1024, "M": 2**20}[size[-1]]
        except (OSError, ValueError, KeyError):
            return None
    return None


# Under AddressSanitizer the FMA loop and the add chain run at instrumented
# speed: the measured rates mean nothing there.
_timed_rates = pytest.mark.skipif(os.environ.get("FASTCONV_SANITIZED") == "1", reason="rates under AddressSanitizer")


@_timed_rates
@pytest.mark.parametrize("isa", core.supported_isas() if core else [])
def test_cpu_facts_of_each_isa(isa):
    facts = core.cpu_facts(isa, iterations=FEW)
    assert facts["isa"] == isa
    assert (facts["vector_bits"], facts["vector_registers"]) == REGISTERS[isa]
    if isa == "generic":  # no vector FMA to time
        assert facts["clock_ghz"] is None and facts["fma_peak_gflops"] is None
        assert facts["fma_per_cycle"] is None and facts["fma_ports"] is None
        return
    clock, peak, per_cycle = facts["clock_ghz"], facts["fma_peak_gflops"], facts["fma_per_cycle"]
    assert all(isinstance(v, float) for v in (clock, peak, per_cycle))
    # One add a cycle gives the clock: an x86-64 core runs at 0.5-7 GHz; adds
    # the core skips (an immediate folded in the renamer) would read far above.
    assert 0.5 < clock < 7.0
    lanes = facts["vector_bits"] // 32
    assert per_cycle == pytest.approx(peak / (2 * lanes * clock))
    # Every AVX2 or AVX-512 core has 1 or 2 FMA units at these widths (a
    # machine busy elsewhere reads lower, never higher).
    assert 0.3 < per_cycle < 2.6
    assert isinstance(facts["fma_ports"], int) and facts["fma_ports"] == max(1, math.floor(per_cycle + 0.5))


def test_cache_sizes_are_the_os_ones():
    facts = core.cpu_facts("generic", iterations=1)
    sizes = {key: facts[key] for key in ("l1d_bytes", "l2_bytes", "l3_bytes")}
    assert all(isinstance(v, int) for v in sizes.values()) and isinstance(facts["caches_reported"], bool)
    assert 0 < sizes["l1d_bytes"] < sizes["l2_bytes"] and sizes["l3_bytes"] >= 0
    l1d, l2 = sysfs_cache_bytes(1, "Data"), sysfs_cache_bytes(2, "Unified")
    if l1d is None or l2 is None:
        pytest.skip("this OS reports no cache sizes in sysfs")
    assert facts["caches_reported"] and (sizes["l1d_bytes"], sizes["l2_bytes"]) == (l1d, l2)


def test_cpu_facts_default_to_the_active_isa_and_refuse_bad_ones():
    old = core.isa()
    try:
        core.set_isa("generic")
        assert core.cpu_facts(iterations=1)["isa"] == "generic"
    finally:
        core.set_isa(old)
    assert core.cpu_facts(iterations=1)["isa"] == old
    with pytest.raises(ValueError, match="unknown instruction set 'sse9'"):
        core.cpu_facts("sse9")
    with pytest.raises(ValueError, match="iterations must be >= 1, got 0"):
        core.cpu_facts(iterations=0)
    missing = [isa for isa in REGISTERS if isa not in core.supported_isas()]
    if missing:
        with pytest.raises(ValueError, match=f"cannot run instruction set '{missing[0]}'"):
            core.cpu_facts(missing[0])


def test_the_peak_follows_the_isa_measured():
    """peak_gflops measures the loop of the ISA asked for, by default the active one."""
    assert core.peak_gflops(iterations=1000, isa="generic") == 0.0  # no vector FMA loop
    old = core.isa()
    try:
        core.set_isa("generic")
        assert core.peak_gflops(iterations=1000) == 0.0
    finally:
        core.set_isa(old)
    for isa in core.supported_isas():
        if isa != "generic":
            assert core.peak_gflops(iterations=FEW, isa=isa) > 1.0
    with pytest.raises(ValueError, match="unknown instruction set"):
        core.peak_gflops(isa="avx9")


def test_fma_and_cache_lines():
    facts = {
        "isa": "avx2",
        "vector_bits": 256,
        "vector_registers": 16,
        "fma_per_cycle": 1.96,
        "fma_ports": 2,
        "l1d_bytes": 32768,
        "l2_bytes": 1280 * 1024,
        "l3_bytes": 32 * 2**20,
        "caches_reported": True,
    }
    assert format_fma(facts) == "2.0 FMA/cycle at 256 bit: 2 FMA ports"
    assert format_fma({**facts, "vector_bits": 512, "fma_per_cycle": 1.04, "fma_ports": 1}) == (
        "1.0 FMA/cycle at 512 bit: 1 FMA port"
    )
    assert format_fma({**facts, "isa": "generic", "fma_per_cycle": None}) == "no vector FMA with generic"
    assert format_caches(facts) == "L1d 32 KiB, L2 1280 KiB per core, L3 32 MiB shared"
    unreported = format_caches({**facts, "l3_bytes": 0, "caches_reported": False})
    assert "L3 not reported by the OS" in unreported and "L1d and L2 not reported by the OS" in unreported


@_timed_rates
def test_info_prints_the_facts(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "instruction set" in out and "OpenMP" in out and "flags" in out
    bits, registers = REGISTERS[core.isa()]
    assert f"vector registers: {registers} of {bits} bit ({core.isa()})" in out
    assert re.search(r"caches: L1d \d+ KiB, L2 \d+ [KM]iB per core", out)
    if core.isa() != "generic":
        fma = re.search(
            rf"FMA: (\d\.\d) FMA/cycle at {bits} bit: (\d) FMA ports? \(measured: float32 FMA peak"
            r" [\d.]+ GFLOP/s on one thread, at a clock of [\d.]+ GHz",
            out,
        )
        assert fma, out
        assert abs(int(fma[2]) - float(fma[1])) <= 0.55  # the nearest whole number of ports


def test_info_without_the_core_says_so(capsys, monkeypatch):
    """A source checkout without a build: info names the fallback, no traceback."""
    monkeypatch.setattr(_backend, "core", None)
    assert main(["info"]) == 1
    out = capsys.readouterr().out
    assert "C++ core: not available" in out and "the NumPy reference runs instead" in out
