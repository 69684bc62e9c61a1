"""The map job: stream a scene window by window into Cloud-Optimized GeoTIFFs, resumably.

:func:`run_map_job` never holds the whole scene. For each window of a plan
(:func:`~cropscope.mapping.windows.plan_windows`) it reads only that window of every
date's file (:class:`~cropscope.data.readers.cube.CubeSource`), predicts the pixels with
at least one valid observation in batches, and writes the window into intermediate tiled
GeoTIFFs opened in update mode. A JSON journal, rewritten atomically after each window's
files are closed, lists the finished windows, so a killed job resumes where it stopped.
At the end the intermediates are converted to COGs (GDAL's COG driver, DEFLATE,
overviews), each written atomically. Outputs in ``out_dir``:

- ``labels.tif``: uint8 class codes, 255 = nodata, colour table (colours keyed to the
  class names, :mod:`cropscope.mapping.styles`), ``class_<i>`` tags;
- ``probabilities.tif``: one uint8 band per class, ``round(p * 254)``, 255 = nodata, with
  GDAL scale ``1/254`` (QGIS and ``rioxarray(mask_and_scale=True)`` read 0–1);
- ``uncertainty.tif``: normalised entropy ``H(p) / log K`` as ``round(u * 254)``, 255 =
  nodata, scale ``1/254``;
- ``map_job.json``: the journal (settings fingerprint, finished windows, outputs).

With ``workers`` or ``scheduler`` the windows are read and predicted on a Dask cluster
(the optional ``dask`` extra); the calling process stays the only writer of the
intermediates and the journal, so resuming works the same and the outputs are identical.

Speed (``benchmarks/bench_map.py``, ``benchmarks/profile_map.py``; ``docs/mapping.md``):

- pixel models read each window straight into the layout their feature table is made of
  (:mod:`cropscope.mapping.pixels`: raw rasters decoded once, no xarray cube, buffers
  reused, so no reference cycles to collect) and predict from it
  (:meth:`~cropscope.mapping.contract.ClassifierMapModel.predict_pixels`);
- with two or more threads (:func:`~cropscope.threads.current_threads`, ``--threads``) the
  next window is read and decoded in a thread while this one is predicted, and outputs and
  journal are written in a thread behind (:mod:`cropscope.mapping.pipeline`): bounded
  queues, the order kept, nothing written after a failed write, so the journal and resume
  are exactly as in one thread; the COGs are converted side by side at the end. On Dask the
  calling process writes in that thread too, so the workers never wait for it;
- ``tile=None`` chooses the window size from the files' blocks and a memory budget
  (:func:`~cropscope.mapping.windows.auto_tile`).
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import os
import shutil
import sys
import warnings
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cropscope.allocator import allocator_env
from cropscope.data.readers.cube import CubeLike
from cropscope.errors import DataError
from cropscope.io import atomic_path, read_json, write_json
from cropscope.mapping.classify import NODATA_LABEL
from cropscope.mapping.contract import MapModel, as_map_model, check_time_grid
from cropscope.mapping.pipeline import ReadAhead, WriteBehind
from cropscope.mapping.predictors import (
    WindowPredictor,
    blend_weights,
    core_outputs,
    quantise,
    window_predictor,
)
from cropscope.mapping.styles import class_colours
from cropscope.mapping.windows import MapWindow, auto_tile, plan_windows
from cropscope.threads import THREADS_ENV, current_threads

if TYPE_CHECKING:
    from cropscope.models.base import Classifier

__all__ = ["MapJobResult", "quantise", "run_map_job"]

JOURNAL = "map_job.json"
PARTIAL_DIR = ".map_job_partial"
OUTPUTS = ("labels", "probabilities", "uncertainty")
#: uint8 nodata of every output; valid quantised values are 0-254
NODATA = NODATA_LABEL
_JOURNAL_VERSION = 2


@dataclass
class MapJobResult:
    """Where a map job wrote its outputs and how much of it this run did."""

    paths: dict[str, Path]
    classes: list[str]
    n_windows: int
    n_resumed: int
    journal: Path


def _block_size(tile: int) -> int:
    """Intermediate GeoTIFF block size: one that divides the tile, so windows share no
    block (a crash while writing one window can then never touch a finished one)."""
    for size in (512, 256, 128, 64, 32, 16):
        if tile % size == 0:
            return size
    return 256


def _check_model(model: MapModel, source: CubeLike) -> None:
    classes = model.classes
    if len(classes) >= NODATA:
        raise DataError(f"too many classes for an 8-bit map: {len(classes)}")
    absent = [b for b in model.bands if b not in source.bands]
    if absent:
        raise DataError(
            f"the model was trained on bands {model.bands} but the cube has {source.bands}"
        )
    check_time_grid(model, source.times)


def _fingerprint(model: MapModel, source: CubeLike, tile: int, halo: int,
                 colours: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Everything a finished window depends on: a resumed job must prove it is unchanged.

    Besides the settings and the grid: each input file's size and modification time, a digest
    of the values of a small probe window (catches another scale, nodata, mask or variable
    selection), and the model's identity: the sha256 of its run manifest when it was loaded
    from a run, else a digest of its configuration and of its outputs on the probe window.
    """
    files = []
    for p in source.files:
        path = Path(p)
        try:
            st = path.stat()
            files.append([str(path.resolve()), st.st_size, st.st_mtime_ns])
        except OSError:
            files.append([str(path), None, None])
    probe, model_digest = _probe(model, source)
    return {
        "input_kind": model.input_kind,
        "files": files,
        "shape": list(source.shape),
        "transform": [float(v) for v in tuple(source.transform)[:6]],
        "crs": source.crs.to_wkt() if source.crs is not None else None,
        "bands": list(source.bands),
        "dates": [str(d) for d in source.times],
        "model": model.name,
        "model_digest": model_digest,
        "classes": list(model.classes),
        "probe": probe,
        "tile": tile,
        "halo": halo,
        "colours": class_colours(list(model.classes), colours),
    }


