"""Does each finding survive? Length control, bootstrap intervals, a permutation test, sensitivity,
and the findings scorecard with a verdict rule applied by code.

All functions take the tidy per-prompt table of a run (``helpers.study.load_metrics``): one row
per model and prompt with ``display_name, architecture, n_parameters, category, prompt_id,
n_tokens`` and the metric columns.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from helpers import store
from helpers.study import CATEGORIES
from helpers.tables import finite_only

VERDICTS = ("holds", "weakened", "does not hold", "not testable")
MATH = "mathematical_reasoning"

# --- length ------------------------------------------------------------------------------------


def length_fits(metrics: pd.DataFrame, metric: str = "attention_entropy") -> pd.DataFrame:
    """Per model: least-squares fit of ``metric`` on ``n_tokens`` (slope, intercept) and Pearson r."""
    rows = []
    for model, group in metrics.groupby("display_name", sort=False):
        slope, intercept = np.polyfit(group["n_tokens"], group[metric], 1)
        r = float(np.corrcoef(group["n_tokens"], group[metric])[0, 1])
        rows.append({"model": model, "metric": metric, "n": len(group), "slope": slope, "intercept": intercept, "r": r})
    return pd.DataFrame(rows)


def length_adjusted_cells(metrics: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Model x category means of ``metric`` at equal length (regression adjustment).

    Per model, fits ``metric ~ 1 + n_tokens + category`` by least squares and predicts each
    category at the model's mean token count: the category effect with length held fixed.
    Returns columns display_name, category, value.
    """
    rows = []
    for model, group in metrics.groupby("display_name", sort=False):
        categories = [c for c in CATEGORIES if c in set(group["category"])] or sorted(set(group["category"]))
        dummies = (
            np.stack([(group["category"] == c).to_numpy(float) for c in categories[1:]], axis=1)
            if len(categories) > 1
            else np.zeros((len(group), 0))
        )
        design = np.column_stack([np.ones(len(group)), group["n_tokens"].to_numpy(float), dummies])
        coefficients, *_ = np.linalg.lstsq(design, group[metric].to_numpy(float), rcond=None)
        at_mean_length = coefficients[0] + coefficients[1] * group["n_tokens"].mean()
        for index, category in enumerate(categories):
            effect = coefficients[2 + index - 1] if index > 0 else 0.0
            rows.append({"display_name": model, "category": category, "value": at_mean_length + effect})
    return pd.DataFrame(rows)


