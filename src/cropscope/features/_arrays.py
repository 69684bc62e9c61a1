"""Argument checks shared by the array-level feature kernels."""

from __future__ import annotations

import numpy as np

from cropscope.errors import DataError


def check_series_arrays(
    values: np.ndarray,
    time: np.ndarray,
    mask: np.ndarray | None,
    time_name: str,
    time_dtype: type,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Validate ``values [N, T, C]``, a per-step ``time`` (``[T]`` or ``[N, T]``) and an
    optional ``mask [N, T]``; return them as float32 / ``time_dtype`` / bool arrays."""
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 3:
        raise DataError(f"values must be [N, T, C], got shape {values.shape}")
    n, t, _ = values.shape
    time = np.asarray(time, dtype=time_dtype)
    if time.shape not in {(t,), (n, t)}:
        raise DataError(f"{time_name} must be [T] or [N, T] for {(n, t)}, got {time.shape}")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (n, t):
            raise DataError(f"mask must be [N, T] = {(n, t)}, got {mask.shape}")
    return values, time, mask
