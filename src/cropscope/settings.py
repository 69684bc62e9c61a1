"""User settings read from the environment, and the checks of values a user gives: option
values (:func:`check_options`) and the memory an input may ask for (:func:`check_memory`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["DATA_DIR_ENV", "MEMORY_LIMIT_ENV", "check_array_memory", "check_memory",
           "check_options", "data_dir", "format_bytes", "memory_limit"]

#: Environment variable naming the local data directory.
DATA_DIR_ENV = "CROPSCOPE_DATA_DIR"


def data_dir() -> Path:
    """The local data directory.

    ``$CROPSCOPE_DATA_DIR`` if set; otherwise ``../shared/data`` seen from the working
    directory or from the source checkout; otherwise ``~/.cache/cropscope/data`` (where
    downloads go).
    """
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    candidates = [
        Path.cwd() / ".." / "shared" / "data",
        Path(__file__).resolve().parents[2] / ".." / "shared" / "data",
    ]
    for cand in candidates:
        if cand.is_dir():
            return cand.resolve()
    return Path.home() / ".cache" / "cropscope" / "data"


# ---------------------------------------------------------------------------- memory guard
#: Environment variable with the most memory one input may ask for (bytes, or with a
#: K/M/G/T suffix: ``8G``); default: half of the machine's physical memory.
MEMORY_LIMIT_ENV = "CROPSCOPE_MEMORY_LIMIT"
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _physical_memory() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):  # not POSIX: assume 16 GiB
        return 16 << 30


def memory_limit() -> int:
    """The most bytes one array built from a user's input may need (see
    :data:`MEMORY_LIMIT_ENV`); a bad value is a :class:`~cropscope.errors.SettingsError`."""
    from cropscope.errors import SettingsError

    raw = os.environ.get(MEMORY_LIMIT_ENV, "").strip()
    if not raw:
        return _physical_memory() // 2
    text = raw.upper().removesuffix("B").removesuffix("I")
    unit = text[-1] if text and text[-1] in _UNITS else ""
    try:
        value = float(text[: len(text) - len(unit)])
    except ValueError:
        value = -1.0
    if not value > 0 or value != value or value == float("inf"):
        raise SettingsError(f"${MEMORY_LIMIT_ENV} must be a size such as 8G or 512M, "
                            f"got {raw!r}")
    return int(value * _UNITS[unit])


def format_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def check_memory(nbytes: float, what: str) -> None:
    """Refuse (:class:`~cropscope.errors.DataError`, limit in the message) an allocation of
    ``nbytes`` for ``what`` when it is above :func:`memory_limit`: sizes declared by an input
    (a table's samples x dates, a raster header) are checked before anything is allocated."""
    from cropscope.errors import DataError

    limit = memory_limit()
    if nbytes > limit:
        raise DataError(f"{what} would need {format_bytes(nbytes)} of memory, more than the "
                        f"limit of {format_bytes(limit)} (${MEMORY_LIMIT_ENV} sets it)")


def check_array_memory(arrays: Any, what: str) -> None:
    """:func:`check_memory` for arrays a file declares but has not read yet: ``arrays`` is
    one object with ``shape`` and ``dtype`` (an HDF5 dataset, a lazy xarray variable) or
    an iterable of such objects or of ``(shape, dtype)`` pairs. Their total size is checked before
    any of them is read, so a small file that declares a huge array is refused."""
    import numpy as np

    if hasattr(arrays, "shape"):
        arrays = [arrays]
    total = 0.0
    for item in arrays:
        shape, dtype = ((item.shape, item.dtype) if hasattr(item, "shape") else item)
        try:
            itemsize = np.dtype(dtype).itemsize
        except TypeError:
            itemsize = 8  # object / variable-length: at least a pointer each
        total += float(np.prod([float(n) for n in shape], dtype=np.float64)) * max(itemsize, 1)
    check_memory(total, what)


# ---------------------------------------------------------------------------- option values
def check_options(what: str, defaults: dict[str, Any], given: dict[str, Any], *,
                  error: type[Exception] | None = None) -> None:
    """Check option values a user gave (``--set``, a JSON config) against the defaults' types,
    before anything runs: one ``error`` (default :class:`~cropscope.errors.SettingsError`;
    the model registry raises :class:`~cropscope.errors.ModelError`) naming the option.

    - a number option (int/float default) takes a finite number (``lr=abc``, ``lr=inf`` are
      refused); an integer option takes an integer (``epochs=2.5`` is refused) unless it is
      one of :data:`FRACTION_OR_COUNT`;
    - a flag (bool default) takes ``true``/``false``; a list option a list; a mapping a
      mapping; options whose default is ``None`` or a string, and :data:`ANY_KIND` ones,
      are not type-checked (they take several kinds of value, e.g. ``max_features``);
    - ``null`` is accepted (an option's "off", e.g. ``lr_decay=null``) except for
      :data:`NOT_NULL` options;
    - :data:`AT_MOST` options at most their bound, any number but ``seed`` at most
      ``2**31 - 1``;
    - :data:`POSITIVE` options must be > 0, :data:`NON_NEGATIVE` ones >= 0 and
      :data:`UNIT_INTERVAL` ones in [0, 1) (when they are numbers).
    """
    from cropscope.errors import SettingsError

    fault = error or SettingsError
    for key, value in given.items():
        if key not in defaults:
            continue  # unknown options are the model's or the config's own error
        default = defaults[key]
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if key in ANY_KIND or (value is None and key not in NOT_NULL):
            continue
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise fault(f"{what} option {key!r} must be true or false, got {value!r}")
        elif isinstance(default, int | float):
            if not number:
                raise fault(f"{what} option {key!r} must be a number, got {value!r}")
            if value != value or value in (float("inf"), float("-inf")):
                raise fault(f"{what} option {key!r} must be finite, got {value!r}")
            if isinstance(default, int) and not isinstance(value, int) \
                    and key not in FRACTION_OR_COUNT:
                raise fault(f"{what} option {key!r} must be an integer, got {value!r}")
        elif isinstance(default, list | tuple):
            if not isinstance(value, list | tuple):
                raise fault(f"{what} option {key!r} must be a list, got {value!r}")
        elif isinstance(default, dict) and not isinstance(value, dict):
            raise fault(f"{what} option {key!r} must be a mapping, got {value!r}")
        if not number:
            continue
        if (key in AT_MOST and value > AT_MOST[key]) or (key != "seed" and abs(value) > 2**31 - 1):
            limit = AT_MOST.get(key, 2**31 - 1)
            raise fault(f"{what} option {key!r} must be at most {limit:,}, got {value!r}")
        if key in POSITIVE and not value > 0:
            raise fault(f"{what} option {key!r} must be positive, got {value!r}")
        if key in NON_NEGATIVE and not value >= 0:
            raise fault(f"{what} option {key!r} must be >= 0, got {value!r}")
        if key in UNIT_INTERVAL and not 0 <= value < 1:
            raise fault(f"{what} option {key!r} must be in [0, 1), got {value!r}")


#: upper bounds of counts whose cost grows with them (a typo such as an extra zero, or a
#: huge number, is refused instead of running for days); every number option but ``seed`` is
#: also at most 2**31 - 1
AT_MOST = {"n_estimators": 100_000, "epochs": 100_000, "n_models": 1_000}
#: options that must be > 0 wherever they appear
POSITIVE = frozenset({
    "epochs", "batch_size", "lr", "learning_rate", "n_estimators", "num_leaves", "n_models",
    "max_iter", "C", "filters", "hidden", "channels", "n_conv", "kernel_size", "depth",
    "bottleneck", "d_model", "n_head", "d_k", "mlp", "max_dilations", "steps",
    "num_nodes", "patch_size", "lr_decay", "embed_dim", "decoder_dim", "patience", "harmonic_order",
    "spatial_dim", "spatial_depth", "spatial_heads", "spectral_dim", "spectral_depth",
    "spectral_heads", "out_dim", "mlp_ratio", "val_batch_size", "min_samples_leaf",
})
#: options that must be >= 0
NON_NEGATIVE = frozenset({"weight_decay", "warmup_iters", "num_workers", "cutmix", "min_lr",
                          "grad_clip", "min_child_samples", "checkpoint_every", "warmup"})
#: options that are a share in [0, 1)
UNIT_INTERVAL = frozenset({"val_fraction", "holdout", "dropout", "drop_path"})
#: options that take a value of several kinds (``devices``: 2, "auto" or [0, 1])
ANY_KIND = frozenset({"devices", "max_features", "n_features", "class_weight"})
#: options that must be set (``null`` refused)
NOT_NULL = frozenset({"epochs", "batch_size", "lr", "learning_rate", "n_estimators"})
#: integer options that also take a fraction (scikit-learn's convention)
FRACTION_OR_COUNT = frozenset({"min_samples_leaf", "max_features", "n_features"})
