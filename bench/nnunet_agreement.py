"""How far `sfda predict --nnunet` agrees with nnU-Net's own predictor on the same result folder.

    python bench/nnunet_agreement.py --make-raw $nnUNet_raw/Dataset901_Tiny      # the tiny dataset
    nnUNetv2_plan_and_preprocess -d 901 -c 2d 3d_fullres -np 1                   # in nnU-Net's venv
    nnUNetv2_train 901 2d 0 -tr nnUNetTrainer_5epochs -device cpu
    nnUNetv2_train 901 3d_fullres 0 -tr nnUNetTrainer_sfdaTiny -device cpu                 # and fold 1
    python bench/nnunet_agreement.py --folder $nnUNet_results/Dataset901_Tiny/nnUNetTrainer_5epochs__nnUNetPlans__2d \
        --nnunet-python /path/to/nnunet-venv/bin/python [--fold 0] [--out runs/nnunet-agreement]
    python bench/nnunet_agreement.py --folder .../nnUNetTrainer_sfdaTiny__nnUNetPlans__3d_fullres --fold 0,1 ...

``nnUNetTrainer_sfdaTiny`` is a brief trainer (a file beside nnU-Net's ``nnUNetTrainer_Xepochs.py`` in
its ``variants/training_length``): ``nnUNetTrainer`` with ``num_epochs = 3``,
``num_iterations_per_epoch = 60``, ``num_val_iterations_per_epoch = 10`` (about 9 minutes a fold on
one CPU thread; validation Dice 0.999 on this dataset).

nnU-Net runs in its own environment (``--nnunet-python``: a Python with nnunetv2 installed; 2.5.1
imports beside torch 2.13 once its ``PolyLRScheduler`` drops the ``verbose`` argument). Its
checkpoint is loaded with numpy's scalar and dtype types allow-listed, nothing else.

Scans are generated like the training cases of a tiny dataset (two ellipses on noise, 0.8 x 0.8 x 3
mm; the folder is meant to be one nnU-Net trained on such cases, see docs/guides/nnunet.md): the
training size, sizes that are no multiple of the network's stride, one smaller than the patch, one of
several patches, one at another spacing and one in a frame of zeros (:data:`SIZES`). Each is
predicted by ``nnUNetPredictor`` (tile step 0.5, Gaussian weighting) and by ``sfda predict --nnunet``,
with mirroring on and off; then the folder adapted by ``sfda adapt --nnunet`` (TENT, one epoch) and
exported is loaded by ``nnUNetPredictor`` and compared with ``sfda predict`` of the adapted
checkpoint. The figure is the share of voxels whose labels agree. Prints a table, writes
``OUT/agreement.json`` and ``bench/nnunet_agreement_<configuration>.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: the figures of each configuration: bench/nnunet_agreement_<configuration>.json
RESULTS = str(ROOT / "bench" / "nnunet_agreement_{}.json")
#: the generated scans' sizes (x, y, slices), in-plane spacing (mm) and a border of zeros (voxels, in
#: plane): the training cases' size, sizes that are no multiple of the strides, one smaller than the
#: patch, ones of several patches (in plane; along z for a 3D patch), one at another spacing than the
#: configuration's (resampled), and one inside a frame of zeros (nnU-Net crops to the non-zero box)
SIZES = [(48, 40, 12, 0.8, 0), (90, 76, 6, 0.8, 0), (61, 53, 8, 0.8, 0), (30, 26, 8, 0.8, 0),
         (110, 97, 4, 0.8, 0), (40, 34, 6, 1.0, 0), (57, 45, 29, 0.8, 0), (60, 52, 14, 0.8, 6)]

NNUNET = textwrap.dedent("""
    import sys, numpy as np, torch
    # nnU-Net's checkpoints hold numpy scalars in their log: allow those types and nothing else
    torch.serialization.add_safe_globals([np._core.multiarray.scalar, np.dtype, *{type(np.dtype(t)) for t in
                                          ("float32", "float64", "int64", "int32", "bool")}])
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    folder, fold, scans, out, mirror = sys.argv[1:6]
    p = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirror == "1",
                        perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
    p.initialize_from_trained_model_folder(folder, use_folds=tuple(int(f) for f in fold.split(",")),
                                           checkpoint_name="checkpoint_final.pth")
    p.predict_from_files(scans, out, save_probabilities=False, overwrite=True,
                         num_processes_preprocessing=1, num_processes_segmentation_export=1)
