"""The H2Crop dataset layout: hierarchical crop labels for Sentinel-2 time series + EnMAP.

On disk (README of flyakon/H2Crop)::

    root/
      data_lists/ train.txt  val.txt  test.txt     (the code reads ``data_list/`` instead)
      h5_data/    sample_001.h5  sample_002.h5 ...

Split lists hold whitespace-separated sample ids (with or without ``.h5``); they are looked
for in ``root/data_lists``, ``root/data_list`` and ``root`` itself, and the samples in
``root/h5_data`` and ``root``. One HDF5 file per sample holds:

=========  ==========================  ======  =========================================
README     code (``h2crop_dataset``)   dtype   shape
=========  ==========================  ======  =========================================
``S2``     ``S2_data``                 int16   ``(12, 10, 192, 192)`` months, bands, y, x
``EnMAP``  ``EnMAP_data``              int16   ``(218, 64, 64)`` bands, y, x
``label``  ``label``                   uint8   ``(4, 192, 192)`` levels 1..4
``prior``  ``priors``                  uint8   ``(4, 192, 192)`` last year's labels
=========  ==========================  ======  =========================================

The README and the loader disagree on the key names (and on the list folder); both
spellings are read. Class 0 is background (outside any parcel) on every level, so the
models have 7, 37, 83 and 102 outputs (:data:`H2CROP_LEVEL_SIZES`). One EnMAP pixel covers
3 x 3 Sentinel-2 pixels. Experiments use the first 6, 8, 10 or 12 months (Jan-Jun ... Jan-Dec,
:data:`H2CROP_MONTHS`).

:class:`H2CropDataset` reads the layout as a map-style torch ``Dataset``;
:func:`write_h2crop_sample` and :func:`write_split_lists` write it; :func:`generate_h2crop`
writes a small, learnable synthetic copy. The real dataset (16,344 samples,
``https://glass.hku.hk/casual/H2Crop/``) is not reachable from here, so this module is tested
on generated files only.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cropscope.data.readers.h5patches import BandStats, compute_band_stats, find_h5_samples
from cropscope.errors import DataError
from cropscope.settings import check_array_memory

if TYPE_CHECKING:
    from cropscope.taxonomy.tree import Taxonomy

__all__ = [
    "H2CROP_LEVEL_SIZES",
    "H2CROP_MONTHS",
    "H2CROP_NORMALISATION",
    "H2CROP_S2_BANDS",
    "H2CropDataset",
    "default_h2crop_taxonomy",
    "generate_h2crop",
    "h2crop_band_stats",
    "h2crop_class_signatures",
    "h2crop_level_ids",
    "read_level_sizes",
    "sample_contents",
    "write_h2crop_sample",
    "write_split_lists",
]

#: classes per level including background 0 (6 -> 36 -> 82 -> 101 crop classes)
H2CROP_LEVEL_SIZES: tuple[int, ...] = (7, 37, 83, 102)
#: the temporal windows of the experiments: the first N months of the year
H2CROP_MONTHS: tuple[int, ...] = (6, 8, 10, 12)
#: Sentinel-2 band order of the ``S2`` cube (undocumented; inferred from the band means)
H2CROP_S2_BANDS: tuple[str, ...] = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11",
                                    "B12")

#: ``(inputs, labels) -> (inputs, labels)`` applied last to each sample
Transform = Callable[[dict[str, Any], Any], tuple[dict[str, Any], Any]]

# canonical name -> accepted HDF5 keys (README spelling first)
_READ_KEYS: dict[str, tuple[str, ...]] = {
    "S2": ("S2", "S2_data"),
    "EnMAP": ("EnMAP", "EnMAP_data"),
    "label": ("label",),
    "priors": ("prior", "priors"),
}
_WRITE_KEYS: dict[str, dict[str, str]] = {
    "readme": {"S2": "S2", "EnMAP": "EnMAP", "label": "label", "priors": "prior"},
    "code": {"S2": "S2_data", "EnMAP": "EnMAP_data", "label": "label", "priors": "priors"},
}
_LIST_DIRS: dict[str, str] = {"readme": "data_lists", "code": "data_list", "flat": ""}
_SAMPLE_DIR = "h5_data"
_SPLITS = ("train", "val", "test")

# Appendix B of the reference: configs/hyper_benefits/crops_S2_jun.py of flyakon/H2Crop
_S2_MEAN = (
    4259.259273982915, 4215.908118624016, 4103.170198423672, 4499.330633142822, 5117.0459378072765,
    5324.110306431293, 5487.406745483038, 5417.512500384096, 3758.2721930309735, 3095.500449391593,
)

_S2_STD = (
    3566.4813736634896, 3230.3569801330054, 3133.285130121181, 3083.2344473492067,
    2603.625628756515, 2453.0269585831725, 2512.6447758166305, 2317.5420847623095,
    1496.7727140001148, 1391.1260145456185,
)

_ENMAP_MEAN = (
    309.5421, 301.3388, 318.842, 334.9932, 342.8996, 348.9319, 364.7999, 380.8993, 386.9393,
    401.2269, 408.6302, 409.1955, 412.0323, 423.3943, 432.9525, 429.9166, 434.8373, 451.6289,
    458.9493, 483.6162, 524.4794, 558.3706, 596.7026, 640.7237, 676.9993, 708.0853, 726.0434,
    743.1663, 755.3532, 756.726, 748.9131, 730.8229, 697.7578, 695.1724, 691.0783, 690.2051,
    694.713, 696.9683, 693.9366, 687.0369, 696.9279, 696.1576, 693.5495, 695.2412, 686.9135,
    672.724, 667.4727, 661.8077, 660.3919, 672.5941, 712.5789, 812.3619, 1003.4266, 1241.4645,
    1513.9624, 1799.9665, 2163.9276, 2502.3224, 2767.3901, 2919.408, 3077.3673, 2953.6917,
    3195.6596, 3247.5064, 3273.5258, 3317.226, 3346.6789, 3405.3652, 3409.1431, 3461.9136,
    3453.1753, 3501.1911, 3525.9744, 3546.8471, 3595.0703, 3595.9446, 3637.8386, 3629.5695,
    3654.1613, 3680.3304, 3603.4099, 3566.0021, 3617.9968, 3400.8533, 3740.1326, 3709.5692,
    3503.325, 3890.0571, 3725.8914, 3828.7373, 3564.7482, 3559.718, 3376.4558, 3514.1424,
    3404.8935, 3583.8074, 3422.3933, 3621.3278, 3449.1135, 3496.4183, 3649.4688, 3721.7977,
    3778.9596, 3845.9569, 3907.9693, 3950.5905, 3996.8491, 4037.7712, 4043.9568, 4049.3539,
    4031.3043, 3871.7487, 3971.7644, 3748.171, 3357.5127, 3398.518, 3404.5146, 3411.1719,
    3416.8007, 3433.0039, 3503.1913, 3578.394, 3629.4299, 3657.7558, 3697.7477, 3699.2401,
    3664.1217, 3582.7429, 3477.1352, 1537.2348, 1545.1406, 1496.9523, 1547.0122, 1627.3118,
    1720.7775, 1793.9441, 1862.6197, 1933.9718, 1994.3452, 2054.3132, 2117.2195, 2171.5675,
    2235.2068, 2279.2108, 2317.5802, 2344.9017, 2373.0457, 2368.521, 2371.5362, 2342.4701,
    2312.1604, 2282.1807, 2240.9143, 2201.5585, 2178.6143, 2171.5755, 2128.4321, 2209.8675,
    1032.9517, 901.0521, 919.8255, 962.0414, 1017.1136, 969.2139, 910.1429, 951.6594, 1061.2858,
    1113.0021, 1129.5889, 1083.9881, 1090.0604, 1118.8542, 1164.1069, 1168.2034, 1174.6866, 1199.2,
    1215.3345, 1222.6234, 1242.4003, 1257.5217, 1262.8296, 1278.5319, 1286.1492, 1298.2014,
    1302.0483, 1320.0263, 1314.6717, 1336.7314, 1341.0787, 1341.7823, 1323.7789, 1286.7988,
    1244.6713, 1208.2193, 1165.8874, 1136.1599, 1115.6227, 1083.6456, 1050.1768, 1027.748,
    997.8804, 999.716, 982.1604, 951.4429, 928.9946, 934.0334, 942.9222, 934.525, 924.3493,
    915.6241, 904.5462, 890.6365, 874.7927, 851.9528, 848.8834, 842.2697, 841.0924, 820.2674,
)

_ENMAP_STD = (
    270.467, 272.1957, 277.3872, 283.95, 290.7022, 294.2421, 299.2277, 301.2805, 303.7201,
    308.0447, 310.0696, 313.4797, 317.4772, 321.7248, 325.5506, 331.2423, 334.8835, 339.4727,
    343.4966, 347.4992, 350.6359, 351.7562, 350.7576, 352.0583, 354.2478, 358.7686, 363.9742,
    368.8117, 375.6676, 385.3448, 398.4585, 411.1396, 423.7397, 438.7383, 446.3431, 455.9439,
    464.0364, 472.3879, 480.2796, 488.6939, 497.7553, 502.8122, 510.5936, 521.1313, 530.1831,
    536.3987, 543.0293, 551.8149, 557.6057, 561.1418, 569.3059, 565.1671, 546.4452, 515.5008,
    495.2985, 478.9727, 520.1152, 597.4918, 677.5248, 724.5753, 764.3551, 809.4894, 842.6053,
    839.8281, 840.7008, 853.8493, 857.014, 860.9115, 889.8873, 901.2371, 892.7959, 895.1464,
    899.2835, 905.7071, 914.2687, 903.978, 914.5142, 917.6921, 925.5984, 894.6436, 901.5631,
    876.107, 882.6381, 822.738, 903.1283, 873.7764, 843.2229, 972.241, 858.4551, 944.2777,
    818.1695, 871.4923, 811.3318, 809.5494, 816.4685, 829.6249, 816.5637, 837.6869, 818.7791,
    811.5273, 860.0646, 862.1002, 874.5718, 889.9693, 904.6517, 913.7315, 923.0637, 929.8991,
    927.805, 924.827, 914.6831, 868.5619, 863.8024, 801.1499, 728.0821, 753.7905, 761.8743,
    767.2579, 771.5753, 774.0008, 785.8573, 798.1175, 806.2362, 807.511, 808.7266, 813.7729,
    808.0963, 795.6484, 782.1625, 805.1094, 811.8097, 736.8203, 730.9914, 737.7967, 746.9563,
    746.1925, 744.0245, 744.3937, 741.6858, 740.8848, 743.7291, 745.7828, 752.4778, 755.0915,
    757.6327, 758.2792, 763.4531, 760.9976, 760.1705, 752.8117, 748.865, 747.6889, 743.6157,
    738.8399, 739.498, 749.2507, 747.2783, 2746.9931, 926.6904, 708.7551, 692.2299, 717.0709,
    747.0154, 697.231, 631.4213, 643.3273, 706.5813, 731.4724, 726.4069, 684.3617, 674.8388,
    678.6149, 694.6322, 684.8869, 676.9848, 680.368, 678.088, 674.1267, 675.2698, 674.4752,
    667.6647, 666.3871, 660.5991, 657.9247, 650.9512, 648.7453, 636.4705, 639.2854, 640.0761,
    641.7993, 636.4189, 624.4613, 611.8678, 603.2808, 591.9094, 586.308, 582.1314, 570.4978,
    561.0749, 559.2888, 548.716, 549.7297, 545.1534, 533.4571, 528.25, 541.5009, 557.4598,
    560.8546, 563.8145, 565.1073, 569.8991, 570.2249, 564.2724, 552.1226, 565.8726, 570.949,
    581.0677, 567.042,
)

#: the reference per-band z-score constants (``S2``: 10 bands, same for every month;
#: ``EnMAP``: 218 bands), applied to the raw int16 values
H2CROP_NORMALISATION = BandStats(
    {"S2": np.asarray(_S2_MEAN, np.float32), "EnMAP": np.asarray(_ENMAP_MEAN, np.float32)},
    {"S2": np.asarray(_S2_STD, np.float32), "EnMAP": np.asarray(_ENMAP_STD, np.float32)},
)


# ---------------------------------------------------------------------------- helpers
def _resolve_keys(name: str, keys: Sequence[str], wanted: Sequence[str]) -> dict[str, str]:
    """Canonical name -> the key the file uses, for every ``wanted`` canonical name."""
    out: dict[str, str] = {}
    for canon in wanted:
        found = [k for k in _READ_KEYS[canon] if k in keys]
        if not found:
            spell = " or ".join(repr(k) for k in _READ_KEYS[canon])
            raise DataError(f"{name}: no {canon} dataset (expected {spell}); the file has "
                            f"{sorted(keys)}")
        out[canon] = found[0]
    return out


def _check_shapes(name: str, shapes: Mapping[str, tuple[int, ...]], keys: Sequence[str]) -> None:
    """Validate the shapes of a sample's arrays (canonical names) against each other."""
    has = f"the file has {sorted(keys)}"

    def bad(what: str) -> DataError:
        return DataError(f"{name}: {what}; {has}")

    s2 = shapes["S2"]
    if len(s2) != 4:
        raise bad(f"S2 must be (T, C, H, W), got shape {s2}")
    grid = s2[-2:]
    if "label" in shapes:
        lab = shapes["label"]
        if len(lab) != 3 or lab[-2:] != grid:
            raise bad(f"label must be (levels, H, W) on the S2 grid {grid}, got shape {lab}")
        if "priors" in shapes and shapes["priors"] != lab:
            raise bad(f"prior must have the label's shape {lab}, got {shapes['priors']}")
    if "EnMAP" in shapes:
        hyp = shapes["EnMAP"]
        if len(hyp) != 3 or min(hyp) < 1:
            raise bad(f"EnMAP must be (bands, h, w), got shape {hyp}")
        fy, ry = divmod(grid[0], hyp[1])
        fx, rx = divmod(grid[1], hyp[2])
        if ry or rx or fy != fx or fy < 1:
            raise bad(f"the EnMAP grid {hyp[1:]} is not the S2 grid {grid} divided by one "
                      "integer factor (H2Crop: 64 x 64 for 192 x 192)")


