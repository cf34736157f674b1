"""Streaming measurement: one forward pass per batch, every layer reduced to statistics as it runs.

``measure(model, texts)`` is the one entry point. Forward hooks, added only inside
``recording`` (a context manager that removes them in ``finally``), reduce each layer's
attention probabilities and hidden states to per-prompt statistics the moment the layer
produces them, so at most one layer's attention map is alive at a time.

Which tensors: hidden states are exactly transformers' ``output_hidden_states`` tuple,
index 0 = the embedding output (input of the first block), index l = output of block l, and
the last index L = ``last_hidden_state``, which for decoders is *after* the final norm
(GPT-2 ``ln_f``, Llama ``norm``, ...) and for BERT is the last block's output. Attention
probabilities are exactly ``output_attentions`` under eager attention.
"""

from __future__ import annotations

import ctypes
import inspect
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from helpers import metrics
from helpers.models import ATTENTION_IMPLEMENTATION, LoadedModel, load_model

PAPER_COLUMNS = ("final_activation", "attention_entropy", "max_sparsity")
ENTROPY_CHUNK_ELEMENTS = 1 << 22
"""Attention probabilities per entropy chunk (4M: 16 MiB in float32): heads are grouped up to this."""


class MetricsTable(pd.DataFrame):
    """A DataFrame that prints every column (``print(measure(...))`` shows all the metrics)."""

    @property
    def _constructor(self) -> type[MetricsTable]:
        return MetricsTable

    def __repr__(self) -> str:
        with pd.option_context("display.max_columns", None, "display.width", 1000):
            return super().__repr__()


class AttentionMissingError(RuntimeError):
    """The model ran without producing attention probabilities (e.g. an sdpa or flash kernel)."""


@dataclass
class Measurements:
    """What ``measure_with_layers`` returns: the prompt table and the long per-layer table."""

    prompts: pd.DataFrame
    layers: pd.DataFrame


# --- finding the modules to hook ---------------------------------------------------------------


def _matching_modules(model: nn.Module, spec: Any, index: int) -> list[tuple[nn.Module, int]]:
    """Modules matching one of transformers' ``_can_record_outputs`` specs, in forward order."""
    target_class = getattr(spec, "target_class", spec if isinstance(spec, type) else None)
    class_name = getattr(spec, "class_name", spec if isinstance(spec, str) else None)
    layer_name = getattr(spec, "layer_name", None)
    index = getattr(spec, "index", index)
    found = []
    for name, module in model.named_modules():
        dotted = f".{name}."
        if target_class is not None and not isinstance(module, target_class):
            if class_name is None or not f".{name}".endswith(class_name):
                continue
        elif target_class is None and (class_name is None or not f".{name}".endswith(class_name)):
            continue
        if layer_name is not None and f".{layer_name.strip('.')}." not in dotted:
            continue
        found.append((module, index))
    return found


def find_layers(model: nn.Module, n_layers: int) -> tuple[list[nn.Module], list[tuple[nn.Module, int]]]:
    """The ``n_layers`` blocks and, for each, its self-attention module with the output index of its weights.

    Uses the model's own ``_can_record_outputs`` (what transformers hooks for
    ``output_hidden_states``/``output_attentions``); models without it (BLOOM) fall back to the
    ModuleList of ``n_layers`` blocks and the child of each block whose class ends in ``Attention``.
    """
    record = getattr(model, "_can_record_outputs", None) or {}
    if "hidden_states" in record and "attentions" in record:
        blocks = [module for module, _ in _matching_modules(model, record["hidden_states"], 0)]
        attentions = _matching_modules(model, record["attentions"], 1)
    else:
        lists = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) == n_layers]
        if not lists:
            raise RuntimeError(f"{type(model).__name__}: no list of {n_layers} blocks found to hook")
        blocks = list(lists[0])
        attentions = []
        for block in blocks:
            children = [m for m in block.modules() if type(m).__name__.endswith("Attention")]
            if not children:
                raise RuntimeError(f"{type(block).__name__} has no attention submodule to hook")
            attentions.append((children[0], 1))
    if len(blocks) != n_layers or len(attentions) != n_layers:
        raise RuntimeError(
            f"{type(model).__name__}: expected {n_layers} blocks and attention modules, "
            f"found {len(blocks)} and {len(attentions)}"
        )
    return blocks, attentions


# --- the recorder ---------------------------------------------------------------------------------


