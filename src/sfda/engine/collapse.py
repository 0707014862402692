"""Label-free warnings that an adaptation collapsed: one class everywhere, or a predicted
foreground far from the prior's, on the adaptation batches or the held-out images."""

from __future__ import annotations

from sfda.progress import say


def collapse_reason(row: dict) -> str | None:
    """Why the epoch ``row`` looks collapsed, or None."""
    for where, pred, prior in (("", row.get("pred_fraction"), row.get("prior_fraction")),
                               (" on held-out images", row.get("holdout_fraction"), row.get("holdout_prior_fraction"))):
        if pred is None:
            continue
        if pred < 1e-4 or pred > 1 - 1e-4:
            return f"predicts almost only one class{where} (foreground fraction {pred:.5f})"
        if prior and (pred < prior / 4 or pred > prior * 4):
            return f"predicted foreground fraction{where} {pred:.4f} is far from the prior's {prior:.4f}"
    return None


def flag_collapse(row: dict, method) -> None:
    """Set ``row["collapse"]`` and print a warning when adaptation looks collapsed."""
    if method.needs_labels:  # supervised training cannot collapse unnoticed
        return
    why = collapse_reason(row)
    if why:
        row["collapse"] = why
        say(f"warning: {method.name} epoch {row['epoch']}: possible collapse: {why}")
