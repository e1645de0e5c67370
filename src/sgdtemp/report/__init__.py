"""The HTML report: one self-contained page with every figure, the claim table and the environment.

:func:`build_report` reads a results store (and, when present, the two-minima study and the
stationary-law checks written next to it by ``sgdtemp reproduce``), analyzes the sweep with
:mod:`sgdtemp.analysis`, draws the figures with :mod:`sgdtemp.plotting.report` and writes
``report.html`` (figures embedded as base64 PNG) and ``analysis.json``.
"""

from __future__ import annotations

from sgdtemp.report._build import (
    REPORT_FILES,
    ReportResult,
    build_report,
    find_study,
    read_summary,
)
from sgdtemp.report._html import Figure, figure_to_data_uri, png_to_data_uri, render_html

__all__ = [
    "build_report",
    "ReportResult",
    "REPORT_FILES",
    "find_study",
    "read_summary",
    "render_html",
    "Figure",
    "figure_to_data_uri",
    "png_to_data_uri",
]