def _cast(name: str, what: str, arr: Any, dtype: type[np.integer], integral: bool) -> np.ndarray:
    """``arr`` as ``dtype``: floats are rounded (or must be whole when ``integral``) and every
    value must fit the type."""
    a = np.asarray(arr)
    if a.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise DataError(f"{name}: {what} holds NaN or infinite values; fill them before "
                            f"writing ({np.dtype(dtype).name} has no NaN)")
        r = np.rint(a)
        if integral and not np.array_equal(r, a):
            raise DataError(f"{name}: {what} must hold whole class numbers, got fractions")
        a = r
    elif a.dtype.kind not in "iu":
        raise DataError(f"{name}: {what} must be numeric, got dtype {a.dtype}")
    info = np.iinfo(dtype)
    if a.size and (a.min() < info.min or a.max() > info.max):
        raise DataError(f"{name}: {what} values {a.min()}..{a.max()} do not fit "
                        f"{np.dtype(dtype).name} ({info.min}..{info.max})")
    return a.astype(dtype)


def _resolve_stats(normalise: BandStats | str | Path | None, with_hyper: bool) -> BandStats | None:
    if normalise is None:
        return None
    if isinstance(normalise, BandStats):
        stats = normalise
    elif isinstance(normalise, str) and normalise == "reference":
        stats = H2CROP_NORMALISATION
    elif isinstance(normalise, str | Path):
        path = Path(normalise)
        if not path.is_file():
            raise DataError(f"normalise must be 'reference', a BandStats, None or a JSON file "
                            f"of BandStats.to_dict(); {str(normalise)!r} is none of these")
        try:
            stats = BandStats.from_dict(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"cannot read band statistics from {path}: {exc}") from None
    else:
        raise DataError(f"normalise must be 'reference', a BandStats or None, got "
                        f"{type(normalise).__name__}")
    needed = ["S2", "EnMAP"] if with_hyper else ["S2"]
    missing = [s for s in needed if s not in stats.mean or s not in stats.std]
    if missing:
        raise DataError(f"the normalisation statistics lack source(s) {missing} (have "
                        f"{sorted(stats.mean)})")
    return stats


