"""The registered rules are the rules that run: every number and name of findings 1-4's registered text is read
from the objects that decide, and a small run with a known answer shows that the code decides at that number.

Each test takes a number from the code (a threshold, a count, a level), checks that the registered text states that
number, and then runs the deciding code just on either side of it (or on a case whose answer is known by hand).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from helpers.stats import between_models, findings, matched_length, robustness
from helpers.stats.findings import (
    DOES_NOT_HOLD,
    HOLDS,
    INCONCLUSIVE,
    NOT_TESTABLE,
    finding1,
    finding2,
    finding3,
    finding4,
    rules,
)
from helpers.stats.matched_length import MatchedLength
from helpers.stats.robustness import MATH, StudyData
from helpers.study import CATEGORIES
from tests.support import synthetic

TEXT = findings.rules_markdown()
MATH_RULE, SPARSITY_RULE, GPT2_RULE, SIZE_RULE = findings.FINDINGS[:4]
ALPHA = rules.ALPHA


def registered(finding: findings.Finding) -> str:
    """The finding's paragraph of the registered text."""
    paragraph = next(p for p in TEXT.split("\n\n") if p.startswith(f"**Finding {finding.number}:"))
    assert paragraph.strip().endswith(f"*Needs:* {finding.needs}.")
    return paragraph


# --- shared -------------------------------------------------------------------------------------------------


def test_the_level_is_the_one_every_rule_tests_at() -> None:
    assert f"Tests at the {ALPHA:.0%} level" in TEXT
    # finding 1's 'holds' in a model: the intersection-union p must be below ALPHA, exactly
    for p, verdict in ((ALPHA * 0.999, HOLDS), (ALPHA * 1.001, INCONCLUSIVE)):
        tests = pd.DataFrame({"model": ["m"], "p_math_above": [p], "p_category_above_holm": [1.0]})
        assert finding1.MathHasHighestEntropy.verdicts(tests)["verdict"].iloc[0] == verdict
    # finding 2's one-sided tests: 1/35 < ALPHA, 1/6 > ALPHA
    assert finding2.smallest_permutation_p(3, 4) < ALPHA < finding2.smallest_permutation_p(2, 2)


# --- finding 1 ----------------------------------------------------------------------------------------------


def fits(differences: dict[str, float], se: float = 0.01, residual_sd: float = 1.0) -> MatchedLength:
    """A hand-built matched-length fit: math at 0, every other category at -difference (math minus it), each
    mean with standard error ``se`` (independent), many residual degrees of freedom."""
    categories = list(CATEGORIES)
    means = np.array([0.0 if c == MATH else -differences.get(c, 1.0) for c in categories])
    return MatchedLength(
        categories=categories,
        raw_means=means,
        means=means,
        covariance=np.eye(len(categories)) * se**2,
        df_resid=10_000.0,
        residual_sd=residual_sd,
        support=(8, 70),
        prompts_in_support=500,
        interaction_f=np.nan,
        interaction_p=np.nan,
        counts=np.full(len(categories), 45.0),
    )


def model_verdict(rule: finding1.Finding1Rule, by_scale: dict[str, MatchedLength]) -> str:
    tests = finding1.MathHasHighestEntropy.tests({"m": by_scale}, rule.refute_margin_sd)
    return finding1.MathHasHighestEntropy.verdicts(tests, rule.holm_holds_across_models)["verdict"].iloc[0]


def test_finding1_refutation_margin_is_the_registered_one() -> None:
    margin = finding1.REGISTERED_RULE.refute_margin_sd
    assert margin == 0 and "refuted by any category above math" in registered(MATH_RULE)
    scales = finding1.REGISTERED_RULE.scales
    # a category above math by a hair more than the margin (in residual SDs), shown beyond doubt: refuted;
    # by a hair less: not refuted. The same code at the earlier rule's 0.5 SD moves the boundary with it.
    for rule in (finding1.REGISTERED_RULE, finding1.RULE_BEFORE_C0E16E4):
        m = rule.refute_margin_sd
        above = {scale: fits({"creative_writing": -(m + 0.1)}) for scale in scales}
        below = {scale: fits({"creative_writing": -(m - 0.1)}) for scale in scales}
        assert model_verdict(rule, above) == DOES_NOT_HOLD
        assert model_verdict(rule, below) != DOES_NOT_HOLD


