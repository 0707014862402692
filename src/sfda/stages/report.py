"""``sfda report``: gather evaluated runs into a table, curves, a mask grid and report.md.

A run folder holds ``log.jsonl`` (per-epoch log) and ``eval/`` (from
:func:`sfda.stages.evaluate.evaluate`: ``metrics.json``, ``examples.npz``); its
name is the method's unless ``names`` says otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sfda.config import ReportConfig
from sfda.errors import SfdaError
from sfda.io.atomic import write_json, write_text
from sfda.report import plot_curves, plot_fractions, plot_grid, results_markdown, write_report
from sfda.stages.common import check_output, require, write_config
from sfda.stages.freshness import Stage, digest
from sfda.stages.outputs import claim_folder


def read_log(run: Path) -> list[dict]:
    path = run / "log.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _metrics(run: Path) -> dict | None:
    path = run / "eval" / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else None


def _examples(run: Path) -> dict[str, dict[str, np.ndarray]]:
    path = run / "eval" / "examples.npz"
    if not path.exists():
        return {}
    out: dict[str, dict[str, np.ndarray]] = {}
    with np.load(path) as data:
        for key in data.files:
            subject, name = key.split("/", 1)
            out.setdefault(subject, {})[name] = data[key]
    return out


def grid_rows(runs: dict[str, Path], max_subjects: int = 4) -> list[dict]:
    examples = {name: _examples(run) for name, run in runs.items()}
    subjects = sorted({s for ex in examples.values() for s in ex})[:max_subjects]
    rows = []
    for s in subjects:
        first = next(ex[s] for ex in examples.values() if s in ex)
        rows.append({"subject": f"{s} ({first['slice_id']})", "image": first["image"], "truth": first["truth"],
                     "masks": {n: ex[s]["pred"] for n, ex in examples.items() if s in ex},
                     "entropy": {n: ex[s]["entropy"] for n, ex in examples.items() if s in ex},
                     "classes": max((int(ex[s]["classes"]) for ex in examples.values() if "classes" in ex.get(s, {})),
                                    default=None)})
    return rows


def coverage(runs: dict[str, Path]) -> str:
    """Which checkpoint, modality and subjects each run's figures are of (its ``eval/metrics.json``)."""
    lines = ["| run | checkpoint | modality | subjects |", "|:---|:---|:---|:---|"]
    for name, run in runs.items():
        if m := _metrics(run):
            subjects = ", ".join(m.get("subjects") or []) or "?"
            lines.append(f"| {name} | `{m.get('checkpoint', '?')}` | {m.get('modality') or '?'} | {subjects} |")
    return "\n".join(lines)


def collapse_notes(runs: dict[str, Path]) -> list[str]:
    notes = []
    for name, run in runs.items():
        for row in read_log(run):
            if row.get("collapse"):
                notes.append(f"- **{name}**, epoch {row['epoch']}: {row['collapse']}")
                break
    return notes


def trust_notes(runs: dict[str, Path]) -> list[str]:
    """One line per run whose trust check warned (``trust.json`` from `sfda adapt`), with the fall-back,
    and one per run with a caution (no fall-back)."""
    notes = []
    for name, run in runs.items():
        path = run / "trust.json"
        trust = json.loads(path.read_text()) if path.exists() else {"warnings": []}
        if trust["warnings"]:
            taken = ", ".join(trust.get("fallback_structures") or [])
            fallback = {"source": " Model to use: the source model (fall-back).",
                        "structures": f" Model to use: the source model for {taken}, the adapted model for the rest "
                                      "(fall-back)."}.get(trust.get("fallback"), "")
            fallback += _evaluated(run) if trust.get("fallback") else ""
            notes.append(f"- **{name}**: {'; '.join(trust['warnings'])}.{fallback}")
        if trust.get("cautions"):
            kept = "no fall-back for it" if trust.get("fallback") else "the adapted model is reported"
            notes.append(f"- **{name}** (caution, {kept}): {'; '.join(trust['cautions'])}.")
    return notes


