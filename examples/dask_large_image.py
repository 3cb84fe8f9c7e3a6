"""A filter bank over an image stack larger than memory, with fastconv.dask
=========================================================================

On a dask.distributed LocalCluster:

1. Writes a synthetic stack of single-channel float32 images to a Zarr store,
   chunk by chunk, on the cluster (by default 16 images of 8192 x 8192: 4 GiB,
   against 1 GiB of memory for each of 2 workers).
2. Runs a bank of four 5x5 filters (Gaussian, its x and y derivatives, its
   Laplacian) at stride 2 over it with ``fastconv.dask.conv2d``, writing the
   (N, 4, H/2, W/2) result to another Zarr store, with a progress bar.
3. Prints the throughput and the peak memory of each worker, and checks a few
   random tiles of the result against the in-memory ``fastconv.conv2d`` on
   the input they read.

    pip install "fastconv[dask]"
    python examples/dask_large_image.py                       # 4 GiB, 2 workers of 1 GiB
    python examples/dask_large_image.py --images 20 --size 4096 --chunk 2048 --worker-memory 300MiB

The stores go to a temporary directory, deleted at the end (``--store DIR``
keeps them there).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time

import dask.array as da
import numpy as np
from dask.utils import format_bytes, parse_bytes
from distributed import Client, LocalCluster, progress

import fastconv
import fastconv.dask


def filter_bank(sigma: float = 1.0, size: int = 5) -> np.ndarray:
    """(4, 1, size, size) float32: a Gaussian, its x and y derivatives and its Laplacian."""
    r = np.arange(size) - size // 2
    yy, xx = np.meshgrid(r, r, indexing="ij")
    g = np.exp(-(xx**2 + yy**2) / (2 * sigma**2))
    g /= g.sum()
    gx, gy = -xx / sigma**2 * g, -yy / sigma**2 * g
    log = (xx**2 + yy**2 - 2 * sigma**2) / sigma**4 * g
    log -= log.mean()
    return np.stack([g, gx, gy, log])[:, None].astype(np.float32)


def synthetic_chunk(empty: np.ndarray, block_id: tuple[int, ...] = (), block_info: dict | None = None) -> np.ndarray:
    """One chunk of the stack (where `empty` lies): smooth structures plus
    noise, the same for the same chunk on every run."""
    assert block_info is not None
    (n0, n1), _, (r0, r1), (c0, c1) = block_info[0]["array-location"]
    rng = np.random.default_rng(block_id)
    rows = np.arange(r0, r1, dtype=np.float32)[:, None]
    cols = np.arange(c0, c1, dtype=np.float32)[None, :]
    images = []
    for n in range(n0, n1):
        base = np.sin(rows / (17.0 + n)) * np.cos(cols / 23.0) + 0.5 * np.sin((rows + cols) / 101.0)
        images.append(base + 0.1 * rng.standard_normal(base.shape, dtype=np.float32))
    return np.stack(images)[:, None].astype(np.float32)


def peak_rss() -> int:
    """This process's peak resident memory in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def check_tiles(x: da.Array, y: da.Array, bank: np.ndarray, tiles: int, tile: int, seed: int = 0) -> float:
    """The largest error, relative to the tile's scale, of `tiles` random tiles
    of y (tile x tile outputs) against fastconv.conv2d on the input they read."""
    layer = fastconv.Conv2D(4, 5, stride=2, padding="same")
    top, _, left, _ = layer.padding_for(x.shape)
    (_, _, height, width), (_, _, ho, wo) = x.shape, y.shape
    rng = np.random.default_rng(seed)
    worst = 0.0
    for _ in range(tiles):
        n = int(rng.integers(x.shape[0]))
        o_r, o_c = int(rng.integers(max(ho - tile, 0) + 1)), int(rng.integers(max(wo - tile, 0) + 1))
        rows, cols = [], []
        for o0, size, before, out in ((o_r, height, top, rows), (o_c, width, left, cols)):
            o1 = min(o0 + tile, ho if out is rows else wo)
            first, end = o0 * 2 - before, (o1 - 1) * 2 - before + 5  # the windows of outputs o0..o1-1
            lo, hi = max(first, 0), min(end, size)
            out.extend([o0, o1, lo, hi, lo - first, end - hi])
        window = np.asarray(x[n : n + 1, :, rows[2] : rows[3], cols[2] : cols[3]])
        expected = fastconv.conv2d(window, bank, stride=2, padding=(rows[4], rows[5], cols[4], cols[5]))
        got = np.asarray(y[n : n + 1, :, rows[0] : rows[1], cols[0] : cols[1]])
        scale = max(float(np.abs(expected).max()), 1e-30)
        worst = max(worst, float(np.abs(got - expected).max()) / scale)
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=16, help="images in the stack (default 16)")
    parser.add_argument("--size", type=int, default=8192, help="height and width of each image (default 8192)")
    parser.add_argument("--chunk", type=int, default=4096, help="chunk height and width (default 4096: 64 MiB)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="OpenMP threads of each worker's fastconv (default 1)")
    parser.add_argument("--worker-memory", default="1GiB", help="memory limit of each worker (default 1GiB)")
    parser.add_argument("--tiles", type=int, default=4, help="random tiles checked against the in-memory call")
    parser.add_argument("--store", help="directory for the Zarr stores (default: a temporary one, deleted)")
    args = parser.parse_args(argv)

    shape = (args.images, 1, args.size, args.size)
    nbytes = int(np.prod(shape)) * 4
    limit = parse_bytes(args.worker_memory)
    print(
        f"input: {shape} float32, {format_bytes(nbytes)} in chunks of "
        f"{format_bytes(args.chunk**2 * 4)}; {args.workers} workers of {format_bytes(limit)} "
        f"({nbytes / (limit * args.workers):.1f}x their memory together)"
    )
    root = args.store or tempfile.mkdtemp(prefix="fastconv-dask-")
    inputs, outputs = os.path.join(root, "input.zarr"), os.path.join(root, "filtered.zarr")
    bank = filter_bank()
    # The workers' fastconv threads, set in this process's environment before
    # they start: the nanny copies OMP_NUM_THREADS from here, over Dask's
    # config (docs/dask.md). A LocalCluster `env` would come too late: each
    # worker imports this script, and fastconv's OpenMP, before applying it.
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    try:
        with (
            LocalCluster(
                n_workers=args.workers,
                threads_per_worker=1,
                memory_limit=limit,
                processes=True,
                dashboard_address=None,
            ) as cluster,
            Client(cluster) as client,
        ):
            print("1. writing the synthetic stack to", inputs)
            stack = da.empty(shape, chunks=(1, 1, args.chunk, args.chunk), dtype=np.float32)
            stack = stack.map_blocks(synthetic_chunk, dtype=np.float32, meta=np.empty((0, 0, 0, 0), np.float32))
            start = time.perf_counter()
            job = client.compute(stack.to_zarr(inputs, overwrite=True, compute=False))
            progress(job)
            job.result()
            print(f"\n   {time.perf_counter() - start:.1f} s")

            print("2. the filter bank, stride 2, 'same' padding, into", outputs)
            x = da.from_zarr(inputs)
            y = fastconv.dask.conv2d(x, bank, stride=2, padding="same")
            start = time.perf_counter()
            job = client.compute(y.to_zarr(outputs, overwrite=True, compute=False))
            progress(job)
            job.result()
            elapsed = time.perf_counter() - start
            print(
                f"\n   {elapsed:.1f} s: {nbytes / elapsed / 2**20:.0f} MiB/s of input, "
                f"{np.prod(shape) / elapsed / 1e6:.0f} Mpixel/s, output {y.shape} {format_bytes(y.nbytes)}"
            )

            peaks = client.run(peak_rss)
            for address, peak in sorted(peaks.items()):
                print(
                    f"   peak memory of worker {address}: {format_bytes(peak)} "
                    f"({100 * peak / limit:.0f}% of its limit; the stack is {nbytes / peak:.1f}x that)"
                )

            print(f"3. {args.tiles} random tiles against fastconv.conv2d in memory")
            worst = check_tiles(x, da.from_zarr(outputs), bank, args.tiles, tile=min(256, args.size // 2))
            ok = worst <= 1e-5
            print(f"   largest error {worst:.2g} of the tile's scale: {'tiles agree' if ok else 'MISMATCH'}")
            print(f"peak worker memory {format_bytes(max(peaks.values()))} for a stack of {format_bytes(nbytes)}")
            return 0 if ok and max(peaks.values()) < limit else 1
    finally:
        if not args.store:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