def test_finding1_needs_both_registered_scales() -> None:
    scales = finding1.REGISTERED_RULE.scales
    assert set(scales) == set(finding1.FINDING1_SCALES) and len(scales) == 2
    text = registered(MATH_RULE)
    assert all(description in text for description in finding1.FINDING1_SCALES.values())
    highest = fits({})  # math 1 above every category, beyond doubt
    lowest = fits({c: -1.0 for c in CATEGORIES})  # every category 1 above math
    first, second = scales
    rule = finding1.REGISTERED_RULE
    assert model_verdict(rule, {first: highest, second: highest}) == HOLDS
    assert model_verdict(rule, {first: highest, second: lowest}) == INCONCLUSIVE  # the scales disagree
    assert model_verdict(rule, {first: lowest, second: lowest}) == DOES_NOT_HOLD


def test_finding1_holds_without_holm_across_models_as_registered() -> None:
    assert not finding1.REGISTERED_RULE.holm_holds_across_models and "no correction needed" in registered(MATH_RULE)
    p = ALPHA * 0.6  # below ALPHA in each of 3 models; Holm across them would make it 1.8 ALPHA
    tests = pd.DataFrame({"model": ["a", "b", "c"], "p_math_above": [p] * 3, "p_category_above_holm": [1.0] * 3})
    assert (finding1.MathHasHighestEntropy.verdicts(tests)["verdict"] == HOLDS).all()
    earlier = finding1.MathHasHighestEntropy.verdicts(tests, holm_holds_across_models=True)
    assert (earlier["verdict"] == INCONCLUSIVE).all()


def test_finding1_compares_the_categories_net_of_the_registered_covariates() -> None:
    covariates = finding1.REGISTERED_RULE.covariates
    text = registered(MATH_RULE)
    assert all(finding1.COVARIATE_WORDS[c] in text for c in covariates)
    # entropy made of the covariates alone (math prompts have more of them) and a length curve: net of the
    # registered covariates math equals every category; without them math looks higher
    prompts = synthetic({"M": ("decoder", 100)}, per_category=20).pipe(matched_length.with_surface_covariates)
    is_math = (prompts["category"] == MATH).to_numpy()
    rng = np.random.default_rng(0)
    prompts["n_question_marks"] = (rng.uniform(size=len(prompts)) < np.where(is_math, 0.9, 0.3)).astype(int)
    prompts["tokens_per_word"] = 1.2 + 0.3 * is_math + rng.uniform(0, 0.2, len(prompts))
    y = 2.0 * prompts["n_question_marks"] + 5.0 * prompts["tokens_per_word"] + 0.1 * prompts["n_tokens"]
    for scale in finding1.FINDING1_SCALES:
        prompts[scale] = y
    model = finding1.MathHasHighestEntropy.fit_model(prompts, covariates)
    net = model.primary["attention_entropy"].differences(MATH)["difference"]
    raw = model.length_only["attention_entropy"].differences(MATH)["difference"]
    assert np.abs(net).max() < 1e-6 and raw.min() > 1.0
    rank = int(np.linalg.matrix_rank(model.designs["primary"].design))
    # category x natural cubic spline with the registered degrees of freedom, plus one column per covariate
    assert f"{robustness.SPLINE_DF} degrees of freedom" in text
    assert rank == len(CATEGORIES) * (1 + robustness.SPLINE_DF) + len(covariates)


