"""``cropscope datasets seal``: a user's own input folder protected by a checksum list."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.cli.test_cli import assert_one_line_error, run_cli

rasterio = pytest.importorskip("rasterio")


def _write_cube(folder: Path) -> list[Path]:
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    paths = []
    for day in ("2021-05-01", "2021-06-01"):
        path = folder / f"ndvi_{day}.tif"
        with rasterio.open(path, "w", driver="GTiff", width=16, height=16, count=1,
                           dtype="int16", crs=CRS.from_epsg(32633),
                           transform=from_origin(0, 0, 10, 10)) as dst:
            dst.write(rng.integers(0, 9000, (1, 16, 16)).astype("int16"))
        paths.append(path)
    return paths


def test_seal_then_a_modified_input_is_refused(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 20 item 9 for files no shipped checksum list names: sealing the folder makes a
    later same-size modification (bytes flipped, no decoder error) refused by every reader."""
    from cropscope.data.readers.cube import read_cube
    from cropscope.errors import DataError
    from cropscope.remote import write_checksum_list

    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the checksum cache
    cube = tmp_path / "cube"
    paths = _write_cube(cube)
    proc = run_cli("datasets", "seal", str(cube))
    assert proc.returncode == 0 and "sealed 2 files" in proc.stdout
    listing = (cube / "MANIFEST.sha256").read_text().splitlines()
    assert [line.split("  ./")[1] for line in listing] == [p.name for p in paths]
    before = read_cube(cube)
    raw = bytearray(paths[1].read_bytes())
    raw[-20] ^= 0x55  # pixel data, same size, decodes without error
    paths[1].write_bytes(bytes(raw))
    with pytest.raises(DataError, match="damaged or was modified"):
        read_cube(cube)
    # re-sealing over the damaged file is refused too, and the list is left as it was
    with pytest.raises(DataError, match=paths[1].name):
        write_checksum_list(cube)
    assert (cube / "MANIFEST.sha256").read_text().splitlines() == listing
    proc = run_cli("datasets", "seal", str(cube), check=False)
    assert_one_line_error(proc, "damaged or was modified")
    assert before.shape == (2, 1, 16, 16)


def test_seal_bad_folders(tmp_path: Path) -> None:
    proc = run_cli("datasets", "seal", str(tmp_path / "absent"), check=False)
    assert_one_line_error(proc, "not a folder")
    (tmp_path / "empty").mkdir()
    proc = run_cli("datasets", "seal", str(tmp_path / "empty"), check=False)
    assert_one_line_error(proc, "no files to seal")
