"""benchmarks/mca_kernels.py: loop extraction and FMA counting on a hand-written objdump text
(no tools needed), the parsing of llvm-mca's report and of a build's link command, and, where
llvm-mca is installed, the whole script on a small compiled kernel and on the installed _core."""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "mca_kernels.py"
_spec = importlib.util.spec_from_file_location("mca_kernels", SCRIPT)
assert _spec and _spec.loader
mca = importlib.util.module_from_spec(_spec)
sys.modules["mca_kernels"] = mca  # dataclasses look their module up
_spec.loader.exec_module(mca)

# An outer loop (0x1007) around an inner one (0x100d) whose body branches: the path through
# 0x101d holds 3 FMAs, the other (0x1029) 1 FMA and an add. An FMA after the loops counts for none.
OBJDUMP = """
0000000000001000 <void fastconv::avx2::direct_micro<float, 6, 2>(float const*, long)>:
    1000: \tpushq\t%rbx
    1001: \txorl\t%eax, %eax
    1007: \tmovq\t(%rsi,%rax,8), %rcx
    100b: \txorl\t%edx, %edx
    100d: \tvbroadcastss\t(%rdi,%rdx,4), %ymm2
    1013: \tvfmadd231ps\t(%rcx), %ymm2, %ymm0
    1018: \ttestb\t$0x1, %dl
    101b: \tje\t0x1029 <fastconv::avx2::direct_micro<float, 6, 2>(float const*, long)+0x29>
    101d: \tvfmadd231ps\t0x20(%rcx), %ymm2, %ymm1
    1022: \tvfmadd231ps\t0x1234(%rip), %ymm2, %ymm3    # 0x2256 <.LC0>
    1027: \tjmp\t0x102e <fastconv::avx2::direct_micro<float, 6, 2>(float const*, long)+0x2e>
    1029: \tvaddps\t%ymm2, %ymm4, %ymm4
    102d: \tvfmadd231ps\t%ymm2, %ymm5, %ymm5
    102e: \tincq\t%rdx
    1031: \tcmpq\t%r8, %rdx
    1034: \tjne\t0x100d <fastconv::avx2::direct_micro<float, 6, 2>(float const*, long)+0xd>
    1036: \tincq\t%rax
    1039: \tcmpq\t%r9, %rax
    103c: \tjne\t0x1007 <fastconv::avx2::direct_micro<float, 6, 2>(float const*, long)+0x7>
    103e: \tvfmadd231ps\t%ymm5, %ymm6, %ymm7
    1043: \tpopq\t%rbx
    1044: \tvzeroupper
    1047: \tretq

0000000000002000 <other()>:
    2000: \tretq
"""


def insns():
    return mca.parse_objdump(OBJDUMP)["void fastconv::avx2::direct_micro<float, 6, 2>(float const*, long)"]


def test_parse_objdump_splits_functions_and_reads_branch_targets():
    funcs = mca.parse_objdump(OBJDUMP)
    assert [len(v) for v in funcs.values()] == [23, 1]
    body = insns()
    assert [i.target for i in body if i.is_branch] == [0x1029, 0x102E, 0x100D, 0x1007]
    rip = next(i for i in body if "rip" in i.text)
    assert rip.text == "vfmadd231ps 0x1234(%rip), %ymm2, %ymm3"  # the comment and symbol are gone


def test_gnu_objdump_lines_with_raw_bytes_and_broadcasts():
    insn = mca.parse_insn(0x401000, "62 f2 f5 58 b8 50 01 \tvfmadd231pd 0x8(%rax){1to8},%zmm1,%zmm2")
    assert insn is not None and insn.op == "vfmadd231pd"
    assert mca.fma_form(insn) == "pd512"
    assert mca.parse_insn(0x401007, "00 00 ") is None  # a continuation line of bytes only
    jmp = mca.parse_insn(0x40100A, "notrack jmp *%rax")
    assert jmp is not None and jmp.op == "jmp" and jmp.target is None and jmp.ends_flow
    assert mca.fma_form(mca.parse_insn(0, "vfnmadd213ss %xmm1, %xmm2, %xmm3")) == "ss"
    assert mca.fma_form(mca.parse_insn(0, "vmulps %ymm1, %ymm2, %ymm3")) is None


