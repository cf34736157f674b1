"""Every Markdown table the compendium writes parses to rows of the header's width: text with ``|`` or
newlines (finding 2's evidence reads ``|h| < 0.01``) is escaped where Markdown is written
(``helpers.base.store.markdown_table``), and no cell reads ``nan``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers.base import paths, store
from helpers.stats import findings
from helpers.study import tables
from tests.support import malformed, markdown_tables


def test_the_parser_sees_an_unescaped_pipe_split_a_row() -> None:
    broken = "| a | b |\n|---|---|\n| x | |h| < 0.01 |\n"
    assert malformed(broken) and not malformed(broken.replace("|h|", "\\|h\\|"))


def test_pipes_newlines_and_missing_values_stay_inside_their_cells() -> None:
    table = pd.DataFrame(
        {
            "finding": [1, 2],
            "evidence | here": ["|h| < 0.01 1.92 [1.89, 1.94]", "two\nlines"],
            "value": [np.nan, 0.123456],
            "count": pd.array([pd.NA, 3], dtype="Int64"),
        }
    )
    text = store.markdown_table(table, floatfmt=".4g")
    assert malformed(text) == [] and len(markdown_tables(text)[0]) == 3
    assert "\\|h\\| < 0.01" in text and "two<br>lines" in text and "nan" not in text.lower()
    assert store.markdown_cell("already \\| escaped") == "already \\| escaped"  # never doubled
    assert store.markdown_table(table.iloc[:0], empty="no rows: nothing to show") == "no rows: nothing to show"


def test_exported_tables_and_the_readme_scorecard_parse(tmp_path: Path) -> None:
    scorecard = pd.DataFrame(
        {column: ["x | y", "multi\nline"] for column in findings.README_COLUMNS} | {"finding": [1, 2]}
    )
    tables.export_tables({"findings_scorecard": scorecard}, tmp_path, "notebooks/test.ipynb")
    markdown = (tmp_path / "findings_scorecard.md").read_text()
    assert malformed(markdown) == [] and len(markdown_tables(markdown)[0]) == 3
    readme = tmp_path / "README.md"
    readme.write_text(f"# R\n\n{findings.README_START}\n{findings.README_END}\n")
    assert findings.quote_in_readme(scorecard, "What follows.", readme, "nb06")
    quoted = readme.read_text()
    assert malformed(quoted) == [] and len(markdown_tables(quoted)[0]) == 3


def committed_markdown() -> list[Path]:
    """The repository's Markdown with tables: README, docs/, data/README and the default run's paper/tables/."""
    return [
        paths.ROOT / "README.md",
        *sorted((paths.ROOT / "docs").glob("*.md")),
        paths.DATA / "README.md",
        *sorted(paths.TABLES.glob("*.md")),
    ]


@pytest.mark.parametrize("path", committed_markdown(), ids=lambda p: str(p.relative_to(paths.ROOT)))
def test_every_committed_markdown_table_parses(path: Path) -> None:
    """Generated tables (the default run's paper/tables/ and the README scorecard) and hand-written ones."""
    assert malformed(path.read_text(encoding="utf-8")) == []
