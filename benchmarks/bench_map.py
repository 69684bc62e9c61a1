"""Wall-to-wall map production: the map job against the read bound, in one process.

Writes a synthetic image time series (``--size`` pixels square, default 2,000, x 12 dates
x 10 bands, uint16, one tiled 512 x 512 GeoTIFF per date, pixel-interleaved, uncompressed
unless ``--compress``) unless it already exists, fits each ``--models`` model on pixels
drawn from the same process, and then measures in **one child process**, interleaved
(read, job, read, job, ... for ``--repeats`` rounds, after ``--warmup`` untimed rounds:
first runs pay imports, GDAL's set-up and the page cache), so the baseline and the job
share the process, its caches and whatever else the machine is doing:

- ``read``: every 512 x 512 window read once with ``CubeSource.read`` (float32 cube, nodata
  as NaN, scaled, as xarray) and ``gc.collect(1)``: the read bound of the issue (one thread);
- ``raw``: every window of every file read with rasterio only (uint16, nothing else): the
  strict lower bound of any map job over these files (one thread);
- ``job-<model>``: :func:`cropscope.mapping.run_map_job` in this process at ``--threads``
  (reader, model and writer overlap from 2 threads on);
- with ``--workers N``: ``dask-<model>`` (a local Dask cluster of N one-thread workers,
  started by the job), ``warm-<model>`` (the same job on a cluster of N workers started
  once, before the first round, with :func:`cropscope.mapping.local_cluster`: what each
  job of a series costs; its CPU column adds the workers' CPU, asked from them) and
  ``serial-<model>`` (one process, one thread), interleaved too:
  the speedups and the Amdahl serial fraction ``s = (N / speedup - 1) / (N - 1)`` of the
  first model. In every round the machine's own ceiling for N processes is measured too:
  N processes streaming over memory (``np.isfinite`` of 200 MB each) and N computing in
  cache (64 x 64 matrix products, one BLAS thread), each against one process;
- with ``--naive-size``: ``naive`` (the crop read whole into memory, then ``classify_cube``).

Prints each run's median wall and CPU seconds (CPU: this process and its finished
children, i.e. the Dask workers), peak resident memory (this process's high-water mark,
reset before each run, and this process plus its children sampled every 0.2 s), every
ratio with the baseline from the same rounds, and whether every job wrote byte-identical
outputs. Never asserts timings.

The child process keeps freed memory for reuse as the ``cropscope`` command does
(:func:`cropscope.allocator.keep_freed_memory`, called first); ``--allocator system``
leaves glibc's default instead (what a Python script gets unless it makes the same call).

    python benchmarks/bench_map.py --size 2000 --models logreg --repeats 3 --workers 2
    python benchmarks/bench_map.py --size 2000 --models lightgbm --repeats 1
    python benchmarks/bench_map.py --size 1000 --repeats 2     # a quick run
    python benchmarks/bench_map.py --size 2000 --profile       # + profile_map.py
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

BANDS = [f"B{i:02d}" for i in range(1, 11)]
CLASSES = 4


def _curves(n_dates: int, n_bands: int) -> np.ndarray:
    """Mean reflectance ``[class, date, band]`` of each synthetic class (x 10,000)."""
    t = np.arange(n_dates)[None, :, None]
    peak = (np.arange(CLASSES)[:, None, None] + 1) * n_dates / (CLASSES + 1)
    band_gain = np.linspace(0.5, 1.5, n_bands)[None, None, :]
    return 1000 + 3000 * band_gain * np.exp(-0.5 * ((t - peak) / 1.5) ** 2)


def _field_classes(rows: slice, width: int, field: int = 50, seed: int = 0) -> np.ndarray:
    """Class of each pixel: square fields of ``field`` pixels with a hashed class."""
    r = np.arange(rows.start, rows.stop)[:, None] // field
    c = np.arange(width)[None, :] // field
    return ((r * 7919 + c * 104729 + seed * 31) % 9973 % CLASSES).astype(np.int64)


def generate(folder: Path, size: int, n_dates: int, n_bands: int, strip: int = 512,
             compress: str | None = None) -> None:
    """One uint16 GeoTIFF per date (tiled 512, pixel-interleaved, ``compress`` or none),
    written strip by strip."""
    import rasterio
    from rasterio.crs import CRS
    from rasterio.transform import from_origin
    from rasterio.windows import Window
    from tqdm.auto import tqdm

    marker = folder / "complete.json"
    spec: dict[str, Any] = {"size": size, "dates": n_dates, "bands": n_bands}
    if compress:
        spec["compress"] = compress
    if marker.is_file() and json.loads(marker.read_text()) == spec:
        return
    folder.mkdir(parents=True, exist_ok=True)
    curves = _curves(n_dates, n_bands)
    dates = np.datetime64("2021-01-15") + (np.arange(n_dates) * 30).astype("timedelta64[D]")
    profile = {
        "driver": "GTiff", "width": size, "height": size, "count": n_bands,
        "dtype": "uint16", "crs": CRS.from_epsg(32633), "nodata": 0,
        "transform": from_origin(500000.0, 5500000.0, 10.0, 10.0), "tiled": True,
        "blockxsize": 512, "blockysize": 512, "interleave": "pixel", "BIGTIFF": "YES",
    }  # fmt: skip
    if compress:
        profile["compress"] = compress
    rng = np.random.default_rng(0)
    with tqdm(total=n_dates * ((size + strip - 1) // strip), desc="writing scene",
              unit="strip", file=sys.stderr) as bar:  # fmt: skip
        for k, d in enumerate(dates):
            with rasterio.open(folder / f"scene_{d}.tif", "w", **profile) as dst:
                for i, name in enumerate(BANDS[:n_bands]):
                    dst.set_band_description(i + 1, name)
                for row in range(0, size, strip):
                    rows = slice(row, min(size, row + strip))
                    cls = _field_classes(rows, size)
                    base = curves[cls, k]  # [h, w, bands]
                    noise = rng.normal(0, 150, base.shape)
                    data = np.clip(base + noise, 1, 10000).astype(np.uint16)
                    if k % 5 == 2:  # a cloudy stripe on some dates: nodata
                        data[:, :: max(1, size // 7)][:, :40] = 0
                    dst.write(np.moveaxis(data, -1, 0),
                              window=Window(0, row, size, rows.stop - rows.start))
                    bar.update(1)
    marker.write_text(json.dumps(spec))


def training_set(n_dates: int, n_bands: int, n: int = 4000) -> Any:
    from cropscope.data.timeseries import TimeSeriesSet

    rng = np.random.default_rng(1)
    labels = rng.integers(0, CLASSES, n)
    values = _curves(n_dates, n_bands)[labels] + rng.normal(0, 150, (n, n_dates, n_bands))
    dates = np.datetime64("2021-01-15") + (np.arange(n_dates) * 30).astype("timedelta64[D]")
    return TimeSeriesSet.from_labels(
        (values / 10000).astype(np.float32), BANDS[:n_bands],
        [f"crop_{k}" for k in labels], dates=dates,
    )  # fmt: skip


class PeakMemory:
    """Peak resident memory of this process and its children, sampled in a thread."""

    def __init__(self, interval: float = 0.2) -> None:
        import psutil

        self.proc = psutil.Process()
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        total = 0
        for p in [self.proc, *self.proc.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except Exception:  # a child that just exited
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._sample())


def _reset_peak() -> None:
    """Reset this process's resident high-water mark (Linux; elsewhere a no-op)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_self() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _cpu() -> float:
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _digest(folder: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    for name in ("labels", "probabilities", "uncertainty"):
        h.update((folder / f"{name}.tif").read_bytes())
    return h.hexdigest()[:16]


def measure(kind: str, args: argparse.Namespace, scene: Path) -> dict[str, Any]:
    """One measured run of ``kind`` in this process."""
    import shutil

    from cropscope.data.readers.cube import CubeSource
    from cropscope.mapping import classify_cube, run_map_job
    from cropscope.mapping.windows import plan_windows
    from cropscope.models import Classifier
    from cropscope.threads import set_threads

    model_name = kind.split("-", 1)[1] if "-" in kind else args.models[0]
    model = None if kind in ("read", "raw") else \
        Classifier.load(Path(args.out) / f"model_{model_name}")  # fmt: skip
    # the warm runs' driver gets a thread per worker, as run_map_job(workers=N) gives its
    # own at the end (the COGs are converted on the idle workers' cores)
    threads = (args.threads if kind.startswith(("job-", "model-"))
               else args.workers if kind.startswith("warm-") else 1)  # fmt: skip
    set_threads(threads)
    out = Path(args.out) / "runs" / kind
    shutil.rmtree(out, ignore_errors=True)
    gc.collect()
    import psutil

    before = psutil.Process().memory_info().rss
    # the long-lived cluster is started (and its CPU read) before the clock starts
    scheduler = _warm_cluster(args.workers) if kind.startswith("warm-") else None
    workers_cpu = _workers_cpu() if scheduler else 0.0
    _reset_peak()
    digest = ""
    with PeakMemory() as mem:
        start, cpu = time.perf_counter(), _cpu()
        if kind == "read":
            source = CubeSource.scan(scene, scale=1e-4)
            with source.opened():
                for w in plan_windows(source.height, source.width, tile=args.tile):
                    source.read(w.write_window)
                    gc.collect(1)  # young cycles only, as sample extraction does
        elif kind == "raw":
            source = CubeSource.scan(scene, scale=1e-4)
            with source.opened():
                handles = source._handles
                assert handles is not None
                for w in plan_windows(source.height, source.width, tile=args.tile):
                    for ds in handles.values():
                        ds.read(window=w.write_window)
        elif kind.startswith("model-"):  # the model alone: reading is not timed
            from cropscope.mapping.contract import as_map_model
            from cropscope.mapping.pixels import PixelReader

            source = CubeSource.scan(scene, scale=1e-4)
            map_model = as_map_model(model)
            reader = PixelReader(source, map_model.bands)
            seconds_model = cpu_model = 0.0
            with source.opened():
                for w in plan_windows(source.height, source.width, tile=args.tile):
                    data = reader.read(w.write_window)
                    t0, c0 = time.perf_counter(), _cpu()
                    map_model.predict_pixels(data.values, data.mask, data.dates)  # type: ignore[attr-defined]
                    seconds_model += time.perf_counter() - t0
                    cpu_model += _cpu() - c0
                    data.release()
        elif kind == "naive":
            n = args.naive_size
            cube = CubeSource.scan(scene, scale=1e-4).read(((0, n), (0, n)))
            classify_cube(model, cube)  # type: ignore[arg-type]
        else:
            workers = args.workers if kind.startswith("dask-") else None
            run_map_job(model, CubeSource.scan(scene, scale=1e-4), out, tile=args.tile,  # type: ignore[arg-type]
                        workers=workers, scheduler=scheduler, progress=False)
            if scheduler:  # the workers are not this process's finished children
                cpu -= _workers_cpu() - workers_cpu
        seconds, cpu = time.perf_counter() - start, _cpu() - cpu
        if kind.startswith("model-"):
            seconds, cpu = seconds_model, cpu_model
    if kind not in ("read", "raw", "naive") and not kind.startswith("model-"):
        digest = _digest(out)
        shutil.rmtree(out, ignore_errors=True)
    peak = max(mem.peak, _peak_self())
    return {"kind": kind, "seconds": seconds, "cpu": cpu, "peak_mib": peak / 2**20,
            "added_mib": (peak - before) / 2**20, "threads": threads, "digest": digest}


_CLUSTER: list[Any] = []


def _warm_cluster(workers: int) -> str:
    """The address of this process's long-lived local cluster (started on first use)."""
    if not _CLUSTER:
        import contextlib

        import distributed

        from cropscope.mapping import local_cluster

        stack = contextlib.ExitStack()  # one thread per worker, as the dask- runs
        cluster = stack.enter_context(local_cluster(workers))
        client = stack.enter_context(distributed.Client(cluster))
        _CLUSTER.append((cluster, stack, client))
    return str(_CLUSTER[0][0].scheduler_address)


def _workers_cpu() -> float:
    """CPU seconds used so far by the long-lived cluster's worker processes."""
    if not _CLUSTER:
        return 0.0

    def cpu() -> float:
        import psutil

        times = psutil.Process().cpu_times()
        return float(times.user + times.system)

    return float(sum(_CLUSTER[0][2].run(cpu).values()))


def _stream(_: int) -> float:
    a = np.ones(50_000_000, dtype=np.float32)
    start = time.perf_counter()
    for _ in range(10):
        np.isfinite(a)
    return time.perf_counter() - start


def _compute(_: int) -> float:
    from threadpoolctl import threadpool_limits

    a = np.random.default_rng(0).random((64, 64))
    with threadpool_limits(1):
        start = time.perf_counter()
        for _ in range(20000):
            a @ a
        return time.perf_counter() - start


def machine_ceiling(n: int, repeats: int = 1) -> dict[str, float]:
    """Throughput of ``n`` processes against one, streaming over memory and computing in
    cache (one BLAS thread each): what any ``n``-worker job can gain on this machine at
    best, now (median of ``repeats``)."""
    import multiprocessing
    from statistics import median

    out = {}
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(n) as pool:
        for name, fn in (("stream", _stream), ("compute", _compute)):
            ratios = []
            for _ in range(repeats):
                one = pool.apply(fn, (0,))
                many = pool.map(fn, range(n), chunksize=1)
                ratios.append(n * one / max(many))
            out[name] = median(ratios)
    return out


def run_rounds(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every measurement, ``--repeats`` rounds, interleaved, in this process."""
    scene = Path(args.scene)
    order: list[str] = []
    for name in args.models:
        order += ["read", "raw", f"job-{name}", f"model-{name}"]
    if args.workers:
        order += [f"serial-{args.models[0]}", f"dask-{args.models[0]}",
                  f"warm-{args.models[0]}"]
    if args.naive_size:
        order.append("naive")
    results = []
    # rounds below 0 are the untimed warm-up: first runs pay imports, GDAL's set-up and the
    # page cache
    for r in range(-args.warmup, args.repeats):
        label = "warm-up" if r < 0 else f"round {r + 1}"
        for kind in order:
            result = measure(kind, args, scene)
            print(f"  {label}: {kind:<16} {result['seconds']:7.2f} s wall "
                  f"{result['cpu']:7.2f} s cpu {result['peak_mib']:6.0f} MiB"
                  + (" (not counted)" if r < 0 else ""), file=sys.stderr,
                  flush=True)  # fmt: skip
            if r >= 0:
                results.append({**result, "round": r})
        if args.workers > 1 and r >= 0:  # the machine's ceiling in the same round
            ceiling = machine_ceiling(args.workers)
            results.append({"kind": "ceiling", "round": r, **ceiling})
            print(f"  {label}: ceiling          {args.workers} processes vs 1: streaming "
                  f"{ceiling['stream']:.2f}x, computing {ceiling['compute']:.2f}x",
                  file=sys.stderr, flush=True)  # fmt: skip
    return results


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    from statistics import median

    ceilings = {r["round"]: r for r in results if r["kind"] == "ceiling"}
    results = [r for r in results if r["kind"] != "ceiling"]
    kinds = list(dict.fromkeys(r["kind"] for r in results))
    med = {k: {m: median(r[m] for r in results if r["kind"] == k)
               for m in ("seconds", "cpu", "peak_mib", "added_mib")}
           for k in kinds}  # fmt: skip
    px = args.size * args.size
    print(f"\n{'run':<16} {'threads':>7} {'wall s':>8} {'cpu s':>8} {'Mpx/s':>7} "
          f"{'peak MiB':>9} {'+run MiB':>9}  (medians of {args.repeats}; +run: peak minus "
          "the process before the run)")
    for k in kinds:
        threads = next(r["threads"] for r in results if r["kind"] == k)
        pixels = args.naive_size**2 if k == "naive" else px
        print(f"{k:<16} {threads:>7} {med[k]['seconds']:>8.2f} {med[k]['cpu']:>8.2f} "
              f"{pixels / med[k]['seconds'] / 1e6:>7.3f} {med[k]['peak_mib']:>9.0f} "
              f"{med[k]['added_mib']:>9.0f}")

    def ratio(a: str, b: str) -> str:
        pairs = [(x, y) for x in results if x["kind"] == a
                 for y in results if y["kind"] == b and y["round"] == x["round"]]  # fmt: skip
        wall = median(x["seconds"] / y["seconds"] for x, y in pairs)
        cpu = median(x["cpu"] / y["cpu"] for x, y in pairs)
        return f"{wall:6.2f}x wall {cpu:6.2f}x cpu"

    print("\nratios (median of the per-round ratios; baseline measured in the same round):")
    for name in args.models:
        job = f"job-{name}"
        print(f"  {job} / read  {ratio(job, 'read')}   (acceptance: <= 2.0x wall)")
        print(f"  {job} / raw   {ratio(job, 'raw')}   (rasterio alone)")
        print(f"  model-{name} / read  {ratio(f'model-{name}', 'read')}   (the model alone, "
              "on every window's pixels)")
    print(f"  read / raw {ratio('read', 'raw')}   (what CubeSource.read adds to rasterio)")
    if args.workers:
        name = args.models[0]
        n = args.workers
        for kind, what in (("dask", "cluster started by the job"),
                           ("warm", "cluster started before")):
            pairs = [(x, y) for x in results if x["kind"] == f"{kind}-{name}"
                     for y in results if y["kind"] == f"serial-{name}"
                     and y["round"] == x["round"]]  # fmt: skip
            speedup = median(y["seconds"] / x["seconds"] for x, y in pairs)
            serial = (n / speedup - 1) / (n - 1) if n > 1 else float("nan")
            print(f"  {kind}-{name} ({n} workers, {what}) vs serial-{name} (1 process, "
                  f"1 thread): {speedup:.2f}x faster (acceptance: >= 1.7x); Amdahl serial "
                  f"fraction s = (N/speedup - 1)/(N - 1) = {serial:.2f}")
            if ceilings:
                of = median(y["seconds"] / x["seconds"] / ceilings[x["round"]]["compute"]
                            for x, y in pairs)  # fmt: skip
                print(f"    = {of:.2f} of the machine's {n}-process ceiling (computing in "
                      "cache) measured in the same round")
        if ceilings:
            print(f"  machine ceiling, {n} processes vs 1 (median of the rounds): streaming "
                  f"over memory {median(c['stream'] for c in ceilings.values()):.2f}x, "
                  f"computing in cache {median(c['compute'] for c in ceilings.values()):.2f}x")
        threaded = [(x, y) for x in results if x["kind"] == f"job-{name}"
                    for y in results if y["kind"] == f"serial-{name}" and y["round"] == x["round"]]
        if threaded:
            print(f"  job-{name} ({args.threads} threads) vs serial-{name}: "
                  f"{median(y['seconds'] / x['seconds'] for x, y in threaded):.2f}x faster")
    digests = {r["digest"] for r in results if r["digest"]}
    by_model = {name: {r["digest"] for r in results if r["digest"] and r["kind"].endswith(name)}
                for name in args.models}  # fmt: skip
    same = all(len(d) <= 1 for d in by_model.values())
    print(f"\noutputs byte-identical across every job of a model: {'yes' if same else 'NO'} "
          f"({', '.join(sorted(digests))})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2000)
    parser.add_argument("--dates", type=int, default=12)
    parser.add_argument("--bands", type=int, default=10)
    parser.add_argument("--compress", default=None, help="e.g. deflate (default: none)")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--models", nargs="+", default=["logreg"])
    parser.add_argument("--threads", type=int, default=2, help="threads of the job runs")
    parser.add_argument("--workers", type=int, default=0, help="Dask workers (0: no Dask)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed rounds first (default 1)")
    parser.add_argument("--naive-size", type=int, default=0)
    parser.add_argument("--out", default="/tmp/cropscope_bench_map")
    parser.add_argument("--profile", action="store_true",
                        help="then run profile_map.py on the first model")
    parser.add_argument("--allocator", choices=["cropscope", "system"], default="cropscope",
                        help="the command's allocator settings (default) or glibc's own")
    parser.add_argument("--rounds", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--scene", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rounds:  # the child: every measurement
        if args.allocator == "cropscope":
            from cropscope.allocator import keep_freed_memory

            keep_freed_memory()
        results = run_rounds(args)
        for _, stack, _ in _CLUSTER:
            stack.close()
        print(json.dumps(results))
        return

    from cropscope.models import create_model

    out = Path(args.out)
    suffix = f"_{args.compress}" if args.compress else ""
    scene = out / f"scene_{args.size}_{args.dates}x{args.bands}{suffix}"
    generate(scene, args.size, args.dates, args.bands, compress=args.compress)
    for name in args.models:
        model_dir = out / f"model_{name}"
        if not (model_dir / "model.json").is_file():
            create_model(name).fit(training_set(args.dates, args.bands)).save(model_dir)
    size_gb = sum(p.stat().st_size for p in scene.glob("*.tif")) / 1e9
    print(f"scene {args.size} x {args.size} px x {args.dates} dates x {args.bands} bands "
          f"({size_gb:.2f} GB on disk, {args.compress or 'uncompressed'}), models "
          f"{args.models}, tile {args.tile}, job threads {args.threads}, "
          f"GDAL_CACHEMAX={os.environ.get('GDAL_CACHEMAX', 'default')}, "
          f"allocator {args.allocator}, "
          f"{os.cpu_count()} cores", file=sys.stderr)  # fmt: skip
    cmd = [sys.executable, __file__, "--rounds", "--scene", str(scene), "--out", str(out),
           "--tile", str(args.tile), "--threads", str(args.threads), "--workers",
           str(args.workers), "--repeats", str(args.repeats), "--warmup", str(args.warmup),
           "--naive-size", str(args.naive_size), "--allocator", args.allocator,
           "--size", str(args.size), "--models", *args.models]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    report(results, args)
    if args.profile:
        profile = Path(__file__).with_name("profile_map.py")
        subprocess.run([sys.executable, str(profile), "--scene", str(scene), "--model",
                        str(out / f"model_{args.models[0]}"), "--tile", str(args.tile)],
                       check=True)  # fmt: skip


if __name__ == "__main__":
    main()
