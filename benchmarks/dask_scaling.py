"""fastconv.dask's throughput on 1 and 2 workers against the in-memory call on the same cores.

Two workloads, each a 3x3 "same" convolution of float32 data:

* a batch of images chunked along the batch axis;
* one large image chunked along height and width.

For each: the in-memory ``fastconv.conv2d`` on 1 and 2 OpenMP threads, and
``fastconv.dask.conv2d`` on a LocalCluster of 1 and 2 single-threaded worker
processes, and of one worker whose fastconv runs on 2 OpenMP threads (the
docs' "one worker per machine with all its cores"); the data made and kept
on the workers in equal shares, the result persisted there (no transfers to the client are
timed), runs of the Dask path and the in-memory call on as many cores
interleaved with the cluster up. Reports the throughput, the speed-up of 2
workers over 1, the Dask path against the in-memory call on as many cores,
and Dask's overhead per task: (Dask on 1 worker - in memory on 1 thread) /
tasks.

    python benchmarks/dask_scaling.py                  # 512 MiB batch, 1 GiB image, chunks of 64 MiB
    python benchmarks/dask_scaling.py --batch 16 --image 1024 --chunk-mb 16 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from collections.abc import Iterator
from unittest import mock

import dask.array as da
import numpy as np
import psutil
from distributed import Client, LocalCluster, wait

import fastconv
import fastconv.dask
from fastconv.bench.machine import cpu_model


def timed(fn, cpu) -> tuple[float, float]:
    """Wall seconds of fn() and the CPU seconds (user + system) `cpu` counts meanwhile."""
    c0, t0 = cpu(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, cpu() - c0


def cpu_seconds(*processes: psutil.Process) -> float:
    return sum(sum(p.cpu_times()[:2]) for p in processes)


def spread(client: Client, x: da.Array) -> da.Array:
    """x persisted with its blocks in equal, contiguous shares on the workers
    (in row-major order of the blocks), as a dataset spread over a cluster
    is: left to itself, the scheduler can put every block of a fresh cluster's
    first array on one worker, and then two workers run as one."""
    workers = sorted(client.scheduler_info()["workers"])
    blocks = np.empty(x.numblocks, dtype=object)
    for i, index in enumerate(np.ndindex(*x.numblocks)):
        blocks[index] = x.blocks[index].persist(workers=[workers[i * len(workers) // blocks.size]])
    spread_x = da.block(blocks.tolist()).persist()
    wait(spread_x)
    held = sorted(len([k for k, w in client.who_has(spread_x).items() if w == (a,)]) for a in workers)
    if held[-1] - held[0] > 1:
        raise RuntimeError(f"blocks per worker {held}, not spread evenly")
    return spread_x


def workloads(args: argparse.Namespace) -> list[tuple[str, tuple[int, ...], tuple[int, ...]]]:
    """(name, shape, chunks) of the two workloads, chunks of about --chunk-mb."""
    c, item = args.channels, 4
    per_image = c * args.size * args.size * item
    images_per_chunk = max(1, round(args.chunk_mb * 2**20 / per_image))
    side = min(args.image, max(64, int(math.sqrt(args.chunk_mb * 2**20 / (c * item)))))
    return [
        (
            f"batch {args.batch}x{c}x{args.size}x{args.size}",
            (args.batch, c, args.size, args.size),
            (images_per_chunk, c, args.size, args.size),
        ),
        (f"image 1x{c}x{args.image}x{args.image}", (1, c, args.image, args.image), (1, c, side, side)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128, help="images in the batch workload (default 128)")
    parser.add_argument("--size", type=int, default=256, help="their height and width (default 256)")
    parser.add_argument(
        "--image", type=int, default=4096, help="height and width of the one large image (default 4096)"
    )
    parser.add_argument("--channels", type=int, default=16, help="input channels, and filters (default 16)")
    parser.add_argument("--chunk-mb", type=float, default=64, help="chunk size in MiB (default 64)")
    parser.add_argument("--repeats", type=int, default=5, help="the median of this many runs (default 5)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs of each path first (default 3)")
    parser.add_argument("--json", action="store_true", help="also print the medians as one JSON line")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    w = rng.standard_normal((args.channels, args.channels, 3, 3)).astype(np.float32)
    wall: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}
    tasks: dict[str, int] = {}
    cases = workloads(args)
    client_process = psutil.Process()

    # (key, worker processes, fastconv's OpenMP threads in each)
    for config, workers, omp in (("1", 1, 1), ("2", 2, 1), ("1x2", 1, 2)):
        with (
            # The workers' threads, in this process's environment before they
            # start: `env` would come after they import this script again, and
            # fastconv's OpenMP with it, and distributed's nanny takes an
            # OMP_NUM_THREADS set here over its pre-spawn-environ config, which
            # the first cluster's nanny wrote here (docs/dask.md).
            mock.patch.dict(os.environ, {"OMP_NUM_THREADS": str(omp)}),
            LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                memory_limit=0,
            ) as cluster,
            Client(cluster) as client,
        ):
            worker_processes = [psutil.Process(pid) for pid in client.run(os.getpid).values()]
            for address in client.scheduler_info()["workers"]:
                got = client.submit(fastconv.get_num_threads, pure=False, workers=[address]).result()
                if got != omp:
                    raise RuntimeError(f"fastconv in a task on {address} has {got} threads, not {omp}")
            for name, shape, chunks in cases:
                x_memory = rng.standard_normal(shape, dtype=np.float32)
                x = spread(client, da.random.default_rng(0).standard_normal(shape, chunks=chunks, dtype=np.float32))
                y = fastconv.dask.conv2d(x, w, padding="same")
                tasks[name] = len(dict(y.__dask_graph__())) - x.npartitions
                runs = iter(range(10**6))

                def on_dask(x: da.Array = x, runs: Iterator[int] = runs) -> None:
                    # A new bias each run: new keys, so nothing computed before is reused.
                    bias = np.full(w.shape[0], next(runs), np.float32)
                    result = fastconv.dask.conv2d(x, w, bias, padding="same").persist()
                    wait(result)
                    client.cancel(result)

                def in_memory(x: np.ndarray = x_memory, threads: int = workers * omp) -> None:
                    with fastconv.threads(threads):
                        fastconv.conv2d(x, w, padding="same")

                # Warm-up: the weight sent, the workers' code loaded, and their
                # memory: a fresh worker's first outputs cost up to 0.7 s of
                # system time per 64 MiB block here (page faults, the kernel
                # compacting memory for huge pages), its later ones a few ms.
                for _ in range(args.warmup):
                    on_dask()
                    in_memory()
                # Interleaved: both see the same state of the machine (its
                # load, and the memory the OS has free for fresh pages).
                for _ in range(args.repeats):
                    for key, fn, counted in (
                        (f"memory {config}", in_memory, (client_process,)),
                        (f"dask {config}", on_dask, tuple(worker_processes)),
                    ):
                        t, c = timed(fn, lambda counted=counted: cpu_seconds(*counted))
                        wall.setdefault((name, key), []).append(t)
                        cpu.setdefault((name, key), []).append(c)
                del x_memory

    results = {k: statistics.median(v) for k, v in wall.items()}
    cpu_median = {k: statistics.median(v) for k, v in cpu.items()}
    print(
        f"{'workload':<28} {'chunks':>22} {'tasks':>6}  {'in memory 1t':>12} {'2t':>7}  {'dask 1w':>8} {'2w':>7}"
        f" {'1w x 2t':>8}  {'2w/1w':>6} {'dask/mem 1':>10} {'2':>6} {'1x2':>6} {'overhead/task':>14} {'(cpu)':>9}"
    )
    summary = {}
    for name, shape, chunks in cases:
        mb = np.prod(shape) * 4 / 2**20
        t = {k: results[(name, k)] for k in ("memory 1", "memory 2", "memory 1x2", "dask 1", "dask 2", "dask 1x2")}
        overhead = (t["dask 1"] - t["memory 1"]) / tasks[name]
        cpu_overhead = (cpu_median[(name, "dask 1")] - cpu_median[(name, "memory 1")]) / tasks[name]
        print(
            f"{name:<28} {str(chunks):>22} {tasks[name]:>6}  "
            f"{mb / t['memory 1']:>8.0f} MB/s {mb / t['memory 2']:>7.0f}  {mb / t['dask 1']:>8.0f} {mb / t['dask 2']:>7.0f}"
            f" {mb / t['dask 1x2']:>8.0f}  {t['dask 1'] / t['dask 2']:>5.2f}x {t['dask 1'] / t['memory 1']:>10.2f}"
            f" {t['dask 2'] / t['memory 2']:>6.2f} {t['dask 1x2'] / t['memory 1x2']:>6.2f}"
            f" {overhead * 1e3:>11.1f} ms {cpu_overhead * 1e3:>6.1f} ms"
        )
        summary[name] = {
            "chunks": chunks,
            "tasks": tasks[name],
            "seconds": {k: round(v, 4) for k, v in t.items()},
            "2w/1w": round(t["dask 1"] / t["dask 2"], 3),
            "dask/memory": {n: round(t[f"dask {n}"] / t[f"memory {n}"], 3) for n in ("1", "2", "1x2")},
            "overhead_per_task_ms": {"wall": round(overhead * 1e3, 2), "cpu": round(cpu_overhead * 1e3, 2)},
        }
    print(
        "MB/s of input, medians of interleaved runs; 'dask/mem n': time on n single-threaded workers over the"
        " in-memory time on n threads (1.00 = no overhead), '1x2': one worker whose fastconv runs 2 threads, over"
        " the in-memory time on 2 threads; overhead/task: (Dask on 1 worker - in memory on 1 thread) / tasks, in"
        " wall time and in CPU time (the worker's against the in-memory call's process)"
    )
    if args.json:
        print(json.dumps({"repeats": args.repeats, "cpu": cpu_model(), "workloads": summary}))


if __name__ == "__main__":
    main()
