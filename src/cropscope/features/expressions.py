"""User-defined spectral index expressions, and the spyndex catalogue of indices.

An expression is arithmetic on band names and numbers, e.g. ``(B8 - B4) / (B8 + B4)`` or
``2.5 * (nir - red) / (nir + 6 * red - 7.5 * blue + 1)``. It is **never evaluated as Python
code**: :func:`parse_expression` parses it with :mod:`ast` and accepts only numbers, names,
``+ - * / **``, unary ``+``/``-`` and parentheses; anything else (calls, attributes,
subscripts, comparisons, lambdas, strings, ...) is refused with a :class:`DataError` naming
the construct. Evaluation walks the checked tree with numpy ufuncs on ``float64 [N, T]``
arrays; every number is a float, so ``9 ** 9 ** 9`` overflows to infinity instead of
building a huge integer. Text longer than 2,000 characters or with more than 500 nodes is
refused.

Names, in this order:

1. a band of the set, case-insensitive; characters that cannot be in a Python name become
   ``_`` (``S2_L2A_B04`` is the band ``S2-L2A-B04``);
2. a band role (``blue``, ``green``, ``red``, ``nir``, ``swir1``, ``swir2``, ``rededge1``,
   ``coastal``, ``nir2``, ...) found through the sensor tables of
   :mod:`cropscope.features.indices` (``B4`` on Sentinel-2 is ``red``);
3. a constant given in ``constants``.

Values where an input is NaN, or where the result is not finite (division by zero), are
NaN.

**spyndex.** The Awesome Spectral Indices catalogue (``pip install 'cropscope[indices]'``,
package ``spyndex``; imported only when a catalogue index is asked for) gives 280 indices
as formulas over standard symbols. Its formulas are used as *data*: they go through the
same parser (spyndex's own ``computeIndex`` evaluates formula text with ``eval``, which is
not used here). Symbols map to roles: ``B`` blue, ``G`` green, ``R`` red, ``N`` nir,
``N2`` nir2 (Sentinel-2 B8A), ``RE1``–``RE3`` red edge, ``S1``/``S2`` SWIR 1.6/2.2 µm,
``A`` coastal; ``VV``, ``VH``, ``HH``, ``HV`` are bands of those names (``S1-SIGMA0-VV``
works); catalogue constants (``L``, ``g``, ``C1``, ...) take their default unless given.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cropscope.data.timeseries import TimeSeriesSet
from cropscope.errors import DataError
from cropscope.features.indices import band_lookup, resolve_bands

__all__ = [
    "Expression",
    "add_expressions",
    "catalogue_index",
    "evaluate_expression",
    "parse_expression",
]

MAX_LENGTH = 2000
MAX_NODES = 500

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.Div: np.divide,
    ast.Pow: np.power,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: np.positive, ast.USub: np.negative,
}
_ROLES = ("blue", "green", "red", "nir", "swir1", "swir2", "rededge1", "rededge2",
          "rededge3", "coastal", "nir2")
#: spyndex's standard band symbols → cropscope band roles
SPYNDEX_ROLES = {"A": "coastal", "B": "blue", "G": "green", "R": "red", "N": "nir",
                 "N2": "nir2", "RE1": "rededge1", "RE2": "rededge2", "RE3": "rededge3",
                 "S1": "swir1", "S2": "swir2"}
_SAR = ("VV", "VH", "HH", "HV")
_WHAT = {
    ast.Call: "a function call", ast.Attribute: "an attribute", ast.Subscript: "a subscript",
    ast.Compare: "a comparison", ast.BoolOp: "a boolean operator", ast.Lambda: "a lambda",
    ast.IfExp: "a conditional", ast.NamedExpr: "an assignment", ast.Starred: "a starred item",
    ast.JoinedStr: "an f-string", ast.List: "a list", ast.Tuple: "a tuple", ast.Dict: "a dict",
    ast.Set: "a set",
}


@dataclass(frozen=True)
class Expression:
    """A checked arithmetic expression: its text, tree and the names it uses."""

    text: str
    tree: ast.Expression
    names: tuple[str, ...]


def _short(text: str, width: int = 80) -> str:
    return text if len(text) <= width else text[:width - 3] + "..."


def _refuse(text: str, node: ast.AST) -> DataError:
    what = _WHAT.get(type(node), type(node).__name__)
    if isinstance(node, ast.BinOp | ast.UnaryOp):
        what = f"the operator {type(node.op).__name__}"
    elif isinstance(node, ast.Constant):
        what = f"the constant {node.value!r}"
    at = f" at column {node.col_offset + 1}" if hasattr(node, "col_offset") else ""
    return DataError(f"expression {_short(text)!r} may use only numbers, band names, "
                     f"+ - * / ** and parentheses; found {what}{at}")


def parse_expression(text: str) -> Expression:
    """Parse and check ``text`` (see the module doc); never runs it."""
    text = str(text).strip()
    if not text:
        raise DataError("empty expression")
    if len(text) > MAX_LENGTH:
        raise DataError(f"expression of {len(text)} characters; at most {MAX_LENGTH}")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        where = f" at column {exc.offset}" if exc.offset else ""
        raise DataError(f"cannot parse expression {_short(text)!r}: {exc.msg}{where}") \
            from None
    except (RecursionError, MemoryError, ValueError):
        raise DataError(f"cannot parse expression {_short(text)!r}: too deeply nested or "
                        "invalid") from None
    nodes = list(ast.walk(tree))
    if len(nodes) > MAX_NODES:
        raise DataError(f"expression has {len(nodes)} parts; at most {MAX_NODES}")
    names: list[str] = []
    for node in nodes:
        if isinstance(node, ast.Expression | ast.Load):
            continue
        if isinstance(node, ast.BinOp):
            if type(node.op) not in _BINARY:
                raise _refuse(text, node)
        elif isinstance(node, ast.UnaryOp):
            if type(node.op) not in _UNARY:
                raise _refuse(text, node)
        elif isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, int | float):
                raise _refuse(text, node)
        elif isinstance(node, ast.Name):
            if not isinstance(node.ctx, ast.Load):
                raise _refuse(text, node)
            names.append(node.id)
        elif not isinstance(node, ast.operator | ast.unaryop):
            raise _refuse(text, node)
    return Expression(text, tree, tuple(dict.fromkeys(names)))


def _normal(name: str) -> str:
    return re.sub(r"\W", "_", name).lower()


def _resolve(expr: Expression, ts: TimeSeriesSet, sensor: str,
             band_map: Mapping[str, str] | None, constants: Mapping[str, float],
             symbols: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Value of every name of ``expr``: a band ``[N, T]`` (float64) or a float."""
    exact = band_lookup(ts.bands)
    normal = {_normal(b): i for i, b in enumerate(ts.bands)}
    roles = resolve_bands(ts.bands, _ROLES, sensor, band_map)
    env: dict[str, Any] = {}
    for name in expr.names:
        key = name.lower()
        pos: int | None = None
        if symbols is not None:  # a catalogue formula: symbols, SAR bands, constants
            if name in symbols:
                pos = roles.get(symbols[name])
            elif name in _SAR:
                pos = exact.get(key)
        elif key in exact or key in normal:
            pos = exact.get(key, normal.get(key))
        elif key in roles:
            pos = roles[key]
        if pos is not None:
            env[name] = ts.values[:, :, pos].astype(np.float64)
        elif name in constants:
            env[name] = float(constants[name])
        else:
            role = f" (band role {symbols[name]!r})" if symbols and name in symbols else ""
            raise DataError(
                f"expression {expr.text!r}: {name!r}{role} is neither a band of the set "
                f"{list(ts.bands)} nor a band role ({', '.join(_ROLES)}) nor a constant; "
                "name the band, pass band_map={'role': 'band'} or a constant"
            )
    return env


