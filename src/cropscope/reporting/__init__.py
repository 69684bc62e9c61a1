"""Reports people read: one self-contained HTML page per map (and its assessment) or per
evaluation, that opens from a local file without a network (:mod:`cropscope.reporting.html`).
"""

from __future__ import annotations

from cropscope.reporting.html import evaluation_report, map_report

__all__ = ["evaluation_report", "map_report"]
