"""Public files pinned by URL and SHA-256: where they are found locally and how they are
fetched (the layer under datasets, taxonomies and crosswalk tables).

Files are looked up under the local data directory (:func:`cropscope.settings.data_dir`,
``$CROPSCOPE_DATA_DIR``) and then in the download cache ``~/.cache/cropscope/data``
(:func:`locate_files`). Missing files are downloaded with the standard library (``urllib``,
:func:`fetch`): streamed into a temporary file next to their destination, hashed on the way
and renamed onto the destination only when the SHA-256 matches, into the data directory, or
into the cache when the data directory is read-only. A failed or mismatched download leaves
nothing behind. Local files are verified against the registered SHA-256 before use
(:func:`locate_files`), the checksum cached by size and modification time.

Any input file that a checksum list beside it or in a folder above lists
(``MANIFEST.sha256`` / ``SHA256SUMS`` in ``sha256sum`` format, as the shared data folder
has) is verified the same way before it is read (:func:`verify_listed`): formats without
an internal checksum (a JPEG2000 with flipped bytes decodes to other values without any
error) cannot be trusted otherwise.
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

from cropscope.errors import DataError, DatasetNotFoundError
from cropscope.io import atomic_path
from cropscope.settings import DATA_DIR_ENV, data_dir

__all__ = [
    "RemoteFile",
    "Status",
    "cache_dir",
    "cached_sha256",
    "fetch",
    "files_status",
    "listed_sha256",
    "locate_files",
    "search_roots",
    "sha256_file",
    "verify_listed",
    "write_checksum_list",
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


def _checksum_cache() -> Path:
    """The JSON file of known checksums (``{path: [size, mtime_ns, sha256]}``)."""
    return cache_dir().parent / "sha256-cache.json"


_MAX_CACHE_ENTRIES = 10_000


def _read_cache() -> dict[str, Any]:
    import json

    path = _checksum_cache()
    try:
        if path.stat().st_size > 16 << 20:
            return {}
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def cached_sha256(path: str | Path) -> str:
    """SHA-256 of a local file, remembered by path, size and modification time (in
    ``~/.cache/cropscope/sha256-cache.json``): a file is hashed again only when it changed.
    The cache is best effort (a read-only home only means hashing every time)."""
    path = Path(path).resolve()
    st = path.stat()
    key = str(path)
    cache = _read_cache()
    entry = cache.get(key)
    if isinstance(entry, list) and len(entry) == 3 and entry[:2] == [st.st_size,
                                                                     st.st_mtime_ns]:
        return str(entry[2])
    digest = sha256_file(path)
    _remember(cache, path, digest)
    return digest


def _remember(cache: dict[str, Any] | None, path: Path, digest: str) -> None:
    """Store ``digest`` as the checksum of ``path`` as it is now (best effort)."""
    import json

    cache = _read_cache() if cache is None else cache
    path = Path(path).resolve()
    st = path.stat()
    cache[str(path)] = [st.st_size, st.st_mtime_ns, digest]
    if len(cache) > _MAX_CACHE_ENTRIES:
        cache = dict(list(cache.items())[-_MAX_CACHE_ENTRIES:])
    try:
        target = _checksum_cache()
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            tmp.write_text(json.dumps(cache))
    except OSError:
        pass


def _file_status(root: Path, rf: RemoteFile, verify: bool) -> Status:
    path = root / rf.path
    if not path.is_file():
        return "missing"
    if rf.size is not None and path.stat().st_size != rf.size:
        return "corrupt"
    if verify and rf.sha256 and cached_sha256(path) != rf.sha256.lower():
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
        if _file_status(target, rf, verify=True) == "local":
            continue
        if not rf.url:
            raise DatasetNotFoundError(
                f"dataset {name!r}: {rf.path} has no public download URL; put it in {target} "
                "(see the dataset's description)"
            )
        try:
            fetch(rf.url, target / rf.path, rf.sha256, progress=progress)
            _remember(None, target / rf.path, rf.sha256.lower())  # verified on the way in
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
    download cache; a folder counts only when every file has the registered size and SHA-256
    (:func:`cached_sha256`: hashed once, then again only when its size or modification time
    changes). With ``download=True`` missing files are fetched and SHA-256-checked into
    ``root`` or the data directory, or into the cache when that directory is read-only.
    ``name`` only labels error messages.
    """
    files = list(files)
    roots = search_roots(root)
    for candidate in roots:
        if files_status(candidate, files, verify=True) == "local":
            return candidate
    states = {rf.path: _file_status(roots[0], rf, True) for rf in files}
    missing = [p if s == "missing" else f"{p} (size or sha256 differs from the registry)"
               for p, s in states.items() if s != "local"]
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


