"""nnU-Net 3D result folders (3d_fullres): the network sees what nnU-Net's predictor gives it (the
non-zero box, its axis order, its normalisation), mirrors along nnU-Net's axes, and adapts, predicts
and exports back through the CLI. The plans are the fixture's 3d_fullres configuration (patch
12 x 40 x 48, spacing 3 x 0.8 x 0.8 mm in nnU-Net's (z, y, x))."""

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
from sfda.io.nnunet_results import load_nnunet_checkpoint  # noqa: E402
from sfda.nets import nnunet_nets  # noqa: E402
from stages.test_nnunet import _dna_net, make_result_folder, write_raw  # noqa: E402

SPACING = (0.8, 0.8, 3.0)  # sfda's (x, y, z)


def _imported(tmp_path: Path, change=None):
    folder = make_result_folder(tmp_path / "results", configuration="3d_fullres")
    if change:
        plans = json.loads((folder / "plans.json").read_text())
        change(plans)
        (folder / "plans.json").write_text(json.dumps(plans))
    assert main(["import-nnunet", "--folder", str(folder), "--out", str(tmp_path / "src.pt")]) == 0
    return folder, *load_model(tmp_path / "src.pt")


def _nnunet_net(folder: Path):
    ckpt = torch.load(folder / "fold_0" / "checkpoint_final.pth", weights_only=False)
    net = _dna_net(ckpt["init_args"]["plans"], deep_supervision=False, configuration="3d_fullres").eval()
    net.load_state_dict(ckpt["network_weights"])
    return net


def test_a_3d_folder_is_a_volume_model_in_sfdas_axes(tmp_path):
    _, model, card = _imported(tmp_path)
    assert card.slicing.dims == 3 and card.slicing.preprocess == "nnunet" and card.slicing.pad_multiple == 1
    assert card.slicing.spacing == pytest.approx(SPACING)  # nnU-Net's (3, 0.8, 0.8) reversed
    assert card.network.args["axes"] == [2, 1, 0] and card.network.args["patch_size"] == [12, 40, 48]
    assert card.mirror_axes == (0, 1, 2) and card.nnunet.mirror_axes == (0, 1, 2)


def test_transpose_forward_orders_the_network_axes_and_the_mirroring(tmp_path):
    def change(plans):
        plans["transpose_forward"], plans["transpose_backward"] = [2, 0, 1], [1, 2, 0]

    folder = make_result_folder(tmp_path / "r", configuration="3d_fullres")
    ckpt = torch.load(folder / "fold_0" / "checkpoint_final.pth", weights_only=False)
    ckpt["inference_allowed_mirroring_axes"] = (0,)  # nnU-Net's first axis: SimpleITK's x, sfda's 0
    torch.save(ckpt, folder / "fold_0" / "checkpoint_final.pth")
    plans = json.loads((folder / "plans.json").read_text())
    change(plans)
    plans["configurations"]["3d_fullres"]["spacing"] = [0.5, 3.0, 0.8]  # nnU-Net's (x, z, y) after the transpose
    (folder / "plans.json").write_text(json.dumps(plans))
    assert main(["import-nnunet", "--folder", str(folder), "--out", str(tmp_path / "src.pt")]) == 0
    _, card = load_model(tmp_path / "src.pt")
    assert card.network.args["axes"] == [0, 2, 1]  # nnU-Net's (x, z, y) are sfda's axes 0, 2, 1
    assert card.slicing.spacing == pytest.approx((0.5, 0.8, 3.0)) and card.mirror_axes == (0,)


def test_the_network_sees_the_volume_as_nnunet_gives_it(tmp_path):
    """SimpleITK's (z, y, x) array, z-scored over the non-zero box, cropped to it; the mask outside
    the box is background."""
    import SimpleITK as sitk

    folder, model, card = _imported(tmp_path)
    raw = write_raw(tmp_path / "raw", n=1)
    path = raw / "imagesTr" / "case0_0000.nii.gz"
    image = nib.load(path)
    array = np.asarray(image.dataobj).copy()
    array[:5], array[-3:], array[:, :4] = 0, 0, 0  # a frame of zeros: nnU-Net crops to the rest
    framed = tmp_path / "framed.nii.gz"
    nib.save(nib.Nifti1Image(array, image.affine), framed)
    seen = []
    model.net.register_forward_pre_hook(lambda m, inp: seen.append(inp[0].detach().clone()))
    volume, _ = scan_slices(card.slicing, array, str(framed), spacing=SPACING)
    with torch.no_grad():
        model.eval()(torch.from_numpy(volume))
    itk = sitk.GetArrayFromImage(sitk.ReadImage(str(framed))).astype(np.float32)[:, 4:, 5:-3]  # (z, y, x), cropped
    expected = (itk - itk.mean()) / itk.std()
    assert seen[0].shape == (1, 1, 12, 40, 48)  # padded with zeros to the patch, centred
    inner = seen[0][0, 0, :, 2:38, 4:44]  # the (36, 40) crop inside nnU-Net's centred padding
    assert torch.allclose(inner, torch.from_numpy(expected), atol=1e-4)
    labels = stream_volume(model, card.slicing, array, str(framed), spacing=SPACING)["labels"]
    assert (labels[:5] == 0).all() and (labels[-3:] == 0).all() and (labels[:, :4] == 0).all()


