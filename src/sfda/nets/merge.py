"""The adapted model's segmentation with some structures taken from the source model.

After a trust check distrusts one structure of a multi-class adaptation (``on_distrust:
structure``), the reported model is this pair: the structures in ``classes`` get the source
model's probability, the others share what is left in the adapted model's proportions. Where the
source model is sure of a distrusted structure it wins; elsewhere the adapted model decides
among the structures it was trusted for. Both networks are stored by name and arguments
(``adapted`` / ``source``: ``{"net": ..., "net_args": {...}}``), so the checkpoint still loads with
``weights_only=True``. Its output are log-probabilities (softmax gives back the merged ones).
"""

from __future__ import annotations

import torch
from torch import nn

from sfda.config.card import ModelCard

NAME = "merge"


class StructureMerge(nn.Module):
    def __init__(self, adapted: nn.Module, source: nn.Module, classes: list[int]):
        super().__init__()
        self.adapted, self.source, self.classes = adapted, source, [int(k) for k in classes]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return merged_log_probs(self.adapted(x), self.source(x), self.classes)


def merged_log_probs(adapted: torch.Tensor, source: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """Logits (B, K, ...) of both models -> log of the merged probabilities: ``classes`` from the
    source, the rest from the adapted model's softmax over the kept classes, times what the source
    leaves them. In log space, so a very sure adapted model cannot hand a pixel back to a taken class."""
    a, s = adapted.float(), source.float()
    taken = torch.zeros(a.shape[1], dtype=torch.bool, device=a.device)
    taken[classes] = True
    if not taken.any():
        return torch.log_softmax(a, dim=1)
    taken = taken.view((1, -1) + (1,) * (a.dim() - 2))
    log_s = torch.log_softmax(s, dim=1)
    log_rest = torch.log_softmax(a.masked_fill(taken, float("-inf")), dim=1)
    log_left = torch.logsumexp(log_s.masked_fill(taken, float("-inf")), dim=1, keepdim=True)
    return torch.where(taken, log_s, log_rest + log_left)


def is_merge(card: ModelCard) -> bool:
    """Whether a checkpoint's card describes a :class:`StructureMerge`."""
    return card.network.name == NAME


def taken_classes(on_distrust: str, flagged: list[int], num_classes: int) -> list[int]:
    """The classes whose mask comes from the source model after a check flagged ``flagged``
    (class indices >= 1): none with ``keep`` or no flag, every foreground class with ``source``,
    the flagged ones with ``structure``. All of them: the source model itself."""
    if not flagged or on_distrust == "keep":
        return []
    return sorted(set(flagged)) if on_distrust == "structure" else list(range(1, num_classes))


def merge_args(adapted: ModelCard, source: ModelCard, classes: list[int]) -> dict:
    """``net_args`` of a :class:`StructureMerge` of two checkpoints' networks (given by their cards)."""
    def part(card: ModelCard) -> dict:
        return {"net": card.network.name, "net_args": dict(card.network.args)}

    return {"adapted": part(adapted), "source": part(source), "classes": [int(k) for k in classes]}
