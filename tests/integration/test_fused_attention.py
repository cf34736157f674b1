"""The fused attention path (no attention map) against the eager reference and the brute force.

``tests/integration/test_streaming_exact.py`` checks the default path (fused everywhere but
BLOOM) against the brute force on every tiny and embedded model, and padding invariance. Here:
the per-layer and per-head statistics of the two paths, the query-block path (masks longer than
a block), Gemma 3's real 512-token window, which path runs where, and that instrumenting the
model leaves nothing behind, even when the forward fails. Tolerances as there: continuous values
1e-5 relative; threshold statistics within the entries the brute force counts near the threshold
(two computations that share the same hidden states, such as the query-block path, agree exactly
on those, and are compared at 1e-5 relative).
"""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch
from transformers import AutoConfig, AutoModel
from transformers.masking_utils import AttentionMaskInterface
from transformers.modeling_utils import AttentionInterface

import helpers
from helpers.core import kernels, metrics, streaming
from tests.support import PROMPTS, TOLERANCE, assert_measurements_close, assert_rows_close, brute_force


def layer_values(name: str, attention: str, texts: list[str] = PROMPTS) -> pd.DataFrame:
    layers = helpers.measure_with_layers(name, texts, progress=False, attention=attention).layers
    return layers[layers["statistic"].str.startswith("attention")].reset_index(drop=True)


@pytest.mark.parametrize("name", ["tiny-gemma3", "tiny-embeddinggemma", "tiny-qwen2", "tiny-bert"])
def test_per_layer_and_per_head_statistics_equal_the_eager_reference(name: str) -> None:
    fused, eager = layer_values(name, "fused"), layer_values(name, "eager")
    pd.testing.assert_frame_equal(fused.drop(columns="value"), eager.drop(columns="value"))
    assert fused["value"].to_numpy() == pytest.approx(eager["value"].to_numpy(), rel=TOLERANCE, abs=1e-7)


