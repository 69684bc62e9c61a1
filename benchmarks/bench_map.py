"""Wall-to-wall map production at scale: a synthetic scene on disk, classified in windows.

Writes a synthetic image time series (default 10,000 x 10,000 pixels x 12 dates x 10 bands,
uint16, one tiled GeoTIFF per date, written strip by strip) unless it already exists, fits
a model on pixels drawn from the same process, and then measures, each in a fresh
process so peak memory is that run's own:

- ``read``: every window read once and nothing else: the disk-read rate, the lower bound
  on the time of any map job over these files;
- ``job-1``: :func:`cropscope.mapping.run_map_job` in one process;
- ``job-dask``: the same on a local Dask cluster (``--workers``, default 2);
- ``naive``: the whole-array baseline a user would write (``read_cube`` of the scene into
  memory, then ``classify_cube``) on a smaller crop (``--naive-size``), since the full
  scene does not fit in memory.

Prints pixels/s, the ratio to the naive baseline's pixels/s and the peak resident memory
(the process and all its children, sampled every 0.2 s). Never asserts timings.

    python benchmarks/bench_map.py                      # the full 10k x 10k scene
    python benchmarks/bench_map.py --size 1000 --naive-size 500   # a quick run
"""

from __future__ import annotations

import argparse
import gc
import json
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


def generate(folder: Path, size: int, n_dates: int, n_bands: int, strip: int = 512) -> None:
    """One uint16 GeoTIFF per date (tiled 512, pixel-interleaved), written strip by strip."""
    import rasterio
    from rasterio.crs import CRS
    from rasterio.transform import from_origin
    from rasterio.windows import Window
    from tqdm.auto import tqdm

    marker = folder / "complete.json"
    spec = {"size": size, "dates": n_dates, "bands": n_bands}
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


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    """One measured run in this (fresh) process."""
    import shutil

    from cropscope.data.readers.cube import CubeSource
    from cropscope.mapping import classify_cube, run_map_job
    from cropscope.mapping.windows import plan_windows
    from cropscope.models import Classifier

    scene = Path(args.scene)
    model = Classifier.load(args.model)
    with PeakMemory() as mem:
        start = time.perf_counter()
        if args.run == "read":
            source = CubeSource.scan(scene, scale=1e-4)
            nbytes = 0
            with source.opened():
                for w in plan_windows(source.height, source.width, tile=args.tile):
                    nbytes += source.read(w.write_window).nbytes // 2  # uint16 on disk
                    gc.collect()  # as the map job does
            pixels = source.height * source.width
        elif args.run == "naive":
            n = args.naive_size  # the crop read whole into memory, then classified
            cube = CubeSource.scan(scene, scale=1e-4).read(((0, n), (0, n)))
            classify_cube(model, cube)
            pixels, nbytes = n * n, 0
        else:
            out = Path(args.out) / args.run
            shutil.rmtree(out, ignore_errors=True)
            source = CubeSource.scan(scene, scale=1e-4)
            workers = args.workers if args.run == "job-dask" else None
            run_map_job(model, source, out, tile=args.tile, workers=workers, progress=True)
            pixels, nbytes = source.height * source.width, 0
        seconds = time.perf_counter() - start
    return {"run": args.run, "pixels": pixels, "seconds": seconds, "bytes": nbytes,
            "peak_mib": mem.peak / 2**20}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10000)
    parser.add_argument("--dates", type=int, default=12)
    parser.add_argument("--bands", type=int, default=10)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--naive-size", type=int, default=2000)
    parser.add_argument("--model-name", default="logreg")
    parser.add_argument("--out", default="/tmp/cropscope_bench_map")
    parser.add_argument("--runs", nargs="+", default=["read", "naive", "job-1", "job-dask"])
    parser.add_argument("--run", help=argparse.SUPPRESS)
    parser.add_argument("--scene", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run:  # a child: one measured run
        print(json.dumps(run_one(args)))
        return

    from cropscope.models import create_model

    out = Path(args.out)
    scene = out / f"scene_{args.size}_{args.dates}x{args.bands}"
    generate(scene, args.size, args.dates, args.bands)
    model_dir = out / "model"
    create_model(args.model_name).fit(training_set(args.dates, args.bands)).save(model_dir)
    size_gb = sum(p.stat().st_size for p in scene.glob("*.tif")) / 1e9
    print(f"scene {args.size} x {args.size} px x {args.dates} dates x {args.bands} bands "
          f"({size_gb:.1f} GB on disk), model {args.model_name}, tile {args.tile}",
          file=sys.stderr)  # fmt: skip
    results = []
    for run in args.runs:
        cmd = [sys.executable, __file__, "--run", run, "--scene", str(scene), "--model",
               str(model_dir), "--out", str(out), "--tile", str(args.tile), "--workers",
               str(args.workers), "--naive-size", str(args.naive_size)]  # fmt: skip
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        r = results[-1]
        print(f"  {run}: {r['seconds']:.1f} s", file=sys.stderr)

    naive = next((r for r in results if r["run"] == "naive"), None)
    naive_rate = naive["pixels"] / naive["seconds"] if naive else float("nan")
    print(f"\n{'run':<10} {'pixels':>12} {'seconds':>9} {'Mpx/s':>8} {'vs naive':>9} "
          f"{'peak MiB':>9}  note")  # fmt: skip
    for r in results:
        rate = r["pixels"] / r["seconds"]
        note = ""
        if r["run"] == "read":
            note = f"disk read {r['bytes'] / r['seconds'] / 2**20:.0f} MiB/s (lower bound)"
        elif r["run"] == "naive":
            note = f"whole {args.naive_size} x {args.naive_size} crop in memory"
        elif r["run"] == "job-dask":
            note = f"{args.workers} workers"
        print(f"{r['run']:<10} {r['pixels']:>12,} {r['seconds']:>9.1f} {rate / 1e6:>8.3f} "
              f"{rate / naive_rate:>8.2f}x {r['peak_mib']:>9.0f}  {note}")  # fmt: skip


if __name__ == "__main__":
    main()
