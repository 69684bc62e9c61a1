"""Relabelling a class map: minimum mapping unit, reclassification, taxonomy roll-up, mosaic.

Operations on labels rasters (uint8 codes, 255 = nodata, ``class_<i>`` tags, as the map
job writes them). Sieve, reclassify and roll-up run as a map model through the map job
(:func:`~cropscope.mapping.job.run_map_job`: window by window with a halo, bounded memory,
resumable from its journal, optionally on Dask) and deliver a COG atomically (complete or
absent), with colours keyed to the class names, GDAL category names and a QGIS style
(:mod:`cropscope.mapping.styles`):

- :func:`sieve_map`: the minimum mapping unit — connected patches smaller than
  ``min_pixels`` (8- or 4-connected) take the class of their largest neighbour
  (``rasterio.features.sieve``, GDAL's sieve filter). Each window is read with a halo of
  ``min_pixels`` pixels, so every patch that touches the window and is smaller than the unit
  lies wholly in the read area and is found; a larger patch cut by the read area still
  shows at least ``min_pixels`` pixels and is kept. The neighbour a small patch joins is the
  largest one *within the read area*; for a patch between two large regions that can differ
  from an untiled run (which region is larger may depend on how much of it is read).
- :func:`reclassify_map`: new class names by rules (``{old: new}``; several old classes
  may merge), optionally forced to a class (or nodata) where a mask raster on the same grid
  holds given values (e.g. a cropland mask, a water body layer).
- :func:`rollup_map`: one map per level of a class hierarchy
  (:class:`~cropscope.taxonomy.Taxonomy`): each class becomes its ancestor on that level.
- :func:`mosaic_maps`: map tiles (same CRS, resolution and classes) merged into one map;
  where tiles overlap the first one wins. Labels and probabilities go through the map job
  over a GDAL VRT of the tiles (resumable, Dask); uncertainty (one band without classes)
  through one ``rasterio.merge`` pass with a memory limit.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from cropscope.data.readers.class_tags import tagged_class_names
from cropscope.errors import DataError

__all__ = ["mosaic_maps", "read_map_classes", "reclassify_map", "rollup_map", "sieve_map"]

_NODATA = 255


@contextmanager
def _scratch(out: Path) -> Iterator[Path]:
    """A temporary GeoTIFF path beside ``out``, removed afterwards whatever happens."""
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".work.tif", dir=out.parent)
    os.close(fd)
    path = Path(name)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def read_map_classes(path: str | Path) -> list[str]:
    """Class names of a labels raster (its ``class_<i>`` tags); a raster that is not one band
    of integer class codes (e.g. a probability map) is refused."""
    import rasterio

    p = Path(path)
    if not p.is_file():
        raise DataError(f"map not found: {p}")
    with rasterio.open(p) as src:
        tags = src.tags()
        if src.count != 1 or np.dtype(src.dtypes[0]).kind not in "iu":
            raise DataError(f"{p} is not a map of class labels (one band of integer codes); "
                            f"it has {src.count} band(s) of {src.dtypes[0]}")
    names = tagged_class_names(tags)
    if not names:
        raise DataError(f"{p} has no class names (class_<i> tags); is it a cropscope map?")
    return [names.get(i, f"class_{i}") for i in range(max(names) + 1)]


class _SieveOp:
    """Patches smaller than ``size`` pixels take their largest neighbour's class."""

    def __init__(self, size: int, connectivity: int) -> None:
        self.size, self.connectivity = int(size), int(connectivity)
        self.label = f"sieve(size={self.size},connectivity={self.connectivity})"

    def __call__(self, codes: np.ndarray, window: Any) -> np.ndarray:
        from rasterio.features import sieve

        valid = codes != _NODATA
        if codes.size <= self.size:  # the whole map is smaller than the unit: nothing to
            return codes.astype(np.uint8)  # merge into (GDAL refuses such a sieve)
        out = sieve(codes.astype(np.uint8), size=self.size, mask=valid,
                    connectivity=self.connectivity)
        return np.where(valid, out, _NODATA).astype(np.uint8)


