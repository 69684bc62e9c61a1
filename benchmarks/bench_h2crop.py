"""H2Crop training-step throughput and peak memory for the four configurations.

A step is forward + the summed per-level cross-entropy + backward + AdamW update on random
inputs of the reference layout: S2 ``[B, T, 10, S, S]``, EnMAP ``[B, 218, S/3, S/3]``,
priors and labels ``[B, 4, S, S]`` over the 7/37/83/102 H2Crop classes. Each configuration
runs in its own child process: on CUDA with AMP (float16 autocast, as the reference, whose
AMP is always on) and peak memory from ``torch.cuda.max_memory_allocated``; on CPU in fp32
with the child's peak resident set size minus its size after building the model. The ratio
columns compare each configuration with ``S2`` (the baseline: what training on Sentinel-2
alone costs), so they show what the EnMAP stream and the priors add. Never asserts.

    python benchmarks/bench_h2crop.py                     # GPU: reference, batch 4, 192 px
    python benchmarks/bench_h2crop.py --preset tiny       # CPU figures for the tiny preset
    python benchmarks/bench_h2crop.py --preset tiny --size 96 --batch 2 --quick
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from _train_step import collect_row, peak_mib, rss_mib, time_steps

CONFIGS = ("S2", "S2+H", "S2+P", "S2+H+P")


def run_one(preset: str, config: str, months: int, size: int, batch: int, steps: int,
            device: str, threads: int, checkpoint: bool) -> dict[str, float | str]:
    """One configuration, in this process: time ``steps`` training steps after a warm-up."""
    import torch

    from cropscope.models.h2crop import H2CROP_LEVEL_SIZES, H2CropNet

    torch.set_num_threads(threads)
    dev = torch.device(device)
    torch.manual_seed(0)
    hyper = size // 3
    model = H2CropNet(H2CROP_LEVEL_SIZES, config, preset=preset, months=months,
                      hyper_size=hyper, use_checkpoint=checkpoint).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=6e-5, weight_decay=5e-4)
    amp = dev.type == "cuda"
    scaler = torch.amp.GradScaler(dev.type, enabled=amp)
    levels = torch.tensor(H2CROP_LEVEL_SIZES)
    x = {"S2": torch.randn(batch, months, 10, size, size, device=dev),
         "EnMAP": torch.randn(batch, 218, hyper, hyper, device=dev),
         "priors": (torch.rand(batch, 4, size, size) * levels[None, :, None, None]).long()
         .to(dev)}
    y = (torch.rand(batch, 4, size, size) * levels[None, :, None, None]).long().to(dev)
    base_rss = rss_mib()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=torch.float16, enabled=amp):
            out = model(x)
        loss = sum(torch.nn.functional.cross_entropy(o.float(), y[:, k])
                   for k, o in enumerate(out))
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    seconds = time_steps(step, steps, amp)
    peak = torch.cuda.max_memory_allocated() / 2**20 if amp else peak_mib() - base_rss
    params = sum(p.numel() for p in model.parameters())
    return {"preset": preset, "config": config, "T": months, "s_per_step": seconds,
            "samples_per_s": batch / seconds, "peak_mib": peak, "params_m": params / 1e6,
            "device": str(dev)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default=None, help="default: reference on CUDA, tiny on CPU")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS))
    parser.add_argument("--months", type=int, default=6)
    parser.add_argument("--size", type=int, default=192, help="S2 side; EnMAP is size / 3")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--checkpoint", action="store_true", help="gradient checkpointing")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--budget-s", type=float, default=300.0,
                        help="a configuration still running after this is skipped")
    parser.add_argument("--quick", action="store_true", help="one timed step")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one config (JSON)
    args = parser.parse_args(argv)

    if args.one:
        print(json.dumps(run_one(**json.loads(args.one))))
        return

    import torch

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    preset = args.preset or ("reference" if device == "cuda" else "tiny")
    steps = 1 if args.quick else args.steps
    if args.size % 3:
        parser.error("--size must be a multiple of 3 (1 EnMAP pixel = 3 x 3 S2 pixels)")
    print(f"H2Crop train step, preset {preset}, S2 [B={args.batch}, T={args.months}, 10, "
          f"{args.size}, {args.size}], EnMAP [B, 218, {args.size // 3}, {args.size // 3}], "
          f"{device}" + (" AMP" if device == "cuda" else f" fp32, {args.threads} threads"),
          file=sys.stderr)
    rows, skipped = [], []
    for config in args.configs:
        cfg = {"preset": preset, "config": config, "months": args.months, "size": args.size,
               "batch": args.batch, "steps": steps, "device": device,
               "threads": args.threads, "checkpoint": args.checkpoint}
        collect_row(__file__, cfg, args.budget_s, config, rows, skipped)
    mem = "peak MiB (CUDA)" if device == "cuda" else "peak dRSS MiB"
    base = next((r for r in rows if r["config"] == "S2"), None)
    print(f"{'config':<8}{'params M':>9}{'s/step':>9}{'samples/s':>11}{'x S2':>7}"
          f"{mem:>17}{'mem x S2':>10}")
    for r in rows:
        speed = r["samples_per_s"] / base["samples_per_s"] if base else float("nan")
        memx = r["peak_mib"] / base["peak_mib"] if base and base["peak_mib"] > 0 \
            else float("nan")
        print(f"{r['config']:<8}{r['params_m']:>9.2f}{r['s_per_step']:>9.2f}"
              f"{r['samples_per_s']:>11.3f}{speed:>7.2f}{r['peak_mib']:>17.0f}{memx:>10.2f}")
    print(f"(baseline: the S2 configuration; preset {preset}, batch {args.batch}, "
          f"T={args.months}, {steps} timed step(s); finished {time.strftime('%H:%M:%S')})")
    for s in skipped:
        print(f"skipped: {s}")


if __name__ == "__main__":
    main()
