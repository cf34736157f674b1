"""The paper's tables, derived from a tidy per-prompt metrics table.

The same functions derive the paper's own summary tables from its published model x category
table (a consistency check of the paper) and ours from our measurements. Column names follow
the paper's results file (``Final_Activation``, ``Attention_Entropy``, ``Max_Sparsity``, ...)
so published and reproduced tables line up.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.base import store
from helpers.study import CATEGORIES, latex, reproduction
from helpers.study.comparison import table_csv
from helpers.study.outputs import PUBLISHED_SUMMARIES, STUDY_TABLES

PAPER_METRICS: dict[str, str] = {
    "final_activation": "Final_Activation",
    "attention_entropy": "Attention_Entropy",
    "max_sparsity": "Max_Sparsity",
}
"""Our column name -> the paper's column name, for its three metrics."""

EXTRA_METRICS: dict[str, str] = {
    "n_tokens": "Tokens",
    "final_activation_pre_norm": "Final_Activation_Pre_Norm",
    "attention_entropy_normalized": "Attention_Entropy_Normalized",
    "max_sparsity_no_embedding": "Max_Sparsity_No_Embedding",
    "max_sparsity_0.001": "Max_Sparsity_0.001",
    "max_sparsity_0.1": "Max_Sparsity_0.1",
    "max_sparsity_relative_0.001": "Max_Sparsity_Relative_0.001",
    "max_sparsity_relative_0.01": "Max_Sparsity_Relative_0.01",
    "max_sparsity_relative_0.1": "Max_Sparsity_Relative_0.1",
}
METRIC_COLUMNS = list(PAPER_METRICS.values())
MODEL_COLUMNS = ["Model", "Model_Name", "Architecture", "Parameters", "Layers", "Heads", "Hidden_Size"]


class NonFiniteMeasurementWarning(UserWarning):
    """Some prompts' activations held inf or NaN; they were left out of the aggregate tables."""


def finite_only(metrics: pd.DataFrame) -> pd.DataFrame:
    """The rows of a per-prompt metrics table without inf/NaN anywhere, warning with the others' names.

    A row is left out when ``nonfinite_layers`` (from ``measure``) is above 0 or one of the
    paper's metrics is inf or NaN, so a non-finite value is never averaged into a table.
    """
    flagged = ~np.isfinite(metrics[list(PAPER_METRICS)].to_numpy(dtype=float)).all(axis=1)
    if "nonfinite_layers" in metrics:
        flagged |= metrics["nonfinite_layers"].to_numpy() > 0
    if flagged.any():
        names = [f"{row.get('model', '?')}/{row.get('prompt_id', index)}" for index, row in metrics[flagged].iterrows()]
        shown = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
        warnings.warn(
            f"{len(names)} of {len(metrics)} prompt measurements hold inf or NaN activations and are left out "
            f"of the tables: {shown}; see their nonfinite_layers and the per-layer nonfinite_tokens "
            "(try dtype float32 or bfloat16)",
            NonFiniteMeasurementWarning,
            stacklevel=2,
        )
    return metrics[~flagged]


def format_parameters(count: int) -> str:
    """Parameter count as the paper prints it: 109.5M, 1.4B."""
    return f"{count / 1e9:.1f}B" if count >= 1e9 else f"{count / 1e6:.1f}M"


def complete_results(metrics: pd.DataFrame, extras: bool = False) -> pd.DataFrame:
    """Model x category means (the results file's Table 1): one row per model and category.

    ``metrics``: the tidy per-prompt table (``helpers.study.load_metrics``). Models keep their
    order of appearance, categories the paper's order. ``extras`` adds our extra metrics.
    """
    renamed = metrics.rename(
        columns={
            "display_name": "Model",
            "model": "Model_Name",
            "architecture": "Architecture",
            "n_layers": "Layers",
            "n_heads": "Heads",
            "hidden_size": "Hidden_Size",
            "category": "Category",
            **PAPER_METRICS,
            **EXTRA_METRICS,
        }
    )
    renamed["Parameters"] = metrics["n_parameters"].map(format_parameters)
    values = METRIC_COLUMNS + ([c for c in EXTRA_METRICS.values() if c in renamed] if extras else [])
    order = {name: position for position, name in enumerate(dict.fromkeys(renamed["Model"]))}
    cells = (
        renamed.groupby(MODEL_COLUMNS + ["Category"], sort=False, observed=True)
        .agg(**{column: (column, "mean") for column in values}, Inputs_Analyzed=("Category", "size"))
        .reset_index()
    )
    cells["_model_order"] = cells["Model"].map(order)
    cells["_category_order"] = cells["Category"].map({c: i for i, c in enumerate(CATEGORIES)}).fillna(len(CATEGORIES))
    return (
        cells.sort_values(["_model_order", "_category_order", "Category"])
        .drop(columns=["_model_order", "_category_order"])
        .reset_index(drop=True)
    )


