"""Safe reading of third-party checkpoints: the official mmengine training checkpoints
load without mmengine through torch's weights-only unpickler; anything else a file names is
refused before it runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from cropscope.errors import ModelError
from cropscope.models.checkpoint_reader import LoggedHistory, read_checkpoint

OFFICIAL = "official_reference"


def _official(real_data_dir: Path) -> Path:
    folder = real_data_dir / OFFICIAL
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    return folder


@pytest.mark.realdata
@pytest.mark.parametrize(("ckpt", "state", "n_keys"), [
    ("agrifm_small_train_ckpt.pth", "agrifm_small_state_dict.safetensors", 123),
    ("h2crop_small_train_ckpt.pth", "h2crop_small_state_dict.safetensors", 192),
])
def test_official_training_checkpoints_load_without_mmengine(
        real_data_dir: Path, ckpt: str, state: str, n_keys: int) -> None:
    folder = _official(real_data_dir)
    got = read_checkpoint(folder / ckpt)
    assert got.layout == "mmengine" and len(got.state_dict) == n_keys
    assert {"epoch", "iter", "seed"} <= set(got.meta)
    assert set(got.extra) == {"message_hub", "optimizer", "param_schedulers"}
    history = got.extra["message_hub"]["log_scalars"]["train/loss"]
    assert isinstance(history, LoggedHistory) and len(history.values()) > 0
    ref = read_checkpoint(folder / state)
    assert ref.layout == "safetensors" and list(got.state_dict) == list(got.state_dict)
    assert set(got.state_dict) == set(ref.state_dict)
    for key, value in ref.state_dict.items():
        assert torch.equal(got.state_dict[key], value), key


class _Evil:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):  # what a malicious checkpoint carries
        return (os.system, (f"touch {self.target}",))


class _GetattrAbuse:
    def __reduce__(self):  # reach a method through the one allowed getattr
        import numpy as np

        return (getattr, (np.ndarray, "tofile"))


@pytest.mark.parametrize("payload", ["system", "getattr", "class"])
def test_other_pickled_objects_are_refused_and_nothing_runs(tmp_path: Path,
                                                            payload: str) -> None:
    target = tmp_path / "pwned"
    evil = {"system": _Evil(target), "getattr": _GetattrAbuse(),
            "class": torch.nn.Linear(2, 2)}[payload]
    path = tmp_path / "ckpt.pth"
    torch.save({"meta": {"epoch": 1}, "state_dict": {"w": torch.zeros(2)}, "x": evil}, path)
    with pytest.raises(ModelError, match="not allowed"):
        read_checkpoint(path)
    assert not target.exists()


def test_bare_state_dicts_and_bad_files(tmp_path: Path) -> None:
    torch.save({"a": torch.ones(3)}, tmp_path / "bare.pth")
    got = read_checkpoint(tmp_path / "bare.pth")
    assert got.layout == "state-dict" and torch.equal(got.state_dict["a"], torch.ones(3))
    torch.save({"model": {"b": torch.zeros(1)}, "epoch": 3}, tmp_path / "wrapped.pth")
    assert list(read_checkpoint(tmp_path / "wrapped.pth").state_dict) == ["b"]
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="safely"):
        read_checkpoint(tmp_path / "junk.pth")
    (tmp_path / "zipjunk.pth").write_bytes(b"PK\x03\x04garbage")
    for name in ("junk.pth", "zipjunk.pth"):
        with pytest.raises(ModelError) as exc:
            read_checkpoint(tmp_path / name)
        # never torch's advice to load with weights_only=False
        assert "weights_only" not in str(exc.value) and len(str(exc.value)) < 300
    torch.save({"state_dict": {"a": "text"}}, tmp_path / "strings.pth")
    with pytest.raises(ModelError, match="non-tensors"):
        read_checkpoint(tmp_path / "strings.pth")
    with pytest.raises(ModelError, match="no checkpoint"):
        read_checkpoint(tmp_path / "none.pth")


def test_inspect_checkpoint_command(tmp_path: Path) -> None:
    import json

    from tests.cli.test_cli import assert_one_line_error, run_cli

    torch.save({"state_dict": {"w": torch.zeros(2, 3)}, "meta": {"epoch": 2}},
               tmp_path / "ok.pth")
    out = json.loads(run_cli("models", "inspect-checkpoint", str(tmp_path / "ok.pth"),
                             "--keys").stdout)
    assert out["parameters"] == 6 and out["keys"] == {"w": [2, 3]}
    target = tmp_path / "pwned"
    torch.save({"state_dict": {}, "x": _Evil(target)}, tmp_path / "evil.pth")
    proc = run_cli("models", "inspect-checkpoint", str(tmp_path / "evil.pth"), check=False)
    assert_one_line_error(proc, "system", "not allowed")
    assert proc.returncode == 2 and not target.exists()
