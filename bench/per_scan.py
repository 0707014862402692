"""Per-scan adaptation (`sfda predict --adapt`) against plain prediction and cohort adaptation.

    python bench/per_scan.py EXPERIMENT_DIR --direction opp-inn --subjects A1,B1,C1,D1 \
        --steps 5,10,20 --lr 1e-4,1e-3 --out bench/per_scan_dev.json      # choose N and lr (dev)
    python bench/per_scan.py EXPERIMENT_DIR --direction opp-inn --subjects E1,F1 \
        --steps 10 --lr 1e-4 --out bench/per_scan.json                    # report

EXPERIMENT_DIR is a finished ``sfda experiment`` (e.g. of configs/ivdm3seg-crops.yaml). For
each of its seeds, the source model of the direction predicts every crop of ``--subjects`` in
the target modality (each crop is a scan that arrives alone): plainly, and adapted to that scan
first (episodic and continual, for each steps x lr setting). Masks are scored per subject in
3D (its crops assembled) against the labels: Dice, the mean over the structures. Source
checkpoints written before train-source stored its position table get it here, from the same
source labels (a copy; the run's own checkpoint is not touched). Prints mean 3D Dice per setting over seeds and, for the test
subjects, the experiment's cohort AdaEnt and NoAdaptation; writes everything as JSON.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import yaml

import sfda
from sfda.config import DataConfig, PredictConfig
from sfda.config.card import Slicing
from sfda.data.slices import assemble_subject
from sfda.engine.checkpoint import load_checkpoint, update_card
from sfda.io.cases import load_cases
from sfda.io.volume import read_volume
from sfda.metrics.overlap import dice
from sfda.priors.estimate import position_table
from sfda.stages.common import slices_for


def _source(run: Path, work: Path) -> Path:
    """The seed's source checkpoint, with its position table (a copy when it had none)."""
    ckpt = run / "source" / "last.pt"
    if load_checkpoint(ckpt)["card"].source.position:
        return ckpt
    cfg = yaml.safe_load((run / "source" / "config.yaml").read_text())["data"]
    data = DataConfig(**{k: v for k, v in cfg.items() if k in DataConfig.__dataclass_fields__})
    ss = slices_for(load_cases(data.cases), data.subjects, data.modality, Slicing.from_config(data), with_labels=True,
                    cache=data.cache, progress=False)
    copy = work / f"{run.name}_source.pt"
    shutil.copy(ckpt, copy)
    table = position_table(ss.foreground_fractions(), ss.positions())
    update_card(copy, lambda c: replace(c, source=replace(c.source, position=table)))
    return copy


def _score(masks: dict[str, Path], cases, classes: int) -> dict[str, float]:
    """Per-subject 3D Dice, the mean over the structures: crops assembled as `sfda evaluate` does."""
    preds, truths = {}, {}
    for case in cases:
        preds.setdefault(case.subject, []).append(read_volume(masks[case.case_id]).array)
        truths.setdefault(case.subject, []).append(read_volume(case.label).array)
    out = {}
    for s in sorted(preds):
        p, t = assemble_subject(preds[s]), assemble_subject(truths[s])
        out[s] = float(np.mean([dice(p == k, t == k) for k in range(1, classes)]))
    return out