def test_hot_loop_is_the_innermost_heaviest_path():
    loop, loops = mca.hot_loop(insns())
    assert {(lp.header_addr, lp.innermost) for lp in loops} == {(0x1007, False), (0x100D, True)}
    assert {lp.header_addr: lp.vector_fmas for lp in loops} == {0x1007: 3, 0x100D: 3}  # an inner body counts once
    assert loop is not None and loop.header_addr == 0x100D and loop.latch_addr == 0x1034
    assert [i.addr for i in loop.path] == [
        0x100D,
        0x1013,
        0x1018,
        0x101B,
        0x101D,
        0x1022,
        0x1027,
        0x102E,
        0x1031,
        0x1034,
    ]
    assert loop.fmas == {"ps256": 3} and loop.vector_fmas == 3


def test_mca_asm_has_no_addresses_and_one_label():
    loop, _ = mca.hot_loop(insns())
    asm = mca.mca_asm(loop.path)
    lines = asm.splitlines()
    assert lines[0] == ".Lmca_loop:" and len(lines) == 11
    assert [ln.strip() for ln in lines if ln.strip().startswith("j")] == [
        "je .Lmca_loop",
        "jmp .Lmca_loop",
        "jne .Lmca_loop",
    ]
    assert "<" not in asm and "#" not in asm and not re.search(r"\b0x10[0-9a-f]{2}\b", asm)


def test_hot_instance_and_filters():
    names = [
        "void fastconv::avx2::direct_micro<float, 3, 2, 1>(float const*)",
        "void fastconv::avx2::direct_micro<float, 6, 2, 1>(float const*)",
        "void fastconv::avx2::direct_micro<float, 12, 1, 1>(float const*)",
        "void fastconv::avx2::direct_micro<double, 6, 2, 1>(double const*)",
        "void fastconv::avx512::direct_micro<float, 12, 2, 1>(float const*)",
        "void fastconv::avx2::direct_micro<float, 4, 3, 1>(float const*)",
        "void fastconv::avx2::direct_micro<float, 2, 3, 1>(float const*)",
        "void fastconv::avx2::direct_micro<float, 6, 2, 2>(float const*)",
        "void fastconv::avx2::direct_micro<float, 4, 3, 2>(float const*)",
        "void fastconv::avx2::direct_micro<float, 3, 3, 2>(float const*)",
    ]
    syms = [mca.Symbol(i, 1, n) for i, n in enumerate(names)]
    kernels = {k.name: k for k in mca.KERNELS}
    picked = mca.select_function(kernels["direct_fwd"], "avx2", "float", syms)
    assert [s.name for s in picked] == [names[1]]  # 2 filter vectors, the most pixels
    picked = mca.select_function(kernels["direct_fwd3"], "avx2", "float", syms)
    assert [s.name for s in picked] == [names[5]]  # 3 filter vectors, the most pixels
    picked = mca.select_function(kernels["direct_fwd_s2"], "avx2", "float", syms)
    assert [s.name for s in picked] == [names[7]]  # the same at stride 2
    picked = mca.select_function(kernels["direct_fwd3_s2"], "avx2", "float", syms)
    assert [s.name for s in picked] == [names[8]]
    shared = [
        mca.Symbol(0, 1, f"void fastconv::avx2::rows_shared_micro<float, {mr}, {nr}, 2, {r}>(float const*)")
        for mr, nr, r in [(1, 4, 3), (3, 2, 3), (2, 3, 3), (3, 2, 5)]
    ]
    assert [s.name for s in mca.select_function(kernels["rows_shared"], "avx2", "float", shared)] == [shared[1].name]
    # 12 accumulators either way: the wider rows (2 vectors) win
    wide = [
        mca.Symbol(0, 1, f"void fastconv::avx2::rows_shared_micro<float, 3, {nr}, {nv}, 3>(float const*)")
        for nr, nv in [(4, 1), (2, 2)]
    ]
    assert [s.name for s in mca.select_function(kernels["rows_shared"], "avx2", "float", wide)] == [wide[1].name]
    assert [s.name for s in mca.select_function(kernels["dw_fwd_shared"], "avx2", "float", shared)] == [shared[0].name]
    # One filter: the depthwise plane's two-vector instance, and apart from it the one-vector one of 12 rows
    one = [
        mca.Symbol(0, 1, f"void fastconv::avx2::rows_shared_micro<float, 1, {nr}, {nv}, 3>(float const*)")
        for nr, nv in [(12, 1), (4, 2), (2, 2)]
    ]
    assert [s.name for s in mca.select_function(kernels["dw_fwd_shared"], "avx2", "float", one)] == [one[1].name]
    assert [s.name for s in mca.select_function(kernels["one_filter_shared"], "avx2", "float", one)] == [one[0].name]


