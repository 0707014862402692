"""AdaBN (Li et al. 2016): re-estimate batch-norm statistics on target images;
no gradient step, weights unchanged. One pass over the target data suffices."""

from __future__ import annotations

import numpy as np
import torch

from sfda.methods.base import Batch, Method, bn_layers, require_bn


class AdaBN(Method):
    name = "adabn"  # its facts (display name, prior, source images, per scan): sfda.config.methods
    trains = False

    def step(self, model, batch: Batch, source=None):
        raise RuntimeError("AdaBN takes no gradient step; the loop calls fit_once instead")

    def fit_once(self, model, images, batch_size: int, device: str, seed: int) -> None:
        reestimate_bn(model, images, batch_size=batch_size, device=device, seed=seed)


@torch.no_grad()
def reestimate_bn(model, images, batch_size: int = 32, device: str = "cpu", seed: int = 0) -> None:
    """Replace BN running statistics by the mean and variance over *all* of ``images`` (N, C, H, W).

    Every pixel of every slice counts once (no batch, the last partial one included, weighs more
    than its pixels), and the variance is the pooled one, not a mean of per-batch variances: each
    layer's input is summed in float64 over one pass in training mode. What stays approximate:
    within that pass earlier layers normalise each batch with its own statistics, so the inputs
    a layer sees are those of batches of ``batch_size``; with one batch holding every slice the
    statistics are exact. Used alone (AdaBN) or as the starting point of a gradient method.
    The training-mode pass draws dropout masks (ENet) from a generator seeded with ``seed``, so the
    same seed gives the same statistics; the caller's random state is left as it was.
    """
    require_bn(model)
    model.to(device)
    layers = bn_layers(model)
    sums = {m: [0.0, 0.0, 0] for m in layers}

    def add(module, inputs):
        x = inputs[0].detach().double()
        dims = [0, *range(2, x.dim())]
        acc = sums[module]
        acc[0] = acc[0] + x.sum(dims)
        acc[1] = acc[1] + (x * x).sum(dims)
        acc[2] += x.numel() // x.shape[1]

    hooks = [m.register_forward_pre_hook(add) for m in layers]
    model.train()
    try:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            for start in range(0, len(images), batch_size):
                model(torch.from_numpy(np.asarray(images[start:start + batch_size])).to(device))
    finally:
        for h in hooks:
            h.remove()
    for m in layers:
        total, squares, n = sums[m]
        if n == 0:
            continue
        mean = total / n
        var = (squares / n - mean * mean).clamp_min(0) * (n / max(n - 1, 1))  # unbiased, as BN keeps it
        m.running_mean.copy_(mean.to(m.running_mean.dtype))
        m.running_var.copy_(var.to(m.running_var.dtype))
    model.eval()
