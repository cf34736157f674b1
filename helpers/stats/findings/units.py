"""Finding 5's selective units: per layer and unit, which categories a unit separates at equal token count, counted
beside layer 0 (the embedding output, a bag of the input tokens) and beside a random-weights copy of the same
architecture, each with a label-permutation null within length bands. That null is "no association at all", so the
excess over layer 0 is descriptive: it does not test what lies beyond the words (the verdict's probes do).

Descriptive: the finding's verdict is ``finding5``'s rule; these counts say where in the network category
information sits.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from helpers.stats.findings import views
from helpers.stats.findings.finding5 import Settings
from helpers.stats.findings.rules import ALPHA

MIN_UNIT_D = 0.8
"""A selective unit: |d| at least 0.8 (category vs the rest, at equal token count) and FDR q < ``ALPHA``."""


class UnitEffects:
    """Category-vs-rest effect sizes of every unit at equal token count, for any labelling of the prompts.

    ``values``: (n, U) units; ``covariates``: (n, k) length basis (an intercept is added). Each unit is
    residualised on the covariates once (OLS); ``of(labels)`` then compares each category's residual mean
    with the rest's (pooled SD; t with n - 2 - k degrees of freedom): Cohen's d and two-sided p, each (C, U),
    categories in ``np.unique(labels)`` order. Permutations reuse the residuals: two matrix products each.
    """

    def __init__(self, values: np.ndarray, covariates: np.ndarray) -> None:
        basis, _ = np.linalg.qr(np.column_stack([np.ones(len(values)), covariates]))
        values, basis = np.asarray(values, np.float32), basis.astype(np.float32)
        self.residual = values - basis @ (basis.T @ values)
        self.squares = self.residual**2
        self.total = self.residual.sum(axis=0, dtype=np.float64)
        self.total_squares = self.squares.sum(axis=0, dtype=np.float64)
        self.dof = max(len(values) - 2 - covariates.shape[1], 1)

    def of(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cohen's d and |t| of every category (vs the rest) and unit: each (C, U)."""
        categories = np.unique(labels)
        onehot = (labels[None, :] == categories[:, None]).astype(np.float32)  # (C, n)
        n_in = onehot.sum(axis=1, dtype=np.float64)[:, None]
        n_out = len(labels) - n_in
        sums = (onehot @ self.residual).astype(np.float64)
        squares = (onehot @ self.squares).astype(np.float64)
        mean_in, mean_out = sums / n_in, (self.total - sums) / n_out
        within = (squares - n_in * mean_in**2) + (self.total_squares - squares - n_out * mean_out**2)
        pooled = np.sqrt(np.maximum(within, 0) / self.dof)
        with np.errstate(divide="ignore", invalid="ignore"):
            d = np.where(pooled > 0, (mean_in - mean_out) / pooled, 0.0)
        return d, np.abs(d) * np.sqrt(n_in * n_out / len(labels))


