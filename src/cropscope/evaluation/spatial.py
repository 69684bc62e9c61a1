"""Spatially disjoint train/test splits of a labelled scene, with a guard margin.

Random pixel splits of a hyperspectral scene put neighbouring (strongly correlated) pixels
in both parts, and patch models then even see test pixels inside their training patches:
accuracy is inflated. The splits here assign whole *regions* of the scene instead.

Split specifications (:func:`make_spatial_split`):

- ``blocks:B`` — the scene is cut into ``B x B`` pixel blocks (block ``(i, j)`` holds rows
  ``i*B..`` and columns ``j*B..``) assigned like a checkerboard: ``(i + j)`` even → train,
  odd → test. Deterministic (the seed is not used).
- ``blocks:B:random`` or ``blocks:B:random:F`` — each block goes to test with probability
  ``F`` (default 0.5), drawn with ``numpy.random.default_rng(seed)``. The draw is repeated
  (seed, seed + 1, ... up to 100 tries) until every labelled class has pixels in both parts;
  otherwise an :class:`EvaluationError`. The seed actually used is recorded.
- ``tiles`` — predefined regions (e.g. the tiles of a scene with shipped train /
  validation / test lists): each region has a role; pixels outside every region are unused.

**Guard.** :func:`apply_guard` removes every training (and validation) pixel whose
``(2m+1) x (2m+1)`` neighbourhood touches the test region, i.e. pixels within Chebyshev
distance ``m`` of a test-region pixel (labelled or not). With ``m`` = the patch radius
(``patch_size // 2``) no training patch contains a test pixel. Test pixels are never
removed, so models with different patch sizes are scored on the same test pixels; pixel
models (``m = 0``) keep every training pixel.

**Coordinate blocks for sample tables** (:func:`coordinate_blocks`, what ``cropscope evaluate
--spatial-blocks SIZE`` uses). Point samples (pixels, parcels) close to each other are
correlated too, and random k-fold CV of a table puts neighbours in both parts. Each sample
gets the id of the square block of side ``SIZE`` that holds its coordinates, and the folds
are group folds over these ids (no block is split between train and test). ``SIZE`` is
``0.5deg`` (degrees of longitude and latitude, blocks on the 0.5° graticule) or a length
``10km`` / ``5000m`` (metres). Coordinates come from the meta columns ``x``/``y``
(projected, metres; only with a metric size) or ``longitude``/``latitude`` (degrees). A
metric size on longitude/latitude uses a local equirectangular projection about the mean
latitude of the samples (x = R·λ·cos φ₀, y = R·φ, R = 6 371 008.8 m); over a few hundred
kilometres its scale error stays within a few per cent, which is immaterial for grouping.
Blocks are aligned on 0 (multiples of ``SIZE``), so the same size always gives the same
blocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cropscope.errors import EvaluationError

__all__ = [
    "BlockSize",
    "SpatialSplit",
    "apply_guard",
    "block_split",
    "coordinate_blocks",
    "make_spatial_split",
    "parse_block_size",
    "region_split",
]

_MAX_TRIES = 100
#: mean Earth radius (IUGG), metres
EARTH_RADIUS_M = 6_371_008.8
_UNITS = {"deg": "deg", "degree": "deg", "degrees": "deg", "°": "deg", "m": "m",
          "km": "km"}


@dataclass
class SpatialSplit:
    """Boolean region masks ``[H, W]`` of a scene: ``train``, ``test`` and optionally ``val``.

    ``spec`` is the specification string it was made from (recorded with every result);
    ``detail`` describes it (JSON-ready).
    """

    spec: str
    train: np.ndarray
    test: np.ndarray
    val: np.ndarray | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def guarded(self, margin: int) -> SpatialSplit:
        """The split with :func:`apply_guard` applied to train and validation regions."""
        val = None if self.val is None else apply_guard(self.val, self.test, margin)
        return SpatialSplit(
            self.spec,
            apply_guard(self.train, self.test, margin),
            self.test,
            val,
            {**self.detail, "guard_margin": int(margin)},
        )


def apply_guard(keep: np.ndarray, test: np.ndarray, margin: int) -> np.ndarray:
    """``keep`` without the pixels within Chebyshev distance ``margin`` of ``test``."""
    keep = np.asarray(keep, dtype=bool)
    test = np.asarray(test, dtype=bool)
    if margin < 0:
        raise EvaluationError(f"guard margin must be >= 0, got {margin}")
    if margin == 0:
        return keep & ~test
    from scipy.ndimage import maximum_filter

    near = maximum_filter(test.astype(np.uint8), size=2 * margin + 1, mode="constant") > 0
    return keep & ~near


def _check_classes(labels: np.ndarray, train: np.ndarray, test: np.ndarray) -> list[int]:
    """Class codes (> 0) with labelled pixels in the scene but not in both parts."""
    present = np.unique(labels[labels > 0])
    in_train = set(np.unique(labels[train & (labels > 0)]).tolist())
    in_test = set(np.unique(labels[test & (labels > 0)]).tolist())
    return [int(c) for c in present if c not in in_train or c not in in_test]


def block_ids(shape: tuple[int, int], block: int) -> np.ndarray:
    """Id of the ``block x block`` block of every pixel of an ``[H, W]`` grid (row-major
    order of the blocks, the blocks of :func:`block_split`)."""
    h, w = shape
    n_cols = -(-w // block)
    return (np.arange(h)[:, None] // block) * n_cols + np.arange(w)[None, :] // block


def block_split(
    labels: np.ndarray,
    block: int,
    *,
    random: bool = False,
    test_fraction: float = 0.5,
    seed: int = 0,
) -> SpatialSplit:
    """Blocks of ``block x block`` pixels, checkerboard or seeded random (module doc)."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise EvaluationError(f"labels must be [H, W], got shape {labels.shape}")
    if block < 1:
        raise EvaluationError(f"block size must be >= 1, got {block}")
    h, w = labels.shape
    bi = np.arange(h)[:, None] // block
    bj = np.arange(w)[None, :] // block
    spec = f"blocks:{block}"
    detail: dict[str, Any] = {"kind": "blocks", "block": block}
    if not random:
        test = ((bi + bj) % 2 == 1) & np.ones((h, w), dtype=bool)
        detail["assignment"] = "checkerboard: (i + j) even -> train, odd -> test"
    else:
        if not 0 < test_fraction < 1:
            raise EvaluationError(f"test fraction must be in (0, 1), got {test_fraction}")
        nb = (int(bi.max()) + 1, int(bj.max()) + 1)
        for attempt in range(_MAX_TRIES):
            rng = np.random.default_rng(seed + attempt)
            is_test = rng.random(nb) < test_fraction
            test = is_test[bi, bj]
            if not _check_classes(labels, ~test, test):
                break
        else:
            raise EvaluationError(
                f"no random assignment of {block}x{block} blocks in {_MAX_TRIES} tries puts "
                "every class in both train and test; use smaller blocks"
            )
        spec += f":random:{test_fraction:g}"
        detail.update(assignment="seeded random", test_fraction=test_fraction,
                      seed=seed + attempt, tries=attempt + 1)
    train = ~test
    detail["classes_missing_in_a_part"] = _check_classes(labels, train, test)
    return SpatialSplit(spec, train, test, None, detail)


