"""The whole workflow with the smoke parameters, in a temporary copy of the repository (``smoke_run``,
tests/conftest.py, shared with the browser tests)."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from helpers.base import paths, store
from helpers.study import CATEGORIES, load_params, reproduction, tolerances
from helpers.study.comparison import Difference, compare_table
from helpers.study.outputs import (
    FINDINGS_FIGURES,
    FINDINGS_TABLES,
    RELEASED_DATA,
    SIGNATURE_FIGURES,
    SIGNATURE_TABLES,
    STUDY_FIGURES,
    STUDY_TABLES,
)
from tests.support import environment, planned_jobs, snakemake, start_and_wait_for_a_job


def test_every_table_exists_in_every_format_with_no_missing_values(smoke_run: Path) -> None:
    folder = smoke_run / "paper" / "tables" / "smoke"
    for name in STUDY_TABLES:
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


def test_every_generated_markdown_table_parses(smoke_run: Path) -> None:
    """Every Markdown table the run wrote has rows of its header's width and no 'nan' (pipes escaped)."""
    from tests.support import malformed

    written = sorted((smoke_run / "paper" / "tables" / "smoke").glob("*.md"))
    assert len(written) >= len(STUDY_TABLES)
    problems = {path.name: malformed(path.read_text()) for path in written}
    assert {name: found for name, found in problems.items() if found} == {}


def test_every_figure_exists(smoke_run: Path) -> None:
    for name in (*STUDY_FIGURES, *SIGNATURE_FIGURES):
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
    for name in STUDY_TABLES:
        assert f'href="../../paper/tables/smoke/{name}.csv"' in index, name
    for name in STUDY_FIGURES:
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
    from helpers.stats.findings import NOT_TESTABLE, VERDICTS

    folder = smoke_run / "paper" / "tables" / "smoke"
    for name in (*FINDINGS_TABLES, *SIGNATURE_TABLES):
        assert (folder / f"{name}.csv").is_file(), name
    scorecard = pd.read_csv(folder / "findings_scorecard.csv")
    assert list(scorecard["finding"]) == [1, 2, 3, 4, 5]
    assert set(scorecard["verdict"]) <= set(VERDICTS)
    # 2 prompts per category and tiny random models: too little data never gives a verdict
    assert (scorecard["verdict"] == NOT_TESTABLE).all()
    assert (folder / "findings_scorecard.md").is_file()
    deviations = pd.read_csv(folder / "deviations.csv")  # every logged rule change, both verdicts computed
    assert set(deviations["verdict_under_current_rule"].str.split("; ").explode().str.split(": ").str[-1]) <= set(
        VERDICTS
    )
    assert "the deviations log" in (smoke_run / "reports" / "smoke" / "index.html").read_text()  # linked from the front
    readme_before = (smoke_run.parent / "README.before.md").read_text()
    assert (smoke_run / "README.md").read_text() == readme_before  # only the default run quotes its scorecard


COLLECT_ONWARDS = {
    "collect",
    "compute_metrics",
    "aggregate",
    "plot",
    "export_tables",
    "robustness",
    "explore",
    "signatures",
}
"""Every rule that runs after a collection (and collection itself)."""


def _edited(path: Path, comment: bool = False) -> tuple[str, tuple[float, float]]:
    """Append a definition (or, with ``comment``, a comment) to ``path``; return what restores it (text, times)."""
    stat = path.stat()
    text = path.read_text()
    if comment:
        path.write_text(text + "\n# an edit\n")
    else:
        path.write_text(text + ("\nstatic const int edited = 1;\n" if path.suffix == ".cpp" else "\nEDITED = 1\n"))
    return text, (stat.st_atime, stat.st_mtime)


