"""Finding 5: prompt categories have activation signatures beyond what the words give away (prompts within each
model; models as replicates across architectures).

The rule, ``ActivationSignatures``, decides from the per-model tests that ``beyond_words.test_model`` makes;
``model_verdicts`` applies it to each model. Its text is generated from the parameters below (``Settings``,
``MIN_GAIN``, ``crossfit.RIDGE``, ``lexical``'s n-grams), so text and code cannot disagree; tests check what each
named number does. The rule registered before it (6fbf757) is kept runnable in ``finding5_earlier``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from helpers.stats.findings import crossfit, lexical
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
from helpers.stats.robustness import StudyData

MIN_GAIN = 0.10
"""The minimum effect: the model's probe decodes the category at least 10 accuracy points better than the stronger
text-only probe."""
CACHE_KEY = "signatures"
"""Where ``findings.analyse`` puts the per-model tests (``signature_tests`` table) in ``StudyData.cache``."""

LEXICAL, LAYER0 = "lexical probe", "layer 0"
"""The two text-only baselines: TF-IDF n-grams of the prompt; the model's own embedding output, mean-pooled."""
ALL_LAYERS, BEST_LAYER = "all later layers", "best later layer"
"""The two probes of the model's later layers that decide (Bonferroni over the two)."""
PAPER_METRICS_PROBE = "paper's metrics"
"""The paper's three metrics and their per-layer profiles: reported beside the verdict, not part of it."""


@dataclass(frozen=True)
class Settings:
    """Finding 5's analysis parameters: the rule's text is written from these defaults."""

    folds: int = 5  # stratified folds (fewer when a category has fewer prompts)
    repeats: int = 2  # cross-validation repeated over this many seeds
    permutations: int = 99  # conditional (Freedman-Lane) permutations per model
    unit_permutations: int = 99  # label permutations within length bands for the selective-unit null, per model
    length_bands: int = 5  # quantile bands of token count within which the units' labels are permuted
    components: int = 16  # explorer only: PCA components of each layer's vectors for the logistic probe
    regularisation: float = 1.0  # inverse L2 strength (C) of the logistic probe (explorer, transfer)
    seed: int = 0


def _ngrams(span: tuple[int, int]) -> str:
    return f"{span[0]}-{span[1]}-grams"


def rule_text(settings: Settings = Settings()) -> str:  # noqa: B008 (frozen)
    """The rule in words, from the parameters that run."""
    return (
        "Per model, every probe is a ridge classifier (ridge regression of one-hot labels, L2 penalty "
        f"{crossfit.RIDGE:g}, in kernel form) on the surface features plus one view (standardised, the surface "
        f"partialled out), under stratified {settings.folds}-fold cross-validation repeated over {settings.repeats} "
        f"seeds (seed {settings.seed}), the same folds for every probe. Two text-only baselines: the {LEXICAL} "
        f"(TF-IDF of word {_ngrams(lexical.WORD_NGRAMS)}, of character {_ngrams(lexical.CHAR_NGRAMS)}, or both, "
        "chosen by leave-one-out accuracy inside each training fold) and the model's own layer 0 (the embedding "
        "output mean-pooled over the prompt: a bag of its input tokens). Two probes of the model's later layers "
        f"decide: {ALL_LAYERS} at once (the mean of their kernels) and the {BEST_LAYER} (chosen by leave-one-out "
        "accuracy inside each training fold). A probe's gain beyond the words is its accuracy minus the stronger "
        "baseline's; its 95% interval and p-values come from the corrected resampled t test over the folds "
        "(Nadeau and Bengio; variance times 1/J + n_test/n_train). A probe finds a signature if its gain is "
        f"significantly above the minimum effect over each baseline (the larger one-sided p against {MIN_GAIN:g}, "
        f"times 2 for the two probes, Holm across models, below {ALPHA}); and the later layers "
        "must add to the text-only probes in a conditional permutation test (Freedman and Lane: the labels' "
        f"residuals after surface, lexical and layer-0 probes permuted {settings.permutations} times; "
        f"cross-validated squared error; p < {ALPHA}). It holds in a model if a probe finds a signature and the "
        "conditional test agrees; it does not hold in a model if for both probes the gain over the stronger "
        f"baseline is below the minimum effect (one-sided, times 2 for the two baselines, the larger p of the two "
        f"probes, Holm across models, below {ALPHA}); otherwise inconclusive. Over the run: holds if it holds in "
        "every model (an intersection-union test), does not hold if it does not hold in some model, inconclusive "
        "otherwise. Negative controls (text-only views fed to the rule as if they were layers: "
        f"{'; '.join(lexical.TEXT_ONLY_VIEWS)}) must never give 'holds'"
    )


