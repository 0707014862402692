"""AdaEnt (the paper, Eq. 3): target entropy + λ·KL(τe ‖ τ̂), target images only."""

from __future__ import annotations

import torch

from sfda.losses import entropy_loss, kl_prior
from sfda.methods.base import Batch, Method, freeze_bn_stats


class AdaEnt(Method):
    name = "adaent"  # its facts (display name, prior, source images, per scan): sfda.config.methods

    def train_mode(self, model):
        model.train()
        if self.cfg.bn == "source":
            freeze_bn_stats(model)

    def _class_weights(self, batch: Batch) -> torch.Tensor | None:
        # The released code weighted each class's entropy by the inverse of its prior mass.
        if not self.cfg.class_weighted_entropy:
            return None
        w = 1.0 / batch.prior.mean(dim=0).clamp_min(1e-3)
        return w / w.sum() * len(w)

    def step(self, model, batch: Batch, source=None):
        logits = model(batch.images)
        ent = entropy_loss(logits, batch.mask, self._class_weights(batch))
        kl = kl_prior(logits, batch.prior, batch.mask, self.cfg.kl, self.cfg.kl_scope)
        loss = ent + self.cfg.lam * kl
        return loss, logits, {"entropy": float(ent.detach()), "kl": float(kl.detach())}
