"""CPU training throughput of the Lightning engine against a plain-torch loop.

For TempCNN (``train_classifier``: in-memory arrays, Adam, class-balanced cross-entropy,
validation macro-F1 every epoch, best epoch kept) and a tiny AgriFM (``train_segmentation``:
patch dataset, AdamW + warm-up/cosine per step, flips/rotations, validation every epoch),
each engine run is timed against a loop written here in plain torch that does the same work:
same network, data, epochs, batch size, augmentation and validation. Every run happens in
its own child process (``torch.set_num_threads`` explicit), after one warm-up call of the
same function in that process, so imports and first-call costs are not timed; Lightning's
Trainer construction and set-up in each call are. Reported: samples/s (training samples x
epochs / wall seconds of the whole call, validation included), the child's peak RSS, and the
ratio engine/plain (target >= 0.9). Runs alternate and the best of ``--repeats`` counts (the
machine may be shared). Never asserts.

    python benchmarks/bench_engine.py                # both models, 3 repeats, 1 thread
    python benchmarks/bench_engine.py --quick        # smaller data, 1 repeat
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from _train_step import peak_mib, run_in_child

# ------------------------------------------------------------------------------ data


def _series(n: int, n_times: int, n_bands: int, seed: int = 0) -> tuple[Any, Any]:
    """Separable 4-class series, already in TempCNN's layout ``[N, C, T]``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y = np.arange(n) % 4
    t = np.arange(n_times)
    peaks = (y[:, None] + 1) * n_times / 5
    curve = np.exp(-0.5 * ((t[None] - peaks) / 2.0) ** 2)
    x = curve[:, None, :] * (1 + np.arange(n_bands))[None, :, None] * 0.1
    x = x + rng.normal(0, 0.05, x.shape)
    return x.astype(np.float32), y


def _patches(n: int, frames: int, size: int, seed: int = 0) -> list[Any]:
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        s2 = rng.normal(0, 1, (frames, 10, size, size)).astype(np.float32)
        label = np.digitize(s2[:, 0].mean(0), [-0.3, 0.0, 0.3]).astype(np.int64)
        out.append(({"S2": s2}, label))
    return out


# ------------------------------------------------------------------------------ TempCNN


def _tempcnn(n_bands: int, n_times: int) -> Any:
    from cropscope.models.tempcnn import TempCNNModule

    return TempCNNModule(n_bands=n_bands, n_times=n_times, n_classes=4)


