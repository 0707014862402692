"""nnU-Net v2 result folders, read without importing nnunetv2 and without running pickled code.

A result folder ``RESULTS/DatasetXXX_Name/TRAINER__PLANS__CONFIG`` holds ``plans.json``,
``dataset.json`` and ``fold_F/checkpoint_final.pth``. The checkpoint is a dict saved by
``torch.save``: ``network_weights`` (the state dict), ``init_args`` (plans, configuration, fold,
dataset_json, device), ``trainer_name``, ``inference_allowed_mirroring_axes``, ``current_epoch``,
``optimizer_state``, ``logging`` and ``_best_ema``. It is loaded with ``weights_only=True``; the
only non-plain types it holds (numpy scalars in the training log, ``torch.device``) are allowed
by name, so a pickle that would run code is refused before it runs. Checked against the format
nnU-Net 2.x writes (``nnUNetTrainer.save_checkpoint``).
"""

from __future__ import annotations

import json
import pickle
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from sfda.errors import SfdaError
from sfda.io.atomic import atomic_path
from sfda.io.layouts.nnunet import channel_order

def _safe_types() -> list:
    """The few non-plain types nnU-Net's own checkpoints hold: numpy scalars in the training log and
    ``_best_ema`` (float32 under numpy 2, float64 under numpy 1, pickled under numpy 1's module path)."""
    core = getattr(np, "_core", None) or np.core
    out: list = [core.multiarray.scalar, np.dtype, (core.multiarray.scalar, "numpy.core.multiarray.scalar")]
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25
    out += [getattr(dtypes, n) for n in ("Float32DType", "Float64DType") if dtypes is not None and hasattr(dtypes, n)]
    return out


@dataclass
class NnunetModel:
    """What sfda needs from a result folder: the plans' configuration, the dataset description and
    the fold's checkpoint (a plain dict)."""

    folder: Path
    fold: str
    configuration: str
    plans: dict
    dataset: dict
    checkpoint: dict
    checkpoint_path: Path
    #: the dataset's channel names in input order (sfda.io.layouts.nnunet.channel_order)
    channels: list[str] = field(default_factory=list)

    @property
    def config(self) -> dict:
        return self.plans["configurations"][self.configuration]


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise SfdaError(f"{path} not found; give an nnU-Net v2 result folder "
                        "(RESULTS/DatasetXXX_Name/TRAINER__PLANS__CONFIG, with plans.json and dataset.json)")
    try:
        out = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SfdaError(f"{path} is not valid JSON ({exc}); the result folder is damaged") from None
    if not isinstance(out, dict):
        raise SfdaError(f"{path} must hold a JSON object; the result folder is damaged")
    return out


def load_nnunet_checkpoint(path: Path) -> dict:
    """nnU-Net's checkpoint with the safe unpickler (numpy scalars and dtypes allowed, nothing else)."""
    if not path.is_file():
        raise SfdaError(f"{path} not found; check --fold and that training finished (checkpoint_final.pth)")
    try:
        with torch.serialization.safe_globals(_safe_types()):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = (str(exc).strip().splitlines() or ["unsafe content"])[0]
        raise SfdaError(f"{path} was refused by the safe loader: it holds objects that could run code when "
                        f"loaded, or is corrupt ({first[:120]}); nothing in it was run") from None
    except Exception as exc:  # garbage bytes make the unpickler raise anything
        raise SfdaError(f"{path} is not a readable PyTorch checkpoint ({type(exc).__name__}); re-export it") from None
    if not isinstance(ckpt, dict) or "network_weights" not in ckpt:
        raise SfdaError(f"{path} is not an nnU-Net checkpoint (no 'network_weights'); give checkpoint_final.pth "
                        "from an nnU-Net v2 fold folder")
    return ckpt


def read_result_folder(folder: str | Path, fold: str | int = 0,
                       checkpoint: str = "checkpoint_final.pth") -> NnunetModel:
    """Read ``plans.json``, ``dataset.json`` and ``fold_<fold>/<checkpoint>`` of a result folder."""
    root = Path(folder)
    if not root.is_dir():
        raise SfdaError(f"nnU-Net result folder {root} not found")
    parts = root.name.split("__")
    if len(parts) != 3:
        raise SfdaError(f"{root} is not an nnU-Net v2 result folder: its name must be TRAINER__PLANS__CONFIG "
                        "(e.g. nnUNetTrainer__nnUNetPlans__2d)")
    plans, dataset = _read_json(root / "plans.json"), _read_json(root / "dataset.json")
    configuration = parts[2]
    if configuration not in plans.get("configurations", {}):
        raise SfdaError(f"{root / 'plans.json'} has no configuration '{configuration}' (it has: "
                        f"{', '.join(plans.get('configurations', {}))})")
    channels = channel_order(dataset, root / "dataset.json")
    path = root / f"fold_{fold}" / checkpoint
    return NnunetModel(root, str(fold), configuration, plans, dataset, load_nnunet_checkpoint(path), path, channels)


def fold_names(folder: str | Path, fold: str | int) -> list[str]:
    """The folds ``fold`` names: one (``0``), a list (``0,1,2``) or ``all``: every ``fold_N`` folder in
    ``folder``, in numeric order (nnU-Net's ``fold_all``, trained on every case, only when there is none)."""
    text = str(fold).strip()
    if text != "all":
        names = [f.strip() for f in text.split(",") if f.strip()]
        if not names or len(set(names)) != len(names):
            raise SfdaError(f"--fold {fold}: give a fold (0), several without repeats (0,1,2,3,4) or all")
        return names
    root = Path(folder)
    numbered = sorted((p.name[5:] for p in root.glob("fold_*") if p.is_dir() and p.name[5:].isdigit()), key=int)
    if numbered:
        return numbered
    if (root / "fold_all").is_dir():
        return ["all"]
    raise SfdaError(f"--fold all: {root} has no fold_N folder; give a result folder with trained folds")


def write_result_folder(model: NnunetModel, weights: dict[str, torch.Tensor], out: str | Path) -> Path:
    """An nnU-Net result folder at ``out`` (plans, dataset and the fold's checkpoint with ``weights``
    instead of the original network's), for nnU-Net's own tools; the original is never touched."""
    dest = Path(out) / model.folder.name
    if dest.resolve() == model.folder.resolve():
        raise SfdaError(f"refusing to write over the original nnU-Net folder {model.folder}; choose another --out")
    (dest / f"fold_{model.fold}").mkdir(parents=True, exist_ok=True)
    for name in ("plans.json", "dataset.json", "dataset_fingerprint.json"):
        if (model.folder / name).is_file():
            shutil.copyfile(model.folder / name, dest / name)
    payload = dict(model.checkpoint)
    payload["network_weights"] = {k: v.detach().cpu().clone() for k, v in weights.items()}
    path = dest / f"fold_{model.fold}" / "checkpoint_final.pth"
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path
