"""Explore one prompt: its tokens, per-layer profiles, per-head entropy, attention patterns, where it sits
among the study's prompts, and its category probes, as figures, tables and notes, behind ipywidgets controls.

What is drawn is measured by ``explore_measure`` (``analyse``, ``study_context``, ...). The figure functions
take its ``PromptAnalysis``; ``Explorer`` puts it all behind ipywidgets controls for JupyterLab, and
``Page`` lays out notebook 07's sections, live or static. Notebook 07 calls these (and the two run
settings ``study_category`` and ``study_max_tokens``, which the page uses).
"""

from __future__ import annotations

import functools
import html
import math
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import font_manager
from matplotlib.figure import Figure
from matplotlib.ft2font import FT2Font

from helpers.core.models import ModelUnavailableError, UnknownModelError
from helpers.core.streaming import PromptTooLongError
from helpers.report.explore_measure import (
    CONTEXT_METRICS,
    LENGTH_BANDS,
    MAX_TOKENS,
    Context,
    PromptAnalysis,
    Study,
    analyse,
    category_probes,
    load_study,
    ordinal,
    percentile,
    study_category,
    study_context,
    study_max_tokens,
)
from helpers.report.figures import annotation_texts, display_name
from helpers.study import StudyParams

PROMPT_COLOUR = "#d62728"
STUDY_COLOUR = "#7f7f7f"


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


def signature_view(analysis: PromptAnalysis, params: StudyParams) -> tuple[Any, ...]:
    """What the explorer's "Category probes" tab shows: the figure, or a note saying why there is none."""
    probabilities = category_probes(analysis, params)
    if isinstance(probabilities, str):
        return (note(probabilities),)
    return (signature_figure(analysis, probabilities),)


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


# --- tables for display ----------------------------------------------------------------------------


def summary(analysis: PromptAnalysis) -> pd.DataFrame:
    """The prompt's own metrics as a one-column table (the paper's three first)."""
    names = {
        "n_tokens": "tokens",
        "final_activation": "final activation A_f",
        "attention_entropy": "attention entropy H_att (nats)",
        "max_sparsity": "max sparsity S_max",
        "attention_entropy_normalized": "row-normalised attention entropy",
        "final_activation_pre_norm": "final activation before the final norm",
        "truncated": "truncated",
    }
    values = [analysis.measures[column] for column in names]
    shown = [f"{v:.3g}" if isinstance(v, float | np.floating) else str(v) for v in values]
    return pd.DataFrame({"value": shown}, index=pd.Index(list(names.values()), name=analysis.display_name))


def tokens_html(analysis: PromptAnalysis) -> Any:
    """The prompt's tokens as a row of numbered chips (special tokens greyed; hover for id and piece)."""
    from IPython.display import HTML

    chips = []
    for row in analysis.tokens.itertuples():
        colour = "#e0e0e0" if row.special else "#dbeafe"
        chips.append(
            f'<span title="id {row.id}, piece {html.escape(repr(row.piece))}" style="display:inline-block;'
            f'margin:2px;padding:1px 5px;border-radius:3px;background:{colour};font-family:monospace">'
            f'<sub style="color:#666">{row.position}</sub>&nbsp;{html.escape(row.token)}</span>'
        )
    header = f"<p><b>{analysis.n_tokens} tokens</b> ({html.escape(analysis.display_name)}):</p>"
    return HTML(f'<div class="compendium-tokens">{header}{"".join(chips)}</div>')


def show(*items: Any) -> None:
    """Display each item that is not None (a table, figure, HTML note), in order."""
    from IPython.display import display

    for item in items:
        if item is not None:
            display(item)


def note(message: str, kind: str = "warning") -> Any:
    """A visible note for notebook output (HTML), e.g. why the study context is missing."""
    from IPython.display import HTML

    colours = {"warning": "#fff4e5", "error": "#fdecea", "info": "#e8f4fd"}
    return HTML(
        f'<div class="compendium-note" style="background:{colours.get(kind, colours["info"])};padding:0.6em 1em;'
        f'border-radius:4px;margin:0.4em 0">{html.escape(message)}</div>'
    )