def test_mirroring_averages_the_flips_along_nnunets_axes(tmp_path):
    from sfda.nets.mirror import for_prediction

    folder, model, card = _imported(tmp_path)
    x = torch.randn(1, 1, 48, 40, 12)  # sfda's (x, y, z): nnU-Net's patch, reversed
    net = _nnunet_net(folder)
    t = x.permute(0, 1, 4, 3, 2)  # nnU-Net's (z, y, x)
    flips = [[], [2], [3], [4], [2, 3], [2, 4], [3, 4], [2, 3, 4]]
    with torch.no_grad():
        expected = (sum(net(t.flip(f)).flip(f) if f else net(t) for f in flips) / 8).permute(0, 1, 4, 3, 2)
        assert torch.allclose(for_prediction(model, card)(x), expected, atol=1e-4)
        assert torch.allclose(for_prediction(model, card, mirroring=False)(x), net(t).permute(0, 1, 4, 3, 2),
                              atol=1e-5)


def test_a_3d_folder_adapts_with_adaent_on_patches_predicts_and_exports_back(tmp_path, capsys, monkeypatch):
    folder, _, _ = _imported(tmp_path)
    raw = write_raw(tmp_path / "raw", n=2)
    cases, prior, out = tmp_path / "cases.json", tmp_path / "prior.csv", tmp_path / "adapted"
    assert main(["data", "index", str(raw), "-o", str(cases)]) == 0
    slice_prior = tmp_path / "slices.csv"
    assert main(["prior", "--method", "constant", "--ratios", "0.8,0.15,0.05", "--cases", str(cases),
                 "--modality", "MRI", "--out", str(slice_prior)]) == 0
    adapt = ["adapt", "--nnunet", str(folder), "--method", "adaent", "--cases", str(cases), "--modality", "MRI",
             "--epochs", "1", "--batch-size", "2", "--out", str(out)]
    assert main([*adapt, "--prior", str(slice_prior)]) == 2  # a table of slices for a volume model
    assert "the model takes whole volumes" in capsys.readouterr().err and not out.exists()
    assert main(["prior", "--method", "constant", "--ratios", "0.8,0.15,0.05", "--cases", str(cases),
                 "--modality", "MRI", "--checkpoint", str(tmp_path / "src.pt"), "--out", str(prior)]) == 0
    assert "case0:volume" in prior.read_text()
    assert main([*adapt, "--prior", str(prior)]) == 2  # a volume's ratios asked of each patch
    assert "method.kl_scope=batch" in capsys.readouterr().err and not out.exists()
    seen = []
    original = nnunet_nets.strided  # the train-mode path: what adaptation steps on
    monkeypatch.setattr(nnunet_nets, "strided", lambda net, x, s: seen.append(tuple(x.shape)) or original(net, x, s))
    assert main([*adapt, "--prior", str(prior), "method.kl_scope=batch"]) == 0
    assert seen and set(seen) == {(2, 1, 12, 40, 48)}  # the plans' patch, in nnU-Net's axes as the network runs
    image = raw / "imagesTr" / "case0_0000.nii.gz"
    assert main(["predict", "--checkpoint", str(out / "selected.pt"), str(image), "--out", str(tmp_path / "pred")]) == 0
    mask = nib.load(tmp_path / "pred" / "case0.nii.gz")
    assert mask.shape == nib.load(image).shape and np.allclose(mask.affine, nib.load(image).affine)
    exported = load_nnunet_checkpoint(out / "nnunet" / folder.name / "fold_0" / "checkpoint_final.pth")
    assert exported["init_args"]["configuration"] == "3d_fullres"
    reloaded = _dna_net(exported["init_args"]["plans"], deep_supervision=False, configuration="3d_fullres")
    reloaded.load_state_dict(exported["network_weights"])  # strict: the same architecture
    adapted, _ = load_model(out / "selected.pt")
    assert all(torch.equal(reloaded.state_dict()[k], v) for k, v in adapted.net.state_dict().items())


