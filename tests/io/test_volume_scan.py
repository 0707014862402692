"""The streaming scan of a volume file: range and NaN/inf count plane by plane, with one slab in memory."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from sfda.errors import SfdaError
from sfda.io.volume import write_volume
from sfda.io.volume_scan import check_image_file, scan_volume

AFFINE = np.diag([1.5, 1.0, 2.0, 1.0])


@pytest.fixture(autouse=True)
def small_slabs(monkeypatch):
    monkeypatch.setattr("sfda.io.slabs.SLAB_VOXELS", 9 * 11 * 2)  # several slabs per test volume


@pytest.mark.parametrize("name", ["v.nii.gz", "v.nii", "v.mha"])
def test_scan_reports_range_and_non_finite_voxels(tmp_path, name):
    vol = np.random.default_rng(0).normal(size=(9, 11, 7)).astype(np.float32)
    vol[3, 4, 5], vol[0, 0, 6] = np.nan, np.inf
    write_volume(tmp_path / name, vol, AFFINE)
    s = scan_volume(tmp_path / name)
    finite = vol[np.isfinite(vol)]
    assert (s.non_finite, s.size) == (2, vol.size)
    assert (s.low, s.high) == (float(finite.min()), float(finite.max()))


def test_scan_applies_the_header_scaling(tmp_path):
    raw = np.arange(9 * 11 * 7, dtype=np.int16).reshape(9, 11, 7)
    img = nib.Nifti1Image(raw, AFFINE)
    img.header.set_slope_inter(0.5, -10.0)
    nib.save(img, tmp_path / "scaled.nii.gz")
    s = scan_volume(tmp_path / "scaled.nii.gz")
    assert (s.low, s.high) == (-10.0, raw.max() * 0.5 - 10.0)


@pytest.mark.parametrize("kind, match", [("constant", "constant intensity"), ("nan", "NaN/inf"),
                                         ("complex", "complex-valued")])
def test_check_image_file_refuses_what_cannot_be_normalised(tmp_path, kind, match):
    path = tmp_path / f"{kind}.nii.gz"
    vol = np.full((9, 11, 7), 3.0, dtype=np.float32)
    if kind == "nan":
        vol = np.random.default_rng(0).normal(size=vol.shape).astype(np.float32)
        vol[1, 2, 3] = np.nan
    if kind == "complex":
        vol = vol.astype(np.complex64)
    nib.save(nib.Nifti1Image(vol, AFFINE), path)
    with pytest.raises(SfdaError, match=match) as err:
        check_image_file(path)
    assert str(path) in str(err.value)


def test_check_image_file_accepts_an_image(tmp_path):
    write_volume(tmp_path / "ok.nii.gz", np.random.default_rng(1).normal(size=(9, 11, 7)), AFFINE)
    check_image_file(tmp_path / "ok.nii.gz")
