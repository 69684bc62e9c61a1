"""Small file-system helpers shared by every writer: atomic writes and JSON."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "public_mode", "read_json", "to_jsonable", "write_json"]


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success.

    A failure inside the block leaves any existing file at ``path`` untouched. The file gets
    the permissions a newly created file gets under the user's umask (not the private
    0600 of a temporary file). ``suffix``: the temporary name's ending (some writers choose
    their format by it, e.g. ``".gpkg"``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.is_file():
            public_mode(tmp_path)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def public_mode(path: str | Path) -> None:
    """Give a file (0666) or folder (0777) created as private (``mkstemp``/``mkdtemp``)
    the permissions the user's umask gives new ones."""
    p = Path(path)
    os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~_umask())


def _default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def to_jsonable(data: Any) -> Any:
    """``data`` as plain JSON values (numpy scalars and arrays, tuples and paths converted),
    e.g. to store it in a validated run description."""
    return json.loads(json.dumps(data, default=_default))


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically (numpy scalars and arrays allowed)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=_default) + "\n")
    return path


def read_json(path: str | Path) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text())
