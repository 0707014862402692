"""The one training loop, used by every stage (source, oracle, prior, adaptation).

Repeatability: each epoch reseeds torch and draws its own permutation from
``(seed, epoch)``, so a run resumed from the checkpoint of epoch e replays
epochs e+1.. exactly as an uninterrupted run does (CPU, same seed).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from sfda.config import OptimConfig
from sfda.config.card import ModelCard
from sfda.data.sliceset import SliceSet
from sfda.engine import distributed as ddp
from sfda.engine.batches import Tensors, epoch_batches
from sfda.engine.checkpoint import save_checkpoint
from sfda.engine.collapse import flag_collapse
from sfda.engine.distributed import check_device
from sfda.engine.optim import build_optimizer, build_scheduler
from sfda.engine.selection import SELECTED, Selector, check_selection
from sfda.engine.state import restore, save_epoch
from sfda.engine.validate import evaluate_epoch, fraction_row
from sfda.errors import SfdaError
from sfda.io.atomic import write_json
from sfda.methods.base import Batch, Method
from sfda.progress import bar, epoch_line, say

__all__ = ["FitSpec", "check_device", "fit"]


@dataclass
class FitSpec:
    """Everything the loop needs besides the model and the method; ``card`` describes the model in
    every checkpoint the loop writes (the epoch and selection added); ``optim`` is the stage's own
    :class:`OptimConfig`, ``transform`` a batch transform from :mod:`sfda.data.transforms`
    (images, labels, mask, generator) -> (images, labels, mask); ``oversample_fg`` the share of
    each batch drawn from samples holding a labelled structure (:func:`sfda.engine.batches.epoch_batches`)."""

    data: SliceSet
    out: Path
    card: ModelCard
    optim: OptimConfig = field(default_factory=OptimConfig)
    seed: int = 0
    device: str = "cpu"
    resume: bool = False
    transform: Callable[..., tuple] | None = None
    oversample_fg: float = 0.0
    val: SliceSet | None = None
    source: SliceSet | None = None
    prior: np.ndarray | None = None
    # The prior of the validation slices: enables the label-free held-out scores (sfda.engine.selection).
    val_prior: np.ndarray | None = None
    select: str = "last"
    regression: bool = False
    progress: bool = True
    on_epoch: Callable[[dict], None] | None = None
    keep_epochs: bool = False  # also write epoch_NNN.pt each epoch
    # The trained model's card, worked out from the model itself before its last epoch's files are
    # written (train-source: its own flip agreement): (model, card) -> card.
    final_card: Callable[[torch.nn.Module, ModelCard], ModelCard] | None = None
    # What is done to the model before its first step on a fresh start, not on a resumed run (adapt:
    # adabn_init's re-estimate of the batch-norm statistics): (model, device=...) -> None.
    start: Callable[..., None] | None = None
    # What becomes of the selected model before selected.pt is written (adapt: the trust check and
    # its fall-back): (model, card) -> (the model to use, its card, what done.json adds).
    vet: Callable[[torch.nn.Module, ModelCard], tuple[torch.nn.Module, ModelCard, dict]] | None = None


def fit(model: torch.nn.Module, method: Method, spec: FitSpec) -> dict:
    """Train ``model`` with ``method``; writes checkpoints and ``log.jsonl`` under ``spec.out``, each
    file once with its final card. Returns the log and, in the process that writes (rank 0),
    ``selected``: the model to use and its card, as ``selected.pt`` holds them."""
    check_selection(spec.select, spec.val_prior)
    device = check_device(ddp.device_for(spec.device))
    dist = ddp.context(device)
    _check_distributed(method, spec, dist)
    spec.progress = spec.progress and dist.main
    spec.out.mkdir(parents=True, exist_ok=True)
    model.to(device)
    selector = Selector(spec.select, spec.card, spec.out)
    if not method.trains:
        return _fit_without_gradients(model, method, spec, selector, device, dist)
    params = method.parameters(model)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = build_optimizer(params, spec.optim)
    sched = build_scheduler(opt, spec.optim)
    start, log, card = 0, [], None  # card: the model's, once its last epoch is trained
    if spec.resume and (spec.out / "last.pt").exists():
        start, log = restore(spec.out / "last.pt", model, opt, sched, method, selector)
    elif spec.start is not None:
        spec.start(model, device=device)
    net = ddp.wrap(model, dist, device)  # the replica that trains; ``model`` is the weights it shares
    if spec.optim.compile:
        net = torch.compile(net)  # same parameters and buffers; checkpoints still save ``model``
    data = Tensors(spec.data, spec.prior, device)
    source = Tensors(spec.source, None, device) if spec.source is not None else None
    for epoch in range(start, spec.optim.epochs):
        row = _run_epoch(net, method, spec, data, source, opt, epoch, device, dist)
        sched.step()
        log.append(row)
        if dist.main:
            card = _final_card(model, spec) if epoch + 1 == spec.optim.epochs else spec.card
            _end_epoch(model, method, spec, card, selector, log, device,
                       {"optimizer": opt.state_dict(), "scheduler": sched.state_dict()})
        ddp.barrier(dist)
    done = {"log": log}
    if dist.main:
        if card is None:  # resumed with no epoch left to train: the restored model's card
            card = _final_card(model, spec)
        done["selected"] = _finish(model, spec, selector, log, card)
    ddp.barrier(dist)
    return done


def _end_epoch(model, method, spec: FitSpec, card: ModelCard, selector: Selector, log: list[dict], device,
               opt_state: dict) -> None:
    """Evaluate, flag collapse, update the selection and write the epoch's files (rank 0), whose
    model ``card`` describes."""
    row = log[-1]
    row.update(evaluate_epoch(model, method, spec.val, spec.val_prior, spec.regression, device))
    flag_collapse(row, method, list(spec.card.labels) or None)
    selector.update(model, log)
    save_epoch(model, spec.out, card, log, spec.keep_epochs,
               {**opt_state, "method": method.state_dict(), "selector": selector.state_dict()})
    if spec.progress:
        say(epoch_line(row, spec.optim.epochs))
    if spec.on_epoch:
        spec.on_epoch(row)


def _final_card(model, spec: FitSpec) -> ModelCard:
    return spec.final_card(model, spec.card) if spec.final_card else spec.card


def _finish(model, spec: FitSpec, selector: Selector, log: list[dict], card: ModelCard) -> tuple | None:
    """Write ``selected.pt`` (once: the selection, vetted) and ``done.json``; return (model, card) of
    ``selected.pt``."""
    selection, chosen = selector.finish(model, log, card)
    added = {}
    if chosen is not None and spec.vet:
        model, card, added = spec.vet(*chosen)
        chosen = (model, card)
    if chosen is not None:
        save_checkpoint(spec.out / SELECTED, *chosen)
    write_json(spec.out / "done.json", {"epochs": len(log), "final": log[-1] if log else {}, "selection": selection,
                                        "model": SELECTED, **added})
    return chosen


def _check_distributed(method, spec: FitSpec, dist) -> None:
    if not dist.active:
        return
    if not method.distributed:
        raise SfdaError(f"method '{method.name}' cannot run under torchrun (its extra network is not "
                        "synchronised across processes); run it in one process")
    ddp.check_batch(spec.optim.batch_size, dist)


def _fit_without_gradients(model, method, spec: FitSpec, selector: Selector, device, dist) -> dict:
    """A method without gradient steps (AdaBN): its one pass over the target; no optimiser.
    Every rank computes the same result; rank 0 writes it."""
    method.fit_once(model, spec.data.images, batch_size=spec.optim.batch_size, device=str(device), seed=spec.seed)
    if not dist.main:
        ddp.barrier(dist)
        return {"log": []}
    log = [{"epoch": 1, "loss": None, **fraction_row(model, spec.data, spec.prior, device)}]
    card = _final_card(model, spec)
    _end_epoch(model, method, spec, card, selector, log, device, {})
    done = {"log": log, "selected": _finish(model, spec, selector, log, card)}
    ddp.barrier(dist)
    return done


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919) % (2**31)


def _run_epoch(model, method, spec: FitSpec, data: Tensors, source, opt, epoch: int, device,
               dist: ddp.Dist = ddp.Dist()) -> dict:
    torch.manual_seed(_epoch_seed(spec.seed, epoch))
    gen = torch.Generator().manual_seed(_epoch_seed(spec.seed, epoch))
    o, n = spec.optim, len(spec.data)
    perm = torch.randperm(n, generator=gen)
    steps = max(n // o.batch_size, 1)
    if o.max_steps_per_epoch:
        steps = min(steps, o.max_steps_per_epoch)
    method.train_mode(model)
    sums: dict[str, float] = {}
    fg_pred, fg_prior, per_class, t0 = 0.0, 0.0, {}, time.perf_counter()
    fg = data.foreground() if spec.oversample_fg > 0 else None
    batches = epoch_batches(perm, steps, o.batch_size, fg, spec.oversample_fg, gen)
    steps_bar = bar(range(steps), f"epoch {epoch + 1}/{o.epochs}", spec.progress)
    for step in steps_bar:
        batch = data.batch(ddp.shard(batches[step], dist))
        if spec.transform is not None:
            batch.images, batch.labels, batch.mask = spec.transform(batch.images, batch.labels, batch.mask, gen)
        src = source.batch(torch.randint(len(spec.source), (o.batch_size,), generator=gen)) if source else None
        # Mixed precision on CUDA only: bf16 autocast is far slower on AVX2-only CPUs.
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss, out, logs = method.step(model, batch, src)
        _check_finite(loss, spec, batch, epoch, step, dist)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        logs["loss"] = float(loss.detach())
        for k, v in logs.items():
            sums[k] = sums.get(k, 0.0) + v
        if not spec.regression:
            fg_pred += _foreground(out, batch.mask)
            if batch.prior is not None:
                fg_prior += float(batch.prior[:, 1:].sum(dim=1).mean())
            _add_class_fractions(per_class, out, batch)
        steps_bar.set_postfix(loss=f"{logs['loss']:.4f}")
    means = {k: v / steps for k, v in {**sums, **per_class}.items()}
    if not spec.regression:
        means["pred_fraction"] = fg_pred / steps
        if spec.prior is not None:
            means["prior_fraction"] = fg_prior / steps
    return {"epoch": epoch + 1, **ddp.mean_over_ranks(means, dist), "lr": opt.param_groups[0]["lr"],
            "train_s": time.perf_counter() - t0}


def _foreground(logits: torch.Tensor, mask: torch.Tensor) -> float:
    with torch.no_grad():
        pred = logits.argmax(dim=1) > 0
        return float((pred & mask).sum() / mask.sum().clamp_min(1))


def _add_class_fractions(sums: dict, logits: torch.Tensor, batch: Batch) -> None:
    """With more than one structure: each structure's predicted (and expected) fraction, so a
    structure that vanishes or floods is seen even when the total looks right."""
    k = logits.shape[1]
    if k <= 2:
        return
    with torch.no_grad():
        pred, mask = logits.argmax(dim=1), batch.mask
        pixels = mask.sum().clamp_min(1)
        for c in range(1, k):
            sums[f"class_fraction_{c}"] = sums.get(f"class_fraction_{c}", 0.0) + float(((pred == c) & mask).sum() / pixels)
            if batch.prior is not None:
                sums[f"class_prior_{c}"] = sums.get(f"class_prior_{c}", 0.0) + float(batch.prior[:, c].mean())


def _check_finite(loss, spec: FitSpec, batch: Batch, epoch: int, step: int, dist: ddp.Dist = ddp.Dist()) -> None:
    finite = loss is None or bool(torch.isfinite(loss))
    if dist.active:  # every rank stops together, not just the one that met the bad batch
        finite = ddp.mean_over_ranks({"finite": float(finite)}, dist)["finite"] == 1.0
    if not finite:
        ids = [spec.data.slice_ids[i] for i in batch.index.tolist()]
        raise SfdaError(f"non-finite loss at epoch {epoch + 1}, step {step + 1} (slices {', '.join(ids[:6])}); "
                        f"the last good checkpoint is {spec.out / 'last.pt'}: lower optim.lr or check these images")
