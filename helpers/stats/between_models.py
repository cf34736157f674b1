"""Models as replicates: the permutation test of a shift between two groups of models (encoders, decoders), model
means, the architecture ratio, the crossed mixed model and Spearman's rho over models with its interval."""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from helpers.stats.robustness import StudyData, single_threaded_blas

# --- models as replicates ----------------------------------------------------------------------------


PERMUTATION_ENUMERATION_LIMIT = 20_000
"""Up to this many label assignments the permutation test enumerates them all (exact); above it, draws as many."""


@dataclass(frozen=True)
class ShiftPermutationTest:
    """Exact two-sample permutation test of a shift in means: the first group's values minus ``shift``
    against the second's, over every assignment of group labels (``assignments``: (A, N) booleans)."""

    first: np.ndarray  # (n1,)
    second: np.ndarray  # (n2,)
    assignments: np.ndarray  # (A, N): True where a value is labelled "first"

    @classmethod
    def of(cls, first: np.ndarray, second: np.ndarray, seed: int = 0) -> ShiftPermutationTest:
        n1, n = len(first), len(first) + len(second)
        if math.comb(n, n1) <= PERMUTATION_ENUMERATION_LIMIT:
            rows = [np.isin(np.arange(n), combo) for combo in itertools.combinations(range(n), n1)]
        else:
            rng = np.random.default_rng(seed)
            rows = [np.arange(n) < n1] + [
                np.isin(np.arange(n), rng.choice(n, n1, replace=False)) for _ in range(PERMUTATION_ENUMERATION_LIMIT)
            ]
        return cls(np.asarray(first, float), np.asarray(second, float), np.array(rows))

    def _statistics(self, shift: float) -> tuple[float, np.ndarray]:
        values = np.concatenate([self.first - shift, self.second])
        labels = self.assignments
        means_first = labels @ values / labels.sum(axis=1)
        means_second = (~labels) @ values / (~labels).sum(axis=1)
        observed = float((self.first - shift).mean() - self.second.mean())
        return observed, means_first - means_second

    def p_above(self, shift: float) -> float:
        """One-sided p of 'the first group's mean exceeds the second's by more than ``shift``'."""
        observed, permuted = self._statistics(shift)
        return float(np.mean(permuted >= observed - 1e-12 * (1 + abs(observed))))

    def p_below(self, shift: float) -> float:
        """One-sided p of 'the first group's mean exceeds the second's by less than ``shift``'."""
        observed, permuted = self._statistics(shift)
        return float(np.mean(permuted <= observed + 1e-12 * (1 + abs(observed))))

    def smallest_p(self) -> float:
        """The smallest one-sided p-value this design can give: 1 / (number of assignments)."""
        return 1 / len(self.assignments)

    def interval(self, alpha: float) -> tuple[float, float]:
        """The shifts that neither one-sided test rejects at ``alpha``: a (1 - 2 alpha) interval, found by
        bisection (each p is monotone in the shift); infinite where the design cannot reject at ``alpha``."""
        estimate = float(self.first.mean() - self.second.mean())
        spread = float(np.ptp(np.concatenate([self.first, self.second]))) + 1.0
        if self.smallest_p() > alpha:
            return -np.inf, np.inf

        def edge(rejects: Callable[[float], bool], outside: float) -> float:
            inside = estimate
            for _ in range(80):
                middle = (inside + outside) / 2
                inside, outside = (inside, middle) if rejects(middle) else (middle, outside)
            return (inside + outside) / 2

        low = edge(lambda shift: self.p_above(shift) < alpha, estimate - 10 * spread)
        high = edge(lambda shift: self.p_below(shift) < alpha, estimate + 10 * spread)
        return low, high


def model_means(data: StudyData, metric: str) -> pd.DataFrame:
    """Per model: architecture and the mean of ``metric`` over the items every model has."""
    grid = data.wide(metric).dropna()
    return pd.DataFrame({"architecture": data.models["architecture"].reindex(grid.columns), "mean": grid.mean()})


