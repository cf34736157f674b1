"""The statistics the findings rest on, at the right unit: prompts within a model, or models.

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
import warnings
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


# --- finding 1: categories within a model, at matched lengths -----------------------------------------


def _design(frame: pd.DataFrame, formula: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    import patsy

    outcome, design = patsy.dmatrices(formula, frame, return_type="dataframe", NA_action="raise")
    return outcome, design


def _ols(frame: pd.DataFrame, formula: str) -> tuple[Any, pd.DataFrame]:
    """OLS with heteroskedasticity-robust (HC3) errors; returns the fit and its design matrix."""
    import statsmodels.api as sm

    outcome, design = _design(frame, formula)
    return sm.OLS(outcome, design).fit(cov_type="HC3"), design


def _category_term(reference: str) -> str:
    return f"C(category, Treatment(reference={reference!r}))"


def _length_term(df: int = SPLINE_DF) -> str:
    return f"cr(n_tokens, df={df}, constraints='center')"


MAX_LEVERAGE = 0.9
"""Above this leverage one prompt determines its own fit, and HC3 errors break down."""


class LengthCoverageError(ValueError):
    """A model's prompts do not cover lengths well enough to compare categories at matched length."""


MIN_PROMPTS_PER_LENGTH_QUARTER = 3
"""Prompts every category needs in each quarter of the shared length range (``length_coverage_problem``)."""


def length_coverage_problem(frame: pd.DataFrame, minimum_per_quarter: int = MIN_PROMPTS_PER_LENGTH_QUARTER) -> str:
    """Why ``frame`` (one model: category, n_tokens) cannot support a matched-length comparison, or "".

    Every category must have at least ``minimum_per_quarter`` prompts in each quarter of the token
    range that all categories share, so no category's spline bridges a gap inside that range.
    """
    ranges = frame.groupby("category")["n_tokens"].agg(["min", "max"])
    low, high = ranges["min"].max(), ranges["max"].min()
    if low >= high:
        return "the categories share no length range"
    edges = np.linspace(low, high, 5)
    for category, group in frame.groupby("category"):
        counts = np.histogram(group["n_tokens"], bins=edges)[0]
        if counts.min() < minimum_per_quarter:
            return (
                f"{category} has {counts.min()} prompt(s) in a quarter of the shared range {low}-{high} tokens "
                f"(needs {minimum_per_quarter} in each)"
            )
    return ""


