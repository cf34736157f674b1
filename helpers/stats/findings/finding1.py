"""Finding 1: mathematical reasoning prompts have the highest attention entropy H_att (prompts within each
model, at matched length, on two pre-specified scales)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from helpers.stats import matched_length, robustness
from helpers.stats.findings.rules import (
    ALPHA,
    DOES_NOT_HOLD,
    HOLDS,
    INCONCLUSIVE,
    MIN_MODELS_FOR_CATEGORIES,
    MIN_PROMPTS_PER_CATEGORY,
    NOT_TESTABLE,
    Assessment,
    Finding,
    holm,
    significant,
)
from helpers.stats.robustness import MATH, StudyData
from helpers.study import CATEGORIES

FINDING1_SCALES: dict[str, str] = {
    "attention_entropy": "summed H_att (the paper's)",
    "attention_entropy_normalized": "per-row normalised H_att",
}
"""Finding 1's two pre-specified scales: the paper's sum over query rows, which grows with length, and the
mean over query rows of row entropy / log(keys allowed), which does not."""
FINDING1_COVARIATES = ("n_question_marks", "tokens_per_word")
"""Surface covariates in finding 1's primary model. Digit counts are a sensitivity check only: most categories
have no digits (``categories_without_digits``), so adjusting for them compares math with digit-free math prompts
the set barely has (an extrapolation that cost most of the power in the rule's calibration: 0.28 instead of 0.8 at
0.8 SD)."""
COVARIATE_WORDS: dict[str, str] = {
    "n_question_marks": "question marks",
    "tokens_per_word": "tokens per word",
    "n_digits": "digit counts",
}
"""How the rule's text names each covariate."""


@dataclass(frozen=True)
class Finding1Rule:
    """What finding 1's decision depends on, as values: the scales on which math must be highest (all of them,
    for 'holds' and for 'does not hold'), the surface covariates of the fit, how far above math (in residual SDs of
    the fit) a category must be to refute, and whether 'holds' is Holm-adjusted across models.

    ``REGISTERED_RULE`` is the rule that decides; an earlier rule stays runnable as another value
    (``RULE_BEFORE_C0E16E4``), so a deviation's verdict under it is computed, never typed."""

    scales: tuple[str, ...] = tuple(FINDING1_SCALES)
    covariates: tuple[str, ...] = FINDING1_COVARIATES
    refute_margin_sd: float = 0.0
    holm_holds_across_models: bool = False


REGISTERED_RULE = Finding1Rule()
"""Finding 1's registered rule (c0e16e4, 2026-11-29): both scales, question marks and tokens per word, refuted by
any category above math (no margin), 'holds' an intersection-union test in each model (no Holm across models)."""
RULE_BEFORE_C0E16E4 = Finding1Rule(
    scales=("attention_entropy",), covariates=(), refute_margin_sd=0.5, holm_holds_across_models=True
)
"""The rule as committed with the three-model run (7a725e3, 2026-11-23) and changed by c0e16e4: the summed scale
only, no surface covariates, refuted only by a category at least 0.5 residual SD above math, 'holds' Holm-adjusted
across models (``deviations``)."""


def categories_without_digits(prompts_file: Path | None = None) -> tuple[int, int]:
    """How many of the prompt set's categories have no digit in any prompt, and how many categories it has
    (the default study's prompt file unless ``prompts_file``)."""
    from helpers.base import paths
    from helpers.study import StudyParams, load_prompts, prompt_covariates

    path = prompts_file or paths.ROOT / StudyParams.model_fields["prompts"].default
    prompts = load_prompts(path)
    digits = prompt_covariates(prompts["text"])["n_digits"].groupby(prompts["category"]).sum()
    return int((digits == 0).sum()), len(digits)


