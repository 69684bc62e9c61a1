"""Training state (weights, optimiser, scheduler, scaler, RNG, epoch, history) without pickle.

:func:`save_state` writes a nested structure of dicts, lists, tuples, tensors, NumPy arrays,
numbers, strings, booleans and ``None`` as two files:

- ``<path>.safetensors``: every tensor and array, under a flattened key (``model.conv.weight``,
  ``optimizer.state.0.exp_avg``, ...);
- ``<path>.json``: everything else, with a placeholder (``{"__tensor__": key}``) where a tensor
  was. Non-finite floats, tuples, dicts with integer keys (an optimiser's ``state``) and NumPy
  arrays (NumPy's RNG state) are tagged so that :func:`load_state` gives back the same types.

Both files are written atomically, the JSON last; a random id stored in both tells a pair that
belongs together from a half-written one. The new tensors wait in a hidden pending file
until the JSON names them, so a write stopped at any point leaves the old state or the new
one readable (never a torn pair). :func:`load_state` validates the JSON's structure
strictly (known tags only, every placeholder resolves, every stored tensor is used once,
arrays only of plain numeric dtypes) and never unpickles anything.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cropscope.errors import ModelError
from cropscope.io import atomic_path

if TYPE_CHECKING:
    import torch

__all__ = ["STATE_FORMAT", "load_state", "pending_path", "read_safetensors", "save_state",
           "state_paths"]

STATE_FORMAT = "cropscope-state-v1"
#: NumPy dtypes an array may have (stored bit-exactly; unsigned wider than 8 bits as signed)
_NP_DTYPES = {
    "bool": np.bool_, "int8": np.int8, "int16": np.int16, "int32": np.int32,
    "int64": np.int64, "uint8": np.uint8, "uint16": np.uint16, "uint32": np.uint32,
    "uint64": np.uint64, "float16": np.float16, "float32": np.float32, "float64": np.float64,
}
_AS_SIGNED = {"uint16": np.int16, "uint32": np.int32, "uint64": np.int64}
_TAGS = {"__tensor__", "__ndarray__", "__tuple__", "__items__", "__float__"}
_MAX_DEPTH = 64


def state_paths(path: str | Path) -> tuple[Path, Path]:
    """The ``(<path>.safetensors, <path>.json)`` pair of a state (``path`` without suffix)."""
    path = Path(path)
    return (path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json"))


class _Encoder:
    def __init__(self) -> None:
        self.tensors: dict[str, Any] = {}
        self._storages: set[int] = set()

    def key(self, parts: list[str]) -> str:
        base = ".".join(parts) or "tensor"
        key, n = base, 1
        while key in self.tensors:
            key, n = f"{base}#{n}", n + 1
        return key

    def add(self, parts: list[str], t: torch.Tensor) -> str:
        import torch

        if t.layout != torch.strided:
            raise TypeError(f"cannot store a {t.layout} tensor at {'.'.join(parts)!r}")
        t = t.detach().to("cpu").contiguous()
        # safetensors refuses tensors that share memory: copy a storage seen before
        ptr = t.untyped_storage().data_ptr() if t.numel() else 0
        if ptr and ptr in self._storages:
            t = t.clone()
            ptr = t.untyped_storage().data_ptr()
        if ptr:
            self._storages.add(ptr)
        key = self.key(parts)
        self.tensors[key] = t
        return key

    def encode(self, obj: Any, parts: list[str], depth: int = 0) -> Any:
        import torch

        if depth > _MAX_DEPTH:
            raise TypeError(f"state nested deeper than {_MAX_DEPTH} levels")
        if obj is None or isinstance(obj, bool | str):
            return obj
        if isinstance(obj, int | np.integer) and not isinstance(obj, bool):
            return int(obj)
        if isinstance(obj, np.bool_):
            return bool(obj)
        if isinstance(obj, float | np.floating):
            v = float(obj)
            if math.isfinite(v):
                return v
            return {"__float__": "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")}
        if isinstance(obj, torch.Tensor):
            return {"__tensor__": self.add(parts, obj)}
        if isinstance(obj, np.ndarray):
            name = obj.dtype.name
            if name not in _NP_DTYPES or obj.dtype.byteorder == ">":
                raise TypeError(f"cannot store a NumPy array of dtype {obj.dtype} at "
                                f"{'.'.join(parts)!r}")
            arr = np.ascontiguousarray(obj)
            if name in _AS_SIGNED:
                arr = arr.view(_AS_SIGNED[name])
            return {"__ndarray__": self.add(parts, torch.from_numpy(arr.copy())),
                    "dtype": name}
        if isinstance(obj, tuple):
            return {"__tuple__": [self.encode(v, [*parts, str(i)], depth + 1)
                                  for i, v in enumerate(obj)]}
        if isinstance(obj, list):
            return [self.encode(v, [*parts, str(i)], depth + 1) for i, v in enumerate(obj)]
        if isinstance(obj, Mapping):
            keys = list(obj)
            plain = all(isinstance(k, str) and not k.startswith("__") for k in keys)
            if plain:
                return {k: self.encode(obj[k], [*parts, k], depth + 1) for k in keys}
            items = []
            for k in keys:
                if isinstance(k, bool) or not isinstance(k, str | int | np.integer):
                    raise TypeError(f"cannot store a dict key of type {type(k).__name__} at "
                                    f"{'.'.join(parts)!r}")
                kk = k if isinstance(k, str) else int(k)
                items.append([kk, self.encode(obj[k], [*parts, str(kk)], depth + 1)])
            return {"__items__": items}
        raise TypeError(f"cannot store a {type(obj).__name__} at {'.'.join(parts)!r} in a "
                        "training state")


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` as ``<path>.safetensors`` + ``<path>.json`` (see the module doc).

    Raises ``TypeError`` for a value that is not one of the supported kinds.
    """
    from safetensors.torch import save_file

    if not isinstance(state, Mapping):
        raise TypeError(f"a state is a dict, got {type(state).__name__}")
    enc = _Encoder()
    body = enc.encode(dict(state), [])
    sid = uuid.uuid4().hex
    st_path, js_path = state_paths(path)
    pending = pending_path(st_path)
    # the pair is replaced in three steps so that a stop between any two leaves one
    # complete state: the tensors go to a hidden pending file, the JSON (the commit) names
    # their id, then the pending file takes the place of the old tensors; load_state reads
    # the pending file when the JSON already names it
    with atomic_path(pending) as tmp:
        save_file(enc.tensors, str(tmp), metadata={"format": STATE_FORMAT, "state_id": sid})
    doc = {"format": STATE_FORMAT, "id": sid, "tensors": len(enc.tensors), "state": body}
    with atomic_path(js_path) as tmp:
        tmp.write_text(json.dumps(doc, allow_nan=False) + "\n")
    os.replace(pending, st_path)


