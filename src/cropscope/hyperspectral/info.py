"""A summary of a hyperspectral scene: sensor, shape, wavelengths, bad bands, values, grid
(:func:`scene_info`, :func:`format_scene_info`; what ``cropscope hsi info`` prints)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["band_ranges", "format_scene_info", "scene_info"]


def band_ranges(numbers: list[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``"1-3, 7"``."""
    if not numbers:
        return ""
    parts = []
    start = prev = numbers[0]
    for n in [*numbers[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        parts.append(f"{start}-{prev}" if prev != start else f"{start}")
        if n is not None:
            start = prev = n
    return ", ".join(parts)


def scene_info(scene: xr.DataArray) -> dict[str, Any]:
    """What ``cropscope hsi info`` reports about a scene (from
    :func:`~cropscope.hyperspectral.open_hyperspectral`), as a JSON-ready dict: file, format,
    sensor, units, shape, wavelength range, bad bands, value range, grid and nodata."""
    values = np.asarray(scene.values)
    finite = np.isfinite(values)
    wl = np.asarray(scene["wavelength"].values, dtype=np.float64)
    fwhm = np.asarray(scene["fwhm"].values, dtype=np.float64)
    bad = np.asarray(scene["bad_band"].values, dtype=bool)
    bands = [int(b) for b in np.asarray(scene["band"].values)[bad]]
    known = np.isfinite(wl)
    crs_text = None
    pixel = None
    if "transform" in scene.attrs:
        a, _, _, _, e, _ = scene.attrs["transform"]
        pixel = [abs(float(a)), abs(float(e))]
    if scene.attrs.get("crs"):
        from rasterio.crs import CRS

        crs = CRS.from_wkt(scene.attrs["crs"])
        epsg = crs.to_epsg()
        crs_text = f"EPSG:{epsg}" if epsg else crs.to_string()
    return {
        "file": scene.attrs.get("source", ""),
        "format": scene.attrs.get("format", ""),
        "sensor": scene.attrs.get("sensor", "unknown"),
        "units": scene.attrs.get("units", "unknown"),
        "shape": {d: int(scene.sizes[d]) for d in scene.dims},
        "bands": int(scene.sizes["band"]),
        "wavelength_min_nm": float(wl[known].min()) if known.any() else None,
        "wavelength_max_nm": float(wl[known].max()) if known.any() else None,
        "wavelengths_known": int(known.sum()),
        "fwhm_known": int(np.isfinite(fwhm).sum()),
        "bad_band_count": len(bands),
        "bad_bands": band_ranges(bands),
        "value_min": float(values[finite].min()) if finite.any() else None,
        "value_max": float(values[finite].max()) if finite.any() else None,
        "crs": crs_text,
        "pixel_size": pixel,
        "nodata_count": int(values.size - finite.sum()),
        "nodata_fraction": float(1.0 - finite.sum() / values.size) if values.size else 0.0,
        "scale_factor": scene.attrs.get("scale_factor"),
    }


def format_scene_info(info: dict[str, Any]) -> str:
    """The dict of :func:`scene_info` as the text of ``cropscope hsi info``."""
    shape = info["shape"]
    wl = ("unknown" if info["wavelength_min_nm"] is None else
          f"{info['wavelength_min_nm']:.2f} – {info['wavelength_max_nm']:.2f} nm "
          f"({info['wavelengths_known']} known)")
    values = ("all nodata" if info["value_min"] is None else
              f"{info['value_min']:.6g} … {info['value_max']:.6g}")
    grid = "not georeferenced"
    if info["pixel_size"] is not None:
        px, py = info["pixel_size"]
        grid = f"{info['crs'] or 'no CRS'}, pixel {px:g} × {py:g}"
    scale = info["scale_factor"]
    if isinstance(scale, list):
        scale = "per band" if len(set(scale)) > 1 else scale[0]
    lines = [
        f"file:        {info['file']}",
        f"format:      {info['format']}",
        f"sensor:      {info['sensor']}",
        f"units:       {info['units']} (scale factor {scale})",
        f"shape:       {shape['band']} bands × {shape['y']} rows × {shape['x']} columns",
        f"wavelengths: {wl}",
        f"fwhm:        {info['fwhm_known']} of {info['bands']} bands known",
        f"bad bands:   {info['bad_band_count']}"
        + (f" (band numbers {info['bad_bands']})" if info["bad_bands"] else ""),
        f"values:      {values}",
        f"nodata:      {info['nodata_count']} values ({100 * info['nodata_fraction']:.2f} %)",
        f"grid:        {grid}",
    ]
    return "\n".join(lines)
