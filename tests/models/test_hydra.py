"""Hydra: the transform against the algorithm's definition, and ``minirocket`` with
``hydra=true`` (MultiRocket-Hydra)."""

from __future__ import annotations

import numpy as np
import pytest

from cropscope.errors import DataError, ModelError
from cropscope.models import Classifier, create_model
from cropscope.models.hydra import HydraTransform, hydra_dilations, sparse_scale
from tests.conftest import make_toy_set
from tests.models.test_rocket import _series


def _naive(tr: HydraTransform, x: np.ndarray) -> np.ndarray:
    """The transform one series, group and time step at a time, from the definition."""
    half, k = tr.g // 2, tr.k
    rows = []
    for series in x.astype(np.float64):
        feats: list[float] = []
        for i, d in enumerate(tr.dilations.tolist()):
            for rep, values in enumerate((series, np.diff(series, axis=0))):
                n_times, n_bands = values.shape
                # weights [C, 9, group, kernel]
                w = tr.weights[i, rep].reshape(n_bands, 9, half, k).astype(np.float64)
                for group in range(half):
                    soft, hard = np.zeros(k), np.zeros(k)
                    for t in range(n_times):
                        resp = np.zeros(k)
                        for j in range(9):
                            s = t + (j - 4) * d
                            if 0 <= s < n_times:
                                resp += values[s] @ w[:, j, group, :]
                        soft[resp.argmax()] += resp.max()
                        hard[resp.argmin()] += 1
                    feats.extend(soft)
                    feats.extend(hard)
        rows.append(feats)
    return np.asarray(rows)


@pytest.mark.parametrize(("n_times", "expected"), [(6, [1]), (9, [1]), (17, [1, 2]),
                                                   (46, [1, 2, 4]), (200, [1, 2, 4, 8, 16])])
def test_dilations_powers_of_two_up_to_the_series(n_times: int, expected: list[int]) -> None:
    assert hydra_dilations(n_times).tolist() == expected


@pytest.mark.parametrize("n_bands", [1, 3])
def test_transform_matches_the_definition(n_bands: int) -> None:
    x = _series(n=3, n_times=20, n_bands=n_bands, seed=1)
    tr = HydraTransform(k=4, g=6, seed=2).fit(x)
    assert tr.dilations.tolist() == [1, 2]
    f = tr.transform(x, n_jobs=1)
    assert f.shape == (3, 2 * 6 * 2 * 4) == (3, tr.n_features) and f.dtype == np.float32
    np.testing.assert_allclose(f, _naive(tr, x), rtol=1e-4, atol=1e-4)
    # every step has one winner and one loser per group
    hard = f.reshape(3, 2, 2, 3, 2, 4)[..., 1, :]  # [n, dilation, rep, group, kernel]
    np.testing.assert_array_equal(hard.sum(axis=-1)[:, :, 0], 20)
    np.testing.assert_array_equal(hard.sum(axis=-1)[:, :, 1], 19)


def test_kernels_sum_to_zero_over_the_bands_they_read() -> None:
    x = _series(n=4, n_times=30, n_bands=12)
    tr = HydraTransform(k=8, g=16, seed=0).fit(x)
    w = tr.weights.reshape(len(tr.dilations), 2, 12, 9, 8, 8)  # [D, rep, C, 9, group, k]
    np.testing.assert_allclose(w.sum(axis=(2, 3)), 0.0, atol=1e-6)
    np.testing.assert_allclose(np.abs(w).sum(axis=(2, 3)), 1.0, rtol=1e-5)
    reads = (w != 0).any(axis=(3, 5))  # [D, rep, C, group]
    per_group = reads.sum(axis=2)
    assert (per_group >= 1).all() and (per_group <= 9).all() and len(np.unique(per_group)) > 2
    one = HydraTransform(k=8, g=16).fit(x[:, :, :1])
    assert (one.weights != 0).all()


