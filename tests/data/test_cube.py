from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cropscope.data.readers.cube import date_from_name, read_cube, write_geotiff
from cropscope.errors import DataError

rasterio = pytest.importorskip("rasterio")
pytest.importorskip("rioxarray")

from rasterio.crs import CRS  # noqa: E402
from rasterio.transform import from_origin  # noqa: E402

UTM = CRS.from_epsg(32633)
TRANSFORM = from_origin(500000.0, 4000000.0, 10.0, 10.0)


def write_raw(
    path: Path,
    data: np.ndarray,
    *,
    crs: CRS | None = UTM,
    transform=TRANSFORM,
    nodata: float | None = None,
    scales: list[float] | None = None,
    offsets: list[float] | None = None,
    descriptions: list[str] | None = None,
) -> Path:
    """A plain GeoTIFF written with rasterio (independent of write_geotiff)."""
    data = data[None] if data.ndim == 2 else data
    with rasterio.open(
        path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1],
        count=data.shape[0], dtype=data.dtype.name, crs=crs, transform=transform, nodata=nodata,
    ) as dst:  # fmt: skip
        dst.write(data)
        if scales:
            dst.scales = scales
        if offsets:
            dst.offsets = offsets
        for i, d in enumerate(descriptions or []):
            dst.set_band_description(i + 1, d)
    return path


