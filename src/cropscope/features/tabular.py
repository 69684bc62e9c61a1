"""Flat feature tables ``[N, D]`` for tree models and other vector classifiers."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cropscope.data.timeseries import TimeSeriesSet
from cropscope.errors import DataError
from cropscope.features.gapfill import _check_not_empty, interpolate_gaps, time_axis_days
from cropscope.features.harmonics import harmonic_coefficients, harmonic_feature_names
from cropscope.features.indices import available_indices, compute_index, index_bands, resolve_bands

__all__ = ["FEATURE_KINDS", "FEATURE_STEPS", "apply_feature_step", "build_features",
           "is_feature_step"]

#: Feature blocks of a spec for :func:`build_features`.
FEATURE_KINDS = ("values", "indices", "harmonics", "stats", "diff", "quantiles")
#: Preprocessing steps of a spec (prefixes; parameters after ``:``), applied in order to
#: the series the later blocks see.
FEATURE_STEPS = ("whittaker", "sgolay", "index", "expr", "snv")
STATS = ("mean", "std", "min", "max", "argmax_frac", "amplitude")


def is_feature_step(item: str) -> bool:
    """Whether a spec item is a preprocessing step (``whittaker:10``, ``expr:X=...``)."""
    return str(item).split(":", 1)[0] in FEATURE_STEPS


def _numbers(item: str, args: list[str], kinds: tuple[type, ...]) -> list[float]:
    if len(args) > len(kinds):
        raise DataError(f"feature step {item!r} takes at most {len(kinds)} parameters")
    try:
        return [kind(a) for a, kind in zip(args, kinds, strict=False)]
    except ValueError:
        raise DataError(f"feature step {item!r}: parameters must be numbers") from None


def apply_feature_step(ts: TimeSeriesSet, item: str, sensor: str = "sentinel2"
                       ) -> TimeSeriesSet:
    """Apply one preprocessing step of a feature spec to ``ts``:

    - ``whittaker[:LAMBDA[:ORDER]]`` (default 1, 2): Whittaker smoothing with gaps;
    - ``sgolay[:WINDOW[:POLYORDER]]`` (default 5, 2): Savitzky–Golay with gaps;
    - ``index:NAME[,NAME...]``: built-in or spyndex catalogue indices as new bands;
    - ``expr:NAME=EXPRESSION``: a safe arithmetic expression on band names as a new band;
    - ``snv``: each step's spectrum centred and scaled by its own mean and standard
      deviation across bands (standard normal variate).

    See :mod:`cropscope.features.smoothing`, :mod:`cropscope.features.expressions` and
    :mod:`cropscope.features.normalise`.
    """
    head, _, rest = str(item).partition(":")
    if head == "whittaker":
        from cropscope.features.smoothing import whittaker

        lam, *order = _numbers(item, [a for a in rest.split(":") if a], (float, int)) or [1.0]
        return whittaker(ts, lam, int(order[0]) if order else 2)
    if head == "sgolay":
        from cropscope.features.smoothing import savitzky_golay

        window, *poly = _numbers(item, [a for a in rest.split(":") if a], (int, int)) or [5]
        return savitzky_golay(ts, int(window), int(poly[0]) if poly else 2)
    if head in {"index", "expr"}:
        from cropscope.features.expressions import add_expressions

        if not rest.strip():
            raise DataError(f"feature step {item!r} needs a name, e.g. index:NDVI or "
                            "expr:NAME=(B8-B4)/(B8+B4)")
        if head == "expr" and "=" not in rest:
            raise DataError(f"feature step {item!r} must read expr:NAME=EXPRESSION")
        names = [rest] if head == "expr" else [n.strip() for n in rest.split(",") if n.strip()]
        return add_expressions(ts, names, sensor=sensor)
    if head == "snv":
        from cropscope.features.normalise import snv

        if rest:
            raise DataError(f"feature step {item!r}: snv takes no parameters")
        return snv(ts)
    raise DataError(f"unknown feature step {item!r}; steps: {list(FEATURE_STEPS)}")


def _step_names(prefix: str, count: int, start: int = 0) -> list[str]:
    width = max(2, len(str(start + count - 1)))
    return [f"{prefix}{i:0{width}d}" for i in range(start, start + count)]


def _flatten(
    values: np.ndarray, bands: Sequence[str], tag: str, start: int = 0
) -> tuple[np.ndarray, list[str]]:
    """``[N, T, C]`` → band-major ``[N, C*T]`` and names ``{band}_{tag}{step}``."""
    n, t, _ = values.shape
    flat = values.transpose(0, 2, 1).reshape(n, -1)
    names = [name for b in bands for name in _step_names(f"{b}_{tag}", t, start)]
    return flat, names


def _indices_block(filled: TimeSeriesSet, sensor: str) -> tuple[np.ndarray, list[str]]:
    """Every supported index whose bands exist (and that is not already a band)."""
    present = {b.lower() for b in filled.bands}
    cols, names = [], []
    for name in available_indices():
        if name.lower() in present:
            continue
        needs = index_bands(name)
        if len(resolve_bands(filled.bands, needs, sensor)) < len(needs):
            continue
        cols.append(compute_index(name, filled, sensor))
        names.append(name)
    if not cols:
        return np.empty((filled.n_samples, 0), np.float32), []
    return _flatten(np.stack(cols, axis=2), names, "t")


def _stats_block(ts: TimeSeriesSet) -> tuple[np.ndarray, list[str]]:
    """Per band over valid steps: mean, std, min, max, time of max (0-1), amplitude."""
    mask = ts.mask
    assert mask is not None  # set by TimeSeriesSet.__post_init__
    valid = mask[:, :, None]
    vals = np.where(valid, ts.values, np.nan).astype(np.float64)
    count = valid.sum(axis=1)  # [N, 1]
    mean = np.where(valid, vals, 0.0).sum(axis=1) / count
    var = np.where(valid, (vals - mean[:, None]) ** 2, 0.0).sum(axis=1) / count
    vmin = np.where(valid, vals, np.inf).min(axis=1)
    vmax = np.where(valid, vals, -np.inf).max(axis=1)
    arg = np.where(valid, vals, -np.inf).argmax(axis=1)  # [N, C], first maximum
    t = np.broadcast_to(time_axis_days(ts), mask.shape)
    t_first = np.where(mask, t, np.inf).min(axis=1)[:, None]
    t_last = np.where(mask, t, -np.inf).max(axis=1)[:, None]
    t_max = np.take_along_axis(t, arg, axis=1)
    span = t_last - t_first
    frac = np.where(span > 0, (t_max - t_first) / np.where(span > 0, span, 1.0), 0.0)
    block = np.stack([mean, np.sqrt(var), vmin, vmax, frac, vmax - vmin], axis=2)  # [N, C, 6]
    names = [f"{b}_{s}" for b in ts.bands for s in STATS]
    return block.reshape(ts.n_samples, -1).astype(np.float32), names


def build_features(
    ts: TimeSeriesSet,
    spec: Sequence[str] | str = ("values",),
    harmonic_order: int = 2,
    sensor: str = "sentinel2",
) -> tuple[np.ndarray, list[str]]:
    """Feature matrix ``float32 [N, D]`` and its column names, blocks in ``spec`` order.

    Spec items:

    - ``"values"``: gap-filled values, band-major (``B4_t00, B4_t01, ..., B8_t00, ...``).
    - ``"indices"``: every index of :func:`available_indices` whose bands the set has (and
      that is not already a band), from the gap-filled values, e.g. ``NDVI_t03``; indices
      without their bands are skipped silently (possibly all of them).
    - ``"harmonics"``: harmonic coefficients of order ``harmonic_order`` (``B4_c``,
      ``B4_cos1``, ...); NaN where a fit is rank-deficient.
    - ``"stats"``: per band over valid steps: ``mean, std, min, max, argmax_frac`` (time of
      the maximum as a fraction of the sample's observed span) and ``amplitude`` (max-min).
    - ``"diff"``: first temporal difference of the gap-filled values (``B4_d01`` = t01-t00).
    - ``"quantiles"``: QUANT's interval quantiles of the gap-filled values, their first and
      second differences and Fourier magnitudes (:mod:`cropscope.features.intervals`, e.g.
      ``B4_x2.1_q0``).

    Preprocessing steps (:data:`FEATURE_STEPS`, see :func:`apply_feature_step`) change the
    series that the blocks *after* them see, in spec order, e.g. ``["expr:ndvi=(B8-B4)/
    (B8+B4)", "whittaker:10", "values", "stats"]``: the new band ``ndvi`` is smoothed with
    the other bands and then flattened. As the spec is part of a model's configuration, the
    same steps run at inference.

    Series without any valid observation raise :class:`DataError`. Unknown items raise
    :class:`DataError` listing the options.
    """
    items = [spec] if isinstance(spec, str) else list(spec)
    unknown = [s for s in items if s not in FEATURE_KINDS and not is_feature_step(s)]
    if unknown:
        raise DataError(f"unknown feature spec {unknown}; options: {list(FEATURE_KINDS)} "
                        f"and the steps {[f'{s}:...' for s in FEATURE_STEPS]}")
    if not any(s in FEATURE_KINDS for s in items):
        raise DataError(f"feature spec without a feature block; options: {list(FEATURE_KINDS)}")
    _check_not_empty(ts, "cannot build features")
    filled: TimeSeriesSet | None = None
    blocks: list[np.ndarray] = []
    names: list[str] = []
    done: set[str] = set()
    for item in items:
        if is_feature_step(item):
            ts = apply_feature_step(ts, item, sensor)
            filled = None
            continue
        if item in done:
            continue
        done.add(item)
        if item in {"values", "indices", "diff", "quantiles"}:
            if filled is None:
                filled = interpolate_gaps(ts)
            if item == "values":
                block, cols = _flatten(filled.values, ts.bands, "t")
            elif item == "indices":
                block, cols = _indices_block(filled, sensor)
            elif item == "quantiles":
                from cropscope.features.intervals import interval_quantiles

                block, cols = interval_quantiles(filled.values, ts.bands)
            else:
                block, cols = _flatten(np.diff(filled.values, axis=1), ts.bands, "d", start=1)
        elif item == "harmonics":
            block = harmonic_coefficients(ts, order=harmonic_order)
            cols = harmonic_feature_names(ts.bands, harmonic_order)
        else:
            block, cols = _stats_block(ts)
        blocks.append(np.asarray(block, dtype=np.float32))
        names.extend(cols)
    return np.concatenate(blocks, axis=1), names
