"""Supervised downscaling (``cropscope.weather.supervised``) on tiny generated files."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cropscope.errors import DataError, ModelError
from cropscope.weather import supervised
from cropscope.weather.equations import EQUATIONS
from cropscope.weather.geometry import EARTH_RADIUS, R_DRY
from cropscope.weather.supervised import (
    SupervisedField,
    load_supervised,
    pde_residuals,
    prepare_training,
    train_supervised,
)
from cropscope.weather.windows import HOUR, reference_predictions
from tests.weather.conftest_helpers import make_t2m_dataset

FAST = {"d_model": 8, "n_heads": 2, "n_query": 4, "hidden": 16, "static": 2, "batch": 256,
        "steps": 12, "checkpoint_every": 6, "dropout": 0.0, "members": 2}


@pytest.fixture(scope="module")
def t2m_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("t2m") / "t2m.nc"
    make_t2m_dataset().to_netcdf(path, engine="scipy")
    return path


@pytest.fixture(scope="module")
def data(t2m_file):
    return prepare_training(t2m_file, 4, 6, "2019-03-03T11", window=18)


def _random_field(data, seed: int = 0, dtype=torch.float64) -> SupervisedField:
    """An untrained field whose every layer (head included) has random weights."""
    torch.manual_seed(seed)
    cfg = supervised.SupervisedConfig.from_dict({**FAST, "stencil": 1})
    coarse = data.fine_grid.subsample(data.coarsen)
    net = supervised.DownscaleNet(1, (coarse.ny, coarse.nx),
                                  (data.fine_grid.ny, data.fine_grid.nx),
                                  cfg.window // data.step_h + 1, cfg.model_dict())
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    net = net.to(dtype)
    fld = SupervisedField(net, data.variables, data.fine_grid, data.coarsen, data.all_inputs,
                          data.norm, data.hour_bias, {})
    fld.knots = fld.knots.to(dtype)
    return fld


def _points(fld, n, gen):
    """Points strictly inside fine cells (away from the grid lines where bilinear
    interpolation has kinks) and times inside the file."""
    g = fld.fine
    fy = torch.randint(g.ny - 1, (n,), generator=gen) + 0.2 + 0.6 * torch.rand(n, generator=gen)
    fx = torch.randint(g.nx - 1, (n,), generator=gen) + 0.2 + 0.6 * torch.rand(n, generator=gen)
    lat = (g.lat0 + fy * g.dlat).double()
    lon = (g.lon0 + fx * g.dlon).double()
    h = fld.inputs.axis.hours(np.array([fld.inputs.t_min, fld.inputs.t_max]))
    t = float(h[0]) + 1 + torch.rand(n, generator=gen, dtype=torch.float64) * float(
        h[1] - h[0] - 2)
    return lat, lon, t


def test_autograd_derivatives_match_finite_differences(data):
    fld = _random_field(data)
    lat, lon, t = _points(fld, 40, torch.Generator().manual_seed(1))
    lat.requires_grad_(True)
    lon.requires_grad_(True)
    t.requires_grad_(True)
    out = fld.predict(lat, lon, t)[:, 0]
    g_lat, g_lon, g_t = torch.autograd.grad(out.sum(), [lat, lon, t])
    assert float(g_t.abs().mean()) > 1e-3 and float(g_lon.abs().mean()) > 1e-3  # not flat
    h_deg, h_t = 1e-5, 1e-5
    with torch.no_grad():
        fd_lat = (fld.predict(lat + h_deg, lon, t) - fld.predict(lat - h_deg, lon, t))[:, 0] \
            / (2 * h_deg)
        fd_lon = (fld.predict(lat, lon + h_deg, t) - fld.predict(lat, lon - h_deg, t))[:, 0] \
            / (2 * h_deg)
        fd_t = (fld.predict(lat, lon, t + h_t) - fld.predict(lat, lon, t - h_t))[:, 0] \
            / (2 * h_t)
    torch.testing.assert_close(g_lat, fd_lat, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_lon, fd_lon, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_t, fd_t, rtol=1e-5, atol=1e-6)
    # in metres and seconds, as the PDE terms read them (PointState, spherical metric)
    from cropscope.weather.equations import PointState

    t_s = (t.detach() * HOUR).requires_grad_(True)
    vals = fld.predict(lat, lon, t_s / HOUR)[:, 0]
    st = PointState({"t2m": vals}, lat, lon, t_s)
    m_per_deg_y = EARTH_RADIUS * math.pi / 180
    m_per_deg_x = m_per_deg_y * torch.cos(torch.deg2rad(lat.detach()))
    torch.testing.assert_close(st.dx("t2m"), fd_lon / m_per_deg_x, rtol=1e-5, atol=1e-12)
    torch.testing.assert_close(st.dy("t2m"), fd_lat / m_per_deg_y, rtol=1e-5, atol=1e-12)
    torch.testing.assert_close(st.dt("t2m"), fd_t / HOUR, rtol=1e-5, atol=1e-12)


class _Analytic:
    """A stand-in field with analytic surface variables (for the PDE pipeline)."""

    def __init__(self, u: float, sign: float = 1.0) -> None:
        self.u, self.sign = u, sign
        self.variables = ["u10", "v10", "rho", "sp", "t2m", "q2"]

    def predict(self, lat, lon, t_h, model=True):
        phi = torch.deg2rad(lat)
        t_s = t_h * HOUR
        # ρ advected by a uniform zonal wind: ∂ρ/∂t + u ∂ρ/∂x = 0 with ∂/∂x = ∂/∂λ / (R cos φ)
        arg = torch.deg2rad(lon) - self.sign * self.u * t_s / (EARTH_RADIUS * torch.cos(phi))
        rho = 1.2 + 0.05 * torch.sin(3 * arg)
        q = 0.005 + 0 * lat
        temp = 285 + 2 * torch.cos(phi) + 0 * lon
        p = rho * (1 + 0.608 * q) * R_DRY * temp
        u = self.u + 0 * lat
        return torch.stack([u, 0 * u, rho, p, temp, q], dim=-1)


def test_pde_residual_of_an_analytic_solution_is_zero():
    gen = torch.Generator().manual_seed(0)
    lat = (40 + 10 * torch.rand(200, generator=gen)).double()
    lon = (-5 + 10 * torch.rand(200, generator=gen)).double()
    t_s = (3600 * 48 * torch.rand(200, generator=gen)).double()
    eqs = [EQUATIONS["continuity"], EQUATIONS["state"]]
    res = pde_residuals(_Analytic(8.0), eqs, lat, lon, t_s)  # type: ignore[arg-type]
    # each term is ~2e-7 kg m⁻³ s⁻¹; their sum vanishes to rounding
    assert float(res["continuity.rho"].detach().abs().max()) < 1e-15
    assert float(res["state.p"].detach().abs().max()) < 1e-6
    # the same field advected the wrong way violates continuity clearly
    bad = pde_residuals(_Analytic(8.0, sign=-1.0), eqs, lat, lon, t_s)  # type: ignore[arg-type]
    assert float(bad["continuity.rho"].detach().abs().max()) > 1e-7


def _jump(fld, t_b, lat, lon, eps=1e-4):
    """Value and time-derivative differences across ``t_b`` (hours since knot 0)."""
    vals, ders = [], []
    for t in (t_b - eps, t_b + eps):
        tt = torch.full_like(lat, t).requires_grad_(True)
        v = fld.predict(lat, lon, tt)[:, 0]
        (d,) = torch.autograd.grad(v.sum(), [tt])
        vals.append(v.detach())
        ders.append(d)
    return (vals[1] - vals[0]).abs().max(), (ders[1] - ders[0]).abs().max(), \
        ders[0].abs().mean()


def test_continuous_in_time_at_hour_and_window_boundaries(data):
    fld = _random_field(data, seed=2)
    lat, lon, _ = _points(fld, 30, torch.Generator().manual_seed(3))
    ax = fld.inputs.axis
    step = float(ax.step_h)
    window_edge = (ax.pad + 3) * step  # an input step: windows start and end there
    for t_b in (window_edge, window_edge + 1.0, window_edge + 2.0 * step + 3.0):
        dv, dd, scale = _jump(fld, t_b, lat, lon)
        assert float(scale) > 1e-3
        assert float(dv) < 1e-3 * float(scale) + 1e-9  # no jump in the value …
        assert float(dd) < 1e-2 * float(scale)  # … nor in its first derivative
    # the detector sees the kink of linear interpolation in time at an input step
    knots = fld.knots[:, 0, 1, 1].double()
    k = int(window_edge / step)
    slope_before = (knots[k] - knots[k - 1]) / step
    slope_after = (knots[k + 1] - knots[k]) / step
    assert float((slope_after - slope_before).abs()) > 1e-2 * float(scale)


def test_train_checkpoint_resume_gives_the_same_weights(data, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    full = train_supervised(data, FAST)
    real = supervised._save_files
    calls = {"n": 0}

    def save_then_crash(*args, **kwargs):
        real(*args, **kwargs)
        calls["n"] += 1
        raise KeyboardInterrupt

    monkeypatch.setattr(supervised, "_save_files", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        train_supervised(data, FAST, tmp_path / "run")
    monkeypatch.setattr(supervised, "_save_files", real)
    assert calls["n"] == 1
    with pytest.raises(ModelError, match="not a complete run"):
        load_supervised(tmp_path / "run")  # interrupted: nothing loadable
    with pytest.raises(DataError, match="differ"):
        train_supervised(data, {**FAST, "lr": 1e-3}, tmp_path / "run", resume=True)
    resumed = train_supervised(data, FAST, tmp_path / "run", resume=True)
    for k, v in full.net.state_dict().items():
        torch.testing.assert_close(resumed.net.state_dict()[k], v, rtol=0, atol=0)
    loaded = load_supervised(tmp_path / "run")
    for k, v in full.net.state_dict().items():
        torch.testing.assert_close(loaded.net.state_dict()[k], v, rtol=0, atol=0)
    # the run answers queries like the field returned by the training
    t = np.datetime64("2019-03-02T07:30")
    np.testing.assert_allclose(loaded.sample("t2m", 51.1, -3.3, t),
                               full.sample("t2m", 51.1, -3.3, t), rtol=1e-6)


def test_device_option_resumes_across_devices(data, tmp_path, monkeypatch):
    """``device`` is not part of the fingerprint: a run started on one device resumes on
    another (here "cpu" then "auto"), to the same weights; a device the machine lacks is a
    ModelError before anything is written."""
    torch.set_num_threads(1)
    full = train_supervised(data, {**FAST, "device": "cpu"})
    assert full.device.type == "cpu" and full.info["device"] == "cpu"
    real = supervised._save_files

    def save_then_crash(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(supervised, "_save_files", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        train_supervised(data, {**FAST, "device": "cpu"}, tmp_path / "run")
    monkeypatch.setattr(supervised, "_save_files", real)
    resumed = train_supervised(data, {**FAST, "device": "auto"}, tmp_path / "run", resume=True)
    tol = {"rtol": 0, "atol": 0} if resumed.device.type == "cpu" else {"rtol": 1e-3,
                                                                      "atol": 1e-4}
    for k, v in full.net.state_dict().items():
        torch.testing.assert_close(resumed.net.state_dict()[k].cpu(), v, **tol)
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="CUDA is not available"):
            train_supervised(data, {**FAST, "device": "cuda"}, tmp_path / "cuda")
        assert not (tmp_path / "cuda").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_training_matches_cpu(data, tmp_path):
    torch.set_num_threads(1)
    cpu = train_supervised(data, {**FAST, "device": "cpu"})
    gpu = train_supervised(data, {**FAST, "device": "cuda"}, tmp_path / "run")
    assert gpu.device.type == "cuda"
    loaded = load_supervised(tmp_path / "run")  # saved from the GPU, loads on the CPU
    t = np.datetime64("2019-03-02T07:30")
    np.testing.assert_allclose(gpu.sample("t2m", 51.1, -3.3, t),
                               loaded.sample("t2m", 51.1, -3.3, t), rtol=1e-5)
    np.testing.assert_allclose(loaded.sample("t2m", 51.1, -3.3, t),
                               cpu.sample("t2m", 51.1, -3.3, t), atol=0.05)


def test_failed_training_leaves_nothing_loadable(data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    train_supervised(data, {**FAST, "steps": 2}, out)
    assert load_supervised(out).variables == ["t2m"]

    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(torch.optim.AdamW, "step", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        train_supervised(data, {**FAST, "steps": 4}, out)
    with pytest.raises(ModelError, match="not a complete run"):
        load_supervised(out)


def test_damaged_run_is_refused(data, tmp_path):
    out = tmp_path / "run"
    train_supervised(data, {**FAST, "steps": 2}, out)
    path = out / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-4] + b"0000")
    with pytest.raises(ModelError, match="checksum"):
        load_supervised(out)


def test_training_learns_and_queries(t2m_file, data, tmp_path):
    torch.set_num_threads(1)
    fld = train_supervised(data, {**FAST, "steps": 150, "batch": 512, "lr": 3e-3}, tmp_path / "r")
    losses = [h["data"] for h in fld.info["history"]["loss"]]
    assert np.mean(losses[-3:]) < 0.7 * losses[0]
    # arbitrary points and times, inside the inputs; outside refused
    v = fld.sample("t2m", [51.13, 49.9], [-3.31, -0.2], np.datetime64("2019-03-04T05:17"))
    assert np.all(np.isfinite(v)) and np.all((270 < v) & (v < 290))
    with pytest.raises(DataError, match="within the inputs"):
        fld.sample("t2m", 51.0, -3.0, np.datetime64("2019-03-09T00"))
    with pytest.raises(DataError, match="domain"):
        fld.sample("t2m", 60.0, -3.0, np.datetime64("2019-03-02T00"))
    with pytest.raises(DataError, match="needs a time"):
        fld.sample("t2m", 51.0, -3.0, None)
    # on grid points the gridded output equals the point queries
    times = np.array(["2019-03-03T13", "2019-03-03T14:30"], dtype="datetime64[s]")
    grid = fld.grid(times)
    g = fld.fine
    np.testing.assert_allclose(grid[1, 0, 3, 5], fld.sample("t2m", g.lat[3], g.lon[5],
                                                           times[1]), rtol=1e-6)
    ds = fld.to_dataset(resolution=0.1, times=times)
    assert ds["t2m"].shape == (2, 31, 41)


def test_references_agree_with_a_direct_computation(t2m_file):
    from scipy.interpolate import RegularGridInterpolator

    from cropscope.weather.readers import open_weather

    ds = open_weather(t2m_file)
    fine = ds["t2m"].values[:, None]
    times = ds["time"].values.astype("datetime64[s]")
    lat, lon = ds["latitude"].values, ds["longitude"].values
    scored = times >= np.datetime64("2019-03-03T12")
    train = ~scored
    ref, source = reference_predictions(fine, times, 4, 6, lat, lon, scored, train)
    assert source.startswith("file")
    # by hand: input steps every 6 h, bilinear in space, linear in time
    steps = np.arange(0, times.size, 6)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    sp = np.stack([RegularGridInterpolator((lat[::4], lon[::4]), fine[s, 0, ::4, ::4])(
        np.stack([la.ravel(), lo.ravel()], -1)).reshape(la.shape) for s in steps])
    h = np.arange(times.size)
    bl = np.stack([np.interp(np.full(1, x), steps, np.arange(steps.size)) for x in h])[:, 0]
    i0 = np.minimum(np.floor(bl).astype(int), steps.size - 2)
    w = (bl - i0)[:, None, None]
    lin = (1 - w) * sp[i0] + w * sp[i0 + 1]
    np.testing.assert_allclose(ref["bilinear_linear"][:, 0], lin[scored], atol=1e-9)
    res = fine[:, 0] - lin
    table = np.stack([res[train][(h[train] % 24) == k].mean(0) for k in range(24)])
    np.testing.assert_allclose(ref["hour_bias"][:, 0], lin[scored] + table[h[scored] % 24],
                               atol=1e-9)


def test_prepare_training_errors(t2m_file, tmp_path):
    with pytest.raises(DataError, match="outside the file"):
        prepare_training(t2m_file, 4, 6, "2019-04-01T00")
    with pytest.raises(DataError, match="fewer than two windows"):
        prepare_training(t2m_file, 4, 6, "2019-03-01T23")
    with pytest.raises(DataError, match="does not divide"):
        prepare_training(t2m_file, 4, 2.5, "2019-03-03T00")
    with pytest.raises(DataError, match="not in the file"):
        prepare_training(t2m_file, 4, 6, "2019-03-03T00", variables=["u10"])
    with pytest.raises(ModelError, match="multiple"):
        prepare_training(t2m_file, 4, 6, "2019-03-03T00", 10)
    three_hourly = tmp_path / "t3.nc"
    make_t2m_dataset(hours=32, step_h=3).to_netcdf(three_hourly, engine="scipy")
    with pytest.raises(DataError, match="does not divide"):
        prepare_training(three_hourly, 4, 4, "2019-03-03T00")
    with pytest.raises(ModelError, match="unknown option"):
        supervised.SupervisedConfig.from_dict({"stepz": 3})
    data = prepare_training(t2m_file, 4, 6, "2019-03-03T00", window=24)
    with pytest.raises(ModelError, match="prepared for 24 h"):
        train_supervised(data, {**FAST, "window": 18})


def test_node_table_equals_the_general_stencil(data):
    fld = _random_field(data, dtype=torch.float32)
    table = fld.node_stencils()
    g = fld.fine
    gen = torch.Generator().manual_seed(5)
    iy = torch.randint(g.ny, (50,), generator=gen)
    ix = torch.randint(g.nx, (50,), generator=gen)
    j = torch.randint(fld.knots.shape[0] - fld.n_w, (50,), generator=gen)
    lat = (g.lat0 + iy * g.dlat).float()
    lon = (g.lon0 + ix * g.dlon).float()
    _, _, cy, cx = fld._indices(lat, lon)
    general = fld.stencil(j, cy, cx)
    looked_up = table[j[:, None] + torch.arange(fld.n_w + 1), (iy * g.nx + ix)[:, None]]
    torch.testing.assert_close(looked_up.reshape(general.shape), general)


def test_pde_terms_join_after_the_warmup(tmp_path):
    ds = make_t2m_dataset(hours=60)
    t = ds["t2m"]
    ds = ds.assign(u10=3.0 + 0.1 * (t - 280), v10=-1.0 + 0 * t, rho=1.25 - 0.004 * (t - 280))
    ds = ds.drop_vars("t2m")
    path = tmp_path / "uvr.nc"
    ds.to_netcdf(path, engine="scipy")
    data = prepare_training(path, 4, 6, "2019-03-02T23", window=12)
    fld = train_supervised(data, {**FAST, "window": 12, "steps": 6, "warmup": 3,
                                  "pde_points": 64, "checkpoint_every": 0})
    assert fld.info["equations"] == ["continuity"]
    hist = fld.info["history"]["loss"]
    assert "continuity" not in hist[0] and "continuity" in hist[-1]
    assert np.isfinite(hist[-1]["continuity"])
