"""Finding 5 (signatures beyond the words): its probe, its tests, its negative controls and planted truths, and the
selective units and transfer beside it."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from helpers.base import store
from helpers.stats import findings
from helpers.stats.findings import (
    DOES_NOT_HOLD,
    HOLDS,
    INCONCLUSIVE,
    NOT_TESTABLE,
    beyond_words,
    crossfit,
    finding5,
    finding5_calibration,
    finding5_earlier,
    lexical,
    rules,
    signatures,
    units,
    views,
)
from helpers.stats.robustness import StudyData
from tests.support import TRUTHS, study_prompts

FAST = finding5.Settings(folds=5, repeats=1, permutations=39, unit_permutations=19)
"""Small enough for make test; 39 permutations still allow p < 0.05 (the conditional test's level)."""
FINDING = finding5.ActivationSignatures()


def model_tests(truth: finding5_calibration.Truth, seed: int, settings: finding5.Settings = FAST) -> pd.DataFrame:
    prompts = study_prompts()
    vectors = finding5_calibration.simulated_vectors(truth, prompts, seed)
    profiles = np.random.default_rng(seed).standard_normal((len(prompts), 4))
    return beyond_words.test_model(prompts, profiles, vectors, settings).tests.assign(model=f"m{seed}")


CONTROLS = [name for name in TRUTHS if name.startswith("text only")]


# --- the probe: what each registered number does ------------------------------------------------------------


def test_the_probe_is_scikit_learns_ridge_classifier_with_the_registered_penalty() -> None:
    from sklearn.linear_model import RidgeClassifier

    rng = np.random.default_rng(0)
    features = rng.standard_normal((60, 8))
    labels = np.repeat(["a", "b", "c"], 20)
    folds = views.splits(labels, finding5.Settings(folds=3, repeats=1))
    tested, _ = crossfit.fold_accuracies([features @ features.T], labels, folds)
    for j, (train, test) in enumerate(folds):
        fitted = RidgeClassifier(alpha=crossfit.RIDGE, fit_intercept=False).fit(features[train], labels[train])
        assert tested[0, j] == pytest.approx(np.mean(fitted.predict(features[test]) == labels[test]))
    assert f"L2 penalty {crossfit.RIDGE:g}" in finding5.rule_text()


def test_leave_one_out_scores_equal_refitting_without_each_prompt() -> None:
    rng = np.random.default_rng(1)
    features = rng.standard_normal((30, 5))
    kernel = features @ features.T
    targets = crossfit.onehot(rng.integers(0, 3, 30), np.arange(3))
    train, test = np.arange(24), np.arange(24, 30)
    loo = crossfit.FoldFit(kernel, train, test).leave_one_out(targets)
    for i in range(24):
        rest = np.delete(train, i)
        refit = crossfit.FoldFit(kernel, rest, np.array([i])).test_scores(targets)
        np.testing.assert_allclose(loo[i], refit[0], atol=1e-10)


def test_the_folds_are_the_registered_stratified_folds_and_repeats() -> None:
    settings = finding5.Settings()
    labels = np.repeat([f"c{i}" for i in range(12)], 45)
    folds = views.splits(labels, settings)
    assert len(folds) == settings.folds * settings.repeats
    for train, test in folds:
        assert len(test) == len(labels) // settings.folds and len(set(train) & set(test)) == 0
        assert (pd.Series(labels[test]).value_counts() == 45 // settings.folds).all()  # stratified
    text = finding5.rule_text()
    assert f"{settings.folds}-fold" in text and f"over {settings.repeats} seeds" in text
    assert f"permuted {settings.permutations} times" in text and f"{finding5.MIN_GAIN:.0%}" in FINDING.minimum_effect


def test_a_category_with_one_prompt_is_named_before_any_fit() -> None:
    labels = np.array(["a", "a", "b", "b", "lonely"])
    with pytest.raises(ValueError, match="lonely"):
        views.splits(labels, finding5.Settings())


def test_the_corrected_resampled_t_is_nadeau_and_bengios() -> None:
    differences = np.array([0.1, 0.05, 0.12, 0.08, 0.07, 0.11, 0.06, 0.09, 0.1, 0.02])
    test = crossfit.CorrectedT.of(differences, test_share=0.25)
    se = np.sqrt((1 / 10 + 0.25) * differences.var(ddof=1))
    assert test.standard_error == pytest.approx(se) and test.dof == 9
    assert test.p_above(0.0) == pytest.approx(stats.t.sf(differences.mean() / se, 9))
    assert test.p_below(0.1) == pytest.approx(stats.t.cdf((differences.mean() - 0.1) / se, 9))
    low, high = test.interval()
    assert high - low == pytest.approx(2 * stats.t.ppf(0.975, 9) * se)
    naive = stats.ttest_1samp(differences, 0.0, alternative="greater").pvalue
    assert test.p_above(0.0) > naive  # the correction widens the interval: overlapping training sets


def test_the_conditional_permutation_p_is_calibrated_when_the_later_layers_carry_nothing() -> None:
    rng = np.random.default_rng(5)
    labels = np.repeat(["a", "b", "c", "d"], 15)
    words = rng.standard_normal((60, 6)) + 1.5 * crossfit.onehot(labels, np.unique(labels)) @ rng.standard_normal(
        (4, 6)
    )
    reduced = 10 + words @ words.T / 6
    folds = views.splits(labels, finding5.Settings(folds=4, repeats=1))
    p_values = []
    for seed in range(20):
        noise = np.random.default_rng(100 + seed).standard_normal((60, 20))
        _, p = crossfit.conditional_permutation_p(reduced, reduced + noise @ noise.T / 20, labels, folds, 39, seed)
        p_values.append(p)
        assert p * 40 == pytest.approx(round(p * 40))  # (1 + k) / (1 + permutations)
    assert sum(p < 0.05 for p in p_values) <= 3  # at most 3 of 20 below 5% (binomial upper tail ~0.08)
    signal = crossfit.onehot(labels, np.unique(labels)) @ rng.standard_normal((4, 20))
    _, p = crossfit.conditional_permutation_p(reduced, reduced + signal @ signal.T / 20, labels, folds, 39, 0)
    assert p == pytest.approx(1 / 40)


# --- the rule on planted truths: negative controls never hold ----------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("control", CONTROLS)
def test_text_only_views_never_hold(control: str) -> None:
    for seed in range(3):
        tests = model_tests(TRUTHS[control], seed)
        verdict = finding5.model_verdicts(tests)
        assert (verdict["verdict"] != HOLDS).all(), tests.to_string()
        assert (tests.loc[tests["decides"], "gain"] < finding5.MIN_GAIN).all()


@pytest.mark.slow
@pytest.mark.parametrize("control", CONTROLS)
def test_text_only_views_never_hold_when_the_lexical_probe_alone_stands_in_their_way(control: str) -> None:
    """The same controls with a layer 0 that knows no words (noise): only the text-only lexical probe can stop them,
    so this fails if the rule lost it (a review replaced it by layer 0 and every other control test still passed)."""
    prompts = study_prompts()
    for seed in range(2):
        vectors = finding5_calibration.simulated_vectors(TRUTHS[control], prompts, seed).astype(np.float32)
        vectors[:, 0] = np.random.default_rng(seed + 7).standard_normal(vectors[:, 0].shape)
        profiles = np.random.default_rng(seed).standard_normal((len(prompts), 4))
        tests = beyond_words.test_model(prompts, profiles, vectors, FAST).tests.assign(model=f"m{seed}")
        assert (tests["stronger_baseline"] == beyond_words.LEXICAL).all(), tests.to_string()
        assert (finding5.model_verdicts(tests)["verdict"] != HOLDS).all(), tests.to_string()
        decides = tests[tests["decides"]]
        assert (decides["gain"] < finding5.MIN_GAIN).all()
        assert (decides["gain_over_layer0"] > decides["gain"]).all()  # layer 0 alone would not have stopped them


def test_folds_that_do_not_vary_give_no_evidence_either_way() -> None:
    """Degenerate data (every fold the same difference, e.g. every probe at zero on a tiny run) decide nothing."""
    for constant in (0.0, 0.12, -0.3):
        test = crossfit.CorrectedT.of(np.full(10, constant), test_share=0.25)
        assert test.p_above(0.0) == 1.0 and test.p_below(finding5.MIN_GAIN) == 1.0


def test_a_model_with_too_few_prompts_per_category_is_not_tested_nor_counted_by_holm() -> None:
    tests = pd.concat([model_tests(TRUTHS["noise: later layers carry nothing"], seed) for seed in (0, 1)])
    tests.loc[tests["model"] == "m1", "min_per_category"] = rules.MIN_PROMPTS_PER_CATEGORY - 1
    verdicts = finding5.model_verdicts(tests).set_index("model")
    alone = finding5.model_verdicts(tests[tests["model"] == "m0"]).set_index("model")
    assert verdicts.loc["m1", "verdict"] == NOT_TESTABLE and np.isnan(verdicts.loc["m1", "p_signature_holm"])
    assert verdicts.loc["m0", "p_below_minimum_holm"] == alone.loc["m0", "p_below_minimum_holm"]
    assert "not testable here in 1" in finding5.beyond_words_sentence(verdicts.reset_index())


@pytest.mark.slow
def test_the_earlier_rule_said_holds_for_a_bag_of_words_with_no_model() -> None:
    """Why the rule changed (the deviations log): the earlier baseline had no word identity."""
    prompts = study_prompts()
    vectors = finding5_calibration.simulated_vectors(TRUTHS["text only: bag of words"], prompts, 0)
    profiles = np.random.default_rng(0).standard_normal((len(prompts), 4))
    registered = finding5.Settings(repeats=1)  # 99 permutations: p can go below 0.05/2
    earlier = finding5_earlier.model_tests(prompts, profiles, vectors, registered).assign(model="bag of words")
    assert finding5_earlier.earlier_verdict(earlier) == HOLDS


@pytest.mark.slow
def test_a_category_signal_beyond_the_words_holds() -> None:
    truth = TRUTHS[f"category signal beyond the words, {finding5_calibration.SIGNALS[-1]:g} SD"]
    frames = [model_tests(truth, seed) for seed in range(3)]
    assessment = FINDING.judge(pd.concat(frames, ignore_index=True))
    assert assessment.verdict == HOLDS, assessment.evidence
    verdicts = assessment.tables["signature_verdicts"]
    assert (verdicts["gain_low"] > 0).all() and (verdicts["p_conditional"] < rules.ALPHA).all()


@pytest.mark.slow
def test_later_layers_that_only_repeat_the_words_do_not_hold_with_enough_prompts() -> None:
    frames = [model_tests(TRUTHS["text only: TF-IDF word and character n-grams"], seed) for seed in range(2)]
    assert FINDING.judge(pd.concat(frames, ignore_index=True)).verdict == DOES_NOT_HOLD


@pytest.mark.slow
def test_the_operating_characteristics_table_has_every_truth_and_the_other_findings_columns() -> None:
    table = finding5_calibration.operating_characteristics(study_prompts(6), runs=1, settings=FAST)
    assert list(table["planted_truth"]) == list(TRUTHS)
    assert {"holds", "does_not_hold", "inconclusive", "wrong_verdicts", "power", "simulated_runs"} <= set(table)
    assert (table.loc[table["right_verdict"] != HOLDS, "power"].isna()).all()


# --- what the run-level rule says, and when it cannot say it ------------------------------------------------


def test_finding_5_is_in_the_findings_once_with_its_rule_generated_from_the_code() -> None:
    assert [finding.number for finding in findings.FINDINGS] == [1, 2, 3, 4, 5]
    assert isinstance(findings.FINDINGS[4], finding5.ActivationSignatures)
    assert FINDING.rule == finding5.rule_text() and "Finding 5" in findings.rules_markdown()
    for name in ("word", "character"):
        assert name in FINDING.rule
    assert f"{lexical.WORD_NGRAMS[0]}-{lexical.WORD_NGRAMS[1]}-grams" in FINDING.rule


def test_the_run_holds_only_if_every_model_holds() -> None:
    assert finding5.run_verdict(pd.Series([HOLDS, HOLDS])) == HOLDS
    assert finding5.run_verdict(pd.Series([HOLDS, "inconclusive"])) == "inconclusive"
    assert finding5.run_verdict(pd.Series([HOLDS, DOES_NOT_HOLD])) == DOES_NOT_HOLD


def test_not_testable_without_vectors_with_too_few_prompts_or_with_an_earlier_rules_tests() -> None:
    metrics = pd.DataFrame(
        {
            "display_name": ["A"] * 2,
            "model": ["a"] * 2,
            "architecture": ["decoder"] * 2,
            "n_parameters": [1] * 2,
            "prompt_id": ["p1", "p2"],
            "category": ["x", "y"],
            "final_activation": [0.1, 0.2],
        }
    )
    data = StudyData.from_metrics(metrics, samples=10, seed=0)
    assert FINDING.assess(data).verdict == NOT_TESTABLE
    tests = pd.concat([model_tests(TRUTHS["noise: later layers carry nothing"], seed) for seed in range(2)])
    data.cache[finding5.CACHE_KEY] = tests.assign(min_per_category=2)
    assessment = FINDING.assess(data)
    assert assessment.verdict == NOT_TESTABLE and "fewest: 2" in assessment.why_not_testable
    data.cache[finding5.CACHE_KEY] = pd.DataFrame({"model": ["a"], "kind": ["scalar"], "min_per_category": [45]})
    assert "earlier rule" in FINDING.assess(data).why_not_testable


def test_holds_needs_the_gain_significantly_above_the_minimum_not_only_its_point_estimate() -> None:
    """Deviation 7: a gain whose point estimate reaches 10 points but whose interval reaches below it is
    inconclusive, as a gain just under the minimum would be; the rule before said "holds" (its likelier error)."""
    tests = model_tests(TRUTHS["noise: later layers carry nothing"], 0)
    deciding = tests["decides"].astype(bool)
    near = tests.copy()  # like Qwen2.5-Coder-1.5B in the nine-model run: +10.3 points [6.2, 14.3]
    near.loc[deciding, ["gain", "gain_low", "gain_high"]] = [0.103, 0.062, 0.143]
    near.loc[deciding, ["p_above", "p_above_minimum", "p_below"]] = [0.0003, 0.45, 0.55]
    near["p_conditional"] = 0.01
    assert finding5.model_verdicts(near)["verdict"].tolist() == [INCONCLUSIVE]
    assert finding5.model_verdicts(near, minimum_tested=False)["verdict"].tolist() == [HOLDS]
    clear = near.copy()
    clear.loc[deciding, ["gain", "gain_low", "p_above_minimum", "p_below"]] = [0.2, 0.14, 0.001, 0.999]
    assert finding5.model_verdicts(clear)["verdict"].tolist() == [HOLDS]
    below = near.copy()
    below.loc[deciding, ["gain", "gain_high", "p_above", "p_above_minimum", "p_below"]] = [
        0.03,
        0.06,
        0.02,
        0.99,
        0.001,
    ]
    assert finding5.model_verdicts(below)["verdict"].tolist() == [DOES_NOT_HOLD]


def test_the_per_model_table_says_what_the_words_give_and_what_the_layers_add() -> None:
    tests = model_tests(TRUTHS["noise: later layers carry nothing"], 0)
    table = finding5.model_verdicts(tests)
    for column in ("lexical_accuracy", "layer0_accuracy", "layers_accuracy", "gain_beyond_words", "gain_low"):
        assert column in table
    row = table.iloc[0]
    assert row["gain_beyond_words"] == pytest.approx(
        row["layers_accuracy"] - max(row["lexical_accuracy"], row["layer0_accuracy"])
    )
    assert row["gain_low"] < row["gain_beyond_words"] < row["gain_high"]


# --- selective units and transfer --------------------------------------------------------------------------


def test_selective_units_agree_with_scipys_benjamini_hochberg() -> None:
    rng = np.random.default_rng(1)
    labels = np.repeat(["a", "b", "c"], 30)
    values = rng.standard_normal((90, 400)).astype(np.float32)
    values[:, :20] += 1.5 * (labels == "b")[:, None]  # 20 units selective for b
    n_tokens = rng.integers(5, 50, 90)
    effects = units.UnitEffects(values, views.length_basis(n_tokens))
    selective, owner = units.selective_units(effects, labels)
    d, t = effects.of(labels)
    q = stats.false_discovery_control(2 * stats.t.sf(t, effects.dof).reshape(-1)).reshape(t.shape)
    expected = ((q < rules.ALPHA) & (np.abs(d) >= units.MIN_UNIT_D)).any(axis=0)
    assert np.array_equal(selective, expected)
    assert selective[:20].all() and selective[20:].sum() <= 2 and (owner[:20] == 1).all()


def test_selective_units_are_counted_beyond_layer_0_and_beyond_a_random_copy() -> None:
    rng = np.random.default_rng(2)
    labels = np.repeat(["a", "b", "c"], 30)
    vectors = rng.standard_normal((90, 3, 50)).astype(np.float32)
    vectors[:, 0, :5] += 2.0 * (labels == "a")[:, None]  # layer 0: 5 selective units (the words)
    vectors[:, 2, :15] += 2.0 * (labels == "b")[:, None]  # layer 2: 15, of which the random copy has 5
    copy = rng.standard_normal((90, 3, 50)).astype(np.float32)
    copy[:, 2, :5] += 2.0 * (labels == "b")[:, None]
    settings = finding5.Settings(unit_permutations=99)
    table, owners = units.unit_selectivity(vectors, labels, rng.integers(5, 50, 90), settings, copy)
    assert table["selective"].tolist()[0] >= 5 and table.loc[2, "selective"] >= 15
    assert table.loc[2, "over_layer0"] == table.loc[2, "selective"] - table.loc[0, "selective"]
    assert table.loc[2, "over_random_copy"] == table.loc[2, "selective"] - table.loc[2, "random_copy_selective"]
    assert table.loc[2, "p_over_layer0"] == pytest.approx(0.01) and table.loc[2, "p_over_random_copy"] == pytest.approx(
        0.01
    )
    assert table["p_value"].min() >= 1 / 100  # the floor of 99 permutations
    with pytest.raises(ValueError, match="random-weights copy"):
        units.unit_selectivity(vectors, labels, rng.integers(5, 50, 90), settings, copy[:, :2])


def test_transfer_is_cross_fitted_and_holm_adjusted() -> None:
    rng = np.random.default_rng(3)
    labels = np.repeat(["a", "b", "c"], 20)
    shared = crossfit.onehot(labels, np.unique(labels)) @ rng.standard_normal((3, 6)) + rng.standard_normal((60, 6))
    profiles = {"A": shared, "B": shared.copy(), "C": rng.standard_normal((60, 6))}
    table = signatures.transfer(profiles, labels, finding5.Settings())
    a_to_b = table[(table["trained_on"] == "A") & (table["tested_on"] == "B")].iloc[0]
    assert a_to_b["accuracy"] == pytest.approx(a_to_b["within"])  # the same profile: as good as within the model
    assert (table["p_holm"] >= table["p_above_chance"]).all() and len(table) == 6
    assert "Holm" in signatures.transfer_fact(table)


# --- stored vectors ------------------------------------------------------------------------------------------


def test_stored_vectors_round_trip_and_a_changed_value_is_caught(tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    vectors = np.random.default_rng(3).standard_normal((4, 3, 5)).astype(np.float16)
    path = store.write_vectors(["a", "b", "c", "d"], vectors, tmp_path / "v.parquet", {"note": 1})
    ids, back = store.read_vectors(path)
    assert ids == ["a", "b", "c", "d"] and back.dtype == np.float16 and np.array_equal(back, vectors)
    table = pq.read_table(path)
    flat = table.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False).copy()
    flat[7] += np.float16(0.5)
    column = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float16()), 15)
    pq.write_table(table.set_column(1, "vector", column), path)
    with pytest.raises(store.StoredTableError, match="content hash"):
        store.read_vectors(path)


def test_a_value_beyond_float16s_range_is_clipped_and_counted_never_stored_as_inf(tmp_path) -> None:
    vectors = np.array([[[1.0, 1e6, -2e5, np.nan]]], dtype=np.float32)
    with pytest.warns(UserWarning, match="2 value"):
        path = store.write_vectors(["a"], vectors, tmp_path / "v.parquet")
    _, back = store.read_vectors(path)
    assert back[0, 0, 1] == 65504 and back[0, 0, 2] == -65504 and np.isnan(back[0, 0, 3])
    assert store.read_metadata(path)["saturated_values"] == 2


def test_the_rule_text_names_no_probe_the_code_does_not_run() -> None:
    assert not re.search(r"logistic|PCA", FINDING.rule)
    controls = re.search(r"as if they were layers: ([^)]*)\) must never give 'holds'", FINDING.rule)
    assert controls is not None and controls.group(1).split("; ") == list(lexical.TEXT_ONLY_VIEWS)
