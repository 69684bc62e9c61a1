"""Batched inference (:mod:`cropscope.engine.inference`) on the CPU: the same numbers as the
engine's former fixed-batch ``predict_logits`` (kept below as the reference), for pixel,
patch and hierarchical modules; out-of-memory recovery by halving the batch (injected);
the typed errors; the automatic batch size; no copy of a float32 input."""

from __future__ import annotations

import itertools
import logging

import numpy as np
import pytest
import torch
from torch import nn

from cropscope.engine import inference
from cropscope.engine.inference import (
    BatchedPredictor,
    InferenceMemoryError,
    InferenceSettings,
    configure_inference,
    is_out_of_memory,
    predict_logits,
)
from cropscope.errors import DataError, ModelError, SettingsError

CPU_OOM = ("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1234 bytes. "
           "Error code 12 (Cannot allocate memory)")


@torch.inference_mode()
def legacy_predict_logits(module: nn.Module, x: np.ndarray, batch_size: int = 1024,
                          extra: np.ndarray | None = None,
                          bounds: list[int] | None = None) -> object:
    """The engine's predict_logits before batched inference (CPU): fixed batches (or the
    batch ``bounds`` given), each output ``.float().cpu()``, concatenated."""
    module.eval()
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    et = None if extra is None else torch.from_numpy(np.ascontiguousarray(extra, np.float32))
    edges = bounds if bounds is not None else [*range(0, len(xt), batch_size), len(xt)]
    out: list = []
    for i, j in itertools.pairwise(edges):
        res = module(xt[i:j]) if et is None else module(xt[i:j], et[i:j])
        out.append([r.float().cpu() for r in res] if isinstance(res, list | tuple)
                   else res.float().cpu())
    if isinstance(out[0], list):
        return [torch.cat([o[k] for o in out]) for k in range(len(out[0]))]
    return torch.cat(out)


class PixelNet(nn.Module):
    """TempCNN-like: ``[B, C, T]`` → conv, batch norm, ReLU, dense → ``[B, K]``."""

    def __init__(self, c: int = 4, t: int = 12, k: int = 5, width: int = 16) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv1d(c, width, 5, padding=2), nn.BatchNorm1d(width),
                                  nn.ReLU(), nn.Dropout(0.5))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(width * t, k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x))


class PatchNet(nn.Module):
    """``[B, K, h, w]`` patches → ``[B, classes]``."""

    def __init__(self, bands: int = 6, k: int = 3) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(bands, 8, 3, padding=1), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class HierNet(nn.Module):
    """Two-input, two-level module: ``(x [B, D], priors [B, P])`` → ``[[B, 2], [B, 4]]``."""

    def __init__(self, d: int = 10, p: int = 6) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d + p, 12), nn.Tanh())
        self.coarse, self.fine = nn.Linear(12, 2), nn.Linear(12, 4)

    def forward(self, x: torch.Tensor, priors: torch.Tensor) -> list[torch.Tensor]:
        h = self.body(torch.cat([x, priors], dim=1))
        return [self.coarse(h), self.fine(h)]


class FailsAbove(nn.Module):
    """Raises an out-of-memory error for batches larger than ``limit`` (all of them when
    ``limit`` is 0), as a GPU or the CPU allocator would; counts the failures."""

    def __init__(self, inner: nn.Module, limit: int, error: type[Exception] | None = None,
                 message: str = "CUDA out of memory. Tried to allocate 2.00 GiB") -> None:
        super().__init__()
        self.inner, self.limit, self.failures, self.sizes = inner, limit, 0, []
        self.error = error or torch.cuda.OutOfMemoryError
        self.message = message

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(x) > self.limit:
            self.failures += 1
            raise self.error(self.message)
        self.sizes.append(len(x))
        return self.inner(x)


def pixel_data(n: int = 50, seed: int = 0) -> tuple[nn.Module, np.ndarray]:
    torch.manual_seed(seed)
    net = PixelNet()
    # non-trivial running statistics, so that eval mode matters
    net.conv[1].running_mean.uniform_(-1, 1)
    net.conv[1].running_var.uniform_(0.5, 2)
    return net, np.random.default_rng(seed).normal(size=(n, 4, 12)).astype(np.float32)


