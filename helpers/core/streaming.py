"""Streaming measurement: one forward pass per batch, every layer reduced to statistics as it runs.

``measure(model, texts)`` is the one entry point. Everything that instruments the model
happens only inside ``recording``, a context manager that undoes it in ``finally``: forward
hooks reduce each layer's hidden states to per-prompt statistics the moment the layer
produces them (on the CPU in one call of ``kernels.hidden_statistics`` where the kernels are built, else with
``metrics.hidden_state_statistics``: the same numbers), and the attention entropy is recorded on one of two paths:

* ``"fused"`` (the default wherever it is exact): an attention function registered with
  transformers' ``AttentionInterface`` computes the layer's output with sdpa, exactly as a plain
  sdpa forward does, and each attention row's entropy from the log-sum-exp and one more
  attention call with the keys as the values (``metrics.attention_row_entropy``). No attention
  map is ever made: memory grows by O(T), not O(T^2), and any length the model has positions
  for can be measured. On the CPU the one-pass kernel of ``helpers.core.kernels`` returns the output,
  log-sum-exp and entropies together where it is built (``attrs["attention_kernel"]`` records which).
* ``"eager"`` (the reference, and the fallback where the fused path is not exact: BLOOM's
  own attention code with ALiBi, logit soft-capping): eager attention, whose probabilities a
  hook on each attention module reduces to row entropies as the layer returns them.

Both paths give the same per-row entropies (to float32 rounding), from which every attention
statistic is reduced the same way. Which tensors: hidden states are exactly transformers'
``output_hidden_states`` tuple, index 0 = the embedding output (input of the first block),
index l = output of block l, and the last index L = ``last_hidden_state``, which for decoders
is *after* the final norm (GPT-2 ``ln_f``, Llama ``norm``, ...) and for BERT is the last
block's output. Attention rows are those of ``output_attentions`` under eager attention.
"""

from __future__ import annotations

import ctypes
import inspect
import itertools
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from transformers.modeling_utils import AttentionInterface

from helpers.base.checks import ParameterError, is_blank
from helpers.core import kernels, metrics, models
from helpers.core.models import ATTENTION_IMPLEMENTATION, LoadedModel, load_model

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


ATTENTION_PATHS = ("auto", "fused", "eager")
"""``measure``'s ``attention`` argument: "auto" = fused where exact, else eager."""


class AttentionMissingError(RuntimeError):
    """The model ran without producing attention probabilities (e.g. an sdpa or flash kernel)."""


class FusedAttentionUnsupportedError(AttentionMissingError):
    """The fused path cannot be exact for this model (scores changed other than by a mask); use eager."""


