"""What the stages share: reading slices as a model card's slicing says, a trained model's card, the loop's spec.

Each stage reads files and writes files (case list -> source checkpoint ->
prior table -> adapted checkpoint -> metrics), so any stage can be rerun alone.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from sfda.config import config_to_dict, save_config
from sfda.config.card import ModelCard, Network, Slicing, Training
from sfda.data.slices import AUTO_AXIS, coarsest_axis
from sfda.data.sliceset import SliceSet, build_sliceset
from sfda.data.volumeset import build_volumeset
from sfda.engine.distributed import check_device, is_main, resolve_device
from sfda.engine.loop import FitSpec
from sfda.errors import SfdaError
from sfda.errors import require as require_that
from sfda.io.cases import CaseList, select_cases
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


def slices_for(cl: CaseList, subjects: list[str] | None, modality: str, slicing: Slicing, *, with_labels: bool,
               cache: str = "", hw=None, progress: bool = True) -> SliceSet:
    """The slices (volumes, with ``slicing.dims`` 3) of ``subjects`` in ``modality``, as ``slicing``
    says: a model card's (a model sees what it was trained on), or a training stage's own
    (``Slicing.from_config(cfg.data)``). ``cache``: the folder of built arrays (``data.cache``)."""
    if slicing.axis == AUTO_AXIS:
        raise ValueError("slicing.axis -1 reached the data: decide it first (decide_axis)")
    cases = select_cases(cl, subjects, modality)
    build = build_volumeset if slicing.volumetric else build_sliceset
    return build(cases, modality, slicing, with_labels=with_labels, label_names=cl.label_names, hw=hw,
                 cache_dir=cache or None, progress=progress)


def training_card(cfg, net_args: dict, cl: CaseList, stage: str) -> ModelCard:
    """The card of a network a training stage builds: network, labels, modality, slicing and
    normalisation (its ``data`` section, the axis decided), config."""
    return ModelCard(network=Network(cfg.net, net_args), kind=net_kind(cfg.net), labels=tuple(cl.label_names),
                     modality=cfg.data.modality, slicing=Slicing.from_config(cfg.data),
                     training=Training(stage=stage, config=config_to_dict(cfg)))


def fit_spec(cfg, data: SliceSet, card: ModelCard, **kw) -> FitSpec:
    """The loop's spec from a training-like stage config (its optim section, seed, device, out)."""
    return FitSpec(data=data, out=Path(cfg.out), card=card, optim=cfg.optim, seed=cfg.seed, device=cfg.device,
                   resume=cfg.resume, keep_epochs=cfg.keep_epochs, **kw)


def write_config(cfg, path: str | Path) -> None:
    """The merged config beside the stage's outputs (under torchrun only rank 0 writes)."""
    if is_main():
        save_config(cfg, path)
