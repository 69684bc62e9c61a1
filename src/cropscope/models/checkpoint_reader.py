"""Reading third-party checkpoint files safely: safetensors, bare state dicts, and the
training checkpoints of the official AgriFM / H2Crop code (mmengine's layout).

A ``.pth`` file is a pickle, and unpickling runs whatever the file names. Here every ``.pth``
goes through ``torch.load(weights_only=True)``: torch's restricted unpickler, which builds
tensors, containers and plain values and refuses every other global. An mmengine training
checkpoint (``meta``, ``state_dict``, ``message_hub``, ``optimizer``, ``param_schedulers``)
also names a handful of other globals; exactly those are declared, each bound to something
inert (:data:`OFFICIAL_GLOBALS`):

=====================================================  ===============================
global in the file                                     bound to
=====================================================  ===============================
``mmengine.logging.history_buffer.HistoryBuffer``      :class:`LoggedHistory` (keeps the
                                                       logged values as plain data)
``builtins.getattr``                                   :func:`_history_statistic`: only
                                                       ``getattr(HistoryBuffer, "min" |
                                                       "max" | "mean" | "current")``, which
                                                       yields the statistic's name
``numpy.core.multiarray._reconstruct`` / ``scalar``,   NumPy's array and scalar
``numpy.ndarray``, ``numpy.dtype`` + dtype classes     reconstruction (data only)
=====================================================  ===============================

Anything else — a file naming ``os.system``, ``subprocess``, ``builtins.eval`` or any other
class — is refused with :class:`~cropscope.errors.ModelError` naming the global, before any
of it runs (the allow-list is checked when the global is read, ahead of the call).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cropscope.errors import ModelError

__all__ = ["OFFICIAL_GLOBALS", "CheckpointFile", "LoggedHistory", "read_checkpoint"]

_STATISTICS = ("min", "max", "mean", "current")


class LoggedHistory:
    """Inert stand-in for mmengine's ``HistoryBuffer``: its pickled state (logged values
    and counts) as plain data; no method of the original exists here."""

    def __init__(self) -> None:
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def values(self) -> list[float]:
        """The logged values, when the state holds them as ``_log_history``."""
        hist = self.state.get("_log_history") if isinstance(self.state, dict) else None
        return [] if hist is None else [float(v) for v in np.asarray(hist).ravel()]


def _history_statistic(obj: Any, name: str) -> str:
    """The one ``getattr`` an mmengine checkpoint uses: a HistoryBuffer statistic method,
    kept as its name."""
    if obj is not LoggedHistory or name not in _STATISTICS:
        raise ModelError(f"the checkpoint asks for getattr({obj!r}, {name!r}), which is not "
                         "allowed")
    return f"HistoryBuffer.{name}"


def _numpy_globals() -> list[Any]:
    from numpy._core import multiarray

    dtypes = [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")
              and n not in ("ObjectDType", "VoidDType", "StringDType")]
    return [(multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
            (multiarray.scalar, "numpy.core.multiarray.scalar"),
            (multiarray._reconstruct, "numpy._core.multiarray._reconstruct"),
            (multiarray.scalar, "numpy._core.multiarray.scalar"),
            np.ndarray, np.dtype, *dtypes]


#: the globals an official (mmengine) training checkpoint may name, bound to inert things
OFFICIAL_GLOBALS: list[Any] = [
    (LoggedHistory, "mmengine.logging.history_buffer.HistoryBuffer"),
    (_history_statistic, "builtins.getattr"),
    (_history_statistic, "__builtin__.getattr"),
]


@dataclass
class CheckpointFile:
    """What :func:`read_checkpoint` found: the weights and what came with them."""

    path: Path
    #: parameter and buffer tensors (CPU), in the file's order
    state_dict: dict[str, Tensor]
    #: ``"safetensors"``, ``"state-dict"`` (a bare ``.pth``) or ``"mmengine"``
    layout: str
    #: mmengine's ``meta`` (epoch, iteration, seed, config text...) or safetensors metadata
    meta: dict[str, Any] = field(default_factory=dict)
    #: other top-level entries (``message_hub``, ``optimizer``, ``param_schedulers``) as data
    extra: dict[str, Any] = field(default_factory=dict)


def _reason(message: str) -> str:
    """The useful line of torch's refusal: which global the file names."""
    import re

    found = re.search(r"GLOBAL ([\w.]+)", message)
    if found:
        return (f"it names {found.group(1)}, which is not allowed (only tensors, containers, "
                "NumPy arrays and the globals of official AgriFM/H2Crop checkpoints are)")
    if "weights_only" in message or "Weights only load failed" in message:
        # torch's text goes on to suggest weights_only=False: never safe on a file a user
        # hands over, and not something cropscope does
        return "torch's safe loader refused it (a damaged file, or not a torch checkpoint)"
    if "zip archive" in message or "PytorchStreamReader" in message:
        return "not a torch checkpoint (the file is damaged or of another kind)"
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    return lines[0][:300] if lines else "unreadable"


def read_checkpoint(path: str | Path) -> CheckpointFile:
    """Read ``path`` safely (see the module doc); a ``.safetensors`` file or a torch file."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"no checkpoint file at {p}")
    if p.suffix == ".safetensors":
        from cropscope.runs.state import read_safetensors

        tensors, header = read_safetensors(p)
        return CheckpointFile(p, dict(tensors), "safetensors", dict(header))
    try:
        with torch.serialization.safe_globals([*OFFICIAL_GLOBALS, *_numpy_globals()]):
            obj: Any = torch.load(p, map_location="cpu", weights_only=True)
    except ModelError:
        raise
    except Exception as exc:  # torch's refusal or a damaged file: nothing was run
        raise ModelError(f"{p} is not a checkpoint cropscope can read safely: "
                         f"{_reason(str(exc))}") from None
    if not isinstance(obj, Mapping):
        raise ModelError(f"{p} does not hold a state dict (a dict of weights)")
    if isinstance(obj.get("state_dict"), Mapping):
        layout, state = ("mmengine" if "meta" in obj else "state-dict"), obj["state_dict"]
        meta = dict(obj["meta"]) if isinstance(obj.get("meta"), Mapping) else {}
        extra = {k: v for k, v in obj.items() if k not in ("state_dict", "meta")}
    elif isinstance(obj.get("model"), Mapping):
        layout, state, meta, extra = "state-dict", obj["model"], {}, {
            k: v for k, v in obj.items() if k != "model"}
    else:
        layout, state, meta, extra = "state-dict", obj, {}, {}
    bad = [str(k) for k, v in state.items() if not isinstance(v, Tensor)]
    if bad:
        raise ModelError(f"{p}: the state dict holds non-tensors ({', '.join(bad[:5])})")
    return CheckpointFile(p, {str(k): v for k, v in state.items()}, layout, meta, extra)
