"""``sfda adapt``: adapt a source checkpoint to target slices; and :func:`adapt_model`, the same
for any PyTorch segmentation model already in memory.

>>> adapted = sfda.adapt_model(model, target_images, prior=(0.9, 0.1), method="adaent")

``model`` maps (N, C, H, W) float tensors to logits (N, K, H, W): an sfda
network, a MONAI network or your own. ``target_images`` is a float array
(N, C, H, W) of target slices, normalised as the model expects. No source
image is taken there: only source-free methods are accepted.
"""

from __future__ import annotations

import copy
import tempfile
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

from sfda.config import AdaptConfig, MethodConfig, OptimConfig, config_to_dict, merge_into
from sfda.config.card import ModelCard, Network, Training
from sfda.config.methods import DEFAULT_METHOD, facts_of, said, source_free_methods
from sfda.data.patches import RandomPatches, check_patch_method, model_patch
from sfda.data.sliceset import SliceSet
from sfda.engine.distributed import check_device, resolve_device
from sfda.engine.loop import FitSpec, fit
from sfda.engine.selection import SELECTED
from sfda.errors import SfdaError
from sfda.data.profile import training_profile
from sfda.io.cases import load_cases, select_cases
from sfda.methods import build_method
from sfda.methods.adabn import reestimate_bn
from sfda.nets.merge import is_merge
from sfda.priors.table import fraction_rows, load_priors, require_prior
from sfda.progress import say
from sfda.stages.common import check_output, fit_spec, on_device, require, slices_for, write_config
from sfda.stages.freshness import Stage
from sfda.stages.outputs import case_files, claim_folder
from sfda.stages.nnunet import export_nnunet
from sfda.stages.source import Adapting, check_source, resolve_source
from sfda.stages.trust import check_trust


def adapt(cfg: AdaptConfig, progress: bool = True, run: Stage | None = None) -> Path:
    """Adapt a source checkpoint to target slices with ``cfg.method.name``. The model to use is
    ``out/selected.pt`` (the selected epoch, or the trust check's fall-back; ``done.json`` says which).
    ``run``: the stage's identity (default: its config and inputs), checked by ``--resume``."""
    for value, option in ((cfg.out, "--out"), (cfg.checkpoint or cfg.nnunet, "--checkpoint (or --nnunet)"),
                          (cfg.data.cases, "--cases"), (cfg.data.modality, "--modality")):
        require(value, option)
    check_output(cfg.out)
    cfg = on_device(cfg)
    check_source(cfg, Adapting(cfg.method.name, cfg.method, cfg.prior, flag="--method", command="adapt"),
                 modality=cfg.data.modality)
    _check_method(cfg)  # before the folder is claimed: a refusal leaves nothing behind
    cl = load_cases(cfg.data.cases)
    run = run or Stage(cfg, [p for p in (cfg.data.cases, cfg.checkpoint, cfg.prior) if p], command="adapt")
    reads = [cfg.data.cases, cfg.checkpoint, cfg.nnunet, cfg.prior, *case_files(cl)]
    with claim_folder(cfg.out, run, reads, resume=cfg.resume, overwrite=cfg.overwrite):
        _adapt(copy.deepcopy(cfg), cl, progress)
    return Path(cfg.out)


def _adapt(cfg: AdaptConfig, cl, progress: bool) -> None:
    src = resolve_source(cfg, "adapt", single=True, modality=cfg.data.modality)
    write_config(cfg, Path(cfg.out) / "config.yaml")
    card = _adapted_card(src.card, cfg, cl)
    reference = (copy.deepcopy(src.model), src.card)  # the trust check's source model: src.model is adapted
    model = src.model.train()  # as built: the method sets the modes it trains in
    slicing, cache = src.card.slicing, cfg.data.cache  # the target sliced as the source model was trained
    # Target labels are never read for adaptation: with_labels=False.
    target = slices_for(cl, cfg.data.subjects or None, cfg.data.modality, slicing, with_labels=False, cache=cache,
                        progress=progress)
    val = (slices_for(cl, cfg.data.val_subjects, cfg.data.modality, slicing, with_labels=True, cache=cache,
                      progress=progress) if cfg.data.val_subjects else None)
    source = None
    if cfg.method.source_modality:  # a method that is not source-free (_check_method)
        source = slices_for(cl, cfg.method.source_subjects, cfg.method.source_modality, slicing,
                            with_labels=True, cache=cache, hw=target.hw, progress=progress)
    prior, val_prior = load_priors(cfg.prior, target.slice_ids, val.slice_ids if val is not None else None,
                                   len(cl.label_names))
    method = build_method(cfg.method.name, cfg.method)
    patch = model_patch(src.card)
    if patch:
        check_patch_method(method, cfg.method.kl_scope, patch)
    # the selected model is checked before selected.pt is written, and exported as it is handed back
    vet = partial(check_trust, source=reference, target=target, label_names=cl.label_names,
                  on_distrust=cfg.on_distrust, out=Path(cfg.out), device=cfg.device, prior=prior)
    # adabn_init: the target's batch-norm statistics before the first step (not again on --resume)
    start = partial(reestimate_bn, images=target.images, seed=cfg.seed) if cfg.method.adabn_init else None
    spec = fit_spec(cfg, target, card, val=val, source=source, prior=prior, val_prior=val_prior, select=cfg.select,
                    transform=RandomPatches(patch) if patch else None, progress=progress, vet=vet, start=start)
    fitted = fit(model, method, spec)
    if src.card.nnunet and fitted.get("selected"):
        _export(Path(cfg.out), *fitted["selected"])