class _LookupOp:
    """Codes through a lookup table; where a mask raster holds ``values``, ``forced``."""

    def __init__(self, lut: np.ndarray, mask: Path | None = None,
                 values: Sequence[int] = (), forced: int = _NODATA) -> None:
        self.lut = np.asarray(lut, dtype=np.uint8)
        self.mask = None if mask is None else str(mask)
        self.values = np.asarray(list(values), dtype=np.int64)
        self.forced = int(forced)
        digest = hashlib.sha256(self.lut.tobytes() + self.values.tobytes()).hexdigest()[:16]
        stamp = ""
        if mask is not None:
            st = Path(mask).stat()
            stamp = f",mask={Path(mask).resolve()}:{st.st_size}:{st.st_mtime_ns}"
        self.label = f"lookup({digest},forced={self.forced}{stamp})"

    def __call__(self, codes: np.ndarray, window: Any) -> np.ndarray:
        new = self.lut[codes]
        if self.mask is not None:
            import rasterio

            with rasterio.open(self.mask) as src:
                hit = np.isin(src.read(1, window=window), self.values)
            new[hit & (codes != _NODATA)] = self.forced
        return new


class _RelabelModel:
    """A labels operation under the map-model contract: the cube is the map's labels (one
    band, NaN = nodata), the output one-hot probabilities of the new labels, so the map job
    streams, resumes and fans out relabelling as it does maps."""

    input_kind = "patches"  # a halo of context, the core returned

    def __init__(self, classes: Sequence[str], op: Callable[[np.ndarray, Any], np.ndarray],
                 halo: int, transform: Any) -> None:
        self._classes = list(classes)
        self.op, self._halo, self.transform = op, int(halo), transform
        self.name = str(getattr(op, "label", "relabel"))
        self.run_digest = self.name  # the job's model identity: the operation and settings

    @property
    def classes(self) -> list[str]:
        return list(self._classes)

    @property
    def bands(self) -> list[str]:
        return ["class"]

    @property
    def time_grid(self) -> Any:
        from cropscope.runs.schema import TimeGrid

        return TimeGrid.any()

    @property
    def halo(self) -> int:
        return self._halo

    def predict_window(self, cube: Any, core: tuple[slice, slice]
                       ) -> tuple[np.ndarray, np.ndarray]:
        from rasterio.windows import Window

        vals = np.asarray(cube.values, dtype=np.float64)[0, 0]
        codes = np.where(np.isfinite(vals), vals, _NODATA).astype(np.int64)
        codes = np.where((codes < 0) | (codes > _NODATA), _NODATA, codes)
        t = self.transform
        col0 = round((float(cube["x"].values[0]) - t.c) / t.a - 0.5)
        row0 = round((float(cube["y"].values[0]) - t.f) / t.e - 0.5)
        window = Window(col0, row0, codes.shape[1], codes.shape[0])
        new = np.asarray(self.op(codes, window))[core]
        k = len(self._classes)
        proba = (new[None] == np.arange(k)[:, None, None]).astype(np.float32)
        return proba, new != _NODATA


def _run_relabel(src_path: Path, out: Path, classes: Sequence[str],
                 op: Callable[[np.ndarray, Any], np.ndarray], halo: int, *, tile: int,
                 resume: bool, progress: bool, workers: int | None, scheduler: str | None,
                 colours: Mapping[str, str] | None = None) -> Path:
    """Run ``op`` over the labels raster through the map job into the COG ``out``."""
    import shutil

    import rasterio

    from cropscope.data.readers.cube import CubeSource
    from cropscope.mapping.job import run_map_job
    from cropscope.mapping.styles import write_category_names, write_qgis_style

    if len(classes) >= _NODATA:
        raise DataError(f"too many classes for an 8-bit map: {len(classes)}")
    if out.suffix.lower() not in (".tif", ".tiff"):
        raise DataError(f"--out {out}: a map is a GeoTIFF (.tif)")
    if out.resolve() == Path(src_path).resolve():
        raise DataError(f"--out {out} is the input map: write the result to another file "
                        "(the input stays the pair of its probabilities)")  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(src_path) as src:
        transform = src.transform
    source = CubeSource.scan(src_path, dates=["2000-01-01"], band_names=["class"],
                             nodata=_NODATA)
    model = _RelabelModel(classes, op, halo, transform)
    work = out.with_name(f".{out.name}.relabel")
    res = run_map_job(model, source, work, tile=tile, resume=resume, progress=progress,
                      workers=workers, scheduler=scheduler, colours=colours)
    os.replace(res.paths["labels"], out)  # same folder: atomic
    write_category_names(out, classes)
    write_qgis_style(out, classes, colours)
    shutil.rmtree(work, ignore_errors=True)
    return out


