"""Run directories on disk: complete or absent, verified on load, paths kept inside.

A run directory is *complete* only when its ``manifest.json`` exists: it is written last and
lists every file of the run with its size and sha256. :func:`open_run` refuses a directory
without one (an interrupted or failed training), a file whose checksum differs (a damaged or
tampered weights file), and any path that would leave the directory.

Two ways to write one:

- :func:`staged_run` (everything written at the end, e.g. a classifier): files go to a hidden
  temporary folder beside the target, which is renamed onto the target only when complete;
  a failure leaves the old run (if any) untouched.
- :func:`begin_run` / :func:`finish_run` (long trainings that checkpoint as they go and can
  resume): :func:`begin_run` first removes the manifest, so from then until
  :func:`finish_run` writes a new one the folder is not a loadable run.

A staged training that checkpoints (a deep classifier) keeps its resume state in
:func:`checkpoint_folder`, a hidden folder beside the target that survives a failure and is
removed once the run is complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cropscope.errors import ModelError
from cropscope.io import public_mode, write_json
from cropscope.runs.schema import RUN_FILE, RunSpec

__all__ = [
    "MANIFEST_FILE",
    "STUDY_FILE",
    "RunDir",
    "begin_run",
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

MANIFEST_FILE = "manifest.json"
#: the Optuna study (SQLite, with its journal files) a tuning keeps in its run folder
STUDY_FILE = ".study.db"
_MAX_MANIFEST_BYTES = 4 * 1024 * 1024
_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def inside(root: Path, relative: str | Path) -> Path:
    """``root / relative``, refused when it would leave ``root`` (``..``, absolute, links)."""
    rel = Path(relative)
    if rel.is_absolute() or any(part == ".." for part in rel.parts):
        raise ModelError(f"path {str(relative)!r} leaves the run directory {root}")
    target = (root / rel).resolve()
    base = root.resolve()
    if target != base and base not in target.parents:
        raise ModelError(f"path {str(relative)!r} leaves the run directory {root}")
    return root / rel


def first_process() -> bool:
    """Whether this is the first process of a (possibly distributed, DDP) training: only it
    writes run directories. Read from the launcher's environment (``RANK``, ``LOCAL_RANK``,
    ``NODE_RANK``), so it is right before the process group exists too."""
    return all(os.environ.get(key, "0") == "0" for key in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def is_run_dir(path: str | Path) -> bool:
    """True for a directory holding ``run.json`` (complete or not)."""
    return (Path(path) / RUN_FILE).is_file()


@dataclass
class RunDir:
    """A verified, complete run directory."""

    path: Path
    spec: RunSpec
    files: dict[str, str]

    def file(self, relative: str, *, required: bool = True) -> Path | None:
        """A file of the run (listed in the manifest), its path checked to stay inside."""
        path = inside(self.path, relative)
        if relative not in self.files:
            if required:
                raise ModelError(f"{self.path} has no {relative} (listed files: "
                                 f"{', '.join(sorted(self.files)) or 'none'})")
            return None
        return path


def _list_files(root: Path) -> list[str]:
    out = []
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            raise ModelError(f"{path} is a symbolic link; run directories hold plain files")
        if path.is_file() and path.name != MANIFEST_FILE and not path.name.startswith(".") \
                and not path.name.endswith(".tmp"):
            out.append(path.relative_to(root).as_posix())
    return out


def _write_manifest(root: Path) -> dict[str, str]:
    files = {rel: file_sha256(root / rel) for rel in _list_files(root)}
    write_json(root / MANIFEST_FILE, {"format": "cropscope-manifest", "sha256": files})
    return files


def begin_run(out_dir: str | Path) -> Path:
    """Mark ``out_dir`` as a run in progress (no manifest: not loadable until finished)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ModelError(f"--out {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_FILE).unlink(missing_ok=True)
    return out


def finish_run(out_dir: str | Path, spec: RunSpec) -> RunDir:
    """Write ``run.json`` and then the manifest of every file: the run is now complete."""
    out = Path(out_dir)
    write_json(out / RUN_FILE, spec.to_dict())
    files = _write_manifest(out)
    return RunDir(out, spec, files)


def checkpoint_folder(out_dir: str | Path) -> Path:
    """``.<name>.checkpoint`` beside the run ``out_dir``: the resume state of a staged
    training, kept until the run is complete."""
    out = Path(out_dir)
    return out.parent / f".{out.name}.checkpoint"


def check_replaceable(out_dir: str | Path) -> None:
    """Refuse (:class:`ModelError`) an ``--out`` that a run may not replace: a file, or a
    folder that holds anything but an earlier run or the study a tuning keeps there while it
    searches (:data:`STUDY_FILE`). Replacing such a folder would delete the user's files."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ModelError(f"--out {out} exists and is not a directory")
    if not out.is_dir() or is_run_dir(out):
        return
    others = [p.name for p in out.iterdir() if not p.name.startswith(STUDY_FILE)]
    if others:
        raise ModelError(f"--out {out} exists and is not a cropscope run (a run replaces its "
                         "folder whole); give a new or empty folder, or an earlier run")


@contextmanager
def staged_run(out_dir: str | Path) -> Iterator[Path]:
    """A temporary folder beside ``out_dir`` to write a whole run into.

    On success (after the caller has called :func:`finish_run` on the yielded folder) the
    folder replaces ``out_dir``; on failure it is deleted and ``out_dir`` is left as it was.
    Only an empty folder or an earlier run (``run.json``) is replaced: any other existing
    folder is refused before anything runs, since replacing it would delete the user's files.
    """
    out = Path(out_dir)
    check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    public_mode(tmp)
    try:
        yield tmp
        if not (tmp / MANIFEST_FILE).is_file():
            raise RuntimeError("staged_run: finish_run was not called on the staged folder")
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.{os.getpid()}.old"
            if old.exists():
                shutil.rmtree(old)
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _read_manifest(root: Path) -> dict[str, str]:
    path = root / MANIFEST_FILE
    if not path.is_file():
        raise ModelError(
            f"{root} is not a complete run: no {MANIFEST_FILE} (the training that wrote it did "
            "not finish; train again, or resume it)")
    if path.stat().st_size > _MAX_MANIFEST_BYTES:
        raise ModelError(f"{path} is too large to be a run manifest")
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path} is not valid JSON: {exc}") from None
    files = data.get("sha256") if isinstance(data, dict) else None
    if not isinstance(files, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and len(v) == 64 for k, v in files.items()
    ):
        raise ModelError(f"{path} is not a cropscope run manifest")
    return dict(files)


def open_run(run_dir: str | Path, *, verify: bool = True) -> RunDir:
    """The complete run at ``run_dir``: manifest present, checksums equal, spec valid."""
    root = Path(run_dir)
    if not root.exists():
        raise ModelError(f"run directory not found: {root}")
    if not root.is_dir():
        raise ModelError(f"{root} is not a run directory")
    if not (root / RUN_FILE).is_file():
        raise ModelError(f"{root} is not a cropscope run directory (no {RUN_FILE})")
    files = _read_manifest(root)
    if RUN_FILE not in files:
        raise ModelError(f"{root}: the manifest does not cover {RUN_FILE}")
    for rel, expected in files.items():
        path = inside(root, rel)
        if not path.is_file():
            raise ModelError(f"{root} is damaged: {rel} is missing")
        if verify and file_sha256(path) != expected:
            raise ModelError(f"{root} is damaged or was modified: the checksum of {rel} "
                             "differs from the run's manifest")
    spec = RunSpec.read(root / RUN_FILE)
    return RunDir(root, spec, files)
