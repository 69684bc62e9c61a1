"""The 1-D spectral CNN on pixel spectra."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cropscope.data import TimeSeriesSet
from cropscope.models import Classifier, create_model
from cropscope.models.modules import ClassifierModule
from cropscope.models.spectral_cnn import SpectralCNNModule
from tests.models.test_spectral_transformer import make_patches

FAST = {"epochs": 30, "batch_size": 32, "filters": 8, "hidden": 16, "val_fraction": 0.0,
        "lr": 3e-3}


@pytest.mark.parametrize("length", [1, 2, 7, 200])
def test_module_shapes_for_any_spectrum_length(length: int) -> None:
    net = SpectralCNNModule(1, 4, filters=8, hidden=16)
    assert isinstance(net, ClassifierModule) and net.feature_dim == 16
    x = torch.randn(3, 1, length)
    assert net.forward_features(x).shape == (3, 16)
    out = net(x)
    assert out.shape == (3, 4)
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_fits_centre_spectra_and_round_trips(tmp_path) -> None:
    train = make_patches(seed=1).centre_set()
    test = make_patches(n_per_class=10, seed=2).centre_set()
    assert isinstance(train, TimeSeriesSet) and train.n_times == 1
    model = create_model("spectral-cnn", **FAST).fit(train)
    assert model.input_kind == "pixels"
    proba = model.predict_proba(test)
    assert proba.shape == (30, 3)
    assert (proba.argmax(1) == test.labels).mean() >= 0.8
    model.save(tmp_path / "cnn")
    loaded = Classifier.load(tmp_path / "cnn")
    np.testing.assert_allclose(loaded.predict_proba(test), proba, atol=1e-5)
    assert loaded.card.norm_mean is not None and len(loaded.card.norm_mean) == 12
