"""Adapt any PyTorch segmentation model from target images alone.

>>> adapted = sfda.adapt(model, target_images, prior=(0.9, 0.1), method="adaent")

``model`` maps (N, C, H, W) float tensors to logits (N, K, H, W): an sfda
network, a MONAI network or your own. ``target_images`` is a float array
(N, C, H, W) of target slices, normalised as the model expects. No source
image is taken: only source-free methods are accepted here.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from sfda.config import MethodConfig
from sfda.data.sliceset import SliceSet
from sfda.engine.loop import FitSpec, fit
from sfda.errors import SfdaError
from sfda.methods import build_method


def _prior_array(prior, n: int, k: int) -> np.ndarray | None:
    if prior is None:
        return None
    arr = np.asarray(prior, dtype=np.float32)
    if arr.ndim == 1:
        arr = np.tile(arr, (n, 1))
    if arr.shape != (n, k):
        raise SfdaError(f"prior must be K={k} ratios or an (N={n}, K={k}) array, got shape {arr.shape}")
    if np.any(np.abs(arr.sum(axis=1) - 1) > 1e-3) or np.any(arr < 0):
        raise SfdaError("prior rows must be non-negative class fractions summing to one")
    return arr


def adapt(model: torch.nn.Module, target_images, prior=None, method: str = "adaent", *, lam: float = 1.0,
          kl: str = "paper", epochs: int = 10, lr: float = 1e-4, batch_size: int = 12, seed: int = 0,
          device: str = "cpu", out: str | None = None, progress: bool = False) -> torch.nn.Module:
    """Adapt ``model`` in place on ``target_images`` and return it (in eval mode).

    ``prior``: τe as K class ratios for every slice, or an (N, K) array per slice.
    ``out``: a folder for checkpoints and the log (a temporary one if omitted).
    """
    cfg = MethodConfig(name=method, lam=lam, kl=kl)
    m = build_method(method, cfg)
    if not m.source_free:
        raise SfdaError(f"method '{method}' needs labelled source images; sfda.adapt takes target images only "
                        "(use adaent, tent, entropy or adabn)")
    from sfda.engine.loop import check_device

    check_device(device)
    images = np.asarray(target_images, dtype=np.float32)
    data = SliceSet.from_arrays(images)
    with torch.no_grad():
        k = model(torch.from_numpy(images[:1]).to(device)).shape[1]
    tau = _prior_array(prior, len(images), k)
    if m.needs_prior and tau is None:
        raise SfdaError(f"method '{method}' needs a prior: pass prior=(ratios...) or an (N, K) array")
    meta = {"net": type(model).__name__, "stage": f"adapt:{method}", "external": True}
    with tempfile.TemporaryDirectory() as tmp:
        spec = FitSpec(data=data, out=Path(out or tmp), meta=meta, epochs=epochs, batch_size=batch_size, lr=lr,
                       seed=seed, device=device, prior=tau, progress=progress, keep_epochs=False)
        fit(model, m, spec)
    for p in model.parameters():
        p.requires_grad_(True)
    return model.eval()
