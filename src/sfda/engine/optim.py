"""Optimiser and learning-rate schedule from a stage's :class:`sfda.config.OptimConfig`."""

from __future__ import annotations

import torch

from sfda.config import OptimConfig


def build_optimizer(params, o: OptimConfig) -> torch.optim.Optimizer:
    if o.optimizer == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)


def build_scheduler(opt: torch.optim.Optimizer, o: OptimConfig):
    """Stepped once per epoch. ``step`` divides the rate by 10 at each third of the run."""
    if o.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(o.epochs, 1))
    if o.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=max(o.epochs // 3, 1), gamma=0.1)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0)
