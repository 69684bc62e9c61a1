"""Cross-region and cross-year transfer on the WorldCereal LPIS samples, at two levels of the
EWOC code hierarchy (the table reader's nodata, season and grid options end to end).

Run: ``.venv/bin/python benchmarks/lpis_transfer.py [--trees 500] [--threads 1]``

Reads ``worldcereal_lpis_samples/2022_FRA_LPIS_POLY_110.geoparquet`` (Corsica, monthly) and
``2023_FRA_LPIS_POLY_110.geoparquet`` (south-west France, dekadal) as long tables
(``65535`` = nodata, the nine Sentinel-2 bands), composites both onto calendar months,
moves the 2023 season onto the 2022 one (:func:`cropscope.workflows.evaluate.common_time_axis`),
drops parcels without any valid observation, trains a random forest on Corsica and scores
south-west France. EWOC codes are ten digits in two-digit groups, coarse to fine
(``11`` temporary crops, ``1101`` cereals, ``110101`` wheat, ...); the fine predictions are
rolled up to the first 2, 4 and 6 digits and scored there too, next to the score of always
predicting the training set's most common group.
"""

from __future__ import annotations

import argparse
import functools
import time

import numpy as np
import pandas as pd

from cropscope.data.readers.table import read_table
from cropscope.evaluation import evaluate_predictions, evaluate_split
from cropscope.models.registry import create_model
from cropscope.settings import data_dir
from cropscope.workflows.evaluate import common_time_axis


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trees", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    from cropscope.threads import set_threads

    set_threads(args.threads)
    folder = data_dir() / "worldcereal_lpis_samples"
    options = {"time_col": "timestamp", "label_col": "ewoc_code", "bands": ["S2-L2A-*"],
               "nodata": 65535, "step": "monthly", "drop_empty": True}
    t0 = time.perf_counter()
    train = read_table(folder / "2022_FRA_LPIS_POLY_110.geoparquet", **options)
    test = read_table(folder / "2023_FRA_LPIS_POLY_110.geoparquet", **options)
    train, test = common_time_axis(train, test)
    read_s = time.perf_counter() - t0
    res = evaluate_split(functools.partial(create_model, "rf", n_estimators=args.trees, seed=0,
                                           n_jobs=args.threads), train, test)
    print(f"train {train} ({len(set(train.label_names))} codes), test {test} "
          f"({len(set(test.label_names))} codes); read {read_s:.1f} s, rf {args.trees} trees "
          f"{res.duration_s:.1f} s, threads {args.threads}")
    names = np.asarray(res.classes, dtype=object)
    print("| level | classes in test | OA | macro-F1 | OA of the training majority |")
    print("|---|---|---|---|---|")
    for digits in (2, 4, 6, 10):
        truth = [c[:digits] for c in names[res.y_true]]
        pred = [c[:digits] for c in names[res.y_pred]]
        level = evaluate_predictions(truth, pred, sorted(set(truth) | set(pred)))
        major = pd.Series([c[:digits] for c in train.label_names]).mode()[0]
        print(f"| first {digits} digits | {len(set(truth))} | {level.overall_accuracy:.3f} | "
              f"{level.macro_f1:.3f} | {np.mean(np.asarray(truth) == major):.3f} |")


if __name__ == "__main__":
    main()
