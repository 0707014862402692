"""TENT (Wang et al. 2021): entropy only, training just the normalisation affine
parameters, with batch statistics (BN in train mode)."""

from __future__ import annotations

from sfda.losses import entropy_loss
from sfda.methods.base import Batch, Method, bn_layers


class Tent(Method):
    name = "tent"
    source_free = True

    def parameters(self, model):
        params = []
        for m in bn_layers(model):
            params += [p for p in (m.weight, m.bias) if p is not None]
        return params

    def step(self, model, batch: Batch, source=None):
        logits = model(batch.images)
        ent = entropy_loss(logits, batch.mask)
        return ent, logits, {"entropy": float(ent.detach())}
