from __future__ import annotations

import datetime as dt
import pickle
from pathlib import Path

import numpy as np
import pytest

from cropscope.errors import DataError

rasterio = pytest.importorskip("rasterio")
pystac = pytest.importorskip("pystac")
pytest.importorskip("odc.stac")

from affine import Affine  # noqa: E402
from pystac.extensions.projection import ProjectionExtension  # noqa: E402
from rasterio.crs import CRS  # noqa: E402
from rasterio.transform import from_origin  # noqa: E402
from rasterio.warp import transform_bounds  # noqa: E402

from cropscope.data.readers.stac import StacCubeSource, read_stac_items  # noqa: E402

UTM = CRS.from_epsg(32633)
T10 = from_origin(500000.0, 4000000.0, 10.0, 10.0)
T20 = from_origin(500000.0, 4000000.0, 20.0, 20.0)
DATES = ["2021-04-03", "2021-05-13", "2021-06-02"]


def _tif(path: Path, data: np.ndarray, transform: Affine, nodata: float) -> None:
    with rasterio.open(
        path, "w", driver="GTiff", width=data.shape[1], height=data.shape[0], count=1,
        dtype=data.dtype.name, crs=UTM, transform=transform, nodata=nodata,
    ) as dst:  # fmt: skip
        dst.write(data, 1)


