"""Per-band normalisation statistics of hyperspectral scenes, stored in model cards.

Statistics are computed once on training scenes (NaN ignored, bad bands excluded) and
saved with the model as JSON; at inference they are matched to the new scene by
wavelength and never recomputed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cropscope.errors import DataError

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["BandStatistics", "band_statistics"]


def _none_if_nan(values: Sequence[float]) -> list[float | None]:
    return [None if (v is None or math.isnan(v)) else float(v) for v in values]


def _nan_if_none(values: Sequence[float | None]) -> tuple[float, ...]:
    return tuple(float("nan") if v is None else float(v) for v in values)


@dataclass(frozen=True)
class BandStatistics:
    """Mean and standard deviation per band (NaN for excluded bad bands)."""

    wavelength: tuple[float, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    bad_band: tuple[bool, ...]
    n_pixels: int

    def __post_init__(self) -> None:
        n = len(self.wavelength)
        if not (len(self.mean) == len(self.std) == len(self.bad_band) == n):
            raise DataError("band statistics need one wavelength, mean, std and flag per band")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN written as ``null``)."""
        return {
            "wavelength": _none_if_nan(self.wavelength),
            "mean": _none_if_nan(self.mean),
            "std": _none_if_nan(self.std),
            "bad_band": [bool(b) for b in self.bad_band],
            "n_pixels": int(self.n_pixels),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BandStatistics:
        """Inverse of :meth:`to_dict`."""
        try:
            return cls(
                wavelength=_nan_if_none(data["wavelength"]),
                mean=_nan_if_none(data["mean"]),
                std=_nan_if_none(data["std"]),
                bad_band=tuple(bool(b) for b in data["bad_band"]),
                n_pixels=int(data["n_pixels"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"malformed band statistics: {exc}") from None

    def to_json(self, path: str | Path | None = None) -> str:
        """The statistics as JSON text; also written (atomically) to ``path`` if given."""
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            from cropscope.io import atomic_path

            with atomic_path(path) as tmp:
                tmp.write_text(text + "\n")
        return text

    @classmethod
    def from_json(cls, source: str | Path) -> BandStatistics:
        """Read statistics from JSON text or a JSON file."""
        text = str(source)
        if not text.lstrip().startswith("{"):
            path = Path(text)
            if not path.is_file():
                raise DataError(f"band statistics file not found: {path}")
            text = path.read_text()
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise DataError(f"band statistics are not valid JSON: {exc}") from None

    def normalise(self, scene: xr.DataArray, *, tolerance_nm: float = 1.0) -> xr.DataArray:
        """``(x − mean) / std`` per band; the scene's bands must match by wavelength
        (within ``tolerance_nm``, same count). Bad bands (no statistics) become NaN; a
        zero std divides by 1."""
        if "wavelength" not in scene.coords or scene.sizes.get("band") != len(self.mean):
            raise DataError(f"the scene has {scene.sizes.get('band')} bands, the statistics "
                            f"{len(self.mean)}")
        wl = np.asarray(scene["wavelength"].values, dtype=np.float64)
        ref = np.asarray(self.wavelength, dtype=np.float64)
        both = np.isfinite(wl) & np.isfinite(ref)
        if (np.isfinite(wl) != np.isfinite(ref)).any() or \
                (np.abs(wl[both] - ref[both]) > tolerance_nm).any():
            worst = float(np.nanmax(np.abs(wl - ref))) if both.any() else float("nan")
            raise DataError(f"the scene's wavelengths differ from the statistics' by up to "
                            f"{worst:.2f} nm (tolerance {tolerance_nm} nm)")
        mean = np.asarray(self.mean, dtype=np.float64)
        std = np.asarray(self.std, dtype=np.float64)
        std = np.where(std > 0, std, 1.0)
        shape = [1] * scene.ndim
        shape[scene.dims.index("band")] = -1
        values = (np.asarray(scene.values, np.float64) - mean.reshape(shape)) / std.reshape(shape)
        out = scene.copy(data=values.astype(np.float32))
        out.attrs = {**scene.attrs, "normalised": True}
        return out


def band_statistics(
    scenes: xr.DataArray | Sequence[xr.DataArray],
    *,
    exclude: np.ndarray | Sequence[bool] | None = None,
) -> BandStatistics:
    """Per-band mean/std (NaN ignored) over one or several scenes with the same bands.

    Bands flagged ``bad_band`` (or in ``exclude``, e.g. from
    :func:`~cropscope.hyperspectral.spectral.bad_band_mask`) get NaN statistics.
    Uses float64 sums, so many scenes can be combined.
    """
    import xarray as xr

    items = [scenes] if isinstance(scenes, xr.DataArray) else list(scenes)
    if not items:
        raise DataError("no scenes given for band statistics")
    first = items[0]
    n_bands = first.sizes["band"]
    wl = np.asarray(first["wavelength"].values, dtype=np.float64)
    bad = (np.asarray(first["bad_band"].values, dtype=bool) if "bad_band" in first.coords
           else np.zeros(n_bands, bool))
    total = np.zeros(n_bands)
    total_sq = np.zeros(n_bands)
    count = np.zeros(n_bands)
    for scene in items:
        if scene.sizes["band"] != n_bands or not np.allclose(
            np.asarray(scene["wavelength"].values, dtype=np.float64), wl, equal_nan=True
        ):
            raise DataError("all scenes must have the same bands (count and wavelengths)")
        if "bad_band" in scene.coords:
            bad = bad | np.asarray(scene["bad_band"].values, dtype=bool)
        values = np.asarray(scene.transpose("band", ...).values, dtype=np.float64)
        flat = values.reshape(n_bands, -1)
        finite = np.isfinite(flat)
        z = np.where(finite, flat, 0.0)
        total += z.sum(axis=1)
        total_sq += (z * z).sum(axis=1)
        count += finite.sum(axis=1)
    if exclude is not None:
        ex = np.asarray(exclude, dtype=bool)
        if ex.shape != (n_bands,):
            raise DataError(f"exclude has {ex.size} flags for {n_bands} bands")
        bad = bad | ex
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
        var = np.maximum(total_sq / count - mean * mean, 0.0)
    std = np.sqrt(var)
    unusable = bad | (count == 0)
    mean[unusable] = np.nan
    std[unusable] = np.nan
    n_pixels = sum(math.prod(s.sizes[d] for d in s.dims if d != "band") for s in items)
    return BandStatistics(
        wavelength=tuple(float(v) for v in wl),
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
        bad_band=tuple(bool(b) for b in unusable),
        n_pixels=n_pixels,
    )
