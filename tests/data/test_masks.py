from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from cropscope.data.readers.cube import CubeLike, CubeSource
from cropscope.data.readers.masks import (
    SCL_INVALID,
    SCL_INVALID_WITH_SNOW,
    MaskedCube,
    apply_mask,
    mask_from_bits,
    mask_from_scl,
)
from cropscope.errors import DataError

rasterio = pytest.importorskip("rasterio")
pytest.importorskip("rioxarray")

from tests.data.test_cube import write_raw  # noqa: E402

DATES = ("2021-04-03", "2021-04-18", "2021-05-03")


def qa_bad(values: np.ndarray) -> np.ndarray:
    """Bits 3 (cloud) and 4 (shadow) of a Landsat-style QA band."""
    return mask_from_bits(values, [3, 4])


@pytest.fixture
def scl_folder(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """Three dates of uint16 B04/B08 (scaled by 1e-4) and an SCL layer per date."""
    rng = np.random.default_rng(1)
    scl = {
        DATES[0]: np.array([[4, 4, 9], [4, 3, 4]], np.uint8),  # cloud, shadow
        DATES[1]: np.array([[4, 4, 9], [5, 4, 10]], np.uint8),  # cloud again, cirrus
        DATES[2]: np.array([[8, 11, 9], [4, 4, 0]], np.uint8),  # cloud, snow, no data
    }
    for d in DATES:
        for band in ("B04", "B08"):
            values = rng.integers(100, 5000, (2, 3)).astype(np.uint16)
            write_raw(tmp_path / f"{band}_{d}.tif", values)
        write_raw(tmp_path / f"SCL_{d}.tif", scl[d])
    return tmp_path, scl


def test_mask_from_scl_and_bits() -> None:
    scl = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11])
    assert mask_from_scl(scl).tolist() == [c in (0, 1, 3, 8, 9, 10) for c in range(12)]
    assert mask_from_scl(scl, SCL_INVALID_WITH_SNOW)[11]
    assert mask_from_scl(np.array([4.0, np.nan, 9.0])).tolist() == [False, True, True]
    qa = np.array([0, 1 << 3, 1 << 4, 1 << 1, (1 << 3) | 1])
    assert qa_bad(qa).tolist() == [False, True, True, False, True]
    assert qa_bad(np.array([np.nan, 8.0])).tolist() == [True, True]


def test_masked_cube_sets_invalid_observations_to_nan(scl_folder: tuple[Path, dict]) -> None:
    folder, scl = scl_folder
    source = CubeSource.scan(folder, scale=1e-4)
    assert source.bands == ["B04", "B08", "SCL"]
    raw = source.read()
    # the SCL band is categorical: never scaled
    assert set(np.unique(raw.sel(band="SCL").values)) == {0, 3, 4, 5, 8, 9, 10, 11}
    masked = MaskedCube(source, "SCL")
    assert isinstance(masked, CubeLike)
    assert masked.bands == ["B04", "B08"]
    assert masked.shape == source.shape and masked.times == source.times
    assert masked.files == source.files and masked.crs == source.crs
    cube = masked.read()
    assert cube.shape == (3, 2, 2, 3) and cube["band"].values.tolist() == ["B04", "B08"]
    assert cube.attrs["scale_factor"] == [1e-4, 1e-4]
    for t, d in enumerate(DATES):
        bad = np.isin(scl[d], SCL_INVALID)
        assert (np.isnan(cube.values[t]) == bad[None]).all()
        np.testing.assert_array_equal(cube.values[t][:, ~bad], raw.values[t, :2][:, ~bad])
    # pixel (0, 2) is cloudy on every date: no valid observation -> nodata in the map
    from cropscope.mapping.classify import cube_pixels

    valid = cube_pixels(cube).mask.any(axis=1).reshape(2, 3)
    assert valid.tolist() == [[True, True, False], [True, True, True]]
    # snow too
    snowy = MaskedCube(source, "SCL", SCL_INVALID_WITH_SNOW).read()
    assert np.isnan(snowy.values[2, :, 0, 1]).all() and not np.isnan(cube.values[2, :, 0, 1]).any()
    # a window of the masked cube is the same slice
    part = masked.read(((1, 2), (1, 3)))
    np.testing.assert_array_equal(part.values, cube.values[:, :, 1:2, 1:3])
    back = pickle.loads(pickle.dumps(MaskedCube(source, "SCL", qa_bad)))
    assert back.read().shape == (3, 2, 2, 3)
    with masked.opened():
        np.testing.assert_array_equal(masked.read().values, cube.values)


def test_mask_errors(scl_folder: tuple[Path, dict]) -> None:
    folder, _ = scl_folder
    source = CubeSource.scan(folder)
    with pytest.raises(DataError, match="mask band 'QA'"):
        MaskedCube(source, "QA")
    with pytest.raises(DataError, match="mask band"):
        apply_mask(source.read(), "Fmask")
    with pytest.raises(DataError, match="shape"):
        MaskedCube(source, "SCL", lambda v: v[0]).read()


@pytest.mark.filterwarnings("ignore:Mean of empty slice:RuntimeWarning")
def test_masked_then_composited(scl_folder: tuple[Path, dict]) -> None:
    from cropscope.features.cube import CompositedCube

    folder, _ = scl_folder
    source = CubeSource.scan(folder, scale=1e-4)
    masked = MaskedCube(source, "SCL")
    monthly = CompositedCube(masked, "monthly")
    assert isinstance(monthly, CubeLike)
    assert [str(t) for t in monthly.times] == ["2021-04-01", "2021-05-01"]
    assert monthly.bands == ["B04", "B08"] and monthly.shape == (2, 3)
    cube = monthly.read()
    obs = masked.read().values
    # April: median (= mean of two) of the valid observations of 04-03 and 04-18
    np.testing.assert_allclose(cube.values[0], np.nanmean(obs[:2], axis=0), rtol=1e-6)
    np.testing.assert_array_equal(cube.values[1], obs[2])
    assert np.isnan(cube.values[:, :, 0, 2]).all()  # cloudy on every date
    part = monthly.read(((0, 2), (1, 3)))
    np.testing.assert_array_equal(part.values, cube.values[:, :, :, 1:3])
    back = pickle.loads(pickle.dumps(CompositedCube(masked, 10, start="2021-04-01")))
    assert len(back.times) == 4 and back.read().shape == (4, 2, 2, 3)


def test_composite_dates_that_are_not_dates(scl_folder: tuple[Path, dict]) -> None:
    from cropscope.errors import DataError
    from cropscope.features.cube import CompositedCube

    masked = MaskedCube(CubeSource.scan(scl_folder[0], scale=1e-4), "SCL")
    with pytest.raises(DataError, match="start must be a date"):
        CompositedCube(masked, "monthly", start="xyz")
    with pytest.raises(DataError, match="end must be a date"):
        CompositedCube(masked, "monthly", end="2021-13-45")
