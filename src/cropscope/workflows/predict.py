"""``cropscope predict`` as one Python call: a run applied to samples or to an image cube.

:func:`predict_run` loads any run directory (:func:`cropscope.models.load_run_model`: pixel and
patch classifiers, AgriFM / H2Crop segmentation runs) and

- for a long table (CSV / Parquet) writes one row per sample: prediction, confidence, one
  prediction per hierarchy level when the model has a taxonomy, and the class
  probabilities (:func:`predict_table`);
- for a cube (anything :func:`~cropscope.data.readers.open.open_cube_source` opens)
  delivers the map product (:func:`cropscope.mapping.deliver_map`), optionally composited
  to the model's time grid first, and with ``parcels`` a per-parcel table (pixel
  probabilities aggregated per parcel, or a parcel-level model on each parcel's mean or
  median series).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cropscope.errors import DataError

__all__ = ["PredictResult", "is_table", "predict_run", "predict_table"]

_TABLE_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")
log = logging.getLogger("cropscope")


def is_table(path: str | Path) -> bool:
    """A long table of samples (by file name)."""
    return Path(path).name.lower().endswith(_TABLE_SUFFIXES)


@dataclass
class PredictResult:
    """What :func:`predict_run` wrote."""

    kind: str  # "table", "map" or "parcels"
    paths: dict[str, Path]
    n_rows: int = 0
    product: Any = None
    messages: list[str] = field(default_factory=list)


def predict_table(model: Any, input_path: str | Path, out_path: str | Path, *,
                  id_col: str = "sample_id", time_col: str = "date") -> int:
    """Predictions for every sample of a long table, written atomically to ``out_path``
    (CSV, CSV.GZ or Parquet); returns the number of rows."""
    import pandas as pd

    from cropscope.data.readers.table import read_table
    from cropscope.io import atomic_path

    out_path = Path(out_path)
    if not is_table(out_path):
        raise DataError(f"--out {out_path}: predictions for a table go to a .csv, .csv.gz "
                        "or .parquet file")
    ts = read_table(input_path, id_col=id_col, time_col=time_col, label_col=None,
                    bands=model.card.bands)
    if ts.dates is not None and ts.dates.ndim == 1:  # shared dates: the cube's season check
        from cropscope.mapping.contract import as_map_model, check_time_grid

        check_time_grid(as_map_model(model), ts.dates, what="table")
    proba = model.predict_proba(ts)
    classes = model.classes
    out = pd.DataFrame({id_col: ts.ids,
                        "prediction": [classes[i] for i in proba.argmax(axis=1)],
                        "confidence": proba.max(axis=1)})
    tax = model.taxonomy
    if tax is not None:  # trained on a hierarchy: one (consistent) prediction per level
        levels = model.predict_levels(ts)
        for k, level in enumerate(tax.levels):
            names = tax.classes(k)
            out[f"prediction@{level}"] = [names[i] for i in levels[:, k]]
    for i, name in enumerate(classes):
        out[f"p_{name}"] = proba[:, i]
    with atomic_path(out_path) as tmp:
        if out_path.name.lower().endswith((".parquet", ".pq")):
            out.to_parquet(tmp, index=False)
        else:
            out.to_csv(tmp, index=False,
                       compression="gzip" if out_path.suffix == ".gz" else None)
    return len(out)


def predict_run(
    run_dir: str | Path,
    input_path: str | Path,
    out_path: str | Path,
    *,
    id_col: str = "sample_id",
    time_col: str = "date",
    scale: float | None = None,
    variables: str | None = None,
    nodata: float | None = None,
    mask_band: str | None = None,
    bands: Sequence[str] | None = None,
    composite: bool = False,
    tile: int = 512,
    halo: int | None = None,
    batch_size: int = 65536,
    workers: int | None = None,
    scheduler: str | None = None,
    resume: bool = True,
    parcels: str | Path | None = None,
    parcel_mode: str = "aggregate",
    parcels_out: str | Path | None = None,
    parcel_id: str | None = None,
    progress: bool = True,
    colours: Mapping[str, str] | str | Path | None = None,
    device: str | None = None,
    inference_batch: int | None = None,
) -> PredictResult:
    """Apply the run at ``run_dir`` to a table or a cube (see the module docstring).

    ``bands``: the cube's band names in the model's band order, when the cube names them
    differently (e.g. ``S2-L2A-B02`` for a model trained on ``B02``). ``composite``:
    median-composite the cube to the model's time grid (the dates it was trained on, moved
    to the cube's year, or its regular grid) before mapping. ``colours``: class colours
    (``{class: "#rrggbb"}``, or a JSON/YAML file of them) over the name-keyed defaults.
    ``device``/``inference_batch``: where and in what batches a deep model runs
    (:class:`~cropscope.engine.inference.InferenceSettings`; ignored by other models).
    """
    from cropscope.models.runs import load_run_model

    model = load_run_model(run_dir)
    if device is not None or inference_batch is not None:
        from cropscope.engine.inference import InferenceSettings, configure_inference

        configure_inference(model, InferenceSettings(device=device or "cpu",
                                                     batch_size=inference_batch))
    out_path = Path(out_path)
    if is_table(input_path):
        if workers is not None or scheduler is not None:
            raise DataError("--workers/--scheduler apply to image cubes, not to tables")
        if parcels is not None:
            raise DataError("--parcels applies to image cubes, not to tables")
        if not hasattr(model, "predict_proba"):
            raise DataError(f"{run_dir} holds a segmentation network: it maps image cubes, "
                            "not tables of pixel series")
        n = predict_table(model, input_path, out_path, id_col=id_col, time_col=time_col)
        return PredictResult("table", {"table": out_path}, n_rows=n)
    from cropscope.data.readers.open import open_cube_source
    from cropscope.mapping import deliver_map, map_output_paths
    from cropscope.mapping.contract import as_map_model

    options: dict[str, Any] = {"scale": scale}
    if variables is not None:
        options["variables"] = variables
    if nodata is not None:
        options["nodata"] = nodata
    source = open_cube_source(input_path, mask_band=mask_band, **options)
    map_model = as_map_model(model, batch_size)
    if bands is not None:
        source = _renamed(source, list(bands), map_model.bands)
    if composite:
        source = _composited(source, map_model)
    targets = map_output_paths(out_path)
    parcels_target = Path(parcels_out) if parcels_out is not None else targets["parcels"]
    if parcels is not None and parcel_mode == "aggregate":
        from cropscope.data.polygons import as_parcels

        # read and checked now: a bad parcel file must not wait for the whole map
        parcels, parcel_id = as_parcels(parcels, parcel_id)
    if parcels is not None and parcel_mode != "aggregate":
        from cropscope.mapping.parcels import predict_parcels, write_parcels

        table = predict_parcels(model, parcels, source, stat=parcel_mode, id_column=parcel_id)
        write_parcels(table, parcels_target)
        return PredictResult("parcels", {"parcels": parcels_target}, n_rows=len(table))
    product = deliver_map(map_model, source, out_path, tile=tile, halo=halo,
                          batch_size=batch_size, workers=workers, scheduler=scheduler,
                          resume=resume, progress=progress, colours=_colours(colours))
    result = PredictResult("map", dict(product.paths), product=product)
    if parcels is not None:
        from cropscope.mapping.parcels import aggregate_parcels, write_parcels

        table = aggregate_parcels(parcels, targets["probabilities"],
                                  labels_tif=targets["labels"], id_column=parcel_id)
        write_parcels(table, parcels_target)
        result.paths["parcels"] = parcels_target
        result.n_rows = len(table)
        result.messages.append(f"{len(table)} parcels "
                               f"({int((table['pixel_count'] > 0).sum())} with pixels) "
                               f"written to {parcels_target}")
    return result


def _colours(colours: Mapping[str, str] | str | Path | None) -> dict[str, str] | None:
    """Class colours given as a mapping or a JSON/YAML file of one."""
    if colours is None or isinstance(colours, Mapping):
        return None if colours is None else {str(k): str(v) for k, v in colours.items()}
    from cropscope.io import load_yaml, read_user_text

    path = Path(colours)
    text = read_user_text(path, "colour file", limit=1 << 20)
    data = load_yaml(text, f"colour file {path}")  # JSON is YAML too
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise DataError(f"{path} must map class names to '#rrggbb' colours")
    return {str(k): v for k, v in data.items()}


def _renamed(source: Any, cube_bands: list[str], model_bands: list[str]) -> Any:
    from cropscope.data.readers.cube import RenamedBandsCube

    if len(cube_bands) != len(model_bands):
        raise DataError(f"--bands names {len(cube_bands)} cube bands but the model reads "
                        f"{len(model_bands)}: {model_bands}")
    return RenamedBandsCube(source, dict(zip(cube_bands, model_bands, strict=True)))


def _composited(source: Any, model: Any) -> Any:
    import numpy as np

    from cropscope.features.cube import CompositedCube

    grid = model.time_grid
    times = np.asarray(source.times).astype("datetime64[D]")
    if not times.size:
        raise DataError("--composite: the cube has no dates")
    if grid.kind == "dates" and grid.dates:
        dates = np.asarray(grid.dates, dtype="datetime64[D]")
        gaps = np.diff(dates).astype(np.int64)
        monthly = bool(len(dates) > 1 and all(str(d).endswith("-01") for d in grid.dates)
                       and gaps.min() >= 28 and gaps.max() <= 31)
        step: int | str = "monthly" if monthly else int(np.median(gaps)) if gaps.size else 30
        # the model's season, moved to the cube's year when the cube is from another year
        years = int(np.round((times.min() - dates[0]).astype(np.int64) / 365.25))
        shift = np.timedelta64(round(years * 365.25), "D")
        start, end = dates[0] + shift, dates[-1] + shift
        if monthly:
            start = np.datetime64(str(start)[:7] + "-01", "D")
            end = np.datetime64(str(end)[:7] + "-01", "D")
    elif grid.kind == "regular" and grid.step_days and grid.n_times:
        step = int(grid.step_days)
        start = np.datetime64(f"{str(times.min())[:4]}-{grid.season_start or '01-01'}", "D")
        end = start + np.timedelta64(step * (grid.n_times - 1), "D")
    else:
        raise DataError("--composite needs a model trained on known dates or a regular "
                        f"grid; this one knows only {grid.describe()}")
    return CompositedCube(source, step, start=start, end=end)
