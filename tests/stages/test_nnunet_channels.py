"""nnU-Net models with several input channels (``case_0000``, ``case_0001``): each channel read with
its own normalisation, all cropped by one non-zero box, stacked in nnU-Net's channel order; inputs
grouped per case; a missing channel or a ``--modality`` that names too few is refused before
anything is written. The folder is the fixture's, given a second channel (CT) in its dataset.json
and plans, and a network that takes two."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

pytest.importorskip("dynamic_network_architectures")

from sfda.cli import main  # noqa: E402
from sfda.engine.checkpoint import load_model  # noqa: E402
from sfda.inference import scan_slices, stream_volume  # noqa: E402
from sfda.nets import nnunet_nets  # noqa: E402
from sfda.nets.nnunet_nets import resolve_ops  # noqa: E402
from stages.test_nnunet import make_result_folder  # noqa: E402

SPACING = (0.8, 0.8, 3.0)
CT = {"max": 230.0, "mean": 92.0, "median": 65.0, "min": 22.0, "percentile_00_5": 33.0, "percentile_99_5": 211.0,
      "std": 54.0}


def two_channel_folder(root: Path, configuration: str = "3d_fullres") -> Path:
    """The fixture's folder with channels MRI (z-score) and CT (CT normalisation) and a network of two
    input channels."""
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    folder = make_result_folder(root, configuration=configuration)
    dj = json.loads((folder / "dataset.json").read_text())
    dj["channel_names"] = {"0": "MRI", "1": "CT"}
    (folder / "dataset.json").write_text(json.dumps(dj))
    plans = json.loads((folder / "plans.json").read_text())
    plans["foreground_intensity_properties_per_channel"]["1"] = CT
    for cfg in plans["configurations"].values():
        cfg["normalization_schemes"] = ["ZScoreNormalization", "CTNormalization"]
        cfg["use_mask_for_norm"] = [False, False]
    (folder / "plans.json").write_text(json.dumps(plans))
    ckpt_path = folder / "fold_0" / "checkpoint_final.pth"
    ckpt = torch.load(ckpt_path, weights_only=False)
    torch.manual_seed(1)
    kwargs = resolve_ops(plans["configurations"][configuration]["architecture"]["arch_kwargs"])
    net = PlainConvUNet(input_channels=2, num_classes=3, deep_supervision=True, **kwargs)
    ckpt["network_weights"] = net.state_dict()
    ckpt["init_args"].update(plans=plans, dataset_json=dj)
    torch.save(ckpt, ckpt_path)
    return folder


def write_two_channel_raw(root: Path, n: int = 2) -> Path:
    """Cases of (48, 40, 12) voxels: channel 0 framed in zeros on x, channel 1 on y (so the box nnU-Net
    crops both to is the union of the two)."""
    rng = np.random.default_rng(0)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    xs, ys = np.meshgrid(np.arange(48), np.arange(40), indexing="ij")
    affine = np.diag([0.8, 0.8, 3.0, 1.0])
    for i in range(n):
        lab = np.zeros((48, 40, 12), np.uint8)
        lab[((xs - 16) / 8.0) ** 2 + ((ys - 20) / 10.0) ** 2 < 1, 2:10] = 1
        lab[((xs - 34) / 6.0) ** 2 + ((ys - 18) / 6.0) ** 2 < 1, 4:8] = 2
        mri = np.array([100.0, 300.0, 200.0])[lab] + rng.normal(0, 20, lab.shape)
        ct = np.array([10.0, 60.0, 150.0])[lab] + rng.normal(0, 10, lab.shape)
        mri[:4], ct[:, :3] = 0, 0
        for c, image in enumerate((mri, ct)):
            nib.save(nib.Nifti1Image(image.astype(np.float32), affine), root / "imagesTr" / f"case{i}_000{c}.nii.gz")
        nib.save(nib.Nifti1Image(lab, affine), root / "labelsTr" / f"case{i}.nii.gz")
    meta = {"channel_names": {"0": "MRI", "1": "CT"}, "labels": {"background": 0, "a": 1, "b": 2},
            "numTraining": n, "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def _channels(raw: Path, case: str = "case0") -> list[np.ndarray]:
    return [np.asarray(nib.load(raw / "imagesTr" / f"{case}_000{c}.nii.gz").dataobj) for c in (0, 1)]


def test_import_reads_every_channel_with_its_own_normalisation(tmp_path):
    folder = two_channel_folder(tmp_path / "results")
    assert main(["import-nnunet", "--folder", str(folder), "--out", str(tmp_path / "src.pt")]) == 0
    _, card = load_model(tmp_path / "src.pt")
    assert card.modality == "MRI+CT" and card.network.args["in_channels"] == 2
    assert [n.method for n in card.slicing.norms] == ["percentile-zscore", "fixed-zscore"]
    assert card.slicing.norms[1].fixed == pytest.approx([33.0, 211.0, 92.0, 54.0])


def test_the_network_sees_each_channel_as_nnunet_gives_it(tmp_path):
    """Both channels cropped to the box of voxels non-zero in either, channel 0 z-scored over it, channel
    1 clipped and standardised with the plans' CT numbers, stacked in the dataset's channel order."""
    folder = two_channel_folder(tmp_path / "results")
    assert main(["import-nnunet", "--folder", str(folder), "--out", str(tmp_path / "src.pt")]) == 0
    model, card = load_model(tmp_path / "src.pt")
    mri, ct = _channels(write_two_channel_raw(tmp_path / "raw", n=1))
    volume, _ = scan_slices(card.slicing, [mri, ct], ["mri", "ct"], spacing=SPACING)
    assert volume.shape == (1, 2, 48, 40, 12)  # the union box is the whole scan: neither frame is cropped
    expected_mri = (mri - mri.mean()) / mri.std()
    expected_ct = (np.clip(ct, 33.0, 211.0) - 92.0) / 54.0
    assert np.allclose(volume[0, 0], expected_mri, atol=1e-4) and np.allclose(volume[0, 1], expected_ct, atol=1e-4)
    mri[:, :6], ct[:, :6] = 0, 0  # now both are zero on y < 6: the box drops those rows for both channels
    volume, _ = scan_slices(card.slicing, [mri, ct], ["mri", "ct"], spacing=SPACING)
    box = mri[:, 6:]
    assert volume.shape == (1, 2, 48, 34, 12)
    assert np.allclose(volume[0, 0], (box - box.mean()) / box.std(), atol=1e-4)
    with pytest.raises(Exception, match="share one grid"):
        scan_slices(card.slicing, [mri, ct[:, :, :10]], ["mri", "ct"], spacing=SPACING)


def test_predict_groups_the_channels_of_each_case_and_refuses_a_missing_one(tmp_path, capsys):
    folder = two_channel_folder(tmp_path / "results")
    raw = write_two_channel_raw(tmp_path / "raw")
    out = tmp_path / "pred"
    assert main(["predict", "--nnunet", str(folder), str(raw / "imagesTr"), "--out", str(out), "--no-mirroring"]) == 0
    assert sorted(p.name for p in out.glob("case*.nii.gz")) == ["case0.nii.gz", "case1.nii.gz"]
    model, card = load_model(out / "source.pt")
    mri, ct = _channels(raw, "case1")
    expected = stream_volume(model, card.slicing, [mri, ct], ["mri", "ct"], spacing=SPACING)["labels"]
    assert np.array_equal(np.asarray(nib.load(out / "case1.nii.gz").dataobj), expected)
    off = raw / "imagesTr" / "case1_0001.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(nib.load(off).dataobj)[:, :, :10], nib.load(off).affine), off)
    capsys.readouterr()  # case1's CT on another grid: refused before case0's mask is written
    assert main(["predict", "--nnunet", str(folder), str(raw / "imagesTr"), "--out", str(tmp_path / "p1")]) == 2
    assert "does not lie on the grid of" in capsys.readouterr().err and not (tmp_path / "p1").exists()
    off.unlink()
    capsys.readouterr()
    assert main(["predict", "--nnunet", str(folder), str(raw / "imagesTr"), "--out", str(tmp_path / "p2")]) == 2
    err = capsys.readouterr().err
    assert "channel 1 (CT) is missing" in err and "case1" in err and not (tmp_path / "p2").exists()
    capsys.readouterr()
    assert main(["predict", "--nnunet", str(folder), str(raw / "labelsTr"), "--out", str(tmp_path / "p3")]) == 2
    assert "one file per channel" in capsys.readouterr().err and not (tmp_path / "p3").exists()


def test_adapt_and_evaluate_read_every_channel_and_refuse_a_modality_of_one(tmp_path, capsys, monkeypatch):
    folder = two_channel_folder(tmp_path / "results")
    raw = write_two_channel_raw(tmp_path / "raw")
    cases, out = tmp_path / "cases.json", tmp_path / "adapted"
    assert main(["data", "index", str(raw), "-o", str(cases)]) == 0
    adapt = ["adapt", "--nnunet", str(folder), "--method", "tent", "--cases", str(cases), "--epochs", "1",
             "--batch-size", "2", "--out", str(out)]
    capsys.readouterr()
    assert main([*adapt, "--modality", "MRI"]) == 2
    err = capsys.readouterr().err
    assert "takes 2 input channel(s) (MRI, CT)" in err and "--modality MRI+CT" in err and not out.exists()
    seen = []
    original = nnunet_nets.strided  # the train-mode path: what adaptation steps on
    monkeypatch.setattr(nnunet_nets, "strided", lambda net, x, s: seen.append(tuple(x.shape)) or original(net, x, s))
    assert main([*adapt, "--modality", "MRI+CT"]) == 0
    assert seen and set(seen) == {(2, 2, 12, 40, 48)}  # two channels, in the plans' patch
    _, card = load_model(out / "selected.pt")
    assert card.modality == "MRI+CT" and len(card.slicing.norms) == 2
    ev = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(out / "selected.pt"), "--cases", str(cases), "--modality", "MRI+CT",
                 "--out", str(ev)]) == 0
    assert json.loads((ev / "metrics.json").read_text())["modality"] == "MRI+CT"


def test_a_2d_model_of_two_channels_sees_both_in_every_slice(tmp_path):
    folder = two_channel_folder(tmp_path / "results", configuration="2d")
    assert main(["import-nnunet", "--folder", str(folder), "--out", str(tmp_path / "src.pt")]) == 0
    model, card = load_model(tmp_path / "src.pt")
    mri, ct = _channels(write_two_channel_raw(tmp_path / "raw", n=1))
    images, _ = scan_slices(card.slicing, [mri, ct], ["mri", "ct"], spacing=SPACING)
    assert images.shape == (12, 2, 48, 40)
    assert np.allclose(images[:, 1], np.moveaxis((np.clip(ct, 33.0, 211.0) - 92.0) / 54.0, 2, 0), atol=1e-4)
    labels = stream_volume(model, card.slicing, [mri, ct], ["mri", "ct"], spacing=SPACING)["labels"]
    assert labels.shape == mri.shape
