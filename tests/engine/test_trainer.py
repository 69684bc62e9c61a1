from __future__ import annotations

import logging
import math
import random

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sklearn.utils.class_weight import compute_class_weight  # noqa: E402
from torch import nn  # noqa: E402

from cropscope.engine.trainer import balanced_class_weights  # noqa: E402
from cropscope.training import TrainResult, seed_everything, train_classifier  # noqa: E402


def _blobs(n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three Gaussian blobs in 4-D, well separated."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    centres = np.array([[2, 0, 0, 0], [0, 2, 0, 0], [0, 0, 2, 0]], dtype=np.float32)
    x = centres[y] + rng.normal(0, 0.4, size=(n, 4)).astype(np.float32)
    return x, y


def _mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 3)
    )


def _train(seed: int = 0, **kw) -> tuple[nn.Module, TrainResult]:
    x, y = _blobs()
    seed_everything(seed)
    module = _mlp()
    opts = {"epochs": 8, "batch_size": 16, "lr": 1e-2, "weight_decay": 0.0, "seed": seed}
    opts.update(kw)
    return module, train_classifier(module, x[:90], y[:90], x[90:], y[90:], 3, **opts)


def test_balanced_weights_match_sklearn_and_zero_absent_classes() -> None:
    y = np.array([0, 0, 0, 0, 2, 2, 3])
    w = balanced_class_weights(y, 5)
    ref = compute_class_weight("balanced", classes=np.array([0, 2, 3]), y=y)
    np.testing.assert_allclose(w[[0, 2, 3]], ref)
    assert w[1] == 0 and w[4] == 0


def test_training_learns_and_keeps_the_best_epoch() -> None:
    module, res = _train()
    assert len(res.history) == 8
    f1s = [h["val_macro_f1"] for h in res.history]
    assert res.best_val_macro_f1 == max(f1s) > 0.9
    assert res.best_epoch == f1s.index(max(f1s)) + 1  # the first epoch reaching the best
    for k, v in module.state_dict().items():
        torch.testing.assert_close(v, res.state_dict[k])
    assert not module.training
    assert res.history[-1]["loss"] < res.history[0]["loss"]


def test_same_seed_same_weights_other_seed_differs() -> None:
    _, a = _train(seed=3)
    _, b = _train(seed=3)
    _, c = _train(seed=4)
    assert a.history == b.history
    for k in a.state_dict:
        torch.testing.assert_close(a.state_dict[k], b.state_dict[k], rtol=0, atol=0)
    assert any(not torch.equal(a.state_dict[k], c.state_dict[k]) for k in a.state_dict)


def test_patience_stops_when_validation_stalls() -> None:
    x, y = _blobs()
    res = train_classifier(
        nn.Linear(4, 3),
        x[:90],
        y[:90],
        x[90:],
        y[90:],
        3,
        epochs=20,
        batch_size=16,
        lr=0.0,
        weight_decay=0.0,
        seed=0,
        patience=2,
    )
    assert len(res.history) == 3 and res.best_epoch == 1  # lr 0: nothing ever improves
    _, res = _train(epochs=40, patience=3)
    f1s = [h["val_macro_f1"] for h in res.history]
    assert len(res.history) == res.best_epoch + 3 < 40
    assert max(f1s[res.best_epoch :]) <= res.best_val_macro_f1


def test_without_validation_the_last_epoch_is_kept() -> None:
    x, y = _blobs()
    module = _mlp()
    res = train_classifier(
        module, x, y, None, None, 3, epochs=3, batch_size=32, lr=1e-2, weight_decay=0.0, seed=0
    )
    assert res.best_epoch == 3 and math.isnan(res.best_val_macro_f1)
    assert "val_macro_f1" not in res.history[0]


