"""Keeping each structure's largest connected component, measured on an experiment's development subjects.

    python bench/largest_component.py runs/abd [--split val|test] [--seeds 0,1,2] [--methods noadapt,adabn,tent,adaent]

Reads a finished ``sfda experiment`` folder (``OUT/<src>-<tgt>/seed<k>/<method>/selected.pt``; NoAdaptation:
the source model ``OUT/models/<src>/seed<k>/last.pt``), predicts the target domain's **validation**
subjects (the experiment's ``domains.<target>.val``; ``--split test``: its test subjects, to report what
was chosen on the validation subjects, never to choose) as ``sfda predict`` does, and scores each
mask in 3D on the scan's own grid (Dice per structure) as it is and
after keeping, per structure, only its largest 3D connected component (26-connectivity), as nnU-Net's
post-processing does when its cross-validation says so. Beside the Dice it reports the label-free share
of each structure's predicted voxels outside its largest component (``scatter``,
:mod:`sfda.metrics.components`) and how well ``scatter > SCATTER_MAX`` picks out masks with a Dice under
0.5 (the warning of ``sfda predict``). Prints the tables, writes ``bench/largest_component_<split>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

from sfda.engine.checkpoint import load_model
from sfda.inference import stream_volume
from sfda.io.cases import load_cases
from sfda.io.volume import read_volume
from sfda.metrics.components import SCATTER_MAX, split
from sfda.metrics.overlap import dice

ROOT = Path(__file__).resolve().parents[1]
RESULTS = str(ROOT / "bench" / "largest_component_{}.json")


def score(pred: np.ndarray, truth: np.ndarray, k: int) -> dict:
    out = {"dice": [], "dice_lcc": [], "scatter": []}
    for c in range(1, k):
        p, t = pred == c, truth == c
        kept, share = split(p)
        out["dice"].append(dice(p, t))
        out["dice_lcc"].append(dice(kept, t))
        out["scatter"].append(share)
    return out


def model_path(run: Path, src: str, tgt: str, seed: int, method: str) -> Path:
    if method == "noadapt":
        return run / "models" / src / f"seed{seed}" / "last.pt"
    return run / f"{src}-{tgt}" / f"seed{seed}" / method / "selected.pt"


def experiment_models(run: Path, split: str, seeds: list[int], methods: list[str]):
    """Each model of a finished experiment folder with what predicting its target's ``split`` subjects
    needs: a dict of ``direction``, ``source`` (its domain), ``seed``, ``method``, ``model``, ``card``,
    the target ``cases`` and ``modality``, their label arrays (``truths``, by case id), the ``labels``' names
    and the experiment's ``config``."""
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cl = load_cases(run / "cases.json")
    for direction in cfg["directions"]:
        src, tgt = [s.strip() for s in direction.split("->")]
        modality, subjects = cfg["domains"][tgt]["modality"], cfg["domains"][tgt][split]
        cases = [c for c in cl.cases if c.subject in subjects]
        truths = {c.case_id: read_volume(c.label, dtype=None).array for c in cases}
        for seed in seeds:
            for method in methods:
                path = model_path(run, src, tgt, seed, method)
                if not path.exists():
                    continue
                model, card = load_model(path)
                yield {"direction": f"{src}->{tgt}", "source": src, "seed": seed, "method": method, "model": model,
                       "card": card, "cases": cases, "modality": modality, "truths": truths,
                       "labels": cl.label_names, "config": cfg, "case_list": cl}
                print(f"{src}->{tgt} seed {seed} {method}: done", file=sys.stderr)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="a finished `sfda experiment` folder")
    p.add_argument("--split", default="val", choices=("val", "test"))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--methods", default="noadapt,adabn,tent,adaent")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rows, labels = [], None
    for it in experiment_models(Path(args.run), args.split, [int(s) for s in args.seeds.split(",")],
                                args.methods.split(",")):
        labels = it["labels"]
        for case in it["cases"]:
            vol = read_volume(case.images[it["modality"]], dtype=None, check_finite=False)
            pred = stream_volume(it["model"], it["card"].slicing, vol.array, case.images[it["modality"]],
                                 spacing=vol.spacing)
            rows.append({"direction": it["direction"], "seed": it["seed"], "method": it["method"],
                         "subject": case.subject, **score(pred["labels"], it["truths"][case.case_id], len(labels))})
    Path(RESULTS.format(args.split)).write_text(json.dumps({"run": args.run, "split": args.split,
                                                            "labels": labels, "rows": rows}, indent=1) + "\n")
    _print(rows, labels, args.split)
    _detector(rows)
    return 0


def _mean(values) -> float:
    v = [x for x in values if x is not None]
    return float(np.mean(v)) if v else float("nan")


def _detector(rows: list[dict], bad: float = 0.5) -> None:
    pairs = [(s, d) for r in rows for s, d in zip(r["scatter"], r["dice"]) if s is not None]
    flagged = [d for s, d in pairs if s > SCATTER_MAX]
    rest = [d for s, d in pairs if s <= SCATTER_MAX]
    low = sum(d < bad for _, d in pairs)
    print(f"scatter > {SCATTER_MAX}: {len(flagged)} of {len(pairs)} structure masks flagged; Dice < {bad} in "
          f"{sum(d < bad for d in flagged)} of them ({100 * np.mean([d < bad for d in flagged]):.0f} %), in "
          f"{sum(d < bad for d in rest)} of the {len(rest)} others ({100 * np.mean([d < bad for d in rest]):.0f} %); "
          f"{sum(d < bad for d in flagged)} of the {low} masks under {bad} flagged")


def _print(rows: list[dict], labels: list[str], split: str) -> None:
    print(f"Mean Dice over the structures (%), {split} subjects, mean over seeds and subjects; scatter: share "
          "of predicted voxels outside each structure's largest component (mean over structures)")
    print("| direction | method | Dice | Dice, largest component kept | change | scatter |\n"
          "|---|---|---:|---:|---:|---:|")
    for direction in dict.fromkeys(r["direction"] for r in rows):
        for method in dict.fromkeys(r["method"] for r in rows):
            sel = [r for r in rows if r["direction"] == direction and r["method"] == method]
            if not sel:
                continue
            d = _mean([_mean(r["dice"]) for r in sel])
            lcc = _mean([_mean(r["dice_lcc"]) for r in sel])
            print(f"| {direction} | {method} | {100 * d:.1f} | {100 * lcc:.1f} | {100 * (lcc - d):+.1f} | "
                  f"{_mean([_mean(r['scatter']) for r in sel]):.3f} |")
    print("Per structure, change in Dice (points) from keeping the largest component:")
    for direction in dict.fromkeys(r["direction"] for r in rows):
        for method in dict.fromkeys(r["method"] for r in rows):
            sel = [r for r in rows if r["direction"] == direction and r["method"] == method]
            if sel:
                per = [100 * _mean([r["dice_lcc"][i] - r["dice"][i] for r in sel]) for i in range(len(labels) - 1)]
                print(f"  {direction} {method}: " + ", ".join(f"{n} {v:+.1f}" for n, v in zip(labels[1:], per)))


if __name__ == "__main__":
    sys.exit(main())
