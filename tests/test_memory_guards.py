"""Readers that load whole arrays refuse a small file declaring a huge one (issue 20, item 10).

Each file below is a few kilobytes on disk but declares arrays of hundreds of megabytes
(chunked HDF5 datasets that were never written, or a compressed MATLAB array of zeros).
With ``CROPSCOPE_MEMORY_LIMIT=32M`` every reader must raise one ``DataError`` naming the
limit *before* it allocates; with the default limit the same files read normally, so the
guard is what refuses them (the test would fail without it).
"""

from __future__ import annotations

import resource
from pathlib import Path

import numpy as np
import pytest

from cropscope.errors import DataError

h5py = pytest.importorskip("h5py")

LIMIT = "32M"
BIG = 4096  # a 4096 x 4096 float32 plane is 64 MiB, twice the limit


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _refused(monkeypatch: pytest.MonkeyPatch, read, *args) -> str:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CROPSCOPE_MEMORY_LIMIT", LIMIT)
    with pytest.raises(DataError) as err:
        read(*args)
    msg = str(err.value)
    assert "CROPSCOPE_MEMORY_LIMIT" in msg and "32.0 MiB" in msg
    return msg


def test_matlab_v5_declared_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import scipy.io

    from cropscope.hyperspectral.readers.matlab import load_mat_variables

    path = tmp_path / "scene.mat"
    scipy.io.savemat(path, {"cube": np.zeros((BIG, BIG, 1), np.float64)}, do_compression=True)
    assert path.stat().st_size < 1_000_000  # small on disk, 128 MiB once loaded
    msg = _refused(monkeypatch, load_mat_variables, path)
    assert "scene.mat" in msg
    monkeypatch.delenv("CROPSCOPE_MEMORY_LIMIT")
    assert load_mat_variables(path)["cube"].shape == (BIG, BIG, 1)


def test_matlab_v73_declared_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cropscope.hyperspectral.readers.matlab import load_mat_variables

    path = tmp_path / "scene73.mat"
    with h5py.File(path, "w") as f:
        f.create_dataset("cube", shape=(20, BIG, BIG), dtype="f4", chunks=(1, 256, 256))
    assert path.stat().st_size < 1_000_000  # never written: 1.25 GiB declared
    before = _peak_mib()
    _refused(monkeypatch, load_mat_variables, path)
    assert _peak_mib() - before < 500  # refused before reading


def test_h5_patch_declared_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cropscope.data.readers.h5patches import H5PatchDataset

    with h5py.File(tmp_path / "p0.h5", "w") as f:
        f.create_dataset("S2", shape=(4, 2, BIG, BIG), dtype="f4", chunks=(1, 1, 256, 256))
        f.create_dataset("label", data=np.zeros((4, 4), np.int64))
    ds = H5PatchDataset(tmp_path, sources=("S2",))
    before = _peak_mib()
    msg = _refused(monkeypatch, ds.read_raw, 0)
    assert "p0.h5" in msg and _peak_mib() - before < 500


def test_weather_declared_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    h5netcdf = pytest.importorskip("h5netcdf")
    from cropscope.weather.readers import open_weather

    path = tmp_path / "t2m.nc"
    n = 1024
    with h5netcdf.File(path, "w") as f:
        f.dimensions = {"time": 4, "latitude": n, "longitude": n}
        f.create_variable("latitude", ("latitude",), "f4")[:] = np.linspace(50, 60, n)
        f.create_variable("longitude", ("longitude",), "f4")[:] = np.linspace(-5, 5, n)
        t = f.create_variable("time", ("time",), "i4")
        t[:] = np.arange(4)
        t.attrs["units"] = "hours since 2019-03-01"
        f.create_variable("t2m", ("time", "latitude", "longitude"), "f4", chunks=(1, 256, 256))
    msg = _refused(monkeypatch, open_weather, path)  # 4 x 1024^2 as float64 = 32 MiB + coords
    assert "t2m.nc" in msg
    monkeypatch.delenv("CROPSCOPE_MEMORY_LIMIT")
    assert open_weather(path)["t2m"].shape == (4, n, n)


def test_xarray_cube_declared_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("h5netcdf")
    import xarray as xr

    from cropscope.data.readers.xarray_cube import XarrayCubeSource

    n = 1024
    da = xr.DataArray(np.zeros((8, n, n), np.int16), dims=("time", "y", "x"), coords={
        "time": np.datetime64("2021-01-01") + np.arange(8).astype("timedelta64[D]") * 10,
        "y": 5_000_000.0 - 10.0 * np.arange(n), "x": 500_000.0 + 10.0 * np.arange(n)},
        name="NDVI")  # fmt: skip
    path = tmp_path / "cube.nc"
    da.to_dataset().to_netcdf(path, engine="h5netcdf",
                              encoding={"NDVI": {"zlib": True, "chunksizes": (1, 256, 256)}})
    src = XarrayCubeSource.open(path)
    msg = _refused(monkeypatch, src.read)  # 8 x 1024^2: 16 MiB of int16 + 32 MiB as float32
    assert "cube.nc" in msg
    monkeypatch.delenv("CROPSCOPE_MEMORY_LIMIT")
    assert src.read().shape == (8, 1, n, n)
