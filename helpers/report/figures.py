"""The study's figures. Each function takes a tidy table and returns a matplotlib Figure;
``save_figure`` writes it to figures/ as PNG and SVG, naming the notebook that made it."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from helpers.base import code, paths, store
from helpers.study import CATEGORIES, reproduction
from helpers.study.outputs import FINDINGS_FIGURES, SIGNATURE_FIGURES, STUDY_FIGURES
from helpers.study.tables import PAPER_METRICS, finite_only

plt.rcParams["svg.hashsalt"] = "neural-activation-compendium"  # stable SVG ids: reruns give identical files

LABELS = {
    "final_activation": "final activation $A_f$",
    "attention_entropy": "attention entropy $H_{att}$ (nats)",
    "max_sparsity": "max sparsity $S_{max}$",
    "attention_entropy_normalized": "row-normalised attention entropy",
    "n_tokens": "tokens",
}


LAYER_STATISTICS: dict[str, tuple[str, str]] = {
    "near_zero_0.01": ("Share of hidden-state entries with |h| < 0.01", "fraction of entries (0-1)"),
    "near_zero_relative_0.01": (
        "Share of entries with |h| < 0.01 x the layer's SD",
        "fraction of entries (0-1)",
    ),
    "hoyer": ("Hoyer sparsity of each token's hidden vector", "Hoyer sparsity (0 = even, 1 = one entry)"),
    "attention_entropy": ("Attention entropy, mean over heads", "nats (sum over query rows)"),
    "attention_entropy_normalized": ("Row-normalised attention entropy", "entropy / log(keys) (0-1)"),
}
"""Per-layer statistic -> (panel title in words, y-axis label with its unit)."""


def display_name(model: str) -> str:
    """A model's display name (``MiniLM-L6`` for ``minilm-l6``), or the name itself when the registry lacks it."""
    from helpers.core.registry import UnknownModelError, resolve

    try:
        return resolve(model).display_name
    except (UnknownModelError, OSError):
        return model


CATEGORY_COLOURS: dict[str, tuple[float, float, float]] = dict(
    zip(CATEGORIES, [sns.color_palette("tab20", 20)[i] for i in (*range(0, 20, 2), 1, 5)], strict=True)
)
"""One fixed colour per category, the same in every figure (10 dark tab20 shades, then 2 light ones)."""

ANNOTATION_DIGITS = 3
"""Significant digits of every number written into a heatmap cell."""


def _drawn(table: pd.DataFrame) -> pd.DataFrame:
    """What a figure draws: the data read at measurement precision, then rounded like the text outputs,
    so float noise between machines changes no pixel (``helpers.base.store``)."""
    return store.round_significant(store.at_measurement_precision(table))


def study_figures(
    tables: dict[str, pd.DataFrame], metrics: pd.DataFrame, layers: pd.DataFrame
) -> dict[str, plt.Figure]:
    """All of ``STUDY_FIGURES`` from a run's tables, tidy metrics and per-layer table (finite prompts only)."""
    # figures draw the data rounded like the text outputs, so float noise between machines changes no pixel
    tables = {name: _drawn(table) for name, table in tables.items()}
    metrics, layers = _drawn(finite_only(metrics)), _drawn(layers)
    cells = tables["complete_results"]
    result = {f"heatmap_{metric}": category_heatmap(cells, metric) for metric in PAPER_METRICS}
    result |= {f"heatmap_{metric}_by_model": category_heatmap(cells, metric, by_model=True) for metric in PAPER_METRICS}
    result["architecture_comparison"] = architecture_comparison(metrics)
    result["layer_profiles"] = layer_profiles(layers)
    result["entropy_vs_tokens"] = entropy_vs_tokens(metrics)
    result["category_ranking_attention_entropy"] = category_ranking(tables["published_vs_reproduced_categories"])
    assert tuple(result) == STUDY_FIGURES
    return result


DRAWING_CODE: str = hashlib.sha256(
    f"{code.code_fingerprint([__name__])} matplotlib {matplotlib.__version__} seaborn {sns.__version__}".encode()
).hexdigest()[:16]
"""What draws the figures: the fingerprint of this module's code and everything it runs (``helpers.base.code``),
with the drawing libraries' versions. Recorded in every figure and its run's record: other code draws again."""
SOURCE = "helpers/report/figures.py"
"""The drawing code as every figure names it, before its hash (figures drawn before the package layout name
``helpers/figures.py``)."""


