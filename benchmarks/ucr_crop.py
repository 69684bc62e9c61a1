"""Leaderboard models on UCR "Crop" (TRAIN): stratified k-fold accuracy.

Stratified ``--folds``-fold cross-validation (shuffled, ``--seed``) of the registered
``minirocket`` model (variants ``minirocket``, ``multirocket`` and ``multirocket-hydra``, the
last with ``hydra=true``), the ``quant`` model (interval quantiles + extremely randomised
trees), ``lightgbm`` (the registered model with its default features: values, differences,
statistics) and ``lightgbm-quant`` (QUANT's interval quantiles, ``features=["quantiles"]``,
into ``lightgbm``: boosted instead of randomised trees), and the deep
``tempcnn``, ``inceptiontime`` and ``ltae`` (temporal attention) models, once per variant,
on ``ucr_crop/Crop_TRAIN.tsv`` of the data folder (7200 NDVI series x 46 steps, 24 classes;
the archive's TEST split is held back and not used here).
Each variant runs in its own child process so that its peak resident memory
(``ru_maxrss``) is its own; the thread count is applied with
:func:`cropscope.threads.set_threads` in that process.

Printed per variant: accuracy mean ± standard deviation over the folds (and per fold), fit
and predict seconds, wall time, the ratio of the wall time and the accuracy difference to the
baseline variant (``--baseline``), and peak memory. Never asserts.

``--variant-config VARIANT=JSON`` sets options of one variant only (after ``--config``, which
applies to every variant), e.g. ``inceptiontime={"epochs": 10}``. ``--soft-vote A B ...``
(``--soft-vote`` alone: every variant) also scores, per fold, the mean of those variants'
out-of-fold class probabilities (each variant then writes its probabilities to a temporary
``.npy`` file), and with three voters or more smaller votes too, so that what each member adds
shows (every smaller vote up to four voters, the votes without one member above), and the vote
of all of them with weights chosen, per fold, on the other folds (up to six voters), and their
vote after a temperature per member chosen the same way (calibration: the networks are
overconfident, the trees' vote fractions flat). The ridge head of the rocket variants takes
part through its temperature-calibrated softmax (``docs/models.md``).

``VARIANT@K`` runs a variant again with the model seed ``--seed + K`` (the folds stay those of
``--seed``), e.g. ``--variants tempcnn tempcnn@1`` for two TempCNN seeds in one vote.
``--keep DIR`` keeps each variant's out-of-fold probabilities and result line in ``DIR``
(``VARIANT.npy``, ``VARIANT.json``); with ``--reuse`` a variant whose kept result was made
with the same data file, folds, seed, thread count and options is read back instead of
refitted, so a larger vote does not pay again for the members already measured.

Published figures on the official TEST split (train on all 7200, test on 16 800 series; a
different protocol, for orientation only): MultiRocket 0.7739, ROCKET 0.7517,
MiniRocket 0.7522, InceptionTime 0.7722.

    python benchmarks/ucr_crop.py --threads 2
    python benchmarks/ucr_crop.py --variants minirocket --folds 5 --max-folds 1
    python benchmarks/ucr_crop.py --variants inceptiontime multirocket \
        --variant-config 'inceptiontime={"epochs": 10, "n_models": 1}' \
        --soft-vote inceptiontime multirocket --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PUBLISHED = {"minirocket": 0.7522, "multirocket": 0.7739, "inceptiontime": 0.7722}
# (no official-split figure is quoted here for MultiRocket-Hydra or QUANT)
#: variant -> (registered model, its options)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "minirocket": ("minirocket", {"variant": "minirocket"}),
    "multirocket": ("minirocket", {"variant": "multirocket"}),
    "inceptiontime": ("inceptiontime", {}),
    "multirocket-hydra": ("minirocket", {"variant": "multirocket", "hydra": True}),
    "quant": ("quant", {}),
    "lightgbm": ("lightgbm", {}),
    "lightgbm-quant": ("lightgbm", {"features": ["quantiles"]}),
    "tempcnn": ("tempcnn", {}),
    "ltae": ("ltae", {}),
    "lstm-fcn": ("lstm-fcn", {}),
}


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _split_variant(variant: str) -> tuple[str, int]:
    """``"tempcnn@2"`` -> ``("tempcnn", 2)``; ``"quant"`` -> ``("quant", 0)``."""
    base, at, offset = variant.partition("@")
    if base not in VARIANTS or (at and not offset.isdigit()):
        raise ValueError(f"unknown variant {variant!r}; known: {sorted(VARIANTS)}, each "
                         "optionally followed by @K (model seed --seed + K)")
    return base, int(offset) if at else 0


def _kept(keep: Path, variant: str, cmd: list[str]) -> tuple[dict[str, Any], Any] | None:
    """The kept result line and probabilities of ``variant`` if they were made by ``cmd``."""
    import numpy as np

    line, npy = keep / f"{variant}.json", keep / f"{variant}.npy"
    if not (line.is_file() and npy.is_file()):
        return None
    row = json.loads(line.read_text())
    if row.get("command") != cmd:
        print(f"  {variant}: kept result made by another command; refitting", file=sys.stderr)
        return None
    print(f"  {variant}: reusing the kept result in {keep}", file=sys.stderr)
    return row, np.load(npy)


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
    base_variant, seed_offset = _split_variant(args.worker)
    name, variant_options = VARIANTS[base_variant]
    config = {**variant_options, "seed": args.seed + seed_offset}
    if args.n_features is not None and name == "minirocket":
        config["n_features"] = args.n_features
    config.update(json.loads(args.config))
    config.update(json.loads(args.worker_config))
    folds = StratifiedKFold(args.folds, shuffle=True, random_state=args.seed)
    accs, fit_s, predict_s = [], [], []
    start = time.perf_counter()
    n_features = None
    proba = np.full((ts.n_samples, len(ts.classes)), np.nan, dtype=np.float32)
    for k, (tr, te) in enumerate(folds.split(np.zeros(ts.n_samples), ts.labels)):
        if args.max_folds is not None and k >= args.max_folds:
            break
        model = create_model(name, **config)
        t0 = time.perf_counter()
        model.fit(ts.subset(tr))
        t1 = time.perf_counter()
        proba[te] = model.predict_proba(ts.subset(te))
        pred = model.predict(ts.subset(te))
        t2 = time.perf_counter()
        accs.append(float((pred == ts.labels[te]).mean()))
        fit_s.append(t1 - t0)
        predict_s.append(t2 - t1)
        assert model.card is not None
        if name == "minirocket":
            n_features = model.card.extra["n_features"]
            detail = f"alpha {model.card.extra['alpha']}"
        elif "feature_names" in model.card.extra:  # a feature-table model (quant)
            n_features = len(model.card.extra["feature_names"])
            detail = f"{name} {config.get('features', 'default features')}"
        else:  # a deep model: its parameter count, and the members' epochs
            n_features = sum(int(p.numel()) for p in model.module.parameters())
            detail = f"epochs run {[m['epochs_run'] for m in model.card.extra['members']]}"
        print(f"  {args.worker} fold {k}: accuracy {accs[-1]:.4f}, fit {fit_s[-1]:.1f} s, "
              f"predict {predict_s[-1]:.1f} s, {detail}",
              file=sys.stderr, flush=True)  # fmt: skip
    if args.proba_out is not None:
        np.save(args.proba_out, proba)
    print(json.dumps({
        "variant": args.worker, "accuracy": accs, "fit_s": fit_s, "predict_s": predict_s,
        "wall_s": time.perf_counter() - start, "threads": threads, "n_features": n_features,
        "config": config,
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
    parser.add_argument("--variant-config", action="append", default=[],
                        metavar="VARIANT=JSON", help="options of one variant (repeatable)")
    parser.add_argument("--soft-vote", nargs="*", default=None, metavar="VARIANT",
                        help="also score the mean of these variants' probabilities (no "
                        "names: of every variant that runs)")
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR",
                        help="keep each variant's out-of-fold probabilities and result here")
    parser.add_argument("--reuse", action="store_true",
                        help="read back kept results made by the same command")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker-config", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--proba-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return
    per_variant: dict[str, str] = {}
    for item in args.variant_config:
        variant, _, options = item.partition("=")
        try:
            _split_variant(variant)
            if not isinstance(json.loads(options), dict):
                raise ValueError(f"{options!r} is not a JSON object")
        except ValueError as exc:
            parser.error(f"--variant-config {item!r}: expected VARIANT=JSON object ({exc})")
        per_variant[variant] = options
    for variant in args.variants:
        try:
            _split_variant(variant)
        except ValueError as exc:
            parser.error(str(exc))
    if len(set(args.variants)) < len(args.variants):
        parser.error("--variants: each variant once (VARIANT@K for another seed)")
    vote = list(args.variants) if args.soft_vote == [] else (args.soft_vote or [])
    if set(vote) - set(args.variants) or len(vote) == 1:
        parser.error("--soft-vote needs two or more of the variants that run")
    if args.reuse and args.keep is None:
        parser.error("--reuse needs --keep DIR")
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)

    import numpy as np

    rows = []
    probas: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in args.variants:
            # what identifies a result: everything but the interpreter and this file's path
            cmd = ["--worker", variant, "--data", str(args.data.resolve()),
                   "--folds", str(args.folds), "--threads", str(args.threads),
                   "--seed", str(args.seed), "--config", args.config,
                   "--worker-config", per_variant.get(variant, "{}")]  # fmt: skip
            if args.max_folds is not None:
                cmd += ["--max-folds", str(args.max_folds)]
            if args.n_features is not None:
                cmd += ["--n-features", str(args.n_features)]
            kept = _kept(args.keep, variant, cmd) if args.reuse else None
            if kept is not None:
                rows.append(kept[0])
                probas[variant] = kept[1]
                continue
            out = (args.keep or Path(tmp)) / f"{variant}.npy"
            done = subprocess.run([sys.executable, __file__, *cmd, "--proba-out", str(out)],
                                  stdout=subprocess.PIPE, text=True, check=True,
                                  env=os.environ.copy())  # fmt: skip
            rows.append({**json.loads(done.stdout.strip().splitlines()[-1]), "command": cmd})
            probas[variant] = np.load(out)
            if args.keep is not None:  # the line last: it vouches for the .npy beside it
                line = args.keep / f"{variant}.json"
                line.with_suffix(".json.tmp").write_text(json.dumps(rows[-1]))
                line.with_suffix(".json.tmp").replace(line)

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
    if vote:
        _print_soft_votes(args, vote, probas)
    for r in rows:
        print(f"{r['variant']} options: {json.dumps(r['config'])}")
    print(
        f"(baseline {base['variant']}; std over folds (population); fit/pred: summed over "
        "folds; features: kernel features of a rocket variant, table columns of a feature "
        "model, parameters of a deep model; "
        "peak MiB: ru_maxrss of the variant's own process; published: official TEST split, "
        "another protocol)"
    )


#: up to this many voters every smaller vote is printed; above it, the votes without one member
ALL_SUBVOTES_UP_TO = 4
#: the weighted vote searches 11^V weightings for the C(V + 9, 9) on the simplex (steps of 0.1):
#: 1.8 M for 5,005 at six voters, far too many above
WEIGHTED_VOTE_UP_TO = 6


def _print_soft_votes(args: argparse.Namespace, vote: list[str],
                      probas: dict[str, Any]) -> None:
    """Per fold, the accuracy of the mean of the ``vote`` variants' probabilities; with three
    voters or more, of smaller votes too (what each member adds): every smaller vote up to
    ``ALL_SUBVOTES_UP_TO`` voters, the votes without one member above."""
    import itertools

    import numpy as np
    from sklearn.model_selection import StratifiedKFold

    from cropscope.data.readers.ucr import read_ucr_crop

    ts = read_ucr_crop(args.data)
    assert ts.labels is not None
    labels = ts.labels
    folds = StratifiedKFold(args.folds, shuffle=True, random_state=args.seed)
    tests = [te for _, te in folds.split(np.zeros(ts.n_samples), labels)]
    tests = tests[: args.max_folds]  # None keeps every fold
    if len(vote) <= ALL_SUBVOTES_UP_TO:
        subsets = [m for size in range(len(vote), 1, -1)
                   for m in itertools.combinations(vote, size)]
    else:
        subsets = [tuple(vote)] + [tuple(v for v in vote if v != out) for out in vote]
    for members in subsets:
        mean = np.mean([probas[v] for v in members], axis=0)
        accs = [float((mean[te].argmax(axis=1) == labels[te]).mean()) for te in tests]
        acc = np.asarray(accs)
        print(f"soft vote {' + '.join(members)} (mean probability): {acc.mean():.4f} ± "
              f"{acc.std():.4f}; per fold: " + ", ".join(f"{a:.4f}" for a in accs))
    _print_weighted_vote(vote, probas, labels, tests)
    _print_calibrated_vote(vote, probas, labels, tests)


def _print_weighted_vote(vote: list[str], probas: dict[str, Any], labels: Any,
                         tests: list[Any]) -> None:
    """The vote of all ``vote`` members with weights chosen per fold on the other folds.

    For each test fold, the weights (a grid of steps of 0.1 on the simplex) that score best on
    the out-of-fold probabilities of the *other* folds are applied to this fold, so the
    weights never see the labels they are scored on. (The other folds' probabilities come
    from models that trained on this fold's samples, as in any stacking on out-of-fold
    predictions; the weights are few numbers, so little can leak through them.)
    """
    import itertools

    import numpy as np

    if len(tests) < 2:
        print("weighted vote: needs two scored folds or more")
        return
    if len(vote) > WEIGHTED_VOTE_UP_TO:
        print(f"weighted vote: skipped for more than {WEIGHTED_VOTE_UP_TO} members (the grid "
              "grows as C(members + 9, 9))")
        return
    stack = np.stack([probas[v] for v in vote])  # [V, N, K]
    grid = [w for w in itertools.product(range(11), repeat=len(vote)) if sum(w) == 10]
    weights = np.asarray(grid, dtype=np.float32) / 10  # [G, V]
    hits = np.stack([  # [G, N]: whether each weighting gets each sample right
        np.tensordot(w, stack, axes=1).argmax(axis=1) == labels for w in weights])
    accs, chosen = [], []
    for k, te in enumerate(tests):
        others = np.concatenate([t for j, t in enumerate(tests) if j != k])
        best = int(hits[:, others].mean(axis=1).argmax())
        chosen.append(weights[best])
        accs.append(float(hits[best, te].mean()))
    acc = np.asarray(accs)
    print(f"weighted vote {' + '.join(vote)} (weights chosen on the other folds): "
          f"{acc.mean():.4f} ± {acc.std():.4f}; per fold: " + ", ".join(f"{a:.4f}" for a in accs)
          + "; weights per fold: " + ", ".join("/".join(f"{x:.1f}" for x in w) for w in chosen))


def _print_calibrated_vote(vote: list[str], probas: dict[str, Any], labels: Any,
                           tests: list[Any]) -> None:
    """The mean of the ``vote`` members' probabilities after a temperature per member.

    The members' probabilities are calibrated differently (the networks' softmax is
    overconfident, the trees' vote fractions are flat), so a plain mean lets the most
    confident member decide. For each test fold, each member's temperature is fitted on the
    *other* folds, as the weights of the weighted vote are: the ``stacking`` model's
    ``meta="temperature"`` (:func:`cropscope.models.calibration.fit_temperature` and
    :func:`~cropscope.models.calibration.tempered`), applied to the kept out-of-fold
    probabilities instead of inner folds.
    """
    import numpy as np

    from cropscope.models.calibration import fit_temperature, tempered

    if len(tests) < 2:
        print("calibrated vote: needs two scored folds or more")
        return
    accs, chosen = [], []
    for k, te in enumerate(tests):
        others = np.concatenate([t for j, t in enumerate(tests) if j != k])
        best = {v: fit_temperature(probas[v][others], labels[others]) for v in vote}
        chosen.append(best)
        mean = np.mean([tempered(probas[v][te], best[v]) for v in vote], axis=0)
        accs.append(float((mean.argmax(axis=1) == labels[te]).mean()))
    acc = np.asarray(accs)
    print(f"calibrated vote {' + '.join(vote)} (a temperature per member, fitted on the other "
          f"folds): {acc.mean():.4f} ± {acc.std():.4f}; per fold: "
          + ", ".join(f"{a:.4f}" for a in accs) + "; temperatures per fold: "
          + ", ".join("/".join(f"{b[v]:.2f}" for v in vote) for b in chosen))


if __name__ == "__main__":
    main()
