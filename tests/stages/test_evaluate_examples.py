"""The report's examples (``eval/examples.npz``): entropy in nats within [0, ln K], NaN on padding."""

from __future__ import annotations

import numpy as np

from sfda.config import EvaluateConfig, load_config
from sfda.stages.evaluate import evaluate
from sfda.stages.train import train_source


def test_example_entropy_is_within_ln_k_and_blank_on_padding(tiny_train_config, tiny_cases, tmp_path):
    source = tmp_path / "src"  # 32 x 32 slices padded to 48 x 48: padding on every side
    train_source(tiny_train_config(source, "data.pad_multiple=24"), progress=False)
    out = tmp_path / "eval"
    evaluate(load_config(EvaluateConfig, None, [f"checkpoint={source / 'last.pt'}", f"data.cases={tiny_cases}",
                                                "data.modality=wat", "data.subjects=[P03]", f"out={out}"]),
             progress=False)
    with np.load(out / "examples.npz") as ex:
        entropy, pred, k = ex["P03/entropy"], ex["P03/pred"], int(ex["P03/classes"])
    assert k == 2 and entropy.shape == (48, 48)
    inside = np.zeros((48, 48), bool)
    inside[8:40, 8:40] = True
    assert np.isnan(entropy[~inside]).all() and not pred[~inside].any()
    assert np.isfinite(entropy[inside]).all()
    assert entropy[inside].min() >= 0 and entropy[inside].max() <= np.log(k) + 1e-6
