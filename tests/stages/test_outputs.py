"""Nothing a user owns is overwritten, and the file to use is always clear: each case through main().

Every refusal is one line, exit 2, before any write: the files the user owned are byte-identical
afterwards and no half-written or temporary file is left.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from sfda.cli import main
from tests.conftest import TINY_NET

ADAPT = ["--epochs", "1", "--batch-size", "4", "optim.max_steps_per_epoch=2"]
TRAIN = [*ADAPT, *TINY_NET]


def _run(argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def _state(*roots: Path) -> dict[str, str]:
    """Every file under ``roots`` -> a hash of its bytes."""
    files = [p for r in roots for p in ([r] if r.is_file() else sorted(r.rglob("*"))) if p.is_file()]
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _refused(argv, owned: list[Path], *words: str) -> str:
    """Run ``argv``; it must exit 2 with one line holding ``words``, and leave ``owned`` as it was."""
    before = _state(*owned)
    rc, _, err = _run(argv)
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("sfda: error: "), (rc, err)
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], lines[0]
    assert _state(*owned) == before
    assert not [p for r in owned if r.is_dir() for p in r.rglob("*.tmp*")]
    return lines[0]


@pytest.fixture(scope="module")
def source_run(tiny_cases, tmp_path_factory) -> Path:
    """A finished train-source run: the user's model."""
    out = tmp_path_factory.mktemp("owned") / "s"
    rc, _, err = _run(["train-source", "--cases", tiny_cases, "--modality", "wat", "--subjects", "P01,P02",
                       "--out", out, *TRAIN])
    assert rc == 0, err
    return out


