"""CropGlobe packaged .npz files: layout, reading, and the paper's protocol on them."""

from __future__ import annotations

import numpy as np
import pytest

from cropscope.data.readers.cropglobe import (
    CROPGLOBE_BANDS,
    cropglobe_path,
    read_cropglobe,
    read_cropglobe_file,
    write_cropglobe_file,
)
from cropscope.errors import DataError
from cropscope.transfer import CROPGLOBE_CLASSES, CROPGLOBE_TARGET_CLASSES, evaluate_transfer


def _median(codes: np.ndarray, rng: np.random.Generator, n_times: int = 43) -> np.ndarray:
    """Separable fake medians: each class peaks at its own step."""
    t = np.arange(n_times)
    peaks = (codes[:, None] + 1) * n_times / 8
    curve = np.exp(-0.5 * ((t - peaks) / 2.0) ** 2)  # [N, T]
    fea = curve[:, None, :] * np.linspace(0.5, 1.5, 10)[None, :, None]
    return fea + rng.normal(0, 0.02, fea.shape)


def test_file_names_follow_the_reference(tmp_path) -> None:
    assert cropglobe_path(tmp_path, "median", "fra").name == "median_S2_FRA_month5-11_day5.npz"
    assert cropglobe_path(tmp_path, "median_full", "USA").name == \
        "median_S2_USA_month1-12_day5.npz"
    assert cropglobe_path(tmp_path, "harmonic", "AUS").name == "harmonic_AUS_month5-11.npz"
    assert cropglobe_path(tmp_path, "presto_maynov", "CHN").name == \
        "presto_embedding_S2_CHN_MayNov.npz"
    assert cropglobe_path(tmp_path, "alphaearth", "ARG").name == "alphaearth_embedding_ARG.npz"
    with pytest.raises(DataError, match="unknown CropGlobe feature kind"):
        cropglobe_path(tmp_path, "emit", "FRA")


def test_read_median_and_vector_files(tmp_path) -> None:
    rng = np.random.default_rng(0)
    lbl = np.array([0, 1, 6, 6, 3])
    write_cropglobe_file(tmp_path, "median", "FRA", _median(lbl, rng), lbl)
    ts = read_cropglobe_file(cropglobe_path(tmp_path, "median", "FRA"))
    assert ts.values.shape == (5, 43, 10) and ts.bands == list(CROPGLOBE_BANDS)
    assert ts.classes == list(CROPGLOBE_CLASSES)
    assert ts.label_names.tolist() == ["corn", "soybeans", "other", "other", "wheat"]
    assert int(ts.day_of_year[0]) == 121 and int(ts.day_of_year[-1]) == 331  # May-Nov
    assert set(ts.meta["country"]) == {"FRA"}

    full = _median(lbl, rng, 73)
    full = np.concatenate([full, rng.normal(size=(5, 2, 73))], axis=1)  # + S1 VV, VH
    write_cropglobe_file(tmp_path, "median_full", "FRA", full, lbl)
    ts = read_cropglobe(tmp_path, ["fra"], "median_full")["FRA"]
    assert ts.values.shape == (5, 73, 12) and ts.bands[-2:] == ["VV", "VH"]
    assert int(ts.day_of_year[0]) == 1

    write_cropglobe_file(tmp_path, "harmonic", "FRA", rng.normal(size=(5, 70)), lbl)
    ts = read_cropglobe_file(cropglobe_path(tmp_path, "harmonic", "FRA"))
    assert ts.values.shape == (5, 1, 70) and ts.dates is None


def test_bad_files_are_clear_errors(tmp_path) -> None:
    bad = tmp_path / "something.npz"
    np.savez(bad, fea=np.zeros((2, 3)), lbl=np.zeros(2))
    with pytest.raises(DataError, match="not a CropGlobe file name"):
        read_cropglobe_file(bad)
    path = cropglobe_path(tmp_path, "harmonic", "BEL")
    np.savez(path, x=np.zeros(2))
    with pytest.raises(DataError, match="lacks the arrays"):
        read_cropglobe_file(path)
    write_cropglobe_file(tmp_path, "harmonic", "BEL", np.zeros((2, 3)), np.array([0, 9]))
    with pytest.raises(DataError, match="label codes"):
        read_cropglobe_file(path)
    with pytest.raises(DataError, match="not found"):
        read_cropglobe(tmp_path, "NLD")


def test_paper_protocol_on_generated_files(tmp_path) -> None:
    """USA -> AUS with the AUS remap (corn/soybeans/wheat predictions count as other)."""
    rng = np.random.default_rng(1)
    usa = np.repeat([0, 1, 3, 4, 5, 6], 25)
    aus = np.repeat([4, 5, 6, 2], [20, 20, 20, 5])  # rice: absent from USA, dropped
    write_cropglobe_file(tmp_path, "median", "USA", _median(usa, rng), usa)
    fea = _median(aus, rng)
    fea = np.concatenate([fea, fea[:3]])  # three duplicate rows
    write_cropglobe_file(tmp_path, "median", "AUS", fea, np.concatenate([aus, aus[:3]]))
    sets = read_cropglobe(tmp_path, ["USA", "AUS"])
    res = evaluate_transfer("rf", sets["USA"], {"AUS": sets["AUS"]}, seeds=(0, 1),
                            config={"n_estimators": 20, "n_jobs": 1, "features": ["values"]},
                            target_classes=CROPGLOBE_TARGET_CLASSES, dedupe=True)
    run = res.runs[0]
    assert run["dropped"] == {"rice": 5} and run["n_target"] == 60
    assert run["macro_f1_classes"] == ["sugarcane", "cotton", "other"]
    assert res.summary["AUS"]["overall_accuracy"]["mean"] > 0.9
