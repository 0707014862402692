"""Entropy alone, no prior: the ablation that shows the collapse the prior prevents."""

from __future__ import annotations

from sfda.losses import entropy_loss
from sfda.methods.base import Batch, Method, freeze_bn_stats


class EntropyOnly(Method):
    name = "entropy"  # its facts (display name, prior, source images, per scan): sfda.config.methods

    def train_mode(self, model):
        model.train()
        if self.cfg.bn == "source":
            freeze_bn_stats(model)

    def step(self, model, batch: Batch, source=None):
        logits = model(batch.images)
        ent = entropy_loss(logits, batch.mask)
        return ent, logits, {"entropy": float(ent.detach())}
