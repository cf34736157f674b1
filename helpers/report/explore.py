"""Show one prompt explored: its tables and notes, and the figures of ``explore_figures``, behind ipywidgets controls.

What is shown is measured by ``explore_measure`` (``analyse``, ``study_context``, ...) and drawn by
``explore_figures``; ``Explorer`` puts it all behind ipywidgets controls for JupyterLab, and
``Page`` lays out notebook 07's sections, live or static. Notebook 07 calls these (and the two run
settings ``study_category`` and ``study_max_tokens``, which the page uses).
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import pandas as pd

from helpers.core.models import ModelUnavailableError, UnknownModelError
from helpers.core.streaming import PromptTooLongError
from helpers.report.explore_figures import (
    attention_pattern,
    context_figure,
    head_heatmap,
    head_view,
    model_view,
    profile_figure,
    signature_figure,
)
from helpers.report.explore_measure import (
    MAX_TOKENS,
    Context,
    PromptAnalysis,
    Study,
    analyse,
    category_probes,
    load_study,
    study_category,
    study_context,
    study_max_tokens,
)
from helpers.report.figures import display_name
from helpers.study import StudyParams


def signature_view(analysis: PromptAnalysis, params: StudyParams) -> tuple[Any, ...]:
    """What the explorer's "Category probes" tab shows: the figure, or a note saying why there is none."""
    probabilities = category_probes(analysis, params)
    if isinstance(probabilities, str):
        return (note(probabilities),)
    return (signature_figure(analysis, probabilities),)


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
