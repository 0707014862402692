"""Speed of 3D prediction: `sfda predict --nnunet` against nnU-Net's own predictor on one scan, with
and without mirroring, and what per-scan adaptation (`sfda predict --adapt tent`) adds to a prediction.

    R=$nnUNet_results/Dataset901_Tiny/nnUNetTrainer_sfdaTiny__nnUNetPlans__3d_fullres
    python bench/nnunet_speed.py --folder $R \
        --nnunet-python /path/to/nnunet-venv/bin/python [--scan CT.nii.gz] [--threads 1] [--out runs/nnunet-speed]

The scan is by default the largest CT of the shared abdominal data (``../shared/data/abdomen-ct-mr``,
by voxel count). The network is the folder's (weights and architecture, fold 0); its plans are copied
into ``OUT/folder`` with the configuration's ``spacing`` and ``patch_size`` set to ``--spacing`` and
``--patch`` (nnU-Net's axis order), so that one scan takes minutes, not hours, on one CPU thread.
Both predictors read that copy. Every figure is a whole command's wall time (start-up, reading,
preprocessing, the sliding window, resampling back, writing), each command run ``--repeat`` times, the
fastest kept; both tools run with the same number of torch threads, one after the other. Quote the
ratios: they are measured in one run on one machine, the absolute times are not comparable between
machines. Prints a table, writes ``OUT/speed.json`` and ``bench/nnunet_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from nnunet_agreement import NNUNET, agreement

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "nnunet_speed.json"
CT = ROOT.parent / "shared" / "data" / "abdomen-ct-mr" / "ct" / "imagesTr"


def largest_scan(folder: Path) -> Path:
    files = sorted(folder.glob("*.nii.gz"))
    if not files:
        raise SystemExit(f"no .nii.gz scans in {folder}; give --scan")
    return max(files, key=lambda f: int(np.prod(nib.load(f).shape)))


def speed_folder(folder: Path, out: Path, spacing: list[float], patch: list[int]) -> Path:
    """A copy of ``folder`` (fold 0 linked) whose configuration predicts at ``spacing`` with ``patch``."""
    configuration = folder.name.split("__")[-1]
    copy = out / "folder" / folder.name
    if copy.exists():
        shutil.rmtree(copy)
    (copy / "fold_0").mkdir(parents=True)
    plans = json.loads((folder / "plans.json").read_text())
    plans["configurations"][configuration].update({"spacing": spacing, "patch_size": patch})
    (copy / "plans.json").write_text(json.dumps(plans, indent=1))
    shutil.copy(folder / "dataset.json", copy / "dataset.json")
    os.symlink(folder / "fold_0" / "checkpoint_final.pth", copy / "fold_0" / "checkpoint_final.pth")
    return copy


def timed(argv: list[str], threads: int, repeat: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "nnUNet_raw": "", "nnUNet_preprocessed": "", "nnUNet_results": ""}
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--folder", required=True, help="an nnU-Net v2 3D result folder (TRAINER__PLANS__CONFIG)")
    p.add_argument("--nnunet-python", required=True, help="a Python that imports nnunetv2")
    p.add_argument("--scan", help="the scan (default: the largest CT of ../shared/data/abdomen-ct-mr)")
    p.add_argument("--spacing", default="6,3.2,3.2", help="the configuration's spacing, nnU-Net's (z, y, x), mm")
    p.add_argument("--patch", default="32,64,64", help="the configuration's patch size, nnU-Net's (z, y, x)")
    p.add_argument("--steps", type=int, default=10, help="per-scan adaptation steps (sfda's default)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--out", default="runs/nnunet-speed")
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    scan = Path(args.scan).resolve() if args.scan else largest_scan(CT)
    spacing = [float(v) for v in args.spacing.split(",")]
    patch = [int(v) for v in args.patch.split(",")]
    folder = speed_folder(Path(args.folder).resolve(), out, spacing, patch)
    scans = out / "scans"
    shutil.rmtree(scans, ignore_errors=True)
    scans.mkdir(parents=True)
    os.symlink(scan, scans / "case_0000.nii.gz")
    sfda = [sys.executable, "-m", "sfda", "predict", "--nnunet", str(folder), str(scans / "case_0000.nii.gz"),
            "--overwrite"]
    runs = {}
    for mirror in (False, True):
        tag = "mirror" if mirror else "no-mirror"
        runs[f"nnunet_{tag}"] = timed([args.nnunet_python, "-c", NNUNET, str(folder), "0", str(scans),
                                       str(out / f"nnunet-{tag}"), "1" if mirror else "0"], args.threads, args.repeat)
        runs[f"sfda_{tag}"] = timed([*sfda, "--out", str(out / f"sfda-{tag}"), *([] if mirror else ["--no-mirroring"])],
                                    args.threads, args.repeat)
    runs["sfda_adapt_tent"] = timed([*sfda, "--out", str(out / "sfda-tent"), "--no-mirroring", "--adapt", "tent",
                                     "--steps", str(args.steps)], args.threads, args.repeat)
    agree = {tag: agreement(out / f"nnunet-{tag}" / "case.nii.gz", out / f"sfda-{tag}" / "case.nii.gz")
             for tag in ("no-mirror", "mirror")}
    result = {"scan": scan.name, "shape": list(nib.load(scan).shape), "folder": Path(args.folder).name,
              "spacing": spacing, "patch": patch, "threads": args.threads, "repeat": args.repeat,
              "adapt_steps": args.steps, "seconds": runs, "agreement": agree,
              "ratios": {"sfda_over_nnunet_no_mirror": runs["sfda_no-mirror"] / runs["nnunet_no-mirror"],
                         "sfda_over_nnunet_mirror": runs["sfda_mirror"] / runs["nnunet_mirror"],
                         "mirror_over_no_mirror_sfda": runs["sfda_mirror"] / runs["sfda_no-mirror"],
                         "mirror_over_no_mirror_nnunet": runs["nnunet_mirror"] / runs["nnunet_no-mirror"],
                         "adapt_tent_over_predict": runs["sfda_adapt_tent"] / runs["sfda_no-mirror"]}}
    (out / "speed.json").write_text(json.dumps(result, indent=1) + "\n")
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    r = result["ratios"]
    print(f"{scan.name} {result['shape']}, {Path(args.folder).name} at spacing {spacing} mm, patch {patch}, "
          f"{args.threads} thread(s), fastest of {args.repeat}")
    print("| command | seconds | voxels agreeing with nnU-Net |\n|---|---:|---:|")
    for tag in ("no-mirror", "mirror"):
        print(f"| nnUNetPredictor, {tag} | {runs[f'nnunet_{tag}']:.1f} | |")
        print(f"| sfda predict, {tag} | {runs[f'sfda_{tag}']:.1f} | {100 * agree[tag]:.3f} % |")
    print(f"| sfda predict --adapt tent --steps {args.steps}, no-mirror | {runs['sfda_adapt_tent']:.1f} | |")
    print(f"sfda / nnU-Net: {r['sfda_over_nnunet_no_mirror']:.2f} (no mirroring), {r['sfda_over_nnunet_mirror']:.2f} "
          f"(mirroring); mirroring / none: sfda {r['mirror_over_no_mirror_sfda']:.2f}, nnU-Net "
          f"{r['mirror_over_no_mirror_nnunet']:.2f}; per-scan TENT / plain prediction: "
          f"{r['adapt_tent_over_predict']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
