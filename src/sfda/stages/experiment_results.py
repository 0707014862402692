"""The experiment's results: per-seed reports, the tables over seeds, results.json / results.md."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sfda.config import ReportConfig
from sfda.config.methods import ADAPT_METHODS, ORACLE
from sfda.io.atomic import write_json, write_text
from sfda.metrics import sample_std
from sfda.metrics.accumulator import MEAN_KEY, ORGAN_SLICES, headline
from sfda.metrics.trust import FLOOD
from sfda.report import per_seed_markdown, results_markdown, selection_markdown
from sfda.stages.report import collapse_notes, report, trust_notes


def selection_info(sel: dict, log: list[dict], selected: dict, last: dict, val_subjects: list[str]) -> dict:
    """What results.md says of one adapted run: the label-free choice, the last epoch, and the
    best epoch by validation labels (logged for comparison, never chosen)."""
    scored = [r for r in log if r.get("val_dice") is not None]
    best = max(scored, key=lambda r: r["val_dice"]) if scored else None
    return {"criterion": sel["criterion"], "selected_epoch": sel["epoch"], "last_epoch": log[-1]["epoch"],
            "dice_selected": _dice(selected), "dice_last": _dice(last),
            "best_val_epoch": best["epoch"] if best else None, "best_val_dice": best["val_dice"] if best else None,
            "val_subjects": list(val_subjects)}


ORGAN_SLICES_NOTE = ("Second score, for comparison with published abdominal CT <-> MR source-free work only (the "
                     "full-volume 3D Dice above is the headline): per structure, 3D Dice over the slices whose "
                     "labels hold it (`dice_organ_slices`).\n\n")


def _seed_report(cfg, oracle: Path | None, folder: Path, src: str, tgt: str, seed: int) -> tuple[list[str], list[str]]:
    """The report of one direction and seed (``oracle``: the Oracle's folder); returns its collapse
    and trust warnings."""
    runs = {m: oracle if m == ORACLE else folder / m for m in cfg.methods if m != ORACLE or oracle}
    runs = {m: r for m, r in runs.items() if (r / "eval").exists()}
    report(ReportConfig(runs=[str(r) for r in runs.values()], out=str(folder / "report"), overwrite=True,
                        title=f"{src} → {tgt}, seed {seed}", names=list(runs)))
    adapted = {f"{m} (seed {seed})": r for m, r in runs.items() if m in ADAPT_METHODS}
    return collapse_notes(adapted), trust_notes(adapted)


def _direction_markdown(cfg, src: str, tgt: str, methods: dict, per_seed: dict, selection: dict,
                        warnings: list[str], trust: list[str]) -> list[str]:
    order = [m for m in cfg.methods if m in methods]
    # One seed: show the spread over subjects; several: mean ± std over seeds.
    table = {m: (v if len(v["seeds"]) > 1 else v["summary"]) for m, v in methods.items()}
    several = any(MEAN_KEY in summary for v in methods.values() for summary in v["seeds"].values())
    if several:  # several structures: one table per metric, a column per structure and their mean
        md = [f"## {src} → {tgt}\n\n" + "\n".join(results_markdown(table, order=order, metrics=(m,))
                                                     for m in ("dice", "hd95_mm", "assd_mm"))]
    else:
        md = [f"## {src} → {tgt}\n\n" + results_markdown(table, order=order)]
    if any(ORGAN_SLICES in c for v in methods.values() for s in v["seeds"].values() for c in s.values()):
        md.append(ORGAN_SLICES_NOTE + results_markdown(table, order=order, metrics=(ORGAN_SLICES,)))
    if len(cfg.seeds) > 1:
        md.append(per_seed_markdown(per_seed, order))
    if any(selection.values()):
        md.append(selection_markdown(selection))
    md.append("Collapse warnings (first flagged epoch per run; see each run's log.jsonl):\n\n" + "\n".join(warnings)
              if warnings else "No collapse flagged: every adapted model's predicted foreground stayed within "
              f"{FLOOD:g}x of the prior's, on adaptation and held-out images.\n")
    md.append("Trust warnings (label-free, on the adaptation images: where the masks lie against the source "
              "atlas, whether they survive a mirrored input, whether a structure the source model finds vanished; "
              "see each run's trust.json):\n\n" + "\n".join(trust)
              + "\n" if trust else "No trust warning: every adapted model's masks lay where the source labels put "
              "the structure, survived a mirrored input and kept what the source model found "
              "(trust.json in each run).\n")
    return md


def write_results(cfg, out_dir: Path, per_direction: dict, test: dict[str, list[str]],
                  oracles: dict[tuple[str, int], Path] | None = None) -> dict:
    """``per_direction[(src, tgt)][seed] = (results, selection)`` -> reports, results.json, results.md;
    ``test``: each target's test subjects; ``oracles[(tgt, seed)]``: the Oracle's folder."""
    oracles = oracles or {}
    chosen = {"last": "their last epoch", "average": "the average of their epochs' weights (`select: average`)"}.get(
        cfg.adapt.select,
        f"the epoch chosen by `{cfg.adapt.select}` on the validation subjects' unlabelled target images")
    tested = list(dict.fromkeys(s for tgt in test.values() for s in tgt))
    directions, md = [], [f"# Results\n\nTest subjects: {', '.join(tested)}; seeds: "
                          f"{', '.join(map(str, cfg.seeds))}; adapted models scored at {chosen}.\n"]
    for (src, tgt), seeds in per_direction.items():
        per_seed = {seed: r for seed, (r, _) in seeds.items()}
        selection = {seed: s for seed, (_, s) in seeds.items()}
        notes = [_seed_report(cfg, oracles.get((tgt, seed)), out_dir / f"{src}-{tgt}" / f"seed{seed}", src, tgt, seed)
                 for seed in seeds]
        warnings, trust = [w for c, _ in notes for w in c], [w for _, t in notes for w in t]
        methods = _combine(per_seed, cfg.methods)
        directions.append({"source": src, "target": tgt, "test_subjects": list(test[tgt]),
                           "methods": {m: v["summary"] for m, v in methods.items()},
                           "seeds": {str(k): v for k, v in per_seed.items()},
                           "selection": {str(k): v for k, v in selection.items()}, "collapse_warnings": warnings,
                           "trust_warnings": trust})
        md += _direction_markdown(cfg, src, tgt, methods, per_seed, selection, warnings, trust)
    result = {"directions": directions, "test_subjects": tested, "seeds": cfg.seeds,
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
    return float(headline(summary)["mean"])


def _over(seeds: dict[str, dict], cls: str, metric: str) -> dict:
    vals = [s[cls][metric]["mean"] for s in seeds.values()]
    return {"mean": float(np.mean(vals)), "std": sample_std(vals)}
