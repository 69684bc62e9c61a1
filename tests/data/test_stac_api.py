"""STAC API search -> cube -> map through real local servers (issue 18, scope item 1).

The tests start a real STAC API (``rustac serve``) whose items' COG assets are served by a
real HTTP server with range requests (``RangeHTTPServer``), so GDAL reads them over
``/vsicurl/`` as from a cloud bucket; the same items as a local static catalog give the
reference. Both servers are stopped at the end of the module.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cropscope.errors import DataError
from tests.cli.test_cli import assert_one_line_error, run_cli
from tests.stac_servers import failing_server, free_port, http_server, stac_api

rasterio = pytest.importorskip("rasterio")
pytest.importorskip("pystac_client")
pytest.importorskip("odc.stac")

EPSG = 32633
X0, Y0, RES, H, W = 500_000.0, 5_800_000.0, 10.0, 40, 48
DATES = ["2021-05-03", "2021-05-18", "2021-06-07", "2021-06-22"]
CLOUD = [10.0, 95.0, 30.0, 20.0]
BANDS = ["B04", "B08"]
COLLECTION = "s2-test"


def _write_cog(path: Path, data: np.ndarray, dtype: str, nodata: float | None) -> None:
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    with rasterio.open(path, "w", driver="COG", width=W, height=H, count=1, dtype=dtype,
                       crs=CRS.from_epsg(EPSG), transform=from_origin(X0, Y0, RES, RES),
                       nodata=nodata) as dst:
        dst.write(data.astype(dtype)[None])


def _item(k: int, day: str, href: Any) -> dict[str, Any]:
    from rasterio.warp import transform_bounds

    west, south, east, north = transform_bounds(f"EPSG:{EPSG}", "EPSG:4326", X0, Y0 - H * RES,
                                                X0 + W * RES, Y0)
    ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
    assets = {b: {"href": href(f"{day}_{b}.tif"), "type": "image/tiff; application=geotiff",
                  **({"raster:bands": [{"scale": 1e-4, "nodata": 0}]} if b != "SCL" else {})}
              for b in [*BANDS, "SCL"]}
    return {
        "type": "Feature", "stac_version": "1.0.0", "id": f"S2_{day}", "collection": COLLECTION,
        "stac_extensions": [
            "https://stac-extensions.github.io/projection/v1.0.0/schema.json",
            "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
            "https://stac-extensions.github.io/eo/v1.1.0/schema.json"],
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "bbox": [west, south, east, north],
        "properties": {"datetime": f"{day}T10:30:00Z", "eo:cloud_cover": CLOUD[k],
                       "proj:epsg": EPSG, "proj:shape": [H, W],
                       "proj:transform": [RES, 0.0, X0, 0.0, -RES, Y0]},
        "links": [], "assets": assets,
    }  # fmt: skip


class Scene:
    """The generated items, served (``api``) and as a local catalog (``catalog``)."""

    def __init__(self, root: Path, api: str, catalog: Path, values: dict[str, np.ndarray]):
        self.root, self.api, self.catalog, self.values = root, api, catalog, values

    def search(self, **kw: Any) -> Any:
        from cropscope.data.readers.stac_api import StacSearch

        base: dict[str, Any] = {"stac_api": self.api, "bands": BANDS,
                                "collections": [COLLECTION], "mask_band": "SCL"}
        return StacSearch(**{**base, **kw})


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    import pystac

    root = tmp_path_factory.mktemp("stac")
    assets = root / "assets"
    assets.mkdir()
    rng = np.random.default_rng(0)
    values: dict[str, np.ndarray] = {}
    for day in DATES:
        for b in BANDS:
            arr = rng.integers(300, 6000, (H, W))
            arr[:2, :3] = 0  # nodata
            values[f"{day}_{b}"] = arr
            _write_cog(assets / f"{day}_{b}.tif", arr, "uint16", 0)
        scl = np.full((H, W), 4)
        scl[rng.random((H, W)) < 0.1] = 9  # cloud high probability: a gap
        values[f"{day}_SCL"] = scl
        _write_cog(assets / f"{day}_SCL.tif", scl, "uint8", None)
    # the local static catalog of the same items
    catalog = pystac.Catalog("local", "the generated items with local hrefs")
    for k, day in enumerate(DATES):
        catalog.add_item(pystac.Item.from_dict(
            _item(k, day, lambda name: str((assets / name).resolve()))))
    catalog.normalize_and_save(str(root / "local"), pystac.CatalogType.SELF_CONTAINED)
    with http_server(assets) as base:
        items = {"type": "FeatureCollection",
                 "features": [_item(k, day, lambda name: f"{base}/{name}")
                              for k, day in enumerate(DATES)]}
        (root / "items.json").write_text(json.dumps(items))
        with stac_api(root / "items.json") as api:
            yield Scene(root, api, root / "local" / "catalog.json", values)


def _local(scene: Scene, days: list[str]) -> Any:
    from cropscope.data.readers.stac import StacCubeSource

    cube = StacCubeSource.open(scene.catalog, bands=BANDS, mask_band="SCL",
                               time_range=(days[0], days[-1]))
    keep = [i for i, t in enumerate(cube.times) if str(t) in days]
    return cube, keep


def test_search_reads_the_items_over_http_like_the_local_catalog(scene: Scene) -> None:
    from cropscope.data.readers.stac_api import open_search, search_items

    search = scene.search(max_cloud=50, datetime="2021-05-01/2021-06-30")
    items = search_items(search)
    assert [it.id for it in items] == [f"S2_{d}" for d, c in zip(DATES, CLOUD, strict=True)
                                       if c <= 50]  # the 95 % cloudy date is filtered
    cube = open_search(search)
    assert cube.n_items == 3 and len(cube.urls) == 9 and cube.files == []
    assert [str(t) for t in cube.times] == ["2021-05-03", "2021-06-07", "2021-06-22"]
    assert cube.shape == (H, W) and cube.crs.to_epsg() == EPSG
    remote = cube.read().values
    local, keep = _local(scene, ["2021-05-03", "2021-06-07", "2021-06-22"])
    np.testing.assert_array_equal(remote, local.read().values[keep])
    # against the raw arrays: scale, nodata and the SCL mask as gaps
    day = "2021-06-07"
    b04 = scene.values[f"{day}_B04"] * np.float32(1e-4)
    want = np.where((scene.values[f"{day}_SCL"] == 9) | (scene.values[f"{day}_B04"] == 0),
                    np.nan, b04).astype(np.float32)
    np.testing.assert_allclose(remote[1, 0], want, rtol=1e-6)
    # a window read only its part
    part = cube.read(((8, 24), (16, 40))).values
    np.testing.assert_array_equal(part, remote[:, :, 8:24, 16:40])


def test_filters_are_applied_even_by_servers_without_the_query_extension(scene: Scene
                                                                         ) -> None:
    from cropscope.data.readers.stac_api import search_items

    items = search_items(scene.search(query={"eo:cloud_cover": {"gte": 25, "lt": 96}}))
    assert [it.id for it in items] == ["S2_2021-05-18", "S2_2021-06-07"]
    items = search_items(scene.search(query={"eo:cloud_cover": {"in": [10.0, 20.0]}}))
    assert [it.id for it in items] == ["S2_2021-05-03", "S2_2021-06-22"]
    with pytest.raises(DataError, match="max_items=2"):
        search_items(scene.search(max_items=2))


def test_cube_build_writes_zarr_and_cogs_equal_to_the_composited_search(
        scene: Scene, tmp_path: Path) -> None:
    from cropscope.data.readers.open import open_cube_source
    from cropscope.data.readers.stac_api import StacSearch, open_search
    from cropscope.features.cube import CompositedCube

    args = ["cube", "build", "--stac-api", scene.api, "--collection", COLLECTION,
            "--datetime", "2021-05-01/2021-06-30", "--max-cloud", "50", "--bands", "B04,B08",
            "--mask-band", "SCL", "--composite", "30", "--tile", "32"]
    proc = run_cli(*args, "--out", str(tmp_path / "cube.zarr"), "--save-search",
                   str(tmp_path / "search.json"), "--json")
    summary = json.loads(proc.stdout)
    assert summary["format"] == "zarr" and summary["n_items"] == 3
    assert summary["shape"] == [H, W] and summary["bands"] == BANDS
    search = StacSearch.from_json(tmp_path / "search.json")
    assert search.max_cloud == 50 and search.mask_band == "SCL"
    want = CompositedCube(open_search(search), 30).read()
    assert summary["dates"] == [str(t) for t in want.coords["time"].values.astype("M8[D]")]
    got = open_cube_source(tmp_path / "cube.zarr").read()
    np.testing.assert_array_equal(got.values, want.values)
    assert got.rio.crs.to_epsg() == EPSG and got.rio.transform() == want.rio.transform()
    proc = run_cli(*args, "--out", str(tmp_path / "cogs"))
    files = sorted(p.name for p in (tmp_path / "cogs").iterdir())
    assert files == [f"cube_{d}.tif" for d in summary["dates"]]
    np.testing.assert_array_equal(open_cube_source(tmp_path / "cogs").read().values,
                                  want.values)
    with rasterio.open(tmp_path / "cogs" / files[0]) as src:
        assert src.descriptions == tuple(BANDS) and src.profile["tiled"]
    # an existing --out is refused, and replaced only with --overwrite
    proc = run_cli(*args, "--out", str(tmp_path / "cogs"), check=False)
    assert_one_line_error(proc, "exists")
    run_cli(*args, "--out", str(tmp_path / "cogs"), "--overwrite")


def test_search_to_cube_to_samples_to_map_equals_the_local_files(scene: Scene,
                                                                   tmp_path: Path) -> None:
    """The acceptance chain: a saved search is the input of ``samples extract`` and of
    ``predict``; every step equals the same step on the same items as local files."""
    import geopandas as gpd
    from shapely.geometry import box

    from cropscope.data.cube_writer import write_cube
    from cropscope.data.readers.masks import SCL_INVALID
    from cropscope.data.readers.stac import StacCubeSource, read_stac_items
    from cropscope.data.readers.stac_api import StacSearch
    from cropscope.data.readers.table import read_table

    search = scene.search(max_cloud=50, datetime="2021-05-01/2021-06-30")
    search.write(tmp_path / "search.json")
    assert StacSearch.from_json(tmp_path / "search.json") == search
    # the same items from the local catalog, written as COGs: the "local files"
    items = [it for it in read_stac_items(scene.catalog)
             if it.properties["eo:cloud_cover"] <= 50]
    local3 = StacCubeSource.from_items(items, origin="local", bands=BANDS, mask_band="SCL",
                                       invalid=SCL_INVALID)
    write_cube(local3, tmp_path / "local_cogs", tile=16, progress=False)
    # a field survey: parcels labelled by their mean NIR/red contrast on the cube
    cube = local3.read().values  # (t, b, y, x)
    parcels, names = [], []
    for r in range(4, H - 8, 9):
        for c in range(4, W - 8, 9):
            block = np.nanmean(cube[:, :, r:r + 6, c:c + 6], axis=(0, 2, 3))
            names.append("crop" if block[1] > block[0] else "other")
            x0, y0 = X0 + c * RES, Y0 - r * RES
            parcels.append(box(x0, y0 - 6 * RES, x0 + 6 * RES, y0))
    if len(set(names)) < 2:  # the random scene gives both; make sure of it
        names[0] = "other" if names[0] == "crop" else "crop"
    gpd.GeoDataFrame({"crop": names, "parcel": [f"p{k}" for k in range(len(names))]},
                     geometry=parcels, crs=f"EPSG:{EPSG}").to_file(tmp_path / "fields.gpkg")
    tables = {}
    for name, source in (("api", tmp_path / "search.json"), ("local", tmp_path / "local_cogs")):
        out = tmp_path / f"samples_{name}.parquet"
        run_cli("samples", "extract", "--cube", str(source), "--labels",
                str(tmp_path / "fields.gpkg"), "--label-column", "crop", "--id-column",
                "parcel", "--out", str(out), "--threads", "1")
        tables[name] = read_table(out)
    api, local = tables["api"], tables["local"]
    assert api.n_samples == local.n_samples > 0 and list(api.ids) == list(local.ids)
    np.testing.assert_array_equal(api.values, local.values)
    np.testing.assert_array_equal(api.dates, local.dates)
    gaps = np.isnan(api.values) if api.mask is None else ~api.mask.astype(bool)
    assert gaps.any() and not gaps.all()  # the SCL clouds are gaps in the samples
    assert set(api.meta["polygon_id"]) == {f"p{k}" for k in range(len(names))}
    # train on the samples from the search, map both inputs
    run_cli("train", "--table", str(tmp_path / "samples_api.parquet"), "--model", "logreg",
            "--holdout", "0", "--out", str(tmp_path / "run"), "--threads", "1")
    outs = {}
    for name, source in (("api", tmp_path / "search.json"), ("local", tmp_path / "local_cogs")):
        run_cli("predict", "--model", str(tmp_path / "run"), "--input", str(source), "--out",
                str(tmp_path / f"{name}.tif"), "--tile", "16", "--threads", "1")
        with rasterio.open(tmp_path / f"{name}.tif") as src:
            outs[name] = src.read()
    np.testing.assert_array_equal(outs["api"], outs["local"])
    assert len(np.unique(outs["api"][0])) >= 2


def test_bad_searches_are_one_error_line_and_leave_nothing(scene: Scene, tmp_path: Path
                                                           ) -> None:
    base = ["cube", "build", "--collection", COLLECTION, "--bands", "B04,B08"]
    out = tmp_path / "cube.zarr"
    # an empty search result
    proc = run_cli(*base, "--stac-api", scene.api, "--datetime", "2019-01-01/2019-12-31",
                   "--out", str(out), check=False)
    assert_one_line_error(proc, "found no items")
    # a server that is down
    proc = run_cli(*base, "--stac-api", f"http://127.0.0.1:{free_port()}", "--out", str(out),
                   check=False)
    assert_one_line_error(proc, "cannot be reached")
    # a server answering 500
    with failing_server() as url:
        proc = run_cli(*base, "--stac-api", url, "--out", str(out), check=False)
    assert_one_line_error(proc, "cannot be reached")
    # bad parameters (the others are StacSearch's checks, in test_search_validation)
    proc = run_cli(*base, "--stac-api", scene.api, "--bbox", "1,2,3", "--out", str(out),
                   check=False)
    assert_one_line_error(proc, "--bbox")
    # --save-search without a search is refused before anything is built
    proc = run_cli("cube", "build", "--input", str(scene.catalog), "--bands", "B04,B08",
                   "--save-search", str(tmp_path / "s.json"), "--out", str(out), check=False)
    assert_one_line_error(proc, "--save-search")
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    # a search file naming unknown keys is refused, not half-read
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"stac_api": scene.api, "bands": ["B04"], "module": "os"}))
    proc = run_cli("cube", "build", "--input", str(bad), "--out", str(out), check=False)
    assert_one_line_error(proc, "unknown keys")


def test_search_validation() -> None:
    from cropscope.data.readers.stac_api import StacSearch

    with pytest.raises(DataError, match="bands"):
        StacSearch("http://x", [])
    with pytest.raises(DataError, match="bbox or intersects"):
        StacSearch("http://x", ["B04"], bbox=[0, 0, 1, 1],
                   intersects={"type": "Point", "coordinates": [0, 0]})
    with pytest.raises(DataError, match="max_items"):
        StacSearch("http://x", ["B04"], max_items=0)
    with pytest.raises(DataError, match="http"):
        StacSearch("file:///etc", ["B04"])
    with pytest.raises(DataError, match="west < east"):
        StacSearch("http://x", ["B04"], bbox=[5, 50, 4, 51])
    with pytest.raises(DataError, match="max_cloud"):
        StacSearch("http://x", ["B04"], max_cloud=-5)
    with pytest.raises(DataError, match="query"):
        StacSearch("http://x", ["B04"], query={"eo:cloud_cover": {"below": 5}})
    s = StacSearch("http://x", ["B04"], max_cloud=20)
    assert s.to_dict() == {"stac_api": "http://x", "bands": ["B04"], "max_cloud": 20}
    assert StacSearch.from_dict(s.to_dict()) == s
