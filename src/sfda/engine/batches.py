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
