"""Parameter files, prompt files and the store: bad input gets a clear error; writes are atomic."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from helpers import paths, store, study


def test_shipped_parameter_files_load() -> None:
    for path in sorted(paths.PARAMS.glob("*.yaml")):
        params = study.load_params(path)
        assert params.name == path.stem and params.models


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"models": ["tiny-bert"], "modles": 1}, r"unknown key\(s\) \['modles'\]; valid keys are"),
        ({"prompts": "x.csv"}, "'models' is missing"),
        ({"models": []}, "'models' is missing or empty"),
        ({"models": "tiny-bert"}, "'models' must be list"),
        ({"models": ["tiny-bert"], "batch_size": "8"}, "'batch_size' must be int"),
        ({"models": ["tiny-bert"], "batch_size": 0}, "positive integer"),
        ({"models": ["tiny-bert"], "dtype": "float8"}, "not one of"),
        ({"models": ["tiny-bert", "tiny-bert"]}, "duplicates"),
        ({"models": ["tiny-bert"], "prompts_per_category": True}, "must be int or null"),
    ],
)
def test_bad_parameters_name_the_problem(raw: dict, message: str) -> None:
    with pytest.raises(study.ParameterError, match=message):
        study.parse_params(raw)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "prompts.csv"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("prompt_id,text\na,hello\n", r"lacks column\(s\) \['category'\]"),
        ("prompt_id,category,text\na,language_tasks,hi\na,language_tasks,ho\n", r"duplicate prompt_id\(s\) \['a'\]"),
        ('prompt_id,category,text\na,language_tasks,"  "\n', "empty or whitespace-only text for prompt_id"),
        ("prompt_id,category,text\na,poetry,hi\n", r"unknown categor.*poetry.*allowed: \['factual_questions'"),
        ("", "could not be read as a UTF-8 CSV"),
        ("prompt_id,category,text\n", "has a header but no prompts"),
        ("prompt_id,category,text\na,language_tasks,hi\n,language_tasks,ho\n", r"empty prompt_id on line\(s\) \[3\]"),
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
    with pytest.raises(study.PromptFileError, match=re.escape(f"{binary} could not be read as a UTF-8 CSV")):
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
    assert set(counts.index) == set(study.CATEGORIES) and counts.min() >= 24
    words = prompts["text"].str.split().str.len()
    spread = words.groupby(prompts["category"]).agg(["min", "max", "mean"])
    assert (spread["max"] >= 3 * spread["min"]).all()
    assert spread["mean"].max() / spread["mean"].min() < 1.15  # length is not confounded with category


def test_subsets_span_each_category_from_first_to_last() -> None:
    subset = study.load_prompts(paths.PROMPTS / "cognitive_tasks.csv", per_category=2)
    assert len(subset) == 2 * len(study.CATEGORIES)
    assert set(subset["prompt_id"].str[-2:]) == {"01", "45"}  # the shortest and the longest of each category


def test_store_roundtrip_keeps_provenance_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    table = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    path = store.write_table(table, tmp_path / "sub" / "t.parquet", {"model": {"name": "m"}, "n": 2})
    pd.testing.assert_frame_equal(store.read_table(path), table)
    assert store.read_metadata(path) == {"model": {"name": "m"}, "n": 2}
    assert [p.name for p in path.parent.iterdir()] == ["t.parquet"]


def test_model_keys_are_file_name_safe() -> None:
    assert study.model_key("Qwen/Qwen1.5-0.5B") == "Qwen--Qwen1.5-0.5B"
