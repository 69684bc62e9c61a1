"""``cropscope predict --device --inference-batch``: where and in what batches a deep model
maps a cube; the map is the same whatever the batch (CPU, float32), a device that is not
there is one error line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.cli.test_cli import assert_one_line_error, run_cli
from tests.conftest import make_toy_set


@pytest.mark.slow
def test_inference_batch_does_not_change_the_map(tmp_path: Path) -> None:
    rasterio = pytest.importorskip("rasterio")
    pytest.importorskip("torch")
    from cropscope.training.rundir import train_run
    from tests.mapping.test_job import N_TIMES, write_scene

    scene = write_scene(tmp_path / "cube")
    train = make_toy_set(n_per_class=15, n_times=N_TIMES, bands=("B4", "B8"))
    run = train_run(train, "tempcnn", tmp_path / "run", holdout=0.0,
                    config={"epochs": 2, "hidden": 8, "filters": 4, "device": "cpu"})
    maps = {}
    for name, extra in (("default", []), ("batched", ["--device", "cpu",
                                                      "--inference-batch", "7"])):
        out = tmp_path / name / "map.tif"
        run_cli("predict", "--model", str(run.run_dir), "--input", str(scene), "--out",
                str(out), "--tile", "32", "--threads", "1", *extra)
        with rasterio.open(out.with_name("map_probabilities.tif")) as src:
            maps[name] = src.read()
    np.testing.assert_array_equal(maps["batched"], maps["default"])
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        proc = run_cli("predict", "--model", str(run.run_dir), "--input", str(scene), "--out",
                       str(tmp_path / "gpu" / "map.tif"), "--device", "cuda", check=False)
        assert_one_line_error(proc, "cuda")
        assert not (tmp_path / "gpu" / "map.tif").exists()
    proc = run_cli("predict", "--model", str(run.run_dir), "--input", str(scene), "--out",
                   str(tmp_path / "bad" / "map.tif"), "--device", "tpu", check=False)
    assert_one_line_error(proc, "device")
