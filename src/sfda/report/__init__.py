"""Reporting: the paper's Table 1 as Markdown, Fig. 3 curves, Fig. 4 grid, and report.md."""

from __future__ import annotations

from sfda.report.curves import plot_curves, plot_fractions
from sfda.report.document import write_report
from sfda.report.grid import plot_grid
from sfda.report.tables import (DISPLAY, display_name, format_cell, per_seed_markdown, results_markdown,
                                selection_markdown)

__all__ = [
    "DISPLAY",
    "display_name",
    "format_cell",
    "per_seed_markdown",
    "plot_curves",
    "plot_fractions",
    "plot_grid",
    "results_markdown",
    "selection_markdown",
    "write_report",
]
