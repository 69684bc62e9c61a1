"""LSTM-FCN: its two branches, the dimension shuffle, and training on toy classes."""

from __future__ import annotations

import warnings

import pytest
import torch

from cropscope.errors import ModelError
from cropscope.models import create_model
from cropscope.models.cascade import HierarchicalNet
from cropscope.models.lstm_fcn import LSTMFCNModule
from tests.conftest import make_toy_set


def test_branches_and_feature_size() -> None:
    torch.manual_seed(0)
    net = LSTMFCNModule(n_bands=3, n_times=12, n_classes=4, filters=(8, 16, 8), hidden=5).eval()
    x = torch.randn(6, 3, 12)
    assert net(x).shape == (6, 4)
    features = net.forward_features(x)
    assert features.shape == (6, 8 + 5) and net.feature_dim == 13
    # the first 8 features are the time-averaged convolutions: a shift in time (circular,
    # away from the padded ends) barely moves them, the LSTM's reading of the whole series
    # changes
    assert net.lstm.input_size == 12  # dimension shuffle: a band's series is one LSTM input
    pooled = net.conv(x).mean(-1)
    torch.testing.assert_close(features[:, :8], pooled)
    # the LSTM part is the last hidden state of the bands read as steps
    _, (last, _) = net.lstm(x)
    torch.testing.assert_close(features[:, 8:], last[-1])


def test_even_kernels_pad_as_torch_same() -> None:
    net = LSTMFCNModule(n_bands=2, n_times=9, n_classes=3, filters=(4,), kernels=(8,)).eval()
    pad, conv = net.conv[0], net.conv[1]
    same = torch.nn.Conv1d(2, 4, 8, padding="same")
    same.load_state_dict(conv.state_dict())
    x = torch.randn(3, 2, 9)
    with warnings.catch_warnings():  # torch warns (once) of the copy it makes here
        warnings.simplefilter("ignore", UserWarning)
        want = same(x)
    torch.testing.assert_close(conv(pad(x)), want)


def test_without_shuffle_reads_time_steps_of_any_length() -> None:
    net = LSTMFCNModule(n_bands=2, n_times=10, n_classes=3, filters=(4,), kernels=(3,),
                        hidden=4, shuffle=False).eval()
    assert net.lstm.input_size == 2
    assert net(torch.randn(2, 2, 10)).shape == (2, 3)
    assert net(torch.randn(2, 2, 17)).shape == (2, 3)
    shuffled = LSTMFCNModule(n_bands=2, n_times=10, n_classes=3, filters=(4,), kernels=(3,))
    with pytest.raises(ModelError, match="10 steps"):
        shuffled(torch.randn(2, 2, 17))


def test_bad_settings() -> None:
    with pytest.raises(ModelError, match="one entry per convolution"):
        LSTMFCNModule(2, 8, 3, filters=(8, 8), kernels=(3,))
    with pytest.raises(ModelError, match="positive"):
        LSTMFCNModule(2, 8, 3, filters=(8,), kernels=(0,))


def test_cascade_heads_attach() -> None:
    net = LSTMFCNModule(2, 6, 3, filters=(4, 4), kernels=(3, 3), hidden=4)
    out = HierarchicalNet(net, [2, 3])(torch.randn(4, 2, 6))
    assert [o.shape for o in out] == [(4, 2), (4, 3)]


def test_learns_toy_classes_with_and_without_shuffle() -> None:
    train, test = make_toy_set(n_per_class=24, seed=1), make_toy_set(n_per_class=10, seed=2)
    for shuffle in (True, False):
        model = create_model("lstm-fcn", epochs=15, batch_size=16, lr=3e-3,
                             filters=[16, 32, 16], augment=False, shuffle=shuffle).fit(train)
        assert (model.predict(test) == test.labels).mean() >= 0.9, shuffle
