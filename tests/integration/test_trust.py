"""Issue 35, a reproduction check that can be trusted: each case it found, as a regression test.

1. measurement code outside the chunk key; 2. only each table's CSV compared (a verdict edited in a Markdown table, a
number in a LaTeX table); 3. a figure's content never checked (two heatmaps swapped); 4. the summary describing the
last check instead of the files (a table edited after the run, with nothing else to do); 6. a category with one
prompt found only by the last notebook; 7. another model's result file copied over a model's; 8. a run killed with
SIGKILL leaving the earlier front page looking current; 9. the Slurm test's chunk bookkeeping (the one naming of
chunk files, ``collection.chunk_files``). Most run on the shared smoke run (tests/conftest.py), each leaving it as
it found it.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pandas as pd
import pytest
import yaml

from helpers import study
from helpers.base import code, paths, store
from helpers.base.checks import ParameterError
from helpers.study import collection
from tests.support import environment, planned_jobs, snakemake, start_and_wait_for_a_job

MEASUREMENT_FILES = (
    "helpers/core/kernels/__init__.py",
    "helpers/core/kernels/entropy_attention.cpp",
    "helpers/core/registry.py",
    "helpers/core/onnx_bert.py",
    "helpers/core/assemble.py",
    "helpers/core/models.py",
    "helpers/core/metrics.py",
    "helpers/core/streaming.py",
    "helpers/study/collection.py",
    "helpers/study/__init__.py",
    "helpers/base/store.py",
)
"""Every file a collection runs (the case of the issue: the kernel, the registry and a converter were outside)."""
OTHER_FILES = ("helpers/report/figures.py", "helpers/stats/findings/rules.py", "helpers/study/tables.py")
"""Files a collection does not run."""


def code_edit(path: Path) -> None:
    """A change of what ``path``'s code does (a new definition), in its own language."""
    line = "static const int edited_by_a_test = 1;" if path.suffix == ".cpp" else "EDITED_BY_A_TEST = 1"
    path.write_text(path.read_text(encoding="utf-8") + f"\n{line}\n", encoding="utf-8")


# --- 1: everything that computes a stored number is in its key -----------------------------------------------------


