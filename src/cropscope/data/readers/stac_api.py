"""STAC API searches as cube inputs: pystac-client finds the items, odc-stac reads them.

A :class:`StacSearch` is everything a search needs: the API's root URL, collections, an area
(``bbox`` in degrees or a GeoJSON ``intersects`` geometry), a ``datetime`` interval, a maximum
cloud cover, item property filters and the bands (asset keys) to read, plus the cube's grid
options (``crs``, ``resolution``, ``mask_band``, ``scale``, ``groupby``). It is plain data:
saved as a JSON *search file* (``{"stac_api": URL, ...}``) it is accepted wherever a cube
is (``cropscope predict``, ``cube build``, sample extraction, ...). Nothing in it names
code; URLs must be ``http``/``https``.

:func:`search_items` runs the search with pystac-client. Property filters (``max_cloud``
and ``query``, in the STAC "query" extension's form ``{"property": {"lt": 10}}``) are sent
to the server when it declares the query conformance class, and are always applied again
to the returned items, so a server without the extension (many do not have it; some
return nothing instead of ignoring it) still gives the right items. A server that cannot
be reached or answers with an error, and a search that finds nothing, are one
:class:`~cropscope.errors.DataError`.

:func:`open_search` turns the items into a :class:`~cropscope.data.readers.stac.StacCubeSource`:
the same window-by-window reader as local catalogs, assets read over HTTP range requests
(GDAL ``/vsicurl/``) when their ``href`` is a URL.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cropscope.errors import DataError

if TYPE_CHECKING:
    import pystac

    from cropscope.data.readers.stac import StacCubeSource

__all__ = ["SEARCH_KEY", "StacSearch", "is_search_file", "open_search", "search_items"]

#: the key that marks a JSON file as a STAC API search file
SEARCH_KEY = "stac_api"
_OPS = ("eq", "neq", "lt", "lte", "gt", "gte", "in")
_MAX_FILE = 1 << 20  # a search file is a few hundred bytes; 1 MiB is generous


@dataclass(frozen=True)
class StacSearch:
    """A STAC API search and the cube to build from its items (see the module doc).

    ``datetime``: an RFC 3339 interval (``"2021-03-01/2021-10-31"``, open ends with ``..``).
    ``max_cloud``: keep items whose ``eo:cloud_cover`` is at most this (percent).
    ``query``: ``{property: {op: value}}`` with op in eq, neq, lt, lte, gt, gte, in.
    ``max_items``: refuse searches finding more (a typo in the area can match a continent).
    """

    stac_api: str
    bands: list[str]
    collections: list[str] = field(default_factory=list)
    bbox: list[float] | None = None
    intersects: dict[str, Any] | None = None
    datetime: str | None = None
    max_cloud: float | None = None
    query: dict[str, dict[str, Any]] | None = None
    max_items: int = 5000
    mask_band: str | None = None
    crs: str | None = None
    resolution: float | None = None
    scale: float | None = None
    groupby: str = "solar_day"
    timeout: float = 30.0

    def __post_init__(self) -> None:
        url = str(self.stac_api)
        if not url.startswith(("http://", "https://")):
            raise DataError(f"stac_api must be an http(s) URL, got {url!r}")
        if not isinstance(self.bands, list) or not self.bands \
                or not all(isinstance(b, str) and b for b in self.bands):
            raise DataError("a STAC search needs bands: a list of asset keys to read")
        if not isinstance(self.collections, list) or not all(isinstance(c, str)
                                                               for c in self.collections):
            raise DataError("collections must be a list of collection ids")
        if self.bbox is not None:
            if not isinstance(self.bbox, list | tuple) or len(self.bbox) != 4 or not all(
                    isinstance(v, int | float) and math.isfinite(v) for v in self.bbox):
                raise DataError(f"bbox must be [west, south, east, north] in degrees, got "
                                f"{self.bbox!r}")
            west, south, east, north = self.bbox
            if not (-180 <= west < east <= 180 and -90 <= south < north <= 90):
                raise DataError(f"bbox {list(self.bbox)} is not [west, south, east, north] "
                                "in degrees with west < east and south < north")
        if self.bbox is not None and self.intersects is not None:
            raise DataError("give bbox or intersects, not both")
        if self.intersects is not None and not (isinstance(self.intersects, dict)
                                                and "type" in self.intersects):
            raise DataError("intersects must be a GeoJSON geometry object")
        for name in ("max_cloud", "resolution", "scale", "timeout"):
            value = getattr(self, name)
            if value is not None and not ((isinstance(value, int | float)
                                          and math.isfinite(value) and value > 0)
                                          or (name == "max_cloud" and value == 0)):
                raise DataError(f"{name} must be a positive number, got {value!r}")
        if not isinstance(self.max_items, int) or self.max_items < 1:
            raise DataError(f"max_items must be a positive integer, got {self.max_items!r}")
        for prop, ops in (self.query or {}).items():
            if not isinstance(ops, dict) or not ops or any(op not in _OPS for op in ops):
                raise DataError(f"query[{prop!r}] must map operators ({', '.join(_OPS)}) to "
                                f"values, got {ops!r}")

    # ------------------------------------------------------------------ (de)serialisation
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], what: str = "STAC search") -> StacSearch:
        """A search from a mapping (a parsed search file); unknown keys are refused."""
        if not isinstance(data, Mapping):
            raise DataError(f"{what} must be a JSON object")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise DataError(f"{what}: unknown keys {unknown} (known: {sorted(known)})")
        if SEARCH_KEY not in data or "bands" not in data:
            raise DataError(f"{what} needs {SEARCH_KEY!r} (the API URL) and 'bands'")
        try:
            return cls(**dict(data))
        except TypeError as exc:
            raise DataError(f"{what}: {exc}") from None

    @classmethod
    def from_json(cls, path: str | Path) -> StacSearch:
        """Read a search file (see :func:`is_search_file`)."""
        path = Path(path).expanduser()
        return cls.from_dict(_read_json(path), f"search file {path.name}")

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form (read back by :meth:`from_dict`); defaults left out."""
        defaults = StacSearch(self.stac_api, list(self.bands))
        return {k: v for k, v in asdict(self).items()
                if k in (SEARCH_KEY, "bands") or v != getattr(defaults, k)}

    def write(self, path: str | Path) -> Path:
        """Save as a search file (atomically)."""
        from cropscope.io import atomic_path

        path = Path(path)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path