@pytest.mark.slow
def test_finding1_sizes_needed_are_the_registered_ones() -> None:
    text = registered(MATH_RULE)
    needs = MATH_RULE.needs
    assert f"at least {finding1.MIN_PROMPTS_PER_CATEGORY} prompts per category" in needs
    assert f"in at least {finding1.MIN_MODELS_FOR_CATEGORIES} models" in needs
    assert (
        f"at least {matched_length.MIN_PROMPTS_PER_LENGTH_QUARTER} prompts of every category in each quarter" in needs
    )
    assert f"each of the {len(CATEGORIES) - 1} other categories" in text
    two = {"A": ("encoder", 22), "B": ("decoder", 135)}
    minimum = finding1.MIN_PROMPTS_PER_CATEGORY
    many = synthetic(two, per_category=40)
    number = many["prompt_id"].str[-2:].astype(int)
    # at the registered count the count check passes (12 prompts may still fail the length checks), one fewer fails it
    at = MATH_RULE.why_not_testable(StudyData.from_metrics(many[number % 3 != 0], 1000, 0))
    assert at == ""
    exactly = many[number < minimum]
    assert f"prompts (needs {minimum})" not in MATH_RULE.why_not_testable(StudyData.from_metrics(exactly, 1000, 0))
    short = many[number < minimum - 1]
    assert f"has {minimum - 1} prompts (needs {minimum})" in MATH_RULE.why_not_testable(
        StudyData.from_metrics(short, 1000, 0)
    )
    one = many[many["display_name"] == "A"]
    assert f"needs {finding1.MIN_MODELS_FOR_CATEGORIES}" in MATH_RULE.why_not_testable(
        StudyData.from_metrics(one, 1000, 0)
    )
    # the length coverage: the registered count per quarter is enough, one fewer is not
    quarter = matched_length.MIN_PROMPTS_PER_LENGTH_QUARTER
    lengths = [start + k for start in (10, 30, 45, 60) for k in range(quarter)]  # each quarter of 10-62
    frame = pd.DataFrame({"category": ["x"] * len(lengths), "n_tokens": lengths})
    frame = pd.concat([frame, frame.assign(category="y")], ignore_index=True)
    assert matched_length.length_coverage_problem(frame) == ""
    fewer = frame.drop(index=1)  # x's first quarter one prompt short
    assert f"needs {quarter} in each" in matched_length.length_coverage_problem(fewer)


def test_finding1_states_the_prompt_sets_digit_free_categories(tmp_path) -> None:
    without, total = finding1.categories_without_digits()
    assert f"{without} of {total} categories have none" in registered(MATH_RULE)
    rows = [(f"{c}_{k}", c, "no digits here" if c != MATH else "2 + 2 = 4") for c in CATEGORIES for k in range(2)]
    file = tmp_path / "prompts.csv"
    pd.DataFrame(rows, columns=["prompt_id", "category", "text"]).to_csv(file, index=False)
    assert finding1.categories_without_digits(file) == (len(CATEGORIES) - 1, len(CATEGORIES))


# --- finding 2 ----------------------------------------------------------------------------------------------


def shifted(ratio: float, spread: float = 0.004) -> between_models.ShiftPermutationTest:
    """3 encoders and 4 decoders whose log model means differ by log(ratio), each group within ``spread``."""
    decoders = math.log(ratio) + spread * np.array([-1.0, -0.3, 0.3, 1.0])
    encoders = spread * np.array([-1.0, 0.0, 1.0])
    return between_models.ShiftPermutationTest.of(decoders, encoders)


def test_finding2_sparser_minimum_is_the_registered_one() -> None:
    minimum = finding2.SPARSER_MINIMUM
    assert f"'sparser' is a decoder/encoder ratio above {minimum}" in registered(SPARSITY_RULE)
    assert finding2.sparser_verdict(shifted(minimum * 1.02)) == HOLDS
    assert finding2.sparser_verdict(shifted(minimum / 1.02)) == DOES_NOT_HOLD
    assert finding2.sparser_verdict(shifted(minimum, spread=0.1)) == INCONCLUSIVE


