"""The network registry: one test walks every registered network (timm style) — build from
its tiny test configuration, forward on random inputs of its declared layout, backward,
state dict through safetensors, TorchScript and ONNX export equal to eager; then the
registry's own behaviour (errors, defaults, entry points)."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from cropscope.errors import ModelError
from cropscope.models import networks
from cropscope.models.export import check_export, export_onnx, export_torchscript
from cropscope.models.networks import (
    ENTRY_POINT_GROUP,
    NetworkConfig,
    create_network,
    list_networks,
    network_config,
    network_kwargs,
    register_network,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit in 2.1x

BUILTIN = ("agrifm", "cropnet", "h2crop", "ltae", "spectral-cnn", "spectral-transformer",
           "swin3d", "tempcnn")
#: every built-in entry, the presets of the official configurations included
ALL_BUILTIN = tuple(networks._BUILTIN)
#: presets: their defaults are the official configuration, not the builder's own
PRESETS = {"agrifm-official", "h2crop-official"}


def random_inputs(config: NetworkConfig, batch: int, seed: int) -> Tensor | dict[str, Tensor]:
    """Random inputs of the network's test shapes (a dict for dict-input networks)."""
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, Tensor] = {}
    for key, spec in config.test_inputs.items():
        shape = (batch, *spec.shape)
        if spec.dtype == "int64":
            out[key] = torch.randint(0, spec.high or 2, shape, generator=gen)
        else:
            out[key] = torch.randn(shape, generator=gen)
    return out if config.dict_input else next(iter(out.values()))


def outputs(model: nn.Module, inputs: Tensor | dict[str, Tensor]) -> list[Tensor]:
    out = model(inputs)
    return list(out) if isinstance(out, list | tuple) else [out]


def roundtrip_state(model: nn.Module, directory: Path) -> dict[str, Tensor]:
    """The model's state dict written and read back (the one place that picks the format:
    safetensors now, the run directory format later)."""
    path = directory / "weights.safetensors"
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(path))
    return load_file(str(path))


