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


@models.command("import")
@click.option("--official", "checkpoint", type=click.Path(path_type=Path), required=True,
              help="An official AgriFM / H2Crop checkpoint (training .pth or state dict).")
@click.option("--network", required=True,
              type=click.Choice(["agrifm", "agrifm-official", "h2crop", "h2crop-official"]),
              help="The registered network; the -official presets hold the official "
                   "full-size configurations.")
@click.option("--config", "config_file", type=click.Path(path_type=Path), default=None,
              help="JSON file of the checkpoint's network options.")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="A network option (repeatable; JSON values), over --config.")
@click.option("--classes", default=None, help="Comma-separated class names (output order).")
@click.option("--bands", default=None,
              help="Comma-separated band names of the S2 input (default: the network's).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True,
              help="Run directory to write.")
def import_cmd(checkpoint: Path, network: str, config_file: Path | None,
               settings: tuple[str, ...], classes: str | None, bands: str | None,
               out_dir: Path) -> None:
    """Turn an official checkpoint into a cropscope run (computing as the official code:
    compat='official'); predict, evaluate and fine-tuning then take it."""
    import json

    from cropscope.cli._common import comma_list, parse_config
    from cropscope.training.segmentation_run import import_official_run

    band_list = comma_list(bands)
    run = import_official_run(checkpoint, out_dir, network=network,
                              network_kwargs=parse_config(config_file, settings),
                              classes=comma_list(classes),
                              bands=None if band_list is None else {"S2": band_list})
    click.echo(json.dumps({"run": str(run.path), "kind": run.spec.kind,
                           "network": run.spec.name, "classes": run.spec.classes}))
