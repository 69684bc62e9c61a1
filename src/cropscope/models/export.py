"""TorchScript and ONNX export of AgriFM (and other dict- or tensor-input networks).

The exported graph takes the sources as positional tensors in the model's source order
(``model.source_names`` for :class:`~cropscope.models.agrifm.AgriFM`) and returns a tuple of
logits (one per hierarchy level; one element for a flat head). Export is by tracing, so the
non-batch input sizes (``T``, ``H``, ``W``) are fixed to those of ``example_inputs``: window
partitions, masks and pads are specialised to them. With ``dynamic_batch`` the ONNX batch
axis stays free.

ONNX needs the ``export`` extra: ``pip install 'cropscope[export]'``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from cropscope.errors import CropscopeError, ModelError

__all__ = ["ExportWrapper", "check_export", "export_onnx", "export_torchscript"]

_EXTRA_HINT = "install the export extra: pip install 'cropscope[export]'"


class ExportWrapper(nn.Module):
    """Positional-tensor front for a model taking ``{source: tensor}``: ``forward(*xs)`` →
    tuple of logits."""

    def __init__(self, model: nn.Module, source_names: Sequence[str] | None) -> None:
        super().__init__()
        self.model = model
        self.source_names = list(source_names) if source_names is not None else None

    def forward(self, *xs: Tensor) -> tuple[Tensor, ...]:
        inputs = (dict(zip(self.source_names, xs, strict=True))
                  if self.source_names is not None else xs[0])
        out = self.model(inputs)
        return tuple(out) if isinstance(out, list | tuple) else (out,)


def _prepare(model: nn.Module, example_inputs: Mapping[str, Tensor] | Tensor
             ) -> tuple[ExportWrapper, tuple[Tensor, ...]]:
    names = getattr(model, "source_names", None)
    if isinstance(example_inputs, Mapping):
        if names is None:
            names = list(example_inputs)
        missing = [n for n in names if n not in example_inputs]
        if missing:
            raise ModelError(f"example_inputs lack the sources {missing}")
        args = tuple(example_inputs[n] for n in names)
    else:
        if names is not None and len(names) != 1:
            raise ModelError(f"the model has sources {list(names)}: give example_inputs as a "
                             "dict")
        args = (example_inputs,)
        names = list(names) if names is not None else None
    return ExportWrapper(model, names).eval(), args


def _target(path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def export_torchscript(model: nn.Module, example_inputs: Mapping[str, Tensor] | Tensor,
                       path: str | Path) -> Path:
    """Trace ``model`` (in eval mode) on ``example_inputs`` and save it to ``path``."""
    wrapper, args = _prepare(model, example_inputs)
    path = _target(path)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)  # jit is deprecated in 2.1x
            traced = torch.jit.trace(wrapper, args, check_trace=False)
        traced.save(str(path))
    finally:
        model.train(was_training)
    return path


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise CropscopeError(f"ONNX export needs onnx and onnxruntime ({exc}); "
                             f"{_EXTRA_HINT}") from exc


def _input_names(wrapper: ExportWrapper, n: int) -> list[str]:
    return list(wrapper.source_names) if wrapper.source_names else [f"input{i}" for i in range(n)]


def export_onnx(model: nn.Module, example_inputs: Mapping[str, Tensor] | Tensor,
                path: str | Path, dynamic_batch: bool = True, opset: int = 17) -> Path:
    """Export ``model`` (eval mode) to ONNX at ``path`` (TorchScript-based exporter; inputs
    named after the sources, outputs ``logits0``, ``logits1``, ...)."""
    _require_onnx()
    if opset < 17:
        raise ModelError(f"opset must be >= 17, got {opset}")
    wrapper, args = _prepare(model, example_inputs)
    path = _target(path)
    with torch.no_grad():
        n_out = len(wrapper(*args))
    inputs = _input_names(wrapper, len(args))
    outputs = [f"logits{i}" for i in range(n_out)]
    axes = {name: {0: "batch"} for name in inputs + outputs} if dynamic_batch else None
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapper, args, str(path), input_names=inputs,
                              output_names=outputs, dynamic_axes=axes, opset_version=opset,
                              dynamo=False)
    finally:
        model.train(was_training)
    return path


def check_export(model: nn.Module, path: str | Path,
                 inputs: Mapping[str, Tensor] | Tensor, atol: float = 1e-4) -> float:
    """Run the exported file at ``path`` (``.onnx`` via onnxruntime, else TorchScript) and
    ``model`` in eval mode on ``inputs``; raise if any output differs by more than ``atol``.
    Returns the largest absolute difference."""
    wrapper, args = _prepare(model, inputs)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            expected = [t.numpy() for t in wrapper(*args)]
    finally:
        model.train(was_training)
    path = Path(path)
    if path.suffix == ".onnx":
        _require_onnx()
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        got = session.run(None, {n: a.numpy() for n, a in zip(names, args, strict=True)})
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            loaded = torch.jit.load(str(path))
        with torch.no_grad():
            got = [t.numpy() for t in loaded(*args)]
    if len(got) != len(expected):
        raise ModelError(f"the export gives {len(got)} outputs, the model {len(expected)}")
    worst = 0.0
    for g, e in zip(got, expected, strict=True):
        if g.shape != e.shape:
            raise ModelError(f"exported output shape {g.shape} != model's {e.shape}")
        worst = max(worst, float(abs(g - e).max()))
    if worst > atol:
        raise ModelError(f"exported outputs differ from the model by {worst:.3g} > {atol}")
    return worst
