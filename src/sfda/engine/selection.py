"""Label-free scores of an adapted model on held-out target images, and epoch selection.

Adaptation runs on some target subjects; a few others are held out. Their
images (never their labels) are scored each epoch in evaluation mode:

- ``holdout_entropy``: mean pixel entropy;
- ``holdout_kl``: mean per-image KL against the prior of those slices (in ``method.kl``'s direction);
- ``holdout_objective``: entropy + λ·KL: the paper's per-image objective, not necessarily the
  adaptation loss (that may pool the KL over a batch, ``kl_scope=batch``, or weight the entropy
  per class);
- ``holdout_fraction`` / ``holdout_prior_fraction``: predicted vs expected foreground.

The held-out subjects are the stage's validation subjects (``val_*`` in the log
are their labels' scores, logged only; ``holdout_*`` their images' label-free
scores). The selected epoch minimises one of them; no target label is read.
``average`` instead keeps the uniform average of every epoch's weights
(batch-norm running statistics included), accumulated as the run goes: on the
crops it beat the last epoch on average, where every held-out score merely
followed the falling loss.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from sfda.config.card import ModelCard
from sfda.config.stages import SELECT_CRITERIA
from sfda.losses import kl_prior, pixel_entropy
from sfda.engine.checkpoint import load_checkpoint
from sfda.errors import SfdaError

SELECTED = "selected.pt"  # the model a run reports (done.json's "model")


class HoldoutStats:
    """Accumulates the held-out scores batch by batch, so they can share a forward pass."""

    def __init__(self, valid: np.ndarray, prior: np.ndarray, lam: float, direction: str = "forward") -> None:
        self.valid, self.prior, self.lam, self.direction = valid, prior, lam, direction
        self.ent, self.kl, self.fg, self.pixels, self.images = 0.0, 0.0, 0.0, 0.0, 0

    @torch.inference_mode()
    def add(self, rows: slice, logits: torch.Tensor) -> None:
        """Score the slices ``rows`` of the held-out set, whose logits are ``logits``."""
        mask = torch.from_numpy(np.asarray(self.valid[rows])).to(logits.device)
        m = mask.float()
        self.ent += float((pixel_entropy(logits) * m).sum())
        self.fg += float(((logits.argmax(dim=1) > 0) & mask).sum())
        self.pixels += float(m.sum())
        tau = torch.from_numpy(np.asarray(self.prior[rows], dtype=np.float32)).to(logits.device)
        self.kl += float(kl_prior(logits, tau, mask, self.direction)) * len(logits)
        self.images += len(logits)

    def result(self) -> dict:
        ent, kl = self.ent / max(self.pixels, 1.0), self.kl / max(self.images, 1)
        return {"holdout_entropy": ent, "holdout_kl": kl, "holdout_objective": ent + self.lam * kl,
                "holdout_fraction": self.fg / max(self.pixels, 1.0),
                "holdout_prior_fraction": float(np.asarray(self.prior)[:, 1:].sum(axis=1).mean())}


class WeightAverage:
    """A running uniform average of state dicts: float tensors summed in float64, integer
    buffers (BN's batch counters) taken from the last. Its own state resumes with the run."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.last: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, state: dict[str, torch.Tensor]) -> None:
        for k, v in state.items():
            v = v.detach().cpu()
            if v.is_floating_point():
                self.sums[k] = self.sums[k] + v.double() if k in self.sums else v.double().clone()
            self.last[k] = v.clone()
        self.count += 1

    def result(self) -> dict[str, torch.Tensor]:
        return {k: (self.sums[k] / self.count).to(v.dtype) if k in self.sums else v for k, v in self.last.items()}

    def state_dict(self) -> dict:
        return {"sums": self.sums, "last": self.last, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.sums, self.last, self.count = dict(state["sums"]), dict(state["last"]), int(state["count"])


def model_to_use(run: Path) -> Path:
    """The model a run reports: ``run/selected.pt`` if it exists, else ``run/last.pt``."""
    return run / SELECTED if (run / SELECTED).exists() else run / "last.pt"


def check_selection(select: str, val_prior) -> None:
    """Refuse an unknown criterion, or a held-out one without a prior for the held-out slices."""
    if select not in SELECT_CRITERIA:
        raise SfdaError(f"unknown select '{select}'; choose one of: {', '.join(SELECT_CRITERIA)}")
    if select not in ("last", "average") and val_prior is None:
        raise SfdaError(f"select={select} scores held-out target images: give --val-subjects and a prior "
                        "table that covers their slices (`sfda prior` with --subjects listing both), "
                        "or select=last")


class Selector:
    """Chooses the model ``selected.pt`` holds (the criteria: sfda.config.stages.SELECT_CRITERIA), in
    memory: the loop writes it once, when the run ends. ``card`` describes every epoch's model before
    the last (the loop's ``FitSpec.card``). A chosen epoch that may not stay the last is kept as a
    copy of its weights, which resumes with the run, as the running average does."""

    def __init__(self, criterion: str, card: ModelCard, out: Path) -> None:
        self.criterion, self.card, self.out = criterion, card, out
        self.average = WeightAverage() if criterion == "average" else None
        self.kept: dict[str, torch.Tensor] | None = None  # the best epoch's weights so far (holdout_*)

    def update(self, model: torch.nn.Module, log: list[dict]) -> None:
        """After each epoch (``log[-1]``)."""
        if self.average is not None:
            self.average.add(model.state_dict())
        elif self.criterion != "last" and select_epoch(log, self.criterion) == log[-1]["epoch"]:
            self.kept = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}

    def finish(self, model: torch.nn.Module, log: list[dict], card: ModelCard) -> tuple[dict, tuple | None]:
        """The choice for ``done.json`` and the model ``selected.pt`` is to hold with its card (None
        when no epoch ran); ``model`` is the trained one and ``card`` its own (the last epoch's)."""
        if self.criterion == "average" and len(log) > 1:
            choice = {"criterion": "average", "epoch": f"mean of 1-{len(log)}"}
        else:
            epoch = select_epoch(log, self.criterion)
            choice = {"criterion": self.criterion,
                      "epoch": epoch if epoch is not None else (log[-1]["epoch"] if log else None)}
        if self.average is not None:
            if not self.average.count:
                return choice, None
            chosen = replace(self.card.selection, selected_by="average", epochs_averaged=self.average.count)
            return choice, (self._with(model, self.average.result()),
                            replace(self.card, training=replace(self.card.training, epoch=len(log)), selection=chosen))
        if not log:
            return choice, None
        if select_epoch(log, self.criterion) not in (log[-1]["epoch"], None):  # an earlier epoch: its weights
            model, card = self._with(model, self.kept), self.card
        return choice, (model, replace(card, selection=replace(card.selection, selected_by=self.criterion)))

    @staticmethod
    def _with(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> torch.nn.Module:
        other = copy.deepcopy(model).cpu()
        other.load_state_dict(state)
        return other

    def state_dict(self) -> dict:
        if self.average is not None:
            return self.average.state_dict()
        return {"kept": self.kept} if self.criterion != "last" else {}

    def load_state_dict(self, state: dict) -> None:
        if self.average is not None and state:
            self.average.load_state_dict(state)
        elif self.average is None and self.criterion != "last":
            # a run begun by an older sfda wrote its chosen epoch to selected.pt instead
            self.kept = state["kept"] if "kept" in state else load_checkpoint(self.out / SELECTED)["state_dict"]


def select_epoch(log: list[dict], criterion: str) -> int | None:
    """1-based epoch minimising ``criterion`` over ``log`` (the last on ties); None if never logged
    (and for ``average``, which keeps no single epoch)."""
    if criterion == "last":
        return int(log[-1]["epoch"]) if log else None
    scored = [(r[criterion], r["epoch"]) for r in log if r.get(criterion) is not None]
    if not scored:
        return None
    best = min(v for v, _ in scored)
    return int(max(e for v, e in scored if v == best))
