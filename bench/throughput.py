"""Throughput of sfda's training, adaptation and prediction paths against the bare network step.

    python bench/throughput.py [--out bench/throughput.json] [--steps 20]
    python bench/throughput.py --per-scan-only --out bench/per_scan_speed.json
    python bench/throughput.py --abdomen runs/abd [--direction ct-mr] [--seed 0]   # bench/abdomen_speed.py

Everything is measured in one run, on generated data, so the ratios are
comparable even on a noisy machine; absolute times are for this machine only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from sfda.config import MethodConfig, OptimConfig
from sfda.config.card import ModelCard, Network, Slicing
from sfda.data.sliceset import SliceSet
from sfda.engine.loop import FitSpec, fit
from sfda.inference import predict_slices
from sfda.losses import cross_entropy
from sfda.methods import Supervised, build_method
from sfda.nets import build_net

from measure import BATCH, bare_step, child_cli  # bench/, the script's own folder


def real_path(method: str, size: int, steps: int) -> dict:
    """Slices/s through the real loop (batches from the slice arrays, loss, logging, checkpoints)."""
    n = BATCH * steps
    rng = np.random.default_rng(0)
    images = rng.normal(size=(n, 1, size, size)).astype(np.float32)
    labels = (rng.random((n, size, size)) > 0.8).astype(np.int64)
    data = SliceSet.from_arrays(images, labels)
    model = build_net("enet", in_channels=1, num_classes=2)
    m = Supervised() if method == "train" else build_method("adaent", MethodConfig(name="adaent"))
    prior = None if method == "train" else np.tile([0.8, 0.2], (n, 1)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        spec = FitSpec(data=data, out=Path(tmp), card=ModelCard(network=Network("enet")),
                       optim=OptimConfig(epochs=2, batch_size=BATCH), prior=prior, progress=False, keep_epochs=False)
        log = fit(model, m, spec)["log"]
    row = log[-1]  # the second epoch: no warm-up
    # In-memory slices have no subjects, so the loop skips 3D validation: time its inference part here.
    t0 = time.perf_counter()
    predict_slices(model, images)
    val_s = time.perf_counter() - t0
    epoch_s = row["train_s"] + val_s + row["ckpt_s"]
    return {"slices_per_s": steps * BATCH / row["train_s"], "eval_share": (val_s + row["ckpt_s"]) / epoch_s}


def _predict_fixture(tmp: str, shape, axis: int = 0, name: str = "v.nii.gz", constant: bool = False) -> None:
    """An untrained ENet checkpoint slicing along ``axis`` and one generated float32 volume of
    ``shape`` (random, or constant) in ``tmp``."""
    import nibabel as nib

    from sfda.engine.checkpoint import save_checkpoint

    model = build_net("enet", in_channels=1, num_classes=2)
    card = ModelCard(network=Network("enet", {"in_channels": 1, "num_classes": 2}), kind="segmentation",
                     labels=("background", "disc"), modality="inn", slicing=Slicing(axis=axis, pad_multiple=16))
    save_checkpoint(Path(tmp) / "m.pt", model, card)
    if constant:
        vol = np.zeros(shape, dtype=np.float32)
    else:
        vol = np.random.default_rng(0).standard_normal(shape, dtype=np.float32) * 20 + 100
    nib.save(nib.Nifti1Image(vol, np.diag([1.25, 1.25, 2.0, 1.0])), Path(tmp) / name)  # streamed to disk


def predict_large(shape=(512, 512, 400)) -> dict:
    """`sfda predict` (mask only) on a synthetic float32 volume sliced along its last axis."""
    with tempfile.TemporaryDirectory() as tmp:
        _predict_fixture(tmp, shape, axis=2, name="v.nii")
        return child_cli(["predict", "--checkpoint", f"{tmp}/m.pt", f"{tmp}/v.nii", "--out", f"{tmp}/out"])


def refuse_constant(shape=(600, 600, 600)) -> dict:
    """`sfda predict` on a constant float32 .nii.gz: it must be refused, fast and in little memory."""
    with tempfile.TemporaryDirectory() as tmp:
        _predict_fixture(tmp, shape, axis=2, constant=True)
        return child_cli(["predict", "--checkpoint", f"{tmp}/m.pt", f"{tmp}/v.nii.gz", "--out", f"{tmp}/out"])


def predict_volume(shape=(36, 256, 256), repeats: int = 3) -> dict:
    """`sfda predict` on one volume, each time in a fresh process: seconds inside ``predict()``
    (checkpoint, read, normalise, network, write; the median over ``repeats`` is kept), peak RSS,
    and the whole command's wall time including Python and torch start-up."""
    with tempfile.TemporaryDirectory() as tmp:
        _predict_fixture(tmp, shape)
        # Peak RSS from VmHWM: ru_maxrss survives exec, so a child forked from this (large) process
        # would report the parent's size; VmHWM belongs to the new address space only.
        code = ("import time; from sfda.config import PredictConfig; from sfda.stages.predict import predict; "
                "t=time.perf_counter(); "
                f"predict(PredictConfig(checkpoint='{tmp}/m.pt', inputs=['{tmp}/v.nii.gz'], out='{tmp}/out'), "
                "progress=False); "
                "hwm=[l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0]; "
                "print(time.perf_counter()-t, hwm)")
        seconds, rss = [], []
        for _ in range(repeats):
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            s, kib = out.stdout.split()
            seconds.append(float(s))
            rss.append(int(kib) / 1024)
        cli = [sys.executable, "-m", "sfda", "predict", "--checkpoint", f"{tmp}/m.pt",
               "--out", f"{tmp}/cli", f"{tmp}/v.nii.gz"]
        t0 = time.perf_counter()
        subprocess.run(cli, capture_output=True, text=True, check=True)
        command_s = time.perf_counter() - t0
    return {"seconds": float(np.median(seconds)), "runs": [round(x, 2) for x in seconds],
            "peak_rss_mib": max(rss), "command_s": command_s}


