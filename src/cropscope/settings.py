"""User settings read from the environment."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DATA_DIR_ENV", "data_dir"]

#: Environment variable naming the local data directory.
DATA_DIR_ENV = "CROPSCOPE_DATA_DIR"


def data_dir() -> Path:
    """The local data directory.

    ``$CROPSCOPE_DATA_DIR`` if set; otherwise ``../shared/data`` seen from the working
    directory or from the source checkout; otherwise ``~/.cache/cropscope/data`` (where
    downloads go).
    """
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    candidates = [
        Path.cwd() / ".." / "shared" / "data",
        Path(__file__).resolve().parents[2] / ".." / "shared" / "data",
    ]
    for cand in candidates:
        if cand.is_dir():
            return cand.resolve()
    return Path.home() / ".cache" / "cropscope" / "data"
