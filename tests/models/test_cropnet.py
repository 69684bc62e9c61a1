from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import cropscope.models._torch as torch_base  # noqa: E402
from cropscope.models import create_model  # noqa: E402
from cropscope.models.cropnet import CropNet, CropNetModule  # noqa: E402
from tests.conftest import make_toy_set  # noqa: E402

FAST = {"channels": 8, "epochs": 15, "batch_size": 32, "lr": 1e-2, "device": "cpu"}


def test_module_shapes_follow_the_paper() -> None:
    net = CropNetModule(n_classes=7)
    x = torch.randn(4, 1, 10, 43)
    assert net.features[0](x).shape == (4, 128, 5, 22)  # only the first block downsamples
    assert net.features(x).shape == (4, 128, 5, 22)
    assert net(x).shape == (4, 7)
    n_params = sum(p.numel() for p in net.parameters())
    conv = 1 * 128 * 9 + 7 * 128 * 128 * 9
    assert n_params == conv + 8 * 2 * 128 + 129 * 7  # convs + BN affine + head (~1.036 M)
    drops = [m.p for m in net.modules() if isinstance(m, torch.nn.Dropout2d)]
    assert drops == [0.2, 0.3, 0.3, 0.4]
    assert all(m.bias is None for m in net.modules() if isinstance(m, torch.nn.Conv2d))


def test_module_initialisation() -> None:
    torch.manual_seed(0)
    net = CropNetModule(n_classes=5)
    conv = net.features[1][0].weight  # 128 -> 128, fan_out = 128 * 9
    assert conv.std().item() == pytest.approx(np.sqrt(2 / (128 * 9)), rel=0.05)
    assert net.head.weight.std().item() == pytest.approx(np.sqrt(2 / 128), rel=0.15)
    assert torch.all(net.head.bias == 0)
    bn = net.features[0][1]
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)


@pytest.mark.parametrize(("c", "t"), [(1, 5), (2, 12), (6, 23)])
def test_module_any_input_size_and_backward(c: int, t: int) -> None:
    net = CropNetModule(n_classes=3, channels=8)
    x = torch.randn(5, 1, c, t)
    out = net(x)
    assert out.shape == (5, 3)
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_defaults_follow_the_paper() -> None:
    cfg = CropNet.default_config()
    assert (cfg["lr"], cfg["batch_size"], cfg["epochs"], cfg["weight_decay"]) == (1e-4, 256, 50, 0)
    assert cfg["augment"] is True and cfg["channels"] == 128
    assert cfg["dropout"] == [0.2, 0.3, 0.3, 0.4]


def test_fit_predict_on_toy_data() -> None:
    ts = make_toy_set(n_per_class=20)
    model = CropNet(**FAST).fit(ts)
    assert (model.predict(ts) == ts.labels).mean() >= 0.9
    assert model.card.input_layout.startswith("bands x time")
    assert model.card.extra["n_train"] == 3 * 54  # 90 % of 60, plus two augmented copies
    assert model.card.extra["augment_step_days"] == 30.0


def test_augmentation_uses_the_training_split_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The validation samples never reach the (augmented) training data."""
    seen: dict[str, object] = {}
    real_augment, real_train = torch_base.augment_training_set, torch_base.train_classifier

    def spy_augment(train, window, aug, seed):
        seen["aug_in_ids"] = train.ids.copy()
        out = real_augment(train, window, aug, seed)
        seen["aug_out_ids"] = out.ids.copy()
        return out

    def spy_train(module, x_train, y_train, x_val, y_val, n_classes, **kw):
        seen["x_train"], seen["x_val"] = x_train, x_val
        return real_train(module, x_train, y_train, x_val, y_val, n_classes, **kw)

    monkeypatch.setattr(torch_base, "augment_training_set", spy_augment)
    monkeypatch.setattr(torch_base, "train_classifier", spy_train)
    ts = make_toy_set(n_per_class=20)
    ts = ts.replace(ids=np.arange(ts.n_samples) + 1000)
    model = CropNet(**{**FAST, "epochs": 1, "val_fraction": 0.25})
    model.fit(ts)

    x_val = seen["x_val"]
    assert len(x_val) == model.card.extra["n_val"] == 15
    # the validation rows are exactly 15 of the input samples, none inside the training rows
    x_all = model._prepare(ts)
    train_rows = {r.tobytes() for r in seen["x_train"]}
    val_idx = [i for i, r in enumerate(x_all) if any(np.array_equal(r, v) for v in x_val)]
    assert len(val_idx) == 15
    assert not any(x_all[i].tobytes() in train_rows for i in val_idx)
    val_ids = set(ts.ids[val_idx].tolist())
    assert val_ids.isdisjoint(seen["aug_in_ids"].tolist())
    assert val_ids.isdisjoint(seen["aug_out_ids"].tolist())
    assert len(seen["aug_out_ids"]) == 3 * 45

    # an explicit validation set is never augmented into training either
    seen.clear()
    CropNet(**{**FAST, "epochs": 1}).fit(ts.subset(slice(0, 40)), ts.subset(slice(40, 60)))
    assert set(seen["aug_in_ids"].tolist()) == set(ts.ids[:40].tolist())


def test_no_augmentation_when_disabled() -> None:
    ts = make_toy_set(n_per_class=10)
    model = create_model("cropnet", **{**FAST, "epochs": 1, "augment": False, "val_fraction": 0.0})
    model.fit(ts)
    assert model.card.extra["n_train"] == ts.n_samples and model.card.extra["n_val"] == 0
