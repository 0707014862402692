"""The ``sfda`` command end to end (in-process), and its refusals of bad input."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import TINY_NET

from sfda.cli import main
from sfda.io.volume import read_volume, write_volume

PNG = b"\x89PNG\r\n\x1a\n"
TRAIN = ["--epochs", "2", "--batch-size", "4", "optim.max_steps_per_epoch=2"]


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    """Every stage once, through main(): phantom -> index -> train -> prior -> adapt x3 -> evaluate
    -> predict -> report. Returns (root, {step: (rc, stdout, stderr)})."""
    root = tmp_path_factory.mktemp("cli")
    data, cases, runs = root / "data", root / "cases.json", root / "runs"
    steps: dict[str, tuple[int, str, str]] = {}

    def step(name, argv):
        steps[name] = _run(argv)
        assert steps[name][0] == 0, f"{name} failed: {steps[name][2][-3000:]}"

    # `data phantom` exposes no --shape: the default (16, 64, 48) is small enough
    step("phantom", ["data", "phantom", data, "--subjects", "3", "--seed", "0"])
    step("index", ["data", "index", data, "-o", cases])
    step("describe", ["data", "describe", cases])
    step("train", ["train-source", "--cases", cases, "--modality", "wat", "--subjects", "P01,P02",
                   "--val-subjects", "P03", "--out", runs / "source", *TRAIN, *TINY_NET])
    step("prior", ["prior", "--method", "source-mean", "--cases", cases, "--modality", "inn", "--subjects", "P03",
                   "--source-modality", "wat", "--source-subjects", "P01,P02", "--out", runs / "prior.csv"])
    step("prior-self", ["prior", "--method", "self", "--cases", cases, "--modality", "inn", "--subjects", "P03",
                        "--checkpoint", runs / "source" / "last.pt", "--out", runs / "prior-self.csv"])
    target = ["--cases", cases, "--modality", "inn", "--subjects", "P03", "--val-subjects", "P01",
              "--checkpoint", runs / "source" / "last.pt", "--prior", runs / "prior.csv", *TRAIN]
    step("adaent", ["adapt", "--method", "adaent", "--out", runs / "adaent", *target])
    source = ["--source-modality", "wat", "--source-subjects", "P01,P02"]
    step("adasource", ["adapt", "--method", "adasource", "--out", runs / "adasource", *source, *target])
    step("adversarial", ["adapt", "--method", "adversarial", "--out", runs / "adversarial", *source, *target])
    for run in ("source", "adaent"):
        step(f"evaluate-{run}", ["evaluate", "--checkpoint", runs / run / "selected.pt", "--cases", cases,
                                 "--modality", "inn", "--subjects", "P03", "--out", runs / run / "eval"])
    vol = read_volume(data / "P03" / "P03_inn.nii.gz")
    (root / "mha").mkdir()
    write_volume(root / "mha" / "P03_inn.mha", vol.array, like=vol)
    step("predict-nii", ["predict", "--checkpoint", runs / "adaent" / "selected.pt", data / "P03" / "P03_inn.nii.gz",
                         "--out", root / "pred", "--entropy"])
    step("predict-mha", ["predict", "--checkpoint", runs / "adaent" / "selected.pt", root / "mha" / "P03_inn.mha",
                         "--out", root / "pred-mha"])
    step("report", ["report", runs / "source", runs / "adaent", "--out", root / "report"])
    return root, steps


def test_data_commands(flow):
    root, steps = flow
    assert "3 subjects" in steps["phantom"][1]
    assert "3 cases" in steps["index"][1]
    cases = json.loads((root / "cases.json").read_text())
    assert [c["subject"] for c in cases["cases"]] == ["P01", "P02", "P03"]
    assert sorted(cases["modalities"]) == ["inn", "wat"]
    described = steps["describe"][1]
    assert all(s in described for s in ("P01", "P02", "P03", "wat", "inn"))


def test_training_prior_and_adaptation_outputs(flow):
    root, steps = flow
    runs = root / "runs"
    for run in ("source", "adaent", "adasource", "adversarial"):
        assert (runs / run / "last.pt").is_file() and (runs / run / "done.json").is_file(), run
        assert (runs / run / "config.yaml").is_file()
        log = [json.loads(x) for x in (runs / run / "log.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in log] == [1, 2] and all(np.isfinite(r["loss"]) for r in log)
        assert "val_dice" in log[-1]
    assert "model to use:" in steps["train"][1] and "validation 3D Dice" in steps["train"][1]
    rows = (runs / "prior.csv").read_text().splitlines()
    assert rows[0] == "slice_id,background,foreground" and len(rows) == 1 + 16
    ratios = np.array([[float(v) for v in r.split(",")[1:]] for r in rows[1:]])
    assert np.allclose(ratios.sum(axis=1), 1, atol=1e-5) and np.allclose(ratios, ratios[0])
    # The self prior: the source model's own per-slice ratios after AdaBN, one row per slice, varying.
    rows = (runs / "prior-self.csv").read_text().splitlines()
    own = np.array([[float(v) for v in r.split(",")[1:]] for r in rows[1:]])
    assert len(own) == 16 and np.allclose(own.sum(axis=1), 1, atol=1e-5) and own.std(axis=0)[1] > 0


def test_evaluate_metrics(flow):
    root, _ = flow
    metrics = json.loads((root / "runs" / "adaent" / "eval" / "metrics.json").read_text())
    assert metrics["subjects"] == ["P03"]
    rows = metrics["per_subject"]
    assert len(rows) == 1
    assert {"subject", "class", "dice", "hd_mm", "hd95_mm", "assd_mm"} <= set(rows[0])
    assert rows[0]["subject"] == "P03" and rows[0]["class"] == "foreground"
    assert 0.0 <= rows[0]["dice"] <= 1.0
    assert set(metrics["summary"]["foreground"]) >= {"dice", "hd_mm", "hd95_mm", "assd_mm"}
    assert set(metrics["summary"]["foreground"]["dice"]) >= {"mean", "std"}
    csv_rows = (root / "runs" / "adaent" / "eval" / "metrics.csv").read_text().splitlines()
    assert csv_rows[0] == "subject,class,dice,hd_mm,hd95_mm,assd_mm,dice_organ_slices" and len(csv_rows) == 2
    assert 0.0 <= rows[0]["dice_organ_slices"] <= 1.0


def test_predict_keeps_input_geometry(flow):
    root, _ = flow
    src = root / "data" / "P03" / "P03_inn.nii.gz"
    mask = root / "pred" / "P03_inn_seg.nii.gz"
    a, b = nib.load(str(src)), nib.load(str(mask))
    assert b.shape == a.shape and np.array_equal(b.affine, a.affine)
    assert b.get_data_dtype() == np.uint8
    assert set(np.unique(np.asarray(b.dataobj))) <= {0, 1}
    assert (root / "pred" / "P03_inn_entropy.nii.gz").is_file()

    mha_in = read_volume(root / "mha" / "P03_inn.mha")
    mha_out = read_volume(root / "pred-mha" / "P03_inn_seg.mha", dtype=None)
    assert mha_out.array.shape == mha_in.array.shape
    assert np.allclose(mha_out.affine, mha_in.affine)
    assert mha_out.array.dtype == np.uint8
    # same image, same model: the .mha mask equals the NIfTI one
    assert np.array_equal(mha_out.array, np.asarray(b.dataobj))


def test_report(flow):
    root, steps = flow
    report = root / "report"
    assert "report:" in steps["report"][1]
    text = (report / "report.md").read_text()
    assert "source" in text.lower() and "adaent" in text.lower()
    for run in ("source", "adaent"):  # what each run's figures are of: checkpoint, modality, subjects
        assert f"| {run} | `{root / 'runs' / run / 'selected.pt'}` | inn | P03 |" in text
    for png in ("curves.png", "grid.png"):
        assert (report / png).read_bytes()[:8] == PNG, png
        assert png in text


# --------------------------------------------------------------------------- bad input


def _error_line(err: str) -> str:
    """The one line the user sees (progress bars erase themselves with \\r)."""
    assert "Traceback" not in err
    lines = [seg.split("\r")[-1].strip() for seg in err.split("\n")]
    lines = [line for line in lines if line]
    assert len(lines) == 1, lines
    assert lines[0].startswith("sfda: error: "), lines[0]
    return lines[0]


def _bad_prior(path: Path, ids: list[str], row: str) -> Path:
    path.write_text("slice_id,background,foreground\n" + "".join(f"{i},{row}\n" for i in ids))
    return path


def _foreign_checkpoints(ckpt: Path, regressor: Path, mislabelled: Path) -> None:
    """A ratio regressor's checkpoint, and a U-Net's weights declared as an ENet."""
    from dataclasses import replace

    from sfda.config.card import Network
    from sfda.engine.checkpoint import load_checkpoint, save_checkpoint
    from sfda.nets import build_net

    card = load_checkpoint(ckpt)["card"]
    save_checkpoint(regressor, build_net("regressor", in_channels=1, num_classes=2),
                    replace(card, network=Network("regressor", {"in_channels": 1, "num_classes": 2}), kind="regression"))
    unet = build_net(card.network.name, **card.network.args)
    save_checkpoint(mislabelled, unet, replace(card, network=Network("enet", {"in_channels": 1, "num_classes": 2})))


def _bad_cases(root: Path, tmp: Path) -> dict[str, list]:
    runs, cases = root / "runs", root / "cases.json"
    ckpt = runs / "source" / "last.pt"
    junk = tmp / "junk.pt"
    junk.write_bytes(np.random.default_rng(0).bytes(2048))
    notckpt = tmp / "cases_copy.pt"
    notckpt.write_text(cases.read_text())
    regressor, mislabelled = tmp / "regressor.pt", tmp / "mislabelled.pt"
    _foreign_checkpoints(ckpt, regressor, mislabelled)
    p03 = [f"P03:{i}" for i in range(16)]
    missing = _bad_prior(tmp / "short_prior.csv", p03[:-1], "0.9,0.1")
    not_one = _bad_prior(tmp / "bad_prior.csv", p03, "0.5,0.6")
    out = tmp / "out"
    train = ["train-source", "--cases", cases, "--modality", "wat", "--out", out, *TRAIN, *TINY_NET]
    adapt = ["adapt", "--cases", cases, "--modality", "inn", "--subjects", "P03", "--out", out,
             "--prior", runs / "prior.csv", *TRAIN]
    return {
        "missing case list": (["train-source", "--cases", tmp / "nope.json", "--modality", "wat", "--out", out],
                              "nope.json"),
        "unknown modality": (train[:4] + ["opp"] + train[5:], "'opp'"),
        "unknown subject": ([*train, "--subjects", "P01,P09"], "P09"),
        "unknown method": ([*adapt, "--checkpoint", ckpt, "--method", "adaentt"], "adaentt"),
        "junk checkpoint (adapt)": ([*adapt, "--checkpoint", junk], "junk.pt"),
        "not a checkpoint (adapt)": ([*adapt, "--checkpoint", notckpt], "cases_copy.pt"),
        "not a checkpoint (evaluate)": (["evaluate", "--checkpoint", notckpt, "--cases", cases, "--modality", "inn",
                                         "--out", out], "cases_copy.pt"),
        "not a checkpoint (predict)": (["predict", "--checkpoint", junk, root / "mha" / "P03_inn.mha",
                                        "--out", out], "junk.pt"),
        "regressor checkpoint (adapt)": ([*adapt, "--checkpoint", regressor], "regressor.pt"),
        "regressor checkpoint (evaluate)": (["evaluate", "--checkpoint", regressor, "--cases", cases, "--modality",
                                             "inn", "--out", out], "regressor.pt"),
        "weights of another network (adapt)": ([*adapt, "--checkpoint", mislabelled], "mislabelled.pt"),
        "weights of another network (predict)": (["predict", "--checkpoint", mislabelled,
                                                  root / "mha" / "P03_inn.mha", "--out", out], "mislabelled.pt"),
        "prior missing slices": ([*adapt[:-len(TRAIN) - 2], "--prior", missing, *TRAIN, "--checkpoint", ckpt],
                                 "short_prior.csv"),
        "prior rows not summing to one": ([*adapt[:-len(TRAIN) - 2], "--prior", not_one, *TRAIN,
                                           "--checkpoint", ckpt], "bad_prior.csv"),
        "cuda (train-source)": ([*train, "--device", "cuda"], "--device cuda"),
        "cuda (adapt)": ([*adapt, "--checkpoint", ckpt, "--device", "cuda"], "--device cuda"),
        "cuda (evaluate)": (["evaluate", "--checkpoint", ckpt, "--cases", cases, "--modality", "inn", "--out", out,
                             "--device", "cuda"], "--device cuda"),
        "cuda (predict)": (["predict", "--checkpoint", ckpt, root / "mha" / "P03_inn.mha", "--out", out,
                            "--device", "cuda"], "--device cuda"),
        "unknown config key": ([*train, "optim.lrr=0.1"], "optim.lrr"),
        "unknown config key (adapt)": ([adapt[0], "--checkpoint", ckpt, *adapt[1:], "method.lamda=1"], "method.lamda"),
        "prior for unknown modality": (["prior", "--method", "constant", "--ratios", "0.9,0.1", "--cases", cases,
                                        "--modality", "opp", "--out", out / "prior.csv"], "'opp'"),
    }


BAD = ["missing case list", "unknown modality", "unknown subject", "unknown method", "junk checkpoint (adapt)",
       "not a checkpoint (adapt)", "not a checkpoint (evaluate)", "not a checkpoint (predict)",
       "prior missing slices", "prior rows not summing to one", "cuda (train-source)", "cuda (adapt)",
       "cuda (evaluate)", "cuda (predict)", "unknown config key", "unknown config key (adapt)",
       "prior for unknown modality", "regressor checkpoint (adapt)", "regressor checkpoint (evaluate)",
       "weights of another network (adapt)", "weights of another network (predict)"]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_exits_2_with_one_line(flow, tmp_path, capsys, case):
    pytest.importorskip("torch")
    import torch

    if case.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    root, _ = flow
    argv, named = _bad_cases(root, tmp_path)[case]
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert rc == 2
    line = _error_line(captured.err)
    assert named in line, line
    out = tmp_path / "out"
    assert not out.exists() or not any(out.rglob("*")), sorted(out.rglob("*"))


def test_bad_input_with_debug_shows_the_traceback(flow, tmp_path):
    from sfda.errors import SfdaError

    root, _ = flow
    with pytest.raises(SfdaError, match="nope.json"):
        main(["--debug", "train-source", "--cases", str(tmp_path / "nope.json"), "--modality", "wat",
              "--out", str(tmp_path / "out")])


# Bad volumes fed to `sfda predict`: each is refused with one line naming the file; nothing is written.
def _bad_volume(kind: str, path: Path) -> None:
    affine = np.diag([2.0, 1.25, 1.25, 1.0])
    if kind == "constant":
        write_volume(path, np.full((8, 16, 16), 7.0, dtype=np.float32), affine)
    elif kind == "nan":
        vol = np.random.default_rng(0).normal(size=(8, 16, 16)).astype(np.float32)
        vol[2, 3, 4] = np.nan
        nib.save(nib.Nifti1Image(vol, affine), path)
    elif kind == "4d":
        nib.save(nib.Nifti1Image(np.ones((8, 16, 16, 3), dtype=np.float32), affine), path)
    elif kind == "truncated":
        write_volume(path, np.random.default_rng(0).normal(size=(8, 16, 16)).astype(np.float32), affine)
        path.write_bytes(path.read_bytes()[:200])


@pytest.mark.parametrize("kind", ["constant", "nan", "4d", "truncated"])
def test_predict_refuses_bad_volumes(flow, tmp_path, capsys, kind):
    root, _ = flow
    bad = tmp_path / f"bad_{kind}.nii.gz"
    _bad_volume(kind, bad)
    out = tmp_path / "out"
    capsys.readouterr()
    rc = main(["predict", "--checkpoint", str(root / "runs" / "source" / "last.pt"), str(bad), "--out", str(out)])
    assert rc == 2
    assert bad.name in _error_line(capsys.readouterr().err)
    assert not out.exists() or not any(out.rglob("*"))


def test_predict_checks_every_input_before_writing_any_mask(flow, tmp_path, capsys):
    """A bad scan after a good one: refused before the good one's mask is written."""
    root, _ = flow
    bad = tmp_path / "bad_constant.nii.gz"
    _bad_volume("constant", bad)
    out = tmp_path / "out"
    capsys.readouterr()
    rc = main(["predict", "--checkpoint", str(root / "runs" / "source" / "last.pt"),
               str(root / "mha" / "P03_inn.mha"), str(bad), "--out", str(out)])
    assert rc == 2
    assert bad.name in _error_line(capsys.readouterr().err)
    assert not out.exists() or not any(out.rglob("*")), sorted(out.rglob("*"))


