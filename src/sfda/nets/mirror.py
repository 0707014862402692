"""Mirroring at prediction, as nnU-Net's predictor does it: the network's logits averaged over the
input and every combination of flips along the allowed axes, each flipped back
(``nnUNetPredictor._internal_maybe_mirror_and_predict``; the softmax comes after).

Axes are a slice's spatial axes in sfda's order: 0 is H, 1 is W of an (N, C, H, W) input. A network
that predicts large inputs patch by patch (:class:`sfda.nets.nnunet_nets.NnunetNet`) mirrors each
patch, as nnU-Net does, through its ``mirrored`` method.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from sfda.config.card import ModelCard
from sfda.nets.ensemble import FoldEnsemble


def flip_combinations(axes: list[int] | tuple[int, ...]) -> list[tuple[int, ...]]:
    """Every non-empty combination of ``axes``, in nnU-Net's order ((0,), (1,), (0, 1) for (0, 1))."""
    axes = tuple(int(a) for a in axes)
    return [c for i in range(len(axes)) for c in itertools.combinations(axes, i + 1)]


def mirrored_logits(net, x: torch.Tensor, axes) -> torch.Tensor:
    """``net``'s output on ``x`` (N, C, *spatial) averaged over the flips along ``axes`` (spatial axes,
    0 the first), each output flipped back."""
    out = net(x)
    combos = flip_combinations(axes)
    for combo in combos:
        dims = [a + 2 for a in combo]
        out = out + torch.flip(net(torch.flip(x, dims)), dims)
    return out / (len(combos) + 1)


class Mirrored(nn.Module):
    """``net`` predicting with mirroring along ``axes`` (its weights shared, not copied)."""

    def __init__(self, net: nn.Module, axes: list[int] | tuple[int, ...]):
        super().__init__()
        self.net, self.axes = net, tuple(int(a) for a in axes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        own = getattr(self.net, "mirrored", None)  # a patch-by-patch network mirrors each patch
        return own(x, self.axes) if own is not None else mirrored_logits(self.net, x, self.axes)


def with_mirroring(model: nn.Module, axes) -> nn.Module:
    """``model`` predicting with mirroring along ``axes``; ``model`` itself when there are none. An
    ensemble mirrors each member, as nnU-Net mirrors each fold."""
    if not axes:
        return model
    if isinstance(model, FoldEnsemble):
        return FoldEnsemble([Mirrored(m, axes) for m in model.members], model.rule).train(model.training)
    return Mirrored(model, axes).train(model.training)


def for_prediction(model: nn.Module, card: ModelCard, mirroring: bool = True) -> nn.Module:
    """``model`` as predict and evaluate run it: mirrored along the axes its card allows
    (``mirror_axes``; none for sfda's own models) unless ``mirroring`` is off."""
    return with_mirroring(model, card.mirror_axes) if mirroring else model
