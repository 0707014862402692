"""Label-free signs of a wrong mask in one piece, measured on an experiment's development subjects.

    python bench/mask_signals.py runs/abd [--split val|test] [--seeds 0,1,2] [--methods noadapt,adabn,tent,adaent]
    python bench/mask_signals.py --rows bench/mask_signals_val.json     # the tables again, no prediction

A scattered mask is warned about (``sfda predict``, :mod:`sfda.metrics.components`); a structure
segmented in one piece but at the wrong place, or too small, is not. This bench predicts the target
domain's **validation** subjects (``--split test``: its test subjects, to report what the validation
subjects chose, never to choose) of every run of a finished ``sfda experiment`` folder as ``sfda
predict`` does, and records per structure mask, beside its Dice (3D, the scan's own grid) and scatter,
label-free signals computed from what a model card carries:

- ``volume``: the mask's volume in mL against the range of the structure's volumes in the source
  model's training labels (here read from the source domain's training label files, as
  ``train-source`` stores them in the card);
- ``atlas``: the share of its voxels inside the source atlas in the plane (the trust check's atlas);
- ``along``: the share of its voxels on slices whose relative position along the axis holds the
  structure in the source labels (the card's position table);
- ``entropy``: the mean entropy of the predicted probabilities over its voxels, as a share of ln K
  (the model's own uncertainty where it put the structure).

It prints how many of the masks with a Dice under 0.5 each rule flags among those the scatter warning
misses, and how many good masks it flags. Writes ``bench/mask_signals_<split>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from sfda.inference import stream_volume
from sfda.io.volume import read_volume
from sfda.metrics.components import SCATTER_MAX, split
from sfda.metrics.overlap import dice
from sfda.data.slices import relative_positions
from sfda.metrics.plausibility import volume_ranges, volumes_ml
from sfda.metrics.trust import MIN_FREQ, MIN_PIXELS, as_planes, atlas_share

from largest_component import experiment_models  # noqa: E402  (bench/, beside this script)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = str(ROOT / "bench" / "mask_signals_{}.json")
BAD = 0.5


def plane_share(labels: np.ndarray, axis: int, atlas: dict) -> list[float | None]:
    """Per foreground class, the share of a volume's predicted voxels inside the source atlas's area in
    the plane (slices along ``axis``, read at their relative position; None for a class under
    :data:`~sfda.metrics.trust.MIN_PIXELS` voxels)."""
    planes = as_planes(labels[None], axis)
    return atlas_share(planes, np.ones(planes.shape, dtype=bool), atlas)


def along_share(labels: np.ndarray, axis: int, table: dict) -> list[float | None]:
    """Per foreground class, the share of a volume's predicted voxels on slices whose relative position along
    ``axis`` holds the class in the source labels (its mean ratio there at least :data:`MIN_FREQ` of its
    largest, in the position table); None for a class under ``MIN_PIXELS`` voxels."""
    n = labels.shape[axis]
    pos = relative_positions(np.arange(n), np.full(n, n))
    centres, means = np.asarray(table["centres"]), np.asarray(table["means"], dtype=np.float64)
    other = tuple(i for i in range(labels.ndim) if i != axis)
    out = []
    for c in range(1, means.shape[1]):
        per_slice = (labels == c).sum(axis=other)
        total = int(per_slice.sum())
        if total < MIN_PIXELS:
            out.append(None)
            continue
        ratio = np.interp(pos, centres, means[:, c])
        held = ratio >= MIN_FREQ * max(float(means[:, c].max()), 1e-12)
        out.append(float(per_slice[held].sum() / total))
    return out


def training_ranges(cl, subjects: list[str], k: int) -> list:
    labels = [read_volume(c.label, dtype=None) for c in cl.cases if c.subject in subjects]
    return volume_ranges([(lab.array, lab.spacing) for lab in labels], k)


def mask_rows(model, card, case, modality: str, truth: np.ndarray, ranges, k: int) -> list[dict]:
    vol = read_volume(case.images[modality], dtype=None, check_finite=False)
    out = stream_volume(model, card.slicing, vol.array, case.images[modality], spacing=vol.spacing, entropy=True)
    pred, entropy = out["labels"], out["entropy"] / np.log(k)
    axis = card.slicing.axis
    ml = volumes_ml(pred, vol.spacing, k)
    atlas = plane_share(pred, axis, card.source.atlas) if card.source.atlas else [None] * (k - 1)
    along = along_share(pred, axis, card.source.position) if card.source.position else [None] * (k - 1)
    rows = []
    for c in range(1, k):
        rows.append({"structure": c, "dice": dice(pred == c, truth == c), "scatter": split(pred == c)[1],
                     "ml": ml[c - 1], "ml_range": ranges[c - 1], "atlas": atlas[c - 1], "along": along[c - 1],
                     "truth_ml": volumes_ml(truth, vol.spacing, k)[c - 1],
                     "entropy": float(entropy[pred == c].mean()) if (pred == c).any() else None})
    return rows


def predict_all(run: Path, split_name: str, seeds: list[int], methods: list[str]) -> dict:
    rows, ranges, labels = [], {}, None
    for it in experiment_models(run, split_name, seeds, methods):
        labels, k = it["labels"], len(it["labels"])
        if it["source"] not in ranges:
            ranges[it["source"]] = training_ranges(it["case_list"], it["config"]["domains"][it["source"]]["train"], k)
        for case in it["cases"]:
            for r in mask_rows(it["model"], it["card"], case, it["modality"], it["truths"][case.case_id],
                               ranges[it["source"]], k):
                rows.append({"direction": it["direction"], "seed": it["seed"], "method": it["method"],
                             "subject": case.subject, **r})
    return {"run": str(run), "split": split_name, "labels": labels, "rows": rows}


def rules(low: float, high: float, plane: float, along: float, unsure: float) -> dict:
    """Each candidate rule, a function of one row: whether it flags the mask."""
    def small(r):
        return r["ml"] < low * r["ml_range"][0]

    def large(r):
        return r["ml"] > high * r["ml_range"][1]

    def off_plane(r):
        return r["atlas"] is not None and r["atlas"] < plane

    def off_axis(r):
        return r["along"] is not None and r["along"] < along

    def uncertain(r):
        return r.get("entropy") is not None and r["entropy"] > unsure

    return {f"volume < {low} x training min": small, f"volume > {high} x training max": large,
            f"atlas share < {plane}": off_plane, f"share along the axis < {along}": off_axis,
            f"mean entropy in the mask > {unsure} x ln K": uncertain,
            "any of these": lambda r: small(r) or large(r) or off_plane(r) or off_axis(r) or uncertain(r)}


def _shipped(rows: list[dict], low: float) -> None:
    """What sfda predict's two warnings (scattered; under ``low`` of the training minimum) say about all masks."""
    def warned(r):
        return (r["scatter"] or 0) > SCATTER_MAX or r["ml"] < low * r["ml_range"][0]

    bad, good = [r for r in rows if r["dice"] < BAD], [r for r in rows if r["dice"] >= BAD]
    print(f"the scattered or undersized warning: {sum(map(warned, bad))} of the {len(bad)} masks under {BAD} "
          f"({len(bad) - sum(map(warned, bad))} without a warning), {sum(map(warned, good))} of the {len(good)} others")


