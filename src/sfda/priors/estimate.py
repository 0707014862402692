"""Ways to get τe for target slices (Section 2 of the paper).

- ``constant``: a user's anatomical knowledge, the same ratios for every slice;
- ``source-mean``: the mean ratios over labelled source slices that contain the
  structure (a population statistic: no source image leaves the source site);
- ``source-position``: the mean source ratios at the same relative position
  along the slicing axis (anatomy: the outer sagittal slices hold no disc);
- ``regressor``: the auxiliary network trained on source slices;
- ``self``: the source segmentation model's own mean softmax per target slice, after
  its batch-norm statistics are re-estimated on the target slices (AdaBN). Adapting
  towards it keeps how much structure the model already finds in each slice and only
  sharpens where it lies (entropy), instead of asking every slice for a population size.
Image-level tags then set τe = (1, 0, ...) on slices without the structure.
"""

from __future__ import annotations

import numpy as np
import torch

from sfda.data.slices import relative_positions  # noqa: F401  (re-exported: part of the priors' API)
from sfda.errors import SfdaError
from sfda.losses import predicted_ratios
from sfda.inference import iter_outputs
from sfda.priors.table import fraction_rows


def constant_prior(n: int, ratios: list[float]) -> np.ndarray:
    r = np.asarray(ratios, dtype=np.float32)
    if r.ndim != 1 or len(r) < 2 or not fraction_rows(r):
        raise SfdaError(f"--ratios {list(ratios)} must be >= 2 non-negative class fractions summing to one, "
                        "e.g. --ratios 0.9,0.1")
    return np.tile(r, (n, 1))


def source_mean_ratios(source_ratios: np.ndarray) -> np.ndarray:
    """Mean ratios over source slices that contain any foreground."""
    present = source_ratios[:, 1:].sum(axis=1) > 0
    if not present.any():
        raise SfdaError("no source slice contains the structure; check the source labels and subjects")
    return source_ratios[present].mean(axis=0)


def _per_slice(model: torch.nn.Module, images: np.ndarray, batch_size: int, device: str, head) -> np.ndarray:
    """``head(output, rows)`` of ``model`` over ``images`` in batches, stacked as float32 (N, K)."""
    model.to(device)
    with torch.inference_mode():
        out = [head(y, rows).cpu().numpy() for rows, y in iter_outputs(model, images, batch_size, device)]
    return np.concatenate(out).astype(np.float32)


def regressor_prior(model: torch.nn.Module, images: np.ndarray, batch_size: int = 64,
                    device: str = "cpu") -> np.ndarray:
    return _per_slice(model, images, batch_size, device, lambda ratios, rows: ratios)


def model_prior(model: torch.nn.Module, images: np.ndarray, valid: np.ndarray, batch_size: int = 64,
                device: str = "cpu") -> np.ndarray:
    """τe of each slice (N, K): a segmentation model's mean softmax over the slice's real pixels."""
    return _per_slice(model, images, batch_size, device,
                      lambda logits, rows: predicted_ratios(logits, torch.from_numpy(valid[rows]).to(device)))


def apply_tags(ratios: np.ndarray, present: np.ndarray, sizes: np.ndarray | None = None) -> np.ndarray:
    """Weak supervision. ``present`` (N,): slices tagged as without any structure get
    τe = (1, 0, ...). ``present`` (N, K-1), a tag per structure: an absent structure gets ratio 0
    and the slice's other ratios are renormalised (a slice with none gets (1, 0, ...)).

    ``sizes`` (N, K-1): each structure's expected ratio *where it is present* (see
    :func:`sizes_given_present`). A tagged structure then gets that size instead of its mean over
    all slices, which also counts the slices without it and so asks for too little of it."""
    present = np.asarray(present, dtype=bool)
    if present.ndim == 1:
        present = np.repeat(present[:, None], ratios.shape[1] - 1, axis=1)
    if sizes is not None:
        return _tagged_sizes(present, sizes).astype(ratios.dtype)
    out = ratios.copy()
    changed = (~present & (out[:, 1:] > 0)).any(axis=1) | ~present.any(axis=1)
    fg = out[:, 1:]
    fg[~present] = 0.0
    empty = ~present.any(axis=1)
    out[empty] = 0.0
    out[empty, 0] = 1.0
    rest = changed & ~empty
    out[rest] /= np.maximum(out[rest].sum(axis=1, keepdims=True), 1e-12)
    return out