def sieve_map(labels: str | Path, out: str | Path, min_pixels: int, *,
              connectivity: int = 8, tile: int = 1024, resume: bool = True,
              progress: bool = False, workers: int | None = None,
              scheduler: str | None = None) -> Path:
    """The map with patches smaller than ``min_pixels`` merged into a neighbour (module
    doc); nodata stays nodata and is never grown into."""
    src = Path(labels)
    classes = read_map_classes(src)
    if min_pixels < 2:
        raise DataError(f"the minimum mapping unit must be >= 2 pixels, got {min_pixels}")
    if connectivity not in (4, 8):
        raise DataError(f"connectivity must be 4 or 8, got {connectivity}")
    return _run_relabel(src, Path(out), classes, _SieveOp(min_pixels, connectivity),
                        int(min_pixels), tile=max(tile, 2 * int(min_pixels)), resume=resume,
                        progress=progress, workers=workers, scheduler=scheduler)


def _code_map(old: Sequence[str], new_of: Mapping[str, str]) -> tuple[list[str], np.ndarray]:
    """New classes (in order of first use) and the lookup table old code → new code."""
    new_classes: list[str] = []
    lut = np.full(256, _NODATA, dtype=np.uint8)
    for i, name in enumerate(old):
        target = new_of.get(name, name)
        if target not in new_classes:
            new_classes.append(target)
        lut[i] = new_classes.index(target)
    return new_classes, lut


def reclassify_map(labels: str | Path, out: str | Path, rules: Mapping[str, str], *,
                   mask: str | Path | None = None, mask_values: Sequence[int] = (1,),
                   mask_class: str | None = None, tile: int = 1024, resume: bool = True,
                   progress: bool = False, workers: int | None = None,
                   scheduler: str | None = None) -> Path:
    """New class names by ``rules`` (``{old: new}``; classes not named keep theirs); where
    the raster ``mask`` (same grid) holds one of ``mask_values`` the pixel becomes
    ``mask_class`` (``None``: nodata)."""
    import rasterio

    src = Path(labels)
    old = read_map_classes(src)
    unknown = sorted(set(rules) - set(old))
    if unknown:
        raise DataError(f"rules name {unknown}, not classes of the map ({old})")
    classes, lut = _code_map(old, {str(k): str(v) for k, v in rules.items()})
    forced = _NODATA
    if mask is not None and mask_class is not None:
        if mask_class not in classes:
            classes.append(mask_class)
        forced = classes.index(mask_class)
    mp = None
    if mask is not None:
        mp = Path(mask)
        if not mp.is_file():
            raise DataError(f"mask not found: {mp}")
        with rasterio.open(mp) as m, rasterio.open(src) as ref:
            same = (m.height, m.width) == (ref.height, ref.width) and m.crs == ref.crs and \
                np.allclose(tuple(m.transform)[:6], tuple(ref.transform)[:6])
        if not same:
            raise DataError(f"the mask {mp} is not on the map's grid (size, CRS and "
                            "transform must match); resample it onto the map first")
    return _run_relabel(src, Path(out), classes, _LookupOp(lut, mp, mask_values, forced), 0,
                        tile=tile, resume=resume, progress=progress, workers=workers,
                        scheduler=scheduler)


def rollup_map(labels: str | Path, taxonomy: Any, out_dir: str | Path, *,
               tile: int = 1024, resume: bool = True, progress: bool = False,
               workers: int | None = None, scheduler: str | None = None) -> dict[str, Path]:
    """One map per level of ``taxonomy`` coarser than (or at) the map's classes:
    ``<out_dir>/<stem>_<level>.tif`` (see the module doc). ``taxonomy``: a
    :class:`~cropscope.taxonomy.Taxonomy`, a file or shipped name, or the run directory of
    a hierarchical model (its ``run.json`` taxonomy)."""
    from cropscope.taxonomy import Taxonomy, load_taxonomy

    if isinstance(taxonomy, Taxonomy):
        tax = taxonomy
    elif Path(str(taxonomy)).is_dir():
        from cropscope.runs import open_run

        spec = open_run(taxonomy).spec
        if spec.taxonomy is None:
            raise DataError(f"the run {taxonomy} has no class hierarchy (train it with "
                            "--hierarchical)")
        tax = Taxonomy.from_dict(dict(spec.taxonomy))
    else:
        tax = load_taxonomy(taxonomy)
    src = Path(labels)
    old = read_map_classes(src)
    where = {}
    for name in old:
        try:
            where[name] = tax.find(name)
        except DataError:
            raise DataError(f"map class {name!r} is not in the taxonomy {tax.name!r}; "
                            "crosswalk the legend first (cropscope taxonomy crosswalk)") from None
    deepest = max(k for k, _ in where.values())
    outs = {}
    for level in range(deepest + 1):
        rules = {}
        for name, (k, _) in where.items():
            path = tax.path(name, k)
            rules[name] = path[min(level, k)]
        level_name = tax.levels[level]
        out = Path(out_dir) / f"{src.stem}_{level_name}.tif"
        classes, lut = _code_map(old, rules)
        outs[level_name] = _run_relabel(src, out, classes, _LookupOp(lut), 0, tile=tile,
                                        resume=resume, progress=progress, workers=workers,
                                        scheduler=scheduler)
    return outs


