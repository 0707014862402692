"""After an adaptation: the label-free trust check of the chosen model, and the fall-back.

The adapted model's masks on its own adaptation images are read by the signals of
:mod:`sfda.metrics.trust` (where they lie against the source atlas, whether they survive a
mirrored input, whether a structure the source model finds vanished from them). If one warns,
the run says so (terminal, log, ``trust.json``, the reports) and, with ``on_distrust: source``,
``selected.pt`` becomes the source model: a mask that is visibly not adapted is safer than one
that is wrong where every other signal is green. With ``on_distrust: structure`` only the
structures a signal distrusts are taken from the source model (the whole model when all are).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from sfda.config.card import ModelCard, Network
from sfda.data.sliceset import SliceSet
from sfda.engine.distributed import device_for
from sfda.engine.selection import SELECTED
from sfda.inference import trust_signals
from sfda.io.atomic import write_json
from sfda.metrics.trust import THRESHOLDS, VANISH, calibrated_flip, shrink_cautions, trust_flags, vanish_flags
from sfda.nets.merge import NAME as MERGE, StructureMerge, merge_args, taken_classes
from sfda.progress import say


def check_trust(model: torch.nn.Module, card: ModelCard, *, source: tuple[torch.nn.Module, ModelCard],
                target: SliceSet, label_names: list[str], on_distrust: str, out: Path, device: str = "cpu",
                prior: np.ndarray | None = None) -> tuple[torch.nn.Module, ModelCard, dict]:
    """Score the selected ``model`` (its ``card``) and the ``source`` model (its model and card) on
    the ``target`` images, before ``out/selected.pt`` is written; write ``out/trust.json``. Returns
    the model to use (``model``, or its fall-back), its card, and ``done.json``'s ``trust`` decision
    (the loop's :attr:`sfda.engine.loop.FitSpec.vet`). With the target's ``prior`` (N, K), a
    structure that shrank against both it and the source model is a caution: said and written, no
    fall-back."""
    dev, valid, k = device_for(device), target.valid_mask(), len(label_names)
    source_model, source_card = source
    signals = trust_signals(model.to(dev), target.images, valid, card, k, dev)
    source_signals = trust_signals(source_model.to(dev), target.images, valid, source_card, k, dev)
    if not card.source.flip:  # a model trained elsewhere (nnU-Net): no calibration on its training slices,
        # so the source model's own mirror test on these images decides where the flip signal means anything
        signals["flip_agreement"] = calibrated_flip(signals["flip_agreement"], source_signals["flip_agreement"])
    flags = trust_flags(signals, label_names) + vanish_flags(signals, source_signals, label_names)
    result = {"checkpoint": SELECTED, "signals": signals, "thresholds": {**THRESHOLDS, "vanish": VANISH},
              "source_signals": source_signals, "fallback": None, "warnings": [line for _, line in flags]}
    if not card.source.atlas:
        result["note"] = ("the source checkpoint carries no source atlas (trained before train-source stored "
                          "one, or imported from elsewhere): atlas share not computed")
    result["cautions"] = shrink_cautions(signals, source_signals, prior_shares(prior, valid), label_names)
    for line in result["warnings"]:
        say(f"warning: trust: {line}")
    for line in result["cautions"]:
        say(f"warning: trust (caution, no fall-back): {line}")
    classes = taken_classes(on_distrust, [c for c, _ in flags], k)
    if classes:
        model, card, taken = fall_back(out, (model, card), source, classes, label_names)
        result.update(taken)
    write_json(out / "trust.json", result)
    return model, card, {"trust": decision(result)}


def decision(result: dict) -> dict:
    """What ``done.json`` says the trust check decided about the model to use."""
    return {"fallback": result.get("fallback"), "fallback_structures": result.get("fallback_structures"),
            "warnings": result["warnings"], "cautions": result.get("cautions", [])}


def fall_back(out: Path, adapted: tuple, source: tuple, classes: list[int],
              label_names: list[str]) -> tuple[torch.nn.Module, ModelCard, dict]:
    """The model ``out/selected.pt`` is to hold instead of the adapted one: the source model, or
    (some structures distrusted, others not) the adapted model with those structures taken from the
    source model (:mod:`sfda.nets.merge`); with its card and what ``trust.json`` adds."""
    (model, card), (source_model, source_card) = adapted, source
    if len(classes) >= len(label_names) - 1:
        chosen_by = replace(card.selection, selected_by="fallback: source model", fallback_from=SELECTED)
        say(f"warning: trust: {out}/selected.pt is now the source model; the adapted weights stay in {out}/last.pt")
        return source_model.cpu(), replace(card, selection=chosen_by), {"fallback": "source"}
    names = [label_names[c] for c in classes]
    chosen_by = replace(card.selection, fallback_from=SELECTED,
                        selected_by=f"fallback: source model for {', '.join(names)}")
    merged = StructureMerge(model.cpu(), source_model.cpu(), classes)
    say(f"warning: trust: {out}/selected.pt now takes {', '.join(names)} from the source model and the other "
        f"structures from {SELECTED}; the adapted weights stay in {out}/last.pt")
    return (merged, replace(card, network=Network(MERGE, merge_args(card, source_card, classes)), selection=chosen_by),
            {"fallback": "structures", "fallback_structures": names})


def prior_shares(prior: np.ndarray | None, valid: np.ndarray) -> list[float] | None:
    """Each structure's expected share of all the images' real pixels under the prior (N, K)."""
    if prior is None:
        return None
    pixels = valid.reshape(len(valid), -1).sum(axis=1).astype(np.float64)
    return (np.asarray(prior, dtype=np.float64)[:, 1:] * pixels[:, None]).sum(axis=0) / max(pixels.sum(), 1.0)
