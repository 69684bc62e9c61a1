"""Self-contained HTML reports: a map with its legend, areas and accuracy; an evaluation.

Every image is embedded (base64 PNG drawn with matplotlib, Agg) and the style sheet is
inline, so a report is one file that opens from disk, e-mail or a USB stick without a network
(no CDN, no tiles); only the optional basemap below the map quick-look is fetched, by a
script after the page has loaded, and it stays hidden when offline. Sections:

- :func:`map_report`: the map quick-look with a legend in the map's own colours (read from
  the labels raster's colour table), the uncertainty quick-look when the map job's
  ``*_uncertainty.tif`` is beside it, mapped areas per class (ellipsoidal pixel areas), and,
  with an assessment (:class:`~cropscope.assessment.AreaEstimate` or its JSON), estimated
  areas with 95 % confidence intervals, overall / user's / producer's accuracy ± CI and the
  error matrix; with samples, the mean temporal profile of each class (± 1 SD).
- :func:`evaluation_report`: the scores, per-class precision / recall / F1 and the
  confusion matrix of an evaluation (``cropscope evaluate --json``'s object).

Reports are written atomically. Quick-looks are drawn from the rasters' overviews (at most
~1,000 pixels a side), so memory does not depend on the map's size.
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from cropscope.errors import DataError

__all__ = ["evaluation_report", "map_report"]

_SIDE = 1000
_NODATA = 255
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;
max-width:1100px;color:#222;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;
border-bottom:1px solid #ddd;padding-bottom:.2rem}
.meta{color:#666;font-size:.9rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem}
th,td{border:1px solid #ccc;padding:.25rem .55rem;text-align:right}
th{background:#f3f3f3}td.name,th.name{text-align:left}
.swatch{display:inline-block;width:1rem;height:1rem;border:1px solid #333;
vertical-align:middle;margin-right:.4rem}
.legend{list-style:none;padding:0;columns:2}.legend li{margin:.15rem 0}
figure{margin:.5rem 0}img{max-width:100%;height:auto;border:1px solid #ddd}
.note{color:#555;font-size:.85rem}
"""


# ------------------------------------------------------------------------------ helpers
def _e(value: Any) -> str:
    return html.escape(str(value))


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _read_small(path: Path, band: int = 1) -> tuple[np.ndarray, dict[str, Any]]:
    """A raster band at reduced resolution (nearest: class codes stay codes), with the
    raster's ``height``, ``width``, ``crs`` (text) and its lon/lat ``bounds`` (south, west,
    north, east; None without a CRS)."""
    import rasterio
    from rasterio.enums import Resampling

    with rasterio.open(path) as src:
        factor = max(1, math.ceil(max(src.height, src.width) / _SIDE))
        shape = (math.ceil(src.height / factor), math.ceil(src.width / factor))
        meta = {"height": src.height, "width": src.width,
                "crs": src.crs.to_string() if src.crs else "no CRS", "bounds": None}
        if src.crs is not None:
            from rasterio.errors import RasterioError
            from rasterio.warp import transform_bounds

            try:  # no basemap for a CRS that does not convert to lon/lat
                w, s_, e, n = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
                meta["bounds"] = (s_, w, n, e)
            except (ValueError, RasterioError):
                meta["bounds"] = None
        return src.read(band, out_shape=shape, resampling=Resampling.nearest), meta


def _map_classes(path: Path) -> tuple[list[str], dict[int, tuple[int, int, int]]]:
    """The map's classes and their colours: its colour table, else the name-keyed colours
    the map products use (:mod:`cropscope.mapping.styles`)."""
    import rasterio

    from cropscope.mapping.relabel import read_map_classes
    from cropscope.mapping.styles import colour_table

    classes = read_map_classes(path)
    with rasterio.open(path) as src:
        try:
            table = dict(src.colormap(1))
        except ValueError:  # no colour table
            table = {}
    if not all(i in table for i in range(len(classes))):
        table = dict(colour_table(classes))
    return classes, {i: (int(table[i][0]), int(table[i][1]), int(table[i][2]))
                     for i in range(len(classes))}