@pytest.mark.parametrize("name", ["tiny-gemma3", "tiny-embeddinggemma", "tiny-llama", "tiny-bert"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_query_blocks_give_the_same_values(name: str, side: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # masks longer than a block of query rows are evaluated block by block, skipping keys no row sees
    loaded = helpers.load_model(name)
    monkeypatch.setattr(loaded.tokenizer, "padding_side", side)
    whole = helpers.measure(loaded, PROMPTS, progress=False)
    monkeypatch.setattr(metrics, "QUERY_BLOCK", 4)
    blocked = helpers.measure(loaded, PROMPTS, progress=False)
    numeric = whole.columns.drop(["model", "text_index"])
    pd.testing.assert_frame_equal(blocked[numeric], whole[numeric], rtol=TOLERANCE, atol=1e-7)
    assert_rows_close(blocked, [brute_force(name, text) for text in PROMPTS])


def test_gemma3_prompt_longer_than_its_sliding_window() -> None:
    loaded = helpers.load_model("gemma3-270m")
    long_text = " ".join(["word"] * 519)
    n_tokens = len(loaded.tokenizer(long_text).input_ids)
    assert loaded.model.config.sliding_window < n_tokens, "the prompt must be longer than the window"
    assert n_tokens > metrics.QUERY_BLOCK, "and longer than a query block, so the block path runs"
    fused = helpers.measure(loaded, [long_text], progress=False)
    eager = helpers.measure(loaded, [long_text], progress=False, attention="eager")  # = brute force, short prompts
    assert (fused.attrs["attention_path"], eager.attrs["attention_path"]) == ("fused", "eager")
    columns = ["n_tokens", "attention_entropy", "attention_entropy_normalized", "final_activation"]
    pd.testing.assert_frame_equal(fused[columns], eager[columns], rtol=TOLERANCE, atol=1e-7)


def test_one_token_prompt_and_a_batch_of_one() -> None:
    loaded = helpers.load_model("smollm2-135m")
    assert len(loaded.tokenizer("Hello").input_ids) == 1
    alone = helpers.measure(loaded, ["Hello"], progress=False)
    assert alone["attention_entropy"].iloc[0] == 0.0  # one key per row: every row has entropy 0
    assert pd.isna(alone["attention_entropy_normalized"].iloc[0])  # no row with two keys: undefined
    batched = helpers.measure(loaded, ["Hello", PROMPTS[1]], progress=False)
    assert_measurements_close(batched.iloc[:1], alone, [brute_force("smollm2-135m", "Hello")])


def test_half_precision_fused_statistics_match_float32() -> None:
    half = helpers.measure("tiny-llama", PROMPTS, dtype=torch.bfloat16, progress=False)
    full = helpers.measure("tiny-llama", PROMPTS, progress=False)
    assert half.attrs["attention_path"] == "fused" and half["attention_entropy"].dtype == "float64"
    assert half["attention_entropy"].to_numpy() == pytest.approx(full["attention_entropy"].to_numpy(), rel=0.02)


def test_auto_runs_eager_where_fused_is_not_exact() -> None:
    bloom = helpers.load_model("tiny-bloom")  # its own attention code, with ALiBi
    assert "own attention code" in streaming.fused_attention_unsupported(bloom)
    assert helpers.measure_with_layers(bloom, PROMPTS[:1], progress=False).attention_path == "eager"
    with pytest.raises(streaming.FusedAttentionUnsupportedError, match="eager"):
        helpers.measure(bloom, PROMPTS[:1], progress=False, attention="fused")

    # Gemma 2 soft-caps its attention logits: not an additive change of the scores
    config = AutoConfig.for_model(
        "gemma2", vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, intermediate_size=64, attn_logit_softcapping=50.0,
    )  # fmt: skip
    torch.manual_seed(0)
    gemma2 = dataclasses.replace(
        helpers.load_model("tiny-llama"), name="tiny-gemma2", model=AutoModel.from_config(config)
    )
    gemma2.model.eval()
    assert "soft-capped" in streaming.fused_attention_unsupported(gemma2)
    measured = helpers.measure_with_layers(gemma2, PROMPTS[:1], progress=False)
    assert measured.attention_path == "eager" and measured.prompts["attention_entropy"].iloc[0] > 0


def registry_state(model: torch.nn.Module) -> tuple:
    return (
        dict(AttentionInterface._global_mapping),
        dict(AttentionMaskInterface._global_mapping),
        model.config._attn_implementation,
        model.training,
        sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()),
    )


@pytest.mark.parametrize("where", ["attention", "mlp"])
def test_a_failing_forward_leaves_registry_config_and_hooks_as_before(
    where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = helpers.load_model("tiny-qwen2")
    expected = helpers.measure(loaded, PROMPTS, progress=False)
    before = registry_state(loaded.model)

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    if where == "attention":  # inside the registered attention function itself
        monkeypatch.setattr(metrics, "attention_row_entropy", boom)  # the two-call route
        monkeypatch.setattr(kernels, "entropy_attention", boom)  # the one-pass kernel
    else:
        monkeypatch.setattr(loaded.model.layers[1].mlp, "forward", boom)
    with pytest.raises(RuntimeError, match="boom"):
        helpers.measure(loaded, PROMPTS, progress=False)
    assert registry_state(loaded.model) == before
    assert not [key for key in AttentionInterface._global_mapping if key.startswith("helpers_")]
    monkeypatch.undo()
    pd.testing.assert_frame_equal(helpers.measure(loaded, PROMPTS, progress=False), expected)  # still usable


def test_scores_changed_during_the_forward_make_auto_rerun_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    # pretend Gemma 3's sliding_window argument changed the scores (as softcap or attention sinks would)
    monkeypatch.setattr(streaming, "_UNSUPPORTED_ATTENTION_ARGUMENTS", ("sliding_window",))
    loaded = helpers.load_model("tiny-gemma3")
    with pytest.raises(streaming.FusedAttentionUnsupportedError, match="sliding_window"):
        helpers.measure(loaded, PROMPTS, progress=False, attention="fused")
    auto = helpers.measure(loaded, PROMPTS, progress=False)
    assert auto.attrs["attention_path"] == "eager"
    pd.testing.assert_frame_equal(auto, helpers.measure(loaded, PROMPTS, progress=False, attention="eager"))
