"""Command-line interface (``cropscope``)."""
