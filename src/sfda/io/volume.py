"""Read and write 3D medical volumes: the ONE place that fixes the axis order.

Conventions every other module relies on:

* ``Volume.array`` is indexed in the file's voxel order ``(i, j, k)`` exactly as
  nibabel returns it.  SimpleITK hands back a ``(z, y, x)`` numpy view, so files
  read with it (.mha, .mhd, .nrrd) are transposed to ``(x, y, z)``: the same
  volume saved as NIfTI and as MetaImage reads back as the same array.
* ``Volume.spacing[a]`` is the voxel size in mm along array axis ``a`` (the norm
  of column ``a`` of the affine).
* ``Volume.affine`` is the 4x4 voxel -> world matrix in nibabel's RAS+
  convention.  ITK stores LPS, so for SimpleITK files the affine is built from
  origin/spacing/direction and its first two rows are negated (and negated back
  when writing).

Every failure a user can cause (missing, corrupt, 4D, NaN...) is an
:class:`~sfda.errors.SfdaError` naming the file and what to do about it.
This module holds the public API and those checks; the per-format code that
applies the conventions is in :mod:`sfda.io.volume_formats`.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sfda.errors import SfdaError
from sfda.io.slabs import refuse_non_finite

# The format-level names are re-exported so ``sfda.io.volume`` stays the one
# import path for volume I/O, as it was before the per-format code moved out.
from sfda.io.volume_formats import (  # noqa: F401
    _DEFAULT_CODES,
    _LPS_TO_RAS,
    ITK_SUFFIXES,
    NIFTI_SUFFIXES,
    SUPPORTED_SUFFIXES,
    _as_3d_shape,
    _has_shear,
    _itk_affine,
    _itk_header,
    _nifti_header,
    _read_itk,
    _read_nifti,
    _write_itk,
    _write_mhd,
    _write_nifti,
    is_volume_path,
    volume_suffix,
)

__all__ = [
    "ITK_SUFFIXES",
    "NIFTI_SUFFIXES",
    "SUPPORTED_SUFFIXES",
    "Volume",
    "is_volume_path",
    "read_header",
    "read_volume",
    "spacing_of",
    "volume_suffix",
    "write_volume",
]


@dataclass
class Volume:
    """A 3D array plus its voxel -> world affine (RAS+, mm).

    ``codes`` keeps the NIfTI (qform_code, sform_code) of the source file so a
    mask written ``like=`` this volume is placed identically by every viewer.
    """

    array: np.ndarray
    affine: np.ndarray
    path: str | None = None
    codes: tuple[int, int] | None = None

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along each array axis."""
        return spacing_of(self.affine)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(n) for n in self.array.shape)


def spacing_of(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size per array axis: the column norms of the affine's 3x3 part."""
    norms = np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)
    return (float(norms[0]), float(norms[1]), float(norms[2]))


def _check_readable(path: str | os.PathLike) -> Path:
    """Fail early, with a fix, on a missing file or an unknown extension."""
    p = Path(path)
    suffix = volume_suffix(p)
    if suffix not in SUPPORTED_SUFFIXES:
        raise SfdaError(
            f"{p}: unknown volume extension {suffix or '(none)'!r}; "
            f"sfda reads {', '.join(SUPPORTED_SUFFIXES)}: convert the file to one of these"
        )
    if not p.is_file():
        raise SfdaError(f"volume file {p} not found; check the path (or re-run `sfda data index`)")
    return p


def _corrupt(path: Path, exc: BaseException) -> SfdaError:
    return SfdaError(
        f"cannot read {path}: the file is corrupt or truncated ({_library_detail(exc)}); "
        "re-export or re-download it"
    )


def _library_detail(exc: BaseException) -> str:
    """One short line from a library message (SimpleITK's are multi-line with C++ locations)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith("Exception thrown in")]
    text = " ".join(lines) or type(exc).__name__
    text = re.sub(r"^(sitk::ERROR:|ITK ERROR:)\s*(\w+\(0x[0-9a-f]+\):\s*)?", "", text)
    return text if len(text) <= 200 else text[:197] + "..."


def _read_errors() -> tuple[type[BaseException], ...]:
    """Library errors meaning "this file is damaged", including those raised lazily
    when nibabel decompresses the voxel data (zlib/EOF) and SimpleITK's RuntimeError."""
    from nibabel.filebasedimages import ImageFileError
    from nibabel.spatialimages import HeaderDataError

    return (
        ImageFileError,
        HeaderDataError,
        OSError,
        EOFError,
        zlib.error,
        ValueError,
        struct.error,
        RuntimeError,
    )


# --------------------------------------------------------------------------- checks


def _check_voxel_type(array: np.ndarray, path: Path) -> None:
    """Complex or boolean voxels are not an image sfda can normalise: casting would drop the
    imaginary part, or treat a mask as intensities, silently."""
    if array.dtype.kind == "c":
        raise SfdaError(f"{path} holds complex-valued voxels ({array.dtype}); sfda reads real images: "
                        "save the magnitude (or the real part) as a float volume")
    if array.dtype.kind == "b":
        raise SfdaError(f"{path} holds boolean voxels; save images as float and masks as uint8 labels")


