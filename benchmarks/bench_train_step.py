"""Time per training step of a deep series model: the engine against a plain torch loop, on
any device, across batch sizes and precisions.

For a GPU the question is what bounds a step: arithmetic (then larger batches cost more per
step and bf16 helps) or the fixed cost of launching a few hundred small kernels (then the
time per step stays flat whatever the batch and the precision, and only fewer, larger steps
help). On UCR Crop TRAIN (``--n`` series, a seeded random subset, 46 steps, 1 band;
synthetic series of the same shape when the data folder is absent) this prints, per
configuration, milliseconds per step and seconds per epoch:

- ``engine MODEL``: ``create_model(MODEL, epochs=E, batch_size=B[, n_models=1]).fit`` (the
  Lightning engine: data module, task, Trainer set-up included), one untimed warm-up call;
- ``plain``: the same network class in a loop written here (Adam, cross-entropy, shuffled
  batches already on the device), with ``torch.backends.cudnn.benchmark`` off and on, fp32
  and bf16 autocast, for each ``--batch`` size; the second of two epochs-sets is timed.

Never asserts; prints the device, torch version and thread count.

    python benchmarks/bench_train_step.py --device cuda --batch 64 256
    python benchmarks/bench_train_step.py --device cpu --n 640 --epochs 1 --threads 2
"""

from __future__ import annotations

import argparse
import time
from typing import Any


def _data(n: int) -> tuple[Any, Any, Any]:
    """``(TimeSeriesSet | None, x [n, 1, 46] float32, y [n] int64)``."""
    import numpy as np

    from cropscope.settings import data_dir

    path = data_dir() / "ucr_crop" / "Crop_TRAIN.tsv"
    if path.is_file():
        from cropscope.data.readers.ucr import read_ucr_crop

        full = read_ucr_crop(path)
        pick = np.sort(np.random.default_rng(0).permutation(full.n_samples)[:n])
        ts = full.subset(pick)
        x = np.nan_to_num(np.asarray(ts.values, dtype=np.float32)).transpose(0, 2, 1)
        return ts, np.ascontiguousarray(x), np.asarray(ts.labels, dtype=np.int64)
    print(f"({path} not found: synthetic series of the same shape; no engine rows)")
    rng = np.random.default_rng(0)
    y = np.arange(n) % 24
    x = np.sin(np.arange(46)[None, None, :] / (2 + y[:, None, None] / 4)) + rng.normal(
        0, 0.1, (n, 1, 46))
    return None, x.astype(np.float32), y.astype(np.int64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:n]")
    parser.add_argument("--models", nargs="+", default=["inceptiontime", "tempcnn"])
    parser.add_argument("--n", type=int, default=5760,
                        help="training series (a seeded random subset)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from cropscope.threads import set_threads

    threads = set_threads(args.threads)
    import torch

    from cropscope.models import create_model
    from cropscope.models.inceptiontime import InceptionTimeModule

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = device.startswith("cuda")

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    ts, x_np, y_np = _data(args.n)
    name = torch.cuda.get_device_name(device) if cuda else "CPU"
    print(f"device {device} ({name}), torch {torch.__version__}, {threads} threads, "
          f"{args.n} series x {x_np.shape[2]} steps, {args.epochs} epochs per timing")
    print(f"{'configuration':<58}{'ms/step':>9}{'s/epoch':>9}")
    steps_per_epoch = {b: -(-args.n // b) for b in args.batch}

    if ts is not None:
        for model in args.models:
            batch = args.batch[0]
            extra = {"n_models": 1} if model == "inceptiontime" else {}

            def fit(model: str = model, batch: int = batch, extra: dict = extra) -> float:
                m = create_model(model, epochs=args.epochs, batch_size=batch, device=device,
                                 **extra)
                sync()
                t0 = time.perf_counter()
                m.fit(ts)
                sync()
                return time.perf_counter() - t0

            fit()  # warm-up: imports, cuDNN handles, first-call costs
            dt = fit()
            steps = args.epochs * steps_per_epoch[batch]
            print(f"{f'engine {model}, batch {batch}':<58}{1000 * dt / steps:>9.1f}"
                  f"{dt / args.epochs:>9.2f}")

    x = torch.from_numpy(x_np).to(device)
    y = torch.from_numpy(y_np).to(device)
    n_classes = int(y_np.max()) + 1
    for batch in args.batch:
        for bench in (False, True):
            for bf16 in (False, True):
                if bf16 and not cuda:
                    continue
                torch.backends.cudnn.benchmark = bench
                torch.manual_seed(0)
                net = InceptionTimeModule(n_bands=x.shape[1], n_classes=n_classes).to(device)
                opt = torch.optim.Adam(net.parameters(), 1e-3)
                for _ in range(2):  # the first pass warms up (cuDNN's search with benchmark)
                    sync()
                    t0 = time.perf_counter()
                    n_steps = 0
                    for _ in range(args.epochs):
                        order = torch.randperm(len(x), device=device)
                        for i in range(0, len(x), batch):
                            b = order[i:i + batch]
                            opt.zero_grad(set_to_none=True)
                            with torch.autocast(device.split(":")[0], dtype=torch.bfloat16,
                                                enabled=bf16):
                                loss = torch.nn.functional.cross_entropy(net(x[b]), y[b])
                            loss.backward()
                            opt.step()
                            n_steps += 1
                    sync()
                    dt = time.perf_counter() - t0
                precision = "bf16" if bf16 else "fp32"
                label = (f"plain inceptiontime, batch {batch}, {precision}, "
                         f"cudnn.benchmark {'on' if bench else 'off'}")
                print(f"{label:<58}{1000 * dt / n_steps:>9.1f}{dt / args.epochs:>9.2f}")
    torch.backends.cudnn.benchmark = False


if __name__ == "__main__":
    main()
