"""The losses of the paper, as pure functions of logits.

All work from log-softmax, so probabilities of exactly 0 or 1 give finite
values and finite gradients (no ``log(0)``).

Shapes: ``logits`` (N, K, H, W); ``mask`` (N, H, W) bool marks real pixels
(False on slice padding) so padding never counts; ``prior`` (N, K) ratios. The
formulation is dimension-free: 3D samples (N, K, D, H, W) with masks (N, D, H, W)
work the same (the prior is then per volume).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-8
#: the KL directions' earlier names (where each came from) -> which way they run
KL_ALIASES = {"paper": "forward", "code": "reverse"}


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over pixels (N, H, W) where mask is True."""
    if mask is None:
        return values.mean()
    m = mask.to(values.dtype)
    return (values * m).sum() / m.sum().clamp_min(1.0)


def pixel_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Shannon entropy per pixel (N, H, W), in nats, from logits."""
    logp = F.log_softmax(logits, dim=1)
    return -(logp.exp() * logp).sum(dim=1)


def entropy_loss(logits: torch.Tensor, mask: torch.Tensor | None = None,
                 class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean pixel entropy; with ``class_weights`` (K,), the per-class terms are weighted
    (the authors' released code weighted them by inverse class frequency)."""
    logp = F.log_softmax(logits, dim=1)
    terms = -(logp.exp() * logp)
    if class_weights is not None:
        terms = terms * class_weights.view(1, -1, *[1] * (logits.ndim - 2))
    return _masked_mean(terms.sum(dim=1), mask)


def predicted_ratios(logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """τ̂: mean softmax over each image's real pixels, (N, K)."""
    probs = F.softmax(logits, dim=1)
    spatial = tuple(range(2, logits.ndim))
    if mask is None:
        return probs.mean(dim=spatial)
    m = mask.unsqueeze(1).to(probs.dtype)
    return (probs * m).sum(dim=spatial) / m.sum(dim=spatial).clamp_min(1.0)


def kl_prior(logits: torch.Tensor, prior: torch.Tensor, mask: torch.Tensor | None = None,
             direction: str = "forward", scope: str = "image") -> torch.Tensor:
    """KL between the prior τe and the predicted ratios τ̂.

    ``direction="forward"``: KL(τe ‖ τ̂) = Σ τe log(τe/τ̂), Eq. 3 of the paper: it
    punishes predicting too little of a class the prior expects (the barrier
    that stops collapse). ``direction="reverse"``: KL(τ̂ ‖ τe), what the authors'
    released code computed; it is milder when τ̂ → 0 for a class. The old names
    ``paper`` and ``code`` are accepted for them.

    ``scope="image"`` (the paper): one KL per image, averaged. ``scope="batch"``: one KL
    between the batch's pooled τe and τ̂ (ratios over all real pixels of the batch), so the
    prior fixes how much of each class the batch holds but not how it is shared between
    images: a per-slice prior that is right on average but wrong slice by slice then no
    longer asks for the structure where an image has none.
    """
    tau_hat = predicted_ratios(logits, mask)
    tau_e = prior.to(tau_hat.dtype).clamp_min(0)
    if scope == "batch":  # pool both over the batch, each image weighted by its number of real pixels
        pixels = (torch.full_like(tau_hat[:, 0], logits[0, 0].numel()) if mask is None
                  else mask.flatten(1).sum(dim=1).to(tau_hat.dtype))
        w = (pixels / pixels.sum().clamp_min(1.0))[:, None]
        tau_hat, tau_e = (tau_hat * w).sum(dim=0, keepdim=True), (tau_e * w).sum(dim=0, keepdim=True)
    elif scope != "image":
        from sfda.errors import SfdaError

        raise SfdaError(f"unknown KL scope '{scope}'; choose image or batch")
    tau_hat = tau_hat.clamp_min(EPS)
    direction = KL_ALIASES.get(direction, direction)
    if direction == "forward":
        kl = (tau_e * (torch.log(tau_e.clamp_min(EPS)) - torch.log(tau_hat))).sum(dim=1)
    elif direction == "reverse":
        kl = (tau_hat * (torch.log(tau_hat) - torch.log(tau_e.clamp_min(EPS)))).sum(dim=1)
    else:
        from sfda.errors import SfdaError

        raise SfdaError(f"unknown KL direction '{direction}'; choose forward or reverse (or their old names, paper or code)")
    return kl.mean()


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Pixel cross-entropy (Eq. 1), averaged over real pixels."""
    return _masked_mean(F.cross_entropy(logits, labels, reduction="none"), mask)


def batch_soft_dice(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None,
                    include_background: bool = False, smooth: float = 1e-5) -> torch.Tensor:
    """Soft Dice per class (K,) (K - 1 without the background), each pooled over the whole batch
    (nnU-Net's batch Dice): 2 Σ p·y / (Σ p + Σ y) over every real pixel of every image, with
    nnU-Net's ``smooth`` added above and below (a class absent from the batch scores about 0
    unless nothing of it is predicted)."""
    probs = F.softmax(logits, dim=1)
    onehot = F.one_hot(labels, logits.shape[1]).movedim(-1, 1).to(probs.dtype)
    if mask is not None:
        m = mask.unsqueeze(1).to(probs.dtype)
        probs, onehot = probs * m, onehot * m
    axes = (0, *range(2, logits.ndim))
    inter, total = (probs * onehot).sum(dim=axes), (probs + onehot).sum(dim=axes)
    dice = (2 * inter + smooth) / (total + smooth).clamp_min(1e-8)
    return dice if include_background else dice[1:]


def dice_ce(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """nnU-Net's loss: cross-entropy + (1 - mean batch soft Dice over the foreground classes).
    Returns the loss and its two parts (floats, for the log)."""
    ce = cross_entropy(logits, labels, mask)
    dice = batch_soft_dice(logits, labels, mask).mean()
    return ce + (1 - dice), {"ce": float(ce.detach()), "soft_dice": float(dice.detach())}
