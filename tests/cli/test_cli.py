"""The command line, run as a user runs it (a subprocess of the console entry point)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import make_toy_set


def run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "cropscope.cli.main", *args],
        capture_output=True, text=True, timeout=300,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stderr}")
    return proc


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


def test_version_and_help() -> None:
    from cropscope import __version__

    assert __version__ in run_cli("--version").stdout
    out = run_cli("--help").stdout
    for command in ("datasets", "train", "evaluate", "predict", "demo"):
        assert command in out


def test_evaluate_table_json_is_one_object_on_stdout(toy_table: Path) -> None:
    proc = run_cli("evaluate", "--table", str(toy_table), "--model", "rf", "--cv", "3",
                   "--seed", "0", "--json", "--set", "n_estimators=20")
    result = json.loads(proc.stdout)  # exactly one JSON document, nothing else
    assert {"overall_accuracy", "macro_f1", "kappa", "n_samples"} <= set(result)
    assert result["n_samples"] == 45 and result["overall_accuracy"] > 0.8


def test_evaluate_leave_group_out(toy_table: Path) -> None:
    proc = run_cli("evaluate", "--table", str(toy_table), "--model", "rf", "--cv", "2",
                   "--group", "region", "--json", "--set", "n_estimators=10")
    result = json.loads(proc.stdout)
    assert result["config"]["group"] == "region" and len(result["folds"]) == 2


def test_evaluate_fixed_split(tmp_path) -> None:
    train, test = tmp_path / "train.parquet", tmp_path / "test.parquet"
    make_toy_set(n_per_class=12, seed=1).to_long().drop(columns="valid").to_parquet(train)
    make_toy_set(n_per_class=5, seed=2).to_long().drop(columns="valid").to_parquet(test)
    proc = run_cli("evaluate", "--train-table", str(train), "--test-table", str(test),
                   "--model", "lightgbm", "--json", "--set", "n_estimators=30",
                   "--set", "min_child_samples=3")
    assert json.loads(proc.stdout)["n_samples"] == 15


def test_train_then_predict_table(toy_table: Path, tmp_path) -> None:
    run_dir = tmp_path / "run"
    run_cli("train", "--table", str(toy_table), "--model", "rf", "--out", str(run_dir),
            "--set", "n_estimators=20")
    assert (run_dir / "model.json").is_file() and (run_dir / "metrics.json").is_file()
    out = tmp_path / "pred.csv"
    run_cli("predict", "--model", str(run_dir), "--input", str(toy_table), "--out", str(out))
    pred = pd.read_csv(out)
    truth = pd.read_csv(toy_table).groupby("sample_id")["label"].first()
    assert len(pred) == 45
    assert (pred.set_index("sample_id")["prediction"] == truth).mean() > 0.9
    assert np.allclose(pred.filter(like="p_").sum(axis=1), 1, atol=1e-4)

    # another season (every date 200 days later) is refused, as for a cube; a later year
    # (whole years) is the same season
    df = pd.read_csv(toy_table)
    for days, ok in ((200, False), (365, True)):
        moved = tmp_path / f"moved{days}.csv"
        df.assign(date=(pd.to_datetime(df["date"]) + pd.Timedelta(days=days))
                  .dt.strftime("%Y-%m-%d")).to_csv(moved, index=False)
        proc = run_cli("predict", "--model", str(run_dir), "--input", str(moved), "--out",
                       str(tmp_path / f"pred{days}.csv"), check=False)
        if ok:
            assert proc.returncode == 0, proc.stderr
        else:
            assert_one_line_error(proc, "do not follow the model's season")
            assert not (tmp_path / f"pred{days}.csv").exists()


def test_error_missing_file(tmp_path) -> None:
    proc = run_cli("evaluate", "--table", str(tmp_path / "nope.csv"), "--model", "rf",
                   check=False)
    assert_one_line_error(proc, "nope.csv")


def test_error_missing_label_column(toy_table: Path, tmp_path) -> None:
    df = pd.read_csv(toy_table).drop(columns="label")
    df.to_csv(tmp_path / "nolabel.csv", index=False)
    proc = run_cli("evaluate", "--table", str(tmp_path / "nolabel.csv"), "--model", "rf",
                   check=False)
    assert_one_line_error(proc, "label")


def test_error_class_smaller_than_folds(toy_table: Path, tmp_path) -> None:
    df = pd.read_csv(toy_table)
    keep = df["sample_id"].isin(df.loc[df.label == "class_2", "sample_id"].unique()[:2])
    df = df[(df.label != "class_2") | keep]
    df.to_csv(tmp_path / "small.csv", index=False)
    proc = run_cli("evaluate", "--table", str(tmp_path / "small.csv"), "--model", "rf",
                   "--cv", "5", check=False)
    assert_one_line_error(proc, "class_2")


def test_error_all_nan_series(toy_table: Path, tmp_path) -> None:
    df = pd.read_csv(toy_table)
    df.loc[df.sample_id == 3, ["B4", "B8"]] = np.nan
    df.to_csv(tmp_path / "nan.csv", index=False)
    proc = run_cli("train", "--table", str(tmp_path / "nan.csv"), "--model", "rf",
                   "--out", str(tmp_path / "run"), check=False)
    assert_one_line_error(proc, "3")


def test_error_wrong_band_names(toy_table: Path, tmp_path) -> None:
    run_dir = tmp_path / "run"
    run_cli("train", "--table", str(toy_table), "--model", "rf", "--out", str(run_dir),
            "--set", "n_estimators=5", "--holdout", "0")
    df = pd.read_csv(toy_table).rename(columns={"B8": "nir"})
    df.to_csv(tmp_path / "renamed.csv", index=False)
    proc = run_cli("predict", "--model", str(run_dir), "--input", str(tmp_path / "renamed.csv"),
                   "--out", str(tmp_path / "p.csv"), check=False)
    assert_one_line_error(proc, "B8")


def test_error_bad_model_option(toy_table: Path) -> None:
    proc = run_cli("evaluate", "--table", str(toy_table), "--model", "rf",
                   "--set", "trees=3", check=False)
    assert_one_line_error(proc, "trees")


@pytest.mark.realdata
def test_datasets_list_shows_local_data(real_data_dir) -> None:
    out = run_cli("datasets", "list").stdout
    for name in ("sits-matogrosso", "sits-matogrosso-ndvi", "tempcnn-formosat2", "ucr-crop"):
        assert name in out
    assert "local" in out


@pytest.mark.slow
def test_predict_cube_delivers_cogs_and_resumes(tmp_path) -> None:
    pytest.importorskip("rasterio")
    pytest.importorskip("rioxarray")
    from cropscope.mapping import run_map_job
    from cropscope.training.rundir import train_run
    from tests.mapping.test_job import N_TIMES, Crash, assert_cog, read_outputs, write_scene

    scene = write_scene(tmp_path / "cube")
    train = make_toy_set(n_per_class=15, n_times=N_TIMES, bands=("B4", "B8"))
    run = train_run(train, "rf", tmp_path / "run", config={"n_estimators": 10, "n_jobs": 1},
                    holdout=0.0)  # fmt: skip
    out = tmp_path / "maps" / "map.tif"
    work = out.with_name(".map.tif.mapjob")  # where the CLI keeps its job until delivery

    def crash(window) -> None:
        if window.index == 2:
            raise Crash

    with pytest.raises(Crash):  # an interrupted earlier run of the same command
        run_map_job(run.model, scene, work, tile=32, progress=False, on_window=crash)
    proc = run_cli("predict", "--model", str(run.run_dir), "--input", str(scene),
                   "--out", str(out), "--tile", "32")  # fmt: skip
    assert "resumed" in proc.stderr and "3 of 6 windows" in proc.stderr
    assert "mapping" in proc.stderr and proc.stdout == ""
    names = ["map.png", "map.qml", "map.tif", "map.tif.aux.xml", "map_areas.json",
             "map_probabilities.tif", "map_uncertainty.tif"]  # fmt: skip
    assert sorted(p.name for p in out.parent.iterdir()) == names
    paths = {"labels": out, "probabilities": out.with_name("map_probabilities.tif"),
             "uncertainty": out.with_name("map_uncertainty.tif")}  # fmt: skip
    for path in paths.values():
        assert_cog(path)
    want = read_outputs(run_map_job(run.model, scene, tmp_path / "ref", tile=32,
                                    progress=False).paths)  # fmt: skip
    got = read_outputs(paths)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])
    assert out.with_name("map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    areas = json.loads(out.with_name("map_areas.json").read_text())
    assert list(areas) == list(run.model.classes)
    assert abs(sum(a["share"] for a in areas.values()) - 1) < 1e-9
    assert "no pixel was classified" not in proc.stderr

    # a cube without a single valid pixel: the (empty) map comes with a warning
    import rasterio

    blank = tmp_path / "blank"
    blank.mkdir()
    for f in sorted(scene.glob("*.tif")):
        with rasterio.open(f) as src:
            profile, names = src.profile, src.descriptions
        with rasterio.open(blank / f.name, "w", **profile) as dst:
            dst.write(np.full((2, profile["height"], profile["width"]), np.nan, np.float32))
            for i, name in enumerate(names, start=1):
                dst.set_band_description(i, name)
    proc = run_cli("predict", "--model", str(run.run_dir), "--input", str(blank),
                   "--out", str(tmp_path / "blank_map" / "map.tif"), "--tile", "32")
    assert "warning: no pixel was classified" in proc.stderr

    # a parcel file that cannot be read is refused before the map is made
    bad = tmp_path / "parcels.csv"
    bad.write_text("id\n1\n")
    proc = run_cli("predict", "--model", str(run.run_dir), "--input", str(scene),
                   "--out", str(tmp_path / "pmap" / "map.tif"), "--parcels", str(bad),
                   check=False)
    assert_one_line_error(proc, "parcel file")
    assert not (tmp_path / "pmap" / "map.tif").exists()

    # --no-resume starts over; --workers is for cubes only
    proc = run_cli("predict", "--model", str(run.run_dir), "--input", str(scene),
                   "--out", str(out), "--tile", "64", "--no-resume")  # fmt: skip
    assert "resumed" not in proc.stderr
    np.testing.assert_array_equal(read_outputs(paths)["labels"], want["labels"])
    table = tmp_path / "t.csv"
    train.to_long().drop(columns="valid").to_csv(table, index=False)
    proc = run_cli("predict", "--model", str(run.run_dir), "--input", str(table),
                   "--out", str(tmp_path / "p.csv"), "--workers", "2", check=False)  # fmt: skip
    assert_one_line_error(proc, "cubes")


def test_train_refuses_a_checkpoint_of_other_data_and_no_resume_starts_over(
        toy_table: Path, tmp_path: Path) -> None:
    from cropscope.runs import checkpoint_folder

    run_dir = tmp_path / "run"
    small = {"epochs": 2, "batch_size": 16, "hidden": 8, "filters": 4, "device": "cpu"}
    folder = checkpoint_folder(run_dir)
    model_args = ["--model", "tempcnn", "--out", str(run_dir), "--holdout", "0",
                  *[a for k, v in small.items() for a in ("--set", f"{k}={v}")],
                  "--threads", "1"]
    proc = run_cli("train", "--table", str(toy_table), *model_args)
    assert proc.returncode == 0 and not folder.exists()
    # interrupted trainings leave their state; one of other data is refused, not mixed
    _leave_checkpoint(run_dir, small)
    proc = run_cli("train", "--table", str(toy_table), *model_args, check=False)
    assert_one_line_error(proc, "cannot resume", "--no-resume")
    assert proc.returncode == 2
    proc = run_cli("train", "--table", str(toy_table), *model_args, "--no-resume")
    assert proc.returncode == 0 and not folder.exists()


def _leave_checkpoint(run_dir: Path, config: dict) -> None:
    """The checkpoint folder an interrupted training of other samples leaves at ``run_dir``."""
    from cropscope.models import create_model
    from cropscope.runs import checkpoint_folder

    model = create_model("tempcnn", **config)
    model.fit(make_toy_set(n_per_class=15, seed=9), checkpoint_dir=checkpoint_folder(run_dir))


def test_train_refuses_to_replace_a_folder_of_other_files(tmp_path, toy_table) -> None:
    """--out at the folder holding the input table: refused before training, nothing lost."""
    proc = run_cli("--threads", "1", "train", "--table", str(toy_table), "--model", "logreg",
                   "--out", str(toy_table.parent), check=False)
    assert_one_line_error(proc, "not a cropscope run")
    assert toy_table.is_file()


@pytest.mark.parametrize("content", [b"[1, 2]", b'"values"', b"\xff\xfe{"])
def test_config_file_that_is_not_an_object_is_one_error_line(tmp_path, toy_table,
                                                             content: bytes) -> None:
    cfg = tmp_path / "cfg.json"
    cfg.write_bytes(content)
    proc = run_cli("--threads", "1", "train", "--table", str(toy_table), "--model", "logreg",
                   "--config", str(cfg), "--out", str(tmp_path / "run"), check=False)
    assert_one_line_error(proc, "config file")
    assert not (tmp_path / "run").exists()


def test_quality_outputs_must_name_the_format_written(toy_table: Path, tmp_path) -> None:
    proc = run_cli("quality", "noisy", "--table", str(toy_table), "--model", "lda",
                   "--out", str(tmp_path / "q.xlsx"), check=False)
    assert_one_line_error(proc, "writes .csv")
    proc = run_cli("quality", "profiles", "--table", str(toy_table),
                   "--out", str(tmp_path / "p.csv"), check=False)
    assert_one_line_error(proc, "writes .png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["samples.csv"]
