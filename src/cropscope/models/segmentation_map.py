"""Trained segmentation networks as map-job models (``input_kind = "scene"``).

A run of ``cropscope segment train`` (AgriFM or any factory) or ``cropscope h2crop train``
(configuration ``S2``) is a network that labels whole images. :meth:`SegmentationMapModel.
from_run` turns it into a self-contained model directory (``model.json`` + safetensors) that
``cropscope predict`` and :func:`~cropscope.mapping.run_map_job` use like any other model:
windows are read with a halo (``context``, default 32 pixels) and their overlaps
cross-faded, so there are no seams.

The cube's bands are matched by name (``bands`` given at export, in the order the network
was trained on), standardised with the run's statistics, NaN set to ``nan_fill`` (0 = the
band mean), and fed as one ``[1, T, C, H, W]`` sample; the class probabilities of level
``level`` (default the finest) come back. Networks that pool time (AgriFM's default
``temporal="attention"``) take any number of dates; a network built for a fixed ``T`` says
so when given another.

Such a model cannot be fitted on pixel series (train the network with ``cropscope segment``
/ ``cropscope h2crop``) and is therefore not in :func:`~cropscope.models.list_models`; it
loads like every model with :meth:`Classifier.load`.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from cropscope.data.timeseries import TimeSeriesSet
from cropscope.errors import DataError, ModelError
from cropscope.models.base import Classifier, ModelCard

__all__ = ["SegmentationMapModel", "build_network"]

WEIGHTS_FILE = "weights.safetensors"


def build_network(spec: dict[str, Any]) -> Any:
    """The network described by a segment run's model spec: ``model`` is ``"agrifm"`` or a
    ``"package.module:callable"`` taking ``(sources, num_classes, preset, **model_kwargs)``."""
    name = spec.get("model", "agrifm")
    if name == "agrifm":
        from cropscope.models.agrifm import AgriFM

        factory: Any = AgriFM
    elif ":" in name:
        mod, _, attr = name.partition(":")
        try:
            factory = getattr(importlib.import_module(mod), attr)
        except (ImportError, AttributeError) as exc:
            raise ModelError(f"cannot import model factory {name!r}: {exc}") from None
    else:
        raise ModelError(f"--model must be 'agrifm' or 'package.module:callable', got {name!r}")
    return factory(dict(spec["sources"]), spec["num_classes"], spec.get("preset", "tiny"),
                   **spec.get("model_kwargs", {}))


def _h2crop_classes(root: Path, sizes: list[int]) -> list[str]:
    """Finest-level class names (background first) of an H2Crop-layout folder."""
    path = root / "taxonomy.json"
    if path.is_file():
        from cropscope.taxonomy.sources import read_taxonomy

        names = read_taxonomy(path).classes(-1)
        if len(names) + 1 == sizes[-1]:
            return ["background", *names]
    return ["background", *(str(i) for i in range(1, sizes[-1]))]


class SegmentationMapModel(Classifier):
    """A trained segmentation run as a scene model for maps (see the module doc)."""

    name: ClassVar[str] = "segmentation-run"
    requires: ClassVar[tuple[str, ...]] = ("torch",)
    input_kind: ClassVar[str] = "scene"

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        self._network: Any = None

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        return {"network": {}, "source": "S2", "context": 32, "level": -1, "nan_fill": 0.0,
                "device": "cpu"}

    @property
    def context(self) -> int:
        """The halo (pixels) windows are read with."""
        return int(self.config["context"])

    # ------------------------------------------------------------------ export
    @classmethod
    def from_run(cls, run_dir: str | Path, bands: list[str] | None = None, *,
                 weights: str = "best", context: int = 32, level: int = -1,
                 device: str = "cpu") -> SegmentationMapModel:
        """The model of a ``cropscope segment`` or ``cropscope h2crop`` run directory.

        ``bands``: the cube band names in the order the network was trained on (default for
        H2Crop runs: B2, B3, B4, B5, B6, B7, B8, B8A, B11, B12); ``weights``: ``"best"``
        (falls back to ``"last"`` when the run had no validation data) or ``"last"``.
        """
        import torch

        run = Path(run_dir)
        ckpt = run / f"{weights}.pt"
        if weights == "best" and not ckpt.is_file():
            ckpt = run / "last.pt"
        if (run / "segment.json").is_file():
            spec = json.loads((run / "segment.json").read_text())
            sources = list(spec["sources"])
            if len(sources) != 1:
                raise ModelError(f"{run} was trained on sources {sources}; maps need a "
                                 "single-source network (one cube)")
            network = {"kind": "segment", "spec": spec["model_spec"]}
            n_classes = int(spec["model_spec"]["num_classes"])
            classes = spec.get("classes") or [str(i) for i in range(n_classes)]
            norm = spec.get("normalise")
            mean = std = None
            if norm:
                mean, std = norm["mean"][sources[0]], norm["std"][sources[0]]
        elif (run / "h2crop.json").is_file():
            from cropscope.data.readers.h2crop import H2CROP_NORMALISATION, H2CROP_S2_BANDS

            spec = json.loads((run / "h2crop.json").read_text())
            args = spec["model"]
            if args.get("config") != "S2":
                raise ModelError(f"{run} is an H2Crop {args.get('config')} run; maps take one "
                                 "cube, so only the S2 configuration can be exported (EnMAP "
                                 "and priors would need their own inputs)")
            sources = ["S2"]
            network = {"kind": "h2crop", "args": args}
            classes = _h2crop_classes(Path(spec.get("root", ".")), list(args["levels"]))
            bands = bands or list(H2CROP_S2_BANDS)
            norm = spec.get("normalise")
            stats = H2CROP_NORMALISATION.to_dict() if norm == "reference" else norm
            mean = std = None
            if isinstance(stats, dict):
                mean, std = stats["mean"]["S2"], stats["std"]["S2"]
        else:
            raise DataError(f"{run} is not a segmentation run (no segment.json or h2crop.json)")
        if not ckpt.is_file():
            raise DataError(f"no {ckpt.name} in {run}")
        if not bands:
            raise DataError("give the band names the network was trained on (bands=...)")
        model = cls(network=network, source=sources[0], context=context, level=level,
                    device=device)
        net = model._build()
        n_bands = _input_bands(net, sources[0])
        if n_bands is not None and n_bands != len(bands):
            raise DataError(f"the network takes {n_bands} bands but {len(bands)} names were "
                            f"given: {bands}")
        state = torch.load(ckpt, map_location="cpu", weights_only=False)["model"]
        net.load_state_dict(state)
        model._network = net.eval()
        model.card = ModelCard(
            bands=list(bands), n_times=0, classes=[str(c) for c in classes],
            input_layout="scene [T, C, H, W]", norm_mean=mean, norm_std=std,
            extra={"run": str(run), "checkpoint": ckpt.name, "any_times": True})
        return model

    def _build(self) -> Any:
        net_cfg = self.config["network"]
        kind = net_cfg.get("kind")
        if kind == "segment":
            return build_network(net_cfg["spec"])
        if kind == "h2crop":
            from cropscope.models.h2crop import H2CropNet

            return H2CropNet(**net_cfg["args"])
        raise ModelError(f"unknown network kind {kind!r} in the model configuration")

    # ------------------------------------------------------------------ Classifier
    _NOT_FITTED_HERE = ("a segmentation map model is trained as a network (cropscope segment "
                        "train / cropscope h2crop train) and exported with from_run")

    def fit(self, train: TimeSeriesSet, val: TimeSeriesSet | None = None, *,
            progress: bool = False) -> Classifier:
        raise ModelError(self._NOT_FITTED_HERE)

    def _fit(self, train: TimeSeriesSet, val: TimeSeriesSet | None, progress: bool) -> None:
        raise ModelError(self._NOT_FITTED_HERE)

    def _predict_proba(self, ts: TimeSeriesSet) -> np.ndarray:
        raise ModelError("a segmentation map model labels images, not pixel series: map a "
                         "cube with cropscope predict or run_map_job")

    def _save_weights(self, directory: Path) -> None:
        from safetensors.torch import save_file

        if self._network is None:
            raise ModelError("no network to save")
        state = {k: v.detach().cpu().contiguous() for k, v in
                 self._network.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_FILE))

    def _load_weights(self, directory: Path) -> None:
        from safetensors.torch import load_file

        net = self._build()
        net.load_state_dict(load_file(str(directory / WEIGHTS_FILE)))
        self._network = net.eval()

    def predict_proba_scene(self, x: np.ndarray) -> np.ndarray:
        """``x [T, C, H, W]`` (bands as the card, NaN = nodata) → ``[K, H, W]``."""
        import torch

        card = self._require_card()
        if x.ndim != 4 or x.shape[1] != len(card.bands):
            raise DataError(f"expected [T, {len(card.bands)}, H, W], got {list(x.shape)}")
        values = x.astype(np.float32, copy=True)
        if card.norm_mean is not None and card.norm_std is not None:
            mean = np.asarray(card.norm_mean, np.float32)[None, :, None, None]
            std = np.asarray(card.norm_std, np.float32)
            std = np.where(std > 0, std, 1.0).astype(np.float32)[None, :, None, None]
            values = (values - mean) / std
        values = np.where(np.isfinite(values), values, np.float32(self.config["nan_fill"]))
        device = torch.device(self.config["device"])
        net = self._network.to(device)
        with torch.no_grad():
            out = net({self.config["source"]: torch.from_numpy(values)[None].to(device)})
            if isinstance(out, list | tuple):
                out = out[int(self.config["level"])]
            proba = out.float().softmax(1)[0].cpu().numpy()
        return proba.astype(np.float32)


def _input_bands(net: Any, source: str) -> int | None:
    """The band count a network's source takes, when it declares one (``in_chans``)."""
    in_chans = getattr(net, "in_chans", None)
    return in_chans.get(source) if isinstance(in_chans, dict) else None
