"""Small file-system helpers shared by every writer: atomic writes and JSON."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["ARRAY_READ_ERRORS", "MAX_USER_FILE_BYTES", "atomic_path", "digest", "load_yaml",
           "public_mode", "read_arrays", "read_json", "read_user_text", "to_jsonable",
           "write_json"]

#: the largest small user file (a taxonomy, a colour table, a config) read whole
MAX_USER_FILE_BYTES = 16 * 1024 * 1024
#: the most YAML nodes and the deepest nesting :func:`load_yaml` accepts
MAX_YAML_NODES = 1_000_000
MAX_YAML_DEPTH = 100


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


def digest(*parts: Any) -> str:
    """sha256 of ``parts``: arrays by dtype, shape and bytes, ``None`` as such, anything else
    as sorted JSON. What proves a resumed job sees the inputs and settings it started on."""
    import hashlib

    import numpy as np

    h = hashlib.sha256()
    for part in parts:
        if part is None:
            h.update(b"none")
        elif isinstance(part, np.ndarray):
            arr = np.ascontiguousarray(part)
            h.update(f"{arr.dtype.str}{arr.shape}".encode())
            h.update(arr.reshape(-1).view(np.uint8).data)  # datetime64 has no buffer
        else:
            h.update(json.dumps(part, sort_keys=True, default=_default).encode())
    return h.hexdigest()


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically (numpy scalars and arrays allowed)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=_default) + "\n")
    return path


def read_user_text(path: str | Path, what: str, limit: int = MAX_USER_FILE_BYTES) -> str:
    """The UTF-8 text of a small user file, refused (:class:`~cropscope.errors.DataError`)
    when missing, larger than ``limit`` bytes or not text."""
    from cropscope.errors import DataError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} not found: {path}")
    if path.stat().st_size > limit:
        raise DataError(f"{path} is too large to be a {what} ({path.stat().st_size} bytes, "
                        f"at most {limit})")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not a UTF-8 text {what}: {exc}") from None


def load_yaml(text: str, what: str) -> Any:
    """YAML (or JSON) parsed with bounded work: aliases (``*name``, the "billion laughs"
    that make a few hundred bytes expand to gigabytes) are refused, and so are more than
    :data:`MAX_YAML_NODES` nodes or nesting deeper than :data:`MAX_YAML_DEPTH`; then the
    safe loader (no tags that build objects). Any problem is a
    :class:`~cropscope.errors.DataError` naming ``what``."""
    import yaml

    from cropscope.errors import DataError

    nodes = depth = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                raise DataError(f"{what}: YAML aliases (*{event.anchor}) are not accepted")
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_YAML_DEPTH:
                    raise DataError(f"{what}: nested deeper than {MAX_YAML_DEPTH} levels")
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
            if isinstance(event, yaml.NodeEvent):
                nodes += 1
                if nodes > MAX_YAML_NODES:
                    raise DataError(f"{what}: more than {MAX_YAML_NODES} YAML nodes")
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = " ".join(str(exc).split())
        raise DataError(f"{what} is not valid YAML/JSON: {first}") from None
    except (RecursionError, ValueError, OverflowError) as exc:  # e.g. an out-of-range date
        raise DataError(f"{what} is not valid YAML/JSON: {exc}") from None


def _array_read_errors() -> tuple[type[BaseException], ...]:
    import tokenize
    import zipfile

    # NumPy parses a .npy header with ast.literal_eval: a damaged header is a SyntaxError
    # (or a TokenError); a damaged .npz is a BadZipFile
    return (OSError, ValueError, EOFError, KeyError, SyntaxError, tokenize.TokenError,
            zipfile.BadZipFile)


#: what ``np.load`` raises on a damaged ``.npy``/``.npz`` (see :func:`read_arrays`)
ARRAY_READ_ERRORS = _array_read_errors()


def read_arrays(path: str | Path, names: tuple[str, ...] | None = None,
                error: type[Exception] | None = None) -> Any:
    """The array of a ``.npy`` file, or the arrays ``names`` of a ``.npz`` (a dict), read
    without pickle; a missing, damaged or incomplete file is one ``error`` (default
    :class:`~cropscope.errors.DataError`) naming it."""
    import numpy as np

    from cropscope.errors import DataError

    fault = error or DataError
    path = Path(path)
    if not path.is_file():
        raise fault(f"{path} is missing")
    try:
        with open(path, "rb") as fh:
            loaded = np.load(fh, allow_pickle=False)
            if names is None:
                if not isinstance(loaded, np.ndarray):
                    raise ValueError("an .npz archive where one array was expected")
                return loaded
            with loaded as data:
                absent = [n for n in names if n not in data.files]
                if absent:
                    raise KeyError(f"no arrays {absent}")
                return {n: np.asarray(data[n]) for n in names}
    except ARRAY_READ_ERRORS as exc:
        raise fault(f"{path} is damaged or not what was expected ({type(exc).__name__}: "
                    f"{' '.join(str(exc).split())[:200]})") from None


def read_json(path: str | Path) -> Any:
    """Read a JSON file; text that is not UTF-8 or not JSON is one :class:`DataError`."""
    from cropscope.errors import DataError

    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text (expected a JSON file)") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON: {exc}") from None