def _scan(path: Path, value: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.zeros((6, 32, 32), np.float32)
    data[:, 8:24, 8:24] = 100 * value
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return path


def test_predict_into_the_folder_of_its_inputs_is_refused(source_run, tmp_path):
    u = tmp_path / "u"
    _scan(u / "case.nii.gz")
    _scan(u / "case_seg.nii.gz", 2)  # the user's label, named as sfda would name the mask
    _refused(["predict", "--checkpoint", source_run / "selected.pt", u, "--out", u], [u], "never writes over")


def test_adapt_into_the_folder_of_its_source_checkpoint_is_refused(source_run, tiny_cases, tiny_source, tmp_path):
    _, prior = tiny_source
    argv = ["adapt", "--checkpoint", source_run / "last.pt", "--out", source_run, "--cases", tiny_cases,
            "--modality", "inn", "--subjects", "P03", "--prior", prior, *ADAPT]
    _refused(argv, [source_run], "holds", "last.pt")
    _refused([*argv, "--resume"], [source_run], "holds", "last.pt")


def test_masks_of_scans_with_one_name_get_distinct_names(source_run, tmp_path):
    a, b = _scan(tmp_path / "d1" / "scan.nii.gz"), _scan(tmp_path / "d2" / "scan.nii.gz", 2)
    rc, out, err = _run(["predict", "--checkpoint", source_run / "selected.pt", a, b, "--out", tmp_path / "o"])
    assert rc == 0, err
    assert "wrote 2 masks" in out
    assert sorted(p.name for p in (tmp_path / "o").glob("*.nii.gz")) == ["d1_scan_seg.nii.gz", "d2_scan_seg.nii.gz"]


def test_a_pattern_case_list_gives_one_mask_per_subject(source_run, tmp_path):
    root = tmp_path / "data"
    for s in ("A1", "B1", "C1"):
        _scan(root / s / "wat.nii.gz")
    cases = tmp_path / "cases.json"
    assert _run(["data", "index", root, "-o", cases, "--layout", "pattern", "--pattern", "{subject}/{modality}.nii.gz"])[0] == 0
    rc, out, err = _run(["predict", "--checkpoint", source_run / "selected.pt", cases, "--out", tmp_path / "o"])
    assert rc == 0, err
    assert sorted(p.name for p in (tmp_path / "o").glob("*.nii.gz")) == [f"{s}_wat_seg.nii.gz" for s in ("A1", "B1", "C1")]


def test_nnunet_names_follow_nnunet_and_a_second_channel_is_refused(source_run, tmp_path):
    a = _scan(tmp_path / "in" / "case_0000.nii.gz")
    rc, _, err = _run(["predict", "--checkpoint", source_run / "selected.pt", a, "--out", tmp_path / "o"])
    assert rc == 0, err
    assert [p.name for p in (tmp_path / "o").glob("*.nii.gz")] == ["case.nii.gz"]
    _scan(tmp_path / "in" / "case_0001.nii.gz")
    _refused(["predict", "--checkpoint", source_run / "selected.pt", tmp_path / "in", "--out", tmp_path / "o2"],
             [tmp_path / "in"], "would both be written as case.nii.gz")
    assert not (tmp_path / "o2").exists()


@pytest.mark.parametrize("change, key", [("--lr=0.5", "optim.lr"), ("--seed=3", "seed"),
                                         ("--subjects=P01", "data.subjects"), ("--modality=inn", "data.modality")])
def test_resume_refuses_another_run_and_names_what_differs(source_run, tiny_cases, tmp_path, change, key):
    run = tmp_path / "s"
    shutil.copytree(source_run, run)
    argv = ["train-source", "--cases", tiny_cases, "--modality", "wat", "--subjects", "P01,P02", "--out", run,
            *TRAIN, "--resume"]
    _refused([*argv, change], [run], "--resume", key)


def test_resume_with_another_network_is_refused_before_config_yaml_is_rewritten(source_run, tiny_cases, tmp_path):
    run = tmp_path / "s"
    shutil.copytree(source_run, run)
    argv = ["train-source", "--cases", tiny_cases, "--modality", "wat", "--subjects", "P01,P02", "--out", run,
            *TRAIN, "net=enet", "--resume"]
    _refused(argv, [run], "net 'unet' -> 'enet'")


def test_resume_of_the_same_run_goes_on(source_run, tiny_cases, tmp_path):
    run = tmp_path / "s"
    shutil.copytree(source_run, run)
    rc, out, err = _run(["train-source", "--cases", tiny_cases, "--modality", "wat", "--subjects", "P01,P02",
                         "--out", run, *TRAIN, "--epochs", "2", "--resume"])
    assert rc == 0, err
    assert len((run / "log.jsonl").read_text().splitlines()) == 2
    assert out.strip().splitlines()[-1] == f"model to use: {run}/selected.pt"
    assert "ran so far with" not in out  # the same environment: nothing to say
    assert "started_in" not in json.loads((run / "stage.json").read_text())


def test_each_run_records_the_environment_it_computed_in(source_run):
    env = json.loads((source_run / "stage.json").read_text())["environment"]
    assert env["torch"] == torch.__version__ and env["threads"] == torch.get_num_threads()
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()


def test_a_run_resumed_in_another_environment_says_so_and_keeps_the_first(source_run, tiny_cases, tmp_path):
    run = tmp_path / "s"
    shutil.copytree(source_run, run)
    record = json.loads((run / "stage.json").read_text())
    first = {**record["environment"], "cpu_capability": "AVX2", "threads": 7}
    if first["cpu_capability"] == torch.backends.cpu.get_cpu_capability():
        first["cpu_capability"] = "AVX512"
    (run / "stage.json").write_text(json.dumps({**record, "environment": first}))
    rc, out, err = _run(["train-source", "--cases", tiny_cases, "--modality", "wat", "--subjects", "P01,P02",
                         "--out", run, *TRAIN, "--epochs", "2", "--resume"])
    assert rc == 0, err
    assert f"ran so far with cpu_capability {first['cpu_capability']} -> " in out and "threads 7 -> " in out
    now = json.loads((run / "stage.json").read_text())
    assert now["started_in"] == first and now["environment"]["threads"] == torch.get_num_threads()
    rc, out, err = _run(["train-source", "--cases", tiny_cases, "--modality", "wat", "--subjects", "P01,P02",
                         "--out", run, *TRAIN, "--epochs", "3", "--resume"])  # again, here: nothing new to say
    assert rc == 0 and "ran so far with" not in out, err
    assert json.loads((run / "stage.json").read_text())["started_in"] == first  # the mixed run stays said


def test_a_finished_run_is_not_trained_over_unless_overwrite(source_run, tiny_cases, tmp_path):
    run = tmp_path / "s"
    shutil.copytree(source_run, run)
    (run / "epoch_007.pt").write_bytes(b"an old run's epoch file")
    argv = ["train-source", "--cases", tiny_cases, "--modality", "wat", "--subjects", "P01,P02", "--out", run, *TRAIN]
    _refused(argv, [run], "holds a finished run of `sfda train-source`", "--overwrite")
    rc, _, err = _run([*argv, "--overwrite"])
    assert rc == 0, err
    assert not (run / "epoch_007.pt").exists()  # no old epoch file mixed in
    assert json.loads((run / "done.json").read_text())["model"] == "selected.pt"


def test_a_folder_of_other_files_is_refused_even_with_overwrite(tiny_cases, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    argv = ["train-source", "--cases", tiny_cases, "--modality", "wat", "--subjects", "P01", "--out", mine, *TRAIN]
    _refused(argv, [mine], "did not write")
    _refused([*argv, "--overwrite"], [mine], "did not write")


def test_import_nnunet_never_writes_into_the_folder_it_reads(tmp_path):
    from tests.stages.test_nnunet import make_result_folder

    folder = make_result_folder(tmp_path / "results")
    ckpt = next(folder.rglob("checkpoint_final.pth"))
    _refused(["import-nnunet", "--folder", folder, "--out", ckpt], [folder], "never writes over")
    _refused(["import-nnunet", "--folder", folder, "--out", folder / "fold_0" / "sfda.pt"], [folder], "lies inside")


def test_index_and_prior_never_overwrite_a_scan_or_a_case_list(tiny_cases, tmp_path):
    cases = Path(tiny_cases)
    root = cases.parent / "data"
    scan = next(root.rglob("*_inn.nii.gz"))
    owned = [cases, root]
    _refused(["data", "index", root, "-o", scan, "--overwrite"], owned, "never writes over")
    _refused(["data", "index", root, "-o", cases], owned, "exists", "--overwrite")
    prior = ["prior", "--method", "constant", "--ratios", "0.9,0.1", "--cases", cases, "--modality", "inn"]
    _refused([*prior, "--out", scan, "--overwrite"], owned, "never writes over")
    _refused([*prior, "--out", cases, "--overwrite"], owned, "never writes over")
    out = tmp_path / "tau.csv"
    assert _run([*prior, "--out", out])[0] == 0
    _refused([*prior, "--out", out], [out], "exists")


def test_a_folder_being_written_by_another_process_is_refused(tiny_cases, tiny_source, tmp_path):
    from sfda.io.lock import FolderLock

    checkpoint, prior = tiny_source
    out = tmp_path / "ada"
    out.mkdir()
    lock = FolderLock(out)  # another live sfda process holds it
    try:
        _refused(["adapt", "--checkpoint", checkpoint, "--out", out, "--cases", tiny_cases, "--modality", "inn",
                  "--subjects", "P03", "--prior", prior, *ADAPT], [out], "another sfda process")
    finally:
        lock.release()
    assert not (out / ".sfda.lock").exists()


def test_stage_commands_refuse_training_on_validation_subjects(tiny_cases, tmp_path):
    _refused(["train-source", "--cases", tiny_cases, "--modality", "wat", "--subjects", "P01,P02",
              "--val-subjects", "P02", "--out", tmp_path / "s", *TRAIN], [Path(tiny_cases)], "P02")
    assert not (tmp_path / "s").exists()


def test_a_failed_run_leaves_no_folder_behind(tiny_cases, tmp_path):
    """Bad input found after the folder was claimed: the claim is undone."""
    out = tmp_path / "s"
    _refused(["train-source", "--cases", tiny_cases, "--modality", "wat", "--subjects", "P09", "--out", out,
              *TRAIN], [Path(tiny_cases)], "P09")
    assert not out.exists()


def test_resume_into_another_commands_run_is_refused(source_run, tiny_cases, tiny_source, tmp_path):
    run = tmp_path / "s"
    shutil.copytree(source_run, run)
    _, prior = tiny_source
    _refused(["adapt", "--checkpoint", tiny_source[0], "--out", run, "--cases", tiny_cases, "--modality", "inn",
              "--subjects", "P03", "--prior", prior, *ADAPT, "--resume"], [run], "not one of `sfda adapt`")
    experiment = tmp_path / "exp"
    experiment.mkdir()
    (experiment / "stage.json").write_text('{"command": "experiment"}')
    _refused(["train-source", "--cases", tiny_cases, "--modality", "wat", "--subjects", "P01", "--out", experiment,
              *TRAIN, "--resume"], [experiment], "not one of `sfda train-source`")
