"""Finding 5's views of a prompt and their kernels: the surface features (what a prompt's form gives away), the
paper's metric profiles, kernels of standardised features with the surface partialled out, and the folds.

Every function here is label-free except ``splits`` (stratified folds) and ``permuted_within`` (a null's labels).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

SURFACE_FEATURES: tuple[str, ...] = ("n_tokens", "n_words", "n_digits", "n_punctuation", "tokens_per_word")
"""What a prompt's surface gives away, without any model: the baseline every signature must beat."""
PAPER_METRICS: tuple[str, ...] = ("final_activation", "attention_entropy", "max_sparsity")
PROFILE_STATISTICS: tuple[str, ...] = ("mean", "near_zero_0.01", "attention_entropy")
"""The per-layer statistics behind the paper's three metrics (mean activation, |h| < 0.01, attention entropy)."""
SURFACE_WEIGHT = 10.0
"""The surface design's kernel weight: its features are penalised 10x less than a view's, so the baseline is strong."""
INTERCEPT_WEIGHT = 10.0
"""A constant added to every kernel: a weakly penalised intercept."""
PROFILE_GRID = np.linspace(0.0, 1.0, 9)
"""Relative depths at which per-layer profiles are compared across models (models differ in depth)."""
_PUNCTUATION = re.compile(r"[^\w\s]")


# --- features ---------------------------------------------------------------------------------------


def surface_table(prompts: pd.DataFrame) -> pd.DataFrame:
    """``SURFACE_FEATURES`` of each prompt from the prompt table (n_tokens, n_words, n_digits, text): (n, 5)."""
    words = prompts["n_words"].to_numpy(float)
    return pd.DataFrame(
        {
            "n_tokens": prompts["n_tokens"].to_numpy(float),
            "n_words": words,
            "n_digits": prompts["n_digits"].to_numpy(float),
            "n_punctuation": prompts["text"].map(lambda text: len(_PUNCTUATION.findall(text))).to_numpy(float),
            "tokens_per_word": prompts["n_tokens"].to_numpy(float) / np.maximum(words, 1.0),
        },
        index=prompts.index,
    )


def length_basis(n_tokens: np.ndarray) -> np.ndarray:
    """A natural-ish cubic B-spline basis of token count (4 quantile knots): (n,) -> (n, 5)."""
    from sklearn.preprocessing import SplineTransformer

    values = np.asarray(n_tokens, float)[:, None]
    if np.ptp(values) == 0:
        return np.zeros((len(values), 1))
    return SplineTransformer(n_knots=4, degree=3, knots="quantile", include_bias=False).fit_transform(values)


def surface_basis(surface: pd.DataFrame) -> np.ndarray:
    """The baseline's design: spline of token count, log(1 + count) of the others, tokens per word: (n, k)."""
    others = [np.log1p(surface[name].to_numpy(float)) for name in ("n_words", "n_digits", "n_punctuation")]
    return np.column_stack([length_basis(surface["n_tokens"].to_numpy()), *others, surface["tokens_per_word"]])


def metric_profiles(prompts: pd.DataFrame, layers: pd.DataFrame) -> np.ndarray:
    """The paper's three metrics and the per-layer profiles of ``PROFILE_STATISTICS``, in prompt order: (n, F).

    ``prompts``: one model's prompt table (prompt_id, the metrics); ``layers``: its long per-layer table.
    """
    chosen = layers[layers["statistic"].isin(PROFILE_STATISTICS) & layers["head"].isna()]
    wide = chosen.pivot_table(index="prompt_id", columns=["statistic", "layer"], values="value", aggfunc="first")
    wide = wide.reindex(prompts["prompt_id"].to_numpy())
    return np.column_stack([prompts[list(PAPER_METRICS)].to_numpy(float), wide.to_numpy(float)])


def profile_on_grid(prompts: pd.DataFrame, layers: pd.DataFrame) -> np.ndarray:
    """Each profile interpolated to ``PROFILE_GRID`` relative depths, with the three metrics, standardised: (n, F)."""
    chosen = layers[layers["statistic"].isin(PROFILE_STATISTICS) & layers["head"].isna()]
    columns = [prompts[list(PAPER_METRICS)].to_numpy(float)]
    for statistic in PROFILE_STATISTICS:
        wide = chosen[chosen["statistic"] == statistic].pivot_table(
            index="prompt_id", columns="layer", values="value", aggfunc="first"
        )
        wide = wide.reindex(prompts["prompt_id"].to_numpy())
        depth = wide.columns.to_numpy(float) / layers["layer"].max()
        columns.append(np.array([np.interp(PROFILE_GRID, depth, row) for row in wide.to_numpy(float)]))
    features = np.column_stack(columns)
    spread = features.std(axis=0)
    return (features - features.mean(axis=0)) / np.where(spread > 0, spread, 1.0)


