"""H2Crop-format samples built from the real EnMAP Potsdam tiles (``enmap-potsdam``).

The H2Crop data themselves (France, 16,344 samples) cannot be reached from here. The only
real EnMAP data at hand are 18 tiles of 32 x 32 px (30 m, 224 bands) of one L2A scene over
Potsdam, **acquired on 24 July 2022**, with 6 land-cover classes (0 = unlabelled; see the
data folder's ``SOURCE.md``). :func:`build_h2crop_from_enmap` turns each tile into one sample
of the H2Crop layout (:mod:`cropscope.data.readers.h2crop`), so the H2Crop reader and models
run on real hyperspectral input:

- ``EnMAP`` ``(218, 32, 32)`` int16: the 218 good bands (the 6 no-data bands 130-135,
  flagged in the files, are dropped), reflectance x 10,000, i.e. the stored DN.
- ``S2`` ``(months, 10, 96, 96)`` int16: bands B2, B3, B4, B5, B6, B7, B8, B8A, B11, B12
  *simulated* from the tile (:func:`~cropscope.hyperspectral.simulate_sentinel2`),
  reflectance x 10,000, upsampled by ``upscale`` with **nearest** neighbour (each EnMAP
  pixel becomes ``upscale x upscale`` identical S2 pixels, so the grids stay aligned as in
  H2Crop, where 1 EnMAP pixel = 3 x 3 S2 pixels). There is only this one acquisition: the
  same image fills every monthly slot, so the time series carries no temporal information.
- ``label`` ``(4, 96, 96)`` uint8, nearest-upsampled, from :func:`potsdam_taxonomy`: level 1
  ``sealed`` (1), ``vegetated`` (2), ``other`` (3); levels 2-4 the six classes under their
  tile numbers (1 roof, 2 pavement, 3 low_vegetation, 4 tree, 5 soil, 6 water). These are
  land-cover, not crop classes; the names are inferred (see ``SOURCE.md``).
- no ``prior``: there is no previous year.

Split lists come from the shipped tile lists (train 14, ``validation`` -> ``val`` 2, test 2);
``taxonomy.json`` describes the levels (read it with
:func:`cropscope.taxonomy.sources.read_taxonomy`; class numbers on disk are the codes).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cropscope.errors import DataError
from cropscope.taxonomy.tree import Node, Taxonomy

__all__ = ["POTSDAM_CLASSES", "POTSDAM_LEVEL1", "build_h2crop_from_enmap", "potsdam_taxonomy"]

#: tile label number -> class name (levels 2-4)
POTSDAM_CLASSES: dict[int, str] = {1: "roof", 2: "pavement", 3: "low_vegetation", 4: "tree",
                                   5: "soil", 6: "water"}
#: level-1 group number -> (name, tile label numbers in it)
POTSDAM_LEVEL1: dict[int, tuple[str, tuple[int, ...]]] = {
    1: ("sealed", (1, 2)),
    2: ("vegetated", (3, 4)),
    3: ("other", (5, 6)),
}
_ROLE_TO_SPLIT = {"train": "train", "validation": "val", "test": "test"}
_N_GOOD_BANDS = 218


def potsdam_taxonomy() -> Taxonomy:
    """The four-level land-cover tree of the Potsdam samples; codes are the numbers stored
    in the label rasters (``"1"``, ``"2"``, ...; 0 = unlabelled is not a node)."""
    nodes = [Node(0, str(g), name) for g, (name, _) in POTSDAM_LEVEL1.items()]
    parent = {c: str(g) for g, (_, members) in POTSDAM_LEVEL1.items() for c in members}
    for level in (1, 2, 3):
        for c, name in POTSDAM_CLASSES.items():
            nodes.append(Node(level, str(c), name, parent[c] if level == 1 else str(c)))
    return Taxonomy(nodes, ["level1", "level2", "level3", "level4"], name="enmap-potsdam-h2crop")


def _level_lookup() -> np.ndarray:
    """``[7, 4]``: tile label number -> class number on each of the four levels."""
    table = np.zeros((len(POTSDAM_CLASSES) + 1, 4), dtype=np.int64)
    for g, (_, members) in POTSDAM_LEVEL1.items():
        for c in members:
            table[c] = (g, c, c, c)
    return table


def build_h2crop_from_enmap(
    out_root: str | Path,
    data_root: str | Path | None = None,
    *,
    months: int = 12,
    upscale: int = 3,
    keys: str = "readme",
) -> Path:
    """Write the 18 Potsdam tiles as H2Crop samples into ``out_root`` (see the module doc)
    and return it.

    ``data_root`` is the data directory holding ``hyperspectral/enmap_potsdam_tiles``
    (default: :func:`cropscope.settings.data_dir`); nothing is downloaded. ``keys`` picks the
    README (``"readme"``) or code (``"code"``) HDF5 key and list-folder spelling. Sample ids
    are the tile stems (``enmap_potsdam_tile_128_0``).
    """
    from cropscope.data.readers.h2crop import write_h2crop_sample, write_split_lists
    from cropscope.hyperspectral.datasets import _EP_DIR, _tile_lists, get_scene_dataset
    from cropscope.hyperspectral.readers import open_hyperspectral, open_labels
    from cropscope.hyperspectral.sentinel2 import DEFAULT_BANDS, simulate_sentinel2
    from cropscope.hyperspectral.spectral import drop_bad_bands
    from cropscope.remote import locate_files
    from cropscope.taxonomy.sources import write_taxonomy

    if months < 1 or upscale < 1:
        raise DataError(f"months and upscale must be positive, got {months} and {upscale}")
    if keys not in ("readme", "code"):
        raise DataError(f"keys must be 'readme' or 'code', got {keys!r}")
    spec = get_scene_dataset("enmap-potsdam")
    folder = locate_files("enmap-potsdam", spec.files, data_root, download=False) / _EP_DIR
    roles = _tile_lists(folder)
    lookup = _level_lookup()
    out_root = Path(out_root)
    lists: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for name in sorted(roles):
        scene = open_hyperspectral(folder / "images" / name)
        good = drop_bad_bands(scene, windows=(), max_wavelength=None)  # the file's flags only
        if good.sizes["band"] != _N_GOOD_BANDS or not np.isfinite(good.values).all():
            raise DataError(f"{name}: expected {_N_GOOD_BANDS} finite good bands, got "
                            f"{good.sizes['band']} (dropped {good.attrs.get('dropped_bands')})")
        s2 = simulate_sentinel2(scene, DEFAULT_BANDS)
        if not np.isfinite(s2.values).all():
            raise DataError(f"{name}: the simulated Sentinel-2 bands hold NaN")
        labels = np.asarray(open_labels(folder / "labels" / name).values)
        if labels.shape != scene.shape[1:] or labels.min() < 0 or labels.max() >= len(lookup):
            raise DataError(f"{name}: label tile of shape {labels.shape} with values "
                            f"{labels.min()}..{labels.max()}; expected {scene.shape[1:]} "
                            f"and 0..{len(lookup) - 1}")

        def up(a: np.ndarray) -> np.ndarray:
            return np.repeat(np.repeat(a, upscale, axis=-2), upscale, axis=-1)

        s2_dn = up(np.rint(s2.values * 10_000))
        sid = Path(name).stem
        write_h2crop_sample(
            out_root / "h5_data" / f"{sid}.h5",
            np.broadcast_to(s2_dn, (months, *s2_dn.shape)),
            np.rint(good.values * 10_000),
            label=up(lookup[labels].transpose(2, 0, 1)),
            keys=keys,
            attrs={"source": f"EnMAP L2A Potsdam tile {name}",
                   "acquisition": "2022-07-24",
                   "S2": f"simulated from EnMAP, nearest-upsampled x{upscale}, the one "
                         f"acquisition repeated for {months} months",
                   "EnMAP_wavelength_nm": np.asarray(good["wavelength"].values, np.float64)},
        )
        lists[_ROLE_TO_SPLIT[roles[name]]].append(sid)
    write_split_lists(out_root, lists, spelling=keys)
    write_taxonomy(potsdam_taxonomy(), out_root / "taxonomy.json")
    (out_root / "SOURCE.json").write_text(json.dumps({
        "built_by": "cropscope.hyperspectral.to_h2crop.build_h2crop_from_enmap",
        "source": str(folder),
        "acquisition": "2022-07-24 (one EnMAP L2A scene; the S2 months are copies)",
        "months": months, "upscale": upscale, "keys": keys,
        "classes": {"level1": {str(g): n for g, (n, _) in POTSDAM_LEVEL1.items()},
                    "level2-4": {str(c): n for c, n in POTSDAM_CLASSES.items()},
                    "0": "unlabelled"},
    }, indent=1))
    return out_root
