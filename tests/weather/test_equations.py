from __future__ import annotations

import numpy as np
import pytest
import torch

from cropscope.errors import DataError
from cropscope.weather.equations import EQUATIONS, GridState, PointState, get_equations
from cropscope.weather.geometry import (
    EARTH_RADIUS,
    OMEGA,
    R_DRY,
    grid_gradient,
    metres_per_degree,
)
from tests.weather.conftest_helpers import geostrophic_fields


def test_metres_per_degree_depends_on_latitude():
    dx, dy = metres_per_degree(np.array([0.0, 60.0]))
    assert dx[0] == pytest.approx(dy)
    assert dx[1] == pytest.approx(dy / 2)  # cos 60° = 1/2
    assert dy == pytest.approx(111_195, rel=1e-3)


def test_grid_gradient_uses_latitude_dependent_spacing():
    lat = np.arange(-80, 81, 1.0)
    lon = np.arange(0, 360, 1.0)
    field = np.broadcast_to(np.sin(np.deg2rad(lon))[None, :], (lat.size, lon.size))
    ddx, _ = grid_gradient(field, lat, lon)
    exact = np.cos(np.deg2rad(lon))[None, :] / (EARTH_RADIUS * np.cos(np.deg2rad(lat))[:, None])
    np.testing.assert_allclose(ddx, exact, rtol=2e-4, atol=1e-12)


def _analytic_point_state(lat_deg: torch.Tensor, lon_deg: torch.Tensor, a=3e4, b=2e3):
    lat = lat_deg.clone().requires_grad_(True)
    lon = lon_deg.clone().requires_grad_(True)
    phi, lam = torch.deg2rad(lat), torch.deg2rad(lon)
    f = 2 * OMEGA * torch.sin(phi)
    z = 50000 + a * torch.sin(phi) + b * torch.sin(lam) * torch.cos(phi)
    u = -(a * torch.cos(phi) - b * torch.sin(lam) * torch.sin(phi)) / EARTH_RADIUS / f
    v = b * torch.cos(lam) / EARTH_RADIUS / f
    return PointState({"u": u, "v": v, "z": z}, lat, lon)


def test_geostrophic_residual_of_balanced_field_is_zero_autograd():
    g = torch.Generator().manual_seed(0)
    lat = (torch.rand(500, generator=g, dtype=torch.float64) * 60 + 15) * torch.where(
        torch.rand(500, generator=g) < 0.5, 1.0, -1.0).double()
    lon = torch.rand(500, generator=g, dtype=torch.float64) * 360 - 180
    eq = EQUATIONS["geostrophic"]
    st = _analytic_point_state(lat, lon)
    res = eq.residual(st)
    scale_v = float(torch.abs(st.f * st.value("v")).mean().detach())
    assert max(float(r.abs().max().detach()) for r in res.values()) < 1e-9 * scale_v
    # the same field with constant (equatorial) zonal spacing is clearly unbalanced
    flat = st.dx("z") * torch.cos(torch.deg2rad(st.lat))
    assert float((st.f * st.value("v") - flat).abs().mean().detach()) > 0.1 * scale_v


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_geostrophic_residual_of_balanced_field_is_small_on_grid():
    lat = np.arange(-80, 80.1, 0.5)
    lon = np.arange(-180, 180, 0.5)
    u, v, z = geostrophic_fields(lat, lon)
    st = GridState({"u": u, "v": v, "z": z}, lat, lon)
    res = EQUATIONS["geostrophic"].residual(st)
    band = (np.abs(lat) >= 15)[:, None] & np.isfinite(res["u"])
    typical = np.mean(np.abs(st.f * u)[band])
    assert np.nanmax(np.abs(res["u"][band])) < 1e-3 * typical
    assert np.nanmax(np.abs(res["v"][band])) < 1e-3 * typical


def test_surface_equations_vanish_for_consistent_fields():
    n = 64
    g = torch.Generator().manual_seed(1)
    lat = torch.rand(n, generator=g, dtype=torch.float64) * 40 + 10
    lon = torch.rand(n, generator=g, dtype=torch.float64) * 40
    lat.requires_grad_(True)
    lon.requires_grad_(True)
    t = 280 + 0.1 * lat + 0.05 * lon
    q = 0.005 + 0 * lat
    rho = 1.2 + 0 * lat
    p = rho * (1 + 0.608 * q) * R_DRY * t
    u10, v10 = 3.0 + 0 * lat, -2.0 + 0 * lat
    st = PointState({"u10": u10, "v10": v10, "t2m": t, "q2": q, "rho": rho, "sp": p}, lat, lon)
    assert float(EQUATIONS["state"].residual(st)["p"].abs().max().detach()) < 1e-8
    assert float(EQUATIONS["continuity"].residual(st)["rho"].abs().max().detach()) < 1e-12
    mom = EQUATIONS["momentum_u"].residual(st)["u"]
    assert torch.isfinite(mom).all()
    assert set(e.name for e in get_equations("auto", list(st.values))) >= {
        "momentum_u", "momentum_v", "continuity", "thermodynamic", "vapour", "state"}


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_thermal_wind_of_balanced_levels_is_small():
    lat = np.arange(-80, 80.1, 1.0)
    lon = np.arange(-180, 180, 1.0)
    levels = [850.0, 500.0, 300.0]
    fields = [geostrophic_fields(lat, lon, a=3e4 * (1 + np.log(1000 / p)), b=2e3)
              for p in levels]
    u, v, z = (np.stack([f[i] for f in fields]) for i in range(3))
    st = GridState({"u": u, "v": v, "z": z}, lat, lon, levels=levels)
    res = EQUATIONS["thermal_wind"].residual(st)
    band = np.broadcast_to((np.abs(lat) >= 15)[:, None], u[1].shape)
    r = np.abs(res["u"][1])[band]
    assert np.nanmax(r) < 1e-3 * np.nanmean(np.abs(st.f[1] * u[1])[band])


def test_get_equations_errors():
    assert [e.name for e in get_equations("auto", ["u", "v", "z"])] == ["geostrophic"]
    with pytest.raises(DataError, match="unknown equation"):
        get_equations("nope", ["u"])
    with pytest.raises(DataError, match="needs variables"):
        get_equations(["geostrophic"], ["u", "v"])
