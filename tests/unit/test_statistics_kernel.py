"""The statistics kernels (helpers.core.kernels) against their torch references, on hand-built tensors.

``hidden_statistics`` must give ``metrics.hidden_state_statistics`` and ``metrics.mean_pooled`` bit for bit
(counts exactly, and every float too: the per-row sums repeat torch's summation order); ``attention_statistics``
the ``metrics`` attention reductions to float64 rounding. Widths below, at and around the vector width and the
cascade's steps, float32/bfloat16/float16, left and right padding, inf and NaN on real tokens and on padding.
"""

from __future__ import annotations

import shutil
import sys
from types import ModuleType

import pytest
import torch

from helpers.core import kernels, metrics

WIDTHS = [*range(1, 41), 63, 64, 65, 100, 127, 128, 129, 255, 256, 257, 384, 511, 512, 513, 576, 960, 1536, 2051]
"""Row widths: every remainder of the 8-wide vectors and the 4-vector ILP groups, and the cascade's level steps
(16 groups of 4 vectors: from 512 entries), up to the widest hidden state in the study (1536) and beyond."""
X86 = kernels.capability() in ("AVX2", "AVX512")
"""Where the per-row sums repeat torch's own (its x86 kernels); elsewhere torch computes them (``torch_sums``)."""


@pytest.fixture(scope="module")
def kernel() -> ModuleType:
    module = kernels.cpu_kernel()
    if module is None:
        switched_off = "switched off" in str(kernels.unavailable())
        if sys.platform.startswith("linux") and shutil.which("c++") and not switched_off:
            pytest.fail(f"the kernels should build here (a C++ compiler is on PATH): {kernels.unavailable()}")
        pytest.skip(f"the CPU kernels are not available: {kernels.unavailable()}")
    return module


def rows_of(width: int, n: int = 96, seed: int = 0) -> torch.Tensor:
    """Rows of mixed scales (1e-4..1e4) and signs, a third of them all positive (no cancellation to hide an order)."""
    generator = torch.Generator().manual_seed(seed + width)
    rows = torch.randn(n, width, generator=generator) * torch.logspace(-4, 4, n)[:, None]
    rows[::3] = rows[::3].abs()
    return rows


@pytest.mark.skipif(not X86, reason="the replicated sums are torch's x86 kernels; elsewhere torch computes them")
@pytest.mark.parametrize("width", WIDTHS)
def test_row_sums_are_torchs_bit_for_bit(kernel: ModuleType, width: int) -> None:
    rows = rows_of(width)
    total, squares, magnitude = kernel.row_sums(rows)
    assert torch.equal(total, rows.sum(dim=-1))
    assert torch.equal(squares, torch.linalg.vector_norm(rows, dim=-1).square())
    assert torch.equal(magnitude, rows.abs().sum(dim=-1))


def test_the_once_per_process_check_agrees(kernel: ModuleType) -> None:
    """The wrapper trusts its replicas only where they match torch (on x86 they must), and its check says so."""
    direct = True
    for width in WIDTHS:
        rows = rows_of(width, seed=7)
        expected = (rows.sum(dim=-1), torch.linalg.vector_norm(rows, dim=-1).square(), rows.abs().sum(dim=-1))
        direct &= all(torch.equal(a, b) for a, b in zip(kernel.row_sums(rows), expected, strict=True))
    assert kernels.row_sums_match_torch(kernel) == direct
    if X86:
        assert direct


def reference(hidden: torch.Tensor, mask: torch.Tensor, epsilons: tuple[float, ...]) -> tuple[torch.Tensor, ...]:
    stats = metrics.hidden_state_statistics(hidden, mask, epsilons)
    assert list(stats) == metrics.hidden_statistic_names(epsilons)
    return torch.stack(list(stats.values())), metrics.mean_pooled(hidden, mask)


def assert_identical(found: torch.Tensor, expected: torch.Tensor, names: list[str] | None = None) -> None:
    """Equal bit for bit, NaN where the other is NaN."""
    same = (found == expected) | (found.isnan() & expected.isnan())
    if not bool(same.all()):
        rows = sorted({int(i) for i in (~same).nonzero()[:, 0]})
        where = [names[i] for i in rows] if names else rows
        raise AssertionError(f"not identical: {where}; largest difference {(found - expected).abs().nanmax():.3g}")


