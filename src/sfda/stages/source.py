"""Where a stage's model comes from: ``--checkpoint PATH`` (an sfda checkpoint) or ``--nnunet FOLDER``
(an nnU-Net v2 result folder, with ``--fold`` and ``--checkpoint-name``), turned once, at the stage's
entry, into the model and its card (:func:`resolve_source`). The stage's config is only read.

Adapt, evaluate and predict take either; :func:`check_source` refuses what cannot work with an
nnU-Net network before the stage reads or writes anything, and :func:`resolve_source` imports the
folder to ``<out>/source.pt`` (stages pass files) and loads it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from sfda.config import MethodConfig, NnunetImportConfig
from sfda.config.card import ModelCard
from sfda.config.methods import facts_of
from sfda.engine.checkpoint import load_checkpoint, model_from_checkpoint, require_kind, require_single
from sfda.errors import SfdaError
from sfda.io.cases import CHANNEL_SEP, channels_of
from sfda.io.layouts.nnunet import channel_order
from sfda.io.nnunet_results import fold_names
from sfda.stages.common import require
from sfda.stages.nnunet import imported
from sfda.stages.outputs import IMPORTED_SOURCE


@dataclass(frozen=True)
class Adapting:
    """What a stage will adapt its source model with, for the refusals before anything is written:
    ``method`` (its name; "" when it only predicts), its settings, the ``prior`` table given, and how
    the user asked for it (``flag``: ``--method`` or ``--adapt``; ``command``: ``adapt`` or
    ``predict --adapt``)."""

    method: str
    settings: MethodConfig
    prior: str
    flag: str
    command: str


@dataclass(frozen=True)
class Source:
    """A stage's source model (in eval mode), its card, and the checkpoint file it was read from
    (``--checkpoint``, or ``<out>/source.pt`` imported from ``--nnunet``)."""

    model: torch.nn.Module
    card: ModelCard
    path: str


def _refuse_before_writing(folder: str, adapting: Adapting) -> None:
    """What cannot work with an nnU-Net network, refused before ``source.pt`` is written."""
    from sfda.methods.adabn import AdaBN

    name = adapting.method
    if name == AdaBN.name or adapting.settings.adabn_init:
        raise SfdaError(f"nnU-Net's networks use instance norm, which keeps no batch statistics: adabn does not "
                        f"apply to {folder}; use tent or adaent")
    if name and facts_of(name).needs_prior and not adapting.prior:
        raise SfdaError(f"{adapting.flag} {name} needs --prior TABLE (from `sfda prior`; an nnU-Net model carries no "
                        "source label statistics to make one from); or use tent")


def check_channels(channels: list[str], modality: str | None, origin: str) -> None:
    """Refuse a ``--modality`` that names another number of channels than the model (from ``origin``)
    takes (``channels``: the model's own channel names)."""
    wanted = channels_of(modality or "")
    if modality and len(wanted) != max(len(channels), 1):
        example = CHANNEL_SEP.join(channels) if len(channels) > 1 else (channels or ["T2"])[0]
        raise SfdaError(f"{origin} takes {max(len(channels), 1)} input channel(s) ({', '.join(channels) or '?'}); "
                        f"--modality {modality} names {len(wanted)}: name one of the case list's modalities per "
                        f"channel, in the model's order, joined by '{CHANNEL_SEP}' (e.g. --modality {example})")


def _folder_channels(folder: str) -> list[str] | None:
    """The channel names of an nnU-Net result folder's dataset.json, in input order (None where the file
    cannot be read: the import says why)."""
    path = Path(folder) / "dataset.json"
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict):
        return None
    return channel_order(meta, path)


def check_source(cfg, adapting: Adapting | None = None, modality: str | None = None) -> None:
    """What a stage given ``--nnunet`` refuses before it reads or writes anything. ``cfg``: the stage's
    config (its ``checkpoint``, ``nnunet``, ``fold`` and ``out``); ``adapting``: None when the stage
    does not adapt (evaluate); ``modality``: the data's (``--modality``), checked against the folder's
    channels."""
    if not cfg.nnunet:
        return
    channels = _folder_channels(cfg.nnunet)
    if channels is not None:
        check_channels(channels, modality, f"the nnU-Net model in {cfg.nnunet}")
    if cfg.checkpoint:
        raise SfdaError("give --checkpoint or --nnunet, not both")
    require(cfg.out, "--out")
    if adapting is not None:
        _refuse_before_writing(cfg.nnunet, adapting)
    folds = fold_names(cfg.nnunet, cfg.fold) if Path(cfg.nnunet).is_dir() else [cfg.fold]
    if len(folds) > 1 and adapting is not None and adapting.method:
        raise SfdaError(f"{adapting.command} --nnunet adapts one fold, not {len(folds)}: "
                        + ("sfda.stages.adapt_folds.adapt_folds adapts several, each on its own (OUT/fold_N), as "
                           "`sfda adapt --nnunet FOLDER --fold 0,1,...` does" if adapting.command == "adapt" else
                           "per-scan adaptation takes one fold (--fold N); adapt several on a cohort with "
                           "`sfda adapt --nnunet FOLDER --fold 0,1,...`"))


def resolve_source(cfg, use: str, write: bool = True, single: bool = False, modality: str | None = None) -> Source:
    """The stage's source model and its card, from ``cfg.checkpoint`` or, given ``--nnunet FOLDER``,
    from the fold(s) imported to ``<out>/source.pt`` and handed on in memory (``write`` False: another
    process imported it; predict under torchrun, where rank 0 writes and the others wait for its file,
    then read it). Refuses a model that is not a segmenter, or (``single``) an ensemble or merge,
    saying it is for ``use``, or whose channels ``modality`` (the data's) does not match."""
    path = str(Path(cfg.out) / IMPORTED_SOURCE) if cfg.nnunet else cfg.checkpoint
    if cfg.nnunet and write:  # inside the stage's own folder
        model, card = imported(NnunetImportConfig(folder=cfg.nnunet, fold=cfg.fold,
                                                  checkpoint_name=cfg.checkpoint_name, out=path, overwrite=True))
        _require_usable(card, path, use, single)
        check_channels(channels_of(card.modality), modality, f"model {path}")
        return Source(model, card, path)
    ckpt = load_checkpoint(path)
    _require_usable(ckpt["card"], path, use, single)
    check_channels(channels_of(ckpt["card"].modality), modality, f"model {path}")
    return Source(model_from_checkpoint(ckpt, path).eval(), ckpt["card"], path)


def _require_usable(card: ModelCard, path: str, use: str, single: bool) -> None:
    require_kind(card, "segmentation", path, use)
    if single:
        require_single(card, path, use)
