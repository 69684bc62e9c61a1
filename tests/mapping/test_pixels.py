"""The map job's pixel route: raw decoding equals CubeSource.read, the feature-table models
predict from the band-major layout exactly as from a TimeSeriesSet."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from cropscope.data import TimeSeriesSet
from cropscope.errors import DataError
from cropscope.models import create_model
from tests.conftest import make_toy_set

rasterio = pytest.importorskip("rasterio")
pytest.importorskip("rioxarray")

from rasterio.crs import CRS  # noqa: E402
from rasterio.transform import from_origin  # noqa: E402
from rasterio.windows import Window  # noqa: E402

from cropscope.data.readers.cube import CubeSource, RenamedBandsCube  # noqa: E402
from cropscope.data.readers.grid import Grid  # noqa: E402
from cropscope.mapping.pixels import PixelReader  # noqa: E402

H, W, T = 23, 31, 4


def write_files(folder: Path, dtype: str, nodata: float | None, scales: tuple | None = None,
                offsets: tuple | None = None, seed: int = 0) -> Path:  # fmt: skip
    """``T`` dated 3-band files of ``dtype`` with nodata pixels (and file scale/offset)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for t in range(T):
        if np.dtype(dtype).kind == "f":
            data = rng.normal(0.3, 0.1, (3, H, W)).astype(dtype)
        else:
            info = np.iinfo(dtype)
            data = rng.integers(max(info.min, -30000), min(info.max, 30000), (3, H, W),
                                endpoint=True).astype(dtype)  # fmt: skip
        if nodata is not None:
            data[:, 2:5, 3:9] = nodata
            data[1, 10, 10 + t] = nodata  # one band of one pixel on one date
        path = folder / f"scene_2021-0{t + 1}-10.tif"
        with rasterio.open(path, "w", driver="GTiff", width=W, height=H, count=3, dtype=dtype,
                           crs=CRS.from_epsg(32633), nodata=nodata,
                           transform=from_origin(500000, 4000000, 10, 10)) as dst:  # fmt: skip
            dst.write(data)
            for i, name in enumerate(("B2", "B4", "B8")):
                dst.set_band_description(i + 1, name)
            if scales is not None:
                dst.scales, dst.offsets = scales, offsets
    return folder


def assert_reads_like_the_cube(source, bands: list[str], window: Window) -> None:
    reader = PixelReader(source, bands)
    with source.opened():
        pixels = reader.read(window)
        cube = source.read(window).sel(band=bands)
    want = cube.values.reshape(cube.shape[0], cube.shape[1], -1).transpose(1, 0, 2)
    assert pixels.values.dtype == np.float32 and pixels.shape == (window.height, window.width)
    np.testing.assert_array_equal(pixels.values, want)  # bit for bit, NaN where NaN
    np.testing.assert_array_equal(pixels.mask, np.isfinite(want).all(axis=0))
    np.testing.assert_array_equal(pixels.dates, cube["time"].values.astype("datetime64[D]"))
    pixels.release()


@pytest.mark.parametrize("dtype,nodata,scale,file_scales", [
    ("uint16", 0, 1e-4, None),
    ("int16", -9999, None, ((0.5, 2.0, 1e-3), (0.25, -1.0, 0.0))),  # file scale + offset
    ("uint8", 255, None, None),
    ("float32", float("nan"), None, None),
    ("float32", -1.0, 2.5, None),
    ("int32", -1, 1e-3, None),  # float32 rounds int32: the reader's own conversion
])
def test_raw_decoding_equals_cube_source_read(tmp_path: Path, dtype: str, nodata: float,
                                              scale: float | None, file_scales) -> None:
    scales, offsets = file_scales if file_scales else (None, None)
    folder = write_files(tmp_path / "cube", dtype, nodata, scales, offsets)
    source = CubeSource.scan(folder, scale=scale)
    assert PixelReader(source, ["B2", "B4", "B8"]).decodes_raw
    for window in (Window(0, 0, W, H), Window(5, 7, 11, 9)):
        assert_reads_like_the_cube(source, ["B2", "B4", "B8"], window)
    assert_reads_like_the_cube(source, ["B8", "B2"], Window(2, 1, 20, 13))  # subset, order


def test_other_sources_read_through_their_cube(tmp_path: Path) -> None:
    from cropscope.data.readers.masks import MaskedCube

    folder = write_files(tmp_path / "cube", "uint16", 0)
    source = CubeSource.scan(folder, scale=1e-4)
    renamed = RenamedBandsCube(source, {"B2": "blue", "B4": "red", "B8": "nir"})
    assert PixelReader(renamed, ["nir", "red"]).decodes_raw
    assert_reads_like_the_cube(renamed, ["nir", "red"], Window(3, 2, 17, 12))
    masked = MaskedCube(source, "B2", invalid=(1, 2, 3))  # any source: its own read
    assert not PixelReader(masked, ["B4", "B8"]).decodes_raw
    assert_reads_like_the_cube(masked, ["B4", "B8"], Window(3, 2, 17, 12))