def check_geometry(affine: np.ndarray, path: str | Path) -> None:
    """Refuse an affine that places no voxel: non-finite, a zero spacing, or not invertible."""
    a = np.asarray(affine, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise SfdaError(f"{path}: the voxel-to-world affine holds NaN/inf; fix the header (pixdim, qform/sform)")
    spacing = spacing_of(a)
    if min(spacing) <= 1e-9:
        raise SfdaError(f"{path}: a voxel spacing is zero ({', '.join(f'{v:g}' for v in spacing)} mm); "
                        "fix the header's pixdim")
    if abs(np.linalg.det(a[:3, :3])) < 1e-12 * float(np.prod(spacing)):
        raise SfdaError(f"{path}: the voxel-to-world affine is not invertible (its axes are parallel); "
                        "fix the header's qform/sform")


# --------------------------------------------------------------------------- reading


def read_volume(
    path: str | os.PathLike, dtype: np.dtype | type | None = np.float32, check_finite: bool = True
) -> Volume:
    """Read a 3D volume in sfda's axis convention (see module docstring).

    ``dtype=None`` keeps the stored type (after NIfTI scaling); ``check_finite``
    rejects NaN/inf voxels, which silently poison normalisation and losses.
    """
    p = _check_readable(path)
    try:
        if volume_suffix(p) in NIFTI_SUFFIXES:
            array, affine, codes = _read_nifti(p)
        else:
            array, affine = _read_itk(p)
            codes = None
    except SfdaError:
        raise
    except PermissionError:
        raise SfdaError(f"cannot read {p}: permission denied; fix the file's permissions") from None
    except MemoryError:
        raise SfdaError(f"not enough memory to read {p}; free memory or crop the volume") from None
    except _read_errors() as exc:
        raise _corrupt(p, exc) from exc
    _check_voxel_type(array, p)
    check_geometry(affine, p)
    if check_finite:
        refuse_non_finite(array, p)
    if dtype is not None:
        array = array.astype(dtype, copy=False)
    # The file's own memory order is kept (NIfTI is Fortran-ordered): a C-order copy would double
    # the peak memory of a large scan, and everything downstream takes any strides.
    return Volume(array, affine, str(p), codes)


def read_header(path: str | os.PathLike) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """``(shape, spacing)`` without reading voxel data, for indexing datasets fast.

    Spacing is rounded to 1e-6 mm to hide float32 header noise (1.24999994 -> 1.25).
    """
    p = _check_readable(path)
    try:
        if volume_suffix(p) in NIFTI_SUFFIXES:
            shape, affine = _nifti_header(p)
        else:
            shape, affine = _itk_header(p)
    except SfdaError:
        raise
    except PermissionError:
        raise SfdaError(f"cannot read {p}: permission denied; fix the file's permissions") from None
    except _read_errors() as exc:
        raise _corrupt(p, exc) from exc
    check_geometry(affine, p)
    spacing = tuple(round(s, 6) for s in spacing_of(affine))
    return shape, spacing  # type: ignore[return-value]


# --------------------------------------------------------------------------- writing


def write_volume(
    path: str | os.PathLike,
    array: np.ndarray,
    like: Volume | np.ndarray,
    dtype: np.dtype | type | None = None,
) -> None:
    """Write ``array`` with the affine of ``like`` (a Volume or a 4x4 affine), atomically.

    The format follows the extension.  The header dtype is the array's dtype
    (bool becomes uint8), so masks are stored as small integers, not floats.
    """
    dest = Path(path)
    suffix = volume_suffix(dest)
    if suffix not in SUPPORTED_SUFFIXES:
        raise SfdaError(
            f"cannot write {dest}: unknown volume extension {suffix or '(none)'!r}; "
            f"use one of {', '.join(SUPPORTED_SUFFIXES)}"
        )
    affine, codes = _affine_of(like, dest)
    array = _prepare_array(np.asarray(array), dtype, dest)
    if suffix in NIFTI_SUFFIXES:
        _write_nifti(dest, array, affine, codes, gz=suffix == ".nii.gz")
    else:
        _write_itk(dest, array, affine, mhd=suffix == ".mhd")


def _affine_of(like: Volume | np.ndarray, dest: Path) -> tuple[np.ndarray, tuple[int, int] | None]:
    if isinstance(like, Volume):
        affine, codes = like.affine, like.codes
    else:
        affine, codes = like, None
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise SfdaError(
            f"cannot write {dest}: the affine must be a finite 4x4 matrix, got shape {affine.shape}"
        )
    return affine, codes


def _prepare_array(array: np.ndarray, dtype, dest: Path) -> np.ndarray:
    if array.ndim != 3:
        raise SfdaError(f"cannot write {dest}: sfda writes 3D volumes, got shape {array.shape}")
    if dtype is not None:
        array = array.astype(dtype, copy=False)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if array.dtype == np.int64:  # nibabel refuses int64 without an explicit request
        if array.size == 0 or (
            array.min() >= np.iinfo(np.int32).min and array.max() <= np.iinfo(np.int32).max
        ):
            array = array.astype(np.int32)
    return array