def check_network(name: str, directory: Path) -> None:
    """Build, forward, backward, save/load, TorchScript and ONNX of network ``name``."""
    config = network_config(name)
    json.dumps(config.to_dict())
    torch.manual_seed(0)
    model = create_network(name, **config.test_kwargs)
    x = random_inputs(config, 2, seed=0)

    # forward and backward in training mode
    model.train()
    outs = outputs(model, x)
    assert outs and all(o.shape[0] == 2 and torch.isfinite(o).all() for o in outs)
    if config.classes_arg is not None:
        classes = config.test_kwargs[config.classes_arg]
        expected = [classes] if isinstance(classes, int) else list(classes)
        assert [o.shape[1] for o in outs] == expected
    gen = torch.Generator().manual_seed(1)
    loss = sum((o * torch.randn(o.shape, generator=gen)).sum() for o in outs)
    assert isinstance(loss, Tensor)
    loss.backward()
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert params
    assert all(p.grad is None or torch.isfinite(p.grad).all() for _, p in params)
    dead = [n for n, p in params if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert len(dead) <= 0.2 * len(params), f"no gradient for {dead}"

    # state dict through safetensors into a differently initialised twin
    model.eval()
    with torch.no_grad():
        expected_out = outputs(model, x)
    torch.manual_seed(1)
    twin = create_network(name, **config.test_kwargs).eval()
    twin.load_state_dict(roundtrip_state(model, directory), strict=True)
    with torch.no_grad():
        for got, want in zip(outputs(twin, x), expected_out, strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-6)

    # TorchScript (traced) and ONNX equal to eager, also for another batch size
    other = random_inputs(config, 3, seed=2)
    script = export_torchscript(model, x, directory / f"{name}.pt")
    onnx = export_onnx(model, x, directory / f"{name}.onnx")
    for path in (script, onnx):
        assert check_export(model, path, x, atol=1e-4) <= 1e-4
        assert check_export(model, path, other, atol=1e-4) <= 1e-4


@pytest.mark.parametrize("name", list_networks())
def test_network(name: str, tmp_path: Path) -> None:
    check_network(name, tmp_path)


# ---------------------------------------------------------------------------- registry
def test_every_builtin_network_is_registered() -> None:
    assert set(BUILTIN) <= set(list_networks())


def test_unknown_name_and_options_list_the_known_ones() -> None:
    with pytest.raises(ModelError, match=r"available networks: .*tempcnn"):
        create_network("tempcnnn")
    with pytest.raises(ModelError, match=r"unknown option.*'filterz'.*known options: .*filters"):
        create_network("tempcnn", n_bands=2, n_times=5, n_classes=3, filterz=8)
    with pytest.raises(ModelError, match=r"unknown option.*'preset_x'.*spatial_dim"):
        create_network("spectral-transformer", n_bands=2, patch_size=3, n_classes=2,
                       preset_x=1)
    with pytest.raises(ModelError, match=r"needs the option\(s\) \['n_bands', 'n_times'"):
        create_network("tempcnn", n_classes=3)


def test_network_kwargs_fill_the_defaults() -> None:
    kw = network_kwargs("tempcnn", n_bands=2, n_times=5, n_classes=3, filters=8)
    assert kw == {"n_bands": 2, "n_times": 5, "n_classes": 3, "filters": 8, "kernel_size": 5,
                  "n_conv": 3, "hidden": 256, "dropout": 0.2}
    assert json.loads(json.dumps(network_kwargs("agrifm", num_classes=2)))["sources"] == {
        "S2": 10}


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize("name", ALL_BUILTIN)
def test_builtin_defaults_match_the_builders(name: str) -> None:
    """The table's defaults are the builders' own (or fill a required argument), and every
    required or optional keyword is one the builder takes."""
    config = network_config(name)
    builder = networks._builder(config)
    params = inspect.signature(builder).parameters
    for key, value in config.kwargs.items():
        assert key in params, key
        default = params[key].default
        if default is not inspect.Parameter.empty and name not in PRESETS:
            assert _plain(value) == _plain(default), key
    open_ended = any(p.kind is p.VAR_KEYWORD for p in params.values())
    for key in (*config.required, *config.options):
        assert key in params or open_ended, key
    assert set(config.test_kwargs) <= set(params) | set(config.options)
    if config.classes_arg is not None:
        assert config.classes_arg in (*config.required, *config.kwargs)


def test_describing_networks_imports_no_torch() -> None:
    code = ("import sys; from cropscope.models.networks import list_networks, network_config; "
            "[network_config(n) for n in list_networks()]; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_register_network_errors() -> None:
    def build() -> nn.Module:
        return nn.Identity()

    with pytest.raises(ModelError, match="built-in"):
        register_network("tempcnn", build, default_cfg={})
    with pytest.raises(ModelError, match="lower-case"):
        register_network("My Net", build, default_cfg={})
    with pytest.raises(ModelError, match=r"unknown default_cfg key.*'input_size'"):
        register_network("my-net", build, default_cfg={"input_size": (3, 8)})


# ---------------------------------------------------------------------------- entry points
TOY_MODULE = '''
from torch import nn

from cropscope.models.networks import register_network


@register_network("toy-mlp", default_cfg={
    "description": "a two-layer perceptron on pixel spectra",
    "input_layout": "spectrum [B, C]", "output": "logits [B, K]",
    "kwargs": {"hidden": 8}, "required": ("n_bands", "n_classes"), "classes_arg": "n_classes",
    "test_kwargs": {"n_bands": 3, "n_classes": 2}, "test_inputs": {"x": (3,)},
})
class ToyMLP(nn.Sequential):
    def __init__(self, n_bands: int, n_classes: int, hidden: int = 16) -> None:
        super().__init__(nn.Linear(n_bands, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))


def not_registered() -> nn.Module:
    return nn.Identity()
'''


@pytest.fixture
def toy_entry_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                     ) -> Iterator[list[EntryPoint]]:
    """A third-party module on the path and a fake installed entry-point list."""
    module = "cropscope_toy_networks"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(TOY_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(networks, "_REGISTERED", {})
    eps = [EntryPoint("toy-mlp", f"{module}:ToyMLP", ENTRY_POINT_GROUP)]

    def fake_entry_points(*, group: str) -> list[EntryPoint]:
        return [ep for ep in eps if ep.group == group]

    monkeypatch.setattr(networks, "entry_points", fake_entry_points)
    yield eps
    sys.modules.pop(module, None)


def test_entry_point_network_is_listed_built_and_walked(
        toy_entry_points: list[EntryPoint], tmp_path: Path) -> None:
    assert "toy-mlp" in list_networks()
    assert "cropscope_toy_networks" not in sys.modules  # listed without importing it
    config = network_config("toy-mlp")
    assert config.builder == ("cropscope_toy_networks", "ToyMLP")
    assert config.kwargs == {"hidden": 8}
    model = create_network("toy-mlp", n_bands=4, n_classes=3)
    assert model(torch.randn(2, 4)).shape == (2, 3)
    check_network("toy-mlp", tmp_path)


def test_bad_entry_points(toy_entry_points: list[EntryPoint]) -> None:
    toy_entry_points += [
        EntryPoint("silent", "cropscope_toy_networks:not_registered", ENTRY_POINT_GROUP),
        EntryPoint("missing", "cropscope_no_such_module:build", ENTRY_POINT_GROUP),
        EntryPoint("tempcnn", "cropscope_toy_networks:ToyMLP", ENTRY_POINT_GROUP),
        EntryPoint("other", "cropscope_toy_networks:ToyMLP", "another.group"),
    ]
    with pytest.warns(RuntimeWarning, match="'tempcnn' is a built-in"):
        names = list_networks()
    assert {"silent", "missing", "toy-mlp"} <= set(names) and "other" not in names
    with pytest.warns(RuntimeWarning), pytest.raises(ModelError, match="registered no network"):
        create_network("silent")
    with pytest.warns(RuntimeWarning), pytest.raises(ModelError, match="cannot load"):
        network_config("missing")
    assert network_config("tempcnn").builder[0] == "cropscope.models.tempcnn"


@pytest.mark.parametrize("options", [{"num_heads": [0, 0, 0, 0]}, {"decoder_dim": -4},
                                     {"depths": 5}, {"num_classes": "x"}])
def test_options_a_network_cannot_be_built_with(options: dict) -> None:
    """Values the builder or torch refuses (found by fuzzing `models import` and `segment
    train --model-set`) are one ModelError naming the network, not a traceback."""
    with pytest.raises(ModelError, match="'agrifm' cannot be built with these options"):
        create_network("agrifm", **{"num_classes": 3, **options})