def test_training_without_validation_says_so(caplog: pytest.LogCaptureFixture) -> None:
    """Issue 20 item 11: the spectral transformer on a scene split without validation pixels
    trained every epoch with val_f1=nan and nothing said that no epoch was selected."""
    x, y = _blobs()
    with caplog.at_level(logging.WARNING, logger="cropscope"):
        train_classifier(_mlp(), x, y, None, None, 3, epochs=1, batch_size=32, lr=1e-2,
                         weight_decay=0.0, seed=0, patience=2, desc="spectral-transformer")
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "spectral-transformer: no validation samples" in warned[0]
    assert "last epoch is kept" in warned[0] and "patience has no effect" in warned[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cropscope"):
        train_classifier(_mlp(), x, y, x[:20], y[:20], 3, epochs=1, batch_size=32, lr=1e-2,
                         weight_decay=0.0, seed=0)  # with validation
        train_classifier(_mlp(), x, y, None, None, 3, epochs=1, batch_size=32, lr=1e-2,
                         weight_decay=0.0, seed=0, desc="tempcnn 2/3")  # said for 1/3 only
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_lone_last_sample_is_merged_for_batchnorm() -> None:
    x, y = _blobs(n=9)
    res = train_classifier(
        _mlp(), x, y, x, y, 3, epochs=2, batch_size=4, lr=1e-2, weight_decay=0.0, seed=0
    )  # batches 4, 4, 1 -> 4, 5
    assert len(res.history) == 2


def test_augment_fn_sees_every_training_batch() -> None:
    calls: list[int] = []

    def jitter(xb: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        calls.append(len(xb))
        return xb + 0.01 * torch.randn(xb.shape, generator=gen)

    _train(epochs=2, augment_fn=jitter)
    assert sum(calls) == 2 * 90


def test_progress_bar_goes_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    _train(epochs=2, progress=True)
    captured = capsys.readouterr()
    assert "val_f1" in captured.err and "loss" in captured.err
    assert captured.out == ""


def test_seed_everything_seeds_python_numpy_torch() -> None:
    seed_everything(11)
    a = (random.random(), np.random.rand(), torch.rand(1).item())  # noqa: NPY002
    seed_everything(11)
    b = (random.random(), np.random.rand(), torch.rand(1).item())  # noqa: NPY002
    assert a == b


class _Recorder(nn.Module):
    """A linear classifier that records which samples (the first feature is the sample's
    index) each training batch holds."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 3)
        self.norm = nn.BatchNorm1d(3)
        self.seen: list[list[int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.seen.append([int(v) for v in x[:, 0]])
        return self.norm(self.lin(x))


@pytest.mark.parametrize(("n", "batch_size"), [(21, 20), (61, 20), (9, 4), (40, 20)])
def test_a_lone_last_sample_is_folded_and_no_sample_trains_twice(n: int, batch_size: int) -> None:
    """Issue 20 item 3: with ``n = k * batch_size + 1`` the former loop folded the lone
    sample into the wrong batch (one batch trained twice, one never) or raised IndexError
    (``k = 1``). Every epoch must see every sample exactly once, in batches of >= 2."""
    x = np.stack([np.arange(n), np.ones(n)], axis=1).astype(np.float32)
    y = np.arange(n) % 3
    module = _Recorder()
    epochs = 3
    train_classifier(module, x, y, None, None, 3, epochs=epochs, batch_size=batch_size,
                     lr=1e-2, weight_decay=0.0, seed=0)
    per_epoch = -(-n // batch_size) - (n % batch_size == 1)
    assert len(module.seen) == epochs * per_epoch
    for e in range(epochs):
        batches = module.seen[e * per_epoch:(e + 1) * per_epoch]
        assert all(len(b) >= 2 for b in batches)
        assert sorted(i for b in batches for i in b) == list(range(n))


def test_tempcnn_trains_on_one_more_than_a_multiple_of_the_batch_size() -> None:
    from cropscope.models import create_model
    from tests.conftest import make_toy_set

    full = make_toy_set(n_per_class=21)  # 63 samples
    order = np.random.default_rng(0).permutation(full.n_samples)
    for n, batch_size in ((21, 20), (61, 20), (61, 60)):
        ts = full.subset(np.sort(order[:n]))
        model = create_model("tempcnn", filters=4, hidden=8, epochs=2, batch_size=batch_size,
                             val_fraction=0.0, device="cpu")
        model.fit(ts)
        assert model.predict_proba(ts).shape == (n, 3)


class _TwoLevels(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 16), nn.ReLU())
        self.heads = nn.ModuleList([nn.Linear(16, 2), nn.Linear(16, 3)])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.body(x)
        return [head(h) for head in self.heads]


@pytest.mark.parametrize("select_on", ["finest", "mean"])
def test_hierarchical_selection_on_the_finest_level_or_the_mean(select_on: str) -> None:
    x, y = _blobs()
    levels = np.stack([(y > 0).astype(np.int64), y], axis=1)
    levels[::7, 0] = -1  # unknown coarse labels are ignored
    res = train_classifier(_TwoLevels(), x[:90], levels[:90], x[90:], levels[90:], [2, 3],
                           epochs=5, batch_size=16, lr=1e-2, weight_decay=0.0, seed=0,
                           select_on=select_on)
    key = "val_macro_f1_mean" if select_on == "mean" else "val_macro_f1"
    assert ("val_macro_f1_mean" in res.history[0]) == (select_on == "mean")
    scores = [h[key] for h in res.history]
    assert res.best_val_macro_f1 == max(scores)
    assert res.best_epoch == scores.index(max(scores)) + 1
    with pytest.raises(Exception, match="select_on"):
        train_classifier(_TwoLevels(), x, levels, x, levels, [2, 3], epochs=1, batch_size=16,
                         lr=1e-2, weight_decay=0.0, seed=0, select_on="coarsest")