class _PassModel:
    """The cube's own values under the map-model contract: class codes (one band) as
    one-hot probabilities, or probability bands as they are — what a mosaic copies."""

    input_kind = "pixels"

    def __init__(self, classes: Sequence[str], labels: bool, label: str) -> None:
        self._classes, self.labels = list(classes), bool(labels)
        self.name = self.run_digest = label

    @property
    def classes(self) -> list[str]:
        return list(self._classes)

    @property
    def bands(self) -> list[str]:
        return ["class"] if self.labels else list(self._classes)

    @property
    def time_grid(self) -> Any:
        from cropscope.runs.schema import TimeGrid

        return TimeGrid.any()

    @property
    def halo(self) -> int:
        return 0

    def predict_window(self, cube: Any, core: tuple[slice, slice]
                       ) -> tuple[np.ndarray, np.ndarray]:
        vals = np.asarray(cube.values, dtype=np.float64)[0][:, core[0], core[1]]
        valid = np.isfinite(vals).all(axis=0)
        if self.labels:
            codes = np.where(valid, vals[0], -1)
            proba = (codes[None] == np.arange(len(self._classes))[:, None, None])
            return proba.astype(np.float32), valid & (codes < len(self._classes))
        return np.nan_to_num(vals).astype(np.float32), valid


def _write_vrt(paths: Sequence[Path], vrt: Path) -> None:
    """A GDAL VRT mosaic of ``paths`` (one grid; the first listed wins where they overlap,
    nodata 255 transparent). Rewritten only when its content changes, so a resumed job sees
    the same file; the tiles' sizes and times are in it, so changed tiles change it."""
    import html as _html

    import rasterio

    infos = []
    for path in paths:
        with rasterio.open(path) as src:
            st = path.stat()
            infos.append((path.resolve(), src.transform, src.width, src.height, src.count,
                          src.crs, f"{st.st_size}:{st.st_mtime_ns}"))
    t0 = infos[0][1]
    left = min(i[1].c for i in infos)
    top = max(i[1].f for i in infos)
    res_x, res_y = t0.a, -t0.e
    right = max(i[1].c + i[2] * res_x for i in infos)
    bottom = min(i[1].f - i[3] * res_y for i in infos)
    width, height = round((right - left) / res_x), round((top - bottom) / res_y)
    rects = []
    for path, t, w, h, *_ in infos:
        xo, yo = (t.c - left) / res_x, (top - t.f) / res_y
        if abs(xo - round(xo)) > 1e-6 or abs(yo - round(yo)) > 1e-6:
            raise DataError(f"{path} is not on the grid of {infos[0][0]} (offsets of a "
                            "fraction of a pixel); resample the tiles onto one grid")
        rects.append((path, round(xo), round(yo), w, h))
    count = infos[0][4]
    bands = []
    for b in range(1, count + 1):
        sources = "".join(
            f'<ComplexSource><SourceFilename relativeToVRT="0">{_html.escape(str(path))}'
            f"</SourceFilename><SourceBand>{b}</SourceBand>"
            f'<SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>'
            f'<DstRect xOff="{xo}" yOff="{yo}" xSize="{w}" ySize="{h}"/>'
            f"<NODATA>{_NODATA}</NODATA></ComplexSource>"
            for path, xo, yo, w, h in reversed(rects))  # later sources are drawn on top
        bands.append(f'<VRTRasterBand dataType="Byte" band="{b}"><NoDataValue>{_NODATA}'
                     f"</NoDataValue>{sources}</VRTRasterBand>")
    stamps = " ".join(i[6] for i in infos)
    text = (f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">'
            f"<!-- tiles {stamps} -->"
            f"<SRS>{_html.escape(infos[0][5].to_wkt())}</SRS>"
            f"<GeoTransform>{left!r}, {res_x!r}, 0, {top!r}, 0, {-res_y!r}</GeoTransform>"
            + "".join(bands) + "</VRTDataset>\n")
    if not vrt.is_file() or vrt.read_text(encoding="utf-8") != text:
        from cropscope.io import atomic_path

        with atomic_path(vrt) as tmp:
            tmp.write_text(text, encoding="utf-8")


