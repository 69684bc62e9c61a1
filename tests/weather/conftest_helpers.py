"""Tiny generated weather fields shared by the weather tests."""

from __future__ import annotations

import numpy as np
import xarray as xr

from cropscope.weather.geometry import EARTH_RADIUS, OMEGA


def geostrophic_fields(lat: np.ndarray, lon: np.ndarray, a: float = 3e4, b: float = 2e3
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Φ = a sin φ + b sin λ cos φ and its exact geostrophic wind (u, v) on a grid."""
    phi, lam = np.meshgrid(np.deg2rad(lat), np.deg2rad(lon), indexing="ij")
    f = 2 * OMEGA * np.sin(phi)
    z = 50000 + a * np.sin(phi) + b * np.sin(lam) * np.cos(phi)
    dzdy = (a * np.cos(phi) - b * np.sin(lam) * np.sin(phi)) / EARTH_RADIUS
    dzdx = b * np.cos(lam) / EARTH_RADIUS
    with np.errstate(divide="ignore", invalid="ignore"):
        u, v = -dzdy / f, dzdx / f
    return u, v, z


def make_uvz_dataset(n_lat: int = 25, n_lon: int = 48, levels: tuple[int, ...] = (500, 850),
                     seed: int = 0) -> xr.Dataset:
    """A small u/v/z pressure-level dataset on 90S–90N (north→south), lon 0–360, like ERA."""
    rng = np.random.default_rng(seed)
    lat = np.linspace(90, -90, n_lat)
    lon = np.arange(n_lon) * 360.0 / n_lon
    u, v, z = [], [], []
    for k, _ in enumerate(levels):
        uu, vv, zz = geostrophic_fields(lat, lon, a=1e4 * (1 + 0.2 * k), b=2e3)
        # replace the singular equatorial band by smooth values, add small waves
        band = np.abs(lat)[:, None] < 12
        uu = np.where(band, 0.0, np.nan_to_num(uu)) + rng.normal(0, 0.05, uu.shape)
        vv = np.where(band, 0.0, np.nan_to_num(vv)) + rng.normal(0, 0.05, vv.shape)
        u.append(np.clip(uu, -80, 80))
        v.append(np.clip(vv, -80, 80))
        z.append(zz)
    dims = ("level", "latitude", "longitude")
    return xr.Dataset(
        {"u": (dims, np.array(u), {"units": "m s**-1"}),
         "v": (dims, np.array(v), {"units": "m s**-1"}),
         "z": (dims, np.array(z), {"units": "m**2 s**-2"})},
        coords={"level": np.array(levels, np.int32), "latitude": lat, "longitude": lon},
    )


def make_t2m_dataset(n_lat: int = 13, n_lon: int = 17, hours: int = 96, step_h: int = 1,
                     start: str = "2019-03-01T00", seed: int = 0) -> xr.Dataset:
    """A small hourly 2 m temperature file (K) at 0.25°, latitude descending like ERA5.

    A static pattern (a ridge and a coast), a diurnal cycle whose amplitude follows the
    pattern and a wave travelling east, plus a little noise: fine detail that the coarse
    points miss and that repeats from day to day, so a model can learn it.
    """
    rng = np.random.default_rng(seed)
    lat = 52.0 - 0.25 * np.arange(n_lat)
    lon = -4.0 + 0.25 * np.arange(n_lon)
    times = np.datetime64(start, "s") + (np.arange(hours) * step_h * 3600).astype(
        "timedelta64[s]")
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    ridge = np.exp(-((lo + 2.7) ** 2) / 0.05) * np.cos(3 * la)
    land = 1 / (1 + np.exp(-(lo + 1.5 + 0.3 * np.sin(4 * la)) * 6))
    hrs = (np.arange(hours) * step_h)[:, None, None]
    diurnal = np.sin(2 * np.pi * (hrs - 9) / 24)
    wave = np.sin(2 * np.pi * (lo[None] + 0.08 * hrs) / 2.0)
    t2m = (280 - 3 * ridge[None] + 2.5 * land[None] * diurnal + wave
           + 0.05 * rng.normal(size=(hours, n_lat, n_lon)))
    return xr.Dataset({"t2m": (("time", "latitude", "longitude"), t2m.astype(np.float32),
                               {"units": "K"})},
                      coords={"time": times.astype("datetime64[ns]"), "latitude": lat,
                              "longitude": lon})
