"""Sample extraction (:func:`cropscope.data.extract.extract_samples`): cost and memory of
reading only the windows the labels touch, and the eo-learn acceptance experiment.

``synthetic`` writes (once) a ``--size`` x ``--size`` pixel cube (12 dates x 4 bands,
int16, one tiled GeoTIFF per date) and ``--fields`` square fields of 3-8 pixels in its
top-left quarter, then runs, **interleaved in this process** for ``--repeats`` rounds:

- ``naive``: the whole cube read at once (``CubeSource.read()``), every field rasterised
  on the whole grid (``rasterio.features.rasterize``), then numpy indexing: what one
  writes without a window plan;
- ``windowed``: ``extract_samples(..., mode="pixels", window_size=--window)``.

and prints the median wall seconds and their ratio (and that of the best runs), then the
peak of numpy/Python allocations of one more, untimed run of each (``tracemalloc``, which
slows Python code down; GDAL's block cache is not counted, ``GDAL_CACHEMAX`` is set to
64 MB), and whether both gave identical values.

``eolearn`` converts ``eolearn_slovenia_eopatch`` (NDVI + cloud mask) to a NetCDF cube,
times pixel and mean extraction (interleaved), then compares random 5-fold CV with
polygon-grouped 5-fold CV (``rf``, ``--trees`` trees) on the extracted pixel table through
the ``--table`` workflow. Thread counts are set with :func:`cropscope.threads.set_threads`.
Never asserts timings.

    python benchmarks/bench_extract.py synthetic --size 2048 --repeats 3 --threads 1
    python benchmarks/bench_extract.py eolearn --threads 1
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("GDAL_CACHEMAX", "64")
ROOT = Path(__file__).resolve().parents[1]
DATES = [f"2021-{m:02d}-01" for m in range(1, 13)]
BANDS = ["B02", "B04", "B08", "B11"]


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(wall seconds, result) of one call."""
    gc.collect()
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def traced_peak(fn: Callable[[], Any]) -> float:
    """Peak MiB of numpy/Python allocations during one call (``tracemalloc`` slows Python
    code down, so this is a separate, untimed call)."""
    gc.collect()
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def interleave(runs: dict[str, Callable[[], Any]], repeats: int
               ) -> tuple[dict[str, list[float]], dict[str, float], dict[str, Any]]:
    """Timed runs interleaved (a, b, a, b, ...), then one traced run of each: (walls,
    peaks, last results)."""
    walls: dict[str, list[float]] = {name: [] for name in runs}
    last: dict[str, Any] = {}
    for _ in range(repeats):
        for name, fn in runs.items():
            wall, last[name] = timed(fn)
            walls[name].append(wall)
    peaks = {name: traced_peak(fn) for name, fn in runs.items()}
    return walls, peaks, last


def report(walls: dict[str, list[float]], peaks: dict[str, float], baseline: str) -> None:
    base = statistics.median(walls[baseline])
    best = min(walls[baseline])
    for name, rows in walls.items():
        wall = statistics.median(rows)
        print(f"  {name:10s} median {wall:7.2f} s (x{wall / base:5.2f} of {baseline}; best "
              f"x{min(rows) / best:5.2f})  peak traced {peaks[name]:8.1f} MiB  runs "
              f"{[round(r, 2) for r in rows]}")


