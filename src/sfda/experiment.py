"""``sfda experiment``: the paper's comparison, end to end, cached and resumable.

For each direction (source -> target modality) and seed: train the source
model and the Oracle, build the prior, run every adaptation method from the
same source checkpoint, evaluate everything on the test subjects' target
images, then write results.json / results.md and the report. A stage whose
``done.json`` exists is skipped on a rerun (``rerun=true`` forces it).

No target label chooses anything: adapted models are scored at their last
epoch. Target labels of the validation subjects are only logged (curves).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sfda.config import AdaptConfig, DataConfig, MethodConfig, OptimConfig, PriorTrainConfig, TrainConfig, save_config
from sfda.errors import SfdaError
from sfda.evaluate import evaluate
from sfda.io.atomic import write_json, write_text
from sfda.io.cases import save_cases
from sfda.io.layouts import index_dataset
from sfda.metrics import sample_std
from sfda.report import per_seed_markdown, results_markdown, selection_markdown

ADAPT_METHODS = ("adabn", "adaent", "adasource", "adversarial", "tent", "entropy")


@dataclass
class DatasetConfig:
    root: str = ""
    layout: str = "auto"
    pattern: str = ""
    label_pattern: str = ""
    phantom_subjects: int = 0
    phantom_seed: int = 0


@dataclass
class SplitConfig:
    train: list[str] = field(default_factory=list)
    val: list[str] = field(default_factory=list)
    test: list[str] = field(default_factory=list)


@dataclass
class PriorConfig:
    method: str = "source-position"
    tags_from_labels: bool = False
    # source-position only: tag slices as empty where fewer source slices than this hold the structure
    min_presence: float = 0.0
    ratios: list[float] = field(default_factory=list)
    net_args: dict = field(default_factory=lambda: dict(PriorTrainConfig().net_args))
    optim: OptimConfig = field(default_factory=lambda: PriorTrainConfig().optim)


@dataclass
class SourceConfig:
    net: str = "enet"
    net_args: dict = field(default_factory=dict)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: bool = False
    invert: float = 0.0
    remap: float = 0.0


@dataclass
class AdaptSection:
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-4, epochs=10))
    overrides: dict = field(default_factory=dict)
    # The epoch each adapted model is scored at, chosen without target labels (sfda.engine.selection).
    select: str = "last"


@dataclass
class ExperimentConfig:
    data: DatasetConfig = field(default_factory=DatasetConfig)
    slicing: DataConfig = field(default_factory=DataConfig)
    directions: list[str] = field(default_factory=lambda: ["wat->inn"])
    split: SplitConfig = field(default_factory=SplitConfig)
    methods: list[str] = field(default_factory=lambda: ["noadapt", "oracle", *ADAPT_METHODS])
    seeds: list[int] = field(default_factory=lambda: [0])
    source: SourceConfig = field(default_factory=SourceConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    adapt: AdaptSection = field(default_factory=AdaptSection)
    device: str = "cpu"
    rerun: bool = False


def _direction(text: str) -> tuple[str, str]:
    parts = text.replace("→", "->").split("->")
    if len(parts) != 2 or not all(p.strip() for p in parts):
        raise SfdaError(f"direction '{text}' must read SOURCE->TARGET, e.g. opp->inn")
    return parts[0].strip(), parts[1].strip()


def _done(path: Path) -> bool:
    return (path / "done.json").exists()


class Runner:
    """Runs one experiment; every stage writes into its own folder under ``out``."""

    def __init__(self, cfg: ExperimentConfig, out: Path, progress: bool = True):
        self.cfg, self.out, self.progress = cfg, out, progress
        self.cases = str(out / "cases.json")

    def log(self, text: str) -> None:
        if self.progress:
            print(text, flush=True)

    def index(self) -> None:
        d = self.cfg.data
        if d.phantom_subjects:
            from sfda.data.phantom import make_phantom

            root = Path(d.root or self.out / "phantom")
            if not (root / "done.json").exists():
                make_phantom(root, n_subjects=d.phantom_subjects, seed=d.phantom_seed)
                write_json(root / "done.json", {"subjects": d.phantom_subjects, "seed": d.phantom_seed})
            d.root = str(root)
        if not d.root:
            raise SfdaError("data.root is required: the dataset folder (or data.phantom_subjects=N)")
        cl = index_dataset(d.root, d.layout, d.pattern or None, d.label_pattern or None)
        save_cases(self.cases, cl)
        self._check_split(cl)

    def _check_split(self, cl) -> None:
        s = self.cfg.split
        for name in ("train", "test"):
            if not getattr(s, name):
                raise SfdaError(f"split.{name} is empty; list subjects, e.g. split.{name}=[A1,B1]")
        # Validation labels are only logged (curves), never used to select, so val may equal test.
        overlap = set(s.train) & (set(s.test) | set(s.val))
        if overlap:
            raise SfdaError(f"subjects {sorted(overlap)} are in split.train and in split.test/val; "
                            "train on other subjects than you validate or test on")
        for modality in {m for d in self.cfg.directions for m in _direction(d)}:
            if modality not in cl.modalities:
                raise SfdaError(f"direction modality '{modality}' is not in the dataset "
                                f"(modalities: {', '.join(cl.modalities)}); fix `directions`")

    def data(self, modality: str, subjects: list[str], val: list[str]) -> DataConfig:
        base = dataclasses.replace(self.cfg.slicing, cases=self.cases, modality=modality,
                                   subjects=list(subjects), val_subjects=list(val))
        base.cache = str(self.out / "cache")
        return base

    def supervised(self, out: Path, modality: str, seed: int) -> Path:
        c, s = self.cfg, self.cfg.split
        if _done(out) and not c.rerun:
            return out
        cfg = TrainConfig(data=self.data(modality, s.train, s.val), net=c.source.net, net_args=dict(c.source.net_args),
                          optim=dataclasses.replace(c.source.optim), augment=c.source.augment, invert=c.source.invert,
                          remap=c.source.remap, seed=seed,
                          device=c.device, out=str(out), resume=not c.rerun)
        from sfda.pipeline import train_source

        self.log(f"[train] {out}")
        train_source(cfg, progress=self.progress)
        return out

    def prior(self, folder: Path, src: str, tgt: str, seed: int, source_ckpt: Path) -> Path:
        from sfda.pipeline import make_prior, train_prior

        c, s = self.cfg, self.cfg.split
        path = folder / "prior.csv"
        if path.exists() and not c.rerun:
            return path
        regressor = ""
        if c.prior.method == "regressor":
            pcfg = PriorTrainConfig(data=self.data(src, s.train, s.val), net_args=dict(c.prior.net_args),
                                    optim=dataclasses.replace(c.prior.optim),
                                    seed=seed, device=c.device, out=str(folder / "regressor"), resume=not c.rerun)
            if not _done(Path(pcfg.out)) or c.rerun:
                self.log(f"[prior] training the ratio regressor in {pcfg.out}")
                train_prior(pcfg, progress=self.progress)
            regressor = str(Path(pcfg.out) / "last.pt")
        # The validation subjects' slices too: their images (not labels) score epochs for selection.
        subjects = list(dict.fromkeys([*s.train, *s.val]))
        make_prior(method=c.prior.method, cases=self.cases, modality=tgt, subjects=subjects, out=str(path),
                   regressor=regressor, source_modality=src, source_subjects=s.train, ratios=c.prior.ratios,
                   tags_from_labels=c.prior.tags_from_labels, min_presence=c.prior.min_presence,
                   checkpoint=str(source_ckpt), bn_subjects=s.train,  # self: AdaBN on the adaptation images
                   data=self.data(tgt, subjects, []),
                   progress=self.progress)
        return path

    def adapt(self, out: Path, method: str, ckpt: Path, prior: Path, src: str, tgt: str, seed: int) -> Path:
        from sfda.config import _merge
        from sfda.methods import build_method
        from sfda.pipeline import adapt

        c, s = self.cfg, self.cfg.split
        if _done(out) and not c.rerun:
            return out
        mcfg = dataclasses.replace(c.adapt.method, name=method)
        needs_source = not build_method(method, mcfg).source_free
        mcfg.source_modality = src if needs_source else ""
        mcfg.source_subjects = list(s.train) if needs_source else []
        cfg = AdaptConfig(data=self.data(tgt, s.train, s.val), checkpoint=str(ckpt), prior=str(prior),
                          method=mcfg, optim=dataclasses.replace(c.adapt.optim), select=c.adapt.select,
                          seed=seed, device=c.device, out=str(out), resume=not c.rerun)
        if method in c.adapt.overrides:
            _merge(cfg, c.adapt.overrides[method], prefix=f"adapt.overrides.{method}.")
        self.log(f"[adapt] {method} -> {out}")
        adapt(cfg, progress=self.progress)
        return out

    def score(self, run: Path, ckpt: Path, tgt: str, folder: str = "eval") -> dict:
        path = run / folder / "metrics.json"
        if path.exists() and not self.cfg.rerun:
            return json.loads(path.read_text())
        return evaluate(str(ckpt), self.cases, tgt, self.cfg.split.test, str(run / folder),
                        data=self.data(tgt, [], []), device=self.cfg.device, progress=self.progress)

    def score_adapted(self, run: Path, tgt: str) -> tuple[dict, dict]:
        """Score the label-free selected epoch (reported) and the last; read the best validation epoch."""
        done = json.loads((run / "done.json").read_text())
        log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
        sel = done.get("selection") or {"criterion": "last", "epoch": log[-1]["epoch"]}
        last_epoch = log[-1]["epoch"]
        ckpt = run / "selected.pt" if (run / "selected.pt").exists() else run / "last.pt"
        selected = self.score(run, ckpt, tgt)["summary"]
        last = selected if sel["epoch"] == last_epoch else self.score(run, run / "last.pt", tgt, "eval-last")["summary"]
        scored = [r for r in log if r.get("val_dice") is not None]
        best = max(scored, key=lambda r: r["val_dice"]) if scored else None
        info = {"criterion": sel["criterion"], "selected_epoch": sel["epoch"], "last_epoch": last_epoch,
                "dice_selected": _dice(selected), "dice_last": _dice(last),
                "best_val_epoch": best["epoch"] if best else None,
                "best_val_dice": best["val_dice"] if best else None,
                "val_subjects": list(self.cfg.split.val)}
        return selected, info

    def run_seed(self, folder: Path, src: str, tgt: str, seed: int) -> dict[str, dict]:
        methods, results = self.cfg.methods, {}
        source = self.supervised(folder / "source", src, seed)
        if "noadapt" in methods:
            noadapt = folder / "noadapt"
            noadapt.mkdir(parents=True, exist_ok=True)
            results["noadapt"] = self.score(noadapt, source / "last.pt", tgt)["summary"]
        if "oracle" in methods:
            # One Oracle per target modality and seed, shared by every direction into that target.
            oracle = self.supervised(self.out / f"oracle-{tgt}" / f"seed{seed}", tgt, seed)
            results["oracle"] = self.score(oracle, oracle / "last.pt", tgt)["summary"]
        adapt_methods = [m for m in methods if m not in ("noadapt", "oracle")]
        prior = self.prior(folder, src, tgt, seed, source / "last.pt") if adapt_methods else None
        selection = {}
        for m in adapt_methods:
            run = self.adapt(folder / m, m, source / "last.pt", prior, src, tgt, seed)
            results[m], selection[m] = self.score_adapted(run, tgt)
        write_json(folder / "selection.json", selection)
        return results, selection


def run_experiment(cfg: ExperimentConfig, out: str, progress: bool = True) -> dict:
    """Run every direction × seed × method; write results.json, results.md and the reports."""
    from sfda.reporting import collapse_notes, report

    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    unknown = [m for m in cfg.methods if m not in ("noadapt", "oracle", *ADAPT_METHODS)]
    if unknown:
        raise SfdaError(f"unknown methods {unknown}; choose from: noadapt, oracle, {', '.join(ADAPT_METHODS)}")
    save_config(cfg, out_dir / "config.yaml")
    runner = Runner(cfg, out_dir, progress)
    runner.index()
    chosen = f"the epoch chosen by `{cfg.adapt.select}` on the validation subjects' unlabelled target images" \
        if cfg.adapt.select != "last" else "their last epoch"
    directions, md = [], [f"# Results\n\nTest subjects: {', '.join(cfg.split.test)}; seeds: "
                          f"{', '.join(map(str, cfg.seeds))}; adapted models scored at {chosen}.\n"]
    for text in cfg.directions:
        src, tgt = _direction(text)
        per_seed, selection, warnings = {}, {}, []
        for seed in cfg.seeds:
            folder = out_dir / f"{src}-{tgt}" / f"seed{seed}"
            per_seed[seed], selection[seed] = runner.run_seed(folder, src, tgt, seed)
            runs = {m: (out_dir / f"oracle-{tgt}" / f"seed{seed}") if m == "oracle" else folder / m
                    for m in cfg.methods}
            runs = {m: r for m, r in runs.items() if (r / "eval").exists()}
            report([str(r) for r in runs.values()], str(folder / "report"), title=f"{src} → {tgt}, seed {seed}",
                   names=list(runs))
            adapted = {f"{m} (seed {seed})": r for m, r in runs.items() if m not in ("noadapt", "oracle")}
            warnings += collapse_notes(adapted)
        methods = _combine(per_seed, cfg.methods)
        directions.append({"source": src, "target": tgt, "methods": {m: v["summary"] for m, v in methods.items()},
                           "seeds": {str(k): v for k, v in per_seed.items()},
                           "selection": {str(k): v for k, v in selection.items()}, "collapse_warnings": warnings})
        # One seed: show the spread over subjects; several: mean ± std over seeds.
        table = {m: (v if len(v["seeds"]) > 1 else v["summary"]) for m, v in methods.items()}
        md.append(f"## {src} → {tgt}\n\n" + results_markdown(table, order=[m for m in cfg.methods if m in methods]))
        if len(cfg.seeds) > 1:
            md.append(per_seed_markdown(per_seed, [m for m in cfg.methods if m in methods]))
        if any(selection.values()):
            md.append(selection_markdown(selection))
        md.append("Collapse warnings (first flagged epoch per run; see each run's log.jsonl):\n\n" + "\n".join(warnings)
                  if warnings else "No collapse flagged: every adapted model's predicted foreground stayed within "
                  "4x of the prior's, on adaptation and held-out images.\n")
    result = {"directions": directions, "test_subjects": cfg.split.test, "seeds": cfg.seeds,
              "selection": cfg.adapt.select}
    write_json(out_dir / "results.json", result)
    write_text(out_dir / "results.md", "\n\n".join(md) + "\n")
    return result


def _combine(per_seed: dict[int, dict[str, dict]], methods: list[str]) -> dict[str, dict]:
    """Per method: the summary pooled as mean over seeds (std over seeds), plus each seed's."""
    out = {}
    for m in methods:
        seeds = {str(s): r[m] for s, r in per_seed.items() if m in r}
        if not seeds:
            continue
        first = next(iter(seeds.values()))
        summary = {cls: {met: _over(seeds, cls, met) for met in first[cls]} for cls in first}
        out[m] = {"summary": summary if len(seeds) > 1 else first, "seeds": seeds}
    return out


def _dice(summary: dict) -> float:
    """Mean Dice over the foreground classes of one summary."""
    return float(np.mean([v["dice"]["mean"] for k, v in summary.items() if k != "background"]))


def _over(seeds: dict[str, dict], cls: str, metric: str) -> dict:
    vals = [s[cls][metric]["mean"] for s in seeds.values()]
    return {"mean": float(np.mean(vals)), "std": sample_std(vals)}


