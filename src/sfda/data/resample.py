"""In-plane resampling of slices: a full-size scan's slices to the network's grid, and the
network's probabilities back to the scan's own grid.

``slicing.size: [H, W]`` gives every slice one size; ``slicing.spacing: [mm, mm]`` gives every
slice one pixel spacing (so each scan keeps its field of view and slices are padded to a common
size). Images are resampled linearly (with anti-aliasing when shrinking), labels by nearest
neighbour, probabilities linearly (a convex combination: they still sum to one) before the argmax.
Pixel centres are aligned (``align_corners=False``), so resampling there and back keeps a
structure in place.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def in_plane(values, axis: int) -> tuple:
    """The two in-plane entries of a per-axis triple (shape or spacing), in (H, W) order."""
    return tuple(v for i, v in enumerate(values) if i != axis)


def grid_shape(hw: tuple[int, ...], spacing_hw: tuple[float, ...], size=(), spacing=()) -> tuple[int, ...]:
    """A slice's (H, W) (or a volume's shape) on the network's grid: ``size``, or the field of view
    over ``spacing`` (a :class:`sfda.config.card.Slicing`'s: one value per axis, checked where it was made)."""
    if size:
        return tuple(int(v) for v in size)
    if spacing:
        return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(hw, spacing_hw, spacing))
    return tuple(int(v) for v in hw)


def grid_spacing(hw, spacing_hw, grid) -> tuple[float, float]:
    """Pixel spacing of the resampled slice (the field of view is kept)."""
    return tuple(float(s) * n / g for n, s, g in zip(hw, spacing_hw, grid))


def resize(planes: np.ndarray, out_hw: tuple[int, int], labels: bool = False) -> np.ndarray:
    """(..., h, w) planes to (..., H, W): linear for intensities and probabilities (anti-aliased when
    shrinking), nearest for labels (their dtype is kept). A no-op when the size is already right."""
    out_hw = (int(out_hw[0]), int(out_hw[1]))
    if tuple(planes.shape[-2:]) == out_hw:
        return planes
    lead = planes.shape[:-2]
    t = torch.from_numpy(np.ascontiguousarray(planes, dtype=np.float32)).reshape(-1, 1, *planes.shape[-2:])
    with torch.inference_mode():
        if labels:
            out = F.interpolate(t, size=out_hw, mode="nearest-exact")
        else:
            shrink = out_hw[0] < planes.shape[-2] or out_hw[1] < planes.shape[-1]
            out = F.interpolate(t, size=out_hw, mode="bilinear", align_corners=False, antialias=shrink)
    out = out.reshape(*lead, *out_hw).numpy()
    return out.astype(planes.dtype) if labels else out


def resize_volume(volume: np.ndarray, out_shape: tuple[int, int, int], labels: bool = False) -> np.ndarray:
    """(..., d, h, w) volumes to (..., D, H, W): trilinear for intensities and probabilities, nearest
    for labels (their dtype is kept). No anti-aliasing in 3D (torch has none for trilinear), so a
    strong shrink of an image may alias. A no-op when the shape is already right."""
    out_shape = tuple(int(v) for v in out_shape)
    if tuple(volume.shape[-3:]) == out_shape:
        return volume
    lead = volume.shape[:-3]
    t = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32)).reshape(-1, 1, *volume.shape[-3:])
    with torch.inference_mode():
        mode = {"mode": "nearest-exact"} if labels else {"mode": "trilinear", "align_corners": False}
        out = F.interpolate(t, size=out_shape, **mode)
    out = out.reshape(*lead, *out_shape).numpy()
    return out.astype(volume.dtype) if labels else out
