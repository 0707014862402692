"""AdaEnt's settings on strong source models, on the abdomen's development subjects.

    python bench/adaent_dev.py --run runs/abd --direction ct-mr --variant lam1 "method.lam=1.0" \
        --variant batch "method.kl_scope=batch" [--seeds 0,1,2] [--out runs/adaent-dev]

The abdomen config's AdaEnt settings (λ = 10, per-image KL, batch-norm statistics from AdaBN kept
fixed, 6 epochs, the last epoch) were chosen on the weak models of the first recipe. This reruns the
adaptation stage of a finished ``sfda experiment`` (its source models, prior tables and adapted runs'
configs, ``RUN/<direction>/seed<k>/adaent/config.yaml``), once per variant (dotted overrides) and
seed, and scores every adapted model (``selected.pt``, after the trust check) with ``sfda evaluate``
on the target domain's **validation** subjects (``domains.<target>.val``; the test subjects choose
nothing). The baseline row is the experiment's own AdaEnt and NoAdaptation, scored the same way.
Mean Dice over the structures and subjects (3D, each scan's own grid). Prints a table, writes
``OUT/adaent_dev.json`` and ``bench/adaent_dev.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "adaent_dev.json"


def sfda(argv: list[str], log: Path) -> None:
    with open(log, "w") as fh:
        if subprocess.run([sys.executable, "-m", "sfda", *argv], stdout=fh, stderr=subprocess.STDOUT).returncode:
            raise SystemExit(f"sfda {argv[0]} failed: see {log}")


def score(checkpoint: Path, run: Path, modality: str, subjects: list[str], out: Path) -> float:
    """Mean 3D Dice over structures and subjects, from `sfda evaluate`'s metrics.json."""
    if not (out / "metrics.json").exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        sfda(["evaluate", "--checkpoint", str(checkpoint), "--cases", str(run / "cases.json"), "--modality", modality,
              "--subjects", ",".join(subjects), "--out", str(out), "--overwrite"], out.with_suffix(".log"))
    rows = json.loads((out / "metrics.json").read_text())["per_subject"]
    return float(np.mean([r["dice"] for r in rows]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="a finished `sfda experiment` folder")
    p.add_argument("--direction", default="ct-mr")
    p.add_argument("--variant", nargs="+", action="append", default=[], metavar=("NAME", "KEY=VALUE"),
                   help="a name and its dotted overrides of the adapt config")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--out", default="runs/adaent-dev")
    args = p.parse_args(argv)
    run, out = Path(args.run), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    src, tgt = args.direction.split("-")
    modality, subjects = cfg["domains"][tgt]["modality"], cfg["domains"][tgt]["val"]
    seeds = [int(s) for s in args.seeds.split(",")]
    table: dict[str, list[float]] = {"noadapt": [], "adaent (config)": []}
    for seed in seeds:
        base = run / args.direction / f"seed{seed}"
        table["noadapt"].append(score(run / "models" / src / f"seed{seed}" / "last.pt", run, modality, subjects,
                                      out / "noadapt" / f"seed{seed}"))
        table["adaent (config)"].append(score(base / "adaent" / "selected.pt", run, modality, subjects,
                                              out / "adaent" / f"seed{seed}"))
    for name, *overrides in args.variant:
        table[name] = []
        for seed in seeds:
            folder = out / name / f"seed{seed}"
            if not (folder / "adapt" / "done.json").exists():
                folder.mkdir(parents=True, exist_ok=True)
                sfda(["adapt", "--config", str(run / args.direction / f"seed{seed}" / "adaent" / "config.yaml"),
                      *overrides, "--out", str(folder / "adapt"), "--overwrite"], folder / "adapt.log")
            table[name].append(score(folder / "adapt" / "selected.pt", run, modality, subjects, folder / "eval"))
    result = {"run": str(run), "direction": args.direction, "subjects": subjects, "seeds": seeds,
              "variants": {n: o for n, *o in args.variant}, "dice": table}
    for path in (out / "adaent_dev.json", RESULTS):
        path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{args.direction}, development subjects {', '.join(subjects)}: mean 3D Dice (%) over the structures")
    print("| variant | overrides | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std |")
    print("|---|---|" + "---:|" * (len(seeds) + 1))
    over = result["variants"]
    for name, values in table.items():
        v = 100 * np.asarray(values)
        print(f"| {name} | {' '.join(over.get(name, [])) or '-'} | " + " | ".join(f"{x:.1f}" for x in v)
              + f" | {v.mean():.1f} ± {v.std(ddof=1) if len(v) > 1 else 0:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
