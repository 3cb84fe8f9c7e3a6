#!/usr/bin/env python3
"""Model fastconv's hot micro-kernels with llvm-mca on an Intel AVX-512 core and an AMD Zen core.

    python benchmarks/mca_kernels.py                      # the installed fastconv._core, every kernel
    python benchmarks/mca_kernels.py --kernels direct_fwd,gemm --isa avx512 --json mca.json
    python benchmarks/mca_kernels.py --so path/to/_core.so --models icelake-server,znver4

For each kernel of KERNELS (below), in each instruction set (namespace fastconv::avx2 /
fastconv::avx512) and type, the script takes the hot template instance from the built
extension, finds its hot inner loop (the innermost backward branch whose body holds the most
vector FMAs; inside it, the path with the most FMAs), and runs llvm-mca on that loop body for
each CPU model. It prints FMAs per iteration, predicted cycles per iteration, the FMA-bound
minimum (calibrated per model on a loop of independent FMAs of the same width and type) and
FMA throughput % = FMA-bound cycles / predicted cycles, with the pressure on the FMA ports and
the top other bottleneck llvm-mca names.

The installed extension is stripped (pybind11 strips release builds), so kernels cannot be
found in it by name. The script then relinks the LTO objects of the build directory that made
it (build/<wheel tag>/ of this checkout, with the link command from its build.ninja) into an
unstripped copy, cached there, and checks that the copy, stripped, is byte-identical to the
installed file: the figures are then those of the code that runs.

A measuring tool: exit status 0 whatever the figures, 1 only when nothing could be modelled.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

Args = dict[str, int]


@dataclasses.dataclass(frozen=True)
class Kernel:
    """A micro-kernel to model: edit KERNELS when the kernels change."""

    name: str  # id for --kernels
    source: str  # where it lives, for the reader
    # Regex searched in the demangled function name; {isa} and {T} are filled in. Named groups
    # are the template arguments that `hot` and `where` see.
    pattern: str
    # Ranks the matched instances: the largest is the hot one. Ties (and kernels without
    # template arguments) go to the function whose hot loop holds the most FMAs.
    hot: Callable[[Args], tuple[int, ...]] = lambda a: ()
    where: Callable[[Args], bool] = lambda a: True
    isas: tuple[str, ...] = ("avx2", "avx512")  # the instruction sets that build it


_NS = r"fastconv::{isa}::"
# rows_micro<T, MR filters, NR rows, NV vectors>: two kernels below pick among its instances.
_ROWS_MICRO = _NS + r"rows_micro<{T}, (?P<mr>\d+), (?P<nr>\d+), (?P<nv>\d+)>\("
# rows_shared_micro<T, MR filters, NR rows, NV vectors, R kernel rows>: three kernels below pick among its instances.
_ROWS_SHARED = _NS + r"rows_shared_micro<{T}, (?P<mr>\d+), (?P<nr>\d+), (?P<nv>\d+), (?P<r>\d+)>\("


def _direct_forward(name: str, nk: int, sw: int, function: str = "direct_micro") -> Kernel:
    """direct_micro<T, NP, NK, SW> (or direct_micro_edges) with NK filter vectors at stride SW
    (1 and 2 are built in; other strides are a run-time argument): the instance with the most
    pixels."""
    return Kernel(
        name,
        "direct_forward_impl.h",
        _NS + function + r"<{T}, (?P<np>\d+), (?P<nk>\d+), (?P<sw>\d+)>\(",
        hot=lambda a: (a["np"],),
        where=lambda a: a["nk"] == nk and a["sw"] == sw,
    )


KERNELS: list[Kernel] = [
    # 2 filter vectors x the most pixels: 14 with AVX-512, 6 with AVX2.
    _direct_forward("direct_fwd", 2, 1),
    # 3 filter vectors x the most pixels (narrow rows): 9 with AVX-512, 4 with AVX2.
    _direct_forward("direct_fwd3", 3, 1),
    # The same at stride 2: the forward of strided layers (resnet_s2, deep_s2, the stem).
    _direct_forward("direct_fwd_s2", 2, 2),
    _direct_forward("direct_fwd3_s2", 3, 2),
    # Blocks at the input's edges (direct_micro_edges): its hot loop is the block's
    # taps over all its pixels; two more loops take the taps that skip an edge pixel.
    _direct_forward("direct_fwd_edges", 2, 1, "direct_micro_edges"),
    _direct_forward("direct_fwd3_edges", 3, 1, "direct_micro_edges"),
    # The GEMM micro-kernel: MR filters x NV pixel vectors, the full tile.
    Kernel(
        "gemm",
        "implicit_gemm.h",
        _NS + r"row_micro<{T}, (?P<mr>\d+), (?P<nv>\d+)>\(",
        hot=lambda a: (a["mr"] * a["nv"], a["mr"]),
    ),
    # dL/dF: NJ taps x NK filter vectors.
    Kernel(
        "bw_weights",
        "direct_backward_weights_impl.h",
        _NS + r"direct_bw_micro<{T}, (?P<nj>\d+), (?P<nk>\d+)>\(",
        hot=lambda a: (a["nj"] * a["nk"], a["nk"]),
    ),
    # Winograd's dL/dweight sums: NJ channels x KB blocks of 2 filter
    # vectors, tiles as pixels (KB 2 with AVX-512).
    Kernel(
        "winograd_bw",
        "winograd_backward_weights_impl.h",
        _NS + r"winograd_bw_micro<{T}, (?P<nj>\d+), (?P<kb>\d+)>\(",
        hot=lambda a: (a["nj"] * a["kb"], a["kb"]),
    ),
    # Row direct kernel for few filters: MR filters x NR rows x NV vectors.
    Kernel(
        "rows",
        "row_direct_impl.h",
        _ROWS_MICRO,
        hot=lambda a: (a["mr"] * a["nr"] * a["nv"], a["mr"]),
    ),
    # The same for one filter: one input vector loaded per FMA, the most loads.
    Kernel(
        "rows_one_filter",
        "row_direct_impl.h",
        _ROWS_MICRO,
        hot=lambda a: (a["nr"] * a["nv"], a["nv"]),
        where=lambda a: a["mr"] == 1,
    ),
    # Shared-rows kernel of a 3x3 layer with 2-3 filters (row direct).
    Kernel(
        "rows_shared",
        "implicit_gemm.h (row_direct_impl.h)",
        _ROWS_SHARED,
        hot=lambda a: (a["mr"] * a["nr"] * a["nv"], a["mr"], a["nv"]),
        where=lambda a: a["r"] == 3 and a["mr"] > 1,
    ),
    # The same kernel with one filter on a depthwise 3x3 plane (depthwise_impl.h):
    # two vectors of columns, kSharedPlaneRows rows (8 with AVX-512, 4 with AVX2).
    Kernel(
        "dw_fwd_shared",
        "implicit_gemm.h (depthwise_impl.h)",
        _ROWS_SHARED,
        hot=lambda a: (a["nr"],),
        where=lambda a: a["r"] == 3 and a["mr"] == 1 and a["nv"] == 2,
    ),
    # And with one filter of one vector, 12 rows (row_direct_impl.h): the
    # dL/dx of a one-channel input, or a one-filter layer.
    Kernel(
        "one_filter_shared",
        "implicit_gemm.h (row_direct_impl.h)",
        _ROWS_SHARED,
        hot=lambda a: (a["nr"],),
        where=lambda a: a["r"] == 3 and a["mr"] == 1 and a["nv"] == 1,
    ),
    # Depthwise forward rows that the shared kernel does not take: RB rows, the most.
    Kernel("dw_fwd", "depthwise_impl.h", _NS + r"plane_tile<{T}, (?P<rb>\d+)>\(", hot=lambda a: (a["rb"],)),
    # Plane dL/dx (one-channel inputs; depthwise past half the L3): RB kernel
    # rows x NV vectors of sums over the filters, the most.
    Kernel(
        "dw_bwd_data",
        "depthwise_impl.h",
        _NS + r"plane_scatter<{T}, (?P<rb>\d+), (?P<nv>\d+)>\(",
        hot=lambda a: (a["rb"] * a["nv"], a["rb"]),
    ),
    # Depthwise dL/dF: NT taps at once, and the shared-rows 3x3 version (its
    # instance for adjacent kernel columns: no column stride or dilation).
    Kernel("dw_dots", "depthwise_impl.h", _NS + r"plane_dots<{T}, (?P<nt>\d+)>\(", hot=lambda a: (a["nt"],)),
    Kernel(
        "dw_dots_shared",
        "depthwise_impl.h",
        _NS + r"plane_dots_shared<{T}, (?P<r>\d+), (?P<s>\d+), (?P<rg>\d+), true, false>\(",
        hot=lambda a: (a["r"] * a["s"],),
    ),
    # One-channel dL/dF without a shared-rows kernel and with too few filters
    # for im2col: NK filters x NT taps of plane dots, the full block.
    Kernel(
        "filter_dots",
        "depthwise_impl.h",
        _NS + r"plane_dots_filters<{T}, (?P<nk>\d+), (?P<nt>\d+), false>\(",
        hot=lambda a: (a["nk"] * a["nt"], a["nk"]),
    ),
    # One-channel dL/dF: MK filters x NT taps of dots with im2col columns (AVX-512 only).
    Kernel(
        "im2col_dots",
        "backward_weights_im2col_impl.h",
        _NS + r"im2col_dots_micro<{T}, (?P<mk>\d+), (?P<nt>\d+)>\(",
        hot=lambda a: (a["mk"] * a["nt"], a["mk"]),
        isas=("avx512",),
    ),
]
ISAS = ("avx2", "avx512")
DTYPES = ("float", "double")
# Intel AVX-512 models, newest core first. The default is the first that models two 512-bit FMA
# ports, like the Xeon of issue 15 (pick_intel_model): LLVM 19's sapphirerapids and
# icelake-server models put 512-bit FMAs on port 0 only, and up to LLVM 16 sapphirerapids is the
# Skylake-server model under another name.
INTEL_MODELS = ("sapphirerapids", "icelake-server", "skylake-avx512")
ZEN_MODELS = ("znver4", "znver3")  # all that exist: znver3 stands for the AVX2-only Zen 2/3 cores
# znver4 with each 512-bit broadcast from memory modelled as a plain 512-bit load. LLVM's znver4
# puts such a broadcast on FP1, an FMA pipe, for two cycles, which caps a loop of one broadcast
# per two FMAs at 66.6 %; but fastconv's kernels of 2026-11-27 (commit 7441af9), whose AVX-512
# direct forward was such a loop (llvm-mca 19: 66.6 %), ran resnet_3x3's whole forward at 88.9 %
# of the measured FMA peak on a real Zen 4 (docs/performance.md). Shown beside znver4, not instead.
ZEN4_BROADCAST_AS_LOAD = "znver4-bcast-load"
_ZMM_BROADCAST = re.compile(r"vbroadcasts([sd])\s+(\S*\([^)]*\)),\s*%zmm")
TRIPLE = "x86_64-unknown-linux-gnu"
ITERATIONS = 1000  # long enough that the pipeline's fill and drain stay under 1 %

# ---------------------------------------------------------------------------- disassembly


@dataclasses.dataclass
class Insn:
    addr: int
    op: str  # the mnemonic, prefixes such as notrack left out
    text: str  # the instruction as llvm-mc reads it, comments and symbol annotations dropped
    target: int | None = None  # a direct branch's or call's target address

    @property
    def is_branch(self) -> bool:
        return self.op.startswith("j") or self.op.startswith("loop")

    @property
    def is_cond_branch(self) -> bool:
        return self.is_branch and self.op not in ("jmp", "jmpq")

    @property
    def ends_flow(self) -> bool:  # nothing falls through after it
        return self.op in ("jmp", "jmpq", "ud2", "hlt") or self.op.startswith("ret")


_LINE_RE = re.compile(r"^\s*([0-9a-f]+):\s+(.*)$")
_HEADER_RE = re.compile(r"^([0-9a-f]+) <(.*)>:\s*$")
_RAW_BYTES_RE = re.compile(r"^(?:[0-9a-f]{2} )+\s*")
_PREFIXES = {"notrack", "bnd", "rep", "repz", "repe", "repne", "repnz", "lock", "data16", "cs", "ds", "addr32"}
_TARGET_RE = re.compile(r"^(?:0x)?([0-9a-f]+)\b")


def parse_insn(addr: int, body: str) -> Insn | None:
    """One instruction from an objdump line's text after the address; None for a bytes-only line."""
    body = _RAW_BYTES_RE.sub("", body.replace("\t", " ")).strip()
    body = re.sub(r"\s*#.*$", "", body)  # llvm-objdump's "# 0x1234 <sym>" after RIP-relative operands
    body = re.sub(r"\s*<[^>]*>", "", body).strip()  # symbol annotations
    if not body or body == "(bad)":
        return None
    tokens = body.split(None, 1)
    prefix = ""
    while tokens and tokens[0] in _PREFIXES and len(tokens) > 1:
        prefix += tokens[0] + " "
        tokens = tokens[1].split(None, 1)
    op = tokens[0]
    operands = tokens[1] if len(tokens) > 1 else ""
    insn = Insn(addr, op, (prefix + op + (" " + operands if operands else "")).strip())
    if (insn.is_branch or op.startswith("call")) and not operands.startswith("*"):
        m = _TARGET_RE.match(operands)
        if m:
            insn.target = int(m.group(1), 16)
    return insn


