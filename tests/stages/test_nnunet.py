"""nnU-Net v2 result folders as source models: import, adapt, predict, export back.

The plans and dataset files in tests/fixtures/nnunet are what ``nnUNetv2_plan_and_preprocess``
(nnunetv2 2.8.1) wrote for a six-case generated dataset (2d configuration: PlainConvUNet, instance
norm, ZScoreNormalization; the CT one: CTNormalization). The checkpoint is written here the way
nnU-Net 2.8.1's ``save_checkpoint`` writes it (keys, numpy scalars in the log, a torch.device).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

pytest.importorskip("dynamic_network_architectures")

from sfda.cli import main  # noqa: E402
from sfda.engine.checkpoint import load_model  # noqa: E402
from sfda.errors import SfdaError  # noqa: E402
from sfda.io.nnunet_results import load_nnunet_checkpoint, read_result_folder  # noqa: E402
from sfda.nets.nnunet_nets import NnunetNet, resolve_ops  # noqa: E402

FIXTURES = Path(__file__).parents[1] / "fixtures" / "nnunet"


def _dna_net(plans: dict, deep_supervision: bool = True, configuration: str = "2d"):
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    kwargs = resolve_ops(plans["configurations"][configuration]["architecture"]["arch_kwargs"])
    return PlainConvUNet(input_channels=1, num_classes=3, deep_supervision=deep_supervision, **kwargs)


def make_result_folder(root: Path, dataset: str = "Dataset901_Tiny", seed: int = 0,
                       configuration: str = "2d") -> Path:
    """RESULTS/<dataset>/nnUNetTrainer__nnUNetPlans__<configuration> with fold_0/checkpoint_final.pth."""
    folder = root / dataset / f"nnUNetTrainer__nnUNetPlans__{configuration}"
    (folder / "fold_0").mkdir(parents=True)
    shutil.copyfile(FIXTURES / f"{dataset}.plans.json", folder / "plans.json")
    shutil.copyfile(FIXTURES / f"{dataset}.dataset.json", folder / "dataset.json")
    plans, dj = json.loads((folder / "plans.json").read_text()), json.loads((folder / "dataset.json").read_text())
    torch.manual_seed(seed)
    net = _dna_net(plans, configuration=configuration)
    ckpt = {"network_weights": net.state_dict(), "optimizer_state": {"state": {}, "param_groups": []},
            "grad_scaler_state": None,
            "logging": {"mean_fg_dice": [np.float32(0.5)], "ema_fg_dice": [np.float64(0.5)],
                        "dice_per_class_or_region": [[np.float32(0.4), np.float32(0.6)]],
                        "train_losses": [np.float32(-0.3)], "val_losses": [np.float32(-0.2)], "lrs": [0.01],
                        "epoch_start_timestamps": [1.0], "epoch_end_timestamps": [2.0]},
            "_best_ema": np.float32(0.5), "current_epoch": 1,
            "init_args": {"plans": plans, "configuration": configuration, "fold": 0, "dataset_json": dj,
                          "device": torch.device("cpu")},
            "trainer_name": "nnUNetTrainer",
            "inference_allowed_mirroring_axes": (0, 1) if configuration == "2d" else (0, 1, 2)}
    torch.save(ckpt, folder / "fold_0" / "checkpoint_final.pth")
    return folder


def write_raw(root: Path, n: int = 3, seed: int = 0) -> Path:
    """An nnU-Net raw dataset like the fixture's: (48, 40, 12) voxels of 0.8 x 0.8 x 3 mm, labels a, b."""
    rng = np.random.default_rng(seed)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    xs, ys = np.meshgrid(np.arange(48), np.arange(40), indexing="ij")
    for i in range(n):
        lab = np.zeros((48, 40, 12), np.uint8)
        lab[((xs - 16) / 8.0) ** 2 + ((ys - 20) / 10.0) ** 2 < 1, 2:10] = 1
        lab[((xs - 34) / 6.0) ** 2 + ((ys - 18) / 6.0) ** 2 < 1, 4:8] = 2
        image = np.array([100.0, 300.0, 200.0])[lab] + rng.normal(0, 20, lab.shape)
        affine = np.diag([0.8, 0.8, 3.0, 1.0])
        nib.save(nib.Nifti1Image(image.astype(np.float32), affine), root / "imagesTr" / f"case{i}_0000.nii.gz")
        nib.save(nib.Nifti1Image(lab, affine), root / "labelsTr" / f"case{i}.nii.gz")
    meta = {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "a": 1, "b": 2}, "numTraining": n,
            "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_sfda_slices_reach_the_network_as_nnunet_slices_do(tmp_path):
    """Through the whole pipeline (import, sfda's slicing, the wrapper), the network gets exactly the
    planes nnU-Net gives it: SimpleITK's array (z, y, x), slice by slice along z."""
    import SimpleITK as sitk

    from sfda.inference import scan_slices

    folder = make_result_folder(tmp_path)
    raw = write_raw(tmp_path / "raw", n=1)
    assert main(["import-nnunet", "--folder", str(folder), "--out", str(tmp_path / "src.pt")]) == 0
    model, card = load_model(tmp_path / "src.pt")
    path = raw / "imagesTr" / "case0_0000.nii.gz"
    seen = []
    model.net.register_forward_pre_hook(lambda m, inp: seen.append(inp[0].detach().clone()))
    array = np.asarray(nib.load(path).dataobj)
    images, _ = scan_slices(card.slicing, array, str(path), spacing=(0.8, 0.8, 3.0))
    with torch.no_grad():
        model.eval()(torch.from_numpy(images))
    itk = sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.float32)  # (z, y, x), as nnU-Net reads
    expected = (itk - itk.mean()) / itk.std()  # ZScoreNormalization
    assert seen[0].shape == (12, 1, 40, 48)
    assert torch.allclose(seen[0][:, 0], torch.from_numpy(expected), atol=1e-4)


