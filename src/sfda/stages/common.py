"""What the stages share: reading slices for a config, checkpoint metadata, the loop's spec.

Each stage reads files and writes files (case list -> source checkpoint ->
prior table -> adapted checkpoint -> metrics), so any stage can be rerun alone.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from sfda.config import DataConfig, config_to_dict, save_config
from sfda.data.normalize import norm_clip, norm_params
from sfda.data.resample import check_resample
from sfda.data.slices import AUTO_AXIS, coarsest_axis
from sfda.data.sliceset import SliceSet, build_sliceset
from sfda.data.volumeset import build_volumeset
from sfda.engine.distributed import check_device, is_main, resolve_device
from sfda.engine.loop import FitSpec
from sfda.errors import SfdaError
from sfda.errors import require as require_that
from sfda.io.cases import CaseList, check_split_lists, select_cases
from sfda.nets import net_kind
from sfda.progress import say


def require(value, option: str) -> None:
    """A required option (``--out``, ``--checkpoint``, ...) must be given."""
    require_that(bool(value), f"{option} is required")


def on_device(cfg):
    """A copy of ``cfg`` with ``device: auto`` decided (:func:`sfda.engine.distributed.resolve_device`)
    and checked, so the run's record, its config.yaml and every later use name one device."""
    check_device(cfg.device)  # a missing GPU is a user error, before any output is written
    return dataclasses.replace(cfg, device=resolve_device(cfg.device))


def decide_axis(slicing, cases: list, what: str = "training"):
    """``slicing`` (a DataConfig or SlicingConfig) with ``axis`` -1 decided from ``cases``' spacings
    (:func:`sfda.data.slices.coarsest_axis`), said in the log; a copy. A set axis comes back as is."""
    if slicing.axis != AUTO_AXIS:
        return slicing
    axis, median = coarsest_axis([c.spacing for c in cases])
    if is_main():
        say(f"slicing axis: {axis} (auto: the coarsest voxel spacing; median {' x '.join(f'{v:g}' for v in median)} "
            f"mm over {len(cases)} {what} cases)")
    return dataclasses.replace(slicing, axis=axis)


def check_output(path: str | Path, option: str = "--out", file: bool = False) -> None:
    """Refuse, before anything runs, an output that cannot be written: a folder given where a file
    is meant (or the reverse), or a place under a file or without write permission."""
    p = Path(path)
    if file and p.is_dir():
        raise SfdaError(f"{option} {p} is a folder; give the path of a file to write")
    if not file and p.exists() and not p.is_dir():
        raise SfdaError(f"{option} {p} is an existing file; give a folder (it is created if missing)")
    existing = p.parent if file else p
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise SfdaError(f"{option} {p} lies under {existing}, which is a file; choose another place")
    if not os.access(existing, os.W_OK):
        raise SfdaError(f"{option} {p}: cannot write to {existing} (permission denied); choose another place")


def check_subjects(data: DataConfig) -> None:
    """A stage's subject lists obey the experiment's split rule (:func:`check_split_lists`)."""
    check_split_lists(data.subjects, data.val_subjects,
                      names=("--subjects (data.subjects)", "--val-subjects (data.val_subjects)", "test"))


def slices_for(cl: CaseList, subjects: list[str] | None, modality: str, data: DataConfig, *,
               with_labels: bool, axis: int | None = None, pad_multiple: int | None = None,
               clip: tuple[float, float] | None = None, hw=None, size=None, spacing=None, dims: int | None = None,
               progress: bool = True) -> SliceSet:
    """The slices (volumes, with ``dims`` 3) of ``subjects`` in ``modality``; slicing/normalisation
    may be forced (e.g. from a checkpoint, so a model sees what it was trained on)."""
    size, spacing = (data.size if size is None else size), (data.spacing if spacing is None else spacing)
    dims = data.dims if dims is None else dims
    check_resample(size, spacing, dims=dims)
    cases = select_cases(cl, subjects, modality)
    build = build_volumeset if dims == 3 else build_sliceset
    axis = data.axis if axis is None else axis
    if axis == AUTO_AXIS:  # a stage decides it from its training cases first (decide_axis): a last resort
        axis = coarsest_axis([c.spacing for c in cases])[0]
    return build(cases, modality, axis=axis,
                 pad_multiple=pad_multiple or data.pad_multiple,
                 clip=clip or (data.clip_low, data.clip_high), with_labels=with_labels,
                 label_names=cl.label_names, hw=hw, size=size, spacing=spacing,
                 cache_dir=data.cache or None, progress=progress)


def slicing_of(meta: dict) -> dict:
    """The slicing and normalisation a checkpoint was trained with, as :func:`slices_for` keywords."""
    n = meta["normalization"]
    s = meta["slicing"]
    return {"axis": s["axis"], "pad_multiple": s["pad_multiple"], "clip": norm_clip(n),
            "size": list(s.get("size", [])), "spacing": list(s.get("spacing", [])), "dims": s.get("dims", 2)}


def checkpoint_meta(cfg, net_args: dict, cl: CaseList, stage: str) -> dict:
    """What a checkpoint says about itself: network, labels, modality, normalisation, slicing, config."""
    return {"net": cfg.net, "net_args": net_args, "kind": net_kind(cfg.net), "label_names": list(cl.label_names),
            "modality": cfg.data.modality, "stage": stage,
            "normalization": norm_params(cfg.data.clip_low, cfg.data.clip_high),
            "slicing": {"axis": cfg.data.axis, "pad_multiple": cfg.data.pad_multiple, "size": list(cfg.data.size),
                        "spacing": list(cfg.data.spacing), "dims": cfg.data.dims},
            "config": config_to_dict(cfg)}


def fit_spec(cfg, data: SliceSet, meta: dict, **kw) -> FitSpec:
    """The loop's spec from a training-like stage config (its optim section, seed, device, out)."""
    return FitSpec(data=data, out=Path(cfg.out), meta=meta, optim=cfg.optim, seed=cfg.seed, device=cfg.device,
                   resume=cfg.resume, keep_epochs=cfg.keep_epochs, **kw)


def write_config(cfg, path: str | Path) -> None:
    """The merged config beside the stage's outputs (under torchrun only rank 0 writes)."""
    if is_main():
        save_config(cfg, path)