def _probe(model: MapModel, source: CubeLike) -> tuple[str, str]:
    """Digests of a small corner window's input values and of the model's identity."""
    import hashlib

    size = min(16, source.height), min(16, source.width)
    with source.opened():
        cube = source.read(((0, size[0]), (0, size[1])))
    values = np.asarray(cube.values, dtype=np.float32)
    values = np.where(np.isfinite(values), values, np.float32(np.nan))
    data_digest = hashlib.sha256(values.tobytes()).hexdigest()
    run_digest = getattr(model, "run_digest", None)
    if isinstance(run_digest, str):
        return data_digest, run_digest
    h = hashlib.sha256(repr((model.name, model.classes, model.bands)).encode())
    inner = getattr(model, "model", None)
    config = getattr(inner, "config", None)
    if config is not None:
        h.update(repr(sorted(config.items())).encode())
    if model.input_kind != "scene":  # scene networks may need more than the probe's pixels
        proba, _ = model.predict_window(cube.sel(band=model.bands),
                                        (slice(0, size[0]), slice(0, size[1])))
        h.update(np.round(np.asarray(proba, dtype=np.float64), 3).tobytes())
    return data_digest, h.hexdigest()


def _create_intermediates(
    partial: Path, source: CubeLike, classes: list[str], tile: int,
    colours: Mapping[str, str] | None = None,
) -> dict[str, Path]:
    import rasterio

    height, width = source.shape
    block = _block_size(tile)
    base = {
        "driver": "GTiff", "width": width, "height": height, "dtype": "uint8",
        "crs": source.crs, "transform": source.transform, "nodata": NODATA,
        "tiled": True, "blockxsize": block, "blockysize": block, "SPARSE_OK": True,
    }  # fmt: skip
    counts = {"labels": 1, "probabilities": len(classes), "uncertainty": 1}
    if len(classes) > 1:
        base["interleave"] = "band"
    from cropscope.mapping.styles import colour_table

    paths = {}
    colormap = colour_table(classes, colours)
    class_tags = {f"class_{i}": name for i, name in enumerate(classes)}
    for name in OUTPUTS:
        path = partial / f"{name}.tif"
        with atomic_path(path) as tmp, warnings.catch_warnings():
            from rasterio.errors import NotGeoreferencedWarning

            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(tmp, "w", count=counts[name], **base) as dst:
                if name == "labels":
                    dst.write_colormap(1, colormap)
                    dst.update_tags(**class_tags)
                    dst.set_band_description(1, "class")
                elif name == "probabilities":
                    dst.update_tags(**class_tags, scale="probability = value / 254")
                    for i, cls in enumerate(classes):
                        dst.set_band_description(i + 1, cls)
                    dst.scales = (1.0 / 254.0,) * len(classes)
                    dst.offsets = (0.0,) * len(classes)
                else:
                    dst.update_tags(scale="normalised entropy = value / 254")
                    dst.set_band_description(1, "normalised_entropy")
                    dst.scales, dst.offsets = (1.0 / 254.0,), (0.0,)
        paths[name] = path
    return paths


