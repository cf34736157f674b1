"""The figures' common ground and the study's own figures: style, labels, the drawing-code stamp, saving under the
reproduction check (``save_figure``, ``save_figures``: PNG and SVG in figures/, naming the notebook that made it),
and notebook 04's figures. The findings' figures are in ``finding_figures``."""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from helpers.base import code, paths, store
from helpers.study import CATEGORIES, reproduction
from helpers.study.outputs import STUDY_FIGURES
from helpers.study.tables import PAPER_METRICS, finite_only

plt.rcParams["svg.hashsalt"] = "neural-activation-compendium"  # stable SVG ids: reruns give identical files
plt.rcParams.update(
    {"font.size": 10, "axes.titlesize": 10.5, "axes.labelsize": 10, "xtick.labelsize": 9.5, "ytick.labelsize": 9.5,
     "legend.fontsize": 9.5, "legend.title_fontsize": 9.5, "figure.titlesize": 12}
)  # fmt: skip

SMALLEST_TEXT = 9.0
"""No text in a figure is smaller than this (points)."""
WIDEST = 12.0
"""No figure is wider than this (inches; 1800 px at 150 dpi), so a figure shown 1100 px wide (a page at 1400 px)
writes its smallest text at 9 x 1100 / (12 x 72) px = 11.5 CSS px or more, about 9 pt on screen."""

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


def category_order(present: Iterable[object]) -> list[str]:
    """The categories present, the paper's 12 in their order first, then a prompt set's own (sorted)."""
    found = {str(c) for c in present}
    return [c for c in CATEGORIES if c in found] + sorted(found - set(CATEGORIES))


def category_colours(categories: list[str]) -> dict[str, tuple[float, float, float]]:
    """``CATEGORY_COLOURS`` for the paper's categories; a prompt set's own get the other tab20 shades in turn."""
    spare = [sns.color_palette("tab20", 20)[i] for i in range(20) if i not in (*range(0, 20, 2), 1, 5)]
    own = [c for c in categories if c not in CATEGORY_COLOURS]
    return {**CATEGORY_COLOURS, **{c: spare[i % len(spare)] for i, c in enumerate(own)}}


ANNOTATION_DIGITS = 3
"""Significant digits of every number written into a heatmap cell."""


def rounded_for_drawing(table: pd.DataFrame) -> pd.DataFrame:
    """What a figure draws: the data read at measurement precision, then rounded like the text outputs,
    so float noise between machines changes no pixel (``helpers.base.store``)."""
    return store.round_significant(store.at_measurement_precision(table))


def study_figures(
    tables: dict[str, pd.DataFrame], metrics: pd.DataFrame, layers: pd.DataFrame
) -> dict[str, plt.Figure]:
    """All of ``STUDY_FIGURES`` from a run's tables, tidy metrics and per-layer table (finite prompts only)."""
    # figures draw the data rounded like the text outputs, so float noise between machines changes no pixel
    tables = {name: rounded_for_drawing(table) for name, table in tables.items()}
    metrics, layers = rounded_for_drawing(finite_only(metrics)), rounded_for_drawing(layers)
    cells = tables["complete_results"]
    result = {f"heatmap_{metric}": category_heatmap(cells, metric) for metric in PAPER_METRICS}
    result |= {f"heatmap_{metric}_by_model": category_heatmap(cells, metric, by_model=True) for metric in PAPER_METRICS}
    result["architecture_comparison"] = architecture_comparison(metrics)
    result["layer_profiles"] = layer_profiles(layers)
    result["entropy_vs_tokens"] = entropy_vs_tokens(metrics)
    result["category_ranking_attention_entropy"] = category_ranking(tables["published_vs_reproduced_categories"])
    assert tuple(result) == STUDY_FIGURES
    return result


