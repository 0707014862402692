"""Optimiser and learning-rate schedule from a stage's :class:`sfda.config.OptimConfig`."""

from __future__ import annotations

import torch

from sfda.config import OptimConfig
from sfda.errors import SfdaError

#: nnU-Net's poly exponent: lr * (1 - epoch / epochs) ** POLY_EXPONENT
POLY_EXPONENT = 0.9


def check_optim(o: OptimConfig, where: str = "optim") -> None:
    """What the options' own limits cannot say: Nesterov needs SGD with momentum."""
    if o.nesterov and (o.optimizer != "sgd" or o.momentum <= 0):
        raise SfdaError(f"{where}.nesterov needs {where}.optimizer sgd and {where}.momentum > 0 "
                        f"(got {o.optimizer}, momentum {o.momentum:g}); set both, or nesterov false")


def build_optimizer(params, o: OptimConfig) -> torch.optim.Optimizer:
    check_optim(o)
    if o.optimizer == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay,
                               nesterov=o.nesterov)
    return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)


def poly_factor(epoch: int, epochs: int) -> float:
    """The poly schedule's factor of the base rate during ``epoch`` (0-based) of ``epochs``."""
    return (1 - epoch / max(epochs, 1)) ** POLY_EXPONENT


def build_scheduler(opt: torch.optim.Optimizer, o: OptimConfig):
    """Stepped once per epoch (epoch-wise, as nnU-Net's poly). ``step`` divides the rate by 10 at
    each third of the run; ``poly`` runs epoch e at lr * (1 - e / epochs) ** 0.9."""
    if o.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(o.epochs, 1))
    if o.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=max(o.epochs // 3, 1), gamma=0.1)
    if o.schedule == "poly":
        epochs = o.epochs
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda e: poly_factor(e, epochs))
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0)
