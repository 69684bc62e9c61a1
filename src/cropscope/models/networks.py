"""Network registry: every torch network of cropscope by name, with its default configuration
(in the manner of timm's ``create_model``).

``create_network("tempcnn", n_bands=4, n_times=23, n_classes=9)`` builds a network;
``network_config(name)`` says what it takes (:class:`NetworkConfig`: input layout, default
keyword arguments, the keywords the caller must give, default bands and wavelengths, time
steps, patch size, a tiny test configuration); ``list_networks()`` names them all. A run
directory stores a network as its registered name and keyword arguments, never as code.

The built-in networks are listed below as import paths and imported on first use, so listing
or describing them needs neither torch nor their modules. Third-party packages add networks
through the entry-point group ``cropscope.networks`` (one entry point per network, named as
the network, pointing at a builder decorated with :func:`register_network`); entry points are
read only from installed distributions (:func:`importlib.metadata.entry_points`) and loaded
when their name is first asked for. A name may come from a data file; the code it runs never
does.
"""

from __future__ import annotations

import copy
import inspect
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from importlib import import_module
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any, TypeVar, overload

from cropscope.errors import ModelError

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "ENTRY_POINT_GROUP",
    "InputSpec",
    "NetworkConfig",
    "create_network",
    "list_networks",
    "network_config",
    "network_kwargs",
    "register_network",
]

#: the entry-point group third-party packages register their networks in
ENTRY_POINT_GROUP = "cropscope.networks"

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


@dataclass(frozen=True)
class InputSpec:
    """One input of a network's test configuration: ``shape`` without the batch axis,
    ``dtype`` (``"float32"`` or ``"int64"``) and, for integer inputs, values in
    ``[0, high)``."""

    shape: tuple[int, ...]
    dtype: str = "float32"
    high: int | None = None


