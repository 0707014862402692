"""AdaSource (Zhang et al., the paper's [22]): source cross-entropy + λ·KL prior on
target slices. Needs the labelled source images; batches are drawn independently."""

from __future__ import annotations

from sfda.losses import cross_entropy, kl_prior
from sfda.methods.base import Batch, Method


class AdaSource(Method):
    name = "adasource"  # its facts (display name, prior, source images, per scan): sfda.config.methods

    def step(self, model, batch: Batch, source: Batch | None = None):
        both = model(_cat(source.images, batch.images))
        src_logits, logits = both[: len(source.images)], both[len(source.images):]
        ce = cross_entropy(src_logits, source.labels, source.mask)
        kl = kl_prior(logits, batch.prior, batch.mask, self.cfg.kl)
        loss = ce + self.cfg.lam * kl
        return loss, logits, {"ce": float(ce.detach()), "kl": float(kl.detach())}


def _cat(a, b):
    import torch

    return torch.cat([a, b], dim=0)
