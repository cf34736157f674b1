"""The findings' rules on planted truths, both ways: each wrong verdict at most 5%, each right one found.

The simulations are ``helpers.stats.findings.calibration``'s, the same that notebook 06 shows as the operating
characteristics. "At most 5%" is checked as: the number of wrong verdicts is within the binomial
99th percentile at 5% (``calibration.at_most``), over enough simulated runs to show it.
"""

from __future__ import annotations

import pytest

from helpers.stats import findings
from helpers.stats.findings import DOES_NOT_HOLD, HOLDS, calibration, finding1

RUNS = 200
MODELS = 3  # finding 1: as many models as the three-model study; Holm over 33 comparisons for 'does not hold'


def share(verdicts: list[str], verdict: str) -> float:
    return verdicts.count(verdict) / len(verdicts)


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["complete null", "tied", "length only", "surface only"])
def test_finding1_wrong_verdicts_at_most_5_percent_under_the_nulls(scenario: str) -> None:
    planted = calibration.FINDING1_SCENARIOS[scenario][0]
    verdicts = calibration.finding1_verdicts(scenario, MODELS, RUNS)
    wrong = calibration.wrong_share(planted, verdicts)
    assert calibration.at_most(wrong, RUNS), f"{planted.name}: {wrong:.1%} wrong verdicts"


@pytest.mark.slow
def test_the_documented_power_of_the_registered_and_the_earlier_finding1_rule() -> None:
    # docs/statistics.md: "With three models and 45 prompts per category, a category 0.8 SD above math refutes
    # finding 1 in about 80% of runs (the earlier margin rule: about 12%...)": both rules simulated here
    import re

    from helpers.base import paths

    text = " ".join((paths.ROOT / "docs" / "statistics.md").read_text(encoding="utf-8").split())
    found = re.search(
        r"With three models and (\d+) prompts per category, a category ([\d.]+) SD above math refutes finding 1 in "
        r"about (\d+)% of runs \(the earlier margin rule: about (\d+)%",
        text,
    )
    assert found, "the sentence on finding 1's power is gone from docs/statistics.md: update this test"
    per_category, effect, registered, earlier = int(found[1]), found[2], int(found[3]), int(found[4])
    assert per_category == calibration.PER_CATEGORY and MODELS == 3
    scenario = f"rival +{effect}"
    for decision, documented in ((finding1.REGISTERED_RULE, registered), (finding1.RULE_BEFORE_C0E16E4, earlier)):
        verdicts = calibration.finding1_verdicts(scenario, MODELS, RUNS, decision=decision)
        power = share(verdicts, DOES_NOT_HOLD)
        error = 3 * (power * (1 - power) / RUNS) ** 0.5 + 0.05  # simulation error and "about"
        assert abs(power - documented / 100) <= error, f"{decision}: {power:.0%}, documented {documented}%"


@pytest.mark.slow
def test_finding1_a_category_above_math_refutes_it() -> None:
    # the symmetric rule: evidence against the claim refutes it without a margin. The rules before this one
    # needed a category 0.5 SD above math by a significant margin and called this case inconclusive.
    verdicts = calibration.finding1_verdicts("rival +0.8", MODELS, 100)
    print(f"power of 'does not hold' at 0.8 SD, {MODELS} models: {share(verdicts, DOES_NOT_HOLD):.0%}")
    assert share(verdicts, DOES_NOT_HOLD) >= 0.7 and HOLDS not in verdicts
    strong = calibration.finding1_verdicts("rival +1.0", MODELS, 100)
    assert share(strong, DOES_NOT_HOLD) >= 0.9


@pytest.mark.slow
@pytest.mark.parametrize("effect", [0.5, 0.8, 1.0])
def test_finding1_power_at_moderate_effects_is_printed_and_never_the_wrong_way(effect: float) -> None:
    holds = calibration.finding1_verdicts(f"math +{effect}", MODELS, 60)
    refutes = calibration.finding1_verdicts(f"rival +{effect}", MODELS, 60)
    print(
        f"{effect} SD, {MODELS} models: 'holds' {share(holds, HOLDS):.0%} when math is highest, "
        f"'does not hold' {share(refutes, DOES_NOT_HOLD):.0%} when a category is above math"
    )
    assert DOES_NOT_HOLD not in holds and HOLDS not in refutes


