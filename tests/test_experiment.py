"""``sfda experiment`` on the tiny phantom: seeds, label-free selection, results, and resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from sfda.cli import main

TINY = {"net": "unet", "net_args": {"width": 4, "depth": 2},
        "optim": {"epochs": 2, "batch_size": 4, "max_steps_per_epoch": 2}}


def _config(tmp: Path, tiny_cases: str, **extra) -> Path:
    cfg = {
        "data": {"root": str(Path(tiny_cases).parent / "data"), "layout": "auto"},
        "directions": ["wat->inn"],
        "split": {"train": ["P01"], "val": ["P02"], "test": ["P03"]},
        "methods": ["noadapt", "oracle", "adabn", "adaent"],
        "seeds": [0, 1],
        "source": TINY,
        "prior": {"method": "source-position"},
        "adapt": {"optim": {"epochs": 3, "batch_size": 4, "max_steps_per_epoch": 2, "lr": 1e-3},
                  "select": "holdout_kl"},
        **extra,
    }
    path = tmp / "experiment.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _numbers(results: dict) -> list:
    """Every figure of results.json (the run folder names differ between runs)."""
    return [(d["source"], d["target"], d["seeds"], d["selection"]) for d in results["directions"]]


@pytest.fixture(scope="module")
def finished(tiny_cases, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("experiment")
    out = tmp / "run"
    assert main(["experiment", str(_config(tmp, tiny_cases)), "--out", str(out)]) == 0
    return tmp, out, json.loads((out / "results.json").read_text())


def test_seeds_give_mean_and_std_and_keep_each_seed(finished):
    _, out, results = finished
    (direction,) = results["directions"]
    assert set(direction["seeds"]) == {"0", "1"}
    for m in ("noadapt", "oracle", "adabn", "adaent"):
        dice = direction["methods"][m]["foreground"]["dice"]
        per_seed = [direction["seeds"][s][m]["foreground"]["dice"]["mean"] for s in ("0", "1")]
        assert dice["mean"] == pytest.approx(sum(per_seed) / 2)
        assert dice["std"] == pytest.approx(abs(per_seed[0] - per_seed[1]) / 2 ** 0.5)  # sample std (ddof 1)
    # The Oracle is trained once per target modality and seed (shared by every direction into it).
    assert all((out / "models" / "inn" / f"seed{s}" / "done.json").exists() for s in (0, 1))
    assert (out / "wat-inn" / "seed0" / "report" / "report.md").exists()
    md = (out / "results.md").read_text()
    assert "seed 0" in md and "seed 1" in md and "holdout_kl" in md


def test_selection_is_label_free_and_reported_beside_last_and_best(finished):
    _, out, results = finished
    sel = results["directions"][0]["selection"]["0"]["adaent"]
    assert sel["criterion"] == "holdout_kl" and 1 <= sel["selected_epoch"] <= 3 and sel["last_epoch"] == 3
    run = out / "wat-inn" / "seed0" / "adaent"
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    kls = [r["holdout_kl"] for r in log]
    assert sel["selected_epoch"] == max(i + 1 for i, v in enumerate(kls) if v == min(kls))
    assert sel["best_val_dice"] == max(r["val_dice"] for r in log)
    assert (run / "selected.pt").exists()
    reported = results["directions"][0]["seeds"]["0"]["adaent"]["foreground"]["dice"]["mean"]
    assert reported == pytest.approx(sel["dice_selected"])


def test_experiment_resumes_after_sigkill_and_matches(finished, tiny_cases, tmp_path):
    """Kill the experiment during seed 0's adaptation; the rerun keeps the finished stages
    (source not retrained) and its results equal the uninterrupted run's."""
    tmp, _, reference = finished
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "sfda", "experiment", str(_config(tmp, tiny_cases)), "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = out / "wat-inn" / "seed0" / "adaent" / "last.pt"  # its first epoch done
    deadline = time.monotonic() + 300
    while not target.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the experiment finished before it could be killed"
    assert not (out / "results.json").exists()
    source = out / "models" / "wat" / "seed0" / "last.pt"
    stamp = source.stat().st_mtime_ns
    assert main(["experiment", str(_config(tmp, tiny_cases)), "--out", str(out)]) == 0
    assert source.stat().st_mtime_ns == stamp, "the finished source stage was redone"
    assert _numbers(json.loads((out / "results.json").read_text())) == _numbers(reference)


def _stamps(out: Path) -> dict[str, int]:
    """Each finished stage's done marker -> its modification time (the reports are written anew on
    every run: they read the stages' results and compute nothing)."""
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.rglob("*done.json")
            if not {"cache", "phantom", "report"} & set(p.parts)}