#: the source a Dask worker thread keeps open between its tasks (GDAL handles are not
#: shared between threads; one source per thread, the last job's): opening every date's
#: file for every window cost a sixth of a worker's time per window
_OPEN_SOURCES: dict[int, tuple[Any, contextlib.ExitStack]] = {}


def _keep_open(source: CubeLike) -> None:
    """Open ``source``'s files in this worker once, for all its later tasks (the previous
    source, another job's, is closed). Only on one-thread workers (a local cluster's): the
    open handles live on the source object, which the threads of a worker share."""
    import threading

    try:
        from distributed import get_worker

        if get_worker().state.nthreads != 1:
            return
    except (ImportError, ValueError, AttributeError):  # not in a worker, another version
        return
    key = threading.get_ident()
    held = _OPEN_SOURCES.get(key)
    if held is not None and held[0] is source:
        return
    _close_kept_sources()
    stack = contextlib.ExitStack()
    stack.enter_context(source.opened())
    _OPEN_SOURCES[key] = (source, stack)


def _predict_task(
    predictor: WindowPredictor, source: CubeLike, window: MapWindow
) -> tuple[MapWindow, dict[str, np.ndarray]]:
    """A Dask task: one window's arrays, with the window they belong to."""
    _keep_open(source)
    arrays = predictor(source, window)
    if predictor.collects_garbage(source):
        gc.collect()  # see _local_predictions
    return window, arrays


def _local_predictions(
    predictor: WindowPredictor, source: CubeLike, todo: list[MapWindow], read_ahead: bool
) -> Generator[tuple[MapWindow, dict[str, np.ndarray]], None, None]:
    """Predict the windows in this process, keeping the files open; with ``read_ahead``
    the next window is read and decoded in a thread while this one is predicted."""
    # a window's xarray cube (rioxarray accessors) sits in reference cycles that Python's
    # cyclic collector frees only now and then: collect them at once, so memory stays at
    # one window instead of creeping up by a window at a time (the pixel route makes none)
    collect = predictor.collects_garbage(source)
    with source.opened():
        if not read_ahead:
            for window in todo:
                arrays = predictor.predict(window, predictor.read(source, window))
                if collect:
                    gc.collect()
                yield window, arrays
            return
        reader = ReadAhead(todo, lambda w: predictor.read(source, w), depth=1,
                           name="cropscope-map-read")  # fmt: skip
        try:
            for window, data in reader:
                arrays = predictor.predict(window, data)
                if collect:
                    gc.collect()
                yield window, arrays
        finally:
            for data in reader.close():  # read but not predicted (stopped early)
                release = getattr(data, "release", None)
                if release is not None:
                    release()


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise DataError(
            "workers/scheduler need Dask's distributed scheduler: pip install 'cropscope[dask]'"
        ) from None
    return distributed


@contextlib.contextmanager
def local_cluster(workers: int) -> Iterator[Any]:
    """A local Dask cluster of ``workers`` one-thread processes, set up as map jobs start
    their own (``run_map_job(workers=N)``); closed on exit.

    Several jobs in a row (tiles of a country, one model after another) can share one:
    pass ``scheduler=cluster.scheduler_address`` to each, and pay the start (processes,
    imports) once. Each worker gets a small GDAL block cache (``GDAL_CACHEMAX``, default
    256 MB; GDAL's own default is 5 % of the RAM per process) and its share of cropscope's
    thread count (:func:`~cropscope.threads.current_threads` / ``workers``) for
    torch/OpenMP/BLAS/GDAL, so the workers together do not oversubscribe the cores.

    Dask starts workers with ``MALLOC_TRIM_THRESHOLD_=65536`` so that freed memory goes
    back to the system at once; that also turns glibc's adaptive mmap threshold off, and
    every window's temporaries (numpy's 64 KiB casting buffers too) are page-faulted in
    again: a window cost 1.6-2x its in-process time. These workers get the opposite,
    :data:`cropscope.allocator.ALLOCATOR_ENV` (freed memory kept for reuse, as the
    ``cropscope`` command keeps it), unless the user set ``MALLOC_*`` variables; a map
    job's memory is bounded by its windows in flight anyway.
    """
    if workers <= 0:
        raise DataError(f"workers must be a positive number of processes, got {workers}")
    distributed = _import_distributed()
    import dask

    cache = os.environ.get("GDAL_CACHEMAX", "256")
    per_worker = str(max(1, current_threads() // workers))
    env = {"GDAL_CACHEMAX": cache, THREADS_ENV: per_worker,
           **{var: per_worker for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                          "OPENBLAS_NUM_THREADS", "GDAL_NUM_THREADS")},
           **allocator_env()}  # freed memory kept for the next window (allocator.py)
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        # no dashboard; the scheduler's small HTTP server on a free port (not 8787, which
        # a second cluster would find taken)
        cluster = distributed.LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True,
            dashboard_address=None, env=env,
            scheduler_kwargs={"dashboard": False, "dashboard_address": ":0"},
        )  # fmt: skip
    try:
        yield cluster
    finally:
        _quiet_heartbeats(distributed, cluster)
        cluster.close()