def _with_margin(result: matched_length.MatchedLength, arrays: dict[str, Any], margin_sd: float) -> dict[str, Any]:
    """``arrays`` (``MatchedLength.difference_arrays``) with ``p_category_above`` tested against a category above
    math by more than ``margin_sd`` residual SDs of ``result`` (unchanged at 0: no margin)."""
    if margin_sd == 0:
        return arrays
    shifted = arrays["difference"] + margin_sd * result.residual_sd
    se = arrays["se"]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se > 0, shifted / se, np.sign(shifted) * np.inf)
    return arrays | {"p_category_above": stats.t.cdf(np.nan_to_num(t, nan=0.0), result.df_resid)}


@dataclass(frozen=True)
class Finding1Model:
    """One model's fits for finding 1, per scale: the primary fit (length and ``FINDING1_COVARIATES``) and two
    sensitivity views, length only and the primary plus digit counts."""

    primary: dict[str, matched_length.MatchedLength]
    length_only: dict[str, matched_length.MatchedLength]
    with_digits: dict[str, matched_length.MatchedLength]
    designs: dict[str, matched_length.MatchedLengthDesign]  # "primary", "length_only", "with_digits"


class MathHasHighestEntropy(Finding):
    number = 1
    claim = "Mathematical reasoning prompts have the highest attention entropy H_att"
    unit = "prompts within each model (every model must agree for 'holds')"

    def __init__(self, decision: Finding1Rule = REGISTERED_RULE) -> None:
        self.decision = decision

    def _scales_words(self) -> str:
        return {1: "its scale", 2: "both scales"}.get(len(self.decision.scales), "every scale")

    @property
    def minimum_effect(self) -> str:  # type: ignore[override]
        margin = self.decision.refute_margin_sd
        if margin == 0:
            return (
                "none either way: 'highest' is math above every other category, refuted by any category above math, "
                f"each shown at the {ALPHA:.0%} level on {self._scales_words()}"
            )
        return (
            "'highest' is shown by math above every other category; it is refuted only by a category at least "
            f"{margin:g} residual SD above math (the SD of H_att between prompts of one category at equal length)"
        )

    @property
    def rule(self) -> str:  # type: ignore[override]
        decision, others = self.decision, len(CATEGORIES) - 1
        scales = [FINDING1_SCALES.get(scale, scale) for scale in decision.scales]
        on_scales = (
            f"on each of {len(scales)} pre-specified scales ({' and '.join(scales)})"
            if len(scales) > 1
            else f"on the pre-specified scale ({scales[0]})"
        )
        covariates = " and ".join(COVARIATE_WORDS.get(c, c) for c in decision.covariates)
        surface = (
            f", plus the surface covariates {covariates}"
            + (
                " (math prompts are split into more tokens per word)"
                if "tokens_per_word" in decision.covariates
                else ""
            )
            if decision.covariates
            else ""
        )
        both = self._scales_words()
        refute = (
            f"some category is above math on {both}"
            + (" (that category's larger p of the two)" if len(scales) > 1 else "")
            if decision.refute_margin_sd == 0
            else f"some category is above math by at least {decision.refute_margin_sd:g} residual SD on {both}"
        )
        holds_multiplicity = (
            "an intersection-union test, Holm-adjusted across models"
            if decision.holm_holds_across_models
            else f"an intersection-union test at {ALPHA:.0%}: no correction needed"
        )
        without_digits, categories = categories_without_digits()
        digits = (
            ""
            if "n_digits" in decision.covariates
            else f"Digit counts are not in the primary model ({without_digits} of {categories} categories have none, "
            "so adjusting for them extrapolates math to digit-free prompts and loses most of the power); math's rank "
            "with digits adjusted is reported as a sensitivity check"
        )
        return (
            f"Per model, {on_scales}, each category's mean is predicted at the same prompts: category x natural cubic "
            f"spline in token count ({robustness.SPLINE_DF} degrees of freedom; length may act differently per "
            f"category){surface}, HC3 errors, averaged over the prompts within the length range every category "
            f"covers. Math minus each other category is tested one-sided both ways. It holds in a model if math is "
            f"above each of the {others} other categories on {both} ({holds_multiplicity}); it does not hold in a "
            f"model if {refute}, Holm-adjusted over every category and model of the run; inconclusive otherwise"
            + (" (including when the scales disagree)" if len(scales) > 1 else "")
            + ". Over the run: holds if it holds in every model, does not hold if it does not hold in some model, "
            f"inconclusive otherwise. Error rates: if math is not above every other category on {both} in every "
            f"model, 'holds' comes out at most {ALPHA:.0%} of the time; if no category is above math "
            + ("" if decision.refute_margin_sd == 0 else f"by {decision.refute_margin_sd:g} residual SD ")
            + f"on {both} in any model, 'does not hold' comes out at most {ALPHA:.0%} of the time"
            + (f". {digits}" if digits else "")
        )

    @property
    def needs(self) -> str:  # type: ignore[override]
        return (
            f"prompt-level values with token counts and surface covariates in at least {MIN_MODELS_FOR_CATEGORIES} "
            f"models, each with math and another category, at least {MIN_PROMPTS_PER_CATEGORY} prompts per "
            f"category, and at least {matched_length.MIN_PROMPTS_PER_LENGTH_QUARTER} prompts of every category in each "
            "quarter of the length range all categories share"
        )

    def _model_problem(self, frame: pd.DataFrame) -> str:
        counts = frame["category"].value_counts()
        if MATH not in counts or len(counts) < 2:
            return "needs math and at least one other category"
        if counts.min() < MIN_PROMPTS_PER_CATEGORY:
            return f"{counts.idxmin()} has {counts.min()} prompts (needs {MIN_PROMPTS_PER_CATEGORY})"
        return matched_length.length_coverage_problem(frame)

    @staticmethod
    def model_frame(frame: pd.DataFrame) -> pd.DataFrame:
        """One model's rows that finding 1 can use: finite token counts, scales and covariates."""
        frame = matched_length.with_surface_covariates(frame)
        columns = ["n_tokens", *FINDING1_SCALES, *robustness.PROMPT_COVARIATES]  # digits too, for the sensitivity
        return frame[np.isfinite(frame[columns].to_numpy(float)).all(axis=1)]

    @staticmethod
    def fit_model(frame: pd.DataFrame, covariates: tuple[str, ...] = FINDING1_COVARIATES) -> Finding1Model:
        """Both scales, primary (with ``covariates``) and length-only fits, of one model's usable rows
        (``model_frame``)."""
        designs = {
            "primary": matched_length.matched_length_design(frame, MATH, covariates),
            "length_only": matched_length.matched_length_design(frame, MATH),
            "with_digits": matched_length.matched_length_design(frame, MATH, (*FINDING1_COVARIATES, "n_digits")),
        }
        fits = {
            kind: {scale: design.fit(frame[scale].to_numpy(float)) for scale in FINDING1_SCALES}
            for kind, design in designs.items()
        }
        return Finding1Model(fits["primary"], fits["length_only"], fits["with_digits"], designs)

    def comparisons(self, data: StudyData) -> dict[str, Finding1Model | str]:
        """Each model's fits, or why it has none (computed once per data set and set of covariates)."""
        key = ("finding1", self.decision.covariates)
        if key not in data.cache:
            result: dict[str, Finding1Model | str] = {}
            for model in data.models.index:
                frame = data.for_model(model)
                missing = [c for c in ("n_tokens", "n_words", *FINDING1_SCALES) if c not in frame]
                missing += [c for c in robustness.PROMPT_COVARIATES if c != "tokens_per_word" and c not in frame]
                if missing:
                    result[model] = f"no {', '.join(missing)}"
                    continue
                frame = self.model_frame(frame)
                problem = self._model_problem(frame)
                if not problem:
                    try:
                        result[model] = self.fit_model(frame, self.decision.covariates)
                        continue
                    except matched_length.LengthCoverageError as error:
                        problem = str(error)
                result[model] = problem
            data.cache[key] = result
        return data.cache[key]

    def why_not_testable(self, data: StudyData) -> str:
        if data.item_kind != "prompts" or "n_tokens" not in data.table:
            return f"the items are {data.item_kind}, without token counts, so length cannot be matched"
        results = self.comparisons(data)
        problems = {model: r for model, r in results.items() if isinstance(r, str)}
        if len(results) - len(problems) < MIN_MODELS_FOR_CATEGORIES:
            reasons = "; ".join(f"{model}: {problem}" for model, problem in problems.items())
            return (
                f"{len(results) - len(problems)} model(s) can be tested, and a claim about prompts in language "
                f"models needs {MIN_MODELS_FOR_CATEGORIES}" + (f" ({reasons})" if reasons else "")
            )
        return ""

    @staticmethod
    def tests(fits: dict[str, dict[str, matched_length.MatchedLength]], refute_margin_sd: float = 0.0) -> pd.DataFrame:
        """One row per model and other category: math minus the category on each scale of ``fits`` (primary fits),
        and the joined one-sided p-values (``p_math_above``: larger of the scales; ``p_category_above``: likewise,
        of 'the category is above math by more than ``refute_margin_sd`` residual SDs of the scale's fit')."""
        columns: dict[str, list[Any]] = {}
        for model, by_scale in fits.items():
            per_scale = {
                scale: _with_margin(result, result.difference_arrays(MATH), refute_margin_sd)
                for scale, result in by_scale.items()
            }
            first = next(iter(per_scale.values()))
            block: dict[str, Any] = {"model": [model] * len(first["category"]), "category": first["category"]}
            for scale, arrays in per_scale.items():
                block[f"math_minus_category_{scale}"] = arrays["difference"]
                block[f"se_{scale}"] = arrays["se"]
                block[f"p_math_above_{scale}"] = arrays["p_reference_above"]
                block[f"p_category_above_{scale}"] = arrays["p_category_above"]
            block["p_math_above"] = np.max([a["p_reference_above"] for a in per_scale.values()], axis=0)
            block["p_category_above"] = np.max([a["p_category_above"] for a in per_scale.values()], axis=0)
            for name, values in block.items():
                columns.setdefault(name, []).extend(list(values))
        tests = pd.DataFrame(columns)
        tests["p_category_above_holm"] = holm(tests["p_category_above"].tolist())
        return tests

    @staticmethod
    def verdicts(tests: pd.DataFrame, holm_holds_across_models: bool = False) -> pd.DataFrame:
        """Per model: the intersection-union p for 'holds' (Holm-adjusted across models if asked), the smallest
        Holm p for 'does not hold', the verdict."""
        models = list(dict.fromkeys(tests["model"]))
        codes = pd.Categorical(tests["model"], categories=models).codes
        above, refute = tests["p_math_above"].to_numpy(float), tests["p_category_above_holm"].to_numpy(float)
        p_highest = np.array([above[codes == k].max() for k in range(len(models))])
        if holm_holds_across_models:
            p_highest = np.array(holm(p_highest.tolist()))
        p_refute = np.array([refute[codes == k].min() for k in range(len(models))])
        verdict = np.where(p_highest < ALPHA, HOLDS, np.where(p_refute < ALPHA, DOES_NOT_HOLD, INCONCLUSIVE))
        return pd.DataFrame(
            {"p_math_highest": p_highest, "p_some_category_above_holm": p_refute, "verdict": verdict},
            index=pd.Index(models, name="model"),
        )

    @staticmethod
    def overall(verdicts: list[str]) -> str:
        """The run's verdict from the per-model ones."""
        if verdicts and all(v == HOLDS for v in verdicts):
            return HOLDS
        return DOES_NOT_HOLD if DOES_NOT_HOLD in verdicts else INCONCLUSIVE

    def per_model(self, data: StudyData) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The rule (``decision``) applied in each testable model: its tests and its per-model verdicts."""
        comparisons = {m: r for m, r in self.comparisons(data).items() if not isinstance(r, str)}
        fits = {m: {scale: r.primary[scale] for scale in self.decision.scales} for m, r in comparisons.items()}
        tests = self.tests(fits, self.decision.refute_margin_sd)
        return tests, self.verdicts(tests, self.decision.holm_holds_across_models)

    @robustness.single_threaded_blas
    def verdict_on(self, data: StudyData) -> str:
        """The run's verdict under this rule (``decision``), without the evidence tables."""
        if self.why_not_testable(data):
            return NOT_TESTABLE
        return self.overall(self.per_model(data)[1]["verdict"].tolist())

    def decide(self, data: StudyData) -> Assessment:
        comparisons = {m: r for m, r in self.comparisons(data).items() if not isinstance(r, str)}
        tests, per_model = self.per_model(data)
        primary_scale = next(iter(FINDING1_SCALES))
        model_rows, category_rows, curves = [], [], []
        for model, fits in comparisons.items():
            result = fits.primary[primary_scale]
            index = result.categories.index(MATH)
            ranks = matched_length.rank_confidence_sets(result.means, result.covariance, result.df_resid)
            math_set = matched_length.rank_set_of(result.means, result.covariance, result.df_resid, index)
            raw_rank = pd.Series(result.raw_means).rank(ascending=False, method="min").to_numpy()
            matched_rank = pd.Series(result.means).rank(ascending=False, method="min").to_numpy()
            ranks_by_view = {
                "per_row": fits.primary["attention_entropy_normalized"],
                "length_only": fits.length_only[primary_scale],
                "with_digits": fits.with_digits[primary_scale],
            }
            view_rank = {
                view: int(pd.Series(fit.means).rank(ascending=False, method="min").to_numpy()[index])
                for view, fit in ranks_by_view.items()
            }
            per_row = fits.primary["attention_entropy_normalized"]
            per_row_set = matched_length.rank_set_of(per_row.means, per_row.covariance, per_row.df_resid, index)
            differences = result.differences(MATH).set_index("category")
            critical = stats.t.ppf(1 - ALPHA / 2, result.df_resid)
            model_tests = tests[tests["model"] == model].set_index("category")
            for k, category in enumerate(result.categories):
                se = math.sqrt(max(result.covariance[k, k], 0.0))
                row = {"model": model, "category": category, "prompts": int(result.counts[k])}
                row |= {"raw_mean": result.raw_means[k], "raw_rank": int(raw_rank[k])}
                row |= {"matched_length_mean": result.means[k], "matched_length_se": se}
                row |= {"rank": int(matched_rank[k]), "rank_set_low": int(ranks[k, 0])}
                row |= {"rank_set_high": int(ranks[k, 1])}
                if category != MATH:
                    difference, se_d = differences.loc[category, "difference"], differences.loc[category, "se"]
                    test = model_tests.loc[category]
                    row |= {
                        "math_minus_category": difference,
                        "lower_95": difference - critical * se_d,
                        "upper_95": difference + critical * se_d,
                        "math_minus_category_per_row": test.get("math_minus_category_attention_entropy_normalized"),
                        "p_math_above": test["p_math_above"],
                        "p_category_above_holm": test["p_category_above_holm"],
                    }
                category_rows.append(row)
            above = differences.sort_values("difference").iloc[0]  # the category most above math (or least below)
            largest = above.name
            model_rows.append(
                {
                    "model": model,
                    "prompts": int(result.counts.sum()),
                    "matched_tokens": f"{result.support[0]}-{result.support[1]}",
                    "prompts_in_matched_range": result.prompts_in_support,
                    "residual_sd": result.residual_sd,
                    "interaction_p": result.interaction_p,
                    "math_raw_rank": int(raw_rank[index]),
                    "math_rank_length_only": view_rank["length_only"],
                    "math_rank_with_digits": view_rank["with_digits"],
                    "math_rank": int(matched_rank[index]),
                    "math_rank_set": f"{math_set[0]}-{math_set[1]}",
                    "math_rank_per_row": view_rank["per_row"],
                    "math_rank_set_per_row": f"{per_row_set[0]}-{per_row_set[1]}",
                    "closest_rival": largest,
                    "math_minus_rival": float(above["difference"]),
                    "rival_interval": f"[{significant(above['difference'] - critical * above['se'])}, "
                    f"{significant(above['difference'] + critical * above['se'])}]",
                    "p_math_highest": per_model.loc[model, "p_math_highest"],
                    "p_some_category_above_holm": per_model.loc[model, "p_some_category_above_holm"],
                    "verdict": per_model.loc[model, "verdict"],
                }
            )
            curve = fits.designs["primary"].contrast_curve(result, MATH)
            curves.append(curve.assign(model=model)[["model", *curve.columns]])
        models = pd.DataFrame(model_rows)
        untested = [m for m in data.models.index if m not in comparisons]
        verdict = self.overall(models["verdict"].tolist())
        evidence = "; ".join(
            f"{row.model}: math ranks {row.math_rank} (rank set {row.math_rank_set}; {row.math_raw_rank} raw, "
            f"{row.math_rank_length_only} by length alone, {row.math_rank_with_digits} with digits adjusted, "
            f"{row.math_rank_per_row} per row), "
            + (
                f"the closest category, {row.closest_rival}, is {significant(row.math_minus_rival)} below math"
                if row.math_minus_rival > 0
                else f"{row.closest_rival} is {significant(-row.math_minus_rival)} above math"
            )
            + f" (math minus it: 95% CI {row.rival_interval})"
            + f": {row.verdict}"
            for row in models.itertuples()
        )
        if untested:
            evidence += "; not testable in " + ", ".join(untested)
        categories_per_model = len(next(iter(comparisons.values())).primary[primary_scale].categories)
        return Assessment(
            self,
            verdict,
            evidence=evidence,
            test=f"per model: {categories_per_model - 1} one-sided t tests each way on both scales at matched "
            "length with question marks and tokens per word (spline x category, HC3); 'holds': intersection-union, "
            "largest p "
            f"{significant(models['p_math_highest'].max(), 2)}; 'does not hold': Holm over {len(tests)} "
            f"comparisons, smallest p {significant(models['p_some_category_above_holm'].min(), 2)}",
            interval="math's 95% rank set (11 comparisons with math, summed H_att): "
            + ", ".join(f"{row.model} {row.math_rank_set}" for row in models.itertuples()),
            tables={
                "finding1_per_model": models,
                "finding1_categories": pd.DataFrame(category_rows),
                "finding1_length_contrasts": pd.concat(curves, ignore_index=True),
            },
        )

    def facts(self, data: StudyData) -> str:
        if "attention_entropy" not in data.table:
            return ""
        parts = []
        for model in data.models.index:
            means = data.for_model(model).groupby("category")["attention_entropy"].mean()
            if MATH in means:
                rank = int(means.rank(ascending=False, method="min")[MATH])
                parts.append(f"{model}: math ranks {rank} of {len(means)} by raw H_att (length not matched)")
        return "; ".join(parts)

    def paper_evidence(self, published: StudyData, run: StudyData | None = None) -> dict[str, str]:
        grid = published.wide("attention_entropy")  # categories x models
        ranks = grid.rank(ascending=False, method="min")
        w = matched_length.kendalls_w(grid.to_numpy(float))
        shared = matched_length.kendalls_w_from_shared_prompts(run, "attention_entropy", 2) if run is not None else None
        expected = (
            f"two random prompts per category from this run's prompt set give W of median "
            f"{significant(shared['median'])} [5-95%: {significant(shared['low'])}-{significant(shared['high'])}] "
            f"across its {shared['models']} models: shared prompts alone make rankings agree, so W is no evidence "
            "for a category effect"
            if shared
            else "how high W is without any category effect needs prompt-level data (none in this run)"
        )
        return {
            "statistic": "Kendall's W of the category rankings of H_att across the paper's models",
            "value": significant(w),
            "interval": expected,
            "detail": f"math ranks {', '.join(str(int(r)) for r in ranks.loc[MATH])} in the {grid.shape[1]} models; "
            "without token counts the table cannot tell a category effect from length",
        }
