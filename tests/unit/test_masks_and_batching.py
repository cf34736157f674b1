"""Pure helpers of the measurement loop: key masks, batching, input checks, model names."""

from __future__ import annotations

import pytest
import torch

from helpers.core import models, streaming


def test_additive_mask_becomes_allowed_keys_and_padding_keys_are_dropped() -> None:
    minimum = torch.finfo(torch.float32).min
    additive = torch.tensor([[0.0, minimum, minimum], [0.0, 0.0, minimum], [0.0, 0.0, 0.0]])[None, None]
    token_mask = torch.tensor([[1, 1, 0]])
    allowed = streaming._allowed_keys(additive, token_mask, causal=True, q_len=3)
    expected = torch.tensor([[True, False, False], [True, True, False], [True, True, False]])
    assert torch.equal(allowed[0, 0], expected)


def test_missing_mask_means_causal_for_decoders_and_full_for_encoders() -> None:
    token_mask = torch.ones(1, 3, dtype=torch.long)
    causal = streaming._allowed_keys(None, token_mask, causal=True, q_len=3)
    full = streaming._allowed_keys(None, token_mask, causal=False, q_len=3)
    assert torch.equal(causal[0, 0], torch.tril(torch.ones(3, 3, dtype=torch.bool)))
    assert bool(full.all())


def test_boolean_mask_is_used_as_is() -> None:
    mask = torch.tensor([[True, False], [True, True]])[None, None]
    allowed = streaming._allowed_keys(mask, torch.ones(1, 2), causal=True, q_len=2)
    assert torch.equal(allowed, mask)


def test_allowed_keys_are_counted_the_same_a_block_of_rows_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    n = 9
    band = torch.tril(torch.ones(n, n, dtype=torch.bool)) & ~torch.tril(torch.ones(n, n, dtype=torch.bool), -3)
    token_mask = torch.tensor([[1] * n, [0, 0] + [1] * (n - 2)])
    mask = band[None, None] & token_mask.bool()[:, None, None, :]
    whole = streaming._count_allowed_keys(mask, token_mask, causal=True, q_len=n)
    assert whole[1, 0].tolist() == [0, 0, 1, 2, 3, 3, 3, 3, 3]  # left padding, then a 3-key window
    monkeypatch.setattr(streaming, "COUNT_ROWS", 2)
    assert torch.equal(streaming._count_allowed_keys(mask, token_mask, causal=True, q_len=n), whole)
    # no mask: causal rows count the real keys up to themselves, encoder rows every real key
    ones = torch.ones(1, 4, dtype=torch.long)
    assert streaming._count_allowed_keys(None, ones, causal=True, q_len=4)[0, 0].tolist() == [1, 2, 3, 4]
    assert streaming._count_allowed_keys(None, ones, causal=False, q_len=4)[0, 0].tolist() == [4, 4, 4, 4]


def test_length_sorted_batches_cover_every_index_once_longest_first() -> None:
    lengths = [3, 10, 1, 7, 7, 2]
    batches = streaming._length_sorted_batches(lengths, 4)
    assert sorted(i for batch in batches for i in batch) == list(range(6))
    assert batches[0] == [1, 3, 4, 0] and batches[1] == [5, 2]


@pytest.mark.parametrize(
    ("texts", "error", "message"),
    [
        ([], ValueError, "texts is empty"),
        (["fine", "   "], ValueError, r"texts\[1\] is empty, or only whitespace"),
        (["fine", ""], ValueError, r"texts\[1\]"),
        (["fine", 3], TypeError, r"texts\[1\] is int"),
        ("a single string", TypeError, "list of strings"),
    ],
)
def test_bad_texts_are_rejected_naming_the_problem(texts: object, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        streaming.validate_texts(texts)  # type: ignore[arg-type]


def test_unknown_model_name_lists_the_known_names() -> None:
    with pytest.raises(models.UnknownModelError) as raised:
        models.resolve("gpt3-turbo")
    for name in ("minilm-l6", "smollm2-135m", "gemma3-270m", "gpt2", "tiny-bloom"):
        assert name in str(raised.value)


def test_paper_models_keep_the_paper_display_names() -> None:
    names = {spec.name: spec.display_name for spec in models.PAPER_MODELS.values()}
    assert names == {
        "bert-base-uncased": "BERT-Base",
        "gpt2": "GPT2-117M",
        "Qwen/Qwen1.5-0.5B": "Qwen-1.5-0.5B",
        "microsoft/phi-1": "Phi-1",
        "bigscience/bloom-560m": "BLOOM-560M",
        "stabilityai/stablelm-base-alpha-3b": "StableLM-3B",
    }


def test_other_hub_ids_resolve_as_hub_models() -> None:
    assert models.resolve("someone/some-model").source == "hub"


def test_long_batches_trim_the_heap_every_few_blocks_and_short_ones_never(monkeypatch: pytest.MonkeyPatch) -> None:
    assert [streaming.trim_interval(t) for t in (512, 2047, 2048, 4096, 8192, 32768)] == [0, 0, 4, 2, 1, 1]
    loaded = models.load_model("tiny-gpt2")
    assert loaded.n_layers == 2
    trims: list[int] = []
    monkeypatch.setattr(streaming, "_release_free_memory", lambda: trims.append(1))
    monkeypatch.setattr(streaming, "TRIM_TOKENS", 6)  # the tiny model's texts stand in for long inputs
    text = "one two three four five six seven eight"
    for blocks, every, expected in ((6, 1, 2), (12, 2, 1), (18, 3, 0), (24, 4, 0)):  # every k-th block
        trims.clear()
        monkeypatch.setattr(streaming, "TRIM_TOKEN_BLOCKS", blocks)
        assert streaming.trim_interval(6) == every
        streaming.measure(loaded, [text], max_length=6, progress=False)
        assert len(trims) == expected, (every, trims)
    trims.clear()  # the count goes on across batches: 3 batches of 2 blocks, every 3rd block
    monkeypatch.setattr(streaming, "TRIM_TOKEN_BLOCKS", 18)
    streaming.measure(loaded, [text, text + " nine", text + " ten"], max_length=6, batch_size=1, progress=False)
    assert len(trims) == 2
    trims.clear()  # a batch's token positions, padding included: 2 texts of 4 and 3 tokens are 8 positions
    monkeypatch.setattr(streaming, "TRIM_TOKEN_BLOCKS", 6)
    streaming.measure(loaded, ["one two three four", "one two three"], max_length=4, batch_size=2, progress=False)
    assert len(trims) == 2
    trims.clear()
    streaming.measure(loaded, [text], max_length=5, progress=False)  # under TRIM_TOKENS: never
    assert trims == []
