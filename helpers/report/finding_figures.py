"""The findings' figures: finding 1's categories and length contrasts, finding 2's sparsity variants (notebook 06)
and finding 5's probes and units over depth (notebook 08). Shared style, saving and labels are
``helpers.report.figures``'s."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from helpers.report.figures import (
    CATEGORY_COLOURS,
    SMALLEST_TEXT,
    WIDEST,
    category_label,
    category_order,
    layer_profiles,
    panel_grid,
    rounded_for_drawing,
)
from helpers.study.outputs import FINDINGS_FIGURES, SIGNATURE_FIGURES

# --- notebook 06: the findings ----------------------------------------------------------------------


def _note_figure(text: str) -> plt.Figure:
    figure, axis = plt.subplots(figsize=(8, 1.5))
    axis.axis("off")
    axis.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=11)
    return figure


def finding1_categories(
    categories: pd.DataFrame,
    math: str = "mathematical_reasoning",
    per_model: pd.DataFrame | None = None,
    verdict: str = "",
) -> plt.Figure:
    """Finding 1's test, one panel per model (four a row): each category's mean H_att at matched prompt length
    with its 95% interval (filled) and raw (hollow), math in red; the model's verdict in its panel's title and the
    run's verdict, counted over models, in the figure's.

    ``categories``: the ``finding1_categories`` table (``helpers.stats.findings``), or a one-column note;
    ``per_model``: ``finding1_per_model`` (the panels' verdicts); ``verdict``: the scorecard's.
    """
    from helpers.report.counting import count_verdicts

    if "matched_length_mean" not in categories:
        return _note_figure(str(categories.iloc[0, 0]))
    models = list(dict.fromkeys(categories["model"]))
    verdicts = {}
    if per_model is not None and {"model", "verdict"} <= set(per_model.columns):
        verdicts = dict(zip(per_model["model"].astype(str), per_model["verdict"].astype(str), strict=False))
    order = category_order(categories["category"])
    rows, columns = panel_grid(len(models))
    figure, axes = plt.subplots(
        rows, columns, figsize=(WIDEST, (0.2 * len(order) + 1.1) * rows + 1.3), squeeze=False, sharey=True,
        layout="constrained",
    )  # fmt: skip
    position = np.arange(len(order))[::-1]
    for axis, model in zip(axes.flat, models, strict=False):
        table = categories[categories["model"] == model].set_index("category").reindex(order)
        colours = ["crimson" if c == math else "tab:blue" for c in order]
        axis.errorbar(
            table["matched_length_mean"], position, xerr=1.96 * table["matched_length_se"], fmt="none",
            ecolor=colours, elinewidth=1.4,
        )  # fmt: skip
        axis.scatter(table["matched_length_mean"], position, c=colours, s=18, zorder=3, label="at matched length")
        axis.scatter(table["raw_mean"], position, facecolors="none", edgecolors=colours, s=18, label="raw mean")
        axis.set_yticks(position, [category_label(c) for c in order])
        axis.set_title(f"{model}\n{verdicts[str(model)]}" if str(model) in verdicts else str(model))
        axis.set_xlabel("H_att (nats)")
        axis.xaxis.set_major_locator(plt.MaxNLocator(4))
    for axis in list(axes.flat)[len(models) :]:
        axis.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    handles.append(plt.Line2D([], [], color="tab:blue", linewidth=1.4))
    labels.append("95% interval at matched length")
    figure.legend(handles, labels, loc="outside lower center", ncol=3, frameon=False)
    counted = count_verdicts(per_model) if per_model is not None else ""
    head = f"Finding 1 {verdict}" if verdict else "Finding 1"
    figure.suptitle(
        f"{head}: is math's attention entropy (red) the highest at matched prompt length?"
        + (f"\n{counted[0].upper() + counted[1:]}" if counted else "")
    )
    return figure


def sparsity_variants(
    variants: pd.DataFrame, about: tuple[float, float], verdict: str = "", level: str = ""
) -> plt.Figure:
    """Finding 2's test: decoder/encoder sparsity ratio under every sparsity measure: each pair (95% interval,
    light) and, where testable, the architecture ratio (black); the paper's 'about 7x' band shaded; each
    measure's 'sparser' verdict at right, the scorecard's ``verdict`` in the title.

    Markers are hollow and the interval bars drawn over them with caps, so an interval narrower than a
    marker still shows as a bar; the legend sits right below the axis label.
    """
    measures = list(dict.fromkeys(variants["measure"]))
    comparisons = list(dict.fromkeys(variants["comparison"]))
    figure, axis = plt.subplots(figsize=(11, 0.55 * len(measures) + 2.4), layout="constrained")
    axis.axvspan(*about, color="crimson", alpha=0.12, label=f"'about' band ({about[0]:.3g}-{about[1]:.3g})")
    axis.axvline(1.0, color="grey", linestyle=":", label="no difference")
    offsets = np.linspace(-0.25, 0.25, len(comparisons)) if len(comparisons) > 1 else [0.0]
    for offset, comparison in zip(offsets, comparisons, strict=True):
        rows = variants[variants["comparison"] == comparison].set_index("measure").reindex(measures)
        y = len(measures) - 1 - np.arange(len(measures)) + offset
        finite = np.isfinite(rows["ratio"].to_numpy(float))
        if not finite.any():
            continue
        overall = comparison.startswith("decoders")
        error = [(rows["ratio"] - rows["low"]).to_numpy(float), (rows["high"] - rows["ratio"]).to_numpy(float)]
        axis.errorbar(rows["ratio"], y, xerr=error, fmt="D" if overall else "o",
                      markersize=6 if overall else 4, markerfacecolor="none", elinewidth=2.2 if overall else 2.0,
                      capsize=5 if overall else 2, capthick=1.6, color="black" if overall else "tab:blue",
                      alpha=1.0 if overall else 0.45, zorder=3 if overall else 2,
                      label=f"{comparison} ({level + ' ' if level else ''}interval)" if overall else None)  # fmt: skip
    if any(not c.startswith("decoders") for c in comparisons):
        axis.errorbar([], [], xerr=[], fmt="o", markerfacecolor="none", color="tab:blue", alpha=0.45, elinewidth=2.0,
                      label="one decoder / one encoder (95% interval)")  # fmt: skip
    overall_rows = variants[variants["comparison"].str.startswith("decoders")].set_index("measure").reindex(measures)
    for k, measure in enumerate(measures):
        shown = overall_rows.loc[measure, "verdict_sparser"] if "verdict_sparser" in overall_rows else ""
        shown = "" if pd.isna(shown) else str(shown)
        axis.annotate(shown, (1.0, len(measures) - 1 - k), xycoords=("axes fraction", "data"),
                      xytext=(6, 0), textcoords="offset points", va="center", fontsize=SMALLEST_TEXT)  # fmt: skip
    axis.set_yticks(len(measures) - 1 - np.arange(len(measures)), measures)
    axis.set_xscale("log")
    axis.set_xlabel("decoder / encoder mean sparsity (log scale); bars: intervals, some narrower than a marker")
    head = f"Finding 2 {verdict}" if verdict else "Finding 2"
    axis.set_title(
        f"{head}: are decoders sparser than encoders, about 7x?\n('sparser' verdict of each measure at right)"
    )
    figure.legend(loc="outside lower center", ncol=2, frameon=False)
    return figure


def finding1_length_contrasts(curves: pd.DataFrame, math: str = "mathematical_reasoning") -> plt.Figure:
    """Per model (four panels a row): math minus each other category across the token range every category
    covers (95% pointwise intervals shaded), from finding 1's primary model on the summed scale.

    ``curves``: the ``finding1_length_contrasts`` table (``model, category, n_tokens, difference, lower, upper``)
    or a one-column note.
    """
    if "difference" not in curves:
        return _note_figure(str(curves.iloc[0, 0]))
    models = list(dict.fromkeys(curves["model"]))
    rows, columns = panel_grid(len(models))
    figure, axes = plt.subplots(rows, columns, figsize=(WIDEST, 2.9 * rows + 1.4), squeeze=False, layout="constrained")
    for axis, model in zip(axes.flat, models, strict=False):
        frame = curves[curves["model"] == model]
        for category, group in frame.groupby("category", sort=False):
            colour = CATEGORY_COLOURS.get(category, "grey")
            axis.plot(group["n_tokens"], group["difference"], color=colour, linewidth=1, label=category_label(category))
            axis.fill_between(group["n_tokens"], group["lower"], group["upper"], color=colour, alpha=0.08)
        axis.axhline(0, color="black", linewidth=0.8)
        axis.set_title(model)
        axis.set_xlabel("prompt length (tokens)")
        axis.set_ylabel("math minus category (nats)")
    for axis in list(axes.flat)[len(models) :]:
        axis.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncol=4, frameon=False)
    figure.suptitle("Finding 1 by length: above 0, math has the higher entropy at that length")
    return figure


def sparsity_layer_profiles(layers: pd.DataFrame) -> plt.Figure:
    """Per-layer sparsity profiles: Hoyer, |h| < 0.01 and |h| < 0.01 x the layer's SD, by relative depth
    (a grid of two panels a row, so the figure stays readable at a report's width)."""
    return layer_profiles(
        layers,
        statistics=("hoyer", "near_zero_0.01", "near_zero_relative_0.01"),
        title="Sparsity per layer under three measures: mean over the run's prompts",
    )


def _verdict_of(tables: dict[str, pd.DataFrame], number: int) -> str:
    """The scorecard's verdict of finding ``number`` ('' when the tables lack it)."""
    scorecard = tables.get("findings_scorecard")
    if scorecard is None or not {"finding", "verdict"} <= set(scorecard.columns):
        return ""
    match = scorecard[scorecard["finding"].astype(str) == str(number)]
    return str(match["verdict"].iloc[0]) if len(match) else ""


def findings_figures(
    tables: dict[str, pd.DataFrame], layers: pd.DataFrame, about: tuple[float, float], level: str = ""
) -> dict:
    """All of ``FINDINGS_FIGURES`` from notebook 06's tables and the run's per-layer table; each finding's key
    figure says the scorecard's verdict in its title (``level``: finding 2's interval, e.g. '90%')."""
    tables = {name: rounded_for_drawing(table) for name, table in tables.items()}
    layers = rounded_for_drawing(layers)
    per_model = tables.get("finding1_per_model")
    result = {
        "finding1_categories": finding1_categories(
            tables["finding1_categories"],
            per_model=per_model if per_model is not None and "verdict" in per_model else None,
            verdict=_verdict_of(tables, 1),
        ),
        "finding1_length_contrasts": finding1_length_contrasts(tables["finding1_length_contrasts"]),
        "sparsity_variants": sparsity_variants(tables["sparsity_variants"], about, _verdict_of(tables, 2), level),
        "sparsity_layer_profiles": sparsity_layer_profiles(layers),
    }
    assert tuple(result) == FINDINGS_FIGURES
    return result


# --- notebook 08: activation signatures (finding 5) ---------------------------------------------------


def signature_probe_depth(probes: pd.DataFrame, verdicts: pd.DataFrame | None = None, verdict: str = "") -> plt.Figure:
    """Finding 5's test, per model (four panels a row): probe accuracy (surface features + one layer's mean-pooled
    vectors) by relative depth, against what the words alone give: the lexical probe (TF-IDF n-grams of the text,
    no model) and layer 0 (the embedding output) as reference lines, the surface-only probe and chance below them;
    each model's verdict (``verdicts``: ``signature_verdicts``) in its title, the count over models and the run's
    ``verdict`` (``finding5.run_verdict``, passed in so that drawing needs no rule) in the figure's.

    ``probes``: the ``signature_probes`` table (``helpers.stats.findings.beyond_words.test_model`` per model).
    """
    from helpers.report.counting import count_verdicts

    if "accuracy" not in probes:
        return _note_figure(str(probes.iloc[0, 0]))
    models = list(dict.fromkeys(probes["model"]))
    of_model = {}
    if verdicts is not None and {"model", "verdict"} <= set(verdicts.columns):
        of_model = dict(zip(verdicts["model"].astype(str), verdicts["verdict"].astype(str), strict=False))
    rows, columns = panel_grid(len(models))
    figure, axes = plt.subplots(
        rows, columns, figsize=(WIDEST, 2.8 * rows + 1.3), squeeze=False, sharey=True, layout="constrained"
    )
    for axis, model in zip(axes.flat, models, strict=False):
        table = probes[probes["model"] == model]
        depth = table["relative_depth"]
        first = table.iloc[0]
        axis.axhline(first["lexical_accuracy"], color="tab:red", linewidth=1.2, label="words alone (lexical probe)")
        axis.axhline(first["layer0_accuracy"], color="tab:purple", linestyle="--", linewidth=1.2, label="layer 0")
        axis.axhline(first["surface_accuracy"], color="tab:orange", linewidth=1, label="surface only")
        axis.axhline(first["chance"], color="black", linestyle=":", linewidth=1, label="chance")
        axis.plot(depth, table["accuracy"], marker="o", markersize=3, color="tab:blue", label="surface + layer")
        axis.set_title(f"{model}\n{of_model[str(model)]}" if str(model) in of_model else str(model))
        axis.set_xlabel("relative depth (0 = embeddings)")
        axis.set_ylim(0, 1)
    for axis in list(axes.flat)[len(models) :]:
        axis.set_visible(False)
    for row in axes:
        row[0].set_ylabel("cross-validated accuracy")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncol=5, frameon=False)
    counted = count_verdicts(verdicts) if verdicts is not None else ""
    head = f"Finding 5 {verdict}" if verdict else "Finding 5"
    figure.suptitle(
        f"{head}: does a layer tell the category better than the words alone?"
        + (f"\n{counted[0].upper() + counted[1:]}" if counted else "")
    )
    return figure


