"""Markdown results table in the shape of the paper's Table 1.

One row per method, one column per (class, metric).  A method's entry is either
a plain evaluation SUMMARY ``{class: {metric: {"mean", "std"}}}`` (± is then the
spread over subjects, as evaluation wrote it) or ``{"summary": SUMMARY,
"seeds": {seed: SUMMARY}}``, in which case the cell is the mean ± sample std
over seeds of the per-seed means, because seed-to-seed variation is what
decides whether two methods really differ.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from sfda.config.methods import DISPLAY as METHOD_DISPLAY
from sfda.errors import SfdaError
from sfda.metrics import sample_std
from sfda.metrics.accumulator import MEAN_KEY, headline

#: Row key -> the paper's name: every experiment row's (sfda.config.methods), and a source run's.
DISPLAY: dict[str, str] = {**METHOD_DISPLAY, "source": "Source"}

METRIC_LABELS: dict[str, str] = {
    "dice": "Dice (%)",
    "hd_mm": "HD (mm)",
    "hd95_mm": "HD95 (mm)",
    "assd_mm": "ASSD (mm)",
    "dice_organ_slices": "Dice over organ slices (%)",
}

MISSING = "–"


def display_name(key: str) -> str:
    """The paper's name for a method key, so tables and figures agree."""
    return DISPLAY.get(key, key)


def results_markdown(
    methods: Mapping[str, Any],
    title: str = "",
    metrics: Sequence[str] = ("dice", "hd95_mm", "assd_mm"),
    order: list[str] | None = None,
    classes: list[str] | None = None,
) -> str:
    """Render one Markdown table: a row per method, a column per (class, metric)."""
    if not methods:
        raise SfdaError("results_markdown: no methods given; pass at least one method's summary")
    keys = _method_order(methods, order)
    cells = {key: _method_cells(key, methods[key]) for key in keys}
    class_names = list(classes) if classes is not None else _classes(cells.values())
    lines = [_header(class_names, metrics), _rule(len(class_names) * len(metrics))]
    for key in keys:
        stats, n_seeds = cells[key]
        lines.append(_row(_row_label(key, n_seeds), stats, class_names, metrics))
    text = "\n".join(lines) + "\n"
    if title:
        text = f"**{_escape(title)}**\n\n" + text
    if any(n is not None for _, n in cells.values()):
        text += "\n*n* = number of seeds; ± is the std over seeds of the per-seed means " \
                "(elsewhere ± is the std over subjects).\n"
    return text


def _method_order(methods: Mapping[str, Any], order: list[str] | None) -> list[str]:
    """Keys in the requested order; an unknown key is a user error, not a silent gap."""
    if order is None:
        return list(methods)
    unknown = [key for key in order if key not in methods]
    if unknown:
        raise SfdaError(f"results_markdown: order names {unknown} but results only have {list(methods)}")
    return list(order)


def _is_summary(obj: Any) -> bool:
    """True for ``{class: {metric: {"mean": ...}}}`` (checks one level of stats)."""
    if not isinstance(obj, Mapping):
        return False
    return all(
        isinstance(per_class, Mapping)
        and all(isinstance(stat, Mapping) and "mean" in stat for stat in per_class.values())
        for per_class in obj.values()
    )


def _is_wrapped(obj: Mapping[str, Any]) -> bool:
    """A method-level result ``{"summary": ..., "seeds": ...}`` rather than a bare SUMMARY.

    A class literally named "summary" or "seeds" holds ``{metric: stats}``,
    which is not itself a SUMMARY, so the two shapes cannot be confused.
    """
    if "summary" in obj and _is_summary(obj["summary"]):
        return True
    seeds = obj.get("seeds")
    return isinstance(seeds, Mapping) and bool(seeds) and all(_is_summary(s) for s in seeds.values())


def _method_cells(key: str, result: Any) -> tuple[dict[str, dict[str, tuple[float, float]]], int | None]:
    """(class -> metric -> (mean, std), number of seeds or None) for one method."""
    if not isinstance(result, Mapping):
        raise SfdaError(f"results_markdown: result for {key!r} is {type(result).__name__}, expected a dict")
    if _is_wrapped(result):
        seeds = result.get("seeds") or {}
        if seeds:
            return _over_seeds(key, seeds), len(seeds)
        result = result.get("summary")
    if not _is_summary(result):
        raise SfdaError(f"results_markdown: result for {key!r} is not {{class: {{metric: {{mean, std}}}}}}")
    stats = {
        cls: {m: (float(s["mean"]), float(s.get("std", math.nan))) for m, s in per.items()}
        for cls, per in result.items()
    }
    return stats, None