def save_figure(figure: plt.Figure, name: str, notebook: str, folder: Path = paths.FIGURES) -> list[Path]:
    """Save ``figure`` as ``<name>.png`` and ``<name>.svg`` atomically; both record the notebook and the code."""
    written = []
    for suffix in ("png", "svg"):
        path = folder / f"{name}.{suffix}"
        metadata = {"Title": name, "Description": f"made by {notebook}", "Source": f"{SOURCE} {DRAWING_CODE}"}
        if suffix == "svg":
            metadata["Date"] = None  # no timestamp: reruns give identical files
        with store.atomic_path(path) as temporary:
            figure.savefig(temporary, format=suffix, dpi=150, bbox_inches="tight", metadata=metadata)
        written.append(path)
    return written


def drawn_by(path: Path) -> str:
    """The code hash a saved PNG records (``DRAWING_CODE`` when this code drew it); empty if none or unreadable."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return str(image.info.get("Source", "")).rpartition(" ")[2]  # "<source file> <hash>"
    except OSError:
        return ""


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


SCALE_RATIO = 10.0
"""Rows of a heatmap whose largest |values| differ by more than this factor are not coloured on one scale."""


def rows_differ_in_scale(grid: pd.DataFrame, ratio: float = SCALE_RATIO) -> bool:
    """Whether the rows' largest |values| differ by more than ``ratio``: one colour bar would hide the small rows."""
    scales = grid.abs().max(axis=1).to_numpy(dtype=float)
    scales = scales[np.isfinite(scales) & (scales > 0)]
    return bool(scales.size > 1 and scales.max() / scales.min() > ratio)


