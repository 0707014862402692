"""An adaptation method's settings: its knobs (an experiment's ``adapt.method``) and, for a stage,
which method and which source it adapts with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from sfda.config.core import opt
from sfda.config.methods import ADAPT_METHODS, DEFAULT_METHOD


@dataclass
class MethodSettings:
    """Every method's knobs in one place; each method reads only its own. (An experiment's
    ``adapt.method``: the experiment names the method and its source for each row itself.)"""

    # Keys of MethodConfig an experiment fills for each row: given in its config, they are refused.
    FILLED: ClassVar[dict[str, str]] = {
        "name": "the experiment adapts with each method of `methods` in turn; list the methods there",
        "source_modality": "the experiment gives adasource / adversarial the direction's source domain",
        "source_subjects": "the experiment gives adasource / adversarial the source's training subjects"}

    lam: float = opt(1.0, low=0)  # λ, the weight of the KL to the prior (adaent, adasource)
    # forward: KL(τe ‖ τ̂), Eq. 3 of the paper; reverse: KL(τ̂ ‖ τe), what the authors' released
    # code computed. The old names paper / code are accepted.
    kl: str = opt("forward", choices=("forward", "reverse"), aliases={"paper": "forward", "code": "reverse"})
    # "image": one KL per image (the paper); "batch": one KL on the batch's pooled ratios.
    kl_scope: str = opt("image", choices=("image", "batch"))
    class_weighted_entropy: bool = False  # the entropy weighted per class, as in the authors' code
    # target: batch-norm uses (and updates) target batch statistics; source: its running statistics stay.
    bn: str = opt("target", choices=("target", "source"))
    adabn_init: bool = False  # re-estimate batch-norm statistics on the target (AdaBN) before the first step
    adv_weight: float = opt(1e-3, low=0)  # adversarial: the weight of the discriminator's loss
    disc_lr: float = opt(1e-4, above=0)  # adversarial: the discriminator's learning rate


@dataclass
class MethodConfig(MethodSettings):
    """The method to adapt with, its knobs, and (for the two that read source images) its source."""

    # the adaptation method: adaent, tent, entropy, adabn (source-free) or adasource, adversarial
    name: str = opt(DEFAULT_METHOD, choices=tuple(ADAPT_METHODS))
    source_modality: str = ""  # adasource, adversarial: the source modality (they read source images)
    source_subjects: list[str] = opt([])  # adasource, adversarial: the labelled source subjects