def test_full_disk_leaves_no_partial_mask(flow, tmp_path, capsys, monkeypatch):
    """A write that fails (ENOSPC at the rename) is reported in one line; no file, no temp file remains."""
    import errno

    import sfda.io.atomic as atomic

    def full(*_args, **_kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", full)
    root, _ = flow
    out = tmp_path / "out"
    capsys.readouterr()
    rc = main(["predict", "--checkpoint", str(root / "runs" / "source" / "last.pt"),
               str(root / "mha" / "P03_inn.mha"), "--out", str(out)])
    assert rc == 2
    line = _error_line(capsys.readouterr().err)
    assert "No space left" in line and str(out) in line  # its first write (the run's record) failed
    assert not out.exists() or not any(out.rglob("*")), sorted(out.rglob("*"))


# Bad datasets fed through `sfda data index` + `sfda train-source`: whichever stage meets the bad
# file refuses it with one line naming it; no case list or run folder is left half-written.
def _spoil(kind: str, subject: Path) -> Path:
    """Damage one file of a phantom subject; returns the file the error must name."""
    name = subject.name
    label, image = subject / f"{name}-Labels.nii.gz", subject / f"{name}_wat.nii.gz"
    lab = read_volume(label)
    if kind == "label value 7":
        arr = lab.array.copy()
        arr[0, 0, 0] = 7
        write_volume(label, arr, like=lab)
        return label
    if kind == "non-integer label":
        arr = lab.array.astype(np.float32)
        arr[0, 0, 0] = 0.5
        nib.save(nib.Nifti1Image(arr, nib.load(label).affine), label)
        return label
    if kind == "label of another shape":
        write_volume(label, lab.array[:-1], like=lab)
        return label
    if kind == "label of another spacing":
        img = nib.load(label)
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine @ np.diag([1.5, 1, 1, 1])), label)
        return label
    if kind == "header/data size mismatch":
        img = nib.load(image)
        plain = subject / f"{name}_wat.nii"
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine), plain)
        image.unlink()
        plain.write_bytes(plain.read_bytes()[:-512])  # the header promises 512 more bytes
        return plain
    if kind == "NaN voxels":
        vol = read_volume(image)
        arr = vol.array.astype(np.float32)
        arr[1, 2, 3] = np.nan
        nib.save(nib.Nifti1Image(arr, nib.load(image).affine), image)
        return image
    raise ValueError(kind)


