"""What a training run leaves on disk after each epoch, and how it resumes from it.

``last.pt`` (with the optimiser, scheduler, method and selection state, to resume),
``epoch_NNN.pt`` (only with ``keep_epochs``), ``best.pt`` (best validation score:
labels, so logged for comparison only) and ``log.jsonl`` (one line per epoch).
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from sfda.config.card import ModelCard
from sfda.engine.checkpoint import load_checkpoint, save_checkpoint
from sfda.io.atomic import write_text


def epoch_path(out: Path, epoch: int) -> Path:
    return out / f"epoch_{epoch:03d}.pt"


def save_epoch(model, out: Path, card: ModelCard, log: list[dict], keep_epochs: bool, train_state: dict) -> None:
    """Write the checkpoints of the epoch ``log[-1]`` and the log; times it in ``ckpt_s``."""
    t0 = time.perf_counter()
    epoch = log[-1]["epoch"]
    card = replace(card, training=replace(card.training, epoch=epoch))
    if keep_epochs:
        save_checkpoint(epoch_path(out, epoch), model, card)
    score = log[-1].get("val_dice", -log[-1].get("val_mae", float("nan")))
    best = [r.get("val_dice", -r.get("val_mae", float("nan"))) for r in log]
    if np.isfinite(score) and score >= np.nanmax(best):
        save_checkpoint(out / "best.pt", model, card)
    state = {"epoch": epoch, "log": json.loads(json.dumps(log)), **train_state}
    save_checkpoint(out / "last.pt", model, card, train_state=state)
    log[-1]["ckpt_s"] = time.perf_counter() - t0
    write_log(out, log)


def write_log(out: Path, log: list[dict]) -> None:
    write_text(out / "log.jsonl", "".join(json.dumps(r) + "\n" for r in log))


def restore(path: Path, model, opt, sched, method, selector) -> tuple[int, list[dict]]:
    """Load ``last.pt`` into the run's objects; returns (epochs done, log so far)."""
    ckpt = load_checkpoint(path)
    model.load_state_dict(ckpt["state_dict"])
    state = ckpt.get("train_state") or {}
    if "optimizer" in state:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
    method.load_state_dict(state.get("method", {}))
    selector.load_state_dict(state.get("selector", {}))
    return int(state.get("epoch", 0)), list(state.get("log", []))
