from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cropscope.errors import DataError
from cropscope.io import read_json
from cropscope.mapping import classify_cube, plan_windows, run_map_job
from cropscope.models import create_model
from tests.conftest import make_toy_set

rasterio = pytest.importorskip("rasterio")
pytest.importorskip("rioxarray")

from rasterio.crs import CRS  # noqa: E402
from rasterio.transform import from_origin  # noqa: E402

from cropscope.data.readers.cube import CubeSource, read_cube  # noqa: E402

HEIGHT, WIDTH, N_TIMES = 50, 70, 6
UTM = CRS.from_epsg(32633)
TRANSFORM = from_origin(500000.0, 4000000.0, 10.0, 10.0)


def write_scene(folder: Path, seed: int = 0) -> Path:
    """Six 2-band (B4, B8) float GeoTIFFs: three classes in vertical stripes, plus gaps."""
    rng = np.random.default_rng(seed)
    folder.mkdir()
    t = np.arange(N_TIMES)
    truth = np.minimum(np.arange(WIDTH) * 3 // WIDTH, 2)[None].repeat(HEIGHT, axis=0)
    peaks = (truth + 1) * N_TIMES / 4
    dates = np.datetime64("2020-01-05") + (t * 30).astype("timedelta64[D]")
    for k, d in enumerate(dates):
        curve = np.exp(-0.5 * ((k - peaks) / 1.5) ** 2)
        data = np.stack([curve * 0.3, curve * 0.6]) + rng.normal(0, 0.03, (2, HEIGHT, WIDTH))
        data = data.astype(np.float32)
        data[:, 5:9, 10:20] = np.nan  # never observed
        data[:, 30, 40] = np.nan if k % 2 else data[:, 30, 40]  # partly observed
        with rasterio.open(
            folder / f"scene_{d}.tif", "w", driver="GTiff", width=WIDTH, height=HEIGHT,
            count=2, dtype="float32", crs=UTM, transform=TRANSFORM, nodata=float("nan"),
        ) as dst:  # fmt: skip
            dst.write(data)
            dst.set_band_description(1, "B4")
            dst.set_band_description(2, "B8")
    return folder


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_scene(tmp_path_factory.mktemp("scene") / "cube")


@pytest.fixture(scope="module")
def model():
    train = make_toy_set(n_per_class=15, n_times=N_TIMES, bands=("B4", "B8"))
    return create_model("rf", n_estimators=10, n_jobs=1).fit(train)


def read_outputs(paths: dict[str, Path]) -> dict[str, np.ndarray]:
    out = {}
    for name, path in paths.items():
        with rasterio.open(path) as src:
            out[name] = src.read()
    return out


def assert_cog(path: Path) -> None:
    try:
        from rio_cogeo.cogeo import cog_validate
    except ImportError:
        cog_validate = None
    if cog_validate is not None:
        valid, errors, _ = cog_validate(str(path))
        assert valid, errors
    with rasterio.open(path) as src:
        assert src.driver == "GTiff"
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert src.tags(ns="IMAGE_STRUCTURE").get("COMPRESSION") == "DEFLATE"
        assert src.profile.get("tiled")
        assert src.overviews(1)


# ---------------------------------------------------------------------------- windows
def test_plan_windows_cover_the_grid_once() -> None:
    windows = plan_windows(50, 70, tile=32, halo=5)
    assert [w.index for w in windows] == list(range(6))
    hits = np.zeros((50, 70), dtype=int)
    for w in windows:
        hits[w.rows, w.cols] += 1
        assert 0 <= w.read_row <= w.row and 0 <= w.read_col <= w.col
        assert w.read_row + w.read_height <= 50 and w.read_col + w.read_width <= 70
        rows, cols = w.core_in_read
        assert rows.stop - rows.start == w.height and cols.stop - cols.start == w.width
    assert (hits == 1).all()
    first, last = windows[0], windows[-1]
    assert (first.read_row, first.read_col, first.read_height, first.read_width) == (0, 0, 37, 37)
    assert (last.row, last.col, last.height, last.width) == (32, 64, 18, 6)
    assert (last.read_row, last.read_col, last.read_height, last.read_width) == (27, 59, 23, 11)
    assert last.core_in_read == (slice(5, 23), slice(5, 11))
    assert last.write_window.col_off == 64 and last.read_window.width == 11
    assert len(plan_windows(50, 70, tile=512)) == 1
    for bad in ({"tile": 0}, {"halo": -1}):
        with pytest.raises(DataError):
            plan_windows(50, 70, **bad)


def test_cube_source_window_reads_match_read_cube(scene: Path) -> None:
    cube = read_cube(scene)
    source = CubeSource.scan(scene)
    assert source.shape == (HEIGHT, WIDTH) and source.bands == ["B4", "B8"]
    part = source.read(((10, 30), (40, 70)))
    np.testing.assert_array_equal(part.values, cube.values[:, :, 10:30, 40:70])
    np.testing.assert_array_equal(part["x"].values, cube["x"].values[40:70])
    np.testing.assert_array_equal(part["y"].values, cube["y"].values[10:30])
    assert part.attrs["transform"] == (10.0, 0.0, 500400.0, 0.0, -10.0, 3999900.0)
    assert part.rio.crs == UTM
    with source.opened():
        again = source.read(((10, 30), (40, 70)))
    np.testing.assert_array_equal(again.values, part.values)
    with pytest.raises(DataError, match="outside"):
        source.read(((40, 60), (0, 10)))


# ---------------------------------------------------------------------------- the job
def test_tiled_job_equals_untiled_and_classify_cube(scene: Path, model, tmp_path: Path) -> None:
    tiled = run_map_job(model, scene, tmp_path / "tiled", tile=32, batch_size=100,
                        progress=False)  # fmt: skip
    whole = run_map_job(model, scene, tmp_path / "whole", tile=512, progress=False)
    halo = run_map_job(model, scene, tmp_path / "halo", tile=32, halo=4, progress=False)
    assert tiled.n_windows == 6 and whole.n_windows == 1 and tiled.n_resumed == 0
    a, b, c = read_outputs(tiled.paths), read_outputs(whole.paths), read_outputs(halo.paths)
    for name in ("labels", "probabilities", "uncertainty"):
        np.testing.assert_array_equal(a[name], b[name])
        np.testing.assert_array_equal(a[name], c[name])
        assert_cog(tiled.paths[name])

    crop_map = classify_cube(model, read_cube(scene))
    np.testing.assert_array_equal(a["labels"][0], crop_map.labels)
    assert len(np.unique(a["labels"][0])) == 4  # three classes + nodata

    # nodata exactly where no date was observed; the partly observed pixel is mapped
    assert (a["labels"][0, 5:9, 10:20] == 255).all()
    assert (a["probabilities"][:, 5:9, 10:20] == 255).all()
    assert (a["uncertainty"][0, 5:9, 10:20] == 255).all()
    assert ((a["labels"] == 255).sum()) == 40
    assert a["labels"][0, 30, 40] != 255
    valid = a["labels"][0] != 255
    probs = a["probabilities"][:, valid].astype(int)
    assert (probs <= 254).all() and (np.abs(probs.sum(axis=0) - 254) <= 3).all()
    np.testing.assert_array_equal(probs.argmax(axis=0) == a["labels"][0][valid],
                                  np.ones(valid.sum(), bool))  # fmt: skip
    assert (a["uncertainty"][0][valid] <= 254).all()

    with rasterio.open(tiled.paths["labels"]) as src:
        assert src.crs == UTM and src.transform == TRANSFORM
        assert src.nodata == 255 and src.dtypes == ("uint8",)
        assert src.tags()["class_0"] == model.classes[0]
        assert src.colormap(1)[0][:3] != src.colormap(1)[1][:3]
    with rasterio.open(tiled.paths["probabilities"]) as src:
        assert src.count == 3 and list(src.descriptions) == model.classes
        assert src.transform == TRANSFORM and src.nodata == 255
    journal = read_json(tiled.journal)
    assert journal["complete"] and sorted(journal["done"]) == list(range(6))
    assert not (tmp_path / "tiled" / ".map_job_partial").exists()


class Crash(RuntimeError):
    pass


def test_killed_job_resumes_to_the_same_outputs(scene: Path, model, tmp_path: Path) -> None:
    reference = run_map_job(model, scene, tmp_path / "ref", tile=16, progress=False)
    seen: list[int] = []

    def crash_after_3(window) -> None:
        seen.append(window.index)
        if len(seen) == 3:
            raise Crash

    out = tmp_path / "job"
    with pytest.raises(Crash):
        run_map_job(model, scene, out, tile=16, progress=False, on_window=crash_after_3)
    journal = read_json(out / "map_job.json")
    assert journal["done"] == [0, 1, 2] and not journal["complete"]
    assert not (out / "labels.tif").exists()

    resumed = run_map_job(model, scene, out, tile=16, progress=False,
                          on_window=lambda w: seen.append(w.index))  # fmt: skip
    assert resumed.n_resumed == 3 and resumed.n_windows == 20
    assert sorted(seen) == list(range(20))  # every window predicted exactly once
    journal = read_json(resumed.journal)
    assert journal["complete"] and sorted(journal["done"]) == list(range(20))
    assert len(journal["done"]) == len(set(journal["done"]))
    got, want = read_outputs(resumed.paths), read_outputs(reference.paths)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])

    # a finished job returns at once; other settings need resume=False
    again = run_map_job(model, scene, out, tile=16, progress=False,
                        on_window=lambda w: seen.append(w.index))  # fmt: skip
    assert again.n_resumed == 20 and len(seen) == 20
    with pytest.raises(DataError, match="resume=False"):
        run_map_job(model, scene, out, tile=32, progress=False)
    fresh = run_map_job(model, scene, out, tile=32, progress=False, resume=False)
    assert fresh.n_resumed == 0 and read_json(fresh.journal)["job"]["tile"] == 32
    np.testing.assert_array_equal(read_outputs(fresh.paths)["labels"], want["labels"])