def standardised(features: np.ndarray) -> np.ndarray:
    """Columns z-scored over prompts (non-finite values set to the column mean, constant columns dropped):
    (n, F) -> (n, F') float32. Units of very different scale (massive activations) then weigh alike."""
    features = np.asarray(features, np.float32)
    finite = np.isfinite(features)
    if not finite.all():
        means = np.nanmean(np.where(finite, features, np.nan), axis=0)
        features = np.where(finite, features, np.nan_to_num(means))
    centred = features - features.mean(axis=0)
    spread = centred.std(axis=0)
    keep = spread > 1e-6 * max(float(spread.max(initial=0.0)), 1e-30)
    return centred[:, keep] / spread[keep]


def linear_kernel(features: np.ndarray) -> np.ndarray:
    """The linear kernel of the standardised features, scaled to a mean diagonal of 1: (n, F) -> (n, n) float64."""
    z = standardised(features)
    if z.shape[1] == 0:
        return np.zeros((len(z), len(z)))
    return (z @ z.T).astype(np.float64) / z.shape[1]


def partialled_out(kernel: np.ndarray, covariates: np.ndarray) -> np.ndarray:
    """The kernel of the features' residuals after OLS on an intercept and ``covariates`` (n, k): (I-H) K (I-H)."""
    basis, _ = np.linalg.qr(np.column_stack([np.ones(len(kernel)), covariates]))
    projected = kernel - basis @ (basis.T @ kernel)
    return projected - (projected @ basis) @ basis.T


def surface_kernel(baseline: np.ndarray) -> np.ndarray:
    """The baseline probe's kernel: the surface design, weakly penalised (``SURFACE_WEIGHT``), plus an intercept."""
    z = standardised(baseline)
    return SURFACE_WEIGHT * (z @ z.T).astype(np.float64) + INTERCEPT_WEIGHT


def view_kernel(features: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """A view's kernel with the surface design partialled out (its features' residuals on the baseline)."""
    return partialled_out(linear_kernel(features), standardised(baseline))


def layer_kernels(vectors: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """Each layer's view kernel of its mean-pooled vectors: (n, L+1, D) -> (L+1, n, n)."""
    return np.stack([view_kernel(vectors[:, layer], baseline) for layer in range(vectors.shape[1])])


# --- labels ----------------------------------------------------------------------------------------


def length_bands(n_tokens: np.ndarray, bands: int) -> np.ndarray:
    """Each prompt's quantile band of token count (ties broken by order): (n,) int in 0..bands-1."""
    ranks = pd.Series(np.asarray(n_tokens, float)).rank(method="first").to_numpy()
    return np.minimum(((ranks - 1) * bands / len(ranks)).astype(int), bands - 1)


def permuted_within(labels: np.ndarray, bands: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``labels`` shuffled within each band: category sizes per band kept, any link beyond length broken."""
    shuffled = np.array(labels, copy=True)
    for band in np.unique(bands):
        where = np.flatnonzero(bands == band)
        shuffled[where] = labels[rng.permutation(where)]
    return shuffled


def splits(labels: np.ndarray, settings: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified folds repeated over ``settings.repeats`` seeds (fewer folds if a category has fewer prompts)."""
    from sklearn.model_selection import RepeatedStratifiedKFold

    sizes = pd.Series(labels).value_counts()
    folds = int(min(settings.folds, sizes.min()))
    if folds < 2:
        raise ValueError(
            f"categor(y/ies) {sorted(sizes[sizes < 2].index)} with fewer than 2 prompts: no cross-validation "
            "possible; give every category at least 2 prompts"
        )
    splitter = RepeatedStratifiedKFold(n_splits=folds, n_repeats=settings.repeats, random_state=settings.seed)
    return list(splitter.split(np.zeros(len(labels)), labels))