def architecture_ratio(data: StudyData, metric: str, alpha: float = 0.05) -> dict[str, Any]:
    """Decoder / encoder ratio of a positive metric with models as replicates, by exact permutation.

    Each model is reduced to log(mean over the items every model has); the ratio is of the geometric
    means of those model means. ``low``/``high``: the (1 - 2 alpha) interval of ratios that neither
    one-sided permutation test at ``alpha`` rejects (so 'inside a band' is two one-sided tests at
    ``alpha``); ``test``: the ``ShiftPermutationTest`` on the log scale, for tests against other ratios.
    """
    means = model_means(data, metric)
    result: dict[str, Any] = {"metric": metric, "items": len(data.wide(metric).dropna())}
    result |= {f"n_{kind}s": int((means["architecture"] == kind).sum()) for kind in ("encoder", "decoder")}
    if (means["mean"] <= 0).any() or min(result["n_encoders"], result["n_decoders"]) < 2:
        return result | {"ratio": np.nan, "low": np.nan, "high": np.nan, "test": None, "smallest_p": np.nan}
    logs = np.log(means["mean"])
    test = ShiftPermutationTest.of(
        logs[means["architecture"] == "decoder"].to_numpy(), logs[means["architecture"] == "encoder"].to_numpy()
    )
    low, high = test.interval(alpha)
    return result | {
        "ratio": float(np.exp(test.first.mean() - test.second.mean())),
        "low": float(np.exp(low)),
        "high": float(np.exp(high)),
        "test": test,
        "smallest_p": test.smallest_p(),
    }


@single_threaded_blas
def crossed_mixed_model(data: StudyData, metric: str) -> dict[str, float]:
    """log(metric) ~ architecture + (1 | model) + (1 | item), REML (statsmodels MixedLM): the decoder/encoder ratio.

    A cross-check of ``architecture_ratio`` on the prompt-level values (about 10 s for 6 models x
    500 prompts); rows with a non-positive value are left out.
    """
    import statsmodels.api as sm

    frame = data.table[["display_name", "item", "architecture", metric]].dropna()
    frame = frame[frame[metric] > 0].assign(y=lambda f: np.log(f[metric]), group=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = sm.MixedLM.from_formula(
            "y ~ C(architecture, Treatment('encoder'))",
            groups="group",
            vc_formula={"model": "0 + C(display_name)", "item": "0 + C(item)"},
            data=frame,
        ).fit(reml=True)
    name = "C(architecture, Treatment('encoder'))[T.decoder]"
    return {"ratio": float(np.exp(fit.params[name])), "log_ratio_se": float(fit.bse[name])}


SPEARMAN_CLIP = 0.9999
"""|rho| is clipped to this before Fisher's z (atanh(1) is infinite): a perfect order still gets a finite interval."""


def spearman_interval(rho: np.ndarray, n: int, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """The ``level`` interval for Spearman's rho from ``n`` pairs, for each sample rho of ``rho`` (any shape):
    Fisher z with the Bonett-Wright variance (1 + rho^2 / 2) / (n - 3), rho clipped to +-``SPEARMAN_CLIP``.

    Vectorised, so finding 4's power is simulated with the very code its verdict uses (n > 3)."""
    clipped = np.clip(np.asarray(rho, dtype=float), -SPEARMAN_CLIP, SPEARMAN_CLIP)
    half = stats.norm.ppf(1 - (1 - level) / 2) * np.sqrt((1 + clipped**2 / 2) / (n - 3))
    return np.tanh(np.arctanh(clipped) - half), np.tanh(np.arctanh(clipped) + half)


def spearman_over_models(x: pd.Series, y: pd.Series, level: float = 0.95, p_value: bool = True) -> dict[str, float]:
    """Spearman rho between two per-model quantities, with models as the unit.

    Interval: Fisher z with the Bonett-Wright variance (1 + rho^2 / 2) / (n - 3); p-value: exact
    permutation over all orders of the n models (n <= 8), two-sided.
    """
    n = len(x)
    rho = float(stats.spearmanr(x, y).statistic) if n >= 3 else np.nan
    if n < 4 or np.isnan(rho):
        return {"rho": rho, "low": np.nan, "high": np.nan, "p_value": np.nan, "n": n}
    low, high = spearman_interval(np.array([rho]), n, level)
    interval = {"low": float(low[0]), "high": float(high[0])}
    if not p_value:  # the verdict needs only the interval (the calibration's many runs skip the permutations)
        return {"rho": rho, **interval, "p_value": np.nan, "n": n}
    x_ranks, y_ranks = stats.rankdata(x), stats.rankdata(y)
    if n <= 8:
        permuted = np.array([np.corrcoef(x_ranks, np.array(order))[0, 1] for order in itertools.permutations(y_ranks)])
    else:
        rng = np.random.default_rng(0)
        permuted = np.array([np.corrcoef(x_ranks, rng.permutation(y_ranks))[0, 1] for _ in range(19999)])
        permuted = np.append(permuted, rho)  # (b + 1) / (B + 1): a Monte Carlo p is never 0
    return {
        "rho": rho,
        **interval,
        "p_value": float(np.mean(np.abs(permuted) >= abs(rho) - 1e-12)),
        "n": n,
    }
