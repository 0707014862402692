"""``sfda evaluate``: 3D metrics per subject of a checkpoint on labelled cases, plus example
slices for the report's figures."""

from __future__ import annotations

import copy
import csv
import io
from pathlib import Path

import numpy as np

from sfda.config import EvaluateConfig
from sfda.config.card import ModelCard
from sfda.data.sliceset import SliceSet
from sfda.data.slices import assemble_subject
from sfda.inference import entropy_map, predict_slices, stream_volume
from sfda.io.atomic import atomic_path, write_json, write_text
from sfda.data.profile import unfamiliar
from sfda.io.cases import channel_files, load_cases, select_cases
from sfda.io.volume_scan import scan_volume
from sfda.io.channels import read_channels
from sfda.io.volume import read_volume
from sfda.metrics.subjects import score_subjects, score_volumes
from sfda.nets.mirror import for_prediction
from sfda.progress import bar, say
from sfda.stages.common import check_output, on_device, require, slices_for, write_config
from sfda.stages.freshness import Stage, digest
from sfda.stages.source import check_source, resolve_source
from sfda.stages.outputs import case_files, claim_folder

METRICS = ("dice", "hd_mm", "hd95_mm", "assd_mm", "dice_organ_slices")


def evaluate(cfg: EvaluateConfig, progress: bool = True, run: Stage | None = None) -> dict:
    """Write ``out/metrics.json``, ``out/metrics.csv``, ``out/examples.npz`` and the config; return metrics.
    ``run``: the stage's identity (default: its config, checkpoint and case list)."""
    for value, option in ((cfg.checkpoint or cfg.nnunet, "--checkpoint (or --nnunet)"), (cfg.data.cases, "--cases"),
                          (cfg.data.modality, "--modality"), (cfg.out, "--out")):
        require(value, option)
    check_output(cfg.out)
    cfg = on_device(cfg)
    check_source(cfg, modality=cfg.data.modality)
    cl = load_cases(cfg.data.cases)
    run = run or Stage(cfg, [p for p in (cfg.data.cases, cfg.checkpoint) if p], command="evaluate")
    reads = [cfg.data.cases, cfg.checkpoint, cfg.nnunet, *case_files(cl)]
    with claim_folder(cfg.out, run, reads, overwrite=cfg.overwrite):
        return _evaluate(copy.deepcopy(cfg), cl, progress)


def _evaluate(cfg: EvaluateConfig, cl, progress: bool) -> dict:
    src = resolve_source(cfg, "evaluate", modality=cfg.data.modality)
    model = for_prediction(src.model.to(cfg.device), src.card, cfg.mirroring)
    for case in select_cases(cl, cfg.data.subjects or None, cfg.data.modality):
        ranges = [(s.low, s.high) for s in map(scan_volume, channel_files(case, cfg.data.modality))]
        for why in unfamiliar(src.card.profile, case.spacing, case.shape, ranges, cfg.data.modality):
            say(f"warning: {case.case_id} is far from the model's training scans: {why}")
    ss = slices_for(cl, cfg.data.subjects or None, cfg.data.modality, src.card.slicing, with_labels=True,
                    cache=cfg.data.cache, progress=progress)
    if ss.size or ss.spacing:  # resampled slices: score masks on each scan's own voxels
        result, pred = native_scores(model, src.card, ss, cl.label_names, cfg.device, progress), None
    else:
        pred, _ = predict_slices(model, ss.images, device=cfg.device)  # labels only: no (N, K, H, W) array
        result = score_subjects(ss, pred, cl.label_names)
    result.update({"checkpoint": src.path, "checkpoint_digest": digest(src.path),
                   "modality": cfg.data.modality, "subjects": ss.subjects()})
    out_dir = Path(cfg.out)
    write_json(out_dir / "metrics.json", result)
    write_text(out_dir / "metrics.csv", rows_csv(result["per_subject"]))
    save_examples(out_dir / "examples.npz", ss, model, cfg.device, pred)
    write_config(cfg, out_dir / "config.yaml")
    return result


