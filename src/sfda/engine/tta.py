"""Adaptation to one scan: a few gradient steps of a source-free method on that scan's slices.

The cohort loop (:mod:`sfda.engine.loop`) runs epochs over a set of scans, with checkpoints,
evaluation and selection; a scan that arrives alone needs none of that, only steps. The random
batches follow ``seed`` alone (a scan's own seed), so a scan gets the same steps whatever came
before it.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from sfda.engine.optim import build_optimizer
from sfda.methods.base import Batch


def adapt_scan(model: torch.nn.Module, method, images: np.ndarray, valid: np.ndarray, prior: np.ndarray | None,
               steps: int, optim, seed: int, device: str = "cpu", patches=None) -> dict:
    """Adapt ``model`` in place on one scan's (N, C, H, W) slices (or its (1, C, D, H, W) volume);
    returns the per-step losses and the time taken. A method without gradient steps (AdaBN) makes its
    one pass over the scan instead. ``patches`` (:class:`sfda.data.patches.RandomPatches`): each step's
    batch is ``optim.batch_size`` random patches of the scan's volume(s) instead of a draw of slices."""
    t0 = time.perf_counter()
    model.to(device)
    if not method.trains:
        method.fit_once(model, images, batch_size=32, device=device, seed=seed)
        return {"steps": 0, "losses": [], "seconds": time.perf_counter() - t0}
    with torch.random.fork_rng():  # dropout (ENet) draws from the scan's seed too
        torch.manual_seed(seed)
        return _steps(model, method, images, valid, prior, steps, optim, seed, device, t0, patches)


def _steps(model, method, images, valid, prior, steps: int, optim, seed: int, device, t0: float,
           patches=None) -> dict:
    gen = torch.Generator().manual_seed(seed)
    x, mask = torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(valid)
    tau = None if prior is None else torch.from_numpy(np.asarray(prior, dtype=np.float32))
    params = method.parameters(model)
    for p in model.parameters():  # only what the method trains (TENT: the norm layers' affine)
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    method.train_mode(model)
    opt = build_optimizer(params, optim)
    losses = []
    for _ in range(steps):
        if patches is None:
            idx = torch.randperm(len(x), generator=gen)[:optim.batch_size]
            drawn, held = x[idx], mask[idx]
        else:  # the batch's volumes drawn with replacement (one scan: its volume, batch_size times)
            idx = torch.randint(len(x), (optim.batch_size,), generator=gen)
            drawn, _, held = patches(x[idx], None, mask[idx], gen)
        batch = Batch(images=drawn.to(device), mask=held.to(device), index=idx,
                      prior=None if tau is None else tau[idx].to(device))
        loss, _, _ = method.step(model, batch, None)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    return {"steps": steps, "losses": losses, "seconds": time.perf_counter() - t0}
