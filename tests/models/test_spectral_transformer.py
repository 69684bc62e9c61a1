"""The spectral-spatial Transformer: stream, network, presets and the patch classifier."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cropscope.data.patches import PatchSet
from cropscope.errors import DataError, ModelError
from cropscope.models import Classifier, create_model
from cropscope.models.modules import ClassifierModule
from cropscope.models.spectral_transformer import (
    PRESETS,
    REFERENCE_STREAM,
    SpectralSpatialTransformer,
    SpectralTransformerNet,
    count_parameters,
    sinusoid_table,
)

TINY = {"spatial_dim": 16, "spatial_depth": 1, "spatial_heads": 2, "spectral_grid": 3,
        "spectral_dim": 16, "spectral_depth": 1, "spectral_heads": 2, "out_dim": 16}
FAST = {**TINY, "patch_size": 5, "epochs": 25, "batch_size": 32, "lr": 3e-3,
        "val_fraction": 0.0}


def make_patches(n_per_class: int = 30, k: int = 12, size: int = 5, seed: int = 0) -> PatchSet:
    """Three classes with distinct spectral shapes plus noise; NaN in a few pixels."""
    rng = np.random.default_rng(seed)
    wl = np.linspace(400, 2400, k)
    shapes = [np.sin(wl / 300.0), np.cos(wl / 500.0), np.linspace(0, 1, k)]
    values, labels = [], []
    for c, s in enumerate(shapes):
        for _ in range(n_per_class):
            patch = s[:, None, None] + rng.normal(0, 0.15, (k, size, size))
            values.append(patch)
            labels.append(c)
    arr = np.asarray(values, dtype=np.float32)
    arr[0, :, 0, 0] = np.nan
    return PatchSet(arr, [f"{w:.1f}nm" for w in wl], wavelengths=wl,
                    labels=np.array(labels), classes=["a", "b", "c"])


def test_sinusoid_table_matches_the_formula() -> None:
    t = sinusoid_table(5, 8)
    assert t.shape == (5, 8)
    pos, j = 3, 5  # odd index: cosine of pos / 10000^(2*2/8)
    assert t[pos, j].item() == pytest.approx(np.cos(pos / 10000 ** (4 / 8)), abs=1e-6)
    assert t[pos, 4].item() == pytest.approx(np.sin(pos / 10000 ** (4 / 8)), abs=1e-6)
    assert torch.equal(t[0, 0::2], torch.zeros(4)) and torch.equal(t[0, 1::2], torch.ones(4))


@pytest.mark.parametrize("upscale,patch", [(1, 1), (2, 1), (1, 3)])
def test_stream_returns_a_feature_map(upscale: int, patch: int) -> None:
    stream = SpectralSpatialTransformer(7, 9, **{**TINY, "upscale": upscale,
                                                  "spatial_patch": patch}, neck=True)
    out = stream(torch.randn(2, 7, 9, 9))
    assert out.shape == (2, 16, 9 * upscale, 9 * upscale)
    with pytest.raises(ModelError, match="expected input"):
        stream(torch.randn(2, 6, 9, 9))
    with pytest.raises(ModelError, match="divisible"):
        SpectralSpatialTransformer(7, 9, spatial_patch=2)


def test_reference_stream_parameter_counts() -> None:
    """h2crop.md §2.8: spatial ViT 50.7 M, spectral ViT 8.1 M, fusion + neck 0.74 M."""
    with torch.device("meta"):
        s = SpectralSpatialTransformer(218, 64, **REFERENCE_STREAM)
    spatial = sum(count_parameters(m) for m in (s.spatial_embed, s.spatial_encoder,
                                                  s.spatial_out))
    spectral = sum(count_parameters(m) for m in (s.spectral_embed, s.spectral_encoder,
                                                   s.spectral_unembed, s.spectral_out))
    fusion = count_parameters(s.fuse) + count_parameters(s.neck)
    assert spatial / 1e6 == pytest.approx(50.7, abs=0.05)
    assert spectral / 1e6 == pytest.approx(8.1, abs=0.1)
    assert fusion / 1e6 == pytest.approx(0.74, abs=0.005)
    assert isinstance(s.spectral_embed, torch.nn.Identity)  # 16x16 pooled map = 256-d tokens
    assert len(s.spatial_encoder.blocks) == 6 and s.spatial_encoder.blocks[0].attn.heads == 12
    assert len(s.spectral_encoder.blocks) == 6 and s.spectral_encoder.blocks[0].attn.heads == 8
    assert not any(k.endswith(".pos") for k in s.state_dict())  # fixed encodings: no weights


def test_reference_preset_builds_the_reference_widths() -> None:
    model = create_model("spectral-transformer", preset="reference")
    assert model.config["spatial_dim"] == 768 and model.config["patch_size"] == 33
    assert create_model("spectral-transformer", preset="reference",
                        spatial_depth=2).config["spatial_depth"] == 2
    with pytest.raises(ModelError, match="unknown preset"):
        create_model("spectral-transformer", preset="huge")
    assert PRESETS["small"]["patch_size"] % 2 == 1


def test_network_forward_backward_and_feature_contract() -> None:
    net = SpectralTransformerNet(12, 5, 3, **TINY)
    assert isinstance(net, ClassifierModule) and net.feature_dim == 16
    x = torch.randn(4, 12, 5, 5)
    feats = net.forward_features(x)
    assert feats.shape == (4, 16)
    logits = net(x)
    assert logits.shape == (4, 3)
    logits.sum().backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    # centre pooling: the output depends on the centre, not only on the mean of the patch
    assert SpectralTransformerNet(12, 5, 3, pool="mean", **TINY)(x).shape == (4, 3)
    with pytest.raises(ModelError, match="pool"):
        SpectralTransformerNet(12, 5, 3, pool="max", **TINY)


def test_classifier_fits_patches_and_round_trips(tmp_path) -> None:
    train, test = make_patches(seed=1), make_patches(n_per_class=10, seed=2)
    model = create_model("spectral-transformer", **FAST).fit(train)
    proba = model.predict_proba(test)
    assert proba.shape == (30, 3) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(1), 1, atol=1e-5)
    assert (model.predict(test) == test.labels).mean() >= 0.9

    model.save(tmp_path / "m")
    assert (tmp_path / "m" / "weights.safetensors").is_file()
    card = json.loads((tmp_path / "m" / "model.json").read_text())["card"]
    assert card["extra"]["patch_size"] == 5 and len(card["extra"]["wavelengths"]) == 12
    assert len(card["norm_mean"]) == 12 and card["n_times"] == 1
    loaded = Classifier.load(tmp_path / "m")
    np.testing.assert_allclose(loaded.predict_proba(test), proba, atol=1e-5)
    # bands by name in any order; larger patches are centre-cropped; smaller ones refused
    rev = test.select_bands(list(reversed(test.bands)))
    np.testing.assert_allclose(loaded.predict_proba(rev), proba, atol=1e-5)
    big = PatchSet(np.pad(test.values, ((0, 0), (0, 0), (1, 1), (1, 1))), test.bands,
                   labels=test.labels, classes=test.classes)
    np.testing.assert_allclose(loaded.predict_proba(big), proba, atol=1e-5)
    with pytest.raises(DataError, match="expects 5x5"):
        loaded.predict_proba(test.crop(3))
    with pytest.raises(DataError, match="bands"):
        loaded.predict_proba(test.select_bands(test.bands[:6]))
    with pytest.raises(DataError, match="patches"):
        loaded.predict_proba(test.centre_set())


def test_seed_gives_the_same_model() -> None:
    train = make_patches(n_per_class=10)
    cfg = {**FAST, "epochs": 2}
    a = create_model("spectral-transformer", **cfg).fit(train).predict_proba(train)
    b = create_model("spectral-transformer", **cfg).fit(train).predict_proba(train)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_bad_options_are_model_errors() -> None:
    with pytest.raises(ModelError, match="patch_size"):
        create_model("spectral-transformer", patch_size=4)
    with pytest.raises(ModelError, match="hierarchical=true"):
        create_model("spectral-transformer", priors=True)
    with pytest.raises(ModelError, match="divisible"):
        create_model("spectral-transformer", **{**FAST, "spatial_heads": 3}).fit(make_patches())
