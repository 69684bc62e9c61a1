"""Checkpoint files of a segmentation run directory: safetensors and JSON, never pickle.

- ``best.safetensors``: the weights of the best validation epoch (a plain state dict that
  any safetensors reader loads); its header metadata holds the epoch and that epoch's
  record.
- ``last.safetensors`` + ``last.json`` (:func:`cropscope.runs.state.save_state`): model,
  optimiser, scheduler, scaler, RNG states, epoch, history, config and the caller's extra
  state; what ``resume=True`` continues from.
- ``history.json``: the config, the best epoch and one record per epoch.

:func:`read_checkpoint_weights` gives the weights of either (``"best"`` falls back to
``"last"`` for a run without validation data).
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import Tensor

from cropscope.errors import ModelError
from cropscope.io import atomic_path
from cropscope.runs.state import (
    load_state,
    pending_path,
    read_safetensors,
    save_state,
    state_paths,
)

__all__ = [
    "BEST_FILE",
    "HISTORY_FILE",
    "LAST",
    "WEIGHTS_FORMAT",
    "has_last",
    "read_checkpoint_weights",
    "read_last",
    "read_weights",
    "rng_state",
    "set_rng_state",
    "write_last",
    "write_weights",
]

#: stem of the resume state (``last.safetensors`` + ``last.json``)
LAST = "last"
BEST_FILE = "best.safetensors"
HISTORY_FILE = "history.json"
WEIGHTS_FORMAT = "cropscope-weights-v1"


def rng_state() -> dict[str, Any]:
    """Python's, NumPy's and torch's (CPU, CUDA) RNG states, storable by ``save_state``
    (torch's as uint8 tensors)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(),
                             "numpy": np.random.get_state(),  # noqa: NPY002
                             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` gave (after a round trip through ``load_state``)."""
    try:
        torch.set_rng_state(state["torch"])
        np.random.set_state(tuple(state["numpy"]))  # noqa: NPY002 - global state on purpose
        py = state["python"]
        random.setstate((py[0], tuple(py[1]), py[2]))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(list(state["cuda"]))
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ModelError(f"the checkpoint's RNG state is unusable: {exc}") from None


def write_weights(path: Path, weights: Mapping[str, Tensor],
                  meta: Mapping[str, Any] | None = None) -> None:
    """A state dict as safetensors (atomically); ``meta`` (JSON-able) goes into the header."""
    state = {k: v.detach().cpu().contiguous() for k, v in weights.items()}
    header = {"format": WEIGHTS_FORMAT, "meta": json.dumps(dict(meta or {}), allow_nan=True)}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=header)


def read_weights(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The tensors of a safetensors file and the ``meta`` written by :func:`write_weights`
    (empty for other files)."""
    weights, header = read_safetensors(path)
    meta: Any = {}
    if header.get("format") == WEIGHTS_FORMAT:
        try:
            meta = json.loads(header.get("meta", "{}"))
        except ValueError:
            raise ModelError(f"{path}: malformed metadata") from None
        if not isinstance(meta, dict):
            raise ModelError(f"{path}: malformed metadata")
    return weights, meta


def has_last(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a resume state (its JSON and tensors; the tensors may still
    wait in the pending file of a write stopped just after the JSON committed them)."""
    st_path, js_path = state_paths(run_dir / LAST)
    return js_path.is_file() and (st_path.is_file()
                                  or pending_path(st_path).is_file())


def write_last(run_dir: Path, state: Mapping[str, Any]) -> None:
    """The resume state: ``last.safetensors`` + ``last.json``."""
    save_state(run_dir / LAST, dict(state))


def read_last(run_dir: Path) -> dict[str, Any]:
    """The resume state written by :func:`write_last` (validated, tensors on the CPU)."""
    state = load_state(run_dir / LAST)
    for key, kind in (("model", dict), ("optimizer", dict), ("scheduler", dict),
                      ("scaler", dict), ("epoch", int), ("config", dict), ("history", list)):
        if not isinstance(state.get(key), kind):
            raise ModelError(f"{run_dir / LAST}.json: {key!r} missing or malformed")
    if not all(isinstance(v, Tensor) for v in state["model"].values()):
        raise ModelError(f"{run_dir / LAST}.json: the model state holds non-tensors")
    return state


def read_checkpoint_weights(run_dir: Path, which: str = "best"
                            ) -> tuple[dict[str, Tensor], dict[str, Any], Path]:
    """Weights of a run's ``"best"`` or ``"last"`` checkpoint, with their metadata (at
    least ``epoch``) and the file read. ``"best"`` falls back to ``"last"`` when the run
    has no ``best.safetensors`` (no validation data)."""
    if which not in ("best", "last"):
        raise ModelError(f"checkpoint must be 'best' or 'last', got {which!r}")
    best = run_dir / BEST_FILE
    if which == "best" and best.is_file():
        weights, meta = read_weights(best)
        return weights, meta, best
    if not has_last(run_dir):
        raise ModelError(f"no checkpoint in {run_dir} (neither {BEST_FILE} nor "
                         f"{LAST}.safetensors + {LAST}.json)")
    state = read_last(run_dir)
    return dict(state["model"]), {"epoch": state["epoch"]}, state_paths(run_dir / LAST)[0]
