"""The end-of-epoch evaluation on the validation slices.

For a segmenter, one forward pass feeds both parts: the 3D Dice per subject
(when the slices have labels; logged, never used to choose) and, when adapting,
the label-free held-out scores (:class:`sfda.engine.selection.HoldoutStats`).
For the ratio regressor, the mean absolute error of its ratios.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from sfda.data.sliceset import SliceSet
from sfda.engine.selection import HoldoutStats
from sfda.inference import iter_outputs, predict_slices
from sfda.metrics.subjects import subject_dice


def evaluate_epoch(model, method, val: SliceSet | None, val_prior, regression: bool, device) -> dict:
    """Scores of ``model`` on ``val``; ``val_s`` times the whole of it."""
    if val is None:
        return {}
    t0 = time.perf_counter()
    row = (_validate_regressor(model, val, device) if regression
           else _validate_segmenter(model, method, val, val_prior, device))
    if row:
        row["val_s"] = time.perf_counter() - t0
    return row


def _scored(val: SliceSet) -> bool:
    # Slices without cases (sfda.adapt_model's in-memory arrays) have no subjects to score in 3D.
    return val.labels is not None and bool(val.cases)


def _validate_regressor(model, val: SliceSet, device) -> dict:
    if not _scored(val):
        return {}
    from sfda.priors.estimate import regressor_prior

    ratios = regressor_prior(model, val.images, device=str(device))
    truth = val.foreground_fractions()
    present = truth[:, 1:].sum(axis=1) > 0
    mae = np.abs(ratios - truth)[:, 1:].mean(axis=1)
    return {"val_mae": float(mae.mean()), "val_mae_present": float(mae[present].mean()) if present.any() else 0.0}


def _validate_segmenter(model, method, val: SliceSet, val_prior, device) -> dict:
    scored = _scored(val)
    held_out = val_prior is not None and not method.needs_labels  # adaptation only
    if not (scored or held_out):
        return {}
    lam, direction = method.holdout_weights()
    stats = HoldoutStats(val.valid_mask(), val_prior, lam=lam, direction=direction) if held_out else None
    labels = []
    for rows, logits in iter_outputs(model, val.images, device=str(device)):
        if scored:
            labels.append(logits.argmax(dim=1).to(torch.uint8).cpu().numpy())
        if stats is not None:
            stats.add(rows, logits)
    row = stats.result() if stats is not None else {}
    if scored:
        per = subject_dice(val, np.concatenate(labels))
        row.update({"val_dice": float(np.mean(list(per.values()))), "val_dice_per_subject": per})
    return row


@torch.no_grad()
def fraction_row(model, data: SliceSet, prior, device) -> dict:
    """Predicted (and expected) foreground fraction over ``data``, for runs without batches (``fit_once``)."""
    pred, _ = predict_slices(model, data.images, device=str(device))
    valid = data.valid_mask()
    out = {"pred_fraction": float(((pred > 0) & valid).sum() / valid.sum())}
    if prior is not None:
        out["prior_fraction"] = float(np.asarray(prior)[:, 1:].sum(axis=1).mean())
    return out
