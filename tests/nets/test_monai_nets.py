"""MONAI networks by name: through train-source, adapt and predict on the CLI, loaded without pickled code."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from sfda.cli import main
from sfda.errors import SfdaError
from sfda.nets import build_net, net_kind

pytest.importorskip("monai")


@pytest.mark.parametrize("name", ["monai.UNet", "monai.BasicUNet", "monai.SegResNet", "monai.DynUNet"])
def test_each_supported_network_maps_slices_to_logits(name):
    import torch

    model = build_net(name, in_channels=1, num_classes=3)
    assert model(torch.randn(2, 1, 32, 48)).shape == (2, 3, 32, 48) and net_kind(name) == "segmentation"


def test_unknown_network_or_argument_is_refused():
    with pytest.raises(SfdaError, match="unsupported MONAI network"):
        build_net("monai.NotANet", in_channels=1, num_classes=2)
    with pytest.raises(SfdaError, match="bad arguments for network monai.UNet"):
        build_net("monai.UNet", in_channels=1, num_classes=2, bogus=3)
    with pytest.raises(SfdaError, match="spatial_dims 1 is not supported"):
        build_net("monai.UNet", in_channels=1, num_classes=2, spatial_dims=1)


def test_a_3d_network_maps_volumes_to_logits():
    import torch

    model = build_net("monai.UNet", in_channels=1, num_classes=3, spatial_dims=3, channels=(4, 8), strides=(2,))
    assert model(torch.randn(1, 1, 8, 16, 24)).shape == (1, 3, 8, 16, 24)


def test_monai_unet_trains_adapts_and_predicts_through_the_cli(tiny_cases, tiny_source, tmp_path):
    from sfda.engine.checkpoint import load_model

    net = ["--net", "monai.UNet", "net_args={channels: [4, 8, 16], strides: [2, 2]}"]
    assert main(["train-source", "--cases", tiny_cases, "--modality", "wat", "--subjects", "P01,P02", *net,
                 "optim.epochs=1", "optim.batch_size=4", "optim.max_steps_per_epoch=2", "--out",
                 str(tmp_path / "src")]) == 0
    _, prior = tiny_source
    assert main(["adapt", "--method", "adaent", "--checkpoint", str(tmp_path / "src" / "last.pt"), "--prior", prior,
                 "--cases", tiny_cases, "--modality", "inn", "optim.epochs=1", "optim.batch_size=4",
                 "optim.max_steps_per_epoch=2", "--out", str(tmp_path / "ada")]) == 0
    model, card = load_model(tmp_path / "ada" / "last.pt")  # weights_only: the name and arguments rebuild it
    assert card.network.name == "monai.UNet" and type(model).__name__ == "MonaiNet"
    from sfda.io.cases import load_cases

    scan = load_cases(tiny_cases).cases[2].images["inn"]
    assert main(["predict", "--checkpoint", str(tmp_path / "ada" / "last.pt"), scan, "--out",
                 str(tmp_path / "pred")]) == 0
    mask = next((tmp_path / "pred").glob("*_seg.nii.gz"))
    assert nib.load(mask).shape == nib.load(scan).shape
    assert set(np.unique(np.asarray(nib.load(mask).dataobj))) <= {0, 1}


def test_monai_3d_unet_trains_adapts_and_predicts_whole_volumes_through_the_cli(tiny_cases, tmp_path, capsys):
    """slicing.dims 3: each case one sample; the adapted model predicts a NIfTI with the scan's geometry."""
    from sfda.engine.checkpoint import load_model
    from sfda.io.cases import load_cases

    common = ["--cases", tiny_cases, "data.dims=3", "data.pad_multiple=8", "optim.epochs=2", "optim.batch_size=2"]
    assert main(["train-source", "--modality", "wat", "--subjects", "P01,P02", "--net", "monai.UNet",
                 "net_args={channels: [4, 8, 16], strides: [2, 2]}", *common, "--out", str(tmp_path / "src")]) == 0
    _, card = load_model(tmp_path / "src" / "last.pt")
    assert card.network.args["spatial_dims"] == 3 and card.slicing.dims == 3
    assert card.slicing.window == (8, 32, 32) and card.source.position is None
    assert main(["prior", "--method", "source-mean", "--source-modality", "wat", "--source-subjects", "P01,P02",
                 "--modality", "inn", "--subjects", "P01,P02", *common[:3], "--out", str(tmp_path / "tau.csv")]) == 0
    assert (tmp_path / "tau.csv").read_text().count(":volume") == 2  # one prior row per volume
    assert main(["adapt", "--method", "adaent", "--checkpoint", str(tmp_path / "src" / "last.pt"), "--prior",
                 str(tmp_path / "tau.csv"), "--modality", "inn", "--subjects", "P01,P02", *common,
                 "--out", str(tmp_path / "ada")]) == 0
    scan = load_cases(tiny_cases).cases[2].images["inn"]
    assert main(["predict", "--checkpoint", str(tmp_path / "ada" / "selected.pt"), scan, "--out",
                 str(tmp_path / "pred")]) == 0
    mask, image = nib.load(next((tmp_path / "pred").glob("*_seg.nii.gz"))), nib.load(scan)
    assert mask.shape == image.shape and np.allclose(mask.affine, image.affine)
    assert main(["predict", "--checkpoint", str(tmp_path / "ada" / "selected.pt"), scan, "--adapt", "adaent",
                 "--out", str(tmp_path / "per-scan")]) == 2  # a 3D model's prior: a table, a row per volume
    assert "<file stem>:volume" in capsys.readouterr().err and not (tmp_path / "per-scan").exists()
    assert main(["predict", "--checkpoint", str(tmp_path / "ada" / "selected.pt"), scan, "--adapt", "tent",
                 "--steps", "2", "--out", str(tmp_path / "per-scan")]) == 0  # per scan, on the whole volume
    record = json.loads((tmp_path / "per-scan" / "adapt.jsonl").read_text())
    assert record["steps"] == 2 and record["decision"].startswith(("adapted", "source"))
    mask = nib.load(next((tmp_path / "per-scan").glob("*_seg.nii.gz")))
    assert mask.shape == image.shape and np.allclose(mask.affine, image.affine)
    assert main(["evaluate", "--checkpoint", str(tmp_path / "ada" / "selected.pt"), "--modality", "inn",
                 "--subjects", "P03", "--cases", tiny_cases, "--out", str(tmp_path / "eval")]) == 0
    assert {"P03/image", "P03/pred"} <= set(np.load(tmp_path / "eval" / "examples.npz"))


