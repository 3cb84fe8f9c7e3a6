"""Fuzzing the public API (the fuzzer is fuzz.py): every call either gives the
reference's answer or raises ValueError/TypeError (MemoryError) with a message
of its own -- never another exception, a crash, or a wrong result.

5,000 calls in the normal run, 100,000 in the slow one. The summary (calls
made, outcomes, per API) is printed (shown with -s or -rP) and written as
JSON to the test's tmp_path, or to $FASTCONV_FUZZ_SUMMARY when set.
$FASTCONV_FUZZ_SEED draws other calls than the fixed default seeds."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from fuzz import fuzz


def run_fuzz(calls: int, seed: int, tmp_path: Path) -> dict:
    seed = int(os.environ.get("FASTCONV_FUZZ_SEED", seed))
    summary = fuzz(calls, seed)
    path = Path(os.environ.get("FASTCONV_FUZZ_SUMMARY", tmp_path / "fuzz-summary.json"))
    path.write_text(json.dumps(summary, indent=1, default=str))
    print(f"\nfuzz: {summary['calls']} calls from {summary['cases']} cases (seed {seed}) in {summary['seconds']} s")
    for outcome, count in sorted(summary["outcomes"].items(), key=lambda item: -item[1]):
        print(f"  {count:7d}  {outcome}")
    print(f"  summary: {path}")

    failures = summary["failures"]
    assert not failures, f"{summary['outcomes'].get('FAILURE')} failures, the first:\n" + "\n".join(
        json.dumps(f, indent=1, default=str) for f in failures[:3]
    )
    assert summary["calls"] >= calls
    outcomes = summary["outcomes"]
    # Both halves of the oracle were exercised: results checked, bad input refused.
    assert outcomes.get("returned", 0) > calls // 4
    assert outcomes.get("ValueError", 0) > calls // 10 and outcomes.get("TypeError", 0) > calls // 10
    return summary


def test_fuzz_5000_calls(tmp_path):
    run_fuzz(5_000, seed=0, tmp_path=tmp_path)


@pytest.mark.slow
def test_fuzz_100000_calls(tmp_path):
    run_fuzz(100_000, seed=1, tmp_path=tmp_path)