_HEARTBEAT_FAILURE = "Failed to communicate with scheduler during heartbeat"


class _DropHeartbeatFailures:
    """A :class:`logging.Filter` for ``distributed.worker`` that drops the one message a
    worker logs, with a traceback, when its heartbeat meets a scheduler that is closing."""

    def filter(self, record: Any) -> bool:
        return not str(record.msg).startswith(_HEARTBEAT_FAILURE)


def _drop_heartbeat_failures() -> None:
    """Run on each worker (``client.run``) as the cluster closes: see :func:`_quiet_heartbeats`."""
    import logging

    worker_log = logging.getLogger("distributed.worker")
    if not any(isinstance(f, _DropHeartbeatFailures) for f in worker_log.filters):
        worker_log.addFilter(_DropHeartbeatFailures())


def _quiet_heartbeats(distributed: Any, cluster: Any) -> None:
    """Before a local cluster closes, tell its workers not to log a failed heartbeat.

    Closing retires the workers, then the scheduler; a worker's heartbeat already on its
    way when the scheduler drops its connection fails with ``CommClosedError`` and the
    worker logs "Failed to communicate with scheduler during heartbeat" with a traceback
    (dask/distributed#7105): a finished map job then ends in a traceback on stderr (one
    test run in five on the 2-core CI machine met it). Nothing is lost by it, and at this
    point the scheduler is going away on purpose, so the message says nothing; every other
    worker message stays. Best effort: a cluster whose workers have died is closed all the same.
    """
    try:
        with distributed.Client(cluster, timeout="10s", set_as_default=False) as client:
            client.run(_drop_heartbeat_failures)
    except Exception:  # only a log filter; closing goes on regardless
        pass


def _check_scheduler_address(distributed: Any, scheduler: str) -> None:
    """A :class:`DataError` for an address Dask cannot parse, before any ``Client`` is made:
    a ``Client`` that fails to parse its address has already made itself the default
    scheduler of the process, and every later ``dask.compute`` then fails."""
    if str(scheduler).startswith("inproc://"):
        return  # an in-process cluster (no host and port to check)
    try:
        distributed.comm.addressing.get_address_host_port(str(scheduler))
    except ValueError as exc:
        raise DataError(f"not a Dask scheduler address (tcp://HOST:PORT): {scheduler!r} "
                        f"({exc})") from None  # fmt: skip


def _dask_predictions(
    predictor: WindowPredictor,
    source: CubeLike,
    todo: list[MapWindow],
    workers: int | None,
    scheduler: str | None,
) -> Generator[tuple[MapWindow, dict[str, np.ndarray]], None, None]:
    """Predict the windows on a Dask cluster and yield them as they finish.

    With ``workers`` a local cluster of that many processes is started (one Dask thread
    each, :func:`~cropscope.threads.current_threads` shared out among them for torch/OpenMP;
    closed at the end); with ``scheduler`` the cluster at that address is used. The model
    and the source are sent to every worker once. At most two windows per worker are in
    flight, so finished arrays never pile up faster than the caller writes them.
    """
    if not todo:
        return
    distributed = _import_distributed()
    with contextlib.ExitStack() as stack:
        if scheduler is not None:
            _check_scheduler_address(distributed, scheduler)
            try:
                client = distributed.Client(scheduler, timeout="30s")
            except (OSError, TimeoutError) as exc:
                raise DataError(
                    f"cannot connect to the Dask scheduler {scheduler}: {exc}"
                ) from None
            stack.callback(client.close)
        else:
            cluster = stack.enter_context(local_cluster(workers or 1))
            client = distributed.Client(cluster)
            stack.callback(client.close)
        try:
            predictor_f, source_f = client.scatter([predictor, source], broadcast=True,
                                                   hash=False)
        except Exception as exc:  # pickling errors come in many types
            raise DataError(
                f"cannot send the model or the cube to the Dask workers: {exc}"
            ) from exc
        n_workers = len(client.scheduler_info().get("workers", {})) or (workers or 1)
        pending = iter(todo)
        queue = distributed.as_completed()

        def submit(window: MapWindow) -> None:
            future = client.submit(_predict_task, predictor_f, source_f, window, pure=False)
            queue.add(future)

        for window in itertools.islice(pending, 2 * n_workers):
            submit(window)
        try:
            for future in queue:
                window, arrays = future.result()
                future.release()
                next_window = next(pending, None)
                if next_window is not None:
                    submit(next_window)
                yield window, arrays
        finally:  # stopped early (an error, a kill): drop the windows still in flight
            outstanding = list(queue.futures)
            queue.clear()
            if outstanding:
                client.cancel(outstanding)
            _close_on_workers(client, distributed)


