"""Qualitative grid (the paper's Fig. 4): image, ground truth, each method's mask and entropy.

Each subject takes two figure rows: the top row shows the image, the ground
truth and every method's mask overlaid on the image; the row below puts each
method's entropy map under its mask, in nats from 0 to ln K (K classes; padding blank), so
that "more confident" reads the same across methods and subjects.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.colors import ListedColormap

from sfda.errors import SfdaError
from sfda.report.curves import new_figure, save_png
from sfda.report.tables import display_name

# Label k is drawn in LABEL_COLOURS[k - 1]: high-contrast on a gray image.
LABEL_COLOURS = ("#ff3b30", "#34c759", "#0a84ff", "#ffcc00", "#bf5af2", "#64d2ff", "#ff9f0a")
ENTROPY_CMAP = "magma"
TITLE_SIZE = 7
CELL_WIDTH = 1.45  # inches per image column


def plot_grid(rows: Sequence[Mapping[str, Any]], out_png: str | os.PathLike, title: str = "") -> Path:
    """Draw the qualitative grid for ``rows`` (one dict per subject slice) into ``out_png``."""
    if not rows:
        raise SfdaError("plot_grid: no rows; give at least one {subject, image, truth, masks} dict")
    checked = [_check_row(i, row) for i, row in enumerate(rows)]
    methods = _method_columns(checked)
    n_cols = 2 + len(methods)
    per_subject = 2 if any(row["entropy"] for row in checked) else 1  # no empty entropy rows
    height, width = checked[0]["image"].shape
    cell_h = CELL_WIDTH * height / width + 0.3
    fig = new_figure(CELL_WIDTH * n_cols + 0.6, cell_h * per_subject * len(checked) + (0.4 if title else 0.0),
                     layout="constrained")
    axes = fig.subplots(per_subject * len(checked), n_cols, squeeze=False)
    for r, row in enumerate(checked):
        top = axes[per_subject * r]
        _draw_masks(top, row, methods)
        if per_subject == 2:
            _draw_entropy(fig, axes[per_subject * r + 1], row, methods)
    if title:
        fig.suptitle(title, fontsize=9)
    return save_png(fig, out_png)


def _check_row(index: int, row: Mapping[str, Any]) -> dict[str, Any]:
    """Validate one row and coerce arrays, so a bad slice fails with its subject named."""
    for key in ("image", "truth", "masks"):
        if key not in row:
            raise SfdaError(f"plot_grid: row {index} has no {key!r}; each row needs subject, image, truth, masks")
    subject = str(row.get("subject", f"row {index}"))
    image = np.asarray(row["image"], dtype=float)
    if image.ndim != 2:
        raise SfdaError(f"plot_grid: image of {subject!r} has shape {image.shape}; expected a 2D slice")

    def same_shape(name: str, arr: Any, dtype: type) -> np.ndarray:
        out = np.asarray(arr, dtype=dtype)
        if out.shape != image.shape:
            raise SfdaError(f"plot_grid: {name} of {subject!r} has shape {out.shape}, image has {image.shape}")
        return out

    masks = {m: same_shape(f"mask {m!r}", a, int) for m, a in row["masks"].items()}
    entropy = {m: same_shape(f"entropy {m!r}", a, float) for m, a in (row.get("entropy") or {}).items()}
    return {"subject": subject, "image": image, "truth": same_shape("truth", row["truth"], int),
            "masks": masks, "entropy": entropy, "classes": row.get("classes")}


def _method_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Methods in order of first appearance, so every subject uses the same columns."""
    seen: dict[str, None] = {}
    for row in rows:
        for method in row["masks"]:
            seen.setdefault(method, None)
    return list(seen)


def _draw_masks(axes, row: Mapping[str, Any], methods: list[str]) -> None:
    """Image, ground truth, then each method's mask, all over the same grey window."""
    image, n_labels = row["image"], _n_labels(row)
    window = _window(image)
    _show_image(axes[0], image, window, f"{row['subject']}\nimage")
    _show_overlay(axes[1], image, window, row["truth"], n_labels, "ground truth")
    for c, method in enumerate(methods, start=2):
        name = display_name(method)
        if method in row["masks"]:
            _show_overlay(axes[c], image, window, row["masks"][method], n_labels, name)
        else:
            _note(axes[c], f"{name}\n(no mask)")