def test_a_cascade_stage_is_refused_with_the_folders_to_use(tmp_path, capsys):
    folder = make_result_folder(tmp_path / "results", configuration="3d_fullres")
    plans = json.loads((folder / "plans.json").read_text())
    plans["configurations"]["3d_fullres"]["previous_stage"] = "3d_lowres"
    (folder / "plans.json").write_text(json.dumps(plans))
    assert main(["import-nnunet", "--folder", str(folder), "--out", str(tmp_path / "src.pt")]) == 2
    err = capsys.readouterr().err
    assert "cascade" in err and "3d_lowres" in err and not (tmp_path / "src.pt").exists()


def test_adaptation_reads_volumes_as_prediction_does(tmp_path):
    """The volumes a 3D nnU-Net model adapts on are the ones it predicts: cropped to the non-zero
    box, normalised there, on nnU-Net's grid (a frame of zeros would otherwise shift both)."""
    from sfda.data.volumeset import build_volumeset
    from sfda.io.cases import load_cases

    _, _, card = _imported(tmp_path)
    raw = write_raw(tmp_path / "raw", n=1)
    path = raw / "imagesTr" / "case0_0000.nii.gz"
    image = nib.load(path)
    array = np.asarray(image.dataobj).copy()
    array[:5], array[:, -3:] = 0, 0
    nib.save(nib.Nifti1Image(array, image.affine), path)
    assert main(["data", "index", str(raw), "-o", str(tmp_path / "cases.json")]) == 0
    vs = build_volumeset(load_cases(tmp_path / "cases.json").cases, "MRI", card.slicing,
                         label_names=list(card.labels), progress=False)
    predicted, valid = scan_slices(card.slicing, array, str(path), spacing=SPACING)
    assert vs.images.shape == predicted.shape == (1, 1, 43, 37, 12)
    assert np.array_equal(vs.images, predicted) and valid.all()
    assert vs.labels.shape == (1, 43, 37, 12) and vs.valid_mask().all()


def test_per_scan_adaptation_steps_on_patches_of_the_scan(tmp_path, capsys, monkeypatch):
    """predict --adapt on a 3D folder: TENT and AdaEnt (its prior a row <file stem>:volume, the KL
    pooled over the batch's patches) step on random patches of the plans' size, the safety net
    compares the whole scan's masks, and the mask is written in the scan's geometry."""
    folder, _, _ = _imported(tmp_path)
    raw = write_raw(tmp_path / "raw", n=1)
    image = raw / "imagesTr" / "case0_0000.nii.gz"
    seen = []
    original = nnunet_nets.strided
    monkeypatch.setattr(nnunet_nets, "strided", lambda net, x, s: seen.append(tuple(x.shape)) or original(net, x, s))
    base = ["predict", "--nnunet", str(folder), str(image), "--steps", "2", "optim.batch_size=3"]
    assert main([*base, "--adapt", "tent", "--out", str(tmp_path / "tent")]) == 0
    assert set(seen) == {(3, 1, 12, 40, 48)}
    record = json.loads((tmp_path / "tent" / "adapt.jsonl").read_text())
    assert record["steps"] == 2 and len(record["losses"]) == 2 and record["fractions"]["source"]
    mask = nib.load(tmp_path / "tent" / "case0.nii.gz")
    assert mask.shape == nib.load(image).shape and np.allclose(mask.affine, nib.load(image).affine)

    assert main([*base, "--adapt", "adaent", "--out", str(tmp_path / "a")]) == 2  # no prior
    assert "needs --prior" in capsys.readouterr().err and not (tmp_path / "a").exists()
    prior = tmp_path / "prior.csv"
    prior.write_text("slice,background,a,b\ncase0_0000:volume,0.8,0.15,0.05\n")
    assert main([*base, "--adapt", "adaent", "--prior", str(prior), "--out", str(tmp_path / "a")]) == 2
    assert "method.kl_scope=batch" in capsys.readouterr().err and not (tmp_path / "a").exists()
    assert main([*base, "--adapt", "adaent", "--prior", str(prior), "method.kl_scope=batch",
                 "--out", str(tmp_path / "a")]) == 0
    record = json.loads((tmp_path / "a" / "adapt.jsonl").read_text())
    assert record["fractions"]["prior"] == pytest.approx([0.15, 0.05])
    assert (tmp_path / "a" / "case0.nii.gz").exists()
