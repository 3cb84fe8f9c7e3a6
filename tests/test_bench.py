"""Smoke test of ``python -m fastconv bench`` on one tiny shape with one repeat:
the agreement check gates the timing, and the table and JSON come out whole.
It asserts no speed: a benchmark is never a timed test."""

import argparse
import contextlib
import dataclasses
import json
import math
import os
import subprocess
import sys

import pytest

from fastconv import _backend, functional
from fastconv.__main__ import main
from fastconv.bench.config import Config
from fastconv.bench.fixed_cost import FixedCost
from fastconv.bench.host import CacheProbe, HostCheck, measure_peak
from fastconv.bench.libraries import make_case
from fastconv.bench.progress import Progress
from fastconv.bench.report import cache_disturbed, format_cache_probe, format_summary
from fastconv.bench.results import time_all
from fastconv.bench.suite import DETAIL_PASSES, PASSES, QUICK, SUITE, parse_shape
from fastconv.bench.targets import BIG_LAYERS, target_summary
from fastconv.bench.timing import time_interleaved
from fastconv.bench.torch_isa import CHILD_MARK, TORCH_ISA_ENV, TORCH_ISA_VARS

pytestmark = pytest.mark.skipif(_backend.core is None, reason="the C++ core is not built")

TINY = [
    "--shape",
    "name=tiny,n=2,c=3,h=9,k=4,kernel=3,stride=2",
    "--only",
    "tiny",
    "--threads",
    "1",
    "--warmup",
    "1",
    "--repeats",
    "1",
    "--min-time",
    "0",
]


