"""A network's outputs over an array of slices, batch by batch: the one inference loop that
prediction, validation, the held-out scores and the priors all read from."""

from __future__ import annotations

import numpy as np
import torch


@torch.inference_mode()
def iter_outputs(model: torch.nn.Module, images: np.ndarray, batch_size: int = 64, device: str = "cpu"):
    """Yield ``(rows, output)`` over (N, C, H, W) slices in batches: ``rows`` the slice range,
    ``output`` the model's float32 output (logits, or a regressor's ratios), in eval mode
    (its mode is restored after)."""
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(images), batch_size):
            rows = slice(start, min(start + batch_size, len(images)))
            x = torch.from_numpy(np.asarray(images[rows])).to(device)
            yield rows, model(x).float()
    finally:
        model.train(was_training)
