"""The paper's metrics (Section III-D) and our extras, as pure functions on tensors.

Shapes use B = batch, H = heads, Q = query positions, K = key positions, T = tokens,
D = hidden size. ``token_mask`` is the tokenizer's attention mask (B, T): 1 for a real
token, 0 for padding. Attention rows are summed in float32 (at least) and every further
reduction runs in float64, whatever the model's dtype; and
padding never counts: not as a query row, not as a key, not in a mean or a fraction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

SPARSITY_EPSILONS: tuple[float, ...] = (0.001, 0.01, 0.1)
"""Thresholds for near-zero fractions; 0.01 is the paper's."""

PAPER_EPSILON: float = 0.01


def row_entropy(attention: torch.Tensor, heads_per_chunk: int = 1) -> torch.Tensor:
    """Shannon entropy (nats) of each attention row: (B, H, Q, K) -> (B, H, Q) float64.

    ``-sum_j A[i, j] log A[i, j]`` with ``0 log 0 = 0``. Each row is summed in float32 (at
    least), a few heads at a time, so the extra memory is a small slice of one attention map,
    never a float64 copy of it.
    """
    dtype = torch.promote_types(attention.dtype, torch.float32)
    tiny = torch.finfo(dtype).tiny  # p log max(p, tiny): exactly 0 at p = 0, off by < 1e-36 below tiny
    chunks = []
    for start in range(0, attention.shape[1], heads_per_chunk):
        probs = attention[:, start : start + heads_per_chunk].to(dtype)
        terms = probs.clamp_min(tiny).log_().mul_(probs)  # one temporary; about 2x faster than xlogy
        chunks.append(terms.sum(dim=-1).neg_().to(torch.float64))
    return torch.cat(chunks, dim=1)


QUERY_BLOCK = 512
"""Query rows per block of ``attention_row_entropy`` when the mask is materialised (keys no row of a block
may attend to are skipped: a sliding window of w keys costs O(T (w + block)), not O(T^2))."""

KERNELS = ("auto", "flash", "blocked")


def attention_row_entropy(
    query: torch.Tensor,
    key: torch.Tensor,
    *,
    scale: float,
    mask: torch.Tensor | None = None,
    is_causal: bool = False,
    blocks: Sequence[tuple[int, int, int, int]] | None = None,
    kernel: str = "auto",
) -> torch.Tensor:
    """Shannon entropy (nats) of every softmax attention row, without the attention map.

    query (B, H, Q, D), key (B, H_kv, K, D) with H a multiple of H_kv (grouped-query attention:
    query head h uses key head h // (H / H_kv), as transformers' ``repeat_kv``); the scores are
    s_ij = scale * <q_i, k_j> where ``mask`` allows: a bool (B|1, 1|H, Q, K), True where query i
    may attend to key j, or an additive float mask of 0 (allowed) and -inf/the dtype's minimum;
    ``None`` means causal (i >= j) if ``is_causal``, else every key. Returns (B, H, Q) in float32
    (float64 for float64 input), whatever the input dtype; a row with no allowed key gets 0.

    With p_ij = softmax_j(s_ij), H_i = logsumexp_j s_ij - sum_j p_ij s_ij, and
    sum_j p_ij s_ij = scale * <q_i, sum_j p_ij k_j>: an attention call with the keys as the
    values. ``kernel="flash"`` (the default on CPU) makes that call with torch's fused CPU
    flash kernel, which returns the log-sum-exp too: O(Q D) memory, no Q x K tensor.
    ``"blocked"`` (the default elsewhere, e.g. CUDA) computes -sum_j p_ij log p_ij from the
    scores of ``QUERY_BLOCK``-row blocks in plain torch: exact on any device, memory O(block x K).
    The keys are centred first (k_j - mean_j k_j): every score of a row moves by the same
    constant, so the probabilities are unchanged and the two terms that cancel are smaller.
    ``blocks``: (first row, end row, first key, end key) ranges from ``mask_key_ranges``, to reuse.
    """
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    if kernel == "auto":
        kernel = "flash" if query.device.type == "cpu" else "blocked"
    dtype = torch.promote_types(query.dtype, torch.float32)
    q = query.to(dtype)
    k = key.to(dtype)
    k = k - k.mean(dim=-2, keepdim=True)  # a new tensor: the caller's key is never changed
    groups = q.shape[1] // k.shape[1]
    if groups > 1:  # repeat each key head for its query heads (after centring: less to copy)
        k = k[:, :, None].expand(k.shape[0], k.shape[1], groups, *k.shape[2:]).reshape(*q.shape[:2], *k.shape[2:])
    allowed = as_allowed(mask)
    if allowed is None:
        block_entropy = _flash_entropy if kernel == "flash" else _blocked_entropy
        return block_entropy(q, k, scale, None, is_causal)
    if blocks is None:
        blocks = mask_key_ranges(allowed, QUERY_BLOCK)
    rows = torch.zeros(q.shape[:-1], dtype=dtype, device=q.device)
    for first, end, first_key, end_key in blocks:
        if end_key > first_key:
            block_mask = allowed[..., first:end, first_key:end_key]
            q_block, k_block = q[..., first:end, :], k[..., first_key:end_key, :]
            if kernel == "flash":
                rows[..., first:end] = _flash_entropy(q_block, k_block, scale, block_mask, False)
            else:
                rows[..., first:end] = _blocked_entropy(q_block, k_block, scale, block_mask, False)
    return rows