@pytest.mark.parametrize("with_torch", [True, False], ids=["with-torch", "without-torch"])
def test_bench_checks_then_reports(tmp_path, capsys, monkeypatch, with_torch):
    if with_torch:
        pytest.importorskip("torch")
    else:
        monkeypatch.setattr("fastconv.bench.runner.import_torch", lambda: None)
    path = tmp_path / "bench.json"
    assert main(["bench", *TINY, "--detail", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "outputs agree" in out and "tiny" in out

    report = json.loads(path.read_text())
    assert {
        "versions",
        "cpu_model",
        "isa",
        "peak_gflops_per_thread",
        "threads",
        "dtypes",
        "cpu_facts",
        "torch_isa",
        "openmp_libraries",
        "memory_note",
        "agreement",
        "results",
        "geomean",
        "summary",
    } <= report.keys()
    assert report["cpu_facts"]["isa"] == report["isa"] and "summary: the figures issue 15" in out
    assert set(report["versions"]) == {"fastconv", "numpy", "torch", "python"}
    assert report["threads"] == [1] and report["dtypes"] == ["float32", "float64"]
    assert set(report["peak_gflops_per_thread"]) == {"float32", "float64"}

    assert report["agreement"] and all(row["ok"] for row in report["agreement"])
    against = {row["against"] for row in report["agreement"]}
    assert "numpy" in against  # a tiny shape always meets the reference

    results = report["results"]
    assert {(r["dtype"], r["pass"]) for r in results} == {
        (d, p) for d in ("float32", "float64") for p in PASSES + DETAIL_PASSES
    }
    for r in results:
        fastconv = r["timings"]["fastconv"]
        assert fastconv["samples"] == 1
        assert {"median_ms", "spread_pct", "gflops", "pct_peak", "peak_rss_extra_mib"} <= fastconv.keys()
        assert r["speedup_vs_1_thread"] is None  # a 1-thread run has nothing to scale from

    libraries = {"fastconv", "torch"} if with_torch else {"fastconv"}
    assert set(report["fixed_cost_us"]) == libraries and "fixed cost per call" in out
    assert all(0 < us < 1e5 for costs in report["fixed_cost_us"].values() for us in costs.values())
    host = report["host_check"]
    assert host["enabled"] and host["checks"] >= 2 * len(results) and "host check:" in out
    probe = host["cache_probe"]  # 1 thread only: every check here whose FMAs passed
    assert 0 < probe["checks"] <= host["checks"] and 0 < probe["best_ms"] <= probe["median_ms"] < 1e3
    assert 0 <= probe["slow_share"] <= 1 and "in-cache probe" in out

    if not with_torch:
        assert report["versions"]["torch"] is None and not report["geomean"]
        assert all(r["speedup_vs_torch"] is None for r in results)
    else:
        assert "torch" in against and "geomean" in out
        assert all(r["speedup_vs_torch"] > 0 for r in results)
        assert {g["pass"] for g in report["geomean"]} == set(PASSES + DETAIL_PASSES)


def test_timing_rounds_take_turns_in_alternating_order(monkeypatch):
    """Each round takes its share of every callable's samples after one warm-up
    call, the libraries in reverse order every other round."""
    calls = []

    def fn(name):
        return lambda: calls.append(name) or ()

    libs = {"a": {"forward": fn("a")}, "b": {"forward": fn("b")}}
    cfg = Config(
        shapes=(),
        dtypes=("float32",),
        threads=(1,),
        passes=("forward",),
        reference_all=False,
        warmup=1,
        repeats=5,
        rounds=2,
        min_time=0.0,
    )
    case = make_case(parse_shape("name=tiny,n=1,c=1,h=3,k=1,kernel=3"), "float32")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    timings = time_interleaved(case, libs, cfg, None, Progress(4), HostCheck(enabled=False))
    # Round 0: warm-up + 3 samples each, a first; round 1: warm-up + 2 samples each, b first.
    assert calls == ["a"] * 4 + ["b"] * 4 + ["b"] * 3 + ["a"] * 3
    assert {key: t["samples"] for key, t in timings.items()} == {(1, "a", "forward"): 5, (1, "b", "forward"): 5}


def test_fixed_cost_samples_are_spread_over_the_run(monkeypatch):
    """A share of the fixed-cost samples before every timed case, the
    libraries taking turns, and one median over all the shares."""
    events = []
    monkeypatch.setattr(
        "fastconv.bench.fixed_cost.fastconv_passes",
        lambda case: {"forward": lambda: events.append("fastconv forward") or (), "backward": lambda: ()},
    )
    monkeypatch.setattr(
        "fastconv.bench.fixed_cost.torch_passes",
        lambda case, torch: {"forward": lambda: events.append("torch forward") or (), "backward": lambda: ()},
    )
    monkeypatch.setattr("fastconv.bench.fixed_cost.thread_limit", lambda n, torch: contextlib.nullcontext())
    cfg = Config(
        shapes=(),
        dtypes=("float32",),
        threads=(1,),
        passes=("forward",),
        reference_all=False,
        warmup=1,
        repeats=6,
        rounds=2,
        min_time=0.0,
    )
    fixed = FixedCost(object(), cfg, shares=3)
    events.clear()  # the warm-up calls
    seen = []
    monkeypatch.setattr("fastconv.bench.results.time_interleaved", lambda *args: seen.append(len(events)) or {})
    monkeypatch.setattr("fastconv.bench.results.add_thread_scaling", lambda records: None)
    shapes = tuple(parse_shape(f"name=s{i},n=1,c=1,h=3,k=1,kernel=3") for i in range(3))
    time_all(
        dataclasses.replace(cfg, shapes=shapes),
        None,
        Progress(1),
        HostCheck(enabled=False),
        fixed,
    )
    # 6 samples in 3 shares of 2 (+ 1 call after the other library's), one share before each case.
    assert seen == [6, 12, 18]
    assert events[:6] == ["fastconv forward"] * 3 + ["torch forward"] * 3
    assert events[6:12] == ["torch forward"] * 3 + ["fastconv forward"] * 3
    assert {lib: len(fixed.times[lib, "forward"]) for lib in ("fastconv", "torch")} == {"fastconv": 6, "torch": 6}
    assert set(fixed.result()) == {"fastconv", "torch"}


def scripted_host(monkeypatch, answers):
    """A HostCheck whose checks answer from `answers` in turn, without waiting."""
    host = HostCheck(enabled=True)
    replies = iter(answers)

    def gives(threads):
        host.checks += 1
        return next(replies)

    monkeypatch.setattr(host, "gives", gives)
    monkeypatch.setattr(host, "settle", lambda: None)
    monkeypatch.setattr("fastconv.bench.host.time.sleep", lambda s: None)
    return host


def test_a_share_waits_for_the_process_threads_to_settle(monkeypatch):
    clock = {"wall": 0.0, "cpu": 0.0}
    spins = []  # whether another thread of the process uses a CPU during each probe

    def sleep(seconds):
        clock["wall"] += seconds
        clock["cpu"] += seconds if spins.pop(0) else 0.0

    monkeypatch.setattr("fastconv.bench.host.time.sleep", sleep)
    monkeypatch.setattr("fastconv.bench.host.time.perf_counter", lambda: clock["wall"])
    monkeypatch.setattr("fastconv.bench.host.time.process_time", lambda: clock["cpu"])
    host = HostCheck(enabled=False)
    probe, limit = HostCheck.SETTLE_PROBE_S, HostCheck.SETTLE_LIMIT_S
    spins[:] = [True, True, True, False, True]
    host.settle()
    assert spins == [True] and host.settled_s == pytest.approx(4 * probe)  # three busy probes, then an idle one
    spins[:] = [True] * 1000  # a thread that never stops: the wait is bounded
    host.settle()
    assert host.settled_s == pytest.approx(4 * probe + limit)

    order = []
    monkeypatch.setattr(host, "enabled", True)
    monkeypatch.setattr(host, "settle", lambda: order.append("settle"))
    monkeypatch.setattr(host, "gives", lambda threads: order.append("check") or True)
    host.take(2, "torch", lambda: order.append("share") or [1.0])
    assert order == ["settle", "check", "share", "check"]


def test_a_share_during_which_the_machine_lost_a_core_is_taken_again(monkeypatch):
    taken = []
    # Before the share: ok; after it: short, so again; before: short, then ok; after: ok.
    host = scripted_host(monkeypatch, [True, False, False, True, True])
    assert host.take(2, "torch", lambda: taken.append(len(taken)) or [float(len(taken))]) == [2.0]
    assert taken == [0, 1]
    assert (host.retaken, host.kept_short, host.checks) == ({"torch": 1}, {}, 5)
    assert 0 < host.waited_s < 1  # one failed check waited for (sleep is a no-op here)


def test_the_cache_probe_fails_a_check_slower_than_its_best(monkeypatch):
    probe = CacheProbe()
    assert probe.summary() == {} and format_cache_probe(probe.summary()) == ""
    times = iter([0.003] * CacheProbe.FIRST_CALLS + [0.0024, 0.0021, 0.0026, 0.0027, 0.004, 0.0041])
    monkeypatch.setattr(probe, "call", lambda: next(times))
    # 3 ms first; then 2.1 ms (the best of two calls, a new best), 2.6 (1.24x), 4 (1.9x: slow)
    assert [probe.fast() for _ in range(4)] == [True, True, True, False]
    got = probe.summary()  # slow against the run's best, 2.1 ms: 3 and 4 ms
    assert got == pytest.approx({"slow_above": 1.25, "checks": 4, "best_ms": 2.1, "median_ms": 2.8, "slow_share": 0.5})
    assert "over 1.25x its best time at 50% of 4 checks (best 2.100 ms, median 2.800)" in format_cache_probe(got)
    assert cache_disturbed({"cache_probe": got}) and not cache_disturbed({"cache_probe": {**got, "slow_share": 0.25}})
    assert not cache_disturbed({"cache_probe": {}}) and not cache_disturbed({})
    monkeypatch.undo()
    probe.fast()  # the real convolution
    assert len(probe.times) == 5 and 0 < probe.times[-1] < 1


def test_the_cache_probe_judges_one_thread_checks_only(monkeypatch):
    host = HostCheck(enabled=True)
    answers = []
    monkeypatch.setattr(host.probe, "fast", lambda: answers.pop())
    monkeypatch.setattr(host.core, "peak_gflops", lambda iterations, threads: 1e9)
    answers[:] = [False]
    assert host.gives(2) and answers == [False]  # two threads: the FMA check alone
    assert not host.gives(1) and answers == []  # one thread: a slow probe fails the check
    answers[:] = [True]
    assert host.gives(1)
    monkeypatch.setattr(host.core, "peak_gflops", lambda iterations, threads: 0.0)
    answers[:] = [True]
    assert not host.gives(1) and answers == [True]  # the FMAs failed: the probe is not run
    assert HostCheck(enabled=False).probe is None and HostCheck(enabled=False).summary()["cache_probe"] == {}


def test_no_wait_is_counted_when_the_first_check_passes(monkeypatch):
    host = scripted_host(monkeypatch, [True, True])
    assert host.take(1, "fastconv", lambda: [1.0]) == [1.0]
    assert host.waited_s == 0 and host.checks == 2


def test_a_share_is_kept_after_the_last_try(monkeypatch):
    host = scripted_host(monkeypatch, [True, False] * (HostCheck.RETRIES + 1))
    calls = []
    assert host.take(2, "fastconv", lambda: calls.append(1) or [1.0]) == [1.0]
    assert len(calls) == HostCheck.RETRIES + 1
    assert (host.retaken, host.kept_short) == ({"fastconv": HostCheck.RETRIES}, {"fastconv": 1})
    assert host.summary()["shares_kept_after_last_try"] == {"fastconv": 1}


def test_the_host_check_measures_the_threads_together():
    core = _backend.core
    one = core.peak_gflops(iterations=200_000)
    two = core.peak_gflops(iterations=200_000, threads=2)
    if core.supported_isas()[0] != "generic":  # no vector FMA there: 0
        assert one > 0 and two > 0  # whether two reach twice one depends on the machine's load
    with pytest.raises(ValueError, match="number of threads"):
        core.peak_gflops(threads=0)
    with pytest.raises(ValueError, match="iterations"):
        core.peak_gflops(iterations=0)
    off = HostCheck(enabled=False)
    assert off.take(2, "fastconv", lambda: [3.0]) == [3.0] and off.checks == 0


@pytest.mark.skipif(
    os.environ.get("FASTCONV_SANITIZED") == "1",
    reason="rates under AddressSanitizer: the instrumented FMA loop runs at a few GFLOP/s, its ratios at the host's mercy",
)
def test_the_peak_is_steady():
    """The bench's peak is the FMA loop's undisturbed rate: float32 twice
    float64 (twice the lanes), and cpu_facts' figure, though the machine is
    busy with other work now and then."""
    if _backend.core.isa() == "generic":
        assert measure_peak(False) == 0.0
        return
    f32, f64 = measure_peak(False), measure_peak(True)
    assert 1.7 < f32 / f64 < 2.3
    assert f32 == pytest.approx(_backend.core.cpu_facts()["fma_peak_gflops"], rel=0.2)


def test_a_cpu_without_vector_fma_gets_no_peak_share(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("fastconv.bench.runner.measure_peak", lambda float64: 0.0)  # what a CPU without AVX2 measures
    path = tmp_path / "bench.json"
    assert main(["bench", *TINY, "--dtype", "float32", "--no-host-check", "--json", str(path)]) == 0
    results = json.loads(path.read_text())["results"]
    assert results and all(r["timings"]["fastconv"]["pct_peak"] is None for r in results)
    assert "tiny" in capsys.readouterr().out


def test_the_peak_is_the_higher_reading_before_and_after_the_timing(tmp_path, monkeypatch):
    """A busy host only makes the FMA loop read low: a low first reading must
    not raise every share of the peak."""
    readings = iter([50.0, 100.0])  # float32 before the timing, then after it
    monkeypatch.setattr("fastconv.bench.runner.measure_peak", lambda float64: next(readings))
    path = tmp_path / "bench.json"
    args = list(TINY)
    args[args.index("--threads") + 1] = "1,2"
    assert main(["bench", *args, "--dtype", "float32", "--no-host-check", "--json", str(path)]) == 0
    report = json.loads(path.read_text())
    assert report["peak_readings"] == {"before": {"float32": 50.0}, "after": {"float32": 100.0}}
    assert report["peak_gflops_per_thread"] == {"float32": 100.0}
    results = report["results"]
    assert {r["threads"] for r in results} == {1, 2}
    for r in results:
        assert r["peak_gflops"] == 100.0 * r["threads"]
        for timing in r["timings"].values():
            assert timing["pct_peak"] == pytest.approx(100 * timing["gflops"] / (100.0 * r["threads"]))


def test_two_thread_records_carry_their_scaling_over_one_thread(tmp_path):
    path = tmp_path / "bench.json"
    args = list(TINY)
    args[args.index("--threads") + 1] = "1,2"
    # Without the host check: a test must not wait for a busy machine to give it two cores.
    assert main(["bench", *args, "--dtype", "float64", "--no-host-check", "--json", str(path)]) == 0
    report = json.loads(path.read_text())
    assert report["host_check"]["enabled"] is False and report["host_check"]["checks"] == 0
    results = report["results"]
    one = {r["pass"]: r["timings"]["fastconv"]["median_ms"] for r in results if r["threads"] == 1}
    for r in results:
        if r["threads"] == 2:
            assert r["speedup_vs_1_thread"] == pytest.approx(one[r["pass"]] / r["timings"]["fastconv"]["median_ms"])
        else:
            assert r["speedup_vs_1_thread"] is None
    assert [r["threads"] for r in results] == [1, 1, 2, 2]  # tables by thread count


def test_a_disagreement_stops_the_bench(tmp_path, monkeypatch, capsys):
    real = functional.conv2d

    def off_by_one(*args, backend, **kwargs):
        y = real(*args, backend=backend, **kwargs)
        return y + 1 if backend == "cpp" else y

    monkeypatch.setattr(functional, "conv2d", off_by_one)
    path = tmp_path / "bench.json"
    assert main(["bench", *TINY, "--dtype", "float64", "--json", str(path)]) == 1
    assert "AGREEMENT CHECK FAILED" in capsys.readouterr().err
    report = json.loads(path.read_text())
    assert report["results"] == []
    assert any(not row["ok"] and row["pass"] == "forward" for row in report["agreement"])


def test_shape_syntax():
    shape = parse_shape("name=foo,n=2,c=4,h=16,k=8,kernel=3,padding=valid,groups=2")
    assert (shape.w, shape.stride, shape.dilation, shape.weight_shape()) == (16, 1, 1, (8, 2, 3, 3))
    assert shape.flops("forward") == 2 * 2 * 8 * 2 * 9 * 14 * 14
    rect = parse_shape("name=r,n=2,c=4,h=10,w=16,k=8,kernel=1x7,dilation=2,padding=valid")
    assert (rect.kernel_hw, rect.kernel_label, rect.weight_shape()) == ((1, 7), "1x7", (8, 4, 1, 7))
    assert rect.geometry().out_hw == (10, 16 - 12)  # with dilation 2, 7 taps span 13 columns
    assert rect.flops("forward") == 2 * 2 * 8 * 4 * 7 * 10 * 4
    assert parse_shape("name=d,n=1,c=1,h=9,k=1,kernel=3,dilation=2").geometry().padding == (2, 2, 2, 2)
    with pytest.raises(argparse.ArgumentTypeError, match="kernel=3y3"):
        parse_shape("name=bad,n=1,c=3,h=8,k=4,kernel=3y3")
    with pytest.raises(argparse.ArgumentTypeError, match="groups"):
        parse_shape("name=bad,n=1,c=3,h=8,k=4,kernel=3,groups=2")
    with pytest.raises(argparse.ArgumentTypeError, match="missing"):
        parse_shape("name=short,n=1,c=3")


def test_the_suite_has_the_layers_issue_15_names():
    suite = {s.name: s for s in SUITE}
    assert dataclasses.astuple(suite["vgg_3x3"])[1:] == (2, 64, 112, 112, 128, 3, 1, "same", 1, 1)
    assert suite["rect_1x7"].weight_shape() == (64, 64, 1, 7)
    assert suite["dilated_3x3"].dilation == 2 and suite["dilated_3x3"].geometry().out_hw == (28, 28)
    assert (suite["one_channel"].n, suite["one_channel"].c) == (256, 1)
    assert suite["deep_s2"].geometry().out_hw == (7, 7) and suite["deep_s2"].c == 256
    assert suite["vgg_3x3"].flops("forward") == 2 * 2 * 128 * 64 * 9 * 112 * 112
    assert set(BIG_LAYERS) <= set(suite) and set(QUICK) <= set(suite)


def test_rectangular_and_dilated_kernels_agree_with_every_library(tmp_path):
    """The shapes reach PyTorch and the reference with their kernel and dilation:
    a dilation or kernel width lost on the way fails the agreement check."""
    path = tmp_path / "bench.json"
    args = [
        "--shape",
        "name=rect,n=2,c=3,h=9,w=11,k=4,kernel=1x3,dilation=2",
        "--shape",
        "name=tall,n=1,c=2,h=8,k=3,kernel=3x1,stride=2,padding=valid",
        "--only",
        "rect,tall",
        *TINY[4:],
    ]
    assert main(["bench", *args, "--dtype", "float64", "--no-host-check", "--json", str(path)]) == 0
    report = json.loads(path.read_text())
    assert report["agreement"] and all(row["ok"] for row in report["agreement"])
    assert {row["against"] for row in report["agreement"]} >= {"numpy"}
    dims = {r["shape"]: r["dims"] for r in report["results"]}
    assert dims["rect"]["kernel"] == [1, 3] and dims["rect"]["dilation"] == 2
    rect = next(r for r in report["results"] if r["shape"] == "rect" and r["pass"] == "forward")
    assert rect["flops"] == 2 * 2 * 4 * 3 * 3 * 9 * 11


def record(shape, dtype, threads, pass_name, speedup, pct):
    return {
        "shape": shape,
        "dtype": dtype,
        "threads": threads,
        "pass": pass_name,
        "speedup_vs_torch": speedup,
        "timings": {"fastconv": {"pct_peak": pct}},
    }


def test_the_summary_states_the_figures_of_issue_15s_targets():
    records = [
        record("resnet_3x3", "float32", 1, "forward", 1.5, 90.0),
        record("resnet_3x3", "float32", 1, "backward", 0.8, 70.0),
        record("seed", "float32", 1, "forward", 2.4, 5.0),
        record("seed", "float32", 1, "backward", 2.0, 4.0),
        record("resnet_3x3", "float32", 2, "forward", 1.0, 80.0),
        record("resnet_3x3", "float32", 2, "backward", 1.0, 80.0),
        record("resnet_3x3", "float64", 1, "forward", 3.0, 91.0),
        record("resnet_3x3", "float64", 1, "backward", 1.9, 88.0),
    ]
    fixed = {"fastconv": {"forward": 4.0, "backward": 12.0}, "torch": {"forward": 5.0, "backward": 19.0}}
    plain = {"env": dict.fromkeys(TORCH_ISA_VARS), "aten_cpu_capability": "AVX2"}
    summary = target_summary(records, fixed, plain)
    f32 = summary["speedups"][0]
    assert (f32["dtype"], f32["threads"], f32["targets"]) == ("float32", 1, {"geomean": 1.2, "lowest": 0.9})
    assert f32["geomean"]["forward"] == pytest.approx(math.sqrt(1.5 * 2.4))
    assert f32["lowest"] == {
        "forward": {"shape": "resnet_3x3", "speedup": 1.5},
        "backward": {"shape": "resnet_3x3", "speedup": 0.8},
    }
    assert [(g["dtype"], g["threads"]) for g in summary["speedups"]] == [("float32", 1), ("float32", 2), ("float64", 1)]
    assert summary["speedups"][2]["targets"] == {"geomean": 2.0, "lowest": 1.0}
    # Only the big layers, float32, one thread.
    assert summary["pct_peak_float32_1_thread"] == {"resnet_3x3": {"forward": 90.0, "backward": 70.0}}
    assert summary["fixed_cost_us"] == fixed
    text = format_summary(summary)
    assert "geomean forward 1.90x [>= 1.2x ok]" in text and "geomean backward 1.26x [>= 1.2x ok]" in text
    assert "lowest backward 0.80x resnet_3x3 [>= 0.9x MISSED]" in text
    assert "resnet_3x3 90.0 / 70.0 MISSED" in text and "[< 10 us MISSED]" in text
    # Against PyTorch restricted to AVX2, issue 15 asks for less in float32.
    restricted = {"env": dict(TORCH_ISA_ENV["avx2"]), "aten_cpu_capability": "AVX2"}
    assert target_summary(records, None, restricted)["speedups"][0]["targets"] == {"geomean": 1.1, "lowest": 0.85}


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in (*TORCH_ISA_VARS, CHILD_MARK)}
    return {**env, **extra}


@pytest.mark.skipif(
    _backend.core is not None and "avx2" not in _backend.core.supported_isas(), reason="this CPU has no AVX2"
)
def test_isa_avx2_restricts_pytorch_in_a_child_process(tmp_path):
    """--isa avx2 re-runs the bench with PyTorch's caps set before it loads,
    and the header and the JSON say what fastconv and PyTorch ran with."""
    pytest.importorskip("torch")
    path = tmp_path / "bench.json"
    args = [*TINY, "--dtype", "float32"]
    result = subprocess.run(
        [sys.executable, "-m", "fastconv", "bench", "--isa", "avx2", *args, "--no-host-check", "--json", str(path)],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "re-running in a child process with ONEDNN_MAX_CPU_ISA=AVX2" in result.stderr
    assert (
        "PyTorch restricted by ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=avx2;"
        " ATen CPU capability AVX2"
    ) in result.stdout
    assert "fastconv ISA avx2 (256-bit vectors, 16 registers" in result.stdout
    report = json.loads(path.read_text())
    assert report["isa"] == "avx2" and report["cpu_facts"]["vector_bits"] == 256
    assert report["torch_isa"] == {"env": TORCH_ISA_ENV["avx2"], "aten_cpu_capability": "AVX2"}
    assert report["summary"]["speedups"][0]["targets"] == {"geomean": 1.1, "lowest": 0.85}


def test_isa_avx2_refuses_a_pytorch_already_loaded_otherwise(monkeypatch, capsys):
    pytest.importorskip("torch")  # loaded now, in this process, without the caps
    for key in TORCH_ISA_VARS:
        monkeypatch.delenv(key, raising=False)
    isa = "avx2" if "avx2" in _backend.core.supported_isas() else "generic"
    assert main(["bench", "--isa", isa, *TINY]) == 2
    err = capsys.readouterr().err
    wanted = " ".join(f"{k}={v}" for k, v in TORCH_ISA_ENV[isa].items())
    assert f"--isa {isa}: PyTorch must load with {wanted}, but it is imported already" in err
    assert "where ONEDNN_MAX_CPU_ISA unset" in err and "fresh process" in err


def onednn_implementations(isa):
    """The oneDNN implementations a PyTorch convolution runs with `isa`'s caps (ONEDNN_VERBOSE)."""
    # A batch of 2: PyTorch sends a batch of 1 this small to its own code, not oneDNN.
    code = "import torch; torch.nn.functional.conv2d(torch.ones(2, 16, 8, 8), torch.ones(16, 16, 3, 3), padding=1)"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(ONEDNN_VERBOSE="1", **TORCH_ISA_ENV[isa]),
    )
    assert result.returncode == 0, result.stderr
    # onednn_verbose,v1,primitive,exec,cpu,convolution,jit:avx2,forward_training,...
    fields = [line.split(",") for line in result.stdout.splitlines() if line.startswith("onednn_verbose,")]
    return {f[f.index("convolution") + 1] for f in fields if "exec" in f and "convolution" in f}


@pytest.mark.skipif(
    _backend.core is not None and "avx2" not in _backend.core.supported_isas(), reason="this CPU has no AVX2"
)
def test_the_caps_reach_onednn():
    """The variables' names and values are ones oneDNN obeys: its kernels
    change with them (sse41 under the generic caps)."""
    pytest.importorskip("torch")
    avx2, generic = onednn_implementations("avx2"), onednn_implementations("generic")
    assert avx2 and generic, "oneDNN printed no convolution"
    assert all("avx512" not in impl and "amx" not in impl for impl in avx2), avx2
    assert any("avx2" in impl for impl in avx2), avx2
    assert all("avx" not in impl for impl in generic) and any("sse41" in impl for impl in generic), generic
