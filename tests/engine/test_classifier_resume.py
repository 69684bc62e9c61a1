"""Resumable classifier training: an interrupted training continued from its checkpoint
folder ends with the weights of an uninterrupted one; a changed input is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from cropscope.engine.checkpoints import BEST_FILE, has_last, read_last  # noqa: E402
from cropscope.engine.tasks import ClassificationTask  # noqa: E402
from cropscope.errors import ModelError  # noqa: E402
from cropscope.training import TrainResult, seed_everything, train_classifier  # noqa: E402


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(75) % 3
    centres = np.eye(3, 4, dtype=np.float32) * 1.5
    return centres[y] + rng.normal(0, 0.7, (75, 4)).astype(np.float32), y


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2),
                         nn.Linear(16, 3))


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return x + 0.05 * torch.randn(x.shape, generator=gen)


def _train(folder: Path | None, *, resume: bool = True, x: np.ndarray | None = None,
           **kw: object) -> tuple[nn.Module, TrainResult]:
    xd, y = _data()
    xd = xd if x is None else x
    seed_everything(3)
    module = _net()
    opts: dict = {"epochs": 6, "batch_size": 8, "lr": 1e-2, "weight_decay": 1e-4, "seed": 3,
                  "lr_decay": 0.9, "augment_fn": _augment}
    opts.update(kw)
    res = train_classifier(module, xd[:60], y[:60], xd[60:], y[60:], 3,
                           checkpoint_dir=folder, resume=resume, **opts)
    return module, res


class _Interrupted(Exception):
    pass


def _interrupt_after(monkeypatch: pytest.MonkeyPatch, epoch: int) -> None:
    real = ClassificationTask._write_checkpoint

    def write_then_stop(self: ClassificationTask, e: int, **kw: bool) -> None:
        real(self, e, **kw)
        if e == epoch:
            raise _Interrupted

    monkeypatch.setattr(ClassificationTask, "_write_checkpoint", write_then_stop)


def _same(a: nn.Module, b: nn.Module) -> None:
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(va, vb, rtol=0, atol=0, msg=k)


def test_interrupted_training_resumes_to_the_uninterrupted_weights(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plain, ref = _train(None)
    with monkeypatch.context() as m:
        _interrupt_after(m, 2)
        with pytest.raises(_Interrupted):
            _train(tmp_path / "ck")
    assert has_last(tmp_path / "ck") and read_last(tmp_path / "ck")["epoch"] == 2
    resumed, res = _train(tmp_path / "ck")
    assert res.resumed_from == 2
    assert [h["loss"] for h in res.history] == [h["loss"] for h in ref.history]
    assert res.best_epoch == ref.best_epoch and res.best_val_macro_f1 == ref.best_val_macro_f1
    _same(resumed, plain)
    # a finished training is not trained again: its result comes from the checkpoint
    again, res2 = _train(tmp_path / "ck")
    assert res2.resumed_from == 6 and res2.best_epoch == ref.best_epoch
    _same(again, plain)


def test_a_changed_input_is_refused_and_no_resume_starts_over(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as m:
        _interrupt_after(m, 1)
        with pytest.raises(_Interrupted):
            _train(tmp_path / "ck")
    x, _ = _data()
    x[0, 0] += 1.0
    with pytest.raises(ModelError, match="training data changed"):
        _train(tmp_path / "ck", x=x)
    with pytest.raises(ModelError, match="lr changed"):
        _train(tmp_path / "ck", lr=5e-3)
    _, res = _train(tmp_path / "ck", x=x, resume=False, epochs=2)
    assert res.resumed_from == 0 and len(res.history) == 2
    assert read_last(tmp_path / "ck")["epoch"] == 2


def test_patience_stop_is_remembered(tmp_path: Path) -> None:
    _, first = _train(tmp_path / "ck", epochs=40, patience=1, lr=0.2)
    assert len(first.history) < 40  # stopped early
    assert (tmp_path / "ck" / BEST_FILE).is_file()
    _, again = _train(tmp_path / "ck", epochs=40, patience=1, lr=0.2)
    assert again.resumed_from == len(first.history)
    assert again.best_epoch == first.best_epoch