# ---------------------------------------------------------------------------- reader
class H2CropDataset:
    """H2Crop samples (see the module doc) as a map-style torch ``Dataset``.

    ``split`` names a list (``None``: every ``.h5`` file, sorted); ``sample_step`` keeps every
    k-th listed id. ``months`` keeps the first N monthly composites (``None``: all); ``levels``
    are the 1-based label levels to return, in that order. ``normalise`` z-scores each band:
    ``"reference"`` uses :data:`H2CROP_NORMALISATION`, a :class:`BandStats` (or a JSON file of
    its ``to_dict()``) yours, ``None`` keeps the raw values. Non-finite values then become
    ``nan_fill``.

    Item ``i`` is ``(inputs, labels)``: ``inputs["S2"]`` float32 ``[T, 10, H, W]``,
    ``inputs["EnMAP"]`` float32 ``[B, h, w]`` (``with_hyper``), ``inputs["priors"]`` int64
    ``[L, H, W]`` (``with_priors``), and ``labels`` int64 ``[L, H, W]``; ``transform(inputs,
    labels)`` runs last. Priors sit in ``inputs`` so that flips and CutMix move them with the
    imagery. Files are opened only while reading an item (safe with ``DataLoader`` workers).
    """

    def __init__(
        self,
        root: str | Path,
        split: str | None = "train",
        *,
        months: int | None = 12,
        with_hyper: bool = True,
        with_priors: bool = False,
        levels: Sequence[int] = (1, 2, 3, 4),
        normalise: BandStats | str | Path | None = "reference",
        sample_step: int = 1,
        nan_fill: float = 0.0,
        transform: Transform | None = None,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"H2Crop folder not found: {self.root}")
        if months is not None and (isinstance(months, bool) or int(months) < 1):
            raise DataError(f"months must be a positive number of months, got {months!r}")
        self.months = None if months is None else int(months)
        self.levels = tuple(int(v) for v in levels)
        if not self.levels or min(self.levels) < 1 or len(set(self.levels)) != len(self.levels):
            raise DataError(f"levels must be distinct 1-based level numbers, got {levels!r}")
        if int(sample_step) < 1:
            raise DataError(f"sample_step must be >= 1, got {sample_step}")
        self.sample_step = int(sample_step)
        self.with_hyper = bool(with_hyper)
        self.with_priors = bool(with_priors)
        self.normalise = _resolve_stats(normalise, self.with_hyper)
        self.nan_fill = float(nan_fill)
        self.transform = transform
        self.split = split
        self.files = self._find_files(split)[:: self.sample_step]
        if not self.files:
            raise DataError(f"no samples in {self.root}" + (f" for split {split!r}"
                                                            if split else ""))

    def _find_files(self, split: str | None) -> list[Path]:
        return find_h5_samples(self.root, split, (_SAMPLE_DIR, ""),
                               ("data_lists", "data_list", ""))

    @property
    def names(self) -> list[str]:
        """Sample ids (file stems), in dataset order."""
        return [f.stem for f in self.files]

    def __len__(self) -> int:
        return len(self.files)

    def read_raw(self, index: int) -> dict[str, np.ndarray]:
        """The stored arrays of sample ``index`` under canonical keys, as stored (no
        normalisation, no transform): ``S2`` (first ``months``), ``EnMAP`` (``with_hyper``),
        ``label`` and ``priors`` (``with_priors``) on the selected ``levels``."""
        import h5py

        path = self.files[index]
        wanted = ["S2", "label"]
        wanted += ["EnMAP"] if self.with_hyper else []
        wanted += ["priors"] if self.with_priors else []
        with h5py.File(path, "r") as f:
            keys = list(f.keys())
            found = _resolve_keys(path.name, keys, wanted)
            shapes = {c: tuple(f[k].shape) for c, k in found.items()}
            _check_shapes(path.name, shapes, keys)
            n_months = shapes["S2"][0]
            if self.months is not None and n_months < self.months:
                raise DataError(f"{path.name}: {self.months} months asked for, the S2 cube "
                                f"has {n_months}")
            n_levels = shapes["label"][0]
            if max(self.levels) > n_levels:
                raise DataError(f"{path.name}: level {max(self.levels)} asked for, the label "
                                f"has {n_levels} levels")
            out: dict[str, np.ndarray] = {}
            t = n_months if self.months is None else self.months
            s2 = f[found["S2"]]
            check_array_memory([((t, *s2.shape[1:]), s2.dtype),
                                *(f[k] for c, k in found.items() if c != "S2")],
                               f"H2Crop sample {path.name}")
            out["S2"] = np.asarray(s2[:t])
            if self.with_hyper:
                out["EnMAP"] = np.asarray(f[found["EnMAP"]][()])
            sel = [v - 1 for v in self.levels]
            for canon in ("label", "priors"):
                if canon in found:
                    arr = np.asarray(f[found[canon]][()])
                    if not np.issubdtype(arr.dtype, np.integer):
                        raise DataError(f"{path.name}: {found[canon]!r} must hold integer "
                                        f"class numbers, got {arr.dtype}")
                    out[canon] = arr[sel]
        return out

    def iter_raw(self) -> Iterator[dict[str, np.ndarray]]:
        """Every sample's :meth:`read_raw` arrays, in order."""
        for i in range(len(self)):
            yield self.read_raw(i)

    def __getitem__(self, index: int) -> tuple[dict[str, Any], Any]:
        import torch

        if not -len(self) <= index < len(self):
            raise IndexError(index)
        i = int(index) % len(self)
        raw = self.read_raw(i)
        inputs: dict[str, Any] = {}
        for key in ("S2", "EnMAP"):
            if key not in raw:
                continue
            x = raw[key].astype(np.float32)
            if self.normalise is not None:
                try:
                    x = self.normalise.apply(key, x if key == "S2" else x[None])
                except DataError as exc:
                    raise DataError(f"{self.files[i].name}: {exc}") from None
                x = x if key == "S2" else x[0]
            x = np.where(np.isfinite(x), x, np.float32(self.nan_fill)).astype(np.float32,
                                                                              copy=False)
            inputs[key] = torch.from_numpy(np.ascontiguousarray(x))
        if "priors" in raw:
            inputs["priors"] = torch.from_numpy(raw["priors"].astype(np.int64))
        labels = torch.from_numpy(raw["label"].astype(np.int64))
        if self.transform is not None:
            return self.transform(inputs, labels)
        return inputs, labels

    def band_stats(self) -> BandStats:
        """Per-band mean/std of ``S2`` (and ``EnMAP``) over this dataset; see
        :func:`h2crop_band_stats`."""
        return h2crop_band_stats(self)

    def __repr__(self) -> str:
        return (f"H2CropDataset({str(self.root)!r}, split={self.split!r}, n={len(self)}, "
                f"months={self.months}, levels={self.levels}, with_hyper={self.with_hyper}, "
                f"with_priors={self.with_priors})")


