"""Explore one prompt: its tokens, per-layer profiles, per-head entropy, attention patterns, and
where it sits among the study's prompts.

``analyse(model, text)`` measures one prompt exactly as the study does (``measure_with_layers``)
and also keeps its attention maps, (L, H, T, T), from one eager forward with
``output_attentions`` (``attention_maps``; the model's attention implementation is restored in
``finally``). The figure functions take that analysis; ``load_study`` and ``study_context`` place
the prompt among the run's prompts (``results/<run>/metrics.parquet``); ``Explorer`` puts it all
behind ipywidgets controls for JupyterLab. Notebook 07 calls these.

Indexing follows the per-layer table: attention layers are 1..L (layer l is block l), heads are
0..H-1, hidden-state layers 0..L (0 = the embedding output).
"""

from __future__ import annotations

import functools
import html
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib import font_manager
from matplotlib.figure import Figure
from matplotlib.ft2font import FT2Font

from helpers.figures import annotations, display_name
from helpers.models import ATTENTION_IMPLEMENTATION, LoadedModel, ModelUnavailableError, UnknownModelError, load_model
from helpers.streaming import AttentionMissingError, PromptTooLongError, measure_with_layers
from helpers.study import StudyParams, load_prompts

HEAD_STATISTIC = "attention_entropy_head"
"""Per-head rows of the per-layer table: this statistic, with the head in the integer ``head`` column."""

MAX_TOKENS = 512
"""Longer prompts are truncated: every layer's and head's attention map of the prompt is kept."""

LENGTH_BANDS: dict[str, tuple[int, int]] = {"short": (1, 12), "medium": (13, 35), "long": (36, 100_000)}
"""Word-count bands: the prompt file's short (4-10 words), medium (15-30) and long (40-70), split at the midpoints."""

CONTEXT_METRICS: dict[str, str] = {
    "attention_entropy": "raw H_att",
    "attention_entropy_normalized": "row-normalised H_att",
    "max_sparsity": "S_max",
    "final_activation": "A_f",
}
"""The per-prompt metrics whose percentiles place a prompt in the study (column -> label)."""

PROMPT_COLOUR = "#d62728"
STUDY_COLOUR = "#7f7f7f"


# --- the per-layer table ---------------------------------------------------------------------------


def with_head_column(layers: pd.DataFrame) -> pd.DataFrame:
    """The per-layer table with per-head rows as statistic ``attention_entropy_head`` and an integer ``head``.

    ``head`` is 0-based, <NA> on rows that are not per head. A table already in that schema
    passes through unchanged.
    """
    # remove after the fused branch lands: accepts the old 'attention_entropy_head_<h>' strings
    if "head" in layers.columns:
        return layers
    head = layers["statistic"].astype(str).str.extract(r"^attention_entropy_head_(\d+)$")[0].astype("Int64")
    return layers.assign(statistic=layers["statistic"].where(head.isna(), HEAD_STATISTIC), head=head)


def head_grid(layers: pd.DataFrame) -> pd.DataFrame:
    """Layer x head per-head attention entropy (mean over the prompts in ``layers``), heads in numeric order."""
    rows = layers[layers["statistic"] == HEAD_STATISTIC]
    grid = rows.pivot_table(index="layer", columns="head", values="value", aggfunc="mean")
    grid.columns = grid.columns.astype(int)
    return grid.sort_index().sort_index(axis=1)


# --- tokens ----------------------------------------------------------------------------------------


def token_limit(loaded: LoadedModel, max_tokens: int = MAX_TOKENS) -> int:
    """The number of tokens kept: ``max_tokens``, or fewer if the model has fewer positions."""
    from helpers.streaming import max_tokens as positions_of

    positions = positions_of(loaded)
    return min(max_tokens, positions) if positions else max_tokens


def study_max_tokens(params: StudyParams, max_tokens: int = MAX_TOKENS) -> int:
    """The explorer's token limit for a run: ``max_tokens``, or the run's ``max_length`` if that is smaller.

    A run with ``max_length`` measured every prompt cut to it, so an explored prompt is cut the same
    way before it is placed among them.
    """
    return max_tokens if params.max_length is None else min(max_tokens, params.max_length)


