"""Scenes, scene samples and spatially disjoint scene evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from cropscope.errors import DataError, EvaluationError
from cropscope.hyperspectral.scene import Scene, create_scene_model, evaluate_scene

TINY_ST = {"patch_size": 3, "spatial_dim": 16, "spatial_depth": 1, "spatial_heads": 2,
           "spectral_grid": 3, "spectral_dim": 16, "spectral_depth": 1, "spectral_heads": 2,
           "out_dim": 16, "epochs": 8, "batch_size": 32, "val_fraction": 0.0}


def make_scene(h: int = 24, w: int = 24, k: int = 10, seed: int = 0) -> Scene:
    """Three classes in vertical stripes with class spectra + noise; one bad band."""
    rng = np.random.default_rng(seed)
    wl = np.linspace(450, 2300, k)
    lab = np.zeros((h, w), np.int32)
    lab[:, : w // 3], lab[:, w // 3 : 2 * w // 3], lab[:, 2 * w // 3 :] = 1, 2, 5
    lab[rng.random((h, w)) < 0.2] = 0
    spectra = {1: np.sin(wl / 300), 2: np.cos(wl / 400), 5: np.linspace(0, 1, k)}
    base = np.stack([spectra.get(int(c), np.zeros(k)) for c in lab.ravel()], axis=1)
    img = (base.reshape(k, h, w) + rng.normal(0, 0.2, (k, h, w))).astype(np.float32)
    bad = np.zeros(k, bool)
    bad[4] = True
    img[4] = np.nan
    da = xr.DataArray(img, dims=("band", "y", "x"),
                      coords={"wavelength": ("band", wl), "fwhm": ("band", np.full(k, 10.0)),
                              "bad_band": ("band", bad)})
    return Scene.from_dataarrays(da, xr.DataArray(lab, dims=("y", "x")),
                                 classes={1: "wheat", 2: "maize"}, name="toy")


def test_scene_from_dataarrays_drops_bad_bands_and_names_classes() -> None:
    sc = make_scene()
    assert sc.image.shape == (9, 24, 24) and len(sc.bands) == 9 and sc.bands[0] == "450.00nm"
    assert sc.classes == ["wheat", "maize", "5"] and sc.class_codes == [1, 2, 5]
    idx = sc.label_index()
    assert set(np.unique(idx)) == {-1, 0, 1, 2}
    ps = sc.samples(np.ones(sc.shape, bool), 3)
    assert ps.n_samples == int((sc.labels > 0).sum()) and ps.patch_size == 3
    r, c = int(ps.meta["row"][5]), int(ps.meta["col"][5])
    np.testing.assert_array_equal(ps.centre[5], sc.image[:, r, c])
    assert ps.classes[ps.labels[5]] == {1: "wheat", 2: "maize", 5: "5"}[int(sc.labels[r, c])]
    with pytest.raises(DataError, match="does not match"):
        Scene(sc.image, sc.labels[:5], sc.bands, sc.classes, sc.class_codes)


def test_feature_models_use_raw_spectra_on_scenes() -> None:
    assert create_scene_model("rf").config["features"] == ["values"]
    assert create_scene_model("rf", features=["values", "stats"]).config["features"] == [
        "values", "stats"]


@pytest.mark.parametrize("name,config", [("rf", {"n_estimators": 30, "n_jobs": 1}),
                                         ("svm", {"patch_size": 3,
                                                  "features": ["snv", "values"]}),
                                         ("spectral-transformer", TINY_ST)])
def test_evaluate_scene_records_the_split_and_scores_the_same_pixels(name, config) -> None:
    sc = make_scene()
    res = evaluate_scene(name, sc, "blocks:6", seed=0, config=config)
    d = res.to_dict()
    assert d["config"]["split"] == "blocks:6" and d["config"]["mode"] == "scene"
    n_test = int((make_scene().labels[np.add.outer(np.arange(24) // 6, np.arange(24) // 6)
                                      % 2 == 1] > 0).sum())
    assert d["config"]["n_test"] == n_test == d["n_samples"]
    margin = config.get("patch_size", 1) // 2
    assert d["config"]["split_detail"]["guard_margin"] == margin
    for key in ("overall_accuracy", "average_accuracy", "macro_f1", "kappa"):
        assert 0 <= d[key] <= 1
    assert d["overall_accuracy"] > 0.7, d["overall_accuracy"]


def test_evaluate_scene_with_tiles_uses_validation_tiles() -> None:
    sc = make_scene()
    regions = np.repeat(np.repeat(np.arange(16).reshape(4, 4), 6, 0), 6, 1)
    sc.regions = regions
    sc.region_roles = {i: ("test" if i in (5, 10) else "validation" if i == 0 else "train")
                       for i in range(16)}
    res = evaluate_scene("spectral-transformer", sc, None, config=TINY_ST)
    assert res.config["split"] == "tiles" and res.config["n_val"] > 0
    assert res.config["n_test"] == int((sc.labels[np.isin(regions, [5, 10])] > 0).sum())


def test_a_split_without_train_pixels_is_an_error() -> None:
    sc = make_scene(h=6, w=6)
    with pytest.raises(EvaluationError, match="no labelled train"):
        evaluate_scene("spectral-transformer", sc, "blocks:1", config={**TINY_ST,
                                                                       "patch_size": 5})


@pytest.mark.realdata
@pytest.mark.slow
def test_real_scenes_load_and_rf_beats_chance(real_data_dir) -> None:
    from cropscope.hyperspectral.datasets import load_scene_dataset

    ip = load_scene_dataset("indian-pines-window", root=real_data_dir)
    assert ip.image.shape == (200, 85, 70) and ip.classes[0] == "corn-notill"
    assert int((ip.labels > 0).sum()) == 4391
    ep = load_scene_dataset("enmap-potsdam", root=real_data_dir)
    assert ep.image.shape[0] == 218 and len(ep.region_names) == 18
    assert sorted(ep.region_roles.values()).count("test") == 2
    assert int((ep.labels > 0).sum()) == 5672  # the 18 tiles' labelled pixels
    assert np.isfinite(ep.image[:, ep.regions >= 0]).all()
    res = evaluate_scene("rf", ep, "tiles", config={"n_estimators": 60, "n_jobs": 2})
    assert res.config["n_train"] == 3806 and res.config["n_test"] == 660
    assert res.metrics["overall_accuracy"] > 0.6
    res = evaluate_scene("rf", ip, "blocks:16", config={"n_estimators": 60, "n_jobs": 2})
    assert res.config["n_test"] == 2141 and res.metrics["overall_accuracy"] > 0.8


def test_svm_on_neighbourhood_spectra_tops_indian_pines(real_data_dir) -> None:
    """Issue 21's Indian Pines goal (OA >= 0.92 on the 16 x 16 block split): an RBF SVM on
    the SNV of each pixel's 3 x 3 mean spectrum. libsvm and these numpy reductions do not
    depend on the thread count."""
    from cropscope.hyperspectral.datasets import load_scene_dataset

    ip = load_scene_dataset("indian-pines-window", root=real_data_dir)
    res = evaluate_scene("svm", ip, "blocks:16", seed=0,
                         config={"patch_size": 3, "features": ["snv", "values"]})
    assert res.config["split_detail"]["guard_margin"] == 1 and res.config["n_test"] == 2141
    assert res.metrics["overall_accuracy"] >= 0.92, res.metrics["overall_accuracy"]


def test_shrunk_lda_tops_enmap_potsdam(real_data_dir) -> None:
    """Shrunk LDA on the raw spectra, the inner-CV choice on the training tiles
    (``benchmarks/select_scene_model.py``), beats the forest on both measures and meets
    issue 21's AA goal (>= 0.70) on the test tiles. Its fit is a covariance and a solve, so
    the result does not depend on the thread count beyond rounding."""
    from cropscope.hyperspectral.datasets import load_scene_dataset

    ep = load_scene_dataset("enmap-potsdam", root=real_data_dir)
    res = evaluate_scene("lda", ep, "tiles", seed=0)
    assert res.config["n_train"] == 3806 and res.config["n_test"] == 660
    assert res.metrics["overall_accuracy"] >= 0.74, res.metrics["overall_accuracy"]
    assert res.metrics["average_accuracy"] >= 0.70, res.metrics["average_accuracy"]
