"""``cropscope samples extract``: the table it writes trains and evaluates with polygon-
grouped folds through ``--table``; patches read back as an H5 patch dataset; bad input is
one ``error:`` line with exit code 2 and leaves nothing at ``--out``."""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

import numpy as np
import pytest

gpd = pytest.importorskip("geopandas")
pytest.importorskip("rasterio")
pytest.importorskip("pyarrow")

from shapely.geometry import box  # noqa: E402

from cropscope.cli.main import main  # noqa: E402
from cropscope.data.readers.table import read_table  # noqa: E402
from tests.data.test_extract import RES, UTM, X0, Y0, Scene  # noqa: E402


def run(argv: list[str]) -> tuple[object, str, str]:
    """``cropscope ARGV`` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code: object = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([*argv, "--threads", "1"])
        except SystemExit as exc:
            code = exc.code
        finally:
            logging.getLogger("cropscope").handlers.clear()
    return code, out.getvalue(), err.getvalue()


def one_error(argv: list[str]) -> str:
    code, _, err = run(argv)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def fields(n_rows: int = 3, n_cols: int = 4) -> gpd.GeoDataFrame:
    """A grid of 4 x 4-pixel fields, two classes alternating; edges between pixel centres."""
    geoms, crops = [], []
    for i in range(n_rows):
        for j in range(n_cols):
            x, y = X0 + 3 + j * 70, Y0 - 3 - i * 70
            geoms.append(box(x, y - 40, x + 40, y))
            crops.append("wheat" if (i + j) % 2 else "maize")
    return gpd.GeoDataFrame({"crop": crops, "field": [f"f{k}" for k in range(len(crops))]},
                            geometry=geoms, crs=UTM)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("samples_cli")
    scene = Scene(base / "cube", seed=1)
    labels = base / "fields.gpkg"
    fields().to_file(labels)
    return {"base": base, "cube": scene.folder, "labels": labels}


def extract_args(inputs: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return ["samples", "extract", "--cube", str(inputs["cube"]), "--labels",
            str(inputs["labels"]), "--label-column", "crop", "--out", str(out),
            "--mask-band", "CLM", "--mask-invalid", "1", *extra]


def test_extract_then_grouped_evaluation_and_training(inputs: dict[str, Path],
                                                      tmp_path: Path) -> None:
    out = tmp_path / "samples.parquet"
    code, stdout, err = run(extract_args(inputs, out, "--id-column", "field"))
    assert code == 0, err
    assert stdout == ""  # results are files; the summary goes to stderr
    assert "samples (pixels) from 12 of 12 polygons" in err and "polygon_id" in err
    ts = read_table(out)
    assert set(ts.meta["polygon_id"]) == {f"f{k}" for k in range(12)}
    assert ts.meta.groupby("polygon_id").size().max() == 16  # 4 x 4 pixel centres
    code, stdout, err = run(["evaluate", "--table", str(out), "--model", "rf", "--cv", "3",
                             "--group", "polygon_id", "--set", "n_estimators=5",
                             "--set", "n_jobs=1", "--json"])
    assert code == 0, err
    import json

    result = json.loads(stdout)
    assert "polygon_id" in json.dumps(result)  # leave-polygon-out folds were used
    code, _, err = run(["train", "--table", str(out), "--model", "rf", "--holdout", "0",
                        "--set", "n_estimators=5", "--out", str(tmp_path / "run")])
    assert code == 0, err
    # mean mode: one sample per polygon, ids are the polygon ids
    code, _, err = run(extract_args(inputs, tmp_path / "mean.csv", "--id-column", "field",
                                    "--mode", "mean"))
    assert code == 0, err
    mean = read_table(tmp_path / "mean.csv", bands=["B04", "B08"])
    assert sorted(mean.ids) == sorted(f"f{k}" for k in range(12))


def test_patch_mode_writes_an_h5_patch_folder(inputs: dict[str, Path],
                                              tmp_path: Path) -> None:
    from cropscope.data.readers.h5patches import H5PatchDataset

    out = tmp_path / "patches"
    code, _, err = run(extract_args(inputs, out, "--patch-size", "8"))
    assert code == 0, err
    ds = H5PatchDataset(out)
    sources, label = ds.read_raw(0)
    assert sources["S2"].shape[1:] == (2, 8, 8) and label.shape == (8, 8)
    assert set(np.unique(label)) <= {-1, 0, 1}
    assert "--patch-size writes" in one_error(
        extract_args(inputs, tmp_path / "p2", "--patch-size", "8", "--max-pixels", "3"))


@pytest.mark.filterwarnings("ignore:'crs' was not provided")
def test_bad_input_is_one_error_line_and_leaves_nothing(inputs: dict[str, Path],
                                                        tmp_path: Path) -> None:
    out = tmp_path / "samples.parquet"
    # labels in metres without CRS information (a shapefile without .prj)
    bare = tmp_path / "bare.shp"
    fields().set_crs(None, allow_override=True).to_file(bare)
    args = extract_args(inputs, out)
    args[args.index("--labels") + 1] = str(bare)
    assert "no CRS information; pass --labels-crs" in one_error(args)
    assert not out.exists()
    # the same file with --labels-crs works
    code, _, err = run([*args, "--labels-crs", "EPSG:32633"])
    assert code == 0, err
    out.unlink()
    # polygons outside the cube
    far = fields()
    far.geometry = far.geometry.translate(xoff=50_000)
    far_path = tmp_path / "far.gpkg"
    far.to_file(far_path)
    args[args.index("--labels") + 1] = str(far_path)
    assert "none of the 12 polygons lie on the cube" in one_error(args)
    some = gpd.pd.concat([fields(), far.iloc[:2]])
    some["field"] = [f"g{k}" for k in range(len(some))]
    some_path = tmp_path / "some.gpkg"
    some.to_file(some_path)
    args[args.index("--labels") + 1] = str(some_path)
    assert "2 of 14 polygons lie outside the cube" in one_error(args)
    assert not out.exists()
    code, _, err = run([*args, "--skip-outside"])
    assert code == 0 and "2 of 14 polygons lie outside the cube" in err, err
    out.unlink()
    # options refused before any work
    assert "--mask-invalid needs --mask-band" in one_error(
        ["samples", "extract", "--cube", str(inputs["cube"]), "--labels",
         str(inputs["labels"]), "--label-column", "crop", "--out", str(out),
         "--mask-invalid", "1"])
    assert ".parquet" in one_error(extract_args(inputs, tmp_path / "samples.tif"))
    assert "no label column 'kind'" in one_error(
        [a if a != "crop" else "kind" for a in extract_args(inputs, out)])
    assert "buffer must be a distance" in one_error(extract_args(inputs, out, "--buffer", "-3"))
    assert list(tmp_path.glob("samples*")) == []


def test_a_failure_half_way_leaves_nothing(inputs: dict[str, Path], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from cropscope.data.readers.cube import CubeSource
    from cropscope.errors import DataError

    calls = {"n": 0}
    real_read = CubeSource.read

    def failing(self: CubeSource, window: object = None) -> object:
        calls["n"] += 1
        if calls["n"] == 3:
            raise DataError("read failed half-way")
        return real_read(self, window)

    monkeypatch.setattr(CubeSource, "read", failing)
    out = tmp_path / "samples.parquet"
    assert "half-way" in one_error(extract_args(inputs, out, "--window", "5"))
    assert calls["n"] == 3
    assert list(tmp_path.iterdir()) == []  # neither the table nor a temporary file


def test_points_from_csv(inputs: dict[str, Path], tmp_path: Path) -> None:
    import pandas as pd
    from pyproj import Transformer

    x = X0 + RES * np.array([0.5, 10.2, 20.7])
    y = Y0 - RES * np.array([0.5, 3.3, 9.9])
    lon, lat = Transformer.from_crs(32633, 4326, always_xy=True).transform(x, y)
    path = tmp_path / "points.csv"
    pd.DataFrame({"longitude": lon, "latitude": lat, "crop": ["a", "b", "a"]}).to_csv(
        path, index=False)
    out = tmp_path / "points.parquet"
    code, _, err = run(["samples", "extract", "--cube", str(inputs["cube"]), "--labels",
                        str(path), "--label-column", "crop", "--out", str(out),
                        "--keep-empty"])
    assert code == 0, err
    ts = read_table(out)
    assert ts.meta["row"].tolist() == [0, 3, 9] and ts.meta["col"].tolist() == [0, 10, 20]
    assert "point_id" in ts.meta.columns