BAD_DATA = ["label value 7", "non-integer label", "label of another shape", "label of another spacing",
            "header/data size mismatch", "NaN voxels", "file deleted after indexing"]


@pytest.mark.parametrize("kind", BAD_DATA)
def test_bad_dataset_exits_2_naming_the_file(flow, tmp_path, capsys, kind):
    import shutil

    root, _ = flow
    data = tmp_path / "data"
    for s in ("P01", "P02"):
        shutil.copytree(root / "data" / s, data / s)
    cases, out = tmp_path / "cases.json", tmp_path / "out"
    if kind == "file deleted after indexing":
        assert main(["data", "index", str(data), "-o", str(cases)]) == 0
        bad = data / "P02" / "P02_wat.nii.gz"
        bad.unlink()
    else:
        bad = _spoil(kind, data / "P02")
    capsys.readouterr()
    rc = main(["data", "index", str(data), "-o", str(cases)]) if not cases.exists() else 0
    if rc == 0:
        rc = main(["train-source", "--cases", str(cases), "--modality", "wat", "--out", str(out), *TRAIN,
                   *TINY_NET])
    else:
        assert not cases.exists()
    assert rc == 2
    line = _error_line(capsys.readouterr().err)
    assert bad.name in line, line
    assert not out.exists() or not any(out.rglob("*")), sorted(out.rglob("*"))


def test_empty_subject_list_is_refused(flow, tmp_path, capsys):
    root, _ = flow
    out = tmp_path / "out"
    capsys.readouterr()
    rc = main(["train-source", "--cases", str(root / "cases.json"), "--modality", "wat", "--subjects", ",",
               "--out", str(out), *TRAIN, *TINY_NET])
    assert rc == 2
    assert "--subjects" in _error_line(capsys.readouterr().err)
    assert not out.exists() or not any(out.rglob("*"))


def test_self_prior_needs_the_source_model(flow):
    root, _ = flow
    rc, _, err = _run(["prior", "--method", "self", "--cases", root / "cases.json", "--modality", "inn",
                       "--out", root / "nope.csv"])
    assert rc == 2 and "--checkpoint" in err and not (root / "nope.csv").exists()
