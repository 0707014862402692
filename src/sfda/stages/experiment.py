"""``sfda experiment``: the paper's comparison, end to end, cached and resumable.

For each direction (source -> target modality) and seed: train the source
model and the Oracle, build the prior, run every adaptation method from the
same source checkpoint, evaluate everything on the test subjects' target
images, then write results.json / results.md and the report. A stage whose
``done.json`` exists is skipped on a rerun (``rerun=true`` forces it).

No target label chooses anything: each adapted model is scored as chosen by
``adapt.select`` (label-free: the last epoch, the average of the epochs'
weights, or a held-out score on the validation subjects' unlabelled images).
The validation subjects' labels are only logged (curves, the "best by
validation labels" column).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

from sfda.config import (AdaptConfig, AdaptSettings, DataConfig, EvaluateConfig, MethodConfig, PriorConfig,
                         PriorSettings, PriorTrainConfig, PriorTrainSettings, SlicingConfig, TrainConfig, TrainSettings,
                         merge_into, save_config)
from sfda.config.experiment import ExperimentConfig
from sfda.config.method import MethodSettings
from sfda.config.methods import ADAPT_METHODS, NOADAPT, ORACLE
from sfda.errors import SfdaError
from sfda.engine.selection import model_to_use
from sfda.io.atomic import write_json
from sfda.io.cases import save_cases, select_cases
from sfda.io.layouts import index_dataset
from sfda.io.lock import FolderLock
from sfda.stages.common import check_output, decide_axis, on_device
from sfda.stages.freshness import RECORD, Stage
from sfda.stages.outputs import folder_kind, refuse_overlap
from sfda.stages.experiment_domains import Domain, check_config, parse_direction, resolve
from sfda.stages.experiment_results import selection_info, write_results


def _settings(section, settings: type, cls: type, **inputs):
    """A stage config ``cls`` from an experiment section's ``settings`` fields plus the inputs
    the experiment fills (an input named like a setting replaces it)."""
    return cls(**{f: copy.deepcopy(getattr(section, f)) for f in settings.__dataclass_fields__ if f not in inputs},
               **inputs)


class Runner:
    """Runs one experiment; every stage writes into its own folder under ``out``."""

    def __init__(self, cfg: ExperimentConfig, out: Path, progress: bool = True):
        self.cfg, self.out, self.progress = cfg, out, progress
        self.cases = str(out / "cases.json")
        self.domains: dict[str, Domain] = {}
        self.oracles: dict[tuple[str, int], Path] = {}  # (target, seed) -> the Oracle's folder

    def log(self, text: str) -> None:
        if self.progress:
            print(text, flush=True)

    def _fresh(self, stage: Stage, folder: Path, what: str, marker: str = "done.json") -> bool:
        """True when ``folder`` holds ``stage`` finished; else say why it (re)runs and record it."""
        why = "rerun=true" if self.cfg.rerun else stage.why_stale(folder, marker)
        if why is None:
            return True
        self.log(f"[{what}] {folder}" + ("" if why == "not run yet" else f": running again ({why})"))
        return False

    def _train(self, cfg, stage: Stage, run) -> None:
        """Run a training stage into ``cfg.out``, resuming only a run of this very config; any other
        run there is the experiment's own stale one, replaced."""
        cfg.resume = not self.cfg.rerun and stage.can_resume(Path(cfg.out))
        cfg.overwrite = not cfg.resume
        run(cfg, progress=self.progress, run=stage)

    def index(self):
        """The merged case list and the domains, checked; nothing is written yet (but the phantom)."""
        d = self.cfg.data
        if self.cfg.domains:
            return resolve(self.cfg)
        if d.phantom_subjects:
            from sfda.data.phantom import make_phantom

            root = Path(d.root or self.out / "phantom")
            if not (root / "done.json").exists():
                make_phantom(root, n_subjects=d.phantom_subjects, seed=d.phantom_seed)
                write_json(root / "done.json", {"subjects": d.phantom_subjects, "seed": d.phantom_seed})
            # the one derived config: the phantom's folder as data.root (the parsed config is kept)
            self.cfg = dataclasses.replace(self.cfg, data=dataclasses.replace(d, root=str(root)))
            d = self.cfg.data
        if not d.root:
            raise SfdaError("data.root is required: the dataset folder (or data.phantom_subjects=N)")
        return resolve(self.cfg, index_dataset(d.root, d.layout, d.pattern or None, d.label_pattern or None))

    def save_index(self, cl, domains: dict[str, Domain]) -> None:
        self.domains = domains
        save_cases(self.cases, cl)

    def data(self, dom: Domain, subjects, val=()) -> DataConfig:
        slicing = {f: copy.deepcopy(getattr(self.cfg.slicing, f)) for f in SlicingConfig.__dataclass_fields__}
        return DataConfig(**slicing, cases=self.cases, modality=dom.modality, subjects=list(subjects),
                          val_subjects=list(val), cache=str(self.out / "cache"))

    def _supervised_config(self, dom: Domain, seed: int, oracle: bool) -> TrainConfig:
        """The training of ``dom``'s labelled subjects: the ``source`` settings, with ``oracle``'s
        changes for the Oracle (where it writes is left to :meth:`supervised`)."""
        c = self.cfg
        cfg = _settings(c.source, TrainSettings, TrainConfig, data=self.data(dom, dom.train, dom.val), seed=seed,
                        device=c.device)
        if oracle and c.oracle:
            merge_into(cfg, c.oracle, prefix="oracle.")
        return cfg

    def supervised(self, dom: Domain, seed: int, oracle: bool = False, legacy: Path | None = None) -> Path:
        """A model trained on ``dom``'s labels, trained once however many roles use it: the source of
        every direction out of ``dom`` and the Oracle of every direction into it share
        ``OUT/models/<dom>/seed<k>`` while their settings are the same (their stage fingerprints match);
        an Oracle with its own settings gets ``seed<k>-oracle``. ``legacy``: the folder an earlier
        layout used (``<src>-<tgt>/seed<k>/source``, ``oracle-<tgt>/seed<k>``), kept while it holds
        this very training finished, so older experiments are not trained again."""
        from sfda.stages.train import train_source

        cfg = self._supervised_config(dom, seed, oracle)
        stage = Stage(cfg, [self.cases], self.out)
        same = not oracle or stage.fingerprint == Stage(self._supervised_config(dom, seed, False), [self.cases],
                                                        self.out).fingerprint
        out = self.out / "models" / dom.name / (f"seed{seed}" if same else f"seed{seed}-oracle")
        if legacy is not None and stage.why_stale(legacy) is None:
            return legacy
        cfg.out = str(out)
        if not self._fresh(stage, out, "train"):
            self._train(cfg, stage, train_source)
        return out

    def prior(self, folder: Path, src: Domain, tgt: Domain, seed: int, source_ckpt: Path) -> Path:
        from sfda.stages.prior import make_prior
        from sfda.stages.train import train_prior

        c = self.cfg
        path, regressor, inputs = folder / "prior.csv", "", [self.cases]
        if c.prior.method == "regressor":
            rcfg = _settings(c.prior.regressor, PriorTrainSettings, PriorTrainConfig,
                             data=self.data(src, src.train, src.val), seed=seed, device=c.device,
                             out=str(folder / "regressor"))
            rstage = Stage(rcfg, [self.cases], self.out)
            if not self._fresh(rstage, Path(rcfg.out), "prior: ratio regressor"):
                self._train(rcfg, rstage, train_prior)
            regressor = str(Path(rcfg.out) / "last.pt")
            inputs.append(regressor)
        elif c.prior.method == "self":
            inputs.append(source_ckpt)
        # The validation subjects' slices too: their images (not labels) score epochs for selection.
        subjects = list(dict.fromkeys([*tgt.train, *tgt.val]))
        pcfg = _settings(c.prior, PriorSettings, PriorConfig, data=self.data(tgt, subjects), out=str(path),
                         regressor=regressor, checkpoint=str(source_ckpt),
                         bn_subjects=list(tgt.train),  # self: AdaBN on the adaptation images
                         source_modality=src.modality, source_subjects=list(src.train), device=c.device)
        stage = Stage(pcfg, inputs, self.out)
        if not self._fresh(stage, folder, "prior", "prior.done.json"):
            stage.start(folder, "prior.done.json")
            pcfg.overwrite = True  # a stale prior of this experiment's
            make_prior(pcfg, progress=self.progress)
            stage.finish(folder, "prior.done.json")
        return path

    def run_adapt(self, out: Path, method: str, ckpt: Path, prior: Path, src: Domain, tgt: Domain,
                  seed: int) -> Path:
        from sfda.stages.adapt import adapt

        c = self.cfg
        section = c.adapt.for_method(method)
        knobs = {f.name: getattr(section.method, f.name) for f in dataclasses.fields(MethodSettings)}
        source = {} if ADAPT_METHODS[method].source_free else {"source_modality": src.modality,
                                                            "source_subjects": list(src.train)}
        cfg = _settings(section, AdaptSettings, AdaptConfig, data=self.data(tgt, tgt.train, tgt.val),
                        method=MethodConfig(**knobs, name=method, **source),
                        checkpoint=str(ckpt), prior=str(prior), seed=seed, device=c.device, out=str(out))
        stage = Stage(cfg, [self.cases, ckpt, prior], self.out)
        if not self._fresh(stage, out, f"adapt {method}"):
            self._train(cfg, stage, adapt)
        return out

    def score(self, run: Path, ckpt: Path, tgt: Domain, folder: str = "eval") -> dict:
        from sfda.stages.evaluate import evaluate

        out = run / folder
        cfg = EvaluateConfig(checkpoint=str(ckpt), data=self.data(tgt, tgt.test), out=str(out),
                             device=self.cfg.device)
        stage = Stage(cfg, [self.cases, ckpt], self.out)
        if self._fresh(stage, out, "evaluate"):
            return json.loads((out / "metrics.json").read_text())
        cfg.overwrite = True  # a stale evaluation of this experiment's
        return evaluate(cfg, progress=self.progress, run=stage)

    def score_adapted(self, run: Path, tgt: Domain) -> tuple[dict, dict]:
        """Score the label-free selected epoch (reported) and the last; read the best validation epoch."""
        done = json.loads((run / "done.json").read_text())
        log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
        sel = done.get("selection") or {"criterion": "last", "epoch": log[-1]["epoch"]}
        ckpt = model_to_use(run)
        selected = self.score(run, ckpt, tgt)["summary"]
        trust = json.loads((run / "trust.json").read_text()) if (run / "trust.json").exists() else {}
        last = (selected if sel["epoch"] == log[-1]["epoch"] and not trust.get("fallback")
                else self.score(run, run / "last.pt", tgt, "eval-last")["summary"])
        return selected, {**selection_info(sel, log, selected, last, list(tgt.val)),
                          "fallback": trust.get("fallback"), "fallback_structures": trust.get("fallback_structures")}

    def run_seed(self, folder: Path, src: Domain, tgt: Domain, seed: int) -> tuple[dict, dict]:
        methods, results = self.cfg.methods, {}
        source = self.supervised(src, seed, legacy=folder / "source")
        if NOADAPT in methods:
            noadapt = folder / NOADAPT
            noadapt.mkdir(parents=True, exist_ok=True)
            results[NOADAPT] = self.score(noadapt, source / "last.pt", tgt)["summary"]
        if ORACLE in methods:
            # One Oracle per target and seed, shared by every direction into that target (and, with
            # the source's settings, the very model the directions out of that target start from).
            oracle = self.supervised(tgt, seed, oracle=True, legacy=self.out / f"oracle-{tgt.name}" / f"seed{seed}")
            self.oracles[(tgt.name, seed)] = oracle
            results[ORACLE] = self.score(oracle, oracle / "last.pt", tgt)["summary"]
        adapt_methods = [m for m in methods if m in ADAPT_METHODS]
        prior = self.prior(folder, src, tgt, seed, source / "last.pt") if adapt_methods else None
        selection = {}
        for m in adapt_methods:
            run = self.run_adapt(folder / m, m, source / "last.pt", prior, src, tgt, seed)
            results[m], selection[m] = self.score_adapted(run, tgt)
        write_json(folder / "selection.json", selection)
        return results, selection