@dataclass
class Measurements:
    """What ``measure_with_layers`` returns: the prompt table, the long per-layer table, the path that ran.

    ``attention_path`` is "fused" or "eager" (also in ``prompts.attrs`` and ``layers.attrs``);
    ``attention_kernel`` how the fused path computed the entropies: ``kernels.ONE_PASS`` (the
    one-pass CPU kernel), ``kernels.TWO_CALL`` (two flash calls on the CPU, or blocked scores on
    another device), both joined by ", " if batches differed, or "eager" (also in both ``attrs``);
    ``statistics_kernel`` how the hidden-state statistics were reduced: ``kernels.ONE_PASS`` or
    ``kernels.TORCH_OPERATIONS`` (both joined by ", " if they differed; also ``attrs["statistics_kernel"]``).
    """

    prompts: pd.DataFrame
    layers: pd.DataFrame
    attention_path: str
    attention_kernel: str = "eager"
    statistics_kernel: str = kernels.TORCH_OPERATIONS
    vectors: np.ndarray | None = None
    """(n_texts, L+1, D) float16 in input order: each text's ``hidden_states[l]`` averaged over its real tokens
    (``metrics.mean_pooled``), l = 0 the embedding output; None when measured without layers."""


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
    hidden: list[torch.Tensor] = field(default_factory=list)  # hidden_states 0..L, each (S, B): hidden_statistic_names
    pool_vectors: bool = True
    pooled: list[torch.Tensor] = field(default_factory=list)  # hidden_states 0..L, each (B, D) mean over real tokens
    last_block: torch.Tensor | None = None  # (S, B) of the last block's output (before a final norm)
    kernel: ModuleType | None = None  # the CPU kernels (kernels.cpu_kernel()), or None: torch operations
    statistics_kernels: set[str] = field(default_factory=set)  # how hidden states were reduced (kernels.ONE_PASS, ...)
    _is_real: torch.Tensor | None = None  # token_mask as a contiguous bool tensor, for the kernel (made once)
    _pool_weights: torch.Tensor | None = None  # metrics.pooling_weights(token_mask) (made once)
    attention_heads: list[torch.Tensor] = field(default_factory=list)  # each (B, H)
    normalized_sums: list[torch.Tensor] = field(default_factory=list)  # each (B,)
    normalized_counts: list[torch.Tensor] = field(default_factory=list)  # each (B,)
    attention_kernels: set[str] = field(default_factory=set)  # the fused routes that ran (kernels.ONE_PASS, ...)
    _per_mask: dict[tuple, tuple[Any, torch.Tensor | list]] = field(default_factory=dict)

    def hidden_statistics(self, hidden: torch.Tensor, pool: bool = True) -> torch.Tensor:
        """One entry of ``hidden_states`` (B, T, D) reduced to its statistics (S, B) float64, in
        ``metrics.hidden_statistic_names`` order; with ``pool`` (and ``pool_vectors``) its mean over real tokens
        (B, D) is kept too. One kernel call on the CPU where the kernels are built, else torch operations.
        """
        pool = pool and self.pool_vectors
        if self.kernel is not None and STATISTICS_KERNELS and hidden.dtype in _KERNEL_DTYPES and hidden.is_contiguous():
            if self._is_real is None:
                self._is_real = self.token_mask.bool().contiguous()
                self._pool_weights = metrics.pooling_weights(self.token_mask)
            stats, pooled = kernels.hidden_statistics(
                hidden,
                self._is_real,
                metrics.SPARSITY_EPSILONS,
                pool_weights=self._pool_weights if pool else None,
                module=self.kernel,
            )
            self.statistics_kernels.add(kernels.ONE_PASS)
        else:
            stats = torch.stack(list(metrics.hidden_state_statistics(hidden, self.token_mask).values()))
            pooled = metrics.mean_pooled(hidden, self.token_mask) if pool else None
            self.statistics_kernels.add(kernels.TORCH_OPERATIONS)
        if pooled is not None:
            self.pooled.append(pooled)
        return stats

    def _cached(self, mask: torch.Tensor | None, what: tuple, make: Callable[[], Any]) -> Any:
        """``make()`` once per mask and ``what`` (layers share masks); the mask is kept, so its id stays unique."""
        key = (id(mask), *what)
        if key not in self._per_mask:
            self._per_mask[key] = (mask, make())
        return self._per_mask[key][1]

    def key_counts(self, mask: torch.Tensor | None, q_len: int, causal: bool | None = None) -> torch.Tensor:
        """Keys each query row may attend to, (B, 1|H, Q) float64; computed once per mask."""
        causal = self.causal if causal is None else causal
        return self._cached(
            mask, ("counts", q_len, causal), lambda: _count_allowed_keys(mask, self.token_mask, causal, q_len)
        )

    def key_ranges(self, mask: torch.Tensor | None) -> list[tuple[int, int, int, int]] | None:
        """Per block of query rows, the keys it may attend to (``metrics.mask_key_ranges``); None without a mask."""
        if mask is None:
            return None
        given: torch.Tensor = mask

        def ranges() -> list[tuple[int, int, int, int]]:
            allowed = metrics.as_allowed(given)
            assert allowed is not None  # a mask was given
            return metrics.mask_key_ranges(allowed, metrics.QUERY_BLOCK)

        return self._cached(given, ("ranges",), ranges)

    def add_attention_rows(self, rows: torch.Tensor, mask: torch.Tensor | None, causal: bool | None = None) -> None:
        """Reduce one layer's row entropies (B, H, Q) to its per-head sums and row-normalised sums.

        The one place attention statistics are made, whichever path computed the rows.
        """
        n_keys = self.key_counts(mask, rows.shape[-1], causal)
        if self.kernel is not None and STATISTICS_KERNELS and rows.device.type == "cpu":  # one kernel call
            query_mask = self._cached(None, ("query rows", rows.shape[-1]), lambda: self.query_mask(rows.shape[-1]))
            heads, sums, counts = kernels.attention_statistics(rows, query_mask, n_keys, module=self.kernel)
        else:
            rows = rows.to(torch.float64)
            query_mask = self.query_mask(rows.shape[-1])
            heads = metrics.attention_entropy_per_head(rows, query_mask)
            sums, counts = metrics.normalized_row_entropy_sums(rows, query_mask, n_keys)
        self.attention_heads.append(heads)
        self.normalized_sums.append(sums)
        self.normalized_counts.append(counts)

    def query_mask(self, q_len: int) -> torch.Tensor:
        """Which of the last ``q_len`` positions are real tokens (the attention's query rows), (B, Q) bool."""
        return self.token_mask[:, -q_len:].bool().contiguous()


