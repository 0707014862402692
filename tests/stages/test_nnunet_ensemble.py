"""nnU-Net models as nnU-Net predicts them: mirrored along the checkpoint's axes, and several folds
as one ensemble (their logits averaged, as nnUNetPredictor does with several folds)."""

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
from sfda.inference import scan_slices  # noqa: E402
from stages.test_nnunet import _dna_net, make_result_folder, write_raw  # noqa: E402


def _set_axes(folder: Path, axes, fold: str = "0") -> None:
    path = folder / f"fold_{fold}" / "checkpoint_final.pth"
    ckpt = torch.load(path, weights_only=False)
    ckpt["inference_allowed_mirroring_axes"] = axes
    torch.save(ckpt, path)


def _add_fold(folder: Path, fold: str, seed: int) -> None:
    """Another fold: fold_0's checkpoint with the weights of a network seeded ``seed``."""
    (folder / f"fold_{fold}").mkdir()
    ckpt = torch.load(folder / "fold_0" / "checkpoint_final.pth", weights_only=False)
    torch.manual_seed(seed)
    ckpt["network_weights"] = _dna_net(ckpt["init_args"]["plans"]).state_dict()
    torch.save(ckpt, folder / f"fold_{fold}" / "checkpoint_final.pth")


def _fold_nets(folder: Path, folds) -> list:
    nets = []
    for f in folds:
        ckpt = torch.load(folder / f"fold_{f}" / "checkpoint_final.pth", weights_only=False)
        net = _dna_net(ckpt["init_args"]["plans"], deep_supervision=False).eval()
        net.load_state_dict(ckpt["network_weights"])
        nets.append(net)
    return nets


def _nnunet_logits(net, x: torch.Tensor, axes) -> torch.Tensor:
    """By hand, in nnU-Net's frame: sfda's (N, 1, H, W) slice is nnU-Net's transposed; its axes 0, 1
    are its (rows, cols); the mean over no flip and each combination, flipped back."""
    t = x.transpose(-1, -2)
    flips = [[], *[[a + 2] for a in axes], *([[2, 3]] if len(axes) == 2 else [])]
    outs = [net(t.flip(f)).flip(f) if f else net(t) for f in flips]
    return (sum(outs) / len(outs)).transpose(-1, -2)


@pytest.mark.parametrize("axes, sfda_axes", [((0, 1), [0, 1]), ((0,), [1]), ((1,), [0]), (None, [])])
def test_mirroring_follows_the_checkpoint_axes_in_sfda_slices(tmp_path, axes, sfda_axes):
    from sfda.nets.mirror import for_prediction

    folder = make_result_folder(tmp_path)
    _set_axes(folder, axes)
    raw = write_raw(tmp_path / "raw", n=1)
    assert main(["import-nnunet", "--folder", str(folder), "--out", str(tmp_path / "src.pt")]) == 0
    model, card = load_model(tmp_path / "src.pt")
    assert card.mirror_axes == tuple(sfda_axes) and card.nnunet.mirror_axes == tuple(axes or ())
    path = raw / "imagesTr" / "case0_0000.nii.gz"
    x = torch.from_numpy(scan_slices(card.slicing, np.asarray(nib.load(path).dataobj), str(path),
                                     (0.8, 0.8, 3.0))[0][:3])
    net = _fold_nets(folder, ["0"])[0]
    with torch.no_grad():
        expected = _nnunet_logits(net, x, axes or ())
        assert torch.allclose(for_prediction(model, card)(x), expected, atol=1e-4)
        assert torch.allclose(for_prediction(model, card, mirroring=False)(x), model(x), atol=1e-6)
        if axes:
            assert not torch.allclose(expected, model(x), atol=1e-3)


def test_predict_mirrors_by_default_and_no_mirroring_turns_it_off(tmp_path):
    from sfda.nets.mirror import Mirrored

    folder = make_result_folder(tmp_path)
    raw = write_raw(tmp_path / "raw", n=1)
    image = raw / "imagesTr" / "case0_0000.nii.gz"
    for name, extra in (("mirrored", []), ("plain", ["--no-mirroring"])):
        assert main(["predict", "--nnunet", str(folder), str(image), "--out", str(tmp_path / name),
                     "--probabilities", *extra]) == 0
    model, card = load_model(tmp_path / "plain" / "source.pt")
    for name, net in (("mirrored", Mirrored(model, [0, 1])), ("plain", model)):
        probs = _probs(net, card, image)
        written = np.stack([nib.load(tmp_path / name / f"case0_prob_{c}.nii.gz").get_fdata() for c in card.labels])
        assert np.allclose(written, probs, atol=1e-5), name
    assert not np.allclose(nib.load(tmp_path / "mirrored" / "case0_prob_a.nii.gz").get_fdata(),
                           nib.load(tmp_path / "plain" / "case0_prob_a.nii.gz").get_fdata(), atol=1e-4)


def _probs(net, card, image: Path) -> np.ndarray:
    from sfda.inference import stream_volume

    vol = np.asarray(nib.load(image).dataobj)
    return stream_volume(net, card.slicing, vol, str(image), probabilities=True, spacing=(0.8, 0.8, 3.0))["probabilities"]