def _check_method(cfg: AdaptConfig) -> None:
    """What the method refuses before anything is written: source images it cannot use or lacks, a prior
    table it needs, or one that is not there."""
    facts = facts_of(cfg.method.name)
    facts.check_source_data(cfg.method.source_modality, cfg.method.source_subjects)
    if facts.needs_prior:
        require(cfg.prior, "--prior (a table from `sfda prior`)")
    if cfg.prior:
        require_prior(cfg.prior)


def _adapted_card(card: ModelCard, cfg: AdaptConfig, cl) -> ModelCard:
    """The source model's card, for the model adapted by ``cfg.method.name`` to ``cfg``'s target scans."""
    training = replace(card.training, stage=f"adapt:{cfg.method.name}", config=config_to_dict(cfg),
                       source_modality=card.modality, epoch=None)  # each saved epoch states its own
    # profile: what the adapted model is for, the target scans it adapted on
    return replace(card, modality=cfg.data.modality, training=training,
                   profile=training_profile(select_cases(cl, cfg.data.subjects or None), cfg.data.modality))


def _export(out: Path, model: torch.nn.Module, card: ModelCard) -> None:
    """A model imported from nnU-Net goes back as an nnU-Net result folder (``out/nnunet``): the
    reported model (``selected.pt``'s, handed over by the loop; the source model after a trust
    fall-back)."""
    chosen = out / SELECTED
    if is_merge(card):  # an nnU-Net folder holds one network
        say(f"warning: no nnU-Net result folder: {chosen} joins two networks ({card.selection.selected_by}); "
            f"predict with `sfda predict --checkpoint {chosen}`, or export {out / 'last.pt'} yourself")
        return
    say(f"nnU-Net result folder of {chosen.name}: {export_nnunet(card, model, out).parents[1]}")


def _prior_array(prior, n: int, k: int) -> np.ndarray | None:
    if prior is None:
        return None
    arr = np.asarray(prior, dtype=np.float32)
    if arr.ndim == 1:
        arr = np.tile(arr, (n, 1))
    if arr.shape != (n, k):
        raise SfdaError(f"prior must be K={k} ratios or an (N={n}, K={k}) array, got shape {arr.shape}")
    if not fraction_rows(arr).all():
        raise SfdaError("prior rows must be non-negative class fractions summing to one")
    return arr


def adapt_model(model: torch.nn.Module, target_images, prior=None, method: str = DEFAULT_METHOD, *, lam: float = 1.0,
                kl: str = "forward", epochs: int = 10, lr: float = 1e-4, batch_size: int = 12, seed: int = 0,
                device: str = "auto", out: str | None = None, progress: bool = False) -> torch.nn.Module:
    """Adapt ``model`` in place on ``target_images`` and return it (in eval mode).

    ``prior``: τe as K class ratios for every slice, or an (N, K) array per slice.
    ``out``: a folder for checkpoints and the log (a temporary one if omitted).
    """
    cfg = merge_into(MethodConfig(), {"name": method, "lam": lam, "kl": kl})
    optim = merge_into(OptimConfig(), {"epochs": epochs, "lr": lr, "batch_size": batch_size})
    m = build_method(method, cfg)
    if not m.source_free:
        raise SfdaError(f"method '{method}' needs labelled source images; sfda.adapt_model takes target images "
                        f"only (use {said(source_free_methods())})")
    device = resolve_device(device)
    check_device(device)
    images = np.asarray(target_images, dtype=np.float32)
    data = SliceSet.from_arrays(images)
    with torch.no_grad():
        k = model(torch.from_numpy(images[:1]).to(device)).shape[1]
    tau = _prior_array(prior, len(images), k)
    if m.needs_prior and tau is None:
        raise SfdaError(f"method '{method}' needs a prior: pass prior=(ratios...) or an (N, K) array")
    card = ModelCard(network=Network(type(model).__name__), training=Training(stage=f"adapt:{method}"))
    with tempfile.TemporaryDirectory() as tmp:
        spec = FitSpec(data=data, out=Path(out or tmp), card=card, optim=optim, seed=seed, device=device,
                       prior=tau, progress=progress, keep_epochs=False)
        fit(model, m, spec)
    for p in model.parameters():
        p.requires_grad_(True)
    return model.eval()