def study_category(params: StudyParams, category: str | None = None) -> str:
    """``category`` if the run has it (an error naming the run's categories otherwise); None: math if the run has it,
    else the run's first category."""
    if category is None:
        return "mathematical_reasoning" if "mathematical_reasoning" in params.categories else params.categories[0]
    if category not in params.categories:
        raise ValueError(f"category {category!r} is not one of run '{params.name}''s categories: {params.categories}")
    return category


def token_label(text: str) -> str:
    """A token as a short readable label: whitespace shown as symbols, surrounding spaces dropped."""
    label = text.replace("\n", "↵").replace("\t", "⇥").replace("\r", "")
    return label.strip() or "␣"


def tokens(loaded: LoadedModel, text: str, max_tokens: int = MAX_TOKENS) -> pd.DataFrame:
    """One row per token as the model sees it (special tokens included, as the study tokenizes).

    Columns: ``position`` (0..T-1), ``token`` (readable label), ``piece`` (the tokenizer's own
    string), ``id``, ``special``.
    """
    tokenizer = loaded.tokenizer
    ids = tokenizer(text, truncation=True, max_length=token_limit(loaded, max_tokens))["input_ids"]
    pieces = tokenizer.convert_ids_to_tokens(ids)
    special = set(tokenizer.all_special_ids)
    labels = []
    for token_id, piece in zip(ids, pieces, strict=True):
        decoded = tokenizer.decode([token_id])
        labels.append(token_label(piece if not decoded or "\ufffd" in decoded else decoded))
    return pd.DataFrame(
        {
            "position": range(len(ids)),
            "token": labels,
            "piece": pieces,
            "id": ids,
            "special": [token_id in special for token_id in ids],
        }
    )


# --- attention maps of one prompt ------------------------------------------------------------------


