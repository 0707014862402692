"""The stages of sfda as Python functions: the public API behind the ``sfda`` command.

Each stage reads files and writes files (case list -> source checkpoint ->
prior table -> adapted checkpoint -> metrics), so any stage can be rerun alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sfda.config import AdaptConfig, DataConfig, PriorTrainConfig, TrainConfig, config_to_dict, save_config
from sfda.data.normalize import norm_params
from sfda.data.sliceset import SliceSet, build_sliceset
from sfda.engine.checkpoint import load_checkpoint, load_model, model_from_checkpoint, require_kind
from sfda.engine.distributed import device_for, is_main
from sfda.engine.loop import FitSpec, check_device, fit
from sfda.errors import SfdaError
from sfda.io.cases import CaseList, load_cases, select_cases
from sfda.methods import Supervised, build_method
from sfda.methods.regression import RatioRegression
from sfda.nets import NET_KIND, build_net
from sfda.priors.estimate import (apply_tags, constant_prior, model_prior, regressor_prior, relative_positions,
                                  source_mean_ratios, source_position_prior)
from sfda.priors.table import load_prior, save_prior


def _require(value, option: str) -> None:
    if not value:
        raise SfdaError(f"{option} is required")


def slices_for(cl: CaseList, subjects: list[str], modality: str, data: DataConfig, *,
               with_labels: bool, axis: int | None = None, pad_multiple: int | None = None,
               clip: tuple[float, float] | None = None, hw=None, progress: bool = True) -> SliceSet:
    """The slices of ``subjects`` in ``modality``; slicing/normalisation may be forced
    (e.g. from a checkpoint, so a model sees what it was trained on)."""
    cases = select_cases(cl, subjects, modality)
    return build_sliceset(cases, modality, axis=data.axis if axis is None else axis,
                          pad_multiple=pad_multiple or data.pad_multiple,
                          clip=clip or (data.clip_low, data.clip_high), with_labels=with_labels,
                          label_names=cl.label_names, hw=hw, cache_dir=data.cache or None, progress=progress)


def _meta(cfg, net: str, net_args: dict, cl: CaseList, stage: str, modality: str) -> dict:
    return {"net": net, "net_args": net_args, "kind": NET_KIND[net], "label_names": list(cl.label_names),
            "modality": modality, "stage": stage,
            "normalization": norm_params(cfg.data.clip_low, cfg.data.clip_high),
            "slicing": {"axis": cfg.data.axis, "pad_multiple": cfg.data.pad_multiple},
            "config": config_to_dict(cfg)}


def _fit_spec(cfg, data: SliceSet, meta: dict, **kw) -> FitSpec:
    o = cfg.optim
    return FitSpec(data=data, out=Path(cfg.out), meta=meta, epochs=o.epochs, batch_size=o.batch_size,
                   lr=o.lr, optimizer=o.optimizer, momentum=o.momentum, weight_decay=o.weight_decay,
                   schedule=o.schedule, max_steps=o.max_steps_per_epoch, seed=cfg.seed, device=cfg.device,
                   resume=cfg.resume, compile=o.compile, **kw)


def _supervised(cfg, stage: str, method, progress: bool, **spec_kw) -> dict:
    """Shared by train-source and train-prior: labelled slices in, a network trained by ``method``."""
    for value, option in ((cfg.out, "--out"), (cfg.data.cases, "--cases"), (cfg.data.modality, "--modality")):
        _require(value, option)
    check_device(cfg.device)  # before any output is written
    cl = load_cases(cfg.data.cases)
    train = slices_for(cl, cfg.data.subjects or None, cfg.data.modality, cfg.data, with_labels=True, progress=progress)
    val = (slices_for(cl, cfg.data.val_subjects, cfg.data.modality, cfg.data, with_labels=True, progress=progress)
           if cfg.data.val_subjects else None)
    net_args = {"in_channels": 1, "num_classes": len(cl.label_names), **cfg.net_args}
    torch.manual_seed(cfg.seed)  # the initial weights follow the seed too
    model = build_net(cfg.net, **net_args)
    if is_main():  # under torchrun only rank 0 writes
        save_config(cfg, Path(cfg.out) / "config.yaml")
    meta = _meta(cfg, cfg.net, net_args, cl, stage, cfg.data.modality)
    shape = {"augment": cfg.augment, "invert": getattr(cfg, "invert", 0.0), "remap": getattr(cfg, "remap", 0.0)}
    return fit(model, method, _fit_spec(cfg, train, meta, val=val, progress=progress, **shape, **spec_kw))


def train_source(cfg: TrainConfig, progress: bool = True) -> Path:
    """Supervised training with cross-entropy on labelled slices (source model, or Oracle on target)."""
    _supervised(cfg, "source", Supervised(), progress)
    return Path(cfg.out)


def train_prior(cfg: PriorTrainConfig, progress: bool = True) -> dict:
    """Train the class-ratio regressor on labelled source slices; returns its validation error."""
    out = _supervised(cfg, "prior", RatioRegression(), progress, regression=True)
    return out["log"][-1] if out["log"] else {}


def make_prior(*, method: str, cases: str, modality: str, subjects: list[str] | None, out: str,
               regressor: str = "", source_modality: str = "", source_subjects: list[str] | None = None,
               ratios: list[float] | None = None, tags: str = "", tags_from_labels: bool = False,
               min_presence: float = 0.0, checkpoint: str = "", bn_subjects: list[str] | None = None,
               data: DataConfig | None = None, progress: bool = True) -> Path:
    """Write τe for every target slice (``out`` CSV); see :mod:`sfda.priors.estimate`."""
    data = data or DataConfig()
    cl = load_cases(cases)
    axis, pad, clip = data.axis, data.pad_multiple, (data.clip_low, data.clip_high)
    if method in ("regressor", "self"):
        path, kind = (regressor, "regression") if method == "regressor" else (checkpoint, "segmentation")
        _require(path, "--regressor" if method == "regressor" else "--checkpoint (the source model)")
        model, meta = load_model(path)
        require_kind(meta, kind, path, f"the {method} prior")
        axis, pad = meta["slicing"]["axis"], meta["slicing"]["pad_multiple"]
        clip = (meta["normalization"]["clip_low"], meta["normalization"]["clip_high"])
    target = slices_for(cl, subjects, modality, data, with_labels=tags_from_labels, axis=axis,
                        pad_multiple=pad, clip=clip, progress=progress)
    n, k = len(target), len(cl.label_names)
    if method == "regressor":
        tau = regressor_prior(model, target.images)
    elif method == "self":
        from sfda.methods.adabn import reestimate_bn

        bn = target if not bn_subjects else slices_for(cl, bn_subjects, modality, data, with_labels=False, axis=axis,
                                                       pad_multiple=pad, clip=clip, progress=progress)
        reestimate_bn(model, bn.images)
        tau = model_prior(model, target.images, target.valid_mask())
    elif method in ("source-mean", "source-position"):
        _require(source_modality, "--source-modality")
        src = slices_for(cl, source_subjects, source_modality, data, with_labels=True, axis=axis,
                         pad_multiple=pad, clip=clip, progress=progress)
        src_ratios = src.foreground_fractions()
        tau = (np.tile(source_mean_ratios(src_ratios), (n, 1)) if method == "source-mean"
               else source_position_prior(src_ratios, _positions(src), _positions(target),
                                          min_presence=min_presence))
    elif method == "constant":
        tau = constant_prior(n, ratios or [])
    else:
        raise SfdaError(f"unknown prior method '{method}'; choose one of: constant, regressor, self, source-mean, "
                        "source-position")
    if tau.shape[1] != k:
        raise SfdaError(f"the prior has {tau.shape[1]} classes but the case list declares {k}")
    if tags_from_labels:
        tau = apply_tags(tau, target.foreground_fractions()[:, 1:].sum(axis=1) > 0)
    elif tags:
        tau = apply_tags(tau, read_tags(tags, target.slice_ids))
    save_prior(out, target.slice_ids, tau, cl.label_names)
    return Path(out)


def _positions(ss: SliceSet) -> np.ndarray:
    depths = np.array([c.shape[ss.axis] for c in ss.cases])[ss.case_index]
    return relative_positions(ss.slice_index, depths)


def read_tags(path: str, slice_ids: list[str]) -> np.ndarray:
    """Image-level tags: a CSV ``slice_id,present`` (1/0, yes/no, true/false)."""
    import csv

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


def adapt(cfg: AdaptConfig, progress: bool = True) -> Path:
    """Adapt a source checkpoint to target slices with ``cfg.method.name``."""
    for value, option in ((cfg.out, "--out"), (cfg.checkpoint, "--checkpoint"), (cfg.data.cases, "--cases"),
                          (cfg.data.modality, "--modality")):
        _require(value, option)
    check_device(cfg.device)  # before any output is written
    ckpt = load_checkpoint(cfg.checkpoint)
    require_kind(ckpt["meta"], "segmentation", cfg.checkpoint, "adapt")
    model = model_from_checkpoint(ckpt, cfg.checkpoint)
    src_meta = ckpt["meta"]
    method = build_method(cfg.method.name, cfg.method)
    _check_source_use(method, cfg)
    cl = load_cases(cfg.data.cases)
    force = _slicing_of(src_meta)
    # Target labels are never read for adaptation: with_labels=False.
    target = slices_for(cl, cfg.data.subjects or None, cfg.data.modality, cfg.data, with_labels=False,
                        progress=progress, **force)
    val = (slices_for(cl, cfg.data.val_subjects, cfg.data.modality, cfg.data, with_labels=True,
                      progress=progress, **force) if cfg.data.val_subjects else None)
    prior, val_prior = None, None
    if method.needs_prior or cfg.prior:
        _require(cfg.prior, "--prior (a table from `sfda prior`)")
        prior = load_prior(cfg.prior, target.slice_ids, len(cl.label_names))
        val_prior = _val_prior(cfg, val, len(cl.label_names))
    _check_selection(cfg, val_prior)
    source = None
    if not method.source_free:
        source = slices_for(cl, cfg.method.source_subjects, cfg.method.source_modality, cfg.data,
                            with_labels=True, hw=target.hw, progress=progress, **force)
    if cfg.method.adabn_init and method.trains and not (cfg.resume and (Path(cfg.out) / "last.pt").exists()):
        from sfda.methods.adabn import reestimate_bn

        reestimate_bn(model, target.images, device=device_for(cfg.device))
    if is_main():  # under torchrun only rank 0 writes
        save_config(cfg, Path(cfg.out) / "config.yaml")
    meta = {**src_meta, "stage": f"adapt:{method.name}", "modality": cfg.data.modality,
            "source_modality": src_meta.get("modality"), "config": config_to_dict(cfg)}
    fit(model, method, _fit_spec(cfg, target, meta, val=val, source=source, prior=prior, val_prior=val_prior,
                                 select=cfg.select, progress=progress))
    return Path(cfg.out)


def _val_prior(cfg: AdaptConfig, val: SliceSet | None, k: int) -> np.ndarray | None:
    """The prior of the held-out (validation) target slices, when the table covers them."""
    if val is None:
        return None
    try:
        return load_prior(cfg.prior, val.slice_ids, k)
    except SfdaError:
        return None


def _check_selection(cfg: AdaptConfig, val_prior) -> None:
    from sfda.engine.selection import CRITERIA

    if cfg.select not in CRITERIA:
        raise SfdaError(f"unknown select '{cfg.select}'; choose one of: {', '.join(CRITERIA)}")
    if cfg.select not in ("last", "average") and val_prior is None:
        raise SfdaError(f"select={cfg.select} scores held-out target images: give --val-subjects and a prior "
                        "table that covers their slices (`sfda prior` with --subjects listing both), "
                        "or select=last")


def _slicing_of(meta: dict) -> dict:
    n = meta["normalization"]
    return {"axis": meta["slicing"]["axis"], "pad_multiple": meta["slicing"]["pad_multiple"],
            "clip": (n["clip_low"], n["clip_high"])}


def _check_source_use(method, cfg: AdaptConfig) -> None:
    m = cfg.method
    if method.source_free and (m.source_modality or m.source_subjects):
        raise SfdaError(f"method '{method.name}' is source-free and takes no source data; "
                        "remove --source-modality/--source-subjects")
    if not method.source_free and not (m.source_modality and m.source_subjects):
        raise SfdaError(f"method '{method.name}' needs labelled source images: give --source-modality "
                        "and --source-subjects (or use a source-free method such as adaent)")
