"""A second Dice, for comparison with published abdominal CT <-> MR source-free work.

Those papers score only the part of a scan that holds the organs: the volume is cut along the
slicing axis (z) to the slices whose true labels hold an organ, and for each organ the slices
without that organ are left out too; Dice is then computed in 3D over the kept slices. A
false positive on a slice without the organ therefore never counts, so this number is higher
than (and not comparable with) the full-volume 3D Dice, which stays sfda's headline.
"""

from __future__ import annotations

import numpy as np

from sfda.metrics.overlap import check_same_shape, dice


def organ_slices(truth: np.ndarray, k: int, axis: int = 0) -> np.ndarray:
    """The indices along ``axis`` of the slices whose true labels hold class ``k``."""
    t = np.moveaxis(np.asarray(truth), axis, 0)
    return np.flatnonzero((t == k).reshape(len(t), -1).any(axis=1))


def dice_organ_slices(pred: np.ndarray, truth: np.ndarray, k: int, axis: int = 0) -> float:
    """3D Dice of class ``k`` over the slices (along ``axis``) whose true labels hold it.

    ``pred`` and ``truth``: label volumes of one shape. Class ``k`` absent from ``truth``: no
    slice is kept, both masks are empty and the Dice rule of :func:`sfda.metrics.overlap.dice`
    gives 1.0 (nothing is scored).
    """
    check_same_shape(np.asarray(pred), np.asarray(truth))
    keep = organ_slices(truth, k, axis)
    p = np.take(np.asarray(pred), keep, axis=axis) == k
    t = np.take(np.asarray(truth), keep, axis=axis) == k
    return dice(p, t)
