"""Spectral index expressions: the parser refuses code, evaluation equals the numpy formula,
names resolve to bands, roles and constants; the spyndex catalogue through the same parser."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from cropscope.data import TimeSeriesSet
from cropscope.errors import DataError
from cropscope.features import build_features
from cropscope.features.expressions import (
    add_expressions,
    evaluate_expression,
    parse_expression,
)
from tests.conftest import make_toy_set


def s2_set() -> TimeSeriesSet:
    ts = make_toy_set(n_per_class=4, bands=("B2", "B3", "B4", "B8"), seed=3)
    return ts.replace(values=np.abs(ts.values) + 0.05)


@pytest.mark.parametrize(("text", "what"), [
    ("__import__('os').system('true')", "function call"),
    ("open('/etc/passwd')", "function call"),
    ("B8.__class__", "attribute"),
    ("B8[0]", "subscript"),
    ("B8 if B4 else 1", "conditional"),
    ("B8 < B4", "comparison"),
    ("B8 and B4", "boolean operator"),
    ("lambda: 1", "lambda"),
    ("'text'", "constant 'text'"),
    ("True + B8", "constant True"),
    ("1j * B8", "constant 1j"),
    ("B8 // 2", "FloorDiv"),
    ("B8 % 2", "Mod"),
    ("B8 @ B4", "MatMult"),
    ("~B8", "Invert"),
    ("[B8, B4]", "list"),
    ("(x := 3)", "assignment"),
    ("f'{B8}'", "f-string"),
])
def test_parser_refuses_anything_but_arithmetic(text: str, what: str) -> None:
    with pytest.raises(DataError, match="may use only numbers") as exc:
        parse_expression(text)
    assert what in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("text", ["", "B8 +", "(" * 1000 + "1" + ")" * 1000, "x" * 2001,
                                  "+".join(["B8"] * 300)])
def test_parser_refuses_broken_or_huge_text(text: str) -> None:
    with pytest.raises(DataError):
        parse_expression(text)


def test_evaluation_equals_numpy() -> None:
    ts = s2_set()
    b2, b4, b8 = (ts.band(b).astype(np.float64) for b in ("B2", "B4", "B8"))
    got = evaluate_expression("2.5 * (B8 - B4) / (B8 + 6 * B4 - 7.5 * B2 + 1)", ts)
    np.testing.assert_allclose(got, 2.5 * (b8 - b4) / (b8 + 6 * b4 - 7.5 * b2 + 1), rtol=1e-5)
    got = evaluate_expression("-(nir - red) ** 2 / +2", ts)  # roles: nir = B8, red = B4
    np.testing.assert_allclose(got, -((b8 - b4) ** 2) / 2, rtol=1e-5)
    got = evaluate_expression("k * b8", ts, constants={"k": 3.0})  # case-insensitive bands
    np.testing.assert_allclose(got, 3 * b8, rtol=1e-6)
    huge = evaluate_expression("9 ** 9 ** 9 + B8", ts)  # float overflow, no big integer
    assert np.isnan(huge).all()


def test_undefined_values_and_unknown_names() -> None:
    ts = s2_set()
    values = ts.values.copy()
    values[0, 0, ts.bands.index("B4")] = np.nan
    values[1, 0, ts.bands.index("B4")] = -values[1, 0, ts.bands.index("B8")]
    ts = ts.replace(values=values)
    nd = evaluate_expression("(B8 - B4) / (B8 + B4)", ts)
    assert np.isnan(nd[0, 0]) and np.isnan(nd[1, 0]) and np.isfinite(nd[2:]).all()
    with pytest.raises(DataError, match="'swir9' is neither a band"):
        evaluate_expression("B8 / swir9", ts)


def test_prefixed_band_names() -> None:
    ts = s2_set()
    ts = ts.replace(bands=[f"S2-L2A-{b[0]}0{b[1]}" for b in ts.bands])  # S2-L2A-B08
    by_identifier = evaluate_expression("(S2_L2A_B08 - S2_L2A_B04) / (S2_L2A_B08 + S2_L2A_B04)",
                                        ts)
    by_role = evaluate_expression("(nir - red) / (nir + red)", ts)
    np.testing.assert_allclose(by_identifier, by_role)


def test_add_expressions_and_feature_step() -> None:
    ts = s2_set()
    out = add_expressions(ts, ["nd=(B8-B4)/(B8+B4)", "NDVI"])
    assert out.bands == [*ts.bands, "nd", "NDVI"]
    np.testing.assert_allclose(out.band("nd"), out.band("NDVI"), rtol=1e-6)
    replaced = add_expressions(out, {"nd": "B8 * 0 + 1"})
    assert replaced.bands == out.bands and np.all(replaced.band("nd") == 1)
    x, names = build_features(ts, ["expr:nd=(B8-B4)/(B8+B4)", "values"])
    assert names[-ts.n_times:] == [f"nd_t{i:02d}" for i in range(ts.n_times)]
    ref = np.asarray(out.band("nd"))
    np.testing.assert_allclose(x[:, -ts.n_times:], ref, rtol=1e-5)
    with pytest.raises(DataError, match="expr:NAME=EXPRESSION"):
        build_features(ts, ["expr:nd", "values"])
    with pytest.raises(DataError, match="may use only"):
        build_features(ts, ["expr:nd=__import__('os')", "values"])


@pytest.mark.skipif(importlib.util.find_spec("spyndex") is None,
                    reason="spyndex (cropscope[indices]) not installed")
def test_spyndex_catalogue_through_the_safe_parser() -> None:
    ts = s2_set()
    b2, b3, b4, b8 = (ts.band(b).astype(np.float64) for b in ("B2", "B3", "B4", "B8"))
    out = add_expressions(ts, ["GNDVI", "MSAVI", "EVI"])
    np.testing.assert_allclose(out.band("GNDVI"), (b8 - b3) / (b8 + b3), rtol=1e-5)
    msavi = 0.5 * (2.0 * b8 + 1 - np.sqrt((2 * b8 + 1) ** 2 - 8 * (b8 - b4)))
    np.testing.assert_allclose(out.band("MSAVI"), msavi, rtol=1e-5)
    # EVI is built in (same constants as the catalogue's g=2.5, C1=6, C2=7.5, L=1)
    np.testing.assert_allclose(out.band("EVI"),
                               2.5 * (b8 - b4) / (b8 + 6 * b4 - 7.5 * b2 + 1), rtol=1e-5)
    x, _ = build_features(ts, ["index:GNDVI", "values"])
    assert x.shape[1] == (ts.n_bands + 1) * ts.n_times
    with pytest.raises(DataError, match="band role 'swir1'"):
        add_expressions(ts, ["NBR2"])
    with pytest.raises(DataError, match="unknown index"):
        add_expressions(ts, ["NOT_AN_INDEX_XYZ"])
