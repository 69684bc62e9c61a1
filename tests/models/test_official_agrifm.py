"""AgriFM against the official code (flyakon/AgriFM @ 13f476e2): the official checkpoints
load through cropscope's loader, and with ``compat="official"`` every stored case output
is reproduced to max relative error <= 1e-5 (../shared/data/official_reference)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cropscope.models.agrifm import AgriFM
from cropscope.models.agrifm_checkpoint import load_agrifm_checkpoint, remap_agrifm_state_dict
from tests.conftest import shared_folder

pytestmark = pytest.mark.realdata

CASES = ["a_T8_112px", "b_T8_64px_clipped", "c_T6_48px_stempad_B2", "d_T8_53x43_oddmerge",
         "e_T8_56px_featuresize"]
@pytest.fixture(scope="module")
def folder(real_data_dir: Path) -> Path:
    return shared_folder(real_data_dir, "official_reference")


@pytest.fixture(scope="module")
def small(folder: Path) -> dict:
    """The small official configuration as AgriFM options (configs.json's
    cropscope_equivalent), computing as the official code."""
    eq = json.loads((folder / "configs.json").read_text())["agrifm_small"]
    options = {k: v for k, v in eq["cropscope_equivalent"].items()
               if k not in ("note", "num_classes")}
    return {**options, "preset": None, "compat": "official"}


def _rel(got: torch.Tensor, want: torch.Tensor) -> float:
    assert tuple(got.shape) == tuple(want.shape)
    return float((got - want).abs().max() / want.abs().max())


@pytest.mark.parametrize("case", CASES)
def test_official_outputs_reproduced(folder: Path, small: dict, case: str,
                                     restore_threads: None) -> None:
    from safetensors import safe_open

    torch.set_num_threads(1)  # the stored outputs were made on 1 thread
    with safe_open(str(folder / f"agrifm_case_{case}.safetensors"), "pt") as f:
        meta = f.metadata()
        stored = {k: f.get_tensor(k) for k in f.keys()}
    x = stored["input.S2"].float()
    model = AgriFM({"S2": 10}, 2, num_frames=int(x.shape[1]),
                   feature_size=json.loads(meta["neck.feature_size"]), **small)
    report = load_agrifm_checkpoint(model, folder / "agrifm_small_train_ckpt.pth")
    assert not (report.missing or report.unexpected or report.mismatched)
    model.eval()
    with torch.no_grad():
        logits = model({"S2": x})
        levels = model.encode("S2", x)
    assert list(logits.shape[-2:]) == json.loads(meta["neck.out_size"])
    errors = {"logits": _rel(logits, stored["logits"]),
              "encoder_features": _rel(levels[3], stored["encoder_features"])}
    for i in range(3):
        errors[f"features_list.{i}"] = _rel(levels[i], stored[f"features_list.{i}"])
    assert max(errors.values()) <= 1e-5, errors


def test_checkpoints_load_without_loss(folder: Path, small: dict) -> None:
    model = AgriFM({"S2": 10}, 2, num_frames=8, **small)
    for name in ("agrifm_small_train_ckpt.pth", "agrifm_small_state_dict.safetensors"):
        report = load_agrifm_checkpoint(model, folder / name)
        assert len(report.loaded) == 118  # 123 official keys less 5 derived index buffers
        assert not (report.missing or report.unexpected or report.mismatched)


def test_full_size_key_manifest_maps_one_to_one(folder: Path) -> None:
    spec = json.loads((folder / "agrifm_base_keys.json").read_text())["finetune_model"]
    with torch.device("meta"):
        model = AgriFM({"S2": 10}, 2, "base", patch_size=(4, 2, 2), window_size=(8, 7, 7),
                       decoder_dim=1024, temporal="flatten", num_frames=32, compat="official")
        fake = {k: torch.empty(v) for k, v in spec["shapes"].items()}
    mapped = remap_agrifm_state_dict(fake)
    own = model.state_dict()
    assert sorted(own) == sorted(mapped)  # 0 missing, 0 unexpected
    assert [k for k in own if tuple(own[k].shape) != tuple(mapped[k].shape)] == []
    assert sum(p.numel() for p in model.parameters()) == spec["param_counts"]["total"] \
        == 196_192_458


def test_import_official_checkpoint_as_a_run(folder: Path, small: dict, tmp_path: Path,
                                             restore_threads: None) -> None:
    from safetensors import safe_open

    from cropscope.models.runs import load_run_model
    from cropscope.models.segmentation_map import SegmentationRunModel
    from tests.cli.test_cli import assert_one_line_error, run_cli

    torch.set_num_threads(1)
    options = {k: v for k, v in small.items() if k != "compat"}
    config = tmp_path / "config.json"
    config.write_text(json.dumps({**options, "sources": {"S2": 10}, "num_classes": 2,
                                  "num_frames": 8, "feature_size": [7, 7]}))
    proc = run_cli("models", "import", "--official", str(folder / "agrifm_small_train_ckpt.pth"),
                   "--network", "agrifm", "--config", str(config), "--classes",
                   "other,cropland", "--out", str(tmp_path / "run"))
    assert json.loads(proc.stdout)["classes"] == ["other", "cropland"]
    model = load_run_model(tmp_path / "run")
    assert isinstance(model, SegmentationRunModel) and model.bands[0] == "B2"
    with safe_open(str(folder / "agrifm_case_a_T8_112px.safetensors"), "pt") as f:
        x, want = f.get_tensor("input.S2").float(), f.get_tensor("logits")
    with torch.no_grad():
        got = model.network({"S2": x})
    assert float((got - want).abs().max() / want.abs().max()) <= 1e-5
    # the wrong configuration: nothing written, one error line
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**options, "sources": {"S2": 10}, "num_classes": 2,
                               "num_frames": 8, "decoder_dim": 16}))
    proc = run_cli("models", "import", "--official", str(folder / "agrifm_small_train_ckpt.pth"),
                   "--network", "agrifm", "--config", str(bad), "--out",
                   str(tmp_path / "run2"), check=False)
    assert_one_line_error(proc)
    assert proc.returncode == 2 and not (tmp_path / "run2").exists()
