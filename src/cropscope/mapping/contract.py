"""The map-model contract: what the map job needs from a model, and nothing more.

A :class:`MapModel` turns one window of a cube into class probabilities::

    predict_window(cube: xr.DataArray (time, band, y, x), core: (rows, cols))
        -> (proba float32 [K, h, w], valid bool [h, w])

``cube`` holds the bands in :attr:`MapModel.bands` order (float32, NaN = nodata) with the
cube's dates as the ``time`` coordinate; ``core`` are the slices of the window's own pixels
inside the read area (the rest is halo). Models whose ``input_kind`` is ``"pixels"`` or
``"patches"`` return the core only; ``"scene"`` models return the whole read area, which the
job cross-fades with the neighbouring windows (:mod:`cropscope.mapping.predictors`).

Two implementations:

- :class:`ClassifierMapModel` adapts any :class:`~cropscope.models.base.Classifier` (pixel
  series or patches); for pixel series it also takes the window as band-major arrays
  (:meth:`ClassifierMapModel.predict_pixels`, ``values [C, T, N]``), the route the map job
  uses (:mod:`cropscope.mapping.pixels`: no xarray cube, no ``TimeSeriesSet``);
- :class:`~cropscope.models.segmentation_map.SegmentationRunModel` (AgriFM / H2Crop runs)
  implements the contract itself.

Before mapping, :func:`check_time_grid` compares the cube's dates with the model's
:class:`~cropscope.runs.TimeGrid`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from cropscope.errors import DataError
from cropscope.runs.schema import TimeGrid

if TYPE_CHECKING:
    import xarray as xr

    from cropscope.models.base import Classifier

__all__ = ["ClassifierMapModel", "MapModel", "as_map_model", "check_time_grid"]

#: a cube window's core inside its read area: (row slice, column slice)
Core = tuple[slice, slice]


@runtime_checkable
class MapModel(Protocol):
    """What a map job needs from a model (see the module docstring)."""

    name: str
    input_kind: str

    @property
    def classes(self) -> list[str]: ...

    @property
    def bands(self) -> list[str]: ...

    @property
    def time_grid(self) -> TimeGrid: ...

    @property
    def halo(self) -> int:
        """The context (pixels) each window needs around it (0: none)."""
        ...

    def predict_window(self, cube: xr.DataArray, core: Core
                       ) -> tuple[np.ndarray, np.ndarray]: ...


class ClassifierMapModel:
    """A :class:`Classifier` under the map-model contract (pixel series or patches)."""

    def __init__(self, model: Classifier, batch_size: int = 65536) -> None:
        self.model = model
        self.name = model.name
        self.batch_size = int(batch_size)
        #: sha256 of the run manifest the classifier was loaded from (None: in memory)
        self.run_digest: str | None = getattr(model, "run_digest", None)
        kind = getattr(model, "input_kind", "pixels")
        if kind not in ("pixels", "patches"):
            raise DataError(f"model {model.name!r} takes {kind!r} inputs, which maps cannot "
                            "feed")
        card = model._require_card()
        self.patch_size = int(card.extra.get("patch_size", 1)) if kind == "patches" else 1
        # a patch model trained on 1 x 1 patches reads pixel series
        self.input_kind = "patches" if self.patch_size > 1 else "pixels"
        # a patch model of a time series names its channels "<band>@t<i>" (time-major)
        names = list(card.bands)
        self._bands = names
        self._patch_times: int | None = None
        if kind == "patches" and names and all("@t" in b for b in names):
            base = list(dict.fromkeys(b.rsplit("@t", 1)[0] for b in names))
            if len(names) % len(base) == 0:
                self._bands = base
                self._patch_times = len(names) // len(base)

    @property
    def classes(self) -> list[str]:
        return list(self.model.classes)

    @property
    def bands(self) -> list[str]:
        return list(self._bands)

    @property
    def time_grid(self) -> TimeGrid:
        card = self.model._require_card()
        if self._patch_times is not None:
            return TimeGrid(kind="steps", n_times=self._patch_times)
        if card.time_grid:
            return TimeGrid.from_dict(card.time_grid)
        return TimeGrid(kind="steps", n_times=card.n_times) if card.n_times else TimeGrid.any()

    @property
    def halo(self) -> int:
        return self.patch_size // 2

    def predict_window(self, cube: xr.DataArray, core: Core
                       ) -> tuple[np.ndarray, np.ndarray]:
        if self.input_kind == "pixels":
            return self._pixels(cube[:, :, core[0], core[1]])
        return self._patches(cube, core)

    def _pixels(self, cube: xr.DataArray) -> tuple[np.ndarray, np.ndarray]:
        if tuple(cube.dims) != ("time", "band", "y", "x"):
            raise DataError(f"cube must have dims (time, band, y, x), got {cube.dims}")
        h, w = cube.sizes["y"], cube.sizes["x"]
        data = np.asarray(cube.values, dtype=np.float32)  # [T, C, h, w]
        values = np.ascontiguousarray(data.reshape(data.shape[0], data.shape[1], h * w)
                                      .transpose(1, 0, 2))  # fmt: skip
        mask = np.asarray(np.isfinite(values).all(axis=0))
        dates = cube["time"].values.astype("datetime64[D]")
        proba_valid, valid = self.predict_pixels(values, mask, dates)
        k = len(self.model.classes)
        proba = np.zeros((k, h * w), dtype=np.float32)
        proba[:, valid] = proba_valid
        return proba.reshape(k, h, w), valid.reshape(h, w)

    def predict_pixels(self, values: np.ndarray, mask: np.ndarray,
                       dates: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities of the pixels with a valid step, from band-major series.

        ``values float32 [C, T, N]`` (this model's bands; overwritten: gaps are filled and
        the features standardised in place), ``mask [T, N]`` (valid steps), ``dates [T]``
        (:mod:`cropscope.mapping.pixels`). Returns ``proba float32 [K, n_valid]`` (C order)
        and ``valid bool [N]``. The pixels are predicted in batches of ``batch_size`` valid
        pixels, as :meth:`predict_window` always did.
        """
        valid = np.asarray(mask.any(axis=0))
        idx_valid = np.flatnonzero(valid)
        every = idx_valid.size == valid.size
        proba = np.empty((len(self.model.classes), idx_valid.size), dtype=np.float32)
        for start in range(0, idx_valid.size, self.batch_size):
            stop = min(idx_valid.size, start + self.batch_size)
            if every:  # views: the batch's rows of the window buffer
                batch, steps = values[:, :, start:stop], mask[:, start:stop]
            else:
                idx = idx_valid[start:stop]
                batch, steps = values[:, :, idx], mask[:, idx]
            proba[:, start:stop] = self.model.predict_proba_pixels(batch, steps, dates).T
        return proba, valid

    def _patches(self, cube: xr.DataArray, core: Core) -> tuple[np.ndarray, np.ndarray]:
        from cropscope.data.patches import PatchSet, extract_patches

        model: Any = self.model  # a patch network or a feature model on neighbourhood means
        bands = [str(b) for b in cube["band"].values]
        n_t = cube.sizes["time"]
        values = np.asarray(cube.values)
        image = values[0] if n_t == 1 else values.reshape(-1, *values.shape[2:])
        names = bands if n_t == 1 else [f"{b}@t{i}" for i in range(n_t) for b in bands]
        rs, cs = core
        valid = np.isfinite(image[:, rs, cs]).any(axis=0)
        rows, cols = np.nonzero(valid)
        k = len(model.classes)
        proba = np.zeros((k, *valid.shape), dtype=np.float32)
        for start in range(0, rows.size, self.batch_size):
            r = rows[start : start + self.batch_size]
            c = cols[start : start + self.batch_size]
            patches = extract_patches(image, r + rs.start, c + cs.start, self.patch_size)
            proba[:, r, c] = model.predict_proba(PatchSet(values=patches, bands=names)).T
        return proba, valid


