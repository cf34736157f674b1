"""The table functions on hand-built data, and the paper's own consistency."""

from __future__ import annotations

import pandas as pd
import pytest

from helpers.study import tables


def _metrics() -> pd.DataFrame:
    rows = []
    for model, architecture, params, offset in (
        ("enc", "encoder", 22_700_000, 0.0),
        ("dec", "decoder", 1_400_000_000, 1.0),
    ):
        for category in ("factual_questions", "mathematical_reasoning"):
            for value in (1.0, 3.0):
                rows.append(
                    {
                        "model": f"org/{model}",
                        "display_name": model.upper(),
                        "architecture": architecture,
                        "n_parameters": params,
                        "n_layers": 2,
                        "n_heads": 4,
                        "hidden_size": 8,
                        "prompt_id": f"{category}_{value}",
                        "category": category,
                        "n_tokens": 5,
                        "final_activation": value + offset,
                        "attention_entropy": 10 * value + (5 if category == "mathematical_reasoning" else 0),
                        "max_sparsity": 0.1 * (offset + 1),
                    }
                )
    return pd.DataFrame(rows)


def test_complete_results_are_cell_means_in_paper_order() -> None:
    cells = tables.complete_results(_metrics())
    assert list(cells["Model"]) == ["ENC", "ENC", "DEC", "DEC"]
    assert list(cells["Category"]) == ["factual_questions", "mathematical_reasoning"] * 2
    assert list(cells["Final_Activation"]) == [2.0, 2.0, 3.0, 3.0]
    assert list(cells["Attention_Entropy"]) == [20.0, 25.0, 20.0, 25.0]
    assert list(cells["Parameters"]) == ["22.7M", "22.7M", "1.4B", "1.4B"]
    assert (cells["Inputs_Analyzed"] == 2).all()


def test_summaries_of_hand_built_cells() -> None:
    summaries = tables.summary_tables(tables.complete_results(_metrics()))
    architecture = summaries["architecture_comparison"].set_index("Architecture")
    assert architecture.loc["decoder", "Max_Sparsity"] == pytest.approx(0.2)
    assert architecture.loc["encoder", "Inputs_Analyzed"] == 4
    category = summaries["category_performance"].set_index("Category")
    assert category.loc["mathematical_reasoning", "Attention_Entropy_mean"] == 25.0
    assert category.loc["factual_questions", "Final_Activation_std"] == pytest.approx(0.5**0.5)  # ddof=1 of (2, 3)
    top = summaries["top10_attention_entropy"]
    assert list(top["Category"][:2]) == ["mathematical_reasoning"] * 2
    assert summaries["top10_lowest_sparsity"]["Max_Sparsity"].iloc[0] == pytest.approx(0.1)


def test_parameter_scale_is_in_numeric_order_of_parameter_count() -> None:
    published_cells, _ = tables.published_tables()  # 109.5M ... 3.6B: as text, 1.4B would come first
    for cells in (published_cells, tables.complete_results(_metrics())):
        scale = tables.parameter_scale(cells)
        counts = [tables.parameter_count(text) for text in scale["Parameters"]]
        assert counts == sorted(counts) and len(set(counts)) == len(counts)
    assert list(tables.parameter_scale(published_cells)["Parameters"])[:2] == ["109.5M", "124.4M"]
    assert tables.parameter_count("1.5B") == 1.5e9 and tables.parameter_count("17.2M") == 17.2e6
    with pytest.raises(ValueError, match="followed by M or B"):
        tables.parameter_count("17.2K")


def test_paper_summary_tables_rederive_from_its_own_model_by_category_table() -> None:
    published_cells, published = tables.published_tables()
    consistency = tables.paper_consistency(published_cells, published)
    assert len(consistency) > 100
    assert consistency["agrees"].all(), consistency[~consistency["agrees"]]


def test_consistency_check_catches_a_changed_number() -> None:
    published_cells, published = tables.published_tables()
    tampered = published_cells.copy()
    tampered.loc[0, "Attention_Entropy"] += 1.0
    consistency = tables.paper_consistency(tampered, published)
    assert not consistency["agrees"].all()


def test_model_comparison_matches_on_hub_id() -> None:
    published_cells, _ = tables.published_tables()
    ours = published_cells[published_cells["Model_Name"] == "gpt2"].copy()
    ours["Final_Activation"] += 0.5
    compared = tables.compare_models(ours, published_cells)
    assert len(compared) == 12 and compared["Final_Activation_difference"].to_numpy() == pytest.approx(0.5)


def test_nonfinite_prompts_are_left_out_with_a_warning_naming_them() -> None:
    metrics = _metrics()
    metrics["nonfinite_layers"] = 0
    metrics.loc[0, "nonfinite_layers"] = 2  # flagged by measure, even though its metrics look finite
    metrics.loc[5, "attention_entropy"] = float("nan")
    with pytest.warns(tables.NonFiniteMeasurementWarning, match=r"2 of 8 .*org/enc/factual_questions_1\.0.*org/dec"):
        kept = tables.finite_only(metrics)
    assert list(kept.index) == [1, 2, 3, 4, 6, 7]
    with pytest.warns(tables.NonFiniteMeasurementWarning):
        cells = tables.study_tables(metrics, pd.DataFrame({"prompt_id": [], "category": [], "text": []}))
    assert cells["complete_results"]["Attention_Entropy"].notna().all()


def test_finite_tables_raise_no_warning() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(tables.finite_only(_metrics())) == 8