def per_scan(shape=(36, 256, 256)) -> dict:
    """`sfda predict` on one scan: plain, `--adapt adaent --steps 10` and `--adapt tent` (10 steps),
    each in a fresh process (seconds inside the command's main, peak RSS), and their ratios."""
    from sfda.engine.checkpoint import update_card

    with tempfile.TemporaryDirectory() as tmp:
        _predict_fixture(tmp, shape)
        # the position table train-source stores (here: 10 % disc everywhere), for adaent's prior
        table = {"centres": [0.0, 1.0], "means": [[0.9, 0.1], [0.9, 0.1]], "presence": [1.0, 1.0]}
        update_card(f"{tmp}/m.pt", lambda c: replace(c, source=replace(c.source, position=table)))
        base = ["predict", "--checkpoint", f"{tmp}/m.pt", f"{tmp}/v.nii.gz"]
        out = {"plain": child_cli([*base, "--out", f"{tmp}/plain"]),
               "adaent_10_steps": child_cli([*base, "--out", f"{tmp}/adaent", "--adapt", "adaent", "--steps", "10"]),
               "tent_10_steps": child_cli([*base, "--out", f"{tmp}/tent", "--adapt", "tent", "--steps", "10"])}
    for name in ("adaent_10_steps", "tent_10_steps"):
        if "seconds" in out[name] and "seconds" in out["plain"]:
            out[f"{name}_vs_plain"] = out[name]["seconds"] / out["plain"]["seconds"]
    return out


def compiled_step(size: int, steps: int) -> dict | str:
    """The bare step with ``torch.compile`` (inductor) against eager, same run: speed ratio and compile time.
    Inductor compiles into an empty cache folder, so the compile time is a first run's, not a cached one."""
    with tempfile.TemporaryDirectory() as cache:
        previous = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        try:
            return _compiled_step(size, steps)
        finally:
            if previous is None:
                os.environ.pop("TORCHINDUCTOR_CACHE_DIR")
            else:
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = previous


