"""Scoring a checkpoint on labelled cases: 3D metrics per subject, plus example slices for figures."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from sfda.config import DataConfig
from sfda.data.sliceset import SliceSet
from sfda.engine.checkpoint import load_model, require_kind
from sfda.engine.infer import predict_slices, subject_volumes
from sfda.io.atomic import atomic_path, write_json, write_text
from sfda.io.cases import load_cases
from sfda.metrics import MetricAccumulator

METRICS = ("dice", "hd_mm", "hd95_mm", "assd_mm")


def evaluate(checkpoint: str, cases: str, modality: str, subjects: list[str] | None, out: str,
             data: DataConfig | None = None, device: str = "cpu", progress: bool = True) -> dict:
    """Write ``out/metrics.json``, ``out/metrics.csv`` and ``out/examples.npz``; return metrics."""
    from sfda.engine.loop import check_device
    from sfda.pipeline import _slicing_of, slices_for

    check_device(device)  # a missing GPU is a user error, not a torch traceback
    model, meta = load_model(checkpoint)
    require_kind(meta, "segmentation", checkpoint, "evaluate")
    model.to(device)
    cl = load_cases(cases)
    ss = slices_for(cl, subjects, modality, data or DataConfig(), with_labels=True, progress=progress,
                    **_slicing_of(meta))
    pred, probs = predict_slices(model, ss.images, device=device, probabilities=True)
    result = score(ss, pred, cl.label_names)
    result.update({"checkpoint": str(checkpoint), "modality": modality, "subjects": ss.subjects()})
    out_dir = Path(out)
    write_json(out_dir / "metrics.json", result)
    write_text(out_dir / "metrics.csv", rows_csv(result["per_subject"]))
    save_examples(out_dir / "examples.npz", ss, pred, probs)
    return result


def score(ss: SliceSet, pred: np.ndarray, label_names: list[str]) -> dict:
    """3D metrics per subject (its crops assembled) and their mean ± std."""
    preds = subject_volumes(ss, pred)
    truths = subject_volumes(ss, ss.labels)
    spacing = {c.subject: c.spacing for c in ss.cases}
    acc = MetricAccumulator(label_names)
    for subject in preds:
        acc.add(subject, preds[subject].astype(np.int64), truths[subject].astype(np.int64), spacing[subject])
    return {"per_subject": acc.rows(), "summary": acc.summary()}


def rows_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["subject", "class", *METRICS], extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def entropy_map(probs: np.ndarray) -> np.ndarray:
    """Per-pixel entropy (N, H, W) of probabilities (N, K, H, W), in nats."""
    p = np.clip(probs, 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=1)


def save_examples(path: Path, ss: SliceSet, pred: np.ndarray, probs: np.ndarray) -> None:
    """One slice per subject (the one with most foreground) for the report's mask grid."""
    arrays = {}
    ids = np.arange(len(ss))
    for subject in ss.subjects():
        rows = ids[[ss.cases[c].subject == subject for c in ss.case_index]]
        best = rows[np.argmax((ss.labels[rows] > 0).sum(axis=(1, 2)))]
        arrays[f"{subject}/image"] = ss.images[best, 0]
        arrays[f"{subject}/truth"] = ss.labels[best].astype(np.uint8)
        arrays[f"{subject}/pred"] = pred[best]
        arrays[f"{subject}/entropy"] = entropy_map(probs[best:best + 1])[0].astype(np.float32)
        arrays[f"{subject}/slice_id"] = np.array(ss.slice_ids[best])
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)


def summary_table(summary: dict) -> str:
    lines = [f"{'class':<14}{'metric':<10}{'mean':>10}{'std':>10}"]
    for cls, metrics in summary.items():
        for name, v in metrics.items():
            lines.append(f"{cls:<14}{name:<10}{v['mean']:>10.4f}{v['std']:>10.4f}")
    return "\n".join(lines)


