"""InceptionTime: the network's structure and shapes, and the registered classifier."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cropscope.errors import ModelError  # noqa: E402
from cropscope.models import Classifier, create_model  # noqa: E402
from cropscope.models.cascade import HierarchicalNet  # noqa: E402
from cropscope.models.inceptiontime import (  # noqa: E402
    InceptionModule,
    InceptionTime,
    InceptionTimeModule,
    Shortcut,
)
from cropscope.models.modules import EnsembleModule  # noqa: E402
from cropscope.taxonomy import inconsistent  # noqa: E402
from tests.conftest import make_toy_set  # noqa: E402

#: a small network that still has two residual blocks
SMALL = {"filters": 8, "bottleneck": 8, "kernel_sizes": [9, 5, 3], "depth": 6}
FAST = {**SMALL, "epochs": 15, "batch_size": 16, "lr": 1e-2, "n_models": 1, "device": "cpu"}


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------- network
@pytest.mark.parametrize(("n_bands", "n_times"), [(1, 7), (1, 46), (3, 13), (4, 1)])
def test_output_shapes_for_odd_lengths_and_bands(n_bands: int, n_times: int) -> None:
    net = InceptionTimeModule(n_bands, n_classes=5, **SMALL)
    x = torch.randn(6, n_bands, n_times)
    assert net.forward_maps(x).shape == (6, 32, n_times)  # "same" length, 4 branches x 8
    assert net.forward_features(x).shape == (6, net.feature_dim) == (6, 32)
    out = net(x)
    assert out.shape == (6, 5) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
def test_even_kernel_sizes_keep_the_length() -> None:
    net = InceptionTimeModule(2, 3, filters=4, bottleneck=4, kernel_sizes=[40, 20, 10])
    assert net.forward_maps(torch.randn(2, 2, 23)).shape == (2, 16, 23)


def test_paper_layout() -> None:
    net = InceptionTimeModule(n_bands=1, n_classes=24)
    assert len(net.inception) == 6 and net.shortcut_after == [2, 5]
    first, second = net.inception[0], net.inception[1]
    # a single input channel is not squeezed; later modules go through a 1x1 bottleneck to 32
    assert isinstance(first.bottleneck, torch.nn.Identity)
    assert isinstance(second.bottleneck, torch.nn.Conv1d)
    assert (second.bottleneck.in_channels, second.bottleneck.out_channels) == (128, 32)
    assert second.bottleneck.kernel_size == (1,)
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in second.convs] == [
        (32, 32, (39,)), (32, 32, (19,)), (32, 32, (9,))
    ]
    pool, conv = second.pool_conv
    assert isinstance(pool, torch.nn.MaxPool1d) and pool.kernel_size == 3 and pool.stride == 1
    assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (128, 32, (1,))
    assert second.out_channels == 128 and second.bn.num_features == 128
    # shortcut 1: 1 -> 128 channels, projected (1x1 conv + BN); shortcut 2: 128 -> 128, identity
    proj = net.shortcuts[0].proj
    assert isinstance(proj, torch.nn.Sequential)
    assert isinstance(proj[0], torch.nn.Conv1d) and proj[0].kernel_size == (1,)
    assert isinstance(proj[1], torch.nn.BatchNorm1d)
    assert isinstance(net.shortcuts[1].proj, torch.nn.Identity)
    assert net.head.in_features == 128 and net.head.out_features == 24
    assert net.receptive_field == 1 + 6 * 38


def test_multiband_input_is_squeezed_by_the_first_bottleneck() -> None:
    net = InceptionTimeModule(n_bands=3, n_classes=2, **SMALL)
    assert isinstance(net.inception[0].bottleneck, torch.nn.Conv1d)
    no_bottleneck = InceptionTimeModule(n_bands=3, n_classes=2, **{**SMALL, "bottleneck": 0})
    assert all(isinstance(m.bottleneck, torch.nn.Identity) for m in no_bottleneck.inception)
    assert no_bottleneck.inception[1].convs[0].in_channels == 32


@pytest.mark.parametrize(("depth", "residual", "after"),
                         [(6, True, [2, 5]), (7, True, [2, 5]), (2, True, []), (6, False, [])])
def test_shortcut_placement(depth: int, residual: bool, after: list[int]) -> None:
    net = InceptionTimeModule(2, 3, **{**SMALL, "depth": depth}, residual=residual)
    assert len(net.inception) == depth
    assert net.shortcut_after == after and len(net.shortcuts) == len(after)


def test_forward_adds_the_shortcuts_where_placed() -> None:
    torch.manual_seed(0)
    net = InceptionTimeModule(2, 3, **SMALL).eval()
    x = torch.randn(4, 2, 11)
    m = list(net.inception)
    s0, s1 = net.shortcuts
    assert isinstance(s0, Shortcut) and all(isinstance(mod, InceptionModule) for mod in m)
    with torch.no_grad():
        h = s0(x, m[2](m[1](m[0](x))))
        expected = s1(h, m[5](m[4](m[3](h))))
        torch.testing.assert_close(net.forward_maps(x), expected)
        plain = InceptionTimeModule(2, 3, **SMALL, residual=False).eval()
        plain.load_state_dict(
            {k: v for k, v in net.state_dict().items() if not k.startswith("shortcuts")}
        )
        chain = x
        for mod in m:
            chain = mod(chain)
        torch.testing.assert_close(plain.forward_maps(x), chain)


@pytest.mark.parametrize(("kernel_sizes", "depth"), [([5, 3], 3), ([9, 5, 3], 2), ([3], 4)])
def test_receptive_field(kernel_sizes: list[int], depth: int) -> None:
    """The steps whose input changes one output position of the last module are exactly the
    receptive field (eval mode: batch norm acts per position)."""
    torch.manual_seed(0)
    net = InceptionTimeModule(1, 2, filters=8, bottleneck=8, kernel_sizes=kernel_sizes,
                              depth=depth).eval()
    n_times, t0 = 61, 30
    x = torch.randn(32, 1, n_times, requires_grad=True)  # many inputs: no position left
    net.forward_maps(x)[:, :, t0].abs().sum().backward()  # out by inactive ReLUs
    assert x.grad is not None
    seen = torch.nonzero(x.grad.abs().sum(dim=(0, 1))).flatten()
    assert int(seen.max() - seen.min()) + 1 == net.receptive_field
    assert net.receptive_field == 1 + depth * (max(*kernel_sizes, 3) - 1)


# ---------------------------------------------------------------------- classifier
def test_defaults_follow_the_paper() -> None:
    cfg = InceptionTime.default_config()
    assert (cfg["depth"], cfg["filters"], cfg["bottleneck"]) == (6, 32, 32)
    assert cfg["kernel_sizes"] == [39, 19, 9] and cfg["residual"] is True
    assert (cfg["lr"], cfg["batch_size"], cfg["n_models"]) == (1e-3, 64, 5)
    assert cfg["epochs"] == 100 and cfg["augment"] is False


def test_learns_a_separable_problem(one_thread) -> None:
    train = make_toy_set(n_per_class=20, n_times=15, nan_fraction=0.1)
    test = make_toy_set(n_per_class=10, n_times=15, seed=5)
    model = create_model("inceptiontime", **FAST).fit(train)
    assert isinstance(model.module, InceptionTimeModule)
    assert (model.predict(train) == train.labels).mean() >= 0.9
    assert (model.predict(test) == test.labels).mean() >= 0.85
    proba = model.predict_proba(test)
    assert proba.shape == (30, 3) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)


def test_ensemble_save_load_round_trip(one_thread, tmp_path: Path) -> None:
    train = make_toy_set(n_per_class=10, n_times=9)
    model = create_model("inceptiontime", **{**FAST, "epochs": 3, "n_models": 2}).fit(train)
    assert isinstance(model.module, EnsembleModule) and len(model.module.members) == 2
    assert len(model.card.extra["members"]) == 2
    back = Classifier.load(model.save(tmp_path / "it"))
    assert type(back) is InceptionTime and back.config == model.config
    test = make_toy_set(n_per_class=5, n_times=9, seed=3)
    np.testing.assert_array_equal(back.predict_proba(test), model.predict_proba(test))


def test_same_seed_same_model(one_thread) -> None:
    ts = make_toy_set(n_per_class=8, n_times=11)
    cfg = {**FAST, "epochs": 3}
    a = create_model("inceptiontime", **cfg, seed=1).fit(ts).predict_proba(ts)
    b = create_model("inceptiontime", **cfg, seed=1).fit(ts).predict_proba(ts)
    c = create_model("inceptiontime", **cfg, seed=2).fit(ts).predict_proba(ts)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_cascade_heads(one_thread, tmp_path: Path) -> None:
    from tests.models.test_hierarchical import hier_sets

    train, test = hier_sets()
    model = create_model("inceptiontime", **FAST, hierarchical=True).fit(train)
    assert isinstance(model.module, HierarchicalNet)
    assert isinstance(model.module.backbone, InceptionTimeModule)
    assert model.module.cascade.heads[0][0].in_features == 32  # the pooled features
    probas = model.predict_proba_levels(test)
    assert [p.shape for p in probas] == [(30, 2), (30, 3), (30, 3)]
    levels = model.predict_levels(test)
    assert not inconsistent(model.taxonomy, levels).any()
    assert (levels == test.level_labels).mean() > 0.8
    back = Classifier.load(model.save(tmp_path / "hier"))
    for a, b in zip(back.predict_proba_levels(test), probas, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("bad", [
    {"depth": 0}, {"depth": 2.5}, {"depth": True}, {"filters": 0}, {"bottleneck": -1},
    {"kernel_sizes": []}, {"kernel_sizes": [9, 0]}, {"kernel_sizes": 9},
    {"kernel_sizes": [9, "5"]}, {"residual": "yes"}, {"n_models": 0}, {"no_such_option": 1},
])
def test_bad_options_raise_model_error(bad: dict) -> None:
    with pytest.raises(ModelError):
        create_model("inceptiontime", **bad)


def test_predict_before_fit_is_an_error() -> None:
    with pytest.raises(ModelError, match="not fitted"):
        create_model("inceptiontime").predict(make_toy_set(n_per_class=2))