def test_finding1_a_large_math_effect_holds() -> None:
    calibration.FINDING1_SCENARIOS["math +2.0"] = (
        calibration.Scenario(1, "math 2 SD above", HOLDS, (DOES_NOT_HOLD,)),
        {calibration.MATH: 2.0},
        {},
    )
    try:
        verdicts = calibration.finding1_verdicts("math +2.0", MODELS, 40)
    finally:
        del calibration.FINDING1_SCENARIOS["math +2.0"]
    assert share(verdicts, HOLDS) >= 0.9


def test_a_surface_effect_would_hold_without_the_covariates_in_the_primary_model() -> None:
    # the surface-only null is a real threat: with length alone in the model, tokens per word makes math "highest"
    import dataclasses

    without = dataclasses.replace(finding1.REGISTERED_RULE, covariates=())
    verdicts = calibration.finding1_verdicts("surface only", MODELS, 40, decision=without)
    assert share(verdicts, HOLDS) >= 0.5


@pytest.mark.parametrize("scenario", list(calibration.FINDING2_SCENARIOS))
def test_finding2_rules_both_ways_with_four_encoders_and_four_decoders(scenario: str) -> None:
    planted = calibration.FINDING2_SCENARIOS[scenario][0]
    verdicts = calibration.finding2_verdicts(scenario, 4, 4, 1000)
    assert calibration.at_most(calibration.wrong_share(planted, verdicts), 1000), planted.name
    if scenario in ("paper's ratio, small spread", "about: inside"):
        assert share(verdicts, planted.right) >= 0.9, planted.name


def test_finding2_with_four_vs_five_and_the_papers_spread() -> None:
    scenario = "paper's ratio, the paper's spread"
    planted = calibration.FINDING2_SCENARIOS[scenario][0]
    verdicts = calibration.finding2_verdicts(scenario, 4, 5, 1000)
    print(f"'sparser' at the paper's ratio and spread, 4 vs 5 models: power {share(verdicts, HOLDS):.0%}")
    assert calibration.at_most(calibration.wrong_share(planted, verdicts), 1000)
    assert 0.2 <= share(verdicts, HOLDS) <= 0.9  # realistic spread: neither hopeless nor certain
    null = calibration.finding2_verdicts("boundary", 4, 5, 1000)
    assert calibration.at_most(share(null, HOLDS), 1000)


@pytest.mark.parametrize("scenario", list(calibration.FINDING4_SCENARIOS))
def test_finding4_rules_both_ways_over_eight_models(scenario: str) -> None:
    planted = calibration.FINDING4_SCENARIOS[scenario][0]
    verdicts = calibration.finding4_verdicts(scenario, 8, 1000)
    assert calibration.at_most(calibration.wrong_share(planted, verdicts), 1000), planted.name
    assert HOLDS not in verdicts  # 8 < 16 models: 'no link' cannot be supported


@pytest.mark.slow
def test_the_operating_characteristics_table_has_every_scenario() -> None:
    table = calibration.operating_characteristics(2, 3, 4, 5, seeds=4)
    expected = len(calibration.FINDING1_SCENARIOS) + len(calibration.FINDING2_SCENARIOS)
    assert len(table) == expected + len(calibration.FINDING4_SCENARIOS)
    assert {"wrong_verdicts", "power", "planted_truth", "right_verdict"} <= set(table.columns)


def test_the_rules_in_the_code_are_the_committed_preregistered_rules() -> None:
    committed = findings.PREREGISTERED_RULES.read_text(encoding="utf-8")
    assert committed == findings.rules_markdown(), (
        "the rules changed: record them with `python -m helpers.stats.findings preregister` and commit that file "
        "before running the study whose results they judge"
    )