def model_summary(cells: pd.DataFrame) -> pd.DataFrame:
    """Per model: mean of each metric over its categories, and the inputs analysed (paper Table VI)."""
    return (
        cells.groupby("Model", sort=True)
        .agg(
            Architecture=("Architecture", "first"),
            Parameters=("Parameters", "first"),
            **{column: (column, "mean") for column in METRIC_COLUMNS},
            Inputs_Analyzed=("Inputs_Analyzed", "sum"),
        )
        .reset_index()
    )


def category_performance(cells: pd.DataFrame) -> pd.DataFrame:
    """Per category: mean and sample std (ddof=1) of each metric across models (paper Table III)."""
    table = cells.groupby("Category", sort=True)[METRIC_COLUMNS].agg(["mean", "std"])
    table.columns = [f"{metric}_{statistic}" for metric, statistic in table.columns]
    return table.reset_index()


def architecture_comparison(cells: pd.DataFrame) -> pd.DataFrame:
    """Per architecture (encoder/decoder): mean of each metric over model x category cells (paper Table II)."""
    return (
        cells.groupby("Architecture", sort=True)
        .agg(**{column: (column, "mean") for column in METRIC_COLUMNS}, Inputs_Analyzed=("Inputs_Analyzed", "sum"))
        .reset_index()
    )


def parameter_count(text: str) -> float:
    """A parameter count as the paper prints it (``format_parameters``: 109.5M, 1.4B) read back as a number."""
    scale = {"M": 1e6, "B": 1e9}
    text = str(text).strip()
    if text[-1:] not in scale:
        raise ValueError(f"parameter count {text!r}: expected a number followed by M or B, such as 109.5M or 1.4B")
    return float(text[:-1]) * scale[text[-1]]


def parameter_scale(cells: pd.DataFrame) -> pd.DataFrame:
    """Per parameter count, smallest first: mean of each metric and the number of models (paper Table V)."""
    table = (
        cells.groupby("Parameters", sort=False)
        .agg(**{column: (column, "mean") for column in METRIC_COLUMNS}, Num_Models=("Model", "nunique"))
        .reset_index()
    )
    order = table["Parameters"].map(parameter_count).sort_values(kind="stable").index
    return table.loc[order].reset_index(drop=True)


def top_cells(cells: pd.DataFrame, metric: str, n: int = 10, lowest: bool = False) -> pd.DataFrame:
    """The ``n`` model x category cells with the highest (or lowest) ``metric`` (paper Tables IV, VII, VIII)."""
    ranked = cells.sort_values(metric, ascending=lowest, kind="stable").head(n)
    return ranked[["Model", "Category", metric]].reset_index(drop=True)


def sample_inputs(prompts: pd.DataFrame, metrics: pd.DataFrame | None = None, per_category: int = 1) -> pd.DataFrame:
    """The first ``per_category`` prompt(s) of each category with their token count per model (paper Table I)."""
    first = prompts.groupby("category", sort=False).head(per_category)
    table = first.rename(columns={"prompt_id": "Prompt_ID", "category": "Category", "text": "Text"})
    table = table[["Category", "Prompt_ID", "Text"]].reset_index(drop=True)
    if metrics is not None:
        tokens = metrics.pivot_table(index="prompt_id", columns="display_name", values="n_tokens", aggfunc="first")
        tokens.columns = [f"Tokens_{name}" for name in tokens.columns]
        table = table.merge(tokens, left_on="Prompt_ID", right_index=True, how="left")
    return table


