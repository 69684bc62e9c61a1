"""Spherical geometry on latitude/longitude grids (metres per degree depend on latitude).

DeepPhysiNet's released code uses one constant spacing (27 km per 0.25° cell) in x and y;
here the zonal spacing shrinks with cos(latitude): dx = R cos φ dλ, dy = R dφ.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cropscope.errors import DataError

EARTH_RADIUS = 6.371e6  #: m
OMEGA = 7.2921e-5  #: Earth's rotation rate, s⁻¹
G0 = 9.80665  #: standard gravity, m s⁻²
R_DRY = 287.0  #: J kg⁻¹ K⁻¹
R_VAPOUR = 461.5
CP = 1005.0
LATENT_HEAT = 2.5e6

__all__ = [
    "EARTH_RADIUS", "G0", "OMEGA", "RegularGrid", "coriolis", "grid_gradient",
    "metres_per_degree",
]


def metres_per_degree(lat_deg: np.ndarray | float) -> tuple[np.ndarray, float]:
    """(metres per degree of longitude at ``lat_deg``, metres per degree of latitude)."""
    per_deg = EARTH_RADIUS * np.pi / 180.0
    return per_deg * np.cos(np.deg2rad(lat_deg)), per_deg


def coriolis(lat_deg: np.ndarray | float) -> np.ndarray:
    """Coriolis parameter f = 2Ω sin φ (s⁻¹)."""
    return 2.0 * OMEGA * np.sin(np.deg2rad(lat_deg))


@dataclass(frozen=True)
class RegularGrid:
    """A regular latitude/longitude grid (latitude ascending)."""

    lat0: float
    dlat: float
    ny: int
    lon0: float
    dlon: float
    nx: int

    @classmethod
    def from_coords(cls, lat: np.ndarray, lon: np.ndarray) -> RegularGrid:
        lat, lon = np.asarray(lat, float), np.asarray(lon, float)
        if lat.size < 4 or lon.size < 4:
            raise DataError(f"grid too small ({lat.size}×{lon.size}); need ≥ 4 points per axis")
        for name, c in (("latitude", lat), ("longitude", lon)):
            d = np.diff(c)
            if not (np.all(d > 0) and np.allclose(d, d[0], rtol=1e-4, atol=1e-6)):
                raise DataError(f"{name} must be regular and ascending")
        return cls(float(lat[0]), float(lat[1] - lat[0]), lat.size,
                   float(lon[0]), float(lon[1] - lon[0]), lon.size)

    @property
    def lat(self) -> np.ndarray:
        return self.lat0 + self.dlat * np.arange(self.ny)

    @property
    def lon(self) -> np.ndarray:
        return self.lon0 + self.dlon * np.arange(self.nx)

    @property
    def periodic(self) -> bool:
        """True when the longitudes cover the whole circle (wrap-around neighbours)."""
        return abs(self.nx * self.dlon - 360.0) < 1e-6 * 360.0

    def subsample(self, k: int, offset_y: int = 0, offset_x: int = 0) -> RegularGrid:
        ny = len(range(offset_y, self.ny, k))
        nx = len(range(offset_x, self.nx, k))
        return RegularGrid(self.lat0 + offset_y * self.dlat, self.dlat * k, ny,
                           self.lon0 + offset_x * self.dlon, self.dlon * k, nx)

    def to_dict(self) -> dict[str, float | int]:
        return {k: getattr(self, k) for k in ("lat0", "dlat", "ny", "lon0", "dlon", "nx")}


def grid_gradient(field: np.ndarray, lat: np.ndarray, lon: np.ndarray,
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Centred finite-difference (∂/∂x, ∂/∂y) in per-metre units on a lat/lon grid.

    ``field`` is ``[..., lat, lon]``; zonal spacing is R cos φ Δλ. Longitude wraps when the
    grid is global; edge rows/columns that have no centred neighbour are NaN.
    """
    grid = RegularGrid.from_coords(lat, lon)
    dx_deg, dy_deg = metres_per_degree(grid.lat)
    dx = (dx_deg * grid.dlon)[:, None]
    dy = dy_deg * grid.dlat
    f = np.asarray(field, float)
    ddy = np.full_like(f, np.nan)
    ddy[..., 1:-1, :] = (f[..., 2:, :] - f[..., :-2, :]) / (2 * dy)
    if grid.periodic:
        ddx = (np.roll(f, -1, axis=-1) - np.roll(f, 1, axis=-1)) / (2 * dx)
    else:
        ddx = np.full_like(f, np.nan)
        ddx[..., 1:-1] = (f[..., 2:] - f[..., :-2]) / (2 * dx)
    with np.errstate(divide="ignore", invalid="ignore"):
        ddx = np.where(np.abs(np.cos(np.deg2rad(grid.lat)))[:, None] < 1e-6, np.nan, ddx)
    return ddx, ddy