def region_split(regions: np.ndarray, roles: dict[int, str], spec: str = "tiles") -> SpatialSplit:
    """Split by predefined regions: ``regions`` ``[H, W]`` holds a region id per pixel (``-1``:
    none); ``roles`` maps each id to ``"train"``, ``"validation"`` or ``"test"``."""
    regions = np.asarray(regions)
    bad = sorted({r for r in roles.values()} - {"train", "validation", "test"})
    if bad:
        raise EvaluationError(f"unknown region roles {bad}; use train, validation or test")

    def mask(role: str) -> np.ndarray:
        ids = [i for i, r in roles.items() if r == role]
        return np.isin(regions, ids)

    train, val, test = mask("train"), mask("validation"), mask("test")
    if not train.any() or not test.any():
        raise EvaluationError(f"the {spec!r} split needs train and test regions")
    detail = {
        "kind": "regions",
        "n_regions": {r: sum(v == r for v in roles.values())
                      for r in ("train", "validation", "test")},
    }
    return SpatialSplit(spec, train, test, val if val.any() else None, detail)


def make_spatial_split(
    spec: str,
    labels: np.ndarray,
    *,
    regions: np.ndarray | None = None,
    region_roles: dict[int, str] | None = None,
    seed: int = 0,
) -> SpatialSplit:
    """Parse ``spec`` (``blocks:B``, ``blocks:B:random[:F]``, ``tiles``) into a split."""
    parts = str(spec).strip().split(":")
    kind = parts[0]
    if kind == "tiles" and len(parts) == 1:
        if regions is None or not region_roles:
            raise EvaluationError(
                "split 'tiles' needs a scene with predefined tiles (e.g. --dataset "
                "enmap-potsdam); use blocks:B for your own scene"
            )
        return region_split(regions, region_roles, "tiles")
    if kind == "blocks" and 2 <= len(parts) <= 4:
        try:
            block = int(parts[1])
            frac = float(parts[3]) if len(parts) == 4 else 0.5
        except ValueError:
            block = frac = -1
        random = len(parts) >= 3
        if block >= 1 and (not random or parts[2] == "random"):
            return block_split(labels, block, random=random, test_fraction=frac, seed=seed)
    raise EvaluationError(
        f"unknown spatial split {spec!r}; use blocks:B (checkerboard of BxB blocks), "
        "blocks:B:random[:FRACTION] or tiles"
    )