def test_buffers_are_reused_only_once_released(tmp_path: Path) -> None:
    source = CubeSource.scan(write_files(tmp_path / "cube", "uint16", 0), scale=1e-4)
    reader = PixelReader(source, ["B2", "B4", "B8"])
    with source.opened():
        first = reader.read(Window(0, 0, 10, 10))
        buffer = first._buffer
        second = reader.read(Window(10, 10, 10, 10))  # first not released: a new buffer
        assert not np.shares_memory(first.values, second.values)
        kept = second.values.copy()
        first.release()
        third = reader.read(Window(5, 5, 8, 8))  # smaller: takes the released buffer
        assert third._buffer is buffer and first._buffer is None
        np.testing.assert_array_equal(second.values, kept)  # still held: untouched
        assert_reads_like_the_cube(source, ["B2", "B4", "B8"], Window(5, 5, 8, 8))


def assert_sequence_reads_like_the_cube(source, bands: list[str], windows: list[Window]) -> None:
    """One reader, window after window (its raw buffers reused): each like the cube."""
    reader = PixelReader(source, bands)
    with source.opened():
        for window in windows:
            pixels = reader.read(window)
            cube = source.read(window).sel(band=bands)
            want = cube.values.reshape(cube.shape[0], cube.shape[1], -1).transpose(1, 0, 2)
            np.testing.assert_array_equal(pixels.values, want)
            np.testing.assert_array_equal(pixels.mask, np.isfinite(want).all(axis=0))
            pixels.release()
            assert all(b.shape[1:] == (window.height, window.width)
                       for b in reader.raw_buffers().values())  # fmt: skip


def test_raw_buffers_are_reused_across_windows(tmp_path: Path) -> None:
    source = CubeSource.scan(write_files(tmp_path / "cube", "uint16", 0), scale=1e-4)
    windows = [Window(5, 7, 11, 9), Window(0, 0, W, H), Window(12, 3, 11, 9),
               Window(0, 20, 4, 3), Window(5, 7, 11, 9)]  # fmt: skip
    reader = PixelReader(source, ["B2", "B4", "B8"])
    with source.opened():
        reader.read(Window(5, 7, 11, 9)).release()
        first = dict(reader.raw_buffers())
        assert len(first) == T and all(v.shape == (3, 9, 11) for v in first.values())
        reader.read(Window(12, 3, 11, 9)).release()  # same shape: the same buffers
        assert all(reader.raw_buffers()[k] is v for k, v in first.items())
        other: dict = {}  # another thread reads through its own buffers
        thread = threading.Thread(target=lambda: other.update(reader.raw_buffers()))
        thread.start()
        thread.join()
        assert other == {}
    assert_sequence_reads_like_the_cube(source, ["B8", "B2"], windows)


def test_raw_buffers_with_warped_layers(tmp_path: Path) -> None:
    """A 20 m file warped onto the 10 m grid (no nodata: an alpha band marks the outside)
    read window after window through reused buffers, as the cube reads it."""
    rng = np.random.default_rng(3)
    for name, shape, res, nodata in (("B04", (10, 14), 10.0, 0), ("B11", (5, 7), 20.0, None)):
        with rasterio.open(tmp_path / f"{name}_2021-04-03.tif", "w", driver="GTiff",
                           width=shape[1], height=shape[0], count=1, dtype="uint16",
                           crs=CRS.from_epsg(32633), nodata=nodata,
                           transform=from_origin(500000, 4000000, res, res)) as dst:
            dst.write(rng.integers(1, 5000, (1, *shape)).astype(np.uint16))
    target = Grid(CRS.from_epsg(32633), from_origin(499980, 4000000, 10, 10), 10, 16)
    source = CubeSource.scan(tmp_path, target=target, resampling="nearest", scale=1e-4)
    assert PixelReader(source, ["B04", "B11"]).decodes_raw
    windows = [Window(0, 0, 16, 10), Window(0, 0, 5, 4), Window(3, 2, 5, 4),
               Window(11, 6, 5, 4)]  # fmt: skip
    assert_sequence_reads_like_the_cube(source, ["B04", "B11"], windows)


# ---------------------------------------------------------------------------- models
def pixel_set(n: int = 400, seed: int = 0) -> tuple[TimeSeriesSet, np.ndarray, np.ndarray]:
    """A toy set with gaps as a TimeSeriesSet and as ``values [C, T, N]``, ``mask [T, N]``."""
    ts = make_toy_set(n_per_class=n // 3, n_times=8, bands=("B2", "B4", "B8"), seed=seed,
                      nan_fraction=0.25)  # fmt: skip
    rng = np.random.default_rng(seed)
    values = ts.values.copy()
    values[rng.random(values.shape) < 0.05] = np.nan  # single bands missing too
    values[:, 0] = np.where(np.isnan(values[:, 0]), 0.1, values[:, 0])  # every pixel valid
    ts = ts.replace(values=values)
    return ts, np.ascontiguousarray(values.transpose(2, 1, 0)), ts.mask.T.copy()


