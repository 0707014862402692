"""A 2D nnU-Net configuration is read as nnU-Net's preprocessor reads it: cropped to the non-zero box,
normalised there, resampled in the plane only (cubic), the logits back (linear) and the crop put back
into background; adaptation sees the prediction's slices, every slice of the scan kept."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

pytest.importorskip("dynamic_network_architectures")

from sfda.cli import main  # noqa: E402
from sfda.engine.checkpoint import load_model  # noqa: E402
from sfda.inference import scan_slices, stream_volume  # noqa: E402
from stages.test_nnunet import make_result_folder, write_raw  # noqa: E402

SPACING = (1.0, 1.0, 3.0)  # sfda's (x, y, z); the plans' 2D spacing is 0.8 x 0.8


def _imported(tmp_path: Path):
    folder = make_result_folder(tmp_path / "results")
    assert main(["import-nnunet", "--folder", str(folder), "--out", str(tmp_path / "src.pt")]) == 0
    return load_model(tmp_path / "src.pt")


def _framed_case(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """The tiny dataset's first case at 1 mm in plane, in a frame of zeros on x, y and z."""
    raw = write_raw(tmp_path / "raw", n=1)
    for sub, name in (("imagesTr", "case0_0000.nii.gz"), ("labelsTr", "case0.nii.gz")):
        path = raw / sub / name
        array = np.asarray(nib.load(path).dataobj).copy()
        if sub == "imagesTr":
            array[:5], array[-3:], array[:, :4], array[:, :, :2], array[:, :, -1] = 0, 0, 0, 0, 0
        nib.save(nib.Nifti1Image(array, np.diag([*SPACING, 1.0])), path)
    path = raw / "imagesTr" / "case0_0000.nii.gz"
    return raw, np.asarray(nib.load(path).dataobj)


def test_a_2d_folder_repeats_nnunets_preprocessing(tmp_path):
    model, card = _imported(tmp_path)
    assert card.slicing.preprocess == "nnunet" and card.slicing.dims == 2 and card.slicing.axis == 2
    _, array = _framed_case(tmp_path)
    seen = []
    model.register_forward_pre_hook(lambda m, inp: seen.append(inp[0].detach().clone()))
    labels = stream_volume(model, card.slicing, array, "framed", spacing=SPACING)["labels"]
    box = array[5:-3, 4:, 2:-1]  # the non-zero box: x 5..44, y 4..39, z 2..10
    zscored = (box - box.mean()) / box.std()
    shape = (round(40 * 1.0 / 0.8), round(36 * 1.0 / 0.8))  # in plane only; the slices keep 3 mm
    planes = [zscored[:, :, k].astype(np.float64) for k in range(box.shape[2])]
    expected = np.stack([np.clip(ndi.zoom(p, [n / o for n, o in zip(shape, p.shape)], order=3, mode="nearest",
                                          grid_mode=True), p.min(), p.max())  # skimage's resize, plane by plane
                         for p in planes])  # (z, x, y)
    seen = torch.cat(seen)[:, 0]  # the box's 9 slices in sfda's (x, y); the network transposes them as nnU-Net's
    assert seen.shape == (9, 50, 45)
    assert torch.allclose(seen, torch.from_numpy(expected).float(), atol=1e-4)
    assert labels.shape == array.shape
    assert (labels[:5] == 0).all() and (labels[-3:] == 0).all() and (labels[:, :4] == 0).all()
    assert (labels[:, :, :2] == 0).all() and (labels[:, :, -1] == 0).all()


def test_2d_adaptation_reads_the_slices_prediction_reads(tmp_path):
    """The slice set (training, adaptation, priors) and scan_slices (per-scan adaptation, the trust check)
    hold the same slices: the prepared box's, and a blank slice (the normalised zero) where the box ends
    along the axis, so a scan keeps its slice count and positions."""
    from sfda.data.sliceset import build_sliceset
    from sfda.io.cases import load_cases

    _, card = _imported(tmp_path)
    raw, array = _framed_case(tmp_path)
    assert main(["data", "index", str(raw), "-o", str(tmp_path / "cases.json")]) == 0
    ss = build_sliceset(load_cases(tmp_path / "cases.json").cases, "MRI", card.slicing,
                        label_names=list(card.labels), progress=False)
    images, valid = scan_slices(card.slicing, array, "framed", spacing=SPACING)
    assert images.shape == ss.images.shape == (12, 1, 50, 45) and valid.all() and ss.valid_mask().all()
    assert np.array_equal(ss.images, images)
    box = array[5:-3, 4:, 2:-1]
    blank = (max(0, box.min()) - box.mean()) / box.std()  # zero, clipped to the box's range as every value
    assert np.allclose(images[[0, 1, 11]], blank, atol=1e-5) and images[5].std() > 0.5
    assert ss.labels.shape == (12, 50, 45) and set(np.unique(ss.labels)) == {0, 1, 2}
    assert list(ss.slice_index) == list(range(12)) and ss.positions()[-1] == 1.0
    shape, spacing = ss.grid_volume(ss.cases[0])
    assert shape == (50, 45, 12) and spacing == pytest.approx((0.8, 0.8, 3.0))


@pytest.mark.parametrize("configuration", ["2d", "3d_fullres"])
def test_a_cached_set_reads_no_image_to_find_its_boxes(tmp_path, monkeypatch, configuration):
    """nnU-Net's crop needs each image's non-zero box before the arrays' shape (and cache key) is known;
    the boxes are cached beside the arrays, so a second build reads nothing."""
    from sfda.data import sliceset
    from sfda.io.cases import load_cases
    from sfda.stages.common import slices_for

    folder = make_result_folder(tmp_path / "results", configuration=configuration)
    assert main(["import-nnunet", "--folder", str(folder), "--out", str(tmp_path / "src.pt")]) == 0
    _, card = load_model(tmp_path / "src.pt")
    raw, _ = _framed_case(tmp_path)
    assert main(["data", "index", str(raw), "-o", str(tmp_path / "cases.json")]) == 0
    cl = load_cases(tmp_path / "cases.json")
    first = slices_for(cl, None, "MRI", card.slicing, with_labels=True, cache=str(tmp_path / "cache"), progress=False)

    def no_reading(*args, **kwargs):
        raise AssertionError("an image was read")

    monkeypatch.setattr(sliceset, "read_channels", no_reading)
    again = slices_for(cl, None, "MRI", card.slicing, with_labels=True, cache=str(tmp_path / "cache"), progress=False)
    assert np.array_equal(first.images, again.images) and np.array_equal(first.labels, again.labels)
    assert again.valid_mask().shape == first.valid_mask().shape and again.hw == first.hw
