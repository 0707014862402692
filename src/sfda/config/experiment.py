"""``sfda experiment``'s config. Its sections reuse the stages' settings classes, so each option
is declared once (in :mod:`sfda.config.stages`); the experiment fills each stage's inputs
(case list, subjects, output folders, seed) itself, so it accepts none of them."""

from __future__ import annotations

from dataclasses import dataclass

from sfda.config.core import opt
from sfda.config.stages import AdaptSettings, PriorSettings, PriorTrainSettings, SlicingConfig, TrainSettings

ADAPT_METHODS = ("adabn", "adaent", "adasource", "adversarial", "tent", "entropy")
METHOD_CHOICES = ("noadapt", "oracle", *ADAPT_METHODS)


@dataclass
class DatasetFiles:
    """Where a dataset is and how to read it (see `sfda data index`)."""

    root: str = ""
    layout: str = "auto"
    pattern: str = ""
    label_pattern: str = ""


@dataclass
class DatasetConfig(DatasetFiles):
    # > 0: generate the built-in phantom with this many subjects (into root, or OUT/phantom)
    phantom_subjects: int = opt(0, low=0)
    phantom_seed: int = opt(0, low=0)


@dataclass
class SplitConfig:
    train: list[str] = opt([])
    val: list[str] = opt([])
    test: list[str] = opt([])


@dataclass
class DomainConfig(SplitConfig, DatasetFiles):
    """One domain of an unpaired experiment: its own dataset, channel and subject split."""

    # The channel (modality) name in the dataset; empty: the dataset's only one.
    modality: str = ""


@dataclass
class ExperimentPrior(PriorSettings):
    # method: regressor: the ratio regressor's training (sfda train-prior's settings)
    regressor: PriorTrainSettings = opt(PriorTrainSettings())


@dataclass
class ExperimentAdapt(AdaptSettings):
    # Per-method changes of this section, e.g. {tent: {optim: {lr: 0.001}}}
    overrides: dict = opt({})


@dataclass
class ExperimentConfig:
    # A paired dataset (every subject scanned in every modality): `data` + `split`, and
    # directions name modalities. Unpaired cohorts: `domains`, and directions name domains.
    data: DatasetConfig = opt(DatasetConfig())
    domains: dict[str, DomainConfig] = opt({})
    slicing: SlicingConfig = opt(SlicingConfig())
    directions: list[str] = opt(["wat->inn"], nonempty=True)
    split: SplitConfig = opt(SplitConfig())
    methods: list[str] = opt(list(METHOD_CHOICES), choices=METHOD_CHOICES, nonempty=True)
    seeds: list[int] = opt([0], low=0, nonempty=True)
    source: TrainSettings = opt(TrainSettings())
    # Changes of `source` for the Oracle, e.g. {optim: {epochs: 40}}. Empty: the Oracle of B->A is
    # the source model of A->B (one training per domain and seed, under OUT/models/<domain>/seed<k>).
    oracle: dict = opt({})
    prior: ExperimentPrior = opt(ExperimentPrior())
    adapt: ExperimentAdapt = opt(ExperimentAdapt())
    device: str = "cpu"
    rerun: bool = False
