"""A run's data for the findings and the statistics over its prompts: the bootstrap, paired contrasts between models,
cell intervals, top-10 stability (finding 1's are in ``matched_length``, those over models in ``between_models``).

Everything takes a ``StudyData``: a run's per-prompt measurements (or the paper's published
model x category cells) arranged as items x models, with one set of bootstrap resamples (a
weight matrix, items resampled with replacement within their stratum, the same draw for every
model: the design is paired) shared by every bootstrap statistic. ``helpers.stats.findings`` turns
these statistics into verdicts.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from helpers.base import store
from helpers.study import CATEGORIES, MIN_BOOTSTRAP_SAMPLES

__all__ = ["MIN_BOOTSTRAP_SAMPLES", "StudyData"]

MATH = "mathematical_reasoning"
MIN_PER_STRATUM = 10
"""Items a category needs for the bootstrap to resample within categories (else it resamples all items)."""
SPLINE_DF = 4
"""Degrees of freedom of the natural cubic spline in token count (per category in finding 1's model)."""

PROMPT_COVARIATES = ("n_digits", "n_question_marks", "tokens_per_word")
"""Surface features of a prompt used as covariates: digits and question marks (``helpers.study.prompt_covariates``)
and tokens per word (``with_surface_covariates``: the model's tokenizer splits math and code into more pieces)."""


def single_threaded_blas(function: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``function`` with one BLAS thread: its matrices are small, and on a busy machine BLAS threads
    only contend (a 300 x 60 least-squares fit took 50x longer with 2 threads on 2 loaded cores)."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, "blas"):
            return function(*args, **kwargs)

    return wrapper


# --- the data ---------------------------------------------------------------------------------------


def bootstrap_weights(strata: pd.Series | np.ndarray, samples: int, seed: int) -> np.ndarray:
    """One set of bootstrap resamples as a weight matrix: (samples, n_items) counts, float64.

    Row b counts how often each item is drawn in draw b; items are drawn with replacement within
    their stratum (a prompt's category), each stratum keeping its size.
    """
    rng = np.random.default_rng(seed)
    strata = np.asarray(strata)
    weights = np.zeros((samples, len(strata)))
    rows = np.arange(samples)[:, None]
    for stratum in pd.unique(strata):
        members = np.flatnonzero(strata == stratum)
        drawn = members[rng.integers(0, len(members), size=(samples, len(members)))]
        np.add.at(weights, (rows, drawn), 1.0)
    return weights


@dataclass(frozen=True)
class StudyData:
    """Measurements arranged for the findings.

    ``table``: one row per model and item with ``display_name, item, category`` and metric
    columns (``n_tokens`` where known); ``models``: one row per model (index display_name) with
    ``architecture, n_parameters``; ``items``: one row per item (``item, category``) in a fixed
    order; ``weights``: (samples, n_items) bootstrap counts; ``item_kind``: what an item is.
    """

    table: pd.DataFrame
    models: pd.DataFrame
    items: pd.DataFrame
    weights: np.ndarray
    item_kind: str
    source: str = "this run"  # or "the paper's table"
    cache: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)  # fits shared by findings

    @classmethod
    def from_metrics(cls, metrics: pd.DataFrame, samples: int, seed: int) -> StudyData:
        """From a run's tidy per-prompt table (finite rows only, ``tables.finite_only``): items are prompts."""
        table = metrics.rename(columns={"prompt_id": "item"})
        return cls._build(table, samples, seed, strata="category", item_kind="prompts")

    @classmethod
    def from_published(cls, cells: pd.DataFrame, samples: int, seed: int) -> StudyData:
        """From the paper's model x category table: items are its cells, each the mean of 2 prompts."""
        table = pd.DataFrame(
            {
                "display_name": cells["Model"],
                "model": cells["Model_Name"],
                "architecture": cells["Architecture"],
                "n_parameters": (cells["Parameters_millions"] * 1e6).round().astype("int64"),
                "item": cells["Category"],
                "category": cells["Category"],
                "final_activation": cells["Final_Activation"],
                "attention_entropy": cells["Attention_Entropy"],
                "max_sparsity": cells["Max_Sparsity"],
            }
        )
        data = cls._build(table, samples, seed, strata=None, item_kind="model x category cells (means of 2 prompts)")
        return cls(data.table, data.models, data.items, data.weights, data.item_kind, source="the paper's table")

    @classmethod
    def _build(cls, table: pd.DataFrame, samples: int, seed: int, strata: str | None, item_kind: str) -> StudyData:
        order = {c: i for i, c in enumerate(CATEGORIES)}
        items = table[["item", "category"]].drop_duplicates("item")
        items = items.assign(_order=items["category"].map(order).fillna(len(order)))
        items = items.sort_values(["_order", "category", "item"]).drop(columns="_order").reset_index(drop=True)
        duplicated = table.duplicated(["display_name", "item"])
        if duplicated.any():
            pairs = table.loc[duplicated, ["display_name", "item"]].drop_duplicates().head(5).values.tolist()
            raise ValueError(f"two rows for the same model and item, e.g. {pairs}: display names must be unique")
        models = table.groupby("display_name", sort=False).agg(
            model=("model", "first"), architecture=("architecture", "first"), n_parameters=("n_parameters", "first")
        )
        smallest = items.groupby("category").size().min() if strata else 0
        # within-stratum resampling needs strata of some size: a stratum of 1 item never varies
        stratum = items["category"] if strata and smallest >= MIN_PER_STRATUM else np.zeros(len(items))
        return cls(table, models, items, bootstrap_weights(stratum, samples, seed), item_kind)

    @property
    def samples(self) -> int:
        return self.weights.shape[0]

    def wide(self, metric: str) -> pd.DataFrame:
        """items x models of ``metric`` (NaN where a model lacks the item)."""
        grid = self.table.pivot_table(index="item", columns="display_name", values=metric, aggfunc="first")
        return grid.reindex(index=self.items["item"], columns=self.models.index)

    def for_model(self, model: str) -> pd.DataFrame:
        """The table rows of one model."""
        return self.table[self.table["display_name"] == model]

    def restricted_to(self, models: list[str]) -> StudyData:
        """The same study with only ``models`` (display names, in this study's order): the same items and bootstrap
        weights. Of the cache only per-model tables made elsewhere (a ``model`` column, such as finding 5's tests)
        are kept, their rows of these models; fits are computed again, on these models alone."""
        keep = [model for model in self.models.index if model in set(models)]
        names = {*keep, *self.models.loc[keep, "model"].astype(str)}
        table = self.table[self.table["display_name"].isin(keep)]
        cache = {
            key: value[value["model"].astype(str).isin(names)]
            for key, value in self.cache.items()
            if isinstance(value, pd.DataFrame) and "model" in value
        }
        return StudyData(table, self.models.loc[keep], self.items, self.weights, self.item_kind, self.source, cache)


def weighted_means(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Bootstrap means: values (n_items, k) with NaN for missing, weights (B, n_items) -> (B, k)."""
    present = ~np.isnan(values)
    with np.errstate(invalid="ignore", divide="ignore"):  # a draw without any item of a column: NaN
        return (weights @ np.where(present, values, 0.0)) / (weights @ present)


def percentile_interval(draws: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Two-sided percentile interval of bootstrap draws (1-D)."""
    tail = (1 - level) / 2
    low, high = np.nanquantile(draws, [tail, 1 - tail])
    return float(low), float(high)


# --- paired contrasts between models (prompts as replicates within a pair) ------------------------------


def differences_at_precision(differences: np.ndarray, operands: np.ndarray) -> np.ndarray:
    """``differences`` (n,) with those equal up to measurement noise made exactly equal, and those
    within noise of zero made zero, so ranks, ties and signs do not depend on a CPU's float rounding.

    Noise is 2 units in the last of ``store.MEASUREMENT_DIGITS`` significant digits of the operands'
    largest magnitude (each operand is stored to that precision). Sorted by magnitude, a value within
    the noise of the next smaller one (or of zero) joins its group; a group takes its smallest
    magnitude and each value keeps its sign. Unlike rounding to a grid, grouping by gaps has no
    boundary on which exact values (fractions such as 51/256) flip with noise.
    """
    scale = float(np.max(np.abs(operands))) if len(operands) else 0.0
    if scale == 0 or len(differences) == 0:
        return np.asarray(differences, float).copy()
    noise = 2 * 10.0 ** (math.floor(math.log10(scale)) - (store.MEASUREMENT_DIGITS - 1))
    magnitude = np.abs(differences)
    order = np.argsort(magnitude, kind="stable")
    sorted_magnitude = magnitude[order]
    grouped = sorted_magnitude.copy()
    for i in range(len(grouped)):
        previous = sorted_magnitude[i - 1] if i else 0.0
        if sorted_magnitude[i] - previous <= noise:
            grouped[i] = grouped[i - 1] if i else 0.0
    result = np.empty_like(grouped)
    result[order] = grouped
    return np.sign(differences) * result


def paired_contrast(data: StudyData, metric: str, first: str, second: str) -> dict[str, Any]:
    """``first`` vs ``second`` on the items both have: a fact about these two models.

    Mean difference (first - second) with its paired bootstrap draws (the shared weights), the
    ratio of means, the share of items where first is higher, the paired Wilcoxon signed-rank
    test (two-sided; differences compared at the operands' precision) with the matched-pairs
    rank-biserial correlation, and the standardised
    mean difference d_z (mean / SD of the differences).
    """
    grid = data.wide(metric)
    a, b = grid[first].to_numpy(float), grid[second].to_numpy(float)
    both = ~(np.isnan(a) | np.isnan(b))
    difference = np.where(both, a - b, np.nan)
    draws = weighted_means(difference[:, None], data.weights)[:, 0]
    ratio_draws = (
        weighted_means(np.where(both, a, np.nan)[:, None], data.weights)[:, 0]
        / weighted_means(np.where(both, b, np.nan)[:, None], data.weights)[:, 0]
    )
    d = difference[both]
    ranked = differences_at_precision(d, np.concatenate([a[both], b[both]]))
    nonzero = ranked[ranked != 0]
    if len(nonzero) >= 1:
        test = stats.wilcoxon(nonzero, zero_method="wilcox", alternative="two-sided")
        positive = stats.rankdata(np.abs(nonzero))[nonzero > 0].sum()
        rank_biserial = 2 * positive / (len(nonzero) * (len(nonzero) + 1) / 2) - 1
        statistic, p_value = float(test.statistic), float(test.pvalue)
    else:
        statistic, p_value, rank_biserial = np.nan, 1.0, 0.0
    sd = float(np.std(d, ddof=1)) if len(d) > 1 else np.nan
    return {
        "metric": metric,
        "first": first,
        "second": second,
        "items": int(both.sum()),
        "mean_first": float(a[both].mean()),
        "mean_second": float(b[both].mean()),
        "difference": float(d.mean()),
        "difference_draws": draws,
        "ratio": float(a[both].mean() / b[both].mean()) if b[both].mean() != 0 else np.nan,
        "ratio_draws": ratio_draws,
        "share_first_higher": float((ranked > 0).mean()),
        "wilcoxon_statistic": statistic,
        "wilcoxon_p": p_value,
        "rank_biserial": float(rank_biserial),
        "sd_difference": sd,
        "d_z": float(d.mean() / sd) if sd and sd > 0 else np.nan,
    }


def model_pair_contrasts(data: StudyData, metrics: tuple[str, ...]) -> pd.DataFrame:
    """Every pair of models on each metric (``paired_contrast``), with 95% paired-bootstrap intervals."""
    rows = []
    for metric in metrics:
        if metric not in data.table:
            continue
        for first, second in itertools.combinations(data.models.index, 2):
            contrast = paired_contrast(data, metric, first, second)
            low, high = percentile_interval(contrast.pop("difference_draws"))
            ratio_low, ratio_high = percentile_interval(contrast.pop("ratio_draws"))
            rows.append(
                contrast
                | {"difference_low": low, "difference_high": high, "ratio_low": ratio_low, "ratio_high": ratio_high}
            )
    columns = [
        "metric", "first", "second", "items", "mean_first", "mean_second", "difference", "difference_low",
        "difference_high", "ratio", "ratio_low", "ratio_high", "share_first_higher", "d_z", "rank_biserial",
        "wilcoxon_statistic", "wilcoxon_p",
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


# --- descriptive robustness: cells and the top-10 tables ----------------------------------------------


def cell_intervals(data: StudyData, metrics: tuple[str, ...]) -> pd.DataFrame:
    """95% bootstrap intervals (the shared weights) for every model x category mean of each metric
    (none for a cell of fewer than 5 prompts, where resampling says nothing)."""
    rows = []
    for metric in [m for m in metrics if m in data.table]:
        grid = data.wide(metric)
        for category in data.items["category"].unique():
            members = (data.items["category"] == category).to_numpy()
            draws = weighted_means(grid.to_numpy(float)[members], data.weights[:, members])
            for column, model in enumerate(grid.columns):
                enough = np.isfinite(grid.to_numpy(float)[members, column]).sum() >= 5  # fewer: no interval
                low, high = percentile_interval(draws[:, column]) if enough else (np.nan, np.nan)
                mean = float(np.nanmean(grid.to_numpy(float)[members, column]))
                rows.append({"model": model, "category": category, "metric": metric, "mean": mean})
                rows[-1] |= {"lower": low, "upper": high}
    return pd.DataFrame(rows)


def top10_stability(data: StudyData, metric: str, lowest: bool = False) -> pd.DataFrame:
    """How often each observed top-10 model x category cell stays in the top 10 across the bootstrap draws."""
    grid = data.wide(metric)
    categories = data.items["category"].unique()
    observed, draws = [], []
    for category in categories:
        members = (data.items["category"] == category).to_numpy()
        observed.append(np.nanmean(grid.to_numpy(float)[members], axis=0))
        draws.append(weighted_means(grid.to_numpy(float)[members], data.weights[:, members]))
    cells = [(model, category) for category in categories for model in grid.columns]
    observed_cells = np.concatenate(observed)  # (C*M,)
    drawn_cells = np.concatenate(draws, axis=1)  # (B, C*M)
    sign = 1.0 if lowest else -1.0
    top = min(10, len(cells))
    observed_top = np.argsort(sign * observed_cells, kind="stable")[:top]
    drawn_rank = np.argsort(np.argsort(sign * drawn_cells, axis=1, kind="stable"), axis=1)
    in_top = drawn_rank < top  # (B, cells)
    jaccard = (in_top[:, observed_top].sum(axis=1) / (2 * top - in_top[:, observed_top].sum(axis=1))).mean()
    return pd.DataFrame(
        {
            "model": [cells[i][0] for i in observed_top],
            "category": [cells[i][1] for i in observed_top],
            "metric": metric,
            "share_of_draws_in_top10": in_top[:, observed_top].mean(axis=0),
            "mean_jaccard_with_observed": float(jaccard),
        }
    )
