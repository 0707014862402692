"""Label-free warnings that an adaptation collapsed: one class everywhere, or a predicted
foreground far from the prior's, on the adaptation batches or the held-out images."""

from __future__ import annotations

from sfda.metrics.trust import FLOOD, VANISH
from sfda.progress import say

#: a predicted foreground fraction under this (or over one minus it): the model predicts almost only one
#: class; a prior's fraction under it is no structure to hold a prediction against
COLLAPSED = 1e-4


def collapse_reason(row: dict, names: list[str] | None = None) -> str | None:
    """Why the epoch ``row`` looks collapsed, or None. With several structures, each one's
    predicted fraction is also held against its prior's (``class_fraction_k`` / ``class_prior_k``)."""
    for where, pred, prior in (("", row.get("pred_fraction"), row.get("prior_fraction")),
                               (" on held-out images", row.get("holdout_fraction"), row.get("holdout_prior_fraction"))):
        if pred is None:
            continue
        if pred < COLLAPSED or pred > 1 - COLLAPSED:
            return f"predicts almost only one class{where} (foreground fraction {pred:.5f})"
        if prior and (pred < prior * VANISH or pred > prior * FLOOD):
            return f"predicted foreground fraction{where} {pred:.4f} is far from the prior's {prior:.4f}"
    return _class_reason(row, names)


def _class_reason(row: dict, names: list[str] | None) -> str | None:
    """A structure that vanishes (under ``VANISH`` of its prior) or floods (over ``FLOOD`` times it)."""
    k = 1
    while f"class_fraction_{k}" in row:
        pred, prior = row[f"class_fraction_{k}"], row.get(f"class_prior_{k}")
        name = names[k] if names and k < len(names) else f"class {k}"
        if prior and prior > COLLAPSED and pred < prior * VANISH:
            return f"{name} vanishes: predicted fraction {pred:.4f} against the prior's {prior:.4f}"
        if prior and pred > prior * FLOOD:
            return f"{name} floods the image: predicted fraction {pred:.4f} against the prior's {prior:.4f}"
        k += 1
    return None


def flag_collapse(row: dict, method, names: list[str] | None = None) -> None:
    """Set ``row["collapse"]`` and print a warning when adaptation looks collapsed."""
    if method.needs_labels:  # supervised training cannot collapse unnoticed
        return
    why = collapse_reason(row, names)
    if why:
        row["collapse"] = why
        say(f"warning: {method.name} epoch {row['epoch']}: possible collapse: {why}")
