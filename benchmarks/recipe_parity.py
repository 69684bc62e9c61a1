"""What each difference between cropscope's training recipes and the official ones does.

The baseline is the official recipe (``official_recipe("h2crop")`` / ``("agrifm")``, which
``tests/engine/test_official_recipe.py`` checks against the official training checkpoints)
under the same short-run overrides (epochs, peak learning rate, warm-up length, CPU). Each
variant switches one of cropscope's own choices back on; the same seed is used, so a
variant differs from the baseline only by that choice. The official recipe with other
seeds gives the seed-to-seed spread that a difference has to exceed to matter.

- H2Crop (S2+H+P, ``tiny`` preset) on files generated in the H2Crop layout
  (``generate_h2crop``): ``mean`` (levels averaged instead of summed), ``no-decay-1d`` (norms
  and biases outside the weight decay), ``rotate-always`` (a k·90° rotation drawn for every
  sample instead of half of them), ``select-finest`` (best epoch on the finest level's
  macro-F1 instead of the four-level mFscore), ``warmup-1000`` (the official uncapped
  1000-iteration warm-up, against the capped one every other run uses);
- AgriFM (``tiny``) on the real WorldCereal S2 patch (``../shared/data``), tiles of 32 px:
  ``labelled`` (cross-entropy averaged over labelled pixels instead of all pixels),
  ``augment`` (flips and rotations, off in the official pipeline), ``no-decay-1d``; all
  its pixels are labelled, so ``labelled`` runs again with the labels of random 8 x 8
  blocks only (a field survey's parcels), where the two averages weigh tiles differently.

Printed per run: H2Crop's test macro-F1 (background included; mean over the four levels
and the finest level) or AgriFM's validation macro-F1 and mFscore, the best epoch, and
against the baseline's (seed 0) outputs: the share of pixels given the same class
(``agree``) and ``max|z - z0| / max|z0|`` of the finest logits (weights are not compared:
parameters whose true gradient is zero, such as attention key biases, drift with Adam's
normalised numerical noise, which any change of the loss scale reshuffles); then the
seconds of each run and the peak RSS. Torch runs on ``--threads`` threads (default 2): results
depend on the thread count. Never asserts.

    python benchmarks/recipe_parity.py                 # both, 2 threads
    python benchmarks/recipe_parity.py --only h2crop --epochs 10
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"

H2CROP_VARIANTS: dict[str, dict[str, Any]] = {
    "official": {},
    "mean": {"level_reduction": "mean"},
    "no-decay-1d": {"decay_all": False},
    "rotate-always": {"rotate_p": 1.0},
    "select-finest": {"monitor": "macro_f1", "select_on": "finest"},
}
AGRIFM_VARIANTS: dict[str, dict[str, Any]] = {
    "official": {},
    "labelled": {"loss_mean_over": "labelled"},
    "augment": {"augment": True},
    "no-decay-1d": {"decay_all": False},
}


def _outputs(model: Any, dataset: Any) -> Any:
    """The finest level's logits of ``model`` over ``dataset``, ``[N, K, H, W]``."""
    import torch

    model.eval()
    outs = []
    with torch.no_grad():
        for i in range(len(dataset)):
            inputs, _ = dataset[i]
            out = model({k: v[None] for k, v in inputs.items()})
            outs.append((out[-1] if isinstance(out, list | tuple) else out)[0])
    return torch.stack(outs)


def _compare(logits: Any, reference: Any) -> tuple[float, float]:
    """Share of pixels with the same predicted class, and ``max|z - z0| / max|z0|``."""
    agree = float((logits.argmax(1) == reference.argmax(1)).float().mean())
    rel = float((logits - reference).abs().max() / reference.abs().max())
    return agree, rel


def _row(name: str, seed: int, f1: float, fine: float, best: int,
         cmp: tuple[float, float] | None, seconds: float) -> None:
    agree, rel = ("-", "-") if cmp is None else (f"{cmp[0]:.4f}", f"{cmp[1]:.1e}")
    print(f"{name:<16} {seed:>4} {f1:>8.4f} {fine:>8.4f} {best:>5} {agree:>7} {rel:>9} "
          f"{seconds:>7.1f}", flush=True)


def _header(title: str, first: str, second: str) -> None:
    print(f"\n{title}\n{'variant':<16} {'seed':>4} {first:>8} {second:>8} {'best':>5} "
          f"{'agree':>7} {'logit_rel':>9} {'seconds':>7}", flush=True)


def h2crop(epochs: int, seeds: int, work: Path) -> None:
    from cropscope.data.readers.h2crop import H2CropDataset, generate_h2crop
    from cropscope.training.h2crop import load_h2crop_run, run_normalisation, train_h2crop

    data = generate_h2crop(work / "h2crop", 32, size=48, hyper_size=16, hyper_bands=32,
                           months=6, seed=0)
    # 16 training samples at batch 4: 4 iterations per epoch
    base = {"epochs": epochs, "lr": 1e-3, "warmup_iters": 8, "device": "cpu"}
    runs = [(name, 0, over) for name, over in H2CROP_VARIANTS.items()]
    runs += [("official", s, {}) for s in range(1, seeds)]
    runs.append(("warmup-1000", 0, {"warmup_iters": 1000}))
    _header(f"H2Crop S2+H+P tiny, generated data, {epochs} epochs x 4 iterations; test "
            "split: macro-F1 with background, mean over levels and finest level",
            "mean_F1", "fine_F1")
    reference = None
    for name, seed, over in runs:
        t0 = time.perf_counter()
        out = work / f"h2crop-{name}-{seed}"
        run = train_h2crop(data, "S2+H+P", months=6, out_dir=out, recipe="official",
                           training={**base, **over, "seed": seed}, normalise="train",
                           progress=False)
        seconds = time.perf_counter() - t0
        test = H2CropDataset(data, "test", months=6, with_hyper=True, with_priors=True,
                             normalise=run_normalisation(out))
        logits = _outputs(load_h2crop_run(out), test)
        if reference is None:
            reference = logits
        assert run.test is not None
        mean = run.test["mean"]["all"]["with_background"]["macro_f1"]
        fine = run.test["levels"][-1]["all"]["with_background"]["macro_f1"]
        _row(name, seed, mean, fine, run.best_epoch,
             None if logits is reference else _compare(logits, reference), seconds)


