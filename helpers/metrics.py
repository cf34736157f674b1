"""The paper's metrics (Section III-D) and our extras, as pure functions on tensors.

Shapes use B = batch, H = heads, Q = query positions, K = key positions, T = tokens,
D = hidden size. ``token_mask`` is the tokenizer's attention mask (B, T): 1 for a real
token, 0 for padding. Attention rows are summed in float32 (at least) and every further
reduction runs in float64, whatever the model's dtype; and
padding never counts: not as a query row, not as a key, not in a mean or a fraction.
"""

from __future__ import annotations

import math

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
    in one stacked op. This is the hot loop of ``measure`` (once per layer per batch).
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
    stats = {
        "mean": mean,
        "mean_abs": first[2],
        "std": std,
        "max_abs": torch.where(is_real, magnitude.amax(dim=-1).to(torch.float64), 0.0).amax(dim=1),
    }
    stats |= {f"near_zero_{eps:g}": first[3 + i] for i, eps in enumerate(epsilons)}
    stats |= {f"near_zero_relative_{eps:g}": second[i] for i, eps in enumerate(epsilons)}
    stats["hoyer"] = second[-2]
    stats["nonfinite_tokens"] = second[-1]
    return stats


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


def sparsity(hidden: torch.Tensor, token_mask: torch.Tensor, eps: float = PAPER_EPSILON) -> torch.Tensor:
    """Fraction of entries with |h| < eps over real tokens x hidden dims: (B, T, D) -> (B,)."""
    return hidden_state_statistics(hidden, token_mask, (eps,))[f"near_zero_{eps:g}"]


def masked_mean(hidden: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens and hidden dims (the paper's final activation): (B, T, D) -> (B,)."""
    return hidden_state_statistics(hidden, token_mask, ())["mean"]
