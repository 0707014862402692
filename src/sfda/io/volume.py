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
"""

from __future__ import annotations

import gzip
import os
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sfda.errors import SfdaError
from sfda.io.atomic import atomic_path

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".mha", ".mhd", ".nrrd")
SUPPORTED_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES

#: ITK (LPS) <-> nibabel (RAS) world frames differ by the sign of x and y.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: NIfTI codes used when the source's are unknown: 1 = scanner, for both, so
#: viewers that prefer the qform and those that prefer the sform agree.
_DEFAULT_CODES = (1, 1)


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


def volume_suffix(path: str | os.PathLike) -> str:
    """The format suffix of ``path`` (``.nii.gz`` counts as one), lower-cased."""
    name = Path(path).name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return Path(name).suffix


def is_volume_path(path: str | os.PathLike) -> bool:
    """True when ``path`` has an extension sfda can read (used when scanning folders)."""
    return volume_suffix(path) in SUPPORTED_SUFFIXES


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


# --------------------------------------------------------------------------- shape checks


def _as_3d_shape(shape: tuple[int, ...], path: Path) -> tuple[int, int, int]:
    """Drop trailing singleton dims beyond 3; refuse real 4D (or 2D) data."""
    shape = tuple(int(n) for n in shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) > 3:
        raise SfdaError(
            f"{path} is {len(shape)}D (shape {shape}); sfda reads 3D volumes: "
            "split the channels into separate files"
        )
    if len(shape) < 3:
        raise SfdaError(
            f"{path} is {len(shape)}D (shape {shape}); sfda reads 3D volumes: save it as a 3D "
            "volume"
        )
    return shape  # type: ignore[return-value]


def _check_finite(array: np.ndarray, path: Path) -> None:
    if array.dtype.kind not in "fc":
        return
    bad = int(array.size - np.count_nonzero(np.isfinite(array)))
    if bad:
        raise SfdaError(f"{path} contains {bad} NaN/inf voxels; fix or mask them before use")


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
    if check_finite:
        _check_finite(array, p)
    if dtype is not None:
        array = array.astype(dtype, copy=False)
    return Volume(np.ascontiguousarray(array), affine, str(p), codes)


def _read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    import nibabel as nib

    img = nib.load(str(path), mmap=False)
    shape = _as_3d_shape(img.shape, path)
    array = np.asanyarray(img.dataobj)  # decompression errors surface here
    array = np.asarray(array).reshape(shape)
    codes = (int(img.header["qform_code"]), int(img.header["sform_code"]))
    return array, np.asarray(img.affine, dtype=np.float64), codes


def _read_itk(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import SimpleITK as sitk

    img = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(img)  # (z, y, x) or (z, y, x, c)
    ndim = img.GetDimension()
    # Reverse the spatial axes to (x, y, z); keep components last.
    axes = tuple(range(ndim - 1, -1, -1)) + tuple(range(ndim, array.ndim))
    array = array.transpose(axes)
    shape = _as_3d_shape(array.shape, path)
    array = array.reshape(shape)
    affine = _itk_affine(img.GetOrigin(), img.GetSpacing(), img.GetDirection(), ndim)
    return array, affine


def _itk_affine(origin, spacing, direction, ndim: int) -> np.ndarray:
    """RAS voxel->world affine from ITK's LPS origin/spacing/direction (3D part)."""
    direction = np.asarray(direction, dtype=np.float64).reshape(ndim, ndim)
    lps = np.eye(4)
    n = min(ndim, 3)
    lps[:n, :n] = direction[:n, :n] * np.asarray(spacing, dtype=np.float64)[:n]
    lps[:n, 3] = np.asarray(origin, dtype=np.float64)[:n]
    return _LPS_TO_RAS @ lps


def read_header(path: str | os.PathLike) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """``(shape, spacing)`` without reading voxel data, for indexing datasets fast.

    Spacing is rounded to 1e-6 mm to hide float32 header noise (1.24999994 -> 1.25).
    """
    p = _check_readable(path)
    try:
        if volume_suffix(p) in NIFTI_SUFFIXES:
            import nibabel as nib

            img = nib.load(str(p), mmap=False)
            shape, affine = _as_3d_shape(img.shape, p), img.affine
        else:
            shape, affine = _itk_header(p)
    except SfdaError:
        raise
    except PermissionError:
        raise SfdaError(f"cannot read {p}: permission denied; fix the file's permissions") from None
    except _read_errors() as exc:
        raise _corrupt(p, exc) from exc
    spacing = tuple(round(s, 6) for s in spacing_of(affine))
    return shape, spacing  # type: ignore[return-value]


def _itk_header(path: Path) -> tuple[tuple[int, int, int], np.ndarray]:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    ndim = reader.GetDimension()
    shape = tuple(reader.GetSize()) + (
        (reader.GetNumberOfComponents(),) if reader.GetNumberOfComponents() > 1 else ()
    )
    shape3 = _as_3d_shape(shape, path)
    return shape3, _itk_affine(reader.GetOrigin(), reader.GetSpacing(), reader.GetDirection(), ndim)


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


def _write_nifti(
    dest: Path, array: np.ndarray, affine: np.ndarray, codes: tuple[int, int] | None, gz: bool
) -> None:
    """Serialise in memory so .nii.gz bytes are deterministic (gzip mtime 0)."""
    import nibabel as nib

    img = nib.Nifti1Image(array, affine, dtype=array.dtype)
    qcode, scode = codes if codes is not None else _DEFAULT_CODES
    if codes is None and _has_shear(affine):
        qcode = 0  # a qform cannot hold shear: let viewers use the sform only
    img.set_qform(affine, code=int(qcode))
    img.set_sform(affine, code=int(scode))
    img.header.set_data_dtype(array.dtype)
    img.header.set_xyzt_units("mm")
    data = img.to_bytes()
    if gz:
        data = gzip.compress(data, compresslevel=6, mtime=0)
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def _has_shear(affine: np.ndarray) -> bool:
    m = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    return not np.allclose(m.T @ m, np.eye(3), atol=1e-4)


def _write_itk(dest: Path, array: np.ndarray, affine: np.ndarray, mhd: bool) -> None:
    import SimpleITK as sitk

    lps = _LPS_TO_RAS @ affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    if np.any(spacing <= 0) or _has_shear(affine):
        raise SfdaError(
            f"cannot write {dest}: its affine has shear or a zero axis, which "
            f"{volume_suffix(dest)} "
            "cannot store; write .nii.gz instead"
        )
    img = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    img.SetSpacing([float(s) for s in spacing])
    img.SetOrigin([float(v) for v in lps[:3, 3]])
    img.SetDirection([float(v) for v in (lps[:3, :3] / spacing).ravel()])
    if mhd:
        _write_mhd(dest, img)
        return
    with atomic_path(dest) as tmp:
        sitk.WriteImage(img, str(tmp), useCompression=True)


def _write_mhd(dest: Path, img) -> None:
    """.mhd is a header plus a data file: write both atomically, data first."""
    import tempfile

    import SimpleITK as sitk

    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}.") as scratch:
        staged = Path(scratch) / dest.name
        sitk.WriteImage(img, str(staged), useCompression=True)
        data_files = [f for f in Path(scratch).iterdir() if f.name != dest.name]
        with atomic_path(dest) as tmp_header:
            for data_file in data_files:
                with atomic_path(dest.parent / data_file.name) as tmp_data:
                    os.replace(data_file, tmp_data)
            os.replace(staged, tmp_header)