def hidden_case(batch: int, tokens: int, width: int, dtype: torch.dtype, padding: str, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(batch, tokens, width, generator=generator) * torch.rand(batch, 1, 1, generator=generator) * 3
    hidden[..., ::5] *= 0.003  # entries near every threshold
    mask = torch.ones(batch, tokens, dtype=torch.int64)
    if padding in ("left", "both") and tokens > 1:
        mask[0, : tokens // 3 + 1] = 0
        hidden[0, 0] = float("nan")  # padding may hold anything: it must drop out
    if padding in ("right", "both") and tokens > 1:
        mask[-1, tokens - tokens // 2 :] = 0
        hidden[-1, -1, 0] = float("inf")
    return hidden.to(dtype), mask


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("padding", ["none", "left", "right", "both"])
@pytest.mark.parametrize("shape", [(1, 1, 5), (3, 7, 32), (4, 9, 13), (16, 35, 576), (2, 50, 1536), (1, 300, 960)])
def test_hidden_statistics_are_the_torch_references(
    kernel: ModuleType, dtype: torch.dtype, padding: str, shape: tuple[int, int, int]
) -> None:
    hidden, mask = hidden_case(*shape, dtype, padding)
    epsilons = metrics.SPARSITY_EPSILONS
    stats, pooled = kernels.hidden_statistics(
        hidden, mask, epsilons, pool_weights=metrics.pooling_weights(mask), module=kernel
    )
    expected_stats, expected_pooled = reference(hidden, mask, epsilons)
    assert stats.dtype == torch.float64 and stats.shape == (len(metrics.hidden_statistic_names()), shape[0])
    assert_identical(stats, expected_stats, metrics.hidden_statistic_names())
    assert_identical(pooled, expected_pooled)


@pytest.mark.parametrize("epsilons", [(), (0.5,), (0.001, 0.01, 0.1), (1e-4, 1e-3, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)])
def test_any_number_of_thresholds(kernel: ModuleType, epsilons: tuple[float, ...]) -> None:
    hidden, mask = hidden_case(5, 21, 200, torch.float32, "both", seed=1)
    stats, pooled = kernels.hidden_statistics(hidden, mask, epsilons, module=kernel)
    assert pooled is None
    assert_identical(stats, reference(hidden, mask, epsilons)[0], metrics.hidden_statistic_names(epsilons))


def test_more_thresholds_than_the_kernel_takes_are_refused(kernel: ModuleType) -> None:
    hidden, mask = hidden_case(2, 3, 16, torch.float32, "none")
    with pytest.raises(RuntimeError, match="at most 8 thresholds"):
        kernels.hidden_statistics(hidden, mask, tuple(0.1 * i for i in range(1, 10)), module=kernel)


def test_torchs_own_sums_route_is_the_reference_too(kernel: ModuleType) -> None:
    """Where the replicas would not match (another CPU, another torch build), torch's calls decide the thresholds."""
    hidden, mask = hidden_case(4, 30, 777, torch.float32, "both", seed=2)
    stats, _ = kernel.hidden_statistics(hidden, mask.bool(), torch.empty(0), list(metrics.SPARSITY_EPSILONS), True)
    expected = reference(hidden, mask, metrics.SPARSITY_EPSILONS)[0]
    names = metrics.hidden_statistic_names()
    exact = [i for i, name in enumerate(names) if name not in ("mean_abs", "hoyer")]  # those two: own sum of |h|
    assert_identical(stats[exact], expected[exact], [names[i] for i in exact])
    assert stats.numpy() == pytest.approx(expected.numpy(), rel=1e-6, nan_ok=True)


def test_non_finite_entries_on_real_tokens_and_padding(kernel: ModuleType) -> None:
    hidden = torch.randn(3, 6, 40)
    hidden[0, 2, 3] = float("inf")
    hidden[1, 4, 0] = float("nan")
    hidden[2, 5, 7] = float("-inf")  # on padding: drops out
    mask = torch.ones(3, 6, dtype=torch.int64)
    mask[2, 5] = 0
    stats, pooled = kernels.hidden_statistics(
        hidden, mask, metrics.SPARSITY_EPSILONS, pool_weights=metrics.pooling_weights(mask), module=kernel
    )
    expected_stats, expected_pooled = reference(hidden, mask, metrics.SPARSITY_EPSILONS)
    assert_identical(stats, expected_stats, metrics.hidden_statistic_names())
    assert_identical(pooled, expected_pooled)
    names = metrics.hidden_statistic_names()
    assert stats[names.index("nonfinite_tokens")].tolist() == [1 / 6, 1 / 6, 0.0]
    assert bool(stats[names.index("max_abs"), 1].isnan()) and bool(torch.isfinite(stats[:, 2]).all())


def test_known_counts_at_the_thresholds(kernel: ModuleType) -> None:
    """|h| < eps is strict and in float32, as torch compares a float32 tensor with a Python float."""
    eps = 0.01
    at = torch.tensor(eps, dtype=torch.float32)  # float32(0.01) < 0.01 in float64, not in float32
    row = torch.cat([at.repeat(4), -at.repeat(2), torch.nextafter(at, torch.tensor(0.0)).repeat(3), torch.ones(7)])
    hidden = row[None, None].repeat(1, 2, 1)
    stats, _ = kernels.hidden_statistics(hidden, torch.ones(1, 2), (eps,), module=kernel)
    names = metrics.hidden_statistic_names((eps,))
    assert stats[names.index("near_zero_0.01"), 0].item() == 3 / 16
    assert_identical(stats, reference(hidden, torch.ones(1, 2), (eps,))[0], names)


def test_names_and_reference_order_agree() -> None:
    hidden, mask = hidden_case(2, 4, 8, torch.float32, "none")
    assert list(metrics.hidden_state_statistics(hidden, mask)) == metrics.hidden_statistic_names()


def test_bad_inputs_are_refused_with_what_is_wrong(kernel: ModuleType) -> None:
    hidden, mask = hidden_case(2, 4, 8, torch.float32, "none")
    with pytest.raises(RuntimeError, match="contiguous"):
        kernel.hidden_statistics(hidden.transpose(1, 2), mask.bool(), torch.empty(0), [0.1], False)
    with pytest.raises(RuntimeError, match="float32, bfloat16 or float16"):
        kernel.hidden_statistics(hidden.double(), mask.bool(), torch.empty(0), [0.1], False)
    with pytest.raises(RuntimeError, match="is_real"):
        kernel.hidden_statistics(hidden, mask[:, :3].bool().contiguous(), torch.empty(0), [0.1], False)


@pytest.mark.parametrize("key_heads", [1, 6])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_attention_statistics_are_the_metrics_reductions(
    kernel: ModuleType, key_heads: int, dtype: torch.dtype
) -> None:
    generator = torch.Generator().manual_seed(key_heads)
    batch, heads, queries = 5, 6, 37
    rows = (torch.rand(batch, heads, queries, generator=generator) * 4).to(dtype)
    rows[1, 2, 3] = float("nan")  # on a padded query row: drops out
    query_mask = torch.ones(batch, queries, dtype=torch.int64)
    query_mask[1, :5] = 0
    query_mask[3, -9:] = 0
    n_keys = torch.randint(1, queries, (batch, key_heads, queries), generator=generator).to(torch.float64)
    found = kernels.attention_statistics(rows, query_mask, n_keys, module=kernel)
    per_head = metrics.attention_entropy_per_head(rows.double(), query_mask)
    sums, counts = metrics.normalized_row_entropy_sums(rows.double(), query_mask, n_keys)
    for value, expected in zip(found, (per_head, sums, counts), strict=True):
        assert value.dtype == torch.float64 and value.shape == expected.shape
        assert value.numpy() == pytest.approx(expected.numpy(), rel=1e-13, abs=0)
    assert torch.equal(found[2], counts)  # counts: exact
