"""Round trips and user errors of sfda.io.volume (tiny volumes)."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from sfda.errors import SfdaError
from sfda.io.volume import Volume, read_header, read_volume, write_volume

SHAPE = (8, 12, 10)


def _oblique_affine() -> np.ndarray:
    """Anisotropic spacing (2, 1.25, 0.8) rotated about two axes, with an offset."""
    a, b = np.deg2rad(17.0), np.deg2rad(-9.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag([2.0, 1.25, 0.8])
    affine[:3, 3] = [-30.5, 12.25, 7.0]
    return affine


def _array(dtype=np.float32) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.random(SHAPE) * 500).astype(dtype)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".mha", ".nrrd", ".mhd"])
def test_round_trip_preserves_array_affine_and_spacing(tmp_path, suffix):
    arr, affine = _array(), _oblique_affine()
    path = tmp_path / f"img{suffix}"
    write_volume(path, arr, affine)
    vol = read_volume(path)
    assert vol.shape == SHAPE
    np.testing.assert_array_equal(vol.array, arr)
    np.testing.assert_allclose(vol.affine, affine, atol=1e-4)
    np.testing.assert_allclose(vol.spacing, (2.0, 1.25, 0.8), atol=1e-5)
    shape, spacing = read_header(path)
    assert shape == SHAPE
    np.testing.assert_allclose(spacing, (2.0, 1.25, 0.8), atol=1e-5)
    assert not list(tmp_path.glob(".*")), "atomic write left a temporary file"


def test_itk_and_nifti_agree_on_axis_order_and_world(tmp_path):
    """The same volume read from .nii.gz and .mha gives the same array and RAS affine."""
    arr, affine = _array(), _oblique_affine()
    write_volume(tmp_path / "a.nii.gz", arr, affine)
    nii = read_volume(tmp_path / "a.nii.gz")
    write_volume(tmp_path / "a.mha", nii.array, nii)
    mha = read_volume(tmp_path / "a.mha")
    np.testing.assert_array_equal(mha.array, nii.array)
    np.testing.assert_allclose(mha.affine, nii.affine, atol=1e-4)
    # Voxel (1, 2, 3) sits at the same world point as nibabel computes it.
    ijk = np.array([1, 2, 3, 1.0])
    np.testing.assert_allclose(
        mha.affine @ ijk, nib.load(tmp_path / "a.nii.gz").affine @ ijk, atol=1e-4
    )


def test_mask_written_like_image_matches_and_is_uint8(tmp_path):
    write_volume(tmp_path / "img.nii.gz", _array(), _oblique_affine())
    img = read_volume(tmp_path / "img.nii.gz")
    mask = img.array > 250
    write_volume(tmp_path / "mask.nii.gz", mask, img)
    out = nib.load(tmp_path / "mask.nii.gz")
    assert out.get_data_dtype() == np.uint8
    assert out.shape == img.shape
    np.testing.assert_allclose(out.affine, img.affine, atol=1e-5)
    src = nib.load(tmp_path / "img.nii.gz").header
    assert (out.header["qform_code"], out.header["sform_code"]) == (
        src["qform_code"],
        src["sform_code"],
    )
    np.testing.assert_array_equal(
        read_volume(tmp_path / "mask.nii.gz", dtype=None).array, mask.astype(np.uint8)
    )


def test_nifti_codes_are_copied_from_source(tmp_path):
    img = nib.Nifti1Image(_array(), _oblique_affine())
    img.set_qform(None, code=0)
    img.set_sform(_oblique_affine(), code=2)
    nib.save(img, tmp_path / "src.nii.gz")
    vol = read_volume(tmp_path / "src.nii.gz")
    write_volume(tmp_path / "copy.nii.gz", vol.array, vol)
    hdr = nib.load(tmp_path / "copy.nii.gz").header
    assert (int(hdr["qform_code"]), int(hdr["sform_code"])) == (0, 2)


def test_gz_output_is_deterministic(tmp_path):
    arr = _array()
    write_volume(tmp_path / "a.nii.gz", arr, np.eye(4))
    write_volume(tmp_path / "b.nii.gz", arr, np.eye(4))
    assert (tmp_path / "a.nii.gz").read_bytes() == (tmp_path / "b.nii.gz").read_bytes()


def test_trailing_singleton_fourth_dim_is_squeezed(tmp_path):
    nib.save(nib.Nifti1Image(_array()[..., None], np.eye(4)), tmp_path / "a.nii.gz")
    assert read_volume(tmp_path / "a.nii.gz").shape == SHAPE
    assert read_header(tmp_path / "a.nii.gz")[0] == SHAPE


def test_volume_properties():
    vol = Volume(np.zeros(SHAPE), _oblique_affine())
    assert vol.shape == SHAPE
    np.testing.assert_allclose(vol.spacing, (2.0, 1.25, 0.8))


# --------------------------------------------------------------------------- errors


def _assert_error(path, *fragments, reader=read_volume):
    with pytest.raises(SfdaError) as info:
        reader(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message
    assert "\n" not in message


@pytest.mark.parametrize("reader", [read_volume, read_header])
def test_missing_file(tmp_path, reader):
    _assert_error(tmp_path / "nope.nii.gz", "not found", reader=reader)


@pytest.mark.parametrize("reader", [read_volume, read_header])
def test_unknown_extension(tmp_path, reader):
    path = tmp_path / "scan.png"
    path.write_bytes(b"x")
    _assert_error(path, ".nii.gz", ".mha", reader=reader)


def test_truncated_gz(tmp_path):
    path = tmp_path / "t.nii.gz"
    write_volume(path, _array(), np.eye(4))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _assert_error(path, "corrupt or truncated")


def test_corrupt_gz_payload(tmp_path):
    """Valid header, garbage after it: the error only appears when the data is read."""
    path = tmp_path / "c.nii.gz"
    raw = nib.Nifti1Image(_array(), np.eye(4)).to_bytes()
    good = gzip.compress(raw, mtime=0)
    path.write_bytes(good[: len(good) // 3] + b"\x00garbage" * 50)
    _assert_error(path, "corrupt or truncated")


@pytest.mark.parametrize("name", ["junk.nii.gz", "junk.nii", "junk.mha", "junk.nrrd"])
def test_garbage_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"this is not an image at all" * 20)
    _assert_error(path, "corrupt or truncated")


def test_truncated_uncompressed_nii(tmp_path):
    path = tmp_path / "t.nii"
    write_volume(path, _array(), np.eye(4))
    path.write_bytes(path.read_bytes()[:600])
    _assert_error(path, "corrupt or truncated")


def test_4d_volume(tmp_path):
    path = tmp_path / "four.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(SHAPE + (2,), np.float32), np.eye(4)), path)
    _assert_error(path, "is 4D (shape (8, 12, 10, 2))", "split the channels into separate files")
    _assert_error(path, "is 4D", reader=read_header)


def test_nan_voxels(tmp_path):
    path = tmp_path / "nan.nii.gz"
    arr = _array()
    arr[0, 0, 0], arr[1, 2, 3], arr[2, 2, 2] = np.nan, np.inf, -np.inf
    write_volume(path, arr, np.eye(4))
    _assert_error(path, "contains 3 NaN/inf voxels", "fix or mask them before use")
    assert np.isnan(read_volume(path, check_finite=False).array[0, 0, 0])


def test_write_unknown_extension(tmp_path):
    with pytest.raises(SfdaError, match="out.png"):
        write_volume(tmp_path / "out.png", _array(), np.eye(4))


def test_scaled_nifti_is_read_in_float32_and_unscaled_one_in_its_stored_type(tmp_path):
    """Header scaling is applied in float32 (nibabel would give a float64 volume, twice the size),
    and an unscaled int16 volume keeps its type when no dtype is asked: memory bounded by the file."""
    raw = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    img = nib.Nifti1Image(raw, np.eye(4))
    img.header.set_slope_inter(0.5, -3.0)
    nib.save(img, tmp_path / "scaled.nii.gz")
    nib.save(nib.Nifti1Image(raw, np.eye(4)), tmp_path / "plain.nii.gz")
    scaled = read_volume(tmp_path / "scaled.nii.gz", dtype=None).array
    assert scaled.dtype == np.float32
    np.testing.assert_array_equal(scaled, raw.astype(np.float32) * 0.5 - 3.0)
    plain = read_volume(tmp_path / "plain.nii.gz", dtype=None).array
    assert plain.dtype == np.int16 and np.array_equal(plain, raw)
