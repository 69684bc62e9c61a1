"""How far below Keys bicubic can *any* reconstruction of the coarse samples go?

    python benchmarks/weather_ceiling.py [FILE] [--coarsen K]

Issue 8 asks the field model to beat bicubic interpolation at the held-out fine-grid points
of ERA-Interim u/v/z fitted on every K-th point. This script measures the head-room, with
methods that are *allowed to see the fine truth* (upper bounds) and methods that are not.
RMSE ratios against Keys bicubic (a = −0.5) at the held-out points (lower is better):

- fixed interpolators: Lagrange (4 and 6 taps), cubic B-spline;
- linear correction stencils on the centred 4×4 coarse neighbourhood, one per sub-cell
  position and (variable, slice), fitted by ridge regression
  * ``oracle``: on the fine truth of the same slices (in-sample: an upper bound),
  * ``other-month``: on the fine truth of the other non-level slices (e.g. July → January),
  * ``one-scale-up``: on the coarse grid only (the coarse grid subsampled by K predicts the
    coarse grid, all K² offsets) — what a model fitted on the coarse grid can learn;
  with features from the same field (``self``) or all variables and levels (``all``);
- geostrophic winds from the interpolated z (20°–80°), plus the interpolated ageostrophic
  remainder at the nodes.

Every number is printed, none is asserted.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from cropscope.settings import data_dir
from cropscope.weather.evaluate import stack_fields
from cropscope.weather.geometry import coriolis, grid_gradient
from cropscope.weather.interp import keys_weights
from cropscope.weather.readers import open_weather

Kernel = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def keys(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return keys_weights(torch.as_tensor(t)).numpy().T, np.arange(-1, 3)


def lagrange(n: int) -> Kernel:
    offs = np.arange(n) - (n // 2 - 1)

    def weights(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w = [np.prod([(t - o2) / (o - o2) for o2 in offs if o2 != o], axis=0) for o in offs]
        return np.stack(w), offs

    return weights


def upsample(c: np.ndarray, k: int, ny: int, nx: int, kernel: Kernel) -> np.ndarray:
    """Separable interpolation of ``c [..., cy, cx]`` (rows clamp, columns wrap) to ny × nx."""
    cy, cx = c.shape[-2:]
    iy, ix = np.arange(ny) / k, np.arange(nx) / k
    by, bx = np.floor(iy).astype(int), np.floor(ix).astype(int)
    (wy, offs), (wx, _) = kernel(iy - by), kernel(ix - bx)
    out = np.zeros((*c.shape[:-2], ny, nx))
    for a, oa in enumerate(offs):
        rows = c[..., np.clip(by + oa, 0, cy - 1), :]
        for b, ob in enumerate(offs):
            out += rows[..., (bx + ob) % cx] * wy[a][:, None] * wx[b][None, :]
    return out


def spline(c: np.ndarray, k: int, ny: int, nx: int) -> np.ndarray:
    from scipy import ndimage

    yy, xx = np.meshgrid(np.arange(ny) / k, np.arange(nx) / k, indexing="ij")
    out = np.empty((*c.shape[:-2], ny, nx))
    for idx in np.ndindex(c.shape[:-2]):
        pad = np.concatenate([c[idx][:, -8:], c[idx], c[idx][:, :8]], axis=1)
        out[idx] = ndimage.map_coordinates(pad, [yy, xx + 8], order=3, mode="nearest")
    return out


def neighbourhoods(c: np.ndarray, k: int, ny: int, nx: int, dy: int, dx: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centred 4×4 coarse neighbourhoods ``[..., n_y, n_x, 16]`` of sub-position (dy, dx)."""
    cy, cx = c.shape[-2:]
    ys, xs = np.arange(dy, ny, k), np.arange(dx, nx, k)
    cols = [c[..., np.clip(ys // k + a, 0, cy - 1)[:, None], ((xs // k + b) % cx)[None, :]]
            for a in range(-1, 3) for b in range(-1, 3)]
    x = np.stack(cols, -1)
    return x - x.mean(-1, keepdims=True), ys, xs


Offsets = dict[tuple[int, int], list[tuple[np.ndarray, np.ndarray]]]


def stencil_data(fines: list[np.ndarray], k: int) -> Offsets:
    """Per sub-position (dy, dx): (neighbourhoods ``[S, V, n, m, 16]``, Keys residual
    ``[S, V, n, m]``) of each fine grid, the coarse grid being its every k-th point."""
    out: Offsets = {}
    for fine in fines:
        ny, nx = fine.shape[-2:]
        c = fine[..., ::k, ::k]
        res = fine - upsample(c, k, ny, nx, keys)
        for dy in range(k):
            for dx in range(k):
                if dy or dx:
                    x, ys, xs = neighbourhoods(c, k, ny, nx, dy, dx)
                    out.setdefault((dy, dx), []).append((x, res[..., ys[:, None], xs[None, :]]))
    return out


def design(items: list[tuple[np.ndarray, np.ndarray]], s: list[int], v: int, feats: str,
           group: dict[int, list[int]]) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for x, res in items:
        for si in s:
            f = x[si, v] if feats == "self" else np.concatenate(
                [x[j, w] for j in group[si] for w in range(x.shape[1])], -1)
            xs.append(f.reshape(-1, f.shape[-1]))
            ys.append(res[si, v].reshape(-1))
    return np.concatenate(xs), np.concatenate(ys)


def stencil_ratio(train: Offsets, test: Offsets, v: int, feats: str,
                  fit_slices: Callable[[int], list[int]], group: dict[int, list[int]],
                  lam: float = 1e-2) -> float:
    """RMSE ratio vs Keys of a ridge-fitted correction stencil for variable ``v``; the
    stencil for slice ``si`` is fitted on ``train``'s slices ``fit_slices(si)``."""
    n_slices = next(iter(test.values()))[0][0].shape[0]
    sse = sse0 = 0.0
    for si in range(n_slices):
        fit = fit_slices(si)
        if not fit:
            return float("nan")
        for pos, items in test.items():
            a, b = design(train[pos], fit, v, feats, group)
            sd = a.std(0) + 1e-12
            a = a / sd
            gram = a.T @ a
            w = np.linalg.solve(gram + lam * np.trace(gram) / len(gram) * np.eye(len(gram)),
                                a.T @ b)
            at, bt = design(items, [si], v, feats, group)
            sse += float(((bt - (at / sd) @ w) ** 2).sum())
            sse0 += float((bt**2).sum())
    return float(np.sqrt(sse / sse0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("file", nargs="?", default=None)
    parser.add_argument("--coarsen", type=int, default=3)
    args = parser.parse_args()
    path = Path(args.file) if args.file else data_dir() / "weather_reanalysis" / "eraint_uvz.nc"
    ds = open_weather(path)
    values, names, slices, dims = stack_fields(ds)
    lat, lon = ds["latitude"].values.astype(float), ds["longitude"].values.astype(float)
    k = args.coarsen
    ny, nx = values.shape[-2:]
    held = np.ones((ny, nx), bool)
    held[::k, ::k] = False
    coarse = values[..., ::k, ::k]
    base = upsample(coarse, k, ny, nx, keys)

    def rmse(pred: np.ndarray, v: int, s: slice | list[int] = slice(None)) -> float:
        return float(np.sqrt(np.mean((pred[s, v] - values[s, v])[..., held] ** 2)))

    # slices that share every non-level coordinate form a group (e.g. one month)
    other = [d for d in dims if d != "level"]
    levels = [s.get("level") for s in slices]
    group: dict[int, list[int]] = {}
    for i, s in enumerate(slices):
        group[i] = [j for j, t in enumerate(slices) if all(str(t[d]) == str(s[d]) for d in other)]

    print(f"{path.name}: fitted on every {k}-th point, {int(held.sum())} held-out points per "
          f"slice; RMSE ratio vs Keys bicubic (lower is better)\n")
    print("Keys bicubic RMSE per slice:")
    for i, s in enumerate(slices):
        print("  ", s, " ".join(f"{n}={rmse(base, v, [i]):.4g}" for v, n in enumerate(names)))
    lowest = [i for i, s in enumerate(slices) if s.get("level") == max(
        t.get("level", 0) for t in slices)]
    for v, n in enumerate(names):
        e2 = ((base[:, v] - values[:, v])[..., held] ** 2).sum(-1)
        print(f"  share of {n}'s squared error in the slices {[slices[i] for i in lowest]}: "
              f"{e2[lowest].sum() / e2.sum():.1%}")

    rows: dict[str, list[float]] = {}
    fixed = {"Lagrange 4 taps": upsample(coarse, k, ny, nx, lagrange(4)),
             "Lagrange 6 taps": upsample(coarse, k, ny, nx, lagrange(6)),
             "cubic B-spline": spline(coarse, k, ny, nx)}
    for label, pred in fixed.items():
        rows[label] = [rmse(pred, v) / rmse(base, v) for v in range(len(names))]
    test = stencil_data([values], k)
    # one scale up: the coarse grid (each of its k² sub-lattices as context) is the truth
    ups = []
    for oy in range(k):
        for ox in range(k):
            sub = coarse[..., oy:, ox:]
            ups.append(sub[..., : (sub.shape[-2] - 1) // k * k + 1, : sub.shape[-1] // k * k])
    fits = {
        "oracle": (test, lambda si: [si]),
        "other-month": (test, lambda si: [j for j in range(len(slices))
                                          if j not in group[si] and levels[j] == levels[si]]),
        "one-scale-up": (stencil_data(ups, k), lambda si: [si]),
    }
    for mode, (train, fit_slices) in fits.items():
        for feats in ("self", "all"):
            rows[f"stencil {mode} ({feats})"] = [
                stencil_ratio(train, test, v, feats, fit_slices, group)
                for v in range(len(names))]
    if {"u", "v", "z"} <= set(names):
        iu, iv, iz = names.index("u"), names.index("v"), names.index("z")
        band = (np.abs(lat) >= 20) & (np.abs(lat) <= 80)
        f = coriolis(lat)[:, None]
        gx, gy = grid_gradient(base[:, iz], lat, lon)
        geo = {iu: np.nan_to_num(-gy / f), iv: np.nan_to_num(gx / f)}
        ratio = []
        for v in range(len(names)):
            if v not in geo:
                ratio.append(float("nan"))
                continue
            ageo = coarse[:, v] - geo[v][..., ::k, ::k]
            pred = geo[v] + upsample(ageo, k, ny, nx, keys)
            m = held & band[:, None]
            ratio.append(float(np.sqrt(np.mean((pred - values[:, v])[..., m] ** 2)
                                       / np.mean((base[:, v] - values[:, v])[..., m] ** 2))))
        rows["geostrophic u,v from z (20°-80°)"] = ratio
    print(f"\n{'method':<34}" + "".join(f"{n:>9}" for n in names))
    for label, r in rows.items():
        print(f"{label:<34}" + "".join(f"{x:>9.4f}" for x in r))


if __name__ == "__main__":
    main()
