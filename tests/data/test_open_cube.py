from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from cropscope.data.readers.cube import CubeLike, CubeSource
from cropscope.data.readers.open import input_kind, open_cube_source
from cropscope.errors import DataError

rasterio = pytest.importorskip("rasterio")
xr = pytest.importorskip("xarray")
pytest.importorskip("rioxarray")
pytest.importorskip("odc.stac")

from rasterio.crs import CRS  # noqa: E402
from rasterio.transform import from_origin  # noqa: E402

from cropscope.data.readers.align import AlignedCube, Grid  # noqa: E402
from cropscope.data.readers.masks import MaskedCube  # noqa: E402
from cropscope.data.readers.stac import StacCubeSource  # noqa: E402
from cropscope.data.readers.xarray_cube import XarrayCubeSource  # noqa: E402
from tests.data.test_cube import write_raw  # noqa: E402
from tests.data.test_stac import make_catalog  # noqa: E402
from tests.data.test_xarray_cube import variables_cube  # noqa: E402


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "rasters"
    folder.mkdir()
    for d in ("2021-04-03", "2021-05-03"):
        write_raw(folder / f"B04_{d}.tif", np.full((7, 9), 0.2, np.float32))
        write_raw(folder / f"SCL_{d}.tif", np.full((7, 9), 4, np.uint8))
    ds, _ = variables_cube()
    ds.to_netcdf(tmp_path / "cube.nc", engine="h5netcdf")
    ds.to_zarr(tmp_path / "cube.zarr", consolidated=False)
    catalog, _ = make_catalog(tmp_path / "stac")
    (tmp_path / "notes.txt").write_text("not a cube")
    return {"rasters": folder, "nc": tmp_path / "cube.nc", "zarr": tmp_path / "cube.zarr",
            "stac": catalog, "txt": tmp_path / "notes.txt"}  # fmt: skip


def test_dispatch(inputs: dict[str, Path]) -> None:
    assert input_kind(inputs["rasters"]) == "rasters"
    assert input_kind(str(inputs["rasters"] / "*.tif")) == "rasters"
    assert input_kind(sorted(inputs["rasters"].glob("B04*"))) == "rasters"
    assert input_kind(inputs["nc"]) == input_kind(inputs["zarr"]) == "xarray"
    assert input_kind(inputs["stac"]) == input_kind(inputs["stac"].parent) == "stac"
    sources = {
        "rasters": open_cube_source(inputs["rasters"]),
        "list": open_cube_source(sorted(inputs["rasters"].glob("B04*"))),
        "nc": open_cube_source(inputs["nc"], variables="S2-L2A-*", nodata=65535),
        "zarr": open_cube_source(inputs["zarr"], variables="S2-L2A-*", nodata=65535),
        "stac": open_cube_source(inputs["stac"].parent, bands=["B04", "B08"]),
    }
    assert isinstance(sources["rasters"], CubeSource)
    assert isinstance(sources["nc"], XarrayCubeSource)
    assert isinstance(sources["zarr"], XarrayCubeSource)
    assert isinstance(sources["stac"], StacCubeSource)
    np.testing.assert_array_equal(sources["nc"].read().values, sources["zarr"].read().values)
    for name, src in sources.items():
        assert isinstance(src, CubeLike), name
        back = pickle.loads(pickle.dumps(src))
        window = ((1, 4), (2, 6))
        np.testing.assert_array_equal(back.read(window).values, src.read(window).values)
        assert back.read(window).shape == (len(src.times), len(src.bands), 3, 4)


def test_mask_and_target_options(inputs: dict[str, Path]) -> None:
    masked = open_cube_source(inputs["rasters"], mask_band="SCL")
    assert isinstance(masked, MaskedCube) and masked.bands == ["B04"]
    target = Grid(CRS.from_epsg(32633), from_origin(500000.0, 4000000.0, 20.0, 20.0), 3, 4)
    both = open_cube_source(inputs["nc"], variables="S2-L2A-B0[24]", mask_band=None,
                            target=target, resampling="nearest")  # fmt: skip
    assert isinstance(both, AlignedCube) and both.shape == (3, 4)
    assert both.crs == CRS.from_epsg(32633)
    assert np.isnan(both.read().values).all()  # the cube (UTM 31N, elsewhere) does not cover it
    same = Grid.of(open_cube_source(inputs["nc"], variables="S2-L2A-B02"))
    coarse = open_cube_source(inputs["nc"], variables="S2-L2A-B02", target=same.with_resolution(20),
                              resampling="average")  # fmt: skip
    assert coarse.shape == (4, 5) and np.isfinite(coarse.read().values[0]).all()
    grid20 = Grid(CRS.from_epsg(32633), from_origin(500000.0, 4000000.0, 20.0, 20.0), 4, 6)
    stac = open_cube_source(inputs["stac"], bands=["B04"], mask_band="SCL", target=grid20)
    assert isinstance(stac, StacCubeSource) and stac.shape == (4, 6) and stac.bands == ["B04"]
    warped = open_cube_source(inputs["rasters"], target=target, mask_band="SCL")
    assert isinstance(warped, MaskedCube) and warped.shape == (3, 4)


def test_errors(inputs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"cannot open notes\.txt"):
        open_cube_source(inputs["txt"])
    with pytest.raises(DataError, match="not found"):
        open_cube_source(tmp_path / "absent.tif")
    with pytest.raises(DataError, match="bands="):
        open_cube_source(inputs["stac"])
    with pytest.raises(DataError, match="--variables does not apply to a rasters input") as exc:
        open_cube_source(inputs["rasters"], variables="x")
    assert "scan()" not in str(exc.value)
    with pytest.raises(DataError, match="cannot open"):
        open_cube_source([])


@pytest.mark.realdata
def test_real_inputs(real_data_dir: Path) -> None:
    sinop = open_cube_source(real_data_dir / "sits_matogrosso" / "modis_sinop_ndvi_cube")
    assert isinstance(sinop, CubeSource) and sinop.shape == (147, 255) and len(sinop.times) == 12
    wc = open_cube_source(
        real_data_dir / "worldcereal_s2s1_patch" / "worldcereal_preprocessed_inputs.nc",
        variables="S2-L2A-*", nodata=65535, scale=1e-4,
        rename=lambda v: v.removeprefix("S2-L2A-"),
    )  # fmt: skip
    assert wc.bands == ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12"]
    assert wc.crs == CRS.from_epsg(32631) and len(wc.times) == 12
