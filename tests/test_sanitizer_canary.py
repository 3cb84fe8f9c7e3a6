"""The sanitizer job's canary: a clean AddressSanitizer + UBSan run of the
suite means something only if the instrumentation is live. The sanitizer
build (.ci/sanitize, which sets FASTCONV_SANITIZED=1) compiles a deliberate
bug into the core, _core._canary(kind); here it is triggered in a subprocess,
which must die with the sanitizer's report. In a normal build these tests
skip, and _canary must not exist."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fastconv import _backend

core = _backend.core
SANITIZED = os.environ.get("FASTCONV_SANITIZED") == "1"


def sanitizers() -> set[str]:
    """The -fsanitize= options this core was compiled with."""
    flags = str(core.build_info()["flags"]).split() if core is not None else []
    return {name for f in flags if f.startswith("-fsanitize=") for name in f.split("=", 1)[1].split(",")}


def test_canary_only_in_sanitizer_builds():
    if core is None:
        pytest.skip("no C++ core in this install")
    if hasattr(core, "_canary"):
        assert sanitizers(), "the deliberate bug _canary is built into an unsanitized core"


# kind -> (what -fsanitize= must include, what the report must say)
CANARIES = {
    "address": ("address", ["ERROR: AddressSanitizer: heap-buffer-overflow", "READ of size 4"]),
    "undefined": ("undefined", ["sanitizer_canary.cpp", "runtime error: signed integer overflow"]),
}


@pytest.mark.parametrize("kind", sorted(CANARIES))
def test_sanitizer_reports_the_deliberate_bug(kind):
    if not SANITIZED and not hasattr(core, "_canary"):
        pytest.skip("not a sanitizer build (set by .ci/sanitize: FASTCONV_SANITIZED=1)")
    # In the sanitizer job a missing canary is a failure, not a skip: the job
    # must not pass on an uninstrumented build.
    assert core is not None, f"the C++ core did not import: {_backend.import_error}"
    assert hasattr(core, "_canary"), "FASTCONV_SANITIZED=1 but the core lacks _canary (FASTCONV_SANITIZER_CANARY=ON)"
    sanitizer, report = CANARIES[kind]
    assert sanitizer in sanitizers(), f"built without -fsanitize={sanitizer}: {core.build_info()['flags']}"

    env = dict(os.environ)
    # The report to stderr, where this test reads it, even if the job logs
    # the sanitizers' reports to files (log_path; later options win).
    for var in ("ASAN_OPTIONS", "UBSAN_OPTIONS"):
        env[var] = ":".join(filter(None, [env.get(var, ""), "log_path=stderr"]))
    code = f"from fastconv import _backend; _backend.core._canary({kind!r}); print('survived')"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "survived" not in result.stdout, (
        f"the deliberate {kind} bug went unnoticed: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    )
    for text in report:
        assert text in result.stderr, f"no {text!r} in the subprocess's stderr:\n{result.stderr}"