def as_map_model(model: Any, batch_size: int = 65536) -> MapModel:
    """``model`` itself when it follows the contract, else a :class:`ClassifierMapModel`."""
    if isinstance(model, MapModel):
        return model
    from cropscope.models.base import Classifier

    if isinstance(model, Classifier):
        return ClassifierMapModel(model, batch_size)
    raise DataError(f"{type(model).__name__} cannot make maps (no predict_window)")


def check_time_grid(model: MapModel, dates: Any, what: str = "cube") -> None:
    """Refuse a cube (or a table with shared dates: ``what="table"``) whose dates do not fit
    the model's time grid, with the fix in the message (composite the cube to the model's
    grid: ``--composite``)."""
    grid = model.time_grid
    if grid.kind == "any":
        return
    n = len(dates)
    hint = ("; composite the cube to the model's time grid first (cropscope predict "
            "--composite)") if what == "cube" else \
        "; give the samples on the dates the model was trained on"
    if grid.n_times is not None and n != grid.n_times:
        raise DataError(f"the model was trained on {grid.describe()} but the {what} has {n} "
                        f"dates{hint}")
    if grid.kind == "dates" and grid.dates:
        if not np.issubdtype(np.asarray(dates).dtype, np.datetime64):
            return  # integer time steps: only the count can be checked
        cube_days = np.asarray(dates).astype("datetime64[D]")
        trained = np.asarray(grid.dates, dtype="datetime64[D]")
        # the same season: each date within half the median step of the trained date,
        # allowing the whole grid to move by whole years (a model applied to a later year)
        years = np.round((cube_days[0] - trained[0]).astype(np.int64) / 365.25)
        shift = (cube_days - trained).astype(np.int64) - int(years * 365.25)
        step = np.median(np.diff(trained).astype(np.int64)) if n > 1 else 16
        tolerance = max(3, int(step // 2))
        if np.abs(shift).max() > tolerance:
            worst = int(np.abs(shift).argmax())
            raise DataError(
                f"the {what}'s dates do not follow the model's season: date {worst + 1} is "
                f"{cube_days[worst]} but the model was trained on {grid.dates[worst]} "
                f"(a different season or step){hint}")