def signature_units_depth(units: pd.DataFrame) -> plt.Figure:
    """Per model, the share of a layer's units that are category-selective, by relative depth, with the
    label-permutation null (up to its 95% quantile) and, where the run has one, the random-weights copy's share
    (dashed): what word identity and an untrained network of the same architecture already give."""
    if "selective" not in units:
        return _note_figure(str(units.iloc[0, 0]))
    figure, axis = plt.subplots(figsize=(9, 4.6), layout="constrained")
    for index, (model, table) in enumerate(units.groupby("model", sort=False)):
        color = sns.color_palette("tab10")[index % 10]
        axis.plot(table["relative_depth"], table["share"], marker="o", markersize=3, color=color, label=model)
        if "random_copy_selective" in table and table["random_copy_selective"].notna().any():
            axis.plot(
                table["relative_depth"], table["random_copy_selective"] / table["units"], color=color, linestyle="--"
            )
        axis.fill_between(
            table["relative_depth"], 0, table["null_q95"] / table["units"], color=color, alpha=0.15, linewidth=0
        )
    axis.set_xlabel("relative depth (0 = embeddings)")
    axis.set_ylabel("share of units selective")
    axis.set_title(
        "Category-selective units (|d| >= 0.8, FDR 5%)\nbands: permutation null up to its 95% quantile; dashed: "
        "random-weights copy"
    )
    axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return figure


def signature_figures(tables: dict[str, pd.DataFrame], verdict: str = "") -> dict[str, plt.Figure]:
    """All of ``SIGNATURE_FIGURES`` from notebook 08's tables; finding 5's key figure says each model's verdict and
    the run's (``verdict``)."""
    tables = {name: rounded_for_drawing(table) for name, table in tables.items()}
    result = {
        "signature_probe_depth": signature_probe_depth(
            tables["signature_probes"], tables.get("signature_verdicts"), verdict
        ),
        "signature_units_depth": signature_units_depth(tables["signature_units"]),
    }
    assert tuple(result) == SIGNATURE_FIGURES
    return result