def test_import_repeats_the_plans_preprocessing(tmp_path):
    folder = make_result_folder(tmp_path)
    assert main(["import-nnunet", "--folder", str(folder), "--fold", "0", "--out", str(tmp_path / "src.pt")]) == 0
    model, card = load_model(tmp_path / "src.pt")
    assert card.network.name == "nnunet.PlainConvUNet" and card.labels == ("background", "a", "b")
    assert card.slicing.axis == 2 and card.network.args["transpose"] is True
    assert card.slicing.spacing == pytest.approx([0.8, 0.8]) and card.slicing.pad_multiple == 1
    assert card.slicing.norm.method == "percentile-zscore" and card.slicing.norm.clip_high == 100.0
    ct = make_result_folder(tmp_path / "ct", "Dataset902_TinyCT")
    assert main(["import-nnunet", "--folder", str(ct), "--out", str(tmp_path / "ct.pt")]) == 0
    _, card = load_model(tmp_path / "ct.pt")
    assert card.modality == "CT"
    assert card.slicing.norm.fixed == pytest.approx([33.0, 211.0, 92.07, 54.64], abs=0.01)


@pytest.mark.parametrize("transpose_forward, axis, transpose, spacing", [
    ([0, 1, 2], 2, True, [0.9, 0.7]),   # nnU-Net slices z; its (y, x) plane is sfda's (x, y) transposed
    ([1, 0, 2], 1, True, [0.9, 0.7]),   # slices y: nnU-Net's plane (z, x) is sfda's (x, z) transposed
    ([2, 0, 1], 0, True, [0.9, 0.7]),   # slices x: nnU-Net's plane (z, y) is sfda's (y, z) transposed
    ([0, 2, 1], 2, False, [0.7, 0.9]),  # slices z with its plane (x, y): sfda's own order
])
def test_import_maps_nnunet_axes_onto_sfda_arrays(tmp_path, transpose_forward, axis, transpose, spacing):
    folder = make_result_folder(tmp_path)
    plans = json.loads((folder / "plans.json").read_text())
    plans["transpose_forward"] = transpose_forward
    plans["configurations"]["2d"]["spacing"] = [0.7, 0.9]  # nnU-Net's (rows, cols) after its transpose
    (folder / "plans.json").write_text(json.dumps(plans))
    assert main(["import-nnunet", "--folder", str(folder), "--out", str(tmp_path / "src.pt")]) == 0
    _, card = load_model(tmp_path / "src.pt")
    assert card.slicing.axis == axis and card.network.args["transpose"] is transpose
    assert card.slicing.spacing == pytest.approx(spacing)