# ---------------------------------------------------------------------------- sample blocks
@dataclass(frozen=True)
class BlockSize:
    """A block side: ``value`` in ``unit`` (``"deg"`` or ``"m"``); ``text`` as given."""

    value: float
    unit: str
    text: str

    @property
    def metres(self) -> bool:
        return self.unit == "m"


def parse_block_size(text: str | float) -> BlockSize:
    """``"0.5deg"``, ``"0.5°"``, ``"10km"``, ``"5000m"`` → :class:`BlockSize` (km become m).

    A bare number has no unit and is refused: ``0.5`` degrees and ``0.5`` metres differ by
    five orders of magnitude.
    """
    import re

    raw = str(text).strip()
    match = re.fullmatch(r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-zA-Z°]+)?", raw)
    unit = None if match is None or match.group(2) is None else _UNITS.get(
        match.group(2).lower())
    if match is None or unit is None:
        raise EvaluationError(
            f"invalid block size {raw!r}; give a number with a unit: 0.5deg (degrees), "
            "10km or 5000m (metres)"
        )
    value = float(match.group(1))
    if unit == "km":
        value, unit = value * 1000.0, "m"
    if not np.isfinite(value) or value <= 0:
        raise EvaluationError(f"block size must be positive, got {raw!r}")
    return BlockSize(value, unit, raw)


def _coordinates(meta: Any, size: BlockSize) -> tuple[np.ndarray, np.ndarray, str]:
    """Sample coordinates ``(x, y)`` in the unit of ``size``, and where they came from."""
    cols = set(getattr(meta, "columns", []))
    if size.metres and {"x", "y"} <= cols:
        x = np.asarray(meta["x"], dtype=np.float64)
        y = np.asarray(meta["y"], dtype=np.float64)
        source = "x/y (metres)"
    elif {"longitude", "latitude"} <= cols:
        lon = np.asarray(meta["longitude"], dtype=np.float64)
        lat = np.asarray(meta["latitude"], dtype=np.float64)
        bad = ~(np.isfinite(lon) & np.isfinite(lat))
        if not bad.any() and ((np.abs(lat) > 90).any() or (np.abs(lon) > 360).any()):
            raise EvaluationError(
                "longitude/latitude are outside the range of degrees; projected coordinates "
                "go in meta columns x/y (metres) with a metric block size such as 10km"
            )
        if size.metres:
            lat0 = np.deg2rad(np.nanmean(lat)) if not bad.all() else 0.0
            x = EARTH_RADIUS_M * np.deg2rad(lon) * np.cos(lat0)
            y = EARTH_RADIUS_M * np.deg2rad(lat)
            source = "longitude/latitude (local equirectangular metres)"
        else:
            x, y = lon, lat
            source = "longitude/latitude (degrees)"
    else:
        need = "longitude/latitude (or x/y for a metric size)"
        raise EvaluationError(
            f"spatial blocks need sample coordinates: meta columns {need}; the samples have "
            f"{sorted(cols) or 'no meta columns'}"
        )
    bad = ~(np.isfinite(x) & np.isfinite(y))
    if bad.any():
        raise EvaluationError(
            f"{int(bad.sum())} samples have no coordinates (first: position "
            f"{int(np.flatnonzero(bad)[0])}); drop them before spatial-block CV"
        )
    return x, y, source


def coordinate_blocks(meta: Any, size: str | BlockSize) -> tuple[np.ndarray, dict[str, Any]]:
    """Block id (``"i_j"``, strings) of every sample of ``meta`` (a DataFrame with
    coordinate columns, see the module doc) for blocks of side ``size``, and a JSON-ready
    description (size, unit, coordinate source, number of blocks)."""
    bs = size if isinstance(size, BlockSize) else parse_block_size(size)
    x, y, source = _coordinates(meta, bs)
    with np.errstate(invalid="ignore"):
        i = np.floor(x / bs.value).astype(np.int64)
        j = np.floor(y / bs.value).astype(np.int64)
    ids = np.char.add(np.char.add(i.astype(str), "_"), j.astype(str)).astype(object)
    detail = {"spatial_blocks": bs.text, "block_size": bs.value, "block_unit": bs.unit,
              "coordinates": source, "n_blocks": len(set(ids.tolist()))}
    return ids, detail