def agrifm(epochs: int, seeds: int, work: Path) -> None:
    from cropscope.training.segmentation_run import patch_datasets

    folder = SHARED / "worldcereal_s2s1_patch"
    if not folder.is_dir():
        print(f"\nAgriFM: {folder} not found, skipped")
        return
    import numpy as np
    from torch.utils.data import Subset

    data = patch_datasets(worldcereal=folder, sources=("S2",), tile_size=32)
    # the patch has no validation split: the last row of tiles validates (a spatial split)
    n = len(data.train)
    side = round(n ** 0.5)
    full = data.train
    data.train, data.val = Subset(full, range(n - side)), Subset(full, range(n - side, n))
    labelled = np.mean([float((np.asarray(full[i][1]) >= 0).mean()) for i in range(n)])
    print(f"\nWorldCereal: {n} tiles, {labelled:.1%} of the pixels labelled")
    _agrifm_runs(data, epochs, seeds, work, side, "dense labels", AGRIFM_VARIANTS)
    # a field survey labels a few parcels: keep the labels of random 8 x 8 blocks only,
    # 0-6 blocks per training tile (0-37 % of its pixels), so tiles weigh differently
    rng = np.random.default_rng(0)
    masks = []
    for _ in range(n):
        keep = np.zeros((32, 32), dtype=bool)
        for _ in range(int(rng.integers(0, 7))):
            r, c = rng.integers(0, 4, 2) * 8
            keep[r:r + 8, c:c + 8] = True
        masks.append(keep)
    data.train = _Masked(full, masks, range(n - side))
    share = np.mean([m.mean() for m in masks[:n - side]])
    sparse = {k: AGRIFM_VARIANTS[k] for k in ("official", "labelled")}
    _agrifm_runs(data, epochs, seeds, work, side,
                 f"sparse labels ({share:.0%} of the training pixels)", sparse)


class _Masked:
    """``dataset`` restricted to ``indices``, labels outside ``masks`` set to -1."""

    def __init__(self, dataset: Any, masks: list[Any], indices: range) -> None:
        self.dataset, self.masks, self.indices = dataset, masks, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        import torch

        j = self.indices[i]
        inputs, label = self.dataset[j]
        label = torch.as_tensor(label).clone()
        label[~torch.as_tensor(self.masks[j])] = -1
        return inputs, label


def _agrifm_runs(data: Any, epochs: int, seeds: int, work: Path, side: int,
                 what: str, variants: dict[str, dict[str, Any]]) -> None:
    from cropscope.engine.recipe import reference_fscore
    from cropscope.engine.segmentation import evaluate_segmentation
    from cropscope.training.segmentation_run import train_segmentation_run

    base = {"epochs": epochs, "lr": 1e-3, "warmup_iters": 8, "device": "cpu"}
    runs = [(name, 0, over) for name, over in variants.items()]
    runs += [("official", s, {}) for s in range(1, seeds)]
    _header(f"AgriFM tiny, real WorldCereal S2 patch, {what}, {len(data.train)} training "
            f"tiles of 32 px, {epochs} epochs; validation: the last row of {side} tiles: "
            "macro-F1, mFscore (percent)",
            "macro_F1", "mFscore")
    reference = None
    for name, seed, over in runs:
        t0 = time.perf_counter()
        res = train_segmentation_run(
            data.train, work / f"agrifm-{what[:6]}-{name}-{seed}", network="agrifm",
            network_kwargs={"sources": {"S2": len(data.bands["S2"])},
                            "num_classes": len(data.classes), "preset": "tiny"},
            classes=data.classes, bands=data.bands, time_grid=data.time_grid,
            val_dataset=data.val, normalisation=data.normalisation, recipe="official",
            config={**base, **over, "seed": seed})
        seconds = time.perf_counter() - t0
        scores = evaluate_segmentation(res.network, data.val, device="cpu")
        logits = _outputs(res.network, data.val)
        if reference is None:
            reference = logits
        _row(name, seed, scores["macro_f1"], reference_fscore(scores["confusion_matrix"]),
             res.result.best_epoch,
             None if logits is reference else _compare(logits, reference), seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=("h2crop", "agrifm"), default=None)
    parser.add_argument("--epochs", type=int, default=20, help="H2Crop epochs")
    parser.add_argument("--agrifm-epochs", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=3,
                        help="official-recipe runs with seeds 0..N-1 (the spread)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "h2crop"):
            h2crop(args.epochs, args.seeds, Path(tmp))
        if args.only in (None, "agrifm"):
            agrifm(args.agrifm_epochs, args.seeds, Path(tmp))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS {peak:.0f} MiB")


if __name__ == "__main__":
    main()
