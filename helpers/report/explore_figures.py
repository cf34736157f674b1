"""The explorer's figures of one prompt: per-layer profiles, per-head entropy, attention patterns (one head, every
head, the whole model), where the prompt sits among the study's prompts, and its category probabilities. Each takes
``explore_measure``'s ``PromptAnalysis``; ``helpers.report.explore`` shows them."""

from __future__ import annotations

import functools
import math

import numpy as np
import pandas as pd
from matplotlib import font_manager
from matplotlib.figure import Figure
from matplotlib.ft2font import FT2Font

from helpers.report.explore_measure import (
    CONTEXT_METRICS,
    LENGTH_BANDS,
    Context,
    PromptAnalysis,
    ordinal,
    percentile,
)
from helpers.report.figures import annotation_texts

PROMPT_COLOUR = "#d62728"
STUDY_COLOUR = "#7f7f7f"


# --- figures -----------------------------------------------------------------------------------------


class ExplorerFigure(Figure):
    """A matplotlib Figure outside pyplot (never shown twice, nothing to close) that displays itself as PNG."""

    def _repr_png_(self) -> bytes:
        import io

        buffer = io.BytesIO()
        self.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        return buffer.getvalue()


@functools.lru_cache(maxsize=1)
def _font_characters() -> frozenset[int]:
    """Code points the default matplotlib font can draw."""
    path = font_manager.findfont(font_manager.FontProperties())
    return frozenset(FT2Font(path).get_charmap())


def drawable(label: str) -> str:
    """``label`` with characters the figure font lacks shown as '□' (no missing-glyph warnings)."""
    known = _font_characters()
    return "".join(c if ord(c) in known or c.isspace() else "□" for c in label)


def _tick_labels(analysis: PromptAnalysis, limit: int = 60) -> tuple[list[int], list[str]]:
    """Tick positions and token labels; every k-th one when there are more than ``limit`` tokens."""
    step = max(1, math.ceil(analysis.n_tokens / limit))
    positions = list(range(0, analysis.n_tokens, step))
    return positions, [
        drawable(f"{analysis.labels[i]}" if step == 1 else f"{i}:{analysis.labels[i]}") for i in positions
    ]


def _title(analysis: PromptAnalysis) -> str:
    return f"{analysis.display_name}, {analysis.n_tokens} tokens"


def profile_figure(analysis: PromptAnalysis, study_layers: pd.DataFrame | None = None) -> Figure:
    """Per-layer attention entropy (raw and row-normalised) and near-zero fraction of the prompt.

    With ``study_layers`` (the run's per-layer table of the same model), the study's mean and
    10-90% range per layer are drawn behind the prompt.
    """
    panels = {
        "attention_entropy": "attention entropy (nats, sum over rows)",
        "attention_entropy_normalized": "row-normalised attention entropy",
        "near_zero_0.01": "fraction of |h| < 0.01 (sparsity)",
    }
    figure = ExplorerFigure(figsize=(13, 3.6), layout="constrained")
    axes = figure.subplots(1, len(panels))
    for axis, (statistic, label) in zip(axes, panels.items(), strict=True):
        if study_layers is not None:
            selected = study_layers[study_layers["statistic"] == statistic]
            summary = selected.groupby("layer")["value"].describe(percentiles=[0.1, 0.9])
            if len(summary):
                axis.fill_between(
                    summary.index, summary["10%"], summary["90%"], color=STUDY_COLOUR, alpha=0.2, linewidth=0
                )
                axis.plot(summary.index, summary["mean"], color=STUDY_COLOUR, label="study prompts: mean, 10-90%")
        mine = analysis.layers[analysis.layers["statistic"] == statistic].sort_values("layer")
        axis.plot(mine["layer"], mine["value"], color=PROMPT_COLOUR, marker="o", markersize=3, label="this prompt")
        axis.set_xlabel("layer (0 = embedding output)" if statistic.startswith("near_zero") else "layer")
        axis.set_title(label, fontsize=10)
        axis.xaxis.get_major_locator().set_params(integer=True)
        axis.ticklabel_format(axis="y", useOffset=False)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncol=2, fontsize=8, frameon=False)
    figure.suptitle(f"Per-layer profiles: {_title(analysis)}")
    return figure


