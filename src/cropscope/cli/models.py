"""``cropscope models``: the model registry."""

from __future__ import annotations

from pathlib import Path

import click

from cropscope.models import get_model_class, list_models


@click.group()
def models() -> None:
    """Registered models."""


@models.command("list")
def list_cmd() -> None:
    """Show registered models."""
    for name, description in list_models().items():
        click.echo(f"{name:<10} {description}")


@models.command("show")
@click.argument("name")
def show_cmd(name: str) -> None:
    """Show a model's options and defaults."""
    import json

    cls = get_model_class(name)
    click.echo(json.dumps({"model": name, "defaults": cls.default_config()}, indent=2))


@models.command("inspect-checkpoint")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--keys", "show_keys", is_flag=True, help="List every tensor with its shape.")
def inspect_checkpoint_cmd(path: Path, show_keys: bool) -> None:
    """Read a checkpoint safely (safetensors, a state dict, or an official AgriFM/H2Crop
    mmengine training checkpoint) and print what it holds as JSON; a file naming any other
    code is refused with one error line."""
    import json

    from cropscope.models.checkpoint_reader import read_checkpoint

    ck = read_checkpoint(path)
    out: dict[str, object] = {
        "path": str(ck.path), "layout": ck.layout, "tensors": len(ck.state_dict),
        "parameters": int(sum(v.numel() for v in ck.state_dict.values())),
        "meta": {k: v for k, v in ck.meta.items() if isinstance(v, str | int | float)
                 and k != "cfg"},
        "extra": sorted(ck.extra),
    }
    if show_keys:
        out["keys"] = {k: list(v.shape) for k, v in ck.state_dict.items()}
    click.echo(json.dumps(out, indent=1))
