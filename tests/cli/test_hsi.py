"""``cropscope hsi info``: in-process through click for speed, plus one real subprocess run
for the error path (one ``error:`` line, exit code 2)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from cropscope.cli.main import cli
from cropscope.hyperspectral import band_ranges
from tests.cli.test_cli import assert_one_line_error, run_cli
from tests.hyperspectral.test_readers import _brace, write_emit_netcdf, write_envi


def invoke(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_band_ranges() -> None:
    assert band_ranges([]) == ""
    assert band_ranges([3]) == "3"
    assert band_ranges([1, 2, 3, 7, 9, 10]) == "1-3, 7, 9-10"


def test_info_text_on_an_envi_file(tmp_path) -> None:
    data = np.full((5, 3, 4), 0.25, dtype=np.float32)
    data[1] = -9999.0  # a nodata-filled band
    data[0, 0, 0] = 0.9
    path = write_envi(tmp_path, data, interleave="bil", extra={
        "wavelength": _brace([450, 550, 650, 1400, 2500]), "wavelength units": "nm",
        "bbl": _brace([1, 1, 1, 0, 1]), "data ignore value": "-9999",
        "map info": "{UTM, 1, 1, 500000, 4000000, 20, 20, 33, North, WGS-84}",
    })
    out = invoke("hsi", "info", str(path))
    assert "format:      envi" in out
    assert "5 bands × 3 rows × 4 columns" in out
    assert "450.00 – 2500.00 nm" in out
    assert "bad bands:   2 (band numbers 2, 4)" in out
    assert "0.25 … 0.9" in out
    assert "nodata:      12 values (20.00 %)" in out
    assert "EPSG:32633, pixel 20 × 20" in out


def test_info_json_on_an_orthorectified_emit_file(tmp_path) -> None:
    refl = np.linspace(0.0, 0.5, 2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    glt_x = np.array([[1, 2, 3], [0, 3, 2]])
    glt_y = np.array([[1, 1, 1], [0, 2, 2]])
    path = write_emit_netcdf(tmp_path / "emit.nc", refl, np.array([400.0, 800, 1400, 2400]),
                             np.full(4, 8.5), np.array([1, 1, 0, 1]), glt_x, glt_y)
    info = json.loads(invoke("hsi", "info", "--json", "--orthorectify", str(path)))
    assert info["format"] == "emit-netcdf" and info["sensor"] == "EMIT"
    assert info["shape"] == {"band": 4, "y": 2, "x": 3} and info["bands"] == 4
    assert info["wavelength_min_nm"] == 400.0 and info["wavelength_max_nm"] == 2400.0
    assert info["bad_band_count"] == 1 and info["bad_bands"] == "3"
    assert info["crs"] == "EPSG:4326" and info["pixel_size"] == pytest.approx([0.0005, 0.0005])
    assert info["nodata_count"] == 4  # one empty GLT cell x 4 bands
    assert info["value_min"] == 0.0 and info["value_max"] == pytest.approx(0.5)


def test_info_user_errors_are_one_line(tmp_path) -> None:
    assert_one_line_error(run_cli("hsi", "info", str(tmp_path / "nope.hdr"), check=False),
                          "file not found")
    (tmp_path / "x.bin").write_bytes(b"\1\2\3\4")
    proc = run_cli("hsi", "info", str(tmp_path / "x.bin"), check=False)
    assert proc.returncode == 2
    assert_one_line_error(proc, "cannot tell the format")


@pytest.mark.realdata
def test_info_on_a_real_enmap_tile(real_data_dir) -> None:
    tile = (real_data_dir / "hyperspectral" / "enmap_potsdam_tiles" / "images"
            / "enmap_potsdam_tile_128_0.tif")
    info = json.loads(invoke("hsi", "info", "--json", str(tile)))  # exactly one object
    assert info["sensor"] == "EnMAP" and info["bands"] == 224
    assert info["bad_bands"] == "130-135" and info["nodata_count"] == 6 * 32 * 32
    assert info["wavelength_min_nm"] == pytest.approx(418.24)
    assert info["wavelength_max_nm"] == pytest.approx(2445.53)
    assert info["crs"] == "EPSG:32633" and info["pixel_size"] == [30.0, 30.0]
    assert info["scale_factor"] == pytest.approx(1e-4) and info["units"] == "reflectance"
