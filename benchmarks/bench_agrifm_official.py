"""AgriFM backbone speed and memory: the current windowed attention against the previous
cropscope implementation (cropscope issue 22, item 5), optionally against the official code.

The model is the AgriFM backbone of the issue: ``Swin3D(10, "tiny")`` with the S2 stem
(4, 2, 2), window (8, 7, 7), drop-path 0.2: 27,856,422 parameters. Variants, all with the
same weights and inputs ``[B, T, 10, H, W]``:

- ``new``: the library as it is (4-D ``scaled_dot_product_attention`` calls, masks chunked);
- ``previous``: the same modules with the previous attention restored (defined below, in
  this file only: 5-D ``[B, nW, heads, N, d]`` calls, which take SDPA's unfused path; the
  -100 shift mask, whose ~e^-100 weights are float32 denormals; ``torch.roll`` and
  rearrange copies around the windows; the bias gathered by advanced indexing). It stands in
  for the official code, which the issue measured at 1.13x (inference) / 1.06x (training)
  the official time;
- ``bf16``: ``new`` under ``inference_precision("bfloat16")`` (inference only; only where
  :func:`cropscope.models.swin3d.bf16_supported` says yes);
- ``official`` (``--official PATH``, optional): ``SwinTransformer3D`` of a user-supplied
  checkout of github.com/flyakon/AgriFM, imported at run time (nothing of it is copied
  here; its mmseg/mmengine/timm imports are served by small stand-ins: only torch and
  einops are needed), fed the stem output, with the same weights.

Timing: every variant in one process, interleaved (the order alternates per repeat), a
warm-up call each, then ``--repeats`` calls each; printed: the median process CPU time
(robust to other processes competing for the cores; with 1 thread it is the compute time)
with its ratios to ``previous`` and ``official``, and the median and best wall-time ratios
to ``previous``. Inference is ``model(x)`` in eval mode under ``torch.no_grad()``; a training
step is forward + mean-square loss of the four stage outputs + backward + AdamW step (train
mode, drop-path seeded identically for every variant). Memory: each (variant, mode) runs
once more in its own child process, above the resident size with the model and input
(and optimizer) built: ``first``, the peak resident size (VmHWM) over the first call,
which also holds one-time costs (cached window indices, library code pages touched for the
first time, the allocator's arenas); ``steady``, the same over a later call (the peak reset
through ``/proc/self/clear_refs``); ``tensor``, the peak of the bytes held by live tensors
over one more call (profiler allocation events: independent of the allocator), whose
ratios are printed. Outputs are
compared with ``previous`` (max relative error; ``official`` with cropscope's
``compat="official"`` conventions, since the default ones pad odd sizes differently).
Threads: ``torch.set_num_threads(--threads)`` in every process. Never asserts.

    python benchmarks/bench_agrifm_official.py                       # both default inputs
    python benchmarks/bench_agrifm_official.py --inputs 1x8x112x112 --repeats 7
    python benchmarks/bench_agrifm_official.py --official ~/src/AgriFM
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
import types
from pathlib import Path
from typing import Any

from _train_step import peak_mib, rss_mib, run_in_child

PARAMS = 27_856_422
DEFAULT_INPUTS = ("1x8x112x112", "1x32x128x128")
#: the memory figures of a child run (:func:`run_memory`)
MEMORY = ("first", "steady", "tensor")


# --- the previous implementation (cropscope before issue 22), for the baseline only -------


def _previous_position_bias(self: Any, window: tuple[int, int, int]) -> Any:
    from einops import rearrange

    from cropscope.models.swin3d import relative_position_index

    if window == self.window_size:
        index = self.relative_position_index
    elif self.official:
        n = window[0] * window[1] * window[2]
        index = self.relative_position_index[:n, :n]
    else:
        index = relative_position_index(window, self.window_size).to(
            self.relative_position_bias_table.device)
    return rearrange(self.relative_position_bias_table[index], "n m h -> h n m")


def _previous_attention_forward(self: Any, windows: Any, window: Any, mask: Any = None) -> Any:
    import torch.nn.functional as F
    from einops import rearrange

    q, k, v = rearrange(self.qkv(windows), "b w n (three h d) -> three b w h n d", three=3,
                        h=self.num_heads)
    bias = self.position_bias(window).to(q.dtype)
    if mask is not None:
        bias = bias[None] + mask[:, None].to(q.dtype)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    return self.proj(rearrange(out, "b w h n d -> b w n (h d)"))


@functools.lru_cache(maxsize=64)
def _previous_mask(padded: Any, window: Any, shift: Any) -> Any:
    """The previous shift mask: -100 (Swin's value) between regions, float32 on the CPU."""
    from cropscope.models.swin3d import shift_window_mask

    return shift_window_mask(padded, window, shift).clamp(min=-100.0)


def _previous_block_attention(self: Any, x: Any) -> Any:
    import torch
    import torch.nn.functional as F
    from einops import rearrange

    from cropscope.models.swin3d import effective_window

    _, d, h, w, _ = x.shape
    window, shift = effective_window((d, h, w), self.window_size, self.shift_size)
    pads = [-n % wn for n, wn in zip((d, h, w), window, strict=True)]
    x = F.pad(x, (0, 0, 0, pads[2], 0, pads[1], 0, pads[0]))
    padded = (d + pads[0], h + pads[1], w + pads[2])
    mask = None
    if any(shift):
        x = torch.roll(x, shifts=tuple(-s for s in shift), dims=(1, 2, 3))
        mask = _previous_mask(padded, window, shift).to(x.device)
    pattern = "b (nd wd) (nh wh) (nw ww) c"
    windows = rearrange(x, f"{pattern} -> b (nd nh nw) (wd wh ww) c",
                        wd=window[0], wh=window[1], ww=window[2])
    out = self.attn(windows, window, mask)
    out = rearrange(out, f"b (nd nh nw) (wd wh ww) c -> {pattern}",
                    nd=padded[0] // window[0], nh=padded[1] // window[1],
                    wd=window[0], wh=window[1], ww=window[2])
    if any(shift):
        out = torch.roll(out, shifts=shift, dims=(1, 2, 3))
    return out[:, :d, :h, :w]


def use_previous(model: Any) -> Any:
    """Switch every window attention and block of ``model`` to the previous implementation
    (instance attributes: the class, and so every other model, is left alone)."""
    from cropscope.models.swin3d import SwinBlock3D, WindowAttention3D

    for sub in model.modules():
        if isinstance(sub, WindowAttention3D):
            sub.position_bias = types.MethodType(_previous_position_bias, sub)
            sub.forward = types.MethodType(_previous_attention_forward, sub)
        elif isinstance(sub, SwinBlock3D):
            sub.attention = types.MethodType(_previous_block_attention, sub)
    return model


# --- the official backbone from a user checkout (optional) --------------------------------


def _stand_ins() -> None:
    """Minimal modules for the official file's imports that are not torch or einops."""
    import torch
    from torch import nn

    class _Registry:
        def register_module(self, *args: Any, **kwargs: Any) -> Any:
            if args and isinstance(args[0], type):
                return args[0]
            return lambda cls: cls

    class DropPath(nn.Module):
        def __init__(self, p: float = 0.0) -> None:
            super().__init__()
            self.p = p

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if not self.training or self.p == 0.0:
                return x
            keep = 1.0 - self.p
            mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
            return x * mask / keep

    class BaseModule(nn.Module):
        def __init__(self, *args: Any, init_cfg: Any = None, **kwargs: Any) -> None:
            super().__init__()

    reg = _Registry()
    modules = {
        "timm": {}, "timm.models": {},
        "timm.models.layers": {"DropPath": DropPath, "trunc_normal_": nn.init.trunc_normal_,
                               "to_2tuple": lambda v: (v, v), "to_3tuple": lambda v: (v,) * 3},
        "mmseg": {}, "mmseg.models": {},
        "mmseg.models.builder": {"BACKBONES": reg, "MODELS": reg, "NECKS": reg, "HEADS": reg},
        "mmseg.registry": {"MODELS": reg, "TRANSFORMS": reg},
        "mmseg.registry.registry": {"MODELS": reg, "TRANSFORMS": reg},
        "mmengine": {}, "mmengine.model": {"BaseModule": BaseModule, "BaseModel": BaseModule},
        "mmengine.runner": {"load_checkpoint": lambda *a, **k: None},
        "mmengine.logging": {"print_log": print},
    }
    for name, attrs in modules.items():
        if name in sys.modules:
            continue
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        module.__path__ = []  # a package, for submodules
        sys.modules[name] = module


def official_model(checkout: str, model: Any) -> Any:
    """The official ``SwinTransformer3D`` body in the configuration of ``model`` (a
    cropscope ``Swin3D``) with its weights, behind cropscope's stem (the official stem is
    the same Conv3d): ``forward(x [B, T, C, H, W])`` → ``[encoder_features,
    *features_list]`` (the official outputs, time flattened into channels)."""
    import importlib.util

    from einops import rearrange
    from torch import nn

    path = Path(checkout).expanduser() / "AgriFM" / "models" / "video_swin_transformer.py"
    if not path.is_file():
        raise SystemExit(f"--official: no {path}")
    _stand_ins()
    spec = importlib.util.spec_from_file_location("_official_video_swin", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    body = module.SwinTransformer3D(
        pretrained=None, patch_size=model.patch_size, embed_dim=model.dims[0],
        depths=list(model.depths), num_heads=list(model.num_heads),
        window_size=model.window_size, drop_path_rate=0.2, patch_norm=False,
        out_indices=(0, 1, 2, 3), downsample_steps=((2, 2, 2),) * 4, feature_fusion="cat",
        mean_frame_down=True)
    own = model.state_dict()
    state = {}
    for key, value in body.state_dict().items():
        ours = key.replace("layers.", "stages.", 1)
        if ".downsample." in ours:
            i, rest = ours.split(".downsample.")
            ours = f"merges.{i.split('.')[1]}.{rest}"
        state[key] = own[ours] if ours in own else value  # buffers: the official ones
    body.load_state_dict(state)

    class Official(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.body = model.patch_embed, body

        def forward(self, x: Any) -> list[Any]:
            out = self.body(self.stem(rearrange(x, "b t c h w -> b c t h w")))
            return [out["encoder_features"], *out["features_list"]]

    return Official()


# --- one configuration ---------------------------------------------------------------------


def _build(shape: tuple[int, ...], seed: int = 0) -> tuple[Any, Any]:
    import torch

    from cropscope.models.swin3d import Swin3D

    torch.manual_seed(seed)
    model = Swin3D(10, "tiny", patch_size=(4, 2, 2), window_size=(8, 7, 7),
                   drop_path_rate=0.2)
    x = torch.randn(*shape)
    return model, x


def _make(variant: str, base: Any, official: str | None) -> Any:
    import copy

    model = copy.deepcopy(base)
    if variant == "previous":
        use_previous(model)
    elif variant == "official":
        assert official is not None
        return official_model(official, model)
    return model


def _inference(variant: str, model: Any, x: Any) -> Any:
    import torch

    from cropscope.models.swin3d import inference_precision

    model.eval()
    with torch.no_grad():
        if variant == "bf16":
            with inference_precision("bfloat16", x.device):
                return [o.float() for o in model(x)]
        return model(x)


def _train_step(model: Any, opt: Any, x: Any, seed: int) -> None:
    import torch

    model.train()
    opt.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # the same drop-path draws for every variant
    loss = sum(o.square().mean() for o in model(x))
    loss.backward()
    opt.step()


def _reset_peak() -> bool:
    """Reset this process's peak resident size (Linux >= 4.0); False where impossible (a
    forked child otherwise starts from its parent's peak)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _hwm_mib() -> float:
    """Peak resident size since the last reset (VmHWM), else since the start (MiB)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return peak_mib()


def _tensor_peak_mib(fn: Any) -> float:
    """Peak of the bytes held by live CPU tensors during ``fn()`` above those held before
    (MiB), from the profiler's allocation events: independent of the allocator's caching
    and of code pages, unlike the resident size."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    cpu = torch.autograd.DeviceType.CPU
    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and e.device_type() == cpu]
    held = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        held += e.nbytes()
        peak = max(peak, held)
    return peak / 2**20


def run_memory(variant: str, mode: str, shape: list[int], threads: int,
               official: str | None) -> dict[str, Any]:
    """Child: one variant and mode. Peak memory (MiB) above the resident size with the
    model, input (and optimizer) built: ``first``, the RSS growth over the first call
    (one-time caches and library code pages included); ``steady``, the RSS growth over a
    later call (peak reset after two calls); ``tensor``, the tensors' peak over one more
    call (profiler)."""
    import torch

    torch.set_num_threads(threads)
    base, x = _build(tuple(shape))
    model = _make(variant, base, official)
    del base
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4) if mode == "train" else None

    def call(i: int) -> None:
        if opt is None:
            _inference(variant, model, x)
        else:
            _train_step(model, opt, x, i)

    before = rss_mib()
    reset = _reset_peak()
    call(0)
    first = _hwm_mib() - before
    call(1)
    before = rss_mib()
    reset = _reset_peak() and reset
    call(2)
    steady = _hwm_mib() - before
    tensor = _tensor_peak_mib(lambda: call(3))
    return {"variant": variant, "mode": mode, "first_mib": first,
            "steady_mib": steady if reset else float("nan"), "tensor_mib": tensor}


def _rel(a: Any, b: Any) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max())


def _timed(fn: Any) -> tuple[float, float]:
    """``(wall seconds, process CPU seconds)`` of one call of ``fn``."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def _interleaved(variants: list[str], repeats: int, call: Any) -> dict[str, Any]:
    """``call(variant, repeat)`` for every variant, ``repeats`` rounds, the order reversed
    every other round; per variant the wall and CPU times of every round."""
    times: dict[str, dict[str, list[float]]] = {v: {"wall": [], "cpu": []} for v in variants}
    for r in range(repeats):
        for v in variants if r % 2 == 0 else variants[::-1]:
            wall, cpu = _timed(lambda v=v, r=r: call(v, r))
            times[v]["wall"].append(wall)
            times[v]["cpu"].append(cpu)
    return times


def run_timing(shape: tuple[int, ...], variants: list[str], repeats: int, train: bool,
               official: str | None) -> dict[str, Any]:
    """All variants in this process, interleaved; times and output errors."""
    import torch

    base, x = _build(shape)
    params = sum(p.numel() for p in base.parameters())
    models = {v: _make(v, base, official) for v in variants}
    ref = _inference("previous", models["previous"], x)
    errors = {}
    for v, m in models.items():  # also the warm-up
        out = _inference(v, m, x)
        if v == "official":  # its normed deepest map against ours computing as it does
            import copy

            from cropscope.models.swin3d import set_official_compat

            same = _inference("new", set_official_compat(copy.deepcopy(base)), x)
            errors[v] = _rel(out[0], same[-1].flatten(1, 2))
        else:
            errors[v] = max(_rel(o, r) for o, r in zip(out, ref, strict=True))
    result: dict[str, Any] = {"params": params, "errors": errors, "repeats": repeats}
    result["infer"] = _interleaved(variants, repeats,
                                   lambda v, r: _inference(v, models[v], x))
    if train:
        tv = [v for v in variants if v != "bf16"]
        opts = {v: torch.optim.AdamW(models[v].parameters(), lr=1e-4) for v in tv}
        for v in tv:  # warm-up
            _train_step(models[v], opts[v], x, 0)
        result["train"] = _interleaved(
            tv, repeats, lambda v, r: _train_step(models[v], opts[v], x, r + 1))
    return result


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", nargs="+", default=list(DEFAULT_INPUTS),
                        help="BxTxHxW of the S2 input, e.g. 1x8x112x112")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-train", action="store_true", help="inference only")
    parser.add_argument("--no-memory", action="store_true", help="skip the child processes")
    parser.add_argument("--no-bf16", action="store_true")
    parser.add_argument("--official", help="path of a checkout of flyakon/AgriFM (optional)")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: memory child
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(run_memory(**json.loads(args.one))))
        return

    from cropscope.models.swin3d import bf16_supported

    variants = ["new", "previous"]
    if args.official:
        variants.append("official")
    bf16 = not args.no_bf16 and bf16_supported("cpu")
    if bf16:
        variants.append("bf16")
    print(f"AgriFM backbone Swin3D(10, 'tiny'), CPU {_cpu_model()}, {args.threads} thread(s), "
          f"torch {torch.__version__}, bf16 autocast {'yes' if bf16 else 'not supported'}",
          file=sys.stderr)
    report: list[dict[str, Any]] = []
    for spec in args.inputs:
        b, t, h, w = (int(v) for v in spec.lower().split("x"))
        shape = (b, t, 10, h, w)
        mem: dict[str, dict[str, float]] = {}  # first: the children start from a small parent
        if not args.no_memory:
            modes = [("infer", v) for v in variants]
            if not args.no_train:
                modes += [("train", v) for v in variants if v != "bf16"]
            for mode, v in modes:
                cfg = {"variant": v, "mode": mode, "shape": list(shape),
                       "threads": args.threads, "official": args.official}
                row, why = run_in_child(__file__, cfg, None)
                mem[f"{mode}:{v}"] = ({k: row[f"{k}_mib"] for k in MEMORY} if row
                                      else dict.fromkeys(MEMORY, float("nan")))
                if row is None:
                    print(f"memory {mode} {v}: {why}", file=sys.stderr)
        res = run_timing(shape, variants, args.repeats, not args.no_train, args.official)
        if res["params"] != PARAMS:
            print(f"note: {res['params']:,} parameters, not {PARAMS:,}", file=sys.stderr)
        res.update(shape=list(shape), memory=mem)
        report.append(res)
        _print(res, variants, not args.no_train)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


def _print(res: dict[str, Any], variants: list[str], train: bool) -> None:
    nan = float("nan")
    b, t, c, h, w = res["shape"]
    base = ["previous"] + (["official"] if "official" in variants else [])
    print(f"\ninput [{b}, {t}, {c}, {h}, {w}], {res['params']:,} parameters, "
          f"{res['repeats']} interleaved repeats. x VARIANT = VARIANT's time / this time "
          "(higher is faster); cpu = median process CPU time (robust to other load on the "
          "machine), wall = median wall time, best = fastest wall time")
    modes = ["infer"] + (["train"] if train else [])
    head = f"{'':<10}"
    for mode in modes:
        head += f"{mode + ' cpu s':>14}" + "".join(f"{'x ' + v[:4]:>8}" for v in base)
        head += f"{'wall x prev':>12}{'best x prev':>12}"
    print(head)
    for v in variants:
        line = f"{v:<10}"
        for mode in modes:
            times = res[mode]
            if v not in times:
                line += f"{'-':>14}" + "".join(f"{'-':>8}" for _ in base) + f"{'-':>12}" * 2
                continue
            cpu = {k: statistics.median(tt["cpu"]) for k, tt in times.items()}
            wall = {k: statistics.median(tt["wall"]) for k, tt in times.items()}
            best = {k: min(tt["wall"]) for k, tt in times.items()}
            line += f"{cpu[v]:>14.3f}" + "".join(f"{cpu[k] / cpu[v]:>8.2f}" for k in base)
            line += f"{wall['previous'] / wall[v]:>12.2f}{best['previous'] / best[v]:>12.2f}"
        print(line)
    mem = res["memory"]
    if mem:
        print("memory, MiB above the built model: first = RSS growth over the first call, "
              "steady = over a later call, tensor = tensors' peak (profiler); x VARIANT = "
              "this tensor peak / VARIANT's (lower is less memory)")
        head = f"{'':<10}"
        for mode in modes:
            head += "".join(f"{mode[:5] + ' ' + k:>13}" for k in MEMORY)
            head += "".join(f"{'x ' + k[:4]:>8}" for k in base)
        print(head + f"{'max rel err':>13}")
        none = dict.fromkeys(MEMORY, nan)
        for v in variants:
            line = f"{v:<10}"
            for mode in modes:
                m = mem.get(f"{mode}:{v}", none)
                line += "".join(f"{m[k]:>13.0f}" for k in MEMORY)
                line += "".join(f"{m['tensor'] / mem.get(f'{mode}:{k}', none)['tensor']:>8.2f}"
                                for k in base)
            print(line + f"{res['errors'][v]:>13.1e}")
    else:
        print("max rel err vs previous: " + ", ".join(
            f"{v} {res['errors'][v]:.1e}" for v in variants))


if __name__ == "__main__":
    main()
