"""``measure`` on its two routes for the statistics: the kernels (helpers.core.kernels) and torch operations.

On every tiny architecture in the study and the packaged real models, padded on the left and on the right,
in float32 and bfloat16: the hidden-state statistics (every layer, every threshold count) and the mean-pooled
vectors are the same bit for bit; the attention statistics agree to float64 rounding (the kernel sums rows in
another order); and the run records its route (``attrs["statistics_kernel"]``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import helpers
from helpers.core import kernels, streaming
from tests.support import EMBEDDED_MODELS, PROMPTS, TINY_MODELS

TEXTS = [*PROMPTS, "Short.", "A much longer prompt, " * 12 + "so that every batch pads the others by many tokens."]


@pytest.fixture(autouse=True)
def kernels_built() -> None:
    if kernels.cpu_kernel() is None:
        pytest.skip(f"the CPU kernels are not available: {kernels.unavailable()}")


def both_routes(
    model: str | helpers.LoadedModel, monkeypatch: pytest.MonkeyPatch, **options: object
) -> tuple[helpers.Measurements, helpers.Measurements]:
    kernel = helpers.measure_with_layers(model, TEXTS, batch_size=3, progress=False, **options)
    monkeypatch.setattr(streaming, "STATISTICS_KERNELS", False)
    torch_route = helpers.measure_with_layers(model, TEXTS, batch_size=3, progress=False, **options)
    monkeypatch.undo()
    assert kernel.statistics_kernel == kernels.ONE_PASS and torch_route.statistics_kernel == kernels.TORCH_OPERATIONS
    for table in (kernel.prompts, kernel.layers):
        assert table.attrs["statistics_kernel"] == kernels.ONE_PASS
    return kernel, torch_route


def assert_same(kernel: helpers.Measurements, torch_route: helpers.Measurements) -> None:
    layers, reference = kernel.layers, torch_route.layers
    pd.testing.assert_frame_equal(layers.drop(columns="value"), reference.drop(columns="value"))
    attention = layers["statistic"].str.startswith("attention").to_numpy()
    values, expected = layers["value"].to_numpy(), reference["value"].to_numpy()
    assert np.array_equal(values[~attention], expected[~attention], equal_nan=True), "hidden-state statistics"
    assert values[attention] == pytest.approx(expected[attention], rel=1e-12, abs=0, nan_ok=True)
    assert np.array_equal(kernel.vectors, torch_route.vectors)
    prompts, reference_prompts = kernel.prompts, torch_route.prompts
    assert list(prompts.columns) == list(reference_prompts.columns)
    assert (prompts.dtypes == reference_prompts.dtypes).all()
    for column in prompts.columns:
        if column.startswith("attention"):
            assert prompts[column].to_numpy() == pytest.approx(reference_prompts[column].to_numpy(), rel=1e-12)
        else:
            assert prompts[column].equals(reference_prompts[column]), column


@pytest.mark.parametrize(
    ("name", "side"),
    [(name, side) for name in TINY_MODELS for side in ("left", "right")]
    + [
        (name, "left")
        for name in EMBEDDED_MODELS  # real widths (384, 576, 640); left padding under a causal mask
    ],
)
def test_both_routes_give_the_same_numbers(name: str, side: str, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = helpers.load_model(name)
    monkeypatch.setattr(loaded.tokenizer, "padding_side", side)
    assert_same(*both_routes(loaded, monkeypatch))


def test_bfloat16_hidden_states_give_the_same_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    assert_same(*both_routes("tiny-llama", monkeypatch, dtype=torch.bfloat16))


def test_switched_off_kernels_record_the_torch_route(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(kernels.SWITCH, "off")
    measured = helpers.measure_with_layers("tiny-gpt2", PROMPTS[:1], progress=False)
    assert measured.statistics_kernel == kernels.TORCH_OPERATIONS == measured.prompts.attrs["statistics_kernel"]
    assert measured.attention_kernel == kernels.TWO_CALL
