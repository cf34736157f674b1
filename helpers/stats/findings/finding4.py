"""Finding 4: there is no monotonic link between parameter count and final activation (models as
replicates, Spearman's rho)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from helpers.stats import robustness
from helpers.stats.findings.rules import (
    DOES_NOT_HOLD,
    HOLDS,
    INCONCLUSIVE,
    Assessment,
    Finding,
    counted,
    significant,
)
from helpers.stats.robustness import StudyData

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
                f"{counted(sizes, 'model size')}; needs {MIN_MODELS_FOR_ORDER} (a random order of {sizes} is perfectly "
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
