"""Per-epoch curves: validation Dice (the paper's Fig. 3) and predicted foreground size.

The foreground-fraction plot exists to make collapse visible: entropy
minimisation alone drifts toward predicting everything (or nothing) as one
class, which shows as a line running away from the dashed prior.

Figures are built on :class:`matplotlib.figure.Figure` with an explicit Agg
canvas, so nothing here touches pyplot's global state or needs a display.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sfda.errors import SfdaError
from sfda.io.atomic import atomic_path
from sfda.report.tables import display_name

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")
DPI = 130

Series = Mapping[str, Sequence[tuple[int, float]]]


def new_figure(width: float, height: float, **kwargs) -> Figure:
    """A figure bound to the Agg canvas (no pyplot, no global backend switch)."""
    fig = Figure(figsize=(width, height), dpi=DPI, **kwargs)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, out_png: str | os.PathLike) -> Path:
    """Write ``fig`` as PNG atomically, then release it."""
    out = Path(out_png)
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    finally:
        fig.clear()
    return out


def plot_curves(curves: Series, out_png: str | os.PathLike,
                title: str = "Validation Dice", ylabel: str = "3D Dice") -> Path:
    """Every method's validation Dice against epoch on one axis, y fixed to [0, 1]."""
    _check_series("plot_curves", curves)
    fig = new_figure(6.4, 4.0)
    ax = fig.add_subplot()
    _draw_lines(ax, curves)
    ax.set_ylim(0.0, 1.0)
    _finish(ax, title, ylabel)
    return save_png(fig, out_png)


def plot_fractions(series: Series, prior: float | None, out_png: str | os.PathLike,
                   title: str = "Predicted foreground fraction") -> Path:
    """Predicted foreground fraction per epoch per method, prior as a dashed line."""
    _check_series("plot_fractions", series)
    fig = new_figure(6.4, 4.0)
    ax = fig.add_subplot()
    _draw_lines(ax, series)
    if prior is not None:
        ax.axhline(prior, color="black", linestyle="--", linewidth=1.2, label=f"prior ({prior:.3g})",
                   zorder=4)
    ax.set_ylim(0.0, _fraction_top(series, prior))
    _finish(ax, title, "foreground fraction")
    return save_png(fig, out_png)


def _check_series(caller: str, series: Series) -> None:
    """Refuse input that would silently give an empty plot."""
    if not series or not any(len(points) for points in series.values()):
        raise SfdaError(f"{caller}: no points to plot; give {{method: [(epoch, value), ...]}} with at least one point")
    for name, points in series.items():
        for point in points:
            if len(point) != 2:
                raise SfdaError(f"{caller}: {name!r} has point {point!r}; expected (epoch, value)")


def _draw_lines(ax, series: Series) -> None:
    """One line per method, points sorted by epoch, markers so single points show."""
    for i, (name, points) in enumerate(series.items()):
        if not points:
            continue
        pts = sorted((int(e), float(v)) for e, v in points)
        ax.plot([e for e, _ in pts], [v for _, v in pts], marker=MARKERS[i % len(MARKERS)],
                markersize=4, linewidth=1.5, label=display_name(name), clip_on=False, zorder=3)


def _fraction_top(series: Series, prior: float | None) -> float:
    """Upper y limit: room above the largest value or prior, never above 1."""
    values = [float(v) for pts in series.values() for _, v in pts if math.isfinite(float(v))]
    if prior is not None and math.isfinite(prior):
        values.append(float(prior))
    top = max(values, default=0.0)
    return min(1.0, top * 1.15) if top > 0 else 1.0


def _finish(ax, title: str, ylabel: str) -> None:
    """Shared labelling: epoch axis with integer ticks, grid, legend outside the data."""
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.35)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
