"""Finding 4: there is no monotonic link between parameter count and final activation (models as
replicates, Spearman's rho), with what the rule can decide at each number of models, found by simulating it."""

from __future__ import annotations

import functools
import math

import numpy as np
import pandas as pd
from scipy import stats

from helpers.stats import between_models
from helpers.stats.findings.rules import (
    ALPHA,
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
INTERVAL_LEVEL = 1 - ALPHA
"""The interval for rho that decides: 'holds' if it lies inside +-MONOTONIC_MINIMUM, 'does not hold' if beyond."""
POWER_TARGET = 0.8
POWER_DRAWS = 400_000
"""Simulated runs per number of models for the rule's power: the simulation error of a share near 0.8 is then
0.0006, small enough to tell 0.7977 (38 models, 'holds' at rho = 0) from 0.8."""
STRONG_LINK = 0.8
"""The link at which the power of 'does not hold' is stated (a clear monotonic link, well beyond the minimum)."""
NO_LINK = 0.0
"""The truth at which the power of 'holds' is stated: no link at all, the most favourable truth for 'holds'."""
SHOWN_MODELS = (5, 6, 7, 8, 9, 10, 12)
"""The numbers of models for which the rule's text says at which |rho| 'does not hold' comes out."""


def verdicts_of(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """The rule applied to intervals for rho (arrays of one shape): inside +-MONOTONIC_MINIMUM holds, wholly
    beyond it does not hold, inconclusive otherwise."""
    low, high = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    inside = (-MONOTONIC_MINIMUM < low) & (high < MONOTONIC_MINIMUM)
    beyond = (low > MONOTONIC_MINIMUM) | (high < -MONOTONIC_MINIMUM)
    return np.where(inside, HOLDS, np.where(beyond, DOES_NOT_HOLD, INCONCLUSIVE))


def verdicts_of_rho(rho: np.ndarray, n: int) -> np.ndarray:
    """The rule's verdict for each sample Spearman rho of ``rho`` over ``n`` models."""
    return verdicts_of(*between_models.spearman_interval(rho, n, INTERVAL_LEVEL))


def models_to_support_no_link(level: float = INTERVAL_LEVEL) -> int:
    """The fewest models whose interval for Spearman's rho (Fisher z, Bonett-Wright variance) can lie inside
    +-MONOTONIC_MINIMUM at all: at rho = 0 its half-width z / sqrt(n - 3) must be below atanh(minimum)."""
    z = stats.norm.ppf(1 - (1 - level) / 2)
    return int(math.floor(3 + (z / math.atanh(MONOTONIC_MINIMUM)) ** 2)) + 1


MODELS_TO_SUPPORT = models_to_support_no_link()


def largest_rho_that_holds(n: int) -> float:
    """The largest |sample rho| that still gives 'holds' with ``n`` models (0.0 when none does): bisection on
    the rule's own interval (its width grows with |rho|, so 'holds' is an interval of rho around 0)."""
    if n <= 3 or verdicts_of_rho(np.array([0.0]), n)[0] != HOLDS:
        return 0.0
    inside, outside = 0.0, MONOTONIC_MINIMUM
    for _ in range(60):
        middle = (inside + outside) / 2
        inside, outside = (middle, outside) if verdicts_of_rho(np.array([middle]), n)[0] == HOLDS else (inside, middle)
    return inside


def smallest_rho_that_refutes(n: int) -> float:
    """The smallest |rho| that gives 'does not hold' with ``n`` models among the values rho can take without ties,
    1 - 6 D / (n^3 - n) for even D (nan when none does): with 5 models only a perfect order (|rho| = 1) refutes.

    The rule's lower bound rises with rho, so the threshold is found by bisection and moved up to the next value
    rho can take."""
    if verdicts_of_rho(np.array([1.0]), n)[0] != DOES_NOT_HOLD:
        return float("nan")
    inside, outside = MONOTONIC_MINIMUM, 1.0  # inside: does not refute; outside: refutes
    for _ in range(60):
        middle = (inside + outside) / 2
        inside, outside = (
            (inside, middle) if verdicts_of_rho(np.array([middle]), n)[0] == DOES_NOT_HOLD else (middle, outside)
        )
    scale = (n**3 - n) / 6
    steps = math.floor((1 - outside) * scale / 2 + 1e-9)  # the largest even D whose rho is at least the threshold
    for d in (2 * steps, 2 * steps - 2):  # guard against rounding at the threshold
        rho = 1 - d / scale
        if d >= 0 and verdicts_of_rho(np.array([rho]), n)[0] == DOES_NOT_HOLD:
            return float(rho)
    return 1.0


def simulated_rhos(n: int, rho: float, draws: int, rng: np.random.Generator, chunk: int = 50_000) -> np.ndarray:
    """``draws`` sample Spearman rhos over ``n`` models whose (parameter count, mean A_f) are bivariate normal with
    Spearman rho ``rho`` (Pearson 2 sin(pi rho / 6)); at rho = 0 any continuous pair gives a random order."""
    pearson = 2 * math.sin(math.pi * rho / 6)
    values = []
    for start in range(0, draws, chunk):
        size = min(chunk, draws - start)
        if rho == 0:  # independent: the models' order by A_f is a uniformly random permutation of their sizes' order
            x_ranks, y_ranks = np.arange(n), np.argsort(rng.random((size, n)), axis=1)
        else:
            x, noise = rng.standard_normal((2, size, n))
            y = pearson * x + math.sqrt(1 - pearson**2) * noise
            x_ranks = np.argsort(np.argsort(x, axis=1), axis=1)
            y_ranks = np.argsort(np.argsort(y, axis=1), axis=1)
        values.append(1 - 6 * ((x_ranks - y_ranks) ** 2).sum(axis=1) / (n**3 - n))
    return np.concatenate(values)


@functools.cache
def verdict_shares(n: int, rho: float, draws: int = POWER_DRAWS, seed: int = 0) -> dict[str, float]:
    """How often the rule gives each verdict with ``n`` models when the true Spearman rho is ``rho`` (simulated)."""
    verdicts = verdicts_of_rho(simulated_rhos(n, rho, draws, np.random.default_rng(seed)), n)
    return {verdict: float(np.mean(verdicts == verdict)) for verdict in (HOLDS, DOES_NOT_HOLD, INCONCLUSIVE)}


def _normal_approximation(verdict: str, rho: float, target: float) -> float:
    """Models for ``target`` power by the normal approximation on Fisher's z (where the search starts)."""
    z_min = math.atanh(MONOTONIC_MINIMUM)
    z_level = stats.norm.ppf(1 - (1 - INTERVAL_LEVEL) / 2)
    if verdict == HOLDS:  # |z_hat| within z_min - half-width with probability target
        return 3 + ((z_level + stats.norm.ppf(1 - (1 - target) / 2)) / (z_min - math.atanh(abs(rho)))) ** 2
    spread = 1 + rho**2 / 2
    return 3 + spread * ((z_level + stats.norm.ppf(target)) / (math.atanh(abs(rho)) - z_min)) ** 2


@functools.cache
def models_for_power(verdict: str, rho: float, target: float = POWER_TARGET, draws: int = POWER_DRAWS) -> int:
    """The fewest models with which the rule gives ``verdict`` with probability ``target`` or more when the true
    Spearman rho is ``rho``, by simulating the rule (``verdict_shares``). The search starts at the normal
    approximation and steps one model at a time (the power rises with the number of models)."""
    n = max(MIN_MODELS_FOR_ORDER, int(round(_normal_approximation(verdict, rho, target))))

    def enough(models: int) -> bool:
        return verdict_shares(models, rho, draws)[verdict] >= target

    if enough(n):
        while n > MIN_MODELS_FOR_ORDER and enough(n - 1):
            n -= 1
        return n
    while not enough(n):
        n += 1
        if n > 10_000:
            raise ValueError(f"no number of models gives {verdict} with probability {target} at rho = {rho}")
    return n


def refuting_rhos_text(models: tuple[int, ...] = SHOWN_MODELS) -> str:
    """At which |rho| 'does not hold' comes out, for each number of models in ``models``."""
    parts = []
    for n in models:
        rho = smallest_rho_that_refutes(n)
        parts.append(f"only |rho| = 1 with {n}" if rho == 1 else f"|rho| >= {significant(rho)} with {n}")
    return ", ".join(parts) + " models"


def power_text() -> str:
    """What the rule can decide with how many models, simulated (the rule's own 80%-power figures)."""
    holds_n = models_for_power(HOLDS, NO_LINK)
    refute_n = models_for_power(DOES_NOT_HOLD, STRONG_LINK)
    first = verdict_shares(MODELS_TO_SUPPORT, NO_LINK)[HOLDS]
    return (
        f"'Holds' is possible only from {MODELS_TO_SUPPORT} models, and there only if the sample |rho| <= "
        f"{significant(largest_rho_that_holds(MODELS_TO_SUPPORT), 2)}: with no link at all (rho = {NO_LINK:g}) it "
        f"comes out {first:.1%} of the time with {MODELS_TO_SUPPORT} models; {POWER_TARGET:.0%} power for 'holds' "
        f"at rho = {NO_LINK:g}, the truth most favourable to it, needs {holds_n} models (then |rho| <= "
        f"{significant(largest_rho_that_holds(holds_n), 2)}). 'Does not hold' needs, among the values rho can take: "
        f"{refuting_rhos_text()}; {POWER_TARGET:.0%} power for it at rho = {STRONG_LINK:g} needs {refute_n} models "
        f"(simulated: {POWER_DRAWS:,} runs of the rule per number of models)"
    )


class NoMonotonicParameterLink(Finding):
    number = 4
    claim = "There is no monotonic link between parameter count and final activation"
    unit = "models"
    minimum_effect = f"a monotonic link is |Spearman rho| >= {MONOTONIC_MINIMUM} between parameter count and mean A_f"

    @property
    def rule(self) -> str:  # type: ignore[override]
        chance = math.factorial(MIN_MODELS_FOR_ORDER) // 2
        return (
            f"With at least {MIN_MODELS_FOR_ORDER} models of different sizes (a random order of "
            f"{MIN_MODELS_FOR_ORDER} models is perfectly monotonic with probability 1/{chance}): holds if the "
            f"{INTERVAL_LEVEL:.0%} interval for Spearman's rho (Fisher z, Bonett-Wright variance) lies inside "
            f"(-{MONOTONIC_MINIMUM}, {MONOTONIC_MINIMUM}); does not hold if it lies beyond the minimum effect (above "
            f"{MONOTONIC_MINIMUM} or below -{MONOTONIC_MINIMUM}); inconclusive otherwise. The exact permutation "
            f"p-value is reported beside it. 'No link' is an equivalence claim. {power_text()}. Error rates: 'holds' "
            f"at most {ALPHA:.0%} of the time when |rho| >= the minimum, 'does not hold' at most {ALPHA:.0%} of the "
            "time when |rho| <= the minimum (approximately: Fisher z)"
        )

    @property
    def needs(self) -> str:  # type: ignore[override]
        return (
            f"at least {MIN_MODELS_FOR_ORDER} models with different parameter counts to refute (with "
            f"{MIN_MODELS_FOR_ORDER}, only a perfect order does); {models_for_power(HOLDS, NO_LINK)} for "
            f"{POWER_TARGET:.0%} power to support it when there is no link at all ({MODELS_TO_SUPPORT} for 'holds' "
            "to be possible at all)"
        )

    @staticmethod
    def verdict_from(result: dict[str, float]) -> str:
        """The rule applied to ``between_models.spearman_over_models``' result."""
        return str(verdicts_of(np.array([result["low"]]), np.array([result["high"]]))[0])

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

    @staticmethod
    def reach(n: int) -> str:
        """What the rule can decide with ``n`` models: the |rho| that refutes, the |rho| that supports (or from how
        many models it can), and the models 80% power for 'holds' needs."""
        refute = smallest_rho_that_refutes(n)
        refutes = "only |rho| = 1" if refute == 1 else f"|rho| >= {significant(refute)}"
        holds = largest_rho_that_holds(n)
        needed = models_for_power(HOLDS, NO_LINK)
        supports = (
            f"'holds' needs |rho| <= {significant(holds, 2)} (probability {verdict_shares(n, NO_LINK)[HOLDS]:.1%} "
            f"when there is no link)"
            if holds > 0
            else f"'holds' is impossible (possible from {MODELS_TO_SUPPORT} models)"
        )
        return (
            f"with {n} models 'does not hold' needs {refutes} and {supports}; {POWER_TARGET:.0%} power for 'holds' "
            f"at rho = {NO_LINK:g} needs {needed} models"
        )

    def decide(self, data: StudyData) -> Assessment:
        by_model = self._by_model(data)
        result = between_models.spearman_over_models(by_model["n_parameters"], by_model["a_f"], INTERVAL_LEVEL)
        verdict = self.verdict_from(result)
        return Assessment(
            self,
            verdict,
            evidence=f"Spearman rho(parameters, mean A_f) = {significant(result['rho'], 2)} over {result['n']} "
            f"models ({self.reach(int(result['n']))})",
            test=f"exact permutation test over {result['n']} models, p = {significant(result['p_value'], 2)}",
            reason=f"{verdict[0].upper() + verdict[1:]}: Spearman rho = {significant(result['rho'], 2)} over "
            f"{result['n']} models, and {self.reach(int(result['n']))}",
            interval=f"rho {INTERVAL_LEVEL:.0%} CI [{significant(result['low'], 2)}, {significant(result['high'], 2)}]",
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
        result = between_models.spearman_over_models(by_model["n_parameters"], by_model["a_f"], INTERVAL_LEVEL)
        return {
            "statistic": f"Spearman rho(parameters, mean A_f) over {result['n']} models",
            "value": significant(result["rho"], 2),
            "interval": f"{INTERVAL_LEVEL:.0%} CI [{significant(result['low'], 2)}, {significant(result['high'], 2)}], "
            f"permutation p = {significant(result['p_value'], 2)}",
            "detail": "an interval this wide cannot show the absence of a link",
        }
