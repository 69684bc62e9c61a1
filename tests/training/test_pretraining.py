"""Supervised pretraining on a class raster and loading the encoder for fine-tuning."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from cropscope.errors import ModelError
from cropscope.training.pretraining import (
    encode_classes,
    fraction_loss,
    guess_head_prefixes,
    load_pretrained,
    pretrain_segmentation,
    read_class_raster,
    read_pretrained,
)
from tests.engine.test_segmentation import TinySeg

FAST = {"epochs": 3, "batch_size": 4, "lr": 5e-2, "warmup_iters": 1, "device": "cpu"}


def _scene(h: int = 24, w: int = 24) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Codes 10/20/30 from the S2 band-0 level, 255 = nodata in one corner."""
    rng = np.random.default_rng(0)
    s2 = rng.normal(0, 1, (2, 2, h, w)).astype(np.float32)
    codes = np.array([10, 20, 30])[np.digitize(s2[:, 0].mean(0), [-0.3, 0.3])]
    codes[:3, :3] = 255
    return {"S2": s2}, codes


def _write_tif(path: Path, codes: np.ndarray, origin: tuple[float, float]) -> None:
    with rasterio.open(path, "w", driver="GTiff", width=codes.shape[1], height=codes.shape[0],
                       count=1, dtype="uint8", crs="EPSG:32631", nodata=255,
                       transform=from_origin(*origin, 10, 10)) as dst:
        dst.write(codes.astype(np.uint8), 1)


def test_read_class_raster_as_stored_and_reprojected(tmp_path: Path) -> None:
    _, codes = _scene(8, 8)
    path = tmp_path / "lc.tif"
    _write_tif(path, codes, (1000.0, 2000.0))
    raw = read_class_raster(path)
    assert raw.dtype == np.int64 and (raw[:3, :3] == -1).all()
    np.testing.assert_array_equal(raw[3:, 3:], codes[3:, 3:])
    # a grid shifted by one pixel east and south: the last row/column is outside the raster
    shifted = read_class_raster(path, crs="EPSG:32631", shape=(8, 8),
                                transform=(10, 0, 1010.0, 0, -10, 1990.0))
    np.testing.assert_array_equal(shifted[:7, :7][2:, 2:], codes[1:, 1:][2:, 2:])
    assert (shifted[7] == -1).all() and (shifted[:, 7] == -1).all()


def test_encode_classes() -> None:
    labels, codes = encode_classes(np.array([[30, 10], [-1, 99]]), ignore=[99])
    assert codes == [10, 30]
    assert labels.tolist() == [[1, 0], [-1, -1]]


def test_fraction_loss_prefers_matching_fractions() -> None:
    labels = torch.tensor([[[0, 0], [1, -1]]])
    good = torch.tensor([[[[5.0, 5.0], [-5.0, 0.0]], [[-5.0, -5.0], [5.0, 0.0]]]])
    bad = -good
    assert float(fraction_loss(good, labels)) < float(fraction_loss(bad, labels))
    # the minimum is the entropy of the true fractions (2/3, 1/3)
    entropy = -(2 / 3 * np.log(2 / 3) + 1 / 3 * np.log(1 / 3))
    assert float(fraction_loss(good * 10, labels)) == pytest.approx(entropy, abs=1e-3)
    assert float(fraction_loss(good, torch.full_like(labels, -1))) == 0.0


@pytest.mark.parametrize("objective", ["pixel", "both"])
def test_pretrain_then_load_into_a_new_head(tmp_path: Path, objective: str) -> None:
    sources, codes = _scene()
    path = tmp_path / "lc.tif"
    _write_tif(path, codes, (0.0, 240.0))
    target = read_class_raster(path)
    torch.manual_seed(0)
    model = TinySeg({"S2": 2}, levels=3)
    res = pretrain_segmentation(model, sources, target, tmp_path / "pre", size=8,
                                objective=objective, config=FAST, progress=False)
    assert res.class_codes == [10, 20, 30] and res.n_tiles == 9
    assert res.head_prefixes == ["heads.0."]
    hist = res.training.history
    assert hist[-1]["loss"] < hist[0]["loss"]
    assert res.encoder_path.name == "encoder.safetensors"
    saved = read_pretrained(res.encoder_path)
    assert saved and not any(k.startswith("heads.") for k in saved)
    meta = json.loads((tmp_path / "pre" / "encoder.json").read_text())
    assert meta["class_codes"] == [10, 20, 30] and meta["excluded_prefixes"] == ["heads.0."]
    assert read_pretrained(tmp_path / "pre").keys() == saved.keys()  # the folder

    fine = TinySeg({"S2": 2}, levels=5)
    head_before = fine.heads[0].weight.clone()
    report = load_pretrained(fine, res.encoder_path, exclude=())
    assert "enc.S2.weight" in report.loaded
    assert torch.equal(fine.enc["S2"].weight, model.enc["S2"].weight)
    assert torch.equal(fine.heads[0].weight, head_before)
    assert set(report.missing) == {"heads.0.weight", "heads.0.bias"}
    # a whole-model checkpoint: the head is skipped by shape, or by the exclude prefix
    report = load_pretrained(fine, tmp_path / "pre" / "last.safetensors", exclude=())
    assert sorted(report.shape_mismatch) == ["heads.0.bias", "heads.0.weight"]
    report = load_pretrained(fine, tmp_path / "pre" / "last.json", exclude=("heads.",))
    assert report.excluded == ["heads.0.weight", "heads.0.bias"]
    assert "excluded 2" in report.summary()


def test_pretraining_resumes(tmp_path: Path) -> None:
    sources, codes = _scene()
    target = np.where(codes == 255, -1, codes)
    a = TinySeg({"S2": 2}, levels=3)
    r1 = pretrain_segmentation(a, sources, target, tmp_path, size=12, config=FAST,
                               progress=False, stop_after=1)
    assert r1.training.epochs_done == 1
    r2 = pretrain_segmentation(TinySeg({"S2": 2}, levels=3), sources, target, tmp_path,
                               size=12, config=FAST, progress=False)
    assert r2.training.resumed_from == 1 and r2.training.epochs_done == 3


def test_head_guess_and_errors(tmp_path: Path) -> None:
    class WithHead(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = torch.nn.Conv2d(2, 4, 1)
            self.head = torch.nn.Conv2d(4, 3, 1)

    assert guess_head_prefixes(WithHead(), 3) == ["head."]
    with pytest.raises(ModelError, match="head"):
        guess_head_prefixes(torch.nn.Conv2d(2, 4, 1), 3)
    torch.save({"x": torch.zeros(1)}, tmp_path / "w.pt")
    with pytest.raises(ModelError, match="no tensor"):
        load_pretrained(WithHead(), tmp_path / "w.pt")
