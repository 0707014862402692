"""Output-space adversarial adaptation (Tsai et al. 2018, the paper's [17]).

A fully-convolutional discriminator sees softmax maps and tells source from
target; the segmenter learns source cross-entropy plus a term that makes its
target outputs look like source outputs. Needs labelled source images. The
paper's tag rule: pairs where neither slice holds the structure are skipped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sfda.losses import cross_entropy
from sfda.methods.base import Batch, Method


def discriminator(num_classes: int, width: int = 32) -> nn.Sequential:
    layers, ch = [], num_classes
    for out in (width, width * 2, width * 4):
        layers += [nn.Conv2d(ch, out, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
        ch = out
    layers.append(nn.Conv2d(ch, 1, 3, padding=1))
    return nn.Sequential(*layers)


class Adversarial(Method):
    name = "adversarial"  # its facts (display name, prior, source images, per scan): sfda.config.methods
    distributed = False

    def __init__(self, cfg=None):
        super().__init__(cfg)
        self.disc: nn.Module | None = None
        self.disc_opt: torch.optim.Optimizer | None = None
        self._resumed: dict | None = None  # a checkpoint's state, loaded once the batches' device is known

    def _ensure(self, num_classes: int, device) -> None:
        """Build the discriminator on the device of the segmenter's outputs (a resumed one too:
        checkpoints load on the CPU, the run may be on a GPU)."""
        if self.disc is None:
            self.disc = discriminator(num_classes).to(device)
            self.disc_opt = torch.optim.Adam(self.disc.parameters(), lr=self.cfg.disc_lr, betas=(0.9, 0.99))
            if self._resumed:
                self.disc.load_state_dict(self._resumed["disc"])
                self.disc_opt.load_state_dict(self._resumed["disc_opt"])  # moves its state to the params' device
                self._resumed = None

    def _keep(self, batch: Batch, source: Batch) -> torch.Tensor:
        """Tag rule: keep a pair unless neither slice contains foreground."""
        src_has = (source.labels > 0).flatten(1).any(dim=1)
        if batch.prior is None:
            return torch.ones_like(src_has)
        n = min(len(src_has), len(batch.prior))
        tgt_has = batch.prior[:n, 1:].sum(dim=1) > 0
        keep = torch.ones_like(src_has)
        keep[:n] = src_has[:n] | tgt_has
        return keep

    def _bce(self, logits: torch.Tensor, target: float, keep: torch.Tensor) -> torch.Tensor:
        per = F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target),
                                                 reduction="none").flatten(1).mean(dim=1)
        k = keep[: len(per)].to(per.dtype)
        return (per * k).sum() / k.sum().clamp_min(1.0)

    def step(self, model, batch: Batch, source: Batch | None = None):
        both = model(torch.cat([source.images, batch.images], dim=0))
        src_logits, logits = both[: len(source.images)], both[len(source.images):]
        self._ensure(both.shape[1], both.device)
        keep = self._keep(batch, source)
        ce = cross_entropy(src_logits, source.labels, source.mask)
        tgt_prob = F.softmax(logits, dim=1)
        # The discriminator steps first: its optimiser updates its weights in place, which would
        # invalidate a graph through the discriminator built before (the loop back-propagates later).
        d_loss = self._train_disc(F.softmax(src_logits, dim=1).detach(), tgt_prob.detach(), keep)
        self.disc.requires_grad_(False)
        fool = self._bce(self.disc(tgt_prob), 1.0, keep)  # target made to look like source (label 1)
        self.disc.requires_grad_(True)
        loss = ce + self.cfg.adv_weight * fool
        return loss, logits, {"ce": float(ce.detach()), "adv": float(fool.detach()), "disc": d_loss}

    def _train_disc(self, src_prob, tgt_prob, keep) -> float:
        self.disc_opt.zero_grad(set_to_none=True)
        loss = self._bce(self.disc(src_prob), 1.0, keep) + self._bce(self.disc(tgt_prob), 0.0, keep)
        loss.backward()
        self.disc_opt.step()
        return float(loss.detach())

    def state_dict(self) -> dict:
        if self.disc is None:
            return self._resumed or {}
        return {"disc": self.disc.state_dict(), "disc_opt": self.disc_opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.disc, self.disc_opt, self._resumed = None, None, (state or None)
