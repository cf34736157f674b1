"""The paper's metrics (Section III-D) and our extras, as pure functions on tensors.

Shapes use B = batch, H = heads, Q = query positions, K = key positions, T = tokens,
D = hidden size. ``token_mask`` is the tokenizer's attention mask (B, T): 1 for a real
token, 0 for padding. Every reduction runs in float64 whatever the input dtype, and
padding never counts: not as a query row, not as a key, not in a mean or a fraction.
"""

from __future__ import annotations

import torch

SPARSITY_EPSILONS: tuple[float, ...] = (0.001, 0.01, 0.1)
"""Thresholds for near-zero fractions; 0.01 is the paper's."""

PAPER_EPSILON: float = 0.01


def row_entropy(attention: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of each attention row: (..., Q, K) -> (..., Q).

    ``-sum_j A[i, j] log A[i, j]`` with ``0 log 0 = 0``.
    """
    probs = attention.to(torch.float64)
    return -torch.special.xlogy(probs, probs).sum(dim=-1)


def attention_entropy_per_head(attention: torch.Tensor, query_mask: torch.Tensor) -> torch.Tensor:
    """The paper's per-head entropy: sum over real query rows of the row entropy.

    attention: (B, H, Q, K) probabilities; query_mask: (B, Q), 1 for a real token.
    Returns (B, H) float64.
    """
    rows = row_entropy(attention)  # (B, H, Q)
    return (rows * query_mask[:, None, :].to(torch.float64)).sum(dim=-1)


def normalized_row_entropy_sums(
    attention: torch.Tensor, query_mask: torch.Tensor, key_allowed: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum and count of row entropy / log(number of keys the row may attend to).

    attention: (B, H, Q, K); query_mask: (B, Q); key_allowed: bool, broadcastable to
    (B, H, Q, K), True where query i may attend to key j. Rows of padding and rows with a
    single allowed key (entropy 0 by construction) are left out.
    Returns (sums, counts), each (B,) float64, summed over heads and rows.
    """
    rows = row_entropy(attention)  # (B, H, Q)
    n_keys = key_allowed.expand(attention.shape).sum(dim=-1).to(torch.float64)  # (B, H, Q)
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
    """
    values = hidden.to(torch.float64)
    mask = token_mask.to(torch.float64)[:, :, None]  # (B, T, 1)
    count = mask.sum(dim=(1, 2)) * values.shape[-1]
    magnitude = values.abs()
    mean = (values * mask).sum(dim=(1, 2)) / count
    centred = (values - mean[:, None, None]) * mask
    stats = {
        "mean": mean,
        "mean_abs": (magnitude * mask).sum(dim=(1, 2)) / count,
        "std": torch.sqrt((centred * centred).sum(dim=(1, 2)) / count),
        "max_abs": (magnitude * mask).amax(dim=(1, 2)),
    }
    for eps in epsilons:
        stats[f"near_zero_{eps:g}"] = ((magnitude < eps) * mask).sum(dim=(1, 2)) / count
    for eps in epsilons:
        threshold = (eps * stats["std"])[:, None, None]
        stats[f"near_zero_relative_{eps:g}"] = ((magnitude < threshold) * mask).sum(dim=(1, 2)) / count
    return stats


def sparsity(hidden: torch.Tensor, token_mask: torch.Tensor, eps: float = PAPER_EPSILON) -> torch.Tensor:
    """Fraction of entries with |h| < eps over real tokens x hidden dims: (B, T, D) -> (B,)."""
    return hidden_state_statistics(hidden, token_mask, (eps,))[f"near_zero_{eps:g}"]


def masked_mean(hidden: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens and hidden dims (the paper's final activation): (B, T, D) -> (B,)."""
    return hidden_state_statistics(hidden, token_mask, ())["mean"]
