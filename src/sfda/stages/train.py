"""``sfda train-source`` and ``sfda train-prior``: supervised training on labelled slices."""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

from sfda.config import PriorTrainConfig, TrainConfig
from sfda.config.card import ModelCard, Slicing, SourceStats
from sfda.data.spatial import SpatialAugment, check_spatial, spatial_active
from sfda.data.transforms import Chain, IntensityAugment
from sfda.engine.distributed import device_for
from sfda.engine.optim import check_optim
from sfda.engine.loop import fit
from sfda.data.profile import training_profile
from sfda.io.cases import channels_of, load_cases, select_cases
from sfda.methods import Supervised
from sfda.errors import SfdaError
from sfda.metrics.components import label_pieces
from sfda.metrics.plausibility import volume_ranges
from sfda.metrics.trust import as_planes, label_atlas
from sfda.priors.estimate import position_table
from sfda.methods.regression import RatioRegression
from sfda.nets import build_net
from sfda.nets.monai_nets import PREFIX as MONAI
from sfda.stages.common import (check_output, decide_axis, fit_spec, on_device, require, slices_for,
                                training_card, write_config)
from sfda.stages.freshness import Stage
from sfda.stages.outputs import case_files, claim_folder


def _supervised(cfg, stage: str, method, progress: bool, run: Stage | None = None, spatial=None,
                **spec_kw) -> dict:
    """Shared by train-source and train-prior: labelled slices in, a network trained by ``method``.
    ``run``: the stage's identity (default: its config and case list), checked by ``--resume``;
    ``spatial``: a :class:`sfda.config.SpatialConfig` (train-source only)."""
    for value, option in ((cfg.out, "--out"), (cfg.data.cases, "--cases"), (cfg.data.modality, "--modality")):
        require(value, option)
    check_optim(cfg.optim)
    if spatial is not None:
        check_spatial(spatial, cfg.data.dims)
    check_output(cfg.out)
    cfg = on_device(cfg)
    cl = load_cases(cfg.data.cases)
    cfg = dataclasses.replace(cfg, data=decide_axis(cfg.data, select_cases(cl, cfg.data.subjects or None)))
    dims_args = spatial_args(cfg)  # before any volume is read
    run = run or Stage(cfg, [cfg.data.cases], command="train-source" if stage == "source" else "train-prior")
    with claim_folder(cfg.out, run, [cfg.data.cases, *case_files(cl)], resume=cfg.resume, overwrite=cfg.overwrite):
        return _train(cfg, cl, stage, method, progress, dims_args, spatial, **spec_kw)


def _train(cfg, cl, stage: str, method, progress: bool, dims_args: dict, spatial, **spec_kw) -> dict:
    slicing = Slicing.from_config(cfg.data)
    train = slices_for(cl, cfg.data.subjects or None, cfg.data.modality, slicing, with_labels=True,
                       cache=cfg.data.cache, progress=progress)
    val = (slices_for(cl, cfg.data.val_subjects, cfg.data.modality, slicing, with_labels=True, cache=cfg.data.cache,
                      progress=progress) if cfg.data.val_subjects else None)
    net_args = {"in_channels": len(channels_of(cfg.data.modality)), "num_classes": len(cl.label_names), **dims_args,
                **cfg.net_args}
    torch.manual_seed(cfg.seed)  # the initial weights follow the seed too
    model = build_net(cfg.net, **net_args)
    write_config(cfg, Path(cfg.out) / "config.yaml")
    card = training_card(cfg, net_args, cl, stage)
    if train.dims == 3:  # the volumes' padded shape: larger volumes are predicted window by window
        card = replace(card, slicing=replace(card.slicing, window=tuple(train.hw)))
    if stage == "source":  # label statistics: where each class lies (trust), how much per position (a prior)
        position = position_table(train.foreground_fractions(), train.positions()) if train.dims == 2 else None
        k = len(cl.label_names)
        card = replace(card, source=SourceStats(atlas=_atlas(train, k), position=position,
                                                pieces=label_pieces(train.label_volumes(), k),
                                                volumes=_volumes(train, k)),
                       profile=training_profile(select_cases(cl, cfg.data.subjects or None), cfg.data.modality))
    transform = _transform(cfg, spatial, train.dims)
    # a source model's card carries its own flip agreement, measured once it is trained
    final = partial(_with_flip, train=train, device=device_for(cfg.device)) if stage == "source" else None
    return fit(model, method, fit_spec(cfg, train, card, val=val, transform=transform, progress=progress,
                                       final_card=final, **spec_kw))