@contextmanager
def eager_attention(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Run ``model`` with eager attention (which materialises the maps) and in eval mode for the duration.

    The previous attention implementation and training mode are restored in ``finally``, so a
    shared, cached model is never left changed, even when the forward fails.
    """
    previous = model.config._attn_implementation
    was_training = model.training
    try:
        if previous != ATTENTION_IMPLEMENTATION:
            model.set_attn_implementation(ATTENTION_IMPLEMENTATION)
        model.eval()
        yield model
    finally:
        if model.config._attn_implementation != previous:
            model.set_attn_implementation(previous)
        model.train(was_training)


def attention_maps(loaded: LoadedModel, text: str, max_tokens: int = MAX_TOKENS) -> np.ndarray:
    """Attention probabilities of one prompt, (L, H, T, T) float32: [l-1, h, i, j] = weight of query i on key j.

    One eager forward with ``output_attentions`` (fine for one prompt; the study itself never
    keeps a map). T counts special tokens, as ``tokens`` does.
    """
    encoded = loaded.tokenizer(text, truncation=True, max_length=token_limit(loaded, max_tokens), return_tensors="pt")
    device = next(loaded.model.parameters()).device
    features = {key: value.to(device) for key, value in encoded.items()}
    with eager_attention(loaded.model) as model, torch.inference_mode():
        output = model.base_model(**features, output_attentions=True, use_cache=False)
    attentions = getattr(output, "attentions", None)
    if not attentions or any(a is None for a in attentions):
        raise AttentionMissingError(f"{loaded.name} returned no attention maps under eager attention")
    return torch.cat([a.float().cpu() for a in attentions]).numpy()


def row_entropy(maps: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of each attention row: (..., Q, K) -> (..., Q), with 0 log 0 = 0."""
    maps = maps.astype(np.float64)
    return -(maps * np.log(np.where(maps > 0, maps, 1.0))).sum(axis=-1)


def allowed_keys(n_tokens: int, causal: bool) -> np.ndarray:
    """Keys each query row may attend to, (T,): i + 1 for a decoder, T for an encoder."""
    return np.arange(1, n_tokens + 1) if causal else np.full(n_tokens, n_tokens)


# --- one prompt, measured as the study measures ----------------------------------------------------


@dataclass(frozen=True)
class PromptAnalysis:
    """One prompt through one model.

    ``measures``: its row of ``measure`` (``n_tokens``, the paper's three metrics, extras);
    ``layers``: its long per-layer table (layer, statistic, head, value); ``attention``: its maps,
    (L, H, T, T); ``tokens``: T rows (see ``tokens``).
    """

    model: str
    display_name: str
    architecture: str
    text: str
    tokens: pd.DataFrame
    measures: pd.Series
    layers: pd.DataFrame
    attention: np.ndarray
    vectors: np.ndarray | None = None  # (L+1, D) float16: each hidden state averaged over the prompt's tokens

    @property
    def n_layers(self) -> int:
        return self.attention.shape[0]

    @property
    def n_heads(self) -> int:
        return self.attention.shape[1]

    @property
    def n_tokens(self) -> int:
        return self.attention.shape[-1]

    @property
    def truncated(self) -> bool:
        return bool(self.measures["truncated"])

    @property
    def labels(self) -> list[str]:
        return self.tokens["token"].tolist()

    def head_entropy(self) -> pd.DataFrame:
        """Layer x head attention entropy (the study's statistic: sum over query rows), heads in numeric order."""
        return head_grid(self.layers)

    def head_entropy_normalised(self) -> pd.DataFrame:
        """Layer x head mean over query rows of row entropy / log(allowed keys); rows with one key left out."""
        keys = allowed_keys(self.n_tokens, self.architecture == "decoder")
        keep = keys > 1
        ratio = row_entropy(self.attention)[..., keep] / np.log(keys[keep])  # (L, H, rows)
        values = ratio.mean(axis=-1) if keep.any() else np.full(self.attention.shape[:2], np.nan)
        return pd.DataFrame(
            values,
            index=pd.Index(range(1, self.n_layers + 1), name="layer"),
            columns=pd.Index(range(self.n_heads), name="head"),
        )


@functools.lru_cache(maxsize=4)
def analyse(
    model: str, text: str, *, dtype: str = "float32", seed: int = 0, max_tokens: int = MAX_TOKENS
) -> PromptAnalysis:
    """Measure ``text`` with ``model`` as the study does and keep its attention maps (cached per prompt).

    Raises ``ValueError`` for an empty prompt and the model zoo's errors for an unknown or
    unavailable model. Prompts longer than ``max_tokens`` (or the model's positions) are
    truncated, flagged in ``measures['truncated']``.
    """
    loaded = load_model(model, dtype=dtype, seed=seed)  # a name: the loader resolves it
    limit = token_limit(loaded, max_tokens)
    measured = measure_with_layers(loaded, [text], batch_size=1, max_length=limit, progress=False)
    maps = attention_maps(loaded, text, limit)
    table = tokens(loaded, text, limit)
    if maps.shape[-1] != len(table) or maps.shape[-1] != int(measured.prompts["n_tokens"].iloc[0]):
        raise RuntimeError(f"token counts disagree: maps {maps.shape[-1]}, tokens {len(table)}")
    layers = with_head_column(measured.layers.drop(columns=["text_index"], errors="ignore"))
    return PromptAnalysis(
        model=loaded.name,
        display_name=loaded.display_name,
        architecture=loaded.architecture,
        text=text,
        tokens=table,
        measures=measured.prompts.iloc[0],
        layers=layers,
        attention=maps,
        vectors=measured.vectors[0],
    )


# --- category probes (finding 5) -------------------------------------------------------------------------


def category_probes(analysis: PromptAnalysis, params: StudyParams) -> pd.DataFrame | str:
    """The prompt's category probabilities from each layer's probe (surface + that layer's mean-pooled vector)
    and from the surface-only probe (layer -1), fitted on the run's prompts of the same model
    (``signatures.category_probabilities``); or why there are none (the run has no vectors for the model)."""
    from helpers import signatures, study

    path = params.activations_path(analysis.model, "vectors")
    if analysis.vectors is None or not path.is_file():
        return f"No stored vectors for {analysis.display_name} in run '{params.name}': run `make reproduce` first."
    prompts, _, vectors = signatures.load_model_inputs(params, analysis.model)
    new = pd.DataFrame(study.prompt_covariates(pd.Series([analysis.text]))).assign(
        text=analysis.text, n_tokens=int(analysis.measures["n_tokens"])
    )
    return signatures.category_probabilities(prompts, vectors, new, analysis.vectors)


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


# --- the study the prompt is compared with -----------------------------------------------------------


@dataclass(frozen=True)
class Study:
    """A run's per-prompt metrics, each with its word count and length band; or why they are missing."""

    params: StudyParams
    metrics: pd.DataFrame | None
    missing: str | None = None

    def layers(self, model: str) -> pd.DataFrame | None:
        """The run's per-layer table of ``model`` (new schema), or None if it was not measured."""
        from helpers import store

        path = self.params.activations_path(model, "layers")
        return with_head_column(store.read_table(path)) if path.is_file() else None


def length_band(words: int) -> str:
    """The length band of a prompt of ``words`` words (``LENGTH_BANDS``)."""
    return next(name for name, (low, high) in LENGTH_BANDS.items() if low <= words <= high)


def word_count(text: str) -> int:
    return len(text.split())


def load_study(params: StudyParams) -> Study:
    """The run's per-prompt metrics (``results/<run>/metrics.parquet``) for comparison.

    When the file is missing, ``metrics`` is None and ``missing`` says what to run, so a notebook
    can show that instead of failing.
    """
    from helpers import paths, store
    from helpers.notebooks import RunOutputs

    path = RunOutputs(params).metrics
    if not path.is_file():
        shown = path.relative_to(paths.ROOT) if path.is_relative_to(paths.ROOT) else path
        return Study(
            params,
            None,
            f"No study results for run '{params.name}': {shown} does not exist. Run `make reproduce "
            f"PARAMS=...` for this parameter file (or notebooks 01 and 02) first; the prompt is shown on its own.",
        )
    metrics = store.read_table(path)
    if "text" not in metrics.columns:  # the prompt tables carry the text only in newer runs
        prompts = load_prompts(params.prompts_path, params.categories, params.prompts_per_category)
        metrics = metrics.merge(prompts[["prompt_id", "text"]], on="prompt_id", how="left")
    words = metrics["text"].fillna("").map(word_count)
    metrics = metrics.assign(words=words, length_band=words.map(length_band))
    return Study(params, metrics)


def percentile(values: np.ndarray | pd.Series, value: float) -> float:
    """Percent of ``values`` below ``value``, ties counted half (0-100); NaN when there are none."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if not len(values) or not math.isfinite(value):
        return float("nan")
    return 100.0 * ((values < value).sum() + 0.5 * (values == value).sum()) / len(values)


def ordinal(number: float) -> str:
    """68 -> '68th', 1 -> '1st', NaN -> 'n/a'."""
    if not math.isfinite(number):
        return "n/a"
    n = int(round(number))
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


@dataclass(frozen=True)
class Context:
    """Where a prompt sits in the study: a table of percentiles and one sentence, or why not.

    ``out_of_range`` says (else '') that the prompt is longer or shorter than every study prompt of
    the model, so its percentiles lie outside what the study covers.
    """

    table: pd.DataFrame | None
    sentence: str
    band: str
    peers: pd.DataFrame | None = None  # the study's finite prompts of the same model
    out_of_range: str = ""

    def note(self) -> Any:
        """The sentence as a visible note: information, or a warning when there is nothing to compare with
        or the prompt lies outside the study's lengths."""
        return note(self.sentence, "info" if self.table is not None and not self.out_of_range else "warning")

    def styled(self) -> Any:
        """The percentile table for display (whole percents; '-' where a group is empty), or None."""
        if self.table is None:
            return None
        percentiles = [column for column in self.table.columns if column.endswith("percentile")]
        return self.table.style.format("{:.0f}", subset=percentiles, na_rep="-").hide(axis="index")


def study_context(analysis: PromptAnalysis, study: Study, category: str) -> Context:
    """Percentiles of the prompt among the study's prompts of the same model.

    Rows: all of them, its length band, its ``category``, and band and category together;
    columns: the number of prompts and the percentile of each of ``CONTEXT_METRICS``.
    """
    category = study_category(study.params, category)
    words = word_count(analysis.text)
    band = length_band(words)
    if study.metrics is None:
        return Context(None, study.missing or "no study results", band)
    peers = study.metrics[study.metrics["model"] == analysis.model]
    if peers.empty:
        models = ", ".join(dict.fromkeys(study.metrics["model"]))
        return Context(
            None,
            f"{analysis.model} is not one of run '{study.params.name}''s models ({models}): "
            "there is no study distribution to compare this prompt with; pick one of those models.",
            band,
        )
    finite = np.isfinite(peers[list(CONTEXT_METRICS)].to_numpy(dtype=float)).all(axis=1)
    peers = peers[finite]
    low, high = LENGTH_BANDS[band]
    groups = {
        f"all {analysis.display_name} prompts": peers,
        f"length band {band} ({low}-{high if high < 1000 else '…'} words)": peers[peers["length_band"] == band],
        f"category {category}": peers[peers["category"] == category],
        f"{band} {category}": peers[(peers["length_band"] == band) & (peers["category"] == category)],
    }
    rows = []
    for name, group in groups.items():
        row: dict[str, Any] = {"compared with": name, "prompts": len(group)}
        for column, label in CONTEXT_METRICS.items():
            row[f"{label} percentile"] = percentile(group[column], float(analysis.measures[column]))
        rows.append(row)
    table = pd.DataFrame(rows)
    outside = length_out_of_range(analysis, peers)
    sentence = _context_sentence(analysis, table, band, len(peers))
    return Context(table, f"{outside} {sentence}" if outside else sentence, band, peers, outside)


def length_out_of_range(analysis: PromptAnalysis, peers: pd.DataFrame) -> str:
    """A warning when the prompt has more (or fewer) tokens than every study prompt of the model, else ''."""
    if peers.empty or "n_tokens" not in peers:
        return ""
    low, high = int(peers["n_tokens"].min()), int(peers["n_tokens"].max())
    if low <= analysis.n_tokens <= high:
        return ""
    side = "longer" if analysis.n_tokens > high else "shorter"
    return (
        f"Out of range: this prompt has {analysis.n_tokens} tokens, {side} than every one of the study's "
        f"{len(peers)} prompts for {analysis.display_name} ({low}-{high} tokens), so its percentiles lie outside "
        "what the study covers (raw entropy grows with length)."
    )


def _context_sentence(analysis: PromptAnalysis, table: pd.DataFrame, band: str, n_peers: int) -> str:
    raw, normalised = (
        f"{CONTEXT_METRICS[c]} percentile" for c in ("attention_entropy", "attention_entropy_normalized")
    )
    overall, in_band = table.iloc[0], table.iloc[1]
    link = "but" if abs(overall[raw] - overall[normalised]) >= 20 else "and"
    sentence = (
        f"This {analysis.n_tokens}-token prompt sits at the {ordinal(overall[raw])} percentile of raw attention "
        f"entropy {link} the {ordinal(overall[normalised])} of row-normalised entropy among {analysis.display_name}'s "
        f"{n_peers} study prompts."
    )
    if in_band["prompts"]:
        sentence += (
            f" Raw entropy sums over query rows, so it grows with length: among the {int(in_band['prompts'])} "
            f"{band} prompts it is at the {ordinal(in_band[raw])} and {ordinal(in_band[normalised])}."
        )
    if analysis.truncated:
        sentence += f" (Truncated to {analysis.n_tokens} tokens.)"
    return sentence


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
        if annotate:  # one number format for the whole grid (helpers.figures.annotations)
            values = grid.to_numpy()
            exponent, texts = annotations(values.ravel())
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
    shown = [f"{v:.4g}" if isinstance(v, float | np.floating) else str(v) for v in values]
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
        return [context.note(), context.styled(), context_figure(analysis, context)]
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
