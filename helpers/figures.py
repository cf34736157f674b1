"""The study's figures. Each function takes a tidy table and returns a matplotlib Figure;
``save_figure`` writes it to figures/ as PNG and SVG, naming the notebook that made it."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from helpers import paths
from helpers.study import CATEGORIES
from helpers.tables import PAPER_METRICS, finite_only

plt.rcParams["svg.hashsalt"] = "neural-activation-compendium"  # stable SVG ids: reruns give identical files

LABELS = {
    "final_activation": "final activation $A_f$",
    "attention_entropy": "attention entropy $H_{att}$ (nats)",
    "max_sparsity": "max sparsity $S_{max}$",
    "attention_entropy_normalized": "row-normalised attention entropy",
    "n_tokens": "tokens",
}


CATEGORY_COLOURS: dict[str, tuple[float, float, float]] = dict(
    zip(CATEGORIES, [sns.color_palette("tab20", 20)[i] for i in (*range(0, 20, 2), 1, 5)], strict=True)
)
"""One fixed colour per category, the same in every figure (10 dark tab20 shades, then 2 light ones)."""

ANNOTATION_DIGITS = 3
"""Significant digits of every number written into a heatmap cell."""

OUTPUT_FIGURES: tuple[str, ...] = (
    "heatmap_final_activation",
    "heatmap_attention_entropy",
    "heatmap_max_sparsity",
    "heatmap_final_activation_by_model",
    "heatmap_attention_entropy_by_model",
    "heatmap_max_sparsity_by_model",
    "architecture_comparison",
    "layer_profiles",
    "entropy_vs_tokens",
    "category_ranking_attention_entropy",
)
"""Every figure notebook 04 makes (PNG and SVG in figures/)."""


def study_figures(
    tables: dict[str, pd.DataFrame], metrics: pd.DataFrame, layers: pd.DataFrame
) -> dict[str, plt.Figure]:
    """All of ``OUTPUT_FIGURES`` from a run's tables, tidy metrics and per-layer table (finite prompts only)."""
    metrics = finite_only(metrics)
    cells = tables["complete_results"]
    result = {f"heatmap_{metric}": category_heatmap(cells, metric) for metric in PAPER_METRICS}
    result |= {f"heatmap_{metric}_by_model": category_heatmap(cells, metric, by_model=True) for metric in PAPER_METRICS}
    result["architecture_comparison"] = architecture_comparison(metrics)
    result["layer_profiles"] = layer_profiles(layers)
    result["entropy_vs_tokens"] = entropy_vs_tokens(metrics)
    result["category_ranking_attention_entropy"] = category_ranking(tables["published_vs_reproduced_categories"])
    assert tuple(result) == OUTPUT_FIGURES
    return result