def test_a_changed_config_value_reruns_exactly_the_stages_that_depend_on_it(finished, tiny_cases, tmp_path, capsys):
    """Stale results are never reused: after changing the adaptation's lr, the adapted runs and
    their scores run again, while the source, the Oracle, the prior and NoAdaptation's score stay."""
    import shutil

    tmp, done_out, _ = finished
    out = tmp_path / "run"
    shutil.copytree(done_out, out)
    before = _stamps(out)
    assert main(["experiment", str(_config(tmp_path, tiny_cases)), "--out", str(out)]) == 0
    assert _stamps(out) == before, "an unchanged config reran a stage"
    capsys.readouterr()
    assert main(["experiment", str(_config(tmp_path, tiny_cases)), "--out", str(out), "adapt.optim.lr=0.002"]) == 0
    said = capsys.readouterr().out
    after = _stamps(out)
    rerun = sorted(k for k in before if after[k] != before[k])
    # AdaBN's run reads the same adapt section (lr included), so its fingerprint changes too.
    adapted = [k for k in before if "/adaent/" in f"/{k}" or "/adabn/" in f"/{k}"]
    assert rerun == sorted(adapted), rerun
    assert "optim.lr 0.001 -> 0.002" in said


def _trainings(monkeypatch) -> list[str]:
    """Every train-source run's output folder, in order."""
    from sfda.stages import train

    seen, real = [], train.train_source
    monkeypatch.setattr(train, "train_source", lambda cfg, progress=True, **kw: (seen.append(cfg.out), real(cfg, progress, **kw))[1])
    return seen


def test_one_training_is_the_source_of_one_direction_and_the_oracle_of_the_other(tiny_cases, tmp_path, monkeypatch):
    cfg = _config(tmp_path, tiny_cases, seeds=[0], methods=["noadapt", "oracle"], directions=["wat->inn", "inn->wat"])
    out = tmp_path / "run"
    seen = _trainings(monkeypatch)
    assert main(["experiment", str(cfg), "--out", str(out)]) == 0
    assert sorted(seen) == [str(out / "models" / d / "seed0") for d in ("inn", "wat")]  # two trainings, four uses
    results = json.loads((out / "results.json").read_text())
    wat_inn, inn_wat = results["directions"]
    # inn->wat's Oracle is wat->inn's source model: scored on wat's test subjects it is the same model
    assert (out / "models" / "wat" / "seed0" / "eval" / "metrics.json").exists()
    assert inn_wat["methods"]["oracle"] and wat_inn["methods"]["noadapt"]
    seen.clear()
    assert main(["experiment", str(cfg), "--out", str(out)]) == 0 and seen == []  # a rerun trains nothing
    # the Oracle's own settings: a second model per domain
    assert main(["experiment", str(cfg), "--out", str(out), "oracle={optim: {epochs: 1}}"]) == 0
    assert sorted(seen) == [str(out / "models" / d / "seed0-oracle") for d in ("inn", "wat")]
    oracle_cfg = yaml.safe_load((out / "models" / "wat" / "seed0-oracle" / "config.yaml").read_text())
    assert oracle_cfg["optim"]["epochs"] == 1 and oracle_cfg["data"]["modality"] == "wat"


def test_models_of_the_earlier_layout_are_kept(tiny_cases, tmp_path, monkeypatch):
    """An experiment made when each direction trained its own source (<src>-<tgt>/seed<k>/source) and
    Oracle (oracle-<tgt>/seed<k>) reruns without training them again."""
    cfg = _config(tmp_path, tiny_cases, seeds=[0], methods=["noadapt", "oracle"])
    out = tmp_path / "run"
    assert main(["experiment", str(cfg), "--out", str(out)]) == 0
    first = json.loads((out / "results.json").read_text())["directions"][0]["methods"]
    (out / "wat-inn" / "seed0").mkdir(parents=True, exist_ok=True)
    (out / "models" / "wat" / "seed0").rename(out / "wat-inn" / "seed0" / "source")
    (out / "oracle-inn").mkdir()
    (out / "models" / "inn" / "seed0").rename(out / "oracle-inn" / "seed0")
    seen = _trainings(monkeypatch)
    assert main(["experiment", str(cfg), "--out", str(out)]) == 0
    assert seen == [] and json.loads((out / "results.json").read_text())["directions"][0]["methods"] == first


