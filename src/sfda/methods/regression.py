"""Training the class-ratio regressor: squared L2 to each slice's true ratios."""

from __future__ import annotations

import torch

from sfda.methods.base import Batch, Method


def true_ratios(labels: torch.Tensor, mask: torch.Tensor, num_classes: int) -> torch.Tensor:
    onehot = torch.nn.functional.one_hot(labels, num_classes).permute(0, 3, 1, 2).float()
    m = mask.unsqueeze(1).float()
    return (onehot * m).sum(dim=(2, 3)) / m.sum(dim=(2, 3)).clamp_min(1.0)


class RatioRegression(Method):
    name = "ratio-regression"
    needs_labels = True

    def step(self, model, batch: Batch, source=None):
        pred = model(batch.images)
        truth = true_ratios(batch.labels, batch.mask, pred.shape[1])
        loss = ((pred - truth) ** 2).sum(dim=1).mean()
        return loss, None, {"l2": float(loss.detach())}
