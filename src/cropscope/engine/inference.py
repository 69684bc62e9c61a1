"""Batched inference of a deep model over a numpy array, on the CPU or a CUDA device.

One entry point, :class:`BatchedPredictor`, runs a module over ``x [N, ...]`` (float32, any
per-sample shape: pixel series ``[N, T, C]``, patches ``[N, K, h, w]``, scenes
``[N, T, C, H, W]``), with an optional second input ``extra [N, P]`` (e.g. per-level priors),
and returns the outputs ``float32 [N, ...]`` on the host: one tensor, or a list (one per
level) for a hierarchical module. :func:`predict_logits` is the same with a fixed batch size
(the engine's historical function, kept for callers).

What it does, and why:

- **Device.** ``InferenceSettings.device``: ``"auto"`` (CUDA when available, else the CPU),
  ``"cpu"``, ``"cuda"`` / ``"cuda:<n>"``. A device the machine lacks is a
  :class:`~cropscope.errors.ModelError`. The module is moved there (in place) and put in
  eval mode; everything runs under ``torch.inference_mode``.
- **No extra full copy of the input.** Each batch is a ``torch.from_numpy`` view of a
  contiguous float32 slice of ``x`` (a slice of another dtype or layout is converted batch by
  batch, never the whole array). Outputs go into one preallocated host array per output (no
  list of batches concatenated at the end: half the peak output memory).
- **CUDA.** Batches are copied into two page-locked (pinned) host buffers, alternately, and
  sent with ``non_blocking=True`` on a side stream, so that the copy of batch ``k+1`` (and
  the host work of filling its buffer) overlaps the kernels of batch ``k``. With ``amp``
  the forward pass runs under autocast (bfloat16 where the GPU supports it, else float16;
  ``amp_dtype`` chooses); outputs come back as float32. The CPU never autocasts: it stays in
  float32, so CPU results are exactly those of a plain batched forward pass.
- **Batch size.** ``InferenceSettings.batch_size``, or chosen from a memory budget: the
  first batch (:data:`PROBE_BATCH` samples) is measured (bytes of every leaf module's output,
  and on CUDA the allocator's peak), giving bytes per sample; the batch size is then the
  budget (a share ``memory_fraction`` of the free device memory on CUDA,
  :data:`CPU_BUDGET_BYTES` on the CPU) over that, capped (:data:`MAX_BATCH`, and an input
  batch of at most :data:`MAX_INPUT_BYTES`). The measure is kept for later calls.
- **Out of memory.** A ``torch.OutOfMemoryError`` (CUDA), a CPU ``RuntimeError`` saying it
  could not allocate memory, or a ``MemoryError`` halves the batch, frees the CUDA cache and
  retries the same samples; the reduced size is kept for the following batches and calls, and
  a warning is logged once per predictor. When a batch of one sample fails,
  :class:`InferenceMemoryError` (a :class:`~cropscope.errors.ModelError`) says so.

A predictor keeps what it learnt (the reduced batch size, bytes per sample, pinned buffers)
between calls, so a map job that predicts window after window reuses it. Importing this
module does not import torch (the settings are a plain dataclass).
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from cropscope.errors import DataError, ModelError, SettingsError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "CPU_BUDGET_BYTES",
    "MAX_BATCH",
    "MAX_INPUT_BYTES",
    "PROBE_BATCH",
    "BatchedPredictor",
    "CallFn",
    "InferenceMemoryError",
    "InferenceSettings",
    "configure_inference",
    "is_out_of_memory",
    "predict_logits",
]

#: ``call(module, x_batch, extra_batch)`` → the module's output (a tensor, or a list of them)
CallFn = Callable[["nn.Module", "torch.Tensor", "torch.Tensor | None"], Any]

#: samples of the first batch, whose memory is measured to choose the batch size
PROBE_BATCH = 32
#: memory a CPU batch may take (inputs, activations, outputs); larger batches gain nothing
#: on a CPU (measured: benchmarks/bench_inference.py) and only grow the peak memory
CPU_BUDGET_BYTES = 128 * 2**20
#: largest automatic batch size per device type
MAX_BATCH = {"cpu": 4096, "cuda": 65536}
#: largest input batch (bytes, float32) of an automatic batch size: bounds the pinned buffers
MAX_INPUT_BYTES = 256 * 2**20

_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_AMP_DTYPES = ("auto", "float16", "bfloat16")
_OOM_RE = re.compile(r"out of memory|can't allocate memory|cannot allocate memory|"
                     r"ALLOC_FAILED", re.IGNORECASE)
_LOG = logging.getLogger("cropscope")


class InferenceMemoryError(ModelError):
    """Prediction ran out of memory even with a batch of one sample."""


@dataclass(frozen=True)
class InferenceSettings:
    """How a deep model predicts (see the module docstring).

    ``device``: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:<n>"``. ``batch_size``: samples
    per forward pass (``None``: from the memory budget). ``amp``: autocast on CUDA (never on
    the CPU). ``pin_memory``: page-locked host buffers and overlapped copies on CUDA.
    ``amp_dtype``: ``"auto"`` (bfloat16 when the GPU supports it, else float16), ``"float16"``
    or ``"bfloat16"``. ``memory_fraction``: share of the free CUDA memory an automatic batch
    size may plan for.
    """

    device: str = "auto"
    batch_size: int | None = None
    amp: bool = True
    pin_memory: bool = True
    amp_dtype: str = "auto"
    memory_fraction: float = 0.5

    def __post_init__(self) -> None:
        if not isinstance(self.device, str) or not _DEVICE_RE.match(self.device):
            raise SettingsError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:<n>', got "
                                f"{self.device!r}")
        size = self.batch_size
        if size is not None and (isinstance(size, bool) or not isinstance(size, int)
                                 or size < 1):
            raise SettingsError(f"the batch size must be a positive integer, got {size!r}")
        if self.amp_dtype not in _AMP_DTYPES:
            raise SettingsError(f"amp_dtype must be one of {list(_AMP_DTYPES)}, got "
                                f"{self.amp_dtype!r}")
        if not 0 < float(self.memory_fraction) <= 1:
            raise SettingsError(f"memory_fraction must be in (0, 1], got "
                                f"{self.memory_fraction!r}")


def configure_inference(model: Any, settings: InferenceSettings | None) -> bool:
    """Give ``settings`` to a loaded model that takes them (``model.set_inference``); False
    for a model that has no such thing (e.g. a LightGBM classifier: nothing to do)."""
    setter = getattr(model, "set_inference", None)
    if setter is None:
        return False
    setter(settings)
    return True


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says that an allocation failed (CUDA, the CPU allocator, Python)."""
    if isinstance(exc, MemoryError):
        return True
    import torch

    oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    if isinstance(exc, oom):
        return True
    return isinstance(exc, RuntimeError) and _OOM_RE.search(str(exc)) is not None