def raw_cells(metrics: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Model x category means of ``metric`` (display_name, category, value)."""
    cells = metrics.groupby(["display_name", "category"], sort=False)[metric].mean()
    return cells.rename("value").reset_index()


def category_means(cells: pd.DataFrame) -> pd.Series:
    """Mean over models of model x category cells, per category (the paper's category performance)."""
    return cells.groupby("category")["value"].mean()


def category_rankings(metrics: pd.DataFrame) -> pd.DataFrame:
    """Category means and ranks (1 = highest) of attention entropy: raw, row-normalised, length-adjusted."""
    variants = {
        "raw": category_means(raw_cells(metrics, "attention_entropy")),
        "row_normalised": category_means(raw_cells(metrics, "attention_entropy_normalized")),
        "length_adjusted": category_means(length_adjusted_cells(metrics, "attention_entropy")),
        "tokens": category_means(raw_cells(metrics, "n_tokens")),
    }
    table = pd.DataFrame(variants)
    for name in ("raw", "row_normalised", "length_adjusted"):
        table[f"{name}_rank"] = table[name].rank(ascending=False, method="min").astype(int)
    return table.rename_axis("category").reset_index().sort_values("raw_rank").reset_index(drop=True)


# --- resampling ----------------------------------------------------------------------------------


def bootstrap(
    metrics: pd.DataFrame,
    statistic: Callable[[pd.DataFrame], pd.Series],
    samples: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Bootstrap draws of ``statistic``: prompts resampled with replacement within each category.

    The same resampled prompts are used for every model (the design is paired: every model saw
    every prompt). Returns one row per draw, one column per entry of the statistic's Series.
    """
    rng = np.random.default_rng(seed)
    by_prompt = metrics.set_index("prompt_id")
    ids_by_category = {c: group["prompt_id"].unique() for c, group in metrics.groupby("category", sort=False)}
    draws = []
    for _ in range(samples):
        chosen = np.concatenate([rng.choice(ids, size=len(ids), replace=True) for ids in ids_by_category.values()])
        draws.append(statistic(by_prompt.loc[chosen].reset_index()))
    return pd.DataFrame(draws).reset_index(drop=True)


def interval(draws: pd.Series | pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Percentile intervals of bootstrap draws (columns lower, upper)."""
    tail = (1 - level) / 2
    frame = draws.to_frame() if isinstance(draws, pd.Series) else draws
    return pd.DataFrame({"lower": frame.quantile(tail), "upper": frame.quantile(1 - tail)})


def cell_intervals(metrics: pd.DataFrame, columns: tuple[str, ...], samples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Bootstrap 95% intervals for every model x category cell mean of each metric in ``columns``."""

    def statistic(sample: pd.DataFrame) -> pd.Series:
        means = sample.groupby(["display_name", "category"])[list(columns)].mean().stack()
        return means

    draws = bootstrap(metrics, statistic, samples, seed)
    observed = statistic(metrics)
    table = interval(draws).join(observed.rename("mean"))
    table.index = pd.MultiIndex.from_tuples(table.index, names=["model", "category", "metric"])
    return table[["mean", "lower", "upper"]].reset_index()


def permutation_test(
    values: pd.Series, groups: pd.Series, first: str, second: str, permutations: int = 10000, seed: int = 0
) -> dict[str, float]:
    """Two-sided permutation test of mean(first) - mean(second), with Cohen's d and the ratio of means."""
    mask = groups.isin([first, second]).to_numpy()
    x = values.to_numpy(float)[mask]
    labels = groups.to_numpy()[mask] == first
    if labels.all() or not labels.any():
        return {
            "difference": np.nan,
            "ratio": np.nan,
            "cohens_d": np.nan,
            "p_value": np.nan,
            "n_first": int(labels.sum()),
            "n_second": int((~labels).sum()),
        }
    observed = x[labels].mean() - x[~labels].mean()
    rng = np.random.default_rng(seed)
    exceed = 0
    for _ in range(permutations):
        shuffled = rng.permutation(labels)
        exceed += abs(x[shuffled].mean() - x[~shuffled].mean()) >= abs(observed) - 1e-15
    pooled = np.sqrt(
        ((labels.sum() - 1) * x[labels].var(ddof=1) + ((~labels).sum() - 1) * x[~labels].var(ddof=1)) / (len(x) - 2)
    )
    return {
        "difference": float(observed),
        "ratio": float(x[labels].mean() / x[~labels].mean()),
        "cohens_d": float(observed / pooled) if pooled > 0 else np.nan,
        "p_value": (exceed + 1) / (permutations + 1),
        "n_first": int(labels.sum()),
        "n_second": int((~labels).sum()),
    }


def top10_stability(
    metrics: pd.DataFrame, metric: str, lowest: bool = False, samples: int = 1000, seed: int = 0
) -> pd.DataFrame:
    """How often each observed top-10 model x category cell stays in the top 10 under resampling."""

    def top(sample: pd.DataFrame) -> pd.Series:
        cells = sample.groupby(["display_name", "category"])[metric].mean()
        ranked = cells.sort_values(ascending=lowest, kind="stable")
        members = set(ranked.index[:10])
        return pd.Series({key: key in members for key in cells.index})

    observed = top(metrics)
    draws = bootstrap(metrics, top, samples, seed)
    kept = observed[observed].index
    table = pd.DataFrame({"share_of_draws_in_top10": draws[kept].mean()})
    table.index = pd.MultiIndex.from_tuples(table.index, names=["model", "category"])
    jaccard = [
        len(set(draws.columns[row]) & set(kept)) / len(set(draws.columns[row]) | set(kept))
        for row in draws.to_numpy(bool)
    ]
    return table.reset_index().assign(metric=metric, mean_jaccard_with_observed=float(np.mean(jaccard)))


# --- the findings ------------------------------------------------------------------------------------


def verdict(raw: bool | None, controlled: bool | None, interval_supports: bool | None) -> str:
    """The scorecard's rule, applied by code.

    ``holds``: the claim is true in our raw reproduction, still true after length control, and
    the 95% interval supports it. ``does not hold``: false both raw and after length control.
    ``weakened``: anything in between. ``not testable``: the run lacks what the claim needs
    (e.g. no encoder), signalled by ``None``.
    """
    if raw is None or controlled is None or interval_supports is None:
        return "not testable"
    if raw and controlled and interval_supports:
        return "holds"
    if not raw and not controlled:
        return "does not hold"
    return "weakened"


def _architecture_means(cells: pd.DataFrame, architectures: pd.Series) -> pd.Series:
    """Mean of model x category cells per architecture (the paper's Table II way)."""
    return cells.assign(architecture=cells["display_name"].map(architectures)).groupby("architecture")["value"].mean()


def _spearman(x: pd.Series, y: pd.Series) -> float:
    if len(x) < 3:
        return np.nan
    return float(np.corrcoef(x.rank(), y.rank())[0, 1])


def _finding_statistics(metrics: pd.DataFrame, top_model: str | None) -> pd.Series:
    """Every number the scorecard's verdicts need, from one (possibly resampled) table."""
    architectures = metrics.groupby("display_name")["architecture"].first()
    parameters = metrics.groupby("display_name")["n_parameters"].first()
    values: dict[str, float] = {}
    for label, cells in (
        ("raw", raw_cells(metrics, "attention_entropy")),
        ("adjusted", length_adjusted_cells(metrics, "attention_entropy")),
    ):
        means = category_means(cells)
        others = means.drop(MATH, errors="ignore")
        values[f"f1_margin_{label}"] = means.get(MATH, np.nan) - others.max()
    for label, cells in (
        ("raw", raw_cells(metrics, "max_sparsity")),
        ("adjusted", length_adjusted_cells(metrics, "max_sparsity")),
    ):
        by_architecture = _architecture_means(cells, architectures)
        decoder, encoder = by_architecture.get("decoder", np.nan), by_architecture.get("encoder", np.nan)
        values[f"f2_difference_{label}"] = decoder - encoder
        values[f"f2_ratio_{label}"] = decoder / encoder if encoder else np.nan
    for label, cells in (
        ("raw", raw_cells(metrics, "final_activation")),
        ("adjusted", length_adjusted_cells(metrics, "final_activation")),
    ):
        model_means = cells.groupby("display_name")["value"].mean()
        if top_model is not None and len(model_means) > 1:
            values[f"f3_margin_{label}"] = model_means[top_model] - model_means.drop(top_model).max()
        values[f"f4_rho_{label}"] = _spearman(parameters.reindex(model_means.index), model_means)
    return pd.Series(values)


def published_sparsity_ratio(published_cells: pd.DataFrame) -> float:
    """The paper's decoder/encoder ratio of mean S_max (about 7)."""
    architecture = published_cells.groupby("Architecture")["Max_Sparsity"].mean()
    return float(architecture["decoder"] / architecture["encoder"])


def _published_evidence(published_cells: pd.DataFrame) -> dict[str, str]:
    """The paper's evidence for each finding, computed from its published model x category table."""
    entropy = published_cells.groupby("Category")["Attention_Entropy"].mean().sort_values(ascending=False)
    architecture = published_cells.groupby("Architecture")["Max_Sparsity"].mean()
    models = published_cells.groupby("Model").agg(
        activation=("Final_Activation", "mean"), parameters=("Parameters_millions", "first")
    )
    ranked = models["activation"].sort_values(ascending=False)
    rho = _spearman(models["parameters"], models["activation"])
    return {
        "f1": f"{entropy.index[0]} has the highest mean H_att ({entropy.iloc[0]:.1f} vs {entropy.iloc[1]:.1f} for "
        f"{entropy.index[1]}), 2 prompts per cell, no test",
        "f2": f"decoder/encoder mean S_max = {architecture['decoder'] / architecture['encoder']:.2f} "
        f"({architecture['decoder']:.4f} vs {architecture['encoder']:.4f}), 1 encoder, no test",
        "f3": f"{ranked.index[0]} has the highest mean A_f ({ranked.iloc[0]:.4f}; next {ranked.index[1]} "
        f"{ranked.iloc[1]:.4f}); scales range {models['activation'].min():.3f} to {models['activation'].max():.3f}",
        "f4": f"Spearman rho(parameters, mean A_f) = {rho:.2f} over {len(models)} models: not monotonic",
    }


def findings_scorecard(
    metrics: pd.DataFrame, published_cells: pd.DataFrame, samples: int = 1000, seed: int = 0
) -> pd.DataFrame:
    """One row per paper finding: the paper's evidence, our raw reproduction, after length control,
    the 95% bootstrap interval, and the verdict (``verdict``)."""
    model_means = metrics.groupby("display_name")["final_activation"].mean().sort_values(ascending=False)
    top_model = model_means.index[0] if len(model_means) > 1 else None
    observed = _finding_statistics(metrics, top_model)
    draws = bootstrap(metrics, lambda sample: _finding_statistics(sample, top_model), samples, seed)
    bounds = interval(draws)
    evidence = _published_evidence(published_cells)
    architectures = set(metrics["architecture"])
    n_models = metrics["display_name"].nunique()

    def span(name: str) -> str:
        return f"[{bounds.loc[name, 'lower']:.4g}, {bounds.loc[name, 'upper']:.4g}]"

    rankings = category_rankings(metrics).set_index("category")
    math_ranks = rankings.loc[MATH].astype(float).round(4) if MATH in rankings.index else None
    paper_ratio = published_sparsity_ratio(published_cells)
    rows = []
    # 1: math has the highest attention entropy
    testable = math_ranks is not None
    rows.append(
        {
            "finding": 1,
            "claim": "mathematical reasoning prompts have the highest attention entropy",
            "paper_evidence": evidence["f1"],
            "raw_reproduction": f"math ranks {math_ranks['raw_rank']:.0f} of {len(rankings)} by raw H_att "
            f"(margin over the best other category {observed['f1_margin_raw']:.3g})"
            if testable
            else "no math prompts",
            "after_length_control": f"math ranks {math_ranks['length_adjusted_rank']:.0f} at equal length "
            f"(regression) and {math_ranks['row_normalised_rank']:.0f} by row-normalised entropy"
            if testable
            else "",
            "interval": f"margin at equal length {span('f1_margin_adjusted')}" if testable else "",
            "raw_supports": bool(observed["f1_margin_raw"] > 0) if testable else None,
            "controlled_supports": bool(observed["f1_margin_adjusted"] > 0) if testable else None,
            "interval_supports": bool(bounds.loc["f1_margin_adjusted", "lower"] > 0) if testable else None,
        }
    )
    # 2: decoders are sparser than encoders
    testable = {"encoder", "decoder"} <= architectures
    permutation = permutation_test(metrics["max_sparsity"], metrics["architecture"], "decoder", "encoder", seed=seed)
    rows.append(
        {
            "finding": 2,
            "claim": f"decoders are sparser than encoders, about {paper_ratio:.0f}x (the interval must contain the "
            f"paper's {paper_ratio:.2f} and exclude equality)",
            "paper_evidence": evidence["f2"],
            "raw_reproduction": f"decoder/encoder mean S_max = {observed['f2_ratio_raw']:.3g}; permutation p = "
            f"{permutation['p_value']:.3g}, Cohen's d = {permutation['cohens_d']:.2f}"
            if testable
            else "the run lacks an encoder or a decoder",
            "after_length_control": f"ratio at equal length {observed['f2_ratio_adjusted']:.3g}" if testable else "",
            "interval": f"ratio {span('f2_ratio_raw')}; difference {span('f2_difference_raw')}" if testable else "",
            "raw_supports": bool(observed["f2_difference_raw"] > 0) if testable else None,
            "controlled_supports": bool(observed["f2_difference_adjusted"] > 0) if testable else None,
            "interval_supports": bool(
                bounds.loc["f2_difference_raw", "lower"] > 0
                and bounds.loc["f2_ratio_raw", "lower"] <= paper_ratio <= bounds.loc["f2_ratio_raw", "upper"]
            )
            if testable
            else None,
        }
    )
    # 3: one model (GPT-2 in the paper) has clearly the highest final activation
    testable = top_model is not None
    has_gpt2 = "GPT2-117M" in set(metrics["display_name"])
    rows.append(
        {
            "finding": 3,
            "claim": "GPT-2 has the highest final activation; the activation scale differs by model"
            + ("" if has_gpt2 else " (GPT-2 not in this run: tested as 'one model is clearly highest')"),
            "paper_evidence": evidence["f3"],
            "raw_reproduction": f"{top_model} is highest (mean A_f {model_means.iloc[0]:.4g}, margin "
            f"{observed['f3_margin_raw']:.3g}); model means range {model_means.min():.3g} to {model_means.max():.3g}"
            + ("" if has_gpt2 else "; GPT-2 is not in this run")
            if testable
            else "fewer than two models",
            "after_length_control": f"margin at equal length {observed['f3_margin_adjusted']:.3g}" if testable else "",
            "interval": f"margin {span('f3_margin_raw')}" if testable else "",
            "raw_supports": bool(observed["f3_margin_raw"] > 0 and (top_model == "GPT2-117M" or not has_gpt2))
            if testable
            else None,
            "controlled_supports": bool(observed["f3_margin_adjusted"] > 0) if testable else None,
            "interval_supports": bool(bounds.loc["f3_margin_raw", "lower"] > 0) if testable else None,
        }
    )
    # 4: no monotonic link between parameter count and activation
    testable = n_models >= 3
    monotonic_share = float((draws["f4_rho_raw"].abs() > 1 - 1e-9).mean()) if testable else np.nan
    rows.append(
        {
            "finding": 4,
            "claim": "no monotonic link between parameter count and final activation",
            "paper_evidence": evidence["f4"],
            "raw_reproduction": f"Spearman rho = {observed['f4_rho_raw']:.2f} over {n_models} models"
            if testable
            else "fewer than three models",
            "after_length_control": f"rho at equal length = {observed['f4_rho_adjusted']:.2f}" if testable else "",
            "interval": f"rho {span('f4_rho_raw')}; perfectly monotonic in {monotonic_share:.0%} of draws"
            if testable
            else "",
            "raw_supports": bool(abs(observed["f4_rho_raw"]) < 1 - 1e-9) if testable else None,
            "controlled_supports": bool(abs(observed["f4_rho_adjusted"]) < 1 - 1e-9) if testable else None,
            "interval_supports": bool(monotonic_share <= 0.05) if testable else None,
        }
    )
    scorecard = pd.DataFrame(rows)
    scorecard["verdict"] = [
        verdict(row.raw_supports, row.controlled_supports, row.interval_supports) for row in scorecard.itertuples()
    ]
    scorecard["note"] = f"{n_models} models, {metrics['prompt_id'].nunique()} prompts, {samples} bootstrap draws"
    return scorecard


def sensitivity(metrics: pd.DataFrame, samples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Decoder/encoder S_max ratio under each sparsity variant, and final activation before/after the final norm."""
    variants = [c for c in metrics.columns if c.startswith("max_sparsity")]
    architectures = metrics.groupby("display_name")["architecture"].first()

    def statistic(sample: pd.DataFrame) -> pd.Series:
        values = {}
        for column in variants:
            by_architecture = _architecture_means(raw_cells(sample, column), architectures)
            values[f"decoder_over_encoder/{column}"] = by_architecture.get("decoder", np.nan) / by_architecture.get(
                "encoder", np.nan
            )
        for column in ("final_activation", "final_activation_pre_norm"):
            for model, value in sample.groupby("display_name")[column].mean().items():
                values[f"{model}/{column}"] = value
        return pd.Series(values)

    observed = statistic(metrics)
    table = interval(bootstrap(metrics, statistic, samples, seed)).join(observed.rename("value"))
    table.index = pd.MultiIndex.from_tuples([tuple(i.split("/")) for i in table.index], names=["quantity", "variant"])
    return table[["value", "lower", "upper"]].reset_index()


ROBUSTNESS_TABLES: tuple[str, ...] = (
    "findings_scorecard",
    "length_fits",
    "category_rankings_length_control",
    "architecture_permutation_test",
    "cell_intervals",
    "top10_stability",
    "sensitivity",
)
"""Every table notebook 06 exports to paper/tables/ (CSV, Markdown, LaTeX)."""


def robustness_tables(
    metrics: pd.DataFrame, published_cells: pd.DataFrame, samples: int = 1000, seed: int = 0
) -> dict[str, pd.DataFrame]:
    """All of ``ROBUSTNESS_TABLES`` for one run (finite rows only, see ``tables.finite_only``)."""
    metrics = finite_only(metrics)
    test = permutation_test(metrics["max_sparsity"], metrics["architecture"], "decoder", "encoder", seed=seed)
    result = {
        "findings_scorecard": findings_scorecard(metrics, published_cells, samples, seed),
        "length_fits": pd.concat(
            [length_fits(metrics, m) for m in ("attention_entropy", "attention_entropy_normalized")], ignore_index=True
        ),
        "category_rankings_length_control": category_rankings(metrics),
        "architecture_permutation_test": pd.DataFrame([{"metric": "max_sparsity", **test}]),
        "cell_intervals": cell_intervals(
            metrics, ("final_activation", "attention_entropy", "max_sparsity"), samples, seed
        ),
        "top10_stability": pd.concat(
            [
                top10_stability(metrics, "final_activation", samples=samples, seed=seed),
                top10_stability(metrics, "attention_entropy", samples=samples, seed=seed),
                top10_stability(metrics, "max_sparsity", lowest=True, samples=samples, seed=seed),
            ],
            ignore_index=True,
        ),
        "sensitivity": sensitivity(metrics, samples, seed),
    }
    assert tuple(result) == ROBUSTNESS_TABLES
    return result


README_START, README_END = "<!-- scorecard:start -->", "<!-- scorecard:end -->"


def quote_in_readme(scorecard: pd.DataFrame, readme: Path, source: str) -> bool:
    """Replace the README's scorecard section (between its markers) with ``scorecard``; False if no markers."""
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        return False
    columns = ["finding", "claim", "raw_reproduction", "after_length_control", "interval", "verdict"]
    body = scorecard[columns].to_markdown(index=False)
    note = f"<!-- generated by {source} from paper/tables/findings_scorecard.csv; do not edit by hand -->"
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    store.write_text(f"{head}{README_START}\n{note}\n\n{body}\n\n{README_END}{tail}", readme)
    return True