def pending_path(st_path: Path) -> Path:
    """Where :func:`save_state` writes the tensors before the JSON commits them (hidden, so
    never listed in a run's manifest)."""
    return st_path.with_name(f".{st_path.name}.pending")


class _Decoder:
    def __init__(self, source: str, tensors: dict[str, Any]) -> None:
        self.source = source
        self.tensors = tensors
        self.used: set[str] = set()

    def fail(self, what: str) -> ModelError:
        return ModelError(f"{self.source}: malformed training state ({what})")

    def tensor(self, key: Any) -> Any:
        if not isinstance(key, str) or key not in self.tensors:
            raise self.fail(f"placeholder for a tensor {key!r} the safetensors file lacks")
        if key in self.used:
            raise self.fail(f"tensor {key!r} referenced twice")
        self.used.add(key)
        return self.tensors[key]

    def decode(self, node: Any, depth: int = 0) -> Any:
        if depth > _MAX_DEPTH:
            raise self.fail(f"nested deeper than {_MAX_DEPTH} levels")
        if node is None or isinstance(node, bool | str | int):
            return node
        if isinstance(node, float):
            if not math.isfinite(node):
                raise self.fail("a bare non-finite number")
            return node
        if isinstance(node, list):
            return [self.decode(v, depth + 1) for v in node]
        if not isinstance(node, dict):
            raise self.fail(f"unexpected JSON value of type {type(node).__name__}")
        tags = [k for k in node if k.startswith("__")]
        if not tags:
            return {k: self.decode(v, depth + 1) for k, v in node.items()}
        tag = tags[0]
        if len(tags) != 1 or tag not in _TAGS:
            raise self.fail(f"unknown tag(s) {sorted(tags)}")
        if tag == "__tensor__":
            if set(node) != {tag}:
                raise self.fail("a tensor placeholder with extra fields")
            return self.tensor(node[tag])
        if tag == "__ndarray__":
            dtype = node.get("dtype")
            if set(node) != {tag, "dtype"} or dtype not in _NP_DTYPES:
                raise self.fail(f"an array placeholder with dtype {dtype!r}")
            arr = self.tensor(node[tag]).numpy()
            want = np.dtype(_NP_DTYPES[dtype])
            stored: np.dtype[Any] = np.dtype(_AS_SIGNED.get(dtype, _NP_DTYPES[dtype]))
            if arr.dtype != stored:
                raise self.fail(f"array {node[tag]!r} stored as {arr.dtype}, expected {stored}")
            return arr.view(want).copy()
        if set(node) != {tag}:
            raise self.fail(f"{tag} with extra fields")
        value = node[tag]
        if tag == "__float__":
            table = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
            if value not in table:
                raise self.fail(f"unknown float {value!r}")
            return table[value]
        if tag == "__tuple__":
            if not isinstance(value, list):
                raise self.fail("a tuple that is not a list")
            return tuple(self.decode(v, depth + 1) for v in value)
        # __items__: a dict with integer (or reserved) keys
        if not isinstance(value, list):
            raise self.fail("dict items that are not a list")
        out: dict[Any, Any] = {}
        for item in value:
            if not (isinstance(item, list) and len(item) == 2):
                raise self.fail("a dict item that is not a [key, value] pair")
            k, v = item
            if isinstance(k, bool) or not isinstance(k, str | int):
                raise self.fail(f"a dict key of type {type(k).__name__}")
            if k in out:
                raise self.fail(f"duplicate dict key {k!r}")
            out[k] = self.decode(v, depth + 1)
        return out


