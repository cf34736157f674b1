"""The whole workflow with the smoke parameters, in a temporary copy of the repository (``smoke_run``,
tests/conftest.py, shared with the browser tests)."""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path

import pandas as pd

from helpers import paths
from helpers.figures import OUTPUT_FIGURES
from helpers.study import CATEGORIES, load_params
from helpers.tables import OUTPUT_TABLES
from tests.conftest import snakemake


def test_every_table_exists_in_every_format_with_no_missing_values(smoke_run: Path) -> None:
    folder = smoke_run / "paper" / "tables" / "smoke"
    for name in OUTPUT_TABLES:
        for suffix in ("csv", "md", "tex"):
            assert (folder / f"{name}.{suffix}").is_file(), f"{name}.{suffix} missing"
    params = load_params(paths.PARAMS / "smoke.yaml")
    complete = pd.read_csv(folder / "complete_results.csv")
    assert len(complete) == len(params.models) * len(CATEGORIES)
    assert set(complete["Category"]) == set(CATEGORIES)
    assert set(complete["Model_Name"]) == set(params.models)
    assert (complete["Inputs_Analyzed"] == params.prompts_per_category).all()
    assert not complete.isna().any().any()
    expected_rows = {
        "model_summary": len(params.models),
        "category_performance": len(CATEGORIES),
        "architecture_comparison": 2,
        "top10_final_activation": 10,
        "top10_attention_entropy": 10,
        "top10_lowest_sparsity": 10,
        "sample_inputs": len(CATEGORIES),
        "published_vs_reproduced_categories": 3 * len(CATEGORIES),
        "published_vs_reproduced_architectures": 6,
    }
    for name, rows in expected_rows.items():
        table = pd.read_csv(folder / f"{name}.csv")
        assert len(table) == rows, name
        assert not table.isna().any().any(), name
    consistency = pd.read_csv(folder / "paper_consistency.csv")
    assert consistency["agrees"].all()


def test_every_figure_exists(smoke_run: Path) -> None:
    for name in OUTPUT_FIGURES:
        for suffix in ("png", "svg"):
            path = smoke_run / "figures" / "smoke" / f"{name}.{suffix}"
            assert path.is_file() and path.stat().st_size > 5_000, path


def test_reports_exist_embed_figures_and_are_indexed(smoke_run: Path) -> None:
    reports = smoke_run / "reports" / "smoke"
    notebooks = sorted(p.stem for p in (smoke_run / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    index = (reports / "index.html").read_text()
    for notebook in notebooks:
        matches = list(reports.glob(f"{notebook}*.html"))
        assert matches, f"no report for {notebook}"
        for report in matches:
            assert f'href="{report.name}"' in index
    assert "data:image/png;base64" in (reports / "04_plot.html").read_text()
    assert "transformers" in index and "prompt_file_sha256" in index and "smoke" in index


def test_index_is_the_studys_front_page(smoke_run: Path) -> None:
    index = (smoke_run / "reports" / "smoke" / "index.html").read_text()
    scorecard = pd.read_csv(smoke_run / "paper" / "tables" / "smoke" / "findings_scorecard.csv")
    for claim in scorecard["claim"]:
        assert html.escape(claim) in index, claim  # the scorecard, rendered as a table
    assert index.count('src="data:image/png;base64,') >= 2  # key figures, embedded
    for name in OUTPUT_TABLES:
        assert f'href="../../paper/tables/smoke/{name}.csv"' in index, name
    for name in OUTPUT_FIGURES:
        assert f'href="../../figures/smoke/{name}.svg"' in index, name
    assert "Measures one model on the study" in index  # each report's line, from its notebook
    assert "<details>" in index and "<pre>" not in index  # provenance as a collapsed table, not JSON


def test_reports_have_titles_a_way_back_and_no_noise(smoke_run: Path) -> None:
    for report in sorted((smoke_run / "reports" / "smoke").glob("0*.html")):
        page = report.read_text()
        title = re.search(r"<title>(.*?)</title>", page, re.S).group(1).strip()
        assert title and title != "Notebook", report.name
        assert 'href="index.html"' in page, report.name
        assert "<script" not in page, report.name  # nothing to fetch: no require.js, MathJax, widgets
        if report.name.startswith("06_"):
            continue  # notebook 06 adopts the report conventions on its own branch
        assert 'data-mime-type="application/vnd.jupyter.stderr"' not in page, report.name
        for noise in ("StudyParams(", "PosixPath(", "it/s]", "TqdmWarning"):
            assert noise not in page, (report.name, noise)


def test_source_notebooks_are_left_clean_and_executed_copies_record_parameters(smoke_run: Path) -> None:
    for notebook in (smoke_run / "notebooks").glob("*.ipynb"):
        cells = json.loads(notebook.read_text())["cells"]
        assert not any(cell.get("outputs") for cell in cells if cell["cell_type"] == "code"), notebook
    executed = json.loads((smoke_run / "build" / "smoke" / "02_compute_metrics.ipynb").read_text())
    assert executed["metadata"]["papermill"]["parameters"]["params_file"] == "params/smoke.yaml"


def test_a_second_run_has_nothing_to_do(smoke_run: Path) -> None:
    result = snakemake(smoke_run, "--dry-run")
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr


def test_findings_scorecard_has_one_row_per_finding_with_a_computed_verdict(smoke_run: Path) -> None:
    from helpers.robustness import ROBUSTNESS_TABLES, VERDICTS

    folder = smoke_run / "paper" / "tables" / "smoke"
    for name in ROBUSTNESS_TABLES:
        assert (folder / f"{name}.csv").is_file(), name
    scorecard = pd.read_csv(folder / "findings_scorecard.csv")
    assert list(scorecard["finding"]) == [1, 2, 3, 4]
    assert set(scorecard["verdict"]) <= set(VERDICTS)
    assert (smoke_run / "paper" / "tables" / "smoke" / "findings_scorecard.md").is_file()
    assert (smoke_run / "README.md").read_text() == (
        paths.ROOT / "README.md"
    ).read_text()  # only the default run quotes


def test_a_rerun_from_scratch_gives_identical_tables_and_figures(smoke_run: Path) -> None:
    def snapshot() -> dict[str, bytes]:
        outputs = [*(smoke_run / "paper" / "tables" / "smoke").glob("*.csv")]
        outputs += [*(smoke_run / "figures" / "smoke").glob("*.svg")]
        return {str(path.relative_to(smoke_run)): path.read_bytes() for path in outputs}

    first = snapshot()
    shutil.rmtree(smoke_run / "results")  # nothing measured is kept: every model runs again
    result = snakemake(smoke_run, "--forceall")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    second = snapshot()
    assert len(first) > 20 and first.keys() == second.keys()
    assert [name for name in first if first[name] != second[name]] == []