@pytest.mark.parametrize(
    ("module", "rules"),
    [
        # every finding's rule uses the shared machinery; finding 5's probes (signatures.py) run in notebook 08, whose
        # tests notebook 06 reads, and in the explorer's category probes
        ("stats/findings/rules.py", {"robustness", "signatures", "explore"}),
        ("stats/findings/signatures.py", {"robustness", "signatures", "explore"}),
        ("report/figures.py", {"plot", "robustness", "explore", "signatures"}),
        ("study/tables.py", {"aggregate", "plot", "export_tables", "robustness", "explore", "signatures"}),
        ("report/explore.py", {"explore"}),
        ("core/streaming.py", COLLECT_ONWARDS),
        # issue 35: the kernel's C++ source, the registry and a converter run in every collection
        ("core/kernels/entropy_attention.cpp", COLLECT_ONWARDS),
        ("core/registry.py", COLLECT_ONWARDS),
        ("core/onnx_bert.py", COLLECT_ONWARDS),
    ],
)
def test_editing_a_module_reruns_exactly_the_rules_that_use_it(smoke_run: Path, module: str, rules: set[str]) -> None:
    path = smoke_run / "helpers" / module
    text, times = _edited(path)
    try:
        planned = planned_jobs(smoke_run)
    finally:
        path.write_text(text)
        os.utime(path, times)
    assert set(planned) - {"all", "index"} == rules


@pytest.mark.parametrize("module", ["core/streaming.py", "report/figures.py"])
def test_a_comment_reruns_nothing(smoke_run: Path, module: str) -> None:
    path = smoke_run / "helpers" / module
    text, times = _edited(path, comment=True)
    try:
        planned = planned_jobs(smoke_run)
    finally:
        path.write_text(text)
        os.utime(path, times)
    assert planned == {}


def test_deleting_an_intermediate_rebuilds_it_and_what_depends_on_it(smoke_run: Path) -> None:
    metrics = smoke_run / "results" / "smoke" / "metrics.parquet"
    saved = metrics.with_suffix(".saved")
    shutil.copy2(metrics, saved)
    metrics.unlink()
    try:
        planned = planned_jobs(smoke_run)
    finally:
        os.replace(saved, metrics)
    rebuilt = {"compute_metrics", "aggregate", "plot", "export_tables", "robustness", "explore", "signatures"}
    assert set(planned) - {"all", "index"} == rebuilt


def test_every_file_the_run_writes_is_a_declared_output(smoke_run: Path) -> None:
    result = snakemake(smoke_run, "--summary")
    assert result.returncode == 0, result.stderr[-3000:]
    declared = {line.split("\t")[0] for line in result.stdout.splitlines()[1:]}
    declared = {str(Path(p).resolve().relative_to(smoke_run)) for p in declared if p}
    written = {
        str(p.relative_to(smoke_run))
        for folder in ("figures/smoke", "paper/tables/smoke", "paper/data/smoke", "reports/smoke", "results/smoke")
        for p in (smoke_run / folder).rglob("*")
        if p.is_file() and ".chunks" not in p.parts[-2]
    }
    assert written - declared == set()


def _committed(root: Path) -> dict[str, bytes]:
    """Every committed output of the smoke run (tables in every format, figures) by path."""
    folders = ("paper/tables/smoke", "figures/smoke")
    return {str(p.relative_to(root)): p.read_bytes() for folder in folders for p in sorted((root / folder).iterdir())}


def _summary(root: Path) -> reproduction.Summary:
    return reproduction.summarise(reproduction.read_records(root / "build" / "smoke" / "reproduction"))


