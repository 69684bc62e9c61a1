"""Relabelling maps: minimum mapping unit (sieve), reclassification with masks, taxonomy
roll-up, mosaics of tiles — streamed, complete COGs with class names and styles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from cropscope.errors import DataError
from cropscope.mapping.relabel import (
    mosaic_maps,
    read_map_classes,
    reclassify_map,
    rollup_map,
    sieve_map,
)
from cropscope.taxonomy import Taxonomy

T = Affine(10, 0, 500_000, 0, -10, 8_000_000)


def _write(path: Path, data: np.ndarray, classes: list[str] | None,
           transform: Affine = T) -> Path:
    data = data[None] if data.ndim == 2 else data
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1],
                       count=data.shape[0], dtype="uint8", nodata=255, crs="EPSG:32721",
                       transform=transform) as dst:
        dst.write(data)
        if classes:
            dst.update_tags(**{f"class_{i}": c for i, c in enumerate(classes)})
    return path


def _speckled(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lab = np.repeat(np.repeat(rng.integers(0, 3, (8, 10)), 12, 0), 12, 1).astype(np.uint8)
    lab[rng.random(lab.shape) < 0.05] = rng.integers(0, 3)
    lab[40:42, 50:53] = 2  # a 6-pixel patch
    lab[:3, :3] = 255
    return lab


def _components(lab: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    sizes = []
    for k in np.unique(lab[lab != 255]):
        comp, _ = ndimage.label(lab == k, structure=np.ones((3, 3)))
        sizes += list(np.bincount(comp.ravel())[1:])
    return np.array(sizes)


def test_sieve_enforces_the_minimum_unit_and_tiles_do_not_show(tmp_path: Path) -> None:
    lab = _speckled()
    src = _write(tmp_path / "map.tif", lab, ["maize", "soy", "forest"])
    whole = sieve_map(src, tmp_path / "whole.tif", 8, tile=4096)
    tiled = sieve_map(src, tmp_path / "tiled.tif", 8, tile=16)
    with rasterio.open(whole) as a, rasterio.open(tiled) as b:
        wa, wb = a.read(1), b.read(1)
        assert a.tags()["class_1"] == "soy" and a.colormap(1)[0][:3] == (0xF5, 0xC5, 0x18)
    assert _components(wa).min() >= 8 and _components(lab).min() < 8
    assert (wa[:3, :3] == 255).all() and (wa[lab != 255] != 255).all()
    assert (wa != wb).mean() < 0.01  # only a patch between two large regions may differ
    assert whole.with_suffix(".qml").is_file()
    assert sorted(p.name for p in tmp_path.iterdir() if "work" in p.name) == []
    with pytest.raises(DataError, match="minimum mapping unit"):
        sieve_map(src, tmp_path / "x.tif", 1)


def test_reclassify_merges_classes_and_applies_a_mask(tmp_path: Path) -> None:
    lab = _speckled()
    src = _write(tmp_path / "map.tif", lab, ["maize", "soy", "forest"])
    mask = np.zeros_like(lab)
    mask[:, :20] = 7
    mpath = _write(tmp_path / "water.tif", mask, None)
    out = reclassify_map(src, tmp_path / "crop.tif", {"maize": "crop", "soy": "crop"},
                         mask=mpath, mask_values=[7], mask_class="water")
    assert read_map_classes(out) == ["crop", "forest", "water"]
    with rasterio.open(out) as o:
        new = o.read(1)
    valid = lab != 255
    assert (new[valid & (mask == 7)] == 2).all()
    rest = valid & (mask != 7)
    np.testing.assert_array_equal(new[rest], np.where(lab[rest] == 2, 1, 0))
    assert (new[~valid] == 255).all()
    with pytest.raises(DataError, match="not classes"):
        reclassify_map(src, tmp_path / "y.tif", {"cotton": "crop"})
    bad = _write(tmp_path / "bad.tif", mask[:50], None)
    with pytest.raises(DataError, match="grid"):
        reclassify_map(src, tmp_path / "z.tif", {}, mask=bad)
    before = src.read_bytes()
    with pytest.raises(DataError, match="is the input map"):  # over itself: refused
        reclassify_map(src, tmp_path / "." / "map.tif", {"maize": "crop"})
    assert src.read_bytes() == before


def test_rollup_one_map_per_level(tmp_path: Path) -> None:
    tax = Taxonomy.from_paths([("crop", "cereal", "maize"), ("crop", "oilseed", "soy"),
                               ("natural", "woody", "forest")],
                              levels=["group", "family", "class"])
    lab = _speckled()
    src = _write(tmp_path / "map.tif", lab, ["maize", "soy", "forest"])
    outs = rollup_map(src, tax, tmp_path / "levels")
    assert list(outs) == ["group", "family", "class"]
    assert read_map_classes(outs["group"]) == ["crop", "natural"]
    with rasterio.open(outs["group"]) as g:
        grp = g.read(1)
    np.testing.assert_array_equal(grp[lab != 255], np.where(lab[lab != 255] == 2, 1, 0))
    other = _write(tmp_path / "o.tif", lab, ["maize", "cotton", "forest"])
    with pytest.raises(DataError, match="cotton"):
        rollup_map(other, tax, tmp_path / "l2")


def test_mosaic_of_tiles_equals_the_whole(tmp_path: Path) -> None:
    lab = _speckled()
    whole = _write(tmp_path / "whole.tif", lab, ["maize", "soy", "forest"])
    left = _write(tmp_path / "a.tif", lab[:, :60], ["maize", "soy", "forest"])
    right = _write(tmp_path / "b.tif", lab[:, 50:], ["maize", "soy", "forest"],
                   transform=T * Affine.translation(50, 0))
    out = mosaic_maps([left, right], tmp_path / "mosaic.tif", mem_limit_mb=1)
    with rasterio.open(out) as m, rasterio.open(whole) as w:
        np.testing.assert_array_equal(m.read(1), w.read(1))
        assert m.transform == w.transform and m.tags()["class_2"] == "forest"
    other = _write(tmp_path / "c.tif", lab, ["maize", "cotton", "forest"])
    with pytest.raises(DataError, match="other classes"):
        mosaic_maps([left, other], tmp_path / "m2.tif")


def test_relabelling_resumes_and_pickles_for_dask(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import pickle

    import cropscope.mapping.job as job
    from cropscope.mapping.relabel import _LookupOp, _RelabelModel, _SieveOp

    lab = _speckled()
    src = _write(tmp_path / "map.tif", lab, ["maize", "soy", "forest"])
    ref = sieve_map(src, tmp_path / "ref.tif", 8, tile=32)

    class Crash(Exception):
        pass

    real = job.run_map_job
    seen = []

    def crashing(*args, **kw):
        def on_window(window):
            seen.append(window.index)
            if len(seen) == 3:
                raise Crash

        return real(*args, **kw, on_window=on_window)

    with monkeypatch.context() as m:
        m.setattr(job, "run_map_job", crashing)
        with pytest.raises(Crash):
            sieve_map(src, tmp_path / "out.tif", 8, tile=32)
    assert not (tmp_path / "out.tif").exists()  # nothing half-written
    journal = tmp_path / ".out.tif.relabel" / "map_job.json"
    assert journal.is_file()
    out = sieve_map(src, tmp_path / "out.tif", 8, tile=32)
    with rasterio.open(out) as a, rasterio.open(ref) as b:
        np.testing.assert_array_equal(a.read(1), b.read(1))
    assert not journal.parent.exists()
    # the operations travel to Dask workers by pickle
    model = _RelabelModel(["a", "b"], _SieveOp(8, 8), 8, T)
    again = pickle.loads(pickle.dumps(model))
    assert again.name == model.name == "sieve(size=8,connectivity=8)"
    lut = pickle.loads(pickle.dumps(_LookupOp(np.arange(256, dtype=np.uint8))))
    assert lut(np.array([[3]]), None)[0, 0] == 3


def test_mosaic_of_probability_tiles_and_first_wins(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    q = rng.integers(0, 255, (3, 30, 40)).astype(np.uint8)
    q[:, :2, :2] = 255
    names = ["maize", "soy", "forest"]
    whole = _write(tmp_path / "whole.tif", q, names)
    a = _write(tmp_path / "a.tif", q[:, :, :25], names)
    b = _write(tmp_path / "b.tif", q[:, :, 20:], names, transform=T * Affine.translation(20, 0))
    out = mosaic_maps([a, b], tmp_path / "m.tif", tile=16)
    with rasterio.open(out) as m, rasterio.open(whole) as w:
        np.testing.assert_array_equal(m.read(), w.read())
    # where tiles overlap, the first one given wins
    other = q.copy()
    other[:, :, 20:25] = 7
    b2 = _write(tmp_path / "b2.tif", other[:, :, 20:], names,
                transform=T * Affine.translation(20, 0))
    first_b = mosaic_maps([b2, a], tmp_path / "m2.tif")
    with rasterio.open(first_b) as m:
        assert (m.read()[:, 2:, 20:25] == 7).all()
    # one band without classes (uncertainty): merged in one pass
    u = _write(tmp_path / "u.tif", q[:1, :, :25], None)
    u2 = _write(tmp_path / "u2.tif", q[:1, :, 20:], None, transform=T * Affine.translation(20, 0))
    with rasterio.open(mosaic_maps([u, u2], tmp_path / "u.m.tif")) as m:
        np.testing.assert_array_equal(m.read(1), q[0])
    off = _write(tmp_path / "off.tif", q[:, :, 20:], names,
                 transform=T * Affine.translation(20.5, 0))
    with pytest.raises(DataError, match="grid"):
        mosaic_maps([a, off], tmp_path / "m3.tif")


def test_rollup_from_a_hierarchical_run(tmp_path: Path) -> None:
    from cropscope.data.samples import attach_taxonomy
    from cropscope.models.registry import hierarchical_model
    from cropscope.training.rundir import train_run
    from tests.conftest import make_toy_set

    tax = Taxonomy.from_paths([("crop", "class_0"), ("crop", "class_1"),
                               ("natural", "class_2")], levels=["group", "class"])
    ts = attach_taxonomy(make_toy_set(n_per_class=8), tax)
    name, config = hierarchical_model("rf", {"n_estimators": 5})
    train_run(ts, name, tmp_path / "run", config=config, holdout=0)
    lab = _speckled()
    src = _write(tmp_path / "map.tif", lab, ["class_0", "class_1", "class_2"])
    outs = rollup_map(src, tmp_path / "run", tmp_path / "levels")
    assert read_map_classes(outs["group"]) == ["crop", "natural"]
    flat = tmp_path / "flat"
    train_run(make_toy_set(n_per_class=8), "rf", flat, config={"n_estimators": 5}, holdout=0)
    with pytest.raises(DataError, match="no class hierarchy"):
        rollup_map(src, flat, tmp_path / "l2")
