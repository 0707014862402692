"""More bad input through the ``sfda`` command: each refused with exit 2, one line naming the option
or file and what is allowed, no traceback, and nothing written. The first cases reproduce what a new
user met before options were checked where they are parsed (issue 16)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from sfda.cli import main
from test_cli import TRAIN, _error_line, flow  # noqa: F401  (the module-scoped pipeline run)

from conftest import TINY_NET


def _volume(path: Path, kind: str) -> Path:
    rng = np.random.default_rng(0)
    vol = rng.normal(100, 20, size=(8, 16, 16)).astype(np.float32)
    affine = np.diag([2.0, 1.25, 1.25, 1.0])
    if kind == "complex":
        img = nib.Nifti1Image(vol.astype(np.complex64) + 1j, affine)
    elif kind == "zero-pixdim":  # nibabel will not write pixdim 0, so patch the stored bytes
        nib.save(nib.Nifti1Image(vol, affine), path)
        raw = bytearray(path.read_bytes())
        raw[80:84] = np.float32(0.0).tobytes()  # pixdim[1]: the header's bytes 76-107 hold pixdim[0..7]
        path.write_bytes(bytes(raw))
        return path
    elif kind == "flat-affine":
        flat = affine.copy()
        flat[:3, 1] = flat[:3, 0]  # two axes along the same direction: no inverse
        img = nib.Nifti1Image(vol, flat)
    elif kind == "nan-affine":
        bad = affine.copy()
        bad[0, 3] = np.nan
        img = nib.Nifti1Image(vol, bad)
    else:
        raise ValueError(kind)
    nib.save(img, path)
    return path


def _cases(root: Path, tmp: Path) -> dict[str, tuple[list, str]]:
    runs, cases = root / "runs", root / "cases.json"
    ckpt, prior = runs / "source" / "last.pt", runs / "prior.csv"
    out, afile = tmp / "out", tmp / "a_file.txt"
    afile.write_text("not a folder")
    train = ["train-source", "--cases", cases, "--modality", "wat", "--subjects", "P01", "--out", out, *TRAIN,
             *TINY_NET]
    adapt = ["adapt", "--cases", cases, "--modality", "inn", "--subjects", "P03", "--checkpoint", ckpt,
             "--prior", prior, "--out", out, *TRAIN]
    prior_cmd = ["prior", "--cases", cases, "--modality", "inn", "--out", out / "tau.csv"]
    predict = ["predict", "--checkpoint", ckpt, "--out", out]
    return {
        # the reproductions
        "epochs -3": ([*train, "optim.epochs=-3"], "optim.epochs"),
        "lr nan": ([*train, "optim.lr=nan"], "optim.lr"),
        "batch size 0": ([*train, "optim.batch_size=0"], "optim.batch_size"),
        # rules across a section's fields, refused where the config is parsed (a slice size was refused only
        # once the folder was claimed)
        "train one slice size": ([*train, "data.size=[32]"], "data.size takes two values"),
        "train size and spacing": ([*train, "data.size=[32,32]", "data.spacing=[1,1]"], "data.size and data.spacing"),
        "train validates on its training subjects": ([*train, "--val-subjects", "P01"], "--subjects (data.subjects)"),
        "predict --out an existing file": ([*predict[:-1], afile, root / "mha" / "P03_inn.mha"], "a_file.txt"),
        "complex voxels": ([*predict, _volume(tmp / "complex.nii.gz", "complex")], "complex.nii.gz"),
        "zero pixdim": ([*predict, _volume(tmp / "zero.nii", "zero-pixdim")], "zero.nii"),
        # ranges
        "lr negative": ([*train, "--lr", "-0.1"], "optim.lr"),
        "lr inf": ([*train, "optim.lr=inf"], "optim.lr"),
        "epochs 0 by flag": ([*train[:-len(TINY_NET)], "--epochs", "0", *TINY_NET], "optim.epochs"),
        "momentum above 1": ([*train, "optim.momentum=1.5"], "optim.momentum"),
        "weight decay negative": ([*train, "optim.weight_decay=-1"], "optim.weight_decay"),
        "max steps negative": ([*train, "optim.max_steps_per_epoch=-2"], "optim.max_steps_per_epoch"),
        "invert above 1": ([*train, "invert=1.5"], "invert"),
        "remap negative": ([*train, "remap=-0.1"], "remap"),
        "seed negative": ([*train, "--seed", "-1"], "seed"),
        "axis 3": ([*train, "--axis", "3"], "data.axis"),
        "pad multiple 0": ([*train, "data.pad_multiple=0"], "data.pad_multiple"),
        "clip percentile 120": ([*train, "data.clip_high=120"], "data.clip_high"),
        "lambda negative": ([*adapt, "--lam", "-1"], "method.lam"),
        "disc lr 0": ([*adapt, "method.disc_lr=0"], "method.disc_lr"),
        "min presence 2": ([*prior_cmd, "--method", "constant", "--ratios", "0.9,0.1", "--min-presence", "2"],
                           "min_presence"),
        "ratio negative": ([*prior_cmd, "--method", "constant", "--ratios", "1.1,-0.1"], "ratios"),
        # choices
        "optimizer rmsprop": ([*train, "optim.optimizer=rmsprop"], "optim.optimizer"),
        "schedule weird": ([*train, "optim.schedule=weird"], "optim.schedule"),
        "kl sideways": ([*adapt, "--kl", "sideways"], "method.kl"),
        "kl scope pixel": ([*adapt, "method.kl_scope=pixel"], "method.kl_scope"),
        "bn frozen": ([*adapt, "method.bn=frozen"], "method.bn"),
        "select unknown": ([*adapt, "select=best"], "select"),
        "prior method unknown": ([*prior_cmd, "--method", "magic"], "magic"),
        # types
        "epochs not a number": ([*train, "--epochs", "many"], "optim.epochs"),
        "epochs fractional": ([*train, "optim.epochs=2.5"], "optim.epochs"),
        # combinations
        "adaent without a prior": ([*adapt[:adapt.index("--prior")], *adapt[adapt.index("--prior") + 2:]],
                                   "--prior"),
        "source data for a source-free method": ([*adapt, "--source-modality", "wat", "--source-subjects", "P01"],
                                                 "source-free"),
        "constant prior without ratios": ([*prior_cmd, "--method", "constant"], "--ratios"),
        # outputs
        "train --out an existing file": ([*train[:train.index("--out")], "--out", afile,
                                          *train[train.index("--out") + 2:]], "a_file.txt"),
        "out under a file": ([*train[:train.index("--out")], "--out", afile / "run",
                              *train[train.index("--out") + 2:]], "a_file.txt"),
        "evaluate --out an existing file": (["evaluate", "--checkpoint", ckpt, "--cases", cases, "--modality", "inn",
                                             "--out", afile], "a_file.txt"),
        "prior --out a folder": ([*prior_cmd[:-1], tmp, "--method", "constant", "--ratios", "0.9,0.1"],
                                 str(tmp.name)),
        "report --out an existing file": (["report", runs / "source", "--out", afile], "a_file.txt"),
        # inputs
        "non-invertible affine": ([*predict, _volume(tmp / "flat.nii.gz", "flat-affine")], "flat.nii.gz"),
        "non-finite affine": ([*predict, _volume(tmp / "nanaff.nii.gz", "nan-affine")], "nanaff.nii.gz"),
        # experiment config
        "experiment unknown method": (["experiment", root / "nope.yaml", "--out", out, "methods=[noadapt,magic]"],
                                      "methods"),
        "experiment validates on test subjects": (["experiment", root / "nope.yaml", "--out", out,
                                                   "split.val=[P02]"], "split.val"),
    }


def _names() -> list[str]:
    import inspect
    import re

    return re.findall(r'^\s+"([^"]+)": \(', inspect.getsource(_cases), flags=re.M)


@pytest.mark.parametrize("case", _names())
def test_bad_option_or_input_exits_2_with_one_line_and_writes_nothing(flow, tmp_path, capsys, case):  # noqa: F811
    root, _ = flow
    if case.startswith("experiment"):
        (root / "nope.yaml").write_text("data: {phantom_subjects: 3}\nsplit: {train: [P01], test: [P02]}\n")
    argv, named = _cases(root, tmp_path)[case]
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    line = _error_line(capsys.readouterr().err)
    assert rc == 2
    assert named in line, line
    out = tmp_path / "out"
    assert not out.exists() or not any(out.rglob("*")), sorted(out.rglob("*"))


def test_there_are_at_least_30_distinct_refusals():
    assert len(set(_names())) >= 30


def test_spaces_in_a_subject_list_are_accepted(flow, tmp_path, capsys):  # noqa: F811
    """`--subjects "P01, P02"` means P01 and P02 (it was refused as unknown subject ' P02')."""
    root, _ = flow
    out = tmp_path / "out"
    rc = main([str(a) for a in ["train-source", "--cases", root / "cases.json", "--modality", "wat",
                                "--subjects", "P01, P02", "--out", out, *TRAIN, *TINY_NET]])
    assert rc == 0, capsys.readouterr().err
    import yaml

    assert yaml.safe_load((out / "config.yaml").read_text())["data"]["subjects"] == ["P01", "P02"]
