"""Deep-model inference: the former fixed-batch path against the batched predictor.

Cases (all in one process, runs interleaved, the order rotated every repeat; median and best
of ``--repeats`` reported, since the machine may be shared):

- **tempcnn**: a default-size TempCNN (64 filters, 256 hidden) over ``--pixels`` pixel series
  ``[N, 10 bands, 24 dates]``, as a map job's ``predict_proba`` call gets them. ``former``:
  the engine's ``predict_logits`` before this change (copied below: batches of 1024, outputs
  concatenated); ``new-1024``: the batched predictor at the same batch size (the machinery's
  own cost); ``new-auto``: the batched predictor with its batch size from the memory budget.
- **segmentation**: a small AgriFM (embed 32, depths 1-1-2-1) over ``--windows`` windows
  ``[6 dates, 10 bands, 64, 64]``. ``former``: ``predict_scene`` before this change, one
  window per forward pass (``torch.no_grad``, softmax on the output); ``new-1``: the
  batched predictor, one window a batch (what the map job does today); ``new-auto``: all
  windows through the predictor with the automatic batch size.

On the CPU each case runs with 1 and with 2 torch threads (``torch.set_num_threads``; inter-op
1). Reported per method: seconds per call (median, best), ratio former / method (> 1: the
method is faster), and the peak extra resident memory of the call (MiB above the memory
before it, sampled every millisecond by a thread; ``MALLOC_MMAP_THRESHOLD_`` is fixed so
that freed tensors leave the resident set and each call's peak is its own). Outputs are
compared with the former path (max absolute difference).

On CUDA (when present): float32 against AMP (the predictor's autocast dtype) and samples/s
by batch size, with ``torch.cuda.max_memory_allocated`` as the peak. Never asserts.

    python benchmarks/bench_inference.py                 # CPU, 1 and 2 threads, 5 repeats
    python benchmarks/bench_inference.py --quick         # smaller inputs, 3 repeats
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

if "MALLOC_MMAP_THRESHOLD_" not in os.environ:  # every large buffer its own mapping
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "131072"
    os.execv(sys.executable, [sys.executable, *sys.argv])

import numpy as np
import torch

AGRIFM_SMALL = {"preset": None, "sources": {"S2": 10}, "num_classes": 8, "embed_dim": 32,
                "depths": [1, 1, 2, 1], "num_heads": [1, 2, 4, 8], "decoder_dim": 32,
                "patch_size": [2, 4, 4], "drop_path_rate": 0.0}


# ------------------------------------------------------------------------------ memory
def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRss:
    """Peak resident memory above the level at entry, sampled every millisecond (MiB)."""

    def __enter__(self) -> PeakRss:
        self.base = self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss())
            time.sleep(0.001)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())

    @property
    def mib(self) -> float:
        return (self.peak - self.base) / 2**20


# ------------------------------------------------------------------------------ former paths
@torch.inference_mode()
def former_predict_logits(module: Any, x: np.ndarray, batch_size: int = 1024,
                          device: str = "cpu") -> Any:
    """The engine's predict_logits before the batched predictor (verbatim in substance)."""
    module.eval()
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    out = []
    for i in range(0, len(xt), batch_size):
        res = module(xt[i : i + batch_size].to(device))
        out.append(res.float().cpu())
    return torch.cat(out)


def former_scenes(net: Any, windows: np.ndarray, device: str = "cpu") -> np.ndarray:
    """predict_scene before the batched predictor, one window after the other."""
    out = []
    net = net.to(device)
    for w in windows:
        with torch.no_grad():
            z = net({"S2": torch.from_numpy(w)[None].to(device)})
            out.append(z.float().softmax(1)[0].cpu().numpy())
    return np.stack(out)


def _scene_call(net: Any, xb: Any, _extra: Any) -> Any:
    return net({"S2": xb}).float().softmax(1)


