"""Self-describing checkpoints that execute no code when loaded.

A checkpoint is a plain dict saved with :func:`torch.save` and read back with
``weights_only=True``: tensors plus plain data (``meta``: network name and
arguments, label names, modality, normalisation, slicing, config, epoch).
A pickle that would run code is refused by torch's safe unpickler.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from sfda.errors import SfdaError
from sfda.io.atomic import atomic_path
from sfda.nets import build_net

FORMAT = "sfda-checkpoint"
VERSION = 1


def save_checkpoint(path: str | Path, model: torch.nn.Module, meta: dict, train_state: dict | None = None) -> None:
    payload = {"format": FORMAT, "version": VERSION, "meta": meta,
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    if train_state is not None:
        payload["train_state"] = train_state
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def update_meta(path: str | Path, **items) -> None:
    """Add ``items`` to a written checkpoint's metadata (weights and training state kept)."""
    payload = load_checkpoint(path)
    payload["meta"].update(items)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise SfdaError(f"checkpoint {p} not found; give the .pt file written by sfda (e.g. runs/source/last.pt)")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsafe content"
        raise SfdaError(f"checkpoint {p} was refused by the safe loader: it is corrupt, or holds objects that "
                        f"could run code when loaded ({first[:120]}); only load checkpoints written by sfda") from None
    except Exception as exc:  # garbage bytes make the unpickler raise anything (IndexError, KeyError..)
        raise SfdaError(f"{p} is not a readable checkpoint ({type(exc).__name__}); "
                        "it may be truncated or not a PyTorch file: re-create it") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise SfdaError(f"{p} is not an sfda checkpoint (no '{FORMAT}' header); "
                        "use a checkpoint written by sfda train-source / train-prior / adapt")
    return ckpt


_WRITTEN_BY = {"segmentation": "`sfda train-source` or `sfda adapt`", "regression": "`sfda train-prior`"}


def require_kind(meta: dict, kind: str, path, use: str) -> None:
    """Refuse a checkpoint of the wrong kind (a ratio regressor where a segmenter is needed, ...)."""
    if meta.get("kind") != kind:
        raise SfdaError(f"{path} is a {meta.get('kind')} network ({meta.get('net')}); {use} needs a {kind} "
                        f"checkpoint (from {_WRITTEN_BY.get(kind, 'sfda')})")


def require_single(meta: dict, path, use: str) -> None:
    """Refuse to adapt a trust fall-back's merge of two networks (:mod:`sfda.nets.merge`) or an
    ensemble of folds (:mod:`sfda.nets.ensemble`)."""
    from sfda.nets.ensemble import is_ensemble
    from sfda.nets.merge import is_merge

    if is_ensemble(meta):
        n = len(meta["net_args"]["members"])
        raise SfdaError(f"{path} is an ensemble of {n} networks; {use} adapts one: import and adapt each fold "
                        "on its own (--fold N)")
    if is_merge(meta):
        raise SfdaError(f"{path} joins an adapted and a source model ({meta.get('selected_by', 'a trust fall-back')}); "
                        f"{use} starts from one network: give the source checkpoint, or the run's last.pt")


def model_from_checkpoint(ckpt: dict, path: str = "checkpoint") -> torch.nn.Module:
    meta = ckpt["meta"]
    model = build_net(meta["net"], **meta.get("net_args", {}))
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise SfdaError(f"{path}: weights do not fit network '{meta['net']}' "
                        f"({str(exc).splitlines()[0][:160]}); the file is damaged or mislabelled") from None
    return model


def load_model(path: str | Path) -> tuple[torch.nn.Module, dict]:
    """Rebuild the network from the checkpoint alone; returns (model in eval mode, meta)."""
    ckpt = load_checkpoint(path)
    model = model_from_checkpoint(ckpt, str(path))
    return model.eval(), ckpt["meta"]