def mask_key_ranges(allowed: torch.Tensor, block: int = QUERY_BLOCK) -> list[tuple[int, int, int, int]]:
    """For each block of ``block`` query rows, the range of keys any of its rows may attend to.

    allowed: bool (B|1, 1|H, Q, K). Returns (first row, end row, first key, end key) per block;
    end key = first key when no row of the block may attend to anything (padding only).
    One pass over the mask; with a single block the whole key range is returned unscanned.
    """
    n_queries, n_keys = allowed.shape[-2:]
    if n_queries <= block:
        return [(0, n_queries, 0, n_keys)]
    ranges = []
    for first in range(0, n_queries, block):
        end = min(first + block, n_queries)
        columns = allowed[..., first:end, :].any(dim=-2).reshape(-1, n_keys).any(dim=0).nonzero()
        if len(columns) == 0:
            ranges.append((first, end, 0, 0))
        else:
            ranges.append((first, end, int(columns[0]), int(columns[-1]) + 1))
    return ranges


def as_allowed(mask: torch.Tensor | None, check_bias: bool = True) -> torch.Tensor | None:
    """A bool mask (True = may attend) from a bool or an additive (0 / -inf or the dtype's minimum) mask.

    With ``check_bias``, an additive mask that is not 0 where allowed (a bias such as ALiBi) raises.
    """
    if mask is None or mask.dtype == torch.bool:
        return mask
    allowed = mask > torch.finfo(mask.dtype).min / 2
    if check_bias and bool((mask.masked_fill(~allowed, 0.0) != 0).any()):
        raise ValueError(
            "attention_row_entropy: an additive mask with a bias (non-zero where allowed) is not supported"
        )
    return allowed


def _flash_entropy(
    q: torch.Tensor, k: torch.Tensor, scale: float, allowed: torch.Tensor | None, is_causal: bool
) -> torch.Tensor:
    """Row entropies from torch's CPU flash kernel: logsumexp minus scale * <q_i, sum_j p_ij k_j>."""
    additive = None
    if allowed is not None:
        zero = torch.zeros((), dtype=q.dtype, device=q.device)
        additive = torch.where(allowed, zero, zero - float("inf"))
    # a row with no allowed key comes back as output 0, logsumexp 0: entropy 0
    expected_keys, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        q, k, k, 0.0, is_causal, attn_mask=additive, scale=scale
    )
    return lse.sub_(expected_keys.mul_(q).sum(dim=-1).mul_(scale))  # in place: no more Q x D temporaries


