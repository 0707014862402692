"""``sfda experiment``'s config. Its sections reuse the stages' settings classes, so each option
is declared once (in :mod:`sfda.config.stages`); the experiment fills each stage's inputs
(case list, subjects, output folders, seed) itself, so it accepts none of them."""

from __future__ import annotations

import copy
from dataclasses import dataclass

from sfda.config.core import merge_into, opt
from sfda.config.methods import ADAPT_METHODS, ROWS
from sfda.config.rules import check_split_lists
from sfda.config.method import MethodSettings
from sfda.config.stages import AdaptSettings, DeviceConfig, PriorSettings, PriorTrainSettings, SlicingConfig, TrainSettings
from sfda.errors import SfdaError

@dataclass
class DatasetFiles:
    """Where a dataset is and how to read it (see `sfda data index`)."""

    root: str = ""  # the dataset folder
    layout: str = "auto"  # auto, ivdm3seg, ivdm3seg-crops, nnunet or pattern (sfda.io.layouts)
    pattern: str = ""  # pattern layout: the images, e.g. {subject}/{subject}_{modality}.nii.gz
    label_pattern: str = ""  # pattern layout: the labels, e.g. {subject}/{subject}_label.nii.gz


@dataclass
class DatasetConfig(DatasetFiles):
    # > 0: generate the built-in phantom with this many subjects (into root, or OUT/phantom)
    phantom_subjects: int = opt(0, low=0)
    phantom_seed: int = opt(0, low=0)  # the phantom generator's seed


@dataclass
class SplitConfig:
    train: list[str] = opt([])  # subjects for training and adaptation
    val: list[str] = opt([])  # subjects scored after each epoch (a log; must not overlap test)
    test: list[str] = opt([])  # subjects every result is scored on

    def __post_init__(self):
        self.check()

    def check(self, prefix: str = "split.") -> None:
        """No subject twice; training subjects neither validated nor tested on; validation ones not tested on."""
        check_split_lists(self.train, self.val, self.test, tuple(f"{prefix}{n}" for n in ("train", "val", "test")))


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
    # The methods' knobs; which method and which source each row adapts with, the experiment fills.
    method: MethodSettings = opt(MethodSettings())
    # Per-method changes of this section, e.g. {tent: {optim: {lr: 0.001}}}
    overrides: dict = opt({})

    def for_method(self, name: str) -> AdaptSettings:
        """This section as ``name`` adapts with it: a copy, its overrides for ``name`` merged in
        (checked like a config file's keys; the parsed section itself is never changed)."""
        if self.overrides and not isinstance(self.overrides, dict):
            raise SfdaError("adapt.overrides must map method names to changes, e.g. {tent: {optim: {lr: 0.001}}}")
        unknown = [m for m in self.overrides if m not in ADAPT_METHODS]
        if unknown:
            raise SfdaError(f"adapt.overrides.{unknown[0]}: not an adaptation method "
                            f"(choices: {', '.join(ADAPT_METHODS)})")
        section = copy.deepcopy(self)
        section.overrides = {}
        if name in self.overrides:
            merge_into(section, self.overrides[name], prefix=f"adapt.overrides.{name}.")
        return section


@dataclass
class ExperimentConfig(DeviceConfig):
    # A paired dataset (every subject scanned in every modality): `data` + `split`, and
    # directions name modalities. Unpaired cohorts: `domains`, and directions name domains.
    data: DatasetConfig = opt(DatasetConfig())
    domains: dict[str, DomainConfig] = opt({})  # unpaired: name -> {root, layout, modality, train, val, test}
    slicing: SlicingConfig = opt(SlicingConfig())  # how volumes become samples (a stage's data.* keys)
    directions: list[str] = opt(["wat->inn"], nonempty=True)  # source->target pairs of modalities or domains
    split: SplitConfig = opt(SplitConfig())  # paired data: the subject split
    methods: list[str] = opt(list(ROWS), choices=ROWS, nonempty=True)  # the rows to run
    seeds: list[int] = opt([0], low=0, nonempty=True)  # each seed retrains every model
    source: TrainSettings = opt(TrainSettings())  # the source model's (and Oracle's) training: train-source's
    # Changes of `source` for the Oracle, e.g. {optim: {epochs: 40}}. Empty: the Oracle of B->A is
    # the source model of A->B (one training per domain and seed, under OUT/models/<domain>/seed<k>).
    oracle: dict = opt({})
    prior: ExperimentPrior = opt(ExperimentPrior())  # how τe is built: prior's settings
    adapt: ExperimentAdapt = opt(ExperimentAdapt())  # how each method adapts: adapt's settings
    rerun: bool = False  # run every stage again even when its done.json matches