DRAWING_MODULES = (__name__, "helpers.report.finding_figures")
"""The modules that draw the study's figures: this one (the study's, notebook 04) and the findings' (06, 08)."""
DRAWING_CODE: str = hashlib.sha256(
    f"{code.code_fingerprint(DRAWING_MODULES)} matplotlib {matplotlib.__version__} seaborn {sns.__version__}".encode()
).hexdigest()[:16]
"""What draws the figures: the fingerprint of the drawing modules' code and everything they run
(``helpers.base.code``), with the drawing libraries' versions. Recorded in every figure and its run's record: other
code draws again."""
SOURCE = "helpers/report/figures.py"
"""The drawing code as every figure names it, before its hash (``DRAWING_CODE``, which covers every module of
``DRAWING_MODULES``)."""


def save_figure(figure: plt.Figure, name: str, notebook: str, folder: Path = paths.FIGURES) -> list[Path]:
    """Save ``figure`` as ``<name>.png`` and ``<name>.svg`` atomically; both record the notebook and the code."""
    written = []
    for suffix in ("png", "svg"):
        path = folder / f"{name}.{suffix}"
        metadata: dict[str, str | None] = {
            "Title": name,
            "Description": f"made by {notebook}",
            "Source": f"{SOURCE} {DRAWING_CODE}",
        }
        if suffix == "svg":
            metadata["Date"] = None  # no timestamp: reruns give identical files
        else:
            metadata["Smallest text"] = f"{smallest_text(figure):g} pt"  # the browser tests read it
        with store.atomic_path(path) as temporary:
            figure.savefig(temporary, format=suffix, dpi=150, bbox_inches="tight", metadata=metadata)
        written.append(path)
    return written


def smallest_text(figure: plt.Figure) -> float:
    """The size (points) of the smallest visible, non-empty text of ``figure``: titles, labels, ticks, legends,
    annotations."""
    from matplotlib.text import Text

    figure.canvas.draw()  # tick labels exist once drawn
    sizes = [
        float(text.get_fontsize())
        for text in figure.findobj(Text)
        if text.get_visible() and text.get_text().strip() and (text.axes is None or text.axes.get_visible())
    ]
    return min(sizes) if sizes else 0.0


def category_label(category: str) -> str:
    """A category as words: 'mathematical reasoning'."""
    return str(category).replace("_", " ")


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


