"""The one training loop, used by every stage (source, oracle, prior, adaptation).

Repeatability: each epoch reseeds torch and draws its own permutation from
``(seed, epoch)``, so a run resumed from the checkpoint of epoch e replays
epochs e+1.. exactly as an uninterrupted run does (CPU, same seed).
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from sfda.data.sliceset import SliceSet
from sfda.engine import distributed as ddp
from sfda.engine.checkpoint import load_checkpoint, save_checkpoint
from sfda.engine.infer import predict_slices, subject_dice
from sfda.engine.selection import HoldoutStats, average_weights, select_epoch
from sfda.errors import SfdaError
from sfda.io.atomic import write_json, write_text
from sfda.methods.base import Batch, Method
from sfda.nets.batched import iter_outputs


@dataclass
class FitSpec:
    """Everything the loop needs besides the model and the method."""

    data: SliceSet
    out: Path
    meta: dict
    epochs: int = 10
    batch_size: int = 12
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "none"
    max_steps: int = 0
    seed: int = 0
    device: str = "cpu"
    resume: bool = False
    augment: bool = False
    invert: float = 0.0
    remap: float = 0.0
    val: SliceSet | None = None
    source: SliceSet | None = None
    prior: np.ndarray | None = None
    # The prior of the validation slices: enables the label-free held-out scores (sfda.engine.selection).
    val_prior: np.ndarray | None = None
    select: str = "last"
    compile: bool = False
    regression: bool = False
    progress: bool = True
    on_epoch: Callable[[dict], None] | None = None
    keep_epochs: bool = True
    extra_log: dict = field(default_factory=dict)


def check_device(device: str) -> torch.device:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SfdaError(f"--device {device} was asked for but no CUDA GPU is available; use --device cpu")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise SfdaError(f"unknown device '{device}'; use cpu or cuda")
    return torch.device(device)


def _optimizer(params, spec: FitSpec):
    if spec.optimizer == "adam":
        return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)
    if spec.optimizer == "sgd":
        return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    raise SfdaError(f"unknown optimizer '{spec.optimizer}'; choose adam or sgd")


def _scheduler(opt, spec: FitSpec):
    if spec.schedule == "none":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0)
    if spec.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(spec.epochs, 1))
    if spec.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=max(spec.epochs // 3, 1), gamma=0.1)
    raise SfdaError(f"unknown schedule '{spec.schedule}'; choose none, cosine or step")


class Tensors:
    """A SliceSet's arrays as torch tensors, indexed per batch (no per-sample Python)."""

    def __init__(self, ss: SliceSet, prior: np.ndarray | None, device: torch.device):
        self.images = torch.from_numpy(np.ascontiguousarray(ss.images))
        self.labels = None if ss.labels is None else torch.from_numpy(np.ascontiguousarray(ss.labels))
        self.mask = torch.from_numpy(ss.valid_mask())
        self.prior = None if prior is None else torch.from_numpy(np.asarray(prior, dtype=np.float32))
        self.device = device

    def batch(self, idx: torch.Tensor) -> Batch:
        d = self.device
        return Batch(images=self.images[idx].to(d), mask=self.mask[idx].to(d), index=idx,
                     labels=None if self.labels is None else self.labels[idx].to(d),
                     prior=None if self.prior is None else self.prior[idx].to(d))


def augment_intensity(x: torch.Tensor, gen: torch.Generator, invert: float = 0.0, remap: float = 0.0) -> torch.Tensor:
    """Random per-image contrast, brightness and gamma in normalised space (source side only).

    Two stronger, optional changes make the network recognise the structure by its shape
    rather than its contrast, so a model shared with another site survives a change of MRI
    contrast (a source-side change any user can make before sharing the model):
    ``remap``, the probability of passing an image through a random piecewise-linear intensity
    curve (5 knots, not necessarily monotone), and ``invert``, the probability of mirroring
    its intensities (dark <-> bright).
    """
    n = x.shape[0]
    scale = 0.7 + 0.6 * torch.rand(n, 1, 1, 1, generator=gen)
    shift = 0.4 * (torch.rand(n, 1, 1, 1, generator=gen) - 0.5)
    gamma = torch.exp(0.6 * (torch.rand(n, 1, 1, 1, generator=gen) - 0.5))
    flip = torch.rand(n, 1, 1, 1, generator=gen) < invert
    curve = torch.rand(n, 1, 1, 1, generator=gen) < remap
    knots = torch.rand(n, 5, generator=gen)
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    hi = x.amax(dim=(1, 2, 3), keepdim=True)
    unit = ((x - lo) / (hi - lo).clamp_min(1e-6)) ** gamma.to(x.device)
    if remap > 0:
        unit = torch.where(curve.to(x.device), _piecewise(unit, knots.to(x.device)), unit)
    unit = torch.where(flip.to(x.device), 1 - unit, unit)
    x = unit * (hi - lo) + lo
    return x * scale.to(x.device) + shift.to(x.device)