def _transform(cfg, spatial, dims: int):
    """The training batches' transform: spatial changes first (as nnU-Net), then intensity; None
    when neither is on (the default spatial settings add nothing, not even a random draw)."""
    parts = []
    if spatial is not None and spatial_active(spatial):
        parts.append(SpatialAugment(spatial, dims))
    if cfg.augment:
        parts.append(IntensityAugment(cfg.invert, cfg.remap))
    return Chain(tuple(parts)) if parts else None


def spatial_args(cfg) -> dict:
    """``slicing.dims`` 3 needs a 3D network: MONAI's get ``spatial_dims: 3``; sfda's, the ratio
    regressor and nnU-Net's imported ones are 2D only (refused, with the fix)."""
    given = cfg.net_args.get("spatial_dims", cfg.data.dims)
    if given != cfg.data.dims:
        raise SfdaError(f"net_args.spatial_dims {given} disagrees with slicing.dims {cfg.data.dims}; set one to "
                        "match the other (2: slices, 3: whole volumes)")
    if cfg.data.dims == 2:
        return {}
    if cfg.net == "regressor":
        raise SfdaError("the ratio regressor (train-prior) is 2D only; with slicing.dims 3 use prior.method "
                        "source-mean, constant or self")
    if not cfg.net.startswith(MONAI):
        raise SfdaError(f"net {cfg.net} is 2D only; slicing.dims 3 needs a 3D network, e.g. net: monai.UNet "
                        "(or keep slicing.dims 2)")
    return {"spatial_dims": 3}


def _volumes(train, k: int) -> tuple:
    """Each class's (smallest, largest) volume in mL over the training volumes (on the network's grid)."""
    pairs = [(labels, train.grid_volume(case)[1]) for case, labels in zip(train.cases, train.label_volumes())]
    return tuple(None if r is None else tuple(r) for r in volume_ranges(pairs, k))


def _atlas(train, k: int) -> dict:
    """Where each class lies in the training slices (3D volumes: read as slices along the axis)."""
    if train.dims == 3:
        return label_atlas(as_planes(train.labels, train.axis), as_planes(train.valid_mask(), train.axis), k)
    return label_atlas(train.labels, train.valid_mask(), k)


def train_source(cfg: TrainConfig, progress: bool = True, run: Stage | None = None) -> Path:
    """Supervised training on labelled slices (source model, or Oracle on target): ``cfg.loss``,
    ``cfg.oversample_fg`` and ``cfg.spatial`` on top of what train-prior shares. The model to use is
    ``out/selected.pt``."""
    _supervised(cfg, "source", Supervised(cfg.loss), progress, run, spatial=cfg.spatial,
                oversample_fg=cfg.oversample_fg)
    return Path(cfg.out)


def _with_flip(model: torch.nn.Module, card: ModelCard, train, device: str, most: int = 256) -> ModelCard:
    """``card`` with the trained ``model``'s own flip agreement on (up to ``most``) of its ``train``
    slices (the card of last.pt and selected.pt): where it fails the mirror test on the data it was
    trained on, the trust check gives no flip signal (:func:`sfda.metrics.trust.calibrated_flip`)."""
    from sfda.inference import trust_signals

    rows = np.unique(np.linspace(0, len(train) - 1, min(most, len(train))).astype(int))
    # the card's slicing alone: no earlier calibration or atlas applies to this measurement
    flip = trust_signals(model, train.images[rows], train.valid_mask()[rows],
                         replace(card, source=SourceStats()), len(card.labels), device)["flip_agreement"]
    return replace(card, source=replace(card.source, flip=tuple(flip)))


def train_prior(cfg: PriorTrainConfig, progress: bool = True, run: Stage | None = None) -> dict:
    """Train the class-ratio regressor on labelled source slices; returns its validation error."""
    out = _supervised(cfg, "prior", RatioRegression(), progress, run, regression=True)
    return out["log"][-1] if out["log"] else {}
