"""Mirroring at prediction: the logits averaged over every flip combination, as nnU-Net's predictor."""

from __future__ import annotations

import pytest
import torch

from sfda.config.card import ModelCard, Network
from sfda.nets import build_net
from sfda.nets.ensemble import FoldEnsemble
from sfda.nets.mirror import Mirrored, flip_combinations, for_prediction, mirrored_logits


def _net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)  # a 3x3 convolution with random weights: not symmetric, so flips matter
    return torch.nn.Conv2d(1, 3, 3, padding=1).eval()


def test_combinations_follow_nnunet():
    assert flip_combinations([0, 1]) == [(0,), (1,), (0, 1)]
    assert flip_combinations([1]) == [(1,)] and flip_combinations([]) == []


def test_mirrored_logits_are_the_mean_over_the_flips():
    net, x = _net(), torch.randn(2, 1, 7, 5)
    with torch.no_grad():
        by_hand = (net(x) + net(x.flip(2)).flip(2) + net(x.flip(3)).flip(3) + net(x.flip(2, 3)).flip(2, 3)) / 4
        assert torch.allclose(mirrored_logits(net, x, [0, 1]), by_hand, atol=1e-6)
        assert torch.allclose(Mirrored(net, [1])(x), (net(x) + net(x.flip(3)).flip(3)) / 2, atol=1e-6)
        assert not torch.allclose(Mirrored(net, [1])(x), net(x), atol=1e-3)


def test_for_prediction_mirrors_only_what_the_checkpoint_allows():
    net = _net()
    plain, both = ModelCard(network=Network("unet")), ModelCard(network=Network("unet"), mirror_axes=(0, 1))
    assert for_prediction(net, plain) is net  # sfda's own models carry no axes
    assert for_prediction(net, both, mirroring=False) is net
    assert isinstance(for_prediction(net, both), Mirrored)


def test_an_ensemble_mirrors_each_member():
    a, b, x = _net(0), _net(1), torch.randn(1, 1, 6, 6)
    ens = for_prediction(FoldEnsemble([a, b], "probabilities"), ModelCard(network=Network("ensemble"), mirror_axes=(0,)))
    with torch.no_grad():
        probs = [torch.softmax(mirrored_logits(n, x, [0]), dim=1) for n in (a, b)]
        assert torch.allclose(torch.softmax(ens(x), dim=1), (probs[0] + probs[1]) / 2, atol=1e-6)


def test_ensemble_rules_and_checkpoint_round_trip(tmp_path):
    from sfda.engine.checkpoint import load_model, save_checkpoint
    from sfda.nets.ensemble import ensemble_args

    member = ModelCard(network=Network("unet", {"width": 4, "depth": 2}))
    torch.manual_seed(0)
    a, b = build_net("unet", width=4, depth=2).eval(), build_net("unet", width=4, depth=2).eval()
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        la, lb = a(x), b(x)
        assert torch.allclose(FoldEnsemble([a, b])(x), (la + lb) / 2, atol=1e-6)  # nnU-Net's folds: logits
        mean_p = (torch.softmax(la, 1) + torch.softmax(lb, 1)) / 2
        assert torch.allclose(torch.softmax(FoldEnsemble([a, b], "probabilities")(x), 1), mean_p, atol=1e-6)
        card = ModelCard(network=Network("ensemble", ensemble_args([member, member])), kind="segmentation")
        save_checkpoint(tmp_path / "e.pt", FoldEnsemble([a, b]), card)
        loaded, _ = load_model(tmp_path / "e.pt")
        assert torch.allclose(loaded(x), (la + lb) / 2, atol=1e-6)
    with pytest.raises(Exception, match="not trained"):
        build_net("ensemble", width=4)