def ndvi_int16(seed: int, shape: tuple[int, int] = (6, 8)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(-2000, 10000, shape).astype(np.int16)


def test_date_from_name() -> None:
    assert str(date_from_name("TERRA_MODIS_012010_NDVI_2013-09-14.jp2")) == "2013-09-14"
    assert str(date_from_name("S2A_20210403_B04.tif")) == "2021-04-03"
    assert str(date_from_name("x_2021_04_18.tif")) == "2021-04-18"
    assert date_from_name("tile_012010_v2.tif") is None
    assert date_from_name("x_20211399.tif") is None  # not a valid date


def test_directory_of_int16_ndvi_files_is_scaled(tmp_path: Path) -> None:
    dates = ["2021-06-01", "2021-04-03", "2021-05-01"]
    raw = {d: ndvi_int16(i) for i, d in enumerate(dates)}
    for d, arr in raw.items():
        write_raw(tmp_path / f"S2_NDVI_{d}.tif", arr)
    (tmp_path / "notes.txt").write_text("not a raster")
    cube = read_cube(tmp_path)
    assert cube.dims == ("time", "band", "y", "x")
    assert cube.shape == (3, 1, 6, 8) and cube.dtype == np.float32
    assert [str(t)[:10] for t in cube["time"].values] == sorted(dates)
    assert cube["band"].values.tolist() == ["NDVI"]
    np.testing.assert_allclose(cube.values[0, 0], raw["2021-04-03"] * 1e-4, rtol=1e-6)
    assert cube.attrs["scale_factor"] == [1e-4]
    # pixel centres and georeferencing
    assert cube["x"].values[0] == 500005.0 and cube["y"].values[0] == 3999995.0
    assert cube.rio.crs == UTM
    assert cube.rio.transform() == TRANSFORM
    assert cube.attrs["transform"] == tuple(TRANSFORM)[:6]
    assert CRS.from_wkt(cube.attrs["crs"]) == UTM


def test_explicit_scale_band_dates_and_nodata(tmp_path: Path) -> None:
    arr = np.full((4, 5), 200, dtype=np.uint16)
    arr[0, 0] = 0
    files = [write_raw(tmp_path / f"img{i}.tif", arr, nodata=0) for i in range(2)]
    cube = read_cube(files, dates=["2020-01-01", "2020-01-11"], band="B04", scale=0.001)
    assert cube["band"].values.tolist() == ["B04"]
    assert np.isnan(cube.values[:, 0, 0, 0]).all()
    np.testing.assert_allclose(cube.values[0, 0, 1, 1], 0.2, rtol=1e-6)
    # nodata given by the caller overrides the file's
    other = read_cube(files, dates=["2020-01-01", "2020-01-11"], nodata=200)
    assert np.isnan(other.values[0, 0, 1, 1]) and other.values[0, 0, 0, 0] == 0.0
    assert other["band"].values.tolist() == ["band1"]
    assert other.attrs["scale_factor"] == [1.0]


def test_file_scales_and_offsets_are_applied(tmp_path: Path) -> None:
    arr = np.full((3, 3), 1000, dtype=np.int16)
    write_raw(tmp_path / "refl_20200101.tif", arr, scales=[2e-4], offsets=[-0.1])
    cube = read_cube(tmp_path / "refl_20200101.tif")
    np.testing.assert_allclose(cube.values, 0.1, rtol=1e-6)


def test_glob_and_bands_from_several_files(tmp_path: Path) -> None:
    for d in ("2021-04-03", "2021-04-18"):
        write_raw(tmp_path / f"B04_{d}.tif", np.full((2, 3), 0.1, np.float32))
        write_raw(tmp_path / f"B08_{d}.tif", np.full((2, 3), 0.4, np.float32))
    write_raw(tmp_path / "B04_2021-05-01.tif", np.full((2, 3), 0.1, np.float32))
    cube = read_cube(str(tmp_path / "*_2021-04-*.tif"))
    assert cube.shape == (2, 2, 2, 3)
    assert cube["band"].values.tolist() == ["B04", "B08"]
    np.testing.assert_allclose(cube.sel(band="B08").values, 0.4)
    with pytest.raises(DataError, match="lacks the bands"):
        read_cube(tmp_path)


def test_multiband_file_uses_descriptions(tmp_path: Path) -> None:
    data = np.stack([np.full((2, 2), v, np.float32) for v in (0.1, 0.2, 0.3)])
    write_raw(tmp_path / "s2_2021-04-03.tif", data, descriptions=["B02", "B03", "B04"])
    cube = read_cube(tmp_path / "s2_2021-04-03.tif")
    assert cube["band"].values.tolist() == ["B02", "B03", "B04"]
    np.testing.assert_allclose(cube.values[0, :, 0, 0], [0.1, 0.2, 0.3])


def test_complex_rasters_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "complex"
    folder.mkdir()
    write_raw(folder / "B04_2021-01-01.tif", np.ones((4, 4), np.complex64))
    with pytest.raises(DataError, match="complex values"):
        read_cube(folder)


def test_errors(tmp_path: Path) -> None:
    write_raw(tmp_path / "a_2021-01-01.tif", np.zeros((4, 4), np.float32))
    write_raw(tmp_path / "b_2021-01-02.tif", np.zeros((4, 5), np.float32))
    with pytest.raises(DataError, match="different shape"):
        read_cube(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    write_raw(other / "a_2021-01-01.tif", np.zeros((4, 4), np.float32))
    write_raw(other / "b_2021-01-02.tif", np.zeros((4, 4), np.float32), crs=CRS.from_epsg(4326))
    with pytest.raises(DataError, match="different CRS"):
        read_cube(other)
    shifted = tmp_path / "shifted"
    shifted.mkdir()
    write_raw(shifted / "a_2021-01-01.tif", np.zeros((4, 4), np.float32))
    write_raw(
        shifted / "b_2021-01-02.tif", np.zeros((4, 4), np.float32),
        transform=from_origin(500010.0, 4000000.0, 10.0, 10.0),
    )  # fmt: skip
    with pytest.raises(DataError, match="different transform") as exc:
        read_cube(shifted)
    assert "\n" not in str(exc.value) and "500010" in str(exc.value)  # one line
    undated = tmp_path / "undated"
    undated.mkdir()
    write_raw(undated / "scene.tif", np.zeros((2, 2), np.float32))
    with pytest.raises(DataError, match="no date"):
        read_cube(undated)
    with pytest.raises(DataError, match="2 dates given for 1 files"):
        read_cube(undated / "scene.tif", dates=["2020-01-01", "2020-01-02"])
    with pytest.raises(DataError, match="file not found"):
        read_cube(tmp_path / "absent_2020-01-01.tif")
    with pytest.raises(DataError, match="no files match"):
        read_cube(str(tmp_path / "*.jp2"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no raster files"):
        read_cube(tmp_path / "empty")


# ---------------------------------------------------------------------------- writing
def test_geotiff_roundtrip_keeps_crs_transform(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    for d in ("2021-04-03", "2021-04-18"):
        write_raw(tmp_path / "in" / f"NDVI_{d}.tif", ndvi_int16(1))
    cube = read_cube(tmp_path / "in")
    layer = cube.isel(time=0).values.copy()  # (band, y, x)
    layer[0, 0, 0] = np.nan
    out = write_geotiff(layer, tmp_path / "out" / "ndvi.tif", like=cube, tags={"source": "test"},
                        band_names=["NDVI"])  # fmt: skip
    with rasterio.open(out) as src:
        assert src.crs == UTM and src.transform == TRANSFORM
        assert src.dtypes[0] == "float32" and np.isnan(src.nodata)
        assert src.profile["tiled"] and src.compression.name.lower() == "deflate"
        assert src.tags()["source"] == "test" and src.descriptions == ("NDVI",)
    back = read_cube(out, dates=["2021-04-03"])
    np.testing.assert_array_equal(back.values[0], layer)
    assert back.rio.crs == cube.rio.crs and back.rio.transform() == cube.rio.transform()
    assert back.attrs["transform"] == cube.attrs["transform"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["ndvi.tif"]


def test_geotiff_labels_with_colormap(tmp_path: Path) -> None:
    labels = np.arange(12, dtype=np.float32).reshape(3, 4) % 3
    labels[0, 0] = np.nan
    with pytest.raises(DataError, match="nodata"):
        write_geotiff(labels, tmp_path / "x.tif", crs=UTM, transform=TRANSFORM, dtype="uint8")
    out = write_geotiff(
        labels, tmp_path / "labels.tif", crs=UTM, transform=TRANSFORM, dtype="uint8",
        nodata=255, colormap={0: "#ff0000", 1: (0, 255, 0), 2: (0, 0, 255, 128)},
    )  # fmt: skip
    with rasterio.open(out) as src:
        data = src.read(1)
        assert data[0, 0] == 255 and data[0, 1] == 1 and src.nodata == 255
        cmap = src.colormap(1)
        assert cmap[0] == (255, 0, 0, 255) and cmap[1] == (0, 255, 0, 255)
        assert cmap[2][:3] == (0, 0, 255)  # GeoTIFF colour tables drop alpha
        assert src.crs == UTM
    with pytest.raises(DataError, match="colormap"):
        write_geotiff(labels, tmp_path / "y.tif", crs=UTM, transform=TRANSFORM,
                      dtype="float32", colormap={0: "#ff0000"})  # fmt: skip
    with pytest.raises(DataError, match="pixels"):
        like = read_cube(out, dates=["2020-01-01"])
        write_geotiff(np.zeros((2, 2)), tmp_path / "z.tif", like=like)


# ---------------------------------------------------------------------------- real data
@pytest.mark.realdata
def test_sinop_modis_cube(real_data_dir: Path) -> None:
    folder = real_data_dir / "sits_matogrosso" / "modis_sinop_ndvi_cube"
    cube = read_cube(folder)
    assert cube.shape == (12, 1, 147, 255)
    times = [str(t)[:10] for t in cube["time"].values]
    assert len(times) == 12 and times[0] == "2013-09-14" and times[-1] == "2014-08-29"
    assert cube["band"].values.tolist() == ["NDVI"]
    assert cube.rio.crs.to_dict().get("proj") == "sinu"
    first = sorted(folder.glob("*.jp2"))[0]
    with rasterio.open(first) as src:
        assert cube.rio.transform() == src.transform
        assert cube.attrs["transform"] == tuple(src.transform)[:6]
        raw = src.read(1)
    assert cube.attrs["scale_factor"] == [1e-4]
    np.testing.assert_allclose(cube.values[0, 0], raw * 1e-4, rtol=1e-6)
    lo, hi = float(np.nanmin(cube.values)), float(np.nanmax(cube.values))
    assert lo == pytest.approx(-0.3301, abs=1e-4) and hi == pytest.approx(1.0238, abs=1e-4)


# ---------------------------------------------------------------------------- sources
def test_one_file_with_several_dates(tmp_path: Path) -> None:
    """An 8-band file = 2 dates x 4 bands (the FTW layout), dates and band names given."""
    import pickle

    from cropscope.data.readers.cube import CubeLike, CubeSource

    data = np.stack([np.full((3, 4), 100 * (i + 1), np.uint16) for i in range(8)])
    path = write_raw(tmp_path / "stack.tif", data)
    src = CubeSource.scan(path, dates=["2021-06-17", "2021-09-25"],
                          band_names=["B04", "B03", "B02", "B08"], scale=1e-4)  # fmt: skip
    assert isinstance(src, CubeLike)
    assert src.bands == ["B04", "B03", "B02", "B08"]
    assert [str(t) for t in src.times] == ["2021-06-17", "2021-09-25"]
    cube = src.read()
    assert cube.shape == (2, 4, 3, 4)
    expected = [[0.01, 0.02, 0.03, 0.04], [0.05, 0.06, 0.07, 0.08]]
    np.testing.assert_allclose(cube.values[:, :, 0, 0], expected, rtol=1e-6)
    with src.opened():
        blob = pickle.dumps(src)  # open handles are not pickled
        assert src._handles is not None
    back = pickle.loads(blob)
    assert back._handles is None
    np.testing.assert_array_equal(back.read(((1, 3), (0, 2))).values, cube.values[:, :, 1:3, :2])
    with pytest.raises(DataError, match="8 bands, not 3 dates x 4"):
        CubeSource.scan(path, dates=["2021-06-17", "2021-09-25", "2021-10-01"],
                        band_names=["B04", "B03", "B02", "B08"])  # fmt: skip
    # one name per band of a single-date file renames it
    single = CubeSource.scan(path, dates=["2021-06-17"], band_names=[f"b{i}" for i in range(8)])
    assert single.bands == [f"b{i}" for i in range(8)] and len(single.times) == 1


@pytest.mark.realdata
def test_ftw_austria_two_dates_in_one_file(real_data_dir: Path) -> None:
    from cropscope.data.readers.cube import CubeSource

    path = real_data_dir / "s2_geotiff_ftw_austria" / "inference-img.tif"
    src = CubeSource.scan(path, dates=["2021-06-17", "2021-09-25"],
                          band_names=["B04", "B03", "B02", "B08"], scale=1e-4)  # fmt: skip
    assert src.shape == (379, 578) and src.crs == CRS.from_epsg(32633)
    assert src.transform.c == 359130.0 and src.transform.f == 5352340.0
    part = src.read(((100, 164), (200, 264)))
    with rasterio.open(path) as ds:
        raw = ds.read(window=((100, 164), (200, 264)))
    np.testing.assert_allclose(part.values.reshape(8, 64, 64), raw * 1e-4, rtol=1e-6)


def test_a_flipped_jpeg2000_listed_in_a_checksum_file_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 20 item 9: a JPEG2000 with flipped bytes decodes to other values without any
    error (it changed 2,017 map labels). Files that a checksum list (``MANIFEST.sha256``, as
    in the shared data folder, or ``SHA256SUMS``) names are verified before reading."""
    import hashlib

    import cropscope.remote as remote

    driver, suffix = ("JP2OpenJPEG", ".jp2") if _has_driver("JP2OpenJPEG") else \
        ("GTiff", ".tif")
    data = tmp_path / "data"
    cube = data / "sinop" / "ndvi"
    cube.mkdir(parents=True)
    values = (np.arange(2 * 32 * 32).reshape(2, 32, 32) % 200).astype("int16")
    for k, day in enumerate(("2013-09-14", "2013-09-30")):
        with rasterio.open(cube / f"ndvi_{day}{suffix}", "w", driver=driver, width=32,
                           height=32, count=1, dtype="int16", crs=CRS.from_epsg(32633),
                           transform=from_origin(0, 0, 10, 10)) as dst:
            dst.write(values[k : k + 1])
    listing = "".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  ./sinop/ndvi/{p.name}\n"
                      for p in sorted(cube.iterdir()))
    (data / "MANIFEST.sha256").write_text(listing)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the checksum cache
    assert read_cube(cube).shape == (2, 1, 32, 32)
    victim = sorted(cube.iterdir())[1]
    raw = bytearray(victim.read_bytes())
    for i in range(len(raw) // 2, len(raw) // 2 + 40):
        raw[i] ^= 0x55
    victim.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="damaged or was modified") as exc:
        read_cube(cube)
    assert victim.name in str(exc.value) and "MANIFEST.sha256" in str(exc.value)
    # files no list names are read as before; a listed file is hashed once, then cached
    (data / "MANIFEST.sha256").write_text(listing.splitlines()[0] + "\n")
    hashed: list[str] = []
    real = remote.sha256_file
    monkeypatch.setattr(remote, "sha256_file", lambda p: hashed.append(str(p)) or real(p))
    read_cube(cube)
    read_cube(cube)
    assert len(hashed) <= 1


def _has_driver(name: str) -> bool:
    with rasterio.Env() as env:
        return name in env.drivers()


def test_make_cube_writes_the_grid_without_copies_or_cycles() -> None:
    """The window's data is neither copied (rioxarray's write_* deep-copied it twice) nor
    left in a reference cycle (freed only by the cyclic collector: memory crept up by a
    window at a time), and the caller's array is left as it was."""
    import gc

    import xarray as xr

    from cropscope.data.readers.cube import make_cube, write_grid

    data = np.random.default_rng(0).random((2, 3, 40, 50)).astype(np.float32)
    times = [np.datetime64("2021-04-01"), np.datetime64("2021-05-01")]
    gc.collect()
    gc.disable()
    try:
        gc.set_debug(gc.DEBUG_SAVEALL)
        cube = make_cube(data, times, ["B2", "B4", "B8"], TRANSFORM, UTM)
        assert np.shares_memory(cube.values, data)  # no copy of the window
        assert cube.rio.crs == UTM and cube.rio.transform() == TRANSFORM
        assert cube.attrs["transform"] == tuple(TRANSFORM)[:6]
        del cube
        gc.collect()
        held = [o for o in gc.garbage if isinstance(o, np.ndarray) and o.nbytes > 1000]
        assert held == []  # nothing the size of the window waits for the collector
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    plain = xr.DataArray(data[0, 0], dims=("y", "x"))
    written = write_grid(plain, UTM, TRANSFORM)
    assert "spatial_ref" in written.coords and "spatial_ref" not in plain.coords
    assert not plain.attrs and written.rio.crs == UTM


@pytest.mark.parametrize("dtype", ["uint8", "int8", "uint16", "int16", "int32", "float32",
                                   "float64"])
@pytest.mark.parametrize("nd,factor,offset", [
    (None, 1.0, 0.0), (0, 1e-4, 0.0), (-1, 2.5, 0.0), (7, 1e-3, -0.1), (None, -0.5, 0.0),
    (float("nan"), 1e-4, 0.0), (3, 0.0, 1.0),
])
def test_decoding_into_a_buffer_equals_the_definition(dtype: str, nd, factor: float,
                                                      offset: float) -> None:
    """CubeSource.read and the pixel reader decode straight into their buffers: the same
    bits as ``_to_float`` (signed zeros and NaN included), for every raw type, one band or
    a group of bands with their own nodata, factor and offset."""
    from cropscope.data.readers.cube import _decode_rows, _to_float

    rng = np.random.default_rng(1)
    if np.dtype(dtype).kind == "f":
        raw = rng.normal(0, 100, (6, 7)).astype(dtype)
        raw[0, :3] = [-0.0, 0.0, np.nan]
    else:
        info = np.iinfo(dtype)
        raw = rng.integers(max(info.min, -30000), min(info.max, 30000), (6, 7),
                           endpoint=True).astype(dtype)  # fmt: skip
        raw[0, :2] = 0
    kind = np.dtype(dtype).kind
    if nd is not None and not np.isnan(nd) and (kind == "f" or np.iinfo(dtype).min <= nd):
        raw[1, 1] = nd
    if nd is not None and np.isnan(nd) and np.dtype(dtype).kind in "iu":
        nd = None  # a NaN nodata only exists for float rasters
    want = _to_float(raw, nd, factor, offset)
    out = np.full(raw.shape, 123.0, dtype=np.float32)
    g = raw.shape[0]
    _decode_rows(raw, None if nd is None else np.full((g, 1), float(nd)),
                 np.full((g, 1), factor), np.full((g, 1), offset), out)  # fmt: skip
    assert out.tobytes() == want.tobytes()
    # a group: every row with its own settings (row 0 as above)
    factors = np.array([[factor], [1.0], [2e-4], [factor], [0.5], [3.0]])
    offsets = np.array([[offset], [0.0], [0.0], [0.25], [0.0], [-1.0]])
    nds = None if nd is None else np.array([[float(nd)]] * 3 + [[5.0]] * 3)
    want = np.stack([_to_float(raw[j], None if nds is None else float(nds[j, 0]),
                               float(factors[j, 0]), float(offsets[j, 0]))
                     for j in range(g)])  # fmt: skip
    _decode_rows(raw, nds, factors, offsets, out)
    assert out.tobytes() == want.tobytes()
