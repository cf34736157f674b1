"""Planted truths for the findings' rules: how often each rule gives each verdict when the truth is known.

The same simulations serve ``tests/unit/test_calibration.py`` (which asserts the error rates and
the power) and notebook 06 (which shows them as the operating-characteristics table). Each
scenario plants a truth into synthetic data shaped like the study's (prompts with token counts
and surface features; models as replicates for the architecture and size findings) and applies
the finding's own decision code to each simulated run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from helpers.stats import between_models, matched_length
from helpers.stats.findings import finding1, finding2, finding4
from helpers.stats.findings.rules import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE
from helpers.stats.robustness import MATH
from helpers.study import CATEGORIES

PER_CATEGORY = 45
"""Prompts per category in the simulated runs, as in the study's prompt set."""
VERDICT_COLUMNS = {HOLDS: "holds", DOES_NOT_HOLD: "does_not_hold", INCONCLUSIVE: "inconclusive"}


@dataclass(frozen=True)
class Scenario:
    """A planted truth: its name, the verdict a right rule gives (or None: neither 'holds' nor 'does not
    hold' is right), and the verdicts that are errors."""

    finding: int
    name: str
    right: str | None
    wrong: tuple[str, ...]


# --- finding 1: categories within models ----------------------------------------------------------------


def synthetic_prompts(per_category: int = PER_CATEGORY, math_longer: int = 0, seed: int = 0) -> pd.DataFrame:
    """A prompt set like the study's: every category spread over 8-70 tokens, with surface features.

    Math prompts carry digits (4.4 on average, as ours) and slightly more tokens per word; columns
    ``category, n_tokens, n_words, n_digits, n_question_marks, tokens_per_word``. ``math_longer``
    adds tokens to every math prompt (a length-only confound).
    """
    rng = np.random.default_rng(seed)
    rows = []
    for category in CATEGORIES:
        for k in range(per_category):
            n = 8 + int((k + rng.uniform()) * 62 / per_category) + (math_longer if category == MATH else 0)
            is_math = category == MATH
            words = max(1, round(n / (1.33 if is_math else 1.2) + rng.normal(0, 1)))
            rows.append(
                {
                    "category": category,
                    "n_tokens": n,
                    "n_words": words,
                    "n_digits": int(rng.poisson(4.4)) if is_math else int(rng.poisson(0.3)),
                    "n_question_marks": int(rng.uniform() < 0.5),
                }
            )
    return matched_length.with_surface_covariates(pd.DataFrame(rows))


def planted_shift(prompts: pd.DataFrame, shifts: dict[str, float], tokens_per_word_effect: float = 0.0) -> np.ndarray:
    """Each prompt's planted shift in noise SDs: its category's (``shifts``; others 0) plus
    ``tokens_per_word_effect`` SDs per token per word above 1.2 (a surface effect, not a category effect)."""
    surface = tokens_per_word_effect * (prompts["tokens_per_word"].to_numpy() - 1.2)
    return prompts["category"].map(shifts).fillna(0.0).to_numpy() + surface


def simulate_scales(prompts: pd.DataFrame, shift: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Both of finding 1's scales for one model: a length curve, heteroskedastic noise (correlated 0.5 between
    the scales) and each prompt's planted ``shift`` (n,) in noise SDs (``planted_shift``)."""
    n = prompts["n_tokens"].to_numpy(float)
    first, second = rng.normal(size=(2, len(n)))
    second = 0.5 * first + math.sqrt(0.75) * second
    summed_sd = 0.5 + n / 70
    return {
        "attention_entropy": n * np.log(n) / 10 + summed_sd * (shift + first),
        "attention_entropy_normalized": 0.9 - 0.05 * np.log(n) + 0.04 * (shift + second),
    }