def _call(module: nn.Module, xb: torch.Tensor, eb: torch.Tensor | None) -> Any:
    return module(xb) if eb is None else module(xb, eb)


def _batch_array(a: np.ndarray, start: int, stop: int) -> np.ndarray:
    """``a[start:stop]`` as C-contiguous, writeable float32: a view when ``a`` already is one
    (the usual case), else a copy of that batch only."""
    part = np.ascontiguousarray(a[start:stop], dtype=np.float32)
    return part if part.flags.writeable else part.copy()


def _parts(res: Any) -> tuple[list[torch.Tensor], bool]:
    """The output tensors of one batch and whether the module returned a list of them."""
    if isinstance(res, list | tuple):
        return list(res), True
    return [res], False


def _leaf_bytes(module: nn.Module) -> tuple[list[Any], list[int]]:
    """Forward hooks summing the bytes of every leaf module's output (a measure of the
    activation memory a batch needs) and the one-element total they add to."""
    import torch

    total = [0]

    def hook(_m: nn.Module, _inp: Any, out: Any) -> None:
        stack = [out]
        while stack:
            o = stack.pop()
            if isinstance(o, torch.Tensor):
                total[0] += o.numel() * o.element_size()
            elif isinstance(o, list | tuple):
                stack.extend(o)
            elif isinstance(o, dict):
                stack.extend(o.values())

    handles = [m.register_forward_hook(hook) for m in module.modules()
               if next(m.children(), None) is None]
    return handles, total


