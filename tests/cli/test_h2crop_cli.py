"""``cropscope h2crop``: generate → train → evaluate → experiment → params, through click."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
from click.testing import CliRunner

from cropscope.cli.main import cli

QUICK = ["--epochs", "1", "--batch-size", "2", "--device", "cpu", "--normalise", "train",
         "--no-progress"]


def _ok(args: list[str]) -> str:
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_generate_train_evaluate(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _ok(["h2crop", "generate", str(data), "--samples", "8", "--size", "24", "--hyper-size", "8",
         "--hyper-bands", "12", "--keys", "code"])
    sample = next((data / "h5_data").glob("*.h5"))
    with h5py.File(sample) as f:
        assert sorted(f) == ["EnMAP_data", "S2_data", "label", "priors"]
        assert f["S2_data"].shape == (12, 10, 24, 24) and f["S2_data"].dtype == "int16"
    assert (data / "data_list" / "train.txt").is_file()

    run = tmp_path / "run"
    out = _ok(["h2crop", "train", str(data), "--out", str(run), "--config", "S2+H+P",
               "--months", "8", *QUICK])
    summary = json.loads(out[out.index("{"):])
    assert summary["config"] == "S2+H+P" and summary["months"] == 8
    assert (run / "test" / "levels.csv").is_file()

    table = _ok(["h2crop", "evaluate", str(run), "--split", "val", "--device", "cpu",
                 "--out", str(tmp_path / "val")])
    assert "level4" in table and "changed" in table
    levels = json.loads((tmp_path / "val" / "levels.json").read_text())
    assert len(levels["levels"]) == 4


def test_experiment_and_params(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _ok(["h2crop", "generate", str(data), "--samples", "8", "--size", "24", "--hyper-size", "8",
         "--hyper-bands", "12"])
    out = _ok(["h2crop", "experiment", str(data), "--out", str(tmp_path / "exp"),
               "--configs", "S2,S2+H", "--months", "6", *QUICK])
    assert "enmap_gain_f1" in out and "S2+H" in out
    counts = _ok(["h2crop", "params", "--preset", "reference", "--months", "6"])
    lines = dict(line.split()[:2] for line in counts.strip().splitlines())
    assert float(lines["S2"]) == 115.01 and float(lines["S2+H"]) == 175.50


def test_bad_configuration_is_a_usage_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _ok(["h2crop", "generate", str(data), "--samples", "4", "--size", "24", "--hyper-size", "8",
         "--hyper-bands", "12"])
    result = CliRunner().invoke(cli, ["h2crop", "experiment", str(data), "--out",
                                      str(tmp_path / "x"), "--configs", "S2,H"])
    assert result.exit_code != 0 and "unknown configuration" in result.output


def test_official_recipe_from_agrifm_weights(tmp_path: Path) -> None:
    """``--recipe official --init-agrifm FILE``: the S2 encoder starts from the file (a
    vanishing learning rate keeps it there), run.json records the recipe and the file's
    hash, and the official best-epoch score is logged."""
    import torch
    from safetensors.torch import save_file

    from cropscope.models.h2crop import H2CropNet
    from cropscope.runs.store import file_sha256
    from cropscope.training.h2crop import load_h2crop_run

    data = tmp_path / "data"
    _ok(["h2crop", "generate", str(data), "--samples", "8", "--size", "24", "--hyper-size", "8",
         "--hyper-bands", "12"])
    torch.manual_seed(7)
    donor = H2CropNet(config="S2", levels=[7, 37, 83, 102], months=6)
    weights = tmp_path / "agrifm.safetensors"
    save_file({k: v.contiguous() for k, v in donor.s2.state_dict().items()}, str(weights))
    run = tmp_path / "run"
    _ok(["h2crop", "train", str(data), "--out", str(run), "--config", "S2", "--months", "6",
         "--recipe", "official", "--init-agrifm", str(weights), "--set", "lr=1e-12", *QUICK])
    spec = json.loads((run / "run.json").read_text())
    training = spec["training"]
    assert training["recipe"] == "official" and training["decay_all"] is True
    assert training["init_agrifm"]["sha256"] == file_sha256(weights)
    assert training["init_agrifm"]["loaded"] > 0
    history = json.loads((run / "history.json").read_text())["history"]
    assert "val_mfscore_mean" in history[0]
    trained = load_h2crop_run(run).s2.state_dict()
    body = [k for k in trained if k.startswith(("backbones.", "stems."))]
    assert body and all(torch.allclose(trained[k], donor.s2.state_dict()[k], atol=1e-6)
                        for k in body)
    # the decoder was not taken from the file
    assert not torch.allclose(trained["decoder.out.0.weight"],
                              donor.s2.state_dict()["decoder.out.0.weight"])
