"""Active learning: where to label next, from a probability map.

The pixels the model is least sure of are the most informative to label (uncertainty
sampling, as R sits' ``sits_uncertainty_sampling``). :func:`propose_samples` scores every
mapped pixel of a probability COG (``round(p * 254)`` per class, 255 = nodata, as the map
job writes it) by

- ``entropy``: normalised entropy ``-Σ p log p / log K`` (0 certain, 1 uniform);
- ``margin``: ``1 - (p₁ - p₂)``, one minus the gap between the two most probable classes;
- ``least-confidence``: ``1 - p₁``;

and picks the ``n`` best pixels that are at least ``min_distance`` pixels apart (Chebyshev)
from each other and from the existing samples (``exclude``: points in the map's CRS), so the
proposals spread over the map instead of piling up on one uncertain field. The map is read
window by window and each window keeps only its best candidate per cell of
``min_distance / 2`` pixels (a greedy pass then enforces the distance), so memory stays at
about one window plus one candidate per cell. Ties are broken by a jitter hashed from
``seed`` and the pixel's position, so a run is reproducible and does not depend on the
window size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cropscope.errors import DataError

__all__ = ["SCORES", "Proposals", "propose_samples", "uncertainty_scores"]

SCORES = ("entropy", "margin", "least-confidence")
_NODATA = 255


def uncertainty_scores(proba: np.ndarray, method: str = "entropy") -> np.ndarray:
    """Scores ``[...]`` of probabilities ``[K, ...]`` (higher = less certain)."""
    if method not in SCORES:
        raise DataError(f"uncertainty score must be one of {SCORES}, got {method!r}")
    p = np.asarray(proba, dtype=np.float64)
    k = p.shape[0]
    if method == "entropy":
        safe = np.clip(p, 1e-12, 1.0)
        return -(p * np.log(safe)).sum(axis=0) / np.log(k)
    top2 = np.sort(p, axis=0)[-2:]
    if method == "margin":
        return 1.0 - (top2[1] - top2[0])
    return 1.0 - top2[1]


@dataclass
class Proposals:
    """Proposed pixels: ``rows``, ``cols``, pixel-centre ``x``/``y`` (map CRS), their
    ``score``, the map's most probable class there (``map_class``), and the map's ``crs``."""

    rows: np.ndarray
    cols: np.ndarray
    x: np.ndarray
    y: np.ndarray
    score: np.ndarray
    map_class: list[str]
    crs: Any

    def write(self, path: str | Path) -> Path:
        """As a GeoPackage / GeoJSON (points) or CSV (``x``/``y``), atomically, with an empty
        ``label`` column for the interpreters."""
        import pandas as pd

        from cropscope.data.points import write_points

        frame = pd.DataFrame({"point_id": np.arange(len(self.rows)), "row": self.rows,
                              "col": self.cols, "x": self.x, "y": self.y,
                              "score": self.score, "map_class": self.map_class,
                              "label": [""] * len(self.rows)})
        return write_points(frame, path, self.crs)


def _jitter(r0: int, c0: int, h: int, w: int, seed: int) -> np.ndarray:
    """A tiny value in [0, 1e-9) per pixel from its position and ``seed`` (an integer hash)."""
    rows = np.arange(r0, r0 + h, dtype=np.uint64)[:, None]
    cols = np.arange(c0, c0 + w, dtype=np.uint64)[None]
    with np.errstate(over="ignore"):
        x = (rows * np.uint64(0x9E3779B97F4A7C15)) ^ (cols * np.uint64(0xC2B2AE3D27D4EB4F))
        x ^= np.uint64(seed) * np.uint64(0x165667B19E3779F9)
        x ^= x >> np.uint64(29)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(32)
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53) * 1e-9


def propose_samples(probabilities: str | Path, n: int, *, method: str = "entropy",
                    min_distance: int = 10, exclude: tuple[np.ndarray, np.ndarray] | None
                    = None, seed: int = 0, block: int = 512) -> Proposals:
    """The ``n`` most uncertain, spread-out pixels of a probability map (module doc)."""
    import rasterio
    from rasterio.windows import Window

    from cropscope.data.readers.class_tags import band_class_names

    path = Path(probabilities)
    if not path.is_file():
        raise DataError(f"probability map not found: {path}")
    if n < 1:
        raise DataError(f"ask for at least one sample, got {n}")
    if min_distance < 1:
        raise DataError(f"min_distance must be >= 1 pixel, got {min_distance}")
    if method not in SCORES:
        raise DataError(f"uncertainty score must be one of {SCORES}, got {method!r}")
    d = int(min_distance)
    cell_size = max(1, d // 2)
    with rasterio.open(path) as src:
        if src.count < 2 or src.dtypes[0] != "uint8":
            raise DataError(f"{path} is not a probability map (uint8, one band per class)")
        classes = band_class_names(src)
        t, crs = src.transform, src.crs
        ex_r = ex_c = np.zeros(0, dtype=np.int64)
        if exclude is not None:
            inv = ~t
            cf, rf = inv * (np.asarray(exclude[0], float), np.asarray(exclude[1], float))
            ex_r = np.floor(np.asarray(rf)).astype(np.int64)
            ex_c = np.floor(np.asarray(cf)).astype(np.int64)
        cand: dict[tuple[int, int], tuple[float, int, int, int]] = {}
        step = max(cell_size, (block // cell_size) * cell_size)  # windows aligned to cells
        for r0 in range(0, src.height, step):
            for c0 in range(0, src.width, step):
                h, w = min(step, src.height - r0), min(step, src.width - c0)
                q = src.read(window=Window(c0, r0, w, h))
                valid = (q != _NODATA).all(axis=0)
                if not valid.any():
                    continue
                p = q.astype(np.float64) / 254.0
                score = uncertainty_scores(p, method)
                score = score + _jitter(r0, c0, h, w, seed)  # reproducible tie-break
                score[~valid] = -np.inf
                here = np.flatnonzero((ex_r > r0 - d) & (ex_r < r0 + h + d)
                                      & (ex_c > c0 - d) & (ex_c < c0 + w + d))
                for i in here:  # nothing within min_distance of an existing sample
                    a, b = max(0, ex_r[i] - r0 - d + 1), max(0, ex_r[i] - r0 + d)
                    e, f = max(0, ex_c[i] - c0 - d + 1), max(0, ex_c[i] - c0 + d)
                    score[a:b, e:f] = -np.inf
                best_class = p.argmax(axis=0)
                for cr in range(0, h, cell_size):
                    for cc in range(0, w, cell_size):
                        cell = score[cr:cr + cell_size, cc:cc + cell_size]
                        idx = int(np.argmax(cell))
                        s = float(cell.flat[idx])
                        if not np.isfinite(s):
                            continue
                        rr, ccc = cr + idx // cell.shape[1], cc + idx % cell.shape[1]
                        cand[((r0 + cr) // cell_size, (c0 + cc) // cell_size)] = (
                            s, r0 + rr, c0 + ccc, int(best_class[rr, ccc]))
    if not cand:
        raise DataError(f"{path} has no mapped pixel to propose (all nodata or excluded)")
    order = sorted(cand.values(), key=lambda v: -v[0])
    picked: list[tuple[float, int, int, int]] = []
    taken: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for s, r, c, k in order:
        cell = (r // d, c // d)
        clash = False
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                for pr, pc in taken.get((cell[0] + dr, cell[1] + dc), []):
                    if abs(pr - r) < d and abs(pc - c) < d:
                        clash = True
        if clash:
            continue
        picked.append((s, r, c, k))
        taken.setdefault(cell, []).append((r, c))
        if len(picked) == n:
            break
    rows = np.array([v[1] for v in picked], dtype=np.int64)
    cols = np.array([v[2] for v in picked], dtype=np.int64)
    xs = t.c + t.a * (cols + 0.5) + t.b * (rows + 0.5)
    ys = t.f + t.d * (cols + 0.5) + t.e * (rows + 0.5)
    return Proposals(rows, cols, xs, ys, np.array([v[0] for v in picked]),
                     [classes[v[3]] for v in picked], crs)
