"""Notebook hygiene and report conventions, for every notebook found by glob; the report renderer and
its pieces on small known inputs (the front page's cards: test_cards.py; tables: test_report_tables.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from helpers.base import paths
from helpers.report import notebooks

NOTEBOOKS = sorted(paths.NOTEBOOKS.glob("*.ipynb"))
NUMBERED = [p for p in NOTEBOOKS if p.name[:2].isdigit()]
PROJECT_KERNEL = {"name": "neural-activation-compendium", "display_name": "Python (compendium)", "language": "python"}


def _cells(notebook: Path) -> list[dict]:
    return json.loads(notebook.read_text())["cells"]


def test_there_are_numbered_notebooks() -> None:
    assert len(NUMBERED) >= 6


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(notebook: Path) -> None:
    for cell in _cells(notebook):
        if cell["cell_type"] == "code":
            assert not cell["outputs"] and cell["execution_count"] is None


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_parameters_cell_holds_plain_values_with_a_comment_each(notebook: Path) -> None:
    tagged = [c for c in _cells(notebook) if "parameters" in c.get("metadata", {}).get("tags", [])]
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


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_is_what_the_git_filter_makes_of_it(notebook: Path) -> None:
    """So running a notebook in JupyterLab never shows up in git: the filter strips it back to this."""
    command = [sys.executable, "-m", "nbstripout", *notebooks.NBSTRIPOUT_ARGUMENTS, "--textconv", str(notebook)]
    stripped = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    assert stripped == notebook.read_text()


def test_gitattributes_names_the_filter_for_notebooks() -> None:
    attributes = (paths.ROOT / ".gitattributes").read_text().splitlines()
    assert "*.ipynb filter=nbstripout" in attributes and "*.ipynb diff=ipynb" in attributes


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_markdown_has_no_tex_for_reports_without_mathjax(notebook: Path) -> None:
    for cell in _cells(notebook):
        if cell["cell_type"] == "markdown":
            assert not re.search(r"\$[^$\s][^$]*\$", "".join(cell["source"])), "".join(cell["source"])[:200]


@pytest.mark.parametrize("notebook", NUMBERED, ids=lambda p: p.name)
def test_notebook_names_the_project_kernel_and_hides_its_setup(notebook: Path) -> None:
    assert json.loads(notebook.read_text())["metadata"]["kernelspec"] == PROJECT_KERNEL
    cells = _cells(notebook)
    setup = cells[cells.index(next(c for c in cells if "parameters" in c["metadata"].get("tags", []))) + 1]
    assert "remove-cell" in setup["metadata"].get("tags", [])  # no StudyParams repr in the report
    for cell in cells:  # a bare `params` at the end of a cell shows the StudyParams repr
        assert not "".join(cell["source"]).rstrip().endswith("\nparams"), cell["source"]


@pytest.mark.parametrize("notebook", NUMBERED, ids=lambda p: p.name)
def test_first_cell_titles_the_report_and_says_what_it_shows(notebook: Path) -> None:
    summary = notebooks.notebook_summary(notebook)
    assert re.fullmatch(r"\d\d \S.*", summary.title), summary.title
    assert 20 <= len(summary.description) <= 400 and summary.description.endswith("."), summary.description


def test_notebook_summary_takes_the_heading_and_the_first_sentence(tmp_path: Path) -> None:
    path = tmp_path / "09_demo.ipynb"
    text = "# 09 Demo\n\nShows **one** thing: a `table`. More detail here.\n\nSecond paragraph."
    nbformat.write(new_notebook(cells=[new_markdown_cell(text)]), path)
    assert notebooks.notebook_summary(path) == notebooks.NotebookSummary("09 Demo", "Shows **one** thing: a `table`.")


def test_report_leaves_out_tagged_cells_and_loads_nothing(tmp_path: Path) -> None:
    cells = [
        new_markdown_cell("# 09 Demo\n\nA demo."),
        new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
        new_code_cell("setup", metadata={"tags": ["remove-cell"]}, outputs=[new_output("stream", text="SETUP-REPR")]),
        new_code_cell("work", metadata={"tags": ["remove-output"]}, outputs=[new_output("stream", text="PROGRESS")]),
        new_code_cell("shown", outputs=[new_output("execute_result", data={"text/plain": "SHOWN"}, execution_count=1)]),
        new_code_cell("warn", outputs=[new_output("stream", name="stderr", text="A REAL WARNING")]),
        new_markdown_cell("final activation <i>A</i><sub>f</sub>"),
    ]
    executed = tmp_path / "executed.ipynb"
    nbformat.write(new_notebook(cells=cells, metadata={"widgets": {"state": {}}}), executed)
    page = notebooks.render_html(executed, tmp_path / "report.html", "09 Demo (run x)", "run x", "notebooks/09.ipynb")
    page = page.read_text()
    assert "SETUP-REPR" not in page and "PROGRESS" not in page and "SHOWN" in page and "x = 1" not in page
    assert 'data-mime-type="application/vnd.jupyter.stderr"' in page  # a real warning stays visible
    assert "<script" not in page and "cdnjs" not in page and "mathjax" not in page.lower()
    assert "<title>09 Demo (run x)</title>" in page and 'href="index.html"' in page


def test_provenance_is_tables_in_a_collapsed_details_not_json() -> None:
    provenance = {
        "params": {"models": ["a", "b"], "seed": 0, "max_length": None},
        "prompt_file_sha256": "abc123",
        "models": {
            "a": {"display_name": "A", "n_layers": 2, "device": None},
            "b": {"display_name": "B", "n_layers": 3},
        },
    }
    page = notebooks.provenance_html(provenance, "Provenance")
    assert page.startswith("<details><summary>Provenance</summary>") and "{" not in page
    assert "<td>prompt_file_sha256</td><td>abc123</td>" in page and "<td>models</td><td>a, b</td>" in page
    assert "<td>max_length</td><td>none</td>" in page
    assert "<th>field</th><th>a</th><th>b</th>" in page  # models across, fields down: stays narrow
    assert "<td>n_layers</td><td>2</td><td>3</td>" in page and "<td>device</td><td>none</td><td>n/a</td>" in page
    assert "<td></td>" not in page  # no blank cell


def test_report_tables_have_no_nan_no_bare_index_and_say_why_they_are_empty() -> None:
    table = pd.DataFrame({"model": ["a", "b", "c"], "verdict": ["holds", np.nan, None], "value": [1.5, np.nan, 2.0]})
    filtered = table[table["model"] != "b"]  # index 0, 2: a leftover index, not a column
    page = notebooks.show_table(filtered).data
    assert "nan" not in page.lower() and "None" not in page
    assert "<tbody><tr><td>a</td><td></td>" not in page and page.count("<tr>") == 3  # header and the two rows
    assert "<th>0</th>" not in page and ">2<" not in page.split("<tbody>")[1].split("</td>")[0]
    grouped = table.groupby("model")[["value"]].mean()  # a named index becomes a column
    assert "<th>model</th>" in notebooks.show_table(grouped).data
    empty = notebooks.show_table(table.iloc[:0], empty="no rows: no model is one of the paper's six")
    assert "no rows: no model is one of the paper" in empty.data


def test_every_report_image_gets_a_name_and_caption_as_alt_text() -> None:
    node = new_notebook(
        cells=[
            new_markdown_cell("## Per-layer profiles\n\nSparsity per layer, by depth. More text."),
            new_code_cell('study_figures["layer_profiles"]'),
            new_markdown_cell("The prompt, in the study."),
            new_code_cell('page.show("In the study")'),
        ]
    )
    png = {"output_type": "display_data", "data": {"image/png": "iVBORw0KGgo="}, "metadata": {}}
    node.cells[1].outputs = [nbformat.from_dict(png)]
    node.cells[3].outputs = [nbformat.from_dict(png)]
    assert notebooks.describe_figures(node) == 2
    alt = node.cells[1].outputs[0].metadata["image/png"]["alt"]
    assert alt == "Figure layer profiles: Per-layer profiles. Sparsity per layer, by depth."
    assert node.cells[3].outputs[0].metadata["image/png"]["alt"] == "Figure In the study: The prompt, in the study."


def test_make_lab_binds_to_this_machine_and_allows_root_only_for_root() -> None:
    dry = subprocess.run(["make", "-n", "lab"], cwd=paths.ROOT, capture_output=True, text=True, check=True).stdout
    lab = next(line for line in dry.splitlines() if "jupyter lab" in line)
    assert "--ip=127.0.0.1" in lab
    assert ("--allow-root" in lab) == (os.geteuid() == 0)
