import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

SHARED_CROPS = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "ivdm3seg-crops")


@pytest.fixture
def crops_root():
    path = os.path.abspath(SHARED_CROPS)
    if not os.path.isdir(path):
        pytest.skip(f"real data not found at {path} (the IVDM3Seg crops live in ../shared/data)")
    return path


# --------------------------------------------------------------------------- tiny shared data
# A 3-subject phantom small enough that a training epoch of 2 steps takes well under a second.

TINY_SHAPE = (8, 32, 32)
#: A tiny U-Net (width 4, depth 2) trains ~20x faster than the default ENet on CPU.
TINY_NET = ["net=unet", "net_args={width: 4, depth: 2}"]


@pytest.fixture(scope="session")
def tiny_cases(tmp_path_factory):
    """Path of the case list of a tiny 3-subject phantom (P01..P03, shape 8x32x32). Read-only."""
    from sfda.data.phantom import make_phantom
    from sfda.io.cases import save_cases

    root = tmp_path_factory.mktemp("tiny_phantom")
    cl = make_phantom(root / "data", n_subjects=3, shape=TINY_SHAPE)
    path = root / "cases.json"
    save_cases(path, cl)
    return str(path)


@pytest.fixture
def tiny_train_config(tiny_cases):
    """Factory: a TrainConfig for a tiny supervised run on the phantom's wat images."""
    from sfda.config import TrainConfig, load_config

    def make(out, *overrides: str) -> TrainConfig:
        return load_config(TrainConfig, None, [
            f"data.cases={tiny_cases}", "data.modality=wat", "data.subjects=[P01,P02]",
            *TINY_NET, "optim.epochs=1", "optim.batch_size=4", "optim.max_steps_per_epoch=2",
            "seed=0", f"out={out}", *overrides])

    return make


@pytest.fixture(scope="session")
def tiny_source(tiny_cases, tmp_path_factory):
    """A tiny source checkpoint (wat, P01+P02, 1 epoch of 2 steps) and a constant prior table
    for the inn slices of all subjects: (checkpoint path, prior path). Read-only."""
    from sfda.config import PriorConfig, TrainConfig, load_config
    from sfda.stages.prior import make_prior
    from sfda.stages.train import train_source

    root = tmp_path_factory.mktemp("tiny_source")
    cfg = load_config(TrainConfig, None, [
        f"data.cases={tiny_cases}", "data.modality=wat", "data.subjects=[P01,P02]", *TINY_NET,
        "optim.epochs=1", "optim.batch_size=4", "optim.max_steps_per_epoch=2", f"out={root / 'source'}"])
    train_source(cfg, progress=False)
    prior = make_prior(load_config(PriorConfig, None, [
        "method=constant", f"data.cases={tiny_cases}", "data.modality=inn", f"out={root / 'prior.csv'}",
        "ratios=[0.9, 0.1]"]), progress=False)
    return str(root / "source" / "last.pt"), str(prior)


@pytest.fixture
def file_traffic(monkeypatch):
    """What a run writes and reads: ``(writes, reads)``, lists of paths in order. Every output is
    written through :func:`sfda.io.atomic.atomic_path` (its rename names the file), every
    checkpoint read through :func:`torch.load`."""
    writes: list = []
    reads: list = []
    real_replace, real_load = os.replace, torch.load

    def replace(src, dst, *a, **k):
        writes.append(os.fspath(dst))
        return real_replace(src, dst, *a, **k)

    def load(f, *a, **k):
        reads.append(os.fspath(f))
        return real_load(f, *a, **k)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(torch, "load", load)
    return writes, reads


# --------------------------------------------------------------------------- two unpaired cohorts
# Two tiny nnU-Net raw datasets of different "patients" with three structures each: different
# in-plane sizes and spacings per subject, axial slices along axis 2, and the contrast of one
# domain remapped (what makes CT -> MR a domain shift). Subjects: c00.. and m00..

ORGAN_LABELS = {"background": 0, "liver": 1, "right_kidney": 2, "spleen": 3}


def _organ_subject(rng, hw: tuple[int, int], depth: int, mr: bool):
    import numpy as np

    xs, ys = np.meshgrid(np.linspace(-1, 1, hw[0]), np.linspace(-1, 1, hw[1]), indexing="ij")
    lab = np.zeros((*hw, depth), np.uint8)
    jitter = rng.uniform(-0.08, 0.08, size=6)
    for z in range(depth):
        t = z / max(depth - 1, 1)
        if t < 0.85:
            lab[..., z][((xs + 0.35 + jitter[0]) / 0.45) ** 2 + ((ys + 0.1 + jitter[1]) / 0.5) ** 2 < 1] = 1
        if 0.3 < t:
            lab[..., z][((xs - 0.45 + jitter[2]) / 0.18) ** 2 + ((ys - 0.3 + jitter[3]) / 0.2) ** 2 < 1] = 2
        if 0.15 < t < 0.7:
            lab[..., z][((xs - 0.4 + jitter[4]) / 0.22) ** 2 + ((ys + 0.45 + jitter[5]) / 0.25) ** 2 < 1] = 3
    levels = np.array([0.55, 0.25, 0.8, 0.4] if mr else [0.2, 0.6, 0.75, 0.45])
    image = levels[lab] + rng.normal(0, 0.05, lab.shape)
    return (image * 255).astype(np.int16), lab


def write_organ_dataset(root, prefix: str, n: int, channel: str, mr: bool, seed: int = 0):
    """An nnU-Net raw dataset at ``root`` of ``n`` subjects ``<prefix>00``...; returns ``root``."""
    import json
    from pathlib import Path

    import nibabel as nib
    import numpy as np

    root = Path(root)
    rng = np.random.default_rng(seed)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        hw = (int(rng.integers(30, 41)), int(rng.integers(30, 41)))
        spacing = float(rng.uniform(0.9, 1.4))
        image, lab = _organ_subject(rng, hw, int(rng.integers(6, 9)), mr)
        affine = np.diag([spacing, spacing, 4.0, 1.0])
        nib.save(nib.Nifti1Image(image, affine), root / "imagesTr" / f"{prefix}{i:02d}_0000.nii.gz")
        nib.save(nib.Nifti1Image(lab, affine), root / "labelsTr" / f"{prefix}{i:02d}.nii.gz")
    meta = {"channel_names": {"0": channel}, "labels": ORGAN_LABELS, "numTraining": n, "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


@pytest.fixture(scope="session")
def organ_domains(tmp_path_factory):
    """Two unpaired tiny cohorts: (ct root, mr root), 4 subjects each (c00-c03, m00-m03). Read-only."""
    root = tmp_path_factory.mktemp("organs")
    return (str(write_organ_dataset(root / "ct", "c", 4, "CT", mr=False, seed=1)),
            str(write_organ_dataset(root / "mr", "m", 4, "T2SPIR", mr=True, seed=2)))
