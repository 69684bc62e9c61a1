"""TempCNN, plus the behaviour shared by both deep models (parametrised over the registry)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cropscope.data import TimeSeriesSet  # noqa: E402
from cropscope.errors import DataError, ModelError  # noqa: E402
from cropscope.models import Classifier, create_model  # noqa: E402
from cropscope.models._torch import WEIGHTS_FILE  # noqa: E402
from cropscope.models.modules import EnsembleModule  # noqa: E402
from cropscope.models.tempcnn import TempCNN, TempCNNModule  # noqa: E402
from tests.conftest import make_toy_set  # noqa: E402

FAST = {
    "tempcnn": {
        "filters": 8,
        "hidden": 16,
        "epochs": 15,
        "batch_size": 16,
        "lr": 1e-2,
        "patience": None,
        "device": "cpu",
    },
    "cropnet": {"channels": 8, "epochs": 15, "batch_size": 32, "lr": 1e-2, "device": "cpu"},
}
DEEP = sorted(FAST)


# ---------------------------------------------------------------------- TempCNN network
def test_module_layout_and_shapes() -> None:
    net = TempCNNModule(n_bands=6, n_times=23, n_classes=9)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv1d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (6, 64, (5,)),
        (64, 64, (5,)),
        (64, 64, (5,)),
    ]
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in net.modules()) == 4
    assert net.dense[1].in_features == 64 * 23 and net.dense[1].out_features == 256
    x = torch.randn(7, 6, 23)
    assert net.conv(x).shape == (7, 64, 23)  # "same" padding keeps the time axis
    out = net(x)
    assert out.shape == (7, 9)
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_defaults() -> None:
    cfg = TempCNN.default_config()
    assert cfg["filters"] == 64 and cfg["kernel_size"] == 5 and cfg["n_conv"] == 3
    assert cfg["hidden"] == 256 and cfg["dropout"] == 0.2
    # tuned: decaying learning rate, temporal augmentation, best epoch on a 10 % validation split
    assert cfg["val_fraction"] == 0.1 and cfg["lr_decay"] == 0.95 and cfg["augment"] is True


# ---------------------------------------------------------------------- both deep models
@pytest.fixture(scope="module")
def fitted() -> dict[str, Classifier]:
    ts = make_toy_set(n_per_class=20, nan_fraction=0.1)
    return {name: create_model(name, **FAST[name]).fit(ts) for name in DEEP}


@pytest.mark.parametrize("name", DEEP)
def test_fit_reaches_high_accuracy(fitted: dict[str, Classifier], name: str) -> None:
    ts = make_toy_set(n_per_class=20, nan_fraction=0.1)
    assert (fitted[name].predict(ts) == ts.labels).mean() >= 0.9
    new = make_toy_set(n_per_class=10, seed=5)
    assert (fitted[name].predict(new) == new.labels).mean() >= 0.85


@pytest.mark.parametrize("name", DEEP)
def test_predict_proba_rows_sum_to_one(fitted: dict[str, Classifier], name: str) -> None:
    ts = make_toy_set(n_per_class=5, seed=2, nan_fraction=0.2)
    proba = fitted[name].predict_proba(ts)
    assert proba.shape == (15, 3) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=1), 1, atol=1e-5)
    assert (proba >= 0).all()


@pytest.mark.parametrize("name", DEEP)
def test_gaps_are_interpolated(fitted: dict[str, Classifier], name: str) -> None:
    ts = make_toy_set(n_per_class=5, seed=4)
    gappy = ts.values.copy()
    gappy[:, 3] = np.nan
    filled = ts.values.copy()
    filled[:, 3] = (ts.values[:, 2] + ts.values[:, 4]) / 2  # dates are evenly spaced
    model = fitted[name]
    np.testing.assert_allclose(
        model.predict_proba(ts.replace(values=gappy)),
        model.predict_proba(ts.replace(values=filled)),
        atol=1e-5,
    )


@pytest.mark.parametrize("name", DEEP)
def test_save_load_gives_identical_probabilities(
    fitted: dict[str, Classifier], name: str, tmp_path: Path
) -> None:
    model = fitted[name]
    model.save(tmp_path / name)
    assert (tmp_path / name / WEIGHTS_FILE).is_file()
    back = Classifier.load(tmp_path / name)
    assert type(back) is type(model) and back.card == model.card
    ts = make_toy_set(n_per_class=5, seed=3)
    np.testing.assert_array_equal(back.predict_proba(ts), model.predict_proba(ts))
    # bands in another order are matched by name
    swapped = ts.select_bands(list(reversed(ts.bands)))
    np.testing.assert_array_equal(back.predict_proba(swapped), model.predict_proba(ts))


@pytest.mark.parametrize("name", DEEP)
def test_wrong_bands_or_length_raise_data_error(fitted: dict[str, Classifier], name: str) -> None:
    with pytest.raises(DataError, match="bands"):
        fitted[name].predict(make_toy_set(n_per_class=2, bands=("B2", "B3")))
    with pytest.raises(DataError, match="time steps"):
        fitted[name].predict(make_toy_set(n_per_class=2, n_times=10))


@pytest.mark.parametrize("name", DEEP)
def test_unknown_or_bad_config_raises_model_error(name: str) -> None:
    with pytest.raises(ModelError, match="unknown option"):
        create_model(name, no_such_option=1)
    with pytest.raises(ModelError, match="augment_params"):
        create_model(name, augment_params={"nope": 1})
    with pytest.raises(ModelError, match="not fitted"):
        create_model(name).predict(make_toy_set(n_per_class=2))


@pytest.mark.parametrize("name", DEEP)
def test_same_seed_same_model(name: str) -> None:
    ts = make_toy_set(n_per_class=8)
    cfg = {**FAST[name], "epochs": 3}
    a = create_model(name, **cfg, seed=1).fit(ts).predict_proba(ts)
    b = create_model(name, **cfg, seed=1).fit(ts).predict_proba(ts)
    c = create_model(name, **cfg, seed=2).fit(ts).predict_proba(ts)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("name", DEEP)
def test_normalisation_comes_from_the_training_data(name: str) -> None:
    train = make_toy_set(n_per_class=8, nan_fraction=0.2, seed=4)
    val = make_toy_set(n_per_class=4, seed=6)
    model = create_model(name, **{**FAST[name], "epochs": 2}).fit(train, val)
    mean = np.nanmean(train.values.reshape(-1, 2), axis=0)
    std = np.nanstd(train.values.reshape(-1, 2), axis=0)
    np.testing.assert_allclose(model.card.norm_mean, mean, rtol=1e-5)
    np.testing.assert_allclose(model.card.norm_std, std, rtol=1e-5)
    shifted = val.replace(values=val.values + 5.0)
    model.predict(shifted)
    np.testing.assert_allclose(model.card.norm_mean, mean, rtol=1e-5)  # not recomputed
    assert model.card.extra["n_val"] == val.n_samples


def test_band_without_observations_is_a_data_error() -> None:
    ts = make_toy_set(n_per_class=5)
    values = ts.values.copy()
    values[:, :, 1] = np.nan
    ts = ts.replace(values=values, mask=np.ones(values.shape[:2], dtype=bool))
    with pytest.raises(DataError):
        TempCNN(**FAST["tempcnn"]).fit(ts)


def test_validation_with_other_class_order_is_recoded() -> None:
    train = make_toy_set(n_per_class=10)
    val = make_toy_set(n_per_class=5, seed=1)
    codes, classes = TimeSeriesSet.encode_labels(val.label_names, list(reversed(val.classes)))
    val = val.replace(labels=codes, classes=classes)
    model = TempCNN(**{**FAST["tempcnn"], "epochs": 10}).fit(train, val)
    assert model.card.extra["members"][0]["best_val_macro_f1"] > 0.8
    bad = val.replace(labels=np.zeros(val.n_samples, dtype=np.int64), classes=["maize"])
    with pytest.raises(DataError, match="maize"):
        TempCNN(**FAST["tempcnn"]).fit(train, bad)


@pytest.mark.parametrize("name", DEEP)
def test_ensemble_averages_member_probabilities(name: str, tmp_path: Path) -> None:
    ts = make_toy_set(n_per_class=8)
    model = create_model(name, **{**FAST[name], "epochs": 3, "n_models": 2}).fit(ts)
    assert isinstance(model.module, EnsembleModule) and len(model.card.extra["members"]) == 2
    x = torch.from_numpy(model._prepare(ts))
    with torch.inference_mode():
        probs = [torch.softmax(m(x), dim=1) for m in model.module.members]
    assert not torch.allclose(probs[0], probs[1])  # members differ (seeds seed, seed + 1)
    expected = ((probs[0] + probs[1]) / 2).numpy()
    np.testing.assert_allclose(model.predict_proba(ts), expected, atol=1e-6)
    back = Classifier.load(model.save(tmp_path / "ens"))
    np.testing.assert_array_equal(back.predict_proba(ts), model.predict_proba(ts))
    single = create_model(name, **{**FAST[name], "epochs": 3}).fit(ts)
    np.testing.assert_allclose(  # member 0 is the single model with the same seed
        probs[0].numpy(), single.predict_proba(ts), atol=1e-6
    )
    with pytest.raises(ModelError, match="n_models"):
        create_model(name, n_models=0)


# ---------------------------------------------------------------------- real data
@pytest.mark.realdata
@pytest.mark.slow
def test_tempcnn_on_mato_grosso(real_data_dir: Path) -> None:
    from sklearn.model_selection import train_test_split

    path = real_data_dir / "sits_matogrosso" / "samples_mt_9classes.npz"
    if not path.is_file():
        pytest.skip(f"missing {path}")
    data = np.load(path)
    ts = TimeSeriesSet.from_labels(data["X"], [str(b) for b in data["bands"]], data["y"])
    tr, te = train_test_split(np.arange(len(ts)), test_size=0.2, stratify=ts.labels, random_state=0)
    model = TempCNN(epochs=30, augment=False, device="cpu")  # a fast setting
    model.fit(ts.subset(tr))
    acc = (model.predict(ts.subset(te)) == ts.labels[te]).mean()
    assert acc >= 0.90
