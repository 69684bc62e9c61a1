"""Registered hyperspectral *scene* datasets (labelled images, not sample tables).

Same conventions as :mod:`cropscope.data.registry` — public origin (URL at a pinned commit,
SHA-256), files under the local data directory (:func:`cropscope.settings.data_dir`) or
the download cache, checksum-verified downloads — but a scene dataset loads as a
:class:`~cropscope.hyperspectral.scene.Scene`.

- ``indian-pines-window``: AVIRIS Indian Pines (1992), the 85 x 70 px window (rows 30-114,
  cols 25-94 of the 145 x 145 scene) with 4 crop classes, 200 corrected bands.
- ``enmap-potsdam``: 18 EnMAP L2A tiles (32 x 32 px, 218 good of 224 bands) placed on their
  330 x 200 px scene grid, 6 land-cover classes, with the shipped tile-disjoint
  train/validation/test lists (14/2/2 tiles; split ``tiles``).
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cropscope.data.registry import DatasetSpec, get_dataset, list_datasets, register_dataset
from cropscope.errors import DataError, DatasetNotFoundError
from cropscope.hyperspectral.scene import Scene, open_scene
from cropscope.remote import RemoteFile, locate_files

__all__ = [
    "get_scene_dataset",
    "is_scene_dataset",
    "list_scene_datasets",
    "load_scene_dataset",
    "load_scene_input",
]


def _scenes() -> list[DatasetSpec]:
    return [spec for spec in list_datasets() if spec.kind == "scene"]


def list_scene_datasets() -> list[DatasetSpec]:
    """All registered scene datasets, sorted by name."""
    return _scenes()


def is_scene_dataset(name: str) -> bool:
    return name in {spec.name for spec in _scenes()}


def get_scene_dataset(name: str) -> DatasetSpec:
    if not is_scene_dataset(name):
        raise DatasetNotFoundError(
            f"unknown scene dataset {name!r}; registered scenes: "
            f"{', '.join(spec.name for spec in _scenes())}"
        )
    return get_dataset(name)


def load_scene_dataset(name: str, root: str | Path | None = None, download: bool = True,
                       progress: bool = True) -> Scene:
    """Load a registered scene from ``root``, the data directory or the download cache
    (missing files are downloaded and SHA-256-checked when ``download``; see
    :func:`cropscope.remote.locate_files`)."""
    spec = get_scene_dataset(name)
    return spec.reader(locate_files(name, spec.files, root, download, progress), None)


def load_scene_input(
    dataset: str | None,
    scene: str | Path | None,
    labels: str | Path | None,
    other: Any = None,
) -> Scene | None:
    """The scene named on a command line: ``--scene IMAGE --labels LABELS`` or a registered
    scene dataset; ``None`` when the input is not a scene (``other``: a competing input)."""
    if scene is None and labels is None:
        if dataset is None or not is_scene_dataset(dataset):
            return None
        if other is not None:
            raise DataError("use either a scene dataset or a table, not both")
        return load_scene_dataset(dataset)
    if scene is None or labels is None:
        raise DataError("--scene and --labels go together")
    if dataset is not None or other is not None:
        raise DataError("use either --scene/--labels or --dataset/--table")
    return open_scene(scene, labels)


def _scene(name: str, loader: Callable[[Path], Scene], **fields: Any) -> None:
    register_dataset(
        DatasetSpec(name=name, reader=lambda root, split: loader(root), kind="scene", **fields),
        replace=True,
    )


# ---------------------------------------------------------------------------- loaders
_IP_DIR = "hyperspectral/indian_pines_subset"
_IP_CLASSES = {1: "corn-notill", 2: "grass-trees", 3: "soybean-notill", 4: "soybean-mintill"}


def _load_indian_pines(root: Path) -> Scene:
    from cropscope.hyperspectral.readers import open_hyperspectral, open_labels

    folder = root / _IP_DIR
    mat = folder / "Indian_part.mat"
    image = open_hyperspectral(f"{mat}:X", wavelengths=folder / "wavelengths_200_derived.csv")
    labels = open_labels(f"{mat}:grd")
    return Scene.from_dataarrays(image, labels, classes=_IP_CLASSES, name="indian-pines-window")


_EP_DIR = "hyperspectral/enmap_potsdam_tiles"
_EP_CLASSES = {1: "roof", 2: "pavement", 3: "low vegetation", 4: "tree", 5: "soil", 6: "water"}
_EP_ROLES = {"train_files.csv": "train", "validation_files.csv": "validation",
             "test_files.csv": "test"}


def _tile_lists(folder: Path) -> dict[str, str]:
    """Tile file name → role, from the shipped CSV lists (column ``image``)."""
    roles: dict[str, str] = {}
    for csv_name, role in _EP_ROLES.items():
        with (folder / csv_name).open(newline="") as fh:
            for row in csv.DictReader(fh):
                roles[Path(row["image"]).name] = role
    return roles


def _load_enmap_potsdam(root: Path) -> Scene:
    """Tiles placed on the scene grid by their geotransform; ``regions`` = tile index."""
    from cropscope.hyperspectral.readers import open_hyperspectral, open_labels

    folder = root / _EP_DIR
    roles = _tile_lists(folder)
    names = sorted(roles)
    tiles = [open_hyperspectral(folder / "images" / n) for n in names]
    labels = [open_labels(folder / "labels" / n) for n in names]
    res = [float(t.attrs["transform"][0]) for t in tiles]
    x0 = [float(t.attrs["transform"][2]) for t in tiles]
    y0 = [float(t.attrs["transform"][5]) for t in tiles]
    cols = [round((x - min(x0)) / res[0]) for x in x0]
    rows = [round((max(y0) - y) / res[0]) for y in y0]
    k, th, tw = tiles[0].shape
    h = max(r + t.shape[1] for r, t in zip(rows, tiles, strict=True))
    w = max(c + t.shape[2] for c, t in zip(cols, tiles, strict=True))
    image = np.full((k, h, w), np.nan, dtype=np.float32)
    lab = np.zeros((h, w), dtype=np.int32)
    regions = np.full((h, w), -1, dtype=np.int32)
    for i, (t, lb, r, c) in enumerate(zip(tiles, labels, rows, cols, strict=True)):
        if t.shape != (k, th, tw):
            raise DataError(f"tile {names[i]} has shape {t.shape}, expected {(k, th, tw)}")
        image[:, r : r + th, c : c + tw] = t.values
        lab[r : r + th, c : c + tw] = lb.values
        regions[r : r + th, c : c + tw] = i
    import xarray as xr

    mosaic = xr.DataArray(image, dims=("band", "y", "x"),
                          coords={k2: ("band", tiles[0][k2].values)
                                  for k2 in ("wavelength", "fwhm", "bad_band")})
    scene = Scene.from_dataarrays(mosaic, xr.DataArray(lab, dims=("y", "x")),
                                  classes=_EP_CLASSES, name="enmap-potsdam")
    scene.regions = regions
    scene.region_names = names
    scene.region_roles = {i: roles[n] for i, n in enumerate(names)}
    return scene


# ---------------------------------------------------------------------------- built-ins
_IP_URL = ("https://raw.githubusercontent.com/shaog1314/HSI_clustering/"
           "3c3cda4cfd20fb061d4718fc513f64b5f09bd1ce/Sketch_ssc_tv/Indian_part.mat")
_scene(
    "indian-pines-window",
    _load_indian_pines,
    description=("AVIRIS Indian Pines 1992, 85x70 px window, 200 bands, 4 crop classes "
                 "(4,391 labelled px)"),
    files=[
        RemoteFile(f"{_IP_DIR}/Indian_part.mat", _IP_URL,
                   "c9a11992bd0c0c6c445004defc96ce54c9ea129de0c384878f4823ea6f1c6b3f", 1_649_770),
        # derived from 92AV3C.spc (SPy sample data) minus the water bands: no public URL
        RemoteFile(f"{_IP_DIR}/wavelengths_200_derived.csv", "",
                   "478bb15ec088f5048fec512cb5043b4cdc82c0f1de891e13089b63871884d0d5"),
    ],
    splits=("blocks:16", "blocks:B[:random[:F]]"),
    citation=("Baumgardner, Biehl & Landgrebe (2015) 220 Band AVIRIS Hyperspectral Image Data "
              "Set: June 12, 1992 Indian Pine Test Site 3, Purdue University Research "
              "Repository, doi:10.4231/R7RX991C; window by Huang et al. (2020) Remote Sens. "
              "12(5):775"),
    license="no licence stated in shaog1314/HSI_clustering; cite the Purdue data set",
)

_EP_COMMIT = "f9e8f486c9614813410cc9d715bb056e6ad3cfd5"
_EP_URL = (f"https://raw.githubusercontent.com/EnMAP-Box/enmap-box/{_EP_COMMIT}/tests/testdata/"
           "external/specdeepmap/test_requierments/{}")
_EP_FILES = {
    "train_files.csv": "ae80404cfd8cecd71f5532032ed9f41870b9dc13e49ae616a4bf28d9bdc2cf79",
    "validation_files.csv": "a4ba6e56bbfe1a4f94a299c17e9beebc246ff7ec4ae2804f7fdc0f6db64a10b7",
    "test_files.csv": "4dc101e5872a49e865b84f357371fb2028d7eca05f6e0e1be278f1d0d5b48f36",
}
_EP_TILES = {
    "128_0": ("b3188eabb94fb40cc6e5ad0ec6b3a03983d188e6736ada84e90080fbcd6d4271",
              "6f7945743ab1af207b9dd01108d5eda13c4518955e453f5b2e2197dde9a5b962"),
    "128_128": ("8369cba48345c7de8a8b3e0e91ad04a09a620b09332277aa7aeb5e26954a40a1",
                "db3e8063e2177e304fad8fb52e197e623e68afb1c99ff52d4113cb2c85190c4c"),
    "128_32": ("cb662f139c8681cc909a33b484a2ff4e5b244b529760b7959a79cef0ba1c7324",
               "580c6d395b3b01ae8431f91d40703122ac17573d8fc1a2c7bad0bf7592018929"),
    "128_96": ("70de0e0802e5ec8b499152c757ac1ee8458d0bd797385bd04517a6737a5131db",
               "96423daf011a77b2c2bd5d04ac80b17cffbcc3b87059ce76a62c1d73773fbf07"),
    "160_128": ("cbb1a12389f027e1f84ccbd5aa65f56c8ea316f5a84a4744697c9100dbc11126",
                "b38560b7369b2b033188be45f885deab110d8d7a1598b423ff19dbb48a4aa222"),
    "160_160": ("0ef0ff714b8eff3eff8e8190434eae635c58a920c2f9d9b4dab48d67d3127f1a",
                "2d0b765aa70250624f1b816b76fc2fd32837557df0bc81d091b4e74f4cb86307"),
    "160_64": ("824f4f50d26b547fe7bd52ca93068e64b44ddcf4f45edab9b020794a42f7d473",
               "7f4248f2116a8571cb79a6f3bcd5eca8e325a5c92c574cf19169a4d0ce01a65b"),
    "160_96": ("927cfebba1ed915397f72caae4e59befc27909cec918550ff484b700f3f9d6c7",
               "c42b0680cd0947f2caa867e6c6721abb1a70d4aa08824558a82c81eea77b34e5"),
    "192_128": ("372ee82f2551d9746fc2dd7530c4acd6deea06d90883db5e7f3607ed72d97534",
                "c49a76b7eb31ccb5b05bd9491cb4e5fd5850fd533bc3715c5c13d5e8a5aaeed1"),
    "192_160": ("932009ec1fc3deddb52c3fb6cccc9be0c643cc9a860486af465251db6386b101",
                "40dfb1a13dd2fe7f0230d64f7d6076ad3bf5097b6689192d6cf7b403a8e0d1c6"),
    "192_64": ("fd7fc05826f24bcaf65bc04cc999021566746f47ddd6f30a586f6aed5b17c1ee",
               "0158973f2a6d636d4fd3010f791c7be07ffdf95dad7f7404ec25eba57b81fa34"),
    "192_96": ("69fd852b038d23ba811ca7927954567be85cb1381d3ca5479568484d560866e2",
               "f582744a96b853de76ce98621cbbed2e130bce803ed79701d11724a69660b662"),
    "64_0": ("74e475a6abd6529919c84272f2d1f24480a96aa8b817de750723c5a1b3332578",
             "3747e02de21be8f4e44c684cf6a18cdfa0c4400ca732e757d1660215d4b1b936"),
    "64_32": ("ca8766e3f118fa39eb2322bb7e9a5ae4b762d3712424bfb689aeb31f639a867f",
              "bbc57b0c8250c1b9f8ef526fd3e6aa8b39b5a392d663129620764c991b3431ff"),
    "96_0": ("4ea4617a16eb9d84dfb80b70adbd5b36b59217d9f3b72ad3993ac9b0337e38ac",
             "f9607d4b8897517bf22347b10cd102200fe22838aa9596d522558791a3a05950"),
    "96_128": ("17b077c2926b0992f4605a747810256679a5abd7b068eb30424143d2199b30df",
               "4572f676fa6bb06ab17ded35b92a205eb8130416cbe545d4496e6074bb51b455"),
    "96_32": ("b490a51ff87ab4bda7e5757c78c2919140edb142c0c184b247b51c964577b229",
              "be04a1916f12fe3cfdb7ad5ee53f2f71f6b1b63ae2a767af622c5110b44736e3"),
    "96_96": ("e3d12471a31336c41f43ac53fdfb9aa857309b5d5106275d523556977d2bb9b6",
              "2c9072699db093825d1062ebc534499f6beaf2d319d9bdf9ed295fd517bf0fc2"),
}
_EP_FILES.update({f"{kind}/enmap_potsdam_tile_{tile}.tif": sha
                  for tile, shas in _EP_TILES.items()
                  for kind, sha in zip(("images", "labels"), shas, strict=True)})
_scene(
    "enmap-potsdam",
    _load_enmap_potsdam,
    description=("EnMAP L2A Potsdam 2022-07-24: 18 tiles of 32x32 px on a 330x200 grid, 218 "
                 "good bands, 6 land-cover classes (inferred names), tile split 14/2/2"),
    files=[RemoteFile(f"{_EP_DIR}/{path}", _EP_URL.format(path), sha)
           for path, sha in _EP_FILES.items()],
    splits=("tiles", "blocks:B[:random[:F]]"),
    citation=("EnMAP L2A scene DT0000001867 (DLR, 2022); SpecDeepMap test data of the EnMAP-Box "
              f"(EnMAP-Box/enmap-box@{_EP_COMMIT[:8]}); labels from LGB aerial imagery (2019)"),
    license="GPL-3.0 (enmap-box repository)",
)
