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