def test_ct_normalisation_clips_and_standardises_with_the_plans_numbers():
    from sfda.config.card import Normalization
    from sfda.data.normalize import apply_norm, volume_stats

    x = np.array([-1000.0, 0.0, 33.0, 100.0, 211.0, 900.0], np.float32)
    stats = volume_stats(x, Normalization.fixed_values([33.0, 211.0, 92.07, 54.64]).clip)
    assert np.allclose(apply_norm(x, stats), (np.clip(x, 33.0, 211.0) - 92.07) / 54.64, atol=1e-5)


def _adapt_folder(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    """An nnU-Net result folder adapted by ``sfda adapt --nnunet`` (one epoch): (folder, raw, cases, out)."""
    folder = make_result_folder(tmp_path / "results")
    raw = write_raw(tmp_path / "raw")
    cases, prior, out = tmp_path / "cases.json", tmp_path / "prior.csv", tmp_path / "adapted"
    assert main(["data", "index", str(raw), "-o", str(cases)]) == 0
    assert main(["prior", "--method", "constant", "--ratios", "0.8,0.15,0.05", "--cases", str(cases),
                 "--modality", "MRI", "--out", str(prior)]) == 0
    assert main(["adapt", "--nnunet", str(folder), "--fold", "0", "--method", "adaent", "--cases", str(cases),
                 "--modality", "MRI", "--prior", str(prior), "--epochs", "1", "--batch-size", "6",
                 "--out", str(out)]) == 0
    return folder, raw, cases, out


def test_adapt_an_nnunet_folder_predict_and_export_back(tmp_path, capsys):
    folder, raw, cases, out = _adapt_folder(tmp_path)
    assert (out / "source.pt").is_file()
    assert main(["evaluate", "--nnunet", str(folder), "--cases", str(cases), "--modality", "MRI",
                 "--out", str(tmp_path / "eval")]) == 0  # the source model straight from its folder
    assert (tmp_path / "eval" / "metrics.json").is_file()
    image = raw / "imagesTr" / "case0_0000.nii.gz"
    assert main(["predict", "--checkpoint", str(out / "selected.pt"), str(image), "--out", str(tmp_path / "pred")]) == 0
    mask = nib.load(tmp_path / "pred" / "case0.nii.gz")  # nnU-Net naming: case0_0000 -> case0
    assert mask.shape == nib.load(image).shape and np.allclose(mask.affine, nib.load(image).affine)
    # The adapted model, written back in nnU-Net's format beside (never over) the original.
    exported = out / "nnunet" / folder.name
    assert json.loads((exported / "plans.json").read_text()) == json.loads((folder / "plans.json").read_text())
    ckpt = load_nnunet_checkpoint(exported / "fold_0" / "checkpoint_final.pth")
    assert ckpt["trainer_name"] == "nnUNetTrainer" and ckpt["init_args"]["configuration"] == "2d"
    reloaded = _dna_net(ckpt["init_args"]["plans"], deep_supervision=False)
    reloaded.load_state_dict(ckpt["network_weights"])  # strict: the same architecture
    adapted, _ = load_model(out / "selected.pt")
    for k, v in adapted.net.state_dict().items():
        assert torch.equal(reloaded.state_dict()[k], v), k
    original = load_nnunet_checkpoint(folder / "fold_0" / "checkpoint_final.pth")["network_weights"]
    assert any(not torch.equal(original[k], v) for k, v in ckpt["network_weights"].items())  # it did adapt


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_malicious_checkpoint_is_refused_without_running_it(tmp_path, capsys):
    folder = make_result_folder(tmp_path)
    marker = tmp_path / "pwned"
    torch.save({"network_weights": {}, "evil": _Payload(marker)}, folder / "fold_0" / "checkpoint_final.pth")
    assert main(["import-nnunet", "--folder", str(folder), "--out", str(tmp_path / "src.pt")]) == 2
    assert "refused by the safe loader" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "src.pt").exists()


def test_adabn_is_refused_on_instance_norm(tmp_path):
    from sfda.methods.adabn import reestimate_bn

    folder = make_result_folder(tmp_path)
    model = read_result_folder(folder, 0)
    net = NnunetNet("PlainConvUNet", model.config["architecture"]["arch_kwargs"], 1, 3, transpose=True)
    with pytest.raises(SfdaError, match="no batch-norm layer"):
        reestimate_bn(net, np.zeros((2, 1, 48, 40), np.float32))


