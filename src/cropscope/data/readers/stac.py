"""STAC items read window by window with odc-stac: local static catalogs
(:meth:`StacCubeSource.open`) and the items of a STAC API search
(:meth:`StacCubeSource.from_items`, through :mod:`~cropscope.data.readers.stac_api`; their
assets are read over HTTP range requests when their ``href`` is a URL).

A catalog (``catalog.json``), a collection (``collection.json``) or a single item file,
with items holding one asset per band (local files; relative ``href``\\s are resolved
against the item's JSON) and, ideally, projection-extension metadata (``proj:code`` or
``proj:epsg``, ``proj:shape``, ``proj:transform``). Items are filtered by ``collection``,
``time_range`` and ``bbox`` (longitude/latitude) and grouped by ``groupby`` (default
``"solar_day"``: the items of one day are mosaicked into one date).

The grid is ``crs``/``resolution`` when given, otherwise the items' own (odc-stac picks
the first item's CRS and resolution); reprojection and resampling are odc-stac's: bilinear
for data bands, nearest for the ``mask_band`` (e.g. Sentinel-2 ``SCL``). Each
:meth:`StacCubeSource.read` loads only its window (``odc.stac.load(..., geobox=window's
geobox)``) of the items that intersect it. Values are float32, NaN where an asset has
nodata or no item covers the pixel, scaled by ``scale`` or the assets' ``raster:bands``
scale/offset. With ``mask_band`` the mask's invalid classes become NaN in every band of
that date and the mask band is dropped (see :mod:`~cropscope.data.readers.masks`).
"""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cropscope.data.readers.cube import (
    CATEGORICAL_BANDS,
    GridShape,
    make_cube,
    resolve_window,
)
from cropscope.data.readers.grid import Grid, as_crs
from cropscope.data.readers.masks import SCL_INVALID, Invalid, apply_mask
from cropscope.errors import DataError

if TYPE_CHECKING:
    import pystac
    import xarray as xr

__all__ = ["StacCubeSource", "read_stac_items"]


def read_stac_items(path: str | Path) -> list[pystac.Item]:
    """Every item of a local catalog, collection or item file, asset hrefs made absolute."""
    import pystac

    path = Path(path).expanduser()
    if path.is_dir():
        for name in ("catalog.json", "collection.json"):
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise DataError(f"no catalog.json or collection.json in {path}")
    if not path.is_file():
        raise DataError(f"STAC file not found: {path}")
    try:
        obj = pystac.read_file(str(path.resolve()))
    except Exception as exc:  # pystac raises many types for bad JSON / STAC
        raise DataError(f"cannot read the STAC file {path}: {exc}") from None
    if isinstance(obj, pystac.Item):
        items = [obj]
    elif isinstance(obj, pystac.Catalog):  # collections are catalogs too
        items = list(obj.get_items(recursive=True))
    else:
        raise DataError(f"{path} is a {type(obj).__name__}, not a catalog, collection or item")
    for item in items:
        item.make_asset_hrefs_absolute()
    return items


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence the shapely deprecation warnings raised inside odc-geo."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="odc.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*shapely")
        yield


def _item_time(item: pystac.Item) -> np.datetime64:
    when = item.datetime or item.common_metadata.start_datetime
    if when is None:
        raise DataError(f"STAC item {item.id} has no datetime")
    return np.datetime64(when.replace(tzinfo=None), "s")


def _bbox_2d(bbox: Sequence[float]) -> tuple[float, float, float, float]:
    """``(west, south, east, north)`` of a STAC bbox (2-D, or 3-D with elevations)."""
    west, south, east, north = (bbox[0], bbox[1], bbox[3], bbox[4]) if len(bbox) == 6 \
        else tuple(bbox)  # fmt: skip
    return float(west), float(south), float(east), float(north)


