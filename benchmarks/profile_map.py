"""Where a map job's time goes: cProfile of ``run_map_job`` on the benchmark scene, by stage.

Profiles one job in this process with one thread (``--threads 1``: every stage runs in the
profiled thread, so the shares add up) and CPU time as the clock (``time.process_time``:
shares that other processes on a shared machine do not distort; ``--clock wall`` for wall
time). Prints each stage's share of the job and, against the same process's read bound
(every window read with ``CubeSource.read``, measured before and after the job), the job's
time as a multiple of the read. Then the top functions by own time.

Stages are found by function (file and name), so the same table works for older versions
of cropscope (run it with ``PYTHONPATH=<old checkout>/src``): functions that do not exist
count zero.

    python benchmarks/profile_map.py --scene /tmp/bench_map/scene_2000_12x10 \\
        --model /tmp/bench_map/model
    python benchmarks/bench_map.py --size 2000 --profile   # generates scene and model first

Never asserts timings.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import sys
import time
from pathlib import Path

#: (stage, [(file suffix, function name), ...]) by cumulative time, outermost first: a
#: function counted in a stage is subtracted from the stages listed before it that contain
#: it (e.g. gap filling from features, features from the model)
STAGES: list[tuple[str, list[tuple[str, str]]]] = [
    ("read + decode (xarray cube)", [("readers/cube.py", "read")]),
    ("read (rasterio, raw)", [("readers/cube.py", "_read_layers")]),
    ("decode + masks (pixel route)", [("mapping/pixels.py", "_decode"),
                                      ("mapping/pixels.py", "_valid_steps"),
                                      ("mapping/pixels.py", "_reorder_cube")]),
    ("pixels to [N, T, C] (cube_pixels, subset, bands)",
     [("mapping/classify.py", "cube_pixels"), ("data/timeseries.py", "subset"),
      ("data/timeseries.py", "select_bands")]),
    ("model (estimator, incl. standardise)", [("models/linear.py", "_estimator_proba"),
                                              ("models/linear.py", "_estimator_proba_owned"),
                                              ("models/boosting.py", "_estimator_proba"),
                                              ("models/forest.py", "_estimator_proba")]),
    ("features (table)", [("models/_tabular.py", "features"),
                          ("models/_tabular.py", "pixel_features")]),
    ("gap filling", [("features/gapfill.py", "interpolate_gaps"),
                     ("features/gapfill.py", "fill_pixel_gaps")]),
    ("outputs (argmax, quantise, entropy)", [("mapping/predictors.py", "valid_outputs")]),
    ("write windows + journal", [("mapping/job.py", "_write_window"),
                                 ("cropscope/io.py", "write_json")]),
    ("COG + overviews", [("mapping/job.py", "_write_cogs")]),
    ("fingerprint + probe", [("mapping/job.py", "_fingerprint")]),
    ("garbage collection", [("~", "<built-in method gc.collect>")]),
]


def _cumulative(stats: pstats.Stats, keys: list[tuple[str, str]]) -> float:
    total = 0.0
    for (path, _line, name), row in stats.stats.items():  # type: ignore[attr-defined]
        for suffix, func in keys:
            if name == func and (path == suffix or path.endswith(suffix)):
                total += row[3]  # cumulative time
    return total


def stage_table(stats: pstats.Stats, total: float) -> list[tuple[str, float]]:
    """``[(stage, seconds)]`` with nested stages taken out of the stages that contain them."""
    raw = {name: _cumulative(stats, keys) for name, keys in STAGES}
    if not raw["outputs (argmax, quantise, entropy)"]:  # before valid_outputs existed
        raw["outputs (argmax, quantise, entropy)"] = _cumulative(
            stats, [("mapping/predictors.py", "core_outputs")])
    own = dict(raw)
    # nesting: the raw read inside the cube read; the estimator and gap filling inside the
    # features / model path; pixel reshaping inside the model's conform step
    own["read + decode (xarray cube)"] -= min(raw["read (rasterio, raw)"],
                                              raw["read + decode (xarray cube)"])
    own["features (table)"] -= raw["gap filling"]
    rows = [(name, max(0.0, seconds)) for name, seconds in own.items()]
    rows.append(("other (Python, numpy glue, imports)", max(0.0, total - sum(s for _, s in rows))))
    return rows


def read_bound(scene: Path, tile: int, clock: object) -> float:
    """Seconds (on ``clock``) to read every window once with ``CubeSource.read``."""
    import gc

    from cropscope.data.readers.cube import CubeSource
    from cropscope.mapping.windows import plan_windows

    source = CubeSource.scan(scene, scale=1e-4)
    start = clock()  # type: ignore[operator]
    with source.opened():
        for w in plan_windows(source.height, source.width, tile=tile):
            source.read(w.write_window)
            gc.collect()  # as the map job did
    return clock() - start  # type: ignore[operator]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", required=True, help="folder of the benchmark scene")
    parser.add_argument("--model", required=True, help="a saved model folder")
    parser.add_argument("--out", default="/tmp/cropscope_profile_map")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)

    from cropscope.data.readers.cube import CubeSource
    from cropscope.mapping import run_map_job
    from cropscope.models import Classifier
    from cropscope.threads import set_threads

    set_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    model = Classifier.load(args.model)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    scene = Path(args.scene)
    read_before = read_bound(scene, args.tile, clock)
    profiler = cProfile.Profile(clock)
    start = clock()
    profiler.enable()
    run_map_job(model, CubeSource.scan(scene, scale=1e-4), out, tile=args.tile, progress=False)
    profiler.disable()
    total = clock() - start
    read_after = read_bound(scene, args.tile, clock)
    read = (read_before + read_after) / 2
    shutil.rmtree(out, ignore_errors=True)

    stats = pstats.Stats(profiler)
    import cropscope

    print(f"cropscope from {Path(cropscope.__file__).parent}; model {model.name}; "
          f"{args.threads} thread(s); clock: {args.clock} time")
    print(f"job {total:.2f} s, read bound {read:.2f} s (CubeSource.read of every window, "
          f"{read_before:.2f} s before and {read_after:.2f} s after the job): "
          f"job = {total / read:.2f}x the read\n")
    print(f"{'stage':<52} {'seconds':>8} {'share':>7} {'x read':>7}")
    for name, seconds in stage_table(stats, total):
        print(f"{name:<52} {seconds:>8.2f} {seconds / total:>7.1%} {seconds / read:>7.2f}")
    print(f"\ntop {args.top} functions by own time:", file=sys.stdout)
    stats.sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
