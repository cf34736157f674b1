"""The one-pass CPU kernel (helpers.core.kernels): entropies against the float64 brute force, output and lse
against sdpa.

Every mask the fused path hands it (none/causal, padding left and right, bidirectional padding,
sliding windows, with and without the per-block key ranges), grouped-query heads, float32 and
bfloat16 inputs (float32 accumulation). Entropies within 1e-5 relative of the brute force.
"""

from __future__ import annotations

import math
import shutil
import sys
from types import ModuleType

import pytest
import torch

from helpers.core import kernels, metrics
from tests.support import ENTROPY_RELATIVE as RELATIVE
from tests.support import attention_brute_force as brute_force
from tests.support import attention_masks as masks


@pytest.fixture(scope="module")
def kernel() -> ModuleType:
    module = kernels.cpu_kernel()
    if module is None:
        if sys.platform.startswith("linux") and shutil.which("c++") and kernels.unavailable() is not None:
            if "switched off" not in str(kernels.unavailable()):
                pytest.fail(f"the kernel should build here (a C++ compiler is on PATH): {kernels.unavailable()}")
        pytest.skip(f"the one-pass CPU kernel is not available: {kernels.unavailable()}")
    return module


def assert_entropies_close(rows: torch.Tensor, expected: torch.Tensor) -> None:
    error = (rows.double() - expected).abs()
    assert (error <= RELATIVE * expected.abs() + 1e-6).all(), f"max error {error.max().item():.2e}"


@pytest.mark.parametrize("name", list(masks(2, 8)))
@pytest.mark.parametrize("with_ranges", [False, True])
def test_entropy_output_and_lse_equal_the_brute_force_and_sdpa(
    kernel: ModuleType, name: str, with_ranges: bool
) -> None:
    torch.manual_seed(0)
    batch, n, scale = 2, 70, 0.35
    query = torch.randn(batch, 6, n, 16) * 2
    key, value = torch.randn(batch, 2, n, 16) * 2, torch.randn(batch, 2, n, 16)  # 3 query heads per key head
    mask, causal, allowed = masks(batch, n)[name]
    ranges = metrics.mask_key_ranges(mask, 16) if with_ranges and mask is not None else None
    output, lse, rows = kernels.entropy_attention(
        query, key, value, scale=scale, mask=mask, is_causal=causal, key_ranges=ranges, module=kernel
    )
    expected_output, expected_rows = brute_force(query, key, value, scale, allowed)
    assert rows.dtype == lse.dtype == torch.float32 and output.shape == (batch, n, 6, 16)
    assert_entropies_close(rows, expected_rows)
    assert torch.allclose(output.double(), expected_output, atol=2e-6)
    repeated_key, repeated_value = key.repeat_interleave(3, 1), value.repeat_interleave(3, 1)
    sdpa = torch.nn.functional.scaled_dot_product_attention(
        query, repeated_key, repeated_value, attn_mask=mask, is_causal=causal, scale=scale
    )
    assert torch.allclose(output, sdpa.transpose(1, 2), atol=1e-5)  # sdpa itself is off the brute force by ~4e-6
    additive = None if mask is None else torch.where(mask, 0.0, float("-inf"))
    _, flash_lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        query, repeated_key, repeated_value, 0.0, causal, attn_mask=additive, scale=scale
    )[:2]
    assert torch.allclose(lse, flash_lse, atol=2e-5)


@pytest.mark.parametrize("name", ["causal", "sliding window, left padding"])
def test_bfloat16_inputs_are_accumulated_in_float32(kernel: ModuleType, name: str) -> None:
    torch.manual_seed(1)
    batch, n, scale = 2, 40, 0.25
    query = torch.randn(batch, 4, n, 8, dtype=torch.bfloat16)
    key, value = torch.randn(batch, 2, n, 8, dtype=torch.bfloat16), torch.randn(batch, 2, n, 8, dtype=torch.bfloat16)
    mask, causal, allowed = masks(batch, n)[name]
    output, _, rows = kernels.entropy_attention(query, key, value, scale=scale, mask=mask, is_causal=causal)
    assert output.dtype == torch.bfloat16 and rows.dtype == torch.float32
    _, float_rows = kernels.entropy_attention(
        query.float(), key.float(), value.float(), scale=scale, mask=mask, is_causal=causal
    )[1:]
    assert torch.equal(rows, float_rows)  # the same float32 computation on the same (bf16-exact) numbers
    expected_output, expected_rows = brute_force(query, key, value, scale, allowed)
    assert_entropies_close(rows, expected_rows)
    assert torch.allclose(output.double(), expected_output, atol=1e-2)  # the output is rounded to bf16


def test_known_answers_rows_without_keys_and_large_scores(kernel: ModuleType) -> None:
    n = 6
    zeros = torch.zeros(1, 2, n, 4)  # q = 0: every score is 0, each row uniform over its keys
    _, _, rows = kernels.entropy_attention(
        zeros, torch.randn(1, 2, n, 4), torch.randn(1, 2, n, 4), scale=1.0, is_causal=True
    )
    assert torch.allclose(rows, torch.tensor([math.log(i + 1) for i in range(n)]).expand(1, 2, n), atol=1e-6)

    # every score shifted by 1000 (exactly: multiples of 2^-10 plus 1000 are float32 numbers):
    # the entropy is that of the small parts, and nothing cancels in log l - a / l
    small = [round(math.log(w) * 1024) / 1024 for w in (1.0, 2.0, 3.0, 4.0)]
    query = torch.tensor([[[[1.0, 1.0]]]])
    key = torch.tensor([[[[c, 1000.0] for c in small]]])
    _, lse, rows = kernels.entropy_attention(query, key, key, scale=1.0, module=kernel)
    probs = torch.tensor(small, dtype=torch.float64).softmax(0)
    assert rows.item() == pytest.approx(-(probs * probs.log()).sum().item(), rel=RELATIVE)
    assert lse.item() == pytest.approx(1000.0 + torch.tensor(small, dtype=torch.float64).logsumexp(0).item(), rel=1e-7)

    nothing = torch.zeros(1, 1, 1, 4, dtype=torch.bool)
    output, lse, rows = kernels.entropy_attention(query, key, key, scale=1.0, mask=nothing)
    assert output.abs().sum().item() == 0.0 and rows.item() == 0.0 and lse.item() == 0.0  # as torch's flash kernel


def test_strided_inputs_and_many_key_blocks(kernel: ModuleType) -> None:
    torch.manual_seed(2)
    batch, n = 1, 1100  # more than two 512-key blocks and several query blocks: the running max moves
    query = torch.randn(batch, n, 3, 8).transpose(1, 2) * 3  # transformers' (B, Q, H, D) -> (B, H, Q, D) view
    key, value = torch.randn(batch, 1, n, 8) * 3, torch.randn(batch, 1, n, 8)
    causal = torch.tril(torch.ones(n, n, dtype=torch.bool))[None, None]
    output, _, rows = kernels.entropy_attention(query, key, value, scale=0.5, is_causal=True)
    expected_output, expected_rows = brute_force(query, key, value, 0.5, causal)
    assert_entropies_close(rows, expected_rows)
    assert torch.allclose(output.double(), expected_output, atol=1e-5)  # as sdpa's own error here (8e-6)


def test_non_bool_masks_are_refused(kernel: ModuleType) -> None:
    query = torch.randn(1, 1, 2, 4)
    with pytest.raises(TypeError, match="bool"):
        kernels.entropy_attention(query, query, query, scale=1.0, mask=torch.zeros(1, 1, 2, 2))
