"""A streaming pass over a volume file: its value range and NaN/inf count without loading it.

``sfda predict`` scans every input before it writes anything, so a bad scan late in a
list is refused before the first mask is written, and a constant or NaN-filled volume
is refused in seconds with one slab in memory, whatever its size. NIfTI files (.nii,
.nii.gz) are read plane by plane; the ITK formats (.mha, .mhd, .nrrd) are read whole by
SimpleITK, so for them the scan holds the volume once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sfda.errors import SfdaError
from sfda.io.slabs import SLAB_VOXELS, count_non_finite, iter_slabs, non_finite_error
from sfda.io.volume import (NIFTI_SUFFIXES, _check_voxel_type, _corrupt, _read_errors, read_header, read_volume,
                            volume_suffix)
from sfda.io.volume_formats import _as_3d_shape, apply_scaling


@dataclass
class VoxelSummary:
    low: float  # over the finite voxels (nan if none)
    high: float
    non_finite: int
    size: int


def scan_volume(path: str | os.PathLike) -> VoxelSummary:
    """Range and NaN/inf count of a volume file's voxels (after NIfTI scaling)."""
    p = Path(path)
    read_header(p)  # existence, extension, 3D, geometry: the same messages as a full read
    if volume_suffix(p) not in NIFTI_SUFFIXES:
        return _summarise(iter_slabs(read_volume(p, dtype=None, check_finite=False).array))
    try:
        return _summarise(_nifti_planes(p))
    except SfdaError:
        raise
    except _read_errors() as exc:
        raise _corrupt(p, exc) from exc


def check_image_file(path: str | os.PathLike) -> VoxelSummary:
    """Refuse an image file no normalisation can use: NaN/inf voxels, or one value everywhere;
    returns its summary."""
    s = scan_volume(path)
    if s.non_finite:
        raise non_finite_error(path, s.non_finite)
    if s.low == s.high:
        raise SfdaError(f"{path} has constant intensity ({s.low:g}) in all {s.size} voxels, so it cannot "
                        "be normalised: check that the file holds an image")
    return s


def _summarise(parts) -> VoxelSummary:
    low, high, bad, size = np.inf, -np.inf, 0, 0
    for part in parts:
        size += part.size
        n_bad = count_non_finite(part)
        bad += n_bad
        finite = part[np.isfinite(part)] if n_bad else part
        if finite.size:
            low, high = min(low, float(finite.min())), max(high, float(finite.max()))
    return VoxelSummary(low if size - bad else float("nan"), high if size - bad else float("nan"), bad, size)


def _nifti_planes(path: Path):
    """Yield the voxels of a NIfTI file in runs of whole planes (the file's slowest axis),
    read sequentially from the (possibly gzipped) stream, scaled as the header says."""
    import nibabel as nib

    img = nib.load(str(path), mmap=False)
    proxy = img.dataobj
    shape = _as_3d_shape(img.shape, path)
    dtype = np.dtype(img.get_data_dtype())
    _check_voxel_type(np.empty(0, dtype), path)
    plane = shape[0] * shape[1]
    step = max(SLAB_VOXELS // plane, 1)
    slope, inter = float(proxy.slope), float(proxy.inter)
    with nib.openers.ImageOpener(str(path)) as fh:
        fh.seek(proxy.offset)
        for start in range(0, shape[2], step):
            n_bytes = plane * min(step, shape[2] - start) * dtype.itemsize
            buf = fh.read(n_bytes)
            if len(buf) != n_bytes:
                raise OSError(f"expected {n_bytes} bytes, got {len(buf)}")
            yield apply_scaling(np.frombuffer(buf, dtype), slope, inter)