def _compiled_step(size: int, steps: int) -> dict | str:
    try:
        torch.manual_seed(0)
        model = build_net("enet", in_channels=1, num_classes=2).train()
        compiled = torch.compile(model)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        x = torch.randn(BATCH, 1, size, size)
        y = (torch.rand(BATCH, size, size) > 0.8).long()
        t0 = time.perf_counter()
        for i in range(steps + 2):
            if i == 2:
                compile_s, t1 = time.perf_counter() - t0, time.perf_counter()
            loss = cross_entropy(compiled(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        speed = steps * BATCH / (time.perf_counter() - t1)
    except Exception as exc:  # no compiler, unsupported op: report it, the eager figures still stand
        return f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    eager = bare_step(size, steps)
    return {"compiled_vs_eager": speed / eager, "first_two_steps_s": compile_s}


def _shares(run: Path) -> dict:
    """Median over the epochs after the first (warm-up) of (validation + checkpointing) / epoch time."""
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    rows = rows[1:] or rows
    extra = [r["val_s"] + r["ckpt_s"] for r in rows]
    share = [e / (r["train_s"] + e) for r, e in zip(rows, extra)]
    return {"share": float(np.median(share)), "train_s": float(np.median([r["train_s"] for r in rows])),
            "val_s": float(np.median([r["val_s"] for r in rows])),
            "ckpt_s": float(np.median([r["ckpt_s"] for r in rows]))}


def crops_eval_share(epochs: int = 3) -> dict | str:
    """Validation + checkpointing over epoch time on the IVDM3Seg crops (opp, train A1-D1, validate
    on E1-F1): ``train-source`` with ENet (default settings), and the crops experiment's own runs
    (configs/ivdm3seg-crops.yaml): its U-Net ``train-source`` and its ``adapt --method adaent`` to inn,
    whose evaluation also scores the held-out images and whose checkpointing keeps every epoch. The
    adaptation uses a constant prior instead of the experiment's position prior: τe's values cost nothing."""
    root = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ivdm3seg-crops"
    if not root.is_dir():
        return f"skipped: {root} not found"
    from sfda.config import AdaptConfig, PriorConfig, TrainConfig, load_config
    from sfda.io.cases import save_cases
    from sfda.io.layouts import index_dataset
    from sfda.stages.adapt import adapt
    from sfda.stages.prior import make_prior
    from sfda.stages.train import train_source

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        save_cases(Path(tmp) / "cases.json", index_dataset(str(root), "ivdm3seg-crops"))
        data = [f"data.cases={tmp}/cases.json", "data.subjects=[A1,B1,C1,D1]", "data.val_subjects=[E1,F1]",
                f"data.cache={tmp}/cache", "data.pad_multiple=16"]
        unet = ["net=unet", "augment=true", "invert=0.25", "remap=0.5"]
        for name, extra in (("enet_source", []), ("unet_source", unet)):
            cfg = load_config(TrainConfig, None, [*data, "data.modality=opp", f"optim.epochs={epochs}",
                                                  f"out={tmp}/{name}", *extra])
            train_source(cfg, progress=False)
            out[name] = _shares(Path(tmp) / name)
        prior = make_prior(load_config(PriorConfig, None, [
            "method=constant", f"data.cases={tmp}/cases.json", "data.modality=inn", f"out={tmp}/prior.csv",
            "ratios=[0.85, 0.15]"]), progress=False)
        cfg = load_config(AdaptConfig, None, [
            *data, "data.modality=inn", f"checkpoint={tmp}/unet_source/last.pt", f"prior={prior}",
            "method.name=adaent", "method.lam=1.0", "method.kl_scope=batch", "optim.lr=1e-4",
            f"optim.epochs={epochs}", "select=average", f"out={tmp}/unet_adaent"])
        adapt(cfg, progress=False)
        out["unet_adaent"] = _shares(Path(tmp) / "unet_adaent")
    return out


def cuda_figures(steps: int) -> dict | str:
    """Bare ENet step on the GPU at 256x256: fp32, bf16 autocast, and bf16 + channels_last."""
    if not torch.cuda.is_available():
        return "skipped: no GPU"
    out = {}
    for name, bf16, cl in (("fp32", False, False), ("bf16", True, False), ("bf16_channels_last", True, True)):
        torch.manual_seed(0)
        model = build_net("enet", in_channels=1, num_classes=2).cuda().train()
        x = torch.randn(BATCH, 1, 256, 256, device="cuda")
        if cl:
            model, x = model.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
        y = (torch.rand(BATCH, 256, 256, device="cuda") > 0.8).long()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        for i in range(steps + 3):
            if i == 3:
                torch.cuda.synchronize()
                t0 = time.perf_counter()
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
                loss = cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        torch.cuda.synchronize()
        out[f"bare_slices_per_s_256_{name}"] = steps * BATCH / (time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/throughput.json")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved bare/real rounds; the median ratio is kept")
    ap.add_argument("--memory-only", action="store_true",
                    help="only the two memory figures (large predict, constant refusal)")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile's bare step (minutes)")
    ap.add_argument("--per-scan-only", action="store_true",
                    help="only per-scan adaptation against plain prediction (36x256x256)")
    ap.add_argument("--abdomen", metavar="RUN", help="the abdominal benchmark's figures from a finished run of "
                    "configs/abdomen-ct-mr.yaml (bench/abdomen_speed.py; writes bench/abdomen_speed.json)")
    ap.add_argument("--direction", default="ct-mr", help="with --abdomen")
    ap.add_argument("--seed", default="0", help="with --abdomen")
    args = ap.parse_args()
    if args.abdomen:
        from abdomen_speed import main as abdomen_main
        sys.exit(abdomen_main([args.abdomen, "--direction", args.direction, "--seed", args.seed]))
    res = {"machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__}, threads {torch.get_num_threads()}"}
    if args.per_scan_only:
        res["per_scan_36x256x256"] = per_scan()
        _finish(res, args.out)
        return
    if args.memory_only:
        res.update({"predict_512x512x400": predict_large(), "refuse_constant_600cubed": refuse_constant()})
        _finish(res, args.out)
        return
    for size in (64, 128, 256):
        res[f"bare_slices_per_s_{size}"] = bare_step(size, args.steps if size < 256 else max(args.steps // 4, 3))
    # Interleave: each real-path figure is divided by the mean of the bare steps measured just
    # before and just after it, so a machine that drifts (another process, clocks) cancels out.
    ratios: dict[str, list[float]] = {"train": [], "adapt": []}
    speeds: dict[str, list[float]] = {"train": [], "adapt": []}
    shares = []
    for _ in range(args.rounds):
        for kind in ("train", "adapt"):
            before = bare_step(128, args.steps)
            real = real_path(kind, 128, args.steps)
            after = bare_step(128, args.steps)
            ratios[kind].append(real["slices_per_s"] / ((before + after) / 2))
            speeds[kind].append(real["slices_per_s"])
            if kind == "train":
                shares.append(real["eval_share"])
    res.update({
        "train_slices_per_s_128": float(np.median(speeds["train"])),
        "adapt_slices_per_s_128": float(np.median(speeds["adapt"])),
        "train_vs_bare_128": float(np.median(ratios["train"])), "adapt_vs_bare_128": float(np.median(ratios["adapt"])),
        "train_vs_bare_128_rounds": [round(r, 3) for r in ratios["train"]],
        "adapt_vs_bare_128_rounds": [round(r, 3) for r in ratios["adapt"]],
        "eval_share_of_epoch_synthetic": float(np.median(shares)),
    })
    crops = crops_eval_share()
    if isinstance(crops, dict):  # the worst of the three runs: the mark must hold for each
        res["eval_share_of_epoch"] = max(c["share"] for c in crops.values())
        for name, c in crops.items():
            res[f"eval_share_of_epoch_{name}"] = c["share"]
            res[f"crops_epoch_s_{name}"] = {k: round(v, 2) for k, v in c.items() if k != "share"}
    else:
        res["eval_share_of_epoch"] = crops
    pred = predict_volume()
    res["predict_s_36x256x256"] = pred["seconds"]
    res["predict_peak_rss_mib"] = pred["peak_rss_mib"]
    res["predict_runs_s"] = pred["runs"]
    res["predict_command_s"] = pred["command_s"]
    big = predict_large()
    res["predict_512x512x400"] = big
    res["predict_512x512x400_peak_rss_mib"] = big.get("peak_rss_mib")
    res["refuse_constant_600cubed"] = refuse_constant()
    res["per_scan_36x256x256"] = per_scan()
    if args.compile:
        res["compile_128"] = compiled_step(128, args.steps)
    res["cuda"] = cuda_figures(args.steps)
    _finish(res, args.out)


def _finish(res: dict, out: str) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(res, indent=2) + "\n")
    width = max(map(len, res))
    for k, v in res.items():
        print(f"{k:<{width}}  {v:.3f}" if isinstance(v, float) else f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
