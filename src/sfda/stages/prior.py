"""``sfda prior``: write τe for every target slice, a CSV (see :mod:`sfda.priors`).

:data:`PRIORS` is the registry: a plain dict from a name to a builder that
gathers what that prior needs (source statistics, a checkpoint) and returns
the (N, K) ratios of the target slices. Image-level tags apply on top.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np

from sfda.config import PriorConfig
from sfda.config.card import Slicing
from sfda.data.sliceset import SliceSet
from sfda.engine.checkpoint import load_model, require_kind, require_single
from sfda.errors import SfdaError
from sfda.io.cases import CaseList, load_cases, select_cases
from sfda.priors.estimate import (apply_tags, constant_prior, model_prior, regressor_prior, sizes_given_present,
                                  source_mean_ratios, source_position_prior)
from sfda.priors.table import save_prior
from sfda.stages.common import decide_axis, on_device, require, slices_for, write_config
from sfda.stages.outputs import case_files, claim_file


class _Inputs:
    """What a prior builder may read: the config, the case list and the target slices."""

    def __init__(self, cfg: PriorConfig, cl: CaseList, target: SliceSet, slicing: Slicing, progress: bool):
        self.cfg, self.cl, self.target, self.slicing, self.progress = cfg, cl, target, slicing, progress
        self.source: SliceSet | None = None

    def slices(self, subjects, modality: str, with_labels: bool) -> SliceSet:
        return slices_for(self.cl, subjects, modality, self.slicing, with_labels=with_labels,
                          cache=self.cfg.data.cache, progress=self.progress)


def _model(cfg: PriorConfig, kind: str):
    path = cfg.regressor if kind == "regression" else cfg.checkpoint
    require(path, "--regressor" if kind == "regression" else "--checkpoint (the source model)")
    model, card = load_model(path)
    require_kind(card, kind, path, f"the {cfg.method} prior")
    require_single(card, path, f"the {cfg.method} prior")
    return model, card


def _regressor(inp: _Inputs, model) -> np.ndarray:
    return regressor_prior(model, inp.target.images, device=inp.cfg.device)


def _self(inp: _Inputs, model) -> np.ndarray:
    from sfda.methods.adabn import reestimate_bn

    bn = inp.slices(inp.cfg.bn_subjects, inp.cfg.data.modality, False) if inp.cfg.bn_subjects else inp.target
    reestimate_bn(model, bn.images, device=inp.cfg.device)
    return model_prior(model, inp.target.images, inp.target.valid_mask(), device=inp.cfg.device)


def _source_ratios(inp: _Inputs) -> tuple[np.ndarray, SliceSet]:
    require(inp.cfg.source_modality, "--source-modality")
    if inp.source is None:  # read once: the tags' sizes come from the same slices
        inp.source = inp.slices(inp.cfg.source_subjects or None, inp.cfg.source_modality, True)
    return inp.source.foreground_fractions(), inp.source


def _source_mean(inp: _Inputs, model=None) -> np.ndarray:
    ratios, _ = _source_ratios(inp)
    return np.tile(source_mean_ratios(ratios), (len(inp.target), 1))


def _source_position(inp: _Inputs, model=None) -> np.ndarray:
    ratios, src = _source_ratios(inp)
    return source_position_prior(ratios, src.positions(), inp.target.positions(),
                                 min_presence=inp.cfg.min_presence)


def _constant(inp: _Inputs, model=None) -> np.ndarray:
    return constant_prior(len(inp.target), inp.cfg.ratios)


def _sizes(inp: _Inputs) -> np.ndarray | None:
    """With tags, the source-statistics priors give each tagged structure its size where present."""
    if inp.cfg.method not in ("source-mean", "source-position"):
        return None
    ratios, src = _source_ratios(inp)
    if inp.cfg.method == "source-mean":
        return sizes_given_present(ratios)
    return sizes_given_present(ratios, src.positions(), inp.target.positions())


#: name -> (the checkpoint kind it reads, or None; the builder)
PRIORS: dict[str, tuple[str | None, Callable]] = {
    "constant": (None, _constant),
    "regressor": ("regression", _regressor),
    "self": ("segmentation", _self),
    "source-mean": (None, _source_mean),
    "source-position": (None, _source_position),
}


def make_prior(cfg: PriorConfig, progress: bool = True) -> Path:
    """Write τe for every target slice (``cfg.out`` CSV) and the merged config beside it."""
    if cfg.method not in PRIORS:
        raise SfdaError(f"unknown prior method '{cfg.method}'; choose one of: {', '.join(sorted(PRIORS))}")
    for value, option in ((cfg.out, "--out"), (cfg.data.cases, "--cases"), (cfg.data.modality, "--modality")):
        require(value, option)
    cfg = on_device(cfg)
    cl = load_cases(cfg.data.cases)
    claim_file(cfg.out, [cfg.data.cases, cfg.regressor, cfg.checkpoint, cfg.tags, *case_files(cl)],
               overwrite=cfg.overwrite)
    kind, build = PRIORS[cfg.method]
    if not kind:  # no checkpoint to follow: the axis a source model trained on the source subjects takes
        source = cfg.source_subjects if cfg.method.startswith("source") else cfg.data.subjects
        cfg = dataclasses.replace(cfg, data=decide_axis(cfg.data, select_cases(cl, source or None)))
    model, slicing = None, Slicing.from_config(cfg.data)
    if kind or (cfg.checkpoint and cfg.method == "constant"):  # a constant prior's rows: the given model's samples
        model, card = _model(cfg, kind or "segmentation")
        slicing = card.slicing  # the target slices as the network was trained to see them
    target = slices_for(cl, cfg.data.subjects or None, cfg.data.modality, slicing,
                        with_labels=cfg.tags_from_labels, cache=cfg.data.cache, progress=progress)
    inputs = _Inputs(cfg, cl, target, slicing, progress)
    tau = build(inputs, model)
    if tau.shape[1] != len(cl.label_names):
        raise SfdaError(f"the prior has {tau.shape[1]} classes but the case list declares {len(cl.label_names)}")
    if cfg.tags_from_labels:
        tau = apply_tags(tau, target.foreground_fractions()[:, 1:] > 0, _sizes(inputs))  # a tag per structure
    elif cfg.tags:
        # a CSV tag says only "some structure here": sizes per structure only when there is one
        tau = apply_tags(tau, read_tags(cfg.tags, target.slice_ids), _sizes(inputs) if tau.shape[1] == 2 else None)
    save_prior(cfg.out, target.slice_ids, tau, cl.label_names)
    write_config(cfg, Path(cfg.out).parent / f"{Path(cfg.out).stem}.config.yaml")
    return Path(cfg.out)


def read_tags(path: str, slice_ids: list[str]) -> np.ndarray:
    """Image-level tags: a CSV ``slice_id,present`` (1/0, yes/no, true/false)."""
    p = Path(path)
    if not p.is_file():
        raise SfdaError(f"tags file {p} not found")
    table = {}
    for row in csv.reader(p.read_text().splitlines()):
        if len(row) >= 2 and row[0] != "slice_id":
            table[row[0]] = row[1].strip().lower() in ("1", "yes", "true", "present")
    missing = [s for s in slice_ids if s not in table]
    if missing:
        raise SfdaError(f"tags file {p} has no row for {len(missing)} slices (e.g. {missing[0]})")
    return np.array([table[s] for s in slice_ids])
