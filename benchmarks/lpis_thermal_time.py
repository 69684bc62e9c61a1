"""Thermal-time features and alignment for the Corsica 2022 -> south-west France 2023 transfer
on the WorldCereal LPIS samples (AgERA5 daily mean temperature per parcel and step).

Run: ``.venv/bin/python benchmarks/lpis_thermal_time.py [--trees 500] [--threads 1]
[--base 0] [--step 100]``

Reads both French files as :mod:`benchmarks.lpis_transfer` does (the nine Sentinel-2 bands,
``65535`` = nodata, calendar-month composites, the 2023 season moved onto the 2022 one by
:func:`cropscope.workflows.evaluate.common_time_axis`) and reads ``AGERA5-TMEAN`` (K x 100,
step means) in a second ``read_table`` call with only that band, so that a cloudy S2 step
keeps its temperature; the monthly composite of the temperature is the median of the month's
steps. Parcels without any temperature (16 in Corsica: 65535 but for a 0) are dropped from
every variant.
Thermal time (GDD with base ``--base`` °C, cap 30 °C) counts from 1 September of the season's
previous year (the first date of both sets after the season alignment) to the middle of each
month (:func:`cropscope.weather.covariates.thermal_time_from_series`, ``at="middle"``).

A random forest (seed ``--seed``, 0) is trained on Corsica and scored on south-west France with

- (a) calendar months (the baseline),
- (b) (a) plus the bands ``gdd_cum`` and ``gdd_step`` (cumulative and per-step GDD),
- (c) S2 resampled onto one thermal-time axis (0, step, 2 step, ... °C·d, up to the
  smallest thermal time any parcel reaches by its last step) for both regions,
- (d) (c) plus the day of the season at which each thermal step is reached (on a thermal
  axis ``gdd_cum`` is the axis itself; its calendar dual is the informative covariate),

each scored (OA, macro-F1) on the first 2, 4 and 10 digits of the EWOC code.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import numpy as np

from cropscope.data import TimeSeriesSet
from cropscope.data.readers.table import read_table
from cropscope.evaluation import evaluate_predictions, evaluate_split
from cropscope.models.registry import create_model
from cropscope.settings import data_dir
from cropscope.weather.covariates import (
    ThermalTime,
    add_covariates,
    align_on_thermal_time,
    thermal_time_from_series,
)
from cropscope.workflows.evaluate import common_time_axis

TEMP = "AGERA5-TMEAN"
FILES = {"Corsica 2022": "2022_FRA_LPIS_POLY_110.geoparquet",
         "SW France 2023": "2023_FRA_LPIS_POLY_110.geoparquet"}
OPTIONS = {"time_col": "timestamp", "label_col": "ewoc_code", "nodata": 65535,
           "step": "monthly"}


def _read(path: Path) -> TimeSeriesSet:
    """S2 bands (mask from them) plus the temperature band read on its own."""
    s2 = read_table(path, bands=["S2-L2A-*"], drop_empty=True, **OPTIONS)
    tmp = read_table(path, bands=[TEMP], drop_empty=False, **OPTIONS)
    pos = {str(i): k for k, i in enumerate(tmp.ids)}
    idx = np.array([pos[str(i)] for i in s2.ids])
    assert np.array_equal(s2.dates, tmp.dates), "S2 and temperature on different grids"
    values = np.concatenate([s2.values, tmp.values[idx]], axis=2)
    return s2.replace(values=values, bands=[*s2.bands, TEMP], mask=s2.mask)


def _thermal(ts: TimeSeriesSet, base: float, at: str) -> ThermalTime:
    return thermal_time_from_series(ts, TEMP, scale=0.01, units="K", base=base, cap=30.0,
                                    start=ts.dates[0], at=at)


def _with_season_day(ts: TimeSeriesSet, tt: ThermalTime) -> TimeSeriesSet:
    """Add the band ``season_day``: days from the season start to the middle of each step."""
    day = ts.per_sample_dates.astype(np.int64)
    length = np.empty(day.shape)
    length[:, :-1] = np.diff(day, axis=1)
    length[:, -1] = length[:, -2]  # as thermal_time_from_series does
    day = day - tt.start.astype(np.int64)[:, None] + 0.5 * length
    values = np.concatenate([ts.values, day[..., None].astype(np.float32)], axis=2)
    return ts.replace(values=values, bands=[*ts.bands, "season_day"], mask=ts.mask)


def _scores(train: TimeSeriesSet, test: TimeSeriesSet, trees: int, threads: int, seed: int
            ) -> tuple[list[float], float]:
    res = evaluate_split(functools.partial(create_model, "rf", n_estimators=trees, seed=seed,
                                           n_jobs=threads), train, test)
    names = np.asarray(res.classes, dtype=object)
    out: list[float] = []
    for digits in (2, 4, 10):
        truth = [c[:digits] for c in names[res.y_true]]
        pred = [c[:digits] for c in names[res.y_pred]]
        level = evaluate_predictions(truth, pred, sorted(set(truth) | set(pred)))
        out += [level.overall_accuracy, level.macro_f1]
    return out, res.duration_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trees", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--base", type=float, default=0.0, help="GDD base temperature (°C)")
    ap.add_argument("--step", type=float, default=100.0, help="thermal axis step (°C·d)")
    ap.add_argument("--seed", type=int, default=0, help="random forest seed")
    args = ap.parse_args()
    from cropscope.threads import set_threads

    set_threads(args.threads)
    folder = data_dir() / "worldcereal_lpis_samples"
    t0 = time.perf_counter()
    train, test = (_read(folder / f) for f in FILES.values())
    train, test = common_time_axis(train, test)
    assert train.dates is not None and np.array_equal(train.dates, test.dates)
    # a temperature within -90..60 °C (the 16 Corsican parcels have only 65535 and a 0)
    has_temp = [((s.band(TEMP) > 18315) & (s.band(TEMP) < 33315)).any(axis=1)
                for s in (train, test)]
    dropped = [int((~h).sum()) for h in has_temp]
    train, test = train.subset(has_temp[0]), test.subset(has_temp[1])
    tts = [_thermal(s, args.base, "middle") for s in (train, test)]
    s2 = [b for b in train.bands if b != TEMP]
    print(f"train {train} ({len(set(train.label_names))} codes), test {test} "
          f"({len(set(test.label_names))} codes); parcels without temperature dropped: "
          f"{dropped[0]} / {dropped[1]}; read {time.perf_counter() - t0:.1f} s; "
          f"rf {args.trees} trees, seed {args.seed}, threads {args.threads}; "
          f"GDD base {args.base:g} °C, cap 30 °C, from {train.dates[0]} (season-aligned dates)")

    # why alignment can help: thermal time reached by fixed calendar dates
    print("\n| region | mean thermal time by 1 Dec (°C·d) | by 1 Apr | by 1 Jun "
          "| by 1 Sep (a year) |")
    print("|---|---|---|---|---|")
    for name, ts in zip(FILES, (train, test), strict=True):
        at_date = _thermal(ts, args.base, "start").cumulative
        cells = []
        for md in ("2021-12-01", "2022-04-01", "2022-06-01", "2022-09-01"):
            k = int(np.flatnonzero(ts.dates == np.datetime64(md))[0])
            cells.append(f"{at_date[:, k].mean():.0f}")
        print(f"| {name} | " + " | ".join(cells) + " |")

    # variants
    reach = min(float(tt.cumulative[:, -1].min()) for tt in tts)
    n_steps = int(reach // args.step) + 1
    base_sets = [ts.select_bands(s2) for ts in (train, test)]
    variants: dict[str, tuple[TimeSeriesSet, TimeSeriesSet]] = {
        "(a) calendar months (baseline)": (base_sets[0], base_sets[1]),
    }
    gdd = [add_covariates(b, tt, bands=("gdd_cum", "gdd_step"))
           for b, tt in zip(base_sets, tts, strict=True)]
    variants["(b) (a) + gdd_cum, gdd_step"] = (gdd[0], gdd[1])
    aligned = [align_on_thermal_time(b, tt, args.step, n_steps)
               for b, tt in zip(base_sets, tts, strict=True)]
    label_c = f"(c) S2 on thermal time ({args.step:g} °C·d x {n_steps})"
    variants[label_c] = (aligned[0], aligned[1])
    days = [align_on_thermal_time(_with_season_day(b, tt), tt, args.step, n_steps)
            for b, tt in zip(base_sets, tts, strict=True)]
    variants["(d) (c) + day of season per thermal step"] = (days[0], days[1])
    for name, (tr, te) in variants.items():
        empty = [int((~s.mask.any(axis=1)).sum()) for s in (tr, te)]
        if any(empty):
            sys.exit(f"{name}: {empty} parcels without a value on the axis")
    print("\n| variant | OA 2-digit | macro-F1 2-digit | OA 4-digit | macro-F1 4-digit "
          "| OA 10-digit | macro-F1 10-digit | rf s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, (tr, te) in variants.items():
        scores, secs = _scores(tr, te, args.trees, args.threads, args.seed)
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in scores) + f" | {secs:.0f} |",
              flush=True)
    print(f"\ncommand: OMP_NUM_THREADS={args.threads} .venv/bin/python "
          f"benchmarks/lpis_thermal_time.py --trees {args.trees} --threads {args.threads} "
          f"--base {args.base:g} --step {args.step:g}"
          + (f" --seed {args.seed}" if args.seed else ""))


if __name__ == "__main__":
    main()