FINDING1_SCENARIOS: dict[str, tuple[Scenario, dict[str, float], dict[str, float]]] = {
    # name: (scenario, category shifts in SDs, options for synthetic_prompts / simulate_scales)
    "complete null": (Scenario(1, "complete null: every category alike", None, (HOLDS, DOES_NOT_HOLD)), {}, {}),
    "tied": (
        Scenario(
            1,
            "least favourable for 'holds': math tied with logical_puzzles, both 2 SD above the rest",
            None,
            (HOLDS, DOES_NOT_HOLD),
        ),
        {MATH: 2.0, "logical_puzzles": 2.0},
        {},
    ),
    **{
        f"math +{effect}": (
            Scenario(1, f"math {effect} SD above every other category", HOLDS, (DOES_NOT_HOLD,)),
            {MATH: effect},
            {},
        )
        for effect in (0.5, 0.8, 1.0)
    },
    **{
        f"rival +{effect}": (
            Scenario(1, f"commonsense_reasoning {effect} SD above math", DOES_NOT_HOLD, (HOLDS,)),
            {"commonsense_reasoning": effect},
            {},
        )
        for effect in (0.5, 0.8, 1.0)
    },
    "length only": (
        Scenario(1, "length only: math prompts 15 tokens longer, no category effect", None, (HOLDS, DOES_NOT_HOLD)),
        {},
        {"math_longer": 15},
    ),
    "surface only": (
        Scenario(
            1,
            "surface only: entropy up 1 SD per 0.1 tokens per word (math prompts have more), no category effect",
            None,
            (HOLDS, DOES_NOT_HOLD),
        ),
        {},
        {"tokens_per_word_effect": 10.0},
    ),
}
"""Finding 1's planted truths."""


def finding1_verdicts(
    scenario: str,
    models: int,
    seeds: int,
    seed: int = 0,
    decision: finding1.Finding1Rule = finding1.REGISTERED_RULE,
) -> list[str]:
    """The run verdicts of finding 1's rule (``decision``: the registered one unless another, such as the rule
    before c0e16e4) on ``seeds`` simulated runs of ``models`` models each."""
    _, shifts, options = FINDING1_SCENARIOS[scenario]
    prompts = synthetic_prompts(math_longer=int(options.get("math_longer", 0)), seed=seed)
    design = matched_length.matched_length_design(prompts, MATH, decision.covariates)
    rule = finding1.MathHasHighestEntropy
    shift = planted_shift(prompts, shifts, options.get("tokens_per_word_effect", 0.0))
    rng = np.random.default_rng(seed + 1)
    verdicts = []
    for _ in range(seeds):
        fits = {
            f"model {m}": {
                scale: design.fit(y)
                for scale, y in simulate_scales(prompts, shift, rng).items()
                if scale in decision.scales
            }
            for m in range(models)
        }
        per_model = rule.verdicts(rule.tests(fits, decision.refute_margin_sd), decision.holm_holds_across_models)
        verdicts.append(rule.overall(per_model["verdict"].tolist()))
    return verdicts


# --- finding 2: architectures, models as replicates ------------------------------------------------------


FINDING2_SCENARIOS: dict[str, tuple[Scenario, float, float]] = {
    # name: (scenario, true decoder/encoder ratio, SD of log model means)
    "boundary": (
        Scenario(2, f"'sparser' at its boundary: ratio {finding2.SPARSER_MINIMUM}, SD 0.5", None, (HOLDS,)),
        finding2.SPARSER_MINIMUM,
        0.5,
    ),
    "no difference": (Scenario(2, "'sparser': no difference (ratio 1), SD 0.5", DOES_NOT_HOLD, (HOLDS,)), 1.0, 0.5),
    "paper's ratio, small spread": (
        Scenario(2, "'sparser': the paper's geometric ratio, SD 0.3", HOLDS, (DOES_NOT_HOLD,)),
        finding2.PAPER_SPARSITY_RATIO_GEOMETRIC,
        0.3,
    ),
    "paper's ratio, the paper's spread": (
        Scenario(2, "'sparser': the paper's geometric ratio, SD 1.21 (between its decoders)", HOLDS, (DOES_NOT_HOLD,)),
        finding2.PAPER_SPARSITY_RATIO_GEOMETRIC,
        1.21,
    ),
    "about: band edge": (
        Scenario(2, f"'about': ratio at the band's lower end ({finding2.ABOUT_BAND[0]:.3g}), SD 0.3", None, (HOLDS,)),
        finding2.ABOUT_BAND[0],
        0.3,
    ),
    "about: inside": (
        Scenario(2, "'about': the paper's geometric ratio, SD 0.2", HOLDS, (DOES_NOT_HOLD,)),
        finding2.PAPER_SPARSITY_RATIO_GEOMETRIC,
        0.2,
    ),
}
"""Finding 2's planted truths; 'boundary' to 'the paper's spread' judge 'sparser', the others 'about'."""


