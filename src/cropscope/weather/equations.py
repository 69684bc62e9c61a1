"""Pluggable PDE residuals, evaluated with autograd at points or by finite differences on grids.

An :class:`Equation` reads values and derivatives from a *state* (:class:`PointState` for
autograd at collocation points, :class:`GridState` for finite differences on a grid) and
returns named residual arrays in SI units. Derivatives use spherical geometry:
∂/∂x = ∂/∂λ / (R cos φ), ∂/∂y = ∂/∂φ / R.

Registered equations (``EQUATIONS``):

- ``geostrophic`` (pressure levels; u, v, z): f u + ∂Φ/∂y = 0, f v − ∂Φ/∂x = 0
- ``thermal_wind`` (pressure levels, needs the vertical axis; u, v, and t or z):
  f ∂u/∂ln p − R_d ∂T/∂y = 0, f ∂v/∂ln p + R_d ∂T/∂x = 0 (T = −∂Φ/∂ln p / R_d without t)
- DeepPhysiNet's surface set (u10, v10, sp, t2m, q2, rho): ``momentum_u``, ``momentum_v``,
  ``continuity``, ``thermodynamic`` (with latent heat), ``vapour`` (condensation with the
  textbook condensation function; the released code's denominator looks like a typo),
  ``state`` (p = ρ(1 + 0.608 q) R_d T).

Time derivatives are zero for a state without a time axis (a single analysis time).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from cropscope.errors import DataError
from cropscope.weather.geometry import (
    CP,
    EARTH_RADIUS,
    LATENT_HEAT,
    OMEGA,
    R_DRY,
    R_VAPOUR,
    grid_gradient,
)

__all__ = ["EQUATIONS", "Equation", "GridState", "PointState", "get_equations"]

_DEG = np.pi / 180.0


class PointState:
    """Values at points with autograd derivatives w.r.t. latitude/longitude (degrees).

    ``values`` maps variable → tensor [N] computed from ``lat``/``lon`` leaf tensors (any
    shape with N elements) that require grad. ``time`` (seconds, optional) is a third leaf.
    """

    def __init__(self, values: dict[str, torch.Tensor], lat: torch.Tensor, lon: torch.Tensor,
                 time: torch.Tensor | None = None) -> None:
        self.values, self.lat_t, self.lon_t, self.time_t = values, lat, lon, time
        self._grads: dict[str, tuple[torch.Tensor, ...]] = {}
        self.lat = lat.detach().reshape(-1)
        self.f = 2 * OMEGA * torch.sin(self.lat * _DEG)
        self._mx = EARTH_RADIUS * torch.cos(self.lat * _DEG) * _DEG  # m per degree lon
        self._my = EARTH_RADIUS * _DEG

    def has(self, var: str) -> bool:
        return var in self.values

    def value(self, var: str) -> torch.Tensor:
        return self.values[var]

    def _grad(self, var: str) -> tuple[torch.Tensor, ...]:
        if var not in self._grads:
            leaves = [self.lat_t, self.lon_t] + ([self.time_t] if self.time_t is not None else [])
            out = self.values[var]
            grads = torch.autograd.grad(out, leaves, grad_outputs=torch.ones_like(out),
                                        create_graph=True, allow_unused=True)
            self._grads[var] = tuple(torch.zeros_like(out) if g is None else g.reshape(out.shape)
                                     for g in grads)
        return self._grads[var]

    def dx(self, var: str) -> torch.Tensor:
        return self._grad(var)[1] / self._mx

    def dy(self, var: str) -> torch.Tensor:
        return self._grad(var)[0] / self._my

    def dt(self, var: str) -> torch.Tensor:
        g = self._grad(var)
        return g[2] if len(g) > 2 else torch.zeros_like(self.values[var])

    def dlnp(self, var: str) -> torch.Tensor:
        raise DataError("vertical derivatives need several levels (use a GridState)")

    @property
    def has_vertical(self) -> bool:
        return False


class GridState:
    """Values on a lat/lon grid ``[..., (level,) lat, lon]`` with finite-difference derivatives.

    With ``levels`` (hPa) the third-last axis is pressure and ∂/∂ln p uses finite
    differences between levels (centred inside, one-sided at the ends).
    """

    def __init__(self, values: dict[str, np.ndarray], lat: np.ndarray, lon: np.ndarray,
                 levels: Sequence[float] | None = None) -> None:
        self.values = {k: np.asarray(v, float) for k, v in values.items()}
        self.lat_1d, self.lon_1d = np.asarray(lat, float), np.asarray(lon, float)
        self.levels = None if levels is None else np.asarray(levels, float)
        shape = next(iter(self.values.values())).shape
        self.lat = np.broadcast_to(self.lat_1d[:, None], shape)
        self.f = 2 * OMEGA * np.sin(self.lat * _DEG)
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def has(self, var: str) -> bool:
        return var in self.values

    def value(self, var: str) -> np.ndarray:
        return self.values[var]

    def _g(self, var: str) -> tuple[np.ndarray, np.ndarray]:
        if var not in self._cache:
            self._cache[var] = grid_gradient(self.values[var], self.lat_1d, self.lon_1d)
        return self._cache[var]

    def dx(self, var: str) -> np.ndarray:
        return self._g(var)[0]

    def dy(self, var: str) -> np.ndarray:
        return self._g(var)[1]

    def dt(self, var: str) -> np.ndarray:
        return np.zeros_like(self.values[var])

    @property
    def has_vertical(self) -> bool:
        return self.levels is not None and self.levels.size >= 2

    def dlnp(self, var: str) -> np.ndarray:
        levels = self.levels
        if levels is None or levels.size < 2:
            raise DataError("vertical derivatives need a level axis with ≥ 2 levels")
        lnp = np.log(levels * 100.0)
        return np.gradient(self.values[var], lnp, axis=-3)


State = PointState | GridState


def _sin_lat(state: State) -> Any:
    return state.f / (2 * OMEGA)


@dataclass
class Equation:
    """One PDE (or balance) with named residuals; ``scale`` is a typical residual (SI units)."""

    name: str
    variables: tuple[str, ...]
    func: Callable[[State], dict[str, Any]]
    scale: float
    min_abs_lat: float = 0.0  #: excluded near the equator (e.g. where f → 0)
    max_abs_lat: float = 90.0
    vertical: bool = False
    alternatives: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def applies_to(self, variables: Sequence[str], vertical: bool = False) -> bool:
        have = set(variables)
        ok = all(v in have or any(a in have for a in self.alternatives.get(v, ()))
                 for v in self.variables)
        return ok and (vertical or not self.vertical)

    def residual(self, state: State) -> dict[str, Any]:
        return self.func(state)

    def weight(self, lat: Any) -> Any:
        """1 where the equation applies (latitude band), else 0."""
        a = abs(lat) if not isinstance(lat, torch.Tensor) else lat.abs()
        return ((a >= self.min_abs_lat) & (a <= self.max_abs_lat)) * 1.0


def _material(s: State, var: str, u: str, v: str) -> Any:
    return s.dt(var) + s.value(u) * s.dx(var) + s.value(v) * s.dy(var)


def _geostrophic(s: State) -> dict[str, Any]:
    return {"u": s.f * s.value("u") + s.dy("z"), "v": s.f * s.value("v") - s.dx("z")}


def _thermal_wind(s: State) -> dict[str, Any]:
    if s.has("t"):
        tdy, tdx = s.dy("t"), s.dx("t")
    else:
        assert isinstance(s, GridState)
        t = -s.dlnp("z") / R_DRY
        tdx, tdy = grid_gradient(t, s.lat_1d, s.lon_1d)
    return {"u": s.f * s.dlnp("u") - R_DRY * tdy, "v": s.f * s.dlnp("v") + R_DRY * tdx}


SURFACE = {"u": "u10", "v": "v10", "p": "sp", "t": "t2m", "q": "q2", "rho": "rho"}


def _mom_u(s: State) -> dict[str, Any]:
    n = SURFACE
    return {"u": _material(s, n["u"], n["u"], n["v"]) + s.dx(n["p"]) / s.value(n["rho"])
            - s.f * s.value(n["v"])}


def _mom_v(s: State) -> dict[str, Any]:
    n = SURFACE
    return {"v": _material(s, n["v"], n["u"], n["v"]) + s.dy(n["p"]) / s.value(n["rho"])
            + s.f * s.value(n["u"])}


def _continuity(s: State) -> dict[str, Any]:
    n = SURFACE
    return {"rho": _material(s, n["rho"], n["u"], n["v"])
            + s.value(n["rho"]) * (s.dx(n["u"]) + s.dy(n["v"]))}


def _thermo(s: State) -> dict[str, Any]:
    n = SURFACE
    return {"t": CP * _material(s, n["t"], n["u"], n["v"])
            - _material(s, n["p"], n["u"], n["v"]) / (s.value(n["rho"]) + 1e-6)
            + LATENT_HEAT * _material(s, n["q"], n["u"], n["v"])}


def _detach(x: Any) -> Any:
    return x.detach() if isinstance(x, torch.Tensor) else x


def _vapour(s: State) -> dict[str, Any]:
    n = SURFACE
    lib = torch if isinstance(s, PointState) else np
    t, p, q = (_detach(s.value(n[k])) for k in ("t", "p", "q"))
    tc = t - 273.15
    es = 611.2 * lib.exp(17.67 * tc / (tc + 243.5))
    qs = 0.622 * es / (p - 0.378 * es)
    qs = qs.clamp(min=1e-6) if lib is torch else np.maximum(qs, 1e-6)
    r_moist = (1 + 0.608 * q) * R_DRY
    # textbook condensation function (the released code's denominator is c_p R_v + T² + …)
    big_f = qs * t * (LATENT_HEAT * r_moist - CP * R_VAPOUR * t) / (
        CP * R_VAPOUR * t**2 + LATENT_HEAT**2 * qs)
    dp = _material(s, n["p"], n["u"], n["v"])
    delta = ((_detach(dp) < 0) & (q >= qs)) * 1.0
    return {"q": _material(s, n["q"], n["u"], n["v"]) - delta * big_f / (p + 1e-6) * dp}


def _state_eq(s: State) -> dict[str, Any]:
    n = SURFACE
    return {"p": s.value(n["p"]) - s.value(n["rho"]) * (1 + 0.608 * s.value(n["q"]))
            * R_DRY * s.value(n["t"])}


_S = tuple(SURFACE.values())
EQUATIONS: dict[str, Equation] = {
    "geostrophic": Equation("geostrophic", ("u", "v", "z"), _geostrophic, 1e-3,
                            min_abs_lat=15.0, max_abs_lat=80.0),
    "thermal_wind": Equation("thermal_wind", ("u", "v", "z"), _thermal_wind, 1e-2,
                             min_abs_lat=15.0, max_abs_lat=80.0, vertical=True,
                             alternatives={"z": ("t",)}),
    "momentum_u": Equation("momentum_u", ("u10", "v10", "sp", "rho"), _mom_u, 1e-3),
    "momentum_v": Equation("momentum_v", ("u10", "v10", "sp", "rho"), _mom_v, 1e-3),
    "continuity": Equation("continuity", ("u10", "v10", "rho"), _continuity, 1e-5),
    "thermodynamic": Equation("thermodynamic", ("u10", "v10", "sp", "t2m", "q2", "rho"),
                              _thermo, 1e-1),
    "vapour": Equation("vapour", ("u10", "v10", "sp", "t2m", "q2"), _vapour, 1e-8),
    "state": Equation("state", ("sp", "t2m", "q2", "rho"), _state_eq, 1e2),
}


def get_equations(names: Sequence[str] | str | None, variables: Sequence[str],
                  vertical: bool = False) -> list[Equation]:
    """Equations by name (``"auto"``/None: every one whose variables are present)."""
    if names is None or names == "auto":
        return [e for e in EQUATIONS.values() if e.applies_to(variables, vertical)]
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    out = []
    for name in names:
        if name not in EQUATIONS:
            raise DataError(f"unknown equation {name!r}; known: {sorted(EQUATIONS)}")
        eq = EQUATIONS[name]
        if not eq.applies_to(variables, vertical):
            raise DataError(f"equation {name!r} needs variables {list(eq.variables)}"
                            + (" and several levels" if eq.vertical else "")
                            + f"; have {list(variables)}")
        out.append(eq)
    return out


def residual_stats(eq: Equation, state: GridState) -> dict[str, float]:
    """RMS and mean |residual| of an equation over its latitude band (finite differences)."""
    res = eq.residual(state)
    w = eq.weight(state.lat) > 0
    parts = [np.asarray(r)[np.broadcast_to(w, np.shape(r))] for r in res.values()]
    flat = np.concatenate([p[np.isfinite(p)] for p in parts])
    return {"rms": float(np.sqrt(np.mean(flat**2))), "mean_abs": float(np.mean(np.abs(flat)))}
