"""A fitted continuous weather field: point queries, gridded export, save/load."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from cropscope.errors import DataError, ModelError
from cropscope.io import atomic_path
from cropscope.weather.geometry import RegularGrid
from cropscope.weather.model import (
    Context,
    FieldNet,
    ModelConfig,
    build_context,
    predict_grid,
    predict_points,
)

__all__ = ["WeatherField"]

FIELD_JSON = "field.json"
WEIGHTS = "model.safetensors"
CONTEXT = "context.safetensors"


def _match(value: Any, wanted: Any) -> bool:
    if isinstance(value, int | float | np.number) and isinstance(wanted, int | float | np.number):
        return bool(np.isclose(float(value), float(wanted)))
    return str(value) == str(wanted)


def check_resolution(resolution: float, lat_span: float, lon_span: float, n_fields: int) -> None:
    """Refuse (:class:`DataError`) an output resolution that is not a positive number of
    degrees, or whose grid (``n_fields`` float64 layers) would not fit in memory, before any
    array is made."""
    from cropscope.settings import check_memory

    if not (isinstance(resolution, int | float) and math.isfinite(resolution) and resolution > 0):
        raise DataError(f"resolution must be a positive number of degrees, got {resolution!r}")
    cells = (abs(lat_span) / resolution + 1) * (abs(lon_span) / resolution + 1)
    # the grid, its predictions and the dataset written: about three copies
    check_memory(3 * 8 * cells * max(1, n_fields), f"a grid at {resolution}°")


class WeatherField:
    """A continuous field over the grid it was fitted on: ``value(variable, lat, lon, slice)``.

    ``slices`` lists the non-spatial coordinates of every fitted 2-D field (e.g.
    ``{"month": 1, "level": 500}``), in the order of ``values``' first axis.
    """

    def __init__(self, net: FieldNet, values: np.ndarray, grid: RegularGrid,
                 variables: Sequence[str], slices: Sequence[dict[str, Any]], scale: np.ndarray,
                 base: str = "bicubic", info: dict[str, Any] | None = None) -> None:
        self.net = net.eval()
        self.values = np.asarray(values, np.float64)
        self.grid, self.variables, self.slices = grid, list(variables), [dict(s) for s in slices]
        self.scale, self.base = np.asarray(scale, float), base
        self.info = info or {}
        self.ctx: Context = build_context(self.values, grid, self.scale, net.config.patch)

    # ------------------------------------------------------------------ slices
    @property
    def dims(self) -> list[str]:
        return list(self.slices[0]) if self.slices else []

    def _select(self, sel: dict[str, Any]) -> list[int]:
        unknown = set(sel) - set(self.dims)
        if unknown:
            raise DataError(f"unknown selector(s) {sorted(unknown)}; the field has {self.dims}")
        idx = [i for i, s in enumerate(self.slices)
               if all(_match(s[k], v) for k, v in sel.items())]
        if not idx:
            raise DataError(f"no fitted slice matches {sel}")
        return idx

    def _var(self, variable: str) -> int:
        if variable not in self.variables:
            raise DataError(f"variable {variable!r} not in the field ({self.variables})")
        return self.variables.index(variable)

    # ------------------------------------------------------------------ queries
    def sample(self, variable: str, lat: Any, lon: Any, time: Any = None, *,
               model: bool = True, **sel: Any) -> np.ndarray:
        """Values of ``variable`` at points (arrays broadcast together).

        ``sel`` picks one slice (``level=500, month=1``); with a ``time`` axis, ``time`` (one
        datetime64 or one per point) interpolates linearly between the fitted times.
        ``model=False`` returns the bicubic interpolation the model is built on.
        """
        v = self._var(variable)
        lat, lon = np.broadcast_arrays(np.asarray(lat, float), np.asarray(lon, float))
        shape = lat.shape
        lat, lon = lat.reshape(-1), lon.reshape(-1)
        if np.any(np.abs(lat) > 90):
            raise DataError("latitudes must be within [-90, 90]")
        idx = self._select(sel)
        net = self.net if model else None
        if "time" in self.dims and time is not None:
            times = np.array([np.datetime64(self.slices[i]["time"], "s") for i in idx])
            others = {tuple((k, str(v)) for k, v in self.slices[i].items() if k != "time")
                      for i in idx}
            if len(others) > 1:
                raise DataError(f"select one slice besides time, e.g. {self.slices[idx[0]]}")
            order = np.argsort(times)
            idx, tf = [idx[i] for i in order], times[order].astype(float)
            tq = np.broadcast_to(np.asarray(time).astype("datetime64[s]").astype(float),
                                 shape).reshape(-1)
            pos = np.interp(tq, tf, np.arange(len(tf)))
            i0 = np.clip(np.floor(pos).astype(int), 0, max(len(tf) - 2, 0))
            i1 = np.minimum(i0 + 1, len(tf) - 1)
            w = np.clip(pos - i0, 0.0, 1.0)
            a = self._points(net, np.asarray(idx)[i0], lat, lon)[:, v]
            b = self._points(net, np.asarray(idx)[i1], lat, lon)[:, v]
            return ((1 - w) * a + w * b).reshape(shape)
        if time is not None:
            raise DataError("this field has no time axis; select a slice instead of a time")
        if len(idx) > 1:
            raise DataError(f"{len(idx)} slices match; select one with "
                            + ", ".join(f"{d}=…" for d in self.dims))
        return self._points(net, np.full(lat.shape, idx[0]), lat, lon)[:, v].reshape(shape)

    def _points(self, net: FieldNet | None, s: np.ndarray, lat: np.ndarray, lon: np.ndarray
                ) -> np.ndarray:
        with torch.no_grad():
            out = predict_points(net, self.ctx, torch.as_tensor(s, dtype=torch.long),
                                 torch.as_tensor(lat, dtype=torch.float32),
                                 torch.as_tensor(lon, dtype=torch.float32),
                                 base_method=self.base)
        return out.numpy().astype(np.float64)

    def grid_values(self, slice_index: int, lat: np.ndarray, lon: np.ndarray,
                    model: bool = True) -> np.ndarray:
        """``[V, len(lat), len(lon)]`` for one fitted slice (``model=False``: bicubic)."""
        return predict_grid(self.net if model else None, self.ctx, slice_index, lat, lon,
                            self.base).astype(np.float64)

    def output_grid(self, resolution: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Latitudes/longitudes of a regular grid over the fitted domain at ``resolution`` (°)."""
        g = self.grid
        if resolution is None:
            return g.lat, g.lon
        span = 360.0 if g.periodic else g.lon[-1] - g.lon[0] + 1e-9
        check_resolution(resolution, float(g.lat[-1] - g.lat[0]), span,
                         len(self.slices) * len(self.variables))
        lat = np.arange(g.lat[0], g.lat[-1] + 1e-9, resolution)
        lon = g.lon0 + np.arange(0, span - 1e-9 if g.periodic else span, resolution)
        return lat, lon

    def to_dataset(self, resolution: float | None = None, model: bool = True) -> xr.Dataset:
        """Every variable and slice on a regular grid at ``resolution`` degrees."""
        lat, lon = self.output_grid(resolution)
        data = np.stack([self.grid_values(i, lat, lon, model) for i in range(len(self.slices))])
        dims = self.dims
        coords: dict[str, Any] = {}
        for d in dims:
            vals: list[Any] = []
            for s in self.slices:
                if not any(_match(s[d], x) for x in vals):
                    vals.append(s[d])
            coords[d] = np.array(vals, dtype="datetime64[s]" if d == "time" else None)
        shape = [len(coords[d]) for d in dims]
        if int(np.prod(shape)) != len(self.slices):
            raise DataError("fitted slices do not form a complete grid of coordinates")
        data = data.reshape(*shape, len(self.variables), len(lat), len(lon))
        ds = xr.Dataset(coords={**coords, "latitude": lat, "longitude": lon})
        for v, name in enumerate(self.variables):
            ds[name] = ([*dims, "latitude", "longitude"], np.take(data, v, axis=len(dims)))
        ds.attrs.update(source="cropscope.weather field model", base=self.base,
                        kind="model" if model else self.base)
        return ds

    def to_netcdf(self, path: str | Path, resolution: float | None = None) -> Path:
        """Write the field at ``resolution`` degrees to NetCDF, atomically."""
        from cropscope.weather.readers import write_netcdf

        return write_netcdf(self.to_dataset(resolution), path)

    # ------------------------------------------------------------------ persistence
    def state(self) -> dict[str, Any]:
        return {
            "format": "cropscope.weather.field/1",
            "variables": self.variables,
            "slices": [{k: (v.item() if hasattr(v, "item") else v) for k, v in s.items()}
                       for s in self.slices],
            "grid": self.grid.to_dict(),
            "scale": self.scale.tolist(),
            "base": self.base,
            "model_config": self.net.config.to_dict(),
            "info": self.info,
        }

    def save(self, directory: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write ``model.safetensors``, ``context.safetensors`` and ``field.json``."""
        save_field_files(Path(directory), self.net, self.values, {**self.state(),
                                                                  **(extra or {})})
        return Path(directory)

    @classmethod
    def load(cls, directory: str | Path) -> WeatherField:
        from safetensors.torch import load_file

        directory = Path(directory)
        if (directory / "run.json").is_file():
            from cropscope.runs import open_run

            run = open_run(directory)  # complete, checksums verified
            if run.spec.kind != "weather-field":
                raise ModelError(f"{directory} is a {run.spec.kind} run, not a weather field")
            if run.spec.extra.get("mode") == "supervised":
                raise ModelError(f"{directory} is a supervised downscaling run: load it with "
                                 "cropscope.weather.supervised.load_supervised")
        meta_path = directory / FIELD_JSON
        if not meta_path.is_file():
            raise ModelError(f"no weather field in {directory} (missing {FIELD_JSON})")
        meta = json.loads(meta_path.read_text())
        net = FieldNet(len(meta["variables"]), ModelConfig(**meta["model_config"]))
        net.load_state_dict(load_file(directory / WEIGHTS))
        values = load_file(directory / CONTEXT)["values"].numpy()
        return cls(net, values, RegularGrid(**meta["grid"]), meta["variables"], meta["slices"],
                   np.asarray(meta["scale"]), meta.get("base", "bicubic"), meta.get("info"))


def save_field_files(directory: Path, net: FieldNet, values: np.ndarray,
                     meta: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    from cropscope.io import write_json

    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(directory / WEIGHTS) as tmp:
        save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()}, str(tmp))
    with atomic_path(directory / CONTEXT) as tmp:
        save_file({"values": torch.as_tensor(np.ascontiguousarray(values))}, str(tmp))
    write_json(directory / FIELD_JSON, meta)