@dataclass(frozen=True)
class NetworkConfig:
    """What a registered network takes and gives (its "default cfg").

    - ``builder``: ``(module, attribute)`` of the callable that builds it;
    - ``input_layout`` / ``output``: human-readable layouts (``B`` batch, ``T`` time steps,
      ``C`` bands, ``K`` classes; ``{name: ...}`` for a dict of inputs);
    - ``kwargs``: the default keyword arguments :func:`create_network` passes (explicit ones
      override them); ``required``: the keywords the caller must give (sizes that come from
      the data); ``options``: further keywords the builder forwards (e.g. preset overrides);
    - ``classes_arg``: the keyword setting the number of classes (a sequence of counts for
      hierarchical heads), ``None`` for a feature extractor without head;
    - ``bands`` / ``wavelengths`` (nm): default band names per input source, when the network
      has any (``None``: taken from the data);
    - ``time_steps`` / ``patch_size``: ``None`` for any number of time steps / any spatial
      size, an ``int`` for a fixed one, a ``str`` for the keyword that fixes it at build time;
    - ``dict_input``: the network takes ``{name: tensor}`` rather than one tensor;
    - ``test_kwargs`` / ``test_inputs``: a tiny configuration (over ``kwargs``) and random
      inputs of its shapes, for the tests that walk every network.
    """

    name: str
    builder: tuple[str, str]
    description: str = ""
    input_layout: str = ""
    output: str = ""
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    options: tuple[str, ...] = ()
    classes_arg: str | None = None
    bands: Mapping[str, tuple[str, ...]] | None = None
    wavelengths: Mapping[str, tuple[float, ...]] | None = None
    time_steps: int | str | None = None
    patch_size: int | str | None = None
    dict_input: bool = False
    test_kwargs: Mapping[str, Any] = field(default_factory=dict)
    test_inputs: Mapping[str, InputSpec] = field(default_factory=dict)
    notes: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible copy (tuples as lists)."""
        return _plain({f.name: getattr(self, f.name) for f in fields(self)})


def _plain(value: Any) -> Any:
    if isinstance(value, InputSpec):
        return {"shape": list(value.shape), "dtype": value.dtype, "high": value.high}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


# ---------------------------------------------------------------------------- built-ins
_S2_BANDS = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")
#: band centres (nm) of :data:`_S2_BANDS` (Sentinel-2A)
_S2_WAVELENGTHS = (492.4, 559.8, 664.6, 704.1, 740.5, 782.8, 832.8, 864.7, 1613.7, 2202.4)
_PIXEL_SIZES = ("n_bands", "n_times", "n_classes")
#: stream options of the spectral-spatial transformer (keywords of SpectralSpatialTransformer)
_STREAM_OPTIONS = ("spatial_dim", "spatial_depth", "spatial_heads", "spatial_patch",
                   "spectral_grid", "spectral_dim", "spectral_depth", "spectral_heads",
                   "out_dim", "upscale", "neck", "mlp_ratio", "dropout")
#: Swin3D keywords AgriFM forwards to its bodies
_SWIN_OPTIONS = ("embed_dim", "depths", "num_heads", "temporal_merge", "temporal_mode",
                 "mlp_ratio", "qkv_bias", "patch_norm")


def _spec(*shape: int, dtype: str = "float32", high: int | None = None) -> InputSpec:
    return InputSpec(tuple(shape), dtype, high)


_BUILTIN: dict[str, NetworkConfig] = {cfg.name: cfg for cfg in (
    NetworkConfig(
        name="tempcnn",
        builder=("cropscope.models.tempcnn", "TempCNNModule"),
        description="TempCNN (Pelletier et al. 2019): 1-D temporal convolutions, bands as "
                    "channels",
        input_layout="pixel-image [B, C, T]",
        output="logits [B, K]",
        kwargs={"filters": 64, "kernel_size": 5, "n_conv": 3, "hidden": 256, "dropout": 0.2},
        required=_PIXEL_SIZES,
        classes_arg="n_classes",
        time_steps="n_times",
        test_kwargs={"n_bands": 3, "n_times": 8, "n_classes": 4, "filters": 8, "hidden": 16},
        test_inputs={"x": _spec(3, 8)},
    ),
    NetworkConfig(
        name="lstm-fcn",
        builder=("cropscope.models.lstm_fcn", "LSTMFCNModule"),
        description="LSTM-FCN (Karim et al. 2018): fully convolutional and LSTM branches, "
                    "bands as channels",
        input_layout="pixel-image [B, C, T]",
        output="logits [B, K]",
        kwargs={"filters": (128, 256, 128), "kernels": (8, 5, 3), "hidden": 8,
                "lstm_dropout": 0.8, "shuffle": True},
        required=_PIXEL_SIZES,
        classes_arg="n_classes",
        time_steps="n_times",
        test_kwargs={"n_bands": 3, "n_times": 8, "n_classes": 4, "filters": (8, 16, 8),
                     "hidden": 4, "lstm_dropout": 0.2},
        test_inputs={"x": _spec(3, 8)},
        notes="shuffle=True (the paper's dimension shuffle) reads series of n_times steps "
              "only; shuffle=False any length",
    ),
    NetworkConfig(
        name="cropnet",
        builder=("cropscope.models.cropnet", "CropNetModule"),
        description="CropNet (Tong & Wang): 2-D CNN over the bands x time image",
        input_layout="pixel-image [B, 1, C, T]",
        output="logits [B, K]",
        kwargs={"channels": 128, "dropout": (0.2, 0.3, 0.3, 0.4)},
        required=("n_classes",),
        classes_arg="n_classes",
        test_kwargs={"n_classes": 4, "channels": 8, "dropout": (0.1, 0.1)},
        test_inputs={"x": _spec(1, 3, 8)},
        notes="any number of bands and time steps (global average pooling)",
    ),
    NetworkConfig(
        name="ltae",
        builder=("cropscope.models.attention", "TemporalAttentionModule"),
        description="Lightweight temporal attention encoder (L-TAE style, master-query "
                    "pooling)",
        input_layout="pixel-series [B, T, C]",
        output="logits [B, K]",
        kwargs={"d_model": 128, "n_head": 16, "d_k": 8, "mlp": 128, "dropout": 0.2},
        required=_PIXEL_SIZES,
        classes_arg="n_classes",
        time_steps="n_times",
        test_kwargs={"n_bands": 3, "n_times": 8, "n_classes": 4, "d_model": 16, "n_head": 4,
                     "d_k": 4, "mlp": 16},
        test_inputs={"x": _spec(8, 3)},
        notes="n_times is the length of the position code: series of up to n_times steps",
    ),
    NetworkConfig(
        name="spectral-cnn",
        builder=("cropscope.models.spectral_cnn", "SpectralCNNModule"),
        description="1-D CNN along the spectrum of a pixel",
        input_layout="spectrum [B, T, K] (time steps as channels, bands along the length)",
        output="logits [B, K]",
        kwargs={"filters": 32, "kernel_size": 7, "n_conv": 3, "pooled": 8, "hidden": 128,
                "dropout": 0.3},
        required=("n_channels", "n_classes"),
        classes_arg="n_classes",
        time_steps="n_channels",
        test_kwargs={"n_channels": 1, "n_classes": 4, "filters": 8, "n_conv": 2, "pooled": 4,
                     "hidden": 16},
        test_inputs={"x": _spec(1, 20)},
        notes="any number of bands (adaptive pooling along the spectrum)",
    ),
    NetworkConfig(
        name="spectral-transformer",
        builder=("cropscope.models.spectral_transformer", "SpectralTransformerNet"),
        description="Spectral-spatial decoupled ViT (H2Crop EnMAP stream) with centre-pixel "
                    "pooling and a linear head",
        input_layout="patch [B, C, h, w] (h = w = patch_size)",
        output="logits [B, K]",
        kwargs={"pool": "centre"},
        required=("n_bands", "patch_size", "n_classes"),
        options=_STREAM_OPTIONS,
        classes_arg="n_classes",
        patch_size="patch_size",
        test_kwargs={"n_bands": 6, "patch_size": 5, "n_classes": 4, "spatial_dim": 16,
                     "spatial_depth": 1, "spatial_heads": 2, "spectral_grid": 3,
                     "spectral_dim": 8, "spectral_depth": 1, "spectral_heads": 2,
                     "out_dim": 8},
        test_inputs={"x": _spec(6, 5, 5)},
        notes="stream options default to the 'small' preset of the classifier",
    ),
    NetworkConfig(
        name="swin3d",
        builder=("cropscope.models.swin3d", "Swin3D"),
        description="3D (video) Swin Transformer backbone (the AgriFM encoder); a feature "
                    "extractor without head",
        input_layout="patch-series [B, T, C, H, W]",
        output="features: one [B, C_i, D_i, H_i, W_i] per stage",
        kwargs={"in_chans": 10, "preset": "base", "patch_size": (4, 2, 2),
                "window_size": (8, 7, 7)},
        bands={"x": _S2_BANDS},
        wavelengths={"x": _S2_WAVELENGTHS},
        test_kwargs={"in_chans": 3, "preset": None, "embed_dim": 8, "depths": (2, 1),
                     "num_heads": (1, 2), "temporal_merge": (True,), "drop_path_rate": 0.0},
        test_inputs={"x": _spec(4, 3, 16, 16)},
        notes="registered as a backbone: put a head on its stage maps (AgriFM does)",
    ),
    NetworkConfig(
        name="agrifm",
        builder=("cropscope.models.agrifm", "AgriFM"),
        description="AgriFM: per-source 3D Swin encoders, multi-source fusion decoder, "
                    "segmentation head",
        input_layout="patch-series {source: [B, T, C, H, W]}",
        output="logits [B, K, H, W] (a list, one per level, for hierarchical num_classes)",
        kwargs={"sources": {"S2": 10}, "preset": "tiny", "patch_size": (4, 2, 2),
                "temporal": "attention"},
        required=("num_classes",),
        options=_SWIN_OPTIONS,
        classes_arg="num_classes",
        bands={"S2": _S2_BANDS},
        wavelengths={"S2": _S2_WAVELENGTHS},
        dict_input=True,
        test_kwargs={"sources": {"S2": 4}, "num_classes": 3, "preset": None, "embed_dim": 8,
                     "depths": (2, 1, 1), "num_heads": (1, 2, 2), "temporal_merge": (True, True),
                     "decoder_dim": 16, "drop_path_rate": 0.0},
        test_inputs={"S2": _spec(8, 4, 16, 16)},
        notes="any T, H and W with temporal='attention' or 'mean'; 'flatten' fixes T",
    ),
    NetworkConfig(
        name="h2crop",
        builder=("cropscope.models.h2crop", "H2CropNet"),
        description="H2Crop dual-stream network (S2 AgriFM stream + EnMAP spectral-spatial "
                    "ViT) with cascaded hierarchical heads",
        input_layout="{S2: [B, T, C, H, W], EnMAP: [B, C_h, h, w], priors: [B, L, H, W] int} "
                     "(H = 3 h)",
        output="logits: one [B, K_l, H, W] per level, coarse to fine",
        kwargs={"levels": (7, 37, 83, 102), "config": "S2+H+P", "preset": "tiny",
                "months": 6, "s2_bands": 10, "hyper_bands": 218, "hyper_size": 64},
        options=("backbone", "patch_size", "window_size", "drop_path_rate", "decoder_dim",
                 "temporal", "hyper", "use_checkpoint"),
        classes_arg="levels",
        bands={"S2": _S2_BANDS},
        wavelengths={"S2": _S2_WAVELENGTHS},
        time_steps="months",
        patch_size="hyper_size",
        dict_input=True,
        test_kwargs={
            "levels": (3, 4), "months": 4, "s2_bands": 4, "hyper_bands": 6, "hyper_size": 4,
            "backbone": {"preset": None, "embed_dim": 8, "depths": (1, 1, 1, 1),
                         "num_heads": (1, 1, 2, 2)},
            "decoder_dim": 16,
            "hyper": {"spatial_dim": 8, "spatial_depth": 1, "spatial_heads": 2,
                      "spatial_patch": 2, "spectral_grid": 2, "spectral_dim": 8,
                      "spectral_depth": 1, "spectral_heads": 2, "out_dim": 8, "upscale": 3,
                      "neck": True, "mlp_ratio": 2.0, "dropout": 0.0},
        },
        test_inputs={"S2": _spec(4, 4, 12, 12), "EnMAP": _spec(6, 4, 4),
                     "priors": _spec(2, 12, 12, dtype="int64", high=3)},
        notes="months fixes the merges (and T with temporal='flatten', the reference preset); "
              "the tiny preset pools time with attention and runs on any T",
    ),
    NetworkConfig(
        name="agrifm-official",
        builder=("cropscope.models.agrifm", "AgriFM"),
        description="AgriFM as the official fine-tuning model (cropland_mapping.py): base, "
                    "T = 32 flattened, decoder 1024, computing as the official code "
                    "(compat='official'); loads the official checkpoints 1:1",
        input_layout="patch-series {S2: [B, 32, 10, H, W]} (raw DN, z-scored with "
                     "AGRIFM_S2_NORMALISATION)",
        output="logits [B, K, H, W]",
        kwargs={"sources": {"S2": 10}, "num_classes": 2, "preset": "base",
                "patch_size": (4, 2, 2), "window_size": (8, 7, 7), "drop_path_rate": 0.2,
                "decoder_dim": 1024, "temporal": "flatten", "num_frames": 32,
                "compat": "official"},
        options=_SWIN_OPTIONS,
        classes_arg="num_classes",
        bands={"S2": _S2_BANDS},
        wavelengths={"S2": _S2_WAVELENGTHS},
        time_steps=32,
        dict_input=True,
        test_kwargs={"sources": {"S2": 4}, "num_classes": 3, "preset": None, "embed_dim": 4,
                     "depths": (2, 1, 1, 1), "num_heads": (2, 4, 8, 16), "decoder_dim": 16,
                     "num_frames": 8, "drop_path_rate": 0.0},
        test_inputs={"S2": _spec(8, 4, 16, 16)},
        notes="set feature_size to the official neck's (e.g. img // 16) for its decoder grid",
    ),
)}
# the official S2+H+P configuration: the h2crop entry with the official defaults
_BUILTIN["h2crop-official"] = replace(
    _BUILTIN["h2crop"], name="h2crop-official",
    description="H2Crop as the official S2+H+P model (crops_S2_H_P_jun.py), computing as the "
                "official code (compat='official'); loads the official checkpoints 1:1",
    input_layout="{S2: [B, 6, 10, 192, 192], EnMAP: [B, 218, 64, 64], priors: "
                 "[B, 4, 192, 192] int}",
    kwargs={**_BUILTIN["h2crop"].kwargs, "preset": "reference", "compat": "official",
            "feature_size": 6},
    test_kwargs={**_BUILTIN["h2crop"].test_kwargs, "preset": "tiny", "feature_size": None,
                 "temporal": "flatten"},
    notes="feature_size 6 = 192 // 32, the official formula")

#: networks registered at run time (third parties, entry points once loaded)
_REGISTERED: dict[str, tuple[NetworkConfig, Callable[..., Any]]] = {}

B = TypeVar("B", bound=Callable[..., Any])


# ---------------------------------------------------------------------------- registration
def _config_from(name: str, builder: Callable[..., Any],
                 default_cfg: Mapping[str, Any] | NetworkConfig) -> NetworkConfig:
    target = (str(getattr(builder, "__module__", "?")),
              str(getattr(builder, "__qualname__", repr(builder))))
    if isinstance(default_cfg, NetworkConfig):
        items = {f.name: getattr(default_cfg, f.name) for f in fields(default_cfg)}
    else:
        items = dict(default_cfg)
    allowed = {f.name for f in fields(NetworkConfig)} - {"name", "builder"}
    items = {k: v for k, v in items.items() if k not in {"name", "builder"}}
    unknown = sorted(set(items) - allowed)
    if unknown:
        raise ModelError(f"unknown default_cfg key(s) {unknown} for network {name!r}; known: "
                         f"{', '.join(sorted(allowed))}")
    tests = items.get("test_inputs") or {}
    items["test_inputs"] = {str(k): v if isinstance(v, InputSpec) else
                            InputSpec(**v) if isinstance(v, Mapping) else
                            InputSpec(tuple(int(s) for s in v)) for k, v in tests.items()}
    for key in ("required", "options"):
        items[key] = tuple(str(v) for v in items.get(key, ()))
    return NetworkConfig(name=name, builder=target, **items)


@overload
def register_network(name: str, builder: None = None, *,
                     default_cfg: Mapping[str, Any] | NetworkConfig | None = None
                     ) -> Callable[[B], B]: ...


@overload
def register_network(name: str, builder: B, *,
                     default_cfg: Mapping[str, Any] | NetworkConfig | None = None) -> B: ...


def register_network(name: str, builder: B | None = None, *,
                     default_cfg: Mapping[str, Any] | NetworkConfig | None = None
                     ) -> Callable[[B], B] | B:
    """Register ``builder`` (a class or function returning an ``nn.Module``) as ``name``.

    Use as a decorator, ``@register_network("my-net", default_cfg={...})``, or call it with
    the builder. ``default_cfg`` gives the :class:`NetworkConfig` fields (``kwargs``,
    ``required``, ``input_layout``, ``test_kwargs``, ``test_inputs`` ...). Built-in names
    cannot be taken; registering another builder under a registered name is an error.
    """
    if not _NAME.match(name):
        raise ModelError(f"network name {name!r} must be lower-case letters, digits, '.', '-' "
                         "or '_'")
    if name in _BUILTIN:
        raise ModelError(f"{name!r} is a built-in network and cannot be registered again")

    def wrap(fn: B) -> B:
        if not callable(fn):
            raise ModelError(f"network {name!r}: the builder must be callable, got {fn!r}")
        config = _config_from(name, fn, default_cfg or {})
        old = _REGISTERED.get(name)
        if old is not None and old[0].builder != config.builder:
            raise ModelError(f"network {name!r} is already registered by "
                             f"{':'.join(old[0].builder)}")
        _REGISTERED[name] = (config, fn)
        return fn

    return wrap if builder is None else wrap(builder)


def _entry_points() -> dict[str, EntryPoint]:
    """Installed distributions' entry points of :data:`ENTRY_POINT_GROUP`, by name (the
    first of a duplicated name wins; built-in names are skipped with a warning)."""
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _BUILTIN:
            warnings.warn(f"ignoring the entry point {ep.value!r}: {ep.name!r} is a built-in "
                          "cropscope network", RuntimeWarning, stacklevel=3)
            continue
        found.setdefault(ep.name, ep)
    return found


def _load_entry_point(name: str, ep: EntryPoint) -> None:
    try:
        obj = ep.load()
    except (ImportError, AttributeError) as exc:
        raise ModelError(f"network {name!r}: cannot load its entry point {ep.value!r} "
                         f"({type(exc).__name__}: {exc})") from None
    if name not in _REGISTERED:
        raise ModelError(f"network {name!r}: the entry point {ep.value!r} loaded {obj!r} but "
                         f"registered no network of that name; decorate the builder with "
                         f"@register_network({name!r}, default_cfg=...)")


# ---------------------------------------------------------------------------- look-up
def list_networks() -> list[str]:
    """Names of the built-in, registered and installed (entry-point) networks, sorted."""
    return sorted({*_BUILTIN, *_REGISTERED, *_entry_points()})


def _lookup(name: str) -> tuple[NetworkConfig, Callable[..., Any] | None]:
    if name in _BUILTIN:
        return _BUILTIN[name], None
    if name not in _REGISTERED:
        ep = _entry_points().get(name)
        if ep is None:
            raise ModelError(f"unknown network {name!r}; available networks: "
                             f"{', '.join(list_networks())}")
        _load_entry_point(name, ep)
    return _REGISTERED[name]


def network_config(name: str) -> NetworkConfig:
    """The :class:`NetworkConfig` of network ``name`` (built-ins without importing them)."""
    return _lookup(name)[0]


def _builder(config: NetworkConfig) -> Callable[..., Any]:
    module, attr = config.builder
    try:
        built: Callable[..., Any] = getattr(import_module(module), attr)
    except ImportError as exc:
        raise ModelError(f"network {config.name!r} needs the optional dependency "
                         f"{exc.name!r}; install it with: pip install 'cropscope[torch]'"
                         ) from None
    return built


def _resolve(config: NetworkConfig, builder: Callable[..., Any],
             kwargs: Mapping[str, Any]) -> dict[str, Any]:
    merged = {**copy.deepcopy(dict(config.kwargs)), **kwargs}
    params = inspect.signature(builder).parameters.values()
    named = {p.name: p for p in params
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    open_ended = any(p.kind is p.VAR_KEYWORD for p in params)
    known = set(named)
    if open_ended:
        known |= set(config.kwargs) | set(config.required) | set(config.options)
    unknown = sorted(set(merged) - known)
    if unknown:
        raise ModelError(f"unknown option(s) {unknown} for network {config.name!r}; known "
                         f"options: {', '.join(sorted(known))}")
    missing = [k for k, p in named.items() if p.default is p.empty and k not in merged]
    missing += [k for k in config.required if k not in merged and k not in missing]
    if missing:
        raise ModelError(f"network {config.name!r} needs the option(s) {missing}")
    return merged


def network_kwargs(name: str, **kwargs: Any) -> dict[str, Any]:
    """The full keyword arguments :func:`create_network` would pass for ``kwargs``
    (defaults filled in, checked), e.g. to store in a run directory."""
    config, builder = _lookup(name)
    return _resolve(config, builder or _builder(config), kwargs)


def create_network(name: str, **kwargs: Any) -> nn.Module:
    """Build network ``name`` with ``kwargs`` over its default keyword arguments.

    Unknown names, unknown options and missing required options raise
    :class:`~cropscope.errors.ModelError` listing the known ones. So do option values the
    network cannot be built with (a zero head count, a negative width, a number where a
    list goes): the builders' own ``TypeError``/``ValueError``/``ZeroDivisionError`` and
    torch's ``RuntimeError`` from a layer's constructor, with their message.
    """
    config, builder = _lookup(name)
    builder = builder or _builder(config)
    options = _resolve(config, builder, kwargs)
    try:
        network: nn.Module = builder(**options)
    except ModelError:
        raise
    except (TypeError, ValueError, ZeroDivisionError, RuntimeError) as exc:
        raise ModelError(f"network {name!r} cannot be built with these options "
                         f"({type(exc).__name__}: {exc})") from None  # fmt: skip
    return network