def test_job_rejects_a_mismatched_model(scene: Path, tmp_path: Path) -> None:
    other = create_model("rf", n_estimators=5, n_jobs=1).fit(
        make_toy_set(n_per_class=5, n_times=N_TIMES, bands=("B4", "B11"))
    )
    with pytest.raises(DataError, match="bands"):
        run_map_job(other, scene, tmp_path / "x", progress=False)
    longer = create_model("rf", n_estimators=5, n_jobs=1).fit(
        make_toy_set(n_per_class=5, n_times=8)
    )
    with pytest.raises(DataError, match=r"8 dates.*cube has 6 dates"):
        run_map_job(longer, scene, tmp_path / "x", progress=False)


# ---------------------------------------------------------------------------- real data
@pytest.mark.realdata
def test_sinop_map_job(real_data_dir: Path, tmp_path: Path) -> None:
    from cropscope.data.registry import load_dataset

    folder = real_data_dir / "sits_matogrosso" / "modis_sinop_ndvi_cube"
    train = load_dataset("sits-matogrosso-ndvi")
    model = create_model("rf", n_estimators=20, n_jobs=1).fit(train)
    result = run_map_job(model, folder, tmp_path / "sinop", tile=64, progress=False)
    assert result.n_windows == 3 * 4
    first = sorted(folder.glob("*.jp2"))[0]
    with rasterio.open(first) as ref:
        crs, transform, shape = ref.crs, ref.transform, ref.shape
    for name, path in result.paths.items():
        assert_cog(path)
        with rasterio.open(path) as src:
            assert src.crs == crs and src.transform == transform and src.shape == shape, name
    labels = read_outputs(result.paths)["labels"][0]
    crop_map = classify_cube(model, read_cube(folder))
    np.testing.assert_array_equal(labels, crop_map.labels)
    assert len(np.unique(labels[labels != 255])) >= 3


