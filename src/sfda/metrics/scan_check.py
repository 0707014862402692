"""The safety net of per-scan adaptation (``sfda predict --adapt``): label-free reasons to keep
the source model's mask of a scan instead of the adapted model's.

Both models segment the same slices; the adapted mask is distrusted when a structure
- **vanishes**: the source model found it (at least ``MIN_PIXELS``) and the adapted model keeps
  under ``VANISH`` (a quarter) of that, and under ``VANISH`` of what the prior expects (when there is one);
- **floods**: the adapted model predicts more than the source model, and over ``FLOOD`` (four) times
  what the prior expects (without a prior: over ``FLOOD`` times the source's amount);
- **moves**: both models find it, but their masks overlap by a Dice under ``AGREE_MIN`` (0.2):
  adaptation refines a mask, it should not put it elsewhere. This gives up the scans where a badly
  wrong source model would be corrected wholesale (``on_distrust: keep`` keeps those);
- **leaves the atlas**: under ``THRESHOLDS["atlas_share"]`` of it lies where the source labels put
  the structure, while the source model's mask met that bar (:mod:`sfda.metrics.trust`).
Entropy is reported, not judged: a sharper model is what the losses ask for.
"""

from __future__ import annotations

import numpy as np

from sfda.metrics.overlap import dice
from sfda.metrics.trust import FLOOD, MIN_PIXELS, THRESHOLDS, VANISH, as_planes, atlas_share, class_fractions

#: Dice between the source model's and the adapted mask below this: the structure moved. Set on
#: the crops' development split (opp -> inn, A1-D1): good per-scan runs stayed at or above 0.22 on
#: every scan, a drifting continual run (Dice 0.11-0.34 per subject) went down to 0.03.
AGREE_MIN = 0.2


def _agreement(a: np.ndarray, b: np.ndarray, valid: np.ndarray, k: int) -> list[float | None]:
    out = []
    for c in range(1, k):
        x, y = (a == c) & valid, (b == c) & valid
        out.append(dice(x, y) if (x.any() or y.any()) else None)  # both empty: nothing to compare
    return out


def _mean_entropy(probs: np.ndarray, valid: np.ndarray) -> float:
    p = np.clip(probs, 1e-12, 1.0)
    return float((-(p * np.log(p)).sum(axis=1))[valid].mean())


def scan_signals(source: tuple[np.ndarray, np.ndarray], adapted: tuple[np.ndarray, np.ndarray],
                 valid: np.ndarray, prior: np.ndarray | None, atlas: dict | None = None,
                 axis: int | None = None) -> dict:
    """``source`` / ``adapted``: (labels (N, H, W), probabilities (N, K, H, W)) on the scan's slices,
    or on its volume ((1, D, H, W), (1, K, D, H, W)) with ``axis`` the slicing axis the atlas reads."""
    k = source[1].shape[1]
    out = {"pixels": int(valid.sum()),
           "fractions": {"source": class_fractions(source[0], valid, k),
                         "adapted": class_fractions(adapted[0], valid, k),
                         "prior": None if prior is None else [float(v) for v in np.asarray(prior)[:, 1:].mean(0)]},
           "agreement": _agreement(source[0], adapted[0], valid, k),
           "entropy": {"source": _mean_entropy(source[1], valid), "adapted": _mean_entropy(adapted[1], valid)}}
    if atlas:
        planes = (lambda a: a) if axis is None else (lambda a: as_planes(a, axis))
        out["atlas_share"] = {"source": atlas_share(planes(source[0]), planes(valid), atlas),
                              "adapted": atlas_share(planes(adapted[0]), planes(valid), atlas)}
    return out


def scan_flags(signals: dict, label_names: list[str]) -> list[tuple[int, str]]:
    """(class index, line) per structure the safety net distrusts in the adapted mask (empty: trust it)."""
    f, n, flags = signals["fractions"], signals["pixels"], []
    prior = f["prior"] or [None] * len(f["source"])
    for k, (name, s, a, p) in enumerate(zip(label_names[1:], f["source"], f["adapted"], prior), start=1):
        if s * n >= MIN_PIXELS and a < VANISH * s and (p is None or a < VANISH * p):
            flags.append((k, f"{name} vanishes: the source model found {s:.4f} of the scan, the adapted one {a:.4f}"))
        elif a * n >= MIN_PIXELS and a > s and a > FLOOD * (s if p is None else p):
            flags.append((k, f"{name} floods the scan: {a:.4f} against the source's {s:.4f}"
                             + ("" if p is None else f" and the prior's {p:.4f}")))
    for k, (name, s, a, agree) in enumerate(zip(label_names[1:], f["source"], f["adapted"],
                                                signals.get("agreement", [])), start=1):
        if agree is not None and agree < AGREE_MIN and min(s, a) * n >= MIN_PIXELS:
            flags.append((k, f"{name} moved: the adapted mask overlaps the source model's by Dice {agree:.2f} "
                             f"(< {AGREE_MIN})"))
    shares, limit = signals.get("atlas_share") or {}, THRESHOLDS["atlas_share"]
    for k, (name, s, a) in enumerate(zip(label_names[1:], shares.get("source", []), shares.get("adapted", [])),
                                     start=1):
        if a is not None and a < limit and (s is None or s >= limit):
            flags.append((k, f"{name} leaves the source atlas: {a:.2f} of it lies where the source labels put it "
                             f"(the source model's mask: {'-' if s is None else f'{s:.2f}'})"))
    return flags
