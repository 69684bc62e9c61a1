"""Public files pinned by URL and SHA-256: where they are found locally and how they are
fetched (the layer under datasets, taxonomies and crosswalk tables).

Files are looked up under the local data directory (:func:`cropscope.settings.data_dir`,
``$CROPSCOPE_DATA_DIR``) and then in the download cache ``~/.cache/cropscope/data``
(:func:`locate_files`). Missing files are downloaded with the standard library (``urllib``,
:func:`fetch`): streamed into a temporary file next to their destination, hashed on the way
and renamed onto the destination only when the SHA-256 matches, into the data directory, or
into the cache when the data directory is read-only. A failed or mismatched download leaves
nothing behind.
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cropscope.errors import DatasetNotFoundError
from cropscope.io import atomic_path
from cropscope.settings import DATA_DIR_ENV, data_dir

__all__ = [
    "RemoteFile",
    "Status",
    "cache_dir",
    "fetch",
    "files_status",
    "locate_files",
    "search_roots",
    "sha256_file",
]

#: whether files are all present (``local``), one is absent or one has the wrong size/hash
Status = Literal["local", "missing", "corrupt"]

_CHUNK = 1 << 20
_USER_AGENT = "cropscope-data-fetch"


def sha256_file(path: str | Path, chunk_size: int = _CHUNK) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def _progress_bar(total: int | None, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        file=sys.stderr,
        disable=not enabled,
        leave=False,
    )


def fetch(
    url: str,
    dest: str | Path,
    sha256: str | None,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest`` and check its SHA-256; return ``dest``.

    The file is streamed into a temporary file in ``dest``'s folder and renamed onto ``dest``
    only when the checksum matches (``sha256=None`` skips the check). Any failure (network,
    HTTP status, checksum) deletes the partial file and raises
    :class:`~cropscope.errors.DatasetNotFoundError` with one line naming the URL.
    ``file://`` URLs work too (useful for mirrors and tests).
    """
    dest = Path(dest)
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    digest = hashlib.sha256()
    try:
        with atomic_path(dest) as tmp:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                length = response.headers.get("Content-Length") if response.headers else None
                total = int(length) if length and length.isdigit() else None
                with open(tmp, "wb") as out, _progress_bar(total, dest.name, progress) as bar:
                    while block := response.read(_CHUNK):
                        out.write(block)
                        digest.update(block)
                        bar.update(len(block))
            got = digest.hexdigest()
            if sha256 is not None and got.lower() != sha256.lower():
                raise DatasetNotFoundError(
                    f"checksum mismatch for {url}: expected sha256 {sha256}, got {got}; "
                    "the partial download was deleted"
                )
    except urllib.error.HTTPError as exc:
        raise DatasetNotFoundError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise DatasetNotFoundError(f"cannot download {url}: {exc.reason}") from None
    except (TimeoutError, ConnectionError) as exc:
        raise DatasetNotFoundError(f"cannot download {url}: {exc}") from None
    except OSError as exc:
        raise DatasetNotFoundError(f"cannot download {url} to {dest}: {exc}") from None
    return dest


# ---------------------------------------------------------------------------- local files
@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset: local path (relative to the data directory) and its origin."""

    path: str
    url: str
    sha256: str
    size: int | None = None


def cache_dir() -> Path:
    """Download folder used when the data directory is read-only."""
    return Path.home() / ".cache" / "cropscope" / "data"


def search_roots(root: str | Path | None) -> list[Path]:
    """Where files are looked for: ``root`` if given, else the data directory and the cache."""
    if root is not None:
        return [Path(root).expanduser()]
    roots = [data_dir(), cache_dir()]
    return [r for i, r in enumerate(roots) if r not in roots[:i]]


def _file_status(root: Path, rf: RemoteFile, verify: bool) -> Status:
    path = root / rf.path
    if not path.is_file():
        return "missing"
    if rf.size is not None and path.stat().st_size != rf.size:
        return "corrupt"
    if verify and sha256_file(path) != rf.sha256.lower():
        return "corrupt"
    return "local"


def files_status(root: Path, files: list[RemoteFile], verify: bool) -> Status:
    """The worst status of ``files`` under ``root`` (sizes; with ``verify`` also SHA-256)."""
    states = [_file_status(root, rf, verify) for rf in files]
    if "corrupt" in states:
        return "corrupt"
    if "missing" in states:
        return "missing"
    return "local"


def _is_writable(folder: Path) -> bool:
    """True if files can be created in ``folder`` (created if needed).

    A folder without write permission bits counts as read-only even for the superuser.
    """
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        mode = existing.stat().st_mode
    except OSError:
        return False
    if not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) or not os.access(existing, os.W_OK):
        return False
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError:
        return False
    return True


def _download(
    name: str, files: list[RemoteFile], target: Path, searched: list[Path], progress: bool
) -> None:
    for rf in files:
        if _file_status(target, rf, verify=False) == "local":
            continue
        if not rf.url:
            raise DatasetNotFoundError(
                f"dataset {name!r}: {rf.path} has no public download URL; put it in {target} "
                "(see the dataset's description)"
            )
        try:
            fetch(rf.url, target / rf.path, rf.sha256, progress=progress)
        except DatasetNotFoundError as exc:
            where = ", ".join(str(r) for r in searched)
            raise DatasetNotFoundError(
                f"dataset {name!r}: {rf.path} not found locally (looked in {where}; "
                f"set ${DATA_DIR_ENV} to a folder that has it) and the download failed: {exc}"
            ) from None


def locate_files(
    name: str,
    files: list[RemoteFile],
    root: str | Path | None = None,
    download: bool = True,
    progress: bool = True,
) -> Path:
    """The folder holding every one of ``files`` (their ``path`` is relative to it).

    Looks in ``root`` if given, else in the data directory (``$CROPSCOPE_DATA_DIR``) and the
    download cache. With ``download=True`` missing files are fetched and SHA-256-checked into
    ``root`` or the data directory, or into the cache when that directory is read-only.
    ``name`` only labels error messages.
    """
    files = list(files)
    roots = search_roots(root)
    for candidate in roots:
        if files_status(candidate, files, verify=False) == "local":
            return candidate
    missing = [rf.path for rf in files if _file_status(roots[0], rf, False) != "local"]
    where = ", ".join(str(r) for r in roots)
    if not download:
        raise DatasetNotFoundError(
            f"dataset {name!r} is not available locally: {', '.join(missing)} missing or "
            f"incomplete in {where}; set ${DATA_DIR_ENV} or call with download=True"
        )
    target = Path(root).expanduser() if root is not None else data_dir()
    if not _is_writable(target):
        if root is not None:
            raise DatasetNotFoundError(
                f"dataset {name!r}: {', '.join(missing)} missing in {target}, which is read-only"
            )
        target = cache_dir()
    _download(name, files, target, roots, progress)
    return target
