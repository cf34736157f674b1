"""The reproduction check (helpers/study/reproduction.py): committed outputs that a rerun reproduces within the
tolerance of each kind of number are kept byte for byte; anything beyond is reported and rewritten."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from helpers.report import figures
from helpers.stats import findings
from helpers.study import reproduction, tables

CONTEXT = reproduction.Context(entries_inverse=1 / (30 * 384))  # one entry of a 30-token MiniLM layer


def cells() -> pd.DataFrame:
    """A small table with every kind of number: continuous, threshold, p-value, share, count, rank, verdict."""
    return pd.DataFrame(
        {
            "Model": ["A", "B", "C"],
            "Attention_Entropy": [74.0213, 51.337, 0.5985],
            "Final_Activation": [7.805e-05, -0.09197, 0.04672],
            "Max_Sparsity": [0.04091, 0.0120, 0.0333],
            "wilcoxon_p": [2.467e-87, 0.8632, 0.0451],
            "share_first_higher": [0.4944, 1.0, 0.0],
            "items": [540, 540, 540],
            "math_raw_rank": [8, 1, 1],
            "verdict": ["inconclusive", "inconclusive", "holds"],
        }
    )


def committed(tmp_path: Path, table: pd.DataFrame) -> Path:
    written = tables.export_tables({"cells": table}, tmp_path, "notebooks/test.ipynb")
    return written[0]


@pytest.mark.parametrize(
    ("column", "row", "expected"),
    [
        ("Attention_Entropy", {}, "continuous"),
        ("Max_Sparsity", {}, "threshold"),
        ("Max_Sparsity_Relative_0.01", {}, "threshold"),
        ("max_hoyer_sparsity", {}, "continuous"),
        ("ratio", {"variant": "max_sparsity_no_embedding"}, "threshold"),
        ("ratio", {"variant": "max_hoyer_sparsity"}, "continuous"),
        ("mean", {"metric": "max_sparsity"}, "threshold"),
        ("wilcoxon_p", {}, "p_value"),
        ("p_math_highest_holm", {}, "p_value"),
        ("interaction_p", {}, "p_value"),
        ("share_decoder_higher", {}, "share"),
        ("verdict_about_7x", {}, "conclusion"),
        ("reproduced_rank", {}, "conclusion"),
        ("rank_set_low", {}, "conclusion"),
        ("rank_biserial", {}, "continuous"),
    ],
)
def test_each_column_has_its_kind(column: str, row: dict[str, str], expected: str) -> None:
    assert reproduction.kind(column, row) == expected


def test_numbers_agree_within_their_kinds_tolerance_and_the_rounding_of_both() -> None:
    within = reproduction.within
    assert within("continuous", "0.04091", "0.04092")  # the last printed digit: rounding hides up to one unit
    assert not within("continuous", "0.04091", "0.04093")
    assert within("threshold", "0.04091", "0.04101", context=CONTEXT)  # 2 entries of 11520 = 1.7e-4
    assert not within("threshold", "0.04091", "0.04111", context=CONTEXT)
    assert within("p_value", "2.467e-87", "2.481e-87")  # 0.0025 in log10
    assert not within("p_value", "2.467e-87", "2.8e-87")
    assert within("p_value", "0", "1e-320") and not within("p_value", "0", "1e-20")
    assert within("share", "0.4944", "0.4963", items=540, digits=4)
    assert not within("share", "0.4944", "0.5", items=540, digits=4)  # 0.5 printed to 4 digits is 0.5000
    assert not within("continuous", "8", "9")  # integers: exact
    assert not within("conclusion", "1.0", "1.00001")
    assert within("continuous", "nan", "nan") and not within("continuous", "nan", "1")


def test_machine_noise_reproduces_and_leaves_the_committed_files_untouched(tmp_path: Path) -> None:
    table = cells()
    files = tables.export_tables({"cells": table}, tmp_path, "notebooks/test.ipynb")
    before = {path: path.read_bytes() for path in files}
    for path in files:
        os.utime(path, (1, 1))
    noisy = table.copy()
    rng = np.random.default_rng(0)
    for column in ("Attention_Entropy", "Final_Activation", "wilcoxon_p"):
        noisy[column] *= 1 + 2e-6 * rng.choice([-1.0, 1.0], len(noisy))  # another CPU's rounding
    noisy.loc[0, "Max_Sparsity"] += 1 / (30 * 384)  # one entry on the other side of the threshold
    check = reproduction.Check(tmp_path / "record.json", CONTEXT)
    tables.export_tables({"cells": noisy}, tmp_path, "notebooks/test.ipynb", check)
    assert {path: path.read_bytes() for path in files} == before
    assert all(path.stat().st_mtime > 1 for path in files)  # newer than the inputs, for Snakemake
    (comparison,) = reproduction.read_record(tmp_path / "record.json")
    assert comparison.reproduced and comparison.action == "kept" and comparison.numbers == 3 * 7


def test_a_shift_beyond_tolerance_is_reported_and_rewritten(tmp_path: Path) -> None:
    table = cells()
    path = committed(tmp_path, table)
    shifted = table.copy()
    shifted.loc[1, "Attention_Entropy"] *= 1.001  # 1e-3: ten times the continuous tolerance
    shifted.loc[2, "Max_Sparsity"] += 10 / (30 * 384)  # ten entries
    check = reproduction.Check(tmp_path / "record.json", CONTEXT)
    tables.export_tables({"cells": shifted}, tmp_path, "notebooks/test.ipynb", check)
    (comparison,) = check.comparisons
    assert comparison.action == "written" and not comparison.conclusion_changed
    changed = {(d.where, d.column, d.kind) for d in comparison.differences}
    assert changed == {("row 2 B", "Attention_Entropy", "continuous"), ("row 3 C", "Max_Sparsity", "threshold")}
    assert pd.read_csv(path)["Attention_Entropy"][1] == pytest.approx(shifted.loc[1, "Attention_Entropy"], rel=1e-4)
    summary = reproduction.summarise(reproduction.read_record(tmp_path / "record.json"))
    assert summary.reproduced == summary.numbers - 2 and summary.lines()[0].startswith(
        f"Reproduced within tolerance: {summary.numbers - 2} of {summary.numbers} numbers"
    )
    assert "changed: cells; no verdict or rank changed" in summary.lines()[0]
    assert "    row 2 B, Attention_Entropy (continuous): 51.34 -> 51.39" in summary.lines()


def test_a_changed_verdict_or_rank_is_a_changed_conclusion(tmp_path: Path) -> None:
    table = cells()
    path = committed(tmp_path, table)
    for column, value in (("verdict", "holds"), ("math_raw_rank", 9)):
        changed = table.copy()
        changed.loc[0, column] = value
        comparison = reproduction.compare_table("cells", changed, path, CONTEXT)
        assert comparison.conclusion_changed and [d.column for d in comparison.differences] == [column]
    assert "a verdict or rank CHANGED" in reproduction.summarise([comparison]).lines()[0]


def test_a_missing_file_or_a_new_column_is_written(tmp_path: Path) -> None:
    assert reproduction.compare_table("cells", cells(), tmp_path / "none.csv", CONTEXT).note.startswith("new")
    path = committed(tmp_path, cells())
    wider = cells().assign(extra=1.0)
    assert reproduction.compare_table("cells", wider, path, CONTEXT).note == "columns differ"
    assert reproduction.compare_table("cells", cells().head(2), path, CONTEXT).note == "3 rows committed, 2 computed"


def test_numbers_in_text_are_compared_as_numbers() -> None:
    old = "SmolLM2-135M/MiniLM-L6 Hoyer 1.53 [1.52, 1.53], higher on 100% of prompts; math ranks 8 raw"
    assert reproduction.text_within(old, old.replace("1.53 [", "1.54 ["))[0]  # within rounding of 3 digits
    assert not reproduction.text_within(old, old.replace("1.53 [", "1.61 ["))[0]
    assert not reproduction.text_within(old, old.replace("ranks 8", "ranks 9"))[0]  # a rank
    assert not reproduction.text_within(old, old.replace("higher", "lower"))[0]
    assert reproduction.text_within(old, old)[1] == 5  # not the digits of the models' names


def test_the_readme_section_is_kept_when_it_reproduces(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    scorecard = pd.DataFrame({column: ["x"] for column in findings.README_COLUMNS}).assign(finding=[1])
    readme.write_text(f"intro\n{findings.README_START}\nold\n{findings.README_END}\nrest\n")
    findings.quote_in_readme(scorecard, "Finding 1 ranks 8.", readme, "notebooks/06.ipynb")
    text = readme.read_text()
    check = reproduction.Check(tmp_path / "record.json")
    findings.quote_in_readme(scorecard, "Finding 1 ranks 8.", readme, "notebooks/06.ipynb", check)
    assert readme.read_text() == text and check.comparisons[0].action == "kept"
    findings.quote_in_readme(scorecard, "Finding 1 ranks 9.", readme, "notebooks/06.ipynb", check)
    assert "ranks 9" in readme.read_text() and check.comparisons[0].action == "written"


def test_a_figure_is_kept_only_when_its_tables_reproduced_and_this_code_drew_it(tmp_path: Path) -> None:
    def figure() -> plt.Figure:
        drawn, axis = plt.subplots()
        axis.plot([1, 2], [3, 4])
        return drawn

    name = "heatmap_max_sparsity"
    check = reproduction.Check(tmp_path / "record.json")
    (png, svg) = figures.save_figures({name: figure()}, tmp_path, "notebooks/test.ipynb", check, [])
    assert check.comparisons[-1].note.startswith("new") and figures.drawn_by(png) == figures.DRAWING_CODE
    before = (png.read_bytes(), svg.read_bytes())
    reproduced = reproduction.Comparison("complete_results", numbers=10)
    changed = reproduction.Comparison("complete_results", numbers=10, note="columns differ")
    png.write_bytes(before[0])
    os.utime(png, (1, 1))
    figures.save_figures({name: figure()}, tmp_path, "notebooks/test.ipynb", check, [reproduced])
    assert check.comparisons[-1].action == "kept" and png.stat().st_mtime > 1
    assert (png.read_bytes(), svg.read_bytes()) == before
    figures.save_figures({name: figure()}, tmp_path, "notebooks/test.ipynb", check, [changed])
    assert check.comparisons[-1].note == "its data changed beyond tolerance: complete_results"
    comparison = reproduction.compare_figure(name, "0123456789abcdef", figures.DRAWING_CODE, [reproduced])
    assert comparison.note.startswith("drawn by other code")


def test_every_figure_names_the_tables_behind_it() -> None:
    from helpers.study import outputs

    figures_ = {*outputs.STUDY_FIGURES, *outputs.FINDINGS_FIGURES, *outputs.SIGNATURE_FIGURES}
    tables_ = {*outputs.STUDY_TABLES, *outputs.FINDINGS_TABLES, *outputs.SIGNATURE_TABLES}
    assert set(reproduction.FIGURE_DATA) == figures_
    assert {t for sources in reproduction.FIGURE_DATA.values() for t in sources} <= tables_


def test_the_threshold_allowance_comes_from_the_runs_entry_counts() -> None:
    metrics = pd.DataFrame({"model": ["a", "a", "b"], "n_tokens": [10, 30, 5], "hidden_size": [384, 384, 64]})
    context = reproduction.Context.from_metrics(metrics)
    assert context.entries_inverse == pytest.approx(1 / 320)  # the larger of the two models' mean 1/entries
    assert context.threshold_atol == pytest.approx(reproduction.THRESHOLD_ENTRIES / 320)


def test_activation_means_near_zero_compare_absolutely_and_their_ratios_by_the_floor(tmp_path: Path) -> None:
    assert reproduction.kind("Final_Activation", {}) == "activation"
    assert reproduction.kind("ratio", {"metric": "final_activation"}) == "activation"
    assert reproduction.within("activation", "7.805e-05", "7.815e-05", digits=4)  # 1e-7 of a unit RMS, not of 8e-5
    assert not reproduction.within("activation", "7.805e-05", "9.805e-05", digits=4)
    table = pd.DataFrame(
        {
            "source": ["reproduced", "reproduced"],
            "metric": ["Final_Activation", "Final_Activation"],
            "encoder": [1.501e-4, 1.2e-9],
            "decoder": [-0.04545, -3.1e-9],
            "decoder_over_encoder": [-302.8, -2.583],
        }
    )
    path = committed(tmp_path, table)
    moved = table.copy()
    moved.loc[0, ["encoder", "decoder_over_encoder"]] = [1.502e-4, -302.6]  # the encoder mean by 1e-7
    moved.loc[1, ["encoder", "decoder", "decoder_over_encoder"]] = [-2.2e-9, 4.0e-10, -0.18]  # zero: noise
    assert reproduction.compare_table("architectures", moved, path, CONTEXT).reproduced
    moved.loc[0, "decoder_over_encoder"] = -290.0  # 4%: more than the floor over each mean allows
    assert [d.column for d in reproduction.compare_table("architectures", moved, path, CONTEXT).differences] == [
        "decoder_over_encoder"
    ]