def _read_json(path: Path) -> Any:
    from cropscope.io import read_user_text

    try:
        return json.loads(read_user_text(path, "search file", limit=_MAX_FILE))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path.name} is not valid JSON: {exc}") from None


def is_search_file(path: str | Path) -> bool:
    """True for a ``.json`` file holding a JSON object with a ``stac_api`` key."""
    path = Path(path).expanduser()
    if path.suffix.lower() != ".json" or not path.is_file():
        return False
    try:
        if path.stat().st_size > _MAX_FILE:
            return False
        data = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and SEARCH_KEY in data


# ---------------------------------------------------------------------------- searching
def _passes(value: Any, op: str, target: Any) -> bool:
    if value is None:
        return False
    try:
        if op == "eq":
            return bool(value == target)
        if op == "neq":
            return bool(value != target)
        if op == "in":
            return value in target
        return bool({"lt": value < target, "lte": value <= target, "gt": value > target,
                     "gte": value >= target}[op])
    except TypeError:  # e.g. a string compared with a number
        return False


def _filters(search: StacSearch) -> dict[str, dict[str, Any]]:
    filters = {k: dict(v) for k, v in (search.query or {}).items()}
    if search.max_cloud is not None:
        filters.setdefault("eo:cloud_cover", {})["lte"] = float(search.max_cloud)
    return filters


def _keep(item: pystac.Item, filters: Mapping[str, Mapping[str, Any]]) -> bool:
    props = item.properties
    return all(_passes(props.get(prop), op, target)
               for prop, ops in filters.items() for op, target in ops.items())


def search_items(search: StacSearch) -> list[pystac.Item]:
    """The items of ``search``, asset hrefs absolute (see the module doc for filtering and
    errors). Sorted by time, then id, so the same search gives the same cube."""
    try:
        import pystac_client
        from pystac_client.exceptions import APIError
    except ImportError:
        raise DataError("STAC API searches need pystac-client: "
                        "pip install 'cropscope[stac]'") from None
    import requests

    url = search.stac_api
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            client = pystac_client.Client.open(url, timeout=search.timeout)
    except (APIError, requests.RequestException, OSError, ValueError) as exc:
        raise DataError(f"the STAC API at {url} cannot be reached: {_short(exc)}") from None
    filters = _filters(search)
    kwargs: dict[str, Any] = {"max_items": search.max_items + 1}
    if search.collections:
        kwargs["collections"] = search.collections
    if search.bbox is not None:
        kwargs["bbox"] = list(search.bbox)
    if search.intersects is not None:
        kwargs["intersects"] = search.intersects
    if search.datetime is not None:
        kwargs["datetime"] = search.datetime
    if filters and client.conforms_to("QUERY"):
        kwargs["query"] = filters
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = list(client.search(**kwargs).items())
    except (APIError, requests.RequestException, OSError) as exc:
        raise DataError(f"the STAC API at {url} failed the search: {_short(exc)}") from None
    except (ValueError, TypeError) as exc:  # pystac-client refuses bad parameters
        raise DataError(f"bad STAC search: {exc}") from None
    if len(found) > search.max_items:
        raise DataError(f"the search found more than max_items={search.max_items} items; "
                        "narrow the area or dates, or raise max_items")
    items = [it for it in found if _keep(it, filters)]
    if not items:
        where = ", ".join(f"{k}={v}" for k, v in (("collections", search.collections),
                                                  ("bbox", search.bbox),
                                                  ("datetime", search.datetime),
                                                  ("filters", filters)) if v)
        raise DataError(f"the STAC search at {url} found no items ({where or 'no filters'})"
                        + (f"; {len(found)} were dropped by the filters" if found else ""))
    for item in items:
        item.make_asset_hrefs_absolute()
    items.sort(key=lambda it: (str(it.datetime or it.common_metadata.start_datetime), it.id))
    return items


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."


def open_search(search: StacSearch | str | Path, *, target: Any = None,
                invalid: Any = None) -> StacCubeSource:
    """The cube of a search (or of a search file): a window-readable
    :class:`~cropscope.data.readers.stac.StacCubeSource`. ``target``: an exact output grid;
    ``invalid``: the mask band's invalid classes (default: Sentinel-2 SCL's)."""
    from cropscope.data.readers.masks import SCL_INVALID
    from cropscope.data.readers.stac import StacCubeSource

    if not isinstance(search, StacSearch):
        search = StacSearch.from_json(search)
    items = search_items(search)
    return StacCubeSource.from_items(
        items, origin=search.stac_api, bands=search.bands, crs=search.crs,
        resolution=search.resolution, mask_band=search.mask_band,
        invalid=SCL_INVALID if invalid is None else invalid, scale=search.scale,
        groupby=search.groupby, target=target,
    )  # fmt: skip
