"""Training time on an idle and on a loaded machine, at the old and the new thread defaults.

Each measurement runs in a fresh process (OpenMP reads its settings when it loads), on the
sits Mato Grosso NDVI samples: a TempCNN fit (``--epochs``) and a LightGBM fit
(``--trees``). "Loaded" means one other CPU-bound process (``python -c 'while True:
pass'``) runs during the measurement. Settings:

- ``old``: what cropscope did before :mod:`cropscope.threads`: torch, LightGBM and
  scikit-learn loaded with OpenMP's default spin-then-sleep wait policy, every core
  (torch's default, LightGBM ``n_jobs=-1``);
- ``new``: today's default: passive OpenMP wait policy and the load-aware thread count;
- ``N``: ``CROPSCOPE_THREADS=N`` (passive wait policy).

``--demo`` instead times ``cropscope demo`` (the ``make demo`` job, venv built) idle and
with one CPU-bound process running, at the default thread settings, and prints the ratio
(acceptance: loaded at most 2x idle). ``--demo --old`` approximates the old defaults there
(OpenMP's own wait policy, every core).

    python benchmarks/bench_threads.py                   # fits: old / new / 1 / 2 threads
    python benchmarks/bench_threads.py --demo            # make demo, idle vs loaded

Timings depend on everything else the machine runs: state the conditions with them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATASET = "sits-matogrosso-ndvi"

_CHILD = r"""
import json, os, sys, time
model, setting, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
if setting == "old":  # the OpenMP runtimes load before cropscope can set the wait policy
    import torch, lightgbm, sklearn.ensemble  # noqa: F401
from cropscope.data.registry import load_dataset
from cropscope.models.registry import create_model
from cropscope.threads import current_threads
ts = load_dataset(sys.argv[4])
config = {"seed": 0}
if model == "tempcnn":
    config["epochs"] = size
else:
    config["n_estimators"] = size
    if setting == "old":
        config["n_jobs"] = -1
m = create_model(model, **config)
start = time.perf_counter()
m.fit(ts)
seconds = time.perf_counter() - start
threads = current_threads()
if model == "tempcnn":
    import torch
    threads = torch.get_num_threads()
elif setting == "old":
    threads = os.cpu_count()
print(json.dumps({"seconds": seconds, "threads": threads}))
"""


class Burner:
    """One CPU-bound process for the duration of a ``with`` block."""

    def __enter__(self) -> Burner:
        self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.kill()
        self.proc.wait()


def fit_once(model: str, setting: str, size: int) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "CROPSCOPE_THREADS")}
    if setting == "old":
        env["CROPSCOPE_THREADS"] = str(os.cpu_count() or 1)
    elif setting != "new":
        env["CROPSCOPE_THREADS"] = setting
    out = subprocess.run([sys.executable, "-c", _CHILD, model, setting, str(size), DATASET],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def load_1min() -> float:
    return os.getloadavg()[0]


def bench_fits(args: argparse.Namespace) -> None:
    rows = []
    for model, size in (("tempcnn", args.epochs), ("lightgbm", args.trees)):
        for setting in args.settings.split(","):
            for loaded in (False, True):
                load = load_1min()
                if loaded:
                    with Burner():
                        res = fit_once(model, setting, size)
                else:
                    res = fit_once(model, setting, size)
                row = {"model": model, "setting": setting,
                       "machine": "loaded" if loaded else "idle",
                       "threads": res["threads"], "seconds": round(res["seconds"], 2),
                       "loadavg_before": round(load, 2)}
                rows.append(row)
                print(f"{model:9s} {setting:4s} {row['machine']:6s} threads={row['threads']!s:3s}"
                      f" {row['seconds']:7.2f} s   (1-min load before: {load:.2f})",
                      flush=True)
    if args.json:
        print(json.dumps(rows))


def bench_demo(args: argparse.Namespace) -> None:
    exe = Path(sys.executable).with_name("cropscope")
    times = {}
    for loaded in (False, True):
        out = Path(tempfile.mkdtemp(prefix="demo_threads_"))
        cmd = [str(exe), "demo", "--out", str(out)] + (["--threads", args.threads]
                                                       if args.threads else [])
        env = dict(os.environ)
        if args.old:  # an unknown value: libgomp warns and keeps its default policy
            env.update(OMP_WAIT_POLICY="OPENMP-DEFAULT", CROPSCOPE_THREADS=str(os.cpu_count()))
        load = load_1min()
        start = time.perf_counter()
        if loaded:
            with Burner():
                subprocess.run(cmd, check=True, capture_output=True, env=env)
        else:
            subprocess.run(cmd, check=True, capture_output=True, env=env)
        key = "loaded" if loaded else "idle"
        times[key] = time.perf_counter() - start
        shutil.rmtree(out, ignore_errors=True)
        print(f"cropscope demo, {key:6s}: {times[key]:6.1f} s (1-min load before: {load:.2f})",
              flush=True)
    print(f"loaded / idle = {times['loaded'] / times['idle']:.2f} (acceptance: <= 2)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=5, help="TempCNN epochs")
    parser.add_argument("--trees", type=int, default=150, help="LightGBM trees")
    parser.add_argument("--settings", default="old,new,1,2",
                        help="comma-separated: old, new, or a thread count")
    parser.add_argument("--demo", action="store_true", help="time cropscope demo instead")
    parser.add_argument("--threads", default=None, help="--threads for the demo")
    parser.add_argument("--old", action="store_true", help="the demo at the old defaults")
    parser.add_argument("--json", action="store_true", help="also print the rows as JSON")
    args = parser.parse_args()
    if args.demo:
        bench_demo(args)
    else:
        bench_fits(args)


if __name__ == "__main__":
    main()