def head_heatmap(analysis: PromptAnalysis) -> Figure:
    """Layer x head attention entropy of the prompt, heads in numeric order: raw and row-normalised."""
    grids = {
        "attention entropy (nats, sum over query rows)": analysis.head_entropy(),
        "row-normalised entropy (1 = uniform)": analysis.head_entropy_normalised(),
    }
    height = max(3.0, 0.32 * analysis.n_layers + 1.6)
    width = max(10.0, 2 * (0.55 * analysis.n_heads + 2.2))
    figure = ExplorerFigure(figsize=(width, height), layout="constrained")
    axes = figure.subplots(1, 2)
    annotate = analysis.n_layers * analysis.n_heads <= 160
    for axis, (label, grid) in zip(axes, grids.items(), strict=True):
        image = axis.imshow(grid.to_numpy(), aspect="auto", cmap="viridis", interpolation="nearest")
        axis.set_xticks(range(grid.shape[1]), [str(h) for h in grid.columns])
        axis.set_yticks(range(grid.shape[0]), [str(layer) for layer in grid.index])
        axis.set_xlabel("head")
        axis.set_ylabel("layer")
        axis.set_title(label, fontsize=10)
        figure.colorbar(image, ax=axis, shrink=0.9)
        if annotate:  # one number format for the whole grid (helpers.report.figures.annotation_texts)
            values = grid.to_numpy()
            exponent, texts = annotation_texts(values.ravel())
            middle = np.nanmean(values)
            for (row, column), value in np.ndenumerate(values):
                colour = "black" if value > middle else "white"
                text = texts[row * values.shape[1] + column]
                axis.text(column, row, text, ha="center", va="center", fontsize=7, color=colour)
            if exponent:
                axis.set_title(f"{label} (×10^{exponent})", fontsize=10)
    figure.suptitle(f"Attention entropy per layer and head: {_title(analysis)}")
    return figure


def attention_pattern(analysis: PromptAnalysis, layer: int, head: int, query: int | None = None) -> Figure:
    """The attention map of one layer (1..L) and head (0..H-1): query tokens down, key tokens across.

    ``query`` (a token position) outlines that query's row in red and bolds its label: where the
    chosen token looks.
    """
    _check_selection(analysis, layer, head)
    if query is not None and not 0 <= query < analysis.n_tokens:
        raise ValueError(f"query {query} is out of range: the prompt has tokens 0..{analysis.n_tokens - 1}")
    weights = analysis.attention[layer - 1, head]
    size = min(12.0, max(4.5, 0.28 * analysis.n_tokens + 2.5))
    figure = ExplorerFigure(figsize=(size + 1.2, size), layout="constrained")
    axis = figure.subplots()
    image = axis.imshow(weights, cmap="Blues", vmin=0, vmax=max(float(weights.max()), 1e-9), interpolation="nearest")
    positions, labels = _tick_labels(analysis)
    axis.set_xticks(positions, labels, rotation=90, fontsize=8)
    axis.set_yticks(positions, labels, fontsize=8)
    axis.set_xlabel("key (attended to)")
    axis.set_ylabel("query (attending)")
    if analysis.n_tokens <= 16:
        for (row, column), value in np.ndenumerate(weights):
            if value >= 0.01:
                colour = "white" if value > 0.6 * weights.max() else "black"
                axis.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=7, color=colour)
    if query is not None:  # the chosen query's row, outlined
        from matplotlib.patches import Rectangle

        axis.add_patch(
            Rectangle((-0.5, query - 0.5), analysis.n_tokens, 1.0, fill=False, edgecolor=PROMPT_COLOUR, linewidth=2.2)
        )
        for label in axis.get_yticklabels():
            if label.get_position()[1] == query:
                label.set_fontweight("bold")
                label.set_color(PROMPT_COLOUR)
    entropy = float(analysis.head_entropy().loc[layer, head])
    which = f", query {query} ({drawable(analysis.labels[query])}) outlined" if query is not None else ""
    axis.set_title(
        f"{analysis.display_name}: layer {layer}, head {head} (entropy {entropy:.3g} nats){which}", fontsize=10
    )
    figure.colorbar(image, ax=axis, shrink=0.8, label="attention weight")
    return figure


