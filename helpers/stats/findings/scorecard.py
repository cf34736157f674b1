"""The paper's four findings, tested at the right unit, each one object in ``FINDINGS``.

A finding states its claim, its unit of analysis, its minimum effect and its decision rule
before any data are seen, says what a run needs for a verdict, and then decides:

* ``holds``: the data give evidence for the claim;
* ``does not hold``: the data give evidence *against* it, never mere absence of evidence;
* ``inconclusive``: neither;
* ``not testable here``: the run lacks what the claim needs (models of each architecture,
  GPT-2, enough prompts per category, ...); the assessment then says what *can* be said.

Claims about models or architectures need models as replicates; prompts are replicates only
within a model. Adding a finding means adding one object to ``FINDINGS``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from scipy import stats

from helpers import paths, reproduction, robustness, store
from helpers.outputs import FINDINGS_TABLES
from helpers.robustness import MATH, StudyData

HOLDS, DOES_NOT_HOLD, INCONCLUSIVE, NOT_TESTABLE = "holds", "does not hold", "inconclusive", "not testable here"
VERDICTS: tuple[str, ...] = (HOLDS, DOES_NOT_HOLD, INCONCLUSIVE, NOT_TESTABLE)
ALPHA = 0.05
MIN_PROMPTS_PER_CATEGORY = 12
MIN_MODELS_FOR_CATEGORIES = 2
MIN_SHARED_ITEMS = 10
GPT2 = "GPT2-117M"


def significant(value: float, digits: int = 3) -> str:
    """``value`` to ``digits`` significant digits, as text (the way every number in a sentence is written)."""
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{value:.{digits}g}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def holm(p_values: list[float]) -> list[float]:
    """Holm-adjusted p-values: the k-th smallest times (m - k + 1), made monotone, capped at 1.

    Written out because statsmodels' ``multipletests(method="holm")`` runs ``gc.collect()`` on every
    call (0.5 s each with a notebook's objects alive); ``test_findings`` checks the two agree.
    """
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p, kind="stable")
    scaled = np.maximum.accumulate(p[order] * (len(p) - np.arange(len(p))))
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(scaled, 1.0)
    return adjusted.tolist()


@dataclass
class Assessment:
    """A finding assessed on one data set: the scorecard row and the tables behind it."""

    finding: Finding
    verdict: str
    why_not_testable: str = ""
    evidence: str = ""
    test: str = ""
    interval: str = ""
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def testable_here(self) -> str:
        return "yes" if self.verdict != NOT_TESTABLE else f"no: {self.why_not_testable}"


class Finding(ABC):
    """One of the paper's findings: what it claims, at which unit, and the rule that decides it."""

    number: ClassVar[int]
    claim: ClassVar[str]
    unit: ClassVar[str]
    minimum_effect: ClassVar[str]
    rule: ClassVar[str]
    needs: ClassVar[str]

    @robustness.single_threaded_blas
    def assess(self, data: StudyData) -> Assessment:
        """The verdict on ``data``, or ``not testable here`` with what can honestly be said instead."""
        why = self.why_not_testable(data)
        if why:
            return Assessment(self, NOT_TESTABLE, why_not_testable=why, evidence=self.facts(data))
        return self.decide(data)

    @abstractmethod
    def why_not_testable(self, data: StudyData) -> str:
        """Empty when ``data`` has what the claim needs; otherwise the reason, in words."""

    @abstractmethod
    def decide(self, data: StudyData) -> Assessment:
        """Apply the rule (only called when testable)."""

    @abstractmethod
    def facts(self, data: StudyData) -> str:
        """What can be said when the claim itself is not testable (facts about these models)."""

    @abstractmethod
    def paper_evidence(self, published: StudyData, run: StudyData | None = None) -> dict[str, str]:
        """What the paper's own table says: statistic, value, interval, detail (``run``: this run's data, where
        a statistic of the table needs prompt-level data to be read)."""


# --- finding 1 -----------------------------------------------------------------------------------------


FINDING1_SCALES: dict[str, str] = {
    "attention_entropy": "summed H_att (the paper's)",
    "attention_entropy_normalized": "per-row normalised H_att",
}
"""Finding 1's two pre-specified scales: the paper's sum over query rows, which grows with length, and the
mean over query rows of row entropy / log(keys allowed), which does not."""
FINDING1_COVARIATES = ("n_question_marks", "tokens_per_word")
"""Surface covariates in finding 1's primary model. Digit counts are a sensitivity check only: 8 of the 12
categories have no digits, so adjusting for them compares math with digit-free math prompts the set barely has
(an extrapolation that cost most of the power in the rule's calibration: 0.28 instead of 0.8 at 0.8 SD)."""


@dataclass(frozen=True)
class Finding1Model:
    """One model's fits for finding 1, per scale: the primary fit (length and ``FINDING1_COVARIATES``) and two
    sensitivity views, length only and the primary plus digit counts."""

    primary: dict[str, robustness.MatchedLength]
    length_only: dict[str, robustness.MatchedLength]
    with_digits: dict[str, robustness.MatchedLength]
    designs: dict[str, robustness.MatchedLengthDesign]  # "primary", "length_only", "with_digits"


class MathHasHighestEntropy(Finding):
    number = 1
    claim = "Mathematical reasoning prompts have the highest attention entropy H_att"
    unit = "prompts within each model (every model must agree for 'holds')"
    minimum_effect = (
        "none either way: 'highest' is math above every other category, refuted by any category above math, "
        "each shown at the 5% level on both scales"
    )
    rule = (
        "Per model, on each of two pre-specified scales (the paper's summed H_att and the per-row normalised "
        "H_att), each category's mean is predicted at the same prompts: category x natural cubic spline in token "
        "count (length may act differently per category), plus the surface covariates question marks and tokens "
        "per word (math prompts are split into more tokens per word), HC3 errors, averaged "
        "over the prompts within the length range every category covers. Math minus each other category is "
        "tested one-sided both ways. It holds in a model if math is above each of the 11 other categories on "
        "both scales (an intersection-union test at 5%: no correction needed); it does not hold in a model if "
        "some category is above math on both scales (that category's larger p of the two), Holm-adjusted over "
        "every category and model of the run; inconclusive otherwise (including when the scales disagree). Over "
        "the run: holds if it holds in every model, does not hold if it does not hold in some model, "
        "inconclusive otherwise. Error rates: if math is not above every other category on both scales in "
        "every model, 'holds' comes out at most 5% of the time; if no category is above math on both scales in "
        "any model, 'does not hold' comes out at most 5% of the time. Digit counts are not in the primary model "
        "(8 of 12 categories have none, so adjusting for them extrapolates math to digit-free prompts and "
        "loses most of the power); math's rank with digits adjusted is reported as a sensitivity check"
    )
    needs = (
        f"prompt-level values with token counts and surface covariates in at least {MIN_MODELS_FOR_CATEGORIES} "
        f"models, each with math and another category, at least {MIN_PROMPTS_PER_CATEGORY} prompts per category, "
        "and at least 3 prompts of every category in each quarter of the length range all categories share"
    )

    def _model_problem(self, frame: pd.DataFrame) -> str:
        counts = frame["category"].value_counts()
        if MATH not in counts or len(counts) < 2:
            return "needs math and at least one other category"
        if counts.min() < MIN_PROMPTS_PER_CATEGORY:
            return f"{counts.idxmin()} has {counts.min()} prompts (needs {MIN_PROMPTS_PER_CATEGORY})"
        return robustness.length_coverage_problem(frame)

    @staticmethod
    def model_frame(frame: pd.DataFrame) -> pd.DataFrame:
        """One model's rows that finding 1 can use: finite token counts, scales and covariates."""
        frame = robustness.with_surface_covariates(frame)
        columns = ["n_tokens", *FINDING1_SCALES, *robustness.PROMPT_COVARIATES]  # digits too, for the sensitivity
        return frame[np.isfinite(frame[columns].to_numpy(float)).all(axis=1)]

    @staticmethod
    def fit_model(frame: pd.DataFrame) -> Finding1Model:
        """Both scales, primary and length-only fits, of one model's usable rows (``model_frame``)."""
        designs = {
            "primary": robustness.matched_length_design(frame, MATH, FINDING1_COVARIATES),
            "length_only": robustness.matched_length_design(frame, MATH),
            "with_digits": robustness.matched_length_design(frame, MATH, (*FINDING1_COVARIATES, "n_digits")),
        }
        fits = {
            kind: {scale: design.fit(frame[scale].to_numpy(float)) for scale in FINDING1_SCALES}
            for kind, design in designs.items()
        }
        return Finding1Model(fits["primary"], fits["length_only"], fits["with_digits"], designs)

    def comparisons(self, data: StudyData) -> dict[str, Finding1Model | str]:
        """Each model's fits, or why it has none (computed once per data set)."""
        key = "finding1"
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
                        result[model] = self.fit_model(frame)
                        continue
                    except robustness.LengthCoverageError as error:
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
    def tests(fits: dict[str, dict[str, robustness.MatchedLength]]) -> pd.DataFrame:
        """One row per model and other category: math minus the category on each scale (primary fits), and
        the joined one-sided p-values (``p_math_above``: larger of the scales; ``p_category_above``: likewise)."""
        columns: dict[str, list[Any]] = {}
        for model, by_scale in fits.items():
            per_scale = {scale: result.difference_arrays(MATH) for scale, result in by_scale.items()}
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
    def verdicts(tests: pd.DataFrame) -> pd.DataFrame:
        """Per model: the intersection-union p for 'holds', the smallest Holm p for 'does not hold', the verdict."""
        models = list(dict.fromkeys(tests["model"]))
        codes = pd.Categorical(tests["model"], categories=models).codes
        above, refute = tests["p_math_above"].to_numpy(float), tests["p_category_above_holm"].to_numpy(float)
        p_highest = np.array([above[codes == k].max() for k in range(len(models))])
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

    def decide(self, data: StudyData) -> Assessment:
        comparisons = {m: r for m, r in self.comparisons(data).items() if not isinstance(r, str)}
        tests = self.tests({m: r.primary for m, r in comparisons.items()})
        per_model = self.verdicts(tests)
        primary_scale = next(iter(FINDING1_SCALES))
        model_rows, category_rows, curves = [], [], []
        for model, fits in comparisons.items():
            result = fits.primary[primary_scale]
            index = result.categories.index(MATH)
            ranks = robustness.rank_confidence_sets(result.means, result.covariance, result.df_resid)
            math_set = robustness.rank_set_of(result.means, result.covariance, result.df_resid, index)
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
            per_row_set = robustness.rank_set_of(per_row.means, per_row.covariance, per_row.df_resid, index)
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
                        "math_minus_category_per_row": test["math_minus_category_attention_entropy_normalized"],
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
        w = robustness.kendalls_w(grid.to_numpy(float))
        shared = robustness.kendalls_w_from_shared_prompts(run, "attention_entropy", 2) if run is not None else None
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


# --- finding 2 -----------------------------------------------------------------------------------------

SPARSITY_VARIANTS: dict[str, str] = {
    "max_sparsity": "|h| < 0.01, max over layers (the paper's S_max; primary)",
    "max_sparsity_no_embedding": "|h| < 0.01, max over layers without the embedding output",
    "max_sparsity_0.001": "|h| < 0.001, max over layers",
    "max_sparsity_0.1": "|h| < 0.1, max over layers",
    "max_sparsity_relative_0.001": "|h| < 0.001 x the layer's SD, max over layers",
    "max_sparsity_relative_0.01": "|h| < 0.01 x the layer's SD, max over layers",
    "max_sparsity_relative_0.1": "|h| < 0.1 x the layer's SD, max over layers",
    "max_hoyer_sparsity": "Hoyer sparsity, max over layers (scale-free)",
    "max_hoyer_sparsity_no_embedding": "Hoyer sparsity, max over layers without the embedding output",
}
"""Every sparsity measure finding 2 is checked on; the first is pre-specified as primary (``PRIMARY_SPARSITY``)."""
PRIMARY_SPARSITY = "max_sparsity"
PRIMARY_SPARSITY_REASON = (
    "The claim is a statement about the paper's S_max (max over layers of the fraction |h| < 0.01), so S_max is "
    "the primary measure for both parts. It is not a measure of how sparse a model's representations are: in "
    "decoders its maximum sits at the embedding output (the layer with the smallest values), and a fixed "
    "threshold measures each layer's scale as much as its sparsity; Hoyer sparsity, scale-free, is dominated by "
    "a few massive activations in decoders' middle layers. The direction of 'decoders are sparser' can flip "
    "with the measure, so every other measure gets its own verdict beside the primary one, and the table "
    "'sparsity_interpretation' shows where each model's maximum sits and how large its massive activations are."
)
PAPER_SPARSITY = "max_sparsity"
SPARSER_MINIMUM = 1.1
MIN_MODELS_PER_ARCHITECTURE = 3
MIN_MODELS_FOR_ARCHITECTURES = 7


def _paper_sparsity_ratios() -> tuple[float, float]:
    """The paper's decoder/encoder ratio of S_max from its model x category table (data/reference): the ratio of
    arithmetic means over its cells (its headline, 7.08) and the ratio of geometric means of model means."""
    from helpers.reference import load_published

    cells = load_published("complete_analysis_results")
    arithmetic = cells.groupby("Architecture")["Max_Sparsity"].mean()
    per_model = cells.groupby(["Architecture", "Model"])["Max_Sparsity"].mean()
    geometric = np.exp(np.log(per_model).groupby(level="Architecture").mean())
    return (
        float(arithmetic["decoder"] / arithmetic["encoder"]),
        float(geometric["decoder"] / geometric["encoder"]),
    )


PAPER_SPARSITY_RATIO, PAPER_SPARSITY_RATIO_GEOMETRIC = _paper_sparsity_ratios()
"""The paper's ratio as it reports it (arithmetic means, 7.08) and on the estimand the rule tests (geometric, 4.40)."""
ABOUT_BAND = (PAPER_SPARSITY_RATIO_GEOMETRIC / 2, PAPER_SPARSITY_RATIO_GEOMETRIC * 2)
"""'About the paper's ratio': within a factor 2 of its geometric-mean ratio."""


def sparser_verdict(test: robustness.ShiftPermutationTest | None) -> str:
    """'Sparser' from the permutation test of the decoder - encoder log means: above log(SPARSER_MINIMUM)
    (one-sided, 5%) holds; below it (one-sided, 5%) does not hold."""
    if test is None or test.smallest_p() >= ALPHA:
        return NOT_TESTABLE
    threshold = math.log(SPARSER_MINIMUM)
    if test.p_above(threshold) < ALPHA:
        return HOLDS
    return DOES_NOT_HOLD if test.p_below(threshold) < ALPHA else INCONCLUSIVE


def about_verdict(test: robustness.ShiftPermutationTest | None) -> str:
    """'About the paper's ratio': inside ``ABOUT_BAND`` by two one-sided tests at 5% holds; below its lower or
    above its upper end (one-sided, 5%) does not hold."""
    if test is None or test.smallest_p() >= ALPHA:
        return NOT_TESTABLE
    low, high = (math.log(edge) for edge in ABOUT_BAND)
    if test.p_above(low) < ALPHA and test.p_below(high) < ALPHA:
        return HOLDS
    return DOES_NOT_HOLD if test.p_below(low) < ALPHA or test.p_above(high) < ALPHA else INCONCLUSIVE


def join_parts(sparser: str, about: str) -> str:
    """Finding 2's verdict: holds if both parts hold, does not hold if either does not, inconclusive otherwise."""
    if (sparser, about) == (HOLDS, HOLDS):
        return HOLDS
    return DOES_NOT_HOLD if DOES_NOT_HOLD in (sparser, about) else INCONCLUSIVE


class DecodersAreSparser(Finding):
    number = 2
    claim = f"Decoders are sparser than encoders, about {PAPER_SPARSITY_RATIO:.0f}x"
    unit = "models (architectures compared with models as replicates)"
    minimum_effect = (
        f"'sparser' is a decoder/encoder ratio above {SPARSER_MINIMUM}; 'about {PAPER_SPARSITY_RATIO:.0f}x' is a "
        f"ratio within a factor 2 of the paper's own ratio on the estimand tested here, the ratio of geometric "
        f"means of model means, {significant(PAPER_SPARSITY_RATIO_GEOMETRIC)} on its table (its "
        f"{significant(PAPER_SPARSITY_RATIO)} is a ratio of arithmetic means): "
        f"{significant(ABOUT_BAND[0])}-{significant(ABOUT_BAND[1])}; both on the primary measure, the paper's S_max"
    )
    rule = (
        "Each model is reduced to the log of its mean sparsity over the prompts every model saw; decoders and "
        "encoders are compared by an exact permutation test of the difference of mean logs (every assignment of "
        "the architecture labels to the models), so the ratio is one of geometric means. 'Sparser' holds if the "
        f"ratio is above {SPARSER_MINIMUM} (one-sided, 5%), does not hold if it is below {SPARSER_MINIMUM} "
        f"(one-sided, 5%), and is inconclusive otherwise. 'About {PAPER_SPARSITY_RATIO:.0f}x' holds if the ratio "
        "is inside the band by two one-sided tests at 5% (the 90% permutation interval inside it), does not hold "
        "if it is below the band's lower end or above its upper end (one-sided, 5%), inconclusive otherwise. The "
        "finding's verdict joins the two parts: holds if both hold, does not hold if either does not hold, "
        "inconclusive otherwise. Every other sparsity measure gets the same two verdicts, shown beside the "
        f"primary one (none decides silently). {PRIMARY_SPARSITY_REASON} Error rates: a part's 'holds' comes "
        "out at most 5% of the time when its claim is false, and its 'does not hold' at most 5% of the time when "
        "its claim is true (the permutation test is exact when models of both architectures vary alike)"
    )
    needs = (
        f"at least {MIN_MODELS_PER_ARCHITECTURE} encoders and {MIN_MODELS_PER_ARCHITECTURE} decoders and "
        f"{MIN_MODELS_FOR_ARCHITECTURES} models in all (3 vs 4): the smallest one-sided permutation p is then "
        "1/35, below 5%; with 2 vs 2 it is 1/6, so no test at 5% is possible"
    )

    def why_not_testable(self, data: StudyData) -> str:
        counts = data.models["architecture"].value_counts()
        encoders, decoders = int(counts.get("encoder", 0)), int(counts.get("decoder", 0))
        if min(encoders, decoders) < MIN_MODELS_PER_ARCHITECTURE or encoders + decoders < MIN_MODELS_FOR_ARCHITECTURES:
            return (
                f"{_count(encoders, 'encoder')} and {_count(decoders, 'decoder')}; needs at least "
                f"{MIN_MODELS_PER_ARCHITECTURE} of each and {MIN_MODELS_FOR_ARCHITECTURES} in all"
            )
        if PRIMARY_SPARSITY not in data.table:
            return f"the run has no {PRIMARY_SPARSITY}"
        return ""

    @staticmethod
    def pairs(data: StudyData) -> list[tuple[str, str]]:
        architecture = data.models["architecture"]
        return [
            (decoder, encoder)
            for decoder in architecture.index[architecture == "decoder"]
            for encoder in architecture.index[architecture == "encoder"]
        ]

    def variants(self, data: StudyData) -> pd.DataFrame:
        """Every sparsity variant: the architecture verdicts (where testable) and each decoder/encoder pair's ratio."""
        testable = not self.why_not_testable(data)
        rows = []
        for variant, description in SPARSITY_VARIANTS.items():
            if variant not in data.table:
                continue
            ratio = robustness.architecture_ratio(data, variant)
            for decoder, encoder in self.pairs(data):
                contrast = robustness.paired_contrast(data, variant, decoder, encoder)
                low, high = robustness.percentile_interval(contrast["ratio_draws"])
                rows.append(
                    {
                        "variant": variant,
                        "measure": description,
                        "primary": variant == PRIMARY_SPARSITY,
                        "comparison": f"{decoder} / {encoder}",
                        "ratio": contrast["ratio"],
                        "low": low,
                        "high": high,
                        "share_decoder_higher": contrast["share_first_higher"],
                        "wilcoxon_p": contrast["wilcoxon_p"],
                        "verdict_sparser": "",
                        "verdict_about": "",
                    }
                )
            rows.append(
                {
                    "variant": variant,
                    "measure": description,
                    "primary": variant == PRIMARY_SPARSITY,
                    "comparison": "decoders / encoders (models as replicates)",
                    "ratio": ratio["ratio"],
                    "low": ratio["low"],
                    "high": ratio["high"],
                    "verdict_sparser": sparser_verdict(ratio["test"]) if testable else NOT_TESTABLE,
                    "verdict_about": about_verdict(ratio["test"]) if testable else NOT_TESTABLE,
                }
            )
        return pd.DataFrame(rows)

    def decide(self, data: StudyData) -> Assessment:
        variants = self.variants(data)
        architecture_rows = variants[variants["comparison"].str.startswith("decoders")].set_index("variant")
        primary = architecture_rows.loc[PRIMARY_SPARSITY]
        verdict = join_parts(primary["verdict_sparser"], primary["verdict_about"])
        agreeing = int((architecture_rows["verdict_sparser"] == primary["verdict_sparser"]).sum())
        ratio = robustness.architecture_ratio(data, PRIMARY_SPARSITY)
        test = ratio["test"]
        n_decoders = int((data.models["architecture"] == "decoder").sum())
        n_encoders = int((data.models["architecture"] == "encoder").sum())
        evidence = (
            f"'sparser' {primary['verdict_sparser']}, 'about {PAPER_SPARSITY_RATIO:.0f}x' {primary['verdict_about']}: "
            f"decoder/encoder ratio of S_max {significant(primary['ratio'])} (90% interval "
            f"[{significant(primary['low'])}, {significant(primary['high'])}]) over {n_decoders} decoders and "
            f"{n_encoders} encoders; the same 'sparser' verdict on {agreeing} of {len(architecture_rows)} sparsity "
            "measures; "
            + ", ".join(
                f"{row.Index} {significant(row.ratio)} ({row.verdict_sparser})"
                for row in architecture_rows.itertuples()
                if row.Index != PRIMARY_SPARSITY
            )
        )
        mixed = robustness.crossed_mixed_model(data, PRIMARY_SPARSITY)
        return Assessment(
            self,
            verdict,
            evidence=evidence,
            test=f"exact permutation test on log model means ({len(test.assignments)} label assignments): "
            f"p(ratio > {SPARSER_MINIMUM}) = {significant(test.p_above(math.log(SPARSER_MINIMUM)), 2)}, "
            f"p(ratio < {SPARSER_MINIMUM}) = {significant(test.p_below(math.log(SPARSER_MINIMUM)), 2)}; crossed "
            f"mixed model (model, prompt) ratio {significant(mixed['ratio'])}",
            interval=f"ratio 90% permutation interval [{significant(primary['low'])}, {significant(primary['high'])}]"
            f" against the band {significant(ABOUT_BAND[0])}-{significant(ABOUT_BAND[1])}",
            tables={"sparsity_variants": variants},
        )

    def facts(self, data: StudyData) -> str:
        parts = []
        for variant in dict.fromkeys((PRIMARY_SPARSITY, "max_hoyer_sparsity")):
            if variant not in data.table:
                continue
            for decoder, encoder in self.pairs(data):
                contrast = robustness.paired_contrast(data, variant, decoder, encoder)
                low, high = robustness.percentile_interval(contrast["ratio_draws"])
                name = "Hoyer" if variant == "max_hoyer_sparsity" else "S_max"
                parts.append(
                    f"{decoder}/{encoder} {name} {significant(contrast['ratio'])} [{significant(low)}, "
                    f"{significant(high)}], higher on {contrast['share_first_higher']:.0%} of {data.item_kind}"
                )
        return "facts about these models: " + "; ".join(parts) if parts else ""

    def paper_evidence(self, published: StudyData, run: StudyData | None = None) -> dict[str, str]:
        means = robustness.model_means(published, "max_sparsity")
        encoders = list(means.index[means["architecture"] == "encoder"])
        pieces = sorted(
            (value / means.loc[encoders, "mean"].mean(), name)
            for name, value in means.loc[means["architecture"] == "decoder", "mean"].items()
        )
        return {
            "statistic": "decoder/encoder ratio of S_max: arithmetic means of cells (as the paper reports it) and "
            "geometric means of model means (the estimand tested here)",
            "value": f"{significant(PAPER_SPARSITY_RATIO)} and {significant(PAPER_SPARSITY_RATIO_GEOMETRIC)}",
            "interval": f"per decoder {significant(pieces[0][0])} to {significant(pieces[-1][0])}" if pieces else "",
            "detail": ", ".join(f"{name} {significant(ratio)}" for ratio, name in pieces)
            + f"; {_count(len(encoders), 'encoder')}, so no architecture test",
        }


def sparsity_interpretation(layers: pd.DataFrame, display_names: dict[str, str]) -> pd.DataFrame:
    """Per model: what S_max and Hoyer sparsity measure. The share of prompts whose S_max layer is the embedding
    output, the median relative depth of the Hoyer maximum, and massive activations (median over prompts of the
    largest max|h| / SD over the hidden layers).

    ``layers``: the long per-layer table (``model, prompt_id, layer, statistic, value``; layer 0 = embeddings);
    ``display_names``: registry name -> display name.
    """
    rows = []
    for model, frame in layers[layers["head"].isna()].groupby("model", sort=False):
        wide = frame.pivot_table(index=["prompt_id", "layer"], columns="statistic", values="value", aggfunc="first")
        needed = {"near_zero_0.01", "hoyer", "max_abs", "std"}
        if not needed <= set(wide.columns):
            continue
        n_layers = int(wide.index.get_level_values("layer").max())
        sparsest = wide["near_zero_0.01"].groupby(level="prompt_id").idxmax().map(lambda key: key[1])
        hoyer_layer = wide["hoyer"].groupby(level="prompt_id").idxmax().map(lambda key: key[1])
        ratio = (wide["max_abs"] / wide["std"]).drop(index=0, level="layer")
        rows.append(
            {
                "model": display_names.get(model, model),
                "layers": n_layers,
                "share_s_max_at_embedding": float((sparsest == 0).mean()),
                "median_depth_of_hoyer_max": float((hoyer_layer / n_layers).median()),
                "massive_activation_ratio": float(ratio.groupby(level="prompt_id").max().median()),
            }
        )
    return pd.DataFrame(rows)


# --- finding 3 -----------------------------------------------------------------------------------------


class GPT2HasHighestActivation(Finding):
    number = 3
    claim = "GPT-2 has the highest final activation A_f (signed mean) of the models"
    unit = "models, each compared with GPT-2 on the shared prompts"
    minimum_effect = (
        "'highest' is shown by GPT-2 above every other model; it is refuted only by a model above GPT-2 by at "
        "least 0.2 SD of the paired differences (d_z >= 0.2)"
    )
    rule = (
        "GPT-2 is named by the claim, never picked from the data (so the paper's own table, from which it was "
        "picked, cannot test it). For each other model, the mean of the paired differences GPT-2 - model over the "
        "shared items, by a paired t test. Holds if GPT-2 is above every other model (each one-sided test at 5%: "
        "an intersection-union test); does not hold if some model is above GPT-2 by at least the minimum effect "
        "(one-sided, Bonferroni over the other models); inconclusive otherwise."
    )
    needs = f"GPT-2 ({GPT2}) and another model, with at least {MIN_SHARED_ITEMS} shared items"

    def why_not_testable(self, data: StudyData) -> str:
        if data.source != "this run":
            return f"GPT-2 was named from {data.source} itself, so testing it there would hold by selection"
        if GPT2 not in data.models.index:
            return "GPT-2 is not in this run"
        if len(data.models) < 2:
            return "GPT-2 is the only model"
        shared = len(data.wide("final_activation").dropna())
        if shared < MIN_SHARED_ITEMS:
            return f"{shared} shared items (needs {MIN_SHARED_ITEMS})"
        return ""

    def decide(self, data: StudyData) -> Assessment:
        others = [m for m in data.models.index if m != GPT2]
        grid = data.wide("final_activation")
        rows = []
        for other in others:
            difference = (grid[GPT2] - grid[other]).dropna().to_numpy()
            n, mean, sd = len(difference), float(difference.mean()), float(difference.std(ddof=1))
            se = sd / math.sqrt(n)
            minimum = 0.2 * sd
            rows.append(
                {
                    "model": other,
                    "items": n,
                    "gpt2_minus_model": mean,
                    "lower_95_one_sided": mean - stats.t.ppf(1 - ALPHA, n - 1) * se,
                    "p_gpt2_above": float(stats.t.sf(mean / se, n - 1)) if se > 0 else float(mean <= 0),
                    "minimum_effect": minimum,
                    "p_model_above_by_minimum": float(stats.t.sf((-mean - minimum) / se, n - 1)) if se > 0 else 1.0,
                    "share_gpt2_higher": float((difference > 0).mean()),
                }
            )
        table = pd.DataFrame(rows)
        if (table["p_gpt2_above"] < ALPHA).all():
            verdict = HOLDS
        elif (table["p_model_above_by_minimum"] < ALPHA / len(others)).any():
            verdict = DOES_NOT_HOLD
        else:
            verdict = INCONCLUSIVE
        return Assessment(
            self,
            verdict,
            evidence="; ".join(
                f"GPT-2 - {row.model} = {significant(row.gpt2_minus_model)}, GPT-2 higher on "
                f"{row.share_gpt2_higher:.0%} of {data.item_kind}"
                for row in table.itertuples()
            ),
            test=f"paired t tests, intersection-union over {len(others)} models; largest p "
            f"{significant(table['p_gpt2_above'].max(), 2)}",
            interval="one-sided 95% lower bounds of GPT-2 - model: "
            + ", ".join(f"{row.model} {significant(row.lower_95_one_sided)}" for row in table.itertuples()),
            tables={"finding3_gpt2_contrasts": table},
        )

    def facts(self, data: StudyData) -> str:
        means = data.wide("final_activation").dropna().mean().sort_values(ascending=False)
        if len(means) < 2:
            return ""
        first, second = means.index[0], means.index[1]
        contrast = robustness.paired_contrast(data, "final_activation", first, second)
        low, high = robustness.percentile_interval(contrast["difference_draws"])
        return (
            f"facts about these models: {first} has the highest mean A_f ({significant(means.iloc[0])}), above "
            f"{second} by {significant(contrast['difference'])} [{significant(low)}, {significant(high)}] on "
            f"{contrast['share_first_higher']:.0%} of {data.item_kind}; chosen from these data, so not a test"
        )

    def paper_evidence(self, published: StudyData, run: StudyData | None = None) -> dict[str, str]:
        means = published.wide("final_activation").mean()
        signed = means.sort_values(ascending=False)
        absolute = means.abs().sort_values(ascending=False)
        return {
            "statistic": "highest mean A_f, signed and absolute",
            "value": f"signed: {signed.index[0]} {significant(signed.iloc[0])}",
            "interval": f"absolute: {absolute.index[0]} {significant(absolute.iloc[0])}",
            "detail": f"GPT-2 is highest only in signed A_f; by |A_f| {absolute.index[0]} is larger "
            f"(GPT-2 {significant(abs(means.get(GPT2, np.nan)))})"
            if absolute.index[0] != GPT2
            else "GPT-2 is highest by signed and absolute A_f",
        }


# --- finding 4 -----------------------------------------------------------------------------------------

MIN_MODELS_FOR_ORDER = 5
MONOTONIC_MINIMUM = 0.5


def models_to_support_no_link(level: float = 0.95) -> int:
    """The fewest models whose interval for Spearman's rho (Fisher z, Bonett-Wright variance) can lie inside
    +-MONOTONIC_MINIMUM at all: at rho = 0 its half-width z / sqrt(n - 3) must be below atanh(minimum)."""
    z = stats.norm.ppf(1 - (1 - level) / 2)
    return int(math.floor(3 + (z / math.atanh(MONOTONIC_MINIMUM)) ** 2)) + 1


MODELS_TO_SUPPORT = models_to_support_no_link()


class NoMonotonicParameterLink(Finding):
    number = 4
    claim = "There is no monotonic link between parameter count and final activation"
    unit = "models"
    minimum_effect = f"a monotonic link is |Spearman rho| >= {MONOTONIC_MINIMUM} between parameter count and mean A_f"

    rule = (
        f"With at least {MIN_MODELS_FOR_ORDER} models of different sizes (a random order of 5 models is perfectly "
        "monotonic with probability 1/60): holds if the 95% interval for Spearman's rho (Fisher z, Bonett-Wright "
        f"variance) lies inside (-{MONOTONIC_MINIMUM}, {MONOTONIC_MINIMUM}); does not hold if it lies beyond "
        f"the minimum effect (above {MONOTONIC_MINIMUM} or below -{MONOTONIC_MINIMUM}); inconclusive otherwise. The "
        "exact permutation p-value is reported beside it. 'No link' is an equivalence claim: the interval can lie "
        f"inside +-{MONOTONIC_MINIMUM} only with {MODELS_TO_SUPPORT} or more models, so with "
        f"{MIN_MODELS_FOR_ORDER}-{MODELS_TO_SUPPORT - 1} models the rule can refute the claim (a clear monotonic "
        "link) but never support it. Error rates: 'holds' at most 5% of the time when |rho| >= the minimum, "
        "'does not hold' at most 5% of the time when |rho| <= the minimum (approximately: Fisher z)"
    )
    needs = (
        f"at least {MIN_MODELS_FOR_ORDER} models with different parameter counts to refute, about "
        f"{MODELS_TO_SUPPORT} to support"
    )

    @staticmethod
    def verdict_from(result: dict[str, float]) -> str:
        """The rule applied to ``robustness.spearman_over_models``' result."""
        if -MONOTONIC_MINIMUM < result["low"] and result["high"] < MONOTONIC_MINIMUM:
            return HOLDS
        if result["low"] > MONOTONIC_MINIMUM or result["high"] < -MONOTONIC_MINIMUM:
            return DOES_NOT_HOLD
        return INCONCLUSIVE

    def _by_model(self, data: StudyData) -> pd.DataFrame:
        means = data.wide("final_activation").dropna().mean()
        return pd.DataFrame({"n_parameters": data.models["n_parameters"].reindex(means.index), "a_f": means})

    def why_not_testable(self, data: StudyData) -> str:
        by_model = self._by_model(data)
        sizes = by_model["n_parameters"].nunique()
        if sizes < MIN_MODELS_FOR_ORDER:
            chance = 2 / math.factorial(sizes) if sizes >= 2 else 1.0
            return (
                f"{_count(sizes, 'model size')}; needs {MIN_MODELS_FOR_ORDER} (a random order of {sizes} is perfectly "
                f"monotonic with probability {significant(chance, 2)})"
            )
        return ""

    def decide(self, data: StudyData) -> Assessment:
        by_model = self._by_model(data)
        result = robustness.spearman_over_models(by_model["n_parameters"], by_model["a_f"])
        verdict = self.verdict_from(result)
        supportable = "" if result["n"] >= MODELS_TO_SUPPORT else f" ('holds' needs {MODELS_TO_SUPPORT} models)"
        return Assessment(
            self,
            verdict,
            evidence=f"Spearman rho(parameters, mean A_f) = {significant(result['rho'], 2)} over {result['n']} "
            f"models{supportable}",
            test=f"exact permutation test over {result['n']} models, p = {significant(result['p_value'], 2)}",
            interval=f"rho 95% CI [{significant(result['low'], 2)}, {significant(result['high'], 2)}]",
        )

    def facts(self, data: StudyData) -> str:
        by_model = self._by_model(data)
        if len(by_model) < 2:
            return ""
        rho = stats.spearmanr(by_model["n_parameters"], by_model["a_f"]).statistic if len(by_model) > 2 else np.nan
        ordered = by_model.sort_values("n_parameters")
        return (
            f"rho = {significant(rho, 2)} over {len(by_model)} models (by size: "
            + ", ".join(f"{name} {significant(row.a_f)}" for name, row in ordered.iterrows())
            + ")"
        )

    def paper_evidence(self, published: StudyData, run: StudyData | None = None) -> dict[str, str]:
        by_model = self._by_model(published)
        result = robustness.spearman_over_models(by_model["n_parameters"], by_model["a_f"])
        return {
            "statistic": f"Spearman rho(parameters, mean A_f) over {result['n']} models",
            "value": significant(result["rho"], 2),
            "interval": f"95% CI [{significant(result['low'], 2)}, {significant(result['high'], 2)}], "
            f"permutation p = {significant(result['p_value'], 2)}",
            "detail": "an interval this wide cannot show the absence of a link",
        }


FINDINGS: tuple[Finding, ...] = (
    MathHasHighestEntropy(),
    DecodersAreSparser(),
    GPT2HasHighestActivation(),
    NoMonotonicParameterLink(),
)
"""The paper's findings, in its order (finding 5, activation signatures, registers itself: ``register``)."""


def register(finding: Finding) -> None:
    """Add a finding defined in its own module to ``FINDINGS`` (once, by number)."""
    global FINDINGS
    if all(known.number != finding.number for known in FINDINGS):
        FINDINGS = (*FINDINGS, finding)


import helpers.signatures  # noqa: E402, F401 (finding 5: it subclasses Finding and calls register)

# --- the scorecard and what the paper's own table says --------------------------------------------------


def assess_all(data: StudyData) -> list[Assessment]:
    """Every finding assessed on ``data``."""
    return [finding.assess(data) for finding in FINDINGS]


def population(data: StudyData) -> str:
    """What population a run's verdicts speak for: its models by architecture, kind of checkpoint and quantization
    (from the registry; a hub id or folder the registry does not describe counts as 'not described')."""
    from helpers.registry import known_models

    registry = known_models()
    parts = []
    for architecture in ("encoder", "decoder"):
        names = data.models.index[data.models["architecture"] == architecture]
        if not len(names):
            continue
        specs = [registry.get(str(data.models.loc[name, "model"])) for name in names]
        kinds = list(dict.fromkeys(spec.trained_as if spec and spec.trained_as else "not described" for spec in specs))
        quantized = sum(bool(spec and spec.quantized) for spec in specs)
        parts.append(
            f"{_count(len(names), architecture)} ({', '.join(kinds)}"
            + (f"; {quantized} de-quantized from 4-bit GGUF checkpoints" if quantized else "")
            + ")"
        )
    return (
        "these " + " and ".join(parts) + ", not language models in general; the paper's six were base models"
        if parts
        else ""
    )


def scorecard(run: list[Assessment], published: StudyData, run_data: StudyData | None = None) -> pd.DataFrame:
    """One row per finding: claim, unit, testable here (and why not), the evidence of this run and of the
    paper's table, the test and its statistic, the interval and the verdict."""
    rows = []
    for assessment in run:
        finding = assessment.finding
        paper = finding.paper_evidence(published, run_data)
        speaks_for = population(run_data) if run_data is not None else ""
        rows.append(
            {
                "finding": finding.number,
                "claim": finding.claim,
                "unit": finding.unit + (f"; the verdict speaks for {speaks_for}" if speaks_for else ""),
                "testable_here": assessment.testable_here,
                "evidence_this_run": assessment.evidence,
                "evidence_paper_table": f"{paper['statistic']}: {paper['value']} ({paper['interval']})",
                "test_and_statistic": assessment.test or "none: not testable here",
                "interval": assessment.interval or "none: not testable here",
                "verdict": assessment.verdict,
            }
        )
    return pd.DataFrame(rows)


def findings_on_published_data(published: StudyData, run_data: StudyData | None = None) -> pd.DataFrame:
    """The same findings on the paper's own model x category table: its evidence and the framework's verdict."""
    rows = []
    for finding, assessment in zip(FINDINGS, assess_all(published), strict=True):
        rows.append(
            {"finding": finding.number, "claim": finding.claim, **finding.paper_evidence(published, run_data)}
            | {"testable_here": assessment.testable_here, "verdict": assessment.verdict}
        )
    return pd.DataFrame(rows)


def rules_markdown() -> str:
    """Every finding's claim, unit, minimum effect, rule and needs, as Markdown (pre-registered: see
    ``PREREGISTERED_RULES``)."""
    lines = [
        "Verdicts: **holds** (evidence for the claim), **does not hold** (evidence against it, never mere absence "
        "of evidence), **inconclusive**, **not testable here** (the run lacks what the claim needs). "
        f"Tests at the {ALPHA:.0%} level; each rule can give either verdict, and each states both error rates."
    ]
    for finding in FINDINGS:
        lines.append(
            f"\n**Finding {finding.number}: {finding.claim}.** *Unit:* {finding.unit}. "
            f"*Minimum effect:* {finding.minimum_effect}. *Rule:* {finding.rule}. *Needs:* {finding.needs}."
        )
    return "\n".join(lines) + "\n"


def power_analysis(run: StudyData, published: StudyData) -> pd.DataFrame:
    """Replicates each finding's rule needs for 80% power (normal/t approximations of the rules' own tests).

    Findings 2 and 4 are about models, so their replicates are models, not prompts. The operating
    characteristics table (``helpers.calibration``) gives the rules' simulated power at this run's size.
    """
    from statsmodels.stats.power import TTestIndPower, TTestPower

    def ceil(value: float) -> str:
        return str(int(math.ceil(value))) if np.isfinite(value) else "n/a"

    def smallest_n(power: Any, effect: float, alpha: float, target: float) -> float:
        """The smallest n (per group, or of pairs) whose one-sided t test has ``target`` power at ``effect``:
        doubling, then bisection, on statsmodels' power function (its root finder fails past its bounds)."""
        if not (np.isfinite(effect) and effect > 0):
            return np.nan

        def enough(n: int) -> bool:
            return power.power(effect, n, alpha, alternative="larger") >= target

        high = 2
        while not enough(high):
            if high > 10**9:
                return np.inf
            high *= 2
        low = max(2, high // 2)
        while low < high:
            middle = (low + high) // 2
            low, high = (middle + 1, high) if not enough(middle) else (low, middle)
        return float(high)

    scales, others = len(FINDING1_SCALES), len(robustness.CATEGORIES) - 1
    testable = [r for r in MathHasHighestEntropy().comparisons(run).values() if not isinstance(r, str)]
    models = max(len(testable), 1)
    rows = [
        {
            "finding": 1,
            "effect": f"'holds': math 0.5 residual SD above each of the {others} other categories on both scales",
            "spread": "standardised (residual SD at matched length = 1); plain category means, so a lower bound",
            "unit": "prompts per category and model",
            "needed_at_80_percent_power": ceil(smallest_n(TTestIndPower(), 0.5, ALPHA, 0.8 ** (1 / (others * scales)))),
            "the_paper_had": "2",
        },
        {
            "finding": 1,
            "effect": "'does not hold': one category 0.5 residual SD above math on both scales",
            "spread": f"standardised; Holm's first step over {others} categories x {models} model(s)",
            "unit": "prompts per category and model",
            "needed_at_80_percent_power": ceil(
                smallest_n(TTestIndPower(), 0.5, ALPHA / (others * models), 0.8 ** (1 / scales))
            ),
            "the_paper_had": "2",
        },
    ]
    # finding 2: models per architecture, from the spread of log S_max between the paper's decoders
    means = robustness.model_means(published, "max_sparsity")
    sd = float(np.log(means.loc[means["architecture"] == "decoder", "mean"]).std(ddof=1))
    sparser = (math.log(PAPER_SPARSITY_RATIO_GEOMETRIC) - math.log(SPARSER_MINIMUM)) / sd
    k = 2
    while k < 1000 and (stats.t.ppf(1 - ALPHA, 2 * k - 2) + stats.norm.ppf(0.9)) * sd * math.sqrt(2 / k) > math.log(2):
        k += 1  # 'about': the 90% interval (two one-sided tests at 5%) inside a factor 2 either way w.p. 0.8
    rows += [
        {
            "finding": 2,
            "effect": f"'sparser': a true ratio of {significant(PAPER_SPARSITY_RATIO_GEOMETRIC)} (the paper's, "
            f"geometric means) against the minimum {SPARSER_MINIMUM}",
            "spread": f"SD of log S_max between the paper's decoders = {significant(sd, 3)}",
            "unit": "models per architecture",
            "needed_at_80_percent_power": ceil(smallest_n(TTestIndPower(), sparser, ALPHA, 0.8)),
            "the_paper_had": "1 encoder, 5 decoders",
        },
        {
            "finding": 2,
            "effect": f"'about': the 90% interval inside {significant(ABOUT_BAND[0])}-{significant(ABOUT_BAND[1])} "
            f"when the ratio is {significant(PAPER_SPARSITY_RATIO_GEOMETRIC)}",
            "spread": f"SD of log S_max between the paper's decoders = {significant(sd, 3)}",
            "unit": "models per architecture",
            "needed_at_80_percent_power": str(k),
            "the_paper_had": "1 encoder, 5 decoders",
        },
    ]
    # finding 3: the paper published no prompt-level A_f, so only the rule's minimum effect can be used
    rivals = 5
    rows.append(
        {
            "finding": 3,
            "effect": "the rule's minimum: GPT-2 above each of 5 models by d_z = 0.2 (the paper's margin cannot be "
            "put on a prompt-level scale)",
            "spread": "standardised (SD of the paired differences = 1)",
            "unit": "shared prompts",
            "needed_at_80_percent_power": ceil(smallest_n(TTestPower(), 0.2, ALPHA, 0.8 ** (1 / rivals))),
            "the_paper_had": "24 (12 cells of 2)",
        }
    )
    # finding 4: models, with Spearman's rho on the Fisher z scale (Bonett-Wright variance)
    z_min = math.atanh(MONOTONIC_MINIMUM)
    no_link = 3 + ((stats.norm.ppf(0.975) + stats.norm.ppf(0.9)) / z_min) ** 2  # interval inside +-0.5 w.p. 0.8
    link = 3 + (1 + 0.8**2 / 2) * ((stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) / (math.atanh(0.8) - z_min)) ** 2
    rows += [
        {
            "finding": 4,
            "effect": f"'holds' possible at all: the interval can lie inside +-{MONOTONIC_MINIMUM} (rho = 0 exactly)",
            "spread": "Fisher z, Bonett-Wright variance",
            "unit": "models",
            "needed_at_80_percent_power": str(MODELS_TO_SUPPORT),
            "the_paper_had": str(len(published.models)),
        },
        {
            "finding": 4,
            "effect": f"'holds' (no link): the interval inside +-{MONOTONIC_MINIMUM} when rho = 0",
            "spread": "Fisher z, Bonett-Wright variance",
            "unit": "models",
            "needed_at_80_percent_power": ceil(no_link),
            "the_paper_had": str(len(published.models)),
        },
        {
            "finding": 4,
            "effect": f"'does not hold': the interval above {MONOTONIC_MINIMUM} when rho = 0.8",
            "spread": "Fisher z, Bonett-Wright variance",
            "unit": "models",
            "needed_at_80_percent_power": ceil(link),
            "the_paper_had": str(len(published.models)),
        },
    ]
    return pd.DataFrame(rows)


def conclusions(run: list[Assessment], published: StudyData, run_data: StudyData | None = None) -> str:
    """A short paragraph, generated from the verdicts, on what can and cannot be concluded."""
    on_paper = {a.finding.number: a for a in assess_all(published)}
    decided = [a for a in run if a.verdict in (HOLDS, DOES_NOT_HOLD)]
    open_ = [a for a in run if a.verdict == INCONCLUSIVE]
    untestable = [a for a in run if a.verdict == NOT_TESTABLE]
    sentences = []
    for a in decided:
        sentences.append(
            f"Finding {a.finding.number} ({a.finding.claim[0].lower() + a.finding.claim[1:]}) "
            f"{a.verdict} in this run: {a.evidence}."
        )
    for a in open_:
        sentences.append(f"Finding {a.finding.number} is inconclusive: {a.evidence}.")
    if untestable:
        sentences.append(
            "Not testable here: "
            + "; ".join(f"finding {a.finding.number} ({a.why_not_testable})" for a in untestable)
            + ". What these models show instead is a fact about them, not about architectures or model size."
        )
    speaks_for = population(run_data) if run_data is not None else ""
    if speaks_for:
        sentences.append(f"The verdicts speak for {speaks_for}.")
    paper = [f"finding {n}: {a.verdict}" for n, a in on_paper.items()]
    sentences.append(
        "The paper's own table (means of 2 prompts per model and category, without token counts, from one encoder "
        "and five decoders), under the same rules, gives " + "; ".join(paper) + "."
    )
    return " ".join(sentences)


README_START, README_END = "<!-- scorecard:start -->", "<!-- scorecard:end -->"
README_COLUMNS = ("finding", "claim", "unit", "testable_here", "evidence_this_run", "evidence_paper_table", "verdict")


def quote_in_readme(
    scorecard: pd.DataFrame, paragraph: str, readme: Path, source: str, check: reproduction.Check | None = None
) -> bool:
    """Replace the README's scorecard section (between its markers); False if the markers are missing.

    With a ``check``, a section that the new one reproduces within tolerance is left as it is.
    """
    text = readme.read_text(encoding="utf-8")
    if README_START not in text or README_END not in text:
        return False
    body = store.markdown_table(scorecard[list(README_COLUMNS)])
    note = f"<!-- generated by {source} from paper/tables/findings_scorecard.csv; do not edit by hand -->"
    head, rest = text.split(README_START, 1)
    committed, tail = rest.split(README_END, 1)
    section = f"\n{note}\n\n{body}\n\n{paragraph}\n\n"
    if check is not None:
        comparison = reproduction.compare_text("README.md scorecard", committed, section)
        comparison.action = "kept" if comparison.reproduced else "written"
        check.add(comparison)
        if comparison.reproduced:
            reproduction.keep([readme])
            return True
    store.write_text(f"{head}{README_START}{section}{README_END}{tail}", readme)
    return True


# --- notebook 06's one call ------------------------------------------------------------------------------


PAIR_METRICS = (
    "final_activation",
    "final_activation_pre_norm",
    "attention_entropy",
    "attention_entropy_normalized",
    "max_sparsity",
    "max_hoyer_sparsity",
)


@dataclass
class FindingsAnalysis:
    """Everything notebook 06 shows: the assessments, their tables, and the generated conclusions."""

    run: StudyData
    published: StudyData
    assessments: list[Assessment]
    tables: dict[str, pd.DataFrame]
    conclusions: str


def analyse(
    metrics: pd.DataFrame,
    published_cells: pd.DataFrame,
    samples: int,
    seed: int,
    layers: pd.DataFrame | None = None,
    display_names: dict[str, str] | None = None,
    calibration_runs: int = 100,
    signatures: pd.DataFrame | None = None,
) -> FindingsAnalysis:
    """Assess every finding on a run's tidy per-prompt table and on the paper's table; make every output table.

    ``metrics``: finite rows only (``tables.finite_only``); ``samples``: bootstrap draws (at least
    ``robustness.MIN_BOOTSTRAP_SAMPLES``), one weight matrix shared by every bootstrap statistic; ``layers``:
    the run's long per-layer table (for ``sparsity_interpretation``), with ``display_names`` (registry name ->
    display name); ``calibration_runs``: simulated runs per finding-1 scenario in the operating characteristics;
    ``signatures``: finding 5's per-model tests (notebook 08, ``helpers.signatures``), if the run has them.
    """
    if samples < robustness.MIN_BOOTSTRAP_SAMPLES:
        raise ValueError(f"samples={samples}: at least {robustness.MIN_BOOTSTRAP_SAMPLES} bootstrap draws are needed")
    return _analyse(metrics, published_cells, samples, seed, layers, display_names or {}, calibration_runs, signatures)


@robustness.single_threaded_blas
def _analyse(
    metrics: pd.DataFrame,
    published_cells: pd.DataFrame,
    samples: int,
    seed: int,
    layers: pd.DataFrame | None,
    display_names: dict[str, str],
    calibration_runs: int,
    signatures: pd.DataFrame | None,
) -> FindingsAnalysis:
    from helpers import calibration

    run = StudyData.from_metrics(store.at_measurement_precision(metrics), samples, seed)
    if signatures is not None:
        run.cache[helpers.signatures.CACHE_KEY] = signatures
    published = StudyData.from_published(published_cells, samples, seed)
    assessments = assess_all(run)
    tables: dict[str, pd.DataFrame] = {
        "findings_scorecard": scorecard(assessments, published, run),
        "findings_on_published_data": findings_on_published_data(published, run),
        "power_analysis": power_analysis(run, published),
    }
    for assessment in assessments:
        tables |= assessment.tables
    if "sparsity_variants" not in tables:
        tables["sparsity_variants"] = DecodersAreSparser().variants(run)
    for name, finding in (
        ("finding1_per_model", FINDINGS[0]),
        ("finding1_categories", FINDINGS[0]),
        ("finding1_length_contrasts", FINDINGS[0]),
        ("finding3_gpt2_contrasts", FINDINGS[2]),
    ):
        if name not in tables:
            tables[name] = pd.DataFrame({"note": [f"not testable here: {finding.why_not_testable(run)}"]})
    tables["sparsity_interpretation"] = (
        sparsity_interpretation(layers, display_names) if layers is not None else pd.DataFrame()
    )
    testable = [r for r in FINDINGS[0].comparisons(run).values() if not isinstance(r, str)]
    counts = run.models["architecture"].value_counts()
    encoders, decoders = int(counts.get("encoder", 0)), int(counts.get("decoder", 0))
    if min(encoders, decoders) < MIN_MODELS_PER_ARCHITECTURE or encoders + decoders < MIN_MODELS_FOR_ARCHITECTURES:
        encoders, decoders = MIN_MODELS_PER_ARCHITECTURE, MIN_MODELS_FOR_ARCHITECTURES - MIN_MODELS_PER_ARCHITECTURE
    tables["operating_characteristics"] = calibration.operating_characteristics(
        finding1_models=max(len(testable), MIN_MODELS_FOR_CATEGORIES),
        encoders=encoders,
        decoders=decoders,
        size_models=max(run.models["n_parameters"].nunique(), MIN_MODELS_FOR_ORDER),
        seeds=calibration_runs,
    )
    tables["natural_experiments"] = natural_experiments(run)
    tables["length_models"] = robustness.length_models(run) if "n_tokens" in run.table else pd.DataFrame()
    tables["model_pair_contrasts"] = robustness.model_pair_contrasts(run, PAIR_METRICS)
    tables["cell_intervals"] = robustness.cell_intervals(
        run, tuple(dict.fromkeys(("final_activation", "attention_entropy", PRIMARY_SPARSITY, "max_hoyer_sparsity")))
    )
    tables["top10_stability"] = pd.concat(
        [
            robustness.top10_stability(run, "final_activation"),
            robustness.top10_stability(run, "attention_entropy"),
            robustness.top10_stability(run, "max_sparsity", lowest=True),
        ],
        ignore_index=True,
    )
    for name, table in tables.items():
        if table.empty:
            tables[name] = pd.DataFrame({"note": ["no rows: the run has too few models or prompts"]})
    tables = {name: tables[name] for name in FINDINGS_TABLES}
    return FindingsAnalysis(run, published, assessments, tables, conclusions(assessments, published, run))


def natural_experiments(data: StudyData) -> pd.DataFrame:
    """The registry's natural experiments (``registry.NATURAL_EXPERIMENTS``) present in the run: per pair and
    metric, the paired contrast of the two models on their shared prompts (facts about them, not findings)."""
    from helpers.registry import NATURAL_EXPERIMENTS

    by_name = {str(row.model): name for name, row in data.models.iterrows()}
    rows = []
    for first, second, differs in NATURAL_EXPERIMENTS:
        if first not in by_name or second not in by_name:
            continue
        for metric in NATURAL_EXPERIMENT_METRICS:
            if metric not in data.table:
                continue
            contrast = robustness.paired_contrast(data, metric, by_name[first], by_name[second])
            low, high = robustness.percentile_interval(contrast["ratio_draws"])
            rows.append(
                {
                    "pair": f"{by_name[first]} / {by_name[second]}",
                    "what_differs": differs,
                    "metric": metric,
                    "mean_first": contrast["mean_first"],
                    "mean_second": contrast["mean_second"],
                    "ratio": contrast["ratio"],
                    "ratio_low": low,
                    "ratio_high": high,
                    "share_first_higher": contrast["share_first_higher"],
                    "wilcoxon_p": contrast["wilcoxon_p"],
                }
            )
    return pd.DataFrame(rows)


NATURAL_EXPERIMENT_METRICS = ("final_activation", "attention_entropy", "attention_entropy_normalized", "max_sparsity")


# --- pre-registration: the rules, committed before the results they judge ---------------------------------

PREREGISTERED_RULES = paths.PAPER / "preregistered_rules.md"
"""The rules' text (``rules_markdown``) as committed before the eight-model run; a test keeps it equal to the code,
so a changed rule shows in the repository's history before any result it judges."""


def preregistration() -> str:
    """A sentence naming the commit that first recorded the rules and the commit that last changed them."""
    import subprocess

    def log(*options: str) -> str:
        try:
            return subprocess.run(
                ["git", "log", *options, "--format=%h (%ad): %s", "--date=short", "--", str(PREREGISTERED_RULES)],
                cwd=paths.ROOT,
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    history = log().splitlines()
    if not history:
        return "This copy has no git history, so the commit that fixed the rules cannot be named here."
    current = PREREGISTERED_RULES.read_text(encoding="utf-8") == rules_markdown()
    return (
        f"The rules above were first committed in {history[-1]} and last changed in {history[0]} "
        f"({len(history)} commit(s) in all, `{PREREGISTERED_RULES.relative_to(paths.ROOT)}`); the code's rules "
        + ("are that text exactly." if current else "DIFFER from that text: they changed after it was committed.")
    )


if __name__ == "__main__":  # python -m helpers.findings preregister: record the rules (then commit them)
    import sys

    from helpers import findings  # the imported module, with every registered finding (not this __main__ copy)

    if sys.argv[1:] != ["preregister"]:
        raise SystemExit("usage: python -m helpers.findings preregister")
    store.write_text(findings.rules_markdown(), PREREGISTERED_RULES)
    print(f"wrote {PREREGISTERED_RULES}: commit it before running the study whose results these rules judge")
