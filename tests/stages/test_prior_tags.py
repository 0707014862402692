"""`sfda prior` with tags on several structures: what a tagged slice asks for."""

from __future__ import annotations

import csv

import numpy as np

from sfda.config import PriorConfig, load_config
from sfda.priors.table import load_prior
from sfda.stages.data import index_cases
from sfda.stages.prior import make_prior


def _prior(tmp_path, organ_domains, *extra):
    ct, mr = organ_domains
    cases = tmp_path / "cases.json"
    index_cases(ct, str(cases), "nnunet")
    out = tmp_path / "prior.csv"
    make_prior(load_config(PriorConfig, None, [
        "method=source-mean", f"data.cases={cases}", "data.modality=CT", "data.subjects=[c02,c03]",
        "source_modality=CT", "source_subjects=[c00,c01]", f"out={out}", *extra]), progress=False)
    with open(out) as f:
        ids = [row[0] for row in list(csv.reader(f))[1:]]
    return load_prior(str(out), ids, 4), ids


def test_per_structure_tags_ask_each_present_structure_for_its_size_where_present(tmp_path, organ_domains):
    tau, _ = _prior(tmp_path, organ_domains, "tags_from_labels=true")
    plain, _ = _prior(tmp_path / "plain", organ_domains)
    assert np.allclose(tau.sum(axis=1), 1.0, atol=1e-5)
    held = tau[:, 1:] > 0
    # a structure's size where present is at least its mean over every slice holding any structure
    for k in range(3):  # each present structure asks for its own size, whatever else the slice holds
        asked = tau[held[:, k], k + 1]
        assert len(asked) and np.allclose(asked, asked[0]) and asked[0] > plain[0, k + 1]


def test_a_per_slice_tag_does_not_ask_every_structure_for_its_full_size(tmp_path, organ_domains):
    # A CSV tag says only "some structure here": tagged slices keep the prior's own ratios.
    _, ids = _prior(tmp_path / "ids", organ_domains)
    tags = tmp_path / "tags.csv"
    tags.write_text("slice_id,present\n" + "".join(f"{s},{int(i % 2 == 0)}\n" for i, s in enumerate(ids)))
    tau, _ = _prior(tmp_path, organ_domains, f"tags={tags}")
    plain, _ = _prior(tmp_path / "plain", organ_domains)
    assert np.allclose(tau[0::2], plain[0::2], atol=1e-6)
    assert np.allclose(tau[1::2], [1.0, 0.0, 0.0, 0.0])
