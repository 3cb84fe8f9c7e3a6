"""The typed API: mypy --strict accepts an annotated script using it, and
mypy's stubtest finds the package's annotations (and _core's stubs) true to
the running code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy")
ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=ROOT)


def test_mypy_strict_accepts_a_script_using_the_public_api():
    result = run("mypy", "--strict", "--no-incremental", "examples/typed_usage.py")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_example_script_runs():
    subprocess.run([sys.executable, str(ROOT / "examples" / "typed_usage.py")], check=True, capture_output=True)


def test_stubtest_finds_the_annotations_true():
    result = run("mypy.stubtest", "fastconv")
    assert result.returncode == 0, result.stdout + result.stderr
