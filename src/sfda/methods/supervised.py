"""Supervised training with cross-entropy (Eq. 1): the source model and the Oracle."""

from __future__ import annotations

from sfda.losses import cross_entropy
from sfda.methods.base import Batch, Method


class Supervised(Method):
    name = "supervised"
    source_free = True  # its labelled data is the loop's main data, not "source" data
    needs_labels = True

    def step(self, model, batch: Batch, source=None):
        logits = model(batch.images)
        loss = cross_entropy(logits, batch.labels, batch.mask)
        return loss, logits, {"ce": float(loss.detach())}