@dataclass
class _BatchRecord:
    """Per-layer statistics of one batch, kept on the device until the batch ends (no host syncs)."""

    token_mask: torch.Tensor  # (B, T)
    causal: bool
    hidden: list[dict[str, torch.Tensor]] = field(default_factory=list)  # layer 0..L-1 inputs/outputs
    last_block: dict[str, torch.Tensor] | None = None
    attention_heads: list[torch.Tensor] = field(default_factory=list)  # each (B, H)
    normalized_sums: list[torch.Tensor] = field(default_factory=list)  # each (B,)
    normalized_counts: list[torch.Tensor] = field(default_factory=list)  # each (B,)
    _key_counts: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)

    def key_counts(self, mask: torch.Tensor | None, q_len: int) -> torch.Tensor:
        """Keys each query row may attend to, (B, 1|H, Q); computed once per mask (layers share masks)."""
        key = (id(mask), q_len)
        if key not in self._key_counts:
            allowed = _allowed_keys(mask, self.token_mask, self.causal, q_len)
            self._key_counts[key] = allowed.sum(dim=-1).to(torch.float64)
        return self._key_counts[key]


def _allowed_keys(mask: torch.Tensor | None, token_mask: torch.Tensor, causal: bool, q_len: int) -> torch.Tensor:
    """Bool (B, 1|H, Q, K): True where query i may attend to key j (and key j is not padding)."""
    key_is_real = token_mask.bool()[:, None, None, :]
    if mask is None:
        allowed = torch.ones(q_len, q_len, dtype=torch.bool, device=token_mask.device)
        allowed = torch.tril(allowed) if causal else allowed
        return allowed[None, None] & key_is_real
    if mask.dtype == torch.bool:
        allowed = mask
    else:  # additive mask: 0 where allowed, the dtype's minimum (or -inf) where not
        allowed = mask > torch.finfo(mask.dtype).min / 2
    if allowed.dim() == 3:
        allowed = allowed[:, None]
    return allowed[..., -q_len:, :] & key_is_real


_MALLOC_TUNED = False


