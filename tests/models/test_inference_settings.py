"""Deep classifiers predict through the batched predictor (:mod:`cropscope.engine.inference`):
the same probabilities as the former fixed-batch path for pixel (TempCNN), hierarchical and
patch (spectral transformer) models; ``set_inference`` (batch size, device) and an
out-of-memory recovered inside ``predict_proba``."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from cropscope.engine import inference
from cropscope.engine.inference import InferenceSettings, configure_inference
from cropscope.errors import ModelError
from cropscope.models import create_model
from tests.conftest import make_toy_set
from tests.engine.test_inference import FailsAbove, legacy_predict_logits
from tests.models.test_hierarchical import taxonomy
from tests.models.test_spectral_transformer import TINY, make_patches

QUICK = {"filters": 8, "hidden": 16, "epochs": 2, "batch_size": 16, "lr": 1e-2,
         "device": "cpu", "val_fraction": 0.0}


@pytest.fixture(scope="module")
def tempcnn() -> object:
    return create_model("tempcnn", **QUICK).fit(make_toy_set(n_per_class=20, seed=1))


def softmax(z: torch.Tensor) -> np.ndarray:
    return torch.softmax(z, dim=1).numpy()


def test_pixel_model_default_and_explicit_batch_sizes(tempcnn: object) -> None:
    test = make_toy_set(n_per_class=50, seed=2)  # 150 samples
    x = tempcnn._prepare(test)
    # default: a measured first batch, then batches from the memory budget (float32 on CPU)
    proba = tempcnn.predict_proba(test)
    bs = tempcnn.predictor().last_batch_size
    assert bs is not None and bs >= 1
    bounds = [0, *range(inference.PROBE_BATCH, 150, bs), 150]
    ref = legacy_predict_logits(tempcnn.module, x, bounds=bounds)
    np.testing.assert_array_equal(proba, softmax(ref))
    # an explicit batch size that does not divide N: the former path's numbers exactly
    assert configure_inference(tempcnn, InferenceSettings(device="cpu", batch_size=7))
    np.testing.assert_array_equal(tempcnn.predict_proba(test),
                                  softmax(legacy_predict_logits(tempcnn.module, x, 7)))
    assert tempcnn.predictor().last_batch_size == 7
    tempcnn.set_inference(None)  # back to the defaults
    assert tempcnn.predictor().settings.batch_size is None


def test_hierarchical_levels_match_the_former_path() -> None:
    tax = taxonomy()
    train = make_toy_set(n_per_class=20, seed=1).with_taxonomy(tax)
    test = make_toy_set(n_per_class=15, seed=3).with_taxonomy(tax)
    model = create_model("tempcnn", **QUICK, hierarchical=True).fit(train)
    model.set_inference(InferenceSettings(device="cpu", batch_size=10))
    levels = model.predict_proba_levels(test)
    ref = legacy_predict_logits(model.module, model._prepare(test), 10)
    assert isinstance(ref, list) and len(levels) == len(ref) == 3
    for p, z in zip(levels, ref, strict=True):
        np.testing.assert_array_equal(p, softmax(z))


def test_patch_model_matches_the_former_path() -> None:
    train, test = make_patches(seed=1), make_patches(n_per_class=9, seed=2)
    model = create_model("spectral-transformer", **TINY, patch_size=5, epochs=1,
                         batch_size=32, val_fraction=0.0, device="cpu").fit(train)
    model.set_inference(InferenceSettings(device="cpu", batch_size=4))
    proba = model.predict_proba(test)
    x = model._normalise(model._conform_patches(test).values)
    ref = softmax(legacy_predict_logits(model.module, x, 4)).astype(np.float32)
    np.testing.assert_array_equal(proba, ref)
    # the former default (256 a batch) and the new default agree to float32 rounding
    model.set_inference(None)
    np.testing.assert_allclose(model.predict_proba(test),
                               softmax(legacy_predict_logits(model.module, x, 256)),
                               rtol=0, atol=1e-6)


def test_out_of_memory_inside_predict_proba(tempcnn: object,
                                            caplog: pytest.LogCaptureFixture) -> None:
    test = make_toy_set(n_per_class=20, seed=4)  # 60 samples
    x = tempcnn._prepare(test)
    ref = softmax(legacy_predict_logits(tempcnn.module, x, 15))
    original = tempcnn._module
    tempcnn._module = FailsAbove(original, limit=16)
    try:
        tempcnn.set_inference(InferenceSettings(device="cpu", batch_size=60))
        with caplog.at_level(logging.WARNING, logger="cropscope"):
            first = tempcnn.predict_proba(test)
            second = tempcnn.predict_proba(test)  # starts at the reduced size
        assert tempcnn._module.failures == 2  # 60, then 30; 15 fits
        assert sum("out of memory" in r.getMessage() for r in caplog.records) == 1
        np.testing.assert_array_equal(first, ref)
        np.testing.assert_array_equal(second, ref)
    finally:
        tempcnn._module = original
        tempcnn.set_inference(None)


def test_a_device_the_machine_lacks(tempcnn: object) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    tempcnn.set_inference(InferenceSettings(device="cuda"))
    try:
        with pytest.raises(ModelError, match="CUDA is not available"):
            tempcnn.predict_proba(make_toy_set(n_per_class=2, seed=5))
    finally:
        tempcnn.set_inference(None)
