"""Hyperspectral readers: tiny generated files in every format, plus the real files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cropscope.errors import DataError
from cropscope.hyperspectral import detect_format, open_hyperspectral, open_labels
from cropscope.hyperspectral.readers.envi import read_envi_header

UTM33_WKT_EPSG = 32633
ENMAP_NAME = "ENMAP01-____L2A-DT0000001867_20220724T104526Z_008_V010302_20230628T165614Z"


# ------------------------------------------------------------------------ generators
def write_envi(
    folder: Path,
    data: np.ndarray,
    *,
    interleave: str = "bsq",
    byte_order: int = 0,
    header_offset: int = 0,
    name: str = "scene",
    data_suffix: str = ".img",
    extra: dict[str, str] | None = None,
) -> Path:
    """Write ``data (band, y, x)`` as ENVI binary + header; returns the data file."""
    codes = {np.dtype(np.uint8): 1, np.dtype(np.int16): 2, np.dtype(np.int32): 3,
             np.dtype(np.float32): 4, np.dtype(np.float64): 5, np.dtype(np.uint16): 12}
    bands, lines, samples = data.shape
    layout = {"bsq": data, "bil": data.transpose(1, 0, 2), "bip": data.transpose(1, 2, 0)}
    arr = np.ascontiguousarray(layout[interleave])
    arr = arr.astype(arr.dtype.newbyteorder(">" if byte_order else "<"))
    path = folder / f"{name}{data_suffix}"
    path.write_bytes(b"\0" * header_offset + arr.tobytes())
    header = [
        "ENVI",
        "description = {",
        "  generated test scene, with a comma, and braces}",
        f"samples = {samples}",
        f"lines   = {lines}",
        f"bands   = {bands}",
        f"header offset = {header_offset}",
        "file type = ENVI Standard",
        f"data type = {codes[data.dtype]}",
        f"interleave = {interleave}",
        f"byte order = {byte_order}",
    ]
    for key, value in (extra or {}).items():
        header.append(f"{key} = {value}")
    (folder / f"{name}.hdr").write_text("\n".join(header) + "\n")
    return path


def _brace(values: np.ndarray | list, fmt: str = "{:g}", per_line: int = 4) -> str:
    items = [fmt.format(v) for v in values]
    rows = [" , ".join(items[i : i + per_line]) for i in range(0, len(items), per_line)]
    return "{\n " + " ,\n ".join(rows) + "}"


def write_geotiff(path: Path, data: np.ndarray, *, nodata: float | None = None,
                  scale: float | None = None, band_tags: list[dict[str, str]] | None = None,
                  epsg: int = UTM33_WKT_EPSG) -> Path:
    import rasterio
    from affine import Affine

    with rasterio.open(
        path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1],
        count=data.shape[0], dtype=data.dtype.name, crs=f"EPSG:{epsg}", nodata=nodata,
        transform=Affine(30.0, 0.0, 366975.0, 0.0, -30.0, 5805165.0),
    ) as dst:
        dst.write(data)
        if scale is not None:
            dst.scales = [scale] * data.shape[0]
            dst.offsets = [0.0] * data.shape[0]
        for i, tags in enumerate(band_tags or []):
            dst.update_tags(i + 1, **tags)
    return path


def write_enmap_product(folder: Path, dn: np.ndarray, wavelength: np.ndarray,
                        fwhm: np.ndarray, *, gain: float = 1e-4, offset: float = 0.0,
                        centre_tag: str = "wavelengthCenterOfBand",
                        n_described: int | None = None) -> Path:
    """A DLR EnMAP L2A product folder: GeoTIFF spectral image + METADATA.XML."""
    folder.mkdir(parents=True, exist_ok=True)
    write_geotiff(folder / f"{ENMAP_NAME}-SPECTRAL_IMAGE.TIF", dn, nodata=-32768)
    n = dn.shape[0] if n_described is None else n_described
    bands = "\n".join(
        f'      <bandID number="{i + 1}">\n'
        f"        <{centre_tag}>{wavelength[i]:.3f}</{centre_tag}>\n"
        f"        <FWHMOfBand>{fwhm[i]:.3f}</FWHMOfBand>\n"
        f"        <GainOfBand>{gain}</GainOfBand>\n"
        f"        <OffsetOfBand>{offset}</OffsetOfBand>\n"
        f"      </bandID>"
        for i in range(n)
    )
    n_vnir = int(np.sum(wavelength[:n] < 1000))
    xml = f"""<?xml version="1.0" encoding="UTF-8"?>