# ---------------------------------------------------------------------------- checksum lists
#: names of ``sha256sum``-format checksum lists looked for beside an input and above it
CHECKSUM_LISTS = ("MANIFEST.sha256", "SHA256SUMS", "sha256sums.txt")
_MAX_LIST_BYTES = 16 << 20
_MAX_LEVELS = 8
_lists: dict[tuple[str, int, int], dict[str, str]] = {}


def _parse_list(path: Path) -> dict[str, str]:
    """``{relative posix path: sha256}`` of a checksum list (cached by size and mtime)."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key in _lists:
        return _lists[key]
    table: dict[str, str] = {}
    if st.st_size <= _MAX_LIST_BYTES:
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            digest, _, name = line.strip().partition(" ")
            name = name.strip().lstrip("*")
            if len(digest) == 64 and name:
                table[name[2:] if name.startswith("./") else name] = digest.lower()
    _lists[key] = table
    return table


def listed_sha256(path: str | Path) -> tuple[str, Path] | None:
    """The SHA-256 a checksum list (:data:`CHECKSUM_LISTS`) in the file's folder or one of
    the :data:`_MAX_LEVELS` folders above gives for ``path``, and that list; None when no
    list names it."""
    target = Path(path).resolve()
    folder = target.parent
    for _ in range(_MAX_LEVELS):
        for name in CHECKSUM_LISTS:
            listing = folder / name
            try:
                if not listing.is_file():
                    continue
                digest = _parse_list(listing).get(target.relative_to(folder).as_posix())
            except OSError:
                continue
            if digest is not None:
                return digest, listing
        if folder.parent == folder:
            break
        folder = folder.parent
    return None


def write_checksum_list(folder: str | Path, *, progress: bool = False) -> tuple[Path, int]:
    """Record the SHA-256 of every file under ``folder`` in ``folder/MANIFEST.sha256``
    (``sha256sum`` format, paths relative to the folder, sorted), written atomically; every
    later read of those files through cropscope is then verified (:func:`verify_listed`).
    Hidden files and existing checksum lists are left out. Returns the list and its number
    of files. Files an existing list names must still match it: a folder is not re-sealed
    over a damaged file (:class:`~cropscope.errors.DataError`)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(f"not a folder: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in CHECKSUM_LISTS
                   and not any(part.startswith(".")
                               for part in p.relative_to(folder).parts))
    if not files:
        raise DataError(f"no files to seal in {folder}")
    lines = []
    bar = _progress_bar(sum(p.stat().st_size for p in files), "hashing", progress)
    try:
        for path in files:
            verify_listed(path)
            lines.append(f"{cached_sha256(path)}  ./{path.relative_to(folder).as_posix()}\n")
            bar.update(path.stat().st_size)
    finally:
        bar.close()
    target = folder / CHECKSUM_LISTS[0]
    with atomic_path(target) as tmp:
        tmp.write_text("".join(lines), encoding="utf-8")
    return target, len(files)


def verify_listed(path: str | Path) -> None:
    """Refuse (:class:`~cropscope.errors.DataError`) a file whose SHA-256 differs from the
    one a checksum list gives for it (see :func:`listed_sha256`); files no list names pass.
    The hash is cached by size and modification time (:func:`cached_sha256`)."""
    hit = listed_sha256(path)
    if hit is None:
        return
    digest, listing = hit
    if cached_sha256(path) != digest:
        raise DataError(f"{path} is damaged or was modified: its sha256 differs from the one "
                        f"in {listing}")
