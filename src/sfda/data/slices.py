"""3D volumes to 2D slices and back.

Axis convention: volumes are indexed as in :mod:`sfda.io.volume`; ``axis``
picks the slicing axis and the two remaining axes, in order, become (H, W).
Slices are padded (centred) up to a multiple of ``pad_multiple`` so every
network's down-sampling divides them; :func:`from_slices` undoes both exactly.
"""

from __future__ import annotations

import numpy as np


#: ``slicing.axis`` not set: decided by :func:`coarsest_axis`
AUTO_AXIS = -1


def coarsest_axis(spacings) -> tuple[int, list[float]]:
    """The axis to slice along when none is set, and the median spacing per axis: the axis of the
    coarsest voxel spacing (the median over the scans, per axis), as nnU-Net's 2D configuration
    slices anisotropic scans (1.25 x 1.25 x 7.7 mm: axis 2); of equal spacings, the first (0)."""
    median = np.median(np.asarray(spacings, dtype=float).reshape(-1, 3), axis=0)
    axis = int(np.flatnonzero(np.isclose(median, median.max(), rtol=1e-3))[0])
    return axis, [float(v) for v in median]


def padded_size(size: int, multiple: int) -> int:
    return -(-size // multiple) * multiple


def pad_widths(hw: tuple[int, int], target: tuple[int, int]) -> tuple[tuple[int, int], ...]:
    out = []
    for size, goal in zip(hw, target):
        before = (goal - size) // 2
        out.append((before, goal - size - before))
    return tuple(out)


def pad_centre(volume: np.ndarray, shape: tuple[int, ...], fill) -> np.ndarray:
    """Pad the last ``len(shape)`` axes of ``volume`` (centred) up to ``shape``."""
    lead = ((0, 0),) * (volume.ndim - len(shape))
    return np.pad(volume, lead + pad_widths(volume.shape[-len(shape):], shape), constant_values=fill)


def crop_centre(volume: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Undo :func:`pad_centre`: the centred ``shape`` of the last ``len(shape)`` axes."""
    widths = pad_widths(shape, volume.shape[-len(shape):])
    index = tuple(slice(b, b + n) for (b, _), n in zip(widths, shape))
    return volume[(Ellipsis, *index)]


def to_slices(volume: np.ndarray, axis: int, target_hw: tuple[int, int], fill: float = 0.0) -> np.ndarray:
    """(D0, D1, D2) -> (S, H, W): move ``axis`` first, pad H and W centred to ``target_hw``."""
    moved = np.moveaxis(volume, axis, 0)
    widths = ((0, 0),) + pad_widths(moved.shape[1:], target_hw)
    return np.pad(moved, widths, mode="constant", constant_values=fill)


def from_slices(slices: np.ndarray, axis: int, shape: tuple[int, int, int]) -> np.ndarray:
    """Exact inverse of :func:`to_slices` for a volume of ``shape``.

    Extra leading dimensions are not allowed; trailing ones (e.g. classes) are
    not either: pass (S, H, W).
    """
    moved_shape = np.moveaxis(np.empty(shape, dtype=bool), axis, 0).shape
    (b0, _), (b1, _) = pad_widths(moved_shape[1:], slices.shape[1:])
    crop = slices[:, b0:b0 + moved_shape[1], b1:b1 + moved_shape[2]]
    return np.moveaxis(crop, 0, axis)


def relative_positions(slice_index: np.ndarray, depths: np.ndarray) -> np.ndarray:
    """Each slice's place along its volume's slicing axis, from 0 (first) to 1 (last)."""
    return slice_index / np.maximum(depths - 1, 1)


def slice_shape(shape: tuple[int, int, int], axis: int) -> tuple[int, int]:
    rest = [s for i, s in enumerate(shape) if i != axis]
    return rest[0], rest[1]


def common_target(shapes: list[tuple[int, int, int]], axis: int, multiple: int) -> tuple[int, int]:
    """The smallest padded (H, W) that holds every volume's slices."""
    hs, ws = zip(*(slice_shape(s, axis) for s in shapes))
    return padded_size(max(hs), multiple), padded_size(max(ws), multiple)


def assemble_subject(volumes: list[np.ndarray], gap: int = 24) -> np.ndarray:
    """Place one subject's volumes (crops) side by side along axis 0 for 3D scoring.

    Crops of a subject are disjoint pieces of one scan; stacking them with an
    empty ``gap`` keeps each crop's surfaces closest to its own, so surface
    distances stay within a crop while Dice counts every voxel once.
    """
    if len(volumes) == 1:
        return volumes[0]
    h = max(v.shape[1] for v in volumes)
    w = max(v.shape[2] for v in volumes)
    parts = []
    for i, v in enumerate(volumes):
        parts.append(np.pad(v, ((0, gap if i < len(volumes) - 1 else 0), (0, h - v.shape[1]), (0, w - v.shape[2]))))
    return np.concatenate(parts, axis=0)
