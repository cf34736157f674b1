"""Finding 5: prompt categories have activation signatures beyond surface features (prompts within each
model; models as replicates across architectures).

The rule, ``ActivationSignatures``, decides from the per-model tests that ``signatures`` makes (probes
on scalar and representational views against a surface-only probe, with a control task);
``model_verdicts`` applies it to each model.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from helpers.stats.findings.rules import (
    ALPHA,
    DOES_NOT_HOLD,
    HOLDS,
    INCONCLUSIVE,
    MIN_MODELS_FOR_CATEGORIES,
    MIN_PROMPTS_PER_CATEGORY,
    Assessment,
    Finding,
    holm,
    significant,
)
from helpers.stats.robustness import StudyData

KINDS: tuple[str, ...] = ("scalar", "representational")
"""The two views a signature is looked for in (``signatures``: scalar metrics and profiles, mean-pooled vectors)."""
MIN_GAIN = 0.10
"""The minimum effect: probe accuracy at least 10 points above the surface-only probe's, net of the control task."""
CACHE_KEY = "signatures"
"""Where ``findings.analyse`` puts the per-model tests (``tests`` table) in ``StudyData.cache``."""


def model_verdicts(tests: pd.DataFrame) -> pd.DataFrame:
    """Per model, the rule of ``ActivationSignatures`` applied: one row with the model's verdict and why.

    ``tests``: one row per model (column ``model``) and kind, as ``analyse_model`` makes them.
    """
    rows = []
    for model, group in tests.groupby("model", sort=False):
        found = group[(group["p_permutation"] < ALPHA / len(KINDS)) & (group["selectivity"] >= MIN_GAIN)]
        rows.append(
            {
                "model": model,
                "signature_in": ", ".join(found["kind"]) or "none",
                "p_below_minimum": float(group["p_below_minimum"].max()),  # both views below the minimum
                "holds": not found.empty,
            }
        )
    table = pd.DataFrame(rows)
    if table.empty:
        return table.assign(p_below_minimum_holm=[], verdict=[])
    table["p_below_minimum_holm"] = holm(table["p_below_minimum"].tolist())
    table["verdict"] = np.where(
        table["holds"], HOLDS, np.where(table["p_below_minimum_holm"] < ALPHA, DOES_NOT_HOLD, INCONCLUSIVE)
    )
    return table.drop(columns="holds")


class ActivationSignatures(Finding):
    number = 5
    claim = "Prompt categories have activation signatures beyond surface features"
    unit = "prompts within each model; models as replicates across architectures"
    minimum_effect = (
        f"a probe that sees the activations decodes the category at least {MIN_GAIN:.0%} (accuracy points) better "
        "than the same probe on surface features alone (token count as a spline, words, digits, punctuation, tokens "
        "per word), net of the same gain on a control task with random labels of the same class sizes"
    )
    rule = (
        "Per model, two views, each a multinomial logistic regression on surface features plus the view (standardised, "
        "PCA-reduced), under stratified 5-fold cross-validation repeated over 2 seeds: scalar (the three metrics and "
        "their per-layer profiles) and representational (every layer's mean-pooled hidden vector at once). A view "
        "finds a signature if its gain over the surface-only probe beats labels permuted within token-count quintiles "
        f"(permutation p < {ALPHA}/2, Bonferroni over the two views) and its selectivity is at least the minimum "
        "effect. It holds in a model if either view finds a signature; it does not hold in a model if in both views "
        f"the gain is below the minimum effect (one-sided t test over prompts, Holm across models, {ALPHA:.0%}); "
        "otherwise inconclusive. Over the run: holds if it holds in every model (an intersection-union test), does "
        "not hold if it does not hold in some model, inconclusive otherwise"
    )
    needs = (
        f"mean-pooled hidden vectors and per-layer profiles of at least {MIN_MODELS_FOR_CATEGORIES} models, with at "
        f"least {MIN_PROMPTS_PER_CATEGORY} prompts per category"
    )

    @staticmethod
    def _tests(data: StudyData) -> pd.DataFrame | None:
        return data.cache.get(CACHE_KEY)

    def why_not_testable(self, data: StudyData) -> str:
        tests = self._tests(data)
        if tests is None or tests.empty:
            return f"no mean-pooled hidden vectors or per-layer profiles for the {data.item_kind}"
        usable = tests.loc[tests["min_per_category"] >= MIN_PROMPTS_PER_CATEGORY, "model"].nunique()
        if usable < MIN_MODELS_FOR_CATEGORIES:
            fewest = int(tests["min_per_category"].min())
            return (
                f"{usable} model(s) with at least {MIN_PROMPTS_PER_CATEGORY} prompts per category (fewest: {fewest}); "
                f"needs {MIN_MODELS_FOR_CATEGORIES}"
            )
        return ""

    def judge(self, tests: pd.DataFrame) -> Assessment:
        """The rule applied to the per-model tests (one row per model and kind)."""
        verdicts = model_verdicts(tests)
        if (verdicts["verdict"] == HOLDS).all():
            verdict = HOLDS
        elif (verdicts["verdict"] == DOES_NOT_HOLD).any():
            verdict = DOES_NOT_HOLD
        else:
            verdict = INCONCLUSIVE
        evidence = "; ".join(
            f"{row.model}: {self._sentence(tests[tests['model'] == row.model])}, {row.verdict}"
            for row in verdicts.itertuples()
        )
        return Assessment(
            self,
            verdict,
            evidence=evidence,
            test="permutation test of the gain over the surface-only probe (labels permuted within token-count "
            "quintiles), per model and view; t test of gain < minimum, Holm across models",
            interval="; ".join(
                f"{row.model} {row.kind} gain {significant(row.gain, 2)} (upper 95% "
                f"{significant(row.gain_upper_95, 2)})"
                for row in tests.itertuples()
            ),
            tables={"signature_verdicts": verdicts},
        )

    @staticmethod
    def _sentence(group: pd.DataFrame) -> str:
        parts = []
        for row in group.itertuples():
            parts.append(
                f"{row.kind} {significant(row.accuracy, 2)} vs surface {significant(row.surface_accuracy, 2)} "
                f"(selectivity {significant(row.selectivity, 2)}, p = {significant(row.p_permutation, 2)})"
            )
        return "; ".join(parts)

    def decide(self, data: StudyData) -> Assessment:
        tests = self._tests(data)
        return self.judge(tests[tests["min_per_category"] >= MIN_PROMPTS_PER_CATEGORY])

    def facts(self, data: StudyData) -> str:
        tests = self._tests(data)
        if tests is None or tests.empty:
            return ""
        return (
            "; ".join(f"{model}: {self._sentence(group)}" for model, group in tests.groupby("model", sort=False))
            + " (descriptive: too few prompts or models for the rule)"
        )

    def paper_evidence(self, published: StudyData, run: StudyData | None = None) -> dict[str, str]:
        return {
            "statistic": "none",
            "value": "the paper published no prompt-level activations",
            "interval": "no test possible",
            "detail": "its signatures are category means of the three metrics, without a surface baseline",
        }
