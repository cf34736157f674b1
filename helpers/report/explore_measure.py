"""The explorer's measurements of one prompt: its tokens, its per-layer and per-head statistics, its attention
maps, its category probes, and where it sits among the study's prompts. No drawing: ``explore`` draws these.

``analyse(model, text)`` measures one prompt exactly as the study does (``measure_with_layers``)
and also keeps its attention maps, (L, H, T, T), from one eager forward with
``output_attentions`` (``attention_maps``; the model's attention implementation is restored in
``finally``). ``load_study`` and ``study_context`` place the prompt among the run's prompts
(``results/<run>/metrics.parquet``); ``category_probes`` applies finding 5's probes to it.

Indexing follows the per-layer table: attention layers are 1..L (layer l is block l), heads are
0..H-1, hidden-state layers 0..L (0 = the embedding output).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from transformers import PreTrainedModel

from helpers.core.models import ATTENTION_IMPLEMENTATION, LoadedModel, load_model
from helpers.core.streaming import AttentionMissingError, measure_with_layers
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
    from helpers.core.streaming import max_tokens as positions_of

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
    pieces = list(tokenizer.convert_ids_to_tokens(ids))  # a list of ids gives a list
    special = set(tokenizer.all_special_ids)
    labels = []
    for token_id, piece in zip(ids, pieces, strict=True):
        decoded = str(tokenizer.decode([token_id]))  # one id: one string
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
def eager_attention(model: PreTrainedModel) -> Iterator[PreTrainedModel]:
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
    assert measured.vectors is not None  # measure_with_layers pools the vectors with the layers
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
    from helpers import study
    from helpers.stats.findings import signatures

    path = params.activations_path(analysis.model, "vectors")
    if analysis.vectors is None or not path.is_file():
        return f"No stored vectors for {analysis.display_name} in run '{params.name}': run `make reproduce` first."
    prompts, _, vectors = signatures.load_model_inputs(params, analysis.model)
    new = pd.DataFrame(study.prompt_covariates(pd.Series([analysis.text]))).assign(
        text=analysis.text, n_tokens=int(analysis.measures["n_tokens"])
    )
    return signatures.category_probabilities(prompts, vectors, new, analysis.vectors)


# --- the study the prompt is compared with -----------------------------------------------------------


@dataclass(frozen=True)
class Study:
    """A run's per-prompt metrics, each with its word count and length band; or why they are missing."""

    params: StudyParams
    metrics: pd.DataFrame | None
    missing: str | None = None

    def layers(self, model: str) -> pd.DataFrame | None:
        """The run's per-layer table of ``model`` (new schema), or None if it was not measured."""
        from helpers.base import store

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
    from helpers.base import paths, store
    from helpers.study.outputs import RunOutputs

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