def category_heatmap(cells: pd.DataFrame, metric: str, by_model: bool = False) -> plt.Figure:
    """Model x category heatmap of one of the paper's metrics (``cells``: the complete results table).

    Every cell is annotated with its raw value, each row to the decimals that give its largest
    value ``ANNOTATION_DIGITS`` significant digits (``annotations``); a row of tiny or huge values
    is written in units of a power of ten named in its label.
    ``by_model``: colour by the z-score within each model (row), so differences between
    categories show even where models differ in scale; the annotations stay raw values.
    Without ``by_model``, rows that differ in scale by more than ``SCALE_RATIO`` are each coloured on
    their own range (0 = the row's lowest, 1 = its highest; the colour bar and the title say so), so
    a row of 10^-3 values is not drawn as uniformly dark beside a row of values near 1.
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
    elif rows_differ_in_scale(grid):
        low, high = grid.min(axis=1), grid.max(axis=1)
        colours = grid.sub(low, axis=0).div((high - low).replace(0, np.nan), axis=0).fillna(0.5)
        style = {"cmap": "viridis", "vmin": 0.0, "vmax": 1.0}
        label = "within each row: 0 = lowest, 1 = highest"
        title = f"{LABELS[metric]}: mean per model and category"
        title += "\n(rows differ in scale: each row is coloured on its own range)"
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
    layers: pd.DataFrame,
    statistics: tuple[str, ...] = ("near_zero_0.01", "attention_entropy"),
    title: str = "Per-layer profiles: mean over the run's prompts",
    columns: int = 2,
) -> plt.Figure:
    """Mean over prompts of per-layer statistics against relative depth, one line per model (display names).

    One panel per statistic, titled in words with its unit (``LAYER_STATISTICS``), ``columns``
    panels a row; the legend sits below the panels.
    """
    rows = math.ceil(len(statistics) / columns)
    columns = min(columns, len(statistics))
    figure, axes = plt.subplots(
        rows, columns, figsize=(5.2 * columns, 3.6 * rows + 0.8), squeeze=False, layout="constrained"
    )
    for axis, statistic in zip(axes.flat, statistics, strict=False):
        selected = layers[layers["statistic"] == statistic]
        profile = selected.groupby(["model", "layer"], sort=False)["value"].mean().reset_index()
        for model, rows_of in profile.groupby("model", sort=False):
            depth = rows_of["layer"] / max(rows_of["layer"].max(), 1)
            axis.plot(depth, rows_of["value"], marker="o", markersize=3, label=display_name(str(model)))
        label, unit = LAYER_STATISTICS.get(statistic, (statistic.replace("_", " "), "value"))
        axis.set_xlabel("relative depth (0 = embedding output, 1 = last layer)")
        axis.set_ylabel(unit)
        axis.set_title(label, fontsize=10)
    for axis in list(axes.flat)[len(statistics) :]:
        axis.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncol=min(4, max(1, len(labels))), frameon=False)
    figure.suptitle(title)
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


def save_figures(
    figures: dict[str, plt.Figure], folder: Path, notebook: str, check: reproduction.Check | None = None
) -> list[Path]:
    """Save every figure (PNG and SVG) into ``folder`` and close it.

    With a ``check``, a committed figure is kept (its time renewed) when its bytes are those its run recorded,
    drawn by this code from the data its tables hold now (``reproduction.Check.figure``); otherwise it is drawn
    again. Each decision is recorded in the check.
    """
    written = []
    for name, figure in figures.items():
        files = [folder / f"{name}.{suffix}" for suffix in ("png", "svg")]
        comparison = check.figure(name, files, DRAWING_CODE) if check is not None else None
        if comparison is None or not comparison.reproduced:
            save_figure(figure, name, notebook, folder)
        if check is not None and comparison is not None:
            check.add(comparison, files)
        written.extend(files)
        plt.close(figure)
    return written


# --- notebook 06: the findings ----------------------------------------------------------------------


def _note_figure(text: str) -> plt.Figure:
    figure, axis = plt.subplots(figsize=(8, 1.5))
    axis.axis("off")
    axis.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    return figure


def finding1_categories(categories: pd.DataFrame, math: str = "mathematical_reasoning") -> plt.Figure:
    """Per model: each category's mean H_att at matched length (95% interval) and raw (hollow), math in red.

    ``categories``: the ``finding1_categories`` table (``helpers.stats.findings``), or a one-column note.
    """
    if "matched_length_mean" not in categories:
        return _note_figure(str(categories.iloc[0, 0]))
    models = list(dict.fromkeys(categories["model"]))
    figure, axes = plt.subplots(1, len(models), figsize=(4.6 * len(models), 5.2), squeeze=False, sharey=True)
    for axis, model in zip(axes[0], models, strict=True):
        rows = (
            categories[categories["model"] == model]
            .set_index("category")
            .reindex([c for c in CATEGORIES if c in set(categories["category"])])
        )
        position = np.arange(len(rows))[::-1]
        colours = ["crimson" if c == math else "tab:blue" for c in rows.index]
        axis.errorbar(
            rows["matched_length_mean"], position, xerr=1.96 * rows["matched_length_se"], fmt="none", ecolor=colours
        )
        axis.scatter(rows["matched_length_mean"], position, c=colours, zorder=3, label="at matched length (95% CI)")
        axis.scatter(rows["raw_mean"], position, facecolors="none", edgecolors=colours, label="raw mean")
        for y, (_, row) in zip(position, rows.iterrows(), strict=True):
            axis.annotate(
                f"rank {row['rank_set_low']}-{row['rank_set_high']}",
                (1.0, y),
                xycoords=("axes fraction", "data"),
                xytext=(4, 0),
                textcoords="offset points",
                va="center",
                fontsize=7,
            )
        axis.set_yticks(position, rows.index)
        axis.set_title(model)
        axis.set_xlabel("attention entropy H_att (nats)")
    axes[0][0].legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize=8, ncol=2, frameon=False)
    figure.suptitle("Finding 1: category means of attention entropy at matched prompt length (rank sets at right)")
    figure.tight_layout()
    return figure


def sparsity_variants(variants: pd.DataFrame, about: tuple[float, float]) -> plt.Figure:
    """Decoder/encoder sparsity ratio under every sparsity measure: each pair (95% interval) and, where
    testable, the architecture ratio; the paper's 'about 7x' band shaded; each variant's verdict at right.

    Markers are hollow and the interval bars drawn over them with caps, so an interval narrower than a
    marker still shows as a bar; the legend sits right below the axis label.
    """
    measures = list(dict.fromkeys(variants["measure"]))
    comparisons = list(dict.fromkeys(variants["comparison"]))
    figure, axis = plt.subplots(figsize=(11, 0.55 * len(measures) + 2.0), layout="constrained")
    axis.axvspan(*about, color="crimson", alpha=0.12, label=f"'about' band ({about[0]:.3g}-{about[1]:.3g})")
    axis.axvline(1.0, color="grey", linestyle=":", label="no difference")
    offsets = np.linspace(-0.25, 0.25, len(comparisons)) if len(comparisons) > 1 else [0.0]
    for offset, comparison in zip(offsets, comparisons, strict=True):
        rows = variants[variants["comparison"] == comparison].set_index("measure").reindex(measures)
        y = len(measures) - 1 - np.arange(len(measures)) + offset
        finite = np.isfinite(rows["ratio"].to_numpy(float))
        if not finite.any():
            continue
        error = [(rows["ratio"] - rows["low"]).to_numpy(float), (rows["high"] - rows["ratio"]).to_numpy(float)]
        axis.errorbar(rows["ratio"], y, xerr=error, fmt="D" if comparison.startswith("decoders") else "o",
                      markersize=5, markerfacecolor="none", elinewidth=2.2, capsize=5, capthick=1.6,
                      label=f"{comparison} (95% interval)", zorder=3)  # fmt: skip
    overall = variants[variants["comparison"].str.startswith("decoders")].set_index("measure").reindex(measures)
    for k, measure in enumerate(measures):
        verdict = overall.loc[measure, "verdict_sparser"] if "verdict_sparser" in overall else ""
        verdict = "" if pd.isna(verdict) else str(verdict)
        axis.annotate(verdict, (1.0, len(measures) - 1 - k), xycoords=("axes fraction", "data"),
                      xytext=(6, 0), textcoords="offset points", va="center", fontsize=8)  # fmt: skip
    axis.set_yticks(len(measures) - 1 - np.arange(len(measures)), measures)
    axis.set_xscale("log")
    axis.set_xlabel("decoder / encoder mean sparsity (log scale); bars: 95% intervals, some narrower than a marker")
    axis.set_title("Finding 2 under every sparsity measure (verdict of 'sparser' at right)")
    figure.legend(loc="outside lower center", fontsize=8, ncol=2, frameon=False)
    return figure


def finding1_length_contrasts(curves: pd.DataFrame, math: str = "mathematical_reasoning") -> plt.Figure:
    """Per model: math minus each other category across the token range every category covers (95% pointwise
    intervals shaded), from finding 1's primary model on the summed scale.

    ``curves``: the ``finding1_length_contrasts`` table (``model, category, n_tokens, difference, lower, upper``)
    or a one-column note.
    """
    if "difference" not in curves:
        return _note_figure(str(curves.iloc[0, 0]))
    models = list(dict.fromkeys(curves["model"]))
    columns = min(4, len(models))
    rows = -(-len(models) // columns)  # ceil: the parameter `math` hides the module here
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False, sharex=False)
    for axis, model in zip(axes.flat, models, strict=False):
        frame = curves[curves["model"] == model]
        for category, group in frame.groupby("category", sort=False):
            colour = CATEGORY_COLOURS.get(category, "grey")
            axis.plot(group["n_tokens"], group["difference"], color=colour, linewidth=1, label=category)
            axis.fill_between(group["n_tokens"], group["lower"], group["upper"], color=colour, alpha=0.08)
        axis.axhline(0, color="black", linewidth=0.8)
        axis.set_title(model, fontsize=10)
        axis.set_xlabel("prompt length (tokens)")
        axis.set_ylabel("math minus category, H_att (nats)")
    for axis in list(axes.flat)[len(models) :]:
        axis.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    figure.suptitle("Finding 1 by length: above 0, math has the higher entropy at that length")
    figure.tight_layout(rect=(0, 0.12 if rows == 1 else 0.08, 1, 0.95))
    return figure


def sparsity_layer_profiles(layers: pd.DataFrame) -> plt.Figure:
    """Per-layer sparsity profiles: Hoyer, |h| < 0.01 and |h| < 0.01 x the layer's SD, by relative depth
    (a grid of two panels a row, so the figure stays readable at a report's width)."""
    return layer_profiles(
        layers,
        statistics=("hoyer", "near_zero_0.01", "near_zero_relative_0.01"),
        title="Sparsity per layer under three measures: mean over the run's prompts",
    )


def findings_figures(tables: dict[str, pd.DataFrame], layers: pd.DataFrame, about: tuple[float, float]) -> dict:
    """All of ``FINDINGS_FIGURES`` from notebook 06's tables and the run's per-layer table."""
    tables = {name: _drawn(table) for name, table in tables.items()}
    layers = _drawn(layers)
    result = {
        "finding1_categories": finding1_categories(tables["finding1_categories"]),
        "finding1_length_contrasts": finding1_length_contrasts(tables["finding1_length_contrasts"]),
        "sparsity_variants": sparsity_variants(tables["sparsity_variants"], about),
        "sparsity_layer_profiles": sparsity_layer_profiles(layers),
    }
    assert tuple(result) == FINDINGS_FIGURES
    return result


# --- notebook 08: activation signatures (finding 5) ---------------------------------------------------


def signature_probe_depth(probes: pd.DataFrame) -> plt.Figure:
    """Per model, probe accuracy (surface features + one layer's mean-pooled vectors) by relative depth, with the
    surface-only baseline (band), the control task (random labels of the same class sizes) and chance.

    ``probes``: the ``signature_probes`` table (``helpers.stats.findings.signatures.layer_probes`` per model).
    """
    if "accuracy" not in probes:
        return _note_figure(str(probes.iloc[0, 0]))
    models = list(dict.fromkeys(probes["model"]))
    columns = min(4, len(models))
    rows = math.ceil(len(models) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False, sharey=True)
    for axis, model in zip(axes.flat, models, strict=False):
        table = probes[probes["model"] == model]
        depth = table["relative_depth"]
        surface = float(table["surface_accuracy"].iloc[0])
        axis.axhspan(surface - 0.01, surface + 0.01, color="tab:orange", alpha=0.35, label="surface only")
        axis.fill_between(
            depth,
            table["control_surface_accuracy"],
            table["control_accuracy"],
            color="tab:gray",
            alpha=0.35,
            label="control task",
        )
        axis.axhline(float(table["chance"].iloc[0]), color="black", linestyle=":", linewidth=1, label="chance")
        axis.plot(depth, table["accuracy"], marker="o", markersize=3, color="tab:blue", label="surface + layer")
        axis.set_title(model)
        axis.set_xlabel("relative depth (0 = embeddings)")
        axis.set_ylim(0, 1)
    for axis in axes.flat[len(models) :]:
        axis.axis("off")
    axes[0, 0].set_ylabel("cross-validated accuracy")
    axes[0, 0].legend(fontsize=7, loc="upper left")
    figure.tight_layout()
    return figure


def signature_units_depth(units: pd.DataFrame) -> plt.Figure:
    """Per model, the share of a layer's units that are category-selective, by relative depth, with the
    label-permutation null (mean, and its 95% quantile as the top of the band)."""
    if "selective" not in units:
        return _note_figure(str(units.iloc[0, 0]))
    figure, axis = plt.subplots(figsize=(7, 4))
    for index, (model, table) in enumerate(units.groupby("model", sort=False)):
        color = sns.color_palette("tab10")[index % 10]
        axis.plot(table["relative_depth"], table["share"], marker="o", markersize=3, color=color, label=model)
        axis.fill_between(
            table["relative_depth"], 0, table["null_q95"] / table["units"], color=color, alpha=0.15, linewidth=0
        )
    axis.set_xlabel("relative depth (0 = embeddings)")
    axis.set_ylabel("share of units selective")
    axis.set_title("Category-selective units (|d| >= 0.8, FDR 5%); bands: permutation null up to its 95% quantile")
    axis.legend(fontsize=7)
    figure.tight_layout()
    return figure


def signature_figures(tables: dict[str, pd.DataFrame]) -> dict[str, plt.Figure]:
    """All of ``SIGNATURE_FIGURES`` from notebook 08's tables."""
    tables = {name: _drawn(table) for name, table in tables.items()}
    result = {
        "signature_probe_depth": signature_probe_depth(tables["signature_probes"]),
        "signature_units_depth": signature_units_depth(tables["signature_units"]),
    }
    assert tuple(result) == SIGNATURE_FIGURES
    return result
