"""The rows of an experiment's results: each adaptation method's facts, stated once, and the two
rows that are not methods (no adaptation, the Oracle).

Why here, as plain data, and not only on the :class:`sfda.methods.base.Method` classes: the
config (this layer) lists the choices of ``predict --adapt`` and ``experiment.methods``, the
report (layer 2) names each row, and ``sfda --help`` must stay free of torch; none of them may
import :mod:`sfda.methods` (layer 3, torch). So the facts live in this table, and each ``Method``
subclass reads its own from it by its ``name`` (``Method.__init_subclass__``) instead of restating
them; ``tests/methods/test_methods.py`` checks that the registry ``METHODS`` holds exactly these
names, in this order. A new method: one row here, one class, one entry in ``METHODS``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sfda.errors import SfdaError


@dataclass(frozen=True)
class MethodFacts:
    """What the stages, the config and the report need to know of one adaptation method."""

    name: str  # its key: --method, experiment.methods, the run's folder
    display: str  # its name in tables and figures (the paper's)
    needs_prior: bool = False  # it reads the prior table τe
    source_free: bool = True  # it never sees source images (False: it reads labelled source images)
    per_scan: bool = False  # `sfda predict --adapt` can run it on one scan at a time

    def check_source_data(self, source_modality: str, source_subjects) -> None:
        """Refuse source images given to a source-free method, or missing for one that needs them."""
        if self.source_free and (source_modality or source_subjects):
            raise SfdaError(f"method '{self.name}' is source-free and takes no source data; "
                            "remove --source-modality/--source-subjects")
        if not self.source_free and not (source_modality and source_subjects):
            raise SfdaError(f"method '{self.name}' needs labelled source images: give --source-modality "
                            f"and --source-subjects (or use a source-free method such as {DEFAULT_METHOD})")


#: Every adaptation method, in the order of an experiment's rows.
ADAPT_METHODS: dict[str, MethodFacts] = {f.name: f for f in (
    MethodFacts("adabn", "AdaBN", per_scan=True),
    MethodFacts("adaent", "AdaEnt", needs_prior=True, per_scan=True),
    MethodFacts("adasource", "AdaSource", needs_prior=True, source_free=False),
    MethodFacts("adversarial", "Adversarial", source_free=False),
    MethodFacts("tent", "TENT", per_scan=True),
    MethodFacts("entropy", "Entropy only", per_scan=True),
)}
#: The method a stage uses when none is named (the paper's).
DEFAULT_METHOD = "adaent"

#: The rows of an experiment that are not methods: the source model as it is, and the Oracle
#: (trained on the target's labels).
NOADAPT, ORACLE = "noadapt", "oracle"
BASELINES = {NOADAPT: "NoAdaptation", ORACLE: "Oracle"}

#: An experiment's rows, in order: its ``methods`` choices and default.
ROWS = (*BASELINES, *ADAPT_METHODS)
#: Row key -> the name tables and figures show.
DISPLAY = {**BASELINES, **{f.name: f.display for f in ADAPT_METHODS.values()}}


def facts_of(name: str) -> MethodFacts:
    """The row of method ``name``; an unknown name is refused with the choices (a config built in
    Python meets this rule here; a parsed one met it as ``method.name``'s choices)."""
    if name not in ADAPT_METHODS:
        raise SfdaError(f"unknown method '{name}'; choose one of: {', '.join(ADAPT_METHODS)}")
    return ADAPT_METHODS[name]


def per_scan_methods() -> tuple[str, ...]:
    """The methods ``sfda predict --adapt`` runs, in table order."""
    return tuple(f.name for f in ADAPT_METHODS.values() if f.per_scan)


def source_free_methods() -> tuple[str, ...]:
    """The methods that read target images only, in table order."""
    return tuple(f.name for f in ADAPT_METHODS.values() if f.source_free)


def said(names) -> str:
    """``a, b, c or d``: names as a sentence lists them."""
    names = list(names)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
