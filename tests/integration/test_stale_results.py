"""Issue 22, cases 1, 2, 14 and 15: the workflow decides on content, one spelling of the parameter file, and a
failed run's front page. On the shared smoke run (tests/conftest.py), each test leaving it as it found it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import yaml

from helpers import study
from helpers.base import paths, store
from helpers.core import models
from helpers.study import collection
from tests.support import environment, planned_jobs, snakemake

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


def _run(root: Path, params: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The workflow in ``root`` with the parameter file ``params`` spelt as given."""
    command = [sys.executable, "-m", "helpers.workflow", "run", "--profile", "profiles/default"]
    return subprocess.run(
        [*command, *args, "--config", f"params={params}"],  # --config takes every value after it
        cwd=root,
        env=environment(root),
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_14_the_parameter_file_by_any_spelling_is_one_run(smoke_run: Path) -> None:
    for spelling in (str(smoke_run / "params" / "smoke.yaml"), "./params/smoke.yaml"):
        result = _run(smoke_run, spelling, "--dry-run")
        assert result.returncode == 0, result.stderr[-3000:]
        assert "Nothing to be done" in result.stdout + result.stderr, spelling


def test_2_an_edit_with_an_older_timestamp_reruns_and_a_touch_does_not(smoke_run: Path) -> None:
    prompts = smoke_run / "data" / "prompts" / "cognitive_tasks.csv"
    original, times = prompts.read_bytes(), (prompts.stat().st_atime, prompts.stat().st_mtime)
    try:
        os.utime(prompts)  # touched, unchanged
        assert planned_jobs(smoke_run) == {}
        prompts.write_bytes(original.replace(b"?", b"!", 1))
        os.utime(prompts, (times[0] - 86400, times[1] - 86400))  # edited, a day older (cp -p, tar x, rsync -a)
        assert set(planned_jobs(smoke_run)) - {"all", "index"} == COLLECT_ONWARDS
    finally:
        prompts.write_bytes(original)
        os.utime(prompts, times)
    assert planned_jobs(smoke_run) == {}  # the change undone: nothing to do


def _tiny_folder(folder: Path, seed: int) -> None:
    """tiny-bert with seed ``seed``'s weights, saved with its tokenizer (same file names and sizes for any seed)."""
    loaded = models.load_model("tiny-bert", seed=seed)
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)


def test_1_replaced_weights_of_a_local_model_are_noticed(tmp_path: Path) -> None:
    """The same file name, size and modification time, other weights: collection measures again."""
    folder = tmp_path / "model"
    _tiny_folder(folder, 0)
    name = f"test-folder-{uuid.uuid4().hex[:8]}"
    params = study.parse_params({"name": name, "models": [str(folder)], "prompts_per_category": 1})
    weights = folder / "model.safetensors"
    try:
        first = store.read_table(collection.collect_model(params, str(folder), progress=False)["prompts"])
        stat = weights.stat()
        _tiny_folder(tmp_path / "other", 1)
        shutil.copyfile(tmp_path / "other" / "model.safetensors", weights)
        os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert weights.stat().st_size == stat.st_size
        models._LOADED.clear()  # a new session: nothing loaded yet
        written = collection.collect_model(params, str(folder), progress=False)
        assert store.read_metadata(written["prompts"])["chunks_measured_now"] == len(study.CATEGORIES)
        assert (store.read_table(written["prompts"])["max_sparsity"] != first["max_sparsity"]).any() or (
            store.read_table(written["prompts"])["final_activation"] != first["final_activation"]
        ).any()
    finally:
        shutil.rmtree(paths.RESULTS / name, ignore_errors=True)
        models._LOADED.clear()


def test_1_a_local_model_folder_is_an_input_of_its_collection_by_content(smoke_run: Path, tmp_path: Path) -> None:
    """Its files' hashes name the collect job's input (a dry run shows it): replaced weights are another input."""
    folder = tmp_path / "model"
    _tiny_folder(folder, 0)
    params = tmp_path / "folder.yaml"
    raw = {"models": [str(folder)], "categories": ["creative_writing"], "prompts_per_category": 2}
    params.write_text(yaml.safe_dump(raw))
    pattern = re.compile(r"(tmp_\S*_model\.[0-9a-f]{20}\.sha256)")
    target = str(smoke_run / "results" / "folder" / "activations" / f"{study.model_key(str(folder))}.parquet")

    def folder_input() -> str:
        result = _run(smoke_run, str(params), target, "--dry-run")
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        found = pattern.findall(result.stdout + result.stderr)
        assert found, "the model folder is no input of its collection"
        return found[0]

    try:
        before = folder_input()
        assert folder_input() == before  # unchanged: the same input
        weights = folder / "model.safetensors"
        stat = weights.stat()
        _tiny_folder(tmp_path / "other", 1)
        shutil.copyfile(tmp_path / "other" / "model.safetensors", weights)
        os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns - 10**12))  # replaced, with an older timestamp
        assert folder_input() != before
    finally:
        shutil.rmtree(smoke_run / "build" / "folder", ignore_errors=True)


def test_15_a_failed_run_says_so_on_its_front_page(smoke_run: Path, tmp_path: Path) -> None:
    table = smoke_run / "results" / "smoke" / "tables" / "model_summary.parquet"
    index = smoke_run / "reports" / "smoke" / "index.html"
    made = [p for p in smoke_run.glob("*/**/smoke/*") if p.is_file() and _made_by_export(p)]
    backup = tmp_path / "backup"
    for path in [table, *made]:  # the failed job's outputs, put back afterwards (saves running it again)
        (backup / path.relative_to(smoke_run)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, backup / path.relative_to(smoke_run))
    try:
        stat = table.stat()
        table.write_bytes(b"not a parquet file")
        os.utime(table, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        failed = snakemake(smoke_run, "--forcerun", "export_tables")
        assert failed.returncode != 0
        assert "Run smoke failed" in index.read_text()
    finally:
        for path in backup.rglob("*"):
            if path.is_file():
                shutil.copy2(path, smoke_run / path.relative_to(backup))
    result = snakemake(smoke_run)  # remakes the front page (dated 1970, so older than its inputs)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Run smoke failed" not in index.read_text() and "scorecard" in index.read_text().lower()
    assert planned_jobs(smoke_run) == {}


def _made_by_export(path: Path) -> bool:
    """Whether notebook 05 made ``path`` (its tables of STUDY_TABLES, its report)."""
    from helpers.study.outputs import STUDY_TABLES

    return path.name == "05_export_tables.html" or (
        path.parent.parent.name == "tables" and path.stem in STUDY_TABLES and path.suffix in (".csv", ".md", ".tex")
    )
