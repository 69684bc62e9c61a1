"""Spectral tools for ``(band, y, x)`` scenes: bad bands, band responses, resampling
between sensors, continuum removal and derivatives.

All functions take the scene convention of :mod:`cropscope.hyperspectral` (``wavelength``
and ``fwhm`` coords in nm, ``bad_band`` flags) and return the same convention.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from cropscope.errors import DataError

if TYPE_CHECKING:
    import xarray as xr

__all__ = [
    "LONG_WAVELENGTH_EDGE",
    "WATER_VAPOUR_WINDOWS",
    "bad_band_mask",
    "continuum_removal",
    "drop_bad_bands",
    "gaussian_response",
    "resample",
    "resample_like",
    "resampling_matrix",
    "spectral_derivative",
]

#: Atmospheric water-vapour absorption windows (nm) masked by default.
WATER_VAPOUR_WINDOWS: tuple[tuple[float, float], ...] = ((1340.0, 1460.0), (1790.0, 1960.0))
#: Bands beyond this wavelength (nm) are noisy in most VSWIR sensors.
LONG_WAVELENGTH_EDGE = 2450.0
_FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


def _wavelengths(scene: xr.DataArray) -> np.ndarray:
    if "wavelength" not in scene.coords:
        raise DataError("the scene has no 'wavelength' coordinate (open it with "
                        "open_hyperspectral, or pass wavelengths=)")
    return np.asarray(scene["wavelength"].values, dtype=np.float64)


def _check_scene(scene: xr.DataArray) -> None:
    if "band" not in scene.dims:
        raise DataError(f"expected a scene with a 'band' dimension, got dims {scene.dims}")


# -------------------------------------------------------------------------- bad bands
def bad_band_mask(
    scene: xr.DataArray,
    *,
    windows: Sequence[tuple[float, float]] = WATER_VAPOUR_WINDOWS,
    max_wavelength: float | None = LONG_WAVELENGTH_EDGE,
    min_wavelength: float | None = None,
    use_flags: bool = True,
) -> np.ndarray:
    """Boolean mask over bands: the file's ``bad_band`` flags (``use_flags``), centres in
    any absorption ``window`` (inclusive, nm), above ``max_wavelength`` or below
    ``min_wavelength``. Bands with unknown (NaN) wavelength are only judged by flags."""
    _check_scene(scene)
    wl = _wavelengths(scene)
    bad = np.zeros(wl.shape, bool)
    if use_flags and "bad_band" in scene.coords:
        bad |= np.asarray(scene["bad_band"].values, dtype=bool)
    known = np.isfinite(wl)
    for lo, hi in windows:
        if lo > hi:
            raise DataError(f"absorption window ({lo}, {hi}) has its bounds reversed")
        bad |= known & (wl >= lo) & (wl <= hi)
    if max_wavelength is not None:
        bad |= known & (wl > max_wavelength)
    if min_wavelength is not None:
        bad |= known & (wl < min_wavelength)
    return bad


def drop_bad_bands(
    scene: xr.DataArray,
    *,
    windows: Sequence[tuple[float, float]] = WATER_VAPOUR_WINDOWS,
    max_wavelength: float | None = LONG_WAVELENGTH_EDGE,
    min_wavelength: float | None = None,
    use_flags: bool = True,
) -> xr.DataArray:
    """The scene without the bands of :func:`bad_band_mask`; the dropped band numbers are
    kept in ``attrs["dropped_bands"]``."""
    bad = bad_band_mask(scene, windows=windows, max_wavelength=max_wavelength,
                        min_wavelength=min_wavelength, use_flags=use_flags)
    if bad.all():
        raise DataError("every band is bad; nothing would be left")
    out = scene.isel(band=np.flatnonzero(~bad))
    out.attrs = dict(scene.attrs)
    out.attrs["dropped_bands"] = [int(b) for b in np.asarray(scene["band"].values)[bad]] \
        if np.issubdtype(scene["band"].dtype, np.integer) else np.flatnonzero(bad).tolist()
    return out


# ------------------------------------------------------------------ band responses
def gaussian_response(centre: Any, fwhm: Any, wavelength: Any) -> np.ndarray:
    """Gaussian spectral response functions on a wavelength grid, ``[n_bands, n_grid]``.

    Each row is a density in 1/nm: it integrates to 1 over wavelength (up to the grid's
    truncation), so ``response @ spectrum * dλ`` is the band-averaged value.
    """
    c = np.atleast_1d(np.asarray(centre, dtype=np.float64))
    f = np.broadcast_to(np.asarray(fwhm, dtype=np.float64), c.shape)
    if not (np.isfinite(f).all() and (f > 0).all()):
        raise DataError("every FWHM must be a positive number")
    grid = np.asarray(wavelength, dtype=np.float64)
    sigma = f * _FWHM_TO_SIGMA
    z = (grid[None, :] - c[:, None]) / sigma[:, None]
    return np.exp(-0.5 * z * z) / (sigma[:, None] * np.sqrt(2.0 * np.pi))


def _source_fwhm(wavelength: np.ndarray, fwhm: np.ndarray | None) -> np.ndarray:
    """Source widths: given, else the local band spacing (a common, safe stand-in)."""
    if wavelength.size == 1:
        spacing = np.array([10.0])
    else:
        order = np.argsort(wavelength)
        spacing = np.empty_like(wavelength)
        spacing[order] = np.abs(np.gradient(wavelength[order]))
    if fwhm is None:
        return spacing
    out = np.asarray(fwhm, dtype=np.float64).copy()
    missing = ~np.isfinite(out) | (out <= 0)
    out[missing] = spacing[missing]
    return out


def resampling_matrix(
    source_wavelength: Any,
    target_wavelength: Any,
    target_fwhm: Any,
    source_fwhm: Any = None,
    *,
    step: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Weights ``W [n_target, n_source]`` and the spectral ``coverage [n_target]``.

    Source band ``i`` with Gaussian response ``S_i`` (its FWHM, or the band spacing when
    unknown) stands for the spectrum where it dominates: ``φ_i = S_i / Σ_j S_j`` where the
    source bands reach (``Σ_j S_j ≥ 0.1``), 0 elsewhere. The target band's response
    ``R_t`` is a unit-area Gaussian, and ``w_ti = ∫ R_t φ_i dλ``. ``coverage_t = Σ_i w_ti``
    is the part of the target response the source sees (1 inside its range, less at its
    edges and across gaps); the returned rows are divided by it, so each row sums to 1.
    Rows with zero coverage are all zero.
    """
    src = np.asarray(source_wavelength, dtype=np.float64).ravel()
    tgt = np.asarray(target_wavelength, dtype=np.float64).ravel()
    tgt_fwhm = np.broadcast_to(np.asarray(target_fwhm, dtype=np.float64), tgt.shape)
    if src.size == 0 or tgt.size == 0:
        raise DataError("resampling needs at least one source and one target band")
    if not np.isfinite(src).all():
        raise DataError("source wavelengths must all be known (drop bands without one)")
    if not np.isfinite(tgt).all():
        raise DataError("target wavelengths must all be known")
    src_fwhm = _source_fwhm(src, None if source_fwhm is None else
                            np.asarray(source_fwhm, dtype=np.float64).ravel())
    lo = min(src.min() - 3 * src_fwhm.max(), (tgt - 3 * tgt_fwhm).min())
    hi = max(src.max() + 3 * src_fwhm.max(), (tgt + 3 * tgt_fwhm).max())
    grid = np.arange(lo, hi + step, step)
    dl = np.gradient(grid)  # trapezoid-like quadrature weights
    s_sigma = src_fwhm * _FWHM_TO_SIGMA
    s_resp = np.exp(-0.5 * ((grid[None, :] - src[:, None]) / s_sigma[:, None]) ** 2)
    total = s_resp.sum(axis=0)
    covered = total >= 0.1
    phi = np.where(covered[None, :], s_resp / np.where(covered, total, 1.0)[None, :], 0.0)
    r_resp = gaussian_response(tgt, tgt_fwhm, grid)
    weights = (r_resp * dl[None, :]) @ phi.T
    coverage = weights.sum(axis=1)
    safe = np.where(coverage > 0, coverage, 1.0)
    return weights / safe[:, None], np.clip(coverage, 0.0, 1.0)


