"""Coarsen → fit → score at the held-out fine-grid points against bilinear and bicubic.

``evaluate_file(path, coarsen=K)`` keeps every K-th grid point (rows and columns, from the
first) of every variable, fits the field model on them, and scores model, bilinear and bicubic
(Keys, a = −0.5) at all the other points. It also reports balance residuals (finite
differences with latitude-dependent spacing, on the fine grid) of the model's, the
interpolations' and the true fields, and the autograd PDE residuals at collocation points
before and after training.

``fit_file(path, out_dir)`` fits the field to every grid point of a file and saves it (what
``cropscope weather fit`` does); :func:`format_evaluation` is the text table of
``cropscope weather evaluate``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cropscope.errors import DataError
from cropscope.io import write_json
from cropscope.weather.readers import open_weather, spatial_slices

if TYPE_CHECKING:
    from cropscope.weather.field import WeatherField

__all__ = ["evaluate_file", "fit_file", "format_evaluation", "stack_fields"]

log = logging.getLogger(__name__)


def stack_fields(ds: Any) -> tuple[np.ndarray, list[str], list[dict[str, Any]], list[str]]:
    """A standard dataset → ``values [S, V, ny, nx]``, variables, slice keys, slice dims."""
    variables = [str(v) for v in ds.data_vars]
    dims = [d for d in ds[variables[0]].dims if d not in ("latitude", "longitude")]
    for v in variables:
        if [d for d in ds[v].dims if d not in ("latitude", "longitude")] != dims:
            raise DataError(f"variables have different dimensions ({variables[0]}: {dims}, "
                            f"{v}: {list(ds[v].dims)}); fit them separately (--variables)")
    ny, nx = ds.sizes["latitude"], ds.sizes["longitude"]
    values = np.stack([ds[v].values.reshape(-1, ny, nx) for v in variables], axis=1)
    return values, variables, spatial_slices(ds[variables]), dims


def _scores(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    e = pred - truth
    return float(np.sqrt(np.mean(e**2))), float(np.mean(np.abs(e)))


def _balance(fields: dict[str, np.ndarray], variables: list[str], slices: list[dict],
             dims: list[str], lat: np.ndarray, lon: np.ndarray) -> dict[str, dict[str, Any]]:
    """Residual statistics of balance equations for each set of fields ``[S, V, ny, nx]``."""
    from cropscope.weather.equations import EQUATIONS, GridState, residual_stats

    out: dict[str, dict[str, Any]] = {}
    eq = EQUATIONS["geostrophic"]
    if eq.applies_to(variables):
        out["geostrophic"] = {}
        for name, arr in fields.items():
            st = GridState({v: arr[:, i] for i, v in enumerate(variables)}, lat, lon)
            out["geostrophic"][name] = residual_stats(eq, st)
        out["geostrophic"]["units"] = "m s-2 (f·u + ∂Φ/∂y, f·v − ∂Φ/∂x), 15° ≤ |lat| ≤ 80°"
    tw = EQUATIONS["thermal_wind"]
    if "level" in dims and tw.applies_to(variables, vertical=True):
        other = [d for d in dims if d != "level"]
        levels = sorted({float(s["level"]) for s in slices})
        if len(levels) >= 2:
            out["thermal_wind"] = {}
            groups: dict[tuple, list[int]] = {}
            for i, s in enumerate(slices):
                groups.setdefault(tuple(str(s[d]) for d in other), []).append(i)
            for name, arr in fields.items():
                sq, n = 0.0, 0
                for idx in groups.values():
                    idx = sorted(idx, key=lambda i: float(slices[i]["level"]))
                    st = GridState({v: arr[idx, k] for k, v in enumerate(variables)}, lat, lon,
                                   levels=[float(slices[i]["level"]) for i in idx])
                    r = residual_stats(tw, st)
                    sq += r["rms"] ** 2
                    n += 1
                out["thermal_wind"][name] = {"rms": float(np.sqrt(sq / n))}
            out["thermal_wind"]["units"] = "m s-1 (f ∂u/∂ln p − R_d ∂T/∂y …), T from ∂Φ/∂ln p"
    return out


def evaluate_file(path: str | Path, coarsen: int, seed: int = 0,
                  variables: Sequence[str] | None = None, config: dict[str, Any] | None = None,
                  progress: bool = False, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Fit on every ``coarsen``-th grid point and score the rest; returns a JSON-ready dict.

    With ``out_dir`` the fitted field (checkpoint) and ``metrics.json`` (the dict) are
    written there."""
    from cropscope.weather.geometry import RegularGrid
    from cropscope.weather.training import fit_field

    t0 = time.perf_counter()
    if coarsen < 2:
        raise DataError("--coarsen must be ≥ 2")
    ds = open_weather(path, variables)
    values, names, slices, dims = stack_fields(ds)
    lat, lon = ds["latitude"].values.astype(float), ds["longitude"].values.astype(float)
    grid = RegularGrid.from_coords(lat, lon)
    coarse = values[:, :, ::coarsen, ::coarsen]
    if coarse.shape[2] < 4 or coarse.shape[3] < 4:
        raise DataError(f"grid {grid.ny}×{grid.nx} is too small to coarsen by {coarsen}")
    cgrid = grid.subsample(coarsen)
    t_read = time.perf_counter() - t0
    cfg = {"seed": seed, **(config or {})}
    field = fit_field(coarse, cgrid, names, slices, cfg, out_dir=out_dir, progress=progress)
    t_fit = time.perf_counter() - t0 - t_read
    # predictions on the fine grid
    t1 = time.perf_counter()
    preds: dict[str, np.ndarray] = {k: np.empty_like(values) for k in
                                    ("model", "bilinear", "bicubic")}
    from cropscope.weather.model import predict_grid

    for i in range(len(slices)):
        preds["model"][i] = field.grid_values(i, lat, lon)
        preds["bicubic"][i] = predict_grid(None, field.ctx, i, lat, lon, "bicubic")
        preds["bilinear"][i] = predict_grid(None, field.ctx, i, lat, lon, "bilinear")
    t_pred = time.perf_counter() - t1
    held = np.ones((grid.ny, grid.nx), bool)
    held[::coarsen, ::coarsen] = False
    result: dict[str, Any] = {
        "input": str(path), "coarsen": coarsen, "seed": seed, "variables": names,
        "dims": dims, "n_slices": len(slices),
        "fine_grid": grid.to_dict(), "coarse_grid": cgrid.to_dict(),
        "n_heldout_per_slice": int(held.sum()),
    }
    for v, name in enumerate(names):
        truth = values[:, v][:, held]
        entry: dict[str, Any] = {}
        for kind in ("model", "bilinear", "bicubic"):
            rmse, mae = _scores(preds[kind][:, v][:, held], truth)
            entry[f"rmse_{kind}"], entry[f"mae_{kind}"] = rmse, mae
        entry["rmse_ratio_model_bicubic"] = entry["rmse_model"] / max(entry["rmse_bicubic"],
                                                                      1e-300)
        entry["per_slice"] = []
        for i, s in enumerate(slices):
            row = {k: (val.item() if hasattr(val, "item") else val) for k, val in s.items()}
            for kind in ("model", "bicubic", "bilinear"):
                row[f"rmse_{kind}"] = _scores(preds[kind][i, v][held], values[i, v][held])[0]
            entry["per_slice"].append(row)
        result[name] = entry
    result["residuals"] = _balance({**preds, "truth": values}, names, slices, dims, lat, lon)
    hist = field.info.get("history", {})
    result["pde_collocation_rms"] = {"before": hist.get("pde_rms_before"),
                                     "after": hist.get("pde_rms_after"),
                                     "units": "SI residual units; before = bicubic base"}
    result["final_loss"] = hist.get("loss", [{}])[-1] if hist.get("loss") else None
    result["config"] = {**field.net.config.to_dict(), **field.info.get("train_config", {})}
    result["timings_s"] = {"read": round(t_read, 2), "fit": round(t_fit, 2),
                           "predict": round(t_pred, 2),
                           "total": round(time.perf_counter() - t0, 2)}
    if out_dir is not None:
        write_json(Path(out_dir) / "metrics.json", result)
    return result