def _hex(rgb: Sequence[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb[:3])


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], cls: str = "") -> str:
    head = "".join(f'<th class="{"name" if i == 0 else ""}">{_e(h)}</th>'
                   for i, h in enumerate(header))
    body = "".join(
        "<tr>" + "".join(f'<td class="{"name" if i == 0 else ""}">{c}</td>'
                         for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _num(v: Any, fmt: str = ",.1f") -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return _e(v)
    return "–" if not math.isfinite(f) else format(f, fmt)


def _page(title: str, sections: Sequence[str]) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    from cropscope import __version__

    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{_e(title)}</h1><p class=\"meta\">cropscope {_e(__version__)} · {when}</p>"
            + "".join(sections)
            + '<script>document.body.dataset.rendered = "yes";</script></body></html>')


def _write(text: str, out: Path) -> Path:
    from cropscope.io import atomic_path

    if out.suffix.lower() not in (".html", ".htm"):
        raise DataError(f"--out {out}: a report is an .html file")
    with atomic_path(out) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return out


# ------------------------------------------------------------------------------ sections
def _map_section(labels: Path, classes: list[str], cmap: dict[int, tuple[int, int, int]],
                 areas: Mapping[str, Mapping[str, float]]) -> str:
    plt = _plt()
    codes, meta = _read_small(labels)
    rgb = np.full((*codes.shape, 3), 255, dtype=np.uint8)
    for i in range(len(classes)):
        rgb[codes == i] = cmap[i]
    fig, ax = plt.subplots(figsize=(8, 8 * codes.shape[0] / max(codes.shape[1], 1)), dpi=110)
    ax.imshow(rgb, interpolation="nearest")
    ax.set_axis_off()
    img = _png(fig)
    basemap = "" if meta["bounds"] is None else _basemap(rgb, codes != _NODATA, meta["bounds"])
    legend = "".join(
        f'<li><span class="swatch" style="background:{_hex(cmap[i])}"></span>{_e(c)}'
        f' <span class="note">({areas.get(c, {}).get("share", 0.0):.1%})</span></li>'
        for i, c in enumerate(classes))
    return (f'<h2 id="map">Map</h2><p class="meta">{_e(labels.name)} · {meta["height"]} × '
            f"{meta['width']} pixels · {_e(meta['crs'])}</p><figure><img alt=\"map quick-look\" "
            f'src="{img}"></figure><ul class="legend" id="legend">{legend}</ul>{basemap}')


def _basemap(rgb: np.ndarray, valid: np.ndarray, bounds: tuple[float, ...]) -> str:
    """The map over OpenStreetMap tiles (Leaflet), shown only when the viewer is online.

    Leaflet and the tiles are fetched by a script that runs after the page has loaded; when
    they cannot be fetched (offline) the section stays hidden and the static quick-look above
    is the map. The overlay is the quick-look stretched to the map's lon/lat bounds.
    """
    import json

    plt = _plt()
    rgba = np.dstack([rgb, np.where(valid, 200, 0).astype(np.uint8)])
    buf = io.BytesIO()
    plt.imsave(buf, rgba, format="png")
    overlay = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    south, west, north, east = bounds
    box = json.dumps([[south, west], [north, east]])
    return ('<div id="basemap-section" hidden><h2>Map over OpenStreetMap</h2>'
            '<div id="basemap" style="height:460px;border:1px solid #ddd"></div></div>'
            "<script>window.addEventListener('load', function () {"
            "var base = 'https://unpkg.com/leaflet@1.9.4/dist/';"
            "var css = document.createElement('link'); css.rel = 'stylesheet';"
            "css.href = base + 'leaflet.css'; document.head.appendChild(css);"
            "var js = document.createElement('script'); js.src = base + 'leaflet.js';"
            "js.onload = function () { try {"
            "document.getElementById('basemap-section').hidden = false;"
            "var m = L.map('basemap');"
            "L.tileLayer('https://tile.openstreetmap.org/{z}/{x}/{y}.png', {maxZoom: 18,"
            " attribution: '&copy; OpenStreetMap contributors'}).addTo(m);"
            f"var b = {box}; L.imageOverlay('{overlay}', b).addTo(m); m.fitBounds(b);"
            "} catch (e) { document.getElementById('basemap-section').hidden = true; } };"
            "js.onerror = function () {};"  # offline: the static quick-look is the map
            "document.head.appendChild(js); });</script>")


def _uncertainty_section(path: Path) -> str:
    plt = _plt()
    vals, _ = _read_small(path)
    shown = np.ma.masked_equal(vals, _NODATA).astype(np.float64) / 254.0
    fig, ax = plt.subplots(figsize=(8, 8 * vals.shape[0] / max(vals.shape[1], 1)), dpi=110)
    im = ax.imshow(shown, cmap="magma", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    fig.colorbar(im, ax=ax, shrink=0.7, label="normalised entropy (0 certain, 1 uniform)")
    return (f'<h2 id="uncertainty">Uncertainty</h2><figure><img alt="uncertainty" '
            f'src="{_png(fig)}"></figure>')


def _areas_section(areas: Mapping[str, Mapping[str, float]]) -> str:
    rows = [[_e(c), _num(v.get("pixels"), ",.0f"), _num(v.get("area_ha")),
             _num(100 * float(v.get("share", 0.0)), ".1f")] for c, v in areas.items()]
    return ('<h2 id="mapped-areas">Mapped areas</h2>'
            + _table(["class", "pixels", "hectares", "share %"], rows, "areas")
            + '<p class="note">Pixel counts of the map (each pixel\'s area on the ellipsoid). '
              "They carry the map's errors: report the estimated areas of a reference sample "
              "instead.</p>")


def _assessment_sections(res: Mapping[str, Any]) -> str:
    classes = list(res["classes"])
    oa = res["overall_accuracy"]
    rows = []
    for c in classes:
        a, u, p = res["area_ha"][c], res["users_accuracy"][c], res["producers_accuracy"][c]
        rows.append([_e(c), _num(res.get("mapped_area_ha", {}).get(c)),
                     _num(a["estimate"]), "± " + _num(a["ci95"]),
                     _num(u["estimate"], ".3f"), "± " + _num(u["ci95"], ".3f"),
                     _num(p["estimate"], ".3f"), "± " + _num(p["ci95"], ".3f")])
    table = _table(["class", "mapped ha", "estimated ha", "95 % CI", "user's acc.", "95 % CI",
                    "producer's acc.", "95 % CI"], rows, "estimates")
    counts = np.asarray(res["error_matrix_counts"])
    prop = np.asarray(res["error_matrix_proportions"])
    cm_rows = [[_e(c)] + [f"{int(counts[i, j])}<br><span class=\"note\">"
                          f"{prop[i, j]:.4f}</span>" for j in range(len(classes))]
               for i, c in enumerate(classes)]
    cm = _table(["map \\ reference", *classes], cm_rows, "error-matrix")
    return (f'<h2 id="accuracy">Accuracy and estimated areas</h2><p>Overall accuracy '
            f"<b>{oa['estimate']:.3f} ± {oa['ci95']:.3f}</b> (95 % CI) from "
            f"{int(res['n_points'])} reference points; strata: {_e(res['strata'])}; "
            f"total area {_num(res['total_area_ha'])} ha.</p>{table}"
            f'<p class="note">Stratified estimators of Olofsson et al. (2014) / Stehman '
            f"(2014).</p><h2 id=\"error-matrix\">Error matrix</h2><p class=\"note\">Sample "
            f"counts, and below each the estimated proportion of the area.</p>{cm}")


def _profiles_section(samples: Any, max_bands: int = 2) -> str:
    """Mean ± 1 SD of each class's series (first bands), from a TimeSeriesSet."""
    plt = _plt()
    values = np.asarray(samples.values, dtype=np.float64)
    labels = np.asarray(samples.labels)
    bands = list(samples.bands)[:max_bands]
    fig, axes = plt.subplots(1, len(bands), figsize=(5.5 * len(bands), 3.6), dpi=110,
                             squeeze=False)
    t = np.arange(values.shape[1])
    for b, ax in enumerate(axes[0]):
        for k, name in enumerate(samples.classes):
            sel = values[labels == k, :, b]
            if not len(sel):
                continue
            with warnings.catch_warnings():  # an all-gap date: NaN, drawn as a gap
                warnings.simplefilter("ignore", RuntimeWarning)
                m, s = np.nanmean(sel, axis=0), np.nanstd(sel, axis=0)
            line, = ax.plot(t, m, label=str(name))
            ax.fill_between(t, m - s, m + s, alpha=0.15, color=line.get_color())
        ax.set_title(str(bands[b]))
        ax.set_xlabel("time step")
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return (f'<h2 id="profiles">Class temporal profiles</h2><figure><img alt="profiles" '
            f'src="{_png(fig)}"></figure><p class="note">{samples.n_samples} samples; '
            "mean ± 1 SD per class.</p>")


# ------------------------------------------------------------------------------ public
def _check_assessment_matches(found: dict[str, Any], labels: Path,
                              areas: dict[str, dict[str, float]]) -> None:
    """Refuse an assessment of another map: its mapped areas per class (pixel counts of the
    map it assessed) must be those of ``labels``, to 0.5 % or one hectare."""
    mapped = found.get("mapped_area_ha")
    if not isinstance(mapped, dict):
        return  # an assessment without mapped areas: nothing to compare
    for name, ha in mapped.items():
        ours = areas.get(str(name), {}).get("area_ha", 0.0)
        if not isinstance(ha, int | float) or abs(float(ha) - ours) > max(1.0, 0.005 * ours):
            raise DataError(f"the assessment is not of {labels.name}: it has {ha} ha of "
                            f"{name!r} mapped, the map {ours:,.1f} ha; give the assessment "
                            "made for this map (cropscope accuracy --map ...)")


def map_report(labels: str | Path, out: str | Path, *, assessment: Any = None,
               samples: Any = None, title: str | None = None) -> Path:
    """An HTML report of the map ``labels`` (see the module doc) written to ``out``.

    ``assessment``: an :class:`~cropscope.assessment.AreaEstimate`, its ``to_dict()`` or
    the path of its ``assessment.json``; ``samples``: a labelled
    :class:`~cropscope.data.TimeSeriesSet` for the temporal profiles.
    """
    from cropscope.data.pixel_areas import raster_class_areas

    labels = Path(labels)
    if not labels.is_file():
        raise DataError(f"map not found: {labels}")
    classes, cmap = _map_classes(labels)
    pixels, hectares, _ = raster_class_areas(labels)
    total = float(pixels[: len(classes)].sum()) or 1.0
    areas = {c: {"pixels": float(pixels[i]) if i < len(pixels) else 0.0,
                 "area_ha": float(hectares[i]) if i < len(hectares) else 0.0,
                 "share": float(pixels[i]) / total if i < len(pixels) else 0.0}
             for i, c in enumerate(classes)}
    sections = [_map_section(labels, classes, cmap, areas)]
    unc = labels.with_name(f"{labels.stem}_uncertainty.tif")
    if unc.is_file():
        sections.append(_uncertainty_section(unc))
    sections.append(_areas_section(areas))
    if assessment is not None:
        found = _assessment_dict(assessment)
        with _layout_errors("assessment", "cropscope accuracy --out"):
            _check_assessment_matches(found, labels, areas)
            sections.append(_assessment_sections(found))
    if samples is not None:
        sections.append(_profiles_section(samples))
    return _write(_page(title or f"Crop map report: {labels.stem}", sections), Path(out))


def _result_dict(obj: Any, what: str, hint: str, folder_file: str | None = None
                 ) -> dict[str, Any]:
    """A result given as an object with ``to_dict()``, a mapping, or the path of its JSON
    file (a folder holding ``folder_file``); it must hold ``overall_accuracy``."""
    if hasattr(obj, "to_dict"):
        return dict(obj.to_dict())
    if isinstance(obj, Mapping):
        return dict(obj)
    from cropscope.io import read_json

    path = Path(obj)
    if folder_file is not None and path.is_dir():
        path = path / folder_file
    if not path.is_file():
        raise DataError(f"{what} not found: {path}")
    data = read_json(path)
    if not isinstance(data, dict) or "overall_accuracy" not in data:
        raise DataError(f"{path} is not an {what} ({hint})")
    return data


def _assessment_dict(assessment: Any) -> dict[str, Any]:
    return _result_dict(assessment, "assessment", "cropscope accuracy --out",
                        "assessment.json")


def evaluation_report(result: Any, out: str | Path, *, title: str | None = None) -> Path:
    """An HTML report of an evaluation (an ``EvaluationResult``, its ``to_dict()`` or the
    path of ``cropscope evaluate --json``'s output / a run's ``metrics.json``)."""
    data = _evaluation_dict(result)
    with _layout_errors("evaluation", "cropscope evaluate --json"):
        sections = _evaluation_sections(data)
    return _write(_page(title or "Evaluation report", sections), Path(out))


def _evaluation_sections(data: Mapping[str, Any]) -> list[str]:
    classes = list(data.get("classes", []))
    keys = [k for k in ("overall_accuracy", "macro_f1", "weighted_f1", "kappa", "miou",
                        "average_accuracy", "n_samples") if k in data]
    summary = data.get("summary", {})
    rows = [[_e(k), _num(data[k], ".4f" if k != "n_samples" else ",.0f"),
             (f"± {summary[k]['std']:.4f} over folds" if k in summary else "")]
            for k in keys]
    scores = _table(["score", "value", ""], rows, "scores")
    per = [[_e(p["class"]), _num(p["precision"], ".3f"), _num(p["recall"], ".3f"),
            _num(p["f1"], ".3f"), _num(p["support"], ",.0f")]
           for p in data.get("per_class", [])]
    per_table = _table(["class", "precision", "recall", "F1", "support"], per, "per-class")
    cm = np.asarray(data.get("confusion_matrix", []))
    cm_html = ""
    if cm.size and len(classes) == len(cm):
        cm_rows = [[_e(c)] + [str(int(v)) for v in cm[i]] for i, c in enumerate(classes)]
        cm_html = ('<h2 id="confusion">Confusion matrix</h2><p class="note">rows = reference, '
                   "columns = prediction</p>"
                   + _table(["reference \\ predicted", *classes], cm_rows, "confusion"))
    config = data.get("config", {})
    meta = ", ".join(f"{_e(k)}: {_e(v)}" for k, v in config.items()
                     if isinstance(v, str | int | float)) if isinstance(config, dict) else ""
    return [f'<h2 id="scores">Scores</h2><p class="meta">{meta}</p>{scores}',
            f'<h2 id="per-class">Per class</h2>{per_table}', cm_html]


@contextlib.contextmanager
def _layout_errors(what: str, writer: str) -> Iterator[None]:
    """A result file edited by hand (a list where a number goes, a key missing) is one
    :class:`DataError`, not the ``KeyError``/``TypeError`` of the section that meets it."""
    try:
        yield
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise DataError(f"the {what} does not have the layout '{writer}' writes "
                        f"({type(exc).__name__}: {exc})") from None


def _evaluation_dict(result: Any) -> dict[str, Any]:
    return _result_dict(result, "evaluation", "cropscope evaluate --json")
