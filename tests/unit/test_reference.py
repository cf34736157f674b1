"""The published tables: committed CSVs match a fresh parse of the verbatim results file, with spot checks."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from helpers.base import paths
from helpers.study import reference

MODELS = {"BERT-Base", "GPT2-117M", "Qwen-1.5-0.5B", "Phi-1", "BLOOM-560M", "StableLM-3B"}
CATEGORIES = {
    "factual_questions",
    "creative_writing",
    "mathematical_reasoning",
    "emotional_content",
    "technical_code",
    "philosophical_queries",
    "conversational_chat",
    "logical_puzzles",
    "scientific_explanations",
    "language_tasks",
    "instruction_following",
    "commonsense_reasoning",
}
SHAPES = {
    "complete_analysis_results": (72, 13),
    "model_summary": (6, 8),
    "category_performance_across_models": (12, 7),
    "architecture_comparison": (2, 5),
    "parameter_scale_analysis": (6, 6),
    "top_10_by_final_activation": (10, 3),
    "top_10_by_attention_entropy": (10, 3),
    "top_10_by_lowest_sparsity_highest_density": (10, 3),
}


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    return reference.parse_published_tables()


def test_every_table_in_the_file_is_parsed_with_its_published_shape(tables: dict[str, pd.DataFrame]) -> None:
    assert {name: frame.shape for name, frame in tables.items()} == SHAPES


def test_committed_csvs_are_byte_identical_to_a_fresh_parse(tmp_path: Path) -> None:
    fresh = reference.write_reference_csvs(tmp_path)
    committed = sorted(p.name for p in paths.REFERENCE.glob("*.csv"))
    assert committed == sorted(p.name for p in fresh), "data/reference/*.csv out of step with the raw file"
    for path in fresh:
        assert (paths.REFERENCE / path.name).read_bytes() == path.read_bytes(), (
            f"{path.name} differs from a fresh parse; regenerate with `python -m helpers.study.reference`"
        )


def test_load_published_round_trips_the_parse(tables: dict[str, pd.DataFrame]) -> None:
    for name, frame in tables.items():
        pd.testing.assert_frame_equal(reference.load_published(name), frame)


def test_complete_table_is_six_models_by_twelve_categories(tables: dict[str, pd.DataFrame]) -> None:
    complete = tables["complete_analysis_results"]
    assert len(complete) == 72
    assert set(complete["Model"]) == MODELS
    assert set(complete["Category"]) == CATEGORIES
    assert not complete.duplicated(["Model", "Category"]).any()
    assert not complete.isna().any().any()
    assert (complete["Inputs_Analyzed"] == 2).all()


def test_published_column_names_are_kept(tables: dict[str, pd.DataFrame]) -> None:
    assert list(tables["complete_analysis_results"].columns) == [
        "Model",
        "Model_Name",
        "Architecture",
        "Parameters",
        "Parameters_millions",
        "Layers",
        "Heads",
        "Hidden_Size",
        "Category",
        "Final_Activation",
        "Attention_Entropy",
        "Max_Sparsity",
        "Inputs_Analyzed",
    ]
    assert tables["category_performance_across_models"].columns[0] == "Category"


def _cell(frame: pd.DataFrame, column: str, **where: str) -> object:
    mask = pd.Series(True, index=frame.index)
    for key, value in where.items():
        mask &= frame[key] == value
    (value,) = frame.loc[mask, column]
    return value


def test_spot_check_published_values(tables: dict[str, pd.DataFrame]) -> None:
    complete = tables["complete_analysis_results"]
    assert _cell(complete, "Attention_Entropy", Model="BERT-Base", Category="mathematical_reasoning") == 217.3457
    assert _cell(complete, "Final_Activation", Model="BLOOM-560M", Category="technical_code") == -2.0028
    assert _cell(complete, "Max_Sparsity", Model="StableLM-3B", Category="creative_writing") == 0.6861
    assert _cell(complete, "Model_Name", Model="StableLM-3B", Category="language_tasks") == (
        "stabilityai/stablelm-base-alpha-3b"
    )
    assert _cell(complete, "Hidden_Size", Model="Phi-1", Category="factual_questions") == 2048
    summary = tables["model_summary"]
    assert _cell(summary, "Final_Activation", Model="GPT2-117M") == 0.3281
    assert _cell(summary, "Inputs_Analyzed", Model="Qwen-1.5-0.5B") == 24
    categories = tables["category_performance_across_models"]
    assert _cell(categories, "Attention_Entropy_mean", Category="mathematical_reasoning") == 195.6568
    architectures = tables["architecture_comparison"]
    assert _cell(architectures, "Final_Activation", Architecture="decoder") == -0.315
    assert _cell(architectures, "Inputs_Analyzed", Architecture="decoder") == 120
    assert _cell(tables["parameter_scale_analysis"], "Attention_Entropy", Parameters="3.6B") == 106.4349
    top_entropy = tables["top_10_by_attention_entropy"]
    assert top_entropy.iloc[0].to_dict() == {
        "Model": "Phi-1",
        "Category": "mathematical_reasoning",
        "Attention_Entropy": 231.9407,
    }
    top_density = tables["top_10_by_lowest_sparsity_highest_density"]
    assert top_density.iloc[-1].to_dict() == {
        "Model": "BLOOM-560M",
        "Category": "factual_questions",
        "Max_Sparsity": 0.0358,
    }


@pytest.mark.parametrize(
    ("published", "millions"),
    [("109.5M", 109.5), ("1.4B", 1400.0), ("3.6B", 3600.0), ("464.0M", 464.0)],
)
def test_parameters_to_millions(published: str, millions: float) -> None:
    assert reference.parameters_to_millions(published) == millions


def test_parameters_kept_as_published_strings_next_to_millions(tables: dict[str, pd.DataFrame]) -> None:
    summary = tables["model_summary"].set_index("Model")
    assert summary.loc["BERT-Base", "Parameters"] == "109.5M"
    assert summary.loc["BERT-Base", "Parameters_millions"] == 109.5
    assert summary.loc["Phi-1", "Parameters"] == "1.4B"
    assert summary.loc["Phi-1", "Parameters_millions"] == 1400.0
    assert summary["Parameters_millions"].dtype == "float64"


def test_unparseable_parameter_count_is_rejected() -> None:
    with pytest.raises(ValueError, match="unrecognised parameter count"):
        reference.parameters_to_millions("lots")


def test_load_published_unknown_name_lists_the_available_tables() -> None:
    with pytest.raises(ValueError, match="no_such_table") as excinfo:
        reference.load_published("no_such_table")
    for name in SHAPES:
        assert name in str(excinfo.value)


def test_misaligned_row_is_rejected(tmp_path: Path) -> None:
    broken = tmp_path / "broken.txt"
    broken.write_text("TABLE 1: BROKEN\n-----\nModel  Value\n    A   1.0\n   BB  2.0 extra\n", encoding="utf-8")
    with pytest.raises(ValueError, match="does not line up"):
        reference.parse_published_tables(broken)