""")


def _case(rng, nx: int, ny: int, nz: int, mm: float, shift=(0, 0), full: bool = True):
    """An image and its labels: two ellipses (labels 1, 2) of 100 / 300 / 200 on noise (sd 20)."""
    scale = mm / 0.8  # in the training cases' voxels
    xs, ys = np.meshgrid(np.arange(nx) * scale, np.arange(ny) * scale, indexing="ij")
    cx, cy = nx * scale / 48, ny * scale / 40  # placed as in the 48 x 40 training cases, scaled
    dx, dy = shift
    first, second = (slice(1, nz - 1),) * 2 if full else (slice(2, 10), slice(4, 8))
    lab = np.zeros((nx, ny, nz), np.uint8)
    lab[((xs - 16 * cx - dx) / 8.0) ** 2 + ((ys - 20 * cy - dy) / 10.0) ** 2 < 1, first] = 1
    lab[((xs - 34 * cx - dx) / 6.0) ** 2 + ((ys - 18 * cy - dy) / 6.0) ** 2 < 1, second] = 2
    image = np.array([100.0, 300.0, 200.0])[lab] + rng.normal(0, 20, lab.shape)
    return image.astype(np.float32), lab, np.diag([mm, mm, 3.0, 1.0])


#: the channels of a dataset of ``--channels 2``: an MRI-like channel (z-scored by nnU-Net) and a
#: CT-like one (nnU-Net's CT normalisation: "CT" is the name its planner keys on)
CHANNELS = {"0": "MRI", "1": "CT"}


def second_channel(rng, lab: np.ndarray) -> np.ndarray:
    """A second contrast of the same labels: 10 / 60 / 150 on noise (sd 10)."""
    return (np.array([10.0, 60.0, 150.0])[lab] + rng.normal(0, 10, lab.shape)).astype(np.float32)


def make_raw(root: Path, n: int = 6, seed: int = 0, channels: int = 1) -> None:
    """The tiny nnU-Net raw dataset the folder is trained on: ``n`` cases of 48 x 40 x 12 voxels, in
    one channel or two (:data:`CHANNELS`)."""
    rng = np.random.default_rng(seed)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(exist_ok=True)
    for i in range(n):
        image, lab, affine = _case(rng, 48, 40, 12, 0.8, rng.integers(-3, 4, 2), full=False)
        nib.save(nib.Nifti1Image(image, affine), root / "imagesTr" / f"case{i}_0000.nii.gz")
        if channels == 2:
            nib.save(nib.Nifti1Image(second_channel(rng, lab), affine), root / "imagesTr" / f"case{i}_0001.nii.gz")
        nib.save(nib.Nifti1Image(lab, affine), root / "labelsTr" / f"case{i}.nii.gz")
    names = CHANNELS if channels == 2 else {"0": "MRI"}
    (root / "dataset.json").write_text(json.dumps({"channel_names": names, "numTraining": n,
                                                   "labels": {"background": 0, "a": 1, "b": 2},
                                                   "file_ending": ".nii.gz"}))


def make_scans(folder: Path, seed: int = 0, channels: int = 1) -> list[Path]:
    """Scans like the tiny dataset's training cases, in each of :data:`SIZES` (their first channels'
    files; with two channels, the second's frame of zeros is on x only, so the box nnU-Net crops both
    channels to is the union's)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, (nx, ny, nz, mm, border) in enumerate(SIZES):
        image, lab, affine = _case(rng, nx, ny, nz, mm)
        second = second_channel(rng, lab) if channels == 2 else None
        if border:
            image[:border], image[-border:], image[:, :border], image[:, -border:] = 0, 0, 0, 0
            if second is not None:
                second[:border], second[-border:] = 0, 0
        path = folder / f"scan{i}_0000.nii.gz"
        nib.save(nib.Nifti1Image(image, affine), path)
        if second is not None:
            nib.save(nib.Nifti1Image(second, affine), folder / f"scan{i}_0001.nii.gz")
        out.append(path)
    return out


def scan_files(scans: list[Path], channels: int) -> list[Path]:
    """Every channel's file of the scans (sfda groups them per case, as nnU-Net does)."""
    return [s.with_name(s.name.replace("_0000.", f"_{c:04d}.")) for s in scans for c in range(channels)]


def run_nnunet(python: str, folder: Path, fold: str, scans: Path, out: Path, mirror: bool) -> None:
    subprocess.run([python, "-c", NNUNET, str(folder), str(fold), str(scans), str(out), "1" if mirror else "0"],
                   check=True, env={"OMP_NUM_THREADS": "1", "nnUNet_raw": "", "nnUNet_preprocessed": "",
                                    "nnUNet_results": "", "PATH": "/usr/bin:/bin"})


def run_sfda(folder: Path, fold: str, scans: list[Path], out: Path, mirror: bool) -> None:
    from sfda.cli import main

    argv = ["predict", "--nnunet", str(folder), "--fold", str(fold), *map(str, scans), "--out", str(out),
            "--overwrite"]
    if main(argv + ([] if mirror else ["--no-mirroring"])) != 0:
        raise SystemExit(f"sfda predict failed on {folder}")


def agreement(a: Path, b: Path) -> float:
    x, y = np.asarray(nib.load(a).dataobj), np.asarray(nib.load(b).dataobj)
    if x.shape != y.shape:
        raise SystemExit(f"{a} and {b} differ in shape: {x.shape} vs {y.shape}")
    return float((x == y).mean())