def test_finding2_about_band_is_the_registered_one_around_the_papers_geometric_ratio() -> None:
    from helpers.study.reference import load_published

    cells = load_published("complete_analysis_results")
    per_model = np.log(cells.groupby(["Architecture", "Model"])["Max_Sparsity"].mean()).groupby(level=0).mean()
    geometric = math.exp(per_model["decoder"] - per_model["encoder"])
    low, high = findings.ABOUT_BAND
    assert (low, high) == pytest.approx((geometric / 2, geometric * 2))
    text = registered(SPARSITY_RULE)
    assert f"{rules.significant(low)}-{rules.significant(high)}" in text
    assert f"{rules.significant(geometric)} on its table" in text
    for edge in (low, high):
        assert finding2.about_verdict(shifted(edge * (1.02 if edge == low else 1 / 1.02))) == HOLDS
        assert finding2.about_verdict(shifted(edge * (1 / 1.02 if edge == low else 1.02))) == DOES_NOT_HOLD
    # the 'about' part is two one-sided tests at ALPHA: a (1 - 2 ALPHA) permutation interval
    assert f"the {1 - 2 * ALPHA:.0%} permutation interval" in text


def test_finding2_model_counts_and_the_smallest_permutation_p_are_the_registered_ones() -> None:
    per, total = finding2.MIN_MODELS_PER_ARCHITECTURE, finding2.MIN_MODELS_FOR_ARCHITECTURES
    test = between_models.ShiftPermutationTest.of(np.arange(total - per, dtype=float) + 10, np.arange(per, dtype=float))
    assert test.smallest_p() == test.p_above(0.0) == finding2.smallest_permutation_p(per, total - per)
    assert f"1/{round(1 / test.smallest_p())}" in SPARSITY_RULE.needs
    assert f"at least {per} encoders and {per} decoders and {total} models" in SPARSITY_RULE.needs
    names = {f"E{k}": ("encoder", 100) for k in range(per)} | {f"D{k}": ("decoder", 200) for k in range(total - per)}
    enough = StudyData.from_metrics(synthetic(names, per_category=2), 1000, 0)
    assert SPARSITY_RULE.why_not_testable(enough) == ""
    fewer = enough.restricted_to([*list(enough.models.index)[: per - 1], *[n for n in names if n.startswith("D")]])
    assert f"needs at least {per} of each" in SPARSITY_RULE.why_not_testable(fewer)
    nine = between_models.ShiftPermutationTest.of(np.zeros(4), np.zeros(5))
    assert len(nine.assignments) == math.comb(9, 4) <= between_models.PERMUTATION_ENUMERATION_LIMIT  # every assignment
    assert f"beyond {between_models.PERMUTATION_ENUMERATION_LIMIT:,} assignments" in registered(SPARSITY_RULE)


def test_finding2_decides_on_the_registered_primary_measure() -> None:
    assert finding2.PRIMARY_SPARSITY == "max_sparsity" and "the primary measure, the paper's S_max" in (
        SPARSITY_RULE.minimum_effect
    )
    names = {f"E{k}": ("encoder", 100) for k in range(3)} | {f"D{k}": ("decoder", 200) for k in range(4)}
    sparsity = {name: (0.05 if name.startswith("E") else 0.22) for name in names}  # S_max: decoders 4.4x
    table = synthetic(names, per_category=2, sparsity=sparsity)
    table["max_hoyer_sparsity"] = np.where(table["architecture"] == "decoder", 0.01, 0.5)  # Hoyer: the other way
    run = StudyData.from_metrics(table, 1000, 0)
    assert SPARSITY_RULE.verdict_on(run) == SPARSITY_RULE.assess(run).verdict == HOLDS


# --- finding 3 ----------------------------------------------------------------------------------------------