def annotation_texts(values: np.ndarray, digits: int = ANNOTATION_DIGITS) -> tuple[int, list[str]]:
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
    value ``ANNOTATION_DIGITS`` significant digits (``annotation_texts``); a row of tiny or huge values
    is written in units of a power of ten named in its label.
    ``by_model``: colour by the z-score within each model (row), so differences between
    categories show even where models differ in scale; the annotations stay raw values.
    Without ``by_model``, rows that differ in scale by more than ``SCALE_RATIO`` are each coloured on
    their own range (0 = the row's lowest, 1 = its highest; the colour bar and the title say so), so
    a row of 10^-3 values is not drawn as uniformly dark beside a row of values near 1.
    """
    column = PAPER_METRICS[metric]
    grid = cells.pivot_table(index="Model", columns="Category", values=column, sort=False)
    grid = grid[category_order(grid.columns)]
    rows_annotated = [annotation_texts(row.to_numpy()) for _, row in grid.iterrows()]
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
    figure, axes = plt.subplots(figsize=(WIDEST, 0.6 * len(grid) + 2.8))
    sns.heatmap(
        colours.set_axis(rows, axis=0).set_axis([category_label(c) for c in grid.columns], axis=1),
        annot=texts,
        fmt="",
        annot_kws={"fontsize": SMALLEST_TEXT},
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
    figure, axes = plt.subplots(1, 3, figsize=(WIDEST, 4.6))
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
        axis.set_title(label)
    for axis in list(axes.flat)[len(statistics) :]:
        axis.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncol=min(4, max(1, len(labels))), frameon=False)
    figure.suptitle(title)
    return figure


def panel_grid(count: int, columns: int = 4) -> tuple[int, int]:
    """(rows, columns) of a grid of ``count`` panels, at most ``columns`` a row."""
    columns = max(1, min(columns, count))
    return math.ceil(count / columns), columns


def entropy_vs_tokens(metrics: pd.DataFrame) -> plt.Figure:
    """Attention entropy against prompt length, one panel per model (four a row), coloured by category (legend
    below), with r."""
    models = list(dict.fromkeys(metrics["display_name"]))
    categories = category_order(metrics["category"])
    colours = category_colours(categories)
    rows, columns = panel_grid(len(models))
    figure, axes = plt.subplots(rows, columns, figsize=(WIDEST, 2.9 * rows + 1.3), squeeze=False, layout="constrained")
    for axis, model in zip(axes.flat, models, strict=False):
        selected = metrics[metrics["display_name"] == model]
        sns.scatterplot(
            data=selected,
            x="n_tokens",
            y="attention_entropy",
            hue="category",
            hue_order=categories,
            palette=colours,
            ax=axis,
            s=14,
            legend=False,
        )
        r = np.corrcoef(selected["n_tokens"], selected["attention_entropy"])[0, 1] if len(selected) > 2 else np.nan
        axis.set_title(f"{model}: r = {r:.2f}")
        axis.set_xlabel(LABELS["n_tokens"])
        axis.set_ylabel("H_att (nats)")
    for axis in list(axes.flat)[len(models) :]:
        axis.set_visible(False)
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=colours[c], markersize=6) for c in categories]
    labels = [category_label(c) for c in categories]
    figure.legend(handles, labels, loc="outside lower center", ncol=min(4, len(categories)), frameon=False)
    figure.suptitle("Attention entropy grows with prompt length (it sums over query rows)")
    return figure


def category_ranking(comparison: pd.DataFrame, metric: str = "Attention_Entropy") -> plt.Figure:
    """Published vs reproduced category means of one metric (each scaled to its own maximum)."""
    figure, axis = plt.subplots(figsize=(8, 4.5))
    data = comparison[comparison["metric"] == metric].copy()
    for column, label in (("published", "published (paper's six models)"), ("reproduced", "reproduced (this run)")):
        data[label] = data[column] / data[column].abs().max()
    long = data.melt(id_vars="Category", value_vars=[c for c in data.columns if "(" in c], var_name="source")
    sns.barplot(data=long, y="Category", x="value", hue="source", ax=axis, order=category_order(long["Category"]))
    sns.move_legend(axis, "lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, title=None, frameon=False)
    axis.set_xlabel(f"{metric.replace('_', ' ').lower()}, scaled to the largest category")
    axis.set_ylabel("")
    figure.tight_layout()
    return figure


def save_figures(
    figures: dict[str, plt.Figure], folder: Path, notebook: str, check: reproduction.Check | None = None
) -> list[Path]:
    """Save every figure (PNG and SVG) into ``folder`` and close it.

    With a ``check``, a committed figure whose record matches (its bytes, this drawing code, its tables' data:
    ``reproduction.Check.figure``) is drawn again all the same, never trusted on its record: it is kept only if this
    code draws the same picture (``reproduction.same_picture``, on the PNG) and the same drawing
    (``reproduction.same_drawing``, on the SVG), else rewritten; any
    other committed figure is drawn again. Each decision is recorded in the check.
    """
    written = []
    for name, figure in figures.items():
        files = [folder / f"{name}.{suffix}" for suffix in ("png", "svg")]
        comparison = check.figure(name, files, DRAWING_CODE) if check is not None else None
        if comparison is not None and comparison.reproduced:
            with tempfile.TemporaryDirectory(dir=folder) as scratch:
                png, svg = save_figure(figure, name, notebook, Path(scratch))
                if not reproduction.same_picture(png, files[0]):
                    comparison.note = "not the picture this code draws from this run's data: drawn again"
                elif not reproduction.same_drawing(svg, files[1]):
                    comparison.note = "its SVG is not the drawing this code makes from this run's data: drawn again"
                if comparison.note:
                    comparison.action = "written"
                    for new, committed in zip((png, svg), files, strict=True):
                        os.replace(new, committed)
        else:
            save_figure(figure, name, notebook, folder)
        if check is not None and comparison is not None:
            check.add(comparison, files)
        written.extend(files)
        plt.close(figure)
    return written
