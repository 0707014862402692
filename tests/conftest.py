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
