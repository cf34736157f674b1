"""The Triton kernel (helpers/core/kernels/triton_entropy.py) under Triton's CPU interpreter, against the brute force.

The interpreter must be chosen before triton is imported (TRITON_INTERPRET=1), so the check runs
in a fresh process: small shapes, grouped heads, causal, padding and sliding-window masks, float32
and bfloat16 inputs; entropies within 1e-5 relative of the float64 brute force. Timed only on a GPU.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from helpers.base import paths

CHECK = """
import json, torch
from helpers.core.kernels import triton_entropy
from tests.support import ENTROPY_RELATIVE as RELATIVE
from tests.support import attention_brute_force as brute_force
from tests.support import attention_masks as masks
torch.manual_seed(0)
batch, n, scale, results = 2, 20, 0.3, []
cases = {torch.float32: ("causal", "causal, left padding", "bidirectional padding", "sliding window, left padding"),
         torch.bfloat16: ("sliding window, left padding",)}
for dtype, names in cases.items():
    query = (torch.randn(batch, 4, n, 16) * 2).to(dtype)
    key, value = (torch.randn(batch, 2, n, 16) * 2).to(dtype), torch.randn(batch, 2, n, 16).to(dtype)
    for name in names:
        mask, causal, allowed = masks(batch, n)[name]
        output, lse, rows = triton_entropy.entropy_attention(
            query, key, value, scale=scale, mask=mask, is_causal=causal, block_m=16, block_n=16
        )
        expected_output, expected_rows = brute_force(query, key, value, scale, allowed)
        excess = ((rows.double() - expected_rows).abs() - RELATIVE * expected_rows.abs() - 1e-6).max().item()
        results.append({"case": f"{name}, {dtype}", "entropy_excess": excess,
                        "output_error": (output.double() - expected_output).abs().max().item(),
                        "output_dtype": str(output.dtype)})
print(json.dumps(results))
"""


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed (pip install triton)")
def test_triton_kernel_equals_the_brute_force_under_the_interpreter() -> None:
    environment = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(paths.ROOT)}
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", CHECK], capture_output=True, text=True, env=environment, cwd=paths.ROOT
    )
    assert result.returncode == 0, result.stderr[-2000:]
    cases = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(cases) == 5
    for case in cases:
        assert case["entropy_excess"] <= 0.0, case  # within 1e-5 relative (+1e-6 nats) of the brute force
        bf16 = "bfloat16" in case["case"]
        assert case["output_dtype"] == ("torch.bfloat16" if bf16 else "torch.float32"), case
        assert case["output_error"] < (3e-2 if bf16 else 1e-5), case  # bf16: rounded to bf16 (ulp 1.6e-2 at 2)
