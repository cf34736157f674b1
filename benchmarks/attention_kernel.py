"""Micro-benchmark of one attention call: the one-pass kernel vs the two-call route vs plain sdpa.

Usage: ``python benchmarks/attention_kernel.py [--lengths 2048 8192] [--repeats 5]`` (also run by
``benchmarks/run.py``). SmolLM2-135M's shapes: 9 query heads, 3 key/value heads, head dim 64,
batch 1, causal, float32 on the CPU. Per length, interleaved rounds of

* plain sdpa: transformers' ``sdpa_attention_forward`` (what a plain sdpa forward runs per layer);
* two flash calls: the fused path without the kernel (sdpa's output, then
  ``metrics.attention_row_entropy``: torch's flash kernel again with the keys as the values);
* one-pass kernel: ``helpers.core.kernels.entropy_attention`` (output, log-sum-exp, entropies).

Reports the median seconds of each and the ratios to plain sdpa (time of sdpa / time of the
route: > 1 is faster), and the largest entropy difference between the two routes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transformers.integrations.sdpa_attention import sdpa_attention_forward  # noqa: E402

from helpers.core import kernels, metrics  # noqa: E402

HEADS, KV_HEADS, HEAD_DIM = 9, 3, 64  # SmolLM2-135M
ROUTES = ("plain sdpa", "two flash calls", "one-pass kernel")


class _Module(torch.nn.Module):
    """What transformers' attention functions read from the calling module."""

    is_causal = True
    num_key_value_groups = HEADS // KV_HEADS


def attention_calls(length: int, repeats: int) -> dict:
    """Median seconds per route for one causal attention call over ``length`` tokens, and their agreement."""
    torch.manual_seed(0)
    query = torch.randn(1, length, HEADS, HEAD_DIM).transpose(1, 2)  # transformers' layout
    key = torch.randn(1, length, KV_HEADS, HEAD_DIM).transpose(1, 2)
    value = torch.randn(1, length, KV_HEADS, HEAD_DIM).transpose(1, 2)
    scale = HEAD_DIM**-0.5
    module = _Module()
    kernel = kernels.cpu_kernel()
    if kernel is None:
        raise SystemExit(f"the one-pass kernel is not available: {kernels.unavailable()}")

    def plain() -> torch.Tensor:
        return sdpa_attention_forward(module, query, key, value, None, scaling=scale, is_causal=True)[0]

    def two_calls() -> torch.Tensor:
        plain()
        return metrics.attention_row_entropy(query, key, scale=scale, is_causal=True)

    def one_pass() -> torch.Tensor:
        return kernels.entropy_attention(query, key, value, scale=scale, is_causal=True, module=kernel)[2]

    runs = dict(zip(ROUTES, (plain, two_calls, one_pass), strict=True))
    with torch.inference_mode():
        for run in runs.values():
            run()  # warm-up
        seconds: dict[str, list[float]] = {route: [] for route in ROUTES}
        for _ in range(repeats):
            for route, run in runs.items():
                start = time.perf_counter()
                run()
                seconds[route].append(time.perf_counter() - start)
        difference = (two_calls().double() - one_pass().double()).abs().max().item()
    median = {route: statistics.median(values) for route, values in seconds.items()}
    return {
        "T": length,
        "seconds": median,
        "vs_sdpa": {route: median["plain sdpa"] / median[route] for route in ROUTES},
        "entropy_difference": difference,
        "threads": torch.get_num_threads(),
    }


def table(rows: list[dict]) -> str:
    lines = [
        f"One causal attention call, SmolLM2-135M's shapes ({HEADS} heads, {KV_HEADS} key/value heads, head dim "
        f"{HEAD_DIM}), batch 1, float32, {rows[0]['threads'] if rows else '?'} threads; median of interleaved rounds.",
        "",
        "| T | route | seconds | vs plain sdpa |",
        "|---:|---|---:|---:|",
    ]
    for row in rows:
        for route in ROUTES:
            lines.append(f"| {row['T']} | {route} | {row['seconds'][route]:.3f} | {row['vs_sdpa'][route]:.2f}x |")
    lines.append("")
    lines.append(
        "Largest entropy difference between the two routes (nats): "
        + ", ".join(f"T={row['T']}: {row['entropy_difference']:.1e}" for row in rows)
    )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", nargs="+", type=int, default=[2048, 8192])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print the rows as JSON (for benchmarks/run.py)")
    args = parser.parse_args()
    rows = [attention_calls(length, args.repeats) for length in args.lengths]
    print(json.dumps(rows) if args.json else table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