def _piecewise(unit: torch.Tensor, knots: torch.Tensor) -> torch.Tensor:
    """Map [0, 1] intensities (N, C, H, W) through per-image curves through ``knots`` (N, K)
    placed at evenly spaced inputs."""
    k = knots.shape[1]
    pos = unit.clamp(0, 1) * (k - 1)
    left = pos.floor().clamp(max=k - 2).long()
    frac = pos - left
    flat = left.flatten(1)
    y0 = knots.gather(1, flat).view_as(unit)
    y1 = knots.gather(1, flat + 1).view_as(unit)
    return y0 + (y1 - y0) * frac


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919) % (2**31)


def fit(model: torch.nn.Module, method: Method, spec: FitSpec) -> dict:
    """Train ``model`` with ``method``; writes checkpoints and ``log.jsonl`` under ``spec.out``."""
    device = check_device(ddp.device_for(spec.device))
    dist = ddp.context(device)
    _check_distributed(method, spec, dist)
    spec.progress = spec.progress and dist.main
    spec.out.mkdir(parents=True, exist_ok=True)
    model.to(device)
    if not method.trains:
        return _fit_without_gradients(model, method, spec, device, dist)
    params = method.parameters(model)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = _optimizer(params, spec)
    sched = _scheduler(opt, spec)
    start, log = 0, []
    if spec.resume and (spec.out / "last.pt").exists():
        start, log = _restore(spec.out / "last.pt", model, opt, sched, method)
    net = ddp.wrap(model, dist, device)  # the replica that trains; ``model`` is the weights it shares
    if spec.compile:
        net = torch.compile(net)  # same parameters and buffers; checkpoints still save ``model``
    data = Tensors(spec.data, spec.prior, device)
    source = Tensors(spec.source, None, device) if spec.source is not None else None
    for epoch in range(start, spec.epochs):
        row = _run_epoch(net, method, spec, data, source, opt, epoch, device, dist)
        sched.step()
        if dist.main:
            row.update(_evaluate(model, method, spec, device))
            _flag_collapse(row, method)
        log.append(row)
        if dist.main:
            _save_epoch(model, opt, sched, method, spec, epoch, log)
            if spec.on_epoch:
                spec.on_epoch(row)
        ddp.barrier(dist)
    if dist.main:
        if spec.select == "average":
            _save_average(model, spec)
        write_json(spec.out / "done.json", {"epochs": spec.epochs, "final": log[-1] if log else {},
                                            "selection": _selection(log, spec)})
    ddp.barrier(dist)
    return {"log": log}


def _check_distributed(method, spec: FitSpec, dist) -> None:
    if not dist.active:
        return
    if not method.distributed:
        raise SfdaError(f"method '{method.name}' cannot run under torchrun (its extra network is not "
                        "synchronised across processes); run it in one process")
    ddp.check_batch(spec.batch_size, dist)


def _fit_without_gradients(model, method, spec: FitSpec, device, dist) -> dict:
    """AdaBN: one pass over the target re-estimates the BN statistics; no optimiser.
    Every rank computes the same statistics; rank 0 writes them."""
    from sfda.methods.adabn import reestimate_bn

    reestimate_bn(model, spec.data.images, batch_size=spec.batch_size, device=str(device))
    if not dist.main:
        ddp.barrier(dist)
        return {"log": []}
    row = {"epoch": 1, "loss": None}
    row.update(_evaluate(model, method, spec, device))
    row.update(_fraction_row(model, spec, device))
    _flag_collapse(row, method)
    _save_epoch(model, None, None, method, spec, 0, [row])
    write_json(spec.out / "done.json", {"epochs": 1, "final": row, "selection": _selection([row], spec)})
    ddp.barrier(dist)
    return {"log": [row]}


@torch.no_grad()
def _fraction_row(model, spec: FitSpec, device) -> dict:
    pred, _ = predict_slices(model, spec.data.images, device=str(device))
    valid = spec.data.valid_mask()
    out = {"pred_fraction": float(((pred > 0) & valid).sum() / valid.sum())}
    if spec.prior is not None:
        out["prior_fraction"] = float(np.asarray(spec.prior)[:, 1:].sum(axis=1).mean())
    return out


