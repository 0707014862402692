"""The curve of in-domain Dice against training minutes, from ``bench/recipe_dev.json``.

    python bench/recipe_curve.py [--out docs/results/abdomen_training_curve.png]

One line per development run of ``bench/recipe_dev.py`` (domain, recipe): the validation Dice the
training logs after each epoch (the development subjects, as the training scores them), against the
minutes spent so far; a marker at the end is the run's mean Dice over the four organs in 3D on the
same development subjects (``sfda evaluate``). No test subject is read. Prints the end points.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sfda.report.curves import new_figure, save_png  # noqa: E402

RESULTS = ROOT / "bench" / "recipe_dev.json"
ORGANS = ("liver", "right_kidney", "left_kidney", "spleen")


def mean_dice(summary: dict) -> float:
    """Mean 3D Dice over the four organs of one ``sfda evaluate`` summary."""
    return sum(summary[o]["dice"]["mean"] for o in ORGANS) / len(ORGANS)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "docs" / "results" / "abdomen_training_curve.png"))
    args = p.parse_args(argv)
    runs = json.loads(RESULTS.read_text())
    fig = new_figure(7.0, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    print("| domain | recipe | minutes | last validation Dice | 3D mean Dice (development) |\n|---|---|---:|---:|---:|")
    for run in runs:
        minutes, dice = zip(*run["curve"])
        label = f"{run['domain'].upper()} {run['recipe']}" + (f" seed {run['seed']}" if run["seed"] else "")
        line, = ax.plot(minutes, [100 * d for d in dice], label=label, linewidth=1.4)
        end = 100 * mean_dice(run["summary"])
        ax.plot([run["minutes"]], [end], marker="o", color=line.get_color())
        print(f"| {run['domain']} | {run['recipe']} | {run['minutes']} | {100 * dice[-1]:.1f} | {end:.1f} |")
    ax.axhline(80, color="grey", linestyle="--", linewidth=0.8)
    ax.axvline(45, color="grey", linestyle=":", linewidth=0.8)
    ax.set_xlabel("training minutes (2-core CPU, one torch thread)")
    ax.set_ylabel("Dice (%)")
    ax.set_ylim(0, 100)
    ax.set_title("In-domain Dice against training time (development subjects)")
    ax.legend(fontsize=8, loc="lower right")
    print(f"wrote {save_png(fig, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