def _intersects(a: Sequence[float], b: Sequence[float]) -> bool:
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def _raster_scaling(item: pystac.Item, band: str) -> tuple[float, float] | None:
    asset = item.assets.get(band)
    if asset is None:
        return None
    info = (asset.extra_fields.get("raster:bands") or [{}])[0]
    scale, offset = info.get("scale"), info.get("offset")
    if scale is None and offset is None:
        return None
    return float(scale if scale is not None else 1.0), float(offset or 0.0)


class StacCubeSource(GridShape):
    """A local static STAC catalog as a window-readable cube; build it with :meth:`open`."""

    def __init__(
        self,
        items: list[dict[str, Any]],
        *,
        bands: list[str],
        mask_band: str | None,
        invalid: Invalid,
        times: list[np.datetime64],
        groupby: str,
        resampling: dict[str, str],
        shape: tuple[int, int],
        crs: Any,
        transform: Any,
        factors: list[tuple[float, float]],
        item_bboxes: list[tuple[float, float, float, float] | None],
    ) -> None:
        self._items = items  # plain dicts: cheap to pickle, no open handles
        self._load_bands = bands
        self.bands = [b for b in bands if b != mask_band]
        self.mask_band = mask_band
        self.invalid = invalid
        self.times = times
        self._groupby = groupby
        self._resampling = resampling
        self.shape = shape
        self.crs = crs
        self.transform = transform
        self._factors = factors
        self._bboxes = item_bboxes
        self._parsed: list[pystac.Item] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_parsed"] = None
        return state

    @classmethod
    def open(
        cls,
        catalog_path: str | Path,
        *,
        bands: Sequence[str],
        collection: str | None = None,
        crs: Any = None,
        resolution: float | None = None,
        bbox: Sequence[float] | None = None,
        time_range: tuple[Any, Any] | None = None,
        mask_band: str | None = None,
        invalid: Invalid = SCL_INVALID,
        scale: float | Mapping[str, float] | None = None,
        groupby: str = "solar_day",
        resampling: str = "bilinear",
        target: Any = None,
    ) -> StacCubeSource:
        """Describe the cube of a local STAC catalog, collection or item file.

        ``bands``: asset keys (or odc-stac band aliases) to read, in order. ``collection``:
        keep only that collection's items. ``crs``/``resolution``: the output grid (default:
        the items'). ``bbox``: ``(west, south, east, north)`` in degrees, to crop to.
        ``time_range``: ``(start, end)`` dates, inclusive (either may be None).
        ``mask_band``/``invalid``: a per-date mask asset and its invalid classes (or a
        function). ``scale``: factor for all bands or ``{band or pattern: factor}``
        (default: the assets' ``raster:bands`` scale/offset). ``groupby``: odc-stac's
        grouping of items into dates. ``resampling``: for the data bands. ``target``: an
        exact output grid (anything :meth:`Grid.of <cropscope.data.readers.grid.Grid.of>`
        takes), instead of ``crs``/``resolution``/``bbox``.
        """
        items = read_stac_items(catalog_path)
        if collection is not None:
            items = [it for it in items if it.collection_id == collection]
        if time_range is not None:
            start, end = time_range
            lo = np.datetime64(start, "D") if start is not None else None
            hi = np.datetime64(end, "D") if end is not None else None
            items = [
                it for it in items
                if (lo is None or _item_time(it) >= lo)
                and (hi is None or _item_time(it) < hi + np.timedelta64(1, "D"))
            ]  # fmt: skip
        if bbox is not None:
            bbox = [float(v) for v in bbox]
            items = [it for it in items if it.bbox is None or _intersects(it.bbox, bbox)]
        if not items:
            raise DataError(f"no STAC items left in {catalog_path} after filtering")
        return cls.from_items(items, origin=str(catalog_path), bands=bands, crs=crs,
                              resolution=resolution, bbox=bbox, mask_band=mask_band,
                              invalid=invalid, scale=scale, groupby=groupby,
                              resampling=resampling, target=target)

    @classmethod
    def from_items(
        cls,
        items: list[pystac.Item],
        *,
        origin: str,
        bands: Sequence[str],
        crs: Any = None,
        resolution: float | None = None,
        bbox: Sequence[float] | None = None,
        mask_band: str | None = None,
        invalid: Invalid = SCL_INVALID,
        scale: float | Mapping[str, float] | None = None,
        groupby: str = "solar_day",
        resampling: str = "bilinear",
        target: Any = None,
    ) -> StacCubeSource:
        """The cube of ``items`` (from a local catalog or a STAC API search, ``origin``
        naming it in messages); the options are :meth:`open`'s."""
        import odc.stac

        bands = [str(b) for b in bands]
        if not bands:
            raise DataError("give the bands (asset keys) to read")
        if mask_band is not None and mask_band in bands:
            raise DataError(f"mask band {mask_band!r} is also among bands")
        if not items:
            raise DataError(f"no STAC items in {origin}")
        if any(_is_remote(a.href) for it in items for a in it.assets.values()):
            _configure_remote_reads()
        load_bands = [*bands, *([mask_band] if mask_band else [])]
        absent = sorted({b for it in items for b in load_bands if b not in it.assets})
        if absent:
            raise DataError(f"assets {absent} missing from some items of {origin}")
        methods = {b: ("nearest" if b.upper() in CATEGORICAL_BANDS or b == mask_band
                       else resampling) for b in load_bands}  # fmt: skip
        kwargs: dict[str, Any] = {}
        if target is not None:
            if crs is not None or resolution is not None or bbox is not None:
                raise DataError("give target= or crs=/resolution=/bbox=, not all")
            from odc.geo.geobox import GeoBox

            grid = Grid.of(target)
            kwargs["geobox"] = GeoBox(grid.shape, grid.transform, grid.crs.to_wkt())
        if crs is not None:
            kwargs["crs"] = crs
        if resolution is not None:
            kwargs["resolution"] = resolution
        if bbox is not None:
            kwargs["bbox"] = tuple(bbox)
        try:
            with _quiet():
                ds = odc.stac.load(items, bands=load_bands, groupby=groupby, chunks={},
                                   resampling=methods, dtype="float32", **kwargs)  # fmt: skip
        except Exception as exc:  # odc-stac raises several types for bad inputs
            raise DataError(f"odc-stac cannot load {origin}: {exc}") from None
        gbox = ds.odc.geobox
        if gbox.crs is None:
            raise DataError("the STAC items have no CRS; give crs= and resolution=")
        stamps = np.asarray(ds["time"].values).astype("datetime64[s]")
        if groupby == "solar_day":
            stamps = stamps.astype("datetime64[D]")
        times = list(stamps)
        factors = []
        for b in load_bands:
            factors.append(_band_scaling(b, items[0], scale))
        bboxes = [_bbox_2d(it.bbox) if it.bbox else None for it in items]
        return cls(
            [it.to_dict() for it in items], bands=load_bands, mask_band=mask_band,
            invalid=invalid, times=times, groupby=groupby, resampling=methods,
            shape=(int(gbox.shape[0]), int(gbox.shape[1])), crs=as_crs(gbox.crs),
            transform=gbox.affine, factors=factors, item_bboxes=bboxes,
        )  # fmt: skip

    @property
    def files(self) -> list[Path]:
        """The local files of the bands' assets, item by item (remote assets left out)."""
        out = []
        for item in self._items:
            for b in self._load_bands:
                href = item["assets"][b]["href"]
                if not _is_remote(href):
                    out.append(Path(href[7:] if href.startswith("file://") else href))
        return out

    @property
    def n_items(self) -> int:
        """How many STAC items the cube reads."""
        return len(self._items)

    @property
    def urls(self) -> list[str]:
        """The remote (http/https/s3/...) hrefs of the bands' assets, item by item."""
        return [item["assets"][b]["href"] for item in self._items for b in self._load_bands
                if _is_remote(item["assets"][b]["href"])]

    def _pystac_items(self) -> list[pystac.Item]:
        import pystac

        if self._parsed is None:
            self._parsed = [pystac.Item.from_dict(d) for d in self._items]
        return self._parsed

    @contextmanager
    def opened(self) -> Iterator[StacCubeSource]:
        """Keep the parsed items while the block runs (files are opened per read)."""
        yield self

    def _geobox(self) -> Any:
        from odc.geo.geobox import GeoBox

        return GeoBox(self.shape, self.transform, self.crs.to_wkt())

    def read(self, window: Any = None) -> xr.DataArray:
        """The cube, or ``window`` of it, as ``(time, band, y, x)`` float32 (NaN = nodata)."""
        import odc.stac
        from rasterio.warp import transform_bounds

        rows, cols, transform = resolve_window(window, self.height, self.width, self.transform)
        h, w = rows.stop - rows.start, cols.stop - cols.start
        bands = self._load_bands
        data = np.full((len(self.times), len(bands), h, w), np.nan, dtype=np.float32)
        sub = self._geobox()[rows, cols]
        lonlat = transform_bounds(self.crs, "EPSG:4326", *sub.boundingbox, densify_pts=21)
        items = [it for it, bb in zip(self._pystac_items(), self._bboxes, strict=True)
                 if bb is None or _intersects(bb, lonlat)]  # fmt: skip
        if items:
            try:
                with _quiet():
                    ds = odc.stac.load(items, bands=bands, groupby=self._groupby, geobox=sub,
                                       resampling=self._resampling, dtype="float32")  # fmt: skip
            except Exception as exc:  # odc-stac / rasterio errors of many types
                raise DataError(f"odc-stac cannot read the window {window}: {exc}") from None
            index = {t: i for i, t in enumerate(self.times)}
            unit = "D" if self._groupby == "solar_day" else "s"
            for j, t in enumerate(np.asarray(ds["time"].values).astype(f"datetime64[{unit}]")):
                i = index.get(t)
                if i is None:
                    continue
                for c, b in enumerate(bands):
                    values = ds[b].values[j]
                    nodata = ds[b].attrs.get("nodata")
                    if nodata is not None and not np.isnan(nodata):
                        values = np.where(values == np.float32(nodata), np.float32(np.nan),
                                          values)  # odc-stac keeps the assets' nodata value
                    data[i, c] = values
        for c, (factor, offset) in enumerate(self._factors):
            if factor != 1.0 or offset != 0.0:
                data[:, c] = data[:, c] * np.float32(factor) + np.float32(offset)
        cube = make_cube(data, self.times, bands, transform, self.crs,
                         [f for f, _ in self._factors])  # fmt: skip
        if self.mask_band is not None:
            cube = apply_mask(cube, self.mask_band, self.invalid)
        return cube


def _is_remote(href: str) -> bool:
    return "://" in href and not href.startswith("file://")


def _configure_remote_reads() -> None:
    """GDAL settings for reading COGs over HTTP range requests (no directory listing, a
    few retries), set once per process (odc-stac passes them to every rasterio read)."""
    import odc.stac

    odc.stac.configure_rio(cloud_defaults=True, GDAL_HTTP_MAX_RETRY=3,
                           GDAL_HTTP_RETRY_DELAY=0.5, GDAL_HTTP_TIMEOUT=60)


def _band_scaling(
    band: str, item: pystac.Item, scale: float | Mapping[str, float] | None
) -> tuple[float, float]:
    if band.upper() in CATEGORICAL_BANDS:
        return 1.0, 0.0
    if isinstance(scale, Mapping):
        for pattern, value in scale.items():
            if band == pattern or fnmatch.fnmatchcase(band, pattern):
                return float(value), 0.0
    elif scale is not None:
        return float(scale), 0.0
    return _raster_scaling(item, band) or (1.0, 0.0)