def _three_folds(tmp_path: Path) -> Path:
    folder = make_result_folder(tmp_path / "results")
    _add_fold(folder, "1", seed=1)
    _add_fold(folder, "2", seed=2)
    return folder


def test_several_folds_are_one_model_averaging_their_logits(tmp_path):
    folder = _three_folds(tmp_path)
    raw = write_raw(tmp_path / "raw", n=1)
    image = raw / "imagesTr" / "case0_0000.nii.gz"
    assert main(["import-nnunet", "--folder", str(folder), "--fold", "all", "--out", str(tmp_path / "e.pt")]) == 0
    model, card = load_model(tmp_path / "e.pt")
    assert card.network.name == "ensemble" and card.nnunet.folds == ("0", "1", "2")
    x = torch.from_numpy(scan_slices(card.slicing, np.asarray(nib.load(image).dataobj), str(image), (0.8, 0.8, 3.0))[0])
    nets = _fold_nets(folder, "012")
    with torch.no_grad():
        by_hand = sum(n(x.transpose(-1, -2)) for n in nets).transpose(-1, -2) / 3
        assert torch.allclose(model(x), by_hand, atol=1e-4)
        mirrored = sum(_nnunet_logits(n, x, (0, 1)) for n in nets) / 3
    # predict --fold 0,1,2 writes the argmax of the mirrored average
    assert main(["predict", "--nnunet", str(folder), "--fold", "0,1,2", str(image), "--out", str(tmp_path / "p"),
                 "--probabilities"]) == 0
    probs = _probs(_Fixed(mirrored), card, image)
    written = nib.load(tmp_path / "p" / "case0_prob_a.nii.gz").get_fdata()
    assert np.allclose(written, probs[1], atol=1e-4)
    assert main(["evaluate", "--nnunet", str(folder), "--fold", "all", "--cases", str(_cases(tmp_path, raw)),
                 "--modality", "MRI", "--out", str(tmp_path / "eval")]) == 0


class _Fixed(torch.nn.Module):
    """Returns given logits for the (one) batch it is asked about: the hand-computed average."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        assert x.shape[0] == self.logits.shape[0], "the scan's slices in one batch for this comparison"
        return self.logits


def _cases(tmp_path: Path, raw: Path) -> Path:
    cases = tmp_path / "cases.json"
    if not cases.exists():
        assert main(["data", "index", str(raw), "-o", str(cases)]) == 0
    return cases


def test_several_folds_adapt_each_on_its_own_and_export_as_one_folder(tmp_path, capsys):
    from sfda.io.nnunet_results import load_nnunet_checkpoint

    folder = _three_folds(tmp_path)
    raw = write_raw(tmp_path / "raw", n=2)
    out = tmp_path / "out"
    assert main(["adapt", "--nnunet", str(folder), "--fold", "all", "--method", "tent", "--cases",
                 str(_cases(tmp_path, raw)), "--modality", "MRI", "--epochs", "1", "--batch-size", "6",
                 "--out", str(out)]) == 0
    said = capsys.readouterr().out
    combined = out / "nnunet" / folder.name
    for fold in ("0", "1", "2"):
        assert f"model to use: {out / f'fold_{fold}'}/selected.pt" in said
        adapted, card = load_model(out / f"fold_{fold}" / "selected.pt")
        assert card.nnunet.fold == fold
        weights = load_nnunet_checkpoint(combined / f"fold_{fold}" / "checkpoint_final.pth")["network_weights"]
        assert all(torch.equal(weights[k], v) for k, v in adapted.net.state_dict().items())
        original = load_nnunet_checkpoint(folder / f"fold_{fold}" / "checkpoint_final.pth")["network_weights"]
        assert any(not torch.equal(original[k], v) for k, v in weights.items())  # each fold adapted
    assert json.loads((combined / "plans.json").read_text()) == json.loads((folder / "plans.json").read_text())
    # the combined folder is an ensemble sfda (and nnU-Net) predicts with
    image = raw / "imagesTr" / "case0_0000.nii.gz"
    assert main(["predict", "--nnunet", str(combined), "--fold", "all", str(image), "--out", str(tmp_path / "p")]) == 0
    assert main(["adapt", "--nnunet", str(folder), "--fold", "all", "--method", "tent", "--cases",
                 str(_cases(tmp_path, raw)), "--modality", "MRI", "--out", str(out)]) == 2
    assert "give --resume" in capsys.readouterr().err  # never over an earlier run's folds


def test_per_scan_adaptation_of_several_folds_is_refused_with_the_way_on(tmp_path, capsys):
    folder = _three_folds(tmp_path)
    out = tmp_path / "out"
    assert main(["predict", "--nnunet", str(folder), "--fold", "all", "--adapt", "tent", "scan.nii.gz",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "adapts one fold, not 3" in err and "--fold 0,1,..." in err and not out.exists()
    shutil.rmtree(folder / "fold_1")
    assert main(["import-nnunet", "--folder", str(folder), "--fold", "0,0", "--out", str(tmp_path / "x.pt")]) == 2
    assert "without repeats" in capsys.readouterr().err
    assert json.loads((folder / "plans.json").read_text())  # the folder was only read