def finding2_verdicts(scenario: str, encoders: int, decoders: int, seeds: int, seed: int = 0) -> list[str]:
    """The verdicts of the part of finding 2 a scenario judges, on ``seeds`` simulated sets of model means."""
    described, ratio, sd = FINDING2_SCENARIOS[scenario]
    judge: Callable[[between_models.ShiftPermutationTest], str] = (
        finding2.about_verdict if scenario.startswith("about") else finding2.sparser_verdict
    )
    rng = np.random.default_rng(seed)
    verdicts = []
    template = between_models.ShiftPermutationTest.of(np.zeros(decoders), np.zeros(encoders))
    for _ in range(seeds):
        first = math.log(ratio) + sd * rng.normal(size=decoders)
        second = sd * rng.normal(size=encoders)
        verdicts.append(judge(between_models.ShiftPermutationTest(first, second, template.assignments)))
    return verdicts


# --- finding 4: size, models as replicates ----------------------------------------------------------------


FINDING4_SCENARIOS: dict[str, tuple[Scenario, float]] = {
    # name: (scenario, true Spearman rho)
    "no link": (Scenario(4, "no link (rho = 0)", HOLDS, (DOES_NOT_HOLD,)), 0.0),
    "boundary": (
        Scenario(4, f"a link at the minimum (rho = {finding4.MONOTONIC_MINIMUM})", None, (HOLDS, DOES_NOT_HOLD)),
        finding4.MONOTONIC_MINIMUM,
    ),
    "strong link": (Scenario(4, "a strong link (rho = 0.95)", DOES_NOT_HOLD, (HOLDS,)), 0.95),
}


def finding4_verdicts(scenario: str, models: int, seeds: int, seed: int = 0) -> list[str]:
    """Finding 4's verdicts on ``seeds`` simulated sets of (parameter count, mean A_f) over ``models`` models."""
    _, rho = FINDING4_SCENARIOS[scenario]
    pearson = 2 * math.sin(math.pi * rho / 6)  # the normal correlation whose Spearman rho is ``rho``
    rng = np.random.default_rng(seed)
    finding = finding4.NoMonotonicParameterLink()
    verdicts = []
    for _ in range(seeds):
        x, noise = rng.normal(size=(2, models))
        y = pearson * x + math.sqrt(1 - pearson**2) * noise
        verdicts.append(
            finding.verdict_from(between_models.spearman_over_models(pd.Series(x), pd.Series(y), p_value=False))
        )
    return verdicts


# --- the table --------------------------------------------------------------------------------------------


def wrong_share(scenario: Scenario, verdicts: list[str]) -> float:
    """The share of ``verdicts`` that are errors under ``scenario``."""
    return sum(verdicts.count(v) for v in scenario.wrong) / len(verdicts)


def at_most(share: float, runs: int, rate: float = 0.05) -> bool:
    """Whether an observed error share over ``runs`` simulated runs is consistent with a true rate of at most
    ``rate``: the count is within the binomial 99th percentile at ``rate`` (the tests' criterion)."""
    return round(share * runs) <= stats.binom.ppf(0.99, runs, rate)


def summarise(scenario: Scenario, verdicts: list[str], setting: str) -> dict[str, object]:
    """One row of the operating-characteristics table."""
    share = {column: verdicts.count(verdict) / len(verdicts) for verdict, column in VERDICT_COLUMNS.items()}
    wrong = wrong_share(scenario, verdicts)
    return {
        "finding": scenario.finding,
        "planted_truth": scenario.name,
        "setting": setting,
        "right_verdict": scenario.right or "neither 'holds' nor 'does not hold'",
        **share,
        "wrong_verdicts": wrong,
        "power": share[VERDICT_COLUMNS[scenario.right]] if scenario.right else np.nan,
        "simulated_runs": len(verdicts),
    }


def operating_characteristics(
    finding1_models: int, encoders: int, decoders: int, size_models: int, seeds: int = 200
) -> pd.DataFrame:
    """Every scenario's verdict shares under the rules, at the given run size (notebook 06 passes this run's)."""
    rows = []
    for name, (scenario, _, _) in FINDING1_SCENARIOS.items():
        verdicts = finding1_verdicts(name, finding1_models, seeds)
        rows.append(summarise(scenario, verdicts, f"{finding1_models} model(s), {PER_CATEGORY} prompts per category"))
    for name, (scenario, _, _) in FINDING2_SCENARIOS.items():
        verdicts = finding2_verdicts(name, encoders, decoders, seeds * 5)
        rows.append(summarise(scenario, verdicts, f"{encoders} encoders vs {decoders} decoders"))
    for name, (scenario, _) in FINDING4_SCENARIOS.items():
        verdicts = finding4_verdicts(name, size_models, seeds * 5)
        rows.append(summarise(scenario, verdicts, f"{size_models} models"))
    return pd.DataFrame(rows)