MCA_REPORT = """Iterations:        100
Instructions:      1600
Total Cycles:      1313
Total uOps:        1700

Dispatch Width:    6
uOps Per Cycle:    1.29
IPC:               1.22
Block RThroughput: 13.0


Cycles with backend pressure increase [ 96.80% ]
Throughput Bottlenecks:
  Resource Pressure       [ 90.00% ]
  - Zn4FP0  [ 90.00% ]
  - Zn4Load  [ 12.50% ]
  Data Dependencies:      [ 7.84% ]
  - Register Dependencies [ 7.84% ]
  - Memory Dependencies   [ 0.00% ]


Resources:
[0]   - Zn4FP0
[1]   - Zn4FP1
[2.0] - Zn4Load
[2.1] - Zn4Load


Resource pressure per iteration:
[0]    [1]    [2.0]  [2.1]
13.00  12.00  1.00    -

Resource pressure by instruction:
"""


def test_parse_mca_report():
    r = mca.parse_mca(MCA_REPORT)
    assert r.cycles_per_iter == pytest.approx(13.13) and r.block_rthroughput == 13.0
    assert r.dispatch_bound == pytest.approx(17 / 6)
    assert r.pressure == {"Zn4FP0": 13.0, "Zn4FP1": 12.0, "Zn4Load": 0.5}  # a group's units averaged
    assert r.bottlenecks[:2] == [("Zn4FP0", 90.0), ("Zn4Load", 12.5)] and r.backend_pressure == 96.8


def test_link_command_from_build_ninja(tmp_path):
    (tmp_path / "CMakeFiles").mkdir()
    (tmp_path / "build.ninja").write_text(
        "build _core.so: LINKER_x a.o $\n    b.o | /usr/lib/libgomp.so || deps\n"
        "  LINK_FLAGS = -shared -flto=auto\n  POST_BUILD = cd x && /usr/bin/strip _core.so\n"
        "  TARGET_FILE = _core.so\n\n"
    )
    (tmp_path / "CMakeFiles" / "rules.ninja").write_text(
        "rule LINKER_x\n  command = $PRE_LINK && /usr/bin/g++ -fPIC $LINK_FLAGS -o $TARGET_FILE $in $LINK_LIBRARIES"
        " && $POST_BUILD\n  description = Linking\n"
    )
    cmd = mca.link_command(tmp_path, "_core.so", Path("/tmp/out.so"))
    assert cmd == ": && /usr/bin/g++ -fPIC -shared -flto=auto -o /tmp/out.so a.o b.o  && :"


# ---------------------------------------------------------------------------- with llvm-mca

TOOLS = mca.find_tools()
needs_mca = pytest.mark.skipif(TOOLS is None, reason="no llvm-mca installed")

ZMM_LOOP = """.Lmca_loop:
  vbroadcastss 0x4(%rax,%rdx,4), %zmm30
  vfmadd231ps %zmm30, %zmm1, %zmm2
  vfmadd231ps %zmm30, %zmm0, %zmm3
  vbroadcastss (%rax), %zmm29
  vfmadd231ps %zmm29, %zmm1, %zmm4
  vfmadd231ps %zmm29, %zmm0, %zmm5
  vbroadcastss (%rax), %ymm28
  addq $0x8, %rax
  cmpq %rax, %rcx
  jne .Lmca_loop
"""


@needs_mca
def test_znver4_with_broadcasts_as_loads_rewrites_only_512_bit_broadcasts(monkeypatch):
    if "znver4" not in mca.available_cpus(TOOLS):
        pytest.skip(f"{TOOLS.mca} has no znver4 model (LLVM 16 or later has)")
    seen = []
    real_run = mca.subprocess.run

    def spy(cmd, *args, **kwargs):
        if "-resource-pressure" in cmd:
            seen.append((next(c for c in cmd if c.startswith("-mcpu=")), Path(cmd[-1]).read_text()))
        return real_run(cmd, *args, **kwargs)

    monkeypatch.setattr(mca.subprocess, "run", spy)
    plain = mca.run_mca(TOOLS, "znver4", ZMM_LOOP)
    as_load = mca.run_mca(TOOLS, mca.ZEN4_BROADCAST_AS_LOAD, ZMM_LOOP)
    assert [cpu for cpu, _ in seen] == ["-mcpu=znver4", "-mcpu=znver4"]
    assert seen[0][1] == ZMM_LOOP
    rewritten = seen[1][1]
    assert "vmovups 0x4(%rax,%rdx,4), %zmm30" in rewritten and "vmovups (%rax), %zmm29" in rewritten
    assert "vbroadcastss (%rax), %ymm28" in rewritten and rewritten.count("vbroadcastss") == 1
    # 4 zmm FMAs take 4 cycles on the two double-pumped FMA pipes (and the ymm broadcast half
    # a cycle on FP1 or FP2); znver4 adds two cycles of FP1 per 512-bit broadcast.
    assert as_load.cycles_per_iter == pytest.approx(4.5, abs=0.1)
    assert plain.cycles_per_iter == pytest.approx(7.0, abs=0.1)