COUNT_ROWS = 1024
"""Query rows per step when counting allowed keys from a mask: bounds the temporary (B x rows x K bools)."""


def _count_allowed_keys(mask: torch.Tensor | None, token_mask: torch.Tensor, causal: bool, q_len: int) -> torch.Tensor:
    """Keys each query row may attend to (padding keys never count): (B, 1|H, Q) float64, a block of rows at a time."""
    if mask is None:
        real = token_mask.to(torch.int64)
        counts = real.cumsum(dim=-1) if causal else real.sum(dim=-1, keepdim=True).expand_as(real)
        return counts[:, None, -q_len:].to(torch.float64)
    mask = mask[:, None] if mask.dim() == 3 else mask
    mask = mask[..., -q_len:, :]
    per_block = [
        _allowed_keys(mask[..., first : first + COUNT_ROWS, :], token_mask, causal, min(COUNT_ROWS, q_len - first))
        .sum(dim=-1)
        .to(torch.float64)
        for first in range(0, q_len, COUNT_ROWS)
    ]
    return torch.cat(per_block, dim=-1)


def _allowed_keys(mask: torch.Tensor | None, token_mask: torch.Tensor, causal: bool, q_len: int) -> torch.Tensor:
    """Bool (B, 1|H, Q, K): True where query i may attend to key j (and key j is not padding)."""
    key_is_real = token_mask.bool()[:, None, None, :]
    if mask is None:
        allowed = torch.ones(q_len, q_len, dtype=torch.bool, device=token_mask.device)
        allowed = torch.tril(allowed) if causal else allowed
        return allowed[None, None] & key_is_real
    given = metrics.as_allowed(mask, check_bias=False)
    assert given is not None  # a mask was given
    if given.dim() == 3:
        given = given[:, None]
    return given[..., -q_len:, :] & key_is_real


TRIM_TOKENS = 2048
"""Batches of at least this many token positions hand freed heap memory back to the OS (``trim_interval``)."""
TRIM_TOKEN_BLOCKS = 8192
"""Token positions times blocks between two trims: after every block at T = 8192, every fourth at 2048."""


