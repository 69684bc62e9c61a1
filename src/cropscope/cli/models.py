"""``cropscope models``: the model registry."""

from __future__ import annotations

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
