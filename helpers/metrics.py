"""The paper's metrics (Section III-D) and our extras, as pure functions on tensors.

Shapes use B = batch, H = heads, Q = query positions, K = key positions, T = tokens,
D = hidden size. ``token_mask`` is the tokenizer's attention mask (B, T): 1 for a real
token, 0 for padding. Attention rows are summed in float32 (at least) and every further
reduction runs in float64, whatever the model's dtype; and
padding never counts: not as a query row, not as a key, not in a mean or a fraction.
"""

from __future__ import annotations

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
    chunks = []
    for start in range(0, attention.shape[1], heads_per_chunk):
        probs = attention[:, start : start + heads_per_chunk].to(dtype)
        chunks.append(torch.special.xlogy(probs, probs).sum(dim=-1).neg_().to(torch.float64))
    return torch.cat(chunks, dim=1)


def attention_entropy_per_head(rows: torch.Tensor, query_mask: torch.Tensor) -> torch.Tensor:
    """The paper's per-head entropy: sum over real query rows of the row entropy.

    rows: (B, H, Q) from ``row_entropy``; query_mask: (B, Q), 1 for a real token. Returns (B, H) float64.
    """
    return (rows * query_mask[:, None, :].to(torch.float64)).sum(dim=-1)


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
    a threshold relative to the layer's scale) for each eps.

    Runs in the model's precision (at least float32) over the big tensor, summing each token's
    D entries there, and in float64 over tokens; the only full-size temporary is |h|. This is
    the hot loop of ``measure`` (once per layer per batch).
    """
    values = hidden if hidden.dtype in (torch.float32, torch.float64) else hidden.float()
    real = token_mask.to(torch.float64)  # (B, T)
    count = real.sum(dim=1) * values.shape[-1]

    def over_tokens(per_token: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B,), padding dropped
        return (per_token.to(torch.float64) * real).sum(dim=1)

    magnitude = values.abs()
    mean = over_tokens(values.sum(dim=-1)) / count
    mean_square = over_tokens(torch.linalg.vector_norm(values, dim=-1).square()) / count
    std = torch.sqrt((mean_square - mean * mean).clamp_min(0.0))
    stats = {
        "mean": mean,
        "mean_abs": over_tokens(magnitude.sum(dim=-1)) / count,
        "std": std,
        "max_abs": (magnitude.amax(dim=-1).to(torch.float64) * real).amax(dim=1),
    }
    for eps in epsilons:
        stats[f"near_zero_{eps:g}"] = over_tokens((magnitude < eps).sum(dim=-1)) / count
    for eps in epsilons:
        threshold = (eps * std).to(values.dtype)[:, None, None]
        stats[f"near_zero_relative_{eps:g}"] = over_tokens((magnitude < threshold).sum(dim=-1)) / count
    return stats


def sparsity(hidden: torch.Tensor, token_mask: torch.Tensor, eps: float = PAPER_EPSILON) -> torch.Tensor:
    """Fraction of entries with |h| < eps over real tokens x hidden dims: (B, T, D) -> (B,)."""
    return hidden_state_statistics(hidden, token_mask, (eps,))[f"near_zero_{eps:g}"]


def masked_mean(hidden: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens and hidden dims (the paper's final activation): (B, T, D) -> (B,)."""
    return hidden_state_statistics(hidden, token_mask, ())["mean"]
