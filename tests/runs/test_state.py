"""Training state as safetensors + JSON: exact round trips, strict validation, no pickle."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from safetensors.torch import save_file  # noqa: E402

from cropscope.errors import ModelError  # noqa: E402
from cropscope.runs.state import load_state, save_state, state_paths  # noqa: E402


def _optimiser_state() -> tuple[torch.nn.Module, dict]:
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, betas=(0.8, 0.9))
    net(torch.randn(5, 3)).sum().backward()
    opt.step()
    return net, opt.state_dict()


def _equal(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(  # type: ignore[arg-type]
            _equal(x, y) for x, y in zip(a, b, strict=True))  # type: ignore[call-overload]
    return type(a) is type(b) and a == b


def test_round_trip_is_exact(tmp_path: Path) -> None:
    net, opt = _optimiser_state()
    weight = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    state = {
        "model": net.state_dict(),
        "optimizer": opt,  # integer keys, tuples (betas), 0-d step tensors
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),  # noqa: NPY002
                "python": random.getstate()},
        "epoch": 3, "best": -math.inf, "nan": math.nan, "flags": [True, None, "x", 2.5],
        "shared": [weight, weight[0], weight.t()],  # views of one storage, non-contiguous
        "arrays": {"u32": np.arange(5, dtype=np.uint32), "f64": np.eye(2),
                   "bool": np.array([True, False])},
        "__reserved": {"__tensor__": "not a placeholder"},
        "empty": {}, "half": torch.ones(2, dtype=torch.bfloat16),
    }
    save_state(tmp_path / "last", state)
    st, js = state_paths(tmp_path / "last")
    assert st.name == "last.safetensors" and js.name == "last.json"
    back = load_state(tmp_path / "last")
    assert _equal(state, back)
    fresh = torch.optim.AdamW(net.parameters())
    fresh.load_state_dict(back["optimizer"])  # usable as is
    np.random.set_state(back["rng"]["numpy"])  # noqa: NPY002
    random.setstate(back["rng"]["python"])
    torch.set_rng_state(back["rng"]["torch"])
    assert not list(tmp_path.glob("*.tmp"))
    text = js.read_text()
    assert "NaN" not in text and "Infinity" not in text  # strict JSON


def test_unsupported_values_are_refused(tmp_path: Path) -> None:
    for bad in ({"a": {1, 2}}, {"a": object()}, {"a": np.array(["x"])},
                {"a": {(1, 2): 3}}, {"a": np.array([1 + 2j])}):
        with pytest.raises(TypeError):
            save_state(tmp_path / "s", bad)


def _rewrite(tmp_path: Path, change) -> None:  # type: ignore[no-untyped-def]
    js = tmp_path / "s.json"
    doc = json.loads(js.read_text())
    change(doc)
    js.write_text(json.dumps(doc))


@pytest.mark.parametrize("change", [
    lambda d: d["state"].update(x={"__tensor__": "missing"}),
    lambda d: d["state"].update(x={"__object__": "os.system"}),
    lambda d: d["state"].update(x={"__ndarray__": "w", "dtype": "object"}),
    lambda d: d["state"].update(x={"__float__": "1e999"}),
    lambda d: d["state"].update(x={"__items__": [[1.5, 2]]}),
    lambda d: d["state"].pop("w"),  # a stored tensor nothing refers to
    lambda d: d["state"].update(x={"__tensor__": "w"}),  # referenced twice
    lambda d: d.update(format="something-else"),
    lambda d: d.update(id="0" * 32),  # not the pair of this safetensors file
    lambda d: d.update(extra=1),
])
def test_malformed_states_are_refused(tmp_path: Path, change) -> None:  # type: ignore[no-untyped-def]
    save_state(tmp_path / "s", {"w": torch.ones(2), "n": 1})
    _rewrite(tmp_path, change)
    with pytest.raises(ModelError):
        load_state(tmp_path / "s")


def test_non_standard_json_and_missing_or_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="missing"):
        load_state(tmp_path / "none")
    save_state(tmp_path / "s", {"w": torch.ones(2), "v": 1.0})
    js = tmp_path / "s.json"
    js.write_text(js.read_text().replace("1.0", "NaN"))
    with pytest.raises(ModelError, match="JSON"):
        load_state(tmp_path / "s")
    save_state(tmp_path / "s", {"w": torch.ones(2)})
    save_file({"w": torch.ones(2)}, str(tmp_path / "s.safetensors"))  # another writer's file
    with pytest.raises(ModelError, match="belong together"):
        load_state(tmp_path / "s")
    (tmp_path / "s.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelError, match="unreadable"):
        load_state(tmp_path / "s")


def test_a_save_stopped_anywhere_leaves_one_whole_state(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 20 (fault suite): a second save stopped before any of its renames leaves the
    first state or the second, never "do not belong together"."""
    import os

    first = {"epoch": 1, "w": torch.zeros(3)}
    second = {"epoch": 2, "w": torch.ones(3)}
    real = os.replace
    for stop in (1, 2, 3, None):
        path = tmp_path / f"s{stop}" / "last"
        path.parent.mkdir()
        save_state(path, first)
        calls = {"n": 0}

        def dying(src: object, dst: object, stop: int | None = stop,
                  calls: dict[str, int] = calls) -> None:
            calls["n"] += 1
            if calls["n"] == stop:
                raise KeyboardInterrupt
            real(src, dst)  # type: ignore[arg-type]

        with monkeypatch.context() as m:
            m.setattr(os, "replace", dying)
            if stop is None:
                save_state(path, second)
            else:
                with pytest.raises(KeyboardInterrupt):
                    save_state(path, second)
        got = load_state(path)
        want = second if stop in (None, 3) else first  # the JSON (2nd rename) commits
        assert got["epoch"] == want["epoch"] and torch.equal(got["w"], want["w"]), stop
        visible = sorted(p.name for p in path.parent.iterdir() if not p.name.startswith("."))
        assert visible == ["last.json", "last.safetensors"]
