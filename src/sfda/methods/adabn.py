"""AdaBN (Li et al. 2016): re-estimate batch-norm statistics on target images;
no gradient step, weights unchanged. One pass over the target data suffices."""

from __future__ import annotations

import numpy as np
import torch

from sfda.methods.base import Batch, Method, bn_layers


class AdaBN(Method):
    name = "adabn"
    source_free = True
    trains = False

    def step(self, model, batch: Batch, source=None):
        raise RuntimeError("AdaBN takes no gradient step; the loop calls reestimate_bn instead")


@torch.no_grad()
def reestimate_bn(model, images, batch_size: int = 32, device: str = "cpu") -> None:
    """Replace BN running statistics by the exact mean/variance over ``images`` (N, C, H, W).

    Used alone (AdaBN) or as the starting point of a gradient method: it puts the
    source weights in the target's intensity statistics before any step is taken.
    """
    model.to(device)
    layers = bn_layers(model)
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for start in range(0, len(images), batch_size):
        model(torch.from_numpy(np.asarray(images[start:start + batch_size])).to(device))
    for m, mom in zip(layers, momenta):
        m.momentum = mom
    model.eval()
