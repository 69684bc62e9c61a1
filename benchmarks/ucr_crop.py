"""MiniRocket and MultiRocket on UCR "Crop" (TRAIN split): stratified k-fold accuracy and cost.

Stratified ``--folds``-fold cross-validation (shuffled, ``--seed``) of the registered
``minirocket`` model, once per variant, on ``ucr_crop/Crop_TRAIN.tsv`` of the data folder
(7200 NDVI series x 46 steps, 24 classes; the archive's TEST split is held back and not used
here). Each variant runs in its own child process so that its peak resident memory
(``ru_maxrss``) is its own; the thread count is applied with
:func:`cropscope.threads.set_threads` in that process.

Printed per variant: accuracy mean ± standard deviation over the folds (and per fold), fit
and predict seconds, wall time, the ratio of the wall time and the accuracy difference to the
baseline variant (``--baseline``), and peak memory. Never asserts.

Published figures on the official TEST split (train on all 7200, test on 16 800 series; a
different protocol, for orientation only): MultiRocket 0.7739, ROCKET 0.7517,
MiniRocket 0.7522.

    python benchmarks/ucr_crop.py --threads 2
    python benchmarks/ucr_crop.py --variants minirocket --folds 5 --max-folds 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

PUBLISHED = {"minirocket": 0.7522, "multirocket": 0.7739}


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(args: argparse.Namespace) -> None:
    """One variant, every fold; prints one JSON line."""
    from cropscope.threads import set_threads

    # before numpy and BLAS load: their pools start at this size
    threads = set_threads(args.threads)

    import numpy as np
    from sklearn.model_selection import StratifiedKFold
    from threadpoolctl import threadpool_info

    from cropscope.data.readers.ucr import read_ucr_crop
    from cropscope.models import create_model

    ts = read_ucr_crop(args.data)
    assert ts.labels is not None
    config = {"variant": args.worker, "seed": args.seed}
    if args.n_features is not None:
        config["n_features"] = args.n_features
    config.update(json.loads(args.config))
    folds = StratifiedKFold(args.folds, shuffle=True, random_state=args.seed)
    accs, fit_s, predict_s = [], [], []
    start = time.perf_counter()
    n_features = None
    for k, (tr, te) in enumerate(folds.split(np.zeros(ts.n_samples), ts.labels)):
        if args.max_folds is not None and k >= args.max_folds:
            break
        model = create_model("minirocket", **config)
        t0 = time.perf_counter()
        model.fit(ts.subset(tr))
        t1 = time.perf_counter()
        pred = model.predict(ts.subset(te))
        t2 = time.perf_counter()
        accs.append(float((pred == ts.labels[te]).mean()))
        fit_s.append(t1 - t0)
        predict_s.append(t2 - t1)
        assert model.card is not None
        n_features = model.card.extra["n_features"]
        print(f"  {args.worker} fold {k}: accuracy {accs[-1]:.4f}, fit {fit_s[-1]:.1f} s, "
              f"predict {predict_s[-1]:.1f} s, alpha {model.card.extra['alpha']}",
              file=sys.stderr, flush=True)  # fmt: skip
    print(json.dumps({
        "variant": args.worker, "accuracy": accs, "fit_s": fit_s, "predict_s": predict_s,
        "wall_s": time.perf_counter() - start, "threads": threads, "n_features": n_features,
        "n_samples": ts.n_samples, "n_times": ts.n_times, "peak_mib": _peak_mib(),
        "blas_threads": sorted({p["num_threads"] for p in threadpool_info()}),
    }))  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    from cropscope.settings import data_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=data_dir() / "ucr_crop" / "Crop_TRAIN.tsv")
    parser.add_argument("--variants", nargs="+", default=["minirocket", "multirocket"])
    parser.add_argument("--baseline", default="minirocket")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--max-folds", type=int, default=None, help="stop after this many")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-features", type=int, default=None, help="default: per variant")
    parser.add_argument("--config", default="{}", help="more model options, as JSON")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return

    rows = []
    for variant in args.variants:
        cmd = [sys.executable, __file__, "--worker", variant, "--data", str(args.data),
               "--folds", str(args.folds), "--threads", str(args.threads),
               "--seed", str(args.seed), "--config", args.config]  # fmt: skip
        if args.max_folds is not None:
            cmd += ["--max-folds", str(args.max_folds)]
        if args.n_features is not None:
            cmd += ["--n-features", str(args.n_features)]
        done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True,
                              env=os.environ.copy())  # fmt: skip
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))

    import numpy as np

    first = rows[0]
    print(
        f"\nUCR Crop TRAIN: {first['n_samples']} series x {first['n_times']} steps; "
        f"stratified {args.folds}-fold CV, seed {args.seed}"
        + (f" (first {args.max_folds} folds)" if args.max_folds else "")
        + f"; {first['threads']} threads (BLAS/OpenMP pools: {first['blas_threads']})"
    )
    base = next((r for r in rows if r["variant"] == args.baseline), first)
    head = (
        f"{'model':<13}{'features':>9}{'accuracy':>17}{'d acc':>8}{'fit s':>8}"
        f"{'pred s':>8}{'wall s':>8}{'x base':>8}{'peak MiB':>10}{'published':>11}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        acc = np.asarray(r["accuracy"])
        d_acc = acc.mean() - np.mean(base["accuracy"])
        ratio = r["wall_s"] / base["wall_s"]
        pub = PUBLISHED.get(r["variant"])
        print(f"{r['variant']:<13}{r['n_features']:>9}"
              f"{f'{acc.mean():.4f} ± {acc.std():.4f}':>17}{d_acc:>+8.4f}"
              f"{sum(r['fit_s']):>8.1f}{sum(r['predict_s']):>8.1f}{r['wall_s']:>8.1f}"
              f"{ratio:>7.2f}x{r['peak_mib']:>10.0f}"
              f"{'' if pub is None else f'{pub:.4f}':>11}")  # fmt: skip
    for r in rows:
        print(f"{r['variant']} per fold: " + ", ".join(f"{a:.4f}" for a in r["accuracy"]))
    print(
        f"(baseline {base['variant']}; std over folds (population); fit/pred: summed over "
        "folds; peak MiB: ru_maxrss of the variant's own process; published: official "
        "TEST split, another protocol)"
    )


if __name__ == "__main__":
    main()
