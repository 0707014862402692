"""Report outputs on small synthetic inputs: tables' formats, PNGs that are real images, report links."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from sfda.errors import SfdaError
from sfda.report import plot_curves, plot_fractions, plot_grid, results_markdown, write_report

PNG_MAGIC = b"\x89PNG"


def _summary(dice: float, dice_std: float, hd95: float = 4.0, assd: float = 1.25) -> dict:
    return {"disc": {"dice": {"mean": dice, "std": dice_std},
                     "hd95_mm": {"mean": hd95, "std": 0.5},
                     "assd_mm": {"mean": assd, "std": 0.25}}}


def _assert_png(path: Path) -> None:
    assert path.is_file()
    data = path.read_bytes()
    assert data[:4] == PNG_MAGIC
    assert len(data) > 5 * 1024, f"{path} is only {len(data)} bytes"


def _curves() -> dict[str, list[tuple[int, float]]]:
    epochs = range(0, 10)
    return {
        "noadapt": [(e, 0.55) for e in epochs],
        "adaent": [(e, 0.55 + 0.3 * (1 - np.exp(-e / 3))) for e in epochs],
        "entropy": [(e, max(0.0, 0.55 - 0.08 * e)) for e in epochs],
        "oracle": [(e, 0.9) for e in epochs],
    }


def _grid_rows() -> list[dict]:
    """Non-square slices (35x25) with an elliptical 'disc' and perturbed masks."""
    yy, xx = np.mgrid[:35, :25]
    rng = np.random.default_rng(0)
    rows = []
    for s in range(2):
        disc = ((yy - 17) / 8.0) ** 2 + ((xx - 12 - s) / 6.0) ** 2 <= 1
        image = rng.normal(0.3, 0.05, (35, 25)) + 0.5 * disc
        truth = disc.astype(int)
        masks = {"noadapt": np.roll(truth, 3, axis=1), "adaent": truth.copy(),
                 "entropy": np.zeros_like(truth)}
        entropy = {m: rng.random((35, 25)) * (0.2 + 0.3 * i) for i, m in enumerate(["noadapt", "adaent"])}
        rows.append({"subject": f"case{s}", "image": image, "truth": truth, "masks": masks,
                     "entropy": entropy})
    return rows


def test_table_plain_summaries_header_rows_and_formats():
    text = results_markdown({"noadapt": _summary(0.67, 0.031), "adaent": _summary(0.8, 0.05)},
                            title="IVD, water to in-phase")
    lines = text.splitlines()
    assert lines[0] == "**IVD, water to in-phase**"
    assert "| Method | disc Dice (%) | disc HD95 (mm) | disc ASSD (mm) |" in lines
    assert "| NoAdaptation | 67.0 ± 3.1 | 4.00 ± 0.50 | 1.25 ± 0.25 |" in lines
    assert "| AdaEnt | 80.0 ± 5.0 | 4.00 ± 0.50 | 1.25 ± 0.25 |" in lines
    assert lines.index("| NoAdaptation | 67.0 ± 3.1 | 4.00 ± 0.50 | 1.25 ± 0.25 |") < \
        lines.index("| AdaEnt | 80.0 ± 5.0 | 4.00 ± 0.50 | 1.25 ± 0.25 |")


def test_table_order_missing_metric_and_unknown_display_name():
    partial = {"disc": {"dice": {"mean": 0.5, "std": 0.1}}}
    text = results_markdown({"a": _summary(0.6, 0.0), "mystery": partial, "oracle": _summary(0.9, 0.01)},
                            order=["oracle", "mystery"], metrics=("dice", "hd_mm"))
    rows = [line for line in text.splitlines() if line.startswith("| ") and "Method" not in line]
    assert rows == ["| Oracle | 90.0 ± 1.0 | – |", "| mystery | 50.0 ± 10.0 | – |"]
    with pytest.raises(SfdaError, match="nope"):
        results_markdown({"a": _summary(0.6, 0.0)}, order=["nope"])


def test_table_accepts_seed_dicts_and_notes_seed_count():
    seeded = {"summary": _summary(0.7, 0.2),
              "seeds": {"0": _summary(0.60, 0.2, hd95=3.0), "1": _summary(0.70, 0.2, hd95=5.0),
                        "2": _summary(0.80, 0.2, hd95=4.0)}}
    text = results_markdown({"adaent": seeded, "noadapt": _summary(0.5, 0.1)})
    # mean of per-seed means 70.0, sample std 10.0; hd95 mean 4.00 std 1.00; assd identical → 0
    assert "| AdaEnt (*n*=3) | 70.0 ± 10.0 | 4.00 ± 1.00 | 1.25 ± 0.00 |" in text
    assert "| NoAdaptation | 50.0 ± 10.0 |" in text
    assert "number of seeds" in text
    only_summary = results_markdown({"tent": {"summary": _summary(0.42, 0.05)}})
    assert "| TENT | 42.0 ± 5.0 |" in only_summary


def test_table_rejects_garbage():
    with pytest.raises(SfdaError):
        results_markdown({})
    with pytest.raises(SfdaError):
        results_markdown({"a": {"disc": 3}})


def test_plot_curves_and_fractions(tmp_path):
    out = plot_curves(_curves(), tmp_path / "curves.png")
    _assert_png(out)
    fractions = {m: [(e, 0.08 + 0.01 * e * i) for e, _ in pts] for i, (m, pts) in enumerate(_curves().items())}
    out = plot_fractions(fractions, 0.08, tmp_path / "fractions.png")
    _assert_png(out)
    _assert_png(plot_fractions(fractions, None, tmp_path / "fractions_noprior.png"))
    assert not list(tmp_path.glob(".*.tmp*")), "temporary files left behind"
    with pytest.raises(SfdaError):
        plot_curves({}, tmp_path / "empty.png")


def test_plot_grid_non_square_and_missing_entropy(tmp_path):
    out = plot_grid(_grid_rows(), tmp_path / "grid.png", title="IVD examples")
    _assert_png(out)
    no_entropy = [{k: v for k, v in row.items() if k != "entropy"} for row in _grid_rows()]
    _assert_png(plot_grid(no_entropy, tmp_path / "grid_no_entropy.png"))
    bad = _grid_rows()[:1]
    bad[0]["masks"]["adaent"] = np.zeros((10, 10), dtype=int)
    with pytest.raises(SfdaError, match="case0"):
        plot_grid(bad, tmp_path / "bad.png")


def test_write_report_links_figures_relatively(tmp_path):
    out_dir = tmp_path / "run"
    curves = plot_curves(_curves(), out_dir / "figures" / "curves.png")
    grid = plot_grid(_grid_rows()[:1], out_dir / "figures" / "grid.png")
    table = results_markdown({"noadapt": _summary(0.67, 0.031)})
    report = write_report(out_dir, "SFDA results", [("Table 1", table)],
                          [("Validation Dice", curves), ("Qualitative results", Path("figures/grid.png"))])
    assert report == out_dir / "report.md"
    text = report.read_text()
    assert text.startswith("# SFDA results\n")
    assert "## Table 1" in text and "67.0 ± 3.1" in text
    links = re.findall(r"!\[([^\]]*)\]\(([^)]+)\)", text)
    assert [caption for caption, _ in links] == ["Validation Dice", "Qualitative results"]
    for _, link in links:
        assert not Path(link).is_absolute()
        assert (out_dir / link).is_file()
    assert "## Validation Dice" in text
    assert grid.is_file()
    with pytest.raises(SfdaError, match="does not exist"):
        write_report(out_dir, "x", [], [("missing", out_dir / "nope.png")])


def test_per_seed_table_gives_the_mean_over_structures_with_several():
    from sfda.report import per_seed_markdown

    def run(*dice):
        names = ["liver", "kidney", "mean"][:len(dice)]
        return {n: {"dice": {"mean": d, "std": 0.0}} for n, d in zip(names, dice)}

    several = per_seed_markdown({0: {"adaent": run(0.2, 0.4, 0.3)}, 1: {"adaent": run(0.6, 0.8, 0.7)}}, ["adaent"])
    assert "| adaent | 0.300 ± 0.000 | 0.700 ± 0.000 |" in several and "mean over structures" in several
    one = per_seed_markdown({0: {"adaent": run(0.2)}, 1: {"adaent": run(0.6)}}, ["adaent"])
    assert "| adaent | 0.200 ± 0.000 | 0.600 ± 0.000 |" in one and "structures" not in one


def test_selection_table_and_trust_notes_name_a_structure_fall_back(tmp_path):
    import json

    from sfda.report.tables import selection_markdown
    from sfda.stages.report import trust_notes

    row = {"criterion": "last", "selected_epoch": 6, "dice_last": 0.5, "dice_selected": 0.4, "best_val_dice": None}
    table = selection_markdown({0: {"adaent": {**row, "fallback": "structures", "fallback_structures": ["kidney"]}},
                                1: {"adaent": {**row, "fallback": "source"}}, 2: {"adaent": row}})
    assert "| epoch 6, source model for kidney (trust fall-back), source model (trust fall-back), 6 |" in table
    (tmp_path / "trust.json").write_text(json.dumps({"warnings": ["atlas_share of kidney is 0.10"],
                                                     "fallback": "structures", "fallback_structures": ["kidney"],
                                                     "cautions": ["liver shrank"]}))
    note, caution = trust_notes({"adaent": tmp_path})
    assert note.endswith("Model to use: the source model for kidney, the adapted model for the rest (fall-back).")
    assert caution == "- **adaent** (caution, no fall-back for it): liver shrank."


def test_the_entropy_scale_is_nats_up_to_ln_k_and_padding_stays_blank(tmp_path, monkeypatch):
    import matplotlib.figure

    from sfda.report import grid

    labels: list[str] = []
    real = matplotlib.figure.Figure.colorbar

    def colorbar(self, *args, **kwargs):
        cbar = real(self, *args, **kwargs)
        monkeypatch.setattr(cbar, "set_label", lambda text, **kw: labels.append(text))
        return cbar

    monkeypatch.setattr(matplotlib.figure.Figure, "colorbar", colorbar)
    rows = _grid_rows()
    for row in rows:
        row["classes"] = 3
        for e in row["entropy"].values():
            e[:2] = np.nan  # padding
    _assert_png(grid.plot_grid(rows, tmp_path / "grid.png"))
    assert labels and all(text == "nats (ln 3 = 1.10)" for text in labels)
