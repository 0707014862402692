"""How well each label-free trust signal separates good adapted models from failed ones.

    python bench/trust_signals.py EXPERIMENT_DIR [EXPERIMENT_DIR ...] [--extra runs.json] [--out FILE]

For every adapted run of each finished ``sfda experiment`` folder (and each extra
``{"run", "experiment", "direction", "seed"}`` entry), the signals of
:mod:`sfda.metrics.trust` are computed on the run's adaptation images (the training
subjects' target images, no label read) for its reported checkpoint. The source atlas
is rebuilt from the source training labels, as `train-source` stores it. A run counts as
*failed* when its 3D test Dice (``eval/metrics.json``) is below half the Oracle's of
the same direction and seed. Prints one row per run and, per signal, how many failures
it catches and how many good runs it flags; writes the rows as JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import yaml

from sfda.config.card import ModelCard, SourceStats
from sfda.data.sliceset import build_sliceset
from sfda.engine.checkpoint import load_model
from sfda.inference import trust_signals
from sfda.io.cases import load_cases
from sfda.metrics.trust import THRESHOLDS, label_atlas

ADAPTED = ("adabn", "adaent", "adasource", "adversarial", "tent", "entropy")


def _slices(cl, subjects, modality, labels, card: ModelCard):
    cases = [c for c in cl.cases if c.subject in subjects and modality in c.images]
    return build_sliceset(cases, modality, card.slicing, with_labels=labels, label_names=cl.label_names,
                          progress=False)


def _dice(path: Path) -> float | None:
    """Mean 3D Dice of the first foreground class in an ``eval/metrics.json``."""
    if not path.exists():
        return None
    summary = json.loads(path.read_text())["summary"]
    return summary[next(iter(summary))]["dice"]["mean"]


def score_run(run: Path, exp: Path, direction: str, seed: int, cache: dict) -> dict | None:
    src, tgt = direction.split("->")
    cfg = yaml.safe_load((exp / "config.yaml").read_text())
    train = cfg["split"]["train"]
    ckpt = run / "selected.pt" if (run / "selected.pt").exists() else run / "last.pt"
    if not ckpt.exists() or not (run / "eval" / "metrics.json").exists():
        return None
    model, card = load_model(ckpt)
    cl = load_cases(exp / "cases.json")
    key = (str(exp), direction, seed)
    if key not in cache:
        source = _slices(cl, train, src, True, card)
        target = _slices(cl, train, tgt, False, card)
        cache[key] = (label_atlas(source.labels, source.valid_mask(), len(cl.label_names)), target)
    atlas, target = cache[key]
    signals = trust_signals(model, target.images, target.valid_mask(),
                            ModelCard(network=card.network, source=SourceStats(atlas=atlas)), len(cl.label_names))
    oracle = _dice(exp / f"oracle-{tgt}" / f"seed{seed}" / "eval" / "metrics.json")
    dice = _dice(run / "eval" / "metrics.json")
    return {"run": str(run), "direction": direction, "seed": seed, "dice": dice, "oracle": oracle,
            "noadapt": _dice(run.parent / "noadapt" / "eval" / "metrics.json"),
            "failed": bool(oracle is not None and dice < 0.5 * oracle),
            **{k: (v[0] if v else None) for k, v in signals.items()}}


def experiment_runs(exp: Path):
    cfg = yaml.safe_load((exp / "config.yaml").read_text())
    for direction in cfg["directions"]:
        folder = exp / direction.replace("->", "-")
        for seed in cfg["seeds"]:
            for m in ADAPTED:
                if (folder / f"seed{seed}" / m).is_dir():
                    yield folder / f"seed{seed}" / m, exp, direction, seed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("experiments", nargs="*")
    ap.add_argument("--extra", help="JSON list of {run, experiment, direction, seed}")
    ap.add_argument("--out", default="bench/trust_signals.json")
    args = ap.parse_args()
    todo = [r for e in args.experiments for r in experiment_runs(Path(e))]
    if args.extra:
        todo += [(Path(x["run"]), Path(x["experiment"]), x["direction"], x["seed"])
                 for x in json.loads(Path(args.extra).read_text())]
    rows, cache = [], {}
    for run, exp, direction, seed in todo:
        row = score_run(run, exp, direction, seed, cache)
        if row:
            rows.append(row)
            print(f"{row['run']:<60} dice {row['dice']:.3f} oracle {row['oracle'] or 0:.3f} "
                  f"{'FAILED' if row['failed'] else 'good  '} atlas {row['atlas_share'] or float('nan'):.3f} "
                  f"flip {row['flip_agreement'] if row['flip_agreement'] is not None else float('nan'):.3f}")
    summary = {}
    for name, limit in THRESHOLDS.items():
        flag = [r[name] is not None and r[name] < limit for r in rows]
        summary[name] = {"threshold": limit,
                         "failures_caught": sum(f for f, r in zip(flag, rows) if r["failed"]),
                         "failures": sum(r["failed"] for r in rows),
                         "good_flagged": sum(f for f, r in zip(flag, rows) if not r["failed"]),
                         "good": sum(not r["failed"] for r in rows)}
    either = [any(r[n] is not None and r[n] < t for n, t in THRESHOLDS.items()) for r in rows]
    summary["either"] = {"failures_caught": sum(f for f, r in zip(either, rows) if r["failed"]),
                         "good_flagged": sum(f for f, r in zip(either, rows) if not r["failed"])}
    for name, s in summary.items():
        print(name, s)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"rows": rows, "summary": summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
