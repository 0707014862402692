"""Speed of the abdominal benchmark on this machine, from a finished run of configs/abdomen-ct-mr.yaml.

    python bench/abdomen_speed.py runs/abd --direction ct-mr --seed 0 [--out bench/abdomen_speed.json]

Figures, all from one run of this script except the experiment's own epoch times:
- source training: slices/s of the run's epochs (log.jsonl) against the bare network step
  (forward + backward + Adam on batches already in memory) of the same network at the same
  slice size, measured here; one epoch's time;
- the wall time of the direction and seed: the span of its stage folders' stage.json (start)
  and done.json (end) times, the Oracle's and the scoring included;
- `sfda predict` with the run's source model on the largest scan of the source domain
  (fresh process: seconds and peak RSS).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from measure import bare_step, child_cli  # noqa: E402

from sfda.engine.checkpoint import load_checkpoint
from sfda.io.cases import load_cases  # noqa: E402


def _predict(ckpt: Path, scan: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        return child_cli(["predict", "--checkpoint", str(ckpt), scan, "--out", tmp])


def wall_time(folders: list[Path]) -> float:
    """From the first stage's start to the last stage's end, over ``folders`` and their subfolders."""
    starts = [p.stat().st_mtime for f in folders for p in f.rglob("stage.json")]
    ends = [p.stat().st_mtime for f in folders for p in f.rglob("*done.json")]
    return max(ends) - min(starts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("experiment", type=Path)
    ap.add_argument("--direction", default="ct-mr")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("bench/abdomen_speed.json"))
    a = ap.parse_args(argv)
    run = a.experiment / a.direction / f"seed{a.seed}"
    src = run / "source"
    if not (src / "last.pt").exists():
        print(f"error: {src / 'last.pt'} not found: give a finished run of configs/abdomen-ct-mr.yaml "
              f"(sfda experiment configs/abdomen-ct-mr.yaml --out runs/abd) and its --direction / --seed",
              file=sys.stderr)
        return 2
    cfg = yaml.safe_load((src / "config.yaml").read_text())
    network = load_checkpoint(src / "last.pt")["card"].network
    log = [json.loads(x) for x in (src / "log.jsonl").read_text().splitlines() if x.strip()]
    cl = load_cases(a.experiment / "cases.json")
    chosen = [c for c in cl.cases if c.subject in cfg["data"]["subjects"]]
    n_slices = sum(c.shape[cfg["data"]["axis"]] for c in chosen)
    size = tuple(cfg["data"]["size"]) or (256, 256)
    epoch = sorted(r["train_s"] for r in log)[len(log) // 2]
    bare = bare_step(size[0], 10, network.name, network.args, cfg["optim"]["batch_size"])
    largest = max(chosen, key=lambda c: c.shape[0] * c.shape[1] * c.shape[2])
    target = a.direction.split("-")[1]
    res = {"network": network.name, "slice_size": list(size), "source_slices": n_slices,
           "source_epoch_s_median": epoch, "source_slices_per_s": n_slices / epoch,
           "bare_step_slices_per_s": bare, "source_vs_bare": n_slices / epoch / bare,
           "epoch_full_s_median": sorted(r["train_s"] + r.get("val_s", 0) + r.get("ckpt_s", 0)
                                         for r in log)[len(log) // 2],
           "direction_seed_wall_s": wall_time([run, a.experiment / f"oracle-{target}" / f"seed{a.seed}"]),
           "predict_largest": {"scan": largest.case_id, "shape": list(largest.shape),
                               **_predict(src / "last.pt", largest.images[cfg["data"]["modality"]])}}
    a.out.write_text(json.dumps(res, indent=1) + "\n")
    for k, v in res.items():
        print(f"{k:<28} {v:.3f}" if isinstance(v, float) else f"{k:<28} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