def _over_seeds(key: str, seeds: Mapping[str, Any]) -> dict[str, dict[str, tuple[float, float]]]:
    """Mean ± sample std (ddof=1; 0 for one seed) of each per-seed mean."""
    values: dict[str, dict[str, list[float]]] = {}
    for seed, summary in seeds.items():
        if not _is_summary(summary):
            raise SfdaError(f"results_markdown: seed {seed!r} of {key!r} is not a summary dict")
        for cls, per in summary.items():
            for metric, stat in per.items():
                values.setdefault(cls, {}).setdefault(metric, []).append(float(stat["mean"]))
    return {cls: {m: _mean_std(v) for m, v in per.items()} for cls, per in values.items()}


def _mean_std(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def _classes(all_cells: Iterable[tuple[dict[str, Any], int | None]]) -> list[str]:
    """Classes in order of first appearance across methods."""
    seen: dict[str, None] = {}
    for stats, _ in all_cells:
        for cls in stats:
            seen.setdefault(cls, None)
    return list(seen)


def _header(class_names: list[str], metrics: Sequence[str]) -> str:
    cols = [f"{_escape(cls)} {METRIC_LABELS.get(m, m)}" for cls in class_names for m in metrics]
    return "| " + " | ".join(["Method", *cols]) + " |"


def _rule(n_cols: int) -> str:
    return "|" + "|".join([":---", *["---:"] * n_cols]) + "|"


def _row_label(key: str, n_seeds: int | None) -> str:
    name = _escape(display_name(key))
    return name if n_seeds is None else f"{name} (*n*={n_seeds})"


def _row(label: str, stats: dict[str, dict[str, tuple[float, float]]],
         class_names: list[str], metrics: Sequence[str]) -> str:
    cells = [format_cell(m, stats.get(cls, {}).get(m)) for cls in class_names for m in metrics]
    return "| " + " | ".join([label, *cells]) + " |"


def format_cell(metric: str, stat: tuple[float, float] | None) -> str:
    """Dice (either) in percent with one decimal, distances in mm with two; '–' if missing."""
    if stat is None:
        return MISSING
    scale, digits = (100.0, 1) if metric.startswith("dice") else (1.0, 2)
    mean, std = stat
    text = _number(mean * scale, digits)
    if math.isnan(std):
        return text
    return f"{text} ± {_number(std * scale, digits)}"


def _number(value: float, digits: int) -> str:
    """Fixed-point text; NaN (undefined, e.g. HD of an empty mask) and ∞ spelled out."""
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return f"{value:.{digits}f}"


def _escape(text: str) -> str:
    """Keep a name with '|' from breaking the table."""
    return str(text).replace("|", "\\|")


# --------------------------------------------------------------------------- experiment tables


def _pm(values: list[float]) -> str:
    """Mean ± sample std (ddof 1, as in the results table; 0 for one value)."""
    return f"{np.mean(values):.3f} ± {sample_std(values):.3f}"


def per_seed_markdown(per_seed: dict[int, dict], methods: list[str]) -> str:
    """Dice per seed, each as mean ± std over the test subjects: of the structure, or with several
    structures of their mean (``MEAN_KEY``), as in the results table."""
    seeds = sorted(per_seed)
    several = any(MEAN_KEY in r for runs in per_seed.values() for r in runs.values())
    what = "the mean over structures, " if several else ""
    lines = [f"Dice per seed ({what}mean ± std over test subjects):\n",
             "| method | " + " | ".join(f"seed {s}" for s in seeds) + " |", "|---" * (len(seeds) + 1) + "|"]
    for m in methods:
        cells = []
        for s in seeds:
            d = headline(per_seed[s].get(m, {}))
            cells.append(f"{d['mean']:.3f} ± {d['std']:.3f}" if d else "–")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _chosen(row: dict) -> str:
    """What a run reports: its selected epoch, or the source model (for some structures) after a trust fall-back."""
    if row.get("fallback_structures"):
        taken = ", ".join(row["fallback_structures"])
        epoch = row["selected_epoch"]
        return f"{f'epoch {epoch}' if isinstance(epoch, int) else epoch}, source model for {taken} (trust fall-back)"
    return "source model (trust fall-back)" if row.get("fallback") else str(row["selected_epoch"])


def selection_markdown(selection: dict[int, dict]) -> str:
    """Last vs label-free selected epoch vs the best epoch by validation labels, mean ± std over seeds."""
    methods = list(dict.fromkeys(m for sel in selection.values() for m in sel))
    lines = ["Epoch selection (Dice, mean ± std over seeds; the best epoch needs validation labels, "
             "so it is shown only as the gap no label-free rule can beat):\n",
             "| method | criterion | selected epochs | last | selected | best by val labels |",
             "|---|---|---|---|---|---|"]
    for m in methods:
        rows = [sel[m] for sel in selection.values() if m in sel]
        best = [r["best_val_dice"] for r in rows if r["best_val_dice"] is not None]
        lines.append(f"| {m} | {rows[0]['criterion']} | {', '.join(_chosen(r) for r in rows)} | "
                     f"{_pm([r['dice_last'] for r in rows])} | {_pm([r['dice_selected'] for r in rows])} | "
                     f"{_pm(best) if best else '–'} |")
    return "\n".join(lines) + "\n"
