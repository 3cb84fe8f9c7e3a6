"""The AVX-512 kernels' code stays in their own functions.

Each instruction set's kernels are compiled in a file of their own with that
set's flags. An inline function that several of those files instantiate (a
helper outside the sets' namespaces, a standard-library template) is kept
once by the linker, from whichever file it picks: if that copy came from the
AVX-512 file, the AVX2 path would run AVX-512 instructions on a CPU without
them. This reads the built extension's own code and fails on any AVX-512
(EVEX-only) instruction outside `fastconv::avx512` and the AVX-512 FMA peak
loop. It needs the extension's symbols: the sanitizer job's build keeps them;
a stripped wheel is skipped.
"""

from __future__ import annotations

import bisect
import re
import shutil
import subprocess
from pathlib import Path

import pytest

core = pytest.importorskip("fastconv._core")

# zmm registers, the mask registers, the upper 16 xmm/ymm registers and
# embedded broadcasts exist only in EVEX (AVX-512) encodings.
EVEX_ONLY = re.compile(r"%zmm|%k[1-7]\b|%[xy]mm(1[6-9]|2\d|3[01])\b|\{1to\d+\}")
# Functions allowed AVX-512 code: the kernels of that set, and the FMA loop
# that measures its peak (a target attribute on one function).
AVX512_OWNERS = re.compile(r"fastconv::avx512::|peak_avx512")


def defined_functions(so: Path) -> list[tuple[int, int, str]]:
    """(address, size, demangled name) of each function with a size."""
    out = subprocess.run(["nm", "-C", "-S", "--defined-only", str(so)], capture_output=True, text=True, check=True)
    functions = []
    for line in out.stdout.splitlines():
        parts = line.split(None, 3)
        if len(parts) == 4 and parts[2] in "tTwW":
            functions.append((int(parts[0], 16), int(parts[1], 16), parts[3]))
    return functions


def instructions(so: Path) -> tuple[list[int], list[str]]:
    """Addresses and texts of every instruction in the file's code."""
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(so)], capture_output=True, text=True, check=True)
    addresses, texts = [], []
    for line in out.stdout.splitlines():
        m = re.match(r"\s+([0-9a-f]+):\s+(\S.*)", line)
        if m:
            addresses.append(int(m.group(1), 16))
            texts.append(m.group(2))
    return addresses, texts


def avx512_code(so: Path) -> dict[str, str]:
    """Demangled name -> its first AVX-512 instruction, for each function that has one."""
    functions = defined_functions(so)
    if len(functions) < 100:
        pytest.skip("the installed _core is stripped (a release wheel): the sanitizer job's build keeps its symbols")
    addresses, texts = instructions(so)
    found = {}
    for start, size, name in functions:
        i = bisect.bisect_left(addresses, start)
        while i < len(addresses) and addresses[i] < start + size:
            if EVEX_ONLY.search(texts[i]):
                found[name] = texts[i]
                break
            i += 1
    return found


@pytest.fixture(scope="module")
def evex():
    if shutil.which("nm") is None or shutil.which("objdump") is None:
        pytest.skip("needs binutils' nm and objdump")
    return avx512_code(Path(core.__file__).resolve())


def test_no_avx512_instruction_outside_the_avx512_kernels(evex):
    leaks = {name: insn for name, insn in evex.items() if not AVX512_OWNERS.search(name)}
    assert not leaks, "AVX-512 instructions in functions the AVX2 or generic path may run:\n" + "\n".join(
        f"  {name[:160]}: {insn}" for name, insn in leaks.items()
    )


def test_the_check_sees_avx512_code_where_it_is(evex):
    # The same reading finds the AVX-512 kernels' code, and the peak loop's,
    # which lies outside fastconv::avx512: an empty result above is not a
    # parse that found nothing.
    assert any("fastconv::avx512::direct_micro<" in name for name in evex)
    assert any("peak_avx512" in name and "fastconv::avx512::" not in name for name in evex)
