"""Dataset registry: name -> public origin (URL at a pinned commit, SHA-256) + reader.

Files are looked up under the local data directory (:func:`cropscope.settings.data_dir`,
``$CROPSCOPE_DATA_DIR``) and then in the download cache ``~/.cache/cropscope/data``. Missing
files are downloaded (checksum-verified) into the data directory, or into the cache when
the data directory is read-only. Readers are imported only when a dataset is loaded, so
importing this module stays light.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any

from cropscope.data.timeseries import TimeSeriesSet
from cropscope.errors import DataError, DatasetNotFoundError
from cropscope.remote import RemoteFile, Status, cache_dir, files_status, locate_files, search_roots
from cropscope.taxonomy.sources import builtin_taxonomy

__all__ = [
    "DatasetSpec",
    "LazyReader",
    "RemoteFile",
    "cache_dir",
    "dataset_status",
    "get_dataset",
    "list_datasets",
    "load_dataset",
    "locate_files",
    "register_dataset",
    "unregister_dataset",
]


@dataclass(frozen=True)
class LazyReader:
    """A reader ``(root, split) -> TimeSeriesSet`` imported on first call.

    Calls ``module.function(root / path)`` — or ``module.function(root / path, split)``
    when ``with_split`` is true.
    """

    module: str
    function: str
    path: str
    with_split: bool = False

    def __call__(self, root: Path, split: str | None) -> TimeSeriesSet:
        func = getattr(import_module(self.module), self.function)
        target = Path(root) / self.path
        return func(target, split) if self.with_split else func(target)


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: its files with their origin, and how to read them.

    ``kind`` is ``"samples"`` (the reader returns a :class:`TimeSeriesSet`) or ``"scene"``
    (a labelled hyperspectral image, :func:`cropscope.hyperspectral.datasets.load_scene_dataset`).
    """

    name: str
    description: str
    files: list[RemoteFile]
    reader: Callable[[Path, str | None], Any]
    splits: tuple[str, ...] = ()
    citation: str = ""
    license: str = ""
    #: name of the class hierarchy shipped for it (:func:`cropscope.taxonomy.builtin_taxonomy`)
    taxonomy: str | None = None
    kind: str = "samples"


_REGISTRY: dict[str, DatasetSpec] = {}
#: modules registering more built-in datasets, imported on first lookup (keeps imports light)
_BUILTIN_MODULES = ("cropscope.hyperspectral.datasets",)
_builtins_loaded = False


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        for module in _BUILTIN_MODULES:
            import_module(module)


def register_dataset(spec: DatasetSpec, replace: bool = False) -> DatasetSpec:
    """Add a dataset to the registry (``replace=True`` to overwrite an existing name)."""
    if spec.name in _REGISTRY and not replace:
        raise DataError(f"a dataset named {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def unregister_dataset(name: str) -> None:
    """Remove a dataset from the registry (no error if absent)."""
    _REGISTRY.pop(name, None)


def list_datasets() -> list[DatasetSpec]:
    """All registered datasets, sorted by name."""
    _load_builtins()
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]


def get_dataset(name: str) -> DatasetSpec:
    """The spec registered under ``name``."""
    if name not in _REGISTRY:
        _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise DatasetNotFoundError(
            f"unknown dataset {name!r}; registered datasets: {', '.join(sorted(_REGISTRY))}"
        ) from None


def dataset_status(name: str, root: str | Path | None = None, verify: bool = False) -> Status:
    """``"local"`` when every file is present (in ``root``, or in the data directory or the
    download cache), ``"missing"`` when one is absent, ``"corrupt"`` when one has the wrong
    size (or, with ``verify=True``, the wrong SHA-256)."""
    spec = get_dataset(name)
    states = [files_status(r, spec.files, verify) for r in search_roots(root)]
    if "local" in states:
        return "local"
    return "corrupt" if "corrupt" in states else "missing"


def load_dataset(
    name: str,
    split: str | None = None,
    root: str | Path | None = None,
    download: bool = True,
    progress: bool = True,
    hierarchical: bool = False,
) -> TimeSeriesSet:
    """Load a registered dataset as a :class:`TimeSeriesSet`.

    Files are read from ``root`` if given, else from the data directory
    (``$CROPSCOPE_DATA_DIR``) or the download cache ``~/.cache/cropscope/data``. With
    ``download=True`` missing files are fetched and SHA-256-checked into ``root`` or the
    data directory, or into the cache when that directory is read-only.
    ``hierarchical=True`` attaches the class hierarchy shipped for the dataset (restricted to
    the classes it has), giving per-level labels.
    """
    spec = get_dataset(name)
    if spec.kind != "samples":
        raise DataError(
            f"dataset {name!r} is a {spec.kind}, not samples; load it with "
            "cropscope.hyperspectral.datasets.load_scene_dataset (cropscope train, evaluate and "
            "tune take it with --dataset)"
        )
    if hierarchical and spec.taxonomy is None:
        raise DataError(f"no class hierarchy is shipped for dataset {name!r}; give one")
    if split is not None and split not in spec.splits:
        choices = f"one of {list(spec.splits)} or None" if spec.splits else "None (no splits)"
        raise DataError(f"dataset {name!r} has no split {split!r}; choose {choices}")
    folder = locate_files(name, spec.files, root, download, progress)
    ts = spec.reader(folder, split)
    if hierarchical:
        tax = builtin_taxonomy(str(spec.taxonomy))
        ts = ts.with_taxonomy(tax.subtree(ts.classes))
    return ts


