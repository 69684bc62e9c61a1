"""The one run description: ``run.json``, validated strictly when read.

Every trained thing in cropscope — a pixel or patch classifier, a segmentation network
(AgriFM), an H2Crop network, a pretrained encoder, a weather field — is a *run directory*
whose ``run.json`` follows :class:`RunSpec`:

``kind``
    ``classifier`` | ``segmentation`` | ``h2crop`` | ``pretrained-encoder`` |
    ``weather-field``.
``model`` / ``network``
    ``{"name": <registered name>, "config"|"kwargs": {...}}``. ``model`` names a registered
    :class:`~cropscope.models.base.Classifier` (classifier runs), ``network`` a registered torch
    network (every other kind). A name is a plain registry key (``[a-z0-9][a-z0-9._+-]*``
    without ``:``), never an import path: nothing named in a data file is ever imported.
``classes``, ``taxonomy``
    class names in output order; the class hierarchy (``Taxonomy.to_dict()``) or ``null``.
``sources``
    ``{source: {"bands": [names], "wavelengths": [nm] | null}}`` (the input the model reads).
``time_grid``
    what the model was trained on (:class:`TimeGrid`): explicit ``dates``, or a regular
    ``step_days`` from a ``season_start`` (``MM-DD``) with ``n_times`` steps, or only
    ``n_times``, or ``any`` (networks that pool time take any number of dates).
``normalisation``
    ``{"mean": {source: [per band]}, "std": {...}}`` or ``null``.
``training``, ``metrics``, ``versions``, ``data``, ``extra``
    free-form JSON records (numbers, strings, lists, dicts): never interpreted as code.

Reading is bounded: ``run.json`` larger than :data:`MAX_SPEC_BYTES` is refused, and every
field is type-checked, so a damaged or hostile file gives one :class:`ModelError`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from cropscope.errors import ModelError

__all__ = [
    "KINDS",
    "MAX_SPEC_BYTES",
    "RUN_FILE",
    "RUN_FORMAT",
    "RunSpec",
    "TimeGrid",
    "check_name",
]

RUN_FILE = "run.json"
RUN_FORMAT = "cropscope-run"
RUN_FORMAT_VERSION = 1
#: run.json holds names, statistics and a training record; 16 MiB is far above any real one
MAX_SPEC_BYTES = 16 * 1024 * 1024
KINDS = ("classifier", "segmentation", "h2crop", "pretrained-encoder", "weather-field")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._+-]{0,63}$")
_MMDD = re.compile(r"^\d{2}-\d{2}$")


def check_name(name: Any, what: str = "name") -> str:
    """A registry key: lower-case letters, digits, ``._+-``; never an import path."""
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise ModelError(f"invalid {what} {name!r}: expected a registered name such as "
                         "'tempcnn' or 'agrifm' (names never point to code)")
    return name


def _check_json_value(value: Any, where: str, depth: int = 0) -> None:
    """Plain JSON only (no NaN-as-string tricks needed): bounded depth, finite or NaN floats."""
    if depth > 32:
        raise ModelError(f"{where}: nested too deeply")
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, float):
        return
    if isinstance(value, list):
        for item in value:
            _check_json_value(item, where, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ModelError(f"{where}: keys must be strings")
            _check_json_value(item, where, depth + 1)
        return
    raise ModelError(f"{where}: unsupported value of type {type(value).__name__}")


def _str_list(value: Any, where: str, allow_none: bool = False) -> list[str] | None:
    if value is None and allow_none:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ModelError(f"{where} must be a list of strings, got {type(value).__name__}")
    return list(value)


def _float_list(value: Any, where: str) -> list[float]:
    if not isinstance(value, list) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in value
    ):
        raise ModelError(f"{where} must be a list of numbers")
    out = [float(v) for v in value]
    if not all(math.isfinite(v) for v in out):
        raise ModelError(f"{where} holds a non-finite number")
    return out


def _dict(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ModelError(f"{where} must be an object, got {type(value).__name__}")
    _check_json_value(value, where)
    return dict(value)


@dataclass(frozen=True)
class TimeGrid:
    """The dates a model was trained on; maps check a cube against it before predicting.

    ``kind``: ``"dates"`` (``dates`` ISO strings), ``"regular"`` (``n_times`` steps of
    ``step_days`` from ``season_start`` ``MM-DD``), ``"steps"`` (only ``n_times`` known) or
    ``"any"`` (the network pools time: any number of dates).
    """

    kind: str = "steps"
    n_times: int | None = None
    dates: tuple[str, ...] | None = None
    step_days: int | None = None
    season_start: str | None = None

    @classmethod
    def any(cls) -> TimeGrid:
        return cls(kind="any")

    @classmethod
    def from_dates(cls, dates: Any) -> TimeGrid:
        """From an array of dates (numpy datetime64 or ISO strings)."""
        import numpy as np

        days = np.asarray(dates).astype("datetime64[D]")
        return cls(kind="dates", n_times=int(days.size),
                   dates=tuple(str(d) for d in days.tolist()))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.dates is not None:
            out["dates"] = list(self.dates)
        return {k: v for k, v in out.items() if v is not None}

    @classmethod
    def from_dict(cls, data: Any) -> TimeGrid:
        if data is None:
            return cls.any()
        data = _dict(data, "time_grid")
        unknown = set(data) - {"kind", "n_times", "dates", "step_days", "season_start"}
        if unknown:
            raise ModelError(f"time_grid: unknown key(s) {sorted(unknown)}")
        kind = data.get("kind", "steps")
        if kind not in ("dates", "regular", "steps", "any"):
            raise ModelError(f"time_grid.kind must be dates/regular/steps/any, got {kind!r}")
        n = data.get("n_times")
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or not 0 < n < 10000):
            raise ModelError(f"time_grid.n_times must be a positive integer, got {n!r}")
        dates = _str_list(data.get("dates"), "time_grid.dates", allow_none=True)
        if dates is not None:
            for d in dates:
                try:
                    date.fromisoformat(d[:10])
                except ValueError:
                    raise ModelError(f"time_grid.dates: {d!r} is not an ISO date") from None
            if n is not None and n != len(dates):
                raise ModelError("time_grid: n_times differs from the number of dates")
            n = len(dates)
        step = data.get("step_days")
        if step is not None and (not isinstance(step, int) or not 0 < step <= 366):
            raise ModelError(f"time_grid.step_days must be 1..366, got {step!r}")
        start = data.get("season_start")
        if start is not None and (not isinstance(start, str) or not _MMDD.match(start)):
            raise ModelError(f"time_grid.season_start must be 'MM-DD', got {start!r}")
        if kind == "dates" and dates is None:
            raise ModelError("time_grid of kind 'dates' needs dates")
        if kind == "regular" and (step is None or n is None):
            raise ModelError("time_grid of kind 'regular' needs step_days and n_times")
        return cls(kind=kind, n_times=n, dates=None if dates is None else tuple(dates),
                   step_days=step, season_start=start)

    def describe(self) -> str:
        if self.kind == "any":
            return "any number of dates"
        if self.kind == "dates" and self.dates:
            return f"{self.n_times} dates {self.dates[0]} .. {self.dates[-1]}"
        if self.kind == "regular":
            return (f"{self.n_times} steps of {self.step_days} days from "
                    f"{self.season_start or 'the season start'}")
        return f"{self.n_times} time steps"


@dataclass
class RunSpec:
    """The contents of ``run.json`` (see the module docstring)."""

    kind: str
    model: dict[str, Any] | None = None
    network: dict[str, Any] | None = None
    classes: list[str] = field(default_factory=list)
    taxonomy: dict[str, Any] | None = None
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    time_grid: TimeGrid = field(default_factory=TimeGrid.any)
    normalisation: dict[str, Any] | None = None
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] | None = None
    versions: dict[str, Any] = field(default_factory=dict)
    data: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        if self.kind not in KINDS:
            raise ModelError(f"unknown run kind {self.kind!r}; known kinds: {', '.join(KINDS)}")
        if self.kind == "classifier":
            if not isinstance(self.model, dict):
                raise ModelError("a classifier run needs 'model': {name, config}")
            check_name(self.model.get("name"), "model name")
            _dict(self.model.get("config", {}), "model.config")
        elif self.network is not None:
            if not isinstance(self.network, dict):
                raise ModelError("'network' must be an object {name, kwargs}")
            check_name(self.network.get("name"), "network name")
            _dict(self.network.get("kwargs", {}), "network.kwargs")
        elif self.kind != "weather-field":
            raise ModelError(f"a {self.kind} run needs 'network': {{name, kwargs}}")
        _str_list(self.classes, "classes")
        if self.taxonomy is not None:
            _dict(self.taxonomy, "taxonomy")
        if not isinstance(self.sources, dict):
            raise ModelError("'sources' must be an object {source: {bands, wavelengths}}")
        for name, info in self.sources.items():
            info = _dict(info, f"sources.{name}")
            _str_list(info.get("bands", []), f"sources.{name}.bands")
            if info.get("wavelengths") is not None:
                _float_list(info["wavelengths"], f"sources.{name}.wavelengths")
        if not isinstance(self.time_grid, TimeGrid):
            raise ModelError("'time_grid' must be a TimeGrid")
        if self.normalisation is not None:
            norm = _dict(self.normalisation, "normalisation")
            for key in ("mean", "std"):
                part = norm.get(key)
                if not isinstance(part, dict):
                    raise ModelError(f"normalisation.{key} must be an object per source")
                for src, values in part.items():
                    _float_list(values, f"normalisation.{key}.{src}")
        for key in ("training", "versions", "extra"):
            _dict(getattr(self, key), key)
        if self.metrics is not None:
            _dict(self.metrics, "metrics")
        if not isinstance(self.data, str):
            raise ModelError("'data' must be a string")

    # ------------------------------------------------------------------ accessors
    @property
    def name(self) -> str:
        """The registered model or network name."""
        part = self.model if self.kind == "classifier" else self.network
        return str((part or {}).get("name", ""))

    def bands(self, source: str | None = None) -> list[str]:
        """Band names of ``source`` (default: the first source)."""
        if not self.sources:
            return []
        key = source if source is not None else next(iter(self.sources))
        if key not in self.sources:
            raise ModelError(f"the run has no source {key!r}; it has {list(self.sources)}")
        return list(self.sources[key].get("bands", []))

    # ------------------------------------------------------------------ (de)serialise
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format": RUN_FORMAT, "format_version": RUN_FORMAT_VERSION}
        for key in ("kind", "model", "network", "classes", "taxonomy", "sources"):
            out[key] = getattr(self, key)
        out["time_grid"] = self.time_grid.to_dict()
        for key in ("normalisation", "training", "metrics", "versions", "data", "extra"):
            out[key] = getattr(self, key)
        return out

    @classmethod
    def from_dict(cls, data: Any) -> RunSpec:
        if not isinstance(data, dict):
            raise ModelError("run.json must hold a JSON object")
        if data.get("format") != RUN_FORMAT:
            raise ModelError(f"run.json is not a {RUN_FORMAT} description "
                             f"(format={data.get('format')!r})")
        version = data.get("format_version")
        if not isinstance(version, int) or version > RUN_FORMAT_VERSION:
            raise ModelError(f"run.json has format version {version!r}; this cropscope reads "
                             f"up to {RUN_FORMAT_VERSION} (upgrade cropscope)")
        known = {"format", "format_version", "kind", "model", "network", "classes", "taxonomy",
                 "sources", "time_grid", "normalisation", "training", "metrics", "versions",
                 "data", "extra"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModelError(f"run.json: unknown key(s) {unknown}")
        missing = [k for k in ("kind",) if k not in data]
        if missing:
            raise ModelError(f"run.json: no {' or '.join(repr(k) for k in missing)} (a "
                             "damaged or hand-edited run; train it again)")
        kwargs = {k: v for k, v in data.items() if k in known - {"format", "format_version"}}
        kwargs["time_grid"] = TimeGrid.from_dict(data.get("time_grid"))
        for key in ("classes",):
            kwargs[key] = kwargs.get(key) or []
        for key in ("sources", "training", "versions", "extra"):
            if kwargs.get(key) is None:
                kwargs[key] = {}
        if kwargs.get("data") is None:
            kwargs["data"] = ""
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise ModelError(f"run.json: {exc}") from None

    @classmethod
    def read(cls, path: str | Path) -> RunSpec:
        """Read and validate ``run.json`` (bounded size, strict JSON)."""
        path = Path(path)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise ModelError(f"cannot read {path}: {exc.strerror}") from None
        if size > MAX_SPEC_BYTES:
            raise ModelError(f"{path} is {size} bytes; run descriptions are at most "
                             f"{MAX_SPEC_BYTES} bytes")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(f"{path} is not valid JSON: {exc}") from None
        except RecursionError:
            raise ModelError(f"{path} is nested too deeply") from None
        return cls.from_dict(data)
