"""Nothing a user hands cropscope runs code: a scan of the package source.

No pickle, no ``torch.load(..., weights_only=False)``, no ``eval``/``exec``, and
``import_module`` only on names from hard-coded tables (the model, network, dataset and
reader registries), never on a string read from a file.
"""

from __future__ import annotations

import ast
from pathlib import Path

import cropscope

SRC = Path(cropscope.__file__).parent
#: modules that call import_module, and why each call is safe (names from code, not data)
IMPORT_MODULE_ALLOWED = {
    "models/base.py": "built-in model table (_BUILTIN), keys checked before import",
    "models/networks.py": "built-in network table (_BUILTIN) of (module, attribute) pairs",
    "data/__init__.py": "lazy attributes of the package itself (_LAZY)",
    "data/readers/__init__.py": "lazy attributes of the package itself (_WHERE)",
    "data/registry.py": "reader functions of the hard-coded dataset registry",
}


def _sources() -> list[tuple[str, ast.Module, str]]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text()
        out.append((path.relative_to(SRC).as_posix(), ast.parse(text), text))
    return out


def test_no_pickle_eval_exec_or_unsafe_torch_load() -> None:
    found = []
    for rel, tree, _ in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names]
                mod = node.module if isinstance(node, ast.ImportFrom) else None
                if any(n.split(".")[0] in ("pickle", "cPickle", "dill", "cloudpickle",
                                           "joblib", "marshal", "shelve") for n in names) \
                        or (mod or "").split(".")[0] in ("pickle", "dill", "cloudpickle",
                                                         "marshal", "shelve"):
                    found.append(f"{rel}:{node.lineno} imports {mod or names}")
            if isinstance(node, ast.Call):
                func = node.func
                name = func.id if isinstance(func, ast.Name) else \
                    func.attr if isinstance(func, ast.Attribute) else ""
                if name in ("eval", "exec", "compile") and isinstance(func, ast.Name):
                    found.append(f"{rel}:{node.lineno} calls {name}()")
                if name == "load" and isinstance(func, ast.Attribute) and \
                        isinstance(func.value, ast.Name) and func.value.id == "torch":
                    kw = {k.arg: k.value for k in node.keywords}
                    safe = isinstance(kw.get("weights_only"), ast.Constant) and \
                        kw["weights_only"].value is True
                    if not safe:
                        found.append(f"{rel}:{node.lineno} torch.load without "
                                     "weights_only=True")
                if name == "load" and isinstance(func, ast.Attribute) and \
                        isinstance(func.value, ast.Name) and func.value.id == "np":
                    kw = {k.arg: k.value for k in node.keywords}
                    if isinstance(kw.get("allow_pickle"), ast.Constant) and \
                            kw["allow_pickle"].value is True:
                        found.append(f"{rel}:{node.lineno} np.load(allow_pickle=True)")
                if name in ("read_pickle", "from_pickle"):
                    found.append(f"{rel}:{node.lineno} calls {name}")
    assert not found, "unsafe deserialisation or code execution in src/:\n" + "\n".join(found)


def test_import_module_only_in_registries() -> None:
    found = []
    for rel, tree, _ in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.id if isinstance(func, ast.Name) else \
                    func.attr if isinstance(func, ast.Attribute) else ""
                if name in ("import_module", "__import__") and rel not in IMPORT_MODULE_ALLOWED:
                    found.append(f"{rel}:{node.lineno} calls {name}")
    assert not found, ("import_module outside the registries (a name from a data file must "
                       "never be imported):\n" + "\n".join(found))


def test_no_factory_strings_in_run_formats() -> None:
    """The old 'package.module:callable' model factories are gone from every loader."""
    hits = [rel for rel, _, text in _sources()
            if "package.module:callable" in text or "rpartition(\":\")" in text]
    assert not hits, f"factory strings still accepted in {hits}"