def save_figure(figure: plt.Figure, name: str, notebook: str, folder: Path = paths.FIGURES) -> list[Path]:
    """Save ``figure`` as ``<name>.png`` and ``<name>.svg``; the PNG records the notebook that made it."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix in ("png", "svg"):
        path = folder / f"{name}.{suffix}"
        metadata = {"Title": name, "Description": f"made by {notebook}"}
        metadata = (
            metadata if suffix == "png" else {"Title": name, "Description": metadata["Description"], "Date": None}
        )
        figure.savefig(path, dpi=150, bbox_inches="tight", metadata=metadata)
        written.append(path)
    return written


def power_of_ten(values: np.ndarray) -> int:
    """The power of ten to factor out of ``values`` for annotation: 0 unless the largest |value| is below 0.01
    or at least 10,000; then the exponent of that largest value (so it shows as 1.00 to 9.99)."""
    finite = np.abs(np.asarray(values, dtype=float))
    finite = finite[np.isfinite(finite) & (finite > 0)]
    if not finite.size:
        return 0
    exponent = math.floor(math.log10(finite.max()))
    return exponent if exponent < -2 or exponent > 3 else 0


def annotations(values: np.ndarray, digits: int = ANNOTATION_DIGITS) -> tuple[int, list[str]]:
    """Texts for one heatmap row: (power of ten factored out, one text per value).

    The largest |value| (after the factor) gets ``digits`` significant digits and every other
    value the same number of decimals, so a row reads as one column of aligned numbers.
    """
    values = np.asarray(values, dtype=float)
    exponent = power_of_ten(values)
    scaled = values / 10.0**exponent
    finite = np.abs(scaled[np.isfinite(scaled)])
    largest = finite.max() if finite.size and finite.max() > 0 else 1.0
    decimals = max(0, digits - 1 - math.floor(math.log10(largest)))
    texts = [f"{v:.{decimals}f}" if math.isfinite(v) else "" for v in scaled]
    return exponent, [text[1:] if text.startswith("-") and float(text) == 0 else text for text in texts]


def _superscript(exponent: int) -> str:
    return str(exponent).translate(str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹"))


def category_heatmap(cells: pd.DataFrame, metric: str, by_model: bool = False) -> plt.Figure:
    """Model x category heatmap of one of the paper's metrics (``cells``: the complete results table).

    Every cell is annotated with its raw value, each row to the decimals that give its largest
    value ``ANNOTATION_DIGITS`` significant digits (``annotations``); a row of tiny or huge values
    is written in units of a power of ten named in its label.
    ``by_model``: colour by the z-score within each model (row), so differences between
    categories show even where models differ in scale; the annotations stay raw values.
    """
    column = PAPER_METRICS[metric]
    grid = cells.pivot_table(index="Model", columns="Category", values=column, sort=False)
    grid = grid[[c for c in CATEGORIES if c in grid.columns]]
    rows_annotated = [annotations(row.to_numpy()) for _, row in grid.iterrows()]
    exponents = [exponent for exponent, _ in rows_annotated]
    texts = np.array([row for _, row in rows_annotated])
    rows = [
        f"{model} (×10{_superscript(e)})" if e else str(model) for model, e in zip(grid.index, exponents, strict=True)
    ]
    if by_model:
        spread = grid.std(axis=1, ddof=0).replace(0, np.nan)
        colours = grid.sub(grid.mean(axis=1), axis=0).div(spread, axis=0).fillna(0.0)
        limit = max(1.0, float(np.nanmax(np.abs(colours.to_numpy()))))
        style = {"cmap": "RdBu_r", "vmin": -limit, "vmax": limit}  # symmetric: white is the model mean
        label, title = "z-score within the model", f"{LABELS[metric]}: categories compared within each model"
    else:
        colours, style = grid, {"cmap": "viridis"}
        label, title = LABELS[metric], f"{LABELS[metric]}: mean per model and category"
    figure, axes = plt.subplots(figsize=(12.5, 0.6 * len(grid) + 2.6))
    sns.heatmap(
        colours.set_axis(rows, axis=0),
        annot=texts,
        fmt="",
        annot_kws={"fontsize": 8},
        ax=axes,
        cbar_kws={"label": label},
        **style,
    )
    axes.set_xlabel("")
    axes.set_ylabel("")
    axes.set_title(title + (" (cells: raw values)" if by_model else ""))
    plt.setp(axes.get_xticklabels(), rotation=40, ha="right")
    plt.setp(axes.get_yticklabels(), rotation=0)
    figure.tight_layout()
    return figure


def architecture_comparison(metrics: pd.DataFrame) -> plt.Figure:
    """Per-prompt distributions of the paper's three metrics by model, coloured by encoder/decoder."""
    figure, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    order = list(dict.fromkeys(metrics["display_name"]))
    for axis, metric in zip(axes, PAPER_METRICS, strict=True):
        sns.boxplot(data=metrics, x="display_name", y=metric, hue="architecture", order=order, ax=axis, dodge=False)
        axis.set_xlabel("")
        axis.set_ylabel(LABELS[metric])
        plt.setp(axis.get_xticklabels(), rotation=30, ha="right")
        if axis is not axes[-1] and axis.get_legend() is not None:
            axis.get_legend().remove()
    if axes[-1].get_legend() is not None:  # beside the panels, never over a box
        sns.move_legend(axes[-1], "upper left", bbox_to_anchor=(1.02, 1.0), title="architecture", frameon=False)
    figure.suptitle("The paper's metrics per prompt, by model (encoder vs decoder)")
    figure.tight_layout()
    return figure


def layer_profiles(
    layers: pd.DataFrame, statistics: tuple[str, ...] = ("near_zero_0.01", "attention_entropy")
) -> plt.Figure:
    """Mean over prompts of per-layer statistics against relative depth, one line per model."""
    figure, axes = plt.subplots(1, len(statistics), figsize=(6 * len(statistics), 4.2), squeeze=False)
    for axis, statistic in zip(axes[0], statistics, strict=True):
        selected = layers[layers["statistic"] == statistic]
        profile = selected.groupby(["model", "layer"], sort=False)["value"].mean().reset_index()
        for model, rows in profile.groupby("model", sort=False):
            depth = rows["layer"] / max(rows["layer"].max(), 1)
            axis.plot(depth, rows["value"], marker="o", markersize=3, label=model)
        axis.set_xlabel("relative depth (0 = embedding output, 1 = last layer)")
        axis.set_ylabel(statistic.replace("_", " "))
        axis.set_title(f"{statistic.replace('_', ' ')} per layer")
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, title="model")
    figure.tight_layout()
    return figure


