"""Several networks (an nnU-Net result folder's folds) as one model, ``net: ensemble``.

nnU-Net's predictor, given several folds (``-f 0 1 2 3 4``), averages the folds' logits (each fold's
already averaged over its mirrorings) and takes the softmax after: ``rule: logits``, the default.
``rule: probabilities`` averages the folds' softmax instead, as ``nnUNetv2_ensemble`` combines the
saved probabilities of separate runs; the output is then their log, so the softmax downstream gives
the averaged probabilities back and the argmax is theirs. Members are stored by name and arguments
(``members: [{"net": ..., "net_args": {...}}, ...]``), so the checkpoint loads with ``weights_only=True``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sfda.config.card import ModelCard

NAME = "ensemble"
RULES = ("logits", "probabilities")


class FoldEnsemble(nn.Module):
    def __init__(self, members: list[nn.Module], rule: str = "logits"):
        super().__init__()
        if rule not in RULES:
            from sfda.errors import SfdaError

            raise SfdaError(f"ensemble rule {rule!r} is not one of: {', '.join(RULES)}")
        self.members, self.rule = nn.ModuleList(members), rule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [m(x).float() for m in self.members]
        if self.rule == "logits":
            return torch.stack(outs).mean(dim=0)
        logs = torch.stack([torch.log_softmax(o, dim=1) for o in outs])
        return torch.logsumexp(logs, dim=0) - math.log(len(outs))


def is_ensemble(card: ModelCard) -> bool:
    """Whether a checkpoint's card describes a :class:`FoldEnsemble`."""
    return card.network.name == NAME


def ensemble_args(members: list[ModelCard], rule: str = "logits") -> dict:
    """``net_args`` of a :class:`FoldEnsemble` of networks described by their checkpoints' cards."""
    return {"members": [{"net": m.network.name, "net_args": dict(m.network.args)} for m in members], "rule": rule}
