"""Metric functions on hand-built tensors with known answers."""

from __future__ import annotations

import math

import pytest
import torch

from helpers.core import metrics


def test_uniform_attention_over_n_keys_has_entropy_log_n() -> None:
    for n in (1, 2, 5, 17):
        attention = torch.full((1, 1, 3, n), 1.0 / n)
        assert torch.allclose(metrics.row_entropy(attention), torch.full((1, 1, 3), math.log(n), dtype=torch.float64))


def test_one_hot_attention_has_zero_entropy() -> None:
    attention = torch.zeros(2, 3, 4, 4)
    attention[..., 0] = 1.0
    assert torch.equal(metrics.row_entropy(attention), torch.zeros(2, 3, 4, dtype=torch.float64))


def test_paper_entropy_sums_real_query_rows_only() -> None:
    # two heads, uniform over 4 keys; query row 3 is padding and must not count
    attention = torch.full((1, 2, 4, 4), 0.25)
    query_mask = torch.tensor([[1, 1, 1, 0]])
    per_head = metrics.attention_entropy_per_head(metrics.row_entropy(attention), query_mask)
    assert torch.allclose(per_head, torch.full((1, 2), 3 * math.log(4), dtype=torch.float64))


def test_entropy_is_reduced_in_float64_for_half_precision_input() -> None:
    attention = torch.full((1, 1, 2, 3), 1.0 / 3, dtype=torch.bfloat16)
    rows = metrics.row_entropy(attention)
    assert rows.dtype == torch.float64
    assert rows[0, 0, 0].item() == pytest.approx(math.log(3), rel=1e-2)  # bf16 stores 1/3 to 3 digits


def test_entropy_in_head_chunks_equals_all_heads_at_once() -> None:
    torch.manual_seed(0)
    attention = torch.softmax(torch.randn(2, 5, 7, 7), dim=-1)
    assert torch.allclose(metrics.row_entropy(attention, 1), metrics.row_entropy(attention, 5), rtol=1e-6)


def test_normalized_entropy_of_causal_uniform_rows_is_one_and_skips_single_key_rows() -> None:
    n = 5
    allowed = torch.tril(torch.ones(n, n, dtype=torch.bool))[None, None]
    attention = allowed / allowed.sum(-1, keepdim=True)  # row i uniform over its i+1 keys
    rows = metrics.row_entropy(attention.float())
    sums, counts = metrics.normalized_row_entropy_sums(rows, torch.ones(1, n), allowed.sum(-1))
    assert counts.item() == n - 1  # row 0 has a single key: left out
    assert sums.item() == pytest.approx(n - 1)


def test_normalized_entropy_of_one_hot_rows_is_zero() -> None:
    attention = torch.zeros(1, 1, 3, 3)
    attention[..., 0] = 1.0
    n_keys = torch.full((1, 1, 3), 3)
    sums, counts = metrics.normalized_row_entropy_sums(metrics.row_entropy(attention), torch.ones(1, 3), n_keys)
    assert counts.item() == 3 and sums.item() == 0.0


def test_known_sparsity_ignores_padding() -> None:
    hidden = torch.tensor([[[0.0, 0.5, 0.005, 2.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]])
    token_mask = torch.tensor([[1, 1, 0]])  # third token is padding (all zeros) and must not count
    assert metrics.hidden_state_statistics(hidden, token_mask, (0.01,))["near_zero_0.01"].item() == pytest.approx(2 / 8)
    assert metrics.hidden_state_statistics(hidden, token_mask, (0.001,))["near_zero_0.001"].item() == pytest.approx(
        1 / 8
    )
    assert metrics.hidden_state_statistics(hidden, token_mask, (1.5,))["near_zero_1.5"].item() == pytest.approx(7 / 8)


def test_hidden_statistics_match_torch_on_real_tokens() -> None:
    torch.manual_seed(0)
    hidden = torch.randn(2, 5, 7)
    token_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    stats = metrics.hidden_state_statistics(hidden, token_mask)
    for b in range(2):
        real = hidden[b, token_mask[b].bool()].double()
        assert stats["mean"][b].item() == pytest.approx(real.mean().item(), rel=1e-6)
        assert stats["std"][b].item() == pytest.approx(real.std(unbiased=False).item(), rel=1e-6)
        assert stats["mean_abs"][b].item() == pytest.approx(real.abs().mean().item(), rel=1e-6)
        assert stats["max_abs"][b].item() == pytest.approx(real.abs().max().item(), rel=1e-7)


def test_scale_relative_sparsity_uses_the_layers_own_std() -> None:
    # entries -2, 2 (x3) and 0.05: std is about 1.79, so 0.05 < 0.1 * std but 2 is not
    hidden = torch.tensor([[[-2.0, 2.0], [2.0, 2.0], [0.05, 0.0]]])
    token_mask = torch.tensor([[1, 1, 1]])
    stats = metrics.hidden_state_statistics(hidden, token_mask)
    std = stats["std"].item()
    assert 0.05 < 0.1 * std
    assert stats["near_zero_relative_0.1"].item() == pytest.approx(2 / 6)
    assert stats["near_zero_relative_0.001"].item() == pytest.approx(1 / 6)  # only the exact zero


def test_nonfinite_tokens_are_counted_and_padding_never_leaks_in() -> None:
    hidden = torch.ones(2, 4, 3)
    hidden[0, 1, 2] = float("inf")  # a real token of prompt 0
    hidden[1, 3] = float("nan")  # padding of prompt 1: must change nothing
    token_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    stats = metrics.hidden_state_statistics(hidden, token_mask)
    assert stats["nonfinite_tokens"].tolist() == [0.25, 0.0]
    assert stats["mean"][1].item() == 1.0 and stats["max_abs"][1].item() == 1.0 and stats["std"][1].item() == 0.0
    assert not math.isfinite(stats["mean"][0].item())


def test_padding_rows_of_nan_do_not_reach_the_entropy() -> None:
    rows = torch.tensor([[[0.5, float("nan")]]], dtype=torch.float64)  # (B=1, H=1, Q=2), row 2 is padding
    assert metrics.attention_entropy_per_head(rows, torch.tensor([[1, 0]])).item() == 0.5


def test_hoyer_sparsity_known_answers_and_scale_free() -> None:
    one_hot, flat = torch.tensor([0.0, 0.0, 3.0, 0.0]), torch.tensor([1.0, -1.0, 1.0, -1.0])
    for vector, expected in ((one_hot, 1.0), (flat, 0.0), (torch.zeros(4), 1.0)):
        value = metrics.hoyer_sparsity(vector.abs().sum(), vector.norm(), 4)
        assert value.item() == pytest.approx(expected)
    torch.manual_seed(0)
    vector = torch.randn(16)
    scaled = 1000.0 * vector
    assert metrics.hoyer_sparsity(vector.abs().sum(), vector.norm(), 16).item() == pytest.approx(
        metrics.hoyer_sparsity(scaled.abs().sum(), scaled.norm(), 16).item(), rel=1e-6
    )


def test_layer_hoyer_is_the_mean_over_real_tokens() -> None:
    hidden = torch.tensor([[[0.0, 0.0, 5.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0.0, 7.0, 0.0, 0.0]]])
    token_mask = torch.tensor([[1, 1, 0]])  # tokens: one-hot (1.0), flat (0.0); the padding (1.0) must not count
    assert metrics.hidden_state_statistics(hidden, token_mask)["hoyer"].item() == pytest.approx(0.5)