def parse_objdump(text: str) -> dict[str, list[Insn]]:
    """Function name (as in the header line) -> its instructions, from objdump -d output."""
    funcs: dict[str, list[Insn]] = {}
    current: list[Insn] | None = None
    for line in text.splitlines():
        h = _HEADER_RE.match(line)
        if h:
            current = funcs.setdefault(h.group(2), [])
            continue
        m = _LINE_RE.match(line)
        if m and current is not None:
            insn = parse_insn(int(m.group(1), 16), m.group(2))
            if insn:
                current.append(insn)
    return funcs


# ---------------------------------------------------------------------------- loops

_FMA_RE = re.compile(r"^vf(?:n)?m(?:add|sub|addsub|subadd)(?:132|213|231)([ps])([sdh])$")


def fma_form(insn: Insn) -> str | None:
    """'ps512', 'pd256', ... for a packed FMA; 'ss' / 'sd' for a scalar one; None otherwise."""
    m = _FMA_RE.match(insn.op)
    if not m:
        return None
    if m.group(1) == "s":
        return "s" + m.group(2)
    regs = re.findall(r"%([xyz])mm\d+", insn.text)
    width = {"x": 128, "y": 256, "z": 512}[regs[-1]] if regs else 0
    return f"p{m.group(2)}{width}"


