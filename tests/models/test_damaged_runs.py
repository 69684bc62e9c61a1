"""Damaged run folders (issue 20 item 8): a weights file cut or altered and then
re-listed in the manifest (so only the weights readers can notice), and bare model folders
without a manifest. Every case is one :class:`ModelError`; nothing crashes the process."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cropscope.errors import ModelError
from cropscope.models import Classifier, load_run_model
from cropscope.runs import MANIFEST_FILE, RUN_FILE
from cropscope.runs.store import _write_manifest
from cropscope.training.rundir import train_run
from tests.conftest import make_toy_set

CONFIGS = {
    "lightgbm": {"n_estimators": 5, "min_child_samples": 2},
    "rf": {"n_estimators": 3},
    "quant": {"n_estimators": 3},
    "logreg": {},
    "svm": {},
    "lda": {},
    "tempcnn": {"epochs": 1, "batch_size": 16, "hidden": 8, "filters": 4, "device": "cpu"},
}
WEIGHTS = {"lightgbm": "lightgbm.txt", "rf": "forest.skops", "quant": "forest.skops",
           "logreg": "logreg.npz",
           "svm": "svm.skops", "lda": "lda.npz",
           "tempcnn": "weights.safetensors"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("runs")
    ts = make_toy_set(n_per_class=8)
    for name, config in CONFIGS.items():
        train_run(ts, name, base / name, config=config, holdout=0)
        assert (base / name / WEIGHTS[name]).is_file()
    return {name: base / name for name in CONFIGS}


def test_a_cut_lightgbm_model_never_crashes_the_process(runs: dict[str, Path],
                                                        tmp_path: Path) -> None:
    """A truncated LightGBM text model made LightGBM's parser read past the end of the
    file (a segmentation fault). Cut at many points, each load is one ModelError; run in a
    child process so that a crash fails this test instead of killing the test run."""
    code = textwrap.dedent(f"""
        import shutil
        from pathlib import Path
        from cropscope.errors import ModelError
        from cropscope.models import load_run_model
        from cropscope.runs.store import _write_manifest
        src = Path({str(runs["lightgbm"])!r})
        whole = (src / "lightgbm.txt").read_bytes()
        cuts = sorted({{int(len(whole) * f) for f in
                       (0, 0.01, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 0.99)}} | {{len(whole) - 30}})
        for i, cut in enumerate(cuts):
            run = Path({str(tmp_path)!r}) / f"cut{{i}}"
            shutil.copytree(src, run)
            (run / "lightgbm.txt").write_bytes(whole[:cut])
            _write_manifest(run)  # re-listed: only the reader can tell
            try:
                load_run_model(run)
            except ModelError as exc:
                assert "LightGBM" in str(exc), exc
            else:
                raise AssertionError(f"cut at {{cut}} loaded")
        tampered = Path({str(tmp_path)!r}) / "sizes"
        shutil.copytree(src, tampered)
        text = whole.decode()
        line = next(l for l in text.splitlines() if l.startswith("tree_sizes="))
        sizes = [int(v) for v in line.split("=")[1].split()]
        sizes[0] += 5000  # a header that points past the end
        (tampered / "lightgbm.txt").write_text(
            text.replace(line, "tree_sizes=" + " ".join(map(str, sizes))))
        _write_manifest(tampered)
        try:
            load_run_model(tampered)
        except ModelError:
            pass
        else:
            raise AssertionError("tree_sizes past the end loaded")
        print("ok", len(cuts))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr[-2000:]}"
    assert proc.stdout.startswith("ok")


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_cut_or_altered_weights_are_one_model_error(runs: dict[str, Path], tmp_path: Path,
                                                    name: str) -> None:
    import shutil

    whole = (runs[name] / WEIGHTS[name]).read_bytes()
    for i, data in enumerate([whole[: len(whole) // 2], whole[:8], b"",
                              bytes(b ^ 0x5A for b in whole[:64]) + whole[64:]]):
        run = Path(shutil.copytree(runs[name], tmp_path / f"{name}{i}"))
        (run / WEIGHTS[name]).write_bytes(data)
        _write_manifest(run)
        with pytest.raises(ModelError):
            load_run_model(run)
    assert isinstance(load_run_model(runs[name]), Classifier)  # the intact run loads


def test_bare_model_folders_are_not_runs(runs: dict[str, Path], tmp_path: Path) -> None:
    """A folder with model.json and weights but no run.json/manifest (Classifier.save, an
    interrupted write, a copy of part of a run) is refused before anything is read."""
    import shutil

    bare = Path(shutil.copytree(runs["lightgbm"], tmp_path / "bare"))
    (bare / MANIFEST_FILE).unlink()
    (bare / RUN_FILE).unlink()
    (bare / "lightgbm.txt").write_bytes((bare / "lightgbm.txt").read_bytes()[:100])
    with pytest.raises(ModelError, match="not a complete run"):
        load_run_model(bare)


def test_hostile_member_and_layout_paths_run_nothing(tmp_path: Path) -> None:
    """Issue 20 item 1: an ensemble member or a hierarchical layout.json entry that names a
    module or a path out of the run (``../..``), with the manifest rewritten to agree."""
    import json

    from cropscope.models import save_classifier_run
    from cropscope.models.registry import create_model
    from tests.models.test_hierarchical import hier_sets

    ts = make_toy_set(n_per_class=8)
    ens = create_model("ensemble", members=[{"model": "logreg", "config": {}},
                                            {"model": "rf", "config": {"n_estimators": 3}}])
    save_classifier_run(ens.fit(ts), tmp_path / "ens")
    train, _ = hier_sets()
    hier = create_model("hierarchical", base="logreg", strategy="per-level").fit(train)
    save_classifier_run(hier, tmp_path / "hier")
    (tmp_path / "outside").mkdir()
    for name in ("os:system", "../../outside", "rf/../../../outside"):
        run = tmp_path / "ens"
        meta = json.loads((run / "model.json").read_text())
        meta["config"]["members"][0]["model"] = name
        (run / "model.json").write_text(json.dumps(meta))
        _write_manifest(run)
        with pytest.raises(ModelError, match="model"):  # unknown or invalid model name
            load_run_model(run)
    layout = tmp_path / "hier" / "layout.json"
    data = json.loads(layout.read_text())
    entry = next(e for e in data["models"] if "dir" in e)
    for bad in ("../../outside", "/etc", "level0/../../.."):
        entry["dir"] = bad
        layout.write_text(json.dumps(data))
        _write_manifest(tmp_path / "hier")
        with pytest.raises(ModelError, match="leaves the run directory"):
            load_run_model(tmp_path / "hier")
