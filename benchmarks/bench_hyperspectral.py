"""Training / inference throughput of the hyperspectral models against the random forest.

Runs :func:`cropscope.hyperspectral.scene.evaluate_scene` on a registered scene for each
model, then times inference on the test samples again, and prints pixels per second with the
ratio to the baseline and the process's peak resident memory. Never asserts timings.

    python benchmarks/bench_hyperspectral.py --scene indian-pines-window --split blocks:16 \
        --threads 2 --models rf spectral-cnn spectral-transformer
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", default="indian-pines-window")
    parser.add_argument("--split", default=None, help="default: the scene's default split")
    parser.add_argument("--models", nargs="+",
                        default=["rf", "lightgbm", "spectral-cnn", "spectral-transformer"])
    parser.add_argument("--baseline", default="rf")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", dest="settings", action="append", default=[],
                        metavar="MODEL:KEY=JSON", help="e.g. spectral-transformer:epochs=10")
    args = parser.parse_args(argv)

    import torch

    from cropscope.hyperspectral.datasets import load_scene_dataset
    from cropscope.hyperspectral.scene import evaluate_scene

    torch.set_num_threads(args.threads)
    configs: dict[str, dict] = {m: {} for m in args.models}
    for item in args.settings:
        model, _, kv = item.partition(":")
        key, _, raw = kv.partition("=")
        configs.setdefault(model, {})[key] = json.loads(raw)
    for m in args.models:
        if m in ("rf", "lightgbm"):
            configs[m].setdefault("n_jobs", args.threads)

    scene = load_scene_dataset(args.scene)
    print(f"{scene}; split {args.split or scene.default_split()}; {args.threads} threads",
          file=sys.stderr)
    rows = []
    for m in args.models:
        res = evaluate_scene(m, scene, args.split, seed=args.seed, config=configs[m])
        info = res.config
        # duration_s = sample extraction + fit + prediction of the test pixels
        predict_s = max(res.duration_s - info["fit_s"], 1e-9)
        rows.append({
            "model": m, "oa": res.metrics["overall_accuracy"],
            "aa": res.metrics["average_accuracy"], "macro_f1": res.metrics["macro_f1"],
            "n_train": info["n_train"], "n_test": info["n_test"],
            "fit_s": res.config["fit_s"],
            "train_px_per_s": info["n_train"] / max(res.config["fit_s"], 1e-9),
            "test_px_per_s": info["n_test"] / predict_s,
            "peak_mib": _peak_mib(),
        })
    base = next((r for r in rows if r["model"] == args.baseline), rows[0])
    print(f"{'model':<22}{'OA':>7}{'AA':>7}{'F1':>7}{'n_train':>8}{'fit s':>8}"
          f"{'train px/s':>12}{'x base':>8}{'test px/s':>11}{'x base':>8}{'peak MiB':>10}")
    for r in rows:
        tr = r["train_px_per_s"] / base["train_px_per_s"]
        te = r["test_px_per_s"] / base["test_px_per_s"]
        print(f"{r['model']:<22}{r['oa']:>7.4f}{r['aa']:>7.4f}{r['macro_f1']:>7.4f}"
              f"{r['n_train']:>8d}{r['fit_s']:>8.1f}{r['train_px_per_s']:>12.1f}{tr:>8.2f}"
              f"{r['test_px_per_s']:>11.1f}{te:>8.2f}{r['peak_mib']:>10.0f}")
    print(f"(baseline {base['model']}; peak memory: process maximum after that model; "
          f"finished {time.strftime('%H:%M:%S')})")


if __name__ == "__main__":
    main()