def count_fmas(insns: Iterable[Insn]) -> dict[str, int]:
    """Packed FMAs by form (scalar ones under 'ss' / 'sd')."""
    forms: dict[str, int] = {}
    for insn in insns:
        form = fma_form(insn)
        if form:
            forms[form] = forms.get(form, 0) + 1
    return forms


def vector_fmas(forms: dict[str, int]) -> int:
    return sum(n for f, n in forms.items() if f.startswith("p"))


@dataclasses.dataclass
class Loop:
    header_addr: int
    latch_addr: int  # the backward branch taken on the hot path
    path: list[Insn]  # one iteration along the path with the most FMAs
    innermost: bool
    fmas: dict[str, int]

    @property
    def vector_fmas(self) -> int:
        return vector_fmas(self.fmas)


def _blocks(insns: Sequence[Insn]) -> tuple[list[tuple[int, int]], dict[int, list[int]]]:
    """Basic blocks as [start, end) instruction indices, and each block's successors."""
    index = {insn.addr: i for i, insn in enumerate(insns)}
    leaders = {0}
    for i, insn in enumerate(insns):
        if insn.is_branch or insn.ends_flow:
            if insn.target is not None and insn.target in index:
                leaders.add(index[insn.target])
            if i + 1 < len(insns):
                leaders.add(i + 1)
    starts = sorted(leaders)
    spans = [(s, starts[k + 1] if k + 1 < len(starts) else len(insns)) for k, s in enumerate(starts)]
    block_of = {s: k for k, (s, _) in enumerate(spans)}
    succ: dict[int, list[int]] = {}
    for k, (_, e) in enumerate(spans):
        last = insns[e - 1]
        out: list[int] = []
        if not last.ends_flow and k + 1 < len(spans):
            out.append(k + 1)  # falls through (a conditional branch not taken, or any other instruction)
        if last.is_branch and last.target is not None and last.target in index:
            out.append(block_of[index[last.target]])
        succ[k] = out
    return spans, succ