class _Pending:
    """A batch on its way to the device: its range and its device tensors."""

    def __init__(self, start: int, stop: int, tensors: list[torch.Tensor | None]) -> None:
        self.start, self.stop, self.tensors = start, stop, tensors


class _Feeder:
    """Host → device batches. Direct: ``from_numpy`` views sent as they are (the CPU, and
    CUDA without pinned memory). Staged (CUDA with pinned memory): each batch is copied into
    one of two reusable page-locked host buffers, alternately, and sent with
    ``non_blocking=True`` on a side stream, so that filling and sending batch ``k+1``
    overlaps the kernels of batch ``k``. (Staging without pinning or a stream runs on the
    CPU too: how the tests check the buffer logic.)"""

    def __init__(self, device: torch.device, arrays: Sequence[np.ndarray | None],
                 staged: bool, buffers: dict[int, Any]) -> None:
        import torch

        self.device, self.arrays, self.staged = device, list(arrays), staged
        cuda = staged and device.type == "cuda"
        self.pin = cuda
        self.stream = torch.cuda.Stream(device) if cuda else None
        self.buffers = buffers  # slot → (host tensors, event): kept by the predictor
        self.slot = 0

    def start(self, start: int, stop: int) -> _Pending:
        import torch

        if not self.staged:
            return _Pending(start, stop, [
                None if a is None else
                torch.from_numpy(_batch_array(a, start, stop)).to(self.device)
                for a in self.arrays])
        slot, self.slot = self.slot, 1 - self.slot
        hosts, event = self.buffers.get(slot, (None, None))
        if event is not None:
            event.synchronize()  # the copy that last read this buffer has finished
        n = stop - start
        shapes = [None if a is None else (n, *a.shape[1:]) for a in self.arrays]
        if hosts is None or len(hosts) != len(shapes) or any(
                (s is None) != (h is None)
                or (s is not None and h is not None
                    and (h.shape[1:] != s[1:] or h.shape[0] < n))
                for h, s in zip(hosts, shapes, strict=True)):
            hosts = [None if s is None else torch.empty(s, dtype=torch.float32,
                                                        pin_memory=self.pin)
                     for s in shapes]
        tensors: list[torch.Tensor | None] = []
        stream = contextlib.nullcontext() if self.stream is None else \
            torch.cuda.stream(self.stream)
        with stream:
            for a, h in zip(self.arrays, hosts, strict=True):
                if a is None or h is None:
                    tensors.append(None)
                    continue
                np.copyto(h[:n].numpy(), a[start:stop], casting="unsafe")
                tensors.append(h[:n].to(self.device, non_blocking=True))
            if self.stream is not None:
                event = torch.cuda.Event()
                event.record(self.stream)
        self.buffers[slot] = (hosts, event)
        return _Pending(start, stop, tensors)

    def take(self, pending: _Pending) -> list[torch.Tensor | None]:
        """The batch's device tensors, ready for the compute stream."""
        import torch

        if self.stream is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_stream(self.stream)
            for t in pending.tensors:
                if t is not None:
                    t.record_stream(current)
        return pending.tensors