def cpu(batch_size: int | None = None, **kw: object) -> InferenceSettings:
    return InferenceSettings(device="cpu", batch_size=batch_size, **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- same numbers
@pytest.mark.parametrize("batch_size", [10, 7, 1, 64])  # divides 50, does not, one, > N
def test_pixel_model_matches_the_fixed_batch_path(batch_size: int) -> None:
    net, x = pixel_data()
    ref = legacy_predict_logits(net, x, batch_size)
    out = BatchedPredictor(cpu(batch_size))(net, x)
    assert out.dtype == torch.float32 and out.shape == (50, 5)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    assert not net.training  # eval mode: dropout off, running statistics used
    # the kept function: same numbers
    torch.testing.assert_close(predict_logits(net, x, batch_size=batch_size), ref,
                               rtol=0, atol=0)


@pytest.mark.parametrize("batch_size", [8, 5])
def test_patch_model_matches_the_fixed_batch_path(batch_size: int) -> None:
    torch.manual_seed(1)
    net = PatchNet()
    x = np.random.default_rng(1).normal(size=(24, 6, 5, 5)).astype(np.float32)
    ref = legacy_predict_logits(net, x, batch_size)
    torch.testing.assert_close(BatchedPredictor(cpu(batch_size))(net, x), ref, rtol=0, atol=0)


@pytest.mark.parametrize("batch_size", [6, 4])
def test_hierarchical_outputs_with_a_second_input(batch_size: int) -> None:
    torch.manual_seed(2)
    net = HierNet()
    rng = np.random.default_rng(2)
    x = rng.normal(size=(18, 10)).astype(np.float32)
    priors = (rng.random((18, 6)) > 0.5).astype(np.float32)
    ref = legacy_predict_logits(net, x, batch_size, extra=priors)
    out = BatchedPredictor(cpu(batch_size))(net, x, priors)
    assert isinstance(out, list) and [o.shape for o in out] == [(18, 2), (18, 4)]
    for o, r in zip(out, ref, strict=True):
        torch.testing.assert_close(o, r, rtol=0, atol=0)
    with pytest.raises(DataError, match="18 samples but 17 rows"):
        BatchedPredictor(cpu(4))(net, x, priors[:17])


def test_amp_is_never_used_on_the_cpu() -> None:
    net, x = pixel_data()
    predictor = BatchedPredictor(cpu(16, amp=True, amp_dtype="float16"))
    assert predictor.autocast_dtype() is None
    torch.testing.assert_close(predictor(net, x), legacy_predict_logits(net, x, 16),
                               rtol=0, atol=0)


def test_other_dtypes_layouts_and_read_only_inputs() -> None:
    net, x = pixel_data(n=30)
    ref = legacy_predict_logits(net, x, 8)
    f64 = np.asfortranarray(x.astype(np.float64))  # converted batch by batch
    torch.testing.assert_close(BatchedPredictor(cpu(8))(net, f64), ref, rtol=0, atol=0)
    frozen = x.copy()
    frozen.flags.writeable = False  # e.g. a memory-mapped file
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns about non-writable arrays
        torch.testing.assert_close(BatchedPredictor(cpu(8))(net, frozen), ref, rtol=0,
                                   atol=0)


def test_float32_batches_are_views_of_the_input() -> None:
    seen: list[int] = []

    class Spy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(x.data_ptr())
            return x.sum(dim=(1, 2))[:, None]

    x = np.random.default_rng(3).normal(size=(20, 3, 4)).astype(np.float32)
    out = BatchedPredictor(cpu(8))(Spy(), x)
    row = x[0].nbytes
    assert seen == [x.ctypes.data + i * row for i in (0, 8, 16)]  # no copy of x
    np.testing.assert_allclose(out.numpy()[:, 0], x.sum(axis=(1, 2)), rtol=1e-6)


def test_staged_feeding_double_buffers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA feeding (two reusable host buffers, filled alternately, the next batch
    staged while the current one computes), run on the CPU without pinning or streams."""

    class Echo(nn.Module):  # outputs alias the staged input: a reused buffer would show
        def forward(self, x: torch.Tensor, e: torch.Tensor) -> list[torch.Tensor]:
            return [x, e]

    rng = np.random.default_rng(4)
    x, e = rng.normal(size=(23, 3, 2)), rng.normal(size=(23, 5)).astype(np.float32)
    predictor = BatchedPredictor(cpu(5))
    predictor._stage_on_cpu = True
    out = predictor(Echo(), x, e)  # float64 x: converted while staged
    np.testing.assert_array_equal(out[0].numpy(), x.astype(np.float32))
    np.testing.assert_array_equal(out[1].numpy(), e)
    assert sorted(predictor._buffers) == [0, 1]  # two slots, reused
    first = predictor._buffers[0][0][0]
    assert first.shape == (5, 3, 2)
    # the same numbers as the direct path for real modules, with and without a second input
    net, xp = pixel_data()
    torch.testing.assert_close(predictor(net, xp), legacy_predict_logits(net, xp, 5),
                               rtol=0, atol=0)
    assert predictor._buffers[0][0][0].shape == (5, 4, 12)  # new shape: new buffers
    torch.manual_seed(2)
    hier = HierNet()
    xh, ph = rng.normal(size=(12, 10)).astype(np.float32), rng.random((12, 6)).astype(
        np.float32)
    for o, r in zip(predictor(hier, xh, ph), legacy_predict_logits(hier, xh, 5, extra=ph),
                    strict=True):
        torch.testing.assert_close(o, r, rtol=0, atol=0)
    # a copy (as a model sent to Dask workers) leaves the buffers behind, keeps the rest
    import copy

    predictor.batch_cap = 4
    twin = copy.deepcopy(predictor)
    assert twin._buffers == {} and predictor._buffers and twin.batch_cap == 4
    torch.testing.assert_close(twin(net, xp), legacy_predict_logits(net, xp, 4), rtol=0, atol=0)


# ---------------------------------------------------------------------- out of memory
@pytest.mark.parametrize("error,message", [
    (torch.cuda.OutOfMemoryError, "CUDA out of memory. Tried to allocate 2.00 GiB"),
    (RuntimeError, CPU_OOM),
    (MemoryError, "Unable to allocate 3.2 GiB for an array"),
])
def test_out_of_memory_halves_the_batch_and_keeps_it(
        error: type[Exception], message: str, caplog: pytest.LogCaptureFixture) -> None:
    inner, x = pixel_data()
    net = FailsAbove(inner, limit=20, error=error, message=message)
    predictor = BatchedPredictor(cpu(64))
    with caplog.at_level(logging.WARNING, logger="cropscope"):
        out = predictor(net, x)
    # 50 (the first batch, min(64, N)) fails, 25 fails, 12 fits: the rest in batches of 12
    assert net.failures == 2 and net.sizes == [12, 12, 12, 12, 2]
    assert predictor.batch_cap == 12 and predictor.last_batch_size == 12
    torch.testing.assert_close(out, legacy_predict_logits(inner, x, 12), rtol=0, atol=0)
    warnings = [r for r in caplog.records if "out of memory" in r.getMessage()]
    assert len(warnings) == 1 and "batches of 12" in warnings[0].getMessage()
    # the next call starts at the reduced size: no failure, no second warning
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cropscope"):
        again = predictor(net, x)
    assert net.failures == 2 and not caplog.records
    torch.testing.assert_close(again, out, rtol=0, atol=0)


def test_a_batch_of_one_that_fails_is_a_typed_error() -> None:
    inner, x = pixel_data(n=10)
    net = FailsAbove(inner, limit=0)
    predictor = BatchedPredictor(cpu(8), hint="use a smaller tile")
    with pytest.raises(InferenceMemoryError, match="batch of 1") as info:
        predictor(net, x)
    assert isinstance(info.value, ModelError)  # one `error:` line in the CLI
    text = str(info.value)
    assert "8 → 4 → 2 → 1" in text and text.endswith("use a smaller tile")
    assert "\n" not in text and net.failures == 4


def test_other_errors_are_not_retried() -> None:
    class Broken(nn.Module):
        calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            Broken.calls += 1
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x3 and 5x2)")

    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        BatchedPredictor(cpu(4))(Broken(), np.zeros((8, 3), np.float32))
    assert Broken.calls == 1
    assert is_out_of_memory(RuntimeError(CPU_OOM))
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))


# ---------------------------------------------------------------------- settings, errors
def test_cuda_without_cuda_is_a_typed_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    net, x = pixel_data(n=4)
    for device in ("cuda", "cuda:1"):
        with pytest.raises(ModelError, match="CUDA is not available"):
            BatchedPredictor(InferenceSettings(device=device))(net, x)
    assert BatchedPredictor(InferenceSettings(device="auto")).device.type == "cpu"


@pytest.mark.parametrize("kwargs,match", [
    ({"device": "gpu"}, "device must be"),
    ({"batch_size": 0}, "positive integer"),
    ({"batch_size": 2.5}, "positive integer"),
    ({"amp_dtype": "int8"}, "amp_dtype"),
    ({"memory_fraction": 0}, "memory_fraction"),
])
def test_invalid_settings(kwargs: dict, match: str) -> None:
    with pytest.raises(SettingsError, match=match):
        InferenceSettings(**kwargs)


def test_empty_input_is_a_typed_error() -> None:
    net, _ = pixel_data(n=1)
    with pytest.raises(DataError, match="no samples"):
        BatchedPredictor(cpu())(net, np.zeros((0, 4, 12), np.float32))


def test_configure_inference_duck_types() -> None:
    class Takes:
        got: InferenceSettings | None = None

        def set_inference(self, settings: InferenceSettings | None) -> None:
            self.got = settings

    taker, settings = Takes(), cpu(16)
    assert configure_inference(taker, settings) and taker.got is settings
    assert not configure_inference(object(), settings)


# ---------------------------------------------------------------------- automatic size
def test_automatic_batch_size_from_the_memory_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inference, "CPU_BUDGET_BYTES", 4 * 2**20)
    narrow, x = pixel_data(n=500)
    torch.manual_seed(0)
    wide = PixelNet(width=128)
    small, large = BatchedPredictor(cpu()), BatchedPredictor(cpu())
    out = small(narrow, x)
    large(wide, x)
    # a wider network needs more memory per sample: smaller batches in the same budget
    assert 1 <= large.last_batch_size < small.last_batch_size <= inference.MAX_BATCH["cpu"]
    per = small._bytes_per_sample[("PixelNet", (4, 12), None, "cpu")]
    assert per > 4 * 4 * 12  # at least the input and the activations
    assert small.last_batch_size == small._auto_batch(per, 4 * 4 * 12)
    # the first (measured) batch, then the budget's batches: the same numbers as those batches
    bs = small.last_batch_size
    bounds = [0, *range(inference.PROBE_BATCH, 500, bs), 500]
    torch.testing.assert_close(out, legacy_predict_logits(narrow, x, bounds=bounds),
                               rtol=0, atol=0)
    # the measure is kept: the next call uses the budget's size from its first batch
    torch.testing.assert_close(
        small(narrow, x),
        legacy_predict_logits(narrow, x, bounds=[*range(0, 500, bs), 500]), rtol=0, atol=0)
    # a bigger budget, a bigger batch (up to the cap)
    monkeypatch.setattr(inference, "CPU_BUDGET_BYTES", 64 * 2**20)
    assert small._auto_batch(per, 4 * 4 * 12) > bs


def test_explicit_batch_size_wins_and_the_cap_bounds_it() -> None:
    net, x = pixel_data(n=40)
    spy = FailsAbove(net, limit=10**9)
    BatchedPredictor(cpu(16))(spy, x)
    assert spy.sizes == [16, 16, 8]