def _close_kept_sources() -> None:
    """A Dask task: close the files :func:`_keep_open` holds in this worker: this thread's,
    and those of threads that have ended (a worker's executor may replace its thread between
    tasks). Nothing may be left for the interpreter's exit, where closing fails with a
    traceback on stderr. GDAL's environment is per thread: a source opened by an ended
    thread has none here to leave, so that :class:`rasterio.errors.EnvError` (raised after
    the files are closed) is ignored."""
    import threading

    from rasterio.errors import EnvError

    alive = {t.ident for t in threading.enumerate()} - {threading.get_ident()}
    for key in [k for k in _OPEN_SOURCES if k not in alive]:
        _, stack = _OPEN_SOURCES.pop(key)
        try:
            stack.close()
        except EnvError:
            pass


def _close_on_workers(client: Any, distributed: Any) -> None:
    """Run :func:`_close_kept_sources` once on every worker (best effort: a worker that is
    gone has nothing left to close)."""
    try:
        futures = [client.submit(_close_kept_sources, pure=False, workers=[address],
                                 allow_other_workers=False)
                   for address in client.scheduler_info().get("workers", {})]  # fmt: skip
        distributed.wait(futures, timeout=30)
    except Exception:  # closing is best effort; the job's result stands
        pass


def _write_window(paths: dict[str, Path], window: MapWindow, arrays: dict[str, np.ndarray]) -> None:
    """Write one window into the intermediates and close them (flushing to disk)."""
    import rasterio

    for name, path in paths.items():
        with rasterio.open(path, "r+") as dst:
            dst.write(arrays[name], window=window.write_window)


def _write_cog(name: str, src: Path, out_dir: Path) -> Path:
    from rasterio.shutil import copy as raster_copy

    final = out_dir / f"{name}.tif"
    # nearest keeps labels valid codes; averaging suits probabilities and entropy
    resampling = "nearest" if name == "labels" else "average"
    with atomic_path(final) as tmp:
        raster_copy(
            src, tmp, driver="COG", compress="deflate", blocksize=512,
            overview_resampling=resampling, overview_count=_overview_count(src),
        )  # fmt: skip
    return final


def _write_cogs(paths: dict[str, Path], out_dir: Path, threads: int = 1) -> dict[str, Path]:
    """The intermediates as COGs; with ``threads > 1`` the outputs are converted at the
    same time (GDAL releases the GIL while it compresses and builds overviews). Every
    conversion is waited for before an error is raised, so none outlives the call."""
    if threads <= 1 or len(paths) <= 1:
        return {name: _write_cog(name, src, out_dir) for name, src in paths.items()}
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(threads, len(paths)),
                            thread_name_prefix="cropscope-cog") as pool:  # fmt: skip
        futures = {name: pool.submit(_write_cog, name, src, out_dir)
                   for name, src in paths.items()}  # fmt: skip
    # the pool has joined: every conversion has finished or failed
    return {name: future.result() for name, future in futures.items()}


def _overview_count(path: Path) -> int:
    """Halve until the largest side is at most 128 pixels; at least one level, except for a
    1 x 1 map, which has none (GDAL cannot make one: "Unknown GDAL Error")."""
    import rasterio

    with rasterio.open(path) as src:
        side = max(src.height, src.width)
    if side <= 1:
        return 0
    count = 0
    while side > 128:
        side = (side + 1) // 2
        count += 1
    return max(1, count)