class BatchedPredictor:
    """Runs modules over arrays in batches with :class:`InferenceSettings` (see the module
    docstring); keeps the reduced batch size, the measured bytes per sample and the pinned
    buffers between calls. ``hint`` ends the out-of-memory error (what the user can change,
    e.g. a smaller map tile)."""

    def __init__(self, settings: InferenceSettings | None = None, *, hint: str = "") -> None:
        self.settings = settings if settings is not None else InferenceSettings()
        self.hint = hint
        #: the largest batch size known to fit (set after an out-of-memory); None: no limit
        self.batch_cap: int | None = None
        #: the batch size the last call ended with
        self.last_batch_size: int | None = None
        self._device: torch.device | None = None
        self._bytes_per_sample: dict[tuple[Any, ...], float] = {}
        self._buffers: dict[int, Any] = {}
        self._warned = False
        self._stage_on_cpu = False  # tests: run the staged (CUDA) feeding on the CPU

    def __getstate__(self) -> dict[str, Any]:
        """What a copy (e.g. the model sent to Dask workers) keeps: the settings and what was
        learnt, not the host buffers and CUDA events of this process."""
        state = dict(self.__dict__)
        state["_buffers"] = {}
        return state

    @property
    def device(self) -> torch.device:
        """The resolved device (a :class:`ModelError` when the machine lacks it)."""
        if self._device is None:
            from cropscope.engine.recipe import resolve_device

            self._device = resolve_device(self.settings.device)
        return self._device

    def autocast_dtype(self) -> torch.dtype | None:
        """The autocast dtype on this device, None for float32 (always on the CPU)."""
        import torch

        if not self.settings.amp or self.device.type != "cuda":
            return None
        if self.settings.amp_dtype == "float16":
            return torch.float16
        if self.settings.amp_dtype == "bfloat16" or torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float16

    def __call__(self, module: nn.Module, x: np.ndarray, extra: np.ndarray | None = None,
                 *, call: CallFn | None = None) -> Any:
        """Outputs of ``call(module, x_batch, extra_batch)`` (default: ``module(x)`` or
        ``module(x, extra)``) for every sample of ``x``: a float32 CPU tensor ``[N, ...]``,
        or a list of them when the module returns a list."""
        import torch

        n = len(x)
        if extra is not None and len(extra) != n:
            raise DataError(f"{n} samples but {len(extra)} rows of the second input")
        if n == 0:
            raise DataError("no samples to predict")
        fn = call if call is not None else _call
        device = self.device
        module = module.to(device).eval()
        in_bytes = 4 * (math.prod(x.shape[1:])
                        + (0 if extra is None else math.prod(extra.shape[1:])))
        key = (type(module).__name__, tuple(x.shape[1:]),
               None if extra is None else tuple(extra.shape[1:]), device.type)
        probing = self.settings.batch_size is None and key not in self._bytes_per_sample
        if self.settings.batch_size is not None:
            bs = self.settings.batch_size
        elif probing:
            bs = PROBE_BATCH
        else:
            bs = self._auto_batch(self._bytes_per_sample[key], in_bytes)
        if self.batch_cap is not None:
            bs = min(bs, self.batch_cap)
        staged = self._stage_on_cpu or (self.settings.pin_memory and device.type == "cuda")
        feeder = _Feeder(device, [x, extra], staged, self._buffers)
        amp = self.autocast_dtype()
        outs: list[torch.Tensor] | None = None
        as_list = False
        pending: _Pending | None = None
        pos = 0
        tried = [bs]
        with torch.inference_mode():
            while pos < n:
                size = min(bs, n - pos)
                out_of_memory = False
                try:
                    parts, as_list, measured, pending = self._step(
                        module, fn, feeder, pending, (pos, size, bs, n), probing, amp)
                    outs = self._store(outs, parts, pos, n)
                except Exception as exc:  # only an out-of-memory is handled
                    if not is_out_of_memory(exc):
                        raise
                    out_of_memory = True
                if out_of_memory:
                    pending = None
                    self._free(device)
                    if size == 1:
                        raise self._error(tried) from None
                    bs = size // 2
                    tried.append(bs)
                    self.batch_cap = bs
                    continue
                if len(tried) > 1:  # said once, with the size that fits
                    self._warn(tried[0], bs, device)
                if probing:
                    out_bytes = sum(4 * math.prod(p.shape[1:]) for p in parts)
                    per = measured / size + 2 * in_bytes + out_bytes
                    self._bytes_per_sample[key] = per
                    bs = self._auto_batch(per, in_bytes)
                    if self.batch_cap is not None:
                        bs = min(bs, self.batch_cap)
                    probing = False
                pos += size
        self.last_batch_size = bs
        assert outs is not None
        return outs if as_list else outs[0]

    # ------------------------------------------------------------------ internals
    def _step(self, module: nn.Module, fn: CallFn, feeder: _Feeder, pending: _Pending | None,
              where: tuple[int, int, int, int], probing: bool, amp: torch.dtype | None
              ) -> tuple[list[torch.Tensor], bool, float, _Pending | None]:
        """One batch: ``where = (pos, size, batch size, n)``. Returns its outputs, whether
        the module gives a list, the measured activation bytes (when ``probing``) and the
        next batch, already on its way to the device (its copy overlaps this compute)."""
        pos, size, bs, n = where
        if pending is None or (pending.start, pending.stop) != (pos, pos + size):
            pending = feeder.start(pos, pos + size)
        xb, eb = feeder.take(pending)
        assert xb is not None
        with self._measure(module, probing, feeder.device) as measured:
            with self._autocast(amp):
                parts, as_list = _parts(fn(module, xb, eb))
        nxt = None
        if not probing and pos + size < n:
            nxt = feeder.start(pos + size, min(pos + size + bs, n))
        return parts, as_list, measured[0], nxt

    @staticmethod
    def _autocast(dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
        import torch

        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=dtype)

    @contextlib.contextmanager
    def _measure(self, module: nn.Module, on: bool, device: torch.device
                 ) -> Iterator[list[float]]:
        """While ``on``: the activation bytes of the forward pass inside (leaf outputs, and
        the CUDA allocator's peak above what was allocated before), as ``[bytes]``."""
        import torch

        result = [0.0]
        if not on:
            yield result
            return
        cuda = device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
        handles, total = _leaf_bytes(module)
        try:
            yield result
        finally:
            for h in handles:
                h.remove()
        result[0] = float(total[0])
        if cuda:
            torch.cuda.synchronize(device)
            result[0] = max(result[0],
                            float(torch.cuda.max_memory_allocated(device) - before))

    def _auto_batch(self, per_sample: float, in_bytes: int) -> int:
        """The batch size the memory budget allows for ``per_sample`` bytes a sample."""
        import torch

        device = self.device
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
            budget = float(self.settings.memory_fraction) * free
            cap = MAX_BATCH["cuda"]
        else:
            budget, cap = float(CPU_BUDGET_BYTES), MAX_BATCH["cpu"]
        bs = int(budget // max(per_sample, 1.0))
        bs = min(bs, cap, MAX_INPUT_BYTES // max(in_bytes, 1))
        if bs >= 64:
            bs -= bs % 32
        return max(1, bs)

    @staticmethod
    def _store(outs: list[torch.Tensor] | None, parts: list[torch.Tensor], pos: int,
               n: int) -> list[torch.Tensor]:
        """Copy one batch's outputs into the preallocated float32 host outputs."""
        import torch

        if outs is None:
            outs = [torch.empty((n, *p.shape[1:]), dtype=torch.float32) for p in parts]
        elif len(outs) != len(parts):
            raise ModelError(f"the module returned {len(parts)} outputs for one batch and "
                             f"{len(outs)} for another")
        for o, p in zip(outs, parts, strict=True):
            o[pos : pos + p.shape[0]].copy_(p.float())
        return outs

    @staticmethod
    def _free(device: torch.device) -> None:
        import gc

        import torch

        gc.collect()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.empty_cache()

    def _warn(self, failed: int, size: int, device: torch.device) -> None:
        if self._warned:
            return
        self._warned = True
        _LOG.warning("out of memory on %s with batches of %d samples: predicting in batches "
                     "of %d (set the batch size to choose one)", device, failed, size)

    def _error(self, tried: list[int]) -> InferenceMemoryError:
        sizes = " → ".join(str(b) for b in tried)
        hint = f"; {self.hint}" if self.hint else ""
        return InferenceMemoryError(
            f"out of memory on {self.device} even with a batch of 1 sample (batch sizes "
            f"tried: {sizes}){hint}")


def predict_logits(
    module: nn.Module,
    x: np.ndarray,
    batch_size: int = 1024,
    device: str | torch.device = "cpu",
    extra: np.ndarray | None = None,
) -> Any:
    """Outputs ``[N, K]`` (float32, CPU) of ``module`` in eval mode, in batches of
    ``batch_size``; a list of them (one per level) for a hierarchical module. ``extra`` is a
    second module input. Float32 on every device (no autocast); out-of-memory handling and
    the CUDA copies as :class:`BatchedPredictor`."""
    settings = InferenceSettings(device=str(device), batch_size=int(batch_size), amp=False)
    return BatchedPredictor(settings)(module, x, extra)
