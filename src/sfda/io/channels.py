"""A scan stored as one file per channel, as nnU-Net stores a multi-channel case (``case_0000``,
``case_0001``...), read as one scan."""

from __future__ import annotations

import numpy as np

from sfda.errors import SfdaError
from sfda.io.volume import Volume, read_volume


def read_channels(paths: list) -> tuple[Volume, list[np.ndarray]]:
    """One scan stored as one file per channel (nnU-Net's ``case_0000``, ``case_0001``...): the first
    channel's volume (its geometry is the scan's) and every channel's array in its stored type. The
    channels must share the first one's shape and geometry."""
    first = read_volume(paths[0], dtype=None, check_finite=False)
    arrays = [first.array]
    for path in paths[1:]:
        vol = read_volume(path, dtype=None, check_finite=False)
        if vol.shape != first.shape or not np.allclose(vol.affine, first.affine, atol=1e-3):
            raise SfdaError(f"{path} does not lie on the grid of {paths[0]} (shape {vol.shape} against "
                            f"{first.shape}, or another affine); the channels of one scan share one grid: "
                            "resample it onto the first channel")
        arrays.append(vol.array)
    return first, arrays
