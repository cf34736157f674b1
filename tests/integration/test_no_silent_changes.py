"""``measure`` never changes a model it is handed, nor the cache; bad arguments fail first, by name (issue 11)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

import helpers
from helpers.core import models
from tests.support import PROMPTS


def test_another_dtype_runs_on_a_copy_and_leaves_the_cached_model_alone() -> None:
    before = helpers.measure("tiny-gpt2", PROMPTS, progress=False)
    cached = helpers.load_model("tiny-gpt2")
    half = helpers.measure(cached, PROMPTS, dtype=torch.bfloat16, progress=False)
    assert next(cached.model.parameters()).dtype == torch.float32  # untouched
    assert helpers.load_model("tiny-gpt2") is cached
    pd.testing.assert_frame_equal(helpers.measure("tiny-gpt2", PROMPTS, progress=False), before)
    assert not half["attention_entropy"].equals(before["attention_entropy"])  # it did run in bfloat16
    again = helpers.measure(cached, PROMPTS, dtype="bfloat16", progress=False)
    pd.testing.assert_frame_equal(again, half)  # the same converted copy, by name or dtype


def test_converted_copy_is_reused_and_made_anew_when_the_original_changes() -> None:
    loaded = helpers.load_model("tiny-llama")
    copy = models.converted(loaded, dtype=torch.bfloat16)
    assert copy is not loaded and copy.model is not loaded.model
    assert models.converted(loaded, dtype=torch.bfloat16) is copy
    assert models.converted(loaded, dtype=torch.float32) is loaded  # nothing to convert
    weight = loaded.model.embed_tokens.weight
    with torch.no_grad():
        weight[0, 0] += 1.0  # an in-place change of the original
    try:
        fresh = models.converted(loaded, dtype=torch.bfloat16)
        assert fresh is not copy
        assert fresh.model.embed_tokens.weight[0, 0] == weight[0, 0].to(torch.bfloat16)
    finally:
        with torch.no_grad():
            weight[0, 0] -= 1.0


def test_a_failed_call_leaves_every_later_call_as_a_fresh_one() -> None:
    loaded = helpers.load_model("tiny-phi")
    expected = helpers.measure(loaded, PROMPTS, progress=False)
    with pytest.raises(ValueError, match="device"):
        helpers.measure(loaded, PROMPTS, device="meta", progress=False)
    assert next(loaded.model.parameters()).device.type == "cpu"
    pd.testing.assert_frame_equal(helpers.measure(loaded, PROMPTS, progress=False), expected)
    pd.testing.assert_frame_equal(helpers.measure("tiny-phi", PROMPTS, progress=False), expected)


@pytest.mark.parametrize(
    ("argument", "value", "error", "message"),
    [
        ("batch_size", "16", TypeError, r"batch_size must be a positive int, got '16' \(str\)"),
        ("batch_size", 0, ValueError, "batch_size must be a positive int, got 0"),
        ("batch_size", True, TypeError, "batch_size"),
        ("dtype", "fp16", ValueError, r"dtype must be one of torch.float32 or 'float32'.*got 'fp16'"),
        ("dtype", torch.int8, ValueError, "dtype must be one of"),
        ("dtype", 16, TypeError, r"dtype .* got 16 \(int\)"),
        ("device", "gpu", ValueError, r"device must be 'auto', 'cpu', 'cuda'.*got 'gpu'"),
        ("device", "meta", ValueError, "device .*'meta'"),
        ("device", 0, TypeError, r"device must be .*got 0 \(int\)"),
        ("max_length", 12.5, TypeError, "max_length must be a positive int or None"),
        ("progress", "yes", TypeError, "progress must be True or False"),
        ("attention", "flash", ValueError, r"attention must be one of 'auto', 'fused', 'eager', got 'flash'"),
    ],
)
def test_bad_arguments_are_named_before_any_model_work(argument: str, value: object, error: type, message: str) -> None:
    # "no-such-model" would fail too: the argument is checked first, before the model is even resolved
    with pytest.raises(error, match=message):
        helpers.measure("no-such-model", ["ok"], **{argument: value})


def test_cuda_without_a_gpu_is_refused_before_loading() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="0 CUDA device"):
        helpers.measure("no-such-model", ["ok"], device="cuda")


def test_dtype_by_name_equals_dtype_by_value() -> None:
    by_name = helpers.measure("tiny-stablelm", PROMPTS[:1], dtype="bfloat16", progress=False)
    by_value = helpers.measure("tiny-stablelm", PROMPTS[:1], dtype=torch.bfloat16, progress=False)
    pd.testing.assert_frame_equal(by_name, by_value)