def _run_epoch(model, method, spec: FitSpec, data: Tensors, source, opt, epoch: int, device,
               dist: ddp.Dist = ddp.Dist()) -> dict:
    torch.manual_seed(_epoch_seed(spec.seed, epoch))
    gen = torch.Generator().manual_seed(_epoch_seed(spec.seed, epoch))
    n = len(spec.data)
    perm = torch.randperm(n, generator=gen)
    steps = max(n // spec.batch_size, 1)
    if spec.max_steps:
        steps = min(steps, spec.max_steps)
    method.train_mode(model)
    sums: dict[str, float] = {}
    fg_pred, fg_prior, t0 = 0.0, 0.0, time.perf_counter()
    bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{spec.epochs}", disable=not spec.progress, leave=False)
    for step in bar:
        idx = ddp.shard(perm[step * spec.batch_size:(step + 1) * spec.batch_size], dist)
        batch = data.batch(idx)
        if spec.augment:
            batch.images = augment_intensity(batch.images, gen, spec.invert, spec.remap)
        src = None
        if source is not None:
            src_idx = torch.randint(len(spec.source), (spec.batch_size,), generator=gen)
            src = source.batch(src_idx)
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
        bar.set_postfix(loss=f"{logs['loss']:.4f}")
    means = {k: v / steps for k, v in sums.items()}
    if not spec.regression:
        means["pred_fraction"] = fg_pred / steps
        if spec.prior is not None:
            means["prior_fraction"] = fg_prior / steps
    return {"epoch": epoch + 1, **ddp.mean_over_ranks(means, dist), "lr": opt.param_groups[0]["lr"],
            "train_s": time.perf_counter() - t0}


def _flag_collapse(row: dict, method: Method) -> None:
    """Warn when adaptation drives the prediction to (almost) one class or far from the prior,
    on the adaptation batches (``pred_fraction``) or on the held-out images (``holdout_fraction``)."""
    if method.needs_labels:  # supervised training cannot collapse unnoticed
        return
    why = None
    for where, pred, prior in (("", row.get("pred_fraction"), row.get("prior_fraction")),
                               (" on held-out images", row.get("holdout_fraction"), row.get("holdout_prior_fraction"))):
        if pred is None:
            continue
        if pred < 1e-4 or pred > 1 - 1e-4:
            why = f"predicts almost only one class{where} (foreground fraction {pred:.5f})"
        elif prior and (pred < prior / 4 or pred > prior * 4):
            why = f"predicted foreground fraction{where} {pred:.4f} is far from the prior's {prior:.4f}"
        if why:
            break
    if why:
        row["collapse"] = why
        tqdm.write(f"warning: {method.name} epoch {row['epoch']}: possible collapse: {why}")


def _foreground(logits: torch.Tensor, mask: torch.Tensor) -> float:
    with torch.no_grad():
        pred = logits.argmax(dim=1) > 0
        return float((pred & mask).sum() / mask.sum().clamp_min(1))


def _check_finite(loss, spec: FitSpec, batch: Batch, epoch: int, step: int, dist: ddp.Dist = ddp.Dist()) -> None:
    finite = loss is None or bool(torch.isfinite(loss))
    if dist.active:  # every rank stops together, not just the one that met the bad batch
        finite = ddp.mean_over_ranks({"finite": float(finite)}, dist)["finite"] == 1.0
    if not finite:
        ids = [spec.data.slice_ids[i] for i in batch.index.tolist()]
        raise SfdaError(f"non-finite loss at epoch {epoch + 1}, step {step + 1} (slices {', '.join(ids[:6])}); "
                        f"the last good checkpoint is {spec.out / 'last.pt'}: lower optim.lr or check these images")


def _evaluate(model, method, spec: FitSpec, device) -> dict:
    """The end-of-epoch evaluation on ``spec.val``, one forward pass for both of its parts: the
    3D Dice per subject (when it has labels) and, when adapting, the label-free held-out scores.
    ``val_s`` times the whole of it."""
    if spec.val is None:
        return {}
    t0 = time.perf_counter()
    if spec.regression:
        row = _validate_regressor(model, spec, device)
    else:
        row = _validate_segmenter(model, method, spec, device)
    if row:
        row["val_s"] = time.perf_counter() - t0
    return row


def _scored(spec: FitSpec) -> bool:
    # Slices without cases (sfda.adapt's in-memory arrays) have no subjects to score in 3D.
    return spec.val.labels is not None and bool(spec.val.cases)


def _validate_regressor(model, spec: FitSpec, device) -> dict:
    if not _scored(spec):
        return {}
    from sfda.priors.estimate import regressor_prior

    ratios = regressor_prior(model, spec.val.images, device=str(device))
    truth = spec.val.foreground_fractions()
    present = truth[:, 1:].sum(axis=1) > 0
    mae = np.abs(ratios - truth)[:, 1:].mean(axis=1)
    return {"val_mae": float(mae.mean()), "val_mae_present": float(mae[present].mean()) if present.any() else 0.0}


def _validate_segmenter(model, method, spec: FitSpec, device) -> dict:
    scored = _scored(spec)
    held_out = spec.val_prior is not None and not method.needs_labels  # adaptation only
    if not (scored or held_out):
        return {}
    cfg = method.cfg
    stats = (HoldoutStats(spec.val.valid_mask(), spec.val_prior, lam=getattr(cfg, "lam", 1.0),
                          direction=getattr(cfg, "kl", "paper")) if held_out else None)
    labels = []
    for rows, logits in iter_outputs(model, spec.val.images, device=str(device)):
        if scored:
            labels.append(logits.argmax(dim=1).to(torch.uint8).cpu().numpy())
        if stats is not None:
            stats.add(rows, logits)
    row = stats.result() if stats is not None else {}
    if scored:
        per = subject_dice(spec.val, np.concatenate(labels))
        row.update({"val_dice": float(np.mean(list(per.values()))), "val_dice_per_subject": per})
    return row


def _selection(log: list[dict], spec: FitSpec) -> dict:
    if spec.select == "average" and len(log) > 1:
        return {"criterion": "average", "epoch": f"mean of 1-{spec.epochs}"}
    epoch = select_epoch(log, spec.select)
    return {"criterion": spec.select, "epoch": epoch if epoch is not None else (log[-1]["epoch"] if log else None)}


def _save_average(model, spec: FitSpec) -> None:
    """``selected.pt`` := the average of every epoch's weights (read back from the epoch checkpoints,
    so a resumed run averages the same weights as an uninterrupted one)."""
    paths = [spec.out / f"epoch_{e:03d}.pt" for e in range(1, spec.epochs + 1)]
    missing = [p.name for p in paths if not p.exists()]
    if missing:
        raise SfdaError(f"select=average needs every epoch's checkpoint; {missing[0]} is missing in {spec.out}")
    first = load_checkpoint(paths[0])
    states = [first["state_dict"]] + [load_checkpoint(p)["state_dict"] for p in paths[1:]]
    averaged = copy.deepcopy(model).cpu()
    averaged.load_state_dict(average_weights(states))
    save_checkpoint(spec.out / "selected.pt", averaged, {**first["meta"], "epoch": spec.epochs,
                                                        "selected_by": "average", "epochs_averaged": len(paths)})


def _save_epoch(model, opt, sched, method, spec: FitSpec, epoch: int, log: list[dict]) -> None:
    t0 = time.perf_counter()
    meta = {**spec.meta, "epoch": epoch + 1}
    state = {"epoch": epoch + 1, "log": json.loads(json.dumps(log)), "method": method.state_dict()}
    if opt is not None:
        state["optimizer"] = opt.state_dict()
        state["scheduler"] = sched.state_dict()
    if spec.keep_epochs:
        save_checkpoint(spec.out / f"epoch_{epoch + 1:03d}.pt", model, meta)
    score = log[-1].get("val_dice", -log[-1].get("val_mae", float("nan")))
    best = [r.get("val_dice", -r.get("val_mae", float("nan"))) for r in log]
    if np.isfinite(score) and score >= np.nanmax(best):
        save_checkpoint(spec.out / "best.pt", model, meta)
    if spec.select != "average" and select_epoch(log, spec.select) in (epoch + 1, None):
        save_checkpoint(spec.out / "selected.pt", model, {**meta, "selected_by": spec.select})
    save_checkpoint(spec.out / "last.pt", model, meta, train_state=state)
    log[-1]["ckpt_s"] = time.perf_counter() - t0
    write_text(spec.out / "log.jsonl", "".join(json.dumps(r) + "\n" for r in log))


def _restore(path: Path, model, opt, sched, method) -> tuple[int, list[dict]]:
    ckpt = load_checkpoint(path)
    model.load_state_dict(ckpt["state_dict"])
    state = ckpt.get("train_state") or {}
    if "optimizer" in state:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
    method.load_state_dict(state.get("method", {}))
    return int(state.get("epoch", 0)), list(state.get("log", []))