def resample(
    scene: xr.DataArray,
    wavelength: Any,
    fwhm: Any,
    *,
    band_names: Sequence[str] | None = None,
    min_coverage: float = 0.5,
    min_valid_weight: float = 0.5,
    exclude_bad: bool = True,
) -> xr.DataArray:
    """Resample a scene to other bands (centres and FWHM in nm) by band response.

    Each output band is the weighted mean of the source bands
    (:func:`resampling_matrix`). Bands flagged ``bad_band`` (``exclude_bad``) and NaN
    pixels are left out and the remaining weights renormalised per pixel; an output is
    NaN where less than ``min_valid_weight`` of its weight remains, and a whole output
    band is NaN (and ``bad_band``) when the source covers less than ``min_coverage`` of
    its response. Output ``band`` coords are ``band_names`` or 1..n.
    """
    import xarray as xr

    _check_scene(scene)
    wl = _wavelengths(scene)
    known = np.isfinite(wl)
    if not known.any():
        raise DataError("the scene's wavelengths are unknown; pass wavelengths= when opening")
    src = scene.isel(band=np.flatnonzero(known)) if not known.all() else scene
    src_fwhm = (np.asarray(src["fwhm"].values, dtype=np.float64) if "fwhm" in src.coords
                else None)
    target = np.atleast_1d(np.asarray(wavelength, dtype=np.float64))
    target_fwhm = np.broadcast_to(np.asarray(fwhm, dtype=np.float64), target.shape).copy()
    weights, coverage = resampling_matrix(wl[known], target, target_fwhm, src_fwhm)

    other_dims = [d for d in src.dims if d != "band"]
    values = np.asarray(src.transpose("band", *other_dims).values, dtype=np.float32)
    n_src = values.shape[0]
    flat = values.reshape(n_src, -1)
    valid = np.isfinite(flat)
    if exclude_bad and "bad_band" in src.coords:
        valid &= ~np.asarray(src["bad_band"].values, dtype=bool)[:, None]
    w32 = weights.astype(np.float32)
    num = w32 @ np.where(valid, flat, 0.0).astype(np.float32)
    den = w32 @ valid.astype(np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(den >= min_valid_weight, num / np.where(den > 0, den, 1.0), np.nan)
    poor = coverage < min_coverage
    out[poor] = np.nan
    out = out.reshape((target.size, *values.shape[1:])).astype(np.float32)

    names: Any = list(band_names) if band_names is not None else np.arange(1, target.size + 1)
    if len(names) != target.size:
        raise DataError(f"{len(names)} band names for {target.size} target bands")
    coords: dict[str, Any] = {
        "band": names,
        "wavelength": ("band", target),
        "fwhm": ("band", target_fwhm),
        "bad_band": ("band", poor | np.isnan(out).reshape(target.size, -1).all(axis=1)),
    }
    for dim in other_dims:
        coords[str(dim)] = src[dim].values
    for name, coord in src.coords.items():  # lat/lon, spatial_ref, ...
        if str(name) not in coords and "band" not in coord.dims:
            coords[str(name)] = coord
    result = xr.DataArray(out, dims=("band", *other_dims), coords=coords, name=scene.name)
    result.attrs = dict(scene.attrs)
    result.attrs["resampled_from"] = str(scene.attrs.get("sensor", "unknown"))
    result.attrs["coverage"] = [float(c) for c in coverage]
    return result


def resample_like(scene: xr.DataArray, like: xr.DataArray, **kwargs: Any) -> xr.DataArray:
    """Resample ``scene`` to the bands (``wavelength``/``fwhm``) of another scene."""
    wl = _wavelengths(like)
    if "fwhm" not in like.coords or not np.isfinite(like["fwhm"].values).all():
        raise DataError("the target scene needs a known FWHM for every band")
    return resample(scene, wl, like["fwhm"].values, **kwargs)


# --------------------------------------------------------------- continuum removal
def _upper_hull(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Upper convex hull of many spectra at once, evaluated at every band.

    ``x [K]`` increasing, ``y [N, K]`` (NaN = missing). Points strictly below (or on) the
    chord between their active neighbours are not hull vertices; removing all of them at
    once and repeating converges to the hull (a handful of vectorised passes).
    """
    n, k = y.shape
    idx = np.arange(k)
    active = np.isfinite(y)
    y0 = np.where(active, y, 0.0)
    rows = np.arange(n)[:, None]

    def neighbours(act: np.ndarray, inclusive: bool) -> tuple[np.ndarray, np.ndarray]:
        prev = np.maximum.accumulate(np.where(act, idx, -1), axis=1)
        nxt = np.minimum.accumulate(np.where(act, idx, k)[:, ::-1], axis=1)[:, ::-1]
        if not inclusive:
            prev = np.concatenate([np.full((n, 1), -1), prev[:, :-1]], axis=1)
            nxt = np.concatenate([nxt[:, 1:], np.full((n, 1), k)], axis=1)
        return prev, nxt

    def chord(prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        p = np.clip(prev, 0, k - 1)
        q = np.clip(nxt, 0, k - 1)
        xp, xq = x[p], x[q]
        yp, yq = y0[rows, p], y0[rows, q]
        span = np.where(xq > xp, xq - xp, 1.0)
        t = np.where(xq > xp, (x[None, :] - xp) / span, 0.0)
        return yp + (yq - yp) * t

    scale = np.nanmax(np.abs(y0)) if y0.size else 1.0
    tol = 1e-12 * max(scale, 1.0)
    for _ in range(k):
        prev, nxt = neighbours(active, inclusive=False)
        interior = active & (prev >= 0) & (nxt < k)
        below = interior & (y0 <= chord(prev, nxt) + tol)
        if not below.any():
            break
        active &= ~below
    prev, nxt = neighbours(active, inclusive=True)
    hull = chord(prev, nxt)
    hull[(prev < 0) | (nxt >= k) | ~np.isfinite(y)] = np.nan
    return hull


def continuum_removal(scene: xr.DataArray, *, return_hull: bool = False) -> Any:
    """Spectrum divided by its upper convex hull (continuum), per pixel.

    Works on any array with a ``band`` dimension and ``wavelength`` coords; NaN bands
    are skipped (and stay NaN). Values are ≤ 1, equal to 1 on hull vertices. With
    ``return_hull`` returns ``(removed, hull)``. Drop bad bands first: an absorption
    window's noise would otherwise shape the hull.
    """
    _check_scene(scene)
    wl = _wavelengths(scene)
    if not np.isfinite(wl).all():
        raise DataError("continuum removal needs every band's wavelength")
    order = np.argsort(wl, kind="stable")
    other = [d for d in scene.dims if d != "band"]
    arr = np.asarray(scene.transpose(*other, "band").values, dtype=np.float64)
    flat = arr.reshape(-1, arr.shape[-1])[:, order]
    hull = np.empty_like(flat)
    chunk = 65536
    for start in range(0, flat.shape[0], chunk):
        hull[start : start + chunk] = _upper_hull(wl[order], flat[start : start + chunk])
    with np.errstate(invalid="ignore", divide="ignore"):
        removed = np.where(hull > 0, flat / hull, np.nan)
    inverse = np.argsort(order)
    shape = arr.shape

    def back(values: np.ndarray) -> xr.DataArray:
        out = values[:, inverse].reshape(shape).astype(np.float32)
        da = scene.transpose(*other, "band").copy(data=out).transpose(*scene.dims)
        return da

    result = back(removed)
    result.attrs = {**scene.attrs, "transform_applied": "continuum removal"}
    if return_hull:
        return result, back(hull)
    return result


def spectral_derivative(scene: xr.DataArray, order: int = 1) -> xr.DataArray:
    """First or second derivative along wavelength (per nm; central differences,
    ``numpy.gradient`` handles uneven band spacing). Bands are taken in wavelength order
    (EnMAP's VNIR and SWIR detectors overlap at 900–1000 nm, where the derivative is
    noisier); the result keeps the scene's band order. NaN bands spread to neighbours,
    so drop bad bands first."""
    if order not in (1, 2):
        raise DataError(f"derivative order must be 1 or 2, got {order}")
    _check_scene(scene)
    wl = _wavelengths(scene)
    if not np.isfinite(wl).all():
        raise DataError("derivatives need every band's wavelength")
    if scene.sizes["band"] < 3:
        raise DataError("derivatives need at least 3 bands")
    order_idx = np.argsort(wl, kind="stable")
    if np.any(np.diff(wl[order_idx]) <= 0):
        raise DataError("derivatives need distinct wavelengths (two bands share one)")
    axis = scene.dims.index("band")
    values = np.take(np.asarray(scene.values, dtype=np.float64), order_idx, axis=axis)
    for _ in range(order):
        values = np.gradient(values, wl[order_idx], axis=axis)
    values = np.take(values, np.argsort(order_idx), axis=axis)
    out = scene.copy(data=values.astype(np.float32))
    base = scene.attrs.get("units", "unknown")
    out.attrs = {**scene.attrs, "units": f"{base} per nm" + ("²" if order == 2 else ""),
                 "derivative_order": order}
    return out