def h2crop_band_stats(dataset: H2CropDataset) -> BandStats:
    """Per-band mean and population std of the raw ``S2`` (over months, y, x; only the
    dataset's ``months``) and ``EnMAP`` values (when ``with_hyper``), streaming one sample at a
    time with float64 accumulators; NaN is ignored."""

    def samples() -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
        for raw in dataset.iter_raw():
            src = {"S2": raw["S2"]}
            if "EnMAP" in raw:
                src["EnMAP"] = raw["EnMAP"][None]
            yield src, raw["label"]

    return compute_band_stats(samples())


# ---------------------------------------------------------------------------- writers
def write_h2crop_sample(
    path: str | Path,
    s2: np.ndarray,
    enmap: np.ndarray | None = None,
    *,
    label: np.ndarray,
    prior: np.ndarray | None = None,
    keys: str = "readme",
    attrs: Mapping[str, Any] | None = None,
    compression: str | None = "gzip",
) -> Path:
    """Write one H2Crop sample: ``s2`` ``(T, C, H, W)`` and ``enmap`` ``(B, h, w)`` as int16,
    ``label``/``prior`` ``(L, H, W)`` as uint8, under the README (``keys="readme"``: ``S2``,
    ``EnMAP``, ``label``, ``prior``) or the code spelling (``"code"``: ``S2_data``,
    ``EnMAP_data``, ``label``, ``priors``). Floats are rounded; a value outside the type's
    range is an error. ``attrs`` become file attributes. Written atomically."""
    import h5py

    from cropscope.io import atomic_path

    if keys not in _WRITE_KEYS:
        raise DataError(f"keys must be one of {sorted(_WRITE_KEYS)}, got {keys!r}")
    path = Path(path)
    name = path.name
    arrays = {"S2": _cast(name, "S2", s2, np.int16, False),
              "label": _cast(name, "label", label, np.uint8, True)}
    if enmap is not None:
        arrays["EnMAP"] = _cast(name, "EnMAP", enmap, np.int16, False)
    if prior is not None:
        arrays["priors"] = _cast(name, "prior", prior, np.uint8, True)
    _check_shapes(name, {k: a.shape for k, a in arrays.items()}, list(arrays))
    spelling = _WRITE_KEYS[keys]
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for canon in ("S2", "EnMAP", "label", "priors"):
            if canon in arrays:
                f.create_dataset(spelling[canon], data=arrays[canon], compression=compression)
        for k, v in (attrs or {}).items():
            f.attrs[k] = v
    return path