def _return_freed_memory_to_the_os() -> None:
    """On Linux/glibc, serve allocations of 1 MiB or more by mmap, so freed buffers leave the process.

    glibc's default raises its mmap threshold to 32 MiB after the first large free; the many
    mid-sized temporaries of the per-layer statistics then fragment the heap, and freed memory
    stays resident: at T = 2048 on SmolLM2 the peak RSS of a forward grew 2.3x (benchmarks/).
    With a fixed threshold the peak equals a plain forward's. Set once per process; no-op elsewhere.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED or not sys.platform.startswith("linux"):
        return
    _MALLOC_TUNED = True
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD = -3
    except (OSError, AttributeError):
        pass


@contextmanager
def recording(loaded: LoadedModel) -> Iterator[list[_BatchRecord]]:
    """Hook ``loaded.model`` for the duration; yields a list whose last item is the current batch's record.

    Sets eager attention and eval mode, restores both, and removes every hook in ``finally``.
    """
    model = loaded.model
    previous_implementation = model.config._attn_implementation
    was_training = model.training
    records: list[_BatchRecord] = []
    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        if previous_implementation != ATTENTION_IMPLEMENTATION:
            model.set_attn_implementation(ATTENTION_IMPLEMENTATION)
        model.eval()
        if next(model.parameters()).device.type == "cpu":
            _return_freed_memory_to_the_os()
        blocks, attentions = find_layers(model, loaded.n_layers)

        def embedding_hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            record = records[-1]
            hidden = args[0] if args else kwargs["hidden_states"]
            record.hidden.append(metrics.hidden_state_statistics(hidden, record.token_mask))

        def block_hook(module: nn.Module, args: tuple, output: Any) -> None:
            record = records[-1]
            hidden = output[0] if isinstance(output, tuple) else output
            stats = metrics.hidden_state_statistics(hidden, record.token_mask)
            if module is blocks[-1]:
                record.last_block = stats  # before the final norm; the final entry comes from the output
            else:
                record.hidden.append(stats)

        def attention_hook(index: int):
            def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
                record = records[-1]
                probs = output[index] if isinstance(output, tuple) and len(output) > index else None
                if probs is None or probs.dim() != 4:
                    raise AttentionMissingError(
                        f"{type(module).__name__} returned no attention probabilities under attention "
                        f"implementation {model.config._attn_implementation!r}; measure needs 'eager'"
                    )
                query_mask = record.token_mask[:, -probs.shape[-2] :]
                per_head = probs[:, 0].numel()  # as many heads at once as fit a small slice of memory
                rows = metrics.row_entropy(probs, heads_per_chunk=max(1, ENTROPY_CHUNK_ELEMENTS // per_head))
                record.attention_heads.append(metrics.attention_entropy_per_head(rows, query_mask))
                n_keys = record.key_counts(kwargs.get("attention_mask"), probs.shape[-2])
                sums, counts = metrics.normalized_row_entropy_sums(rows, query_mask, n_keys)
                record.normalized_sums.append(sums)
                record.normalized_counts.append(counts)

            return hook

        handles.append(blocks[0].register_forward_pre_hook(embedding_hook, with_kwargs=True))
        handles.extend(block.register_forward_hook(block_hook) for block in blocks)
        handles.extend(
            module.register_forward_hook(attention_hook(index), with_kwargs=True) for module, index in attentions
        )
        yield records
    finally:
        for handle in handles:
            handle.remove()
        if model.config._attn_implementation != previous_implementation:
            model.set_attn_implementation(previous_implementation)
        model.train(was_training)


# --- input checks and batching -------------------------------------------------------------------


def validate_texts(texts: Sequence[str]) -> list[str]:
    """Return ``texts`` as a list, or raise naming the first bad item and what is allowed."""
    if isinstance(texts, str) or not isinstance(texts, Sequence) and not hasattr(texts, "__iter__"):
        raise TypeError(f"texts must be a list of strings, got {type(texts).__name__}; wrap one text as [text]")
    texts = list(texts)
    if not texts:
        raise ValueError("texts is empty: pass at least one non-empty string")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{index}] is {type(text).__name__}, not str: every text must be a string")
        if not text.strip():
            raise ValueError(f"texts[{index}] is empty or whitespace only: every text must contain some characters")
    return texts


class PromptTooLongError(ValueError):
    """A text has more tokens than the model has positions, and ``max_length`` was not set."""


def check_lengths(loaded: LoadedModel, lengths: Sequence[int], names: Sequence[str] | None = None) -> None:
    """Raise ``PromptTooLongError`` naming the texts with more tokens than ``loaded`` has positions.

    ``lengths``: token counts as tokenized; ``names``: how to name each text (default ``texts[i]``).
    """
    limit = getattr(loaded.model.config, "max_position_embeddings", None)
    too_long = [i for i, n in enumerate(lengths) if limit and n > limit]
    if too_long:
        named = [names[i] if names is not None else f"texts[{i}]" for i in too_long]
        shown = ", ".join(f"{name} ({lengths[i]} tokens)" for name, i in zip(named[:5], too_long[:5], strict=True))
        more = f" and {len(too_long) - 5} more" if len(too_long) > 5 else ""
        raise PromptTooLongError(
            f"{shown}{more}: longer than {loaded.name}'s {limit} positions; set max_length={limit} "
            "(the measure argument, or max_length in the parameter file) to truncate them, flagged in "
            "the 'truncated' column, or shorten them"
        )


def _resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _length_sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first), to cut padding."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


# --- the entry point -----------------------------------------------------------------------------


def measure_with_layers(
    model: str | LoadedModel,
    texts: Sequence[str],
    *,
    batch_size: int = 16,
    device: str | torch.device = "auto",
    dtype: torch.dtype | None = None,
    max_length: int | None = None,
    progress: bool = True,
    layers: bool = True,
) -> Measurements:
    """Measure every text; return the prompt table and the long per-layer table (empty if not ``layers``).

    ``model``: a registry name, a hub id, a local folder, or what ``load_model`` returns.
    Texts are tokenized as the tokenizer does by default (special tokens included);
    ``max_length`` truncates, otherwise a text longer than the model's positions is an error.
    ``dtype`` runs the model in that dtype (statistics are always reduced in float64).
    """
    texts = validate_texts(texts)
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    loaded = model if isinstance(model, LoadedModel) else load_model(model, dtype=dtype or torch.float32)
    target_device = _resolve_device(device)
    if dtype is not None and next(loaded.model.parameters()).dtype != dtype:
        loaded.model.to(dtype)
    loaded.model.to(target_device)

    tokenizer = loaded.tokenizer
    encoded = tokenizer(texts, truncation=max_length is not None, max_length=max_length)
    lengths = [len(ids) for ids in encoded["input_ids"]]
    truncated = [False] * len(texts)
    if max_length is not None:  # which texts lost tokens: their untruncated length exceeds max_length
        full_lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]]
        truncated = [full > kept for full, kept in zip(full_lengths, lengths, strict=True)]
    check_lengths(loaded, lengths)

    prompt_rows: dict[int, dict[str, Any]] = {}
    layer_frames: list[pd.DataFrame] = []
    batches = _length_sorted_batches(lengths, batch_size)
    causal = loaded.architecture == "decoder"
    base_model = loaded.model.base_model  # no language-model head: the metrics never use it
    accepts_positions = "position_ids" in inspect.signature(base_model.forward).parameters
    with recording(loaded) as records, torch.inference_mode():
        for batch in tqdm(batches, desc=f"measure {loaded.name}", unit="batch", disable=not progress):
            features = tokenizer.pad(
                {key: [encoded[key][i] for i in batch] for key in encoded.keys()}, return_tensors="pt"
            )
            features = {key: value.to(target_device) for key, value in features.items()}
            if accepts_positions:  # positions count real tokens only, so left padding shifts nothing
                features["position_ids"] = (features["attention_mask"].cumsum(dim=-1) - 1).clamp_min(0)
            records.append(_BatchRecord(token_mask=features["attention_mask"], causal=causal))
            output = base_model(**features, use_cache=False)
            record = records.pop()
            final = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
            record.hidden.append(metrics.hidden_state_statistics(final, record.token_mask))
            prompt_frame, layer_frame = _tables(record, loaded.n_layers, layers)
            prompt_frame.index = batch
            prompt_rows.update(prompt_frame.to_dict("index"))
            if layers:
                layer_frame["text_index"] = [batch[i] for i in layer_frame.pop("batch_position")]
                layer_frames.append(layer_frame)

    prompt_table = pd.DataFrame.from_dict(prompt_rows, orient="index").sort_index()
    prompt_table.index.name = "text_index"
    prompt_table.insert(0, "model", loaded.name)
    prompt_table.insert(2, "truncated", truncated)
    layer_table = pd.concat(layer_frames, ignore_index=True) if layers else _empty_layer_table()
    layer_table.insert(0, "model", loaded.name)
    layer_table = layer_table.sort_values(["text_index", "layer", "statistic"], kind="stable").reset_index(drop=True)
    return Measurements(prompts=MetricsTable(prompt_table.reset_index()), layers=layer_table)


def measure(
    model: str | LoadedModel,
    texts: Sequence[str],
    *,
    batch_size: int = 16,
    device: str | torch.device = "auto",
    dtype: torch.dtype | None = None,
    max_length: int | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Per-prompt metrics, one row per text in input order (see ``measure_with_layers``).

    Columns: ``text_index, model, n_tokens``, ``truncated`` (the text lost tokens to
    ``max_length``), ``nonfinite_layers`` (how many of the L+1 hidden states, or the attention
    of that layer, held an inf or NaN for this text: 0 in a healthy run); the paper's ``final_activation`` (mean of
    ``hidden_states[-1]``: after the final norm for decoders, the last block for BERT),
    ``attention_entropy`` (H_att = -(1/(L*H)) sum_l,h,i,j A log A over real query rows) and
    ``max_sparsity`` (max over the L+1 entries of ``hidden_states``, embedding output
    included, of the fraction |h| < 0.01); and extras: ``final_activation_pre_norm``,
    ``attention_entropy_normalized`` (mean over rows of row entropy / log(keys allowed), rows
    with one key left out), ``max_sparsity_no_embedding``, ``max_sparsity_<eps>`` for
    eps in 0.001 and 0.1, ``max_sparsity_relative_<eps>`` (threshold eps x the layer's std)
    for eps in 0.001, 0.01, 0.1; ``max_hoyer_sparsity`` (max over the L+1 entries of the mean
    over tokens of each token vector's Hoyer sparsity, scale-free: ``metrics.hoyer_sparsity``) and
    ``max_hoyer_sparsity_no_embedding``. The table prints every column.
    """
    return measure_with_layers(
        model,
        texts,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        max_length=max_length,
        progress=progress,
        layers=False,
    ).prompts