<level_X xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <metadata>
    <schema><processingLevel>L2A</processingLevel></schema>
    <name>{ENMAP_NAME}-METADATA.XML</name>
  </metadata>
  <processing><terrainCorrection>Yes</terrainCorrection>
    <productFormat>GeoTIFF+Metadata</productFormat></processing>
  <base>
    <format>ENMAP_L2A</format>
    <level>L2A</level>
    <temporalCoverage>
      <startTime>2022-07-24T10:45:26.000000Z</startTime>
      <stopTime>2022-07-24T10:45:30.000000Z</stopTime>
    </temporalCoverage>
  </base>
  <specific>
    <code>L2A</code>
    <widthOfScene>{dn.shape[2]}</widthOfScene>
    <heightOfScene>{dn.shape[1]}</heightOfScene>
    <numberOfBands>{n}</numberOfBands>
    <numberOfVNIRBands>{n_vnir}</numberOfVNIRBands>
    <numberOfSWIRBands>{n - n_vnir}</numberOfSWIRBands>
    <bandCharacterisation>
{bands}
    </bandCharacterisation>
  </specific>
  <product>
    <image><merge><channels>{n}</channels>
      <name>{ENMAP_NAME}-SPECTRAL_IMAGE.TIF</name></merge></image>
    <ortho><projection>UTM_Zone33_North</projection><resolution>30</resolution></ortho>
  </product>