def gpt2_run(d_z: float, items: int = 2000) -> StudyData:
    """GPT-2 and one other model whose paired differences (other - GPT-2) have mean exactly ``d_z`` SDs."""
    rng = np.random.default_rng(0)
    noise = rng.normal(size=items)
    noise = (noise - noise.mean()) / noise.std(ddof=1)
    rows = []
    for name, values in (("GPT2-117M", np.zeros(items)), ("Other", d_z + noise)):
        for k, value in enumerate(values):
            rows.append(
                {"display_name": name, "model": name.lower(), "architecture": "decoder", "n_parameters": 1,
                 "prompt_id": f"p{k}", "category": "factual_questions", "final_activation": value}
            )  # fmt: skip
    return StudyData.from_metrics(pd.DataFrame(rows), 1000, 0)


def test_finding3_minimum_effect_is_the_registered_one() -> None:
    minimum = finding3.D_Z_MINIMUM
    assert f"d_z >= {minimum}" in GPT2_RULE.minimum_effect
    assert GPT2_RULE.assess(gpt2_run(minimum + 0.15)).verdict == DOES_NOT_HOLD
    assert GPT2_RULE.assess(gpt2_run(minimum - 0.15)).verdict == INCONCLUSIVE  # above GPT-2, but not by the minimum
    assert GPT2_RULE.assess(gpt2_run(-0.3)).verdict == HOLDS


def test_finding3_needs_the_registered_number_of_shared_items() -> None:
    items = rules.MIN_SHARED_ITEMS
    assert f"at least {items} shared items" in GPT2_RULE.needs
    assert GPT2_RULE.why_not_testable(gpt2_run(0.5, items)) == ""
    assert f"needs {items}" in GPT2_RULE.why_not_testable(gpt2_run(0.5, items - 1))


# --- finding 4 ----------------------------------------------------------------------------------------------


def size_run(order: list[int]) -> StudyData:
    """Models 1..n by size whose mean A_f has the given ranks (exact model means)."""
    rows = [
        {"display_name": f"M{k}", "model": f"m{k}", "architecture": "decoder", "n_parameters": (k + 1) * 10**6,
         "prompt_id": f"p{j}", "category": "factual_questions", "final_activation": float(rank)}
        for k, rank in enumerate(order) for j in range(2)
    ]  # fmt: skip
    return StudyData.from_metrics(pd.DataFrame(rows), 1000, 0)


def order_with_rho(n: int, rho: float, seed: int = 0) -> list[int]:
    """A random order of n ranks whose Spearman rho with 0..n-1 is ``rho`` (searched by random swaps)."""
    target = round((1 - rho) * (n**3 - n) / 6)
    rng = np.random.default_rng(seed)
    order = np.arange(n)
    for _ in range(1_000_000):
        total = int(((order - np.arange(n)) ** 2).sum())
        if total == target:
            return order.tolist()
        i, j = rng.choice(n, 2, replace=False)
        swapped = order.copy()
        swapped[[i, j]] = swapped[[j, i]]
        if abs(int(((swapped - np.arange(n)) ** 2).sum()) - target) <= abs(total - target) or rng.uniform() < 0.1:
            order = swapped
    raise AssertionError(f"no order of {n} with rho {rho}")


@pytest.mark.slow
def test_finding4_refutes_at_the_registered_rho_with_five_models() -> None:
    n = finding4.MIN_MODELS_FOR_ORDER
    assert f"With at least {n} models" in SIZE_RULE.rule and f"only |rho| = 1 with {n}" in SIZE_RULE.rule
    assert finding4.smallest_rho_that_refutes(n) == 1.0
    assert SIZE_RULE.assess(size_run(list(range(n)))).verdict == DOES_NOT_HOLD  # a perfect order
    almost = list(range(n))
    almost[0], almost[1] = almost[1], almost[0]  # rho = 0.9, the next value rho can take
    assert SIZE_RULE.assess(size_run(almost)).verdict == INCONCLUSIVE
    assert SIZE_RULE.assess(size_run(list(range(n - 1)))).verdict == NOT_TESTABLE
    for models in finding4.SHOWN_MODELS:
        rho = finding4.smallest_rho_that_refutes(models)
        just = order_with_rho(models, rho)
        assert SIZE_RULE.assess(size_run(just)).verdict == DOES_NOT_HOLD
        step = 12 / (models**3 - models)  # the next smaller value rho can take
        if rho - step > 0:
            assert SIZE_RULE.assess(size_run(order_with_rho(models, rho - step))).verdict == INCONCLUSIVE