def context_note(context: Context) -> Any:
    """The context's sentence as a visible note: information, or a warning when there is nothing to compare with
    or the prompt lies outside the study's lengths."""
    return note(context.sentence, "info" if context.table is not None and not context.out_of_range else "warning")


def context_table(context: Context) -> Any:
    """The context's percentile table for display (2 significant digits; blank where a group is empty), or None."""
    if context.table is None:
        return None
    from IPython.display import HTML

    from helpers.report.tables import frame_html

    return HTML(frame_html(context.table, digits=2))  # escaped there: the category's name comes from data


def default_layer(analysis: PromptAnalysis, layer: int | None) -> int:
    """``layer``, or the middle layer when None."""
    return layer if layer is not None else max(1, (analysis.n_layers + 1) // 2)


# --- the interactive explorer (JupyterLab) ---------------------------------------------------------

EXPECTED_ERRORS = (ValueError, TypeError, PromptTooLongError, ModelUnavailableError, UnknownModelError, OSError)


class Explorer:
    """ipywidgets controls around one prompt: type a prompt, pick a model, a layer, a head and a query token.

    Tabs (``TABS``): tokens and metrics; the prompt in the study; per-layer profiles; layer x head
    entropy; the attention pattern of one head (the chosen query's row outlined); the head view
    of one layer (heads toggled on and off with the head buttons); the model view. ``follow(tab)``
    gives an output that is redrawn with the tab, so notebook 07's static sections follow the
    widget's prompt. The model menu shows display names; a new model resets the layer to its
    middle layer, the head to 0 and every head on. Display it (last expression of a cell) in JupyterLab.
    """

    TABS = (
        "Tokens",
        "In the study",
        "Layer profiles",
        "Layer x head",
        "Attention pattern",
        "Head view",
        "Model view",
        "Category probes",
    )
    SELECTION_TABS = ("Attention pattern", "Head view")
    """The tabs that depend on the layer, head, query token and shown heads (redrawn without measuring again)."""

    def __init__(
        self,
        params: StudyParams,
        prompt: str,
        model: str | None = None,
        category: str | None = None,
        layer: int | None = None,
        head: int = 0,
        max_tokens: int = MAX_TOKENS,
    ) -> None:
        import ipywidgets as widgets

        self.params = params
        self.max_tokens = study_max_tokens(params, max_tokens)
        self.study = load_study(params)
        model = model or params.models[0]
        category = study_category(params, category)
        categories = list(params.categories)
        layout = widgets.Layout(width="auto")
        self.prompt = widgets.Textarea(value=prompt, placeholder="Type a prompt", layout=widgets.Layout(width="98%"))
        names = list(dict.fromkeys([model, *params.models]))
        self.model = widgets.Dropdown(options=[(display_name(name), name) for name in names], value=model)
        self.model.description = "model"
        self.category = widgets.Dropdown(options=categories, value=category, description="category", layout=layout)
        self.button = widgets.Button(description="Explore", button_style="primary", icon="search")
        self.layer = widgets.IntSlider(value=1, min=1, max=1, description="layer", continuous_update=False)
        self.head = widgets.IntSlider(value=0, min=0, max=0, description="head", continuous_update=False)
        self.query = widgets.Dropdown(options=[("all tokens", -1)], value=-1, description="query", layout=layout)
        self.heads = widgets.HBox([])
        self.heads.add_class("compendium-heads")
        self.status = widgets.HTML()
        self.status.add_class("compendium-status")
        self.outputs = {name: widgets.Output() for name in self.TABS}
        self.followers: dict[str, list[Any]] = {name: [] for name in self.TABS}
        self.tabs = widgets.Tab(children=list(self.outputs.values()), titles=list(self.TABS))
        self.widget = widgets.VBox(
            [
                widgets.HTML("<b>Prompt</b>"),
                self.prompt,
                widgets.HBox([self.model, self.category, self.button]),
                self.status,
                widgets.HBox([self.layer, self.head, self.query]),
                widgets.HBox([widgets.HTML("heads in the head view:"), self.heads]),
                self.tabs,
            ]
        )
        self.widget.add_class("compendium-explorer")
        self.analysis: PromptAnalysis | None = None
        self.context: Context | None = None
        self._initial = (layer, head)
        self._busy = False
        self.button.on_click(lambda _: self.update())
        self.model.observe(lambda _: self.update(), names="value")
        self.category.observe(lambda _: self.update(), names="value")
        for control in (self.layer, self.head, self.query):
            control.observe(lambda _: self.update_selection(), names="value")
        self.update()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    @property
    def shown_heads(self) -> list[int]:
        """The heads the head view draws: those whose toggle is on."""
        return [index for index, toggle in enumerate(self.heads.children) if toggle.value]

    def _head_toggles(self, n_heads: int) -> None:
        """One toggle per head, all on; each redraws the head view."""
        import ipywidgets as widgets

        toggles = []
        for h in range(n_heads):
            toggle = widgets.ToggleButton(value=True, description=str(h), tooltip=f"head {h}")
            toggle.layout = widgets.Layout(width="3.2em")
            toggle.observe(lambda _: self.update_selection(), names="value")
            toggles.append(toggle)
        self.heads.children = toggles

    def _items(self, name: str) -> list[Any]:
        """What tab ``name`` shows for the current analysis and selection."""
        analysis, context = self.analysis, self.context
        if analysis is None or context is None:
            return []
        query = None if self.query.value == -1 else self.query.value
        return section(
            name,
            analysis,
            context,
            self.study,
            layer=self.layer.value,
            head=self.head.value,
            query=query,
            heads=self.shown_heads,
        )

    def _show(self, name: str) -> None:
        """Redraw tab ``name`` and every output following it: their outputs replaced at once, in a kernel or not."""
        from IPython.core.interactiveshell import InteractiveShell

        formatter = InteractiveShell.instance().display_formatter
        assert formatter is not None, "IPython's shell has no display formatter"
        shown = []
        for item in self._items(name):
            if item is not None:
                data, metadata = formatter.format(item)
                data = {kind: _as_text(value) for kind, value in data.items()}
                shown.append({"output_type": "display_data", "data": data, "metadata": metadata})
        for output in [self.outputs[name], *self.followers[name]]:
            output.outputs = tuple(shown)

    def follow(self, name: str) -> Any:
        """An output showing tab ``name`` now and redrawn whenever the explorer redraws that tab."""
        import ipywidgets as widgets

        if name not in self.outputs:
            raise ValueError(f"unknown section {name!r}; the sections are {list(self.TABS)}")
        output = widgets.Output()
        self.followers[name].append(output)
        self._show(name)
        return output

    def update(self) -> None:
        """Analyse the prompt in the text box with the chosen model and redraw everything."""
        if self._busy:
            return
        if not self.prompt.value.strip():
            self.status.value = '<span style="color:#b00020">The prompt is empty: type some text, then Explore.</span>'
            return
        self._busy = True
        self.button.disabled = True
        self.status.value = "<i>measuring…</i>"
        try:
            analysis = analyse(
                self.model.value,
                self.prompt.value,
                dtype=self.params.dtype,
                seed=self.params.seed,
                max_tokens=self.max_tokens,
            )
        except EXPECTED_ERRORS as error:
            self.status.value = f'<span style="color:#b00020">{html.escape(str(error))}</span>'
            return
        finally:
            self.button.disabled = False
            self._busy = False
        self._busy = True
        try:
            new_model = self.analysis is None or self.analysis.model != analysis.model
            if self.analysis is None:
                layer, head = self._initial
            elif new_model:  # another model: its own middle layer, head 0, every head shown
                layer, head = None, 0
            else:
                layer, head = self.layer.value, self.head.value
            self.analysis = analysis
            self.layer.max, self.head.max = analysis.n_layers, analysis.n_heads - 1  # the slider clamps its value
            self.layer.value = min(default_layer(analysis, layer), analysis.n_layers)
            self.head.value = min(head, analysis.n_heads - 1)
            if new_model or len(self.heads.children) != analysis.n_heads:
                self._head_toggles(analysis.n_heads)
            self.query.options = [("all tokens", -1)] + [
                (f"{i}: {label}", i) for i, label in enumerate(analysis.labels)
            ]
            self.query.value = -1
        finally:
            self._busy = False
        self.status.value = "<i>drawing…</i>"
        self.context = study_context(analysis, self.study, self.category.value)
        for name in self.TABS:
            self._show(name)
        colour = "#b26a00" if self.context.out_of_range else "inherit"
        self.status.value = f'<span style="color:{colour}">{html.escape(self.context.sentence)}</span>'  # last

    def update_selection(self) -> None:
        """Redraw the views that depend on the layer, head, query token and shown heads."""
        if self._busy or self.analysis is None:
            return
        for name in self.SELECTION_TABS:
            self._show(name)


def _as_text(value: Any) -> Any:
    """A display value as JSON carries it: images (bytes) in base64, as the kernel would send them."""
    import base64

    return base64.b64encode(value).decode("ascii") if isinstance(value, bytes) else value


def section(
    name: str,
    analysis: PromptAnalysis,
    context: Context,
    study: Study,
    layer: int,
    head: int = 0,
    query: int | None = None,
    heads: list[int] | None = None,
) -> list[Any]:
    """What one section of notebook 07 (one tab of the explorer, ``Explorer.TABS``) shows, in order."""
    if name == "Tokens":
        return [tokens_html(analysis), summary(analysis)]
    if name == "In the study":
        return [context_note(context), context_table(context), context_figure(analysis, context)]
    if name == "Layer profiles":
        return [profile_figure(analysis, study.layers(analysis.model))]
    if name == "Layer x head":
        return [head_heatmap(analysis)]
    if name == "Attention pattern":
        return [attention_pattern(analysis, layer, head, query=query)]
    if name == "Head view":
        shown = list(range(analysis.n_heads)) if heads is None else heads
        if not shown:
            return [note("Every head is switched off: switch one on with the head buttons.", "info")]
        return [head_view(analysis, layer, heads=shown, query=query)]
    if name == "Model view":
        return [model_view(analysis)]
    if name == "Category probes":
        return list(signature_view(analysis, study.params))
    raise ValueError(f"unknown section {name!r}; the sections are {list(Explorer.TABS)}")


class Page:
    """Notebook 07's sections for one prompt: live in JupyterLab, static in the report.

    ``live``: an ``Explorer`` (``page.explorer``) is made, and each ``show(name)`` is an output that
    the explorer redraws, so the sections below the widget follow its prompt, model, layer and
    head. Otherwise (the papermill run that renders the report) each section is drawn once for the
    ``parameters`` cell's prompt.
    """

    def __init__(
        self,
        params: StudyParams,
        prompt: str,
        model: str | None = None,
        category: str = "mathematical_reasoning",
        layer: int | None = None,
        head: int = 0,
        max_tokens: int = MAX_TOKENS,
        live: bool = False,
    ) -> None:
        model = model or params.models[0]
        self.explorer = Explorer(params, prompt, model, category, layer, head, max_tokens) if live else None
        if self.explorer is None:
            self.study = load_study(params)
            self.analysis = analyse(model, prompt, dtype=params.dtype, seed=params.seed, max_tokens=max_tokens)
            self.layer, self.head = default_layer(self.analysis, layer), head
            self.context = study_context(self.analysis, self.study, category)

    def show(self, name: str) -> None:
        """Display section ``name`` (one of ``Explorer.TABS``)."""
        from IPython.display import display

        if self.explorer is not None:
            display(self.explorer.follow(name))
            return
        for item in section(name, self.analysis, self.context, self.study, self.layer, self.head):
            if item is not None:
                display(item)