</level_X>
"""
    (folder / f"{ENMAP_NAME}-METADATA.XML").write_text(xml)
    return folder


def write_emit_netcdf(path: Path, refl: np.ndarray, wavelength: np.ndarray,
                      fwhm: np.ndarray, good: np.ndarray, glt_x: np.ndarray,
                      glt_y: np.ndarray) -> Path:
    """An EMIT L2A RFL NetCDF4 in the LP DAAC layout, written with h5netcdf."""
    import h5netcdf
    from rasterio.crs import CRS

    down, cross, bands = refl.shape
    with h5netcdf.File(path, "w") as f:
        f.dimensions = {"downtrack": down, "crosstrack": cross, "bands": bands,
                        "ortho_y": glt_x.shape[0], "ortho_x": glt_x.shape[1]}
        f.attrs["geotransform"] = np.array([-118.2, 0.0005, 0.0, 34.2, 0.0, -0.0005])
        f.attrs["spatial_ref"] = CRS.from_epsg(4326).to_wkt()
        f.attrs["time_coverage_start"] = "2025-03-24T22:10:05+0000"
        f.attrs["instrument"] = "EMIT"
        v = f.create_variable("reflectance", ("downtrack", "crosstrack", "bands"), "f4",
                              fillvalue=np.float32(-9999.0))
        v[...] = refl
        v.attrs["units"] = "unitless"
        sbp = f.create_group("sensor_band_parameters")
        sbp.create_variable("wavelengths", ("bands",), data=wavelength.astype("f4"))
        sbp.create_variable("fwhm", ("bands",), data=fwhm.astype("f4"))
        sbp.create_variable("good_wavelengths", ("bands",), data=good.astype("u1"))
        loc = f.create_group("location")
        loc.create_variable("glt_x", ("ortho_y", "ortho_x"), data=glt_x.astype("i4"))
        loc.create_variable("glt_y", ("ortho_y", "ortho_x"), data=glt_y.astype("i4"))
        lat = 34.2 - 0.0005 * np.arange(down)[:, None] + 0 * np.arange(cross)[None, :]
        loc.create_variable("lat", ("downtrack", "crosstrack"), data=lat)
        loc.create_variable("lon", ("downtrack", "crosstrack"),
                            data=-118.2 + 0.0005 * np.arange(cross)[None, :] + 0 * lat)
    return path


def write_mat_v73(path: Path, variables: dict[str, np.ndarray]) -> Path:
    """A MATLAB v7.3 file: HDF5 with a 512-byte text user block, arrays column-major."""
    import h5py

    with h5py.File(path, "w", userblock_size=512) as f:
        for name, arr in variables.items():
            ds = f.create_dataset(name, data=np.asarray(arr).T)
            ds.attrs["MATLAB_class"] = np.bytes_("double" if arr.dtype.kind == "f" else "uint8")
    head = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5"
    with path.open("r+b") as fh:
        fh.write(head.ljust(128, b" "))
    return path


def small_cube(n_bands: int = 6, height: int = 4, width: int = 5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 0.6, size=(n_bands, height, width)).astype(np.float32)


# ----------------------------------------------------------------------------- ENVI
@pytest.mark.parametrize(
    ("interleave", "byte_order", "dtype", "offset"),
    [("bsq", 0, np.float32, 0), ("bil", 1, np.int16, 0), ("bip", 0, np.uint16, 128),
     ("bip", 1, np.float64, 64)],
)
def test_envi_every_interleave_byte_order_and_offset(tmp_path, interleave, byte_order, dtype,
                                                     offset) -> None:
    data = (small_cube() * 10000).astype(dtype)
    data[2, 1, 3] = 9999  # the ignore value
    wl_um = np.array([0.45, 0.55, 0.65, 0.86, 1.61, 2.2])
    path = write_envi(tmp_path, data, interleave=interleave, byte_order=byte_order,
                      header_offset=offset, extra={
                          "wavelength units": "Micrometers",
                          "wavelength": _brace(wl_um),
                          "fwhm": _brace([0.01] * 6),
                          "bbl": _brace([1, 1, 1, 1, 0, 1]),
                          "data ignore value": "9999",
                          "reflectance scale factor": "10000",
                          "map info": "{UTM, 1.000, 1.000, 353128.75, 3813729.77, 15.0, 15.0, "
                                      "11, North, WGS-84, units=Meters}",
                      })
    scene = open_hyperspectral(path)
    assert detect_format(path) == "envi"
    assert scene.dims == ("band", "y", "x") and scene.shape == (6, 4, 5)
    assert scene.dtype == np.float32
    expected = data.astype(np.float64) / 10000
    expected[2, 1, 3] = np.nan
    np.testing.assert_allclose(scene.values, expected, rtol=1e-6, equal_nan=True)
    np.testing.assert_allclose(scene["wavelength"].values, wl_um * 1000)
    np.testing.assert_allclose(scene["fwhm"].values, 10.0)
    assert scene["bad_band"].values.tolist() == [False] * 4 + [True, False]
    assert scene.attrs["interleave"] == interleave and scene.attrs["units"] == "reflectance"
    assert scene.rio.crs.to_epsg() == 32611
    assert scene.attrs["transform"] == (15.0, 0.0, 353128.75, 0.0, -15.0, 3813729.77)
    assert scene["x"].values[0] == pytest.approx(353128.75 + 7.5)
    # the header can be given instead of the data file
    again = open_hyperspectral(tmp_path / "scene.hdr")
    np.testing.assert_array_equal(again.values, scene.values)


def test_envi_band_names_carry_wavelengths_and_no_map_info(tmp_path) -> None:
    data = small_cube(3)
    path = write_envi(tmp_path, data, data_suffix="", extra={
        "band names": "{\n376.44 Nanometers,\n381.45 Nanometers,\n386.46 Nanometers}",
        "data ignore value": "-9999",
    })
    scene = open_hyperspectral(path)
    np.testing.assert_allclose(scene["wavelength"].values, [376.44, 381.45, 386.46])
    assert np.isnan(scene["fwhm"].values).all()
    assert "crs" not in scene.attrs and "transform" not in scene.attrs
    np.testing.assert_array_equal(scene["x"].values, np.arange(5))
    assert scene.attrs["sensor"] == "unknown" and scene.attrs["units"] == "unknown"


def test_envi_header_parser_keeps_text_and_splits_lists(tmp_path) -> None:
    write_envi(tmp_path, small_cube(2), extra={"wavelength": "{ 500.0 ,\n 600.0 }"})
    header = read_envi_header(tmp_path / "scene.hdr")
    assert header["description"] == "generated test scene, with a comma, and braces"
    assert header["wavelength"] == ["500.0", "600.0"]
    assert header["interleave"] == "bsq" and header["samples"] == "5"


def test_envi_errors_are_data_errors(tmp_path) -> None:
    (tmp_path / "lonely.img").write_bytes(b"\0" * 16)
    with pytest.raises(DataError, match="cannot tell the format"):
        open_hyperspectral(tmp_path / "lonely.img")
    (tmp_path / "bad.hdr").write_text("not an envi header\n")
    (tmp_path / "bad").write_bytes(b"\0" * 16)
    with pytest.raises(DataError, match="not an ENVI header"):
        open_hyperspectral(tmp_path / "bad.hdr")
    path = write_envi(tmp_path, small_cube(3), extra={"wavelength": "{500, 600}"})
    with pytest.raises(DataError, match="2 wavelength values for 3 bands"):
        open_hyperspectral(path)
    with pytest.raises(DataError, match="file not found"):
        open_hyperspectral(tmp_path / "missing.hdr")
    # an interleave or byte order GDAL does not know would be read scrambled, not refused
    for line, bad in (("interleave = bsq", "interleave = xyz"),
                      ("byte order = 0", "byte order = 7")):
        path = write_envi(tmp_path, small_cube(3), name="odd")
        hdr = tmp_path / "odd.hdr"
        hdr.write_text(hdr.read_text().replace(line, bad))
        with pytest.raises(DataError, match=bad.split(" = ")[0]):
            open_hyperspectral(path)


@pytest.mark.parametrize("interleave,offset", [("bsq", 0), ("bip", 16)])
def test_truncated_envi_data_is_refused_not_read_as_zeros(tmp_path, interleave: str,
                                                          offset: int, monkeypatch) -> None:
    """Issue 20 item 9: a short ENVI data file read as zero reflectance; now the size the
    header declares is checked (and the memory it needs, before reading)."""
    path = write_envi(tmp_path, small_cube(3), interleave=interleave, header_offset=offset)
    whole = path.read_bytes()
    path.write_bytes(whole[:-7])
    with pytest.raises(DataError, match="truncated"):
        open_hyperspectral(path)
    path.write_bytes(whole)
    assert open_hyperspectral(path).shape == (3, 4, 5)
    monkeypatch.setenv("CROPSCOPE_MEMORY_LIMIT", "100")
    with pytest.raises(DataError, match="limit of 100 B"):
        open_hyperspectral(path)


# ------------------------------------------------------------------- GeoTIFF + tags
def test_geotiff_band_tags_in_micrometres_scale_and_nodata(tmp_path) -> None:
    dn = (small_cube(4) * 10000).astype(np.int16)
    dn[3] = -32768  # a nodata-filled band
    dn[0, 0, 0] = -32768
    tags = [{"wavelength": f"{w}", "wavelength_units": "Micrometers", "fwhm": "0.008",
             "bbl": "1"} for w in (0.42, 0.66, 0.87, 1.38)]
    tags[3]["bbl"] = "0"
    path = write_geotiff(tmp_path / "enmap_tile.tif", dn, nodata=-32768, scale=1e-4,
                         band_tags=tags)
    scene = open_hyperspectral(path)
    assert scene.attrs["format"] == "geotiff" and scene.attrs["sensor"] == "EnMAP"
    assert scene.attrs["units"] == "reflectance" and scene.attrs["scale_factor"] == 1e-4
    np.testing.assert_allclose(scene["wavelength"].values, [420, 660, 870, 1380])
    np.testing.assert_allclose(scene["fwhm"].values, 8.0)
    assert scene["bad_band"].values.tolist() == [False, False, False, True]
    assert np.isnan(scene.values[0, 0, 0]) and np.isnan(scene.values[3]).all()
    assert scene.values[1, 2, 2] == pytest.approx(dn[1, 2, 2] * 1e-4, rel=1e-6)
    assert scene.rio.crs.to_epsg() == UTM33_WKT_EPSG
    # user overrides: wavelengths (nm) and scale
    other = open_hyperspectral(path, wavelengths=[1, 2, 3, 4], scale=1.0, sensor="mine")
    np.testing.assert_allclose(other["wavelength"].values, [1000, 2000, 3000, 4000])
    assert other.values[1, 2, 2] == dn[1, 2, 2] and other.attrs["sensor"] == "mine"
    with pytest.raises(DataError, match="3 wavelengths given for 4 bands"):
        open_hyperspectral(path, wavelengths=[500, 600, 700])


def test_geotiff_band_descriptions_carry_wavelengths(tmp_path) -> None:
    import rasterio

    path = write_geotiff(tmp_path / "plain.tif", small_cube(2))
    with rasterio.open(path, "r+") as dst:
        dst.set_band_description(1, "band 1 (418.24 Nanometers)")
        dst.set_band_description(2, "band 2 (0.42387 Micrometers)")
    scene = open_hyperspectral(path)
    np.testing.assert_allclose(scene["wavelength"].values, [418.24, 423.87])
    assert scene.attrs["units"] == "unknown" and scene.attrs["scale_factor"] == 1.0


# ----------------------------------------------------------------- EnMAP product
@pytest.mark.parametrize("centre_tag", ["wavelengthCenterOfBand", "wavelengthCenterOfGravity"])
def test_enmap_product_layout(tmp_path, centre_tag) -> None:
    rng = np.random.default_rng(1)
    dn = rng.integers(-300, 9000, size=(5, 3, 4)).astype(np.int16)
    dn[2] = -32768  # bad band filled with nodata, as in DLR L2A products
    wl = np.array([418.24, 902.257, 993.083, 1343.18, 2445.53])
    fwhm = np.array([6.99, 10.1, 8.2, 11.36, 7.5])
    folder = write_enmap_product(tmp_path / "product", dn, wl, fwhm, offset=0.01,
                                 centre_tag=centre_tag)
    image = folder / f"{ENMAP_NAME}-SPECTRAL_IMAGE.TIF"
    xml = folder / f"{ENMAP_NAME}-METADATA.XML"
    for path in (folder, xml, image):
        assert detect_format(path) == "enmap-product"
        scene = open_hyperspectral(path)
        assert scene.attrs["format"] == "enmap-product" and scene.attrs["sensor"] == "EnMAP"
        assert scene.attrs["processing_level"] == "L2A" and scene.attrs["units"] == "reflectance"
        assert scene.attrs["time"].startswith("2022-07-24T10:45:26")
        np.testing.assert_allclose(scene["wavelength"].values, wl, atol=1e-3)
        np.testing.assert_allclose(scene["fwhm"].values, fwhm, atol=1e-3)
        assert scene["bad_band"].values.tolist() == [False, False, True, False, False]
        expected = dn.astype(np.float64) * 1e-4 + 0.01
        expected[2] = np.nan
        np.testing.assert_allclose(scene.values, expected, rtol=1e-5, equal_nan=True)
        assert scene.rio.crs.to_epsg() == UTM33_WKT_EPSG


def test_enmap_product_band_count_mismatch(tmp_path) -> None:
    dn = np.zeros((3, 2, 2), np.int16)
    folder = write_enmap_product(tmp_path / "p", dn, np.array([500.0, 600, 700]),
                                 np.array([8.0, 8, 8]), n_described=2)
    with pytest.raises(DataError, match="describes 2 bands"):
        open_hyperspectral(folder)


# --------------------------------------------------------------------- EMIT NetCDF
def _emit_inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2)
    refl = rng.uniform(0, 0.5, size=(4, 3, 6)).astype(np.float32)  # downtrack, crosstrack, b
    refl[1, 2, :] = -9999.0
    glt_x = np.array([[1, 2, 3, 0], [3, 2, 1, 0], [0, 1, 3, 2]])  # 1-based crosstrack
    glt_y = np.array([[1, 1, 1, 0], [2, 2, 4, 0], [0, 3, 3, 4]])  # 1-based downtrack
    return {
        "refl": refl, "wavelength": np.linspace(381.0, 2493.0, 6),
        "fwhm": np.full(6, 8.5), "good": np.array([1, 1, 0, 1, 0, 1]),
        "glt_x": glt_x, "glt_y": glt_y,
    }


def test_emit_netcdf_swath(tmp_path) -> None:
    inputs = _emit_inputs()
    path = write_emit_netcdf(tmp_path / "EMIT_L2A_RFL_001_20250324T221005_2508315_003.nc",
                             inputs["refl"], inputs["wavelength"], inputs["fwhm"],
                             inputs["good"], inputs["glt_x"], inputs["glt_y"])
    assert detect_format(path) == "emit-netcdf"
    scene = open_hyperspectral(path)
    assert scene.shape == (6, 4, 3) and scene.attrs["geometry"] == "swath"
    assert scene.attrs["sensor"] == "EMIT" and scene.attrs["units"] == "reflectance"
    np.testing.assert_allclose(scene["wavelength"].values, inputs["wavelength"], rtol=1e-6)
    assert scene["bad_band"].values.tolist() == [False, False, True, False, True, False]
    assert np.isnan(scene.values[:, 1, 2]).all()
    np.testing.assert_allclose(scene.values[:, 0, 1], inputs["refl"][0, 1, :])
    assert scene["lat"].shape == (4, 3) and "crs" not in scene.attrs


def test_emit_netcdf_orthorectified_through_the_glt(tmp_path) -> None:
    inputs = _emit_inputs()
    path = write_emit_netcdf(tmp_path / "emit.nc", inputs["refl"], inputs["wavelength"],
                             inputs["fwhm"], inputs["good"], inputs["glt_x"], inputs["glt_y"])
    ortho = open_hyperspectral(path, orthorectify=True)
    assert ortho.shape == (6, 3, 4)
    refl = inputs["refl"]
    # cell (row 1, col 2) points to downtrack 4, crosstrack 1 (1-based)
    np.testing.assert_allclose(ortho.values[:, 1, 2], refl[3, 0, :])
    np.testing.assert_allclose(ortho.values[:, 2, 3], refl[3, 1, :])
    assert np.isnan(ortho.values[:, 0, 3]).all() and np.isnan(ortho.values[:, 2, 0]).all()
    assert ortho.rio.crs.to_epsg() == 4326
    assert ortho.attrs["transform"] == pytest.approx((0.0005, 0.0, -118.2, 0.0, -0.0005, 34.2))
    assert ortho["x"].values[0] == pytest.approx(-118.2 + 0.00025)
    with pytest.raises(DataError, match="EMIT NetCDF files"):
        open_hyperspectral(write_envi(tmp_path, small_cube(2)), orthorectify=True)


def test_non_emit_netcdf_is_refused(tmp_path) -> None:
    import h5netcdf

    with h5netcdf.File(tmp_path / "other.nc", "w") as f:
        f.dimensions = {"x": 2}
        f.create_variable("temperature", ("x",), data=np.zeros(2))
    with pytest.raises(DataError, match="only EMIT-layout"):
        open_hyperspectral(tmp_path / "other.nc")


# ------------------------------------------------------------------------- MATLAB
def _mat_arrays() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    image = rng.integers(900, 9000, size=(5, 4, 7)).astype(np.uint16)  # rows, cols, bands
    labels = rng.integers(0, 3, size=(5, 4)).astype(np.uint8)
    return image, labels


def _write_band_csv(path: Path, n: int) -> Path:
    rows = ["band_index,center_nm,fwhm_nm"]
    rows += [f"{i + 1},{400 + 10 * i:.2f},{9.5:.2f}" for i in range(n)]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_matlab_v5_image_labels_and_sibling_wavelengths(tmp_path) -> None:
    import scipy.io

    image, labels = _mat_arrays()
    mat = tmp_path / "scene.mat"
    scipy.io.savemat(mat, {"X": image, "grd": labels})
    scene = open_hyperspectral(mat)  # no csv yet: wavelengths unknown
    assert detect_format(mat) == "matlab"
    assert scene.shape == (7, 5, 4) and scene.attrs["variable"] == "X"
    np.testing.assert_array_equal(scene.values, np.moveaxis(image, -1, 0).astype(np.float32))
    assert np.isnan(scene["wavelength"].values).all()
    assert scene.attrs["wavelength_source"] == "none"

    _write_band_csv(tmp_path / "wavelengths_7.csv", 7)
    scene = open_hyperspectral(mat)
    np.testing.assert_allclose(scene["wavelength"].values, 400 + 10 * np.arange(7))
    np.testing.assert_allclose(scene["fwhm"].values, 9.5)
    assert scene.attrs["wavelength_source"] == "file wavelengths_7.csv"

    _write_band_csv(tmp_path / "wavelengths_other.csv", 7)  # now ambiguous: none is used
    assert np.isnan(open_hyperspectral(mat)["wavelength"].values).all()
    # an explicit CSV or array always wins
    chosen = open_hyperspectral(mat, wavelengths=tmp_path / "wavelengths_other.csv")
    np.testing.assert_allclose(chosen["wavelength"].values, 400 + 10 * np.arange(7))
    microns = open_hyperspectral(f"{mat}:X", wavelengths=np.linspace(0.4, 2.5, 7))
    np.testing.assert_allclose(microns["wavelength"].values, np.linspace(400, 2500, 7))

    lab = open_labels(mat)
    assert lab.dims == ("y", "x") and lab.dtype == np.int32
    np.testing.assert_array_equal(lab.values, labels)
    np.testing.assert_array_equal(open_labels(f"{mat}:grd").values, labels)


def test_matlab_variable_selection_errors(tmp_path) -> None:
    import scipy.io

    image, labels = _mat_arrays()
    mat = tmp_path / "two.mat"
    scipy.io.savemat(mat, {"A": image, "B": image, "grd": labels})
    with pytest.raises(DataError, match="2 3-D arrays"):
        open_hyperspectral(mat)
    assert open_hyperspectral(f"{mat}:B").attrs["variable"] == "B"
    with pytest.raises(DataError, match="no numeric variable 'C'"):
        open_hyperspectral(f"{mat}:C")
    with pytest.raises(DataError, match="needs 3 dimensions"):
        open_hyperspectral(f"{mat}:grd")


def test_matlab_v73_matches_v5(tmp_path) -> None:
    import scipy.io

    image, labels = _mat_arrays()
    v5 = tmp_path / "v5" / "a.mat"
    v5.parent.mkdir()
    scipy.io.savemat(v5, {"X": image, "grd": labels})
    v73 = write_mat_v73(tmp_path / "b.mat", {"X": image.astype(np.float64),
                                            "grd": labels, "wavelength": np.arange(7.0) + 500})
    assert detect_format(v73) == "matlab"
    a, b = open_hyperspectral(v5), open_hyperspectral(v73)
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_allclose(b["wavelength"].values, np.arange(7.0) + 500)
    assert b.attrs["wavelength_source"] == "variable wavelength"
    np.testing.assert_array_equal(open_labels(v73).values, labels)


# ------------------------------------------------------------------------- labels
def test_labels_geotiff_nodata_becomes_unlabelled(tmp_path) -> None:
    values = np.array([[[0, 1, 2], [3, 255, 6]]], dtype=np.float32)
    path = write_geotiff(tmp_path / "labels.tif", values, nodata=255)
    lab = open_labels(path)
    assert lab.dtype == np.int32 and lab.attrs["unlabelled"] == 0
    np.testing.assert_array_equal(lab.values, [[0, 1, 2], [3, 0, 6]])
    assert lab.rio.crs.to_epsg() == UTM33_WKT_EPSG
    bad = write_geotiff(tmp_path / "frac.tif", values + 0.5)
    with pytest.raises(DataError, match="whole numbers"):
        open_labels(bad)


def test_format_detection_and_names(tmp_path) -> None:
    with pytest.raises(DataError, match="unknown hyperspectral format"):
        open_hyperspectral(tmp_path, format="jpeg")
    with pytest.raises(DataError, match="without an EnMAP"):
        open_hyperspectral(tmp_path)
    path = write_envi(tmp_path, small_cube(2))
    assert open_hyperspectral(path, format="ENVI").attrs["format"] == "envi"


# ----------------------------------------------------------------------- real files
@pytest.mark.realdata
def test_real_enmap_tiles(real_data_dir) -> None:
    folder = real_data_dir / "hyperspectral" / "enmap_potsdam_tiles"
    tiles = sorted((folder / "images").glob("*.tif"))
    assert len(tiles) == 18
    for tile in tiles:
        scene = open_hyperspectral(tile)
        assert scene.shape == (224, 32, 32) and scene.attrs["sensor"] == "EnMAP"
        wl = scene["wavelength"].values
        assert wl[0] == pytest.approx(418.24) and wl[-1] == pytest.approx(2445.53)
        assert 5.8 <= np.nanmin(scene["fwhm"].values) and np.nanmax(scene["fwhm"].values) <= 11.5
        nan_bands = np.flatnonzero(np.isnan(scene.values).all(axis=(1, 2))) + 1
        assert nan_bands.tolist() == [130, 131, 132, 133, 134, 135]
        assert (np.flatnonzero(scene["bad_band"].values) + 1).tolist() == nan_bands.tolist()
        good = scene.values[~scene["bad_band"].values]
        assert np.isfinite(good).all()
        # scale 1e-4 applied: DN -496 … 10,439 -> reflectance -0.0496 … 1.0439
        assert -0.05 <= good.min() and good.max() <= 1.044
        assert scene.rio.crs.to_epsg() == 32633 and scene.attrs["transform"][0] == 30.0
    labels = open_labels(folder / "labels" / tiles[-1].name)
    assert labels.shape == (32, 32) and set(np.unique(labels.values)) <= set(range(7))
    assert labels.attrs["transform"] == scene.attrs["transform"]  # same tile as the last scene


@pytest.mark.realdata
def test_real_enmap_labels_counts(real_data_dir) -> None:
    folder = real_data_dir / "hyperspectral" / "enmap_potsdam_tiles" / "labels"
    counts = np.zeros(7, int)
    for tile in sorted(folder.glob("*.tif")):
        counts += np.bincount(open_labels(tile).values.ravel(), minlength=7)
    assert counts.tolist() == [12760, 505, 953, 1694, 2070, 91, 359]


@pytest.mark.realdata
def test_real_emit_envi(real_data_dir) -> None:
    path = (real_data_dir / "hyperspectral" / "emit_l2a_jpl_10x10"
            / "emit20250324t221005_jpl_unmix_ex")
    scene = open_hyperspectral(path)
    assert scene.shape == (285, 10, 10) and scene.attrs["sensor"] == "EMIT"
    wl = scene["wavelength"].values
    assert wl[0] == pytest.approx(381.006, abs=1e-3) and wl[-1] == pytest.approx(2492.924,
                                                                                 abs=1e-3)
    assert 8.4 < np.nanmin(scene["fwhm"].values) < np.nanmax(scene["fwhm"].values) < 8.81
    expected_bad = list(range(127, 142)) + list(range(187, 213))
    assert np.flatnonzero(scene["bad_band"].values).tolist() == expected_bad
    assert np.isfinite(scene.values).all()  # -9999 does not occur
    assert scene.values.min() == pytest.approx(-0.01) and scene.values.max() < 0.4
    assert "crs" not in scene.attrs


@pytest.mark.realdata
def test_real_aviris_ng(real_data_dir) -> None:
    path = (real_data_dir / "hyperspectral" / "aviris_ng_radiance_isofit"
            / "ang20160910t185702_2rdn_img.hdr")
    scene = open_hyperspectral(path)
    assert scene.shape == (425, 25, 30) and scene.attrs["sensor"] == "AVIRIS-NG"
    assert scene.attrs["units"].startswith("radiance")
    wl = scene["wavelength"].values
    assert wl[0] == pytest.approx(376.44) and wl[-1] == pytest.approx(2500.12)
    assert np.all(np.diff(wl) > 0) and np.isnan(scene["fwhm"].values).all()
    assert not scene["bad_band"].values.any() and np.isfinite(scene.values).all()
    assert scene.rio.crs.to_epsg() == 32611
    a, _, c, _, e, f = scene.attrs["transform"]
    assert (a, -e) == (15.0, 15.0) and (c, f) == pytest.approx((353128.7516, 3813729.7681))
    assert -0.005 < scene.values.min() < 0 and 10.6 < scene.values.max() < 10.7


@pytest.mark.realdata
def test_real_indian_pines(real_data_dir) -> None:
    folder = real_data_dir / "hyperspectral" / "indian_pines_subset"
    scene = open_hyperspectral(folder / "Indian_part.mat")
    assert scene.shape == (200, 85, 70) and scene.attrs["variable"] == "X"
    assert scene.values.min() == 955 and scene.values.max() == 8771
    assert scene.attrs["wavelength_source"] == "file wavelengths_200_derived.csv"
    wl = scene["wavelength"].values
    assert wl[0] == pytest.approx(400.02) and wl[-1] == pytest.approx(2489.11)
    assert np.isfinite(scene["fwhm"].values).all()
    labels = open_labels(folder / "Indian_part.mat")
    counts = np.bincount(labels.values.ravel())
    assert labels.shape == (85, 70) and counts.tolist() == [1559, 1005, 730, 732, 1924]
