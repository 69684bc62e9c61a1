"""Cross-validation on the WorldCereal LPIS samples of south-west France 2023 (dekadal), at
four levels of the EWOC code hierarchy: the first numbers published on this file.

Run: ``.venv/bin/python benchmarks/lpis_cv.py [--models rf lightgbm tempcnn] [--threads 1]``

Reads ``worldcereal_lpis_samples/2023_FRA_LPIS_POLY_110.geoparquet`` as a long table on its
own dekads (51 steps, 2022-09-01 ... 2024-01-21; ``65535`` = nodata, 46 % of the values;
the nine Sentinel-2 bands that were extracted), drops the parcel without any valid
observation (499 left, 47 EWOC codes), and cross-validates each model twice with
:func:`cropscope.evaluation.cross_validate`, seed 0:

- **parcels**: 5 group folds over the parcel ids (``StratifiedGroupKFold``). Each sample is
  one parcel, so no parcel is ever on both sides of a fold. 28 of the 47 codes have fewer
  than 5 parcels, too few for plain stratified folds (``cropscope evaluate --cv 5`` refuses
  them); group folds stratify as far as they can.
- **10 km blocks**: 5 folds over square blocks of 10 km (``spatial_blocks="10km"``), so that
  neighbouring parcels, which share soils, weather and farmers, are never on both sides.

The models predict the full ten-digit code. EWOC codes are two-digit groups, coarse to
fine (``11`` temporary crops, ``1101`` cereals, ``110101`` wheat, ...): the taxonomy
``prefixes:2,4,6`` (:meth:`cropscope.taxonomy.Taxonomy.from_code_prefixes`) makes levels of
the first 2, 4 and 6 digits, and ``levels=True`` scores each (a flat model's probabilities
summed up the tree, the best root-to-leaf path). Macro-F1 is over the codes present in the
test parcels. The 10 km protocol is the command line's
``cropscope evaluate --table 2023_FRA_LPIS_POLY_110.geoparquet --time-col timestamp
--label-col ewoc_code --bands 'S2-L2A-*' --nodata 65535 --drop-empty --model M --cv 5
--seed 0 --spatial-blocks 10km --taxonomy prefixes:2,4,6 --levels --json``.
"""

from __future__ import annotations

import argparse
import functools
import time
import warnings

import numpy as np

from cropscope.data.readers.table import read_table
from cropscope.data.samples import attach_taxonomy
from cropscope.evaluation import cross_validate
from cropscope.models.registry import create_model
from cropscope.settings import data_dir

TAXONOMY = "prefixes:2,4,6"
#: options per model: rf as in lpis_transfer.py; deep and boosted models with their defaults
MODEL_OPTIONS: dict[str, dict] = {"rf": {"n_estimators": 500}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["rf", "lightgbm", "tempcnn"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from cropscope.threads import set_threads

    threads = set_threads(args.threads)
    path = data_dir() / "worldcereal_lpis_samples" / "2023_FRA_LPIS_POLY_110.geoparquet"
    t0 = time.perf_counter()
    ts = read_table(path, time_col="timestamp", label_col="ewoc_code", bands=["S2-L2A-*"],
                    nodata=65535, drop_empty=True)  # fmt: skip
    observed = float(np.isfinite(ts.values).mean())
    print(f"{ts}; {observed:.0%} of the values observed; read in {time.perf_counter() - t0:.1f}"
          f" s; {threads} thread(s), seed {args.seed}")  # fmt: skip
    # one sample per parcel: group folds over the parcel ids (28 codes have fewer than 5
    # parcels, too few for plain stratified folds; grouped folds stratify as far as they can)
    ts = ts.replace(meta=ts.meta.assign(parcel=np.asarray(ts.ids)))
    protocols = {"parcels": {"group": "parcel"}, "10 km blocks": {"spatial_blocks": "10km"}}
    ts = attach_taxonomy(ts, TAXONOMY)
    sizes = dict(zip(ts.taxonomy.levels, ts.taxonomy.sizes, strict=True))
    rows = []
    for name in args.models:
        options = MODEL_OPTIONS.get(name, {})
        factory = functools.partial(create_model, name, seed=args.seed, **options)
        for protocol, kwargs in protocols.items():
            with warnings.catch_warnings():  # "fold k trains without class ...": counted below
                warnings.simplefilter("ignore", UserWarning)
                res = cross_validate(factory, ts, cv=5, seed=args.seed, levels=True, **kwargs)
            assert res.fold is not None
            unseen = sum(int(np.isin(res.y_true[res.fold == f], res.y_true[res.fold != f],
                                     invert=True).sum()) for f in np.unique(res.fold))  # fmt: skip
            scores = {e["level"]: (e["overall_accuracy"], e["macro_f1"])
                      for e in res.hierarchy["levels"]}  # fmt: skip
            rows.append((name, protocol, scores, res.duration_s))
            print(f"  {name}, {protocol}: " + ", ".join(
                f"{level} OA {oa:.3f} macro-F1 {f1:.3f}" for level, (oa, f1) in scores.items())
                + f" ({res.duration_s:.0f} s; {unseen} test parcels of a code absent from "
                f"their fold's training part)", flush=True)  # fmt: skip

    print()
    head = " | ".join(f"{level} ({n} codes) OA / macro-F1" for level, n in sizes.items())
    print(f"| model | folds | {head} | time |")
    print("|---|---|" + "---|" * len(sizes) + "---|")
    for name, protocol, scores, seconds in rows:
        cells = " | ".join(f"{oa:.3f} / {f1:.3f}" for oa, f1 in scores.values())
        print(f"| `{name}` | {protocol} | {cells} | {seconds:.0f} s |")
    opts = " ".join(args.models)
    print(f"\n(python benchmarks/lpis_cv.py --models {opts} --threads {args.threads} "
          f"--seed {args.seed})")


if __name__ == "__main__":
    main()