def test_3d_refuses_a_2d_network_and_the_position_prior(tiny_cases, tmp_path, capsys):
    common = ["--cases", tiny_cases, "--modality", "wat", "data.dims=3", "optim.epochs=1"]
    assert main(["train-source", *common, "--net", "unet", "--out", str(tmp_path / "a")]) == 2
    assert "2D only" in capsys.readouterr().err and not (tmp_path / "a").exists()
    assert main(["train-source", *common, "--net", "monai.UNet", "data.size=[16,16]",
                 "--out", str(tmp_path / "b")]) == 2
    assert "takes three values" in capsys.readouterr().err and not (tmp_path / "b").exists()
    assert main(["prior", "--method", "source-position", "--source-modality", "wat", "--cases", tiny_cases,
                 "--modality", "inn", "data.dims=3", "--out", str(tmp_path / "t.csv")]) == 2
    assert "source-mean" in capsys.readouterr().err and not (tmp_path / "t.csv").exists()


def test_a_network_whose_spatial_dims_disagree_with_the_slicing_is_refused(tiny_cases, tmp_path, capsys):
    args = ["train-source", "--cases", tiny_cases, "--modality", "wat", "--net", "monai.UNet", "optim.epochs=1"]
    assert main([*args, "net_args={spatial_dims: 3}", "--out", str(tmp_path / "a")]) == 2
    assert "disagrees with slicing.dims 2" in capsys.readouterr().err and not (tmp_path / "a").exists()
    assert main(["train-prior", "--cases", tiny_cases, "--modality", "wat", "data.dims=3", "--out",
                 str(tmp_path / "p")]) == 2
    assert "regressor (train-prior) is 2D only" in capsys.readouterr().err and not (tmp_path / "p").exists()
