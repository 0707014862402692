"""The model card: what a checkpoint says about its network, typed.

Every stage after training reads a model's :class:`ModelCard`, never string keys: the network to
rebuild, what it outputs, its label names and modality, how a volume becomes its samples
(:class:`Slicing`, with the intensity :class:`Normalization`), what its training scans were like
(:class:`Profile`) and the label statistics it carries (:class:`SourceStats`), how it was trained
(:class:`Training`) and how ``selected.pt`` was chosen, a trust fall-back included
(:class:`Selection`). A checkpoint stores :meth:`ModelCard.to_dict`, plain data only (dicts,
lists, strings, numbers, None), so it loads with ``torch.load(weights_only=True)``;
:meth:`ModelCard.from_dict` reads it back and :func:`card_from_meta` reads the untyped ``meta``
dict of a version-1 checkpoint. Cards are frozen: a stage derives a new one with
:func:`dataclasses.replace`.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from sfda.config.rules import check_resample
from sfda.config.stages import SlicingConfig
from sfda.errors import SfdaError

#: what a network outputs: masks (logits per class) or class ratios (the prior's regressor)
KINDS = ("segmentation", "regression")


@dataclass(frozen=True)
class Network:
    """The network to rebuild: ``sfda.nets.build_net(name, **args)``; ``args`` is plain data."""

    name: str
    args: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Normalization:
    """Per-volume intensity normalisation (sfda.data.normalize): clip to the volume's
    ``clip_low``/``clip_high`` percentiles, then z-score; or (``fixed-zscore``, nnU-Net's CT scheme)
    clip to ``fixed`` (lo, hi) and z-score with its (mean, std), the same for every volume."""

    method: str = "percentile-zscore"
    clip_low: float = 0.5
    clip_high: float = 99.5
    fixed: tuple[float, ...] = ()

    @classmethod
    def percentile(cls, low: float, high: float) -> Normalization:
        return cls("percentile-zscore", low, high)

    @classmethod
    def fixed_values(cls, values) -> Normalization:
        return cls("fixed-zscore", 0.0, 100.0, tuple(float(v) for v in values))

    @property
    def clip(self) -> tuple:
        """The ``clip`` :func:`sfda.data.normalize.volume_stats` takes."""
        return tuple(self.fixed) if self.fixed else (self.clip_low, self.clip_high)


@dataclass(frozen=True)
class Slicing:
    """How a volume becomes the network's samples: slices along ``axis`` (``dims`` 2) or the whole
    volume (``dims`` 3), resampled to ``size`` or ``spacing`` when given, centre-padded to a multiple
    of ``pad_multiple``, normalised by ``norm``; ``window``: a 3D network's training shape (larger
    volumes are predicted window by window). ``axis`` -1 (a config's "decide from the cases") never
    reaches a checkpoint."""

    dims: int = 2
    axis: int = 0
    pad_multiple: int = 16
    size: tuple[int, ...] = ()
    spacing: tuple[float, ...] = ()
    window: tuple[int, ...] = ()
    norm: Normalization = field(default_factory=Normalization)
    #: "" (sfda's: linear resampling of the whole volume) or "nnunet" (an imported nnU-Net
    #: configuration: crop to the non-zero box, nnU-Net's spline resampling, logits resampled back;
    #: sfda.data.nnunet_prep). 2D checkpoints imported before sfda repeated it have ""
    preprocess: str = ""
    #: one per input channel where a model normalises its channels apart (an nnU-Net model's scheme
    #: per channel); empty: every channel by ``norm``
    norms: tuple[Normalization, ...] = ()

    def __post_init__(self):
        check_resample(self.size, self.spacing, dims=self.dims)  # checked where it is made, read as it is

    def clips(self, channels: int) -> list[tuple]:
        """The ``clip`` of each of ``channels`` input channels (:func:`sfda.data.normalize.volume_stats`)."""
        if not self.norms:
            return [self.norm.clip] * channels
        if len(self.norms) != channels:
            raise SfdaError(f"the model normalises {len(self.norms)} input channels; {channels} were given: give "
                            "one image per channel")
        return [n.clip for n in self.norms]

    @classmethod
    def from_config(cls, c: SlicingConfig) -> Slicing:
        """A stage's ``data`` section (a :class:`SlicingConfig`) as the data readers take it."""
        return cls(dims=c.dims, axis=c.axis, pad_multiple=c.pad_multiple, size=tuple(c.size),
                   spacing=tuple(c.spacing), norm=Normalization.percentile(c.clip_low, c.clip_high))

    @property
    def volumetric(self) -> bool:
        """Whether the network sees whole volumes rather than slices."""
        return self.dims == 3


@dataclass(frozen=True)
class Profile:
    """The ranges of the scans a model was trained (or adapted) on (sfda.data.profile): voxel
    spacing and shape per axis as (minima, maxima), raw intensity (low, high) of the first channel,
    modality name; ``channels``: each channel's raw (low, high) where the model takes several
    (empty in checkpoints written before, which then check the first channel only)."""

    modality: str
    spacing: tuple[tuple[float, ...], tuple[float, ...]]
    shape: tuple[tuple[float, ...], tuple[float, ...]]
    intensity: tuple[float, float]
    channels: tuple[tuple[float, float], ...] = ()

    def intensities(self) -> list[tuple[float, float]]:
        """The raw range of each channel known: all of them, or the first only."""
        return list(self.channels) or [self.intensity]


@dataclass(frozen=True)
class SourceStats:
    """Label statistics of the source model's training slices (train-source; none for a model
    imported from elsewhere): where each class lies (``atlas``, :func:`sfda.metrics.trust.label_atlas`),
    its class ratios per position along the axis (``position``, :func:`sfda.priors.estimate.position_table`),
    its own flip agreement per class (``flip``, the trust check's calibration), per class the
    largest share of its voxels outside its largest connected piece in any training volume
    (``pieces``, :func:`sfda.metrics.components.label_pieces`), and per class the (smallest, largest)
    volume in mL of the training volumes that hold it (``volumes``,
    :func:`sfda.metrics.plausibility.volume_ranges`)."""

    atlas: dict | None = None
    position: dict | None = None
    flip: tuple[float | None, ...] | None = None
    pieces: tuple[float | None, ...] | None = None
    volumes: tuple[tuple[float, float] | None, ...] | None = None


@dataclass(frozen=True)
class Training:
    """How the weights came about: the stage (``source``, ``prior``, ``adapt:<method>``), its merged
    config, the epoch (None for a selection that is no single epoch's), and for an adapted model
    the modality its source model was trained on."""

    stage: str = ""
    config: dict = field(default_factory=dict)
    epoch: int | None = None
    source_modality: str = ""


@dataclass(frozen=True)
class Selection:
    """How ``selected.pt`` was chosen (``selected_by``: a criterion, ``average`` of
    ``epochs_averaged`` epochs, or the trust check's ``fallback: ...``) and, after a fall-back, the
    file whose model it replaced (``fallback_from``)."""

    selected_by: str = ""
    epochs_averaged: int | None = None
    fallback_from: str = ""


@dataclass(frozen=True)
class NnunetOrigin:
    """The nnU-Net v2 result folder a model was imported from (to write it back there)."""

    folder: str
    fold: str
    configuration: str
    checkpoint: str
    trainer: str = ""
    mirror_axes: tuple[int, ...] = ()  # nnU-Net's own (its slice's rows, cols)
    folds: tuple[str, ...] = ()  # an ensemble's folds and their checkpoints
    checkpoints: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelCard:
    """What a checkpoint says about its network (see the module's docstring)."""

    network: Network
    kind: str = ""
    labels: tuple[str, ...] = ()
    modality: str = ""  # several channels joined by "+" (sfda.io.cases.channels_of): "T2+ADC"
    slicing: Slicing = field(default_factory=Slicing)
    profile: Profile | None = None
    source: SourceStats = field(default_factory=SourceStats)
    training: Training = field(default_factory=Training)
    selection: Selection = field(default_factory=Selection)
    mirror_axes: tuple[int, ...] = ()  # prediction averages over flips along these slice axes (nnU-Net's)
    nnunet: NnunetOrigin | None = None

    def to_dict(self) -> dict:
        """Plain data (dicts, lists, strings, numbers, None), as a checkpoint stores it."""
        return _plain(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelCard:
        """The card :meth:`to_dict` wrote (unknown keys are ignored, missing ones take defaults)."""
        return _build(cls, data)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _typed(tp: Any, value: Any) -> Any:
    """``value`` (plain data) as the annotated type ``tp``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if value is None:
        return None
    if origin in (typing.Union, types.UnionType):
        return _typed(next(a for a in args if a is not type(None)), value)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_typed(args[0], v) for v in value)
        return tuple(_typed(a, v) for a, v in zip(args, value))
    if tp in (int, float, str, bool):
        return tp(value)
    return copy.deepcopy(value)  # dict: plain data kept as it is


def _build(cls, data: dict):
    hints = typing.get_type_hints(cls)
    return cls(**{f.name: _typed(hints[f.name], data[f.name]) for f in dataclasses.fields(cls) if f.name in data})


def card_from_meta(meta: dict) -> ModelCard:
    """The card of a version-1 checkpoint, whose ``meta`` was an untyped dict."""
    norm, sl = meta.get("normalization") or {}, meta.get("slicing") or {}
    origin = meta.get("nnunet")
    return ModelCard.from_dict({
        "network": {"name": meta["net"], "args": meta.get("net_args", {})}, "kind": meta.get("kind", ""),
        "labels": meta.get("label_names", []), "modality": meta.get("modality") or "",
        "slicing": {**sl, "norm": norm}, "profile": meta.get("profile"),
        "source": {"atlas": meta.get("source_atlas"), "position": meta.get("source_position"),
                   "flip": meta.get("source_flip")},
        "training": {"stage": meta.get("stage", ""), "config": meta.get("config", {}), "epoch": meta.get("epoch"),
                     "source_modality": meta.get("source_modality") or ""},
        "selection": {"selected_by": meta.get("selected_by", ""), "epochs_averaged": meta.get("epochs_averaged"),
                      "fallback_from": meta.get("fallback_from", "")},
        "mirror_axes": meta.get("mirror_axes") or [], "nnunet": origin})