def entropy_vs_tokens(metrics: pd.DataFrame) -> plt.Figure:
    """Attention entropy against prompt length, one panel per model, coloured by category (legend below), with r."""
    models = list(dict.fromkeys(metrics["display_name"]))
    categories = [c for c in CATEGORIES if c in set(metrics["category"])]
    figure, axes = plt.subplots(1, len(models), figsize=(4.5 * len(models), 4.6), squeeze=False, layout="constrained")
    for axis, model in zip(axes[0], models, strict=True):
        rows = metrics[metrics["display_name"] == model]
        sns.scatterplot(
            data=rows,
            x="n_tokens",
            y="attention_entropy",
            hue="category",
            hue_order=categories,
            palette=CATEGORY_COLOURS,
            ax=axis,
            s=18,
            legend=False,
        )
        r = np.corrcoef(rows["n_tokens"], rows["attention_entropy"])[0, 1] if len(rows) > 2 else float("nan")
        axis.set_title(f"{model}: r = {r:.3f}")
        axis.set_xlabel(LABELS["n_tokens"])
        axis.set_ylabel(LABELS["attention_entropy"])
    handles = [
        plt.Line2D([], [], marker="o", linestyle="", color=CATEGORY_COLOURS[c], markersize=6) for c in categories
    ]
    labels = [c.replace("_", " ") for c in categories]
    figure.legend(handles, labels, loc="outside lower center", ncol=min(6, len(categories)), frameon=False, fontsize=9)
    figure.suptitle("Attention entropy grows with prompt length (it sums over query rows)")
    return figure


def category_ranking(comparison: pd.DataFrame, metric: str = "Attention_Entropy") -> plt.Figure:
    """Published vs reproduced category means of one metric (each scaled to its own maximum)."""
    figure, axis = plt.subplots(figsize=(8, 4.5))
    data = comparison[comparison["metric"] == metric].copy()
    for column, label in (("published", "published (paper's six models)"), ("reproduced", "reproduced (this run)")):
        data[label] = data[column] / data[column].abs().max()
    long = data.melt(id_vars="Category", value_vars=[c for c in data.columns if "(" in c], var_name="source")
    sns.barplot(data=long, y="Category", x="value", hue="source", ax=axis, order=list(CATEGORIES))
    sns.move_legend(axis, "lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, title=None, frameon=False)
    axis.set_xlabel(f"{metric.replace('_', ' ').lower()}, scaled to the largest category")
    axis.set_ylabel("")
    figure.tight_layout()
    return figure


def save_figures(figures: dict[str, plt.Figure], folder: Path, notebook: str) -> list[Path]:
    """Save every figure (PNG and SVG) into ``folder`` and close it."""
    written = []
    for name, figure in figures.items():
        written.extend(save_figure(figure, name, notebook, folder))
        plt.close(figure)
    return written


ROBUSTNESS_FIGURES: tuple[str, ...] = ("robustness_category_ranks", "robustness_sparsity_ratio")
"""Every figure notebook 06 makes."""


def category_ranks(rankings: pd.DataFrame) -> plt.Figure:
    """Rank of each category (1 = highest attention entropy): raw, row-normalised, at equal length."""
    variants = {
        "raw_rank": "raw H_att",
        "row_normalised_rank": "row-normalised",
        "length_adjusted_rank": "equal length",
    }
    figure, axis = plt.subplots(figsize=(8, 5))
    ordered = rankings.sort_values("raw_rank")
    for column, label in variants.items():
        axis.plot(ordered[column], ordered["category"], marker="o", linestyle="none", label=label, alpha=0.8)
    axis.invert_xaxis()
    axis.set_xlabel("rank of the category (1 = highest attention entropy)")
    axis.set_title("Does the category ranking survive length control?", pad=28)
    axis.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
    figure.tight_layout()
    return figure


def sparsity_ratio(sensitivity: pd.DataFrame, paper_ratio: float) -> plt.Figure:
    """Decoder/encoder S_max ratio with 95% intervals for each sparsity variant, against the paper's ratio."""
    rows = sensitivity[sensitivity["quantity"] == "decoder_over_encoder"].reset_index(drop=True)
    figure, axis = plt.subplots(figsize=(8, 4))
    axis.errorbar(
        rows["value"],
        rows["variant"],
        xerr=[rows["value"] - rows["lower"], rows["upper"] - rows["value"]],
        fmt="o",
        capsize=3,
        label="this run, 95% bootstrap interval",
    )
    axis.axvline(paper_ratio, color="crimson", linestyle="--", label=f"paper: {paper_ratio:.2f}")
    axis.axvline(1.0, color="grey", linestyle=":", label="no difference")
    axis.set_xscale("log")
    axis.set_xlabel("decoder / encoder mean max sparsity")
    axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    figure.tight_layout()
    return figure
