"""Segmentation runs (AgriFM, H2Crop ``S2``) as map models, straight from the run directory.

A run of kind ``segmentation`` or ``h2crop`` (:mod:`cropscope.runs`) names a registered
network and its keyword arguments, the bands it reads, its normalisation statistics and its
time grid; ``weights.safetensors`` holds the selected weights. :class:`SegmentationRunModel`
rebuilds the network through the network registry (nothing named in the run is imported)
and implements the map-model contract (:mod:`cropscope.mapping.contract`) itself::

    predict_window(cube (time, band, y, x), core) -> (proba [K, y, x], valid [y, x])

The window is standardised with the run's statistics, NaN set to ``nan_fill`` (0 = the band
mean), fed as one ``[1, T, C, H, W]`` sample of the run's (single) source, and the
probabilities of hierarchy level ``level`` (default: the finest) come back. Windows are
read with a halo (``context``, default 32 pixels) and the job cross-fades their overlaps,
so there are no seams. Networks that pool time (AgriFM's default ``temporal="attention"``)
take any number of dates; the run's time grid says what the network was trained on.

Prediction runs on a :class:`~cropscope.engine.inference.BatchedPredictor`
(:meth:`SegmentationRunModel.set_inference`: device, AMP on CUDA, pinned memory, batch size
in windows): :meth:`~SegmentationRunModel.predict_scenes` takes several windows of one size
``[B, T, C, H, W]`` at once; the probabilities are computed on the device (softmax in
float32) and gathered on the host. A window that does not fit in the device's memory even
alone is an error that says to use a smaller tile.

Only runs whose inputs all come from one cube can map: a multi-source AgriFM run or an
H2Crop run with EnMAP or priors is refused with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cropscope.engine.inference import BatchedPredictor, InferenceSettings
from cropscope.errors import DataError, ModelError
from cropscope.runs import RunDir, RunSpec, TimeGrid, open_run

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["WEIGHTS_FILE", "SegmentationRunModel", "build_run_network", "load_run_network"]

#: the selected weights of a segmentation / H2Crop run (safetensors)
WEIGHTS_FILE = "weights.safetensors"
#: the end of the error when even one window does not fit in memory
_OOM_HINT = "use a smaller map tile (--tile) or another device (--device cpu)"


def build_run_network(spec: RunSpec) -> Any:
    """The (untrained) registered network a run describes."""
    from cropscope.models.networks import create_network

    if spec.network is None:
        raise ModelError(f"a {spec.kind} run needs a network")
    kwargs = dict(spec.network.get("kwargs", {}))
    try:
        return create_network(spec.network["name"], **kwargs)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"cannot build network {spec.network['name']!r} from the run's "
                         f"keyword arguments: {exc}") from None


def load_run_network(run: RunDir, state: Mapping[str, Any] | None = None) -> Any:
    """The registered network of a run with its selected weights (``weights.safetensors``),
    or with ``state`` (e.g. a checkpoint's weights), in eval mode."""
    from cropscope.runs.state import read_safetensors

    network = build_run_network(run.spec)
    if state is None:
        path = run.file(WEIGHTS_FILE)
        assert path is not None
        state = read_safetensors(path)[0]
    try:
        network.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise ModelError(f"the weights of {run.path} do not fit network {run.spec.name!r}: "
                         f"{first}") from None
    return network.eval()


class SegmentationRunModel:
    """A trained segmentation network under the map-model contract (see the module doc)."""

    input_kind = "scene"

    def __init__(self, network: Any, spec: RunSpec, *, context: int = 32, level: int = -1,
                 nan_fill: float = 0.0, device: str = "cpu") -> None:
        if len(spec.sources) != 1:
            raise ModelError(f"the run reads sources {list(spec.sources)}; maps take one cube, "
                             "so only single-source runs can map")
        self.spec = spec
        self.source = next(iter(spec.sources))
        if spec.kind == "h2crop" and spec.network is not None and \
                spec.network.get("kwargs", {}).get("config", "S2") != "S2":
            raise ModelError(
                f"this is an H2Crop {spec.network['kwargs']['config']} run; maps take one "
                "cube, so only the S2 configuration can map (EnMAP and priors would need "
                "their own inputs)")
        self.name = spec.name
        self.context = int(context)
        self.level = int(level)
        self.nan_fill = float(nan_fill)
        self.device = self._made_device = device
        self.network = network.eval()
        self._predictor = BatchedPredictor(InferenceSettings(device=device), hint=_OOM_HINT)
        #: sha256 of the run's manifest (set by load_run_model): the map job's model identity
        self.run_digest: str | None = None

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_run(cls, run: RunDir | str | Path, **options: Any) -> SegmentationRunModel:
        """The map model of a (verified) run directory; ``options``: ``context``, ``level``,
        ``nan_fill``, ``device``."""
        if not isinstance(run, RunDir):
            run = open_run(run)
        if run.spec.kind not in ("segmentation", "h2crop"):
            raise ModelError(f"{run.path} is a {run.spec.kind} run, not a segmentation run")
        return cls(load_run_network(run), run.spec, **options)

    # ------------------------------------------------------------------ contract
    @property
    def classes(self) -> list[str]:
        return list(self.spec.classes)

    @property
    def bands(self) -> list[str]:
        return self.spec.bands(self.source)

    @property
    def time_grid(self) -> TimeGrid:
        return self.spec.time_grid

    @property
    def halo(self) -> int:
        return self.context

    def predict_window(self, cube: xr.DataArray, core: tuple[slice, slice]
                       ) -> tuple[np.ndarray, np.ndarray]:
        values = np.asarray(cube.values, dtype=np.float32)
        return self.predict_scene(values), np.asarray(np.isfinite(values).any(axis=(0, 1)))

    def predict_scene(self, x: np.ndarray) -> np.ndarray:
        """``x [T, C, H, W]`` (bands as :attr:`bands`, NaN = nodata) → ``[K, H, W]``."""
        if x.ndim != 4 or x.shape[1] != len(self.bands):
            raise DataError(f"expected [T, {len(self.bands)}, H, W], got {list(x.shape)}")
        return self.predict_scenes(x[None])[0]

    def predict_scenes(self, x: np.ndarray) -> np.ndarray:
        """Windows of one size ``x [B, T, C, H, W]`` (NaN = nodata) → ``[B, K, H, W]``, in
        batches of the inference settings' ``batch_size`` windows."""
        if x.ndim != 5 or x.shape[2] != len(self.bands):
            raise DataError(f"expected [B, T, {len(self.bands)}, H, W], got {list(x.shape)}")
        k = len(self.classes)
        if len(x) == 0:
            return np.zeros((0, k, *x.shape[-2:]), np.float32)
        values = x.astype(np.float32, copy=True)
        norm = self.spec.normalisation
        if norm is not None and self.source in norm["mean"]:
            mean = np.asarray(norm["mean"][self.source], np.float32)[:, None, None]
            std = np.asarray(norm["std"][self.source], np.float32)
            std = np.where(std > 0, std, 1.0).astype(np.float32)[:, None, None]
            values -= mean
            values /= std
        values[~np.isfinite(values)] = np.float32(self.nan_fill)
        source, level = self.source, self.level

        def call(net: Any, xb: Any, _extra: Any) -> Any:
            out = net({source: xb})
            if isinstance(out, list | tuple):
                out = out[level]
            return out.float().softmax(1)  # on the device, in float32

        proba = self._predictor(self.network, values, call=call).numpy()
        if proba.shape[1] != k:
            raise ModelError(f"the network gives {proba.shape[1]} classes but the run names {k}")
        return proba

    def set_inference(self, settings: InferenceSettings | None) -> None:
        """Predict with ``settings`` from now on (``batch_size`` counts windows; ``None``:
        the defaults on the ``device`` the model was made with, float32 on a CPU)."""
        if settings is None:
            settings = InferenceSettings(device=self._made_device)
        self.device = settings.device
        self._predictor = BatchedPredictor(settings, hint=_OOM_HINT)