@pytest.mark.parametrize("name,config", [
    ("logreg", {}),
    ("logreg", {"features": ["values", "diff", "stats"]}),
    ("lightgbm", {"n_estimators": 20, "n_jobs": 1}),
    ("rf", {"n_estimators": 10, "n_jobs": 1, "features": ["values", "indices", "harmonics"]}),
    ("tempcnn", {"epochs": 1, "device": "cpu"}),  # the default route: a TimeSeriesSet
])
def test_pixel_route_predicts_like_a_time_series_set(name: str, config: dict) -> None:
    # logreg: enough pixels for BLAS's matrix kernel in the TimeSeriesSet route too (for a
    # table of a few hundred rows OpenBLAS takes a small-matrix kernel whose last bit
    # differs, which the pixel route never does: see test_linear_map_route_...)
    ts, values, mask = pixel_set(n=6000 if name == "logreg" else 400)
    model = create_model(name, **config).fit(make_toy_set(n_per_class=20, n_times=8,
                                                          bands=("B2", "B4", "B8")))
    want = model.predict_proba(ts)
    got = model.predict_proba_pixels(values.copy(), mask, ts.dates)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    if hasattr(model, "pixel_features"):
        table, _ = model.features(ts)
        np.testing.assert_array_equal(model.pixel_features(values.copy(), mask, ts.dates),
                                      table)  # fmt: skip


def test_linear_map_route_does_not_depend_on_the_batch() -> None:
    """A pixel's probabilities are the same in a batch of one, a few or many pixels (so a
    tiled map equals an untiled one, bit for bit)."""
    ts, values, mask = pixel_set(n=4200)
    model = create_model("logreg").fit(make_toy_set(n_per_class=20, n_times=8,
                                                    bands=("B2", "B4", "B8")))
    whole = model.predict_proba_pixels(values.copy(), mask, ts.dates)
    for start, stop in ((0, 1), (5, 6), (3, 10), (100, 357), (0, 4097), (4096, 4097)):
        part = model.predict_proba_pixels(values[:, :, start:stop].copy(),
                                          mask[:, start:stop], ts.dates)  # fmt: skip
        np.testing.assert_array_equal(part, whole[start:stop])


def test_pixel_route_checks_its_input() -> None:
    model = create_model("logreg").fit(make_toy_set(n_per_class=10, n_times=8))
    with pytest.raises(DataError, match=r"\[C, T, N\]"):
        model.predict_proba_pixels(np.zeros((8, 2, 5), np.float32))
    empty = np.full((2, 8, 3), np.nan, np.float32)
    with pytest.raises(DataError, match="no valid observation"):
        model.predict_proba_pixels(empty)


# ---------------------------------------------------------------------------- window size
def test_auto_tile_follows_the_blocks_and_the_budget(tmp_path: Path) -> None:
    from cropscope.mapping.windows import auto_tile

    folder = tmp_path / "tiled"
    folder.mkdir()
    for t in range(2):
        with rasterio.open(folder / f"s_2021-01-0{t + 1}.tif", "w", driver="GTiff",
                           width=70, height=50, count=2, dtype="uint16", tiled=True,
                           blockxsize=16, blockysize=16,
                           crs=CRS.from_epsg(32633),
                           transform=from_origin(500000, 4000000, 10, 10)) as dst:  # fmt: skip
            dst.write(np.ones((2, 50, 70), np.uint16))
    source = CubeSource.scan(folder)
    per_pixel = 4 * (4 * 4 + 2)  # 4 values (2 dates x 2 bands), 4 windows in flight
    assert auto_tile(source, 4, budget=per_pixel * 40 * 40) == 32  # whole 16-pixel blocks
    assert auto_tile(source, 4, budget=1) == 16  # never less than a block
    assert auto_tile(source, 4) == 80  # no larger than the grid (in whole blocks)
    with pytest.raises(DataError):
        auto_tile(source, 0)
    striped = CubeSource.scan(write_files(tmp_path / "striped", "uint16", 0))
    assert auto_tile(striped, 12) == 256  # no square blocks: multiples of 256


def test_job_with_an_automatic_tile_records_it(tmp_path: Path) -> None:
    from cropscope.io import read_json
    from cropscope.mapping import run_map_job

    folder = write_files(tmp_path / "cube", "uint16", 0)
    source = CubeSource.scan(folder, scale=1e-4)
    train = make_toy_set(n_per_class=15, n_times=T, bands=("B2", "B4", "B8"))
    model = create_model("logreg").fit(train)
    auto = run_map_job(model, source, tmp_path / "auto", tile=None, progress=False)
    fixed = run_map_job(model, source, tmp_path / "fixed", tile=8, progress=False)
    assert read_json(auto.journal)["job"]["tile"] == 256 and auto.n_windows == 1
    for name, path in auto.paths.items():
        with rasterio.open(path) as a, rasterio.open(fixed.paths[name]) as b:
            np.testing.assert_array_equal(a.read(), b.read())
