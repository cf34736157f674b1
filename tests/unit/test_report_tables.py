"""The reports' tables (helpers.report.tables): every text from data escaped where the HTML is made, numbers to 3
significant digits and never broken, readable headers, long tables folded with a link to their CSV; and the last
check that no report carries a script."""

from __future__ import annotations

from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from helpers.report import cards, notebooks, tables

SCRIPT = "<script>window.compendiumPwned = 1</script>"
ONERROR = '<img src=x onerror="window.compendiumPwned = 2">'
HOSTILE = pd.DataFrame(
    {
        "model": ["tiny-bert", "tiny-gpt2"],
        "category": [ONERROR, "math"],
        "text": [SCRIPT + " What is 2+2?", "a <b>bold</b> & plain prompt"],
        "attention_entropy": [12.34567, 0.000123456],
    }
)


def active(page: str) -> list[str]:
    parser = tables._ActiveContent()
    parser.feed(page)
    return parser.found


def test_a_prompt_and_a_category_with_markup_are_shown_as_text_never_as_markup() -> None:
    page = tables.show_table(HOSTILE).data
    assert active(page) == []
    assert "&lt;script&gt;window.compendiumPwned = 1&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=&quot;window.compendiumPwned = 2&quot;&gt;" in page
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; plain" in page
    # the same texts in every other piece of HTML the reports and the front page make
    provenance = tables.provenance_html({"params": {"prompts": SCRIPT}, "models": {ONERROR: {"display_name": SCRIPT}}})
    files = tables.files_table({SCRIPT: Path("/nonexistent") / ONERROR}).data
    text = tables.show_text(f"Finding 1 in {ONERROR}: {SCRIPT}").data
    card = cards.Card(1, SCRIPT, "holds", counts=ONERROR, ours=SCRIPT, paper=ONERROR, key_number=SCRIPT)
    for made in (provenance, files, text, cards.cards_html([card]), tables.html_table([SCRIPT], [[ONERROR]])):
        assert active(made) == [], made
        assert "&lt;script&gt;" in made or "&lt;img" in made


def test_a_page_that_would_run_code_is_refused_naming_what() -> None:
    for page, what in (
        (f"<p>{SCRIPT}</p>", "<script>"),
        (f"<p>{ONERROR}</p>", "onerror"),
        ('<a href="javascript:alert(1)">x</a>', "script URL"),
        ("<iframe src='x'></iframe>", "<iframe>"),
    ):
        with pytest.raises(tables.ActiveContentError, match=what):
            tables.assert_script_free(page, "the report x.html")
    safe = '<p>&lt;script&gt;</p><img src="data:image/png;base64,AAAA" alt="x"><a href="index.html">i</a>'
    assert tables.assert_script_free(safe) == safe


def test_a_report_with_hostile_outputs_renders_escaped_and_one_with_raw_markup_is_refused(tmp_path: Path) -> None:
    shown = tables.show_table(HOSTILE)
    cells = [
        new_markdown_cell("# 09 Demo\n\nA demo."),
        new_code_cell(
            "notebooks.show_table(prompts)", outputs=[new_output("display_data", data={"text/html": shown.data})]
        ),
    ]
    executed = tmp_path / "executed.ipynb"
    nbformat.write(new_notebook(cells=cells), executed)
    page = notebooks.render_html(
        executed, tmp_path / "report.html", "09 Demo", "run x", "notebooks/09.ipynb"
    ).read_text()
    assert "&lt;script&gt;window.compendiumPwned" in page and active(page) == []
    raw = new_code_cell("x", outputs=[new_output("display_data", data={"text/html": f"<p>{SCRIPT}</p>"})])
    nbformat.write(new_notebook(cells=[cells[0], raw]), executed)
    with pytest.raises(tables.ActiveContentError, match="report bad.html"):
        notebooks.render_html(executed, tmp_path / "bad.html", "09 Demo", "run x", "notebooks/09.ipynb")
    assert not (tmp_path / "bad.html").exists()


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (12.34567, "12.3"),
        (0.000123456, "0.000123"),
        (1234.5, "1230"),
        (3.7e-90, "3.7e-90"),
        (12.0, "12"),
        (7, "7"),
        (-0.0004, "-0.0004"),
        (np.nan, ""),
        (np.inf, "∞"),
        (2.5e7, "2.5e+07"),
        (np.float32(0.5), "0.5"),
    ],
)
def test_numbers_are_written_to_three_significant_digits_without_needless_exponents(value: float, shown: str) -> None:
    assert tables.number(value) == shown


def test_numbers_are_right_aligned_never_broken_and_headers_are_words() -> None:
    frame = pd.DataFrame(
        {"math_rank_set_per_row": ["2-12"], "residual_sd": [1.313], "p_some_category_above_holm": [0.0036]}
    )
    page = tables.show_table(frame).data
    assert '<th>math rank set per row</th><th class="number">residual SD</th><th class="number">p some' in page
    assert '<td class="number">1.31</td>' in page and '<td class="number">0.0036</td>' in page
    assert "white-space: nowrap" in tables_style() and "td.number" in tables_style()
    long_word = tables.cell("sha256 " + "a" * 64)
    assert long_word[1] == "breakable" and tables.cell("does not hold")[1] == ""


def tables_style() -> str:
    from helpers.report.style import STYLE

    return STYLE


def test_a_long_table_is_folded_behind_a_click_with_a_link_to_its_csv(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(tables.REPORT_FOLDER_ENVIRONMENT, str(tmp_path / "reports" / "smoke"))
    long = pd.DataFrame({"model": [f"m{i}" for i in range(tables.FOLD_ROWS + 1)], "value": np.arange(26.0)})
    csv = tmp_path / "paper" / "tables" / "smoke" / "long.csv"
    page = tables.show_table(long, csv=csv).data
    assert page.startswith("<details class='long-table'><summary>26 rows × 2 columns: click to show the table")
    assert 'href="../../paper/tables/smoke/long.csv"' in page.split("</summary>")[0]
    short = tables.show_table(long.head(3), csv=csv).data
    assert "<details" not in short and 'href="../../paper/tables/smoke/long.csv"' in short
    assert tables.show_table(long.head(3), fold_rows=0).data.startswith("<details")


def test_no_notebook_makes_html_of_its_own() -> None:
    """Tables and texts from data reach a report only through helpers.report.tables (escaped there)."""
    import json

    from helpers.base import paths

    for notebook in sorted(paths.NOTEBOOKS.glob("*.ipynb")):
        for cell in json.loads(notebook.read_text())["cells"]:
            source = "".join(cell["source"])
            if cell["cell_type"] == "code":
                assert ".style" not in source and "to_html(" not in source and "HTML(" not in source, notebook.name
