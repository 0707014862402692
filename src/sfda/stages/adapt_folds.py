"""``sfda adapt --nnunet FOLDER --fold 0,1,2,3,4`` (or ``all``): each fold adapted on its own, and the
adapted folds as one nnU-Net result folder.

Each fold runs as its own ``adapt`` into ``OUT/fold_N``: its own model, trust check, ``done.json``
and export, resumable on its own. After the last fold, ``OUT/nnunet/<the folder's name>/`` holds
the plans, the dataset description and every fold's adapted ``fold_N/checkpoint_final.pth`` (hard
links to the folds' exports; a copy where a link cannot be made), so nnU-Net's predictor ensembles
them (``-f 0 1 2 3 4``), as does ``sfda predict --nnunet OUT/nnunet/<name> --fold 0,1,2,3,4``. A fold
whose trust check kept the source model for some structures has no export (nnU-Net's format holds
one network); the combined folder is then not written, and the line says which fold and why.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

from sfda.config import AdaptConfig
from sfda.errors import SfdaError
from sfda.io.nnunet_results import fold_names
from sfda.progress import say
from sfda.stages.adapt import adapt
from sfda.stages.common import check_output, require


def several_folds(cfg: AdaptConfig) -> list[str]:
    """The folds ``--fold`` names when ``--nnunet`` is given and they are more than one; else []."""
    if not cfg.nnunet or not Path(cfg.nnunet).is_dir():
        return []
    folds = fold_names(cfg.nnunet, cfg.fold)
    return folds if len(folds) > 1 else []


def adapt_all(cfg: AdaptConfig, progress: bool = True) -> list[Path]:
    """``sfda adapt``: one run (:func:`sfda.stages.adapt.adapt`), or one per fold when ``--nnunet`` is
    given several (:func:`adapt_folds`); the run folders."""
    folds = several_folds(cfg)
    return adapt_folds(cfg, folds, progress) if folds else [adapt(cfg, progress)]


def adapt_folds(cfg: AdaptConfig, folds: list[str], progress: bool = True) -> list[Path]:
    """Adapt every fold in ``folds`` into ``OUT/fold_N``, then gather their exports (module doc);
    returns the folds' run folders."""
    require(cfg.out, "--out")
    check_output(cfg.out)
    combined = Path(cfg.out) / "nnunet" / Path(cfg.nnunet).name
    if combined.exists() and not (cfg.resume or cfg.overwrite):
        raise SfdaError(f"{combined} exists (an earlier run's adapted folds); give --resume to continue that run, "
                        "--overwrite to replace it, or another --out")
    outs = []
    for fold in folds:
        say(f"fold {fold} of {', '.join(folds)}")
        outs.append(adapt(replace(cfg, fold=fold, out=str(Path(cfg.out) / f"fold_{fold}")), progress))
    missing = [f for f, out in zip(folds, outs) if not _export(out, cfg.nnunet, f).is_file()]
    if missing:
        say(f"no combined nnU-Net folder: fold {', '.join(missing)} kept the source model for some structures "
            "(its trust.json says which), which one nnU-Net network cannot hold; each other fold's export is in "
            "its own folder")
        return outs
    _gather(cfg.nnunet, folds, outs, combined)
    say(f"nnU-Net result folder of the adapted folds: {combined}")
    return outs


def _export(out: Path, folder: str, fold: str) -> Path:
    """Where fold ``fold``'s run exported its checkpoint (sfda.stages.nnunet.export_nnunet)."""
    return out / "nnunet" / Path(folder).name / f"fold_{fold}" / "checkpoint_final.pth"


def _gather(folder: str, folds: list[str], outs: list[Path], combined: Path) -> None:
    """``combined``: the first fold's plans and dataset files, and each fold's exported checkpoint."""
    if combined.exists():
        shutil.rmtree(combined)  # this run's own earlier gathering (--resume / --overwrite checked above)
    first = outs[0] / "nnunet" / Path(folder).name
    for fold, out in zip(folds, outs):
        dest = combined / f"fold_{fold}" / "checkpoint_final.pth"
        dest.parent.mkdir(parents=True)
        _link(_export(out, folder, fold), dest)
    for item in first.iterdir():
        if item.is_file():
            _link(item, combined / item.name)


def _link(src: Path, dest: Path) -> None:
    try:
        os.link(src, dest)
    except OSError:  # another file system, or links not allowed
        shutil.copyfile(src, dest)
