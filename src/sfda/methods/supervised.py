"""Supervised training (Eq. 1): the source model and the Oracle."""

from __future__ import annotations

from sfda.errors import SfdaError
from sfda.losses import cross_entropy, dice_ce
from sfda.methods.base import Batch, Method

LOSSES = ("ce", "dice_ce")


class Supervised(Method):
    """``loss``: ``ce``, cross-entropy (the paper); ``dice_ce``, cross-entropy + soft Dice (nnU-Net)."""

    name = "supervised"
    source_free = True  # its labelled data is the loop's main data, not "source" data
    needs_labels = True

    def __init__(self, loss: str = "ce"):
        super().__init__()
        if loss not in LOSSES:
            raise SfdaError(f"unknown supervised loss '{loss}'; choose one of: {', '.join(LOSSES)}")
        self.loss = loss

    def step(self, model, batch: Batch, source=None):
        logits = model(batch.images)
        if self.loss == "dice_ce":
            loss, logs = dice_ce(logits, batch.labels, batch.mask)
            return loss, logits, logs
        loss = cross_entropy(logits, batch.labels, batch.mask)
        return loss, logits, {"ce": float(loss.detach())}