def _blocked_entropy(
    q: torch.Tensor, k: torch.Tensor, scale: float, allowed: torch.Tensor | None, is_causal: bool
) -> torch.Tensor:
    """Row entropies -sum_j p_ij log p_ij from the scores, a block of query rows at a time (any device)."""
    n_queries, n_keys = q.shape[-2], k.shape[-2]
    per_row = max(1, q.shape[0] * q.shape[1] * n_keys)
    rows_per_block = max(1, min(QUERY_BLOCK, (1 << 24) // per_row))  # scores of at most 16M entries at once
    out = []
    for first in range(0, n_queries, rows_per_block):
        end = min(first + rows_per_block, n_queries)
        scores = torch.matmul(q[..., first:end, :], k.transpose(-1, -2)).mul_(scale)
        block_allowed: torch.Tensor | None
        if allowed is not None:
            block_allowed = allowed[..., first:end, :]
        else:
            positions = torch.arange(first, end, device=q.device)[:, None]
            block_allowed = positions >= torch.arange(n_keys, device=q.device) if is_causal else None
        if block_allowed is not None:
            scores = scores.masked_fill(~block_allowed, float("-inf"))
        log_p = scores - torch.logsumexp(scores, dim=-1, keepdim=True)  # NaN only in rows with no allowed key
        terms = log_p.exp() * log_p
        if block_allowed is not None:
            terms = torch.where(block_allowed, terms, 0.0)
        out.append(terms.sum(dim=-1).neg_())
    return torch.cat(out, dim=-1)


def attention_entropy_per_head(rows: torch.Tensor, query_mask: torch.Tensor) -> torch.Tensor:
    """The paper's per-head entropy: sum over real query rows of the row entropy.

    rows: (B, H, Q) from ``row_entropy``; query_mask: (B, Q), 1 for a real token. Returns (B, H) float64.
    """
    return torch.where(query_mask[:, None, :].bool(), rows, 0.0).sum(dim=-1)


def normalized_row_entropy_sums(
    rows: torch.Tensor, query_mask: torch.Tensor, n_keys: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum and count of row entropy / log(number of keys the row may attend to).

    rows: (B, H, Q) from ``row_entropy``; query_mask: (B, Q); n_keys: the number of keys each
    query row may attend to, broadcastable to (B, H, Q). Rows of padding and rows with a single
    allowed key (entropy 0 by construction) are left out.
    Returns (sums, counts), each (B,) float64, summed over heads and rows.
    """
    n_keys = n_keys.to(torch.float64).expand(rows.shape)
    keep = (n_keys > 1) & query_mask[:, None, :].bool()
    ratio = torch.where(keep, rows / torch.log(n_keys.clamp_min(2.0)), torch.zeros_like(rows))
    return ratio.sum(dim=(1, 2)), keep.sum(dim=(1, 2)).to(torch.float64)


def hidden_state_statistics(
    hidden: torch.Tensor, token_mask: torch.Tensor, epsilons: tuple[float, ...] = SPARSITY_EPSILONS
) -> dict[str, torch.Tensor]:
    """Per-prompt statistics of one layer's hidden states over real tokens x hidden dims.

    hidden: (B, T, D); token_mask: (B, T). Returns a dict of (B,) float64 tensors:
    ``mean``, ``mean_abs``, ``std`` (population), ``max_abs``, ``near_zero_<eps>`` (fraction
    of entries with |h| < eps) and ``near_zero_relative_<eps>`` (fraction with |h| < eps * std,
    a threshold relative to the layer's scale) for each eps, ``hoyer``: the mean over real tokens
    of each token's Hoyer sparsity (``hoyer_sparsity``: scale-free, no threshold), and ``nonfinite_tokens``: the
    fraction of real tokens whose hidden vector holds an inf or NaN (read off each token's sum
    of |h|, which is non-finite exactly then, or when it overflows the float32 range itself).

    Runs in the model's precision (at least float32) over the big tensor, summing each token's
    D entries there (counts in int32), and in float64 over tokens, all per-token sums reduced
    in one stacked op. The torch route and the reference: ``measure`` runs ``kernels.hidden_statistics``
    where the CPU kernels are built, which gives exactly these numbers in one call.
    """
    values = hidden if hidden.dtype in (torch.float32, torch.float64) else hidden.float()
    is_real = token_mask.bool()  # (B, T)
    count = is_real.sum(dim=1).to(torch.float64) * values.shape[-1]

    def over_tokens(per_token: list[torch.Tensor]) -> torch.Tensor:  # S x (B, T) -> (S, B), padding dropped
        stacked = torch.stack([t.to(torch.float64) for t in per_token])
        return torch.where(is_real, stacked, 0.0).sum(dim=-1) / count  # even inf/NaN padding drops out

    def below(threshold: float | torch.Tensor) -> torch.Tensor:  # (B, T): entries of each token with |h| < threshold
        return (magnitude < threshold).view(torch.uint8).sum(dim=-1, dtype=torch.int32)

    magnitude = values.abs()  # the only full-size temporary besides the comparison masks
    magnitude_per_token = magnitude.sum(dim=-1)
    squares = torch.linalg.vector_norm(values, dim=-1).square()
    first = over_tokens([values.sum(dim=-1), squares, magnitude_per_token, *(below(eps) for eps in epsilons)])
    mean, mean_square = first[0], first[1]
    std = torch.sqrt((mean_square - mean * mean).clamp_min(0.0))
    relative = [below((eps * std).to(values.dtype)[:, None, None]) for eps in epsilons]
    size = values.shape[-1]
    hoyer = hoyer_sparsity(magnitude_per_token, squares.sqrt(), size) * size  # per token, not per entry
    nonfinite = (~torch.isfinite(magnitude_per_token)) * size  # counted per token, not per entry
    second = over_tokens([*relative, hoyer, nonfinite])
    max_abs = torch.where(is_real, magnitude.amax(dim=-1).to(torch.float64), 0.0).amax(dim=1)
    values_in_order = [mean, first[2], std, max_abs, *first[3:], *second]
    return dict(zip(hidden_statistic_names(epsilons), values_in_order, strict=True))


def hidden_statistic_names(epsilons: tuple[float, ...] = SPARSITY_EPSILONS) -> list[str]:
    """The statistics of ``hidden_state_statistics`` in its order (also the rows of ``kernels.hidden_statistics``)."""
    return [
        "mean",
        "mean_abs",
        "std",
        "max_abs",
        *(f"near_zero_{eps:g}" for eps in epsilons),
        *(f"near_zero_relative_{eps:g}" for eps in epsilons),
        "hoyer",
        "nonfinite_tokens",
    ]


def hoyer_sparsity(l1: torch.Tensor, l2: torch.Tensor, size: int) -> torch.Tensor:
    """Hoyer's sparsity of vectors of ``size`` entries from their L1 and L2 norms (any equal shapes), float64.

    ``(sqrt(n) - L1/L2) / (sqrt(n) - 1)``: 0 when every entry has the same magnitude, 1 when a
    single entry is non-zero (a zero vector counts as 1). Scale-free: multiplying a vector by
    any constant leaves it unchanged, so no threshold decides it (Hoyer 2004, JMLR 5:1457).
    """
    root = math.sqrt(size)
    l1, l2 = l1.to(torch.float64), l2.to(torch.float64)
    ratio = torch.where(l2 > 0, l1 / torch.where(l2 > 0, l2, 1.0), 1.0)
    return (root - ratio) / (root - 1)


def mean_pooled(hidden: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
    """Each prompt's hidden vector averaged over its real tokens: (B, T, D) -> (B, D) float32.

    One batched product of the hidden states with each prompt's token weights (1/count on real tokens,
    0 on padding), summed in float32 whatever the model's dtype; padding positions are zeroed first only
    if they hold an inf or NaN (which a zero weight would not remove).
    """
    values = hidden if hidden.dtype == torch.float32 else hidden.float()
    weights = pooling_weights(token_mask)
    pooled = torch.bmm(weights[:, None, :], values)[:, 0]
    if not bool(torch.isfinite(pooled).all()):  # rare: a non-finite value, on a real token or on padding
        pooled = torch.bmm(weights[:, None, :], torch.where(token_mask.bool()[..., None], values, 0.0))[:, 0]
    return pooled


def pooling_weights(token_mask: torch.Tensor) -> torch.Tensor:
    """Each token's weight in its prompt's mean (``mean_pooled``): 1 / real tokens on real tokens, 0 on padding, (B, T)
    float32."""
    weights = token_mask.to(torch.float32)
    return weights / weights.sum(dim=1, keepdim=True).clamp_min(1.0)