KERNEL_CPP = r"""
namespace fastconv { namespace avx2 {
typedef float vf __attribute__((vector_size(32)));
// 6 pixels x 2 filter vectors per tap, as the direct forward micro-kernel.
template <class T, int NP, int NK, int SW>
void direct_micro(const T* __restrict in, const vf* __restrict w, long ntaps, vf* __restrict out) {
    vf acc[NP][NK] = {};
    for (long t = 0; t < ntaps; ++t)
#pragma GCC unroll 8
        for (int p = 0; p < NP; ++p)
#pragma GCC unroll 2
            for (int v = 0; v < NK; ++v) acc[p][v] += in[t * NP + p * SW] * w[t * NK + v];
    for (int p = 0; p < NP; ++p)
        for (int v = 0; v < NK; ++v) out[p * NK + v] = acc[p][v];
}
template void direct_micro<float, 6, 2, 1>(const float*, const vf*, long, vf*);
}}
"""


def run_script(args, tmp_path):
    out = tmp_path / "mca.json"
    assert mca.main([*args, "--json", str(out)]) == 0
    return json.loads(out.read_text())


def template_args(function):
    return [int(x) for x in re.findall(r"\d+", function.split("<", 1)[1])]


@needs_mca
@pytest.mark.skipif(shutil.which("g++") is None, reason="no g++")
def test_end_to_end_on_a_compiled_kernel(tmp_path):
    src, so = tmp_path / "k.cpp", tmp_path / "k.so"
    src.write_text(KERNEL_CPP)
    subprocess.run(
        ["g++", "-O3", "-mavx2", "-mfma", "-ffp-contract=fast", "-fPIC", "-shared", "-o", str(so), str(src)], check=True
    )
    report = run_script(["--so", str(so), "--kernels", "direct_fwd", "--isa", "avx2", "--dtype", "float"], tmp_path)
    rows = report["rows"]
    assert rows and all(r["function"] == "fastconv::avx2::direct_micro<float, 6, 2, 1>" for r in rows)
    modelled = [r for r in rows if r["cycles"] is not None]
    assert modelled, rows
    for r in modelled:
        assert r["fmas"] == 12 and r["fma_forms"] == {"ps256": 12}
        assert 0 < r["fma_pct"] <= 101 and r["fma_bound"] > 0 and r["fma_ports"]


@needs_mca
@pytest.mark.skipif(os.environ.get("FASTCONV_SANITIZED") == "1", reason="a sanitizer build's kernels are instrumented")
def test_end_to_end_on_the_installed_core(tmp_path):
    core = pytest.importorskip("fastconv._core")
    so = Path(core.__file__).resolve()
    assert TOOLS is not None
    if not mca.text_symbols(TOOLS, so):
        built = mca.find_build_copy(so, [])
        cached = built is not None and (built.parent / "mca" / f"{mca.sha256(so)[:16]}-{built.name}").exists()
        if not cached:
            pytest.skip(
                "the installed _core is stripped and not yet relinked: run benchmarks/mca_kernels.py once (minutes)"
            )
    report = run_script(["--kernels", "direct_fwd", "--isa", "avx2", "--dtype", "float"], tmp_path)
    modelled = [r for r in report["rows"] if r["cycles"] is not None]
    assert modelled, report["rows"]
    for r in modelled:
        np_, nk, _stride = template_args(r["function"])
        assert r["fmas"] > 0 and r["fmas"] % (np_ * nk) == 0  # whole taps of NP pixels x NK vectors
        assert 0 < r["fma_pct"] <= 101