def write_split_lists(
    root: str | Path, splits: Mapping[str, Sequence[str]], spelling: str = "readme"
) -> list[Path]:
    """Write ``<split>.txt`` (one id per line) into ``root/data_lists`` (``"readme"``),
    ``root/data_list`` (``"code"``) or ``root`` (``"flat"``). Returns the files."""
    if spelling not in _LIST_DIRS:
        raise DataError(f"spelling must be one of {sorted(_LIST_DIRS)}, got {spelling!r}")
    folder = Path(root) / _LIST_DIRS[spelling]
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for split, ids in splits.items():
        if not split or "/" in split or split != split.strip():
            raise DataError(f"invalid split name {split!r}")
        names = [str(i)[:-3] if str(i).endswith(".h5") else str(i) for i in ids]
        bad = [n for n in names if not n or len(n.split()) != 1]
        if bad:
            raise DataError(f"split {split!r}: sample ids must be non-empty and without "
                            f"whitespace, got {bad[:3]}")
        path = folder / f"{split}.txt"
        path.write_text("".join(f"{n}\n" for n in names))
        out.append(path)
    return out


# ---------------------------------------------------------------------------- generator
_DEFAULT_PATHS = (
    ("arable", "cereal", "wheat", "winter_wheat"),
    ("arable", "cereal", "wheat", "spring_wheat"),
    ("arable", "cereal", "barley", "winter_barley"),
    ("arable", "oilseed", "rapeseed", "winter_rapeseed"),
    ("arable", "oilseed", "rapeseed", "spring_rapeseed"),
    ("grassland", "grassland", "meadow", "meadow"),
)
#: centres (nm) of :data:`H2CROP_S2_BANDS` (Sentinel-2A)
_S2_CENTRES = np.array([492.4, 559.8, 664.6, 704.1, 740.5, 782.8, 832.8, 864.7, 1613.7,
                        2202.4])
