"""The one run directory format of cropscope (``run.json`` + manifest + safe weights).

- :mod:`cropscope.runs.schema`: :class:`RunSpec` / :class:`TimeGrid`, the validated contents
  of ``run.json``;
- :mod:`cropscope.runs.store`: complete-or-absent run directories (manifest with sha256 of
  every file, written last; loading verifies it; paths never leave the directory);
- :mod:`cropscope.runs.state`: training state (weights, optimiser, scheduler, RNG) as
  safetensors + JSON, never pickle.

This package sits in the core layer: it knows no model. Building a model from a run is
:func:`cropscope.models.load_run_model`'s job.
"""

from __future__ import annotations

from cropscope.runs.schema import KINDS, RUN_FILE, RunSpec, TimeGrid, check_name
from cropscope.runs.store import (
    MANIFEST_FILE,
    STUDY_FILE,
    RunDir,
    begin_run,
    check_replaceable,
    checkpoint_folder,
    file_sha256,
    finish_run,
    first_process,
    inside,
    is_run_dir,
    open_run,
    staged_run,
)

__all__ = [
    "KINDS",
    "MANIFEST_FILE",
    "RUN_FILE",
    "STUDY_FILE",
    "RunDir",
    "RunSpec",
    "TimeGrid",
    "begin_run",
    "check_name",
    "check_replaceable",
    "checkpoint_folder",
    "file_sha256",
    "finish_run",
    "first_process",
    "inside",
    "is_run_dir",
    "open_run",
    "staged_run",
]
