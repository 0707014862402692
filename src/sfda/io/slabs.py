"""Slabs: a volume walked in runs of whole planes, so no pass over it needs a whole-volume temporary.

Used by the finite-voxel check, the normalisation statistics and streamed prediction.
"""

from __future__ import annotations

import numpy as np

from sfda.errors import SfdaError

#: Voxels per slab when streaming over a volume (16 MiB of float32).
SLAB_VOXELS = 1 << 22


def slabs(shape: tuple[int, ...], axis: int = 0, voxels: int | None = None):
    """``slice`` objects cutting ``axis`` into runs of whole planes of about ``voxels`` voxels
    (default :data:`SLAB_VOXELS`)."""
    voxels = SLAB_VOXELS if voxels is None else voxels
    per = max(int(np.prod(shape, dtype=np.int64)) // max(shape[axis], 1), 1)
    step = max(voxels // per, 1)
    for start in range(0, shape[axis], step):
        yield slice(start, min(start + step, shape[axis]))


def take(array: np.ndarray, axis: int, rows: slice) -> np.ndarray:
    """``array[..., rows, ...]`` along ``axis`` (a view)."""
    index = [slice(None)] * array.ndim
    index[axis] = rows
    return array[tuple(index)]


def slow_axis(array: np.ndarray) -> int:
    """The axis whose slabs are contiguous in memory (the last for Fortran order, else 0)."""
    return array.ndim - 1 if array.flags.f_contiguous and not array.flags.c_contiguous else 0


def iter_slabs(array: np.ndarray):
    """The volume's slabs along its contiguous axis."""
    axis = slow_axis(array)
    for rows in slabs(array.shape, axis):
        yield take(array, axis, rows)


def count_non_finite(array: np.ndarray) -> int:
    """NaN/inf voxels, counted slab by slab (0 for integer types)."""
    if array.dtype.kind not in "fc":
        return 0
    return sum(int(s.size - np.count_nonzero(np.isfinite(s))) for s in iter_slabs(array))


def non_finite_error(source, bad: int) -> SfdaError:
    """The one message for NaN/inf voxels (reading, scanning and normalising all use it)."""
    return SfdaError(f"{source} contains {bad} NaN/inf voxels; fix or mask them before use")


def refuse_non_finite(array: np.ndarray, source) -> None:
    """Refuse NaN/inf voxels, which silently poison normalisation and losses."""
    bad = count_non_finite(array)
    if bad:
        raise non_finite_error(source, bad)