# ---------------------------------------------------------------------------- built-ins
_SITS_URL = "https://raw.githubusercontent.com/e-sensing/sits/{commit}/data/{name}.rda"
_SITS_CITATION = (
    "Picoli, M.C.A. et al. (2018) Big earth observation time series analysis for monitoring "
    "Brazilian agriculture. ISPRS J. Photogramm. Remote Sens. 145:328-339, "
    "doi:10.1016/j.isprsjprs.2018.08.007; samples from the R package sits (e-sensing/sits, "
    "INPE)."
)
_SITS_LICENSE = "GPL-2 (shipped in the sits R package; no separate data licence stated)"

_SITS = [
    (
        "sits-matogrosso",
        "samples_mt_9classes",
        "8534ba25c3e346215d8b2d4707eb7724be7ddf7e",
        "e526c46144ac7febd5eea3026c7c55f6ee4ae4e54962c1cecbbfd33a202e4cf5",
        591_968,
        "MODIS MOD13Q1 pixel series, Mato Grosso (BR): 2115 samples x 23 steps x 6 bands "
        "(mir, blue, nir, red, evi, ndvi), 9 classes",
    ),
    (
        "sits-matogrosso-4bands",
        "samples_mt_4bands",
        "27ccfcfdbd0e45670518b22f42dcfcd26efa4072",
        "9a9d23f33c416c80881f303b8364fccff9c31143831da038c47e1dd0af8a4bd1",
        542_239,
        "MODIS MOD13Q1 pixel series, Mato Grosso (BR): 1892 samples x 23 steps x 4 bands "
        "(NDVI, EVI, NIR, MIR), 9 classes",
    ),
    (
        "sits-matogrosso-ndvi",
        "samples_modis_ndvi",
        "9f277feffb290cd73097472e0105eb1d988ac41c",
        "e18bc113fd38f528b4f5645698889dda91e1d4c417a74ec742ab11fe3314ee7c",
        71_470,
        "MODIS MOD13Q1 NDVI pixel series, Mato Grosso (BR): 1218 samples x 12 monthly steps, "
        "4 classes",
    ),
]

for _name, _file, _commit, _sha, _size, _desc in _SITS:
    _path = f"sits_matogrosso/original/{_file}.rda"
    register_dataset(
        DatasetSpec(
            name=_name,
            description=_desc,
            files=[RemoteFile(_path, _SITS_URL.format(commit=_commit, name=_file), _sha, _size)],
            taxonomy="sits-matogrosso",
            reader=LazyReader("cropscope.data.readers.sits", "read_sits_rda", _path),
            citation=_SITS_CITATION,
            license=_SITS_LICENSE,
        )
    )

_TEMPCNN_URL = (
    "https://raw.githubusercontent.com/charlotte-pel/temporalCNN/"
    "d081da2f6eef19f36b5517549eab3bbbedd18598/{}"
)
register_dataset(
    DatasetSpec(
        name="tempcnn-formosat2",
        taxonomy="tempcnn-formosat2",
        description=(
            "Formosat-2 pixel series near Toulouse (FR), TempCNN example subsample: "
            "260 train / 260 test (polygon-disjoint) x 149 steps x 3 bands (NIR, R, G), "
            "13 classes"
        ),
        files=[
            RemoteFile(
                "tempcnn_formosat2/train_dataset.csv",
                _TEMPCNN_URL.format("example/train_dataset.csv"),
                "06936ce3cb79666403fbc2dbe55dfe6af766864bd6a145a19159100b600f3fa1",
                918_073,
            ),
            RemoteFile(
                "tempcnn_formosat2/test_dataset.csv",
                _TEMPCNN_URL.format("example/test_dataset.csv"),
                "414c4d7eab67f680ce2d81138d92bdfe2c0c5f8644da6d6a08399deb05eb9328",
                920_589,
            ),
            RemoteFile(
                "tempcnn_formosat2/class_map.txt",
                _TEMPCNN_URL.format("map/class_map.txt"),
                "a6068be38b3ef860bbe73e2e992cd076b9be8d84b16995fc3653bab853d4e928",
                246,
            ),
        ],
        reader=LazyReader(
            "cropscope.data.readers.tempcnn", "read_tempcnn_dir", "tempcnn_formosat2", True
        ),
        splits=("train", "test"),
        citation=(
            "Pelletier, C., Webb, G.I., Petitjean, F. (2019) Temporal Convolutional Neural "
            "Network for the Classification of Satellite Image Time Series. Remote Sensing "
            "11(5):523, doi:10.3390/rs11050523"
        ),
        license="GPL-3.0 (charlotte-pel/temporalCNN repository)",
    )
)

register_dataset(
    DatasetSpec(
        name="ucr-crop",
        taxonomy="ucr-crop",
        description=(
            "UCR 'Crop' (Formosat-2 NDVI-like pixel series): TRAIN split, 7200 series x 46 "
            "steps, 24 classes"
        ),
        files=[
            RemoteFile(
                "ucr_crop/Crop_TRAIN.tsv",
                "https://raw.githubusercontent.com/femartip/XAI_time_series/"
                "1c73cd7bc47a72e33579934ced3ce907d47a7841/data/Crop/Crop_TRAIN.tsv",
                "43977038db988d19341a476e1124978c837e6e1cbf48a4dd254622cf3dc058bf",
                2_052_087,
            )
        ],
        reader=LazyReader("cropscope.data.readers.ucr", "read_ucr_crop", "ucr_crop/Crop_TRAIN.tsv"),
        splits=("train",),
        citation=(
            "Dau, H.A. et al. (2019) The UCR Time Series Archive. IEEE/CAA J. Autom. Sinica "
            "6(6), arXiv:1810.07758; data from Tan, Webb & Petitjean (2017), SDM"
        ),
        license="no explicit licence; the UCR archive asks users to cite Dau et al. (2019)",
    )
)