def model_verdicts(tests: pd.DataFrame, minimum_tested: bool = True) -> pd.DataFrame:
    """Per model, the rule of ``ActivationSignatures`` applied: one row with what the words give, what the later
    layers add, the p-values and the verdict.

    ``tests``: one row per model (column ``model``) and probe, as ``beyond_words.test_model`` makes them.
    ``minimum_tested=False``: the rule before deviation 7, under which a signature needed its gain above zero and
    only its point estimate at the minimum effect (so near the minimum "holds" was the likelier wrong verdict).
    """
    rows = []
    for model, group in tests.groupby("model", sort=False):
        deciding = group[group["decides"].astype(bool)]
        if minimum_tested:
            found, p_found = deciding, deciding["p_above_minimum"]
        else:
            found = deciding[deciding["gain"] >= MIN_GAIN]
            p_found = found["p_above"]
        first = group.iloc[0]
        layers = group[group["probe"] == ALL_LAYERS].iloc[0]
        best = group[group["probe"] == BEST_LAYER].iloc[0]
        rows.append(
            {
                "model": model,
                "surface_accuracy": first["surface_accuracy"],
                "lexical_accuracy": first["lexical_accuracy"],
                "layer0_accuracy": first["layer0_accuracy"],
                "layers_accuracy": layers["accuracy"],
                "best_layer_accuracy": best["accuracy"],
                "stronger_baseline": first["stronger_baseline"],
                "gain_beyond_words": layers["gain"],
                "gain_low": layers["gain_low"],
                "gain_high": layers["gain_high"],
                "best_layer_gain": best["gain"],
                "p_conditional": first["p_conditional"],
                # Bonferroni over the deciding probes
                "p_signature": min(1.0, len(deciding) * float(p_found.min())) if len(found) else 1.0,
                "p_below_minimum": float(deciding["p_below"].max()),  # every deciding probe below the minimum
            }
        )
    table = pd.DataFrame(rows)
    if table.empty:
        return table.assign(p_signature_holm=[], p_below_minimum_holm=[], verdict=[])
    # a model with fewer than MIN_PROMPTS_PER_CATEGORY prompts in some category is not tested (nor counted by Holm)
    fewest = tests.groupby("model", sort=False)["min_per_category"].min().reindex(table["model"]).to_numpy()
    tested = fewest >= MIN_PROMPTS_PER_CATEGORY
    table["p_signature_holm"] = np.nan
    table["p_below_minimum_holm"] = np.nan
    if tested.any():
        table.loc[tested, "p_signature_holm"] = holm(table.loc[tested, "p_signature"].tolist())
        table.loc[tested, "p_below_minimum_holm"] = holm(table.loc[tested, "p_below_minimum"].tolist())
    holds = (table["p_signature_holm"] < ALPHA) & (table["p_conditional"] < ALPHA)
    verdicts = np.where(holds, HOLDS, np.where(table["p_below_minimum_holm"] < ALPHA, DOES_NOT_HOLD, INCONCLUSIVE))
    table["verdict"] = np.where(tested, verdicts, NOT_TESTABLE)
    return table


