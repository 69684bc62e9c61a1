"""AgriFM training-step throughput and peak memory, with and without gradient checkpointing.

Each configuration (preset x time steps x checkpointing) runs in its own child process, so
peak memory is that configuration's alone: on CUDA ``torch.cuda.max_memory_allocated``
(AMP, float16 autocast), on CPU the child's peak resident set size (``ru_maxrss``) minus its
resident size after building the model. A step is forward + cross-entropy + backward +
AdamW update on a random S2 batch ``[B, T, 10, H, W]``. The ratio column compares
checkpointing with no checkpointing for the same preset and T (the baseline). Never asserts.

    python benchmarks/bench_agrifm.py --quick
    python benchmarks/bench_agrifm.py --presets tiny base --frames 12 32 --size 256 --batch 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from _train_step import collect_row, peak_mib, rss_mib, time_steps


def run_one(preset: str, frames: int, size: int, batch: int, ckpt: bool, steps: int,
            device: str, threads: int) -> dict[str, float | str]:
    """One configuration, in this process: time ``steps`` training steps after a warm-up."""
    import torch

    from cropscope.models.agrifm import AgriFM

    torch.set_num_threads(threads)
    dev = torch.device(device)
    torch.manual_seed(0)
    model = AgriFM({"S2": 10}, 2, preset, use_checkpoint=ckpt).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    amp = dev.type == "cuda"
    scaler = torch.amp.GradScaler(dev.type, enabled=amp)
    x = {"S2": torch.randn(batch, frames, 10, size, size, device=dev)}
    y = torch.randint(0, 2, (batch, size, size), device=dev)
    base_rss = rss_mib()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=torch.float16, enabled=amp):
            out = model(x)
        loss = torch.nn.functional.cross_entropy(out.float(), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    seconds = time_steps(step, steps, amp)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if amp
            else peak_mib() - base_rss)
    params = sum(p.numel() for p in model.parameters())
    return {"preset": preset, "T": frames, "ckpt": "yes" if ckpt else "no",
            "s_per_step": seconds, "samples_per_s": batch / seconds, "peak_mib": peak,
            "params_m": params / 1e6, "device": str(dev)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "base"])
    parser.add_argument("--frames", nargs="+", type=int, default=[12, 32])
    parser.add_argument("--size", type=int, default=None, help="default 256 (128 with --quick)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--cpu-budget-s", type=float, default=150.0,
                        help="CPU: a configuration still running after this is skipped")
    parser.add_argument("--quick", action="store_true",
                        help="tiny only (base too on a GPU), 128 x 128 unless --size")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one config (JSON)
    args = parser.parse_args(argv)

    if args.one:
        cfg = json.loads(args.one)
        print(json.dumps(run_one(**cfg)))
        return

    import torch

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    presets, steps = args.presets, args.steps
    if args.quick:
        presets = [p for p in presets if p == "tiny" or device == "cuda"]
    args.size = args.size or (128 if args.quick else 256)
    print(f"AgriFM train step, S2 [B={args.batch}, T, 10, {args.size}, {args.size}], "
          f"{device}" + ("" if device == "cuda" else f", {args.threads} threads"),
          file=sys.stderr)
    rows, skipped = [], []
    for preset in presets:
        for frames in args.frames:
            for ckpt in (False, True):
                cfg = {"preset": preset, "frames": frames, "size": args.size,
                       "batch": args.batch, "ckpt": ckpt, "steps": steps, "device": device,
                       "threads": args.threads}
                timeout = None if device == "cuda" else args.cpu_budget_s
                collect_row(__file__, cfg, timeout, f"{preset} T={frames} ckpt={ckpt}", rows,
                            skipped)
    mem = "peak MiB (CUDA)" if device == "cuda" else "peak dRSS MiB"
    print(f"{'preset':<7}{'params M':>9}{'T':>4}{'ckpt':>6}{'s/step':>9}{'samples/s':>11}"
          f"{'x no-ckpt':>11}{mem:>17}{'mem x':>7}")
    for r in rows:
        base = next((b for b in rows if b["preset"] == r["preset"] and b["T"] == r["T"]
                     and b["ckpt"] == "no"), None)
        speed = r["samples_per_s"] / base["samples_per_s"] if base else float("nan")
        memx = r["peak_mib"] / base["peak_mib"] if base and base["peak_mib"] > 0 \
            else float("nan")
        print(f"{r['preset']:<7}{r['params_m']:>9.2f}{r['T']:>4}{r['ckpt']:>6}"
              f"{r['s_per_step']:>9.2f}{r['samples_per_s']:>11.3f}{speed:>11.2f}"
              f"{r['peak_mib']:>17.0f}{memx:>7.2f}")
    print(f"(baseline: the same preset and T without checkpointing; batch {args.batch}, "
          f"{args.size}x{args.size}, {steps} timed step(s); finished "
          f"{time.strftime('%H:%M:%S')})")
    for s in skipped:
        print(f"skipped: {s}")


if __name__ == "__main__":
    main()
