"""Fuzzing the public API (the fuzzer is fuzz.py): every call either gives the
reference's answer or raises ValueError/TypeError (MemoryError) with a message
of its own -- never another exception, a crash, or a wrong result.

5,000 calls in the normal run; 100,000 in the slow one, every choice drawn by
hypothesis. The summary (calls made, outcomes, per API) is printed (shown with
-s or -rP) and written as JSON to the test's tmp_path, or to
$FASTCONV_FUZZ_SUMMARY when set. $FASTCONV_FUZZ_SEED draws other calls than
the fixed default seed of the normal run."""

from __future__ import annotations

import collections
import json
import os
import time
from pathlib import Path

import pytest
from fuzz import fuzz, fuzz_case, fuzzing, summarize


def report(summary: dict, tmp_path: Path) -> None:
    path = Path(os.environ.get("FASTCONV_FUZZ_SUMMARY", tmp_path / "fuzz-summary.json"))
    path.write_text(json.dumps(summary, indent=1, default=str))
    print(
        f"\nfuzz: {summary['calls']} calls from {summary['cases']} cases (seed {summary['seed']}) in {summary['seconds']} s"
    )
    for outcome, count in sorted(summary["outcomes"].items(), key=lambda item: -item[1]):
        print(f"  {count:7d}  {outcome}")
    print(f"  summary: {path}")


def run_fuzz(calls: int, seed: int, tmp_path: Path) -> dict:
    seed = int(os.environ.get("FASTCONV_FUZZ_SEED", seed))
    summary = fuzz(calls, seed)
    report(summary, tmp_path)

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
def test_fuzz_100000_calls_drawn_by_hypothesis(tmp_path):
    # The same fuzzer with every choice drawn by hypothesis (st.randoms): a
    # failing case is shrunk to a small one and stored in its example database.
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    calls_per_case, cases = 8, 12_500
    outcomes: collections.Counter = collections.Counter()
    start = time.perf_counter()

    @hypothesis.settings(
        max_examples=cases,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(r=st.randoms(use_true_random=False))
    def one_case(r):
        case_outcomes, failures = fuzz_case(r, calls_per_case)
        outcomes.update(case_outcomes)
        assert not failures, json.dumps(failures[0], indent=1, default=str)

    with fuzzing():
        one_case()
    summary = summarize(outcomes, [], cases, "hypothesis", time.perf_counter() - start)
    report(summary, tmp_path)
    assert summary["calls"] >= 100_000
    assert summary["outcomes"].get("returned", 0) > 25_000
    assert summary["outcomes"].get("ValueError", 0) > 10_000 and summary["outcomes"].get("TypeError", 0) > 10_000