def head_view(
    analysis: PromptAnalysis,
    layer: int,
    heads: list[int] | None = None,
    query: int | None = None,
    lines_per_query: int = 4,
) -> Figure:
    """One layer's attention as lines from query tokens (left) to key tokens (right), one colour per head.

    Line opacity is the weight; weights below 0.02 are not drawn, nor more than
    ``lines_per_query`` keys per query and head (the heaviest) once the prompt has more than 48
    tokens. ``query`` keeps one query token's lines only (what hovering a token does in
    bertviz's head view). Long prompts label every k-th token.
    """
    from matplotlib.collections import LineCollection

    _check_selection(analysis, layer, 0)
    heads = list(range(analysis.n_heads)) if heads is None else heads
    n = analysis.n_tokens
    height = min(24.0, max(3.5, 0.24 * n + 1.2))
    figure = ExplorerFigure(figsize=(7.5, height), layout="constrained")
    axis = figure.subplots()
    colours = [_head_colour(h, analysis.n_heads) for h in range(analysis.n_heads)]
    queries = np.arange(n) if query is None else np.array([query])
    scale = 0.9 if query is not None else 0.6
    for h in heads:
        weights = analysis.attention[layer - 1, h][queries]  # (queries, keys)
        keep = weights >= 0.02
        if n > 48 and query is None:  # the heaviest keys of each query only
            order = np.argsort(-weights, axis=1)[:, :lines_per_query]
            top = np.zeros_like(keep)
            np.put_along_axis(top, order, True, axis=1)
            keep &= top
        rows, keys = np.nonzero(keep)
        segments = [[(0.0, float(queries[r])), (1.0, float(k))] for r, k in zip(rows, keys, strict=True)]
        alphas = np.minimum(1.0, weights[rows, keys]) * scale
        axis.add_collection(
            LineCollection(segments, colors=[(*colours[h][:3], float(a)) for a in alphas], linewidths=1.6)
        )
    step = max(1, math.ceil(n / 80))
    for i in range(0, n, step):
        label = drawable(analysis.labels[i] if step == 1 else f"{i}:{analysis.labels[i]}")
        axis.text(-0.03, i, label, ha="right", va="center", fontsize=8, fontweight="bold" if query == i else "normal")
        axis.text(1.03, i, label, ha="left", va="center", fontsize=8)
    axis.set_xlim(-0.6, 1.6)
    axis.set_ylim(n - 0.5, -0.5)
    axis.axis("off")
    handles = [axis.plot([], [], color=colours[h], linewidth=3)[0] for h in heads]
    figure.legend(handles, [f"head {h}" for h in heads], loc="outside right upper", fontsize=8, frameon=False)
    which = "all query tokens" if query is None else f"query {query} ({analysis.labels[query]})"
    axis.set_title(drawable(f"{analysis.display_name}, layer {layer}: {which} → keys"), fontsize=10)
    return figure