def _span(values: pd.Series) -> str:
    """'a to b' (or 'a' when they round alike) of ``values``, 2 significant digits."""
    low, high = significant(float(values.min()), 2), significant(float(values.max()), 2)
    return low if low == high else f"{low} to {high}"


def points(gains: pd.Series) -> str:
    """Accuracy gains (fractions) as signed accuracy points to one decimal, 'a to b' ('-1.2 to +10.3')."""
    low, high = (f"{100 * float(v):+.1f}" for v in (gains.min(), gains.max()))
    return low if low == high else f"{low} to {high}"


def words_and_layers(verdicts: pd.DataFrame) -> str:
    """What the words give and what the later layers add, in one sentence (from ``model_verdicts``' table)."""
    return (
        f"Categories are decodable from every layer ({_span(verdicts['layers_accuracy'])} accuracy, later layers "
        f"together), but mostly from the words: the words alone, with no model, give "
        f"{_span(verdicts['lexical_accuracy'])} and each model's layer 0 (its input tokens) "
        f"{_span(verdicts['layer0_accuracy'])}; the later layers add {points(verdicts['gain_beyond_words'])} "
        f"accuracy points beyond the stronger of the two (the registered minimum is {100 * MIN_GAIN:.0f})."
    )


def key_number(verdicts: pd.DataFrame) -> str:
    """The README's key number: 'words alone 0.82, layer 0 0.84 to 0.88; later layers +2.3 to +10.3 points'."""
    return (
        f"words alone {_span(verdicts['lexical_accuracy'])}, layer 0 {_span(verdicts['layer0_accuracy'])}; later "
        f"layers {points(verdicts['gain_beyond_words'])} points beyond the words"
    )


def beyond_words_sentence(verdicts: pd.DataFrame) -> str:
    """Finding 5's answer for readers: what the words give, what the later layers add, and the verdicts counted."""
    if verdicts.empty:
        return "No model could be tested for finding 5."
    counts = verdicts["verdict"].value_counts()
    tally = ", ".join(
        f"{verdict} in {counts[verdict]}"
        for verdict in (HOLDS, DOES_NOT_HOLD, INCONCLUSIVE, NOT_TESTABLE)
        if verdict in counts
    )
    return f"{words_and_layers(verdicts)} Finding 5 {tally} of the {len(verdicts)} model(s)."


def run_verdict(verdicts: pd.Series) -> str:
    """The run's verdict from the models' (an intersection-union test for 'holds')."""
    if len(verdicts) and (verdicts == HOLDS).all():
        return HOLDS
    if (verdicts == DOES_NOT_HOLD).any():
        return DOES_NOT_HOLD
    return INCONCLUSIVE