def _tagged_sizes(present: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    fg = np.where(present, sizes, 0.0)
    total = fg.sum(axis=1, keepdims=True)
    fg = fg / np.maximum(total, 1.0)  # structures that together ask for more than the slice
    return np.concatenate([1.0 - fg.sum(axis=1, keepdims=True), fg], axis=1)


def sizes_given_present(source_ratios: np.ndarray, source_pos: np.ndarray | None = None,
                        target_pos: np.ndarray | None = None, bins: int = 32) -> np.ndarray:
    """Each structure's mean source ratio over the source slices that hold it, (K-1,); with
    positions, per target slice (N, K-1): over the source slices that hold it at the same
    relative position, interpolated between the positions that hold it (beyond the first or last
    of them, that one's value). A label statistic: no image leaves the source site."""
    fg = source_ratios[:, 1:]
    held = fg > 0
    if not held.any():
        raise SfdaError("no source slice contains a structure; check the source labels and subjects")
    overall = np.array([fg[held[:, k], k].mean() if held[:, k].any() else 0.0 for k in range(fg.shape[1])])
    if source_pos is None or target_pos is None:
        return overall
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(source_pos, edges) - 1, 0, bins - 1)
    out = np.tile(overall, (len(target_pos), 1))
    for k in range(fg.shape[1]):
        filled = [b for b in range(bins) if held[which == b, k].any()]
        if filled:
            centres = [(edges[b] + edges[b + 1]) / 2 for b in filled]
            means = [fg[(which == b) & held[:, k], k].mean() for b in filled]
            out[:, k] = np.interp(target_pos, centres, means)
    return out


def position_table(source_ratios: np.ndarray, source_pos: np.ndarray, bins: int = 32) -> dict:
    """The source labels' mean class ratios per relative position along the slicing axis, and
    the share of slices holding any structure there: a JSON-able label statistic (no image)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(source_pos, edges) - 1, 0, bins - 1)
    table = {"centres": [], "means": [], "presence": []}
    for b in range(bins):
        rows = which == b
        if rows.any():
            table["centres"].append(float((edges[b] + edges[b + 1]) / 2))
            table["means"].append([float(v) for v in source_ratios[rows].mean(axis=0)])
            table["presence"].append(float((source_ratios[rows, 1:].sum(axis=1) > 0).mean()))
    if not table["means"]:
        raise SfdaError("no source slices to build a position prior from; check the source subjects")
    return table


def prior_from_table(table: dict, target_pos: np.ndarray, min_presence: float = 0.0) -> np.ndarray:
    """τe (N, K) of target slices at relative positions ``target_pos`` from a :func:`position_table`."""
    centres, means = np.asarray(table["centres"]), np.asarray(table["means"], dtype=np.float64)
    out = np.stack([np.interp(target_pos, centres, means[:, k]) for k in range(means.shape[1])], axis=1)
    out = (out / out.sum(axis=1, keepdims=True)).astype(np.float32)
    if min_presence > 0:
        out = apply_tags(out, np.interp(target_pos, centres, table["presence"]) >= min_presence)
    return out


def source_position_prior(source_ratios: np.ndarray, source_pos: np.ndarray, target_pos: np.ndarray,
                          bins: int = 32, min_presence: float = 0.0) -> np.ndarray:
    """Anatomy from source statistics: τe of a target slice is the mean source ratio at the
    same relative position along the slicing axis (e.g. no disc in the outermost sagittal
    slices). Only label statistics leave the source site, never an image.

    ``min_presence`` > 0 also tags slices as without the structure (τe = (1, 0, ...)) where
    fewer than that fraction of the source slices at the same position hold any: a soft τe of
    a few percent there would otherwise ask the adapted model to paint foreground into
    slices that have none."""
    return prior_from_table(position_table(source_ratios, source_pos, bins), target_pos, min_presence)
