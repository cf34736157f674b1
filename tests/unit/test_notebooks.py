"""Notebook hygiene, for every notebook found by glob."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import paths

NOTEBOOKS = sorted(paths.NOTEBOOKS.glob("*.ipynb"))


def test_there_are_numbered_notebooks() -> None:
    assert len([p for p in NOTEBOOKS if p.name[:2].isdigit()]) >= 5


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(notebook: Path) -> None:
    cells = json.loads(notebook.read_text())["cells"]
    for cell in cells:
        if cell["cell_type"] == "code":
            assert not cell["outputs"] and cell["execution_count"] is None


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_parameters_cell_holds_plain_values_with_a_comment_each(notebook: Path) -> None:
    cells = json.loads(notebook.read_text())["cells"]
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1
    for line in "".join(tagged[0]["source"]).splitlines():
        if line.strip():
            name, _, rest = line.partition("=")
            assert name.strip().isidentifier() and "#" in rest, line
            value = rest.split("#")[0].strip()
            assert value[0] in "\"'0123456789-[{TFN", f"not a plain value: {line}"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_uses_no_relative_paths(notebook: Path) -> None:
    assert "../" not in notebook.read_text()
