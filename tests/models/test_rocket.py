"""MiniRocket / MultiRocket: the transform against the algorithm's definition, and the
registered ``minirocket`` classifier."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cropscope.data import TimeSeriesSet
from cropscope.errors import DataError, ModelError
from cropscope.features.gapfill import interpolate_gaps
from cropscope.models import Classifier, create_model
from cropscope.models.rocket import KERNEL_INDICES, POOLS, RocketTransform, _dilations
from tests.conftest import make_toy_set


def _series(n: int = 12, n_times: int = 30, n_bands: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 2 * np.pi, n_times)
    phase = rng.uniform(0, 2 * np.pi, (n, 1, n_bands))
    x = np.sin(t[None, :, None] + phase) + rng.normal(0, 0.3, (n, n_times, n_bands))
    return x.astype(np.float32)


def _naive_conv(series: np.ndarray, k: int, d: int) -> np.ndarray:
    """Zero-padded convolution of one series ``[T]`` with kernel ``k`` at dilation ``d``,
    from the definition: weights -1, and 2 at the kernel's three positions."""
    w = -np.ones(9)
    w[KERNEL_INDICES[k]] = 2.0
    n_times = len(series)
    out = np.zeros(n_times)
    for t in range(n_times):
        for j in range(9):
            s = t + (j - 4) * d
            if 0 <= s < n_times:
                out[t] += w[j] * series[s]
    return out


def _naive_pools(z: np.ndarray) -> dict[str, float]:
    pos = z > 0
    length = len(z)
    longest = run = 0
    for p in pos:
        run = run + 1 if p else 0
        longest = max(longest, run)
    return {
        "ppv": pos.mean(),
        "mpv": z[pos].mean() if pos.any() else 0.0,
        "mipv": np.flatnonzero(pos).mean() / length if pos.any() else -1.0,
        "lspv": longest / length,
    }


def _naive_features(tr: RocketTransform, x: np.ndarray) -> np.ndarray:
    """The whole transform, one series, kernel and bias at a time."""
    rows = []
    for series in x:
        feats: list[float] = []
        reps = [series] if tr.n_reps == 1 else [series, np.diff(series, axis=0)]
        for rep, values in zip(tr.reps, reps, strict=True):
            for i, d in enumerate(rep.dilations.tolist()):
                padded = rep.padded(i)
                biases = rep.dilation_biases(i)
                for k in range(84):
                    combined = values[:, rep.channels[i, k]].astype(np.float64).sum(axis=1)
                    conv = _naive_conv(combined, k, d)
                    if not padded[k]:
                        conv = conv[4 * d : rep.n_times - 4 * d]
                    for b in biases[k]:
                        pooled = _naive_pools(conv - b)
                        feats.extend(pooled[p] for p in tr.pools)
        rows.append(feats)
    return np.asarray(rows, dtype=np.float64)


# ---------------------------------------------------------------------------- kernels
def test_kernels_are_the_84_minirocket_kernels() -> None:
    assert KERNEL_INDICES.shape == (84, 3)
    assert len({tuple(k) for k in KERNEL_INDICES}) == 84 == math.comb(9, 3)
    for k in KERNEL_INDICES:
        w = -np.ones(9)
        w[k] = 2
        assert w.sum() == 0 and sorted(set(w)) == [-1, 2]


@pytest.mark.parametrize("n_times", [9, 12, 30, 46, 200])
def test_dilations_spaced_exponentially_up_to_the_series(n_times: int) -> None:
    dil, per = _dilations(n_times, 119, 32)
    assert dil[0] == 1 and (np.diff(dil) > 0).all()
    assert dil.max() <= max(1, (n_times - 1) / 8)
    assert per.sum() == 119 and (per >= 1).all()
    if n_times == 200:  # exponential: ratios, not steps, are about constant
        assert dil.max() == 24 and len(dil) > 8


