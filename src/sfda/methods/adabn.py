"""AdaBN (Li et al. 2016): re-estimate batch-norm statistics on target images;
no gradient step, weights unchanged. One pass over the target data suffices."""

from __future__ import annotations

import torch

from sfda.methods.base import Batch, Method, bn_layers


class AdaBN(Method):
    name = "adabn"
    source_free = True
    trains = False

    def parameters(self, model):
        return []

    def reset(self, model) -> None:
        # momentum=None makes BN keep a cumulative average: the exact target mean/var.
        for m in bn_layers(model):
            m.reset_running_stats()
            m.momentum = None

    def step(self, model, batch: Batch, source=None):
        with torch.no_grad():
            logits = model(batch.images)
        return None, logits, {}