def test_an_unknown_oracle_key_is_refused_before_anything_runs(tiny_cases, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["experiment", str(_config(tmp_path, tiny_cases)), "--out", str(out), "oracle={optim: {nope: 1}}"]) != 0
    assert "oracle.optim.nope" in capsys.readouterr().err and not out.exists()


def test_an_empty_validation_split_runs_without_the_best_by_labels_column(tiny_cases, tmp_path):
    """split.val=[] (what a config does that must not validate on its test subjects): the label-free
    choice still runs and results.md shows no best-by-validation figure."""
    cfg = _config(tmp_path, tiny_cases, seeds=[0], methods=["noadapt", "adaent"])
    out = tmp_path / "run"
    argv = ["experiment", str(cfg), "--out", str(out), "split.val=[]", "adapt.select=average"]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    (sel,) = results["directions"][0]["selection"].values()
    assert sel["adaent"]["best_val_dice"] is None and sel["adaent"]["val_subjects"] == []
    row = next(x for x in (out / "results.md").read_text().splitlines() if x.startswith("| adaent | average"))
    assert row.rstrip().endswith("| – |"), row


def test_a_trust_fall_back_is_reported_and_the_last_epoch_scored_apart(tiny_cases, tmp_path, monkeypatch):
    """A trust warning (forced here: the signals themselves are tested in tests/metrics/test_trust.py)
    makes selected.pt the source model; the selection table says so, and the 'last' column scores
    the adapted weights (last.pt), not the fall-back."""
    monkeypatch.setattr("sfda.stages.trust.trust_flags", lambda signals, names: [(1, "atlas_share of x is 0.10")])
    cfg = _config(tmp_path, tiny_cases, seeds=[0], methods=["noadapt", "adaent"])
    out = tmp_path / "run"
    assert main(["experiment", str(cfg), "--out", str(out), "adapt.select=last"]) == 0
    run = out / "wat-inn" / "seed0" / "adaent"
    trust = json.loads((run / "trust.json").read_text())
    results = json.loads((out / "results.json").read_text())
    (sel,) = results["directions"][0]["selection"].values()
    assert trust["warnings"] and trust["fallback"] == "source" == sel["adaent"]["fallback"]
    assert (run / "eval-last" / "metrics.json").exists()
    assert "source model (trust fall-back)" in (out / "results.md").read_text()
    assert results["directions"][0]["trust_warnings"]


@pytest.mark.parametrize("override, key", [
    ("adapt.method.name=tent", "adapt.method.name"),
    ("adapt.method.source_subjects=[P01]", "adapt.method.source_subjects"),
    ("adapt.overrides={adaent: {method: {name: tent}}}", "adapt.overrides.adaent.method.name"),
    ("adapt.overrides={adaent: {checkpoint: x.pt}}", "adapt.overrides.adaent.checkpoint"),
    ("adapt.overrides={tentt: {optim: {lr: 0.1}}}", "adapt.overrides.tentt"),
])
def test_a_key_the_experiment_fills_is_refused_before_anything_runs(tiny_cases, tmp_path, capsys, override, key):
    """The experiment names each row's method and source itself: a config that sets them (directly
    or in a method's overrides) would be silently replaced, so it is refused, naming the key."""
    out = tmp_path / "run"
    assert main(["experiment", str(_config(tmp_path, tiny_cases)), "--out", str(out), override]) == 2
    assert key in capsys.readouterr().err and not out.exists()


def test_overrides_change_their_method_only_and_the_parsed_config_is_never_written(tiny_cases, tmp_path):
    from sfda.config import config_to_dict, load_config
    from sfda.config.experiment import ExperimentConfig
    from sfda.stages.experiment import run_experiment

    cfg = load_config(ExperimentConfig, str(_config(tmp_path, tiny_cases, seeds=[0], methods=["adabn", "adaent"])),
                      ["adapt.overrides={adaent: {optim: {lr: 0.5}, method: {lam: 3.0}}}"])
    before = config_to_dict(cfg)
    out = tmp_path / "run"
    run_experiment(cfg, str(out), progress=False)
    assert config_to_dict(cfg) == before
    runs = {m: yaml.safe_load((out / "wat-inn" / "seed0" / m / "config.yaml").read_text()) for m in ("adabn", "adaent")}
    assert [runs[m]["method"]["name"] for m in runs] == ["adabn", "adaent"]
    assert (runs["adaent"]["optim"]["lr"], runs["adaent"]["method"]["lam"]) == (0.5, 3.0)
    assert (runs["adabn"]["optim"]["lr"], runs["adabn"]["method"]["lam"]) == (1e-3, before["adapt"]["method"]["lam"])
