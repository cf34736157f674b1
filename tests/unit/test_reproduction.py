"""The reproduction check (helpers/study/reproduction.py): committed outputs that a rerun reproduces within the
tolerance of each kind of number are kept byte for byte; anything beyond is reported and rewritten."""

from __future__ import annotations

import base64
import json
import os
import re
import zlib
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from helpers.report import figures
from helpers.stats import findings
from helpers.study import reproduction, tables, tolerances
from helpers.study.comparison import FIGURE_DATA, UNREADABLE, Comparison, compare_table, table_csv

CONTEXT = tolerances.Context(entries_inverse=1 / (30 * 384))  # one entry of a 30-token MiniLM layer


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
    tables.export_tables({"cells": table}, tmp_path, "notebooks/test.ipynb")
    return tmp_path / "cells.csv"


def files_of(folder: Path, name: str = "cells") -> list[Path]:
    return [folder / f"{name}.{suffix}" for suffix in ("csv", "md", "tex")]


def check_in(tmp_path: Path, context: tolerances.Context = CONTEXT) -> reproduction.Check:
    """A notebook's check, its log and its committed record in ``tmp_path`` (figures' tables there too)."""
    return reproduction.Check(tmp_path / "log.json", context, tmp_path / "record.json", tmp_path)


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
    assert tolerances.kind(column, row) == expected


def test_numbers_agree_within_their_kinds_tolerance_and_the_rounding_of_both() -> None:
    within = tolerances.within
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
    check_in(tmp_path).table("cells", table, dict(zip(("csv", "md", "tex"), files_of(tmp_path), strict=True)), texts)
    files = files_of(tmp_path)
    before = {path: path.read_bytes() for path in files}
    for path in files:
        os.utime(path, (1, 1))
    noisy = table.copy()
    rng = np.random.default_rng(0)
    for column in ("Attention_Entropy", "Final_Activation", "wilcoxon_p"):
        noisy[column] *= 1 + 2e-6 * rng.choice([-1.0, 1.0], len(noisy))  # another CPU's rounding
    noisy.loc[0, "Max_Sparsity"] += 1 / (30 * 384)  # one entry on the other side of the threshold
    check = check_in(tmp_path)
    kept = tables.export_tables({"cells": noisy}, tmp_path, "notebooks/test.ipynb", check)["cells"]
    assert {path: path.read_bytes() for path in files} == before
    assert all(path.stat().st_mtime > 1 for path in files)  # newer than the inputs, for Snakemake
    (comparison,) = reproduction.read_record(tmp_path / "log.json")
    assert comparison.reproduced and comparison.action == "kept" and comparison.numbers == 3 * 7
    assert table_csv(kept) == before[files[0]].decode()  # what follows shows the committed numbers
    assert reproduction.verify(tmp_path / "record.json") == []


def texts(table: pd.DataFrame) -> dict[str, str]:
    return tables.table_texts(table, "notebooks/test.ipynb")


def test_a_shift_beyond_tolerance_is_reported_and_rewritten_in_that_cell_alone(tmp_path: Path) -> None:
    table = cells()
    path = committed(tmp_path, table)
    shifted = table.copy()
    shifted.loc[1, "Attention_Entropy"] *= 1.001  # 1e-3: ten times the continuous tolerance
    shifted.loc[2, "Max_Sparsity"] += 10 / (30 * 384)  # ten entries
    shifted.loc[0, "Attention_Entropy"] *= 1 + 3e-6  # noise: this cell keeps its committed value
    check = check_in(tmp_path)
    kept = tables.export_tables({"cells": shifted}, tmp_path, "notebooks/test.ipynb", check)["cells"]
    (comparison,) = check.comparisons
    assert comparison.action == "written" and not comparison.conclusion_changed
    changed = {(d.where, d.column, d.kind) for d in comparison.differences}
    assert changed == {("row 2 B", "Attention_Entropy", "continuous"), ("row 3 C", "Max_Sparsity", "threshold")}
    written = pd.read_csv(path)
    assert written["Attention_Entropy"][1] == pytest.approx(shifted.loc[1, "Attention_Entropy"], rel=1e-4)
    assert written["Attention_Entropy"][0] == 74.02 and f"{kept.loc[0, 'Attention_Entropy']:.4g}" == "74.02"
    assert (tmp_path / "cells.md").read_text() == texts(kept)["md"]  # the Markdown says what the CSV says
    summary = reproduction.summarise(reproduction.read_record(tmp_path / "log.json"))
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
        comparison = compare_table("cells", changed, path, CONTEXT)
        assert comparison.conclusion_changed and [d.column for d in comparison.differences] == [column]
    assert "a verdict or rank CHANGED" in reproduction.summarise([comparison]).lines()[0]


