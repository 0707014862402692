"""A scan stored as one file per channel, as nnU-Net stores a multi-channel case (``case_0000``,
``case_0001``...), read as one scan."""

from __future__ import annotations

import numpy as np

from sfda.errors import SfdaError
from sfda.io.volume import Volume, read_header, read_volume


def _off_grid(path, first, shape, first_shape) -> SfdaError:
    return SfdaError(f"{path} does not lie on the grid of {first} (shape {shape} against {first_shape}, or "
                     "another affine); the channels of one scan share one grid: resample it onto the first channel")


def check_channel_headers(paths: list) -> None:
    """From the headers alone (no voxels read): the channels of one scan share the first one's shape and
    spacing (:func:`read_channels` checks the whole affine when it reads them)."""
    first_shape, first_spacing = read_header(paths[0])
    for path in paths[1:]:
        shape, spacing = read_header(path)
        if shape != first_shape or not np.allclose(spacing, first_spacing, atol=1e-3):
            raise _off_grid(path, paths[0], shape, first_shape)


def read_channels(paths: list) -> tuple[Volume, list[np.ndarray]]:
    """One scan stored as one file per channel (nnU-Net's ``case_0000``, ``case_0001``...): the first
    channel's volume (its geometry is the scan's) and every channel's array in its stored type. The
    channels must share the first one's shape and geometry."""
    first = read_volume(paths[0], dtype=None, check_finite=False)
    arrays = [first.array]
    for path in paths[1:]:
        vol = read_volume(path, dtype=None, check_finite=False)
        if vol.shape != first.shape or not np.allclose(vol.affine, first.affine, atol=1e-3):
            raise _off_grid(path, paths[0], vol.shape, first.shape)
        arrays.append(vol.array)
    return first, arrays
