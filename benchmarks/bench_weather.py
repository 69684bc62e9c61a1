"""Field model vs interpolation: RMSE ratios against bicubic and time per stage.

    python benchmarks/bench_weather.py [FILE] [--coarsen K] [--steps N]

Without FILE it uses the staged ERA-Interim u/v/z file when present. Prints ratios, never
asserts them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cropscope.settings import data_dir
from cropscope.weather.evaluate import evaluate_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("file", nargs="?", default=None)
    parser.add_argument("--coarsen", type=int, default=3)
    parser.add_argument("--steps", type=int, default=None)
    args = parser.parse_args()
    path = Path(args.file) if args.file else data_dir() / "weather_reanalysis" / "eraint_uvz.nc"
    config = {"steps": args.steps} if args.steps else {}
    r = evaluate_file(path, args.coarsen, 0, config=config)
    print(f"{path.name}, coarsen {args.coarsen}: RMSE ratio vs bicubic (lower is better)")
    for v in r["variables"]:
        e = r[v]
        print(f"  {v:<6} model/bicubic {e['rmse_model'] / e['rmse_bicubic']:.4f}   "
              f"bilinear/bicubic {e['rmse_bilinear'] / e['rmse_bicubic']:.4f}")
    geo = r["residuals"].get("geostrophic")
    if geo:
        print(f"  geostrophic residual model/bicubic "
              f"{geo['model']['rms'] / geo['bicubic']['rms']:.4f}")
    print("  seconds:", r["timings_s"])


if __name__ == "__main__":
    main()