def _draw_entropy(fig, axes, row: Mapping[str, Any], methods: list[str]) -> None:
    """Each method's entropy under its mask, in nats on one colour scale: 0 to ln K when the row
    says its K classes, else to the row's largest value; NaN (padding) stays blank."""
    k = row.get("classes")
    vmax = float(np.log(k)) if k and k > 1 else _entropy_max(row["entropy"])
    scale = f"max ln {k}\n= {vmax:.2f}" if k and k > 1 else "one scale\nper row"
    _note(axes[0], f"entropy, nats\n({scale})")
    axes[1].set_axis_off()
    last = None
    for c, method in enumerate(methods, start=2):
        if method in row["entropy"]:
            last = axes[c].imshow(row["entropy"][method], cmap=ENTROPY_CMAP, vmin=0.0, vmax=vmax,
                                  interpolation="nearest")
            _style(axes[c], f"{display_name(method)} entropy")
        else:
            _note(axes[c], "no entropy")
    if last is not None:
        _colorbar(fig, axes[1], last, f"nats (ln {k} = {vmax:.2f})" if k and k > 1 else "nats")


def _colorbar(fig, cell, mappable, label: str) -> None:
    """Entropy scale drawn inside the otherwise empty cell, so map sizes stay equal to masks."""
    cax = cell.inset_axes([0.45, 0.08, 0.12, 0.84])
    cbar = fig.colorbar(mappable, cax=cax)
    cbar.ax.tick_params(labelsize=6, length=2, pad=1)
    cbar.set_label(label, fontsize=6, labelpad=1)


def _n_labels(row: Mapping[str, Any]) -> int:
    """Largest label over truth and masks, so colours mean the same class everywhere."""
    arrays = [row["truth"], *row["masks"].values()]
    return max(1, max(int(a.max()) if a.size else 0 for a in arrays))


def _window(image: np.ndarray) -> tuple[float, float]:
    """Robust grey window (1st-99th percentile) so one bright voxel does not wash out the slice."""
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [1, 99])
    if hi <= lo:
        lo, hi = float(finite.min()), float(finite.max())
    return (float(lo), float(hi)) if hi > lo else (float(lo), float(lo) + 1.0)


def _entropy_max(entropy: Mapping[str, np.ndarray]) -> float:
    """Shared upper bound for the row's entropy maps (at least a tiny positive value)."""
    peaks = [float(np.nanmax(e)) for e in entropy.values() if e.size and np.isfinite(e).any()]
    top = max(peaks, default=0.0)
    return top if top > 0 else 1.0


def _show_image(ax, image: np.ndarray, window: tuple[float, float], title: str) -> None:
    ax.imshow(image, cmap="gray", vmin=window[0], vmax=window[1], interpolation="nearest")
    _style(ax, title)


def _show_overlay(ax, image: np.ndarray, window: tuple[float, float], labels: np.ndarray,
                  n_labels: int, title: str) -> None:
    """Image with each label filled semi-transparently and outlined, so thin structures stay visible."""
    _show_image(ax, image, window, title)
    colours = [LABEL_COLOURS[k % len(LABEL_COLOURS)] for k in range(n_labels)]
    fill = np.ma.masked_where(labels <= 0, labels)
    ax.imshow(fill, cmap=ListedColormap(colours), vmin=0.5, vmax=n_labels + 0.5, alpha=0.45,
              interpolation="nearest")
    for k in range(1, n_labels + 1):
        region = labels == k
        if region.any() and not region.all():
            _outline(ax, region, colours[k - 1])


def _outline(ax, region: np.ndarray, colour: str) -> None:
    """Contour along pixel edges (not through pixel centres, which cuts corners off the fill).

    The mask is upsampled by nearest neighbour, so the 0.5 level falls on the
    boundary between pixels; the factor shrinks for large slices to stay cheap.
    """
    factor = int(np.clip(512 // max(region.shape), 1, 8))
    fine = np.kron(region.astype(float), np.ones((factor, factor)))
    fine = np.pad(fine, 1)  # closes regions touching the border
    ys, xs = (_fine_centres(n, factor) for n in region.shape)
    limits = ax.get_xlim(), ax.get_ylim()
    ax.contour(xs, ys, fine, levels=[0.5], colors=[colour], linewidths=0.9)
    ax.set_xlim(*limits[0])  # the padded grid must not widen the view past the image
    ax.set_ylim(*limits[1])


def _fine_centres(n: int, factor: int) -> np.ndarray:
    """Image coordinates of an n-pixel axis upsampled by ``factor`` plus one pad cell each side."""
    return (np.arange(-1, n * factor + 1) + 0.5) / factor - 0.5


def _note(ax, text: str) -> None:
    """An empty cell carrying a short explanation instead of a blank hole."""
    ax.set_axis_off()
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=TITLE_SIZE, color="0.35",
            transform=ax.transAxes)


def _style(ax, title: str) -> None:
    """Small wrapped title, equal aspect (slices are often non-square), no axes."""
    ax.set_title("\n".join(textwrap.fill(line, 24) for line in title.splitlines()), fontsize=TITLE_SIZE, pad=2)
    ax.set_aspect("equal")
    ax.set_axis_off()
