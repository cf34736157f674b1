"""The study's figures. Each function takes a tidy table and returns a matplotlib Figure;
``save_figure`` writes it to figures/ as PNG and SVG, naming the notebook that made it."""

from __future__ import annotations

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


OUTPUT_FIGURES: tuple[str, ...] = (
    "heatmap_final_activation",
    "heatmap_attention_entropy",
    "heatmap_max_sparsity",
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


def category_heatmap(cells: pd.DataFrame, metric: str) -> plt.Figure:
    """Model x category heatmap of one of the paper's metrics (``cells``: the complete results table)."""
    column = PAPER_METRICS[metric]
    grid = cells.pivot_table(index="Model", columns="Category", values=column, sort=False)
    grid = grid[[c for c in CATEGORIES if c in grid.columns]]
    figure, axes = plt.subplots(figsize=(12, 0.6 * len(grid) + 2.5))
    sns.heatmap(grid, annot=True, fmt=".3g", cmap="viridis", ax=axes, cbar_kws={"label": LABELS[metric]})
    axes.set_xlabel("")
    axes.set_ylabel("")
    axes.set_title(f"{LABELS[metric]}: mean per model and category")
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
    axes[0][-1].legend(fontsize=8)
    figure.tight_layout()
    return figure


def entropy_vs_tokens(metrics: pd.DataFrame) -> plt.Figure:
    """Attention entropy against prompt length, one panel per model, coloured by category, with r."""
    models = list(dict.fromkeys(metrics["display_name"]))
    figure, axes = plt.subplots(1, len(models), figsize=(4.5 * len(models), 4), squeeze=False)
    for axis, model in zip(axes[0], models, strict=True):
        rows = metrics[metrics["display_name"] == model]
        sns.scatterplot(data=rows, x="n_tokens", y="attention_entropy", hue="category", ax=axis, s=18, legend=False)
        r = np.corrcoef(rows["n_tokens"], rows["attention_entropy"])[0, 1] if len(rows) > 2 else float("nan")
        axis.set_title(f"{model}: r = {r:.3f}")
        axis.set_xlabel(LABELS["n_tokens"])
        axis.set_ylabel(LABELS["attention_entropy"])
    figure.suptitle("Attention entropy grows with prompt length (it sums over query rows)")
    figure.tight_layout()
    return figure


def category_ranking(comparison: pd.DataFrame, metric: str = "Attention_Entropy") -> plt.Figure:
    """Published vs reproduced category means of one metric (each scaled to its own maximum)."""
    figure, axis = plt.subplots(figsize=(8, 4.5))
    data = comparison[comparison["metric"] == metric].copy()
    for column, label in (("published", "published (paper's six models)"), ("reproduced", "reproduced (this run)")):
        data[label] = data[column] / data[column].abs().max()
    long = data.melt(id_vars="Category", value_vars=[c for c in data.columns if "(" in c], var_name="source")
    sns.barplot(data=long, y="Category", x="value", hue="source", ax=axis, order=list(CATEGORIES))
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
    axis.set_title("Does the category ranking survive length control?")
    axis.legend()
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
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure
