"""Map jobs for every kind of model: pixel, patch (halo) and scene (blended overlaps)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cropscope.data.patches import PatchSet, extract_patches
from cropscope.errors import DataError
from cropscope.mapping import classify_cube, run_map_job
from cropscope.mapping.predictors import blend_weights, quantise
from cropscope.mapping.windows import plan_windows
from cropscope.models import create_model, list_models
from cropscope.runs import TimeGrid
from tests.conftest import make_toy_set
from tests.mapping.test_job import N_TIMES, read_outputs, write_scene
from tests.models.test_registry import FAST

rasterio = pytest.importorskip("rasterio")

from rasterio.crs import CRS  # noqa: E402
from rasterio.transform import from_origin  # noqa: E402

from cropscope.data.readers.cube import read_cube  # noqa: E402

H, W, K_BANDS = 30, 40, 6


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_scene(tmp_path_factory.mktemp("scene") / "cube")


def write_spectral_scene(path: Path, seed: int = 0) -> tuple[Path, np.ndarray]:
    """One date, ``K_BANDS`` bands: three classes in blocks with distinct spectra."""
    rng = np.random.default_rng(seed)
    truth = (np.arange(W)[None, :] // 14 + np.arange(H)[:, None] // 20) % 3
    spectra = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [0.6, 0.5, 0.4, 0.3, 0.2, 0.1],
                        [0.3, 0.6, 0.3, 0.6, 0.3, 0.6]], dtype=np.float32)  # fmt: skip
    data = spectra[truth].transpose(2, 0, 1) + rng.normal(0, 0.05, (K_BANDS, H, W))
    data = data.astype(np.float32)
    data[:, 3:6, 30:34] = np.nan
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path, "w", driver="GTiff", width=W, height=H, count=K_BANDS, dtype="float32",
        crs=CRS.from_epsg(32633), transform=from_origin(400000.0, 5000000.0, 30.0, 30.0),
        nodata=float("nan"),
    ) as dst:  # fmt: skip
        dst.write(data)
        for i in range(K_BANDS):
            dst.set_band_description(i + 1, f"b{i}")
    return path, truth


# ---------------------------------------------------------------------------- pixel models
@pytest.mark.parametrize("name", sorted(list_models()))
def test_every_registered_model_maps_tiled_like_untiled(
    name: str, scene: Path, tmp_path: Path
) -> None:
    train = make_toy_set(n_per_class=24, n_times=N_TIMES, bands=("B4", "B8"), seed=1)
    if name == "hierarchical":
        from tests.models.test_hierarchical import taxonomy

        train = train.with_taxonomy(taxonomy())
    model = create_model(name, **FAST[name]).fit(train)
    result = run_map_job(model, scene, tmp_path / "job", tile=16, batch_size=97, progress=False)
    got = read_outputs(result.paths)
    whole = classify_cube(model, read_cube(scene))
    np.testing.assert_array_equal(got["labels"][0], whole.labels)


# ---------------------------------------------------------------------------- patch models
@pytest.mark.parametrize("name,size,config", [
    ("spectral-transformer", 5, {**FAST["spectral-transformer"], "epochs": 5}),
    # a feature model on the SNV of each 3 x 3 neighbourhood's mean spectrum
    ("svm", 3, {"patch_size": 3, "features": ["snv", "values"]}),
])
def test_patch_model_tiles_equal_the_whole_scene(tmp_path: Path, name: str, size: int,
                                                 config: dict[str, Any]) -> None:
    path, truth = write_spectral_scene(tmp_path / "hsi" / "scene_2021-06-01.tif")
    image = read_cube(path).values[0]
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, H, 150), rng.integers(0, W, 150)
    keep = np.isfinite(image[:, rows, cols]).all(axis=0)
    rows, cols = rows[keep], cols[keep]
    patches = PatchSet(values=extract_patches(image, rows, cols, size),
                       bands=[f"b{i}" for i in range(K_BANDS)],
                       labels=truth[rows, cols], classes=["a", "b", "c"])  # fmt: skip
    model = create_model(name, **config).fit(patches)
    assert model.input_kind == "patches"
    tiled = read_outputs(run_map_job(model, path, tmp_path / "t", tile=8, progress=False).paths)
    whole = read_outputs(run_map_job(model, path, tmp_path / "w", tile=64, progress=False).paths)
    for name in ("labels", "probabilities", "uncertainty"):
        np.testing.assert_array_equal(tiled[name], whole[name])
    # and both equal the model on every pixel's patch of the full image
    valid = np.isfinite(image).any(axis=0)
    r, c = np.nonzero(valid)
    proba = model.predict_proba(PatchSet(values=extract_patches(image, r, c, size),
                                         bands=[f"b{i}" for i in range(K_BANDS)]))
    np.testing.assert_array_equal(whole["probabilities"][:, r, c], quantise(proba).T)
    assert (whole["labels"][0][~valid] == 255).all()
    assert (whole["labels"][0][valid] == truth[valid]).mean() > 0.8
    with pytest.raises(DataError, match="halo"):
        run_map_job(model, path, tmp_path / "bad", tile=8, halo=size // 2 - 1, progress=False)


# ---------------------------------------------------------------------------- scene models
class ContextScene:
    """A dense test model (map-model contract) whose output depends on the whole input
    window: class scores from each pixel's deviation from the window's mean, so tiles
    disagree at their edges."""

    def __init__(self) -> None:
        self.name, self.input_kind, self.halo = "context-scene", "scene", 6
        self.classes, self.bands = ["low", "mid", "high"], ["B4", "B8"]
        self.time_grid = TimeGrid(kind="steps", n_times=N_TIMES)

    def predict_window(self, cube: Any, core: Any) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(cube.values, dtype=np.float32)
        seen = np.isfinite(x[:, 1])
        v = np.where(seen, x[:, 1], 0.0).sum(axis=0) / np.maximum(seen.sum(axis=0), 1)
        z = 8.0 * (v - v.mean())
        logits = np.stack([-z, np.zeros_like(z), z])
        e = np.exp(logits - logits.max(axis=0))
        return (e / e.sum(axis=0)).astype(np.float32), np.isfinite(x).any(axis=(0, 1))


def context_model() -> ContextScene:
    return ContextScene()


def column_jumps(proba: np.ndarray) -> np.ndarray:
    """Mean absolute change of the probabilities between neighbouring columns ``[W - 1]``."""
    p = proba.astype(np.float64)
    return np.nanmean(np.abs(np.diff(p, axis=-1)), axis=(0, 1))


def test_blend_weights_sum_to_one_across_overlaps() -> None:
    # (with edge tiles narrower than the halo the sum is not 1; the blend divides by it)
    windows = plan_windows(48, 64, tile=16, halo=5)
    total = np.zeros((48, 64))
    for w in windows:
        weight = blend_weights(w, 5, 48, 64)
        total[w.read_row:w.read_row + w.read_height, w.read_col:w.read_col + w.read_width] += (
            weight)  # fmt: skip
        assert weight.min() > 0 and weight.max() <= 1.0
    assert blend_weights(windows[5], 5, 48, 64)[10:16, 10:16].min() == 1.0  # an inner core
    np.testing.assert_allclose(total, 1.0, atol=1e-12)


def test_scene_model_tiles_blend_without_seams(scene: Path, tmp_path: Path) -> None:
    model = context_model()
    whole = read_outputs(run_map_job(model, scene, tmp_path / "w", tile=128,
                                     progress=False).paths)["probabilities"]  # fmt: skip
    blended = read_outputs(run_map_job(model, scene, tmp_path / "b", tile=16,
                                       progress=False).paths)["probabilities"]  # fmt: skip
    cropped = read_outputs(run_map_job(model, scene, tmp_path / "c", tile=16, halo=0,
                                       progress=False).paths)["probabilities"]  # fmt: skip
    nodata = whole == 255
    assert ((blended == 255) == nodata).all() and ((cropped == 255) == nodata).all()

    def seam_ratio(p: np.ndarray) -> float:
        q = np.where(p == 255, np.nan, p / 254.0)
        jumps = column_jumps(q)
        edges = np.arange(16, W_SCENE, 16) - 1  # the jump from column 16k-1 to 16k
        interior = np.delete(jumps, edges)
        return float(jumps[edges].max() / np.median(interior))

    print(f"seam ratios: whole {seam_ratio(whole):.2f}, blended {seam_ratio(blended):.2f}, "
          f"cropped {seam_ratio(cropped):.2f}")
    assert seam_ratio(whole) < 3.0
    assert seam_ratio(blended) < 3.0, "blended tiles show seams"
    assert seam_ratio(cropped) > 3 * seam_ratio(blended), "the test model must make seams"


W_SCENE = 70


@pytest.mark.slow
def test_scene_job_on_dask_equals_single_process(scene: Path, tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    model = context_model()
    one = read_outputs(run_map_job(model, scene, tmp_path / "one", tile=16,
                                   progress=False).paths)  # fmt: skip
    two = read_outputs(run_map_job(model, scene, tmp_path / "two", tile=16, workers=2,
                                   progress=False).paths)  # fmt: skip
    for name in one:
        np.testing.assert_array_equal(two[name], one[name])


def test_killed_scene_job_resumes_to_the_same_outputs(scene: Path, tmp_path: Path) -> None:
    model = context_model()
    reference = read_outputs(run_map_job(model, scene, tmp_path / "ref", tile=16,
                                         progress=False).paths)  # fmt: skip

    class Killed(Exception):
        pass

    calls = []

    def crash_after_4(window) -> None:
        calls.append(window.index)
        if len(calls) == 4:
            raise Killed

    with pytest.raises(Killed):
        run_map_job(model, scene, tmp_path / "job", tile=16, progress=False,
                    on_window=crash_after_4)  # fmt: skip
    assert not (tmp_path / "job" / "labels.tif").exists()
    resumed = run_map_job(model, scene, tmp_path / "job", tile=16, progress=False)
    assert resumed.n_resumed == 4
    got = read_outputs(resumed.paths)
    for name in reference:
        np.testing.assert_array_equal(got[name], reference[name])
    assert not (tmp_path / "job" / ".map_job_partial").exists()