def test_deterministic_and_independent_of_batching_and_threads() -> None:
    x = _series(n=40, n_times=46, n_bands=2)
    a = HydraTransform(seed=5).fit(x)
    fa = a.transform(x, n_jobs=1)
    np.testing.assert_array_equal(fa, HydraTransform(seed=5).fit(x).transform(x, n_jobs=2))
    assert not np.array_equal(a.weights, HydraTransform(seed=6).fit(x).weights)
    parts = np.concatenate([a.transform(x[:7], n_jobs=1), a.transform(x[7:], n_jobs=2)])
    np.testing.assert_array_equal(fa, parts)


def test_sparse_scale_keeps_zero_counts_at_zero() -> None:
    counts = np.array([[0.0, 4.0], [9.0, 0.0], [16.0, 1.0]], dtype=np.float32)
    scaled, mean, scale = sparse_scale(counts.copy())
    root = np.sqrt(counts)
    np.testing.assert_allclose(mean, root.mean(axis=0))
    np.testing.assert_allclose(scaled[counts != 0], ((root - mean) / scale)[counts != 0])
    assert (scaled[counts == 0] == 0).all()
    again = sparse_scale(counts.copy(), mean, scale)[0]
    np.testing.assert_array_equal(again, scaled)


def test_transform_rejects_bad_input() -> None:
    x = _series(n=5, n_times=20)
    with pytest.raises(ModelError, match="hydra_g must be even"):
        HydraTransform(g=5)
    with pytest.raises(ModelError, match="hydra_k"):
        HydraTransform(k=1)
    with pytest.raises(ModelError, match="not fitted"):
        HydraTransform().transform(x)
    tr = HydraTransform(k=2, g=2).fit(x)
    with pytest.raises(DataError, match="gap-free"):
        tr.transform(np.where(np.arange(20)[None, :, None] == 3, np.nan, x))
    with pytest.raises(DataError, match="fitted on series"):
        tr.transform(x[:, :10])
    with pytest.raises(DataError, match="time steps"):
        HydraTransform().fit(x[:, :1])


# ---------------------------------------------------------------------------- classifier
def test_multirocket_hydra_classifies_saves_and_loads(tmp_path) -> None:
    train = make_toy_set(n_per_class=15, n_times=24, seed=1)
    test = make_toy_set(n_per_class=8, n_times=24, seed=2, nan_fraction=0.2)
    model = create_model("minirocket", variant="multirocket", n_features=1344, hydra=True,
                         hydra_k=4, hydra_g=8, seed=3)  # fmt: skip
    proba = model.fit(train).predict_proba(test)
    assert (model.predict(test) == test.labels).mean() >= 0.95
    n_hydra = len(hydra_dilations(24)) * 8 * 2 * 4
    assert model.card is not None and model.card.extra["n_features"] == 1344 + n_hydra
    assert model.coef_.shape == (3, 1344 + n_hydra)
    model.save(tmp_path / "m")
    loaded = Classifier.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.predict_proba(test), proba)
    # the Hydra columns carry weight in the head
    assert np.abs(model.coef_[:, 1344:]).sum() > 0


def test_damaged_hydra_arrays_are_a_model_error(tmp_path) -> None:
    train = make_toy_set(n_per_class=10, n_times=16, seed=1)
    create_model("minirocket", n_features=168, hydra=True, hydra_k=2, hydra_g=4).fit(
        train).save(tmp_path / "m")  # fmt: skip
    path = tmp_path / "m" / "minirocket.npz"
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    for key, value in [("hydra_weights", arrays["hydra_weights"][:, :1]),
                       ("hydra_scale", -arrays["hydra_scale"]),
                       ("hydra_dilations", arrays["hydra_dilations"] * 2)]:  # fmt: skip
        np.savez(path, **{**arrays, key: value})
        with pytest.raises(ModelError):
            Classifier.load(tmp_path / "m")
    np.savez(path, **{k: v for k, v in arrays.items() if k != "hydra_mean"})
    with pytest.raises(ModelError):
        Classifier.load(tmp_path / "m")


def test_hydra_option_checked() -> None:
    with pytest.raises(ModelError, match="hydra"):
        create_model("minirocket", hydra="yes")
    with pytest.raises(ModelError, match="hydra_g"):
        create_model("minirocket", hydra=True, hydra_g=3)