def adapted_rows(python: str, folder: Path, fold: str, scans: list[Path], out: Path, channels: int = 1) -> list[dict]:
    """The folder adapted by ``sfda adapt --nnunet`` (TENT, one epoch, on the tiny dataset's cases) and
    exported as a result folder: nnUNetPredictor loads the export and agrees with ``sfda predict`` of
    the adapted checkpoint (mirroring on)."""
    from sfda.cli import main as sfda

    raw, cases, adapted = out / "raw", out / "cases.json", out / "adapted"
    if not raw.is_dir():
        make_raw(raw, channels=channels)
    modality = "+".join(CHANNELS.values()) if channels == 2 else "MRI"
    steps = [["data", "index", str(raw), "-o", str(cases), "--overwrite"],
             ["adapt", "--nnunet", str(folder), "--fold", fold, "--method", "tent", "--cases", str(cases),
              "--modality", modality, "--epochs", "1", "--batch-size", "2", "--out", str(adapted), "--overwrite"],
             ["predict", "--checkpoint", str(adapted / "selected.pt"), *map(str, scan_files(scans, channels)), "--out",
              str(out / "sfda-adapted"), "--overwrite"]]
    for argv in steps:
        if sfda(argv) != 0:
            raise SystemExit(f"sfda {argv[0]} failed")
    run_nnunet(python, adapted / "nnunet" / folder.name, fold, out / "scans", out / "nnunet-adapted", True)
    rows = []
    for scan, size in zip(scans, SIZES):
        name = scan.name.replace("_0000.nii.gz", ".nii.gz")
        rows.append({"scan": name, "size": list(size[:3]), "spacing_mm": size[3], "zero_border": size[4],
                     "mirroring": "adapted", "agreement": agreement(out / "nnunet-adapted" / name,
                                                                    out / "sfda-adapted" / name)})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--make-raw", metavar="FOLDER", help="only write the tiny raw dataset (nnUNet_raw/DatasetXXX_Name)")
    p.add_argument("--folder", help="an nnU-Net v2 result folder (TRAINER__PLANS__CONFIG)")
    p.add_argument("--nnunet-python", help="a Python that imports nnunetv2")
    p.add_argument("--fold", default="0", help="a fold (0) or several, averaged as an ensemble (0,1)")
    p.add_argument("--out", default="runs/nnunet-agreement")
    p.add_argument("--channels", type=int, choices=(1, 2), default=1,
                   help="with --make-raw: cases of one channel or two (MRI, CT); else the folder's count")
    args = p.parse_args(argv)
    if args.make_raw:
        make_raw(Path(args.make_raw), channels=args.channels)
        return 0
    if not (args.folder and args.nnunet_python):
        p.error("--folder and --nnunet-python are required (or --make-raw)")
    folder, out = Path(args.folder).resolve(), Path(args.out).resolve()
    channels = len(json.loads((folder / "dataset.json").read_text())["channel_names"])
    scans = make_scans(out / "scans", channels=channels)
    rows = []
    for mirror in (False, True):
        tag = "mirror" if mirror else "no-mirror"
        run_nnunet(args.nnunet_python, folder, args.fold, out / "scans", out / f"nnunet-{tag}", mirror)
        run_sfda(folder, args.fold, scan_files(scans, channels), out / f"sfda-{tag}", mirror)
        for scan, size in zip(scans, SIZES):
            name = scan.name.replace("_0000.nii.gz", ".nii.gz")
            share = agreement(out / f"nnunet-{tag}" / name, out / f"sfda-{tag}" / name)
            rows.append({"scan": name, "size": list(size[:3]), "spacing_mm": size[3], "zero_border": size[4],
                         "mirroring": mirror,
                         "agreement": share})
    rows += adapted_rows(args.nnunet_python, folder, args.fold.split(",")[0], scans, out, channels)
    result = {"folder": folder.name, "dataset": folder.parent.name, "fold": args.fold, "channels": channels,
              "rows": rows}
    (out / "agreement.json").write_text(json.dumps(result, indent=1) + "\n")
    configuration = folder.name.split("__")[-1] + ("_2ch" if channels == 2 else "")
    Path(RESULTS.format(configuration)).write_text(json.dumps(result, indent=1) + "\n")
    print(f"{folder.parent.name}/{folder.name}, fold {args.fold}: voxels where sfda and nnUNetPredictor agree")
    print("| scan | size | spacing (mm) | zero border | mirroring off | mirroring on | adapted, exported |\n"
          "|---|---|---:|---:|---:|---:|---:|")
    for r in [r for r in rows if r["mirroring"] is False]:
        a = {x["mirroring"]: x["agreement"] for x in rows if x["scan"] == r["scan"]}
        print(f"| {r['scan']} | {'x'.join(map(str, r['size']))} | {r['spacing_mm']} | {r['zero_border']} | "
              f"{100 * a[False]:.2f} % | {100 * a[True]:.2f} % | {100 * a['adapted']:.2f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