# ------------------------------------------------------------------------------ timing
def interleave(methods: dict[str, Callable[[], Any]], repeats: int, cuda: bool = False
               ) -> dict[str, dict[str, Any]]:
    """Time every method ``repeats`` times, interleaved (order rotated each repeat), after
    one untimed warm-up call each; seconds, peak memory and the last output per method."""
    names = list(methods)
    res: dict[str, dict[str, Any]] = {n: {"s": [], "mib": [], "out": None} for n in names}
    for n in names:
        res[n]["out"] = methods[n]()
    for r in range(repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for n in order:
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            with PeakRss() as mem:
                t0 = time.perf_counter()
                out = methods[n]()
                if cuda:
                    torch.cuda.synchronize()
                dt = time.perf_counter() - t0
            res[n]["s"].append(dt)
            res[n]["mib"].append((torch.cuda.max_memory_allocated() - base) / 2**20 if cuda
                                 else mem.mib)
            res[n]["out"] = out
    return res


def _as_array(out: Any) -> np.ndarray:
    return out.numpy() if isinstance(out, torch.Tensor) else np.asarray(out)


def report(case: str, res: dict[str, dict[str, Any]], n: int, unit: str,
           base: str = "former") -> None:
    ref = _as_array(res[base]["out"])
    med0 = statistics.median(res[base]["s"])
    print(f"  {'method':<12} {'median s':>9} {'best s':>8} {unit + '/s':>12} "
          f"{'former/x':>9} {'peak MiB':>9} {'max|diff|':>10}")
    for name, r in res.items():
        med = statistics.median(r["s"])
        diff = float(np.abs(_as_array(r["out"]) - ref).max())
        print(f"  {name:<12} {med:9.3f} {min(r['s']):8.3f} {n / med:12.0f} "
              f"{med0 / med:9.2f} {max(r['mib']):9.1f} {diff:10.2e}")
    sys.stdout.flush()


# ------------------------------------------------------------------------------ cases
def tempcnn_case(n: int, repeats: int, device: str = "cpu") -> None:
    from cropscope.engine.inference import BatchedPredictor, InferenceSettings
    from cropscope.models.tempcnn import TempCNNModule

    torch.manual_seed(0)
    net = TempCNNModule(n_bands=10, n_times=24, n_classes=10).eval()
    x = np.random.default_rng(0).normal(size=(n, 10, 24)).astype(np.float32)
    fixed = BatchedPredictor(InferenceSettings(device=device, batch_size=1024, amp=False))
    auto = BatchedPredictor(InferenceSettings(device=device, amp=False))
    res = interleave({
        "former": lambda: former_predict_logits(net, x, 1024, device),
        "new-1024": lambda: fixed(net, x),
        "new-auto": lambda: auto(net, x),
    }, repeats, cuda=device != "cpu")
    print(f"tempcnn [{n}, 10, 24] on {device}, {torch.get_num_threads()} thread(s); "
          f"auto batch = {auto.last_batch_size}")
    report("tempcnn", res, n, "px")


def segmentation_case(n: int, repeats: int, size: int = 64, device: str = "cpu") -> None:
    from cropscope.engine.inference import BatchedPredictor, InferenceSettings
    from cropscope.models.networks import create_network

    torch.manual_seed(0)
    net = create_network("agrifm", **AGRIFM_SMALL).eval()
    w = np.random.default_rng(0).normal(size=(n, 6, 10, size, size)).astype(np.float32)
    one = BatchedPredictor(InferenceSettings(device=device, batch_size=1, amp=False))
    auto = BatchedPredictor(InferenceSettings(device=device, amp=False))
    res = interleave({
        "former": lambda: former_scenes(net, w, device),
        "new-1": lambda: one(net, w, call=_scene_call),
        "new-auto": lambda: auto(net, w, call=_scene_call),
    }, repeats, cuda=device != "cpu")
    print(f"segmentation (AgriFM small) [{n}, 6, 10, {size}, {size}] on {device}, "
          f"{torch.get_num_threads()} thread(s); auto batch = {auto.last_batch_size}")
    report("segmentation", res, n, "win")


def cuda_cases(n: int, windows: int, repeats: int) -> None:
    """float32 against AMP, and samples/s by batch size, on the first GPU."""
    from cropscope.engine.inference import BatchedPredictor, InferenceSettings
    from cropscope.models.networks import create_network
    from cropscope.models.tempcnn import TempCNNModule

    dev = "cuda"
    print(f"\nCUDA: {torch.cuda.get_device_name(0)}")
    tempcnn_case(n, repeats, dev)
    segmentation_case(windows, repeats, 128, dev)
    torch.manual_seed(0)
    net = TempCNNModule(n_bands=10, n_times=24, n_classes=10).to(dev).eval()
    x = np.random.default_rng(0).normal(size=(n, 10, 24)).astype(np.float32)
    methods: dict[str, Callable[[], Any]] = {
        "former": lambda: former_predict_logits(net, x, 1024, dev)}
    for bs in (1024, 4096, 16384, 65536):
        for amp in (False, True):
            p = BatchedPredictor(InferenceSettings(device=dev, batch_size=bs, amp=amp))
            methods[f"{'amp' if amp else 'fp32'}-{bs}"] = (lambda p=p: p(net, x))
    for pin in (False, True):
        p = BatchedPredictor(InferenceSettings(device=dev, amp=True, pin_memory=pin))
        methods[f"auto-pin{int(pin)}"] = (lambda p=p: p(net, x))
    print(f"tempcnn [{n}, 10, 24] on cuda by batch size, float32 / AMP "
          f"({BatchedPredictor(InferenceSettings(device=dev)).autocast_dtype()})")
    report("tempcnn-cuda", interleave(methods, repeats, cuda=True), n, "px")
    seg = create_network("agrifm", **AGRIFM_SMALL).to(dev).eval()
    w = np.random.default_rng(0).normal(size=(windows, 6, 10, 128, 128)).astype(np.float32)
    seg_methods: dict[str, Callable[[], Any]] = {"former": lambda: former_scenes(seg, w, dev)}
    for bs in (1, 4, 16):
        for amp in (False, True):
            p = BatchedPredictor(InferenceSettings(device=dev, batch_size=bs, amp=amp))
            seg_methods[f"{'amp' if amp else 'fp32'}-{bs}"] = (
                lambda p=p: p(seg, w, call=_scene_call))
    print(f"segmentation [{windows}, 6, 10, 128, 128] on cuda by batch size, float32 / AMP")
    report("seg-cuda", interleave(seg_methods, repeats, cuda=True), windows, "win")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pixels", type=int, default=65536)
    ap.add_argument("--windows", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", default="1,2", help="CPU torch thread counts to run")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-cpu", action="store_true", help="CUDA cases only")
    args = ap.parse_args()
    if args.quick:
        args.pixels, args.windows, args.repeats = 8192, 4, 3
    torch.set_num_interop_threads(1)
    print(f"torch {torch.__version__}; MALLOC_MMAP_THRESHOLD_="
          f"{os.environ['MALLOC_MMAP_THRESHOLD_']}; repeats {args.repeats}")
    if not args.no_cpu:
        for threads in (int(t) for t in args.threads.split(",")):
            torch.set_num_threads(threads)
            print(f"\n== CPU, torch.set_num_threads({threads})")
            tempcnn_case(args.pixels, args.repeats)
            segmentation_case(args.windows, args.repeats)
    if torch.cuda.is_available():
        cuda_cases(max(args.pixels, 262144), max(args.windows, 16), args.repeats)
    else:
        print("\nno CUDA device: the AMP and batch-size comparisons need a GPU")


if __name__ == "__main__":
    main()
