"""Checksummed, atomic file downloads with the standard library (``urllib``).

A download streams into a temporary file next to its destination, hashes it on the way,
and is renamed onto the destination only when the SHA-256 matches. A failed or mismatched
download leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from cropscope.errors import DatasetNotFoundError
from cropscope.io import atomic_path

__all__ = ["fetch", "sha256_file"]

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