@pytest.fixture
def copied_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of helpers/ that the code closure reads (``paths.ROOT`` pointed at it); the code that runs is this
    session's, so an edit there changes only the key."""
    root = tmp_path / "repo"
    shutil.copytree(paths.ROOT / "helpers", root / "helpers", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(paths, "ROOT", root)
    return root


def test_1_editing_any_file_a_collection_runs_re_measures_its_chunks_and_no_other_edit_does(
    copied_code: Path,
) -> None:
    name = f"test-key-{uuid.uuid4().hex[:8]}"
    prompts = paths.PROMPTS / "cognitive_tasks.csv"
    raw = {"name": name, "models": ["tiny-bert"], "prompts": str(prompts), "batch_size": 4}
    params = study.parse_params(
        {**raw, "categories": ["factual_questions", "creative_writing"], "prompts_per_category": 2}
    )

    def measured() -> int:
        written = collection.collect_model(params, "tiny-bert", progress=False)
        return store.read_metadata(written["prompts"])["chunks_measured_now"]

    try:
        assert measured() == 2 and measured() == 0  # two chunks, then both reused
        for relative in MEASUREMENT_FILES:
            path = copied_code / relative
            original = path.read_bytes()
            code_edit(path)
            assert measured() == 2, f"{relative} edited: every chunk must be measured again"
            path.write_bytes(original)
        assert measured() == 0  # the code as it was: its chunks are still there
        for relative in OTHER_FILES:
            code_edit(copied_code / relative)
            assert measured() == 0, f"{relative} runs in no collection: no chunk measured again"
        streaming = copied_code / "helpers/core/streaming.py"
        text = streaming.read_text()
        first_docstring = re.search(r'"""(.*?)"""', text, re.S).group(1)
        streaming.write_text(text.replace(first_docstring, "Another docstring.", 1) + "\n# a comment\n")
        assert measured() == 0, "comments and docstrings compute nothing"
    finally:
        shutil.rmtree(paths.RESULTS / name, ignore_errors=True)


def test_1_every_non_python_file_under_helpers_is_declared_by_a_module() -> None:
    """A C++ (or any other) source that no module declares in CODE_FILES would be outside every key."""
    every = {p for p in (paths.ROOT / "helpers").rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")}
    modules = [
        ".".join(p.relative_to(paths.ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in (paths.ROOT / "helpers").rglob("*.py")
    ]
    declared = {path for module in modules for path in code.declared_files(module)}
    assert every - declared == set()
    assert paths.ROOT / "helpers/core/kernels/entropy_attention.cpp" in code.code_files(["helpers.study.collection"])


def test_9_a_chunks_files_are_named_in_one_place_and_read_back_from_their_names(tmp_path: Path) -> None:
    """The cluster test took the layer file's name by string replacement, which broke on ``_vectors`` files."""
    for key in ("0f3a", "1b2c"):
        for path in collection.chunk_files(tmp_path, key).values():
            path.write_bytes(b"x")
    half = collection.chunk_files(tmp_path, "9d9d")
    half["layers"].write_bytes(b"x")  # killed before its prompt file, written last
    half["vectors"].write_bytes(b"x")
    half["random_vectors"].write_bytes(b"x")
    (tmp_path / ".0f3a.parquet.abc.tmp").write_bytes(b"half")
    assert collection.complete_chunks(tmp_path) == ["0f3a", "1b2c"]
    assert collection.chunk_of(half["vectors"]) == ("9d9d", "vectors") and collection.chunk_of(half["layers"]) == (
        "9d9d",
        "layers",
    )
    assert collection.chunk_of(half["random_vectors"]) == ("9d9d", "random_vectors")
    assert collection.chunk_of(tmp_path / ".0f3a.parquet.abc.tmp") is None
    assert list(collection.CHUNK_PARTS)[-1] == "prompts"  # written last: its presence marks a complete chunk


def test_1_editing_the_kernel_source_or_the_registry_reruns_collection(smoke_run: Path) -> None:
    for relative in ("helpers/core/kernels/entropy_attention.cpp", "helpers/core/registry.py"):
        path = smoke_run / relative
        stat, original = path.stat(), path.read_bytes()
        code_edit(path)
        try:
            planned = planned_jobs(smoke_run)
        finally:
            path.write_bytes(original)
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert "collect" in planned, relative
    assert planned_jobs(smoke_run) == {}


# --- 2, 3, 4: every committed output checked for what it is, every time ---------------------------------------------


def _summary(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "helpers.study.reproduction", "summary", "--params", "params/smoke.yaml"],
        cwd=root,
        env=environment(root),
        capture_output=True,
        text=True,
    )


@pytest.fixture(scope="module")
def edited_after_the_run(smoke_run: Path) -> dict[str, object]:
    """The smoke run's committed outputs edited by hand after the run (a CSV number x6, a Markdown verdict, a LaTeX
    number +80%, two heatmaps swapped), then what a check says before rerunning, and ``make reproduce``'s two steps."""
    settled = snakemake(smoke_run)
    assert settled.returncode == 0, settled.stdout[-3000:] + settled.stderr[-3000:]
    tables, figures = smoke_run / "paper" / "tables" / "smoke", smoke_run / "figures" / "smoke"
    watched = [
        tables / "complete_results.csv",
        tables / "findings_scorecard.md",
        tables / "category_performance.tex",
        figures / "heatmap_attention_entropy.png",
        figures / "heatmap_max_sparsity.png",
    ]
    before = {path: path.read_bytes() for path in watched}
    rows = list(csv.reader(open(watched[0], newline="")))
    column = rows[0].index("Attention_Entropy")
    rows[1][column] = f"{float(rows[1][column]) * 6:.4g}"
    with open(watched[0], "w", newline="") as stream:
        csv.writer(stream, lineterminator="\n").writerows(rows)
    watched[1].write_text(watched[1].read_text().replace("not testable here", "holds", 1))
    latex = watched[2].read_text()
    number = re.search(r"\b\d+\.\d+\b", latex).group(0)
    watched[2].write_text(latex.replace(number, f"{float(number) * 1.8:.4g}", 1))
    watched[3].write_bytes(before[watched[4]])
    watched[4].write_bytes(before[watched[3]])
    verify_before = subprocess.run(
        [sys.executable, "-m", "helpers.study.reproduction", "verify", "--params", "params/smoke.yaml"],
        cwd=smoke_run,
        env=environment(smoke_run),
        capture_output=True,
        text=True,
    )
    planned = planned_jobs(smoke_run)
    run = snakemake(smoke_run)
    return {
        "before": before,
        "verify_before": verify_before,
        "planned": planned,
        "run": run,
        "summary": _summary(smoke_run),
        "after": {path: path.read_bytes() for path in watched},
        "watched": watched,
    }


def test_4_an_output_edited_after_the_run_is_found_though_nothing_else_changed(
    edited_after_the_run: dict[str, object],
) -> None:
    verify_before = edited_after_the_run["verify_before"]
    assert verify_before.returncode == 1 and "complete_results.csv" in verify_before.stdout
    planned = edited_after_the_run["planned"]
    assert {"plot", "export_tables", "robustness"} <= set(planned) and "collect" not in planned  # not "Nothing"
    run = edited_after_the_run["run"]
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]
    assert "Changed since the run that wrote them, so 05_export_tables runs again" in run.stderr
    summary = edited_after_the_run["summary"]
    assert summary.returncode == 0, summary.stdout
    assert "complete_results: edited after the run that wrote it: complete_results.csv" in summary.stdout
    assert re.search(r"row 1 tiny-bert .*Attention_Entropy \(continuous\): [\d.]+ -> [\d.]+", summary.stdout)
    before, after, watched = (edited_after_the_run[key] for key in ("before", "after", "watched"))
    assert after[watched[0]] == before[watched[0]]  # rewritten: the run's numbers, as committed before the edit


def test_2_a_verdict_edited_in_markdown_and_a_number_in_latex_are_named_and_rewritten(
    edited_after_the_run: dict[str, object],
) -> None:
    summary = edited_after_the_run["summary"].stdout
    assert "findings_scorecard: edited after the run that wrote it: findings_scorecard.md" in summary
    assert "category_performance: edited after the run that wrote it: category_performance.tex" in summary
    before, after, watched = (edited_after_the_run[key] for key in ("before", "after", "watched"))
    assert after[watched[1]] == before[watched[1]] and after[watched[2]] == before[watched[2]]


def test_3_two_swapped_figures_are_named_and_drawn_again(edited_after_the_run: dict[str, object]) -> None:
    summary = edited_after_the_run["summary"].stdout
    for name in ("heatmap_attention_entropy", "heatmap_max_sparsity"):
        assert f"figure {name}: edited after the run that wrote it: drawn again" in summary
    before, after, watched = (edited_after_the_run[key] for key in ("before", "after", "watched"))
    assert after[watched[3]] == before[watched[3]] and after[watched[4]] == before[watched[4]]  # each its own again


def test_4_a_hand_edit_made_after_the_last_run_is_not_verified_by_the_summary(smoke_run: Path) -> None:
    table = smoke_run / "paper" / "tables" / "smoke" / "model_summary.md"
    original, stat = table.read_bytes(), table.stat()
    table.write_text(table.read_text().replace("tiny", "TINY", 1))
    try:
        summary = _summary(smoke_run)
    finally:
        table.write_bytes(original)
        os.utime(table, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert summary.returncode == 1 and summary.stdout.startswith("NOT VERIFIED")
    assert "NOT VERIFIED paper/tables/smoke/model_summary.md (model_summary)" in summary.stdout
    assert _summary(smoke_run).returncode == 0


# --- 6: every check that the parameters and prompts allow, before any model work -------------------------------------


def test_6_a_category_with_one_prompt_is_refused_before_any_model_work_naming_it(
    tmp_path: Path, smoke_run: Path
) -> None:
    table = pd.read_csv(paths.PROMPTS / "cognitive_tasks.csv").groupby("category").head(3)
    table = table.drop(table.index[table["category"] == "logical_puzzles"][1:])  # one prompt left
    table.to_csv(smoke_run / "one-puzzle.csv", index=False)
    params = smoke_run / "params" / "one-puzzle.yaml"
    raw = {"models": ["tiny-bert", "tiny-gpt2"], "prompts": str(smoke_run / "one-puzzle.csv")}
    params.write_text(yaml.safe_dump(raw))
    try:
        with pytest.raises(ParameterError, match=r"at least 2 prompts.*'logical_puzzles' has 1"):
            study.load_params(params)
        result = subprocess.run(
            [sys.executable, "-m", "helpers.workflow", "run", "--profile", "profiles/default", "--config",
             f"params={params}"],
            cwd=smoke_run, env=environment(smoke_run), capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        params.unlink()
        (smoke_run / "one-puzzle.csv").unlink()
        shutil.rmtree(smoke_run / "build" / "one-puzzle", ignore_errors=True)
    assert result.returncode != 0 and "'logical_puzzles' has 1" in result.stdout + result.stderr
    assert not (smoke_run / "results" / "one-puzzle").exists(), "refused before any model work"
    with pytest.raises(ParameterError, match=r"prompts_per_category: 1 'factual_questions' has 1"):
        study.load_params(_yaml(tmp_path, {"models": ["tiny-bert"], "prompts_per_category": 1}))


def _yaml(folder: Path, raw: dict[str, object]) -> Path:
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


# --- 7: a result file knows whose it is ------------------------------------------------------------------------------


def test_7_another_models_result_copied_over_a_models_is_refused_naming_both(smoke_run: Path, tmp_path: Path) -> None:
    activations = smoke_run / "results" / "smoke" / "activations"
    target = activations / "tiny-gpt2.parquet"
    saved = tmp_path / "tiny-gpt2.parquet"
    shutil.copy2(target, saved)
    # what the failing job removes, put back afterwards with its times (saves running everything after it again)
    removed = [
        smoke_run / "results" / "smoke" / "metrics.parquet",
        smoke_run / "reports" / "smoke" / "02_compute_metrics.html",
    ]
    for path in removed:
        shutil.copy2(path, tmp_path / path.name)
    committed = {p: p.read_bytes() for p in (smoke_run / "paper" / "tables" / "smoke").glob("*.csv")}
    shutil.copy(activations / "tiny-bert.parquet", target)  # valid, intact, another model's
    try:
        params = study.load_params(smoke_run / "params" / "smoke.yaml")
        with pytest.raises(store.NotMadeForError, match=r"made for model 'tiny-bert'.*read for model 'tiny-gpt2'"):
            study.read_result(target, params, "tiny-gpt2")
        failed = snakemake(smoke_run)
        assert failed.returncode != 0
        log = (smoke_run / "build" / "smoke" / "02_compute_metrics.ipynb").read_text()
        assert "made for model 'tiny-bert'" in log and "read for model 'tiny-gpt2'" in log
        assert {p: p.read_bytes() for p in committed} == committed, "no table written from the wrong file"
    finally:
        shutil.copy2(saved, target)
        for path in removed:
            shutil.copy2(tmp_path / path.name, path)
    result = snakemake(smoke_run)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


# --- 8: a run marks its front page while it goes ----------------------------------------------------------------------


def test_8_a_run_killed_with_sigkill_leaves_a_front_page_that_says_so(smoke_run: Path) -> None:
    index = smoke_run / "reports" / "smoke" / "index.html"
    assert 'id="run-status"' not in index.read_text()
    process = start_and_wait_for_a_job(smoke_run, "--forcerun", "export_tables")
    os.killpg(process.pid, signal.SIGKILL)  # the runner, Snakemake and the job, at once
    process.wait()
    page = index.read_text()
    assert re.search(r'<body[^>]*>\s*<div id="run-status"', page), "the notice is the first thing on the page"
    assert "Run smoke in progress" in page and "has not finished" in page
    assert "index" in planned_jobs(smoke_run)  # the marked page is remade by the next run
    result = snakemake(smoke_run)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    assert 'id="run-status"' not in index.read_text() and planned_jobs(smoke_run) == {}
