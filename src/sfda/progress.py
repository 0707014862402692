"""Progress for people: bars only on a terminal; in a log file or CI, one line per epoch.

A bar redraws itself with carriage returns, which a log file keeps as one
unreadable line; so bars show only when standard error is a terminal, and the
loop prints a plain line at the end of every epoch either way.
"""

from __future__ import annotations

import sys

from tqdm import tqdm


def on_terminal() -> bool:
    return sys.stderr.isatty()


def bar(iterable, desc: str, enabled: bool = True):
    """``iterable`` wrapped in a transient progress bar, drawn only when ``enabled`` and on a terminal."""
    return tqdm(iterable, desc=desc, disable=not (enabled and on_terminal()), leave=False)


def say(text: str) -> None:
    """One line to standard output that does not break a bar being drawn."""
    tqdm.write(text)


def epoch_line(row: dict, epochs: int) -> str:
    """``epoch 3/10  loss 0.1234  val_dice 0.8123  train 1.2 s`` from one row of log.jsonl."""
    parts = [f"epoch {row['epoch']}/{epochs}"]
    for key in ("loss", "val_dice", "val_mae", "holdout_objective", "pred_fraction"):
        if isinstance(row.get(key), float):
            parts.append(f"{key} {row[key]:.4f}")
    seconds = sum(row.get(k) or 0.0 for k in ("train_s", "val_s", "ckpt_s"))
    parts.append(f"{seconds:.1f} s")
    if row.get("collapse"):
        parts.append("COLLAPSE?")
    return "  ".join(parts)
