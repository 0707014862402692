"""Label-free scores of an adapted model on held-out target images, and epoch selection.

Adaptation runs on some target subjects; a few others are held out. Their
images (never their labels) are scored each epoch in evaluation mode:

- ``holdout_entropy``: mean pixel entropy;
- ``holdout_kl``: mean per-image KL(τe ‖ τ̂) against the prior of those slices;
- ``holdout_objective``: entropy + λ·KL, the adaptation loss itself;
- ``holdout_fraction`` / ``holdout_prior_fraction``: predicted vs expected foreground.

The selected epoch minimises one of them; no target label is read. ``average``
instead keeps the uniform average of every epoch's weights (batch-norm running
statistics included): on the crops it beat the last epoch on average, where
every held-out score merely followed the falling loss.
"""

from __future__ import annotations

import numpy as np
import torch

from sfda.losses import kl_prior, pixel_entropy
from sfda.nets.batched import iter_outputs

CRITERIA = ("last", "average", "holdout_kl", "holdout_objective", "holdout_entropy")


class HoldoutStats:
    """Accumulates the held-out scores batch by batch, so they can share a forward pass."""

    def __init__(self, valid: np.ndarray, prior: np.ndarray, lam: float, direction: str = "paper") -> None:
        self.valid, self.prior, self.lam, self.direction = valid, prior, lam, direction
        self.ent, self.kl, self.fg, self.pixels, self.images = 0.0, 0.0, 0.0, 0.0, 0

    @torch.inference_mode()
    def add(self, rows: slice, logits: torch.Tensor) -> None:
        """Score the slices ``rows`` of the held-out set, whose logits are ``logits``."""
        mask = torch.from_numpy(np.asarray(self.valid[rows])).to(logits.device)
        m = mask.float()
        self.ent += float((pixel_entropy(logits) * m).sum())
        self.fg += float(((logits.argmax(dim=1) > 0) & mask).sum())
        self.pixels += float(m.sum())
        tau = torch.from_numpy(np.asarray(self.prior[rows], dtype=np.float32)).to(logits.device)
        self.kl += float(kl_prior(logits, tau, mask, self.direction)) * len(logits)
        self.images += len(logits)

    def result(self) -> dict:
        ent, kl = self.ent / max(self.pixels, 1.0), self.kl / max(self.images, 1)
        return {"holdout_entropy": ent, "holdout_kl": kl, "holdout_objective": ent + self.lam * kl,
                "holdout_fraction": self.fg / max(self.pixels, 1.0),
                "holdout_prior_fraction": float(np.asarray(self.prior)[:, 1:].sum(axis=1).mean())}


def holdout_scores(model: torch.nn.Module, images: np.ndarray, valid: np.ndarray, prior: np.ndarray,
                   lam: float, direction: str = "paper", batch_size: int = 64, device: str = "cpu") -> dict:
    """Label-free scores of ``model`` on slices ``images`` (N, C, H, W) with prior (N, K)."""
    stats = HoldoutStats(valid, prior, lam, direction)
    for rows, logits in iter_outputs(model, images, batch_size, device):
        stats.add(rows, logits)
    return stats.result()


def average_weights(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Uniform average of state dicts; integer buffers (BN's batch counters) come from the last."""
    last = states[-1]
    return {k: torch.stack([s[k].float() for s in states]).mean(dim=0).to(v.dtype) if v.is_floating_point() else v
            for k, v in last.items()}


def select_epoch(log: list[dict], criterion: str) -> int | None:
    """1-based epoch minimising ``criterion`` over ``log`` (the last on ties); None if never logged
    (and for ``average``, which keeps no single epoch)."""
    if criterion == "last":
        return int(log[-1]["epoch"]) if log else None
    scored = [(r[criterion], r["epoch"]) for r in log if r.get(criterion) is not None]
    if not scored:
        return None
    best = min(v for v, _ in scored)
    return int(max(e for v, e in scored if v == best))
