"""Cross-cutting user workflows the CLI calls: demo, transfer studies and other end-to-end
runs that combine training, evaluation and mapping.

This is the layer just below :mod:`cropscope.cli` (see the import-linter contract in
``pyproject.toml``): it may import every package of cropscope except the CLI, and nothing
below it imports it.
"""

__all__: list[str] = []