@dataclass(frozen=True)
class MatchedLength:
    """One model's categories compared at matched lengths (``MatchedLengthDesign.fit``)."""

    categories: list[str]
    raw_means: np.ndarray  # (K,)
    means: np.ndarray  # (K,) each category's mean predicted over the common lengths (and covariates)
    covariance: np.ndarray  # (K, K) HC3
    df_resid: float
    residual_sd: float
    support: tuple[int, int]  # token counts every category covers
    prompts_in_support: int
    interaction_f: float
    interaction_p: float
    counts: np.ndarray  # (K,) prompts per category
    coefficients: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))  # (p,)
    coefficient_covariance: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 0)))  # (p, p)

    def difference_arrays(self, reference: str) -> dict[str, Any]:
        """``reference`` minus each other category (in ``categories`` order, reference left out): ``category``,
        ``difference``, HC3 ``se`` and both one-sided p-values (t on df_resid), as arrays."""
        index = self.categories.index(reference)
        others = np.array([k for k in range(len(self.categories)) if k != index])
        difference = self.means[index] - self.means[others]
        variance = self.covariance[index, index] + np.diag(self.covariance)[others] - 2 * self.covariance[index, others]
        se = np.sqrt(np.maximum(variance, 0.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(se > 0, difference / se, np.sign(difference) * np.inf)
        t = np.nan_to_num(t, nan=0.0, posinf=np.inf, neginf=-np.inf)
        return {
            "category": [self.categories[k] for k in others],
            "difference": difference,
            "se": se,
            "p_reference_above": stats.t.sf(t, self.df_resid),
            "p_category_above": stats.t.cdf(t, self.df_resid),
        }

    def differences(self, reference: str) -> pd.DataFrame:
        """``difference_arrays`` as a table, one row per other category."""
        return pd.DataFrame(self.difference_arrays(reference))


@dataclass(frozen=True)
class MatchedLengthDesign:
    """The fixed part of a matched-length comparison: design matrix, averaging matrix and HC3 pieces.

    Built once per model (``matched_length_design``); ``fit`` then costs a few matrix products per
    outcome, so the same code serves the findings and their calibration by simulation.
    """

    categories: list[str]
    design: np.ndarray  # (n, p) category x spline(n_tokens) [+ covariates]
    averaging: np.ndarray  # (K, p): each category's prediction averaged over the common lengths
    projector: np.ndarray  # (p, n) = pinv(X)
    bread: np.ndarray  # (p, p) = pinv(X'X)
    leverage: np.ndarray  # (n,)
    interaction: np.ndarray  # indices of the category x length columns
    rank: int
    support: tuple[int, int]
    prompts_in_support: int
    counts: np.ndarray  # (K,)
    category_codes: np.ndarray  # (n,) index into categories
    design_info: Any = field(repr=False)
    grid: pd.DataFrame = field(repr=False)  # the prompts within the common lengths (their covariates)

    def fit(self, y: np.ndarray) -> MatchedLength:
        """OLS with HC3 errors of ``y`` (n,) on the design; category means at matched length."""
        y = np.asarray(y, dtype=float)
        beta = self.projector @ y
        residuals = y - self.design @ beta
        df_resid = float(len(y) - self.rank)
        scaled = self.design * (residuals / (1 - self.leverage))[:, None]
        covariance = self.bread @ (scaled.T @ scaled) @ self.bread
        restriction = np.eye(len(beta))[self.interaction]
        if len(self.interaction):
            difference = restriction @ beta
            middle = restriction @ covariance @ restriction.T
            f_value = float(difference @ np.linalg.lstsq(middle, difference, rcond=None)[0]) / len(self.interaction)
            p_value = float(stats.f.sf(f_value, len(self.interaction), df_resid))
        else:
            f_value, p_value = np.nan, np.nan
        raw = np.bincount(self.category_codes, weights=y, minlength=len(self.categories)) / self.counts
        return MatchedLength(
            categories=self.categories,
            raw_means=raw,
            means=self.averaging @ beta,
            covariance=self.averaging @ covariance @ self.averaging.T,
            df_resid=df_resid,
            residual_sd=float(np.sqrt(residuals @ residuals / df_resid)),
            support=self.support,
            prompts_in_support=self.prompts_in_support,
            interaction_f=f_value,
            interaction_p=p_value,
            counts=self.counts,
            coefficients=beta,
            coefficient_covariance=covariance,
        )

    def contrast_curve(self, result: MatchedLength, reference: str) -> pd.DataFrame:
        """``reference`` minus each other category at every token count of the common range, with 95% pointwise
        intervals (covariates at their mean over the common-range prompts): one row per category and length."""
        import patsy

        lengths = np.arange(self.support[0], self.support[1] + 1)
        covariates = [c for c in self.grid.columns if c not in ("category", "n_tokens", "y")]
        frame = pd.DataFrame(
            {
                "category": pd.Categorical(np.repeat(self.categories, len(lengths)), categories=self.categories),
                "n_tokens": np.tile(lengths, len(self.categories)),
            }
        )
        for column in covariates:
            frame[column] = float(self.grid[column].mean())
        (matrix,) = patsy.build_design_matrices([self.design_info], frame, return_type="matrix")
        matrix = np.asarray(matrix).reshape(len(self.categories), len(lengths), -1)  # (K, T, p)
        index = self.categories.index(reference)
        critical = stats.t.ppf(0.975, result.df_resid)
        rows = []
        for k, category in enumerate(self.categories):
            if k == index:
                continue
            contrast = matrix[index] - matrix[k]  # (T, p)
            estimate = contrast @ result.coefficients
            se = np.sqrt(np.maximum(np.einsum("tp,pq,tq->t", contrast, result.coefficient_covariance, contrast), 0))
            rows.append(
                pd.DataFrame(
                    {
                        "category": category,
                        "n_tokens": lengths,
                        "difference": estimate,
                        "lower": estimate - critical * se,
                        "upper": estimate + critical * se,
                    }
                )
            )
        return pd.concat(rows, ignore_index=True)


def with_surface_covariates(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with ``tokens_per_word`` (n_tokens / n_words) added where words were counted."""
    if "n_words" in frame and "tokens_per_word" not in frame:
        frame = frame.assign(tokens_per_word=frame["n_tokens"] / frame["n_words"].clip(lower=1))
    return frame


def matched_length_design(
    frame: pd.DataFrame, reference: str = MATH, covariates: tuple[str, ...] = ()
) -> MatchedLengthDesign:
    """The design of ``metric ~ category * spline(n_tokens) [+ covariates]`` for one model's prompts.

    A natural cubic spline per category (length may act differently per category); each category's
    prediction is averaged over the prompts' token counts (and covariates) within the range every
    category covers (no extrapolation). ``frame``: one model's rows with ``category, n_tokens`` and
    the covariates; rows must be finite (the caller drops the others).
    """
    import patsy

    frame = frame[["category", "n_tokens", *covariates]].copy()
    categories = [c for c in CATEGORIES if c in set(frame["category"])] + sorted(
        set(frame["category"]) - set(CATEGORIES)
    )
    frame["category"] = pd.Categorical(frame["category"], categories=categories)
    extra = "".join(f" + {c}" for c in covariates)
    design_frame = patsy.dmatrix(
        f"{_category_term(reference)} * {_length_term()}{extra}", frame, return_type="dataframe", NA_action="raise"
    )
    design = design_frame.to_numpy(float)
    bread = np.linalg.pinv(design.T @ design)
    leverage = np.einsum("ip,pq,iq->i", design, bread, design)
    if leverage.max() > MAX_LEVERAGE:
        raise LengthCoverageError(
            f"one prompt alone fixes part of a category's length curve (leverage {leverage.max():.3f}); "
            "the category needs more prompts across its lengths"
        )
    ranges = frame.groupby("category", observed=True)["n_tokens"].agg(["min", "max"])
    low, high = int(ranges["min"].max()), int(ranges["max"].min())
    grid = frame[(frame["n_tokens"] >= low) & (frame["n_tokens"] <= high)]
    every = pd.concat([grid] * len(categories), ignore_index=True)  # the common lengths once per category
    every["category"] = pd.Categorical(np.repeat(categories, len(grid)), categories=categories)
    (matrix,) = patsy.build_design_matrices([design_frame.design_info], every, return_type="matrix")
    averaging = np.asarray(matrix).reshape(len(categories), len(grid), -1).mean(axis=1)  # (K, p)
    codes = frame["category"].cat.codes.to_numpy()
    return MatchedLengthDesign(
        categories=categories,
        design=design,
        averaging=averaging,
        projector=np.linalg.pinv(design),
        bread=bread,
        leverage=leverage,
        interaction=np.array([i for i, name in enumerate(design_frame.columns) if ":" in name], dtype=int),
        rank=int(np.linalg.matrix_rank(design)),
        support=(low, high),
        prompts_in_support=len(grid),
        counts=np.bincount(codes, minlength=len(categories)).astype(float),
        category_codes=codes,
        design_info=design_frame.design_info,
        grid=grid,
    )


@single_threaded_blas
def matched_length_comparison(
    frame: pd.DataFrame, metric: str, reference: str = MATH, covariates: tuple[str, ...] = ()
) -> MatchedLength:
    """Category means of ``metric`` for one model, each predicted at the same token counts.

    Fits ``metric ~ category * spline(n_tokens) [+ covariates]`` by least squares with HC3 errors
    (``matched_length_design``) and tests the category x length interaction by a robust Wald F test.
    ``frame``: one model's rows with ``category, n_tokens``, ``metric`` and the covariates.
    """
    frame = frame[np.isfinite(frame[["n_tokens", metric, *covariates]].to_numpy(float)).all(axis=1)]
    return matched_length_design(frame, reference, covariates).fit(frame[metric].to_numpy(float))


def rank_confidence_sets(means: np.ndarray, covariance: np.ndarray, df: float, alpha: float = 0.05) -> np.ndarray:
    """Simultaneous (1 - alpha) confidence sets for the ranks (1 = highest) of K means: (K, 2) low, high.

    From Bonferroni-simultaneous t intervals for all K(K-1)/2 pairwise differences (Mogstad,
    Romano, Shaikh and Wilhelm 2024): a category ranks below every category confidently above
    it and above every category confidently below it.
    """
    k = len(means)
    pairs = max(k * (k - 1) // 2, 1)
    critical = stats.t.ppf(1 - alpha / (2 * pairs), df)
    variance = np.diag(covariance)
    difference = means[:, None] - means[None, :]
    se = np.sqrt(np.maximum(variance[:, None] + variance[None, :] - 2 * covariance, 0.0))
    above = difference - critical * se > 0  # above[j, k]: j confidently above k
    np.fill_diagonal(above, False)
    return np.column_stack([1 + above.sum(axis=0), k - above.sum(axis=1)])


def rank_set_of(
    means: np.ndarray, covariance: np.ndarray, df: float, index: int, alpha: float = 0.05
) -> tuple[int, int]:
    """The (1 - alpha) rank set (1 = highest) of one pre-named mean among K: marginal over its K - 1 comparisons.

    Bonferroni-simultaneous two-sided t intervals for the K - 1 differences with ``index`` only: its rank
    is at least 1 + (categories confidently above it) and at most K - (categories confidently below it).
    """
    k = len(means)
    others = [j for j in range(k) if j != index]
    critical = stats.t.ppf(1 - alpha / (2 * max(len(others), 1)), df)
    difference = means[index] - means[others]
    se = np.sqrt(np.maximum(covariance[index, index] + np.diag(covariance)[others] - 2 * covariance[index, others], 0))
    above = int((difference + critical * se < 0).sum())
    below = int((difference - critical * se > 0).sum())
    return 1 + above, k - below


def kendalls_w(grid: np.ndarray) -> float:
    """Kendall's W (no tie correction) of the rankings of the rows of ``grid`` (items x raters) by each rater."""
    ranks = np.apply_along_axis(stats.rankdata, 0, grid)  # (n, m)
    n, m = ranks.shape
    spread = ((ranks.sum(axis=1) - m * (n + 1) / 2) ** 2).sum()
    return float(12 * spread / (m**2 * (n**3 - n)))


def kendalls_w_from_shared_prompts(
    data: StudyData, metric: str, per_category: int, draws: int = 500, seed: int = 0
) -> dict[str, float] | None:
    """Kendall's W across ``data``'s models of category rankings by means of ``per_category`` random prompts,
    the same prompts for every model (as the paper's table had): its median and 5-95% range over ``draws``.

    What W looks like when rankings share prompts; None with fewer than 2 models or no prompt-level data.
    """
    if data.item_kind != "prompts" or len(data.models) < 2 or metric not in data.table:
        return None
    grid = data.wide(metric).dropna()
    categories = data.items.set_index("item")["category"].reindex(grid.index).to_numpy()
    names = [c for c in pd.unique(categories) if (categories == c).sum() >= per_category]
    if len(names) < 3:
        return None
    members = [np.flatnonzero(categories == c) for c in names]
    rng = np.random.default_rng(seed)
    values = grid.to_numpy(float)
    ws = []
    for _ in range(draws):
        means = np.stack([values[rng.choice(rows, per_category, replace=False)].mean(axis=0) for rows in members])
        ws.append(kendalls_w(means))
    low, median, high = np.quantile(ws, [0.05, 0.5, 0.95])
    return {"median": float(median), "low": float(low), "high": float(high), "models": grid.shape[1]}


@single_threaded_blas
def length_models(data: StudyData, metric: str = "attention_entropy") -> pd.DataFrame:
    """Per model: how ``metric`` depends on token count under three fits, and whether categories differ in it.

    Residual SD and R^2 of ``metric ~ category + f(n)`` for f linear, n + n log n, and a natural
    cubic spline; Pearson r with n; the robust Wald F test of the category x spline interaction.
    """
    rows = []
    for model in data.models.index:
        frame = data.for_model(model)
        if "n_tokens" not in frame or frame["category"].nunique() < 2 or len(frame) < 30:
            continue
        frame = frame[np.isfinite(frame[["n_tokens", metric]].to_numpy(float)).all(axis=1)]
        if length_coverage_problem(frame):
            continue
        reference = MATH if MATH in set(frame["category"]) else sorted(frame["category"])[0]
        try:
            comparison = matched_length_comparison(frame, metric, reference)
        except LengthCoverageError:
            continue
        frame = frame[["category", "n_tokens", metric]].rename(columns={metric: "y"})
        frame = frame.assign(n_log_n=frame["n_tokens"] * np.log(frame["n_tokens"]))
        row: dict[str, Any] = {"model": model, "metric": metric, "prompts": len(frame)}
        row["r_with_tokens"] = float(np.corrcoef(frame["n_tokens"], frame["y"])[0, 1])
        for label, term in (("linear", "n_tokens"), ("n_log_n", "n_tokens + n_log_n"), ("spline", _length_term())):
            fit, _ = _ols(frame, f"y ~ C(category) + {term}")
            row[f"residual_sd_{label}"] = float(np.sqrt(fit.mse_resid))
            row[f"r2_{label}"] = float(fit.rsquared)
        row["interaction_f"], row["interaction_p"] = comparison.interaction_f, comparison.interaction_p
        rows.append(row)
    return pd.DataFrame(rows)


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
