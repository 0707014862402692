"""Development comparison of source-model training recipes on the abdomen (one domain's own labels).

Trains ``sfda train-source`` on a domain's training subjects of ``configs/abdomen-ct-mr.yaml`` with a
named recipe, scores the domain's *validation* (development) subjects in 3D after every few epochs,
and prints the in-domain Dice per organ (full volume, and over the organ's slices) with the minutes
the training took. No test subject is read: this is where the recipe's settings are chosen.

    python bench/recipe_dev.py --domain mr --recipe plain --out runs/recipe-dev
    python bench/recipe_dev.py --domain mr --recipe nnunet --out runs/recipe-dev

Writes ``OUT/<domain>-<recipe>-seed<k>/`` (the run, its ``eval/``) and ``bench/recipe_dev.json``
(one entry per run: settings, minutes, Dice per organ, the validation curve against minutes).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "abdomen-ct-mr.yaml"
RESULTS = ROOT / "bench" / "recipe_dev.json"

#: the shipped source settings (plain) and the field's recipe (nnU-Net 2D's choices, no mirroring:
#: the kidneys come in pairs)
NNUNET = ["loss=dice_ce", "oversample_fg=0.33", "spatial.rotate=0.2", "spatial.rotate_deg=30",
          "spatial.scale=0.2", "optim.optimizer=sgd", "optim.momentum=0.99", "optim.nesterov=true",
          "optim.lr=0.01", "optim.schedule=poly", "optim.weight_decay=3e-5"]
#: the same recipe with the shipped optimiser (Adam, lr 1e-3) and the poly schedule: nnU-Net's SGD
#: (lr 1e-2, momentum 0.99) predicted background only for 11 epochs here (~250 steps, MR)
RECIPE = ["loss=dice_ce", "oversample_fg=0.33", "spatial.rotate=0.2", "spatial.rotate_deg=30",
          "spatial.scale=0.2", "optim.schedule=poly"]
#: the recipe before these options existed (cross-entropy, no oversampling, no spatial changes, flat lr),
#: whatever the config's source section now says
PLAIN = ["loss=ce", "oversample_fg=0", "spatial.rotate=0", "spatial.scale=0", "optim.schedule=none"]
RECIPES = {"plain": PLAIN, "nnunet": NNUNET, "recipe": RECIPE,
           "recipe-192": [*RECIPE, "data.size=[192, 192]"],
           "recipe-long": [*RECIPE, "optim.epochs=60"]}


def _domain(name: str) -> dict:
    import yaml

    cfg = yaml.safe_load(CONFIG.read_text())
    dom = cfg["domains"][name]
    return {**dom, "root": str((ROOT / dom["root"]).resolve()), "slicing": cfg["slicing"], "source": cfg["source"]}


def _overrides(dom: dict) -> list[str]:
    """The config's source section (network, intensity augmentation, optimiser) and slicing as
    train-source keys; the recipe's own keys come from RECIPES."""
    src, s = dom["source"], dom["slicing"]
    out = [f"net={src['net']}", f"augment={str(src['augment']).lower()}", f"invert={src['invert']}",
           f"remap={src['remap']}", f"data.axis={s['axis']}", f"data.pad_multiple={s['pad_multiple']}",
           f"data.size={s['size']}"]
    return out + [f"optim.{k}={v}" for k, v in src["optim"].items() if k in ("lr", "epochs", "batch_size",
                                                                             "max_steps_per_epoch")]


def run(domain: str, recipe: str, out: Path, seed: int) -> dict:
    from sfda.config import EvaluateConfig, TrainConfig, load_config
    from sfda.stages.data import index_cases
    from sfda.stages.evaluate import evaluate
    from sfda.stages.report import read_log
    from sfda.stages.train import train_source

    dom = _domain(domain)
    cases = out / f"{domain}.json"
    if not cases.exists():
        index_cases(dom["root"], str(cases), "nnunet")
    folder = out / f"{domain}-{recipe}-seed{seed}"
    cfg = load_config(TrainConfig, None, [
        f"data.cases={cases}", f"data.modality={dom['modality']}", f"data.subjects={dom['train']}",
        f"data.val_subjects={dom['val']}", f"seed={seed}", f"out={folder}", f"data.cache={out / 'cache'}",
        *_overrides(dom), *RECIPES[recipe]])
    cfg.resume = (folder / "stage.json").exists()
    t0 = time.perf_counter()
    train_source(cfg)
    minutes = (time.perf_counter() - t0) / 60
    ev = load_config(EvaluateConfig, None, [
        f"checkpoint={folder / 'selected.pt'}", f"data.cases={cases}", f"data.modality={dom['modality']}",
        f"data.subjects={dom['val']}", f"out={folder / 'eval'}", "overwrite=true"])
    summary = evaluate(ev)["summary"]
    curve = minutes_curve(read_log(folder))
    return {"domain": domain, "recipe": recipe, "seed": seed, "overrides": RECIPES[recipe],
            "minutes": round(minutes, 1), "summary": summary, "curve": curve}


def minutes_curve(log: list[dict]) -> list[list]:
    """[minutes so far, val_dice] after each epoch of a training log: its train, validation and
    checkpoint seconds, so a resumed run counts only the epochs' own time."""
    elapsed, curve = 0.0, []
    for row in log:
        elapsed += (row.get("train_s", 0) + row.get("val_s", 0) + row.get("ckpt_s", 0)) / 60
        curve.append([round(elapsed, 2), row.get("val_dice")])
    return curve


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--domain", choices=("ct", "mr"), required=True)
    p.add_argument("--recipe", choices=sorted(RECIPES), required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/recipe-dev")
    args = p.parse_args(argv)
    result = run(args.domain, args.recipe, Path(args.out), args.seed)
    rows = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    rows = [r for r in rows if (r["domain"], r["recipe"], r["seed"]) != (args.domain, args.recipe, args.seed)]
    RESULTS.write_text(json.dumps([*rows, result], indent=1) + "\n")
    print(table(rows + [result]))
    return 0


def table(rows: list[dict]) -> str:
    """One line per run: minutes, then Dice (%) per organ and their mean, full volume / organ slices."""
    organs = [k for k in rows[0]["summary"] if k != "mean"]
    head = "| domain | recipe | seed | minutes | " + " | ".join(organs) + " | mean |"
    lines = [head, "|" + "---|" * (5 + len(organs))]
    for r in rows:
        s = r["summary"]
        cells = [f"{100 * s[o]['dice']['mean']:.1f} / {100 * s[o]['dice_organ_slices']['mean']:.1f}"
                 for o in [*organs, "mean"] if "dice_organ_slices" in s[o]]
        lines.append(f"| {r['domain']} | {r['recipe']} | {r['seed']} | {r['minutes']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n(Dice %, development subjects: full volume / over each organ's slices)"


if __name__ == "__main__":
    sys.exit(main())
