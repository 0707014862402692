"""Self-describing checkpoints that execute no code when loaded.

A checkpoint is a plain dict saved with :func:`torch.save` and read back with
``weights_only=True``: tensors plus plain data, the model's card
(:class:`sfda.config.card.ModelCard`: network name and arguments, label names,
modality, slicing and normalisation, config, epoch, ...). A pickle that would run
code is refused by torch's safe unpickler.

Version 2 stores ``card`` (:meth:`ModelCard.to_dict`); version 1 stored the same
facts as an untyped ``meta`` dict, converted on loading (:func:`card_from_meta`).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import torch

from sfda.config.card import ModelCard, card_from_meta
from sfda.errors import SfdaError
from sfda.io.atomic import atomic_path
from sfda.nets import build_net

FORMAT = "sfda-checkpoint"
VERSION = 2


def save_checkpoint(path: str | Path, model: torch.nn.Module, card: ModelCard, train_state: dict | None = None) -> None:
    _write(path, card, {k: v.detach().cpu() for k, v in model.state_dict().items()}, train_state)


def _write(path: str | Path, card: ModelCard, state_dict: dict, train_state: dict | None) -> None:
    payload = {"format": FORMAT, "version": VERSION, "card": card.to_dict(), "state_dict": state_dict}
    if train_state is not None:
        payload["train_state"] = train_state
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def update_card(path: str | Path, edit: Callable[[ModelCard], ModelCard]) -> None:
    """Replace a written checkpoint's card by ``edit(card)`` (weights and training state kept; a
    version-1 file is written as version 2)."""
    ckpt = load_checkpoint(path)
    _write(path, edit(ckpt["card"]), ckpt["state_dict"], ckpt.get("train_state"))


def load_checkpoint(path: str | Path) -> dict:
    """The checkpoint's contents: ``card`` (a :class:`ModelCard`, whichever version wrote the file),
    ``state_dict`` and, for a training run's ``last.pt``, ``train_state``."""
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
    return {**{k: v for k, v in ckpt.items() if k != "meta"}, "card": _card(ckpt, p)}


def _card(ckpt: dict, p: Path) -> ModelCard:
    version = ckpt.get("version")
    if version not in (1, VERSION):
        raise SfdaError(f"{p} is an sfda checkpoint of version {version}; this sfda reads versions 1 to {VERSION} "
                        "(a newer sfda wrote it: update sfda)")
    try:
        return card_from_meta(ckpt["meta"]) if version == 1 else ModelCard.from_dict(ckpt["card"])
    except (KeyError, TypeError, ValueError, AttributeError, StopIteration) as exc:
        raise SfdaError(f"{p}: its model card is damaged ({type(exc).__name__}: {exc}); re-create the checkpoint") \
            from None


_WRITTEN_BY = {"segmentation": "`sfda train-source` or `sfda adapt`", "regression": "`sfda train-prior`"}


def require_kind(card: ModelCard, kind: str, path, use: str) -> None:
    """Refuse a checkpoint of the wrong kind (a ratio regressor where a segmenter is needed, ...)."""
    if card.kind != kind:
        raise SfdaError(f"{path} is a {card.kind or None} network ({card.network.name}); {use} needs a {kind} "
                        f"checkpoint (from {_WRITTEN_BY.get(kind, 'sfda')})")


def require_single(card: ModelCard, path, use: str) -> None:
    """Refuse to adapt a trust fall-back's merge of two networks (:mod:`sfda.nets.merge`) or an
    ensemble of folds (:mod:`sfda.nets.ensemble`)."""
    from sfda.nets.ensemble import is_ensemble
    from sfda.nets.merge import is_merge

    if is_ensemble(card):
        n = len(card.network.args["members"])
        raise SfdaError(f"{path} is an ensemble of {n} networks; {use} adapts one: import and adapt each fold "
                        "on its own (--fold N)")
    if is_merge(card):
        raise SfdaError(f"{path} joins an adapted and a source model ({card.selection.selected_by or 'a trust fall-back'}); "
                        f"{use} starts from one network: give the source checkpoint, or the run's last.pt")


def model_from_checkpoint(ckpt: dict, path: str = "checkpoint") -> torch.nn.Module:
    network = ckpt["card"].network
    model = build_net(network.name, **network.args)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise SfdaError(f"{path}: weights do not fit network '{network.name}' "
                        f"({str(exc).splitlines()[0][:160]}); the file is damaged or mislabelled") from None
    return model


def load_model(path: str | Path) -> tuple[torch.nn.Module, ModelCard]:
    """Rebuild the network from the checkpoint alone; returns (model in eval mode, its card)."""
    ckpt = load_checkpoint(path)
    model = model_from_checkpoint(ckpt, str(path))
    return model.eval(), ckpt["card"]