def test_finding4_holds_only_from_the_registered_number_of_models_and_rho() -> None:
    n = finding4.MODELS_TO_SUPPORT
    boundary = finding4.largest_rho_that_holds(n)
    assert f"'Holds' is possible only from {n} models" in SIZE_RULE.rule
    assert f"|rho| <= {rules.significant(boundary, 2)}" in SIZE_RULE.rule
    step = 12 / (n**3 - n)  # the values rho can take over n models are this far apart
    assert step < boundary < 2 * step  # 0 and +-step hold, +-2 step does not
    assert SIZE_RULE.assess(size_run(order_with_rho(n, 0.0))).verdict == HOLDS
    assert SIZE_RULE.assess(size_run(order_with_rho(n, step))).verdict == HOLDS
    assert SIZE_RULE.assess(size_run(order_with_rho(n, 2 * step))).verdict == INCONCLUSIVE
    assert SIZE_RULE.assess(size_run(order_with_rho(n - 1, 0.0))).verdict == INCONCLUSIVE  # one model fewer
    assert finding4.largest_rho_that_holds(n - 1) == 0.0


def test_finding4_power_figure_is_the_simulated_rule() -> None:
    needed = finding4.models_for_power(HOLDS, finding4.NO_LINK)
    assert f"needs {needed} models" in SIZE_RULE.rule and f"{needed} for 80% power" in SIZE_RULE.needs
    # the simulation's draws are Spearman's rho of the planted truth: with no link their variance is 1 / (n - 1)
    # exactly; with a link their mean is Moran's 6 / (pi (n + 1)) (asin(r) + (n - 2) asin(r / 2)), r the Pearson
    rng = np.random.default_rng(7)
    for n in (5, needed):
        null = finding4.simulated_rhos(n, 0.0, 200_000, rng)
        assert null.mean() == pytest.approx(0.0, abs=0.005) and null.var() == pytest.approx(1 / (n - 1), rel=0.02)
        linked = finding4.simulated_rhos(n, 0.5, 200_000, rng)
        pearson = 2 * math.sin(math.pi * 0.5 / 6)
        moran = 6 / (math.pi * (n + 1)) * (math.asin(pearson) + (n - 2) * math.asin(pearson / 2))
        assert linked.mean() == pytest.approx(moran, abs=0.004)
    # its verdicts are the rule's: the vectorised path equals spearman_over_models + verdict_from, draw by draw
    for n in (5, 16, needed):
        for _ in range(30):
            x, y = rng.normal(size=(2, n))
            result = between_models.spearman_over_models(pd.Series(x), pd.Series(y), p_value=False)
            assert SIZE_RULE.verdict_from(result) == finding4.verdicts_of_rho(np.array([result["rho"]]), n)[0]
    # an independent simulation (another seed) agrees: 80% at the figure, not one model earlier
    draws = finding4.POWER_DRAWS
    error = 3 * math.sqrt(0.8 * 0.2 / draws)
    assert finding4.verdict_shares(needed, finding4.NO_LINK, draws, seed=11)[HOLDS] >= 0.8 - error
    assert finding4.verdict_shares(needed - 1, finding4.NO_LINK, draws, seed=11)[HOLDS] < 0.8 + error
    first = finding4.verdict_shares(finding4.MODELS_TO_SUPPORT, finding4.NO_LINK)[HOLDS]
    assert f"{first:.1%} of the time" in SIZE_RULE.rule and 0.005 < first < 0.03