def test_another_machine_reproduces_the_study_and_leaves_every_committed_file_untouched(smoke_run: Path) -> None:
    """Measured again with another batch composition and thread count (other float rounding): within tolerance."""
    before = _committed(smoke_run)
    metrics_path = smoke_run / "results" / "smoke" / "metrics.parquet"
    measured_before = store.read_table(metrics_path)
    params = smoke_run / "params" / "smoke.yaml"
    text, stat = params.read_text(), params.stat()
    params.write_text(text.replace("batch_size: 8", "batch_size: 1"))  # every prompt alone: no padding
    shutil.rmtree(smoke_run / "results" / "smoke" / "activations")
    try:
        result = snakemake(smoke_run, "--set-threads", "collect=1")
    finally:
        params.write_text(text)
        os.utime(params, (stat.st_atime, stat.st_mtime))  # as before: the run stays up to date
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    measured_after = store.read_table(metrics_path)
    floats = measured_before.select_dtypes("float").columns
    assert not measured_after[floats].equals(measured_before[floats]), "the rounding must differ for a test"
    summary = _summary(smoke_run)
    assert summary.new == [] and not summary.conclusion_changed and summary.numbers > 1000

    # The tiny random models make some statistics float noise, so only rows built on them may change: their final
    # activation A_f is zero up to rounding (LayerNorms without bias: top-10 shares, the finding-3 facts); their
    # attention is near uniform, so paired differences of row-normalised entropy are at rounding level (their d_z);
    # and finding 5's cross-model transfer standardises profiles that are mostly such noise.
    def tiny_model_noise(output: str, difference: Difference) -> bool:
        return (
            "final activation" in difference.where.replace("_", " ").lower()
            or output == "signature_transfer"
            or (difference.column == "d_z" and "attention_entropy_normalized" in difference.where)
        )

    noise = [d for c in summary.changed for d in c.differences]
    assert all(tiny_model_noise(c.output, d) for c in summary.changed for d in c.differences), noise
    assert summary.reproduced == summary.numbers - len(noise) and len(noise) <= 60
    rewritten = {name for name in before if before[name] != _committed(smoke_run)[name]}
    changed = [(c.output, c.note, [(d.where, d.column) for d in c.differences]) for c in summary.changed]
    assert rewritten <= {f"paper/tables/smoke/{c.output}.{s}" for c in summary.changed for s in ("csv", "md", "tex")}, (
        changed
    )
    assert not any(name.startswith("figures/") for name in rewritten)  # byte for byte
    every = (*STUDY_TABLES, *FINDINGS_TABLES, *SIGNATURE_TABLES, *STUDY_FIGURES, *FINDINGS_FIGURES, *SIGNATURE_FIGURES)
    assert summary.outputs == len(every) + len(RELEASED_DATA) + 1  # every committed output (and the data card), checked
    headline = f"Reproduced within tolerance: {summary.reproduced} of {summary.numbers} numbers"
    assert headline in (smoke_run / "reports" / "smoke" / "index.html").read_text()
    printed = subprocess.run(
        [sys.executable, "-m", "helpers.study.reproduction", "summary", "--params", "params/smoke.yaml"],
        cwd=smoke_run, env=environment(smoke_run), capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert printed.stdout.startswith(headline) and "no verdict or rank changed" in printed.stdout


def test_a_metric_shifted_beyond_tolerance_is_reported_and_rewritten(smoke_run: Path) -> None:
    # settle first: a test before this one may have left an input changed and back (a parameter file restored),
    # and the run that notices it measures again, which would overwrite the shifted metrics below
    settled = snakemake(smoke_run)
    assert settled.returncode == 0, settled.stdout[-3000:] + settled.stderr[-6000:]
    before = _committed(smoke_run)
    path = smoke_run / "results" / "smoke" / "metrics.parquet"
    original, metadata = store.read_table(path), store.read_metadata(path)
    metadata.pop("content_sha256")
    shifted = original.copy()
    shifted.loc[shifted["model"] == "tiny-gpt2", "attention_entropy"] *= 1.01  # 100x the continuous tolerance
    store.write_table(shifted, path, metadata)
    try:
        result = snakemake(smoke_run)  # reruns only what reads the metrics: the cheap rules
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
        after = _committed(smoke_run)
        summary = _summary(smoke_run)
    finally:
        store.write_table(original, path, metadata)
        restored = snakemake(smoke_run)
    changed = {c.output: c for c in summary.changed}
    assert "complete_results" in changed and "figure heatmap_attention_entropy" in changed
    assert "complete_results_extended" in changed and "model_summary" in changed
    differences = changed["complete_results"].differences
    assert {d.column for d in differences} == {"Attention_Entropy"} and len(differences) == len(CATEGORIES)
    assert all("tiny-gpt2" in d.where for d in differences)
    rewritten = {name for name in before if before[name] != after[name]}
    assert "paper/tables/smoke/complete_results.csv" in rewritten and "figures/smoke/heatmap_attention_entropy.png" in (
        rewritten
    )
    assert "paper/tables/smoke/sample_inputs.csv" not in rewritten  # nothing of it changed
    assert restored.returncode == 0, restored.stdout[-3000:] + restored.stderr[-6000:]
    # the shift undone: the rewritten tables hold the committed numbers again, within tolerance
    context = tolerances.Context.from_metrics(original)
    folder = smoke_run / "paper" / "tables" / "smoke"
    for name in changed:
        if not name.startswith("figure") and "/" not in name:  # paper/tables' own (not data/..., the released data)
            back = pd.read_csv(folder / f"{name}.csv", keep_default_na=False, na_values=[""])
            committed_before = smoke_run.parent / f"{name}.before.csv"
            committed_before.write_bytes(before[f"paper/tables/smoke/{name}.csv"])
            assert compare_table(name, back, committed_before, context).differences == [], name


def _alive_in_group(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_killed_run_finishes_when_the_same_command_is_run_again(smoke_run: Path) -> None:
    again = ("--forcerun", "index")
    process = start_and_wait_for_a_job(smoke_run, *again)
    os.killpg(process.pid, signal.SIGKILL)  # the runner, Snakemake and the job, at once
    process.wait()
    assert any((smoke_run / ".snakemake" / "locks").iterdir()), "the killed run must leave Snakemake's lock behind"
    result = snakemake(smoke_run, *again)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    assert "Clearing the lock of an earlier run" in result.stderr


def test_killing_only_the_runner_leaves_no_run_going_unseen(smoke_run: Path) -> None:
    again = ("--forcerun", "index")
    process = start_and_wait_for_a_job(smoke_run, *again)
    process.kill()  # the runner alone: its Snakemake gets SIGTERM and finishes the running job
    process.wait()
    meanwhile = snakemake(smoke_run, *again)
    if _alive_in_group(process.pid):  # Snakemake still finishing: it holds the lock
        assert meanwhile.returncode == 1 and "another run of the workflow is in progress" in meanwhile.stderr
    deadline = time.monotonic() + 300
    while _alive_in_group(process.pid):
        assert time.monotonic() < deadline, "Snakemake outlived its runner by 5 minutes"
        time.sleep(0.2)
    result = snakemake(smoke_run, *again)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]


def test_a_parameter_file_path_with_a_space_works(smoke_run: Path) -> None:
    spaced = smoke_run / "params" / "smoke with space.yaml"
    original = smoke_run / "params" / "smoke.yaml"
    spaced.write_text(original.read_text() + "name: smoke\n")  # the run's name is the file's stem unless given
    stat = original.stat()
    os.utime(spaced, (stat.st_atime, stat.st_mtime))  # same time: with mtime as the only trigger nothing else reruns
    try:
        arguments = [
            "--profile", "profiles/default", "--config", f"params={spaced}",
            "--rerun-triggers", "mtime", "--forcerun", "index",
        ]  # fmt: skip
        result = subprocess.run(
            [sys.executable, "-m", "helpers.workflow", "run", *arguments], cwd=smoke_run,
            env=environment(smoke_run), capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        spaced.unlink()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.search(r"^index\s+1$", result.stdout + result.stderr, re.M), "the forced rule ran"
    assert not re.search(r"^collect\s+\d", result.stdout + result.stderr, re.M), "nothing else reran"