def format_evaluation(result: dict[str, Any]) -> str:
    """The scores of :func:`evaluate_file` as a text table: RMSE of the model, bilinear and
    bicubic and the model's MAE per variable, balance residuals, total time."""
    lines = [f"{'variable':<10}{'rmse_model':>14}{'rmse_bilinear':>15}{'rmse_bicubic':>14}"
             f"{'mae_model':>12}"]
    for v in result["variables"]:
        e = result[v]
        lines.append(f"{v:<10}{e['rmse_model']:>14.5g}{e['rmse_bilinear']:>15.5g}"
                     f"{e['rmse_bicubic']:>14.5g}{e['mae_model']:>12.5g}")
    for eq, stats in result["residuals"].items():
        lines.append(f"{eq} residual RMS: " + ", ".join(
            f"{k} {v['rms']:.4g}" for k, v in stats.items() if isinstance(v, dict)))
    lines.append(f"total {result['timings_s']['total']} s")
    return "\n".join(lines)


def fit_file(path: str | Path, out_dir: str | Path, *, variables: Sequence[str] | None = None,
             seed: int = 0, config: dict[str, Any] | None = None, resume: bool = False,
             progress: bool = False) -> WeatherField:
    """Fit a continuous field to every grid point of a gridded file (NetCDF, GRIB, Zarr;
    ``variables``: default all) and save it in ``out_dir`` (safetensors + JSON; with
    ``resume``, continue from the checkpoint there). ``config`` mixes model and training
    options (see :func:`~cropscope.weather.training.fit_field`); ``seed`` is used unless it
    sets one."""
    from cropscope.weather.geometry import RegularGrid
    from cropscope.weather.training import fit_field

    ds = open_weather(path, variables)
    values, names, slices, _ = stack_fields(ds)
    grid = RegularGrid.from_coords(ds["latitude"].values, ds["longitude"].values)
    log.info("fitting %s on %d slice(s) of %d×%d", names, len(slices), grid.ny, grid.nx)
    return fit_field(values, grid, names, slices, {"seed": seed, **(config or {})},
                     out_dir=out_dir, resume=resume, progress=progress)
