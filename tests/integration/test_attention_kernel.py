"""The fused path on its two routes: the one-pass kernel (helpers.core.kernels) and two flash calls.

Both give the same statistics (1e-5 relative) on every tiny model with an attention interface,
padding left and right, query blocks (masks longer than a block: the kernel's key ranges), bf16;
and the run records which route it took (``attrs["attention_kernel"]``). The brute-force checks
of the default route (now the kernel) are tests/integration/test_streaming_exact.py's.
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch

import helpers
from helpers.core import kernels, metrics
from tests.support import PROMPTS, TOLERANCE


@pytest.fixture(autouse=True)
def kernel_built() -> None:
    if kernels.cpu_kernel() is None:
        pytest.skip(f"the one-pass CPU kernel is not available: {kernels.unavailable()}")


def both_routes(name: str, monkeypatch: pytest.MonkeyPatch, **options: object) -> tuple[pd.DataFrame, pd.DataFrame]:
    one_pass = helpers.measure_with_layers(name, PROMPTS, progress=False, **options)
    monkeypatch.setenv(kernels.SWITCH, "off")
    two_calls = helpers.measure_with_layers(name, PROMPTS, progress=False, **options)
    monkeypatch.delenv(kernels.SWITCH)
    assert (one_pass.attention_kernel, two_calls.attention_kernel) == (kernels.ONE_PASS, kernels.TWO_CALL)
    assert one_pass.prompts.attrs["attention_kernel"] == one_pass.layers.attrs["attention_kernel"] == kernels.ONE_PASS
    return one_pass.layers, two_calls.layers


def assert_same(one_pass: pd.DataFrame, two_calls: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(one_pass.drop(columns="value"), two_calls.drop(columns="value"))
    assert one_pass["value"].to_numpy() == pytest.approx(two_calls["value"].to_numpy(), rel=TOLERANCE, abs=1e-7)


@pytest.mark.parametrize("name", ["tiny-gemma3", "tiny-qwen2", "tiny-llama", "tiny-bert", "tiny-gpt2"])
def test_both_routes_give_the_same_statistics(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert_same(*both_routes(name, monkeypatch))


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_sides_and_query_blocks(side: str, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = helpers.load_model("tiny-gemma3")  # sliding-window layers and grouped heads
    monkeypatch.setattr(loaded.tokenizer, "padding_side", side)
    monkeypatch.setattr(metrics, "QUERY_BLOCK", 4)  # masks longer than a block: the kernel skips keys by range
    assert_same(*both_routes(loaded, monkeypatch))


def test_bfloat16_routes_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    one_pass, two_calls = both_routes("tiny-llama", monkeypatch, dtype=torch.bfloat16)
    attention = one_pass["statistic"].str.startswith("attention")
    first = attention & (one_pass["layer"] == 1)  # from the same bf16 q, k, in float32 on both routes
    assert one_pass.loc[first, "value"].to_numpy() == pytest.approx(
        two_calls.loc[first, "value"].to_numpy(), rel=TOLERANCE, abs=1e-6
    )
    # later layers see each route's bf16 attention output (the kernel rounds a float32 output once)
    assert one_pass.loc[attention, "value"].to_numpy() == pytest.approx(
        two_calls.loc[attention, "value"].to_numpy(), rel=0.02
    )


def test_eager_and_switched_off_runs_record_their_route(monkeypatch: pytest.MonkeyPatch) -> None:
    assert helpers.measure("tiny-qwen2", PROMPTS[:1], progress=False, attention="eager").attrs["attention_kernel"] == (
        "eager"
    )
    monkeypatch.setenv(kernels.SWITCH, "off")
    assert kernels.cpu_kernel() is None and "switched off" in kernels.unavailable()