def trim_interval(tokens: int) -> int:
    """After how many blocks of batches of ``tokens`` positions the heap is trimmed (0: never).

    What a block leaves fragmented grows with T, so a trim every ``TRIM_TOKEN_BLOCKS / T`` blocks bounds it alike.
    Each trim costs time (pages handed back fault in again): at T = 2048 on SmolLM2 a trim after every block made
    ``measure`` 0.91x a plain sdpa forward (median of 7 fresh processes), every fourth 0.96x at 1.05x its peak
    memory, none 0.97x at up to 1.16x (AMD EPYC, AVX-512; the long-input rows of ``make bench`` time it).
    """
    return max(1, TRIM_TOKEN_BLOCKS // tokens) if tokens >= TRIM_TOKENS else 0


_LIBC: Any = None


def _release_free_memory() -> None:
    """glibc's malloc_trim(0): return freed heap pages to the OS (no-op elsewhere); changes no setting.

    On long inputs the per-layer temporaries (tens of MB each, below glibc's mmap threshold)
    fragment the heap and freed memory stays resident: at T = 8192 on SmolLM2 the peak RSS of
    ``measure`` was 1.3x a plain forward's without this, 1.14x with it (benchmarks/).
    """
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL("libc.so.6") if sys.platform.startswith("linux") else False
            _LIBC.malloc_trim  # noqa: B018 (musl and others lack it)
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


_UNSUPPORTED_ATTENTION_ARGUMENTS = ("softcap", "s_aux", "sinks", "position_bias")
"""Keyword arguments of an attention call that change the scores other than by a mask: the fused path refuses them."""

_REGISTRATIONS = itertools.count()
_KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
"""Dtypes the one-pass CPU kernel takes (computed in float32); float64 keeps the two-call route."""
STATISTICS_KERNELS = True
"""Whether the statistics kernels (``kernels.hidden_statistics`` for hidden states of the ``_KERNEL_DTYPES``,
``kernels.attention_statistics`` for row entropies) run where the kernels are built. False: torch operations, the
route before them (the tests and benchmarks compare the two)."""


def fused_attention_unsupported(loaded: LoadedModel) -> str | None:
    """Why the fused path would not be exact for ``loaded`` (then "auto" runs eager), or None if it is.

    It needs a model whose attention goes through transformers' ``AttentionInterface`` with scores
    q.k * scale plus a mask: BLOOM has its own attention code (ALiBi); soft-capped logits
    (``attn_logit_softcapping``, Gemma 2) are not an additive change of the scores. Keyword arguments
    that change the scores (``_UNSUPPORTED_ATTENTION_ARGUMENTS``) are refused during the forward.
    """
    model = loaded.model
    if not type(model)._can_set_attn_implementation():
        return f"{type(model).__name__} has its own attention code, not transformers' AttentionInterface"
    for config in (model.config, getattr(model.config, "text_config", None)):
        softcap = getattr(config, "attn_logit_softcapping", None)
        if softcap is not None:
            return f"its attention logits are soft-capped (attn_logit_softcapping={softcap})"
    return None


def _fused_attention(records: list[_BatchRecord]) -> Callable[..., tuple[torch.Tensor, None]]:
    """An attention function for ``AttentionInterface``: sdpa's output, and the row entropies recorded.

    Called by each attention layer with query (B, H, Q, D), key and value (B, H_kv, K, D) and the
    mask ``sdpa_mask`` made (bool (B, 1, Q, K), or None for plain causal/full attention).
    """

    def attention(
        module: nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        dropout: float = 0.0,
        scaling: float | None = None,
        is_causal: bool | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, None]:
        changed = [name for name in _UNSUPPORTED_ATTENTION_ARGUMENTS if kwargs.get(name) is not None]
        if attention_mask is not None and attention_mask.dtype != torch.bool:
            try:
                metrics.as_allowed(attention_mask)
            except ValueError:
                changed.append("an additive bias in the mask")
        if changed or dropout:
            raise FusedAttentionUnsupportedError(
                f"{type(module).__name__} changes its attention scores ({', '.join(changed) or 'dropout'}): the fused "
                "entropy would not be exact; measure with attention='eager'"
            )
        record = records[-1]
        blocks = record.key_ranges(attention_mask)
        groups = query.shape[1] // key.shape[1]
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        q_len = query.shape[2]
        causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
        causal = bool(q_len > 1 and attention_mask is None and causal)  # as sdpa decides
        kernel = record.kernel if query.device.type == "cpu" and query.dtype in _KERNEL_DTYPES else None
        if kernel is not None:  # output, log-sum-exp and row entropies in one pass (helpers/core/kernels)
            output, _, rows = kernels.entropy_attention(
                query, key, value, scale=scale, mask=metrics.as_allowed(attention_mask), is_causal=causal,
                key_ranges=blocks, module=kernel,
            )  # fmt: skip
            record.attention_kernels.add(kernels.ONE_PASS)
            record.add_attention_rows(rows, attention_mask, causal if attention_mask is None else None)
            return output, None
        record.attention_kernels.add(kernels.TWO_CALL)
        if blocks is None or len(blocks) == 1:  # no mask, or a short one: exactly transformers' sdpa
            output, _ = sdpa_attention_forward(
                module, query, key, value, attention_mask, dropout=0.0, scaling=scaling, is_causal=is_causal, **kwargs
            )
        else:  # the same sdpa, a block of query rows at a time over the keys they may see
            assert attention_mask is not None  # blocks come from a mask
            output = _blocked_sdpa(
                query, repeat_kv(key, groups), repeat_kv(value, groups), attention_mask, blocks, scale
            )
        rows = metrics.attention_row_entropy(
            query, key, scale=scale, mask=attention_mask, is_causal=causal, blocks=blocks
        )
        record.add_attention_rows(rows, attention_mask, causal if attention_mask is None else None)
        return output, None

    return attention


def _blocked_sdpa(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor,
    blocks: Sequence[tuple[int, int, int, int]],
    scale: float,
) -> torch.Tensor:
    """sdpa over blocks of query rows, each against only the keys it may attend to: (B, Q, H, D), as transformers'.

    query (B, H, Q, D), key/value (B, H, K, D) with heads repeated; mask bool (B|1, 1|H, Q, K);
    blocks from ``metrics.mask_key_ranges``. With a sliding window of w keys this costs O(T (w + block))
    instead of sdpa's O(T^2) over the whole mask, and no T x T float copy of the mask is made.
    Rows with no key to attend to are 0, as sdpa returns them.
    """
    allowed = metrics.as_allowed(mask)
    assert allowed is not None  # a mask was given
    output = query.new_zeros(*query.shape[:-1], value.shape[-1])
    for first, end, first_key, end_key in blocks:
        if end_key > first_key:
            output[..., first:end, :] = torch.nn.functional.scaled_dot_product_attention(
                query[..., first:end, :],
                key[..., first_key:end_key, :],
                value[..., first_key:end_key, :],
                attn_mask=allowed[..., first:end, first_key:end_key],
                scale=scale,
            )
    return output.transpose(1, 2).contiguous()


@contextmanager
def _registered(interface: Any, name: str, function: Callable) -> Iterator[None]:
    """``function`` registered as ``name`` in a transformers interface class, and the entry restored on exit."""
    mapping = interface._global_mapping
    missing = object()
    previous = mapping.get(name, missing)
    interface.register(name, function)
    try:
        yield
    finally:
        if previous is missing:
            mapping.pop(name, None)
        else:
            mapping[name] = previous


def _ask_for_attentions(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """A pre-hook: call the attention module with ``output_attentions=True`` (this module only, not the model)."""
    return args, {**kwargs, "output_attentions": True}


def _restore(model: Any, implementation: str, training: bool) -> None:
    if model.config._attn_implementation != implementation:
        model.set_attn_implementation(implementation)
    model.train(training)


@contextmanager
def recording(loaded: LoadedModel, attention: str = "eager") -> Iterator[list[_BatchRecord]]:
    """Instrument ``loaded.model`` for the duration; yields a list whose last item is the current batch's record.

    ``attention``: "fused" registers an attention function (and sdpa's mask function) under a
    name of its own in transformers' ``AttentionInterface``/``AttentionMaskInterface`` and sets
    the model to it; "eager" sets eager attention and hooks each attention module. Both put the
    model in eval mode and hook the blocks for hidden states. On exit, error or not, every hook is
    removed, the attention implementation and training mode are restored and the registry entries
    removed: nothing global is left behind.
    """
    if attention not in ("fused", "eager"):
        raise ValueError(f"attention must be 'fused' or 'eager' here, got {attention!r}")
    model = loaded.model
    records: list[_BatchRecord] = []
    with ExitStack() as undo:
        undo.callback(_restore, model, model.config._attn_implementation, model.training)
        if attention == "fused":
            name = f"helpers_entropy_{next(_REGISTRATIONS)}"
            undo.enter_context(_registered(AttentionInterface, name, _fused_attention(records)))
            undo.enter_context(_registered(AttentionMaskInterface, name, sdpa_mask))
            undo.callback(_restore, model, model.config._attn_implementation, model.training)  # before unregistering
            model.set_attn_implementation(name)
        elif model.config._attn_implementation != ATTENTION_IMPLEMENTATION:
            model.set_attn_implementation(ATTENTION_IMPLEMENTATION)
        model.eval()
        blocks, attentions = find_layers(model, loaded.n_layers)
        blocks_since_trim = [0]  # across batches: a model with fewer blocks than the interval trims too

        def embedding_hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            record = records[-1]
            hidden = args[0] if args else kwargs["hidden_states"]
            record.hidden.append(record.hidden_statistics(hidden))

        def block_hook(module: nn.Module, args: tuple, output: Any) -> None:
            record = records[-1]
            hidden = output[0] if isinstance(output, tuple) else output
            if module is blocks[-1]:  # before the final norm; the final entry comes from the output
                record.last_block = record.hidden_statistics(hidden, pool=False)
            else:
                record.hidden.append(record.hidden_statistics(hidden))
            interval = trim_interval(record.token_mask.numel())
            if interval and hidden.device.type == "cpu":
                blocks_since_trim[0] += 1
                if blocks_since_trim[0] >= interval:
                    blocks_since_trim[0] = 0
                    _release_free_memory()

        def attention_hook(index: int):
            def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
                record = records[-1]
                probs = output[index] if isinstance(output, tuple) and len(output) > index else None
                if probs is None or probs.dim() != 4:
                    raise AttentionMissingError(
                        f"{type(module).__name__} returned no attention probabilities under attention "
                        f"implementation {model.config._attn_implementation!r}; measure needs 'eager'"
                    )
                per_head = probs[:, 0].numel()  # as many heads at once as fit a small slice of memory
                rows = metrics.row_entropy(probs, heads_per_chunk=max(1, ENTROPY_CHUNK_ELEMENTS // per_head))
                record.add_attention_rows(rows, kwargs.get("attention_mask"))

            return hook

        handles = [blocks[0].register_forward_pre_hook(embedding_hook, with_kwargs=True)]
        handles.extend(block.register_forward_hook(block_hook) for block in blocks)
        if attention == "eager":
            handles.extend(
                module.register_forward_hook(attention_hook(index), with_kwargs=True) for module, index in attentions
            )
            handles.extend(  # modules that return probabilities only when asked (MPNet's own attention code)
                module.register_forward_pre_hook(_ask_for_attentions, with_kwargs=True)
                for module, _ in attentions
                if "output_attentions" in inspect.signature(module.forward).parameters
            )
        for handle in handles:
            undo.callback(handle.remove)
        yield records


# --- input checks and batching -------------------------------------------------------------------


def position_offset(base_model: nn.Module) -> int:
    """The position id of a text's first token: 0, or ``padding_idx + 1`` where the position embedding reserves
    the ids up to its padding index (RoBERTa, MPNet: positions start at 2 after padding id 1)."""
    embeddings = getattr(base_model, "embeddings", None)
    padding_idx = getattr(getattr(embeddings, "position_embeddings", None), "padding_idx", None)
    return 0 if padding_idx is None else int(padding_idx) + 1


def max_tokens(loaded: LoadedModel) -> int | None:
    """The most tokens a text may have: the model's positions less those reserved before the first token."""
    positions = getattr(loaded.model.config, "max_position_embeddings", None)
    return positions - position_offset(loaded.model.base_model) if positions else None


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
        if is_blank(text):
            raise ValueError(
                f"texts[{index}] is empty, or only whitespace or invisible characters ({text!r}): every text must "
                "contain some visible characters"
            )
    return texts


class PromptTooLongError(ValueError):
    """A text has more tokens than the model has positions, and ``max_length`` was not set."""


def check_lengths(loaded: LoadedModel, lengths: Sequence[int], names: Sequence[str] | None = None) -> None:
    """Raise ``PromptTooLongError`` naming the texts with more tokens than ``loaded`` has positions.

    ``lengths``: token counts as tokenized; ``names``: how to name each text (default ``texts[i]``).
    """
    limit = max_tokens(loaded)
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


def check_max_length(tokenizer: Any, max_length: int | None, model: str) -> None:
    """``max_length`` must leave room for text: above the special tokens the tokenizer adds to every prompt."""
    if max_length is None:
        return
    special = len(tokenizer("")["input_ids"])
    if max_length <= special:
        raise ParameterError(
            f"max_length={max_length} leaves no room for text with {model!r}, whose tokenizer adds {special} special "
            f"token(s) to every prompt; use max_length of at least {special + 1}, or null"
        )


def check_arguments(
    *,
    batch_size: Any = 16,
    device: Any = "auto",
    dtype: Any = None,
    max_length: Any = None,
    progress: Any = True,
    layers: Any = True,
    attention: Any = "auto",
) -> tuple[torch.device, torch.dtype | None]:
    """Check ``measure``'s keyword arguments before any model work; return the device and dtype they name.

    Each error names the argument, the bad value and what is allowed.
    """
    for name, value, minimum in (("batch_size", batch_size, 1), ("max_length", max_length, 1)):
        if name == "max_length" and value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            allowed = "a positive int" + (" or None" if name == "max_length" else "")
            raise TypeError(f"{name} must be {allowed}, got {value!r} ({type(value).__name__})")
        if value < minimum:
            raise ValueError(f"{name} must be a positive int, got {value}")
    for name, value in (("progress", progress), ("layers", layers)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    if not isinstance(attention, str) or attention not in ATTENTION_PATHS:
        raise ValueError(f"attention must be one of {', '.join(map(repr, ATTENTION_PATHS))}, got {attention!r}")
    resolved_dtype = None if dtype is None else models.resolve_dtype(dtype)
    return models.resolve_device(device), resolved_dtype


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
    dtype: torch.dtype | str | None = None,
    max_length: int | None = None,
    progress: bool = True,
    layers: bool = True,
    attention: str = "auto",
) -> Measurements:
    """Measure every text; return the prompt table, the long per-layer table (empty if not ``layers``), the path.

    ``model``: a registry name, a hub id, a local folder, or what ``load_model`` returns (never
    changed: another ``dtype`` or ``device`` runs on a converted copy). Texts are tokenized as the
    tokenizer does by default (special tokens included); ``max_length`` truncates, otherwise a
    text longer than the model's positions is an error. ``dtype`` (torch.float32/bfloat16/float16
    or their names; default: the model's) runs the model in that dtype; statistics are reduced in
    float32 or better (float64 across tokens and rows) whatever the dtype. ``device``: "auto"
    (CUDA if available), "cpu", "cuda[:i]", "mps" or a torch.device.

    ``attention``: "auto" (default) runs the fused path where it is exact (every architecture
    that calls transformers' attention interface without soft-capping: BERT, GPT-2, Qwen2, Phi,
    GPT-NeoX, StableLM, Llama, Gemma 3) and eager elsewhere (BLOOM); "fused" insists on it;
    "eager" runs the reference (attention maps, one layer at a time). Fused and eager agree to
    1e-5 relative on prompt totals (tests/integration/test_fused_attention.py); the path that ran
    is ``Measurements.attention_path`` and ``.attrs["attention_path"]`` of both tables.

    The per-layer table has columns ``model, text_index, layer, statistic, head, value``:
    hidden-state statistics at layers 0..L (0 = embedding output), attention statistics at
    layers 1..L: ``attention_entropy`` (the layer's mean over heads of the per-head sum of row
    entropies) and ``attention_entropy_normalized`` with ``head`` <NA>, and one
    ``attention_entropy_head`` row per head with ``head`` = 0..H-1 (pandas Int64). Sorted by
    text_index, layer, statistic, head.
    """
    texts = validate_texts(texts)
    target_device, target_dtype = check_arguments(
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        max_length=max_length,
        progress=progress,
        layers=layers,
        attention=attention,
    )
    if isinstance(model, LoadedModel):
        loaded = models.converted(model, dtype=target_dtype, device=target_device)
    elif isinstance(model, str):
        loaded = load_model(model, dtype=target_dtype or torch.float32, device=target_device)
    else:
        raise TypeError(
            f"model must be a model name (str) or what load_model returns, got {model!r} ({type(model).__name__})"
        )

    check_max_length(loaded.tokenizer, max_length, loaded.name)
    unsupported = fused_attention_unsupported(loaded)
    if attention == "fused" and unsupported:
        raise FusedAttentionUnsupportedError(f"{loaded.name}: no exact fused path: {unsupported}; use 'eager'")
    path = "eager" if attention == "eager" or unsupported else "fused"
    try:
        return _measure(loaded, texts, batch_size, target_device, max_length, progress, layers, path)
    except FusedAttentionUnsupportedError:
        if attention != "auto":
            raise
        return _measure(loaded, texts, batch_size, target_device, max_length, progress, layers, "eager")


def _measure(
    loaded: LoadedModel,
    texts: list[str],
    batch_size: int,
    target_device: torch.device,
    max_length: int | None,
    progress: bool,
    layers: bool,
    path: str,
) -> Measurements:
    tokenizer = loaded.tokenizer
    encoded = tokenizer(texts, truncation=max_length is not None, max_length=max_length)
    lengths = [len(ids) for ids in encoded["input_ids"]]
    truncated = [False] * len(texts)
    if max_length is not None:  # which texts lost tokens: their untruncated length exceeds max_length
        full_lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]]
        truncated = [full > kept for full, kept in zip(full_lengths, lengths, strict=True)]
    check_lengths(loaded, lengths)

    prompt_frames: list[pd.DataFrame] = []
    layer_frames: list[pd.DataFrame] = []
    vectors: np.ndarray | None = None  # (n_texts, L+1, D) float16, allocated at the first batch
    batches = _length_sorted_batches(lengths, batch_size)
    causal = loaded.architecture == "decoder"
    base_model = loaded.model.base_model  # no language-model head: the metrics never use it
    accepts_positions = "position_ids" in inspect.signature(base_model.forward).parameters
    first_position = position_offset(base_model)
    kernels_used: set[str] = set()
    statistics_used: set[str] = set()
    kernel = kernels.cpu_kernel() if target_device.type == "cpu" else None
    with recording(loaded, path) as records, torch.inference_mode():
        for batch in tqdm(batches, desc=f"measure {loaded.name}", unit="batch", disable=not progress):
            padded = tokenizer.pad(
                {key: [encoded[key][i] for i in batch] for key in encoded.keys()}, return_tensors="pt"
            )
            features = {key: value.to(target_device) for key, value in padded.items()}
            left_padded = not bool(features["attention_mask"][:, 0].all())
            if accepts_positions and left_padded:  # positions count real tokens only: left padding shifts nothing
                positions = (features["attention_mask"].cumsum(dim=-1) - 1).clamp_min(0)
                features["position_ids"] = positions + first_position
            records.append(
                _BatchRecord(token_mask=features["attention_mask"], causal=causal, pool_vectors=layers, kernel=kernel)
            )
            output = base_model(**features, use_cache=False)
            record = records.pop()
            kernels_used |= record.attention_kernels
            final = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
            record.hidden.append(record.hidden_statistics(final))
            statistics_used |= record.statistics_kernels
            if record.pooled:  # (pooling is on exactly when layers are kept)
                pooled = torch.stack(record.pooled, dim=1).cpu().to(torch.float16).numpy()  # (B, L+1, D)
                if vectors is None:
                    vectors = np.zeros((len(texts), *pooled.shape[1:]), dtype=np.float16)
                vectors[batch] = pooled
            prompt_frame, layer_frame = _tables(record, loaded.n_layers, layers)
            prompt_frame.index = batch
            prompt_frames.append(prompt_frame)
            if layers:
                assert layer_frame is not None  # kept when layers are
                layer_frame["text_index"] = [batch[i] for i in layer_frame.pop("batch_position")]
                layer_frames.append(layer_frame)

    prompt_table = pd.concat(prompt_frames).sort_index()
    prompt_table.index.name = "text_index"
    prompt_table.insert(0, "model", loaded.name)
    prompt_table.insert(2, "truncated", truncated)
    layer_table = pd.concat(layer_frames, ignore_index=True) if layers else _empty_layer_table()
    layer_table.insert(0, "model", loaded.name)
    order = ["model", "text_index", "layer", "statistic", "head", "value"]
    layer_table = layer_table[order].sort_values(["text_index", "layer", "statistic", "head"], kind="stable")
    prompts = MetricsTable(prompt_table.reset_index())
    layer_table = layer_table.reset_index(drop=True)
    attention_kernel = ", ".join(sorted(kernels_used)) if path == "fused" else "eager"
    statistics_kernel = ", ".join(sorted(statistics_used))
    for table in (prompts, layer_table):
        table.attrs["attention_path"] = path
        table.attrs["attention_kernel"] = attention_kernel
        table.attrs["statistics_kernel"] = statistics_kernel
    return Measurements(
        prompts=prompts,
        layers=layer_table,
        attention_path=path,
        attention_kernel=attention_kernel,
        statistics_kernel=statistics_kernel,
        vectors=vectors,
    )


def measure(
    model: str | LoadedModel,
    texts: Sequence[str],
    *,
    batch_size: int = 16,
    device: str | torch.device = "auto",
    dtype: torch.dtype | str | None = None,
    max_length: int | None = None,
    progress: bool = True,
    attention: str = "auto",
) -> pd.DataFrame:
    """Per-prompt metrics, one row per text in input order (arguments: see ``measure_with_layers``).

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
    ``max_hoyer_sparsity_no_embedding``. The table prints every column. ``attention`` picks the path
    ("auto": fused where exact, else eager); ``.attrs["attention_path"]`` says which ran, and
    ``.attrs["attention_kernel"]`` how (``Measurements.attention_kernel``).
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
        attention=attention,
    ).prompts


def _empty_layer_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "layer": pd.Series([], dtype="int64"),
            "statistic": pd.Series([], dtype="object"),
            "head": pd.Series([], dtype="Int64"),
            "value": pd.Series([], dtype="float64"),
            "text_index": pd.Series([], dtype="int64"),
        }
    )


def _tables(record: _BatchRecord, n_layers: int, layers: bool = True) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Turn one batch's device tensors into the prompt table and the long layer table (one host copy)."""
    hidden_names = metrics.hidden_statistic_names()
    hidden = torch.stack(record.hidden).cpu()  # (L+1, S, B)
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
    last_block = last_block.cpu()
    nonfinite[-1] |= ~torch.isfinite(last_block[hidden_names.index("mean")])  # or before the final norm
    prompts = pd.DataFrame(
        {
            "n_tokens": record.token_mask.sum(dim=1).cpu().numpy(),
            "nonfinite_layers": nonfinite.sum(dim=0).numpy(),
            "final_activation": hidden[-1, hidden_names.index("mean")].numpy(),
            "final_activation_pre_norm": last_block[hidden_names.index("mean")].numpy(),
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
                "head": pd.array([pd.NA] * (n_hidden * n_stats * batch), dtype="Int64"),
                "value": hidden.reshape(-1).numpy(),
            }
        )
    ]
    layer_level = {
        "attention_entropy": layer_entropy,
        "attention_entropy_normalized": normalized_sums / normalized_counts,
    }
    for name, values in layer_level.items():  # values (L, B) for layers 1..L
        frames.append(
            pd.DataFrame(
                {
                    "batch_position": torch.arange(batch).repeat(n_layers).numpy(),
                    "layer": torch.arange(1, n_layers + 1).repeat_interleave(batch).numpy(),
                    "statistic": name,
                    "head": pd.array([pd.NA] * (n_layers * batch), dtype="Int64"),
                    "value": values.reshape(-1).numpy(),
                }
            )
        )
    n_heads = heads.shape[2]  # heads (L, B, H): one row per layer, prompt and head
    frames.append(
        pd.DataFrame(
            {
                "batch_position": torch.arange(batch).repeat_interleave(n_heads).repeat(n_layers).numpy(),
                "layer": torch.arange(1, n_layers + 1).repeat_interleave(batch * n_heads).numpy(),
                "statistic": "attention_entropy_head",
                "head": pd.array(torch.arange(n_heads).repeat(n_layers * batch).numpy(), dtype="Int64"),
                "value": heads.reshape(-1).numpy(),
            }
        )
    )
    return prompts, pd.concat(frames, ignore_index=True)
