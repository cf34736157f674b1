"""Issue 35, cases 6 and 7 without a model: a run's prompt set is checked against every notebook's needs when its
parameter file is read, and a stored result records whose it is."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from helpers import study
from helpers.base import paths, store
from helpers.base.checks import ParameterError


def _params(folder: Path, raw: dict[str, object]) -> Path:
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_category_with_fewer_than_two_prompts_is_refused_naming_it(tmp_path: Path) -> None:
    rows = [("a1", "creative_writing", "A poem."), ("a2", "creative_writing", "A song."), ("b1", "technical_code", "x")]
    pd.DataFrame(rows, columns=["prompt_id", "category", "text"]).to_csv(tmp_path / "p.csv", index=False)
    raw = {"models": ["tiny-bert"], "prompts": str(tmp_path / "p.csv"), "categories": ["creative_writing"]}
    assert len(study.load_params(_params(tmp_path, raw)).categories) == 1  # its own category: two prompts
    raw["categories"] = ["creative_writing", "technical_code"]
    with pytest.raises(ParameterError, match=r"'technical_code' has 1;"):
        study.load_params(_params(tmp_path, raw))
    raw["categories"] = ["creative_writing", "logical_puzzles"]  # a category the file lacks
    with pytest.raises(ParameterError, match=r"'logical_puzzles' has 0;"):
        study.load_params(_params(tmp_path, raw))
    with pytest.raises(ParameterError, match=r"with prompts_per_category: 1 'factual_questions' has 1"):
        study.load_params(_params(tmp_path, {"models": ["tiny-bert"], "prompts_per_category": 1}))


def test_a_result_read_for_another_model_run_or_configuration_is_an_error_naming_both(tmp_path: Path) -> None:
    params = study.load_params(paths.PARAMS / "smoke.yaml")
    path = tmp_path / "tiny-gpt2.parquet"
    store.write_table(pd.DataFrame({"x": [1.0]}), path, {store.MADE_FOR: study.made_for(params, "tiny-bert")})
    assert study.read_result(path, params, "tiny-bert")["x"].tolist() == [1.0]
    with pytest.raises(store.NotMadeForError, match=r"made for model 'tiny-bert', but is read for model 'tiny-gpt2':"):
        study.read_result(path, params, "tiny-gpt2")
    other = params.model_copy(update={"batch_size": 2})  # other parameters: another configuration's result
    with pytest.raises(store.NotMadeForError, match=r"parameters \{batch_size: 8\}, but is read for .*: 2\}"):
        study.read_result(path, other, "tiny-bert")
    store.write_table(pd.DataFrame({"x": [1.0]}), path, {})
    with pytest.raises(store.NotMadeForError, match=r"does not record what it was made for"):
        study.read_result(path, params, "tiny-bert")