_ENMAP_MONTH = 6  # the synthetic EnMAP acquisition: July (0-based month 6)


def default_h2crop_taxonomy() -> Taxonomy:
    """The generator's small four-level tree, 2 -> 3 -> 4 -> 6 classes (arable/grassland ->
    cereal/oilseed/grassland -> wheat/barley/rapeseed/meadow -> winter/spring variants)."""
    from cropscope.taxonomy.tree import Taxonomy

    return Taxonomy.from_paths(_DEFAULT_PATHS, levels=["level1", "level2", "level3", "level4"],
                               name="h2crop-demo")


def h2crop_level_ids(taxonomy: Taxonomy) -> list[np.ndarray]:
    """Per level, the class number stored on disk for each taxonomy class (in the taxonomy's
    index order): the class code where a level's codes are exactly the numbers 1..N (as
    :func:`cropscope.taxonomy.sources.load_h2crop` reads the H2Crop table), else index + 1.
    0 is background."""
    out = []
    for k in range(taxonomy.n_levels):
        codes = taxonomy.codes(k)
        try:
            nums = [int(c) for c in codes]
        except ValueError:
            nums = []
        if sorted(nums) == list(range(1, len(codes) + 1)):
            out.append(np.asarray(nums, dtype=np.int64))
        else:
            out.append(np.arange(1, len(codes) + 1, dtype=np.int64))
    return out


def _s2_twins(taxonomy: Taxonomy) -> list[tuple[int, int]]:
    """Finest-level index pairs with identical S2 signatures: the first two children of
    every other parent (1st, 3rd, ...) that has at least two children."""
    if taxonomy.n_levels < 2:
        return []
    parents = taxonomy.parents(-1)
    twins = []
    multi = [p for p in range(taxonomy.n_classes(-2)) if np.sum(parents == p) >= 2]
    for p in multi[::2]:
        kids = np.flatnonzero(parents == p)
        twins.append((int(kids[0]), int(kids[1])))
    return twins


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _soil(wl: np.ndarray) -> np.ndarray:
    return 0.07 + 0.23 * np.clip((wl - 400) / 1500, 0, 1) - 0.06 * np.clip((wl - 1900) / 600,
                                                                           0, 1)


def _veg(wl: np.ndarray) -> np.ndarray:
    green = 0.035 * np.exp(-0.5 * ((wl - 555) / 25) ** 2)
    edge = _sigmoid((wl - 715) / 14)
    return (0.035 + green + 0.42 * edge * (1 - 0.55 * _sigmoid((wl - 1450) / 60))
            - 0.1 * _sigmoid((wl - 1950) / 60))


def h2crop_class_signatures(
    taxonomy: Taxonomy | None = None,
    *,
    months: int = 12,
    hyper_bands: int = 218,
    seed: int = 0,
) -> dict[str, Any]:
    """The noise-free reflectance signatures :func:`generate_h2crop` draws from.

    Row 0 is background, row ``i + 1`` finest-level class ``i``. ``S2`` ``[K + 1, months,
    10]``: a soil/vegetation mixture whose vegetation fraction follows a seasonal bump; the
    base cover comes from the level-1 class, the bump's height/width and soil brightness from
    level 2, its peak month and NIR gain from the parent level (level 3), a peak shift and
    vegetation gain from the class itself. ``EnMAP`` ``[K + 1, hyper_bands]`` (wavelengths
    ``wavelength``, 420-2440 nm): the same mixture in July plus three narrow absorption or
    reflection features unique to each finest class. ``s2_twins``: pairs of sibling classes
    (row numbers) given the *same* S2 signature, so only EnMAP tells them apart.
    """
    taxonomy = default_h2crop_taxonomy() if taxonomy is None else taxonomy
    depth = taxonomy.n_levels
    anc = taxonomy.ancestor_table()
    n_fine = int(anc.shape[0])
    rng = np.random.default_rng([int(seed), 101])
    sizes = taxonomy.sizes
    f0 = rng.uniform(0.05, 0.35, sizes[0])
    lv2 = min(1, depth - 1)
    amp = rng.uniform(0.45, 0.9, sizes[lv2])
    width = rng.uniform(0.9, 2.2, sizes[lv2])
    soil_gain = rng.uniform(0.8, 1.25, sizes[lv2])
    lv3 = max(depth - 2, 0)
    peak = rng.uniform(2.0, 9.0, sizes[lv3])
    nir_gain = rng.uniform(0.85, 1.15, sizes[lv3])
    shift = rng.uniform(0.6, 1.4, n_fine) * rng.choice([-1.0, 1.0], n_fine)
    veg_gain = rng.uniform(0.9, 1.1, n_fine)
    twins = _s2_twins(taxonomy)
    for a, b in twins:
        shift[b], veg_gain[b] = shift[a], veg_gain[a]
    wl = np.linspace(420.0, 2440.0, int(hyper_bands))
    centres = rng.uniform(450, 2400, (n_fine, 3))
    widths = rng.uniform(15, 60, (n_fine, 3))
    heights = rng.uniform(0.03, 0.07, (n_fine, 3)) * rng.choice([-1.0, 1.0], (n_fine, 3))

    def mixture(wave: np.ndarray, t: np.ndarray, c: int | None) -> np.ndarray:
        """``[len(t), len(wave)]`` reflectance of fine class ``c`` (None: background)."""
        if c is None:
            cover = np.full(t.shape, 0.08)
            soil, veg = _soil(wave), _veg(wave)
        else:
            a1, a2, a3 = anc[c, 0], anc[c, lv2], anc[c, lv3]
            bump = np.exp(-0.5 * ((t - peak[a3] - shift[c]) / width[a2]) ** 2)
            cover = np.clip(f0[a1] + amp[a2] * (1 - f0[a1]) * bump, 0, 1)
            soil = _soil(wave) * soil_gain[a2]
            veg = _veg(wave) * veg_gain[c] * (1 + (nir_gain[a3] - 1) * _sigmoid(
                (wave - 715) / 14))
        return (1 - cover)[:, None] * soil[None] + cover[:, None] * veg[None]

    t = np.arange(int(months), dtype=np.float64)
    july = np.array([float(_ENMAP_MONTH)])
    s2 = np.empty((n_fine + 1, len(t), len(_S2_CENTRES)))
    hyp = np.empty((n_fine + 1, len(wl)))
    s2[0], hyp[0] = mixture(_S2_CENTRES, t, None), mixture(wl, july, None)[0]
    for c in range(n_fine):
        s2[c + 1] = mixture(_S2_CENTRES, t, c)
        features = (heights[c, :, None] * np.exp(
            -0.5 * ((wl[None] - centres[c, :, None]) / widths[c, :, None]) ** 2)).sum(0)
        hyp[c + 1] = np.maximum(mixture(wl, july, c)[0] + features, 0.005)
    return {"S2": s2.astype(np.float32), "EnMAP": hyp.astype(np.float32), "wavelength": wl,
            "s2_twins": [(a + 1, b + 1) for a, b in twins]}