def test_a_window_that_fails_midway_is_never_marked_done(
    scene: Path, model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cropscope.mapping.job as job

    real_write = job._write_window
    calls = {"n": 0}

    def write_then_die(paths, window, arrays) -> None:
        calls["n"] += 1
        if calls["n"] == 3:  # the labels of window 2 reach the disk, then the process dies
            real_write({"labels": paths["labels"]}, window, arrays)
            raise Crash
        real_write(paths, window, arrays)

    monkeypatch.setattr(job, "_write_window", write_then_die)
    out = tmp_path / "job"
    with pytest.raises(Crash):
        run_map_job(model, scene, out, tile=32, progress=False)
    assert read_json(out / "map_job.json")["done"] == [0, 1]
    monkeypatch.setattr(job, "_write_window", real_write)
    resumed = run_map_job(model, scene, out, tile=32, progress=False)
    reference = run_map_job(model, scene, tmp_path / "ref", tile=32, progress=False)
    assert resumed.n_resumed == 2
    got, want = read_outputs(resumed.paths), read_outputs(reference.paths)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])


def test_resume_refuses_changed_inputs_scale_or_model(scene: Path, model, tmp_path: Path
                                                     ) -> None:
    import shutil

    from cropscope.data.readers.open import open_cube_source

    cube = tmp_path / "cube"
    shutil.copytree(scene, cube)
    out = tmp_path / "job"

    def crash(window) -> None:
        raise Crash

    def start(source: object, with_model: object = model) -> None:
        with pytest.raises(Crash):
            run_map_job(with_model, source, out, tile=16, progress=False, on_window=crash,
                        resume=False)

    # an input file rewritten (other values, same name and size)
    start(cube)
    first = sorted(cube.glob("*.tif"))[0]
    with rasterio.open(first, "r+") as dst:
        data = dst.read()
        dst.write(np.flip(data, axis=-1))
    with pytest.raises(DataError, match="other inputs"):
        run_map_job(model, cube, out, tile=16, progress=False)
    # another scale of the same files
    start(open_cube_source(cube, scale=1.0))
    with pytest.raises(DataError, match="other inputs"):
        run_map_job(model, open_cube_source(cube, scale=0.5), out, tile=16, progress=False)
    # another model with the same name and classes
    other = create_model("rf", n_estimators=10, n_jobs=1, seed=7).fit(
        make_toy_set(n_per_class=15, n_times=N_TIMES, bands=("B4", "B8"), seed=3))
    start(cube)
    with pytest.raises(DataError, match="other inputs"):
        run_map_job(other, cube, out, tile=16, progress=False)


def test_two_jobs_on_one_output_are_refused(scene: Path, model, tmp_path: Path) -> None:
    import fcntl

    out = tmp_path / "job"
    out.mkdir()
    with open(out / ".lock", "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # a job is running
        with pytest.raises(DataError, match="another map job"):
            run_map_job(model, scene, out, tile=16, progress=False)
    assert run_map_job(model, scene, out, tile=16, progress=False).n_windows == 20


def test_a_job_refused_before_writing_leaves_no_folder(scene: Path, model, tmp_path) -> None:
    out = tmp_path / "job"
    with pytest.raises(DataError):
        run_map_job(model, scene, out, tile=0, progress=False)
    assert not out.exists()
    existing = tmp_path / "mine"
    existing.mkdir()
    with pytest.raises(DataError):
        run_map_job(model, scene, existing, batch_size=0, progress=False)
    assert existing.is_dir()  # a folder the job did not make is left where it was
