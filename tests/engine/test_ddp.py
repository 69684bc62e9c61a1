"""DDP scale-out on CPU: two gloo processes train a TempCNN and a tiny AgriFM, and the result
loads and predicts.

Lightning's ``ddp`` launcher starts the second process by running the calling script again,
so the training runs in a script of its own (a subprocess), never inside pytest.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("lightning")

from safetensors.torch import load_file  # noqa: E402

from cropscope.engine.checkpoints import read_last, read_weights  # noqa: E402
from cropscope.models import Classifier  # noqa: E402

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent('''
    """Trains with devices=2, strategy="ddp" on CPU; run as `python this.py OUT`."""
    import os
    import sys
    from pathlib import Path

    import numpy as np
    import torch

    torch.set_num_threads(1)


    def say(line):
        # one write() per line: the two processes share the pipe and must not interleave
        os.write(1, (line + "\\n").encode())


    from cropscope.data.readers.h5patches import ArrayPatchDataset
    from cropscope.data.timeseries import TimeSeriesSet
    from cropscope.models import create_model
    from cropscope.models.agrifm import AgriFM
    from cropscope.engine.checkpoints import write_weights
    from cropscope.engine.runner import is_global_zero
    from cropscope.engine.segmentation import train_segmentation

    out = Path(sys.argv[1])

    def toy_series(n_per_class=20, n_times=12, seed=0):
        rng = np.random.default_rng(seed)
        t = np.arange(n_times)
        values, labels = [], []
        for k in range(3):
            curve = np.exp(-0.5 * ((t - (k + 1) * n_times / 4) / 1.5) ** 2)
            for _ in range(n_per_class):
                s = np.stack([curve * 0.3, curve * 0.6], axis=1)
                values.append(s + rng.normal(0, 0.03, s.shape))
                labels.append(f"class_{k}")
        return TimeSeriesSet.from_labels(np.asarray(values, np.float32), ["B4", "B8"], labels)

    def checksum(module):
        return sum(float(v.double().sum()) for v in module.state_dict().values()
                   if v.is_floating_point())

    # ---- TempCNN on a TimeSeriesSet
    ts = toy_series()
    model = create_model("tempcnn", filters=8, hidden=16, epochs=6, batch_size=8, lr=1e-2,
                         val_fraction=0.2, device="cpu", devices=2, strategy="ddp")
    model.fit(ts, checkpoint_dir=out / "tempcnn_checkpoint")
    rank = os.environ.get("LOCAL_RANK", "?")  # set for the first process by the launch
    say(f"RANK {rank} TEMPCNN {checksum(model.module):.10e}")
    if is_global_zero():
        model.save(out / "tempcnn")

    # ---- a tiny AgriFM segmentation on generated patches
    rng = np.random.default_rng(1)
    samples = []
    for _ in range(10):
        s2 = rng.normal(0, 1, (4, 3, 16, 16)).astype(np.float32)
        label = (s2[:, 0].mean(0) > 0).astype(np.int64)
        samples.append(({"S2": s2}, label))
    torch.manual_seed(0)
    net = AgriFM({"S2": 3}, 2, preset=None, embed_dim=8, depths=(1, 1, 1, 1),
                 num_heads=(1, 2, 2, 4), decoder_dim=16)
    if is_global_zero():
        write_weights(out / "agrifm_init.safetensors", net.state_dict())
    res = train_segmentation(
        net, ArrayPatchDataset(samples[:8]), ArrayPatchDataset(samples[8:]),
        config={"epochs": 2, "batch_size": 2, "lr": 1e-3, "warmup_iters": 1, "device": "cpu",
                "devices": 2, "strategy": "ddp"},
        out_dir=out / "agrifm", progress=False)
    say(f"RANK {rank} AGRIFM {checksum(net):.10e} EPOCHS {res.epochs_done}")
''')


def _lines(stdout: str, tag: str) -> dict[str, str]:
    """``{rank: value}`` of the script's ``RANK r TAG value ...`` lines."""
    out = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0] == "RANK" and parts[2] == tag:
            out[parts[1]] = parts[3]
    return out


def test_ddp_on_two_cpu_processes(tmp_path: Path) -> None:
    script = tmp_path / "train_ddp.py"
    script.write_text(SCRIPT)
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    for var in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    proc = subprocess.run([sys.executable, str(script), str(out)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]

    # both processes trained and ended with the same weights
    tempcnn, agrifm = _lines(proc.stdout, "TEMPCNN"), _lines(proc.stdout, "AGRIFM")
    assert set(tempcnn) == set(agrifm) == {"0", "1"}, proc.stdout
    assert tempcnn["0"] == tempcnn["1"] and agrifm["0"] == agrifm["1"]

    # TempCNN: the saved model (written by the first process only) loads and predicts
    model = Classifier.load(out / "tempcnn")
    assert all(torch.isfinite(v).all() for v in model.module.state_dict().values())
    members = model.card.extra["members"]
    assert len(members) == 1 and members[0]["epochs_run"] == 6
    # the resume state of the first process, after every epoch
    last = read_last(out / "tempcnn_checkpoint" / "network-0")
    assert last["epoch"] == 6 and len(last["history"]) == 6
    rng = np.random.default_rng(0)
    t = np.arange(12)
    curves = [np.exp(-0.5 * ((t - (k + 1) * 3) / 1.5) ** 2) for k in range(3)]
    from cropscope.data.timeseries import TimeSeriesSet

    x = np.stack([np.stack([c * 0.3, c * 0.6], axis=1) + rng.normal(0, 0.03, (12, 2))
                  for c in curves for _ in range(5)]).astype(np.float32)
    truth = np.repeat([f"class_{k}" for k in range(3)], 5)
    test = TimeSeriesSet.from_labels(x, ["B4", "B8"], list(truth))
    predicted = np.asarray(model.classes)[model.predict(test)]
    assert (predicted == truth).mean() > 0.6

    # AgriFM: checkpoints of the first process, finite weights that moved from the init
    run = out / "agrifm"
    assert not list(run.glob("*.pt")) and not list(run.glob("*.tmp"))
    last = read_last(run)
    assert last["epoch"] == 2 and len(last["history"]) == 2
    assert all(np.isfinite(h["val_loss"]) for h in last["history"])
    best, meta = read_weights(run / "best.safetensors")
    init = load_file(str(out / "agrifm_init.safetensors"))
    assert set(best) == set(init) == set(last["model"])
    assert all(torch.isfinite(v).all() for v in last["model"].values())
    assert any(not torch.equal(init[k], last["model"][k]) for k in init)
    history = json.loads((run / "history.json").read_text())
    assert len(history["history"]) == 2 and history["best_epoch"] == meta["epoch"]
