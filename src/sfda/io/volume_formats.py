"""Per-format volume I/O: nibabel for NIfTI, SimpleITK for .mha/.mhd/.nrrd.

The axis and world-frame conventions these functions implement are described
in :mod:`sfda.io.volume`, which wraps them with the user-facing checks.
"""

from __future__ import annotations

import gzip
import os
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


def volume_suffix(path: str | os.PathLike) -> str:
    """The format suffix of ``path`` (``.nii.gz`` counts as one), lower-cased."""
    name = Path(path).name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return Path(name).suffix


def is_volume_path(path: str | os.PathLike) -> bool:
    """True when ``path`` has an extension sfda can read (used when scanning folders)."""
    return volume_suffix(path) in SUPPORTED_SUFFIXES


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


# --------------------------------------------------------------------------- reading


def _check_pixdim(img, path: Path) -> None:
    """nibabel quietly replaces a zero voxel size by 1 (and keeps a negative one as its size):
    read the stored pixdim and refuse either, since distances and resampling would be wrong."""
    import nibabel as nib

    if not isinstance(img, nib.Nifti1Image):  # NIfTI-2 included (a subclass)
        return
    with nib.openers.ImageOpener(str(path)) as fh:
        raw = type(img.header).from_fileobj(fh, check=False)
    zooms = np.asarray(raw["pixdim"][1:4], dtype=np.float64)
    if not np.all(np.isfinite(zooms)) or np.any(zooms <= 0):
        raise SfdaError(f"{path}: the header's voxel size (pixdim) is {', '.join(f'{z:g}' for z in zooms)}; "
                        "every voxel size must be a positive number of mm: fix the header")


def _read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    import nibabel as nib

    img = nib.load(str(path), mmap=False)
    _check_pixdim(img, path)
    shape = _as_3d_shape(img.shape, path)
    array = _scaled_float32(img.dataobj).reshape(shape, order="A")  # decompression errors surface here
    codes = (int(img.header["qform_code"]), int(img.header["sform_code"]))
    return array, np.asarray(img.affine, dtype=np.float64), codes


def _scaled_float32(proxy) -> np.ndarray:
    """The voxels in their stored type or, where the header scales them (scl_slope/scl_inter),
    scaled in float32: nibabel would scale in float64, a whole-volume copy twice the size."""
    slope, inter = float(proxy.slope), float(proxy.inter)
    if (slope, inter) == (1.0, 0.0):
        return np.asarray(proxy)
    return apply_scaling(np.asarray(proxy.get_unscaled()), slope, inter)


def apply_scaling(raw: np.ndarray, slope: float, inter: float) -> np.ndarray:
    """``raw * slope + inter`` in float32, or ``raw`` itself when the header does not scale."""
    if (slope, inter) == (1.0, 0.0):
        return raw
    array = raw.astype(np.float32)
    array *= np.float32(slope)
    array += np.float32(inter)
    return array


def _nifti_header(path: Path) -> tuple[tuple[int, int, int], np.ndarray]:
    import nibabel as nib

    img = nib.load(str(path), mmap=False)
    _check_pixdim(img, path)
    return _as_3d_shape(img.shape, path), img.affine


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
