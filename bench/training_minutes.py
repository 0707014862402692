"""How long each source model of a finished experiment took to train, and what it reached.

    python bench/training_minutes.py runs/abd [--out bench/training_minutes.json]

For every ``RUN/models/<domain>/seed<k>`` trained by ``sfda experiment``: the epochs, the minutes
(the sum of each epoch's train, validation and checkpoint seconds in its ``log.jsonl``, so a run
resumed in another session counts only its epochs, not the pause), the last epoch's ``val_dice``
(full-volume 3D Dice on the domain's validation subjects) and the best one with its epoch. The
minutes are those of the machine and thread count the experiment ran on.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from recipe_dev import minutes_curve  # noqa: E402

from sfda.stages.report import read_log  # noqa: E402


def model_rows(run: Path) -> list[dict]:
    """One row per trained model folder of ``run`` (domain, seed, epochs, minutes, val_dice)."""
    rows = []
    for folder in sorted((run / "models").glob("*/seed*")):
        if not (folder / "done.json").exists():
            continue  # still training, or stopped
        curve = minutes_curve(read_log(folder))
        dice = [d for _, d in curve if d is not None]
        best = max(range(len(curve)), key=lambda i: -1 if curve[i][1] is None else curve[i][1])
        rows.append({"domain": folder.parent.name, "seed": int(folder.name[len("seed"):]), "epochs": len(curve),
                     "minutes": curve[-1][0] if curve else 0.0,
                     "last_val_dice": dice[-1] if dice else None,
                     "best_val_dice": curve[best][1] if dice else None, "best_epoch": best + 1 if dice else None})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| domain | seed | epochs | minutes | last val Dice (%) | best val Dice (%) (epoch) |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        last = "-" if r["last_val_dice"] is None else f"{100 * r['last_val_dice']:.1f}"
        best = "-" if r["best_val_dice"] is None else f"{100 * r['best_val_dice']:.1f} ({r['best_epoch']})"
        lines.append(f"| {r['domain']} | {r['seed']} | {r['epochs']} | {r['minutes']:.1f} | {last} | {best} |")
    for dom in sorted({r["domain"] for r in rows}):
        minutes = [r["minutes"] for r in rows if r["domain"] == dom]
        spread = f" ± {statistics.stdev(minutes):.1f}" if len(minutes) > 1 else ""
        lines.append(f"\n{dom}: {statistics.mean(minutes):.1f}{spread} minutes per model over {len(minutes)} seed(s), "
                     f"longest {max(minutes):.1f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="an experiment's output folder (holds models/)")
    p.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = p.parse_args(argv)
    if not (args.run / "models").is_dir():
        p.error(f"{args.run} holds no models/ folder: give the --out folder of `sfda experiment`")
    rows = model_rows(args.run)
    print(table(rows))
    if args.out:
        args.out.write_text(json.dumps({"run": str(args.run), "models": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
