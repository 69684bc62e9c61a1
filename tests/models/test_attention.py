"""The lightweight temporal attention encoder (ltae)."""

from __future__ import annotations

import pytest
import torch

from cropscope.errors import ModelError
from cropscope.models import create_model
from cropscope.models.attention import TemporalAttentionModule, sinusoidal_encoding
from cropscope.models.cascade import HierarchicalNet
from tests.conftest import make_toy_set


def test_module_shapes_and_attention_weights() -> None:
    torch.manual_seed(0)
    net = TemporalAttentionModule(n_bands=3, n_times=12, n_classes=4, d_model=32, n_head=4,
                                  d_k=4, mlp=16).eval()
    x = torch.randn(5, 12, 3)
    assert net(x).shape == (5, 4)
    assert net.forward_features(x).shape == (5, net.feature_dim) and net.feature_dim == 16
    pooled, weights = net.attention(x)
    assert pooled.shape == (5, 32) and weights.shape == (5, 4, 12)
    torch.testing.assert_close(weights.sum(-1), torch.ones(5, 4))
    # the position code makes the encoder order-aware
    assert not torch.allclose(net(x), net(x.flip(1)))


def test_position_code_and_bad_sizes() -> None:
    pe = sinusoidal_encoding(10, 8)
    assert pe.shape == (10, 8) and torch.all(pe[0, 1::2] == 1.0)
    with pytest.raises(ModelError, match="divisible"):
        TemporalAttentionModule(2, 5, 3, d_model=30, n_head=4)


def test_cascade_heads_attach() -> None:
    net = TemporalAttentionModule(2, 6, 3, d_model=16, n_head=4, mlp=8)
    hier = HierarchicalNet(net, [2, 3])
    out = hier(torch.randn(4, 6, 2))
    assert [o.shape for o in out] == [(4, 2), (4, 3)]


def test_ltae_learns_toy_classes() -> None:
    train, test = make_toy_set(n_per_class=24, seed=1), make_toy_set(n_per_class=10, seed=2)
    model = create_model("ltae", epochs=20, batch_size=16, lr=3e-3, d_model=32, n_head=4,
                         mlp=32, augment=False).fit(train)
    assert (model.predict(test) == test.labels).mean() >= 0.9
