"""MATLAB scenes (``.mat`` v5 through ``scipy.io.loadmat``, v7.3 through h5py).

``FILE.mat:VARIABLE`` selects a variable. Without it, the image is the one 3-D numeric
array of the file and the label matrix is the one 2-D numeric array. MATLAB arrays are
``rows × cols × bands`` (``band_axis=-1``); v7.3 files store them transposed, which is
undone here. Nothing in a .mat file says which wavelengths the bands have:
they come from ``wavelengths=`` (array or CSV), else from a 1-D variable named
``wavelength(s)``/``wl``/``lambda`` of the right length, else from a sibling
``wavelengths*.csv`` when exactly one exists and its row count equals the band count;
otherwise they stay NaN (``attrs["wavelength_source"]`` says which applied).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cropscope.errors import DataError
from cropscope.hyperspectral.readers._scene import (
    apply_scale,
    build_scene,
    read_band_table,
    to_nanometres,
)
from cropscope.settings import check_array_memory

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["load_mat_variables", "read_matlab", "read_matlab_labels", "split_mat_path"]

_WAVELENGTH_NAMES = ("wavelength", "wavelengths", "wl", "lambda", "wavelength_nm", "wvl")


def split_mat_path(path: str | Path) -> tuple[Path, str | None]:
    """``"scene.mat:X"`` -> ``(Path("scene.mat"), "X")``; plain paths give ``None``."""
    text = str(path)
    low = text.lower()
    idx = low.rfind(".mat:")
    if idx >= 0:
        return Path(text[: idx + 4]).expanduser(), text[idx + 5 :] or None
    return Path(text).expanduser(), None


def _is_v73(path: Path) -> bool:
    with path.open("rb") as fh:
        head = fh.read(128)
    if b"MATLAB 7.3" in head:
        return True
    import h5py

    return bool(h5py.is_hdf5(path))


# bytes per element of each MATLAB class, for the memory check before loading (cell arrays,
# structs and others count as 8 bytes per element: at least a pointer each)
_MAT_CLASS_DTYPES = {
    "double": "f8", "single": "f4", "int8": "i1", "uint8": "u1", "int16": "i2",
    "uint16": "u2", "int32": "i4", "uint32": "u4", "int64": "i8", "uint64": "u8",
    "logical": "u1", "char": "u2",
}


def load_mat_variables(path: Path) -> dict[str, np.ndarray]:
    """Every numeric array of a .mat file, in MATLAB's axis order. The arrays' declared
    sizes are checked against the memory limit (:func:`~cropscope.settings.check_array_memory`)
    before anything is read."""
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    out: dict[str, np.ndarray] = {}
    if _is_v73(path):
        import h5py

        try:
            with h5py.File(path, "r") as f:
                items = [(k, v) for k, v in f.items()
                         if not k.startswith("#") and isinstance(v, h5py.Dataset)]
                check_array_memory([v for _, v in items], f"MATLAB file {path.name}")
                for key, item in items:
                    arr = item[()]
                    if isinstance(arr, np.ndarray) and arr.dtype.kind in "biuf":
                        out[key] = arr.T  # HDF5 holds MATLAB's column-major array reversed
        except OSError as exc:
            raise DataError(f"cannot read MATLAB v7.3 file {path}: {exc}") from None
        return out
    import scipy.io

    try:
        declared = scipy.io.whosmat(path)
        check_array_memory([(shape, _MAT_CLASS_DTYPES.get(cls, "f8"))
                            for _, shape, cls in declared], f"MATLAB file {path.name}")
        content = scipy.io.loadmat(path)
    except (ValueError, NotImplementedError, OSError, IndexError,
            scipy.io.matlab.MatReadError) as exc:  # (scipy parses a damaged header so)
        raise DataError(f"cannot read MATLAB file {path}: {exc}") from None
    for key, arr in content.items():
        if key.startswith("__") or not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
            continue
        out[key] = arr
    return out


def _pick(variables: dict[str, np.ndarray], name: str | None, ndim: int, path: Path,
          what: str) -> tuple[str, np.ndarray]:
    if name is not None:
        if name not in variables:
            raise DataError(f"{path} has no numeric variable {name!r}; it has {sorted(variables)}")
        return name, variables[name]
    shapes = {k: v.shape for k, v in variables.items()}
    if ndim == 2:
        candidates = [k for k, v in variables.items() if v.ndim == 2 and min(v.shape) > 1]
    else:
        candidates = [k for k, v in variables.items() if v.ndim == ndim]
    if len(candidates) != 1:
        raise DataError(
            f"{path} has {len(candidates)} {ndim}-D arrays, cannot tell which is the {what}; "
            f"name it as FILE.mat:VARIABLE (variables: {shapes})"
        )
    return candidates[0], variables[candidates[0]]


def _sibling_wavelengths(path: Path, n_bands: int) -> tuple[np.ndarray, np.ndarray | None,
                                                             Path] | None:
    files = sorted(path.parent.glob("wavelengths*.csv"))
    if len(files) != 1:
        return None
    try:
        centre, fwhm = read_band_table(files[0])
    except DataError:
        return None
    if centre.size != n_bands:
        return None
    return centre, fwhm, files[0]


def read_matlab(path: str | Path, *, variable: str | None = None, band_axis: int = -1,
                scale: float | None = None, nodata: float | None = None) -> xr.DataArray:
    """Read a hyperspectral image from a .mat file (see the module docstring)."""
    file, var_from_path = split_mat_path(path)
    variables = load_mat_variables(file)
    name, arr = _pick(variables, variable or var_from_path, 3, file, "image")
    if arr.ndim != 3:
        raise DataError(f"{file}:{name} has shape {arr.shape}; an image needs 3 dimensions")
    cube = np.moveaxis(arr, band_axis, 0)
    data = cube.astype(np.float32)
    if nodata is not None:
        data[cube == nodata] = np.nan
    if scale is not None:
        data = apply_scale(data, float(scale))
    n_bands = data.shape[0]
    wavelength = fwhm = None
    source = "none"
    for key, value in variables.items():
        if key.lower() in _WAVELENGTH_NAMES and value.size == n_bands:
            wavelength, source = to_nanometres(value.ravel()), f"variable {key}"
            break
    if wavelength is None:
        sibling = _sibling_wavelengths(file, n_bands)
        if sibling is not None:
            wavelength, fwhm, csv_path = sibling
            source = f"file {csv_path.name}"
    return build_scene(
        data, wavelength=wavelength, fwhm=fwhm, bad_band=None, sensor="unknown",
        units="unknown", source=file, fmt="matlab",
        scale_factor=1.0 if scale is None else float(scale),
        attrs={"variable": name, "wavelength_source": source, "nodata_value": nodata,
               "raw_dtype": str(arr.dtype)},
    )


def read_matlab_labels(path: str | Path, *, variable: str | None = None) -> tuple[np.ndarray,
                                                                                  dict[str, Any]]:
    """The label matrix of a .mat file and a description of where it came from."""
    file, var_from_path = split_mat_path(path)
    variables = load_mat_variables(file)
    name, arr = _pick(variables, variable or var_from_path, 2, file, "label matrix")
    if arr.ndim != 2:
        raise DataError(f"{file}:{name} has shape {arr.shape}; labels need 2 dimensions")
    return arr, {"source": str(file), "variable": name}
