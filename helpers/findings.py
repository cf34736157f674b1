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

from helpers import robustness, store
from helpers.outputs import FINDINGS_TABLES
from helpers.robustness import MATH, StudyData

HOLDS, DOES_NOT_HOLD, INCONCLUSIVE, NOT_TESTABLE = "holds", "does not hold", "inconclusive", "not testable here"
VERDICTS: tuple[str, ...] = (HOLDS, DOES_NOT_HOLD, INCONCLUSIVE, NOT_TESTABLE)
ALPHA = 0.05
MIN_PROMPTS_PER_CATEGORY = 12
MIN_MODELS_FOR_CATEGORIES = 2
MIN_SHARED_ITEMS = 10
GPT2 = "GPT2-117M"
PAPER_SPARSITY_RATIO = 7.08
"""The paper's decoder/encoder ratio of mean max sparsity (its architecture table, 0.2757 / 0.0390; a test
recomputes it from data/reference)."""


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
    def paper_evidence(self, published: StudyData) -> dict[str, str]:
        """What the paper's own table says: statistic, value, interval, detail."""


# --- finding 1 -----------------------------------------------------------------------------------------


class MathHasHighestEntropy(Finding):
    number = 1
    claim = "Mathematical reasoning prompts have the highest attention entropy H_att"
    unit = "prompts within each model (Holm across models)"
    minimum_effect = (
        "'highest' is shown by math above every other category; it is refuted only by a category at least "
        "0.5 residual SD above math (the SD of H_att between prompts of one category at equal length)"
    )
    rule = (
        "Per model, each category's mean H_att is predicted at the same token counts (a natural cubic spline in "
        "token count for each category, so length may act differently per category; HC3 errors; averaged over "
        "the prompts within the length range every category covers). It holds in a model if math is above each "
        "of the other categories by a one-sided t test at 5% (an intersection-union test), Holm-adjusted across "
        "models; it does not hold in a model if some category is above math by at least the minimum effect "
        "(one-sided, Holm across all categories and models); otherwise it is inconclusive. Over the run: holds if "
        "it holds in every model, does not hold if it does not hold in some model, inconclusive otherwise."
    )
    needs = (
        f"prompt-level values with token counts in at least {MIN_MODELS_FOR_CATEGORIES} models, each with math and "
        f"another category, at least {MIN_PROMPTS_PER_CATEGORY} prompts per category, and at least 3 prompts of "
        "every category in each quarter of the length range all categories share"
    )

    def _model_problem(self, frame: pd.DataFrame) -> str:
        frame = frame[np.isfinite(frame[["n_tokens", "attention_entropy"]].to_numpy(float)).all(axis=1)]
        counts = frame["category"].value_counts()
        if MATH not in counts or len(counts) < 2:
            return "needs math and at least one other category"
        if counts.min() < MIN_PROMPTS_PER_CATEGORY:
            return f"{counts.idxmin()} has {counts.min()} prompts (needs {MIN_PROMPTS_PER_CATEGORY})"
        return robustness.length_coverage_problem(frame)

    def comparisons(
        self, data: StudyData, covariates: tuple[str, ...] = ()
    ) -> dict[str, robustness.MatchedLength | str]:
        """Each model's matched-length comparison, or why it has none (computed once per data set)."""
        key = ("finding1", covariates)
        if key not in data.cache:
            result: dict[str, robustness.MatchedLength | str] = {}
            for model in data.models.index:
                frame = data.for_model(model)
                problem = self._model_problem(frame) if "n_tokens" in frame else "no token counts"
                if not problem:
                    try:
                        result[model] = robustness.matched_length_comparison(
                            frame, "attention_entropy", MATH, covariates
                        )
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

    def _tests(self, comparisons: dict[str, robustness.MatchedLength]) -> pd.DataFrame:
        """One row per model and other category: math - category at matched length, both one-sided tests."""
        rows = []
        for model, result in comparisons.items():
            math_index = result.categories.index(MATH)
            minimum = 0.5 * result.residual_sd
            for index, category in enumerate(result.categories):
                if category == MATH:
                    continue
                difference = result.means[math_index] - result.means[index]
                variance = (
                    result.covariance[math_index, math_index]
                    + result.covariance[index, index]
                    - 2 * result.covariance[math_index, index]
                )
                se = math.sqrt(max(variance, 0.0))
                rows.append(
                    {
                        "model": model,
                        "category": category,
                        "math_minus_category": difference,
                        "se": se,
                        "minimum_effect": minimum,
                        "p_math_above": float(stats.t.sf(difference / se, result.df_resid)),
                        "p_category_above_by_minimum": float(stats.t.cdf((difference + minimum) / se, result.df_resid)),
                    }
                )
        tests = pd.DataFrame(rows)
        tests["p_category_above_by_minimum_holm"] = holm(tests["p_category_above_by_minimum"].tolist())
        return tests

    @staticmethod
    def _verdicts(tests: pd.DataFrame) -> pd.DataFrame:
        """Per model: the intersection-union p (Holm across models) and the verdict in that model."""
        per_model = tests.groupby("model", sort=False).agg(
            p_math_highest=("p_math_above", "max"),
            p_some_category_above_holm=("p_category_above_by_minimum_holm", "min"),
        )
        per_model["p_math_highest_holm"] = holm(per_model["p_math_highest"].tolist())
        per_model["verdict"] = [
            HOLDS
            if row.p_math_highest_holm < ALPHA
            else DOES_NOT_HOLD
            if row.p_some_category_above_holm < ALPHA
            # a verdict the other way needs evidence against: a category confidently above math by the minimum
            else INCONCLUSIVE
            for row in per_model.itertuples()
        ]
        return per_model

    @staticmethod
    def overall(verdicts: list[str]) -> str:
        """The run's verdict from the per-model ones."""
        if verdicts and all(v == HOLDS for v in verdicts):
            return HOLDS
        return DOES_NOT_HOLD if DOES_NOT_HOLD in verdicts else INCONCLUSIVE

    def decide(self, data: StudyData) -> Assessment:
        comparisons = {m: r for m, r in self.comparisons(data).items() if not isinstance(r, str)}
        tests = self._tests(comparisons)
        per_model = self._verdicts(tests)
        covariates = tuple(c for c in robustness.PROMPT_COVARIATES if c in data.table)
        adjusted = None
        if covariates:  # a sensitivity check: digits partly make a prompt "math", so this may adjust away the effect
            with_covariates = {m: r for m, r in self.comparisons(data, covariates).items() if not isinstance(r, str)}
            adjusted = self._verdicts(self._tests(with_covariates)) if with_covariates else None
        model_rows, category_rows = [], []
        for model, result in comparisons.items():
            ranks = robustness.rank_confidence_sets(result.means, result.covariance, result.df_resid)
            raw_rank = pd.Series(result.raw_means).rank(ascending=False, method="min").to_numpy()
            matched_rank = pd.Series(result.means).rank(ascending=False, method="min").to_numpy()
            index = result.categories.index(MATH)
            model_tests = tests[tests["model"] == model].set_index("category")
            for k, category in enumerate(result.categories):
                se = math.sqrt(max(result.covariance[k, k], 0.0))
                row = {"model": model, "category": category, "prompts": int(result.counts[k])}
                row |= {"raw_mean": result.raw_means[k], "raw_rank": int(raw_rank[k])}
                row |= {"matched_length_mean": result.means[k], "matched_length_se": se}
                row |= {
                    "rank": int(matched_rank[k]),
                    "rank_set_low": int(ranks[k, 0]),
                    "rank_set_high": int(ranks[k, 1]),
                }
                if category != MATH:
                    test = model_tests.loc[category]
                    row |= {
                        "math_minus_category": test["math_minus_category"],
                        "p_math_above": test["p_math_above"],
                        "p_category_above_by_minimum_holm": test["p_category_above_by_minimum_holm"],
                    }
                category_rows.append(row)
            model_rows.append(
                {
                    "model": model,
                    "prompts": int(result.counts.sum()),
                    "matched_tokens": f"{result.support[0]}-{result.support[1]}",
                    "prompts_in_matched_range": result.prompts_in_support,
                    "residual_sd": result.residual_sd,
                    "interaction_f": result.interaction_f,
                    "interaction_p": result.interaction_p,
                    "math_raw_rank": int(raw_rank[index]),
                    "math_matched_rank": int(matched_rank[index]),
                    "math_rank_set": f"{int(ranks[index, 0])}-{int(ranks[index, 1])}",
                    "p_math_highest": per_model.loc[model, "p_math_highest"],
                    "p_math_highest_holm": per_model.loc[model, "p_math_highest_holm"],
                    "p_some_category_above_holm": per_model.loc[model, "p_some_category_above_holm"],
                    "verdict": per_model.loc[model, "verdict"],
                    "verdict_with_surface_covariates": adjusted["verdict"].get(model, "")
                    if adjusted is not None
                    else "",
                }
            )
        models = pd.DataFrame(model_rows)
        untested = [m for m in data.models.index if m not in comparisons]
        verdict = self.overall(models["verdict"].tolist())
        evidence = "; ".join(
            f"{row.model}: math ranks {row.math_raw_rank} raw and {row.math_matched_rank} at matched length "
            f"(tokens {row.matched_tokens}), {row.verdict}"
            for row in models.itertuples()
        )
        if untested:
            evidence += "; not testable in " + ", ".join(untested)
        return Assessment(
            self,
            verdict,
            evidence=evidence,
            test=f"per model: intersection-union of {len(comparisons[models['model'][0]].categories) - 1} one-sided "
            "t tests on length-matched means (spline x category, HC3), Holm across models; largest Holm p "
            f"{significant(models['p_math_highest_holm'].max())}; category x length interaction F "
            + ", ".join(f"{significant(f, 2)}" for f in models["interaction_f"]),
            interval="math's 95% rank confidence set: "
            + ", ".join(f"{row.model} {row.math_rank_set}" for row in models.itertuples()),
            tables={"finding1_per_model": models, "finding1_categories": pd.DataFrame(category_rows)},
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

    def paper_evidence(self, published: StudyData) -> dict[str, str]:
        grid = published.wide("attention_entropy")  # categories x models
        ranks = grid.rank(ascending=False, method="min")
        chi2 = stats.friedmanchisquare(*[grid.loc[c] for c in grid.index])
        w = chi2.statistic / (grid.shape[1] * (grid.shape[0] - 1))
        last = {grid[m].idxmin() for m in grid.columns}
        return {
            "statistic": "Kendall's W of the category rankings of H_att across the paper's models",
            "value": significant(w),
            "interval": f"Friedman chi2 = {significant(chi2.statistic)}, p = {significant(chi2.pvalue, 2)}",
            "detail": f"math ranks {', '.join(str(int(r)) for r in ranks.loc[MATH])} in the {grid.shape[1]} models; "
            f"last in every model: {', '.join(sorted(last))}. Rankings this uniform across very different models "
            "fit a property of the shared prompts, such as their length, as well as a category effect; without "
            "token counts the table cannot tell the two apart",
        }


# --- finding 2 -----------------------------------------------------------------------------------------

SPARSITY_VARIANTS: dict[str, str] = {
    "max_hoyer_sparsity": "Hoyer sparsity, max over layers (scale-free; primary)",
    "max_hoyer_sparsity_no_embedding": "Hoyer sparsity, max over layers without the embedding output",
    "max_sparsity": "|h| < 0.01, max over layers (the paper's)",
    "max_sparsity_0.001": "|h| < 0.001, max over layers",
    "max_sparsity_0.1": "|h| < 0.1, max over layers",
    "max_sparsity_no_embedding": "|h| < 0.01, max over layers without the embedding output",
    "max_sparsity_relative_0.001": "|h| < 0.001 x the layer's SD, max over layers",
    "max_sparsity_relative_0.01": "|h| < 0.01 x the layer's SD, max over layers",
    "max_sparsity_relative_0.1": "|h| < 0.1 x the layer's SD, max over layers",
}
"""Every sparsity measure finding 2 is checked on; the first is pre-specified as primary."""
PRIMARY_SPARSITY = "max_hoyer_sparsity"
PAPER_SPARSITY = "max_sparsity"
SPARSER_MINIMUM = 1.1
ABOUT_7X = (PAPER_SPARSITY_RATIO / 2, PAPER_SPARSITY_RATIO * 2)


class DecodersAreSparser(Finding):
    number = 2
    claim = f"Decoders are sparser than encoders, about {PAPER_SPARSITY_RATIO:.0f}x"
    unit = "models (architectures compared with models as replicates)"
    minimum_effect = (
        f"'sparser' is a decoder/encoder ratio above {SPARSER_MINIMUM} on the primary, scale-free measure (Hoyer "
        f"sparsity); 'about 7x' is a ratio within a factor 2 of {PAPER_SPARSITY_RATIO} "
        f"({significant(ABOUT_7X[0])}-{significant(ABOUT_7X[1])}) on the paper's own measure (|h| < 0.01)"
    )
    rule = (
        "Each model is reduced to its mean sparsity over the prompts every model saw; the decoder/encoder ratio of "
        "the geometric means of those, with a 95% t interval on (models - 2) degrees of freedom. 'Sparser' holds if "
        f"the interval lies above {SPARSER_MINIMUM}, does not hold if it lies below {SPARSER_MINIMUM}, and is "
        "inconclusive otherwise; the same rule gives every other sparsity variant's verdict (none may decide "
        "silently). 'About 7x' holds on the paper's measure if the interval lies inside "
        f"{significant(ABOUT_7X[0])}-{significant(ABOUT_7X[1])}, does not hold if it lies outside it, and is "
        "inconclusive otherwise. The finding's verdict joins the two parts: holds if both hold, does not hold if "
        "either does not hold, inconclusive otherwise."
    )
    needs = "at least two encoders and two decoders (with one encoder, the architecture is confounded with that model)"

    def why_not_testable(self, data: StudyData) -> str:
        counts = data.models["architecture"].value_counts()
        encoders, decoders = int(counts.get("encoder", 0)), int(counts.get("decoder", 0))
        if encoders < 2 or decoders < 2:
            return f"{_count(encoders, 'encoder')} and {_count(decoders, 'decoder')}; needs at least 2 of each"
        if PRIMARY_SPARSITY not in data.table:
            return f"the run has no {PRIMARY_SPARSITY} (measured since this compendium's version 2)"
        return ""

    @staticmethod
    def sparser_verdict(ratio: dict[str, Any]) -> str:
        if not np.isfinite(ratio.get("low", np.nan)):
            return NOT_TESTABLE
        if ratio["low"] > SPARSER_MINIMUM:
            return HOLDS
        return DOES_NOT_HOLD if ratio["high"] < SPARSER_MINIMUM else INCONCLUSIVE

    @staticmethod
    def about_7x_verdict(ratio: dict[str, Any]) -> str:
        if not np.isfinite(ratio.get("low", np.nan)):
            return NOT_TESTABLE
        if ABOUT_7X[0] <= ratio["low"] and ratio["high"] <= ABOUT_7X[1]:
            return HOLDS
        return DOES_NOT_HOLD if ratio["high"] < ABOUT_7X[0] or ratio["low"] > ABOUT_7X[1] else INCONCLUSIVE

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
            pair_text = []
            for decoder, encoder in self.pairs(data):
                contrast = robustness.paired_contrast(data, variant, decoder, encoder)
                low, high = robustness.percentile_interval(contrast["ratio_draws"])
                pair_text.append(
                    f"{decoder}/{encoder} {significant(contrast['ratio'])} [{significant(low)}, {significant(high)}], "
                    f"higher on {contrast['share_first_higher']:.0%}"
                )
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
                    "verdict_sparser": self.sparser_verdict(ratio) if testable else NOT_TESTABLE,
                    "verdict_about_7x": self.about_7x_verdict(ratio) if testable else NOT_TESTABLE,
                }
            )
        return pd.DataFrame(rows)

    def decide(self, data: StudyData) -> Assessment:
        variants = self.variants(data)
        architecture_rows = variants[variants["comparison"].str.startswith("decoders")].set_index("variant")
        primary = architecture_rows.loc[PRIMARY_SPARSITY]
        about = (
            architecture_rows.loc[PAPER_SPARSITY, "verdict_about_7x"]
            if PAPER_SPARSITY in architecture_rows.index
            else INCONCLUSIVE
        )
        parts = (primary["verdict_sparser"], about)
        verdict = HOLDS if parts == (HOLDS, HOLDS) else DOES_NOT_HOLD if DOES_NOT_HOLD in parts else INCONCLUSIVE
        agreeing = int((architecture_rows["verdict_sparser"] == primary["verdict_sparser"]).sum())
        evidence = (
            f"'sparser' {primary['verdict_sparser']}, 'about 7x' {about}: decoder/encoder ratio of Hoyer sparsity "
            f"{significant(primary['ratio'])} over "
            f"{int((data.models['architecture'] == 'decoder').sum())} decoders and "
            f"{int((data.models['architecture'] == 'encoder').sum())} encoders; the same verdict on {agreeing} of "
            f"{len(architecture_rows)} sparsity variants for 'sparser'"
        )
        if PAPER_SPARSITY in architecture_rows.index:
            paper = architecture_rows.loc[PAPER_SPARSITY]
            evidence += (
                f"; on the paper's measure the ratio is {significant(paper['ratio'])} "
                f"('about 7x': {paper['verdict_about_7x']})"
            )
        mixed = robustness.crossed_mixed_model(data, PRIMARY_SPARSITY)
        ratio = robustness.architecture_ratio(data, PRIMARY_SPARSITY)
        return Assessment(
            self,
            verdict,
            evidence=evidence,
            test=f"two-sample t test on log model means, {ratio['df']} df, p = {significant(ratio['p_value'], 2)}; "
            f"crossed mixed model (model, prompt) ratio {significant(mixed['ratio'])}",
            interval=f"ratio 95% CI [{significant(primary['low'])}, {significant(primary['high'])}]",
            tables={"sparsity_variants": variants},
        )

    def facts(self, data: StudyData) -> str:
        if PRIMARY_SPARSITY not in data.table and PAPER_SPARSITY not in data.table:
            return ""
        parts = []
        for variant in (PRIMARY_SPARSITY, PAPER_SPARSITY):
            if variant not in data.table:
                continue
            for decoder, encoder in self.pairs(data):
                contrast = robustness.paired_contrast(data, variant, decoder, encoder)
                low, high = robustness.percentile_interval(contrast["ratio_draws"])
                name = "Hoyer" if variant == PRIMARY_SPARSITY else "|h| < 0.01"
                parts.append(
                    f"{decoder}/{encoder} {name} {significant(contrast['ratio'])} [{significant(low)}, "
                    f"{significant(high)}], higher on {contrast['share_first_higher']:.0%} of {data.item_kind}"
                )
        return "facts about these models: " + "; ".join(parts) if parts else ""

    def paper_evidence(self, published: StudyData) -> dict[str, str]:
        grid = published.wide("max_sparsity")
        architecture = published.models["architecture"]
        encoders = list(architecture.index[architecture == "encoder"])
        pieces = []
        for decoder in architecture.index[architecture == "decoder"]:
            for encoder in encoders:
                ratio = grid[decoder].mean() / grid[encoder].mean()
                below = int((grid[decoder] < grid[encoder]).sum())
                pieces.append(
                    (ratio, f"{decoder} {significant(ratio)} (below {encoder} in {below} of {len(grid)} cells)")
                )
        pieces.sort()
        by_architecture = grid.T.groupby(architecture).mean().mean(axis=1)
        return {
            "statistic": "decoder/encoder ratio of mean S_max, and each decoder's ratio to the encoder",
            "value": significant(by_architecture.get("decoder", np.nan) / by_architecture.get("encoder", np.nan)),
            "interval": f"per decoder {significant(pieces[0][0])} to {significant(pieces[-1][0])}" if pieces else "",
            "detail": "; ".join(text for _, text in pieces) + f"; {len(encoders)} encoder, so no architecture test",
        }


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

    def paper_evidence(self, published: StudyData) -> dict[str, str]:
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
        "exact permutation p-value is reported beside it."
    )
    needs = f"at least {MIN_MODELS_FOR_ORDER} models with different parameter counts"

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
        if -MONOTONIC_MINIMUM < result["low"] and result["high"] < MONOTONIC_MINIMUM:
            verdict = HOLDS
        elif result["low"] > MONOTONIC_MINIMUM or result["high"] < -MONOTONIC_MINIMUM:
            verdict = DOES_NOT_HOLD
        else:
            verdict = INCONCLUSIVE
        return Assessment(
            self,
            verdict,
            evidence=f"Spearman rho(parameters, mean A_f) = {significant(result['rho'], 2)} over {result['n']} models",
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

    def paper_evidence(self, published: StudyData) -> dict[str, str]:
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
"""The paper's findings, in its order."""


# --- the scorecard and what the paper's own table says --------------------------------------------------


def assess_all(data: StudyData) -> list[Assessment]:
    """Every finding assessed on ``data``."""
    return [finding.assess(data) for finding in FINDINGS]


def scorecard(run: list[Assessment], published: StudyData) -> pd.DataFrame:
    """One row per finding: claim, unit, testable here (and why not), the evidence of this run and of the
    paper's table, the test and its statistic, the interval and the verdict."""
    rows = []
    for assessment in run:
        finding = assessment.finding
        paper = finding.paper_evidence(published)
        rows.append(
            {
                "finding": finding.number,
                "claim": finding.claim,
                "unit": finding.unit,
                "testable_here": assessment.testable_here,
                "evidence_this_run": assessment.evidence,
                "evidence_paper_table": f"{paper['statistic']}: {paper['value']} ({paper['interval']})",
                "test_and_statistic": assessment.test or "none: not testable here",
                "interval": assessment.interval or "none: not testable here",
                "verdict": assessment.verdict,
            }
        )
    return pd.DataFrame(rows)


def findings_on_published_data(published: StudyData) -> pd.DataFrame:
    """The same findings on the paper's own model x category table: its evidence and the framework's verdict."""
    rows = []
    for finding, assessment in zip(FINDINGS, assess_all(published), strict=True):
        rows.append(
            {"finding": finding.number, "claim": finding.claim, **finding.paper_evidence(published)}
            | {"testable_here": assessment.testable_here, "verdict": assessment.verdict}
        )
    return pd.DataFrame(rows)


def rules_markdown() -> str:
    """Every finding's claim, unit, minimum effect, rule and needs, as Markdown (stated before they are applied)."""
    lines = [
        "Verdicts: **holds** (evidence for the claim), **does not hold** (evidence against it, never mere absence "
        "of evidence), **inconclusive**, **not testable here** (the run lacks what the claim needs). "
        f"Tests at the {ALPHA:.0%} level."
    ]
    for finding in FINDINGS:
        lines.append(
            f"\n**Finding {finding.number}: {finding.claim}.** *Unit:* {finding.unit}. "
            f"*Minimum effect:* {finding.minimum_effect}. *Rule:* {finding.rule} *Needs:* {finding.needs}."
        )
    return "\n".join(lines)


def power_analysis(run: StudyData, published: StudyData) -> pd.DataFrame:
    """Replicates each finding's rule needs for 80% power, given the spread this run measures.

    Each row follows the finding's own rule (its test, its level, its multiplicity). Where the
    paper's effect can be put on the scale of our spread it is used; otherwise the row is for the
    rule's minimum effect, and says so. Findings 2 and 4 are about models, so their replicates
    are models, not prompts.
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

    rows = []
    # finding 1: the paper's own margin (math - next category, raw), scaled by this run's matched-length spread
    residual = _relative_residual_sd(run)
    entropy = published.wide("attention_entropy")
    needed = []
    for model in entropy.columns:
        ordered = entropy[model].sort_values(ascending=False)
        effect = (ordered.iloc[0] - ordered.iloc[1]) / (residual * entropy[model].mean()) if residual else np.nan
        if np.isfinite(effect) and effect > 0:
            alpha = ALPHA / len(entropy.columns)  # Holm across models, at its strictest
            needed.append(smallest_n(TTestIndPower(), effect, alpha, 0.8))
    rows.append(
        {
            "finding": 1,
            "effect": "the paper's math margin over the next category (raw, per paper model)",
            "spread": f"residual SD at matched length = {significant(residual, 2)} x the mean H_att (this run)",
            "unit": "prompts per category and model",
            "needed_at_80_percent_power": (
                "n/a" if not needed else "-".join(dict.fromkeys([ceil(min(needed)), ceil(max(needed))]))
            ),
            "the_paper_had": "2",
        }
    )
    categories, models = 12, max(len(run.models), 2)
    per_comparison = 0.8 ** (1 / (categories - 1))  # the intersection-union test needs all 11 comparisons
    rows.append(
        {
            "finding": 1,
            "effect": "the rule's minimum: math above each other category by 0.5 residual SD",
            "spread": "standardised (residual SD = 1)",
            "unit": "prompts per category and model",
            "needed_at_80_percent_power": ceil(smallest_n(TTestIndPower(), 0.5, ALPHA / models, per_comparison)),
            "the_paper_had": "2",
        }
    )
    # finding 2: models per architecture, from the spread of log S_max between the paper's decoders
    log_sparsity = np.log(published.wide("max_sparsity").mean())
    architecture = published.models["architecture"].reindex(log_sparsity.index)
    sd = float(log_sparsity[architecture == "decoder"].std(ddof=1))
    sparser = (math.log(PAPER_SPARSITY_RATIO) - math.log(SPARSER_MINIMUM)) / sd
    k = 2
    while k < 1000 and (stats.t.ppf(0.975, 2 * k - 2) + stats.norm.ppf(0.8)) * sd * math.sqrt(2 / k) > math.log(2):
        k += 1  # 'about 7x': the interval's half-width (log scale) within log 2 at 80% power
    rows += [
        {
            "finding": 2,
            "effect": f"'sparser': a true ratio of {PAPER_SPARSITY_RATIO} against the minimum {SPARSER_MINIMUM}",
            "spread": f"SD of log S_max between the paper's decoders = {significant(sd, 2)}",
            "unit": "models per architecture",
            "needed_at_80_percent_power": ceil(smallest_n(TTestIndPower(), sparser, ALPHA / 2, 0.8)),
            "the_paper_had": "1 encoder, 5 decoders",
        },
        {
            "finding": 2,
            "effect": f"'about 7x': an interval inside {significant(ABOUT_7X[0])}-{significant(ABOUT_7X[1])} "
            f"when the ratio is {PAPER_SPARSITY_RATIO}",
            "spread": f"SD of log S_max between the paper's decoders = {significant(sd, 2)}",
            "unit": "models per architecture",
            "needed_at_80_percent_power": str(k),
            "the_paper_had": "1 encoder, 5 decoders",
        },
    ]
    # finding 3: the paper published no prompt-level A_f, so only the rule's minimum effect can be used
    others = 5
    rows.append(
        {
            "finding": 3,
            "effect": "the rule's minimum: GPT-2 above each of 5 models by d_z = 0.2 (the paper's margin cannot be "
            "put on a prompt-level scale)",
            "spread": "standardised (SD of the paired differences = 1)",
            "unit": "shared prompts",
            "needed_at_80_percent_power": ceil(smallest_n(TTestPower(), 0.2, ALPHA, 0.8 ** (1 / others))),
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


def _relative_residual_sd(run: StudyData) -> float:
    """Median over this run's testable models of finding 1's residual SD over the model's mean H_att."""
    ratios = []
    for result in MathHasHighestEntropy().comparisons(run).values():
        if not isinstance(result, str):
            ratios.append(result.residual_sd / float(np.mean(result.means)))
    return float(np.median(ratios)) if ratios else np.nan


def conclusions(run: list[Assessment], published: StudyData) -> str:
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
    paper = [f"finding {n}: {a.verdict}" for n, a in on_paper.items()]
    sentences.append(
        "The paper's own table, under the same rules, gives " + "; ".join(paper) + " (it has prompt-level data for "
        "none, one encoder, and six models)."
    )
    return " ".join(sentences)


README_START, README_END = "<!-- scorecard:start -->", "<!-- scorecard:end -->"
README_COLUMNS = ("finding", "claim", "unit", "testable_here", "evidence_this_run", "evidence_paper_table", "verdict")


def quote_in_readme(scorecard: pd.DataFrame, paragraph: str, readme: Path, source: str) -> bool:
    """Replace the README's scorecard section (between its markers); False if the markers are missing."""
    text = readme.read_text(encoding="utf-8")
    if README_START not in text or README_END not in text:
        return False
    body = store.markdown_table(scorecard[list(README_COLUMNS)])
    note = f"<!-- generated by {source} from paper/tables/findings_scorecard.csv; do not edit by hand -->"
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    store.write_text(f"{head}{README_START}\n{note}\n\n{body}\n\n{paragraph}\n\n{README_END}{tail}", readme)
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


def analyse(metrics: pd.DataFrame, published_cells: pd.DataFrame, samples: int, seed: int) -> FindingsAnalysis:
    """Assess every finding on a run's tidy per-prompt table and on the paper's table; make every output table.

    ``metrics``: finite rows only (``tables.finite_only``); ``samples``: bootstrap draws (at least
    ``robustness.MIN_BOOTSTRAP_SAMPLES``), one weight matrix shared by every bootstrap statistic.
    """
    if samples < robustness.MIN_BOOTSTRAP_SAMPLES:
        raise ValueError(f"samples={samples}: at least {robustness.MIN_BOOTSTRAP_SAMPLES} bootstrap draws are needed")
    return _analyse(metrics, published_cells, samples, seed)


@robustness.single_threaded_blas
def _analyse(metrics: pd.DataFrame, published_cells: pd.DataFrame, samples: int, seed: int) -> FindingsAnalysis:
    run = StudyData.from_metrics(store.at_measurement_precision(metrics), samples, seed)
    published = StudyData.from_published(published_cells, samples, seed)
    assessments = assess_all(run)
    tables: dict[str, pd.DataFrame] = {
        "findings_scorecard": scorecard(assessments, published),
        "findings_on_published_data": findings_on_published_data(published),
        "power_analysis": power_analysis(run, published),
    }
    for assessment in assessments:
        tables |= assessment.tables
    if "sparsity_variants" not in tables:
        tables["sparsity_variants"] = DecodersAreSparser().variants(run)
    for name, finding in (
        ("finding1_per_model", FINDINGS[0]),
        ("finding1_categories", FINDINGS[0]),
        ("finding3_gpt2_contrasts", FINDINGS[2]),
    ):
        if name not in tables:
            tables[name] = pd.DataFrame({"note": [f"not testable here: {finding.why_not_testable(run)}"]})
    tables["length_models"] = robustness.length_models(run) if "n_tokens" in run.table else pd.DataFrame()
    tables["model_pair_contrasts"] = robustness.model_pair_contrasts(run, PAIR_METRICS)
    tables["cell_intervals"] = robustness.cell_intervals(
        run, ("final_activation", "attention_entropy", "max_sparsity", PRIMARY_SPARSITY)
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
    return FindingsAnalysis(run, published, assessments, tables, conclusions(assessments, published))