def _empty_layer_table() -> pd.DataFrame:
    return pd.DataFrame({"layer": [], "statistic": [], "value": [], "text_index": []})


def _tables(record: _BatchRecord, n_layers: int, layers: bool = True) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Turn one batch's device tensors into the prompt table and the long layer table (one host copy)."""
    hidden_names = list(record.hidden[0])
    hidden = torch.stack(
        [torch.stack([layer[n] for n in hidden_names]) for layer in record.hidden]
    ).cpu()  # (L+1, S, B)
    heads = torch.stack(record.attention_heads).cpu()  # (L, B, H)
    normalized_sums = torch.stack(record.normalized_sums).cpu()  # (L, B)
    normalized_counts = torch.stack(record.normalized_counts).cpu()
    last_block = record.last_block
    if hidden.shape[0] != n_layers + 1 or heads.shape[0] != n_layers or last_block is None:
        raise AttentionMissingError(
            f"expected {n_layers} layers of attention and {n_layers + 1} hidden states, "
            f"recorded {heads.shape[0]} and {hidden.shape[0]}"
        )
    near_zero = {eps: hidden[:, hidden_names.index(f"near_zero_{eps:g}")] for eps in metrics.SPARSITY_EPSILONS}
    relative = {eps: hidden[:, hidden_names.index(f"near_zero_relative_{eps:g}")] for eps in metrics.SPARSITY_EPSILONS}
    hoyer = hidden[:, hidden_names.index("hoyer")]  # (L+1, B)
    layer_entropy = heads.mean(dim=2)  # (L, B)
    nonfinite = hidden[:, hidden_names.index("nonfinite_tokens")] > 0  # (L+1, B): inf/NaN in hidden_states[l]
    nonfinite[1:] |= ~torch.isfinite(layer_entropy)  # or in layer l's attention
    nonfinite[-1] |= ~torch.isfinite(last_block["mean"].cpu())  # or before the final norm
    prompts = pd.DataFrame(
        {
            "n_tokens": record.token_mask.sum(dim=1).cpu().numpy(),
            "nonfinite_layers": nonfinite.sum(dim=0).numpy(),
            "final_activation": hidden[-1, hidden_names.index("mean")].numpy(),
            "final_activation_pre_norm": last_block["mean"].cpu().numpy(),
            "attention_entropy": layer_entropy.mean(dim=0).numpy(),
            "attention_entropy_normalized": (normalized_sums.sum(0) / normalized_counts.sum(0)).numpy(),
            "max_sparsity": near_zero[metrics.PAPER_EPSILON].amax(dim=0).numpy(),
            "max_sparsity_no_embedding": near_zero[metrics.PAPER_EPSILON][1:].amax(dim=0).numpy(),
            **{
                f"max_sparsity_{eps:g}": values.amax(dim=0).numpy()
                for eps, values in near_zero.items()
                if eps != metrics.PAPER_EPSILON  # that one is max_sparsity
            },
            **{f"max_sparsity_relative_{eps:g}": values.amax(dim=0).numpy() for eps, values in relative.items()},
            "max_hoyer_sparsity": hoyer.amax(dim=0).numpy(),
            "max_hoyer_sparsity_no_embedding": hoyer[1:].amax(dim=0).numpy(),
        }
    )
    if not layers:
        return prompts, None
    n_hidden, n_stats, batch = hidden.shape
    frames = [
        pd.DataFrame(
            {
                "batch_position": torch.arange(batch).repeat(n_hidden * n_stats).numpy(),
                "layer": torch.arange(n_hidden).repeat_interleave(n_stats * batch).numpy(),
                "statistic": [name for _ in range(n_hidden) for name in hidden_names for _ in range(batch)],
                "value": hidden.reshape(-1).numpy(),
            }
        )
    ]
    attention_stats = {
        "attention_entropy": layer_entropy,
        "attention_entropy_normalized": normalized_sums / normalized_counts,
    }
    attention_stats |= {f"attention_entropy_head_{h}": heads[:, :, h] for h in range(heads.shape[2])}
    for name, values in attention_stats.items():  # values (L, B) for layers 1..L
        frames.append(
            pd.DataFrame(
                {
                    "batch_position": torch.arange(batch).repeat(n_layers).numpy(),
                    "layer": torch.arange(1, n_layers + 1).repeat_interleave(batch).numpy(),
                    "statistic": name,
                    "value": values.reshape(-1).numpy(),
                }
            )
        )
    return prompts, pd.concat(frames, ignore_index=True)