# ---------------------------------------------------------------------------- synthetic
def write_synthetic(folder: Path, size: int, n_fields: int, seed: int = 0) -> Path:
    import geopandas as gpd
    import rasterio
    from rasterio.crs import CRS
    from rasterio.transform import from_origin
    from shapely.geometry import box

    tr = from_origin(500000.0, 4000000.0, 10.0, 10.0)
    labels = folder / "fields.gpkg"
    if labels.is_file():
        return labels
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for day in DATES:
        data = rng.integers(0, 10000, (len(BANDS), size, size), dtype=np.int16)
        with rasterio.open(folder / f"s2_{day}.tif", "w", driver="GTiff", width=size,
                           height=size, count=len(BANDS), dtype="int16", crs=CRS.from_epsg(32633),
                           transform=tr, tiled=True, blockxsize=512, blockysize=512,
                           nodata=-1) as dst:  # fmt: skip
            dst.write(data)
            for i, b in enumerate(BANDS):
                dst.set_band_description(i + 1, b)
    # non-overlapping fields on a coarse lattice in the top-left quarter
    cells = np.argwhere(np.ones((size // 2 // 12, size // 2 // 12), dtype=bool))
    pick = cells[rng.choice(len(cells), min(n_fields, len(cells)), replace=False)]
    geoms = []
    for r, c in pick:
        w = int(rng.integers(3, 9))
        x0 = 500000.0 + (c * 12 + 1) * 10.0 + 3.0
        y0 = 4000000.0 - (r * 12 + 1) * 10.0 - 3.0
        geoms.append(box(x0, y0 - w * 10.0, x0 + w * 10.0, y0))
    gdf = gpd.GeoDataFrame({"crop": rng.choice(["maize", "wheat", "soy"], len(geoms))},
                           geometry=geoms, crs=32633)
    gdf.to_file(labels)
    return labels


def naive(folder: Path, labels: Path) -> np.ndarray:
    """Whole cube in memory, every field rasterised on the whole grid, numpy indexing."""
    import geopandas as gpd
    from rasterio.features import rasterize

    from cropscope.data.readers.cube import CubeSource

    source = CubeSource.scan(folder)
    cube = np.asarray(source.read().values)  # [T, C, H, W]
    gdf = gpd.read_file(labels).to_crs(source.crs)
    burnt = rasterize(((g, i + 1) for i, g in enumerate(gdf.geometry)), out_shape=source.shape,
                      transform=source.transform, fill=0, dtype="int32")
    order = np.argsort(burnt.ravel(), kind="stable")
    flat = burnt.ravel()[order]
    keep = order[flat > 0]
    rows, cols = np.divmod(keep, source.width)
    ids = burnt[rows, cols]
    srt = np.lexsort((cols, rows, ids))
    return np.moveaxis(cube[:, :, rows[srt], cols[srt]], 2, 0)


def windowed(folder: Path, labels: Path, window: int) -> np.ndarray:
    from cropscope.data.extract import extract_samples

    ex = extract_samples(folder, labels, label_column="crop", window_size=window,
                         keep_empty=True, progress=False)
    return ex.samples.values


def run_synthetic(args: argparse.Namespace) -> None:
    folder = Path(args.data or tempfile.gettempdir()) / f"bench_extract_{args.size}"
    labels = write_synthetic(folder, args.size, args.fields)
    import geopandas as gpd

    n_fields = len(gpd.read_file(labels))
    print(f"synthetic: {args.size} x {args.size} px, {len(DATES)} dates x {len(BANDS)} bands "
          f"int16 (cube as float32: {args.size**2 * len(DATES) * len(BANDS) * 4 / 2**20:.0f} "
          f"MiB), {n_fields} fields in the top-left quarter, window {args.window}, "
          f"threads {args.threads}, repeats {args.repeats}")
    walls, peaks, last = interleave({"naive": lambda: naive(folder, labels),
                                     "windowed": lambda: windowed(folder, labels, args.window)},
                                    args.repeats)
    a, b = last["naive"], last["windowed"]
    print(f"  samples: {b.shape[0]} pixel series; identical values: "
          f"{a.shape == b.shape and np.array_equal(a, b, equal_nan=True)}")
    report(walls, peaks, "naive")


# ---------------------------------------------------------------------------- eolearn
def run_eolearn(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT))
    from tests.data.test_extract import eopatch_netcdf

    from cropscope.data.extract import extract_samples, write_samples
    from cropscope.workflows import evaluate_model

    folder = Path(args.data or ROOT.parent / "shared" / "data") / "eolearn_slovenia_eopatch"
    work = Path(tempfile.mkdtemp(prefix="bench_eolearn_"))
    cube = eopatch_netcdf(folder, work / "eopatch.nc")
    gpkg = folder / "vector_timeless" / "LULC.gpkg"
    opts = {"label_column": "LULC_NAME", "id_column": "index", "mask_band": "CLM",
            "invalid": [1], "progress": False}
    print(f"eolearn: {cube.name} (68 dates, 101 x 100 px), threads {args.threads}, "
          f"repeats {args.repeats}")
    walls, peaks, last = interleave({
        "pixels": lambda: extract_samples(cube, gpkg, **opts),
        "mean": lambda: extract_samples(cube, gpkg, mode="mean", **opts)}, args.repeats)
    report(walls, peaks, "pixels")
    ex = last["pixels"]
    ts = ex.samples
    names, sizes = np.unique(ts.label_names, return_counts=True)
    counts = {str(k): int(v) for k, v in zip(names, sizes, strict=True)}
    print(f"  pixels: {ts.n_samples} samples from {ex.n_used} of {ex.n_features} polygons "
          f"({ex.n_unlabelled} unlabelled), {ts.n_times} dates; valid observations "
          f"{ts.mask.mean():.3f}; per class {counts}")
    for message in ex.messages:
        print(f"    {message}")
    table = write_samples(ts, work / "samples.parquet")
    config = {"n_estimators": args.trees, "n_jobs": 1}
    for name, group in (("random 5-fold", None), ("polygon-grouped 5-fold", "polygon_id")):
        start = time.perf_counter()
        res = evaluate_model("rf", table=table, cv=5, seed=0, group=group, config=config)
        m = res.metrics
        print(f"  {name:24s} OA {m['overall_accuracy']:.3f}  macro-F1 {m['macro_f1']:.3f}  "
              f"kappa {m['kappa']:.3f}  ({time.perf_counter() - start:.0f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["synthetic", "eolearn"])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--fields", type=int, default=400)
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--trees", type=int, default=100)
    parser.add_argument("--data", default=None, help="data folder (synthetic: where to "
                        "write the cube; eolearn: the shared data folder)")
    args = parser.parse_args()
    from cropscope.threads import set_threads

    set_threads(args.threads)
    if args.what == "synthetic":
        run_synthetic(args)
    else:
        run_eolearn(args)


if __name__ == "__main__":
    main()
