"""HDF5 patch datasets for segmentation: one ``.h5`` file per sample (AgriFM layout).

Each file holds one array per source, ``<SOURCE>`` of shape ``(T, C, H, W)`` (e.g. ``S2``),
and an integer ``label`` of shape ``(H, W)`` (or ``(L, H, W)`` for hierarchical targets, one
map per level), on the grid of the first source. Sources may have their own grids.
Optional split lists ``train.txt`` / ``val.txt`` / ``test.txt`` hold one sample name per
line (the file stem, with or without ``.h5``). Both the flat layout (``root/*.h5`` and
``root/<split>.txt``) and AgriFM's released layout (``root/h5_samples/*.h5`` and
``root/data_list/<split>.txt``) are read.

:class:`H5PatchDataset` yields ``({source: float32 [T, C, H, W]}, int64 label)`` and opens a
file only inside ``__getitem__``, so it is safe with ``DataLoader`` worker processes.
:class:`ArrayPatchDataset` is the same in memory. :func:`compute_band_stats` gives per-band
mean/std per source over a dataset, ignoring NaN and a nodata value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cropscope.errors import DataError
from cropscope.settings import check_array_memory

__all__ = [
    "ArrayPatchDataset",
    "BandStats",
    "H5PatchDataset",
    "compute_band_stats",
    "find_h5_samples",
    "tile_sample",
    "write_h5_patches",
]

#: ``(sources, label) -> (sources, label)`` applied to each (normalised) sample
Transform = Callable[[dict[str, Any], Any], tuple[dict[str, Any], Any]]
#: one raw sample: per-source arrays ``(T, C, H, W)`` and a label ``(H, W)`` / ``(L, H, W)``
RawSample = tuple[Mapping[str, np.ndarray], np.ndarray]

_SAMPLE_DIRS = ("", "h5_samples")
_LIST_DIRS = ("", "data_list")


@dataclass
class BandStats:
    """Per-band mean and standard deviation of each source (``{source: [C]}``)."""

    mean: dict[str, np.ndarray]
    std: dict[str, np.ndarray]

    def to_dict(self) -> dict[str, dict[str, list[float]]]:
        """JSON-ready ``{"mean": {source: [...]}, "std": {...}}``."""
        return {"mean": {k: [float(v) for v in a] for k, a in self.mean.items()},
                "std": {k: [float(v) for v in a] for k, a in self.std.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Mapping[str, Sequence[float]]]) -> BandStats:
        """Inverse of :meth:`to_dict`."""
        return cls({k: np.asarray(v, np.float32) for k, v in data["mean"].items()},
                   {k: np.asarray(v, np.float32) for k, v in data["std"].items()})

    def apply(self, source: str, x: np.ndarray) -> np.ndarray:
        """``(x - mean) / std`` band-wise for ``x [T, C, H, W]`` of ``source``."""
        if source not in self.mean:
            raise DataError(f"no normalisation statistics for source {source!r} "
                            f"(have {sorted(self.mean)})")
        mean, std = self.mean[source], self.std[source]
        if len(mean) != x.shape[1]:
            raise DataError(f"normalisation statistics of {source!r} have {len(mean)} bands, "
                            f"the data {x.shape[1]}")
        safe = np.where(std > 0, std, 1.0).astype(np.float32)
        return (x - mean[None, :, None, None]) / safe[None, :, None, None]


def find_h5_samples(root: Path, split: str | None, sample_dirs: Sequence[str],
                    list_dirs: Sequence[str]) -> list[Path]:
    """The ``.h5`` sample files of ``split`` under ``root``.

    ``sample_dirs`` / ``list_dirs`` are sub-folders (``""`` = ``root``) searched in order for
    the samples and for ``<split>.txt`` (ids separated by whitespace, ``.h5`` optional). An id
    is taken from the first sample folder that has it; ``split=None`` gives every ``.h5`` file
    of the first sample folder that has any, sorted.
    """
    folders = [root / sub for sub in sample_dirs if (root / sub).is_dir()]
    if split is None:
        for d in folders:
            found = sorted(d.glob("*.h5"))
            if found:
                return found
        return []
    lists = [root / sub / f"{split}.txt" for sub in list_dirs]
    list_file = next((p for p in lists if p.is_file()), None)
    if list_file is None:
        raise DataError(f"split list {split}.txt not found in "
                        f"{', '.join(str(p.parent) for p in lists)}")
    files, missing = [], []
    for sid in list_file.read_text().split():
        name = sid if sid.endswith(".h5") else f"{sid}.h5"
        path = next((d / name for d in folders if (d / name).is_file()), None)
        if path is None:
            missing.append(name)
        else:
            files.append(path)
    if missing:
        raise DataError(f"{list_file} lists {len(missing)} missing file(s), e.g. {missing[0]} "
                        f"(looked in {', '.join(str(d) for d in folders)})")
    return files


def _check_sample(name: str, sources: Mapping[str, np.ndarray], label: np.ndarray) -> None:
    if not sources:
        raise DataError(f"{name}: no sources")
    first = next(iter(sources))
    for key, arr in sources.items():
        if arr.ndim != 4:
            raise DataError(f"{name}: source {key!r} must be (T, C, H, W), got shape "
                            f"{tuple(arr.shape)}")
    grid = tuple(sources[first].shape[-2:])
    if label.ndim not in (2, 3) or tuple(label.shape[-2:]) != grid:
        raise DataError(f"{name}: label must be (H, W) or (L, H, W) on the grid of {first!r} "
                        f"{grid}, got shape {tuple(label.shape)}")


def _to_sample(
    sources: Mapping[str, np.ndarray],
    label: np.ndarray,
    normalise: BandStats | None,
    nan_fill: float,
    transform: Transform | None,
    nodata: float | None = None,
) -> tuple[dict[str, Any], Any]:
    import torch

    out: dict[str, Any] = {}
    for key, arr in sources.items():
        x = np.asarray(arr, dtype=np.float32)
        if nodata is not None:
            x = np.where(np.asarray(arr) == nodata, np.float32(np.nan), x)
        if normalise is not None:
            x = normalise.apply(key, x)
        x = np.where(np.isfinite(x), x, np.float32(nan_fill)).astype(np.float32, copy=False)
        out[key] = torch.from_numpy(np.ascontiguousarray(x))
    y = torch.from_numpy(np.ascontiguousarray(np.asarray(label), dtype=np.int64))
    if transform is not None:
        return transform(out, y)
    return out, y


class H5PatchDataset:
    """One ``.h5`` file per sample (see the module doc); a map-style torch ``Dataset``.

    ``split`` selects the names listed in ``<split>.txt`` (``None``: every ``.h5`` file,
    sorted). Values equal to ``nodata`` become NaN; ``normalise`` standardises each band;
    NaN (before or after) becomes ``nan_fill`` (0 = the band mean after normalisation).
    ``transform(sources, label)`` runs last.
    """

    def __init__(
        self,
        root: str | Path,
        split: str | None = None,
        sources: Sequence[str] = ("S2",),
        label_key: str = "label",
        normalise: BandStats | None = None,
        transform: Transform | None = None,
        nan_fill: float = 0.0,
        nodata: float | None = None,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"H5 patch folder not found: {self.root}")
        if not sources:
            raise DataError("at least one source is needed")
        self.sources = tuple(sources)
        self.label_key = label_key
        self.normalise = normalise
        self.transform = transform
        self.nan_fill = float(nan_fill)
        self.nodata = nodata
        self.split = split
        self.files = self._find_files(split)
        if not self.files:
            raise DataError(f"no samples in {self.root}" + (f" for split {split!r}"
                                                            if split else ""))

    def _find_files(self, split: str | None) -> list[Path]:
        return find_h5_samples(self.root, split, _SAMPLE_DIRS, _LIST_DIRS)

    @property
    def names(self) -> list[str]:
        """Sample names (file stems), in dataset order."""
        return [f.stem for f in self.files]

    def __len__(self) -> int:
        return len(self.files)

    def read_raw(self, index: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The stored arrays of sample ``index``, without normalisation or transform."""
        import h5py

        path = self.files[index]
        with h5py.File(path, "r") as f:
            keys = list(f.keys())
            wanted = [*self.sources, self.label_key]
            absent = [k for k in wanted if k not in f]
            if absent:
                raise DataError(f"{path.name}: missing dataset(s) {absent}; the file has "
                                f"{keys}")
            check_array_memory([f[k] for k in wanted], f"patch file {path.name}")
            sources = {k: np.asarray(f[k][()]) for k in self.sources}
            label = np.asarray(f[self.label_key][()])
        _check_sample(path.name, sources, label)
        if not np.issubdtype(label.dtype, np.integer):
            raise DataError(f"{path.name}: label must hold integer class codes, got "
                            f"{label.dtype}")
        return sources, label

    def iter_raw(self) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
        """Every sample's stored arrays (for statistics)."""
        for i in range(len(self)):
            yield self.read_raw(i)

    def __getitem__(self, index: int) -> tuple[dict[str, Any], Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        sources, label = self.read_raw(int(index) % len(self))
        return _to_sample(sources, label, self.normalise, self.nan_fill, self.transform,
                          self.nodata)

    def __repr__(self) -> str:
        return (f"H5PatchDataset({str(self.root)!r}, split={self.split!r}, "
                f"sources={self.sources}, n={len(self)})")


class ArrayPatchDataset:
    """In-memory samples with the same output as :class:`H5PatchDataset`."""

    def __init__(
        self,
        samples: Sequence[RawSample],
        normalise: BandStats | None = None,
        transform: Transform | None = None,
        nan_fill: float = 0.0,
        nodata: float | None = None,
    ) -> None:
        self.samples = list(samples)
        if not self.samples:
            raise DataError("no samples")
        for i, (src, lab) in enumerate(self.samples):
            _check_sample(f"sample {i}", src, np.asarray(lab))
        self.sources = tuple(self.samples[0][0])
        self.normalise = normalise
        self.transform = transform
        self.nan_fill = float(nan_fill)
        self.nodata = nodata

    def __len__(self) -> int:
        return len(self.samples)

    def read_raw(self, index: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        src, lab = self.samples[index]
        return dict(src), np.asarray(lab)

    def iter_raw(self) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
        for i in range(len(self)):
            yield self.read_raw(i)

    def __getitem__(self, index: int) -> tuple[dict[str, Any], Any]:
        src, lab = self.samples[index]
        return _to_sample(src, np.asarray(lab), self.normalise, self.nan_fill, self.transform,
                          self.nodata)


def compute_band_stats(
    samples: Iterable[RawSample] | H5PatchDataset | ArrayPatchDataset,
    nodata: float | None = None,
) -> BandStats:
    """Per-source, per-band mean and (population) std over every valid value.

    NaN and ``nodata`` values are ignored. A band without any valid value gets mean 0 and
    std 1. Accumulates in float64 one sample at a time.
    """
    it = samples.iter_raw() if hasattr(samples, "iter_raw") else samples
    sums: dict[str, np.ndarray] = {}
    sq: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    n = 0
    for sources, _ in it:
        n += 1
        for key, arr in sources.items():
            x = np.asarray(arr, dtype=np.float64)
            valid = np.isfinite(x)
            if nodata is not None:
                valid &= x != nodata
            x = np.where(valid, x, 0.0)
            axes = (0, 2, 3)
            if key not in sums:
                c = x.shape[1]
                sums[key], sq[key], counts[key] = np.zeros(c), np.zeros(c), np.zeros(c)
            if x.shape[1] != len(sums[key]):
                raise DataError(f"source {key!r} has {x.shape[1]} bands in one sample and "
                                f"{len(sums[key])} in another")
            sums[key] += x.sum(axis=axes)
            sq[key] += (x * x).sum(axis=axes)
            counts[key] += valid.sum(axis=axes)
    if n == 0:
        raise DataError("no samples to compute statistics from")
    mean, std = {}, {}
    for key in sums:
        cnt = np.maximum(counts[key], 1)
        m = sums[key] / cnt
        var = np.maximum(sq[key] / cnt - m * m, 0.0)
        empty = counts[key] == 0
        m[empty], var[empty] = 0.0, 1.0
        mean[key] = m.astype(np.float32)
        std[key] = np.sqrt(var).astype(np.float32)
    return BandStats(mean, std)


def write_h5_patches(
    root: str | Path,
    samples: Mapping[str, RawSample] | Iterable[tuple[str, Mapping[str, np.ndarray], np.ndarray]],
    splits: Mapping[str, Sequence[str]] | None = None,
    label_key: str = "label",
    compression: str | None = "gzip",
) -> list[Path]:
    """Write one ``<name>.h5`` per sample into ``root`` plus ``<split>.txt`` lists.

    ``samples`` maps a name to ``(sources, label)`` (or is an iterable of
    ``(name, sources, label)``). Source arrays keep their dtype (float32 is typical; raw
    integer DN works too); labels are stored as int64. Returns the written files.
    """
    import h5py

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    items: Iterable[tuple[str, Mapping[str, np.ndarray], np.ndarray]]
    if isinstance(samples, Mapping):
        items = ((name, s, lab) for name, (s, lab) in samples.items())
    else:
        items = samples
    written: list[Path] = []
    names: set[str] = set()
    for name, sources, label in items:
        name = str(name)
        if not name or "/" in name or name in names:
            raise DataError(f"invalid or duplicate sample name {name!r}")
        label = np.asarray(label)
        arrays = {k: np.asarray(v) for k, v in sources.items()}
        _check_sample(name, arrays, label)
        if label_key in arrays:
            raise DataError(f"{name}: a source is named like the label key {label_key!r}")
        path = root / f"{name}.h5"
        tmp = root / f".{name}.h5.tmp"
        with h5py.File(tmp, "w") as f:
            for key, arr in arrays.items():
                f.create_dataset(key, data=arr, compression=compression)
            f.create_dataset(label_key, data=label.astype(np.int64), compression=compression)
        tmp.replace(path)
        names.add(name)
        written.append(path)
    for split, members in (splits or {}).items():
        unknown = [m for m in members if m not in names]
        if unknown:
            raise DataError(f"split {split!r} names unknown sample(s): {unknown[:3]}")
        (root / f"{split}.txt").write_text("".join(f"{m}\n" for m in members))
    return written


def tile_sample(
    sources: Mapping[str, np.ndarray],
    label: np.ndarray,
    size: int,
    stride: int | None = None,
) -> list[tuple[dict[str, np.ndarray], np.ndarray]]:
    """Cut a scene (sources ``(T, C, H, W)`` on one grid, label ``(H, W)``/``(L, H, W)``)
    into ``size x size`` tiles every ``stride`` pixels (default ``size``).

    The last row/column of tiles is aligned to the far edge, so the whole scene is covered
    (tiles may overlap there). Every source must share the label's grid.
    """
    label = np.asarray(label)
    h, w = label.shape[-2:]
    for key, arr in sources.items():
        if tuple(arr.shape[-2:]) != (h, w):
            raise DataError(f"source {key!r} grid {tuple(arr.shape[-2:])} differs from the "
                            f"label grid {(h, w)}; resample it first")
    stride = size if stride is None else int(stride)
    if size < 1 or stride < 1 or size > min(h, w):
        raise DataError(f"tile size {size} / stride {stride} do not fit a {h} x {w} scene")

    def starts(n: int) -> list[int]:
        out = list(range(0, n - size + 1, stride))
        if out[-1] != n - size:
            out.append(n - size)
        return out

    tiles = []
    for r in starts(h):
        for c in starts(w):
            tiles.append(({k: np.ascontiguousarray(a[..., r:r + size, c:c + size])
                           for k, a in sources.items()},
                          np.ascontiguousarray(label[..., r:r + size, c:c + size])))
    return tiles