def _run(ckpt: Path, cases, modality: str, out: Path, **adapt) -> tuple[dict, list]:
    files = [case.images[modality] for case in cases]
    written = sfda.predict(checkpoint=str(ckpt), inputs=files, out=str(out), progress=False, **adapt)
    by_case = {case.case_id: path for case, path in zip(cases, written)}
    classes = len(load_checkpoint(ckpt)["card"].labels)
    records = ([json.loads(x) for x in (out / "adapt.jsonl").read_text().splitlines()]
               if (out / "adapt.jsonl").exists() else [])
    return _score(by_case, cases, classes), records


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("experiment", type=Path)
    ap.add_argument("--direction", default="opp-inn")
    ap.add_argument("--subjects", required=True)
    ap.add_argument("--steps", default="10")
    ap.add_argument("--lr", default="1e-4")
    ap.add_argument("--method", default="adaent")
    ap.add_argument("--out", type=Path, default=Path("bench/per_scan.json"))
    ap.add_argument("--on-distrust", help="the safety net's fall-back, as sfda predict --on-distrust (default: sfda's)")
    a = ap.parse_args(argv)
    subjects = a.subjects.split(",")
    cases = [c for c in load_cases(a.experiment / "cases.json").cases if c.subject in subjects]
    done = a.experiment / "results.json"
    results = json.loads(done.read_text()) if done.exists() else {"directions": []}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for run in sorted((a.experiment / a.direction).glob("seed*")):
            ckpt = _source(run, work)
            target = json.loads((run / "noadapt" / "eval" / "metrics.json").read_text())["modality"]
            plain, _ = _run(ckpt, cases, target, work / f"{run.name}_plain")
            rows.append({"seed": run.name, "setting": "plain", "dice": plain})
            for steps in map(int, a.steps.split(",")):
                for lr in map(float, a.lr.split(",")):
                    for mode in ("episodic", "continual"):
                        name = f"{mode} steps={steps} lr={lr:g}"
                        dice_, recs = _run(ckpt, cases, target, work / f"{run.name}_{name.replace(' ', '_')}",
                                           adapt=a.method, steps=steps, mode=mode, optim={"lr": lr},
                                           **({"on_distrust": a.on_distrust} if a.on_distrust else {}))
                        rows.append({"seed": run.name, "setting": name, "dice": dice_,
                                     "fallbacks": sum(r["decision"] == "source (safety net)" for r in recs),
                                     "structure_fallbacks": sum(r["decision"].startswith("source for") for r in recs),
                                     "seconds_per_scan": float(np.mean([r["seconds"] for r in recs]))})
    summary = _summary(rows, results, a.direction, subjects)
    a.out.write_text(json.dumps({"direction": a.direction, "subjects": subjects, "method": a.method,
                                 "on_distrust": a.on_distrust or PredictConfig().on_distrust,
                                 "summary": summary, "rows": rows}, indent=1))
    for name, s in summary.items():
        print(f"{name:<36} {100 * s['mean']:5.1f} ± {100 * s['std']:4.1f}  seeds {s['seeds']}"
              + (f"  fallbacks {s['fallbacks']} (+{s['structure_fallbacks']} per structure)" if "fallbacks" in s
                 else ""))
    print(f"wrote {a.out}")
    return 0


def _summary(rows: list[dict], results: dict, direction: str, subjects: list[str]) -> dict:
    """Mean 3D Dice over subjects per seed, then mean ± std over seeds, per setting; the cohort
    runs of the experiment beside them when they were scored on these subjects."""
    out = {}
    for name in dict.fromkeys(r["setting"] for r in rows):
        per_seed = [np.mean(list(r["dice"].values())) for r in rows if r["setting"] == name]
        out[name] = {"mean": float(np.mean(per_seed)), "std": float(np.std(per_seed, ddof=1)) if len(per_seed) > 1
                     else 0.0, "seeds": [round(100 * float(v), 1) for v in per_seed]}
        for key in ("fallbacks", "structure_fallbacks"):
            falls = [r[key] for r in rows if r["setting"] == name and key in r]
            if falls:
                out[name][key] = int(sum(falls))
    src, tgt = direction.split("-")
    cohort = next((d for d in results["directions"] if (d["source"], d["target"]) == (src, tgt)), None)
    if cohort and sorted(cohort.get("test_subjects", results["test_subjects"])) == sorted(subjects):
        for m in ("noadapt", "adaent"):
            per_seed = [_mean_dice(cohort["seeds"][s][m]) for s in cohort["seeds"] if m in cohort["seeds"][s]]
            out[f"cohort {m} (sfda experiment)"] = {"mean": float(np.mean(per_seed)),
                                                    "std": float(np.std(per_seed, ddof=1)), "seeds":
                                                    [round(100 * v, 1) for v in per_seed]}
    return out


def _mean_dice(summary: dict) -> float:
    """The mean over structures where there are several, else the one structure's Dice."""
    key = "mean" if "mean" in summary else next(iter(summary))
    return summary[key]["dice"]["mean"]


if __name__ == "__main__":
    sys.exit(main())