class ActivationSignatures(Finding):
    number = 5
    claim = "Prompt categories have activation signatures beyond what the words give away"
    unit = "prompts within each model; models as replicates across architectures"
    minimum_effect = (
        f"a probe of the model's later layers decodes the category at least {MIN_GAIN:.0%} (accuracy points) better "
        "than the stronger of two text-only probes: the lexical probe (which words and character n-grams the prompt "
        "uses) and the model's own layer 0 (its input tokens' embeddings); both see the surface features too (token "
        "count as a spline, words, digits, punctuation, tokens per word)"
    )
    rule = rule_text()
    minimum_tested = True  # False: the rule before deviation 7 (``model_verdicts``)
    needs = (
        f"mean-pooled hidden vectors (the embedding output and at least one later layer), the prompt texts and "
        f"per-layer profiles of at least {MIN_MODELS_FOR_CATEGORIES} models, with at least {MIN_PROMPTS_PER_CATEGORY} "
        "prompts per category"
    )

    @staticmethod
    def _tests(data: StudyData) -> pd.DataFrame | None:
        return data.cache.get(CACHE_KEY)

    def why_not_testable(self, data: StudyData) -> str:
        tests = self._tests(data)
        if tests is None or tests.empty:
            return f"no mean-pooled hidden vectors or per-layer profiles for the {data.item_kind}"
        if "decides" not in tests or "p_above_minimum" not in tests:
            return "the stored tests were made by an earlier rule (rerun notebook 08)"
        usable = tests.loc[tests["min_per_category"] >= MIN_PROMPTS_PER_CATEGORY, "model"].nunique()
        if usable < MIN_MODELS_FOR_CATEGORIES:
            fewest = int(tests["min_per_category"].min())
            return (
                f"{usable} model(s) with at least {MIN_PROMPTS_PER_CATEGORY} prompts per category (fewest: {fewest}); "
                f"needs {MIN_MODELS_FOR_CATEGORIES}"
            )
        return ""

    def judge(self, tests: pd.DataFrame) -> Assessment:
        """The rule applied to the per-model tests (one row per model and probe)."""
        verdicts = model_verdicts(tests, self.minimum_tested)
        return Assessment(
            self,
            run_verdict(verdicts["verdict"]),
            evidence="; ".join(f"{row.model}: {self._sentence(row)}, {row.verdict}" for row in verdicts.itertuples()),
            test="per model: corrected resampled t of the later layers' gain over each text-only probe (Holm across "
            "models) and a conditional (Freedman-Lane) permutation test beyond the text-only probes",
            interval="; ".join(
                f"{row.model} gain beyond the words {significant(row.gain_beyond_words, 2)} "
                f"[{significant(row.gain_low, 2)}, {significant(row.gain_high, 2)}]"
                for row in verdicts.itertuples()
            ),
            tables={"signature_verdicts": verdicts},
        )

    @staticmethod
    def _sentence(row: object) -> str:
        return (
            f"words alone {significant(row.lexical_accuracy, 2)}, layer 0 {significant(row.layer0_accuracy, 2)}, "  # type: ignore[attr-defined]
            f"later layers {significant(row.layers_accuracy, 2)}: "  # type: ignore[attr-defined]
            f"{significant(100 * row.gain_beyond_words, 2)} points beyond the words "  # type: ignore[attr-defined]
            f"(95% CI {significant(100 * row.gain_low, 2)} to {significant(100 * row.gain_high, 2)})"  # type: ignore[attr-defined]
        )

    def decide(self, data: StudyData) -> Assessment:
        tests = self._tests(data)
        if tests is None:  # why_not_testable says so first; decide is never reached without tests
            raise ValueError("finding 5 decided without its tests")
        return self.judge(tests[tests["min_per_category"] >= MIN_PROMPTS_PER_CATEGORY])

    def facts(self, data: StudyData) -> str:
        tests = self._tests(data)
        if tests is None or tests.empty or "decides" not in tests or "p_above_minimum" not in tests:
            return ""
        return (
            "; ".join(
                f"{row.model}: {self._sentence(row)}" for row in model_verdicts(tests, self.minimum_tested).itertuples()
            )
            + " (descriptive: too few prompts or models for the rule)"
        )

    def paper_evidence(self, published: StudyData, run: StudyData | None = None) -> dict[str, str]:
        return {
            "statistic": "none",
            "value": "the paper published no prompt-level activations",
            "interval": "no test possible",
            "detail": "its signatures are category means of the three metrics, without a text-only baseline",
        }


class ActivationSignaturesMinimumByPointEstimate(ActivationSignatures):
    """Finding 5 under its rule before deviation 7: a signature needed its gain significantly above zero and only
    its point estimate at the minimum effect (``model_verdicts(minimum_tested=False)``)."""

    minimum_tested = False


def verdict_with_minimum_by_point_estimate(data: StudyData) -> str:
    """Finding 5's verdict on ``data`` under the rule before deviation 7 (the deviations log runs it)."""
    return ActivationSignaturesMinimumByPointEstimate().verdict_on(data)
