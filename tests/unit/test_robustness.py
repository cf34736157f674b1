"""Robustness analysis on synthetic data with known answers: planted effects are found or removed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helpers import robustness
from helpers.study import CATEGORIES

MATH = "mathematical_reasoning"


def synthetic(
    length_slope: float = 2.0,
    math_effect: float = 0.0,
    math_longer: bool = False,
    sparsity: dict[str, float] | None = None,
    activation: dict[str, float] | None = None,
    per_category: int = 12,
    seed: int = 0,
) -> pd.DataFrame:
    """Three models x 12 categories; attention entropy = slope * tokens + planted math effect + noise."""
    rng = np.random.default_rng(seed)
    models = {"ENC": ("encoder", 20e6), "DEC-A": ("decoder", 100e6), "DEC-B": ("decoder", 300e6)}
    sparsity = sparsity or {"ENC": 0.04, "DEC-A": 0.04, "DEC-B": 0.04}
    activation = activation or {"ENC": 0.0, "DEC-A": 0.0, "DEC-B": 0.0}
    prompts = []
    for category in CATEGORIES:
        for index in range(per_category):
            tokens = 8 + 4 * index + (30 if math_longer and category == MATH else 0)
            prompts.append((f"{category}_{index:02d}", category, tokens))
    rows = []
    for model, (architecture, parameters) in models.items():
        for prompt_id, category, tokens in prompts:
            entropy = length_slope * tokens + (math_effect if category == MATH else 0.0) + rng.normal(0, 0.5)
            rows.append(
                {
                    "model": model.lower(),
                    "display_name": model,
                    "architecture": architecture,
                    "n_parameters": parameters,
                    "prompt_id": prompt_id,
                    "category": category,
                    "n_tokens": tokens,
                    "attention_entropy": entropy,
                    "attention_entropy_normalized": 0.8 + rng.normal(0, 0.01),
                    "max_sparsity": sparsity[model] + rng.normal(0, 0.002),
                    "final_activation": activation[model] + rng.normal(0, 0.01),
                    "final_activation_pre_norm": activation[model] + rng.normal(0, 0.01),
                }
            )
    return pd.DataFrame(rows)


def test_planted_length_effect_is_detected_and_removed_by_adjustment() -> None:
    metrics = synthetic(length_slope=2.0, math_effect=0.0, math_longer=True)
    fits = robustness.length_fits(metrics)
    assert (fits["r"] > 0.99).all() and fits["slope"].to_numpy() == pytest.approx(2.0, abs=0.05)
    rankings = robustness.category_rankings(metrics).set_index("category")
    assert rankings.loc[MATH, "raw_rank"] == 1  # longer prompts alone put math first
    adjusted = rankings["length_adjusted"]
    assert adjusted.max() - adjusted.min() < 1.0  # ... and at equal length no category stands out
    assert abs(adjusted[MATH] - adjusted.drop(MATH).mean()) < 1.0


@pytest.mark.parametrize("math_longer", [False, True])
def test_planted_category_effect_survives_length_adjustment(math_longer: bool) -> None:
    metrics = synthetic(length_slope=2.0, math_effect=10.0, math_longer=math_longer)
    cells = robustness.length_adjusted_cells(metrics, "attention_entropy")
    means = robustness.category_means(cells)
    assert means[MATH] - means.drop(MATH).mean() == pytest.approx(10.0, abs=0.6)
    rankings = robustness.category_rankings(metrics).set_index("category")
    assert rankings.loc[MATH, "length_adjusted_rank"] == 1


@pytest.mark.parametrize(
    ("raw", "controlled", "interval", "expected"),
    [
        (True, True, True, "holds"),
        (True, True, False, "weakened"),
        (True, False, False, "weakened"),
        (False, True, True, "weakened"),
        (False, False, False, "does not hold"),
        (False, False, True, "does not hold"),
        (None, True, True, "not testable"),
    ],
)
def test_verdict_rule(raw: bool | None, controlled: bool, interval: bool, expected: str) -> None:
    assert robustness.verdict(raw, controlled, interval) == expected


def _published() -> pd.DataFrame:
    from helpers.tables import published_tables

    return published_tables()[0]


def test_scorecard_on_planted_cases() -> None:
    planted = synthetic(
        math_effect=10.0,
        sparsity={"ENC": 0.04, "DEC-A": 0.04 * 7.077, "DEC-B": 0.04 * 7.077},  # the paper's ratio
        activation={"ENC": 0.0, "DEC-A": 0.3, "DEC-B": -0.1},  # one clear top model, no monotonic link
    )
    scorecard = robustness.findings_scorecard(planted, _published(), samples=60).set_index("finding")
    assert list(scorecard["verdict"]) == ["holds", "holds", "holds", "holds"]

    null = synthetic(
        math_effect=-10.0,  # math lowest, not highest
        sparsity={"ENC": 0.28, "DEC-A": 0.04, "DEC-B": 0.04},  # the encoder is the sparse one
        activation={"ENC": 0.0, "DEC-A": 0.1, "DEC-B": 0.2},  # monotonic in parameters
    )
    scorecard = robustness.findings_scorecard(null, _published(), samples=60).set_index("finding")
    assert scorecard.loc[1, "verdict"] == "does not hold"
    assert scorecard.loc[2, "verdict"] == "does not hold"
    assert scorecard.loc[4, "verdict"] == "does not hold"

    length_only = synthetic(math_effect=0.0, math_longer=True)  # math "wins" only through length
    assert robustness.findings_scorecard(length_only, _published(), samples=60).loc[0, "verdict"] == "weakened"


def test_direction_without_the_papers_magnitude_is_weakened() -> None:
    metrics = synthetic(sparsity={"ENC": 0.040, "DEC-A": 0.046, "DEC-B": 0.046})  # 1.15x, clearly but not 7x
    scorecard = robustness.findings_scorecard(metrics, _published(), samples=60).set_index("finding")
    assert scorecard.loc[2, "raw_supports"] and scorecard.loc[2, "verdict"] == "weakened"


def test_scorecard_says_not_testable_without_an_encoder() -> None:
    metrics = synthetic()
    decoders_only = metrics[metrics["architecture"] == "decoder"]
    scorecard = robustness.findings_scorecard(decoders_only, _published(), samples=20).set_index("finding")
    assert scorecard.loc[2, "verdict"] == "not testable" and scorecard.loc[4, "verdict"] == "not testable"


def test_permutation_test_detects_a_planted_difference_and_not_a_null_one() -> None:
    rng = np.random.default_rng(1)
    groups = pd.Series(["decoder"] * 50 + ["encoder"] * 50)
    planted = pd.Series(np.r_[rng.normal(1.0, 1, 50), rng.normal(0.0, 1, 50)])
    null = pd.Series(rng.normal(0.0, 1, 100))
    found = robustness.permutation_test(planted, groups, "decoder", "encoder", permutations=2000)
    assert found["p_value"] < 0.01 and found["cohens_d"] == pytest.approx(1.0, abs=0.4)
    assert robustness.permutation_test(null, groups, "decoder", "encoder", permutations=2000)["p_value"] > 0.05


def test_bootstrap_interval_covers_a_known_mean() -> None:
    metrics = synthetic(sparsity={"ENC": 0.04, "DEC-A": 0.08, "DEC-B": 0.12})
    table = robustness.cell_intervals(metrics, ("max_sparsity",), samples=200)
    assert ((table["lower"] <= table["mean"]) & (table["mean"] <= table["upper"])).all()
    decoder_b = table[table["model"] == "DEC-B"]
    assert ((decoder_b["lower"] < 0.12) & (decoder_b["upper"] > 0.12)).mean() > 0.8


def test_top10_stability_is_full_for_a_clear_top_and_shared_for_ties() -> None:
    clear = synthetic(activation={"ENC": 0.0, "DEC-A": 5.0, "DEC-B": -5.0})
    table = robustness.top10_stability(clear, "final_activation", samples=50)
    assert set(table["model"]) == {"DEC-A"}
    assert table["share_of_draws_in_top10"].min() > 0.3


def test_readme_quote_replaces_only_the_marked_section(tmp_path) -> None:  # noqa: ANN001
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{robustness.README_START}\nstale text\n{robustness.README_END}\nrest\n")
    scorecard = robustness.findings_scorecard(synthetic(), _published(), samples=20)
    assert robustness.quote_in_readme(scorecard, readme, "notebooks/06_robustness.ipynb")
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("rest\n") and "stale text" not in text
    assert "does not hold" in text or "holds" in text or "weakened" in text