def model_view(analysis: PromptAnalysis, max_size: int = 48) -> Figure:
    """Every layer's and head's attention map as a thumbnail: layers down, heads across.

    Maps of more than ``max_size`` tokens are shrunk by averaging blocks of positions.
    """
    maps = analysis.attention
    factor = max(1, math.ceil(analysis.n_tokens / max_size))
    if factor > 1:
        size = math.ceil(analysis.n_tokens / factor) * factor
        padded = np.zeros((*maps.shape[:2], size, size), dtype=np.float32)
        padded[..., : analysis.n_tokens, : analysis.n_tokens] = maps
        maps = padded.reshape(*maps.shape[:2], size // factor, factor, size // factor, factor).mean(axis=(3, 5))
    n_layers, n_heads, tile = maps.shape[0], maps.shape[1], maps.shape[-1]
    gap = max(1, tile // 8)
    mosaic = np.full((n_layers * (tile + gap) - gap, n_heads * (tile + gap) - gap), np.nan, dtype=np.float32)
    for layer in range(n_layers):
        for head in range(n_heads):
            block = maps[layer, head]
            top, left = layer * (tile + gap), head * (tile + gap)
            mosaic[top : top + tile, left : left + tile] = block / max(float(block.max()), 1e-9)
    scale = 0.5 if n_heads * n_layers <= 64 else 0.32
    figure = ExplorerFigure(figsize=(max(5.0, n_heads * scale * 2 + 1.5), max(3.0, n_layers * scale * 2 + 1.0)))
    figure.set_layout_engine("constrained")
    axis = figure.subplots()
    axis.imshow(np.ma.masked_invalid(mosaic), cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    centres = [i * (tile + gap) + (tile - 1) / 2 for i in range(max(n_layers, n_heads))]
    axis.set_xticks(centres[:n_heads], [str(h) for h in range(n_heads)], fontsize=8)
    axis.set_yticks(centres[:n_layers], [str(layer + 1) for layer in range(n_layers)], fontsize=8)
    axis.set_xlabel("head")
    axis.set_ylabel("layer")
    axis.tick_params(length=0)
    for spine in axis.spines.values():
        spine.set_visible(False)
    shrunk = f", {factor}x{factor} positions averaged" if factor > 1 else ""
    axis.set_title(f"Every head's attention map, each scaled to its maximum{shrunk}: {_title(analysis)}", fontsize=10)
    return figure


def context_figure(analysis: PromptAnalysis, context: Context) -> Figure | None:
    """The study's prompts of the same model, entropy against length, raw and row-normalised, with the prompt marked.

    None when there is no study distribution (``context.peers`` is None).
    """
    if context.peers is None or context.peers.empty:
        return None
    figure = ExplorerFigure(figsize=(12, 4), layout="constrained")
    axes = figure.subplots(1, 2)
    bands = list(LENGTH_BANDS)
    colours = dict(zip(bands, ("#9ecae1", "#4292c6", "#08519c"), strict=True))
    for axis, column in zip(axes, ("attention_entropy", "attention_entropy_normalized"), strict=True):
        for band in bands:
            rows = context.peers[context.peers["length_band"] == band]
            axis.scatter(rows["n_tokens"], rows[column], s=14, color=colours[band], label=f"study, {band}", alpha=0.8)
        axis.scatter(
            [analysis.n_tokens],
            [analysis.measures[column]],
            s=160,
            marker="*",
            color=PROMPT_COLOUR,
            edgecolor="black",
            zorder=3,
            label="this prompt",
        )
        axis.set_xlabel("tokens")
        axis.set_ylabel(CONTEXT_METRICS[column])
        axis.ticklabel_format(axis="y", useOffset=False)
        p = percentile(context.peers[column], float(analysis.measures[column]))
        axis.set_title(f"{CONTEXT_METRICS[column]}: {ordinal(p)} percentile of {len(context.peers)}", fontsize=10)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside right upper", fontsize=8, frameon=False)
    figure.suptitle(f"This prompt among the study's prompts: {analysis.display_name}")
    return figure


def _head_colour(head: int, n_heads: int) -> tuple[float, float, float, float]:
    from matplotlib import colormaps

    palette = colormaps["tab10" if n_heads <= 10 else "tab20"]
    return palette(head % palette.N)


def _check_selection(analysis: PromptAnalysis, layer: int, head: int) -> None:
    if not 1 <= layer <= analysis.n_layers:
        raise ValueError(f"layer {layer} is out of range: {analysis.display_name} has layers 1..{analysis.n_layers}")
    if not 0 <= head < analysis.n_heads:
        raise ValueError(f"head {head} is out of range: {analysis.display_name} has heads 0..{analysis.n_heads - 1}")


def signature_figure(analysis: PromptAnalysis, probabilities: pd.DataFrame) -> Figure:
    """Heatmap of category probabilities: the surface-only probe (top row) and each layer's probe below it."""
    wide = probabilities.pivot(index="layer", columns="category", values="probability")
    labels = ["surface only" if layer < 0 else f"layer {layer}" for layer in wide.index]
    figure = ExplorerFigure(figsize=(1.0 + 0.55 * wide.shape[1], 1.2 + 0.28 * len(wide)))
    axis = figure.subplots()
    image = axis.imshow(wide.to_numpy(), aspect="auto", cmap="viridis", vmin=0, vmax=1)
    axis.set_yticks(range(len(labels)), labels, fontsize=7)
    axis.set_xticks(
        range(wide.shape[1]), [c.replace("_", " ") for c in wide.columns], rotation=60, ha="right", fontsize=7
    )
    axis.axhline(0.5, color="white", linewidth=2)
    axis.set_title(f"{_title(analysis)}: category probabilities per probe", fontsize=9)
    figure.colorbar(image, ax=axis, fraction=0.04, label="probability")
    figure.tight_layout()
    return figure