def mosaic_maps(tiles: Sequence[str | Path], out: str | Path, *,
                mem_limit_mb: int = 256, tile: int = 1024, resume: bool = True,
                progress: bool = False, workers: int | None = None,
                scheduler: str | None = None) -> Path:
    """Merge map tiles (labels, probabilities or uncertainty COGs of one product, sharing CRS,
    resolution, band count and classes) into one COG; the first tile wins where they
    overlap. Labels and probabilities go through the map job over a VRT of the tiles
    (resumable, Dask); a single band without classes (uncertainty) through one
    ``rasterio.merge`` pass with ``mem_limit_mb``."""
    import shutil

    import rasterio
    from rasterio.merge import merge
    from rasterio.shutil import copy as raster_copy

    from cropscope.io import atomic_path

    paths = [Path(t) for t in tiles]
    if not paths:
        raise DataError("no map tiles to mosaic")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"map tile not found: {missing[0]}")
    with rasterio.open(paths[0]) as first:
        crs, res, count = first.crs, first.res, first.count
        tags, descriptions = first.tags(), first.descriptions
        scales, offsets = first.scales, first.offsets
        try:
            colormap = first.colormap(1) if count == 1 else None
        except ValueError:
            colormap = None
    for p in paths[1:]:
        with rasterio.open(p) as src:
            if src.crs != crs or not np.allclose(src.res, res) or src.count != count:
                raise DataError(f"{p} differs from {paths[0]} in CRS, resolution or bands; "
                                "tiles of one map share them")
            if tagged_class_names(src.tags()) != tagged_class_names(tags):
                raise DataError(f"{p} has other classes than {paths[0]}")
    target = Path(out)
    if target.suffix.lower() not in (".tif", ".tiff"):
        raise DataError(f"--out {target}: a map is a GeoTIFF (.tif)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tagged = tagged_class_names(tags)
    names = [tagged[i] for i in sorted(tagged)]
    if names and (count == 1 or count == len(names)):
        from cropscope.data.readers.cube import CubeSource
        from cropscope.mapping.job import run_map_job
        from cropscope.mapping.styles import write_category_names, write_qgis_style

        labels = count == 1
        work = target.with_name(f".{target.name}.mosaic")
        work.mkdir(exist_ok=True)
        vrt = work / "tiles.vrt"
        _write_vrt(paths, vrt)
        source = CubeSource.scan(vrt, dates=["2000-01-01"],
                                 band_names=["class"] if labels else names, nodata=_NODATA,
                                 scale=None if labels else 1.0 / 254.0)
        model = _PassModel(names, labels, f"mosaic({'labels' if labels else 'probabilities'})")
        colours = None
        if colormap is not None:
            colours = {n: "#{:02x}{:02x}{:02x}".format(*colormap[i][:3])
                       for i, n in enumerate(names) if i in colormap}
        res_job = run_map_job(model, source, work / "job", tile=tile, resume=resume,
                              progress=progress, workers=workers, scheduler=scheduler,
                              colours=colours)
        os.replace(res_job.paths["labels" if labels else "probabilities"], target)
        if labels:
            write_category_names(target, names)
            write_qgis_style(target, names, colours)
        shutil.rmtree(work, ignore_errors=True)
        return target
    with _scratch(target) as scratch:
        merge([str(p) for p in paths], nodata=_NODATA, dst_path=str(scratch),
              mem_limit=mem_limit_mb, dst_kwds={"tiled": True, "blockxsize": 256,
                                                "blockysize": 256})
        with rasterio.open(scratch, "r+") as dst:
            dst.update_tags(**tags)
            for i, d in enumerate(descriptions):
                if d:
                    dst.set_band_description(i + 1, d)
            dst.scales, dst.offsets = scales, offsets
        with atomic_path(target) as tmp:
            raster_copy(scratch, tmp, driver="COG", compress="deflate", blocksize=512,
                        overview_resampling="average")
    return target
