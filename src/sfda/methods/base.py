"""What every method says to the one training loop.

A method is a small object: it declares which data it needs (target slices,
labelled source slices, a prior), which parameters it trains, how batch
normalisation behaves, and computes its loss for one step. The loop in
:mod:`sfda.engine.loop` does everything else.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sfda.config.methods import ADAPT_METHODS
from sfda.errors import SfdaError

#: What a Method reads from its row of ADAPT_METHODS.
FACTS = ("display", "needs_prior", "source_free", "per_scan")


@dataclass
class Batch:
    """One minibatch. images (B, C, H, W) float32; labels (B, H, W) int64 or None;
    mask (B, H, W) bool, True on real pixels; prior (B, K) or None; index (B,) into its SliceSet."""

    images: torch.Tensor
    mask: torch.Tensor
    index: torch.Tensor
    labels: torch.Tensor | None = None
    prior: torch.Tensor | None = None


class Method:
    """An adaptation method's ``name`` is its row of :data:`sfda.config.methods.ADAPT_METHODS`,
    which states its facts once: ``display``, ``needs_prior``, ``source_free`` and ``per_scan`` are
    read from there when the subclass is defined (a subclass restating one is refused)."""

    name = "base"
    #: The name tables and figures show.
    display = ""
    #: True when the method never sees source images: the loop gives it none.
    source_free = True
    #: Whether the loop's main data (``batch``) must carry labels.
    needs_labels = False
    needs_prior = False
    #: Whether ``sfda predict --adapt`` can run it on one scan at a time.
    per_scan = False
    #: Whether ``step`` returns a loss to back-propagate (AdaBN does not).
    trains = True
    #: Whether it can run under torchrun (DDP syncs the segmentation net only).
    distributed = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        facts = ADAPT_METHODS.get(cls.__dict__.get("name", ""))
        if facts is None:  # not an adaptation method (supervised training, the ratio regressor)
            return
        restated = sorted(set(FACTS) & set(cls.__dict__))
        if restated:
            raise TypeError(f"{cls.__name__} restates {', '.join(restated)}: sfda.config.methods states them")
        for key in FACTS:
            setattr(cls, key, getattr(facts, key))

    def __init__(self, cfg=None):
        self.cfg = cfg

    def parameters(self, model: nn.Module) -> list[nn.Parameter]:
        return [p for p in model.parameters() if p.requires_grad]

    def train_mode(self, model: nn.Module) -> None:
        """Put the model in the mode this method trains in (BN behaviour lives here)."""
        model.train()

    def step(self, model: nn.Module, batch: Batch, source: Batch | None = None):
        """Return (loss or None, logits of ``batch``, dict of floats to log)."""
        raise NotImplementedError

    def fit_once(self, model: nn.Module, images, batch_size: int, device: str, seed: int) -> None:
        """A method that does not train (``trains`` False): its one pass over the target ``images``."""
        raise NotImplementedError(f"{self.name} trains by gradient steps (step)")

    def holdout_weights(self) -> tuple[float, str]:
        """λ and the KL's direction of the label-free held-out objective (:mod:`sfda.engine.selection`)."""
        return (self.cfg.lam, self.cfg.kl) if self.cfg is not None else (1.0, "forward")

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


_NORMS = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.GroupNorm, nn.LayerNorm)


def norm_layers(model: nn.Module) -> list[nn.Module]:
    """Every normalisation layer: batch norm, and the instance/group/layer norms other toolkits use
    (nnU-Net: instance norm), whose affine parameters TENT adapts."""
    return [m for m in model.modules() if isinstance(m, _NORMS)]


def require_bn(model: nn.Module) -> None:
    """Refuse re-estimating batch statistics on a network without batch norm (nnU-Net's instance norm
    normalises each image by itself: there are no running statistics to re-estimate)."""
    if not bn_layers(model):
        raise SfdaError("adabn (and the self prior, adabn_init) re-estimate batch-norm statistics, but this network "
                        "has no batch-norm layer (e.g. nnU-Net's instance norm); use tent or adaent instead")


def freeze_bn_stats(model: nn.Module) -> None:
    """Keep BN running statistics as they are (eval-mode BN) while the rest trains."""
    for m in bn_layers(model):
        m.eval()
