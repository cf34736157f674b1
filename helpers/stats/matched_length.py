"""Finding 1's statistics: categories within a model compared at matched lengths (a spline in token count per
category, surface covariates), their rank confidence sets, and agreement across models (Kendall's W)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from helpers.stats.robustness import MATH, SPLINE_DF, StudyData, single_threaded_blas
from helpers.study import CATEGORIES

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
