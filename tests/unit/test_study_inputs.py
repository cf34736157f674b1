"""Parameter files, prompt files and the store: bad input gets a clear error; writes are atomic."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from helpers import study
from helpers.base import paths, store


def test_shipped_parameter_files_load(monkeypatch: pytest.MonkeyPatch) -> None:
    from helpers.core import assemble, registry

    monkeypatch.setattr(registry, "hub_reachable", lambda: True)  # the paper's hub models, as on a connected machine
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    # as after `make install-models`: `make test` installs only the test models (CI has none of the decoders)
    monkeypatch.setattr(assemble, "is_installed", lambda name: True)
    monkeypatch.setattr(registry, "is_installed", lambda name: True)  # what the parameter check asks
    for path in sorted(paths.PARAMS.glob("*.yaml")):
        params = study.load_params(path)
        assert params.name == path.stem and params.models


def test_the_papers_parameters_offline_and_uncached_fail_before_work_saying_how_to_fetch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from helpers.core import registry

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(registry, "_hub_cached", lambda name: False)  # as on a machine that never fetched it
    with pytest.raises(study.ParameterError, match=r"'bert-base-uncased'.*hf download bert-base-uncased"):
        study.load_params(paths.PARAMS / "paper.yaml")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"models": ["tiny-bert"], "modles": 1}, r"unknown key\(s\) \['modles'\]; valid keys are"),
        ({"prompts": "x.csv"}, "'models' is missing"),
        ({"models": []}, "'models' is missing or empty"),
        ({"models": "tiny-bert"}, r"'models': Input should be a valid list, got 'tiny-bert' \(str\)"),
        ({"models": ["tiny-bert"], "batch_size": "8"}, r"'batch_size': Input should be a valid integer, got '8'"),
        ({"models": ["tiny-bert"], "batch_size": 0}, "'batch_size': Input should be greater than or equal to 1"),
        ({"models": ["tiny-bert"], "dtype": "float8"}, r"'dtype'.*got 'float8'.*allowed: one of \['float32'"),
        ({"models": ["tiny-bert", "tiny-bert"]}, r"'models' has duplicates \['tiny-bert'\]"),
        ({"models": ["tiny-bert"], "prompts_per_category": True}, "'prompts_per_category'.*got True"),
        # issue 11: each of these was accepted, then failed late or silently
        ({"models": ["tiny-bert"], "device": "gpu"}, r"'device'.*got 'gpu'.*allowed: auto, cpu, mps, cuda or cuda:N"),
        ({"models": ["../nope"]}, r"'../nope' looks like a local path, but .* is no such folder"),
        ({"models": ["/no/such/model"]}, r"'/no/such/model' looks like a local path, but .* is no such folder"),
        ({"models": ["nonsense"]}, r"unknown model 'nonsense'. Known names: .*owner/name"),
        ({"models": ["tiny-bert"], "categories": []}, "'categories': List should have at least 1 item"),
        ({"models": ["tiny-bert"], "seed": -1}, "'seed': Input should be greater than or equal to 0"),
        ({"models": ["tiny-bert"], "name": "."}, r"'name'.*got '\.'.*one path component"),
        ({"models": ["tiny-bert"], "name": ".."}, r"'name'.*got '\.\.'"),
        ({"models": ["tiny-bert"], "name": "a/b"}, r"'name'.*got 'a/b'"),
        ({"models": ["tiny-bert"], "categories": ["poetry"]}, r"\['poetry'\] are not among.*custom_categories: true"),
        ({"models": ["tiny-bert"], "max_length": 1}, "'max_length': Input should be greater than or equal to 2"),
        ({"models": ["tiny-bert"], "bootstrap_samples": 50}, "'bootstrap_samples'.*at least 1000"),
        ({"models": ["tiny-bert"], "prompts": "no/such.csv"}, r"prompt file .*no/such.csv does not exist"),
    ],
)
def test_bad_parameters_name_the_problem(raw: dict, message: str) -> None:
    with pytest.raises(study.ParameterError, match=message):
        study.parse_params(raw)


def test_bad_model_paths_fail_before_any_model_work(monkeypatch: pytest.MonkeyPatch) -> None:
    from helpers.core import registry

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("a bad path must fail before asking the hub")

    monkeypatch.setattr(registry, "hub_reachable", forbidden)
    for name in ("../nope", "/no/such/model", "./missing-folder"):
        with pytest.raises(study.ParameterError, match="is no such folder"):
            study.parse_params({"models": [name]})


def test_two_models_with_one_file_key_are_named(tmp_path: Path) -> None:
    for name in ("bert v1", "bert--v1"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
    models = [str(tmp_path / "bert v1"), str(tmp_path / "bert--v1")]
    with pytest.raises(study.ParameterError, match=r"models '.*bert v1' and '.*bert--v1' would share"):
        study.parse_params({"models": models})


def test_own_categories_are_allowed_when_declared() -> None:
    params = study.parse_params(
        {"models": ["tiny-bert"], "categories": ["poetry", "recipes"], "custom_categories": True}
    )
    assert params.categories == ["poetry", "recipes"]


def test_max_length_must_leave_room_for_text() -> None:
    from helpers.core import models, streaming

    tokenizer = models.tiny_tokenizer()  # [CLS] ... [SEP]: two special tokens
    with pytest.raises(study.ParameterError, match=r"max_length=2 leaves no room.*at least 3"):
        streaming.check_max_length(tokenizer, 2, "tiny-bert")
    streaming.check_max_length(tokenizer, 3, "tiny-bert")


def test_importing_the_light_modules_does_not_import_torch() -> None:
    code = (  # what the Snakefile imports, and every layer's package
        "import sys, helpers.base.store, helpers.study, helpers.study.outputs, helpers.workflow, helpers.core, "
        "helpers.stats, helpers.report; "
        "helpers.study.load_params('params/smoke.yaml'); print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=paths.ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "prompts.csv"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("prompt_id,text\na,hello\n", r"lacks column\(s\) \['category'\]"),
        (
            "prompt_id,category,text\na,language_tasks,hi\na,language_tasks,ho\n",
            r"duplicate prompt_id.*line 2 \('a'\), line 3",
        ),
        ('prompt_id,category,text\na,language_tasks,"  "\n', r"empty text, or only whitespace.*on line 2 \('a'\)"),
        ("prompt_id,category,text\na,poetry,hi\n", r"unknown categor.*poetry.*line 2.*allowed: \['factual_questions'"),
        ("", "is empty; expected a header"),
        ("prompt_id,category,text\n", "has a header but no prompts"),
        ("prompt_id,category,text\na,language_tasks,hi\n,language_tasks,ho\n", r"empty prompt_id on line 3"),
        # issue 11: an unquoted comma in the first data row gave a TypeError with no file or line
        ("prompt_id,category,text\na,language_tasks,hello, world\n", r"prompts.csv, line 2: 4 fields where the header"),
        ('prompt_id,category,text\na,language_tasks,"two\nlines"\nb,language_tasks,x,y\n', r"line 4: 4 fields"),
    ],
)
def test_bad_prompt_files_name_the_problem(tmp_path: Path, content: str, message: str) -> None:
    with pytest.raises(study.PromptFileError, match=message):
        study.load_prompts(_write(tmp_path, content))


def test_missing_prompt_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(study.PromptFileError, match="does not exist"):
        study.load_prompts(tmp_path / "nope.csv")
    with pytest.raises(study.PromptFileError, match="is a folder, not a file"):
        study.load_prompts(tmp_path)


def test_binary_prompt_and_parameter_files_are_named(tmp_path: Path) -> None:
    binary = tmp_path / "prompts.csv"
    binary.write_bytes(b"prompt_id,category,text\n\xff\xfe,language_tasks,\x80\n")
    with pytest.raises(study.PromptFileError, match=re.escape(f"{binary} is not UTF-8 text")):
        study.load_prompts(binary)
    params = tmp_path / "params.yaml"
    params.write_bytes(b"models: [\xff]\n")
    with pytest.raises(study.ParameterError, match=re.escape(f"parameter file {params} could not be read")):
        study.load_params(params)
    params.write_text("models: [tiny-bert\n")
    with pytest.raises(study.ParameterError, match="not valid YAML"):
        study.load_params(params)


def test_shipped_prompt_set_has_every_category_and_a_length_spread() -> None:
    prompts = study.load_prompts(paths.PROMPTS / "cognitive_tasks.csv")
    counts = prompts["category"].value_counts()
    assert set(counts.index) == set(study.CATEGORIES) and counts.min() >= 40
    words = prompts["text"].str.split().str.len()
    spread = words.groupby(prompts["category"]).agg(["min", "max", "mean"])
    assert (spread["max"] >= 3 * spread["min"]).all()
    assert spread["mean"].max() / spread["mean"].min() < 1.15  # length is not confounded with category


def test_subsets_span_each_category_from_first_to_last() -> None:
    subset = study.load_prompts(paths.PROMPTS / "cognitive_tasks.csv", per_category=2)
    assert len(subset) == 2 * len(study.CATEGORIES)
    assert set(subset["prompt_id"].str[-2:]) == {"01", "45"}  # the shortest and the longest of each category


def test_store_roundtrip_keeps_provenance_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    table = pd.DataFrame({"a": [1, 2], "b": ["x", "y"], "tokens": [["[CLS]", "hi"], ["yo"]]})
    path = store.write_table(table, tmp_path / "sub" / "t.parquet", {"model": {"name": "m"}, "n": 2})
    pd.testing.assert_frame_equal(store.read_table(path), table)
    metadata = store.read_metadata(path)
    assert metadata.pop("content_sha256") == store.content_sha256(table)
    assert metadata == {"model": {"name": "m"}, "n": 2}
    assert [p.name for p in path.parent.iterdir()] == ["t.parquet"]


def test_a_stored_table_is_verified_when_read(tmp_path: Path) -> None:
    path = store.write_table(pd.DataFrame({"a": [1.0, 2.0]}), tmp_path / "t.parquet")
    other = store.write_table(pd.DataFrame({"a": [1.0, 3.0]}), tmp_path / "u.parquet")
    altered = pq.read_table(other).replace_schema_metadata(pq.read_schema(path).metadata)  # right hash, wrong data
    pq.write_table(altered, tmp_path / "altered.parquet")
    with pytest.raises(store.StoredTableError, match="does not match the content hash"):
        store.read_table(tmp_path / "altered.parquet")
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(path.read_bytes()[:200])
    with pytest.raises(store.StoredTableError, match="truncated.parquet is unreadable"):
        store.read_table(truncated)


def test_outputs_honour_the_umask_and_figures_are_written_atomically(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    from helpers.report import figures

    previous = os.umask(0o022)
    try:
        written = [
            store.write_text("x", tmp_path / "a.md"),
            store.write_table(pd.DataFrame({"a": [1]}), tmp_path / "t"),
        ]
        figure = plt.figure()
        written += figures.save_figure(figure, "f", "test", tmp_path)
        plt.close(figure)
    finally:
        os.umask(previous)
    assert {oct(p.stat().st_mode & 0o777) for p in written} == {"0o644"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.md", "f.png", "f.svg", "t"]


def test_round_significant_is_stable_under_tiny_noise() -> None:
    values = np.array([0.123456789, 71.47512, -0.000322118, 1.0e-9, 0.0, np.nan])
    rounded = store.round_significant(values)
    assert rounded[:5].tolist() == [0.1235, 71.48, -0.0003221, 1e-9, 0.0] and np.isnan(rounded[5])
    assert (store.round_significant(values * (1 + 1e-9))[:5] == rounded[:5]).all()


def test_model_keys_are_file_name_safe() -> None:
    assert study.model_key("Qwen/Qwen1.5-0.5B") == "Qwen--Qwen1.5-0.5B"


def test_two_live_runs_exclude_each_other_with_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import fcntl

    from helpers import workflow

    monkeypatch.setattr(workflow, "LOCK", tmp_path / "compendium.lock")
    # pid 12345 is not alive here, so the run waits out LOCK_WAIT_SECONDS (15 s) before it gives up: shortened
    monkeypatch.setattr(workflow, "LOCK_WAIT_SECONDS", 0.3)
    with open(workflow.LOCK, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a live run holds it
        held.write("12345")
        held.flush()
        assert workflow.main(["run", "--dry-run"]) == 1
    error = capsys.readouterr().err
    assert "another run of the workflow is in progress" in error and "pid 12345" in error
