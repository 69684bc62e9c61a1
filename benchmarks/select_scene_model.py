"""Choose a scene model by spatial cross-validation inside the training region only.

The test blocks of a scene split must not choose the model, or the reported accuracy is
the tuned-on accuracy (issue 21). This script splits the *training* region of
``--split`` (default ``blocks:16``) into its own blocks, groups them into ``--folds``
folds, and for every candidate (model x features x neighbourhood) trains on the other
folds (dropping the pixels within the neighbourhood radius of the held-out blocks, as the
scene split does) and scores the held-out blocks. It prints each candidate's inner
accuracy and the winner, then the winner's accuracy on the untouched test blocks
(:func:`cropscope.hyperspectral.scene.evaluate_scene`, the same figure as
``cropscope evaluate --dataset SCENE --model M --split SPLIT --set ...``).

    python benchmarks/select_scene_model.py --scene indian-pines-window --threads 2
    python benchmarks/select_scene_model.py --scene enmap-potsdam --split tiles --threads 2

With ``--split tiles`` the inner folds are groups of the scene's training tiles. The
winner is the highest inner overall accuracy; the inner average accuracy (mean recall of
the classes) is printed beside it. The folds and each fold's fit are those of ``cropscope
tune`` on a scene (:func:`cropscope.hyperspectral.tuning.inner_folds` and
``fold_predictions``); here the folds' predictions are pooled.

Accuracies only; never asserts anything. Deep models are left out (minutes per fit on a
CPU); add them with ``--models``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
import warnings

import numpy as np

FEATURES = {"values": ["values"], "snv": ["snv", "values"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", default="indian-pines-window")
    parser.add_argument("--split", default="blocks:16")
    parser.add_argument("--models", nargs="+", default=["svm", "logreg", "lda", "lightgbm"])
    parser.add_argument("--features", nargs="+", default=list(FEATURES), choices=FEATURES)
    parser.add_argument("--patch-sizes", nargs="+", type=int, default=[1, 3, 5])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from cropscope.evaluation.metrics import classification_metrics
    from cropscope.hyperspectral.datasets import load_scene_dataset
    from cropscope.hyperspectral.scene import evaluate_scene
    from cropscope.hyperspectral.tuning import fold_predictions, inner_folds
    from cropscope.threads import set_threads

    set_threads(args.threads)
    # logreg's lbfgs may stop at max_iter on some folds: reported once, not per fold
    warnings.filterwarnings("once", message="lbfgs failed to converge")
    scene = load_scene_dataset(args.scene)
    inner = inner_folds(scene, args.split, folds=args.folds, seed=args.seed)
    print(f"{scene}; inner CV: {inner.count} training {inner.unit} in {args.folds} folds; "
          f"{args.threads} threads")
    print(f"{'model':10s} {'features':8s} {'patch':>5s} {'inner OA':>9s} {'inner AA':>9s} "
          f"{'fit s':>7s}")
    scores: dict[tuple[str, str, int], float] = {}
    for name, feat, size in itertools.product(args.models, args.features, args.patch_sizes):
        start = time.perf_counter()
        options = {"features": FEATURES[feat], "patch_size": size, "seed": args.seed}
        pairs = [fold_predictions(scene, name, options, inner.train, held)
                 for held in inner.held]
        m = classification_metrics(np.concatenate([y for y, _ in pairs]),
                                   np.concatenate([p for _, p in pairs]), list(scene.classes),
                                   labels_present_only=True)
        scores[(name, feat, size)] = float(m["overall_accuracy"])
        print(f"{name:10s} {feat:8s} {size:5d} {m['overall_accuracy']:9.4f} "
              f"{m['average_accuracy']:9.4f} {time.perf_counter() - start:7.1f}", flush=True)
    name, feat, size = max(scores, key=lambda k: scores[k])
    res = evaluate_scene(name, scene, args.split, seed=args.seed,
                         config={"features": FEATURES[feat], "patch_size": size})
    m = res.metrics
    print(f"chosen by the inner CV: {name}, features {FEATURES[feat]}, patch_size {size}")
    print(f"test blocks: OA {m['overall_accuracy']:.4f}  AA {m['average_accuracy']:.4f}  "
          f"macro-F1 {m['macro_f1']:.4f}  kappa {m['kappa']:.4f}  (n_test {res.config['n_test']})")
    print(f"same figure: cropscope --threads {args.threads} evaluate --dataset {args.scene} "
          f"--model {name} --split {args.split} --seed {args.seed} --json "
          f"--set 'features={json.dumps(FEATURES[feat])}' --set patch_size={size}")


if __name__ == "__main__":
    main()
