"""TorchScript and ONNX export of a tiny AgriFM: outputs match eager mode; dynamic batch."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from cropscope.errors import CropscopeError, ModelError
from cropscope.models.agrifm import AgriFM
from cropscope.models.export import check_export, export_onnx, export_torchscript

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit in 2.1x

# window (8, 7, 7) on a 16 x 16 token grid: the shifted (rolled, masked) windows are traced
SMALL = {"preset": None, "embed_dim": 8, "depths": (2, 2, 1, 1), "num_heads": (1, 2, 2, 4),
         "decoder_dim": 16}


@pytest.fixture(scope="module")
def model() -> AgriFM:
    torch.manual_seed(0)
    return AgriFM({"S2": 4}, 3, **SMALL).eval()


def test_torchscript_matches_eager(model: AgriFM, tmp_path: Path) -> None:
    x = torch.randn(1, 4, 4, 32, 32)
    path = export_torchscript(model, x, tmp_path / "agrifm.pt")
    assert path.is_file()
    assert check_export(model, path, x) <= 1e-4
    loaded = torch.jit.load(str(path))
    with torch.no_grad():
        (out,) = loaded(x)
        torch.testing.assert_close(out, model(x), atol=1e-4, rtol=0)
    assert check_export(model, path, torch.randn(2, 4, 4, 32, 32)) <= 1e-4


def test_onnx_matches_eager_with_dynamic_batch(model: AgriFM, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    x = torch.randn(1, 4, 4, 32, 32)
    path = export_onnx(model, {"S2": x}, tmp_path / "agrifm.onnx")
    assert check_export(model, path, x) <= 1e-4
    assert check_export(model, path, torch.randn(3, 4, 4, 32, 32)) <= 1e-4


def test_hierarchical_two_source_onnx(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(1)
    model = AgriFM({"S2": 4, "MODIS": 3}, [2, 5], **SMALL).eval()
    inputs = {"S2": torch.randn(1, 3, 4, 24, 20), "MODIS": torch.randn(1, 2, 3, 6, 5)}
    path = export_onnx(model, inputs, tmp_path / "h.onnx", dynamic_batch=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["S2", "MODIS"]
    assert [o.name for o in session.get_outputs()] == ["logits0", "logits1"]
    assert check_export(model, path, inputs) <= 1e-4


def test_check_export_detects_a_different_model(model: AgriFM, tmp_path: Path) -> None:
    x = torch.randn(1, 4, 4, 32, 32)
    path = export_torchscript(model, x, tmp_path / "agrifm.pt")
    other = AgriFM({"S2": 4}, 3, **SMALL).eval()
    with pytest.raises(ModelError, match="differ"):
        check_export(other, path, x)


def test_missing_onnx_gives_install_hint(model: AgriFM, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(CropscopeError, match=r"cropscope\[export\]"):
        export_onnx(model, torch.randn(1, 4, 4, 32, 32), tmp_path / "x.onnx")