def find_loops(insns: Sequence[Insn]) -> list[Loop]:
    """Every natural loop of the function (one per header), with its heaviest path."""
    spans, succ = _blocks(insns)
    preds: dict[int, list[int]] = {k: [] for k in succ}
    for k, out in succ.items():
        for v in out:
            preds[v].append(k)
    latches: dict[int, list[int]] = {}
    for k, out in succ.items():
        for h in out:
            if h <= k:  # a backward branch (or a block jumping to its own start)
                latches.setdefault(h, []).append(k)
    bodies: dict[int, set[int]] = {}
    for h, ls in latches.items():
        body, todo = {h}, list(ls)
        while todo:
            b = todo.pop()
            if b not in body:
                body.add(b)
                todo.extend(preds[b])
        bodies[h] = body
    loops = []
    for h, body in bodies.items():
        innermost = not any(other != h and other in body for other in bodies)
        blocks = _heaviest_path(h, body, set(latches[h]), succ, spans, insns)
        path = [insns[i] for b in blocks for i in range(*spans[b])]
        loops.append(Loop(insns[spans[h][0]].addr, path[-1].addr, path, innermost, count_fmas(path)))
    return loops


def _heaviest_path(
    h: int,
    body: set[int],
    latches: set[int],
    succ: dict[int, list[int]],
    spans: list[tuple[int, int]],
    insns: Sequence[Insn],
) -> list[int]:
    """Blocks from header h to a latch with the most vector FMAs, then the most instructions
    (conditional work such as a prefetch counted in: the conservative choice)."""
    best: dict[int, tuple[tuple[int, int], list[int]]] = {}

    def weight(b: int) -> tuple[int, int]:
        block = insns[spans[b][0] : spans[b][1]]
        return vector_fmas(count_fmas(block)), len(block)

    def visit(b: int, seen: frozenset[int]) -> tuple[tuple[int, int], list[int]]:
        if b in best:
            return best[b]
        w = weight(b)
        choice: tuple[tuple[int, int], list[int]] | None = (w, [b]) if b in latches else None
        seen = seen | {b}  # an inner loop's back edge is not followed: its body counts once
        for v in succ[b]:
            if v in body and v != h and v not in seen:  # an edge back to the header ends the iteration
                (vf, vn), vp = visit(v, seen)
                cand = ((w[0] + vf, w[1] + vn), [b] + vp)
                if choice is None or cand[0] > choice[0]:
                    choice = cand
        best[b] = choice if choice is not None else ((-1, 0), [b])
        return best[b]

    return visit(h, frozenset())[1]


def hot_loop(insns: Sequence[Insn]) -> tuple[Loop | None, list[Loop]]:
    """The innermost loop with the most vector FMAs (ties: the fewest instructions, the lean
    common case such as the loop without edge-pixel handling), and all loops with FMAs."""
    loops = [lp for lp in find_loops(insns) if lp.vector_fmas > 0]
    pool = [lp for lp in loops if lp.innermost] or loops
    if not pool:
        return None, loops
    return max(pool, key=lambda lp: (lp.vector_fmas, -len(lp.path))), loops


LABEL = ".Lmca_loop"


def mca_asm(path: Sequence[Insn]) -> str:
    """The loop body as an llvm-mca input: no addresses; branches and calls go to one label."""
    lines = [LABEL + ":"]
    for insn in path:
        text = insn.text
        if insn.target is not None:
            text = text[: text.index(insn.op) + len(insn.op)] + " " + LABEL
        lines.append("  " + text)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- tools


@dataclasses.dataclass
class Tools:
    mca: str
    version: tuple[int, ...]
    objdump: str
    nm: str


