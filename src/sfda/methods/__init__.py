"""Registry of methods: a plain dict, the one list of method classes; unknown names list the valid ones."""

from __future__ import annotations

from sfda.config.methods import facts_of
from sfda.methods.adabn import AdaBN
from sfda.methods.adaent import AdaEnt
from sfda.methods.adasource import AdaSource
from sfda.methods.adversarial import Adversarial
from sfda.methods.base import Batch, Method
from sfda.methods.entropy import EntropyOnly
from sfda.methods.supervised import Supervised
from sfda.methods.tent import Tent

#: name -> class, in the order of sfda.config.methods.ADAPT_METHODS (the facts' table, which the
#: config and the report read: they may not import this package; a test checks both agree).
METHODS: dict[str, type[Method]] = {cls.name: cls for cls in (AdaBN, AdaEnt, AdaSource, Adversarial, Tent, EntropyOnly)}


def build_method(name: str, cfg) -> Method:
    facts_of(name)  # an unknown name is refused there, with the choices
    return METHODS[name](cfg)


__all__ = ["METHODS", "Batch", "Method", "Supervised", "build_method"]