def test_a_missing_file_or_a_new_column_is_written(tmp_path: Path) -> None:
    assert compare_table("cells", cells(), tmp_path / "none.csv", CONTEXT).note.startswith("new")
    path = committed(tmp_path, cells())
    wider = cells().assign(extra=1.0)
    assert compare_table("cells", wider, path, CONTEXT).note == "columns differ"
    assert compare_table("cells", cells().head(2), path, CONTEXT).note == "3 rows committed, 2 computed"


def test_numbers_in_text_are_compared_as_numbers() -> None:
    old = "SmolLM2-135M/MiniLM-L6 Hoyer 1.53 [1.52, 1.53], higher on 100% of prompts; math ranks 8 raw"
    assert tolerances.text_within(old, old.replace("1.53 [", "1.54 ["))[0]  # within rounding of 3 digits
    assert not tolerances.text_within(old, old.replace("1.53 [", "1.61 ["))[0]
    assert not tolerances.text_within(old, old.replace("ranks 8", "ranks 9"))[0]  # a rank
    assert not tolerances.text_within(old, old.replace("higher", "lower"))[0]
    assert tolerances.text_within(old, old)[1] == 5  # not the digits of the models' names


def test_the_readme_section_is_kept_when_it_reproduces(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    scorecard = pd.DataFrame({column: ["x"] for column in findings.README_COLUMNS}).assign(finding=[1])
    readme.write_text(f"intro\n{findings.README_START}\nold\n{findings.README_END}\nrest\n")
    findings.quote_in_readme(scorecard, "Finding 1 ranks 8.", readme, "notebooks/06.ipynb")
    text = readme.read_text()
    check = check_in(tmp_path)
    findings.quote_in_readme(scorecard, "Finding 1 ranks 8.", readme, "notebooks/06.ipynb", check)
    assert readme.read_text() == text and check.comparisons[0].action == "kept"
    findings.quote_in_readme(scorecard, "Finding 1 ranks 9.", readme, "notebooks/06.ipynb", check)
    assert "ranks 9" in readme.read_text() and check.comparisons[0].action == "written"
    assert reproduction.verify(tmp_path / "record.json") == []
    readme.write_text(readme.read_text().replace("rest", "the rest, edited"))  # outside the section: not its
    assert reproduction.verify(tmp_path / "record.json") == []
    readme.write_text(readme.read_text().replace("ranks 9", "ranks 1"))
    assert [item.file for item in reproduction.verify(tmp_path / "record.json")] == [str(readme)]


def figure() -> plt.Figure:
    drawn, axis = plt.subplots()
    axis.plot([1, 2], [3, 4])
    return drawn


def test_a_figure_is_kept_only_as_the_bytes_its_run_made_from_the_same_data_and_code(tmp_path: Path) -> None:
    name, other = "heatmap_max_sparsity", "heatmap_attention_entropy"
    committed(tmp_path, cells()).rename(tmp_path / "complete_results.csv")  # the table behind both
    check = check_in(tmp_path)
    (png, svg, other_png, _) = figures.save_figures({name: figure(), other: figure()}, tmp_path, "nb", check)
    assert check.comparisons[-1].note.startswith("new") and figures.drawn_by(png) == figures.DRAWING_CODE
    before = (png.read_bytes(), svg.read_bytes())
    os.utime(png, (1, 1))

    def save(drawn: plt.Figure, code: str = figures.DRAWING_CODE) -> Comparison:
        check = check_in(tmp_path)
        comparison = check.figure(name, [png, svg], code)
        if not comparison.reproduced:
            figures.save_figure(drawn, name, "nb", tmp_path)
        return check.add(comparison, [png, svg])

    assert save(figure()).action == "kept" and png.stat().st_mtime > 1
    assert (png.read_bytes(), svg.read_bytes()) == before
    # the same bytes from other code: drawn again, and kept as they are
    assert save(figure(), "0123456789abcdef").reproduced and (png.read_bytes(), svg.read_bytes()) == before
    # two committed figures swapped by hand: not what the run made, drawn again
    png.write_bytes(other_png.read_bytes())
    assert reproduction.verify(tmp_path / "record.json")[0].file == str(png)
    drawn = figure()
    drawn.axes[0].plot([1, 2], [4, 3])
    comparison = save(drawn)
    assert comparison.note == "edited after the run that wrote it: drawn again" and comparison.action == "written"
    assert reproduction.verify(tmp_path / "record.json") == []
    # its table changed: drawn again from it
    (tmp_path / "complete_results.csv").write_text((tmp_path / "complete_results.csv").read_text() + "\n")
    assert save(figure()).note == "its data changed: complete_results"


def test_a_figure_edited_together_with_its_record_is_caught_and_drawn_again(tmp_path: Path) -> None:
    name, other = "heatmap_max_sparsity", "heatmap_attention_entropy"
    committed(tmp_path, cells()).rename(tmp_path / "complete_results.csv")
    other_figure = figure()
    other_figure.axes[0].plot([1, 2], [4, 3])  # another picture
    (png, svg, other_png, other_svg) = figures.save_figures(
        {name: figure(), other: other_figure}, tmp_path, "nb", check_in(tmp_path)
    )
    drawn = {path: path.read_bytes() for path in (png, svg)}
    png.write_bytes(other_png.read_bytes())  # swapped in by hand ...
    svg.write_bytes(other_svg.read_bytes())
    record = json.loads((tmp_path / "record.json").read_text())  # ... and the record edited to match
    files = record["outputs"][f"figure {name}"]["files"]
    for shown in files:
        files[shown] = reproduction.file_hash(Path(shown))
    (tmp_path / "record.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    assert reproduction.verify(tmp_path / "record.json") == []  # the committed record alone is fooled
    (caught,) = reproduction.verify(tmp_path / "record.json", tmp_path / "log.json")  # this machine's log is not
    assert caught.output == "record" and "not the one this machine's last run wrote" in caught.line()
    check = check_in(tmp_path)
    figures.save_figures({name: figure()}, tmp_path, "nb", check)  # the notebook runs again: drawn, not trusted
    (comparison,) = check.comparisons
    assert comparison.action == "written" and comparison.note.startswith("not the picture this code draws")
    assert {path: path.read_bytes() for path in (png, svg)} == drawn
    assert reproduction.verify(tmp_path / "record.json", tmp_path / "log.json") == []


def test_the_same_picture_allows_a_sub_pixel_shift_and_nothing_more(tmp_path: Path) -> None:
    x, y = np.random.default_rng(0).normal(size=(2, 200))

    def drawn(path: Path, shift: float = 0.0, bar: float = 4.0, line: bool = False) -> Path:
        picture, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
        left.scatter(x + shift, y, s=8)
        left.plot(np.sort(x) + shift, np.sort(y))
        right.bar(range(4), [1, 2, 3, bar])
        if line:
            left.plot([0, 1], [0, 1])
        picture.savefig(path, dpi=150)
        plt.close(picture)
        return path

    committed_png = drawn(tmp_path / "committed.png")
    assert reproduction.same_picture(drawn(tmp_path / "noise.png", shift=1e-4), committed_png)  # 100x tolerance
    assert reproduction.same_picture(drawn(tmp_path / "more.png", shift=1e-3), committed_png)
    assert not reproduction.same_picture(drawn(tmp_path / "moved.png", shift=1e-2), committed_png)  # 0.7 pixel
    assert not reproduction.same_picture(drawn(tmp_path / "bar.png", bar=4.04), committed_png)  # a bar 1% taller
    assert not reproduction.same_picture(drawn(tmp_path / "line.png", line=True), committed_png)
    assert not reproduction.same_picture(committed_png, tmp_path / "missing.png")
    (tmp_path / "gamma.png").write_bytes(with_gamma(committed_png.read_bytes()))
    assert not reproduction.same_picture(committed_png, tmp_path / "gamma.png")


def test_the_same_drawing_allows_rounding_and_catches_an_svg_edited_alone(tmp_path: Path) -> None:
    x, y = np.random.default_rng(0).normal(size=(2, 50))

    def drawn(path: Path, shift: float = 0.0, bar: float = 4.0, colour: str = "C0", label: str = "bars") -> Path:
        picture, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
        left.scatter(x + shift, y, s=8)
        left.set_xlim(-4, 4)
        right.bar(range(4), [1, 2, 3, bar], color=colour)
        right.set_title(label)
        image = left.imshow(np.outer(np.arange(3), np.arange(3)), extent=(2, 3, 2, 3))
        picture.colorbar(image, ax=left)
        picture.savefig(path, format="svg", metadata={"Date": None})
        plt.close(picture)
        return path

    committed_svg = drawn(tmp_path / "committed.svg")
    text = committed_svg.read_text()
    assert reproduction.same_drawing(drawn(tmp_path / "noise.svg", shift=1e-5), committed_svg)  # 3e-4 pt
    ids = sorted(set(reproduction._SVG_ID.findall(text)))  # ids matplotlib derives from coordinates
    assert ids
    renamed = tmp_path / "renamed.svg"
    renamed.write_text(text.replace(ids[0], "p0123456789"))
    assert reproduction.same_drawing(renamed, committed_svg)
    assert reproduction.same_drawing(drawn(tmp_path / "edge.svg", shift=1e-2), committed_svg)  # 0.3 pt: a rounding edge
    assert not reproduction.same_drawing(drawn(tmp_path / "moved.svg", shift=5e-2), committed_svg)  # 1.5 pt
    assert not reproduction.same_drawing(drawn(tmp_path / "bar.svg", bar=4.04), committed_svg)  # a bar 1% taller
    assert not reproduction.same_drawing(drawn(tmp_path / "colour.svg", colour="C1"), committed_svg)
    assert not reproduction.same_drawing(drawn(tmp_path / "text.svg", label="bats"), committed_svg)
    image = tmp_path / "image.svg"  # the embedded image, another picture
    image.write_text(text.replace(reproduction._SVG_IMAGE.search(text).group(1), other_png(tmp_path)))  # type: ignore[union-attr]
    assert not reproduction.same_drawing(image, committed_svg)
    reference = tmp_path / "reference.svg"  # a glyph pointed at an id that does not exist: the text loses a digit
    glyph = re.search(r'xlink:href="#(DejaVuSans-\w+)"', text).group(1)  # type: ignore[union-attr]
    reference.write_text(text.replace(f'xlink:href="#{glyph}"', f'xlink:href="#{glyph}.0"', 1))
    assert not reproduction.same_drawing(reference, committed_svg)
    gamma = tmp_path / "gamma.svg"  # the colour bar's pixels unchanged, shown darker
    bar = reproduction._SVG_IMAGE.search(text).group(1)  # type: ignore[union-attr]
    gamma.write_text(text.replace(bar, base64.b64encode(with_gamma(base64.b64decode(bar))).decode()))
    assert not reproduction.same_drawing(gamma, committed_svg)
    assert not reproduction.same_drawing(committed_svg, tmp_path / "missing.svg")


def test_a_marker_drawn_twice_at_one_place_is_the_same_drawing_and_one_elsewhere_is_not(tmp_path: Path) -> None:
    """A box plot's outliers at a whisker's end: by rounding one value more or less is an outlier, two dots at one
    place or one (seen on the tiny test models, where a metric is float noise)."""

    def drawn(name: str, outliers: list[float], alpha: float = 1.0) -> Path:
        picture, axis = plt.subplots(figsize=(4, 3))
        axis.plot([0.0] * len(outliers), outliers, "o", fillstyle="none", alpha=alpha)
        axis.set_ylim(-1, 10)
        picture.savefig(tmp_path / name, format="svg", metadata={"Date": None})
        plt.close(picture)
        return tmp_path / name

    committed = drawn("committed.svg", [5.0, 8.0])
    twice = drawn("twice.svg", [5.0, 5.0 + 1e-6, 8.0])
    assert reproduction.same_drawing(twice, committed) and reproduction.same_drawing(committed, twice)
    nearby = drawn("nearby.svg", [5.0, 5.0 + 2e-3, 8.0 - 2e-3])  # each within 0.5 pt of one of the other's
    assert reproduction.same_drawing(nearby, drawn("apart_by_noise.svg", [5.0, 8.0 + 2e-3]))
    assert not reproduction.same_drawing(drawn("apart.svg", [5.0, 6.0, 8.0]), committed)  # a dot added
    assert not reproduction.same_drawing(drawn("one.svg", [5.0]), committed)  # a dot removed
    see_through = drawn("see_through.svg", [5.0, 8.0], alpha=0.4)  # drawn twice at one place: darker
    assert not reproduction.same_drawing(drawn("see_through_twice.svg", [5.0, 5.0, 8.0], alpha=0.4), see_through)
    mixed = tmp_path / "mixed.svg"  # markers of two colours, unclipped: one run; the one drawn last is seen
    picture, axis = plt.subplots(figsize=(4, 3))
    axis.scatter([1, 1, 3], [5, 5, 8], c=["red", "blue", "green"], clip_on=False)
    picture.savefig(mixed, format="svg", metadata={"Date": None})
    plt.close(picture)
    lines = mixed.read_text().splitlines(keepends=True)
    red, blue = (next(line for line in lines if f"fill: {c}" in line) for c in ("#ff0000", "#0000ff"))
    on_top = tmp_path / "red_on_top.svg"
    on_top.write_text(mixed.read_text().replace(blue, blue + red))
    assert not reproduction.same_drawing(mixed, on_top)
    text = committed.read_text()
    marker = re.search(r"[ ]*<use [^<>]*/>\n", text).group(0)  # type: ignore[union-attr]
    repeated = tmp_path / "repeated.svg"  # a marker repeated with its x twice: not XML, a browser shows an error
    repeated.write_text(text.replace(marker, marker + marker.replace("/>", f' x="{marker.split(chr(34))[3]}"/>')))
    assert not reproduction.same_drawing(repeated, committed)
    underscored = tmp_path / "underscored.svg"  # Python reads 3_07.5 as a number, a browser does not
    y = re.search(r'y="([\d.]+)"', marker).group(1)  # type: ignore[union-attr]
    underscored.write_text(text.replace(marker, marker + marker.replace(f'y="{y}"', f'y="{y[0]}_{y[1:]}"')))
    assert not reproduction.same_drawing(underscored, committed)


def with_gamma(png: bytes) -> bytes:
    """``png`` with a gAMA chunk (gamma 0.15) after its header: the same pixels, which a browser shows darker."""
    body = b"gAMA" + (15000).to_bytes(4, "big")
    return png[:33] + (4).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big") + png[33:]


def other_png(tmp_path: Path) -> str:
    """A small PNG, base64, as an SVG embeds it."""
    plt.imsave(tmp_path / "other.png", np.eye(3))
    return base64.b64encode((tmp_path / "other.png").read_bytes()).decode()


def test_a_figure_whose_svg_alone_was_edited_with_its_record_is_drawn_again(tmp_path: Path) -> None:
    name = "heatmap_max_sparsity"
    committed(tmp_path, cells()).rename(tmp_path / "complete_results.csv")
    (png, svg) = figures.save_figures({name: figure()}, tmp_path, "nb", check_in(tmp_path))
    drawn = {path: path.read_bytes() for path in (png, svg)}
    svg.write_text(svg.read_text().replace("<!-- ", "<!-- edited ", 1))  # a label of the SVG alone ...
    record = json.loads((tmp_path / "record.json").read_text())  # ... and the record edited to match
    files = record["outputs"][f"figure {name}"]["files"]
    for shown in files:
        files[shown] = reproduction.file_hash(Path(shown))
    (tmp_path / "record.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    assert reproduction.verify(tmp_path / "record.json") == []  # the committed record alone is fooled
    check = check_in(tmp_path)
    figures.save_figures({name: figure()}, tmp_path, "nb", check)  # drawn again, not trusted
    (comparison,) = check.comparisons
    assert comparison.action == "written" and comparison.note.startswith("its SVG is not the drawing")
    assert {path: path.read_bytes() for path in (png, svg)} == drawn


def test_a_record_no_run_here_made_is_checked_again(tmp_path: Path) -> None:
    check_in(tmp_path).table("cells", cells(), dict(zip(("csv", "md", "tex"), files_of(tmp_path), strict=True)), texts)
    assert reproduction.verify(tmp_path / "record.json", tmp_path / "log.json") == []
    (tmp_path / "log.json").unlink()  # a fresh clone, or a pull: the committed record was made elsewhere
    (found,) = reproduction.verify(tmp_path / "record.json", tmp_path / "log.json")
    assert found.output == "record" and "no run on this machine made it" in found.line()


def test_a_hand_edited_markdown_or_latex_table_is_named_and_rewritten_from_the_checked_csv(tmp_path: Path) -> None:
    table = cells()
    files = dict(zip(("csv", "md", "tex"), files_of(tmp_path), strict=True))
    check_in(tmp_path).table("cells", table, files, texts)
    original = {suffix: path.read_text() for suffix, path in files.items()}
    files["md"].write_text(original["md"].replace("inconclusive", "holds", 1))  # a verdict, edited by hand
    files["tex"].write_text(original["tex"].replace("74.02", "133.2"))  # a number, +80%
    assert {item.file for item in reproduction.verify(tmp_path / "record.json")} == {
        str(files["md"]),
        str(files["tex"]),
    }
    check = check_in(tmp_path)
    check.table("cells", table, files, texts)
    (comparison,) = check.comparisons
    assert not comparison.reproduced and comparison.action == "written"
    assert comparison.note == "edited after the run that wrote it: cells.md, cells.tex"
    assert {suffix: path.read_text() for suffix, path in files.items()} == original
    assert "cells: edited after the run that wrote it" in "\n".join(reproduction.summarise([comparison]).lines())
    # without a record (a first run of this version): what its CSV gives decides, and the edit is still found
    (tmp_path / "record.json").unlink()
    files["md"].write_text(original["md"].replace("inconclusive", "holds", 1))
    check = check_in(tmp_path)
    check.table("cells", table, files, texts)
    assert check.comparisons[0].note.startswith("rewritten, not what its checked CSV gives") and (
        files["md"].read_text() == original["md"]
    )


def test_a_csv_edited_after_its_run_is_never_kept_even_within_tolerance(tmp_path: Path) -> None:
    table = cells()
    files = dict(zip(("csv", "md", "tex"), files_of(tmp_path), strict=True))
    check_in(tmp_path).table("cells", table, files, texts)
    original = files["csv"].read_text()
    files["csv"].write_text(original.replace("74.02", "74.03"))  # within tolerance, but not what the run wrote
    check = check_in(tmp_path)
    kept = check.table("cells", table, files, texts)
    assert check.comparisons[0].note == "edited after the run that wrote it: cells.csv"
    assert (
        files["csv"].read_text() == original and kept.loc[0, "Attention_Entropy"] == table.loc[0, "Attention_Entropy"]
    )


def test_text_made_from_a_kept_table_says_what_the_table_says(tmp_path: Path) -> None:
    scorecard = pd.DataFrame({"finding": [1], "evidence_this_run": ["math ranks 8, 1.53 above [1.52, 1.54]"]})
    files = dict(zip(("csv", "md", "tex"), files_of(tmp_path, "findings_scorecard"), strict=True))
    check_in(tmp_path).table("findings_scorecard", scorecard, files, texts)
    noisy = scorecard.assign(evidence_this_run=["math ranks 8, 1.531 above [1.52, 1.54]"])  # another machine
    check = check_in(tmp_path)
    kept = check.table("findings_scorecard", noisy, files, texts)
    assert kept["evidence_this_run"][0] == scorecard["evidence_this_run"][0] and check.comparisons[0].reproduced
    paragraph = "Finding 1 is inconclusive: math ranks 8, 1.531 above [1.52, 1.54]."
    assert check.kept_text(paragraph) == "Finding 1 is inconclusive: math ranks 8, 1.53 above [1.52, 1.54]."


def test_every_figure_names_the_tables_behind_it() -> None:
    from helpers.study import outputs

    figures_ = {*outputs.STUDY_FIGURES, *outputs.FINDINGS_FIGURES, *outputs.SIGNATURE_FIGURES}
    tables_ = {*outputs.STUDY_TABLES, *outputs.FINDINGS_TABLES, *outputs.SIGNATURE_TABLES}
    assert set(FIGURE_DATA) == figures_
    assert {t for sources in FIGURE_DATA.values() for t in sources} <= tables_


def test_the_threshold_allowance_comes_from_the_runs_entry_counts() -> None:
    metrics = pd.DataFrame({"model": ["a", "a", "b"], "n_tokens": [10, 30, 5], "hidden_size": [384, 384, 64]})
    context = tolerances.Context.from_metrics(metrics)
    assert context.entries_inverse == pytest.approx(1 / 320)  # the larger of the two models' mean 1/entries
    assert context.threshold_atol == pytest.approx(tolerances.THRESHOLD_ENTRIES / 320)


def test_activation_means_near_zero_compare_absolutely_and_their_ratios_by_the_floor(tmp_path: Path) -> None:
    assert tolerances.kind("Final_Activation", {}) == "activation"
    assert tolerances.kind("ratio", {"metric": "final_activation"}) == "activation"
    assert tolerances.within("activation", "7.805e-05", "7.815e-05", digits=4)  # 1e-7 of a unit RMS, not of 8e-5
    assert not tolerances.within("activation", "7.805e-05", "9.805e-05", digits=4)
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
    assert compare_table("architectures", moved, path, CONTEXT).reproduced
    moved.loc[0, "decoder_over_encoder"] = -290.0  # 4%: more than the floor over each mean allows
    assert [d.column for d in compare_table("architectures", moved, path, CONTEXT).differences] == [
        "decoder_over_encoder"
    ]


# --- issue 35: tolerances that fit the statistic (the numbers an Intel Xeon gave for outputs an AMD EPYC made) ----


def test_a_continuous_estimate_is_compared_at_its_columns_scale(tmp_path: Path) -> None:
    contrasts = pd.DataFrame({"model": ["A"] * 4, "n_tokens": [10, 11, 12, 13]})
    contrasts["difference"] = [0.8542, 0.6871, -2.481e-05, 1.164]  # a column of values near 1
    path = committed(tmp_path, contrasts)
    xeon = contrasts.assign(difference=[0.8542, 0.6871, -2.364e-05, 1.164])
    assert compare_table("finding1_length_contrasts", xeon, path, CONTEXT).reproduced
    shifted = contrasts.assign(difference=[0.8542, 0.6871, 2e-3, 1.164])  # 2e-3 of the scale: a real change
    assert not compare_table("finding1_length_contrasts", shifted, path, CONTEXT).reproduced
    moved = contrasts.assign(difference=[0.8542 * 1.01, 0.6871, -2.481e-05, 1.164])  # 1% of a value
    assert not compare_table("finding1_length_contrasts", moved, path, CONTEXT).reproduced


def test_an_accuracy_is_compared_by_its_resolution_in_prompts() -> None:
    row = {"model": "SmolLM2-135M", "n_prompts": "540", "accuracy": "0.4481", "surface_accuracy": "0.2139"}
    assert tolerances.kind("accuracy", row, "signature_tests") == "accuracy"
    assert tolerances.kind("gain", row, "signature_tests") == "accuracy_difference"
    assert tolerances.kind("selectivity", row, "signature_tests") == "accuracy_difference"
    assert tolerances.within("accuracy", "0.4481", "0.4509", items=540, digits=4)  # 1.5 prompts of 540
    assert not tolerances.within("accuracy", "0.4481", "0.4561", items=540, digits=4)  # 4.3 prompts
    assert tolerances.within("accuracy_difference", "0.2342", "0.2398", items=540, digits=4)  # 3 prompts
    probes = tolerances.Context(prompts=540)  # a table without its prompts: the run's
    assert tolerances.within("accuracy", "0.8722", "0.8741", context=probes, digits=4)
    assert not tolerances.within("accuracy", "0.8722", "0.8792", context=probes, digits=4)


def test_a_frequency_over_resampled_draws_is_compared_by_its_monte_carlo_error() -> None:
    context = tolerances.Context(draws=(("top10_stability", 1000),))
    row = {"model": "A", "category": "x", "metric": "final_activation"}
    assert tolerances.kind("share_of_draws_in_top10", row, "top10_stability", context) == "frequency"
    assert tolerances.kind("share_of_draws_in_top10", row, "other_table", context) == "share"
    # 2 x sqrt(0.25 / 1000) = 0.032 at p = 0.5; 2 / 1000 at p = 1
    assert tolerances.within("frequency", "0.5", "0.53", context=context, digits=4, draws=1000)
    assert not tolerances.within("frequency", "0.5", "0.54", context=context, digits=4, draws=1000)
    assert tolerances.within("frequency", "1", "0.998", digits=4, draws=1000)
    assert not tolerances.within("frequency", "1", "0.99", digits=4, draws=1000)
    simulated = {"finding": "1", "power": "0.07", "simulated_runs": "100"}  # verdict shares over simulated runs
    assert tolerances.kind("power", simulated, "operating_characteristics") == "frequency"


def test_a_p_value_of_a_count_moves_with_its_count() -> None:
    row = {"trained_on": "A", "tested_on": "B", "accuracy": "0.1167", "chance": "0.08333"}
    assert tolerances.kind("p_above_chance", row, "signature_transfer") == "p_binomial"
    context = tolerances.Context(prompts=540)
    # 63 of 540 right, then 64 (one prompt classified differently): a binomial tail moves by a factor of 1.5
    assert tolerances.within("p_binomial", "0.004573", "0.003007", context=context, digits=4, row=row)
    assert not tolerances.within("p_binomial", "0.004573", "0.0012", context=context, digits=4, row=row)
    assert tolerances.kind("p_below_minimum", {}, "signature_verdicts") == "p_discrete"
    assert tolerances.kind("wilcoxon_p", {"variant": "max_sparsity"}, "sparsity_variants") == "p_discrete"
    assert tolerances.within("p_discrete", "1.2e-05", "1.8e-05")  # 0.18 in log10, allowed 0.02 + 0.1 x 4.9
    assert not tolerances.within("p_value", "1.2e-05", "1.8e-05")  # a continuous statistic's: 0.02


def test_a_count_of_units_that_pass_a_bar_is_compared_by_units() -> None:
    assert tolerances.kind("selective", {"model": "A", "layer": "3"}, "signature_units") == "unit_count"
    assert tolerances.within("unit_count", "41", "43") and not tolerances.within("unit_count", "41", "44")
    assert not tolerances.within("continuous", "41", "42")  # any other integer: exactly


def test_a_damaged_committed_csv_is_written_again_not_a_crash(tmp_path: Path) -> None:
    files = dict(zip(("csv", "md", "tex"), files_of(tmp_path), strict=True))
    check_in(tmp_path).table("cells", cells(), files, texts)
    original = files["csv"].read_bytes()
    files["csv"].write_bytes(b"\xff\xfe\x00 not text")
    check = check_in(tmp_path)
    check.table("cells", cells(), files, texts)
    assert check.comparisons[0].note.startswith("edited after the run that wrote it: cells.csv; unreadable")
    assert files["csv"].read_bytes() == original
    (tmp_path / "record.json").unlink()  # and without a record
    files["csv"].write_bytes(b"\xff\xfe\x00 not text")
    check = check_in(tmp_path)
    check.table("cells", cells(), files, texts)
    assert check.comparisons[0].note == UNREADABLE and files["csv"].read_bytes() == original


def test_a_file_no_notebook_made_is_named_once_every_notebook_has_a_record(tmp_path: Path) -> None:
    from types import SimpleNamespace

    folder = tmp_path / "tables"
    records = tmp_path / "records"
    outputs = SimpleNamespace(tables=folder, figures=tmp_path / "figures", records=records)
    outputs.record = lambda notebook: records / f"{notebook}.json"
    outputs.reproduction = lambda notebook: tmp_path / f"{notebook}.log.json"
    check = reproduction.Check(tmp_path / "05.log.json", CONTEXT, records / "05.json", folder)
    check.table("cells", cells(), dict(zip(("csv", "md", "tex"), files_of(folder), strict=True)), texts)
    (folder / "stray.csv").write_text("a,b\n1,2\n")  # on the front page, as if the study's
    assert reproduction.verify_run(outputs, ["05"]) != [] and reproduction.verify_run(outputs, ["05", "06"]) == []
    (stray,) = reproduction.verify_run(outputs, ["05"])
    assert stray.file.endswith("tables/stray.csv") and "no notebook of this study made it" in stray.line()


def test_a_damaged_record_fails_verification_and_is_written_again(tmp_path: Path) -> None:
    files = dict(zip(("csv", "md", "tex"), files_of(tmp_path), strict=True))
    check_in(tmp_path).table("cells", cells(), files, texts)
    (tmp_path / "record.json").write_text("{ not json")
    (item,) = reproduction.verify(tmp_path / "record.json")
    assert item.output == "record" and "unreadable" in item.line()
    check_in(tmp_path).table("cells", cells(), files, texts)
    assert reproduction.verify(tmp_path / "record.json") == []