def _edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("change, message", [
    (lambda f: (f / "plans.json").unlink(), "plans.json not found"),
    (lambda f: (f / "fold_0" / "checkpoint_final.pth").unlink(), "checkpoint_final.pth not found"),
    (lambda f: (f / "fold_0" / "checkpoint_final.pth").write_bytes(b"not a checkpoint"), "refused by the safe loader"),
    (lambda f: f.rename(f.parent / "nnUNetPlans_2d"), "TRAINER__PLANS__CONFIG"),
    (lambda f: _edit(f / "plans.json", lambda p: p["configurations"]["2d"].pop("spacing")), "lacks or mangles"),
    (lambda f: _edit(f / "plans.json", lambda p: p.update(image_reader_writer="NibabelIOWithReorient")),
     "does not repeat its reorientation"),
    (lambda f: _edit(f / "dataset.json", lambda d: d["labels"].update(ignore=3)), "ignore label"),
    (lambda f: _edit(f / "plans.json", lambda p: p["configurations"]["2d"].update(inherits_from="3d_lowres")),
     "which is missing"),
])
def test_bad_result_folders_are_refused_with_the_file(tmp_path, capsys, change, message):
    folder = make_result_folder(tmp_path)
    change(folder)
    target = folder if folder.exists() else folder.parent / "nnUNetPlans_2d"
    assert main(["import-nnunet", "--folder", str(target), "--out", str(tmp_path / "src.pt")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and not (tmp_path / "src.pt").exists()


@pytest.mark.parametrize("argv, message", [
    (["adapt", "--method", "adabn", "--cases", "c.json", "--modality", "MRI"], "adabn does not apply"),
    (["predict", "--adapt", "adabn", "scan.nii.gz"], "adabn does not apply"),
    (["predict", "--adapt", "adaent", "scan.nii.gz"], "needs --prior TABLE"),
    (["adapt", "--method", "adaent", "--cases", "c.json", "--modality", "MRI"], "needs --prior TABLE"),
    (["predict", "--checkpoint", "src.pt", "scan.nii.gz"], "not both"),
])
def test_what_cannot_work_with_an_nnunet_network_is_refused_before_writing(tmp_path, capsys, argv, message):
    folder = make_result_folder(tmp_path)
    out = tmp_path / "out"
    assert main([*argv, "--nnunet", str(folder), "--out", str(out)]) == 2
    assert message in capsys.readouterr().err and not out.exists()


def test_sliding_window_positions_and_weights_follow_nnunet():
    from sfda.nets.nnunet_nets import _starts, gaussian_weights

    assert _starts(100, 48) == [0, 17, 35, 52]  # ceil(52 / 24) + 1 = 4 evenly spaced patches
    assert _starts(48, 48) == [0] and _starts(30, 48) == [0]
    g = gaussian_weights([8, 6])
    assert g.shape == (8, 6) and float(g.max()) == pytest.approx(10.0) and float(g[4, 3]) == pytest.approx(10.0)
    assert float(g.min()) > 0


def test_sliding_window_averages_patch_logits_by_their_gaussian_weight():
    from sfda.nets.nnunet_nets import gaussian_weights, sliding_window

    pointwise = torch.nn.Conv2d(1, 3, 1)
    x = torch.randn(2, 1, 20, 14)
    with torch.no_grad():  # a per-pixel network: every patch agrees, so the average is the whole-slice output
        assert torch.allclose(sliding_window(pointwise, x, [8, 8]), pointwise(x), atol=1e-5)

    class PerPatch(torch.nn.Module):  # each call returns one constant logit map: 0 for the first patch, 4 next
        def __init__(self):
            super().__init__()
            self.values = [0.0, 4.0]

        def forward(self, t):
            return torch.full((t.shape[0], 1, *t.shape[2:]), self.values.pop(0))

    out = sliding_window(PerPatch(), torch.zeros(1, 1, 12, 14), [8, 14])  # patches at rows 0 and 4
    g = gaussian_weights([8, 14])
    row6 = (0.0 * g[6] + 4.0 * g[2]) / (g[6] + g[2])  # row 6 lies in both patches
    assert torch.allclose(out[0, 0, 6], row6) and torch.allclose(out[0, 0, 0], torch.zeros(14))


def test_an_nnunet_network_predicts_large_slices_patch_by_patch(tmp_path):
    folder = make_result_folder(tmp_path)
    model = read_result_folder(folder, 0)
    arch = model.config["architecture"]["arch_kwargs"]
    net = NnunetNet("PlainConvUNet", arch, 1, 3, transpose=True, patch_size=[40, 48]).eval()
    net.net.load_state_dict(model.checkpoint["network_weights"])
    x = torch.randn(1, 1, 48, 40)  # exactly one patch (transposed): the network once, as before
    with torch.no_grad():
        assert torch.allclose(net(x), net.net(x.transpose(-1, -2)).transpose(-1, -2), atol=1e-5)
        big = torch.randn(1, 1, 96, 64)  # (64, 96) for nnU-Net: 3 x 3 patches of (40, 48)
        tiles = []
        hook = net.net.register_forward_pre_hook(lambda m, inp: tiles.append(tuple(inp[0].shape[2:])))
        assert net(big).shape == (1, 3, 96, 64)
        assert tiles == [(40, 48)] * 9  # every patch is the plans' (rows, cols)
        hook.remove()
        net.train()
        assert net(big).shape == (1, 3, 96, 64)  # adaptation sees the whole slice
        odd = torch.randn(2, 1, 45, 37)  # no multiple of the strides: padded to them, cropped back
        assert net(odd).shape == (2, 3, 45, 37)


def test_a_slice_unlike_the_patch_is_padded_with_zeros_as_nnunet_pads_it():
    """nnU-Net pads an input smaller than the patch with zeros, centred (the odd voxel after), and
    predicts patches of exactly the patch's size; sfda's network sees the very same patches."""
    from sfda.nets.nnunet_nets import sliding_window

    seen = []

    def net(t):
        seen.append(t.clone())
        return t.repeat(1, 2, 1, 1)

    x = torch.arange(1, 1 + 5 * 3, dtype=torch.float32).reshape(1, 1, 5, 3)
    out = sliding_window(net, x, [8, 6])
    (patch,) = seen
    assert patch.shape == (1, 1, 8, 6)
    assert torch.equal(patch[0, 0, 1:6, 1:4], x[0, 0]) and patch.sum() == x.sum()  # 3 + 3 rows, 3 + 3 columns
    assert torch.allclose(out, x.repeat(1, 2, 1, 1), atol=1e-5)
    seen.clear()
    sliding_window(net, torch.ones(1, 1, 19, 6), [8, 6])  # rows 19 = 8 + 11: ceil(11 / 4) + 1 = 4 patches
    assert [p.shape[2:] for p in seen] == [(8, 6)] * 4


def test_the_gaussian_is_nnunets_known_answer():
    """nnU-Net smooths a unit impulse with scipy's truncated Gaussian: in 1D with patch 8 (sigma 1,
    radius 4 >= every offset) that is 10 x exp(-d^2 / 2) around index 4."""
    from sfda.nets.nnunet_nets import _starts, gaussian_weights

    d = torch.arange(8, dtype=torch.float64) - 4
    assert torch.allclose(gaussian_weights([8]).double(), 10 * torch.exp(-d ** 2 / 2), rtol=1e-5)
    assert _starts(110, 64) == [0, 23, 46]  # nnU-Net's own example (compute_steps_for_sliding_window)


def test_a_per_structure_fall_back_is_not_exported_to_nnunet_and_says_why(tmp_path, monkeypatch, capsys):
    """An nnU-Net folder holds one network; a merge of two is kept as selected.pt, with the reason."""
    monkeypatch.setattr("sfda.stages.trust.trust_flags", lambda s, n: [(1, f"atlas_share of {n[1]} is 0.10")])
    monkeypatch.setattr("sfda.stages.trust.vanish_flags", lambda *a: [])
    folder, raw, cases, out = _adapt_folder(tmp_path)
    assert json.loads((out / "trust.json").read_text())["fallback"] == "structures"
    said = capsys.readouterr()
    assert not (out / "nnunet").exists() and "no nnU-Net result folder" in said.out + said.err
