"""A SliceSet's arrays as torch tensors, cut into the batches a method steps on."""

from __future__ import annotations

import numpy as np
import torch

from sfda.data.sliceset import SliceSet
from sfda.methods.base import Batch


class Tensors:
    """A SliceSet's arrays as torch tensors, indexed per batch (no per-sample Python)."""

    def __init__(self, ss: SliceSet, prior: np.ndarray | None, device: torch.device):
        self.images = torch.from_numpy(np.ascontiguousarray(ss.images))
        self.labels = None if ss.labels is None else torch.from_numpy(np.ascontiguousarray(ss.labels))
        self.mask = torch.from_numpy(ss.valid_mask())
        self.prior = None if prior is None else torch.from_numpy(np.asarray(prior, dtype=np.float32))
        self.device = device

    def batch(self, idx: torch.Tensor) -> Batch:
        d = self.device
        return Batch(images=self.images[idx].to(d), mask=self.mask[idx].to(d), index=idx,
                     labels=None if self.labels is None else self.labels[idx].to(d),
                     prior=None if self.prior is None else self.prior[idx].to(d))

    def foreground(self) -> torch.Tensor:
        """The indices of the samples whose real pixels hold a foreground structure (label > 0)."""
        if self.labels is None:
            return torch.zeros(0, dtype=torch.long)
        held = ((self.labels > 0) & self.mask).flatten(1).any(dim=1)
        return torch.nonzero(held).flatten()


def forced_foreground(batch_size: int, share: float) -> int:
    """How many of a batch's samples are drawn from foreground samples: nnU-Net's rule, the last
    ``batch_size - round(batch_size * (1 - share))`` of each batch."""
    return batch_size - round(batch_size * (1 - share))


def epoch_batches(perm: torch.Tensor, steps: int, batch_size: int, foreground: torch.Tensor, share: float,
                  gen: torch.Generator) -> list[torch.Tensor]:
    """The epoch's batches: consecutive runs of the seeded permutation ``perm``; with ``share`` > 0
    the last :func:`forced_foreground` places of each batch are replaced by samples drawn uniformly
    (with replacement, from ``gen``) among ``foreground`` (nothing is drawn when ``share`` is 0,
    so the default epoch is the plain permutation)."""
    batches = [perm[s * batch_size:(s + 1) * batch_size] for s in range(steps)]
    k = forced_foreground(batch_size, share) if share > 0 and len(foreground) else 0
    if not k:
        return batches
    out = []
    for b in batches:
        drawn = foreground[torch.randint(len(foreground), (min(k, len(b)),), generator=gen)]
        out.append(torch.cat([b[:len(b) - len(drawn)], drawn]))
    return out