def plain_classifier(module: Any, x: Any, y: Any, xv: Any, yv: Any, epochs: int,
                     batch_size: int, seed: int) -> None:
    """The same work as ``train_classifier`` in a plain loop."""
    import math

    import numpy as np
    import torch
    from sklearn.metrics import f1_score

    from cropscope.engine.recipe import balanced_class_weights, index_batches

    torch.manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(np.asarray(y, np.int64))
    xvt = torch.from_numpy(xv)
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.as_tensor(
        balanced_class_weights(y, 4), dtype=torch.float32), ignore_index=-1)
    opt = torch.optim.Adam(module.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    best, best_state = -math.inf, None
    for _ in range(epochs):
        module.train()
        total = torch.zeros((), dtype=torch.float64)
        for idx in index_batches(torch.randperm(len(xt), generator=gen), batch_size):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(module(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            total += loss.detach().double() * len(idx)
        module.eval()
        with torch.inference_mode():
            pred = torch.cat([module(xvt[i:i + 1024]).argmax(1)
                              for i in range(0, len(xvt), 1024)]).numpy()
        f1 = f1_score(yv, pred, average="macro", zero_division=0)
        if f1 > best:
            best = f1
            best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    assert best_state is not None
    module.load_state_dict(best_state)


def run_tempcnn(engine: bool, n: int, n_times: int, epochs: int, batch: int,
                threads: int) -> dict[str, Any]:
    import torch

    from cropscope.engine.trainer import train_classifier

    torch.set_num_threads(threads)
    x, y = _series(n, n_times, 10)
    xv, yv = _series(max(n // 5, 8), n_times, 10, seed=1)

    def call(n_epochs: int) -> None:
        torch.manual_seed(0)
        module = _tempcnn(10, n_times)
        if engine:
            train_classifier(module, x, y, xv, yv, 4, epochs=n_epochs, batch_size=batch,
                             lr=1e-3, weight_decay=0.0, seed=0, device="cpu")
        else:
            plain_classifier(module, x, y, xv, yv, n_epochs, batch, 0)

    call(1)  # warm-up: imports, allocator, first Trainer
    t0 = time.perf_counter()
    call(epochs)
    seconds = time.perf_counter() - t0
    return {"model": "tempcnn", "engine": engine, "seconds": seconds,
            "samples_per_s": n * epochs / seconds, "peak_mib": peak_mib()}


# ------------------------------------------------------------------------------ AgriFM


def _agrifm() -> Any:
    from cropscope.models.agrifm import AgriFM

    return AgriFM({"S2": 10}, 4, preset=None, embed_dim=16, depths=(1, 1, 1, 1),
                  num_heads=(1, 2, 4, 8), decoder_dim=32)


def plain_segmentation(model: Any, train: Any, val: Any, epochs: int, batch_size: int,
                       seed: int) -> None:
    """The same work as ``train_segmentation`` (CPU, no checkpoints) in a plain loop."""
    import math

    import torch
    import torch.nn.functional as F

    from cropscope.engine.recipe import augment_batch, lr_factor

    decay = [p for n_, p in model.named_parameters() if p.ndim > 1 and not n_.endswith(".bias")]
    no_decay = [p for n_, p in model.named_parameters() if p.ndim <= 1 or n_.endswith(".bias")]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 5e-4},
                             {"params": no_decay, "weight_decay": 0.0}], lr=1e-3)
    steps = math.ceil(len(train) / batch_size) - int(len(train) % batch_size == 1)
    total = epochs * steps
    warm = min(10, total // 5)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: lr_factor(it, total, warm, 0.01,
                                                                        1e-3))
    for epoch in range(1, epochs + 1):
        torch.manual_seed(seed + epoch)
        aug = torch.Generator().manual_seed(seed + epoch)
        loader = torch.utils.data.DataLoader(
            train, batch_size=batch_size, shuffle=True,
            generator=torch.Generator().manual_seed(seed + epoch),
            drop_last=len(train) % batch_size == 1)
        model.train()
        loss_sum = torch.zeros((), dtype=torch.float64)
        for inputs, labels in loader:
            inputs, labels = augment_batch(inputs, labels, aug)
            opt.zero_grad(set_to_none=True)
            out = model(inputs)
            loss = F.cross_entropy(out.float(), labels, ignore_index=-1)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.detach().double() * len(labels)
        model.eval()
        cm = torch.zeros(16, dtype=torch.int64)
        with torch.no_grad():
            for inputs, labels in torch.utils.data.DataLoader(val, batch_size=batch_size):
                pred = model(inputs).argmax(1)
                keep = labels >= 0
                cm += torch.bincount(labels[keep] * 4 + pred[keep], minlength=16)


def run_agrifm(engine: bool, n: int, frames: int, size: int, epochs: int, batch: int,
               threads: int) -> dict[str, Any]:
    import torch

    from cropscope.data.readers.h5patches import ArrayPatchDataset
    from cropscope.engine.segmentation import train_segmentation

    torch.set_num_threads(threads)
    train = ArrayPatchDataset(_patches(n, frames, size))
    val = ArrayPatchDataset(_patches(max(n // 4, 2), frames, size, seed=1))

    def call(n_epochs: int) -> None:
        torch.manual_seed(0)
        model = _agrifm()
        if engine:
            train_segmentation(model, train, val, progress=False, config={
                "epochs": n_epochs, "batch_size": batch, "lr": 1e-3, "warmup_iters": 10,
                "device": "cpu", "seed": 0})
        else:
            plain_segmentation(model, train, val, n_epochs, batch, 0)

    call(1)
    t0 = time.perf_counter()
    call(epochs)
    seconds = time.perf_counter() - t0
    return {"model": "agrifm-tiny", "engine": engine, "seconds": seconds,
            "samples_per_s": n * epochs / seconds, "peak_mib": peak_mib()}


# ------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=["tempcnn", "agrifm"])
    parser.add_argument("--quick", action="store_true", help="smaller data, one repeat")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one config (JSON)
    args = parser.parse_args(argv)

    if args.one:
        cfg = json.loads(args.one)
        kind = cfg.pop("kind")
        row = run_tempcnn(**cfg) if kind == "tempcnn" else run_agrifm(**cfg)
        print(json.dumps(row))
        return

    repeats = 1 if args.quick else args.repeats
    configs = {
        "tempcnn": {"kind": "tempcnn", "n": 1000 if args.quick else 4000, "n_times": 24,
                    "epochs": 3 if args.quick else 5, "batch": 128},
        "agrifm": {"kind": "agrifm", "n": 16 if args.quick else 48, "frames": 6, "size": 32,
                   "epochs": 2 if args.quick else 3, "batch": 4},
    }
    best: dict[tuple[str, bool], dict[str, Any]] = {}
    for name in args.models:
        cfg = configs[name]
        for r in range(repeats):
            for engine in (False, True):
                row, why = run_in_child(__file__, {**cfg, "engine": engine,
                                                   "threads": args.threads}, None)
                label = f"{name} {'engine' if engine else 'plain'} #{r + 1}"
                if row is None:
                    print(f"failed {label}: {why}", file=sys.stderr)
                    continue
                print(f"{label}: {row['samples_per_s']:.1f} samples/s", file=sys.stderr)
                key = (row["model"], engine)
                if key not in best or row["samples_per_s"] > best[key]["samples_per_s"]:
                    best[key] = row
    print(f"CPU training throughput, {args.threads} thread(s), best of {repeats}")
    print(f"{'model':<13}{'plain samples/s':>16}{'engine samples/s':>17}{'ratio':>7}"
          f"{'plain MiB':>11}{'engine MiB':>11}")
    for model in ("tempcnn", "agrifm-tiny"):
        old, new = best.get((model, False)), best.get((model, True))
        if old is None or new is None:
            continue
        ratio = new["samples_per_s"] / old["samples_per_s"]
        print(f"{model:<13}{old['samples_per_s']:>16.1f}{new['samples_per_s']:>17.1f}"
              f"{ratio:>7.2f}{old['peak_mib']:>11.0f}{new['peak_mib']:>11.0f}")
    print("(ratio = engine / plain; target >= 0.9. Peak RSS of each child process, the "
          "engine's includes Lightning's import.)")


if __name__ == "__main__":
    main()