def test_feature_count_and_pool_ranges() -> None:
    x = _series(n=10, n_times=40, n_bands=2)
    mini = RocketTransform("minirocket", n_features=1000, seed=0).fit(x)
    assert mini.n_features == 84 * (1000 // 84)
    f = mini.transform(x, n_jobs=1)
    assert f.shape == (10, mini.n_features) and f.dtype == np.float32
    assert ((f >= 0) & (f <= 1)).all()
    # biases are quantiles of training outputs: PPV on the training set is mixed
    assert 0.3 < f.mean() < 0.7

    multi = RocketTransform("multirocket", n_features=2000, seed=0).fit(x)
    per_rep = 2000 // (4 * 2) // 84 * 84
    assert multi.n_features == 2 * 4 * per_rep
    assert [r.n_times for r in multi.reps] == [40, 39]  # the series and its differences
    g = multi.transform(x, n_jobs=1).reshape(10, -1, 4)
    ppv, mpv, mipv, lspv = (g[:, :, i] for i in range(4))
    assert ((ppv >= 0) & (ppv <= 1)).all() and ((lspv >= 0) & (lspv <= ppv + 1e-6)).all()
    assert (mpv >= 0).all()
    assert ((mipv == -1) == (ppv == 0)).all()
    assert ((mipv[ppv > 0] >= 0) & (mipv[ppv > 0] < 1)).all()


@pytest.mark.parametrize("variant", ["minirocket", "multirocket"])
def test_transform_matches_the_definition(variant: str) -> None:
    x = _series(n=4, n_times=26, n_bands=3, seed=1)
    tr = RocketTransform(variant, n_features=84 * len(POOLS[variant]) * 2 * 3, seed=3).fit(x)
    assert any(len(r.dilations) > 1 for r in tr.reps)
    assert any(not r.padded(0).all() for r in tr.reps)  # both padded and unpadded kernels
    np.testing.assert_allclose(tr.transform(x, n_jobs=1), _naive_features(tr, x), atol=2e-4)


def test_biases_are_quantiles_of_training_outputs() -> None:
    x = _series(n=6, n_times=30)
    tr = RocketTransform("minirocket", n_features=84 * 6, seed=0).fit(x)
    rep = tr.reps[0]
    for i, d in enumerate(rep.dilations.tolist()):
        biases = rep.dilation_biases(i)
        for k in range(0, 84, 7):
            outputs = np.stack([_naive_conv(s[:, 0], k, d) for s in x])
            assert (biases[k] >= outputs.min(axis=1).min() - 1e-4).all()
            assert (biases[k] <= outputs.max(axis=1).max() + 1e-4).all()
            # at least one training series spans them all (the series they came from)
            spans = [
                (biases[k] >= o.min() - 1e-4).all() and (biases[k] <= o.max() + 1e-4).all()
                for o in outputs
            ]
            assert any(spans)


def test_band_subsets() -> None:
    x = _series(n=8, n_times=30, n_bands=12)
    rep = RocketTransform("minirocket", n_features=84 * 4, seed=0).fit(x).reps[0]
    used = rep.channels.sum(axis=2)
    assert (used >= 1).all() and (used <= 9).all() and len(np.unique(used)) > 2
    one = RocketTransform("minirocket", n_features=84 * 4).fit(x[:, :, :1]).reps[0]
    assert one.channels.all()


def test_deterministic_given_seed_and_independent_of_batching_and_threads() -> None:
    x = _series(n=30, n_times=46, n_bands=2)
    a = RocketTransform("multirocket", n_features=2000, seed=5).fit(x)
    b = RocketTransform("multirocket", n_features=2000, seed=5).fit(x)
    c = RocketTransform("multirocket", n_features=2000, seed=6).fit(x)
    fa = a.transform(x, n_jobs=1)
    np.testing.assert_array_equal(fa, b.transform(x, n_jobs=2))
    assert not np.array_equal(a.reps[0].biases, c.reps[0].biases)
    parts = np.concatenate([a.transform(x[:7], n_jobs=1), a.transform(x[7:], n_jobs=2)])
    np.testing.assert_array_equal(fa, parts)


def test_transform_rejects_bad_input() -> None:
    x = _series(n=5, n_times=20)
    with pytest.raises(ModelError, match="variant"):
        RocketTransform("hydra")
    with pytest.raises(ModelError, match="n_features"):
        RocketTransform("multirocket", n_features=600)
    with pytest.raises(ModelError, match="not fitted"):
        RocketTransform().transform(x)
    tr = RocketTransform(n_features=84).fit(x)
    with pytest.raises(DataError, match="gap-free"):
        tr.transform(np.where(np.arange(20)[None, :, None] == 3, np.nan, x))
    with pytest.raises(DataError, match="fitted on series"):
        tr.transform(x[:, :10])
    with pytest.raises(DataError, match=r"\[N, T, C\]"):
        tr.transform(x[:, :, 0])
    with pytest.raises(DataError, match="time step"):
        RocketTransform("multirocket", n_features=672).fit(x[:, :1])


def test_short_series_use_padding_only() -> None:
    x = _series(n=5, n_times=6)
    tr = RocketTransform("minirocket", n_features=168).fit(x)
    assert tr.reps[0].dilations.tolist() == [1] and tr.reps[0].padded(0).all()
    assert np.isfinite(tr.transform(x)).all()


# ---------------------------------------------------------------------------- classifier
@pytest.mark.parametrize(
    ("variant", "head"),
    [("minirocket", "ridge"), ("multirocket", "ridge"), ("minirocket", "logistic")],
)
def test_classifier_separates_easy_classes(variant: str, head: str) -> None:
    train = make_toy_set(n_per_class=20, n_times=24, seed=1)
    test = make_toy_set(n_per_class=15, n_times=24, seed=2)
    model = create_model("minirocket", variant=variant, head=head, n_features=1344)
    model.fit(train)
    proba = model.predict_proba(test)
    assert proba.shape == (test.n_samples, 3) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    assert (model.predict(test) == test.labels).mean() >= 0.95
    assert model.card is not None and model.card.extra["n_features"] == 1344
    assert (model.card.extra["alpha"] is None) == (head == "logistic")


def test_two_classes_and_a_class_without_samples() -> None:
    ts = make_toy_set(n_per_class=15, n_times=20, n_classes=3, seed=4)
    two = ts.subset(ts.labels != 1)  # class_1 keeps its name but has no sample
    for head in ("ridge", "logistic"):
        model = create_model("minirocket", head=head, n_features=336).fit(two)
        proba = model.predict_proba(two)
        assert proba.shape == (two.n_samples, 3) and (proba[:, 1] == 0).all()
        assert (model.predict(two) == two.labels).mean() >= 0.95


def test_save_load_round_trip(tmp_path) -> None:
    train = make_toy_set(n_per_class=15, n_times=16, seed=1)
    test = make_toy_set(n_per_class=5, n_times=16, seed=2, nan_fraction=0.2)
    model = create_model("minirocket", variant="multirocket", n_features=1344, seed=3)
    proba = model.fit(train).predict_proba(test)
    model.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["minirocket.npz", "model.json"]
    loaded = Classifier.load(tmp_path / "m")
    assert loaded.config == model.config
    np.testing.assert_array_equal(loaded.predict_proba(test), proba)


def test_damaged_weights_are_a_model_error(tmp_path) -> None:
    train = make_toy_set(n_per_class=10, n_times=16, seed=1)
    create_model("minirocket", n_features=168).fit(train).save(tmp_path / "m")
    path = tmp_path / "m" / "minirocket.npz"
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    np.savez(path, **{**arrays, "coef": arrays["coef"][:, :5]})
    with pytest.raises(ModelError, match="does not match"):
        Classifier.load(tmp_path / "m")
    np.savez(path, **{k: v for k, v in arrays.items() if k != "transform_rep0_biases"})
    with pytest.raises(ModelError, match="ROCKET"):
        Classifier.load(tmp_path / "m")
    path.write_bytes(b"not a zip file")
    with pytest.raises(ModelError, match="cannot read"):
        Classifier.load(tmp_path / "m")


def test_gaps_are_interpolated_like_the_other_models() -> None:
    train = make_toy_set(n_per_class=20, n_times=16, seed=3, nan_fraction=0.2)
    model = create_model("minirocket", n_features=840).fit(train)
    proba = model.predict_proba(train)
    assert np.isfinite(proba).all()
    np.testing.assert_allclose(model.predict_proba(interpolate_gaps(train)), proba, atol=1e-6)
    assert (proba.argmax(axis=1) == train.labels).mean() >= 0.9
    # a band without any valid value in a series gets the band mean
    values = train.values.copy()
    values[0, :, 1] = np.nan
    assert np.isfinite(model.predict_proba(train.replace(values=values))).all()


def test_bad_options_and_inputs() -> None:
    with pytest.raises(ModelError, match="variant"):
        create_model("minirocket", variant="rocket")
    with pytest.raises(ModelError, match="head"):
        create_model("minirocket", head="svm")
    with pytest.raises(ModelError, match="n_features"):
        create_model("minirocket", n_features=10)
    with pytest.raises(ModelError, match="alphas"):
        create_model("minirocket", alphas=[])
    with pytest.raises(ModelError, match="n_jobs"):
        create_model("minirocket", n_jobs=0)
    with pytest.raises(ModelError, match="not fitted"):
        create_model("minirocket").predict(make_toy_set())
    train = make_toy_set(n_per_class=10, n_times=12)
    model = create_model("minirocket", n_features=168).fit(train)
    with pytest.raises(DataError, match="trained on bands"):
        model.predict_proba(train.select_bands(["B8"]))
    with pytest.raises(DataError, match="time steps"):
        model.predict_proba(train.replace(values=train.values[:, :8], dates=train.dates[:8]))
    with pytest.raises(DataError, match="time step"):
        create_model("minirocket", variant="multirocket", n_features=672).fit(
            TimeSeriesSet(
                values=train.values[:, :1],
                bands=train.bands,
                labels=train.labels,
                classes=train.classes,
            )
        )


def test_threads_follow_cropscope(monkeypatch: pytest.MonkeyPatch) -> None:
    from cropscope.models import rocket

    seen = []
    monkeypatch.setattr(rocket, "current_threads", lambda: seen.append(1) or 1)
    model = create_model("minirocket", n_features=168)
    assert model.n_jobs() == 1 and seen
    assert create_model("minirocket", n_jobs=2).n_jobs() == 2


# ---------------------------------------------------------------------------- calibration
def test_ridge_probabilities_are_calibrated_and_keep_the_ridge_prediction(tmp_path) -> None:
    train = make_toy_set(n_per_class=30, n_times=24, seed=1)
    test = make_toy_set(n_per_class=30, n_times=24, seed=2)
    model = create_model("minirocket", n_features=840).fit(train)
    assert model.temperature_ > 0 and model.card.extra["temperature"] == model.temperature_
    proba = model.predict_proba(test)
    z = model._features(model._prepare(test), 1)
    scores = (z @ model.coef_.T + model.intercept_).astype(np.float64)
    np.testing.assert_array_equal(proba.argmax(axis=1), model.classes_[scores.argmax(axis=1)])
    # the plain softmax of ridge scores (about +-1) is nearly flat; on separable classes
    # the calibrated probabilities are confident
    plain = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    assert model.temperature_ > 1.0
    assert proba.max(axis=1).mean() > plain.max(axis=1).mean() + 0.1
    model.save(tmp_path / "m")
    path = tmp_path / "m" / "minirocket.npz"
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    np.savez(path, **{k: v for k, v in arrays.items() if k != "temperature"})  # an older run
    old = Classifier.load(tmp_path / "m")
    assert old.temperature_ == 1.0
    np.testing.assert_array_equal(old.predict(test), model.predict(test))
    np.savez(path, **{**arrays, "temperature": np.array(-1.0)})
    with pytest.raises(ModelError):
        Classifier.load(tmp_path / "m")
