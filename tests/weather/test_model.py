from __future__ import annotations

import numpy as np
import pytest
import torch

from cropscope.weather.equations import PointState
from cropscope.weather.geometry import RegularGrid
from cropscope.weather.interp import sample_grid
from cropscope.weather.model import (
    FieldNet,
    ModelConfig,
    build_context,
    predict_grid,
    predict_points,
    roughness_scale,
)
from tests.weather.conftest_helpers import geostrophic_fields


def _context(dtype=torch.float32):
    lat = np.arange(-60, 60.1, 5.0)
    lon = np.arange(-180, 180, 5.0)
    u, v, z = geostrophic_fields(lat, lon)
    u, v = np.nan_to_num(u, posinf=0, neginf=0), np.nan_to_num(v, posinf=0, neginf=0)
    values = np.stack([np.clip(u, -50, 50), np.clip(v, -50, 50), z])[None]
    grid = RegularGrid.from_coords(lat, lon)
    ctx = build_context(values, grid, roughness_scale(values, True), patch=5)
    if dtype != torch.float32:
        for name in ("values", "means", "tokens", "sigma"):
            setattr(ctx, name, getattr(ctx, name).to(dtype))
    return ctx, values, grid


def test_keys_bicubic_reproduces_quadratics_and_nodes():
    ny, nx = 8, 10
    yy, xx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    vals = torch.tensor((1 + 2 * yy + 0.5 * xx + 0.1 * yy * xx + 0.05 * xx**2)[None, None],
                        dtype=torch.float64)
    iy = torch.tensor([2.3, 3.5, 4.0, 5.7], dtype=torch.float64)
    ix = torch.tensor([2.1, 6.5, 4.0, 3.3], dtype=torch.float64)
    out = sample_grid(vals, torch.zeros(4, dtype=torch.long), iy, ix, "bicubic", False)[:, 0]
    exact = 1 + 2 * iy + 0.5 * ix + 0.1 * iy * ix + 0.05 * ix**2
    torch.testing.assert_close(out, exact)


def test_untrained_model_is_bicubic_and_exact_at_nodes():
    ctx, values, grid = _context()
    net = FieldNet(3, ModelConfig())
    lat_f, lon_f = np.arange(-60, 60.1, 1.0), np.arange(-180, 180, 1.25)
    np.testing.assert_allclose(predict_grid(net, ctx, 0, lat_f, lon_f),
                               predict_grid(None, ctx, 0, lat_f, lon_f), rtol=1e-6, atol=1e-3)
    at_nodes = predict_grid(net, ctx, 0, grid.lat, grid.lon)
    np.testing.assert_allclose(at_nodes, values[0], rtol=1e-5, atol=0.02)


def test_grid_and_point_queries_agree():
    ctx, _, _ = _context()
    net = FieldNet(3, ModelConfig())
    torch.nn.init.normal_(net.head, std=0.3)
    lat, lon = np.array([-12.3, 7.7, 44.4]), np.array([-179.0, 3.3, 177.5])
    grid_vals = predict_grid(net, ctx, 0, lat, lon)  # [V, 3, 3]
    with torch.no_grad():
        pts = predict_points(net, ctx, torch.zeros(3, dtype=torch.long),
                             torch.tensor(lat, dtype=torch.float32),
                             torch.tensor(lon, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(np.diagonal(grid_vals, axis1=1, axis2=2).T, pts, rtol=1e-5,
                               atol=1e-3)


def test_autograd_derivatives_match_finite_differences():
    torch.manual_seed(0)
    ctx, _, _ = _context(torch.float64)
    net = FieldNet(3, ModelConfig()).double()
    torch.nn.init.normal_(net.head, std=0.5)
    # points well inside cells (the corner blend is C0 across cell edges)
    g = torch.Generator().manual_seed(0)
    cy = torch.randint(3, 20, (16,), generator=g).double()
    cx = torch.randint(0, 70, (16,), generator=g).double()
    lat = -60 + 5.0 * (cy + 0.25 + 0.5 * torch.rand(16, generator=g, dtype=torch.float64))
    lon = -180 + 5.0 * (cx + 0.25 + 0.5 * torch.rand(16, generator=g, dtype=torch.float64))
    s = torch.zeros(16, dtype=torch.long)
    lat_l, lon_l = lat.clone().requires_grad_(True), lon.clone().requires_grad_(True)
    out = predict_points(net, ctx, s, lat_l, lon_l)
    st = PointState({"u": out[:, 0], "z": out[:, 2]}, lat_l, lon_l)
    h = 1e-4  # degrees
    for k, var in ((0, "u"), (2, "z")):
        with torch.no_grad():
            dlat = (predict_points(net, ctx, s, lat + h, lon)[:, k]
                    - predict_points(net, ctx, s, lat - h, lon)[:, k]) / (2 * h)
            dlon = (predict_points(net, ctx, s, lat, lon + h)[:, k]
                    - predict_points(net, ctx, s, lat, lon - h)[:, k]) / (2 * h)
        m_per_deg = 6.371e6 * np.pi / 180
        fd_dy = dlat / m_per_deg
        fd_dx = dlon / (m_per_deg * torch.cos(torch.deg2rad(lat)))
        torch.testing.assert_close(st.dy(var).detach(), fd_dy, rtol=1e-5, atol=1e-12)
        torch.testing.assert_close(st.dx(var).detach(), fd_dx, rtol=1e-5, atol=1e-12)
    # the residual part is not trivially zero (the check is not vacuous)
    with torch.no_grad():
        base = predict_points(None, ctx, s, lat, lon)
    assert float((out.detach() - base).abs().max()) > 1e-3


@pytest.mark.parametrize("patch", [3, 5])
def test_context_shapes(patch):
    ctx, values, grid = _context()
    ctx = build_context(values, grid, roughness_scale(values, True), patch)
    assert ctx.tokens.shape == (grid.ny * grid.nx, patch * patch, 2 * 3 + 2)
    assert torch.isfinite(ctx.tokens).all() and (ctx.sigma > 0).all()


def test_output_resolution_and_model_sizes_are_checked() -> None:
    from cropscope.errors import DataError, ModelError
    from cropscope.weather.field import check_resolution
    from cropscope.weather.model import ModelConfig

    check_resolution(0.25, 10.0, 20.0, 4)
    for bad in (float("nan"), 0.0, -1.0, float("inf")):
        with pytest.raises(DataError, match="positive number of degrees"):
            check_resolution(bad, 10.0, 20.0, 4)
    with pytest.raises(DataError, match="memory"):
        check_resolution(1e-4, 180.0, 360.0, 4)  # 6.5e12 cells
    with pytest.raises(ModelError, match="multiple of n_heads"):
        ModelConfig(d_model=3, n_heads=2)
    with pytest.raises(ModelError, match="positive integer"):
        ModelConfig(n_layers=0)


def test_pde_weights_name_known_equations() -> None:
    from cropscope.errors import ModelError
    from cropscope.weather.training import TrainConfig

    assert TrainConfig.from_dict({"w_pde": {"*": 0.1, "geostrophic": 1.0}}).pde_weight(
        "geostrophic") == 1.0
    for bad in ({"nope": 1}, {"*": -1}, {"*": "x"}, [0.1]):
        with pytest.raises(ModelError, match="w_pde"):
            TrainConfig.from_dict({"w_pde": bad})