class _Blender:
    """Cross-fades the overlapping predictions of scene models, deterministically.

    Each window's read-area probabilities are kept on disk (``.npy``, written atomically)
    until every window whose core they overlap is written. A core is blended once all its
    neighbours are predicted, summing their weighted probabilities in window order, so
    the result does not depend on the order in which predictions arrive (Dask).
    """

    def __init__(self, windows: list[MapWindow], folder: Path, halo: int,
                 shape: tuple[int, int]) -> None:  # fmt: skip
        self.windows = windows
        self.folder = folder
        self.halo = halo
        self.shape = shape
        folder.mkdir(parents=True, exist_ok=True)
        n_cols = sum(1 for w in windows if w.row == 0)
        self.neighbours: dict[int, list[int]] = {}
        for w in windows:  # the halo never exceeds the tile: only the 3 x 3 grid can overlap
            i, j = divmod(w.index, n_cols)
            near = [windows[r * n_cols + c] for r in (i - 1, i, i + 1)
                    for c in (j - 1, j, j + 1)
                    if 0 <= c < n_cols and 0 <= r * n_cols + c < len(windows)]  # fmt: skip
            self.neighbours[w.index] = [v.index for v in near if _overlaps(v, w)]

    def _path(self, index: int, what: str) -> Path:
        return self.folder / f"{index}.{what}.npy"

    def store(self, window: MapWindow, arrays: dict[str, np.ndarray]) -> None:
        for what in ("proba", "valid"):
            with atomic_path(self._path(window.index, what)) as tmp, open(tmp, "wb") as fh:
                np.save(fh, arrays[what])

    def stored(self, index: int) -> bool:
        return all(self._path(index, what).is_file() for what in ("proba", "valid"))

    def ready(self, predicted: set[int], done: set[int],
              near: int | None = None) -> list[MapWindow]:  # fmt: skip
        """Windows not yet written whose neighbours are all predicted, in index order
        (only those around window ``near`` when given)."""
        candidates = self.neighbours[near] if near is not None else range(len(self.windows))
        return [self.windows[i] for i in sorted(candidates) if i not in done
                and all(v in predicted for v in self.neighbours[i])]  # fmt: skip

    def blend(self, window: MapWindow) -> dict[str, np.ndarray]:
        height, width = self.shape
        acc: np.ndarray | None = None
        total = np.zeros((window.height, window.width))
        for index in self.neighbours[window.index]:
            other = self.windows[index]
            r0, r1 = max(window.row, other.read_row), min(
                window.row + window.height, other.read_row + other.read_height)
            c0, c1 = max(window.col, other.read_col), min(
                window.col + window.width, other.read_col + other.read_width)
            src = (slice(r0 - other.read_row, r1 - other.read_row),
                   slice(c0 - other.read_col, c1 - other.read_col))
            dst = (slice(r0 - window.row, r1 - window.row),
                   slice(c0 - window.col, c1 - window.col))
            proba = np.load(self._path(index, "proba"), mmap_mode="r")
            weight = blend_weights(other, self.halo, height, width)[src]
            if acc is None:
                acc = np.zeros((proba.shape[0], window.height, window.width))
            acc[(slice(None), *dst)] += weight * proba[(slice(None), *src)]
            total[dst] += weight
        assert acc is not None  # a window always overlaps its own core
        valid = np.load(self._path(window.index, "valid"))[window.core_in_read]
        return core_outputs((acc / total).astype(np.float32), valid)

    def release(self, done: set[int], near: int) -> None:
        """Delete the predictions around window ``near`` that every overlapping window has
        used (overlap is symmetric: equal halos on both sides)."""
        for i in self.neighbours[near]:
            if all(v in done for v in self.neighbours[i]):
                for what in ("proba", "valid"):
                    self._path(i, what).unlink(missing_ok=True)


def _overlaps(a: MapWindow, b: MapWindow) -> bool:
    """Whether ``a``'s read window overlaps ``b``'s core."""
    return (a.read_row < b.row + b.height and b.row < a.read_row + a.read_height
            and a.read_col < b.col + b.width and b.col < a.read_col + a.read_width)