def make_catalog(root: Path) -> tuple[Path, dict[str, dict[str, np.ndarray]]]:
    """3 dates x (B04, B08 at 10 m, uint16, 0 = nodata) + SCL at 20 m; relative hrefs."""
    rng = np.random.default_rng(0)
    catalog = pystac.Catalog("s2", "tiny Sentinel-2 catalog")
    truth: dict[str, dict[str, np.ndarray]] = {}
    bounds = transform_bounds(UTM, "EPSG:4326", 500000.0, 3999920.0, 500120.0, 4000000.0)
    w, s, e, n = bounds
    for k, day in enumerate(DATES):
        folder = root / f"S2_{day}"
        folder.mkdir(parents=True)
        when = dt.datetime.fromisoformat(f"{day}T10:30:00+00:00")
        geometry = {"type": "Polygon",
                    "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}  # fmt: skip
        item = pystac.Item(f"S2_{day}", geometry, list(bounds), when, {})
        vals: dict[str, np.ndarray] = {}
        for band in ("B04", "B08"):
            a = rng.integers(1, 10000, (8, 12)).astype(np.uint16)
            a[0, k] = 0  # nodata
            _tif(folder / f"{band}.tif", a, T10, 0)
            vals[band] = a
            item.add_asset(band, pystac.Asset(f"./{band}.tif", media_type=pystac.MediaType.GEOTIFF))
        scl = np.full((4, 6), 4, np.uint8)  # vegetation
        scl[1, 2] = 9 if k == 0 else 4  # cloud on the first date
        scl[3, 5] = 3  # shadow on every date
        _tif(folder / "SCL.tif", scl, T20, 0)
        vals["SCL"] = scl
        item.add_asset("SCL", pystac.Asset("./SCL.tif", media_type=pystac.MediaType.GEOTIFF))
        proj = ProjectionExtension.ext(item, add_if_missing=True)
        proj.epsg = 32633
        for key, shape, transform in (("B04", (8, 12), T10), ("B08", (8, 12), T10),
                                      ("SCL", (4, 6), T20)):  # fmt: skip
            ext = ProjectionExtension.ext(item.assets[key])
            ext.shape = list(shape)
            ext.transform = list(transform)[:6]
        catalog.add_item(item)
        truth[day] = vals
    catalog.normalize_hrefs(str(root))
    catalog.save(pystac.CatalogType.SELF_CONTAINED)
    return root / "catalog.json", truth


@pytest.fixture
def catalog(tmp_path: Path) -> tuple[Path, dict[str, dict[str, np.ndarray]]]:
    return make_catalog(tmp_path / "cat")


def expected_band(truth: dict, band: str, masked: bool) -> np.ndarray:
    out = np.stack([truth[d][band].astype(np.float32) for d in DATES])
    out[out == 0] = np.nan
    if masked:
        for t, d in enumerate(DATES):
            bad = np.isin(truth[d]["SCL"], [0, 1, 3, 8, 9, 10])
            out[t][np.kron(bad, np.ones((2, 2), bool))] = np.nan
    return out


def test_catalog_items_resolve_relative_hrefs(catalog: tuple[Path, dict]) -> None:
    path, _ = catalog
    text = (path.parent / "S2_2021-04-03" / "S2_2021-04-03.json").read_text()
    assert '"./B04.tif"' in text  # stored relative
    items = read_stac_items(path.parent)  # the folder works too
    assert len(items) == 3
    assert Path(items[0].assets["B04"].href).is_file()


def test_stac_reads_raster_values_with_scl_mask(catalog: tuple[Path, dict]) -> None:
    path, truth = catalog
    src = StacCubeSource.open(path, bands=["B04", "B08"], mask_band="SCL")
    assert src.bands == ["B04", "B08"]
    assert [str(t) for t in src.times] == DATES
    assert src.shape == (8, 12) and src.crs == UTM and src.transform == T10
    assert len(src.files) == 9 and all(p.is_file() for p in src.files)
    cube = src.read()
    assert cube.dims == ("time", "band", "y", "x") and cube.dtype == np.float32
    assert cube.rio.transform() == T10 and cube.rio.crs == UTM
    for c, band in enumerate(("B04", "B08")):
        np.testing.assert_array_equal(cube.values[:, c], expected_band(truth, band, True))
    # the cloud (SCL 9, first date only) covers 2x2 pixels at 10 m; the shadow every date
    assert np.isnan(cube.values[0, :, 2:4, 4:6]).all()
    assert not np.isnan(cube.values[1:, :, 2:4, 4:6]).any()
    assert np.isnan(cube.values[:, :, 6:8, 10:12]).all()
    # without the mask: the raster values, nodata NaN
    plain = StacCubeSource.open(path, bands=["B08"]).read()
    np.testing.assert_array_equal(plain.values[:, 0], expected_band(truth, "B08", False))


def test_stac_window_pickle_and_filters(catalog: tuple[Path, dict]) -> None:
    path, _ = catalog
    src = StacCubeSource.open(path, bands=["B04", "B08"], mask_band="SCL", scale=1e-4)
    full = src.read()
    window = ((1, 6), (3, 11))
    part = src.read(window)
    np.testing.assert_array_equal(part.values, full.values[:, :, 1:6, 3:11])
    assert part.rio.transform() == T10 * Affine.translation(3, 1)
    blob = pickle.dumps(src)
    assert len(blob) < 20000
    back = pickle.loads(blob)
    assert back._parsed is None
    with back.opened():
        np.testing.assert_array_equal(back.read(window).values, part.values)
    assert float(np.nanmax(full.values)) <= 1.0
    later = StacCubeSource.open(path, bands=["B04"], time_range=("2021-05-13", None))
    assert [str(t) for t in later.times] == DATES[1:]
    with pytest.raises(DataError, match="no STAC items"):
        StacCubeSource.open(path, bands=["B04"], time_range=(None, "2020-01-01"))
    with pytest.raises(DataError, match="missing"):
        StacCubeSource.open(path, bands=["B02"])
    with pytest.raises(DataError, match="also among"):
        StacCubeSource.open(path, bands=["B04", "SCL"], mask_band="SCL")


def test_stac_reprojects_to_another_grid(catalog: tuple[Path, dict]) -> None:
    path, truth = catalog
    src = StacCubeSource.open(path, bands=["B04"], resolution=20, resampling="average")
    assert src.shape == (4, 6) and src.transform == T20
    cube = src.read()
    b04 = expected_band(truth, "B04", False)[1]
    blocks = b04.reshape(4, 2, 6, 2).transpose(0, 2, 1, 3).reshape(4, 6, 4)
    np.testing.assert_allclose(cube.values[1, 0, 1:, 1:], np.nanmean(blocks, axis=2)[1:, 1:],
                               rtol=1e-3)  # fmt: skip
    geo = StacCubeSource.open(path, bands=["B04"], crs="EPSG:4326", resolution=0.0002)
    assert geo.crs == CRS.from_epsg(4326)
    g = geo.read()
    assert g.shape[2:] == geo.shape and np.isfinite(g.values).any()


def test_stac_read_loads_only_the_window(
    catalog: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    import odc.stac

    path, _ = catalog
    src = StacCubeSource.open(path, bands=["B04"], mask_band="SCL")
    seen: list[tuple[int, int]] = []
    real_load = odc.stac.load

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(tuple(kwargs["geobox"].shape))  # type: ignore[attr-defined]
        return real_load(*args, **kwargs)

    monkeypatch.setattr(odc.stac, "load", spy)
    part = src.read(((2, 5), (4, 7)))
    assert seen == [(3, 3)] and part.shape == (3, 1, 3, 3)
