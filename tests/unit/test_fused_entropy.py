"""The attention entropy from the log-sum-exp (``metrics.attention_row_entropy``): known answers on hand-built q, k.

H_i = logsumexp_j s_ij - sum_j p_ij s_ij, with sum_j p_ij s_ij from an attention call whose
values are the keys. Both kernels are checked: "flash" (torch's CPU flash kernel, the default
on CPU) and "blocked" (plain torch, the default on other devices).
"""

from __future__ import annotations

import math

import pytest
import torch

from helpers.core import metrics

KERNELS = ["flash", "blocked"]


def entropy_of(weights: list[float]) -> float:
    total = sum(weights)
    return -sum(w / total * math.log(w / total) for w in weights if w > 0)


def keys_with_scores(scores: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """One query row whose scores against the keys are ``scores`` (scale 1): q = (1, 0), k_j = (s_j, 0)."""
    query = torch.tensor([[[[1.0, 0.0]]]])  # (B=1, H=1, Q=1, D=2)
    key = torch.tensor([[[[s, 0.0] for s in scores]]])  # (1, 1, K, 2)
    return query, key


@pytest.mark.parametrize("kernel", KERNELS)
def test_equal_scores_give_log_of_the_number_of_allowed_keys(kernel: str) -> None:
    n = 6
    query, key = torch.zeros(1, 2, n, 4), torch.randn(1, 2, n, 4)  # q = 0: every score is 0
    causal = metrics.attention_row_entropy(query, key, scale=1.0, is_causal=True, kernel=kernel)
    full = metrics.attention_row_entropy(query, key, scale=1.0, kernel=kernel)
    expected_causal = torch.tensor([math.log(i + 1) for i in range(n)])
    assert torch.allclose(causal, expected_causal.expand(1, 2, n), atol=1e-6)
    assert torch.allclose(full, torch.full((1, 2, n), math.log(n)), atol=1e-6)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("weights", [[1.0, 3.0], [1.0, 1.0, 2.0, 4.0], [1.0, 1e-3, 1e-6]])
def test_known_scores_give_the_entropy_of_their_softmax(kernel: str, weights: list[float]) -> None:
    query, key = keys_with_scores([math.log(w) for w in weights])  # softmax(log w) = w / sum w
    rows = metrics.attention_row_entropy(query, key, scale=1.0, kernel=kernel)
    assert rows.item() == pytest.approx(entropy_of(weights), abs=1e-6)


@pytest.mark.parametrize("kernel", KERNELS)
def test_scale_multiplies_the_scores(kernel: str) -> None:
    query, key = keys_with_scores([0.0, math.log(3.0)])
    rows = metrics.attention_row_entropy(query, key, scale=2.0, kernel=kernel)  # weights 1 and 3^2
    assert rows.item() == pytest.approx(entropy_of([1.0, 9.0]), abs=1e-6)


@pytest.mark.parametrize("kernel", KERNELS)
def test_masked_keys_do_not_count_and_a_row_without_keys_is_zero(kernel: str) -> None:
    query, key = keys_with_scores([0.0, 0.0, math.log(2.0), 5.0])
    allowed = torch.tensor([True, True, True, False])[None, None, None, :]  # the largest score is masked
    rows = metrics.attention_row_entropy(query, key, scale=1.0, mask=allowed, kernel=kernel)
    assert rows.item() == pytest.approx(entropy_of([1.0, 1.0, 2.0]), abs=1e-6)
    additive = torch.where(allowed, 0.0, torch.finfo(torch.float32).min)  # eager's additive form: the same
    assert metrics.attention_row_entropy(query, key, scale=1.0, mask=additive, kernel=kernel).item() == pytest.approx(
        rows.item(), abs=1e-7
    )
    nothing = torch.zeros_like(allowed)
    assert metrics.attention_row_entropy(query, key, scale=1.0, mask=nothing, kernel=kernel).item() == 0.0


def test_padding_and_sliding_window_rows_uniform_over_their_window() -> None:
    # q = 0: each row is uniform over the keys the mask allows, so its entropy is log(count)
    n, window = 9, 3
    causal = torch.tril(torch.ones(n, n, dtype=torch.bool))
    band = causal & ~torch.tril(torch.ones(n, n, dtype=torch.bool), diagonal=-window)
    key_is_real = torch.tensor([[True] * n, [False] * 4 + [True] * 5])  # prompt 1 is left-padded
    allowed = band[None, None] & key_is_real[:, None, None, :]  # (2, 1, n, n)
    for kernel in KERNELS:
        rows = metrics.attention_row_entropy(
            torch.zeros(2, 3, n, 4), torch.randn(2, 3, n, 4), scale=1.0, mask=allowed, kernel=kernel
        )
        counts = allowed.sum(-1).expand(2, 3, n)
        expected = torch.where(counts > 0, counts.clamp_min(1).double().log(), 0.0)
        assert torch.allclose(rows.double(), expected, atol=1e-6), kernel


def test_query_blocks_skip_only_keys_no_row_of_the_block_may_see() -> None:
    n, window, block = 10, 3, 4
    causal = torch.tril(torch.ones(n, n, dtype=torch.bool))
    band = (causal & ~torch.tril(torch.ones(n, n, dtype=torch.bool), diagonal=-window))[None, None]
    assert metrics.mask_key_ranges(band, block) == [(0, 4, 0, 4), (4, 8, 2, 8), (8, 10, 6, 10)]
    padding_only = band.clone()
    padding_only[..., :4, :] = False
    assert metrics.mask_key_ranges(padding_only, block)[0] == (0, 4, 0, 0)
    assert metrics.mask_key_ranges(band, n) == [(0, n, 0, n)]  # one block: nothing to scan


@pytest.mark.parametrize("kernel", KERNELS)
def test_blocked_rows_equal_one_block(kernel: str, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    n = 37
    query, key = torch.randn(2, 3, n, 8), torch.randn(2, 3, n, 8)
    causal = torch.tril(torch.ones(n, n, dtype=torch.bool))
    band = causal & ~torch.tril(torch.ones(n, n, dtype=torch.bool), diagonal=-5)
    allowed = band[None, None] & torch.tensor([[True] * n, [False] * 11 + [True] * (n - 11)])[:, None, None, :]
    whole = metrics.attention_row_entropy(query, key, scale=0.3, mask=allowed, kernel=kernel)
    monkeypatch.setattr(metrics, "QUERY_BLOCK", 4)
    blocked = metrics.attention_row_entropy(query, key, scale=0.3, mask=allowed, kernel=kernel)
    assert torch.allclose(blocked, whole, atol=1e-5)


def test_the_two_kernels_agree_with_float64_softmax_on_random_scores() -> None:
    torch.manual_seed(1)
    n, scale = 300, 0.125
    query, key = torch.randn(2, 4, n, 64) * 2, torch.randn(2, 4, n, 64) * 2 + 1
    allowed = torch.tril(torch.ones(n, n, dtype=torch.bool))[None, None] & (torch.rand(2, 1, 1, n) > 0.2)
    allowed[..., torch.arange(n), torch.arange(n)] = True  # every row keeps a key
    scores = (query.double() @ key.double().transpose(-1, -2) * scale).masked_fill(~allowed, float("-inf"))
    log_p = scores - scores.logsumexp(-1, keepdim=True)
    exact = -torch.where(allowed, log_p.exp() * log_p, 0.0).sum(-1)
    for kernel in KERNELS:
        rows = metrics.attention_row_entropy(query, key, scale=scale, mask=allowed, kernel=kernel).double()
        assert (rows - exact).abs().max() < 2e-5, kernel  # per row, in nats
        assert rows.sum().item() == pytest.approx(exact.sum().item(), rel=1e-6), kernel


def test_keys_with_a_large_common_part_keep_float32_accuracy() -> None:
    # every score shifted by 1000: the probabilities (and entropy) are those of the small part;
    # without centring the keys, logsumexp and E[s] would both be ~1000 and cancel to ~1e-4.
    weights = [1.0, 2.0, 3.0, 4.0]
    query = torch.tensor([[[[1.0, 1.0]]]])
    key = torch.tensor([[[[math.log(w), 1000.0] for w in weights]]])
    for kernel in KERNELS:
        rows = metrics.attention_row_entropy(query, key, scale=1.0, kernel=kernel)
        assert rows.item() == pytest.approx(entropy_of(weights), abs=2e-6), kernel


def test_half_precision_inputs_are_reduced_in_float32() -> None:
    torch.manual_seed(2)
    query, key = torch.randn(1, 2, 16, 8, dtype=torch.bfloat16), torch.randn(1, 2, 16, 8, dtype=torch.bfloat16)
    rows = metrics.attention_row_entropy(query, key, scale=0.5, is_causal=True)
    reference = metrics.attention_row_entropy(query.float(), key.float(), scale=0.5, is_causal=True)
    assert rows.dtype == torch.float32
    assert torch.equal(rows, reference)  # the same float32 computation on the same (bf16-exact) numbers


@pytest.mark.parametrize("kernel", KERNELS)
def test_grouped_key_heads_equal_repeated_key_heads(kernel: str) -> None:
    torch.manual_seed(3)
    query, key = torch.randn(2, 6, 12, 8), torch.randn(2, 2, 12, 8)  # 3 query heads per key head
    repeated = key.repeat_interleave(3, dim=1)  # transformers' repeat_kv order
    original = key.clone()
    grouped = metrics.attention_row_entropy(query, key, scale=0.4, is_causal=True, kernel=kernel)
    assert torch.allclose(grouped, metrics.attention_row_entropy(query, repeated, scale=0.4, is_causal=True), atol=1e-6)
    assert torch.equal(key, original)  # and the caller's keys are left as they were


def test_a_bias_in_an_additive_mask_is_refused() -> None:
    query, key = keys_with_scores([0.0, 1.0])
    biased = torch.tensor([0.0, 0.5])[None, None, None, :]  # an ALiBi-like bias: not a mask
    with pytest.raises(ValueError, match="bias"):
        metrics.attention_row_entropy(query, key, scale=1.0, mask=biased)
    with pytest.raises(ValueError, match="kernel"):
        metrics.attention_row_entropy(query, key, scale=1.0, kernel="cuda")
