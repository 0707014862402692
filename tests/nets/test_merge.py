"""The structure merge of a trust fall-back: known probabilities, and a checkpoint round trip."""

from __future__ import annotations

import math

import pytest
import torch

from sfda.config.card import ModelCard, Network
from sfda.engine.checkpoint import load_model, save_checkpoint
from sfda.nets import build_net, net_kind
from sfda.nets.merge import NAME, StructureMerge, merge_args, merged_log_probs


def _logits(*probs: float) -> torch.Tensor:
    """One pixel's logits (1, K, 1, 1) whose softmax is ``probs``."""
    return torch.tensor([math.log(p) for p in probs]).view(1, -1, 1, 1)


def test_the_distrusted_structure_takes_the_source_probability_the_rest_share_what_is_left():
    adapted, source = _logits(0.5, 0.3, 0.2), _logits(0.6, 0.1, 0.3)
    merged = merged_log_probs(adapted, source, [2]).exp().flatten()
    # class 2 from the source (0.3); the adapted 0.5 : 0.3 fill the remaining 0.7
    assert merged.tolist() == pytest.approx([0.5 * 0.7 / 0.8, 0.3 * 0.7 / 0.8, 0.3])
    assert merged_log_probs(adapted, source, []).exp().flatten().tolist() == pytest.approx([0.5, 0.3, 0.2])
    assert merged_log_probs(adapted, source, [1, 2]).exp().flatten().tolist() == pytest.approx([0.6, 0.1, 0.3])


def test_a_very_sure_adapted_model_cannot_hand_the_pixel_back_to_a_taken_class():
    """Adapted logits (0, 40, 0): class 1 taken from the source (p 0.006); the kept classes split the
    remaining 0.994 by the adapted model's (equal) odds between them."""
    adapted = torch.tensor([0.0, 40.0, 0.0]).view(1, 3, 1, 1)
    merged = merged_log_probs(adapted, _logits(0.876, 0.006, 0.118), [1]).exp().flatten()
    assert merged.tolist() == pytest.approx([0.497, 0.006, 0.497]) and merged.argmax() != 1


def test_merge_is_not_a_network_to_train():
    from sfda.errors import SfdaError

    with pytest.raises(SfdaError, match="written by the trust fall-back"):
        build_net(NAME, in_channels=1, num_classes=3)


def test_a_merged_checkpoint_rebuilds_from_its_metadata_alone(tmp_path):
    torch.manual_seed(0)
    args = {"in_channels": 1, "num_classes": 3, "width": 4, "depth": 2}
    adapted, source = build_net("unet", **args).eval(), build_net("unet", **args).eval()
    card = ModelCard(network=Network("unet", args))
    net_args = merge_args(card, card, [1])
    save_checkpoint(tmp_path / "m.pt", StructureMerge(adapted, source, [1]), ModelCard(network=Network(NAME, net_args)))
    model, loaded = load_model(tmp_path / "m.pt")
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        out = model(x).exp()
        expected = merged_log_probs(adapted(x), source(x), [1]).exp()
    assert loaded.network.name == NAME and net_kind(NAME) == "segmentation"
    assert torch.allclose(out, expected, atol=1e-6) and torch.allclose(out.sum(1), torch.ones(2, 16, 16), atol=1e-5)
    assert torch.allclose(out[:, 1], torch.softmax(source(x), 1)[:, 1].detach(), atol=1e-6)


def test_a_merged_checkpoint_predicts_through_the_cli_and_is_refused_for_adaptation(tiny_cases, tiny_source,
                                                                                      tmp_path, capsys):
    """The CLI loads and predicts with a merged checkpoint (two classes, the structure from the source:
    the source model's masks). Adapting a merge (two networks in one) is refused with the fix, before
    anything is written."""
    import nibabel as nib
    import numpy as np

    from sfda.cli import main
    from sfda.engine.checkpoint import load_checkpoint
    from sfda.io.cases import load_cases

    ckpt, prior = tiny_source
    from dataclasses import replace

    source, card = load_model(ckpt)
    merged = tmp_path / "merged.pt"
    save_checkpoint(merged, StructureMerge(source, load_model(ckpt)[0], [1]),
                    replace(card, network=Network(NAME, merge_args(card, card, [1])),
                            selection=replace(card.selection, selected_by="a test")))
    assert load_checkpoint(merged)["card"].network.name == NAME
    scan = load_cases(tiny_cases).cases[2].images["inn"]
    for name, model in (("plain", ckpt), ("merged", merged)):
        assert main(["predict", "--checkpoint", str(model), scan, "--out", str(tmp_path / name)]) == 0
    masks = [np.asarray(nib.load(next((tmp_path / n).glob("*_seg.nii.gz"))).dataobj) for n in ("plain", "merged")]
    assert np.array_equal(*masks)
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(merged), scan, "--out", str(tmp_path / "p2"), "--adapt", "adaent"]) == 2
    assert main(["adapt", "--method", "adaent", "--checkpoint", str(merged), "--prior", prior, "--cases", tiny_cases,
                 "--modality", "inn", "--out", str(tmp_path / "ada")]) == 2
    err = capsys.readouterr().err
    assert err.count("joins an adapted and a source model (a test)") == 2 and "last.pt" in err
    assert not (tmp_path / "p2").exists() and not (tmp_path / "ada").exists()


@pytest.mark.parametrize("on_distrust, flagged, taken", [
    ("structure", [2, 1, 2], [1, 2]), ("source", [2], [1, 2, 3]), ("keep", [2], []), ("structure", [], [])])
def test_which_classes_a_fall_back_takes_from_the_source_model(on_distrust, flagged, taken):
    from sfda.nets.merge import taken_classes

    assert taken_classes(on_distrust, flagged, 4) == taken