def summary_tables(cells: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Every summary table the paper derives from its model x category table, keyed by file name."""
    return {
        "model_summary": model_summary(cells),
        "category_performance": category_performance(cells),
        "architecture_comparison": architecture_comparison(cells),
        "parameter_scale": parameter_scale(cells),
        "top10_final_activation": top_cells(cells, "Final_Activation"),
        "top10_attention_entropy": top_cells(cells, "Attention_Entropy"),
        "top10_lowest_sparsity": top_cells(cells, "Max_Sparsity", lowest=True),
    }


def published_tables() -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """The paper's model x category table and its summary tables, keyed like ``summary_tables``."""
    from helpers.study.reference import load_published

    summaries = {name: load_published(slug) for name, slug in PUBLISHED_SUMMARIES.items()}
    return load_published("complete_analysis_results"), summaries


def compare_categories(cells: pd.DataFrame, published_cells: pd.DataFrame) -> pd.DataFrame:
    """Per metric and category: the paper's mean over its models and ours over ours, with ranks (1 = highest).

    Rows: the paper's 12 categories, then the run's own (custom) ones; each rank is among the categories
    that source has, so a run's own categories rank with its paper categories.
    """
    rows = []
    order = list(dict.fromkeys([*CATEGORIES, *cells["Category"].astype(str)]))
    for metric in METRIC_COLUMNS:
        published = published_cells.groupby("Category")[metric].mean()
        reproduced = cells.groupby("Category")[metric].mean()
        table = pd.DataFrame({"published": published, "reproduced": reproduced}).reindex(order)
        table["published_rank"] = table["published"].rank(ascending=False, method="min").astype("Int64")
        table["reproduced_rank"] = table["reproduced"].rank(ascending=False, method="min").astype("Int64")
        rows.append(table.rename_axis("Category").reset_index().assign(metric=metric))
    columns = ["metric", "Category", "published", "reproduced", "published_rank", "reproduced_rank"]
    return pd.concat(rows, ignore_index=True)[columns]


def compare_architectures(cells: pd.DataFrame, published_cells: pd.DataFrame) -> pd.DataFrame:
    """Encoder vs decoder means, published and reproduced, and the decoder/encoder ratio of each."""
    rows = []
    for source, table in (("published", published_cells), ("reproduced", cells)):
        means = architecture_comparison(table).set_index("Architecture")
        for metric in METRIC_COLUMNS:
            encoder = means[metric].get("encoder", float("nan"))
            decoder = means[metric].get("decoder", float("nan"))
            ratio = decoder / encoder if encoder else float("nan")
            rows.append(
                {
                    "source": source,
                    "metric": metric,
                    "encoder": encoder,
                    "decoder": decoder,
                    "decoder_over_encoder": ratio,
                }
            )
    return pd.DataFrame(rows)


def compare_models(cells: pd.DataFrame, published_cells: pd.DataFrame) -> pd.DataFrame:
    """Cell by cell, published vs reproduced, for models in both (matched by hub id); empty when none overlap."""
    merged = published_cells.merge(cells, on=["Model_Name", "Category"], suffixes=("_published", "_reproduced"))
    columns = ["Model_Name", "Category"]
    for metric in METRIC_COLUMNS:
        merged[f"{metric}_difference"] = merged[f"{metric}_reproduced"] - merged[f"{metric}_published"]
        columns += [f"{metric}_published", f"{metric}_reproduced", f"{metric}_difference"]
    return merged.reindex(columns=columns)


def study_tables(metrics: pd.DataFrame, prompts: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """All of ``STUDY_TABLES`` from a run's tidy per-prompt table and its prompts (finite rows only)."""
    metrics = store.at_measurement_precision(finite_only(metrics))
    cells = complete_results(metrics)
    published_cells, published = published_tables()
    result = {
        "complete_results": cells,
        "complete_results_extended": complete_results(metrics, extras=True),
        "sample_inputs": sample_inputs(prompts, metrics),
        **summary_tables(cells),
        "published_vs_reproduced_categories": compare_categories(cells, published_cells),
        "published_vs_reproduced_architectures": compare_architectures(cells, published_cells),
        "published_vs_reproduced_models": compare_models(cells, published_cells),
        "paper_consistency": paper_consistency(published_cells, published),
    }
    assert tuple(result) == STUDY_TABLES
    return result


def paper_consistency(published_cells: pd.DataFrame, published: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Re-derive the paper's summary tables from its own model x category table and compare.

    One row per published summary value: the published number, the re-derived one (rounded as
    published, to 4 decimals), and whether they agree within rounding (0.00015; 0.0015 for
    architecture means, which the paper prints with 3 decimals).
    """
    derived = summary_tables(published_cells)
    rows = []
    for name, table in derived.items():
        reference = published[name]
        key = [c for c in ("Model", "Category", "Architecture", "Parameters") if c in reference.columns]
        if name.startswith("top10"):
            key = ["Model", "Category"]
        merged = reference.merge(table, on=key, how="outer", suffixes=("_published", "_derived"), indicator=True)
        value_columns = [c for c in reference.columns if c not in key and pd.api.types.is_numeric_dtype(reference[c])]
        for _, row in merged.iterrows():
            for column in value_columns:
                if column in ("Parameters_millions",):
                    continue
                published_value = row.get(f"{column}_published", row.get(column))
                derived_value = row.get(f"{column}_derived", row.get(column))
                if row["_merge"] != "both":
                    published_value = published_value if row["_merge"] == "left_only" else float("nan")
                    derived_value = derived_value if row["_merge"] == "right_only" else float("nan")
                tolerance = 0.0015 if name == "architecture_comparison" else 0.00015
                rows.append(
                    {
                        "table": name,
                        "row": " / ".join(str(row[k]) for k in key),
                        "column": column,
                        "published": published_value,
                        "rederived": derived_value,
                        "agrees": bool(abs(float(published_value) - float(derived_value)) <= tolerance),
                    }
                )
    return pd.DataFrame(rows)


def write_study_tables(tables: dict[str, pd.DataFrame], folder: Path, provenance: dict | None = None) -> list[Path]:
    """Write each table to ``folder/<name>.parquet`` (atomically, with provenance)."""
    return [store.write_table(table, folder / f"{name}.parquet", provenance) for name, table in tables.items()]


def read_study_tables(folder: Path) -> dict[str, pd.DataFrame]:
    """Read back every table of ``STUDY_TABLES`` from ``folder``."""
    return {name: store.read_table(folder / f"{name}.parquet") for name in STUDY_TABLES}


def table_texts(table: pd.DataFrame, notebook: str) -> dict[str, str]:
    """A table's three committed files as text (suffix -> text): CSV, Markdown and LaTeX, numbers to
    ``store.SIGNIFICANT_DIGITS`` significant digits, each naming the notebook that made it."""
    digits = store.SIGNIFICANT_DIGITS
    note = f"Generated by {notebook}; do not edit by hand."
    markdown = store.markdown_table(table, floatfmt=f".{digits}g")
    csv_text = table_csv(table)
    tex = latex.latex_table(latex.from_csv(csv_text), note, digits)  # the CSV, set
    return {"csv": csv_text, "md": f"<!-- {note} -->\n\n{markdown}\n", "tex": tex}


def export_tables(
    tables: dict[str, pd.DataFrame], folder: Path, notebook: str, check: reproduction.Check | None = None
) -> dict[str, pd.DataFrame]:
    """Write each table as CSV, Markdown and LaTeX into ``folder``; return the tables as written (kept).

    With a ``check`` (``helpers.study.reproduction``), each table is checked against its committed files: cells
    within tolerance keep their committed values, and only files that differ from what the kept table gives are
    written. The returned tables are what the notebook must show, draw and quote from then on, so that what a
    reader sees is what the committed files hold.
    """
    kept = {}
    for name, table in tables.items():
        files = {suffix: folder / f"{name}.{suffix}" for suffix in ("csv", "md", "tex")}
        if check is not None:
            kept[name] = check.table(name, table, files, lambda shown: table_texts(shown, notebook))
            continue
        for suffix, text in table_texts(table, notebook).items():
            store.write_text(text, files[suffix])
        kept[name] = table
    return kept
