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

NAME = "merge"
_EPS = 1e-8


class StructureMerge(nn.Module):
    def __init__(self, adapted: nn.Module, source: nn.Module, classes: list[int]):
        super().__init__()
        self.adapted, self.source, self.classes = adapted, source, [int(k) for k in classes]

    @classmethod
    def from_args(cls, adapted: dict, source: dict, classes: list[int]) -> StructureMerge:
        """Rebuild from a checkpoint's ``net_args`` (:func:`merge_args`)."""
        from sfda.nets import build_net

        return cls(build_net(adapted["net"], **adapted.get("net_args", {})),
                   build_net(source["net"], **source.get("net_args", {})), classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return merged_log_probs(self.adapted(x), self.source(x), self.classes)


def merged_log_probs(adapted: torch.Tensor, source: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """Logits (B, K, ...) of both models -> log of the merged probabilities: ``classes`` from the
    source, the rest rescaled from the adapted model to fill the remainder."""
    p_a, p_s = torch.softmax(adapted.float(), dim=1), torch.softmax(source.float(), dim=1)
    taken = torch.zeros(adapted.shape[1], dtype=torch.bool, device=adapted.device)
    taken[classes] = True
    shape = (1, -1) + (1,) * (adapted.dim() - 2)
    keep = (~taken).to(p_a.dtype).view(shape)
    left = 1.0 - (p_s * (1 - keep)).sum(dim=1, keepdim=True)
    rest = p_a * keep
    merged = rest * left / rest.sum(dim=1, keepdim=True).clamp_min(_EPS) + p_s * (1 - keep)
    return torch.log(merged.clamp_min(_EPS))


def merge_args(adapted_meta: dict, source_meta: dict, classes: list[int]) -> dict:
    """``net_args`` of a :class:`StructureMerge` of two checkpoints' networks."""
    def part(meta: dict) -> dict:
        return {"net": meta["net"], "net_args": dict(meta.get("net_args", {}))}

    return {"adapted": part(adapted_meta), "source": part(source_meta), "classes": [int(k) for k in classes]}