def _run(node: ast.AST, env: Mapping[str, Any]) -> Any:
    if isinstance(node, ast.Expression):
        return _run(node.body, env)
    if isinstance(node, ast.BinOp):
        return _BINARY[type(node.op)](_run(node.left, env), _run(node.right, env))
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](_run(node.operand, env))
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return np.float64(node.value)
    if isinstance(node, ast.Name):
        return env[node.id]
    raise DataError(f"unexpected expression part {type(node).__name__}")  # checked before


def evaluate_expression(
    expression: str | Expression,
    ts: TimeSeriesSet,
    sensor: str = "sentinel2",
    band_map: Mapping[str, str] | None = None,
    constants: Mapping[str, float] | None = None,
    *,
    _symbols: Mapping[str, str] | None = None,
) -> np.ndarray:
    """The expression on every sample and step: ``float32 [N, T]`` (NaN where undefined)."""
    expr = expression if isinstance(expression, Expression) else parse_expression(expression)
    env = _resolve(expr, ts, sensor, band_map, dict(constants or {}), _symbols)
    with np.errstate(all="ignore"):
        out = np.asarray(_run(expr.tree, env), dtype=np.float64)
    out = np.broadcast_to(out, (ts.n_samples, ts.n_times)).copy()
    out[~np.isfinite(out)] = np.nan
    return out.astype(np.float32)