def read_safetensors(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The tensors (on the CPU) and the header metadata of a safetensors file; a missing,
    damaged or foreign file is one :class:`ModelError`."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise ModelError(f"weights not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = dict(load_file(str(path), device="cpu"))
    except Exception as exc:  # safetensors raises its own error types
        raise ModelError(f"{path}: unreadable safetensors file ({exc})") from None
    return tensors, dict(meta)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def load_state(path: Path) -> dict[str, Any]:
    """Read a state written by :func:`save_state` (tensors on the CPU).

    Raises :class:`~cropscope.errors.ModelError` when a file is missing, the JSON does not
    have the expected structure, the two files do not belong together, or a tensor is
    missing, extra or of the wrong kind. Nothing is unpickled or imported.
    """
    st_path, js_path = state_paths(path)
    pending = pending_path(st_path)
    if not js_path.is_file():
        raise ModelError(f"training state incomplete: {js_path} is missing")
    if not st_path.is_file() and not pending.is_file():
        raise ModelError(f"training state incomplete: {st_path} is missing")
    try:
        doc = json.loads(js_path.read_text(), parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelError(f"{js_path}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or set(doc) != {"format", "id", "tensors", "state"}:
        raise ModelError(f"{js_path}: not a cropscope training state")
    if doc["format"] != STATE_FORMAT:
        raise ModelError(f"{js_path}: unknown state format {doc['format']!r}")
    if not isinstance(doc["state"], dict) or not isinstance(doc["tensors"], int):
        raise ModelError(f"{js_path}: malformed training state")
    tensors, meta = read_safetensors(st_path) if st_path.is_file() else ({}, {})
    if meta.get("state_id") != doc["id"] and pending.is_file():
        # stopped after the JSON committed a new state but before its tensors moved in
        tensors, meta = read_safetensors(pending)
    if meta.get("state_id") != doc["id"] or meta.get("format") != STATE_FORMAT:
        raise ModelError(f"{st_path} and {js_path.name} do not belong together (an "
                         "interrupted write?)")
    if len(tensors) != doc["tensors"]:
        raise ModelError(f"{st_path}: {len(tensors)} tensors, the JSON expects "
                         f"{doc['tensors']}")
    dec = _Decoder(str(js_path), tensors)
    state = dec.decode(doc["state"])
    unused = sorted(set(tensors) - dec.used)
    if unused:
        raise ModelError(f"{st_path}: tensors {unused[:4]} are not part of the state")
    if not isinstance(state, dict):  # pragma: no cover - the top level is checked above
        raise ModelError(f"{js_path}: malformed training state")
    return state
