"""The prompt set gives every category the same token-count range, without gaps, on the embedded tokenizers."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import study
from helpers.base import paths
from helpers.core import models

MAX_GAP_TOKENS = 8
MIN_PER_QUARTER = 3  # enough to anchor each category's length spline in every quarter


@pytest.fixture(scope="module")
def prompts():
    return study.load_prompts(paths.PROMPTS / "cognitive_tasks.csv")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(models.EMBEDDED))
def test_every_category_covers_the_shared_token_range_without_gaps(prompts, name: str) -> None:
    tokenizer = models.load_model(name).tokenizer
    counts = prompts.assign(tokens=[len(ids) for ids in tokenizer(prompts["text"].tolist())["input_ids"]])
    ranges = counts.groupby("category")["tokens"].agg(["min", "max"])
    low, high = ranges["min"].max(), ranges["max"].min()
    assert high - low >= 45, f"the shared range {low}-{high} tokens is too narrow to compare lengths"
    quarters = np.linspace(low, high, 5)
    for category, group in counts.groupby("category"):
        tokens = np.sort(group["tokens"].to_numpy())
        assert np.diff(tokens).max() <= MAX_GAP_TOKENS, f"{category}: a gap of {np.diff(tokens).max()} tokens"
        in_quarter = np.histogram(tokens, bins=quarters)[0]
        assert in_quarter.min() >= MIN_PER_QUARTER, f"{category}: {in_quarter} prompts per quarter of {low}-{high}"


def test_categories_have_equal_sizes_and_prompt_ids_follow_length(prompts) -> None:
    sizes = prompts.groupby("category").size()
    assert set(sizes) == {45} and set(sizes.index) == set(study.CATEGORIES)
    for _, group in prompts.groupby("category"):
        assert group["n_words"].is_monotonic_increasing, "prompt ids must run from short to long"


def test_the_data_readme_length_table_is_computed_from_the_file(prompts) -> None:
    readme = (paths.DATA / "README.md").read_text(encoding="utf-8")
    assert study.prompt_length_table(prompts) in readme


def test_surface_covariates_are_counted_from_the_text() -> None:
    covariates = study.prompt_covariates(study.pd.Series(["What is 12 + 7?", "Write a poem."]))
    assert covariates["n_digits"].tolist() == [3, 0]
    assert covariates["n_question_marks"].tolist() == [1, 0]
    assert covariates["n_words"].tolist() == [5, 3]