def _evaluated(run: Path) -> str:
    """Which file the run's figures are of, when it is not the model to use (``selected.pt``)."""
    metrics = _metrics(run) or {}
    chosen = run / "selected.pt"
    if not metrics.get("checkpoint") or not chosen.exists():
        return ""
    if metrics.get("checkpoint_digest", "") == digest(chosen) or Path(metrics["checkpoint"]).resolve() == chosen.resolve():
        return " Its figures above are of that model."
    return (f" Its figures above are of {Path(metrics['checkpoint']).name}, not of the model to use: evaluate "
            f"{chosen} for them.")


def report(cfg: ReportConfig) -> Path:
    """Write ``out/results.md``, ``out/results.json``, figures, ``out/report.md`` and the config."""
    require(cfg.runs, "a run folder")
    require(cfg.out, "--out")
    check_output(cfg.out)
    if cfg.names and len(cfg.names) != len(cfg.runs):
        raise SfdaError(f"names lists {len(cfg.names)} labels for {len(cfg.runs)} runs; give one per run")
    runs = {(cfg.names[i] if cfg.names else Path(d).name): Path(d) for i, d in enumerate(cfg.runs)}
    for name, run in runs.items():
        if not run.is_dir():
            raise SfdaError(f"run folder {run} not found")
    reads = [run / name for run in runs.values() for name in ("log.jsonl", "trust.json", "eval")]
    with claim_folder(cfg.out, Stage(cfg, [], command="report"), reads, overwrite=cfg.overwrite):
        return _report(cfg, runs)


def _report(cfg: ReportConfig, runs: dict[str, Path]) -> Path:
    out_dir, title = Path(cfg.out), cfg.title
    summaries = {n: m["summary"] for n, r in runs.items() if (m := _metrics(r))}
    if not summaries:
        raise SfdaError(f"none of {', '.join(map(str, runs.values()))} has eval/metrics.json; "
                        "run `sfda evaluate --out RUN/eval` first")
    table = results_markdown(summaries, title=title)
    write_json(out_dir / "results.json", {"methods": summaries})
    figures = _figures(runs, out_dir)
    sections = [("Results (test subjects, 3D, mean ± std over subjects)", table),
                ("What the figures are of (each run's eval/metrics.json)", coverage(runs))]
    notes = collapse_notes(runs)
    if notes:
        sections.append(("Collapse warnings", "\n".join(notes)))
    if trusted := trust_notes(runs):
        sections.append(("Trust warnings (label-free: where the masks lie, and whether they survive a mirrored "
                         "input)", "\n".join(trusted)))
    write_text(out_dir / "results.md", table + "\n")
    write_config(cfg, out_dir / "config.yaml")
    return write_report(out_dir, title, sections, figures)


def _figures(runs: dict[str, Path], out_dir: Path) -> list[tuple[str, Path]]:
    figures = []
    curves = {n: [(r["epoch"], r["val_dice"]) for r in read_log(run) if "val_dice" in r]
              for n, run in runs.items()}
    curves = {n: c for n, c in curves.items() if c}
    if curves:
        figures.append(("Validation Dice per epoch", plot_curves(curves, out_dir / "curves.png")))
    fractions = {n: [(r["epoch"], r["pred_fraction"]) for r in read_log(run) if "pred_fraction" in r]
                 for n, run in runs.items()}
    fractions = {n: f for n, f in fractions.items() if f}
    priors = [r["prior_fraction"] for run in runs.values() for r in read_log(run) if "prior_fraction" in r]
    if fractions:
        figures.append(("Predicted foreground fraction on target slices (dashed: prior)",
                        plot_fractions(fractions, float(np.mean(priors)) if priors else None,
                                       out_dir / "fractions.png")))
    rows = grid_rows(runs)
    if rows:
        figures.append(("Masks and entropy maps (entropy in nats, from 0 to ln K for K classes; blank: padding)",
                        plot_grid(rows, out_dir / "grid.png")))
    return figures