def native_scores(model, card: ModelCard, ss: SliceSet, label_names: list[str], device: str, progress: bool) -> dict:
    """3D metrics on each scan's own grid: each case predicted as ``sfda predict`` does (the
    probabilities resampled back before the argmax) against its label file as stored."""
    preds: dict[str, list] = {}
    truths: dict[str, list] = {}
    spacing = {}
    for case in bar(ss.cases, "scoring on the scans' own grids", progress):
        files = channel_files(case, ss.modality)
        vol, arrays = read_channels(files)
        pred = stream_volume(model, card.slicing, arrays, files, device, spacing=vol.spacing)
        preds.setdefault(case.subject, []).append(pred["labels"])
        truths.setdefault(case.subject, []).append(read_volume(case.label, dtype=None).array)
        spacing[case.subject] = vol.spacing
    return score_volumes({s: assemble_subject(v) for s, v in preds.items()},
                         {s: assemble_subject(v) for s, v in truths.items()}, spacing, label_names, ss.axis)


def rows_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["subject", "class", *METRICS], extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def save_examples(path: Path, ss: SliceSet, model, device: str = "cpu", pred: np.ndarray | None = None) -> None:
    """One slice per subject (the one with most foreground) for the report's mask grid, with the
    model's entropy on it (nats, NaN on padding; probabilities computed for these slices only) and
    the number of classes K (its maximum is ln K), on the network's grid."""
    arrays, valid = {}, ss.valid_mask()
    ids = np.arange(len(ss))
    for subject in ss.subjects():
        rows = ids[[ss.cases[c].subject == subject for c in ss.case_index]]
        best = rows[np.argmax((ss.labels[rows] > 0).reshape(len(rows), -1).sum(axis=1))]
        if ss.dims == 3:
            arrays.update(_volume_example(ss, model, device, pred, best, subject, valid[best]))
            continue
        arrays[f"{subject}/image"] = ss.images[best, 0]
        arrays[f"{subject}/truth"] = ss.labels[best].astype(np.uint8)
        probs = predict_slices(model, ss.images[best:best + 1], device=device, probabilities=True)[1]
        mask = pred[best] if pred is not None else probs[0].argmax(axis=0).astype(np.uint8)
        arrays[f"{subject}/pred"] = mask * valid[best]  # padding is no prediction (the losses never saw it)
        arrays[f"{subject}/entropy"] = scan_entropy(probs[0], valid[best])
        arrays[f"{subject}/classes"] = np.array(probs.shape[1])
        arrays[f"{subject}/slice_id"] = np.array(ss.slice_ids[best])
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)


def _volume_example(ss: SliceSet, model, device: str, pred: np.ndarray | None, best: int, subject: str,
                    valid: np.ndarray) -> dict:
    """A 3D sample's example for the grid: its slice along ``ss.axis`` with most foreground."""
    def planes(a: np.ndarray) -> np.ndarray:  # (D0, D1, D2) -> slices along the axis
        return np.moveaxis(a, ss.axis, 0)

    probs = predict_slices(model, ss.images[best:best + 1], device=device, probabilities=True)[1][0]
    truth = planes(ss.labels[best])
    j = int(np.argmax((truth > 0).sum(axis=(1, 2))))
    p = np.moveaxis(probs, ss.axis + 1, 1)[:, j]
    mask = (planes(pred[best])[j] if pred is not None else p.argmax(axis=0)) * planes(valid)[j]
    return {f"{subject}/image": planes(ss.images[best, 0])[j], f"{subject}/truth": truth[j].astype(np.uint8),
            f"{subject}/pred": mask.astype(np.uint8), f"{subject}/entropy": scan_entropy(p, planes(valid)[j]),
            f"{subject}/classes": np.array(p.shape[0]),
            f"{subject}/slice_id": np.array(f"{ss.cases[best].case_id}:{j}")}


def scan_entropy(probs: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The entropy in nats (0 to ln K) of (K, H, W) probabilities, NaN on padding (no scan there)."""
    return np.where(valid, entropy_map(probs[None])[0], np.nan).astype(np.float32)


def summary_table(summary: dict) -> str:
    lines = [f"{'class':<14}{'metric':<10}{'mean':>10}{'std':>10}"]
    for cls, metrics in summary.items():
        for name, v in metrics.items():
            lines.append(f"{cls:<14}{name:<10}{v['mean']:>10.4f}{v['std']:>10.4f}")
    return "\n".join(lines)