def _version(exe: str) -> tuple[int, ...]:
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    m = re.search(r"LLVM version (\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(x) for x in m.groups()) if m else ()


def find_tools(mca_override: str | None = None) -> Tools | None:
    """The newest llvm-mca on PATH or under /usr/lib/llvm-*, with the objdump and nm beside it."""
    if mca_override:
        candidates = [mca_override]
    else:
        names = {
            p.name
            for d in os.environ.get("PATH", "").split(os.pathsep)
            if d and os.path.isdir(d)
            for p in Path(d).glob("llvm-mca*")
        }
        candidates = [c for c in (shutil.which(n) for n in sorted(names)) if c]
        candidates += [str(p) for p in Path("/usr/lib").glob("llvm-*/bin/llvm-mca")]
    versioned = [(v, c) for c in candidates if (v := _version(c))]
    if not versioned:
        return None
    version, mca = max(versioned)
    suffix = Path(mca).name[len("llvm-mca") :]
    folder = Path(mca).parent

    def beside(tool: str, fallback: str) -> str:
        for name in (tool + suffix, tool):
            if (folder / name).exists():
                return str(folder / name)
            found = shutil.which(tool + suffix)
            if found:
                return found
        return shutil.which(tool) or shutil.which(fallback) or fallback

    return Tools(mca, version, beside("llvm-objdump", "objdump"), beside("llvm-nm", "nm"))


def available_cpus(tools: Tools) -> set[str]:
    out = subprocess.run([tools.mca, f"-mtriple={TRIPLE}", "-mcpu=help"], capture_output=True, text=True)
    return set(re.findall(r"^\s+([a-z0-9-]+)\s+- Select", out.stdout + out.stderr, re.M))


def pick_intel_model(tools: Tools, cpus: set[str], cal: dict[tuple[str, str], Calibration]) -> str | None:
    """The newest Intel model with the most 512-bit FMA throughput, skipping a name that is only
    an alias of a later model (the same FMA ports)."""
    found = [(c, calibrate(tools, c, "ps512", cal)) for c in INTEL_MODELS if c in cpus]
    if not found:
        return None
    fastest = min(k.cycles_per_fma for _, k in found)
    for i, (cpu, k) in enumerate(found):
        alias = any(k.ports == later.ports for _, later in found[i + 1 :])
        if k.cycles_per_fma <= fastest * 1.01 and not alias:
            return cpu
    return found[-1][0]


def default_models(tools: Tools, cal: dict[tuple[str, str], Calibration]) -> list[str]:
    cpus = available_cpus(tools)
    intel = pick_intel_model(tools, cpus, cal)
    zen = [c for c in ZEN_MODELS if c in cpus]
    if "znver4" in zen:
        zen.insert(zen.index("znver4") + 1, ZEN4_BROADCAST_AS_LOAD)
    return ([intel] if intel else []) + zen


# ---------------------------------------------------------------------------- input


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclasses.dataclass
class Symbol:
    addr: int
    size: int
    name: str  # demangled


def text_symbols(tools: Tools, so: Path) -> list[Symbol]:
    out = subprocess.run([tools.nm, "-C", "-S", "--defined-only", str(so)], capture_output=True, text=True)
    syms = []
    for line in out.stdout.splitlines():
        parts = line.split(None, 3)
        if len(parts) == 4 and parts[2] in "tTwW" and len(parts[2]) == 1:
            syms.append(Symbol(int(parts[0], 16), int(parts[1], 16), parts[3]))
    return syms


def _ninja_vars(lines: list[str], start: int) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in lines[start:]:
        m = re.match(r"^\s+([A-Za-z0-9_]+)\s*=\s?(.*)$", line)
        if not m:
            break
        out[m.group(1)] = m.group(2)
    return out


def link_command(build_dir: Path, target: str, out: Path) -> str:
    """The build's own link command for `target` (from build.ninja), writing `out` and doing no
    pre-link or post-build step (the post-build step is the strip)."""
    text = (build_dir / "build.ninja").read_text()
    rules = build_dir / "CMakeFiles" / "rules.ninja"
    if rules.exists():
        text += "\n" + rules.read_text()
    lines = re.sub(r"\$\n\s*", "", text).splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^build (\S+): (\S+)(.*)$", line)
        if m and m.group(1) == target:
            rule, rest, env = m.group(2), m.group(3), _ninja_vars(lines, i + 1)
            break
    else:
        raise RuntimeError(f"no build statement for {target} in {build_dir / 'build.ninja'}")
    inputs = rest.split(" | ")[0].split(" || ")[0].split()
    r = next(k for k, line in enumerate(lines) if line.strip() == f"rule {rule}")
    command = _ninja_vars(lines, r + 1)["command"]
    env.update({"in": " ".join(inputs), "out": str(out), "TARGET_FILE": str(out), "PRE_LINK": ":", "POST_BUILD": ":"})
    command = re.sub(r"\$\{?([A-Za-z0-9_]+)\}?", lambda m: env.get(m.group(1), ""), command.replace("$$", "\0"))
    return command.replace("\0", "$")


def find_build_copy(so: Path, extra: Sequence[Path]) -> Path | None:
    """The build's own copy of `so`, byte-identical, in the build directory that made it."""
    digest = sha256(so)
    repo = Path(__file__).resolve().parents[1]
    for d in [*extra, *sorted((repo / "build").glob("*/"))]:
        if (d / "build.ninja").exists():
            for copy in sorted(d.glob("*.so")):
                if sha256(copy) == digest:
                    return copy
    return None


def unstripped_copy(tools: Tools, so: Path, build_dirs: Sequence[Path], log: Callable[[str], None]) -> tuple[Path, str]:
    """A copy of `so` with its symbol table, and how it was checked to be the same code."""
    if text_symbols(tools, so):
        return so, "has its own symbol table"
    built = find_build_copy(so, build_dirs)
    if built is None:
        raise RuntimeError(
            f"{so} is stripped and no build directory (build/*/ of this checkout, or --build-dir) "
            "holds the same file: rebuild with `pip install .` here, or pass an unstripped --so"
        )
    digest, build = sha256(so), built.parent
    cached = build / "mca" / f"{digest[:16]}-{built.name}"
    if not cached.exists():
        cached.parent.mkdir(exist_ok=True)
        tmp = cached.with_suffix(".tmp")
        cmd = link_command(build, built.name, tmp)
        log(f"relinking {build.name} without the strip (LTO: a few minutes, once per build) ...")
        subprocess.run(cmd, shell=True, cwd=build, check=True)
        stripped = cached.with_suffix(".stripped")
        subprocess.run([shutil.which("strip") or "strip", "-o", str(stripped), str(tmp)], check=True)
        same = sha256(stripped) == digest
        stripped.unlink()
        if not same:
            tmp.unlink()
            raise RuntimeError(
                f"the relinked copy of {built.name}, stripped, differs from {so}: "
                "its figures would not describe the installed code"
            )
        tmp.rename(cached)
    return cached, f"relinked from {build}, identical to it once stripped"


def disassemble(tools: Tools, so: Path, sym: Symbol) -> list[Insn]:
    out = subprocess.run(
        [
            tools.objdump,
            "-d",
            "--no-show-raw-insn",
            f"--start-address={sym.addr:#x}",
            f"--stop-address={sym.addr + sym.size:#x}",
            str(so),
        ],
        capture_output=True,
        text=True,
    )
    return [insn for body in parse_objdump(out.stdout).values() for insn in body]


# ---------------------------------------------------------------------------- llvm-mca


@dataclasses.dataclass
class McaResult:
    cycles_per_iter: float
    block_rthroughput: float
    dispatch_bound: float  # uOps per iteration / dispatch width
    pressure: dict[str, float]  # resource name -> cycles per iteration (per unit, for a group of units)
    bottlenecks: list[tuple[str, float]]  # llvm-mca's bottleneck analysis: name, % of cycles
    backend_pressure: float  # % of cycles with backend pressure increase


def run_mca(tools: Tools, cpu: str, asm: str) -> McaResult:
    if cpu == ZEN4_BROADCAST_AS_LOAD:
        cpu, asm = "znver4", _ZMM_BROADCAST.sub(lambda m: f"vmovup{m.group(1)} {m.group(2)}, %zmm", asm)
    with tempfile.NamedTemporaryFile("w", suffix=".s", delete=False) as f:
        f.write(asm)
    try:
        out = subprocess.run(
            [
                tools.mca,
                f"-mtriple={TRIPLE}",
                f"-mcpu={cpu}",
                f"-iterations={ITERATIONS}",
                "-resource-pressure",
                "-bottleneck-analysis",
                "-instruction-info=false",
                f.name,
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        os.unlink(f.name)
    if out.returncode != 0:
        err = next((line for line in out.stderr.splitlines() if "error" in line), out.stderr.strip()[:200])
        raise McaError(err.strip())
    return parse_mca(out.stdout)


class McaError(RuntimeError):
    pass


def parse_mca(text: str) -> McaResult:
    def number(label: str) -> float:
        m = re.search(rf"^{label}:\s+([\d.]+)", text, re.M)
        if not m:
            raise McaError(f"no '{label}' in llvm-mca's output")
        return float(m.group(1))

    names = dict(re.findall(r"^\[([\d.]+)\]\s+-\s+(\S+)", text, re.M))
    units = {n: list(names.values()).count(n) for n in names.values()}  # Zn4Load: [15.0] [15.1] [15.2]
    pressure: dict[str, float] = {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Resource pressure per iteration:"):
            keys = re.findall(r"\[([\d.]+)\]", lines[i + 1])
            values = lines[i + 2].split()
            for k, v in zip(keys, values):
                name = names.get(k, k)
                share = (0.0 if v == "-" else float(v)) / units.get(name, 1)  # per unit of a group
                pressure[name] = pressure.get(name, 0.0) + share
            break
    bottlenecks: list[tuple[str, float]] = []
    m = re.search(r"Throughput Bottlenecks:(.*?)\n\s*\n", text, re.S)
    if m:
        for name, pct in re.findall(r"-\s+(.+?)\s+\[\s*([\d.]+)%\s*\]", m.group(1)):
            bottlenecks.append((name.strip(), float(pct)))
    bp = re.search(r"Cycles with backend pressure increase \[\s*([\d.]+)%", text)
    iterations = number("Iterations")
    return McaResult(
        number("Total Cycles") / iterations,
        number("Block RThroughput"),
        number("Total uOps") / iterations / number("Dispatch Width"),
        pressure,
        bottlenecks,
        float(bp.group(1)) if bp else 0.0,
    )


@dataclasses.dataclass
class Calibration:
    cycles_per_fma: float
    ports: list[str]  # the resources a pure FMA loop keeps busy


def calibration_asm(form: str) -> str:
    """Many independent FMAs of one form (e.g. 'ps512'): FMA ports are the only limit."""
    reg = {"128": "xmm", "256": "ymm", "512": "zmm"}[form[2:]]
    n = 30 if reg == "zmm" else 14  # accumulators: a VEX encoding reaches only 16 registers
    return "".join(f"  vfmadd231{form[:2]} %{reg}{n}, %{reg}{n + 1}, %{reg}{i}\n" for i in range(n))


def calibrate(tools: Tools, cpu: str, form: str, cache: dict[tuple[str, str], Calibration]) -> Calibration:
    key = (cpu, form)
    if key not in cache:
        asm = calibration_asm(form)
        res = run_mca(tools, cpu, asm)
        n = asm.count("\n")
        cache[key] = Calibration(res.cycles_per_iter / n, sorted(r for r, p in res.pressure.items() if p > 0))
    return cache[key]


# ---------------------------------------------------------------------------- the table


@dataclasses.dataclass
class Row:
    kernel: str
    isa: str
    dtype: str
    function: str = ""
    loop: str = ""  # address range of the modelled path
    model: str = ""
    fmas: int = 0
    fma_forms: dict[str, int] = dataclasses.field(default_factory=dict)
    instructions: int = 0
    cycles: float | None = None  # predicted cycles per iteration
    fma_bound: float | None = None
    fma_pct: float | None = None
    block_rthroughput: float | None = None
    fma_ports: dict[str, float] = dataclasses.field(default_factory=dict)  # pressure per iteration
    top_other: str = ""  # llvm-mca's bottleneck analysis, FMA ports left out
    busiest_other: str = ""  # the other resource (or dispatch) nearest its limit
    limit: str = ""  # what holds the loop back: the busiest other resource, or dependencies where none is near full
    stack_accesses: int = 0  # (%rsp) operands in the loop: spilled registers
    other_loops: list[str] = dataclasses.field(default_factory=list)
    note: str = ""
    below_threshold: bool = False
    asm: str = ""


def select_function(kernel: Kernel, isa: str, dtype: str, syms: Sequence[Symbol]) -> list[Symbol]:
    """The matching functions of the hottest rank (several where the rank ties)."""
    rx = re.compile(kernel.pattern.format(isa=isa, T=dtype))
    ranked: list[tuple[tuple[int, ...], Symbol]] = []
    for s in syms:
        m = rx.search(s.name)
        if m:
            args = {k: int(v) for k, v in m.groupdict().items() if v is not None}
            if kernel.where(args):
                ranked.append((kernel.hot(args), s))
    if not ranked:
        return []
    top = max(r for r, _ in ranked)
    return [s for r, s in ranked if r == top]


def short_name(name: str) -> str:
    """'fastconv::avx2::direct_micro<float, 6, 2>' from the full demangled signature."""
    m = re.search(r"fastconv::\w+::[\w:]+(?:<[^()]*>)?", name)
    base = m.group(0) if m else name[:80]
    clone = re.search(r"\[clone ([^\]]+)\]", name)
    lam = "::{lambda}" if "{lambda" in name else ""
    return base + lam + (f" [{clone.group(1)}]" if clone else "")


def model_kernel(
    tools: Tools,
    so: Path,
    syms: Sequence[Symbol],
    kernel: Kernel,
    isa: str,
    dtype: str,
    models: Sequence[str],
    threshold: float,
    cal: dict[tuple[str, str], Calibration],
) -> list[Row]:
    candidates = select_function(kernel, isa, dtype, syms)
    if not candidates:
        return [Row(kernel.name, isa, dtype, note="not found (renamed, or inlined into its caller)")]
    found = []
    for sym in candidates:
        loop, loops = hot_loop(disassemble(tools, so, sym))
        if loop:
            found.append((loop, loops, sym))
    if not found:
        return [Row(kernel.name, isa, dtype, function=short_name(candidates[0].name), note="no loop with vector FMAs")]
    loop, loops, sym = max(found, key=lambda t: (t[0].vector_fmas, -len(t[0].path)))
    asm = mca_asm(loop.path)
    stack = sum(1 for insn in loop.path if "(%rsp)" in insn.text)  # spilled registers: -O3 keeps no frame pointer
    others = [
        f"{lp.header_addr:#x}: {lp.vector_fmas} FMAs / {len(lp.path)} insns{'' if lp.innermost else ' (outer)'}"
        for lp in loops
        if lp is not loop
    ]
    rows = []
    for cpu in models:
        row = Row(
            kernel.name,
            isa,
            dtype,
            short_name(sym.name),
            f"{loop.header_addr:#x}-{loop.latch_addr:#x}",
            cpu,
            loop.vector_fmas,
            dict(loop.fmas),
            len(loop.path),
            stack_accesses=stack,
            other_loops=others,
            asm=asm,
        )
        try:
            res = run_mca(tools, cpu, asm)
            cals = {f: calibrate(tools, cpu, f, cal) for f in loop.fmas if f.startswith("p")}
        except McaError as e:
            unsupported = "unsupported instruction" in str(e)
            row.note = f"n/a: no AVX-512 in {cpu}" if unsupported and "%zmm" in asm else f"n/a: {e}"
            rows.append(row)
            continue
        ports = sorted({p for c in cals.values() for p in c.ports})
        row.cycles = res.cycles_per_iter
        row.block_rthroughput = res.block_rthroughput
        row.fma_bound = sum(n * cals[f].cycles_per_fma for f, n in loop.fmas.items() if f in cals)
        row.fma_pct = 100.0 * row.fma_bound / row.cycles
        row.fma_ports = {p: res.pressure.get(p, 0.0) for p in ports}
        other = sorted(((pct, n) for n, pct in res.bottlenecks if n not in ports and pct >= 1), reverse=True)
        row.top_other = f"{other[0][1]} {other[0][0]:.0f}%" if other else "none"
        busy = [(v, p) for p, v in res.pressure.items() if p not in ports and v > 0]
        busy.append((res.dispatch_bound, "dispatch"))
        # An FMA port busier than its FMAs keep it (marked *): other instructions share it.
        busy += [(v, p + "*") for p, v in row.fma_ports.items() if 100 * v / row.cycles > row.fma_pct + 5]
        v, p = max(busy)
        row.busiest_other = f"{p} {100 * v / row.cycles:.0f}%"
        deps = [(pct, n) for pct, n in other if "Dependencies" in n]
        row.limit = row.busiest_other
        fullest = max([v, *row.fma_ports.values()]) / row.cycles
        if fullest < 0.9 and deps:  # no unit, FMA ports included, is near full: latency chains are the limit
            row.limit = f"{deps[0][1].split()[0].lower()} deps {deps[0][0]:.0f}%"
        row.below_threshold = row.fma_pct < threshold
        rows.append(row)
    return rows


def format_table(rows: Sequence[Row], threshold: float) -> str:
    head = [
        "kernel",
        "isa",
        "T",
        "instance",
        "model",
        "FMAs",
        "cyc/it",
        "FMA-bound",
        "FMA %",
        "FMA ports (use)",
        "busiest other",
        "llvm-mca bottleneck",
        "spills",
    ]
    body = []
    for r in rows:
        if r.cycles is None:
            body.append(
                [
                    r.kernel,
                    r.isa,
                    r.dtype,
                    r.function.split("::")[-1],
                    r.model,
                    str(r.fmas or ""),
                    "",
                    "",
                    "",
                    "",
                    r.note,
                    "",
                    "",
                ]
            )
            continue
        assert r.fma_pct is not None and r.fma_bound is not None
        use = " ".join(f"{p}:{v / r.cycles:.0%}" for p, v in r.fma_ports.items())
        pct = f"{r.fma_pct:.1f}" + (" <" if r.below_threshold else "")
        body.append(
            [
                r.kernel,
                r.isa,
                r.dtype,
                r.function.split("::")[-1],
                r.model,
                str(r.fmas),
                f"{r.cycles:.2f}",
                f"{r.fma_bound:.2f}",
                pct,
                use,
                r.busiest_other,
                r.top_other,
                str(r.stack_accesses or ""),
            ]
        )
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(x, widths)) + " |" for x in [head, *body]]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines) + (
        f"\n\n'<': below {threshold:g} % of the model's FMA throughput. Use: per cycle. "
        "*: an FMA port that other instructions share. spills: stack operands in the loop."
    )


def format_compact(rows: Sequence[Row], models: Sequence[str], threshold: float) -> str:
    """One line per kernel instance: FMA % (cycles per iteration) and the limit per model."""
    head = ["kernel", "isa", "T", "instance", "FMAs", "spills", *models]
    body: list[list[str]] = []
    index: dict[tuple[str, str, str], list[str]] = {}
    for r in rows:
        key = (r.kernel, r.isa, r.dtype)
        if key not in index:
            index[key] = [
                r.kernel,
                r.isa,
                r.dtype,
                r.function.split("::")[-1],
                str(r.fmas or ""),
                str(r.stack_accesses or ""),
            ] + [""] * len(models)
            body.append(index[key])
        if r.model in models:
            cell = (
                f"{r.fma_pct:.1f}{' <' if r.below_threshold else ''} ({r.cycles:.1f}; {r.limit})"
                if r.cycles is not None and r.fma_pct is not None
                else r.note
            )
            index[key][6 + list(models).index(r.model)] = cell
        elif r.note:
            index[key][6:] = [r.note] * len(models)
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(x, widths)) + " |" for x in [head, *body]]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines) + (
        f"\n\nPer model: FMA throughput % (predicted cycles per iteration; busiest other "
        f"resource, % of its cycles, *: an FMA port that other instructions share; or, where no unit is 90 % busy, the\n"
        f"share of cycles llvm-mca blames on register or memory dependencies); '<' below {threshold:g} %."
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--so", type=Path, help="the extension to read (default: fastconv._core of this interpreter)")
    ap.add_argument(
        "--build-dir",
        type=Path,
        action="append",
        default=[],
        help="a build directory whose LTO objects made the (stripped) extension; default: build/*/ here",
    )
    ap.add_argument("--llvm-mca", help="the llvm-mca to use (default: the newest found)")
    ap.add_argument(
        "--models",
        help=f"comma-separated -mcpu values, or {ZEN4_BROADCAST_AS_LOAD} (default: an Intel AVX-512 model, "
        f"znver4, {ZEN4_BROADCAST_AS_LOAD}, znver3)",
    )
    ap.add_argument(
        "--kernels", help="comma-separated kernel names (default: all): " + ",".join(k.name for k in KERNELS)
    )
    ap.add_argument("--isa", default=",".join(ISAS), help="avx2, avx512 or both (default)")
    ap.add_argument("--dtype", default=",".join(DTYPES), help="float, double or both (default)")
    ap.add_argument("--threshold", type=float, default=90.0, help="mark kernels below this FMA throughput %%")
    ap.add_argument("--json", type=Path, help="write the table and its setting here")
    ap.add_argument("--show-asm", action="store_true", help="print each loop as given to llvm-mca")
    ap.add_argument("--compact", action="store_true", help="one line per kernel, the models side by side")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    tools = find_tools(args.llvm_mca)
    if tools is None:
        log("no llvm-mca found (apt-get install llvm-16, or pass --llvm-mca)")
        return 1
    so = args.so
    if so is None:
        import fastconv._core  # noqa: PLC0415 - only when no --so is given

        so = Path(fastconv._core.__file__)
    try:
        readable, provenance = unstripped_copy(tools, so.resolve(), args.build_dir, log)
    except (RuntimeError, subprocess.CalledProcessError) as e:
        log(f"error: {e}")
        return 1
    cal: dict[tuple[str, str], Calibration] = {}
    models = args.models.split(",") if args.models else default_models(tools, cal)
    wanted = set(args.kernels.split(",")) if args.kernels else None
    kernels = [k for k in KERNELS if wanted is None or k.name in wanted]
    syms = [s for s in text_symbols(tools, readable) if "fastconv::" in s.name]
    version = ".".join(map(str, tools.version))
    log(f"{so}: {provenance}\nllvm-mca {version} ({tools.mca}); models: {', '.join(models)}")
    rows: list[Row] = []
    for kernel in kernels:
        for isa in args.isa.split(","):
            if isa not in kernel.isas:
                continue
            for dtype in args.dtype.split(","):
                new = model_kernel(tools, readable, syms, kernel, isa, dtype, models, args.threshold, cal)
                rows.extend(new)
                if args.show_asm and new[0].asm:
                    print(f"# {new[0].function} {new[0].loop}\n{new[0].asm}")
    model_info = {cpu: {f: v for (c, f), v in sorted(cal.items()) if c == cpu} for cpu in models}
    print(f"llvm-mca {version}; {ITERATIONS} iterations; input {so}")
    intel = {c: k.cycles_per_fma for (c, f), k in cal.items() if f == "ps512" and c in INTEL_MODELS}
    if not args.models and intel:
        print(
            "  Intel model: the newest with two 512-bit FMA ports; cycles per 512-bit FMA: "
            + ", ".join(f"{c} {v:.2f}" for c, v in intel.items())
        )
    for cpu, forms in model_info.items():
        per = "; ".join(f"{f} {v.cycles_per_fma:.2f} on {'+'.join(v.ports)}" for f, v in forms.items())
        print(f"  {cpu}: cycles per FMA (calibrated): {per}")
    print(format_compact(rows, models, args.threshold) if args.compact else format_table(rows, args.threshold))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "so": str(so),
                    "provenance": provenance,
                    "llvm_mca": tools.mca,
                    "llvm_version": version,
                    "models": {
                        cpu: {f: dataclasses.asdict(v) for f, v in forms.items()} for cpu, forms in model_info.items()
                    },
                    "iterations": ITERATIONS,
                    "threshold": args.threshold,
                    "rows": [dataclasses.asdict(r) for r in rows],
                },
                indent=1,
            )
        )
    return 0 if any(r.cycles is not None for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
