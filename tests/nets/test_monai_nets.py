"""MONAI networks by name: through train-source, adapt and predict on the CLI, loaded without pickled code."""

from __future__ import annotations

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
    with pytest.raises(SfdaError, match="2D slices"):
        build_net("monai.UNet", in_channels=1, num_classes=2, spatial_dims=3)


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
    model, meta = load_model(tmp_path / "ada" / "last.pt")  # weights_only: the name and arguments rebuild it
    assert meta["net"] == "monai.UNet" and type(model).__name__ == "MonaiNet"
    from sfda.io.cases import load_cases

    scan = load_cases(tiny_cases).cases[2].images["inn"]
    assert main(["predict", "--checkpoint", str(tmp_path / "ada" / "last.pt"), scan, "--out",
                 str(tmp_path / "pred")]) == 0
    mask = next((tmp_path / "pred").glob("*_seg.nii.gz"))
    assert nib.load(mask).shape == nib.load(scan).shape
    assert set(np.unique(np.asarray(nib.load(mask).dataobj))) <= {0, 1}