def catalogue_index(name: str) -> tuple[str, dict[str, float]]:
    """Formula and default constants of index ``name`` in the spyndex catalogue."""
    try:
        import spyndex  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        raise DataError(f"index {name!r} is not built in; the spyndex catalogue needs "
                        "'pip install cropscope[indices]' (package spyndex)") from None
    lookup = {k.lower(): k for k in spyndex.indices}
    key = lookup.get(str(name).lower())
    if key is None:
        raise DataError(f"unknown index {name!r}: neither built in nor in the spyndex "
                        f"catalogue ({len(lookup)} indices)")
    formula = str(spyndex.indices[key].formula)
    defaults = {k: float(c.default) for k, c in spyndex.constants.items()
                if c.default is not None}
    return formula, defaults


def add_expressions(
    ts: TimeSeriesSet,
    expressions: Mapping[str, str] | Sequence[str],
    sensor: str = "sentinel2",
    band_map: Mapping[str, str] | None = None,
    constants: Mapping[str, float] | None = None,
) -> TimeSeriesSet:
    """``ts`` with one band per expression appended.

    ``expressions``: ``{"NAME": "EXPRESSION"}``, or a list of ``"NAME=EXPRESSION"`` items
    and index names. A bare name is a built-in index (:func:`available_indices`) or one of
    the spyndex catalogue (e.g. ``"NDRE"``, ``"kNDVI"`` needs constants, ``"MSAVI"``). A
    band of that name already in the set is replaced. The mask is kept and narrowed where a
    new band is undefined.
    """
    from cropscope.features.indices import available_indices, compute_index

    items: list[tuple[str, str | None]] = []
    if isinstance(expressions, Mapping):
        items = [(str(k), str(v)) for k, v in expressions.items()]
    else:
        for item in [expressions] if isinstance(expressions, str) else expressions:
            name, sep, text = str(item).partition("=")
            items.append((name.strip(), text.strip() if sep else None))
    values, bands = ts.values, list(ts.bands)
    new: dict[str, np.ndarray] = {}
    builtin = {n.upper() for n in available_indices()}
    for name, given in items:
        if not name.isidentifier() and not re.fullmatch(r"[\w.+-]+", name):
            raise DataError(f"invalid band name {name!r} for an expression")
        if given is not None:
            new[name] = evaluate_expression(given, ts, sensor, band_map, constants)
        elif name.upper() in builtin:
            new[name] = compute_index(name, ts, sensor, band_map)
        else:
            formula, defaults = catalogue_index(name)
            new[name] = evaluate_expression(formula, ts, sensor, band_map,
                                            {**defaults, **dict(constants or {})},
                                            _symbols=SPYNDEX_ROLES)
    lower = [b.lower() for b in bands]
    extra_names, extra = [], []
    for name, col in new.items():
        if name.lower() in lower:
            values = values.copy() if values is ts.values else values
            values[:, :, lower.index(name.lower())] = col
        else:
            extra_names.append(name)
            extra.append(col)
    if extra:
        values = np.concatenate([values, np.stack(extra, axis=2)], axis=2)
    return ts.replace(values=values, bands=bands + extra_names, mask=ts.mask)
