"""From a map and a probability sample to the numbers an agency reports.

- :func:`assess_map`: accuracy (overall, user's, producer's) and area of every class with
  standard errors and 95 % confidence intervals, from a class map and reference points —
  the estimators of Olofsson et al. (2014) when the strata are the map classes, of Stehman
  (2014) with another strata raster (:mod:`cropscope.assessment.estimators`).
- :func:`design_sample`: sample size, allocation over the map classes and a stratified random
  sample of pixel centres for field or photo-interpretation teams
  (:mod:`cropscope.assessment.sampling`).

Pixel areas are computed on the ellipsoid in any CRS (:mod:`cropscope.data.pixel_areas`),
so estimates are in hectares for geographic, UTM and sinusoidal maps alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cropscope.assessment.estimators import AreaEstimate, Estimate, estimate_accuracy_and_area
from cropscope.assessment.reference import (
    ClassMap,
    ReferencePoints,
    locate,
    read_class_map,
    read_points,
)
from cropscope.assessment.sampling import (
    ALLOCATIONS,
    SamplePoints,
    allocate,
    draw_stratified_sample,
    sample_size,
)
from cropscope.errors import DataError, EvaluationError

__all__ = [
    "ALLOCATIONS",
    "AreaEstimate",
    "ClassMap",
    "Estimate",
    "ReferencePoints",
    "SampleDesign",
    "SamplePoints",
    "allocate",
    "assess_map",
    "design_sample",
    "draw_stratified_sample",
    "estimate_accuracy_and_area",
    "locate",
    "read_class_map",
    "read_points",
    "sample_size",
    "write_assessment_tables",
    "write_sample_points",
]

_BLOCK = 512


def _population(class_map: ClassMap, strata: ClassMap | None
                ) -> tuple[dict[int, float], dict[int, float], dict[int, int], dict[int, float]]:
    """Pixels and hectares per map class, and per stratum over the mapped pixels, in one
    pass over the map (and strata) by window."""
    import rasterio
    from rasterio.windows import Window

    from cropscope.data.pixel_areas import pixel_areas

    codes = sorted(class_map.names)
    size = max(max(codes), 255 if strata is None else max(strata.names)) + 1
    m_pix, m_ha = np.zeros(size), np.zeros(size)
    s_pix, s_ha = np.zeros(size), np.zeros(size)
    with rasterio.open(class_map.path) as src:
        other = None if strata is None else rasterio.open(strata.path)
        try:
            for r in range(0, src.height, _BLOCK):
                for c in range(0, src.width, _BLOCK):
                    h, w = min(_BLOCK, src.height - r), min(_BLOCK, src.width - c)
                    win = Window(c, r, w, h)
                    mc = src.read(1, window=win).astype(np.int64)
                    keep = np.isin(mc, codes)
                    if not keep.any():
                        continue
                    area = pixel_areas(src.crs, src.transform, (h, w), row_off=r,
                                       col_off=c).hectares
                    m_pix += np.bincount(mc[keep], minlength=size)[:size]
                    m_ha += np.bincount(mc[keep], weights=area[keep], minlength=size)[:size]
                    if other is not None:
                        sc = other.read(1, window=win).astype(np.int64)
                        assert strata is not None
                        keep &= np.isin(sc, sorted(strata.names))
                        sc_k = sc[keep]
                        s_pix += np.bincount(sc_k, minlength=size)[:size]
                        s_ha += np.bincount(sc_k, weights=area[keep], minlength=size)[:size]
        finally:
            if other is not None:
                other.close()
    if strata is None:
        s_pix, s_ha = m_pix, m_ha
    return ({k: float(m_pix[k]) for k in codes}, {k: float(m_ha[k]) for k in codes},
            {k: int(s_pix[k]) for k in range(size) if s_pix[k] > 0},
            {k: float(s_ha[k]) for k in range(size) if s_pix[k] > 0})


def _check_same_grid(a: ClassMap, b: ClassMap) -> None:
    from cropscope.assessment.reference import _same_crs

    if (a.height, a.width) != (b.height, b.width) or not _same_crs(a.crs, b.crs) or \
            not np.allclose(tuple(a.transform)[:6], tuple(b.transform)[:6]):
        raise DataError(f"the strata raster {b.path} is not on the map's grid (size, CRS and "
                        "transform must match); resample it onto the map first")


def assess_map(
    map_path: str | Path,
    reference: str | Path,
    *,
    label_column: str,
    strata: str | Path | None = None,
    x_column: str | None = None,
    y_column: str | None = None,
    points_crs: Any = None,
    reproject: bool = False,
    fpc: bool = False,
    layer: str | None = None,
) -> AreaEstimate:
    """Accuracy and class areas of the map ``map_path`` from the reference points
    ``reference`` (label in ``label_column``; see :func:`read_points` for the formats).

    The points must be a stratified random sample of the map's pixels: by map class
    (:func:`design_sample`) or, with ``strata`` (a raster on the map's grid), by its codes.
    Reference labels are map class names (or codes).
    """
    cmap = read_class_map(map_path)
    smap = None
    if strata is not None:
        smap = read_class_map(strata)
        _check_same_grid(cmap, smap)
    points = read_points(reference, label_column, cmap.crs, x_column=x_column,
                         y_column=y_column, points_crs=points_crs, reproject=reproject,
                         layer=layer)
    rows, cols, codes = locate(cmap, points.x, points.y)
    classes = [cmap.names[k] for k in sorted(cmap.names)]
    index = {code: i for i, code in enumerate(sorted(cmap.names))}
    by_name = {name: i for i, name in enumerate(classes)}
    ref = np.empty(len(points.labels), dtype=np.int64)
    for i, label in enumerate(points.labels):
        key = label if label in by_name else _code_name(label, cmap)
        if key is None:
            raise EvaluationError(f"reference class {label!r} (point {i}) is not a class of "
                                  f"the map; map classes: {classes}")
        ref[i] = by_name[key]
    mapped = np.array([index[int(c)] for c in codes], dtype=np.int64)
    _, m_ha, s_pix, s_ha = _population(cmap, smap)
    if smap is None:
        stratum_codes = sorted(cmap.names)
        pts_stratum = codes
        names = classes
        label = "map classes"
    else:
        stratum_codes = sorted(s_pix)
        sc = _strata_at(smap, rows, cols)
        unknown = ~np.isin(sc, stratum_codes)
        if unknown.any():
            raise EvaluationError(f"{int(unknown.sum())} reference points fall where the "
                                  "strata raster has no stratum")
        pts_stratum = sc
        names = [smap.names[k] for k in stratum_codes]
        label = str(smap.path)
    spos = {code: i for i, code in enumerate(stratum_codes)}
    from cropscope.data.pixel_areas import point_pixel_areas

    area = point_pixel_areas(cmap.crs, cmap.transform, rows, cols)
    return estimate_accuracy_and_area(
        mapped, ref, np.array([spos[int(s)] for s in pts_stratum], dtype=np.int64),
        [s_pix.get(k, 0) for k in stratum_codes], classes, pixel_area=area,
        stratum_area=[s_ha.get(k, 0.0) for k in stratum_codes],
        mapped_area={cmap.names[k]: m_ha[k] for k in sorted(cmap.names)},
        stratum_names=names, strata=label, fpc=fpc)


def _code_name(label: str, cmap: ClassMap) -> str | None:
    """A reference label given as a map code (``"3"``) → that class's name."""
    try:
        code = int(float(label))
    except ValueError:
        return None
    return cmap.names.get(code)


def _strata_at(smap: ClassMap, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    import rasterio

    t = smap.transform
    cx = t.c + t.a * (cols + 0.5) + t.b * (rows + 0.5)
    cy = t.f + t.d * (cols + 0.5) + t.e * (rows + 0.5)
    with rasterio.open(smap.path) as src:
        return np.array([v[0] for v in src.sample(zip(cx, cy, strict=True))], dtype=np.int64)


@dataclass
class SampleDesign:
    """A sampling design and the points drawn for it."""

    classes: list[str]
    pixels: list[int]
    area_ha: list[float]
    allocation: list[int]
    n: int
    method: str
    seed: int
    points: SamplePoints
    crs: Any
    notes: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """JSON-ready: per class pixels, hectares, weight and points."""
        total = float(sum(self.area_ha)) or 1.0
        return {
            "n": self.n, "allocation": self.method, "seed": self.seed, **self.notes,
            "strata": [{"class": c, "pixels": p, "area_ha": a, "weight": a / total,
                        "points": k}
                       for c, p, a, k in zip(self.classes, self.pixels, self.area_ha,
                                             self.allocation, strict=True)],
        }


def design_sample(
    map_path: str | Path,
    *,
    n: int | None = None,
    target_se: float | None = None,
    expected_ua: float | Mapping[str, float] = 0.8,
    default_ua: float = 0.8,
    target_class: str | None = None,
    allocation: str = "olofsson",
    min_per_class: int = 50,
    seed: int = 0,
) -> SampleDesign:
    """A stratified random sample of the map's pixels, strata = map classes.

    Give ``n`` (points) or ``target_se`` (the standard error wanted for overall accuracy,
    or for ``target_class``'s area share) with ``expected_ua`` (one value, or one per class
    name; ``default_ua`` for classes not named). See :mod:`cropscope.assessment.sampling`.
    """
    cmap = read_class_map(map_path)
    codes = sorted(cmap.names)
    classes = [cmap.names[k] for k in codes]
    m_pix, m_ha, _, _ = _population(cmap, None)
    pixels = np.array([int(m_pix[k]) for k in codes], dtype=np.int64)
    hectares = np.array([m_ha[k] for k in codes])
    if isinstance(expected_ua, Mapping):
        unknown = sorted(set(expected_ua) - set(classes))
        if unknown:
            raise DataError(f"expected accuracy given for {unknown}, not map classes "
                            f"({classes})")
        ua = np.array([float(expected_ua.get(c, default_ua)) for c in classes])
    else:
        ua = np.full(len(classes), float(expected_ua))
    notes: dict[str, Any] = {}
    present = pixels > 0
    if (n is None) == (target_se is None):
        raise DataError("give the number of points (--n) or a target standard error "
                        "(--target-se), not both")
    if n is None:
        assert target_se is not None
        k = None
        if target_class is not None:
            if target_class not in classes:
                raise DataError(f"--target-class {target_class!r} is not a map class "
                                f"({classes})")
            k = int(np.flatnonzero(np.array(classes)[present] == target_class)[0])
        n = sample_size(hectares[present], ua[present], target_se, target_class=k)
        notes.update(target_se=target_se, target=target_class or "overall accuracy",
                     expected_ua=dict(zip(classes, ua.tolist(), strict=True)))
    counts = allocate(int(n), pixels, allocation, weights=hectares, expected_ua=ua,
                      minimum=min_per_class)
    points = draw_stratified_sample(
        cmap.path, {codes[i]: int(counts[i]) for i in range(len(codes)) if counts[i] > 0},
        seed=seed, pixels={codes[i]: int(pixels[i]) for i in range(len(codes))})
    return SampleDesign(classes, pixels.tolist(), hectares.tolist(), counts.tolist(), int(n),
                        allocation, seed, points, cmap.crs, notes)


def write_sample_points(design: SampleDesign, path: str | Path, class_map: str | Path) -> Path:
    """The design's points as a GeoPackage / GeoJSON (geometry in the map's CRS) or CSV
    (``x``/``y``), written atomically: ``point_id``, ``stratum``, ``map_class``, ``row``,
    ``col``, ``x``, ``y`` and an empty ``reference`` column for the interpreters."""
    import pandas as pd

    from cropscope.data.points import write_points

    cmap = read_class_map(class_map)
    out = Path(path)
    pts = design.points
    names = [cmap.names[int(c)] for c in pts.codes]
    frame = pd.DataFrame({"point_id": np.arange(len(pts.rows)), "stratum": names,
                          "map_class": names, "row": pts.rows, "col": pts.cols,
                          "x": pts.x, "y": pts.y, "reference": [""] * len(names)})
    return write_points(frame, out, cmap.crs)


def write_assessment_tables(result: AreaEstimate, folder: str | Path) -> dict[str, Path]:
    """``assessment.json``, ``estimates.csv`` (per class: mapped and estimated area, user's
    and producer's accuracy, each with SE and 95 % CI) and ``error_matrix.csv`` (area
    proportions; rows = map, columns = reference) into ``folder``, atomically."""
    import pandas as pd

    from cropscope.io import atomic_path, write_json

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for c in result.classes:
        rows.append({
            "class": c, "mapped_area_ha": result.mapped_area_ha.get(c, float("nan")),
            "area_ha": result.area_ha[c].value, "area_ha_se": result.area_ha[c].se,
            "area_ha_ci95": result.area_ha[c].ci95,
            "users_accuracy": result.users_accuracy[c].value,
            "users_accuracy_ci95": result.users_accuracy[c].ci95,
            "producers_accuracy": result.producers_accuracy[c].value,
            "producers_accuracy_ci95": result.producers_accuracy[c].ci95,
        })
    paths = {"json": out / "assessment.json", "estimates": out / "estimates.csv",
             "error_matrix": out / "error_matrix.csv"}
    write_json(paths["json"], result.to_dict())
    with atomic_path(paths["estimates"]) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    matrix = pd.DataFrame(result.proportions, index=result.classes, columns=result.classes)
    matrix.index.name = "map \\ reference"
    with atomic_path(paths["error_matrix"]) as tmp:
        matrix.to_csv(tmp)
    return paths