def _parcels(rng: np.random.Generator, size: int) -> tuple[np.ndarray, int]:
    """Rectangular parcels on a jittered grid, 1 px of background between neighbours;
    ``(parcel map with -1 = background, number of parcels)``."""
    cell = max(6, size // 6)
    n = max(1, size // cell)

    def cuts() -> np.ndarray:
        base = np.linspace(0, size, n + 1).round().astype(int)
        b = base.copy()
        if n > 1:
            b[1:-1] += rng.integers(-(cell // 4), cell // 4 + 1, n - 1)
        return base if np.any(np.diff(b) < 4) else b

    rows, cols = cuts(), cuts()
    pmap = np.full((size, size), -1, dtype=np.int64)
    count = 0
    for i in range(n):
        for j in range(n):
            if rng.random() < 0.1:
                continue
            r0, c0 = rows[i] + int(rng.integers(0, 2)), cols[j] + int(rng.integers(0, 2))
            r1, c1 = rows[i + 1] - 1, cols[j + 1] - 1
            if r1 - r0 >= 2 and c1 - c0 >= 2:
                pmap[r0:r1, c0:c1] = count
                count += 1
    return pmap, count


def _split_counts(splits: Sequence[float] | Mapping[str, float], n: int) -> dict[str, int]:
    items = (dict(splits) if isinstance(splits, Mapping)
             else dict(zip(_SPLITS, splits, strict=False)))
    if not isinstance(splits, Mapping) and len(tuple(splits)) != len(_SPLITS):
        raise DataError(f"splits must be 3 fractions (train, val, test) or a mapping, got "
                        f"{splits!r}")
    values = list(items.values())
    if any(v < 0 for v in values) or not sum(values):
        raise DataError(f"split sizes must be non-negative and not all 0, got {items}")
    if all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in values):
        if sum(values) != n:
            raise DataError(f"split counts {items} do not add up to n_samples={n}")
        return {k: int(v) for k, v in items.items()}
    share = np.asarray(values, dtype=np.float64) / sum(values) * n
    counts = np.floor(share).astype(int)
    for i in np.argsort(-(share - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    return dict(zip(items, (int(c) for c in counts), strict=True))


def generate_h2crop(
    root: str | Path,
    n_samples: int = 8,
    *,
    splits: Sequence[float] | Mapping[str, float] = (0.5, 0.25, 0.25),
    size: int = 192,
    hyper_size: int = 64,
    months: int = 12,
    hyper_bands: int = 218,
    taxonomy: Taxonomy | None = None,
    change_fraction: float = 0.3,
    seed: int = 0,
    keys: str = "readme",
) -> Path:
    """Write a synthetic dataset in the H2Crop layout and return ``root``.

    Each sample (``root/h5_data/sample_001.h5``, ...) holds rectangular parcels on a
    background (class 0); every parcel has a finest-level class, and the coarser levels are
    its ancestors in ``taxonomy`` (default :func:`default_h2crop_taxonomy`; the H2Crop tree
    from :func:`cropscope.taxonomy.sources.load_h2crop` also works). Class numbers on disk:
    :func:`h2crop_level_ids`. ``S2`` ``(months, 10, size, size)`` and ``EnMAP``
    ``(hyper_bands, hyper_size, hyper_size)`` are int16 reflectance x 10,000 drawn from
    :func:`h2crop_class_signatures` with a per-parcel brightness gain and pixel noise; each
    EnMAP pixel is the average of its ``(size / hyper_size)^2`` S2 pixels' spectra. Some
    sibling classes have the *same* S2 profile but different EnMAP spectra (``s2_twins``), so
    EnMAP genuinely adds information at the finest level. ``prior`` (last year's labels)
    repeats the parcels, but a ``change_fraction`` of them (at least one, never all, per
    sample with two or more parcels) had another finest class (crop rotation).

    ``splits``: fractions for train/val/test, or a mapping split -> fraction or count; lists
    go to ``data_lists/`` (``keys="readme"``) or ``data_list/`` (``"code"``), and the tree to
    ``taxonomy.json``. Deterministic for a ``seed``.
    """
    from cropscope.taxonomy.sources import write_taxonomy

    if keys not in _WRITE_KEYS:
        raise DataError(f"keys must be one of {sorted(_WRITE_KEYS)}, got {keys!r}")
    if n_samples < 1 or months < 1 or hyper_bands < 1 or hyper_size < 1:
        raise DataError("n_samples, months, hyper_bands and hyper_size must be positive")
    if size < 6 or size % hyper_size:
        raise DataError(f"size {size} must be at least 6 and a multiple of hyper_size "
                        f"{hyper_size}")
    if not 0.0 <= change_fraction <= 1.0:
        raise DataError(f"change_fraction must be within [0, 1], got {change_fraction}")
    taxonomy = default_h2crop_taxonomy() if taxonomy is None else taxonomy
    if max(taxonomy.sizes) > 255:
        raise DataError(f"labels are uint8: at most 255 classes per level, the taxonomy has "
                        f"{taxonomy.sizes}")
    counts = _split_counts(splits, n_samples)
    root = Path(root)
    (root / _SAMPLE_DIR).mkdir(parents=True, exist_ok=True)
    sig = h2crop_class_signatures(taxonomy, months=months, hyper_bands=hyper_bands, seed=seed)
    anc = taxonomy.ancestor_table()
    n_fine = anc.shape[0]
    ids = h2crop_level_ids(taxonomy)
    # row (fine index + 1, 0 = background) -> on-disk class number per level
    lookup = np.zeros((n_fine + 1, taxonomy.n_levels), dtype=np.int64)
    for k in range(taxonomy.n_levels):
        lookup[1:, k] = ids[k][anc[:, k]]
    factor = size // hyper_size
    width = max(3, len(str(n_samples)))
    names = [f"sample_{i + 1:0{width}d}" for i in range(n_samples)]
    for i, name in enumerate(names):
        rng = np.random.default_rng([int(seed), 1, i])
        pmap, n_parcels = _parcels(rng, size)
        inside = pmap >= 0
        fine = rng.integers(0, n_fine, max(n_parcels, 1))
        gain = rng.normal(1.0, 0.04, max(n_parcels, 1))
        rows = np.where(inside, fine[pmap] + 1, 0)
        g = np.where(inside, gain[pmap], 1.0).astype(np.float32)
        s2 = sig["S2"][rows].transpose(2, 3, 0, 1) * g
        s2 = s2 + rng.normal(0.0, 0.01, s2.shape)
        weights = np.zeros((n_fine + 1, size, size), dtype=np.float32)
        yy, xx = np.indices((size, size))
        weights[rows, yy, xx] = g
        weights = weights.reshape(n_fine + 1, hyper_size, factor, hyper_size, factor).mean((2, 4))
        hyp = np.einsum("chw,cb->bhw", weights, sig["EnMAP"])
        hyp = hyp + rng.normal(0.0, 0.004, hyp.shape)
        changed = np.zeros(max(n_parcels, 1), dtype=bool)
        if n_parcels and n_fine > 1 and change_fraction > 0:
            n_change = round(change_fraction * n_parcels)
            if n_parcels >= 2 and change_fraction < 1:
                n_change = min(max(n_change, 1), n_parcels - 1)
            changed[rng.choice(n_parcels, n_change, replace=False)] = True
        before = np.where(changed, (fine + rng.integers(1, max(n_fine, 2), fine.shape)) % n_fine,
                          fine)
        prior_rows = np.where(inside, before[pmap] + 1, 0)
        write_h2crop_sample(
            root / _SAMPLE_DIR / f"{name}.h5",
            np.clip(np.rint(s2 * 10_000), -32768, 32767),
            np.clip(np.rint(hyp * 10_000), -32768, 32767),
            label=lookup[rows].transpose(2, 0, 1),
            prior=lookup[prior_rows].transpose(2, 0, 1),
            keys=keys,
            attrs={"synthetic": True, "generator": "cropscope generate_h2crop", "seed": seed},
        )
    lists, start = {}, 0
    for split, count in counts.items():
        lists[split] = names[start:start + count]
        start += count
    write_split_lists(root, lists, spelling=keys)
    write_taxonomy(taxonomy, root / "taxonomy.json")
    return root


def read_level_sizes(root: str | Path) -> tuple[int, ...]:
    """Classes per level, background included, of the dataset at ``root``: from its
    ``taxonomy.json`` (written by :func:`generate_h2crop` and the EnMAP builder) when present,
    else H2Crop's :data:`H2CROP_LEVEL_SIZES`."""
    path = Path(root) / "taxonomy.json"
    if not path.is_file():
        return H2CROP_LEVEL_SIZES
    from cropscope.taxonomy.sources import read_taxonomy

    return tuple(int(n) + 1 for n in read_taxonomy(path).sizes)


def sample_contents(path: str | Path) -> set[str]:
    """The canonical arrays (``S2``, ``EnMAP``, ``label``, ``priors``) one sample file holds,
    whatever their spelling."""
    import h5py

    with h5py.File(path, "r") as f:
        keys = set(f.keys())
    return {canon for canon, spellings in _READ_KEYS.items() if keys & set(spellings)}