def selective_units(effects: UnitEffects, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which units are selective (some category with Benjamini-Hochberg q < ``ALPHA`` over every category and
    unit, and |d| >= ``MIN_UNIT_D``) and the category that owns each (largest |d| among those): (U,) bool and
    (U,) int (-1 where not selective).

    Only p-values below ``ALPHA`` can pass BH, so only those are computed and sorted (the same decisions as
    ``scipy.stats.false_discovery_control`` on all of them; a unit test checks it).
    """
    d, t = effects.of(labels)
    tests = t.size
    candidates = t > stats.t.isf(ALPHA / 2, effects.dof)
    p = 2 * stats.t.sf(t[candidates], effects.dof)
    ordered = np.sort(p)
    below = np.flatnonzero(ordered <= ALPHA * np.arange(1, len(ordered) + 1) / tests)
    threshold = ordered[below[-1]] if len(below) else -1.0
    passing = np.zeros(t.shape, bool)
    passing[candidates] = p <= threshold
    passing &= np.abs(d) >= MIN_UNIT_D
    owner = np.where(passing, np.abs(d), -1.0).argmax(axis=0)
    selective = np.asarray(passing.any(axis=0))
    return selective, np.where(selective, owner, -1)


def _counts(effects: UnitEffects, labels: np.ndarray, n_layers: int, width: int) -> np.ndarray:
    """Selective units per layer: (L+1,)."""
    return selective_units(effects, labels)[0].reshape(n_layers, width).sum(axis=1)


def _p_value(observed: np.ndarray, null: np.ndarray) -> np.ndarray:
    """Per layer, (1 + #{null >= observed}) / (1 + draws); NaN without draws."""
    if len(null) == 0:
        return np.full(observed.shape, np.nan)
    return (1 + (null >= observed).sum(axis=0)) / (1 + len(null))


def unit_selectivity(
    vectors: np.ndarray,
    labels: np.ndarray,
    n_tokens: np.ndarray,
    settings: Settings,
    random_vectors: np.ndarray | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Selective units per layer, their excess over layer 0 and over a random-weights copy, against their
    label-permutation nulls; and the categories that own them.

    ``vectors``: (n, L+1, D); ``random_vectors``: the same prompts through a random-weights copy of the same
    architecture (same shape), or None. FDR is controlled over every layer, unit and category of a model at once;
    the null permutes labels within length bands (``settings.unit_permutations`` draws, the same draws for the
    model and its random copy), and each excess is compared with the same excess under the null.
    """
    n, n_layers, width = vectors.shape
    basis = views.length_basis(n_tokens)
    effects = UnitEffects(np.asarray(vectors, np.float32).reshape(n, n_layers * width), basis)
    selective, owner = selective_units(effects, labels)
    observed = selective.reshape(n_layers, width).sum(axis=1)
    copy = None
    if random_vectors is not None:
        if random_vectors.shape != vectors.shape:
            raise ValueError(
                f"the random-weights copy's vectors are {random_vectors.shape}, the model's {vectors.shape}"
            )
        copy = UnitEffects(np.asarray(random_vectors, np.float32).reshape(n, n_layers * width), basis)
    rng = np.random.default_rng(settings.seed + 3)
    bands = views.length_bands(n_tokens, settings.length_bands)
    draws = settings.unit_permutations
    null, null_copy = np.zeros((draws, n_layers)), np.zeros((draws, n_layers))
    for draw in range(draws):
        shuffled = views.permuted_within(labels, bands, rng)
        null[draw] = _counts(effects, shuffled, n_layers, width)
        if copy is not None:
            null_copy[draw] = _counts(copy, shuffled, n_layers, width)
    per_layer = pd.DataFrame(
        {
            "layer": np.arange(n_layers),
            "relative_depth": np.arange(n_layers) / max(n_layers - 1, 1),
            "units": width,
            "selective": observed,
            "share": observed / width,
            "null_mean": null.mean(axis=0) if draws else np.nan,
            "null_q95": np.quantile(null, 0.95, axis=0) if draws else np.nan,
            "p_value": _p_value(observed, null),
            "over_layer0": observed - observed[0],
            "p_over_layer0": _p_value(observed - observed[0], null - null[:, :1]),
        }
    )
    if copy is not None:
        observed_copy = _counts(copy, labels, n_layers, width)
        per_layer["random_copy_selective"] = observed_copy
        per_layer["over_random_copy"] = observed - observed_copy
        per_layer["p_over_random_copy"] = _p_value(observed - observed_copy, null - null_copy)
    categories = np.unique(labels)
    owned = pd.Series(owner[owner >= 0]).value_counts().reindex(range(len(categories)), fill_value=0)
    owners = pd.DataFrame({"category": categories, "selective_units": owned.to_numpy()})
    return per_layer, owners.sort_values("selective_units", ascending=False, kind="stable").reset_index(drop=True)