def run_map_job(
    model: MapModel | Classifier,
    cube_source: CubeLike | str | Path | Sequence[str | Path],
    out_dir: str | Path,
    *,
    tile: int | None = 512,
    halo: int | None = None,
    batch_size: int = 65536,
    progress: bool = True,
    resume: bool = True,
    on_window: Callable[[MapWindow], None] | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    colours: Mapping[str, str] | None = None,
) -> MapJobResult:
    """Classify a scene window by window into COG labels, probabilities and uncertainty.

    ``cube_source`` is a cube source (:class:`~cropscope.data.readers.cube.CubeLike`:
    raster files, NetCDF/Zarr, STAC, masked, aligned or composited) or anything
    :func:`~cropscope.data.readers.open.open_cube_source` opens with its defaults.
    ``tile`` is the window size in pixels (``None``: chosen from the files' block layout and
    a memory budget, :func:`~cropscope.mapping.windows.auto_tile`); ``halo`` the context
    read around each window for spatial models; ``None`` takes what the model needs (none
    for pixel models, the patch radius for patch models, the model's ``context`` for scene
    models, whose overlapping predictions are cross-faded; see
    :mod:`cropscope.mapping.predictors`).
    With ``resume`` a job in ``out_dir`` with the same settings continues from its journal
    (a finished one returns at once); without it the job starts over. ``on_window(window)``
    is called after each window is recorded as done. Outputs share the cube's CRS and
    transform; see the module docstring for their encoding.

    ``workers=N`` reads and predicts the windows on a local Dask cluster of ``N``
    processes; ``scheduler="tcp://host:port"`` uses a running Dask cluster (its workers
    must see the cube's files). Either way this process alone writes the outputs and the
    journal, and the outputs are identical to a run without Dask.

    Threads: with :func:`~cropscope.threads.current_threads` of two or more, reading the
    next window, predicting this one and writing the previous one overlap (see the module
    docstring); the outputs, the journal and resuming are the same as with one.

    A lock on ``out_dir`` keeps two jobs from writing one output: a second job started on
    the same folder while one runs fails at once with a clear message. ``colours``
    (``{class: "#rrggbb"}``) overrides the labels' colours (:mod:`cropscope.mapping.styles`).
    """
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    with _output_lock(out_dir, remove_if_unused=created):
        from tqdm.auto import tqdm

        if isinstance(cube_source, CubeLike):
            source = cube_source
        else:
            from cropscope.data.readers.open import open_cube_source

            source = open_cube_source(cube_source)
        if batch_size <= 0:
            raise DataError(f"batch_size must be positive, got {batch_size}")
        model = as_map_model(model, batch_size)
        _check_model(model, source)
        if workers is not None and scheduler is not None:
            raise DataError("pass workers (a local Dask cluster) or scheduler (an address), "
                            "not both")
        if workers is not None and workers <= 0:
            raise DataError(f"workers must be a positive number of processes, got {workers}")
        if workers is not None or scheduler is not None:
            _import_distributed()
        if tile is None:
            tile = auto_tile(source, len(source.times) * len(model.bands))
        predictor = window_predictor(model, halo, tile)
        halo = predictor.halo
        blending = predictor.mode == "blend"
        windows = plan_windows(source.height, source.width, tile=tile, halo=halo)
        classes = list(model.classes)
        journal_path = out_dir / JOURNAL
        partial = out_dir / PARTIAL_DIR
        fingerprint = _fingerprint(model, source, tile, halo, colours)
        finals = {name: out_dir / f"{name}.tif" for name in OUTPUTS}
        intermediates = {name: partial / f"{name}.tif" for name in OUTPUTS}

        done: list[int] = []
        predicted: list[int] = []
        journal: dict[str, Any] | None = None
        if resume and journal_path.is_file():
            journal = read_json(journal_path)
            if journal.get("version") != _JOURNAL_VERSION or journal.get("job") != fingerprint:
                raise DataError(
                    f"{out_dir} holds a map job with other inputs or settings; pass resume=False "
                    "(--no-resume on the command line) to start it over, or choose another "
                    "output folder"
                )
            if journal.get("complete") and all(p.is_file() for p in finals.values()):
                return MapJobResult(finals, classes, len(windows), len(windows), journal_path)
            if all(p.is_file() for p in intermediates.values()):
                done = [int(i) for i in journal.get("done", [])]
                predicted = [int(i) for i in journal.get("predicted", [])]
            else:
                journal = None
        if journal is None:
            shutil.rmtree(partial, ignore_errors=True)
            journal_path.unlink(missing_ok=True)
            partial.mkdir(parents=True)
            _create_intermediates(partial, source, classes, tile, colours)
            journal = {"version": _JOURNAL_VERSION, "job": fingerprint, "n_windows": len(windows),
                       "done": [], "predicted": [], "complete": False}  # fmt: skip
            write_json(journal_path, journal)

        n_resumed = len(done)
        finished = set(done)
        blender = (_Blender(windows, partial / "predictions", halo, source.shape)
                   if blending else None)
        # predictions whose files are gone (a crash) are made again
        if blender is not None:
            predicted = [i for i in predicted if i in finished or blender.stored(i)]
        have = set(predicted) if blending else finished
        todo = [w for w in windows if w.index not in have]
        bar = tqdm(total=len(windows), initial=n_resumed, desc="mapping", unit="window",
                   disable=not progress, file=sys.stderr)  # fmt: skip

        def record(window: MapWindow, arrays: dict[str, np.ndarray]) -> None:
            _write_window(intermediates, window, arrays)
            done.append(window.index)
            finished.add(window.index)
            journal["done"] = done
            write_json(journal_path, journal)
            bar.update(1)
            if on_window is not None:
                on_window(window)

        def blend_ready(near: int | None) -> None:
            assert blender is not None
            for ready in blender.ready(have, finished, near):
                record(ready, blender.blend(ready))
                blender.release(finished, ready.index)

        threads = current_threads()
        local = workers is None and scheduler is None
        if local:
            predictions = _local_predictions(predictor, source, todo, read_ahead=threads > 1)
        else:
            predictions = _dask_predictions(predictor, source, todo, workers, scheduler)
        # outputs are written in a thread behind the predictions (the order kept), so
        # neither this process nor Dask's workers wait for GDAL and the journal
        writer: WriteBehind[tuple[MapWindow, dict[str, np.ndarray]]] | None = None
        if blender is None and (threads > 1 or not local):
            writer = WriteBehind(lambda item: record(*item), depth=2, name="cropscope-map-write")
        try:
            if blender is not None:
                blend_ready(None)  # windows a crash left predicted but not yet written
            # reading ahead takes a core: BLAS gets the others (a map's matrix products are
            # too small to share anyway; OpenBLAS's idle threads spin and doubled the CPU)
            with contextlib.closing(predictions), \
                    _blas_threads(threads - 1 if local and threads > 1 else None):
                for window, arrays in predictions:
                    if blender is None:
                        if writer is not None:
                            writer.put((window, arrays))
                        else:
                            record(window, arrays)
                        continue
                    blender.store(window, arrays)
                    predicted.append(window.index)
                    have.add(window.index)
                    journal["predicted"] = predicted
                    write_json(journal_path, journal)
                    blend_ready(window.index)
            if writer is not None:
                writer.finish()
        except BaseException:
            if writer is not None:
                writer.abort()  # the window being written is finished; nothing after it
            raise
        finally:
            bar.close()
        missing = len(windows) - len(finished)
        if missing:  # cannot happen unless a prediction went missing
            raise DataError(f"{missing} windows of the map were not written")

        # a local cluster's workers are idle by now: their cores convert the COGs
        paths = _write_cogs(intermediates, out_dir, max(threads, workers or 1))
        journal["complete"] = True
        journal["outputs"] = {name: p.name for name, p in paths.items()}
        write_json(journal_path, journal)
        shutil.rmtree(partial, ignore_errors=True)
        return MapJobResult(paths, classes, len(windows), n_resumed, journal_path)


@contextlib.contextmanager
def _blas_threads(count: int | None) -> Iterator[None]:
    """BLAS pools (OpenBLAS, MKL) limited to ``count`` threads inside the block (``None``:
    unchanged); torch and OpenMP pools are left alone."""
    if count is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=max(1, count), user_api="blas"):
        yield


@contextlib.contextmanager
def _output_lock(out_dir: Path, remove_if_unused: bool = False) -> Iterator[None]:
    """An exclusive advisory lock on ``out_dir/.lock`` for the duration of a job.
    ``remove_if_unused``: the job made ``out_dir``; when it fails before writing anything
    there (a bad setting, say), the folder and its lock file are removed again."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - no advisory locks on this platform
        yield
        return
    lock = out_dir / ".lock"
    failed = False
    with open(lock, "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise DataError(f"another map job is writing to {out_dir}; wait for it to finish "
                            "or choose another output") from None
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            if failed and remove_if_unused and [p.name for p in out_dir.iterdir()] == [".lock"]:
                lock.unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    out_dir.rmdir()
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