def run_experiment(cfg: ExperimentConfig, out: str, progress: bool = True) -> dict:
    """Run every direction × seed × method; write results.json, results.md and the reports."""
    out_dir = Path(out)
    check_output(out_dir)
    cfg = on_device(cfg)  # every stage's record names the device (auto resolved), as before auto existed
    check_config(cfg)  # directions, domains and splits: before anything is written
    refuse_overlap(out_dir, _data_roots(cfg))
    if folder_kind(out_dir) in ("run", "old", "foreign") and not _is_experiment(out_dir):
        raise SfdaError(f"--out {out_dir} holds files that are not an experiment's; choose a new or empty folder")
    runner = Runner(cfg, out_dir, progress)
    cl, domains = runner.index()  # subjects and channels checked against the data: still nothing written
    # slicing.axis -1: decided once from every training case, before any stage's fingerprint is taken
    train = list(dict.fromkeys(s for d in domains.values() for s in d.train))
    runner.cfg = cfg = dataclasses.replace(runner.cfg, slicing=decide_axis(cfg.slicing, select_cases(cl, train)))
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = FolderLock(out_dir)
    try:
        return _run(cfg, runner, out_dir, cl, domains)
    finally:
        lock.release()


def _data_roots(cfg: ExperimentConfig) -> list[str]:
    return [d.root for d in cfg.domains.values()] if cfg.domains else [cfg.data.root]


def _is_experiment(folder: Path) -> bool:
    """An experiment's folder: its record, or (made before sfda recorded runs) its case list and results."""
    record = folder / RECORD
    if record.exists():
        return json.loads(record.read_text()).get("command") == "experiment"
    return (folder / "cases.json").exists()


def _run(cfg: ExperimentConfig, runner: Runner, out_dir: Path, cl, domains) -> dict:
    write_json(out_dir / RECORD, {"command": "experiment"})
    save_config(cfg, out_dir / "config.yaml")
    runner.save_index(cl, domains)
    per_direction = {}
    for text in cfg.directions:
        src, tgt = (domains[n] for n in parse_direction(text))
        per_direction[(src.name, tgt.name)] = {
            seed: runner.run_seed(out_dir / f"{src.name}-{tgt.name}" / f"seed{seed}", src, tgt, seed)
            for seed in cfg.seeds}
    targets = {tgt: list(domains[tgt].test) for _, tgt in per_direction}
    return write_results(cfg, out_dir, per_direction, targets, runner.oracles)
