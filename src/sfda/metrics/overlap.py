"""Volume overlap: the Dice coefficient.

Dice is the headline number in segmentation papers, so it is computed here in one
place, on boolean masks of any dimension.  The rule for empty masks (both empty
gives 1.0, exactly one empty gives 0.0) is documented with the other metrics in
:mod:`sfda.metrics.surface`.
"""

from __future__ import annotations

import numpy as np

from sfda.errors import require


def as_mask(mask: np.ndarray, name: str) -> np.ndarray:
    """Return ``mask`` as a boolean array (non-zero is foreground).

    Callers may hand over ``uint8`` or label-equality arrays; coercing here means
    every metric sees the same definition of foreground.
    """
    array = np.asarray(mask)
    require(array.ndim >= 1, f"{name} must be an array with at least one axis, got a scalar")
    return array.astype(bool, copy=False)


def check_same_shape(pred: np.ndarray, truth: np.ndarray) -> None:
    """Raise :class:`SfdaError` unless the two masks cover the same grid.

    Broadcasting would silently compare a slice with a volume, so it is refused.
    """
    require(
        pred.shape == truth.shape,
        f"prediction shape {pred.shape} differs from ground-truth shape {truth.shape}; "
        "resample or crop them onto the same grid first",
    )


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice coefficient ``2|P & T| / (|P| + |T|)`` of two boolean masks, in [0, 1].

    Both masks empty gives 1.0 (nothing to find, nothing found).  Shapes must match,
    else :class:`sfda.errors.SfdaError`.
    """
    p = as_mask(pred, "prediction")
    t = as_mask(truth, "ground truth")
    check_same_shape(p, t)
    total = int(np.count_nonzero(p)) + int(np.count_nonzero(t))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(p & t)) / total