def report(result: dict, low: float, high: float, plane: float, along: float, unsure: float) -> dict:
    rows = result["rows"]
    missed = [r for r in rows if not (r["scatter"] or 0) > SCATTER_MAX]  # what the scatter warning lets pass
    bad = [r for r in missed if r["dice"] < BAD]
    good = [r for r in missed if r["dice"] >= BAD]
    print(f"{result['split']} subjects: {len(rows)} structure masks; {len(missed)} not scattered, "
          f"{len(bad)} of them with a Dice under {BAD}")
    _shipped(rows, low)
    print("| rule | bad masks flagged | good masks flagged | share of flagged masks that are bad |\n"
          "|---|---:|---:|---:|")
    out = {}
    for name, rule in rules(low, high, plane, along, unsure).items():
        b, g = sum(map(rule, bad)), sum(map(rule, good))
        share = b / (b + g) if b + g else float("nan")
        print(f"| {name} | {b} of {len(bad)} | {g} of {len(good)} | {100 * share:.0f} % |")
        out[name] = {"bad": b, "bad_of": len(bad), "good": g, "good_of": len(good)}
    names = result["labels"]
    print("Masks under the bound no rule flags (structure, Dice, mL vs training range, atlas, along):")
    every = rules(low, high, plane, along, unsure)["any of these"]
    for r in [r for r in bad if not every(r)][:40]:
        lo, hi = r["ml_range"]
        print(f"  {r['direction']} s{r['seed']} {r['method']} {r['subject']} {names[r['structure']]}: Dice "
              f"{r['dice']:.2f}, {r['ml']:.0f} mL ({lo:.0f}-{hi:.0f}; truth {r['truth_ml']:.0f}), "
              f"atlas {r['atlas'] if r['atlas'] is None else round(r['atlas'], 2)}, "
              f"along {r['along'] if r['along'] is None else round(r['along'], 2)}")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", nargs="?", help="a finished `sfda experiment` folder")
    p.add_argument("--rows", help="a JSON this bench wrote: report it again without predicting")
    p.add_argument("--split", default="val", choices=("val", "test"))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--methods", default="noadapt,adabn,tent,adaent")
    p.add_argument("--low", type=float, default=0.5, help="flag a volume under LOW x the training minimum")
    p.add_argument("--high", type=float, default=2.0, help="flag a volume over HIGH x the training maximum")
    p.add_argument("--plane", type=float, default=0.7, help="flag an atlas share under this")
    p.add_argument("--along", type=float, default=0.7, help="flag a share along the axis under this")
    p.add_argument("--entropy", type=float, default=0.3,
                   help="flag a mean entropy inside the mask (a share of ln K) over this")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.rows:
        result = json.loads(Path(args.rows).read_text())
    else:
        if not args.run:
            p.error("give a run folder, or --rows")
        result = predict_all(Path(args.run), args.split, [int(s) for s in args.seeds.split(",")],
                             args.methods.split(","))
        Path(RESULTS.format(args.split)).write_text(json.dumps(result, indent=1) + "\n")
    result["rules"] = report(result, args.low, args.high, args.plane, args.along, args.entropy)
    return 0


if __name__ == "__main__":
    sys.exit(main())
