"""Class colours and GIS styling of map products, keyed to class *names*.

A colour follows its class, not its position: ``maize`` is the same yellow in every map,
whatever the order or number of classes. :func:`class_colours` takes, in order, the user's
overrides, a small table of common land-cover and crop names (FAO/LUCAS-like conventions:
cereals in yellows and browns, oilseeds in greens, water blue, forest dark green...), and
for any other name a colour from a 20-colour qualitative palette chosen by a stable hash of
the name (collisions among many classes are possible; override them).

GIS side files written beside a labels GeoTIFF so QGIS, ArcGIS and GDAL show class names:

- :func:`write_category_names`: GDAL category names of band 1 in the PAM side file
  ``<map>.tif.aux.xml`` (TIFF has no field for them; GDAL, QGIS and rioxarray read the
  side file with the image);
- :func:`write_qgis_style`: ``<map>.qml``, a paletted/unique-values renderer with each
  class's colour and name (QGIS loads a ``.qml`` of the same name automatically).
"""

from __future__ import annotations

import hashlib
import html
from collections.abc import Mapping, Sequence
from pathlib import Path

from cropscope.errors import DataError

__all__ = [
    "NAMED_COLOURS",
    "class_colours",
    "colour_table",
    "write_category_names",
    "write_qgis_style",
]

#: colours of common class names (lower case, ``-``/space as ``_``)
NAMED_COLOURS: dict[str, str] = {
    "maize": "#f5c518", "corn": "#f5c518", "soy": "#2e8b57", "soybean": "#2e8b57",
    "soy_corn": "#9acd32", "soy_cotton": "#66cdaa", "soy_millet": "#8fbc8f",
    "soy_fallow": "#bdb76b", "soy_sunflower": "#daa520", "fallow_cotton": "#d2b48c",
    "cotton": "#fff0f5", "wheat": "#deb887", "winter_wheat": "#deb887", "barley": "#c9a063",
    "rye": "#b8860b", "oats": "#eedd82", "rice": "#00ced1", "sorghum": "#cd853f",
    "millet": "#e9c46a", "rapeseed": "#ffd700", "sunflower": "#ffa500", "potato": "#a0522d",
    "potatoes": "#a0522d", "sugar_beet": "#c71585", "beet": "#c71585",
    "sugarcane": "#7fff00", "sugar_cane": "#7fff00", "vegetables": "#ff6347",
    "grassland": "#b5e61d", "grass": "#b5e61d", "grass_fodder": "#b5e61d",
    "pasture": "#d4e157", "meadow": "#c5e1a5", "cerrado": "#c2b280", "shrubland": "#a68b5b",
    "forest": "#1b5e20", "trees": "#1b5e20", "tree_cover": "#1b5e20",
    "water": "#1f78b4", "wetland": "#4fb0c6", "urban": "#8c2d04", "built_up": "#8c2d04",
    "bare": "#d9d9d9", "bare_soil": "#d9d9d9", "fallow": "#e6d5b8", "other": "#9e9e9e",
    "no_crop": "#bdbdbd", "non_crop": "#bdbdbd", "no_cropland": "#bdbdbd",
    "cropland": "#ffcc33", "background": "#000000",
}

_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
            "#7f7f7f", "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896",
            "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5")


def _key(name: str) -> str:
    return str(name).strip().lower().replace("-", "_").replace(" ", "_")


def _check_hex(value: str, name: str) -> str:
    v = str(value).strip()
    if len(v) != 7 or v[0] != "#" or any(c not in "0123456789abcdefABCDEF" for c in v[1:]):
        raise DataError(f"colour of {name!r} must be '#rrggbb', got {value!r}")
    return v.lower()


def class_colours(classes: Sequence[str], overrides: Mapping[str, str] | None = None
                  ) -> dict[str, str]:
    """``{class: "#rrggbb"}`` for ``classes`` (see the module doc)."""
    given = {str(k): _check_hex(v, str(k)) for k, v in (overrides or {}).items()}
    unknown = sorted(set(given) - {str(c) for c in classes})
    if unknown:
        raise DataError(f"colours given for {unknown}, which are not classes of the map "
                        f"({list(classes)})")
    out = {}
    for c in classes:
        name = str(c)
        if name in given:
            out[name] = given[name]
        elif _key(name) in NAMED_COLOURS:
            out[name] = NAMED_COLOURS[_key(name)]
        else:
            h = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)
            out[name] = _PALETTE[h % len(_PALETTE)]
    return out


def colour_table(classes: Sequence[str], overrides: Mapping[str, str] | None = None
                 ) -> dict[int, tuple[int, int, int, int]]:
    """A GeoTIFF colour table ``code -> (r, g, b, 255)`` from :func:`class_colours`."""
    cols = class_colours(classes, overrides)
    return {i: (int(cols[str(c)][1:3], 16), int(cols[str(c)][3:5], 16),
                int(cols[str(c)][5:7], 16), 255) for i, c in enumerate(classes)}


def write_category_names(raster: str | Path, classes: Sequence[str]) -> Path:
    """``<raster>.aux.xml`` with band 1's category names (code ``i`` → ``classes[i]``),
    merged into an existing side file's first band entry when there is one."""
    import xml.etree.ElementTree as ET

    from cropscope.io import atomic_path

    path = Path(f"{raster}.aux.xml")
    if path.is_file():
        try:
            root = ET.parse(path).getroot()
        except ET.ParseError:
            root = ET.Element("PAMDataset")
    else:
        root = ET.Element("PAMDataset")
    band = next((b for b in root.findall("PAMRasterBand") if b.get("band") == "1"), None)
    if band is None:
        band = ET.SubElement(root, "PAMRasterBand", band="1")
    for old in band.findall("CategoryNames"):
        band.remove(old)
    names = ET.SubElement(band, "CategoryNames")
    for c in classes:
        ET.SubElement(names, "Category").text = str(c)
    with atomic_path(path) as tmp:
        ET.ElementTree(root).write(tmp, encoding="UTF-8", xml_declaration=False)
    return path


def write_qgis_style(raster: str | Path, classes: Sequence[str],
                     colours: Mapping[str, str] | None = None) -> Path:
    """``<raster stem>.qml``: QGIS paletted renderer of band 1 with each class's colour and
    name; nodata (255) stays transparent."""
    from cropscope.io import atomic_path

    cols = class_colours(classes, colours)
    entries = "".join(
        f'<paletteEntry value="{i}" color="{cols[str(c)]}" alpha="255" '
        f'label="{html.escape(str(c), quote=True)}"/>'
        for i, c in enumerate(classes))
    qml = ('<!DOCTYPE qgis PUBLIC \'http://mrcc.com/qgis.dtd\' \'SYSTEM\'>\n'
           '<qgis version="3.34" styleCategories="AllStyleCategories">'
           '<pipe><rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1">'
           f"<colorPalette>{entries}</colorPalette></rasterrenderer>"
           '<brightnesscontrast brightness="0" contrast="0"/>'
           '<huesaturation saturation="0" colorizeOn="0"/></pipe>'
           "<blendMode>0</blendMode></qgis>\n")
    path = Path(raster).with_suffix(".qml")
    with atomic_path(path) as tmp:
        tmp.write_text(qml, encoding="utf-8")
    return path
