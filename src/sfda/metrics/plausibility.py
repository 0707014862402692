"""Whether a structure's mask is plausible in size for the anatomy the model was trained on, from a
label statistic alone: its volume against the smallest volume of the structure in the training labels.

A mask can be one clean piece and still wrong; the scatter (:mod:`sfda.metrics.components`) cannot
see that. Too small can be seen: ``train-source`` stores each structure's (smallest, largest) volume
in mL over its training volumes in the model card (``source.volumes``), and ``sfda predict`` warns
about a structure under :data:`SMALL` of the smallest.

How the bound was chosen (``python bench/mask_signals.py runs/abd``: the abdomen's development subjects,
both directions, every method and seed of the test run): of the 156 structure masks the scatter
warning lets pass, 61 had a Dice under 0.5; a volume under half the training minimum flagged 19 of
them and 1 of the 95 others (95 % of its flags were bad masks; 0.7 of the minimum: 88 %, the minimum
itself: 61 %). The other signs measured there do not separate: a volume over twice the training
maximum (58 % of flags bad, against a base rate of 39 %: organ sizes differ between cohorts), the share
in the source atlas in the plane, and the share on slices whose position holds the structure (both
flag almost nothing: the wrong masks lie where the structure may lie).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

#: a structure predicted under this share of its smallest volume in the training labels is warned about
SMALL = 0.5


def volumes_ml(labels: np.ndarray, spacing, num_classes: int) -> list[float]:
    """Each foreground class's volume in mL in a label volume of voxel ``spacing`` (mm)."""
    voxel = float(np.prod(spacing)) / 1000.0
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):  # a label file stored as floats
        labels = labels.astype(np.int64)
    counts = np.bincount(labels.ravel(), minlength=num_classes)[:num_classes]
    return [float(n) * voxel for n in counts[1:]]


def volume_ranges(volumes: Iterable[tuple[np.ndarray, tuple]], num_classes: int) -> list[list[float] | None]:
    """Per foreground class, the (smallest, largest) volume in mL over the label volumes (each with its
    spacing) that hold it; None for a class none holds."""
    seen: list[list[float]] = [[] for _ in range(num_classes - 1)]
    for labels, spacing in volumes:
        for c, ml in enumerate(volumes_ml(labels, spacing, num_classes)):
            if ml > 0:
                seen[c].append(ml)
    return [[min(v), max(v)] if v else None for v in seen]


def undersized(ml: list[float], volumes: tuple | None, names: list[str]) -> list[tuple[str, float, float]]:
    """(structure, its volume, the smallest in training) for each structure 1..K-1 of a mask (``ml`` its
    volumes in mL) under :data:`SMALL` of the smallest volume in the training labels (``volumes``: the
    card's ``source.volumes``; none there: nothing to say). An empty mask counts: the scan may not hold
    the structure, which the warning says."""
    if not volumes:
        return []
    return [(name, v, r[0]) for name, v, r in zip(names, ml, volumes) if r is not None and v < SMALL * r[0]]


def undersized_line(name: str, ml: float, smallest: float) -> str:
    what = "is empty" if ml == 0 else f"measures {ml:.1f} mL"
    return (f"{name} {what}, under half the smallest in the model's training labels ({smallest:.1f} mL); check "
            "this mask (or whether the scan holds the structure)")
