"""A study run: its parameter file, its prompts, and collecting one model's measurements.

A parameter file (YAML) names the models and the prompt file; ``load_params`` checks it before
any model work starts. ``collect_model`` measures one model on the prompts and writes the
prompt table and the per-layer table to ``results/<run>/activations/`` with provenance.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import re
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml
from tqdm.auto import tqdm

from helpers import paths, store
from helpers.models import load_model
from helpers.streaming import check_lengths, measure_with_layers

CATEGORIES: tuple[str, ...] = (
    "factual_questions",
    "creative_writing",
    "mathematical_reasoning",
    "emotional_content",
    "technical_code",
    "philosophical_queries",
    "conversational_chat",
    "logical_puzzles",
    "scientific_explanations",
    "language_tasks",
    "instruction_following",
    "commonsense_reasoning",
)
"""The paper's 12 prompt categories, in its order."""

PROMPT_COLUMNS = ("prompt_id", "category", "text")
MIN_BOOTSTRAP_SAMPLES = 1000
"""Fewest bootstrap draws a parameter file may ask for (the findings' intervals use 1% tails)."""
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
LIBRARIES = ("torch", "transformers", "tokenizers", "gguf", "pandas", "numpy", "pyarrow", "matplotlib", "seaborn")


class ParameterError(ValueError):
    """A parameter file that cannot be used as it is."""


class PromptFileError(ValueError):
    """A prompt file that cannot be used as it is."""


@dataclass(frozen=True)
class StudyParams:
    """The contents of a parameter file (params/*.yaml)."""

    models: list[str]  # registry names, hub ids or local folders
    name: str = "default"  # run name: intermediate data go to results/<name>/
    prompts: str = "data/prompts/cognitive_tasks.csv"  # relative to the repository root, or absolute
    prompts_per_category: int | None = None  # N prompts per category, evenly spaced by prompt_id; None: all
    categories: list[str] = field(default_factory=lambda: list(CATEGORIES))
    batch_size: int = 16
    dtype: str = "float32"  # float32, bfloat16 or float16 (statistics are reduced in float64 anyway)
    device: str = "auto"  # auto (GPU when present), cpu, cuda, cuda:1, ...
    max_length: int | None = None  # truncate longer prompts; None: a too-long prompt is an error
    seed: int = 0  # seeds the tiny models' random weights and any resampling
    bootstrap_samples: int = 1000  # bootstrap draws for the robustness intervals (notebook 06)

    @property
    def prompts_path(self) -> Path:
        path = Path(self.prompts)
        return path if path.is_absolute() else paths.ROOT / path

    @property
    def results(self) -> Path:
        return paths.RESULTS / self.name

    @property
    def model_keys(self) -> dict[str, str]:
        """File-name-safe key for each model ('Qwen/Qwen1.5-0.5B' -> 'Qwen--Qwen1.5-0.5B')."""
        return {model_key(name): name for name in self.models}

    def activations_path(self, model: str, kind: str = "prompts") -> Path:
        suffix = "" if kind == "prompts" else f"_{kind}"
        return self.results / "activations" / f"{model_key(model)}{suffix}.parquet"


def model_key(name: str) -> str:
    """A file-name-safe key for a model name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "--", name)


_TYPES: dict[str, tuple[type, ...]] = {
    "models": (list,),
    "name": (str,),
    "prompts": (str,),
    "prompts_per_category": (int, type(None)),
    "categories": (list,),
    "batch_size": (int,),
    "dtype": (str,),
    "device": (str,),
    "max_length": (int, type(None)),
    "seed": (int,),
    "bootstrap_samples": (int,),
}


def parse_params(raw: Any, source: str = "parameters") -> StudyParams:
    """Check a parsed parameter mapping and return ``StudyParams``; errors name the key and what is allowed."""
    if not isinstance(raw, dict):
        raise ParameterError(f"{source}: expected a mapping of keys to values, got {type(raw).__name__}")
    valid = [f.name for f in fields(StudyParams)]
    unknown = sorted(set(raw) - set(valid))
    if unknown:
        raise ParameterError(f"{source}: unknown key(s) {unknown}; valid keys are {valid}")
    if "models" not in raw or not raw["models"]:
        raise ParameterError(f"{source}: 'models' is missing or empty; give a list of model names, e.g. [minilm-l6]")
    for key, value in raw.items():
        allowed = _TYPES[key]
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
            raise ParameterError(f"{source}: {key!r} must be {names}, got {value!r} ({type(value).__name__})")
    for key in ("models", "categories"):
        items = raw.get(key, [])
        if not all(isinstance(item, str) and item.strip() for item in items):
            raise ParameterError(f"{source}: every item of {key!r} must be a non-empty string, got {items!r}")
        if len(set(items)) != len(items):
            raise ParameterError(f"{source}: {key!r} has duplicates: {items!r}")
    if "dtype" in raw and raw["dtype"] not in DTYPES:
        raise ParameterError(f"{source}: dtype {raw['dtype']!r} is not one of {list(DTYPES)}")
    for key in ("batch_size", "prompts_per_category", "max_length", "bootstrap_samples"):
        if raw.get(key) is not None and raw[key] < 1:
            raise ParameterError(f"{source}: {key!r} must be a positive integer, got {raw[key]!r}")
    if raw.get("bootstrap_samples", MIN_BOOTSTRAP_SAMPLES) < MIN_BOOTSTRAP_SAMPLES:
        raise ParameterError(
            f"{source}: bootstrap_samples must be at least {MIN_BOOTSTRAP_SAMPLES}, got {raw['bootstrap_samples']!r}"
        )
    if "name" in raw and not re.fullmatch(r"[A-Za-z0-9._-]+", raw["name"]):
        raise ParameterError(f"{source}: name {raw['name']!r} may use only letters, digits, '.', '_' and '-'")
    return StudyParams(**raw)


def load_params(path: str | Path) -> StudyParams:
    """Read and check a parameter file; the run name defaults to the file's stem."""
    path = Path(path)
    if not path.is_absolute() and not path.exists():
        path = paths.ROOT / path
    if not path.is_file():
        raise ParameterError(f"parameter file {path} does not exist; the shipped ones are in {paths.PARAMS}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise ParameterError(f"{path}: not valid YAML ({error})") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ParameterError(f"parameter file {path} could not be read as UTF-8 text: {error}") from None
    if isinstance(raw, dict):
        raw.setdefault("name", path.stem)
    return parse_params(raw, str(path))


def load_prompts(
    path: str | Path,
    categories: tuple[str, ...] | list[str] = CATEGORIES,
    per_category: int | None = None,
) -> pd.DataFrame:
    """Read and check a prompt file (columns prompt_id, category, text).

    ``per_category``: keep N prompts per category, evenly spaced in prompt_id order (the shipped
    file orders each category short to long, so the subset spans lengths).
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise PromptFileError(f"prompt file {path} {what}; expected a CSV with columns {list(PROMPT_COLUMNS)}")
    try:
        prompts = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as error:
        raise PromptFileError(
            f"prompt file {path} could not be read as a UTF-8 CSV with columns {list(PROMPT_COLUMNS)}: {error}"
        ) from None
    except OSError as error:
        raise PromptFileError(f"prompt file {path} could not be read: {error.strerror or error}") from None
    missing = [column for column in PROMPT_COLUMNS if column not in prompts.columns]
    if missing:
        raise PromptFileError(
            f"prompt file {path} lacks column(s) {missing}; "
            f"required: {list(PROMPT_COLUMNS)}, found {list(prompts.columns)}"
        )
    if prompts.empty:
        raise PromptFileError(f"prompt file {path} has a header but no prompts")
    unnamed = (prompts.index[prompts["prompt_id"].str.strip() == ""] + 2).tolist()  # file line numbers
    if unnamed:
        raise PromptFileError(f"prompt file {path}: empty prompt_id on line(s) {unnamed[:10]}; each prompt needs one")
    duplicated = prompts.loc[prompts["prompt_id"].duplicated(), "prompt_id"].unique().tolist()
    if duplicated:
        raise PromptFileError(f"prompt file {path}: duplicate prompt_id(s) {duplicated[:10]}")
    empty = prompts.loc[prompts["text"].str.strip() == "", "prompt_id"].tolist()
    if empty:
        raise PromptFileError(f"prompt file {path}: empty or whitespace-only text for prompt_id(s) {empty[:10]}")
    unknown = sorted(set(prompts["category"]) - set(categories))
    if unknown:
        raise PromptFileError(f"prompt file {path}: unknown categor(y/ies) {unknown}; allowed: {list(categories)}")
    prompts = prompts[list(PROMPT_COLUMNS)]
    prompts = prompts.assign(category=pd.Categorical(prompts["category"], categories=list(categories)))
    prompts = prompts.sort_values(["category", "prompt_id"], kind="stable")
    if per_category is not None:
        groups = prompts.groupby("category", observed=True, sort=False)
        position, size = groups.cumcount(), groups["prompt_id"].transform("size")
        keep = [p in _evenly_spaced(n, per_category) for p, n in zip(position, size, strict=True)]
        prompts = prompts[keep]
    prompts = prompts.assign(category=prompts["category"].astype(str), **prompt_covariates(prompts["text"]))
    return prompts.reset_index(drop=True)


def prompt_covariates(texts: pd.Series) -> dict[str, pd.Series]:
    """Surface features of each prompt, recorded as covariates: words, digits and question marks."""
    return {
        "n_words": texts.str.split().str.len(),
        "n_digits": texts.str.count(r"[0-9]"),
        "n_question_marks": texts.str.count(r"\?"),
    }


def prompt_length_table(prompts: pd.DataFrame) -> str:
    """The per-category length table of ``data/README.md`` (Markdown), computed from a prompt table."""
    rows = []
    for category, group in [*prompts.groupby("category", sort=False), ("**all**", prompts)]:
        words = group["n_words"]
        rows.append(
            {
                "Category": category,
                "Prompts": len(group),
                "Min words": int(words.min()),
                "Median": float(words.median()),
                "Max": int(words.max()),
                "Mean words": round(float(words.mean()), 1),
                "Mean digits": round(float(group["n_digits"].mean()), 2),
                "Share with '?'": f"{(group['n_question_marks'] > 0).mean():.0%}",
            }
        )
    return pd.DataFrame(rows).to_markdown(index=False, floatfmt="g")


def _evenly_spaced(available: int, wanted: int) -> list[int]:
    """``wanted`` positions spread evenly over ``available`` (first and last included), so a subset spans lengths."""
    if wanted >= available:
        return list(range(available))
    if wanted == 1:
        return [0]
    return sorted({round(i * (available - 1) / (wanted - 1)) for i in range(wanted)})


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries that shape the numbers."""
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


class OutputNotWritableError(OSError):
    """An output folder that cannot be created or written."""


def ensure_writable(folder: Path) -> Path:
    """Create ``folder`` if needed and check a file can be written there, before any model work."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".write-check-")
        os.close(handle)
        os.remove(probe)
    except OSError as error:
        raise OutputNotWritableError(
            f"output folder {folder} is not writable ({error.strerror or error}); fix its permissions, free space, "
            "or choose another run name (the 'name' key of the parameter file)"
        ) from None
    return folder


CHUNK_SIZE = 32
"""Prompts per stored chunk (within one category): the unit that an interrupted run keeps."""


def _chunks(prompts: pd.DataFrame) -> list[pd.DataFrame]:
    """Consecutive slices of at most ``CHUNK_SIZE`` prompts within each category, in prompt order."""
    chunks = []
    for _, group in prompts.groupby("category", sort=False):
        chunks.extend(group.iloc[start : start + CHUNK_SIZE] for start in range(0, len(group), CHUNK_SIZE))
    return chunks


def _content_key(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def measurement_code_sha256() -> str:
    """Hash of the modules that load models and compute the measurements: editing them re-measures."""
    digest = hashlib.sha256()
    for module in ("models.py", "metrics.py", "streaming.py", "study.py"):
        digest.update((paths.ROOT / "helpers" / module).read_bytes())
    return digest.hexdigest()


def _folder_files(folder: str) -> list[tuple[str, int, int]]:
    """Name, size and modification time of each file of a local model folder: its revision."""
    return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in Path(folder).iterdir() if p.is_file())


def collect_model(params: StudyParams, model: str, *, progress: bool = True) -> dict[str, Path]:
    """Measure ``model`` on the run's prompts; write its prompt and per-layer tables with provenance.

    Resumable: prompts are measured in chunks (per category, ``CHUNK_SIZE`` at most), each stored
    atomically under a hash of what it depends on (model, revision, dtype, max_length, library
    versions, the measurement code, and the chunk's prompt ids, categories and texts). A rerun after an interruption
    measures only chunks that are missing; a changed prompt, model revision or parameter changes
    the hash of exactly the chunks that depend on it.
    """
    prompts = load_prompts(params.prompts_path, params.categories, params.prompts_per_category)
    chunk_folder = ensure_writable(params.activations_path(model).with_suffix(".chunks"))
    for leftover in chunk_folder.glob(".*.tmp"):  # half-written chunks of a killed run: never read, now removed
        leftover.unlink()
    dtype = DTYPES[params.dtype]
    loaded = load_model(model, dtype=dtype, seed=params.seed)
    truncation = {"truncation": params.max_length is not None, "max_length": params.max_length}
    lengths = [len(ids) for ids in loaded.tokenizer(prompts["text"].tolist(), **truncation)["input_ids"]]
    check_lengths(loaded, lengths, names=prompts["prompt_id"].tolist())  # all, before any is measured
    versions = library_versions()
    fingerprint = {
        "model": loaded.name,
        "revision": loaded.revision,
        "dtype": params.dtype,
        "max_length": params.max_length,
        "batch_size": params.batch_size,  # padding changes float rounding, so it is part of the result
        "device": params.device,
        "folder_files": _folder_files(loaded.name) if loaded.source == "folder" else None,
        "libraries": {name: versions[name] for name in ("torch", "transformers", "tokenizers", "gguf")},
        "measurement_code": measurement_code_sha256(),
    }
    prompt_frames, layer_frames, keys, measured = [], [], [], 0
    chunks = _chunks(prompts)
    for chunk in tqdm(chunks, desc=f"collect {loaded.name}", unit="chunk", disable=not progress):
        key = _content_key(fingerprint, chunk.to_dict("records"))
        keys.append(key)
        prompt_path, layer_path = chunk_folder / f"{key}.parquet", chunk_folder / f"{key}_layers.parquet"
        if not (prompt_path.is_file() and layer_path.is_file()):
            result = measure_with_layers(
                loaded,
                chunk["text"].tolist(),
                batch_size=params.batch_size,
                device=params.device,
                dtype=dtype,
                max_length=params.max_length,
                progress=False,
            )
            identity = chunk[["prompt_id", "category"]].reset_index(drop=True)
            encoded = loaded.tokenizer(chunk["text"].tolist(), **truncation)["input_ids"]
            prompt = chunk[["text", "n_words", "n_digits", "n_question_marks"]].reset_index(drop=True)
            prompt["tokens"] = [loaded.tokenizer.convert_ids_to_tokens(ids) for ids in encoded]
            measured_columns = result.prompts.drop(columns="text_index")
            prompt_table = pd.concat([identity, measured_columns, prompt], axis=1)
            layer_table = result.layers.merge(identity.rename_axis("text_index").reset_index(), on="text_index")
            store.write_table(layer_table.drop(columns="text_index"), layer_path, {"fingerprint": fingerprint})
            store.write_table(prompt_table, prompt_path, {"fingerprint": fingerprint})  # written last: the marker
            measured += 1
        prompt_frames.append(store.read_table(prompt_path))
        layer_frames.append(store.read_table(layer_path))
    for stale in chunk_folder.glob("*.parquet"):  # chunks of earlier prompt files or parameters
        if stale.name.removesuffix(".parquet").removesuffix("_layers") not in keys:
            stale.unlink()
    provenance = {
        "model": loaded.metadata(),
        "params": asdict(params),
        "prompt_file": str(
            params.prompts_path.relative_to(paths.ROOT)
            if params.prompts_path.is_relative_to(paths.ROOT)
            else params.prompts_path
        ),
        "prompt_file_sha256": store.file_sha256(params.prompts_path),
        "n_prompts": len(prompts),
        "device": str(next(loaded.model.parameters()).device),
        "libraries": versions,
        "fingerprint": fingerprint,
        "chunks": keys,
        "chunks_measured_now": measured,
    }
    return {
        "prompts": store.write_table(
            pd.concat(prompt_frames, ignore_index=True), params.activations_path(model), provenance
        ),
        "layers": store.write_table(
            pd.concat(layer_frames, ignore_index=True), params.activations_path(model, "layers"), provenance
        ),
    }


def load_metrics(params: StudyParams) -> pd.DataFrame:
    """The tidy per-prompt table of a run: every model's prompt table with its model metadata."""
    frames = []
    for model in params.models:
        path = params.activations_path(model)
        if not path.is_file():
            raise FileNotFoundError(f"no measurements for {model!r} at {path}: run notebook 01 (or `make reproduce`)")
        table = store.read_table(path)
        meta = store.read_metadata(path)["model"]
        keys = ("display_name", "family", "architecture", "n_parameters", "n_layers", "n_heads", "hidden_size")
        identity = pd.DataFrame({key: [meta[key]] * len(table) for key in keys})
        frames.append(pd.concat([table[["model"]], identity, table.drop(columns="model")], axis=1))
    return pd.concat(frames, ignore_index=True)


def load_layers(params: StudyParams) -> pd.DataFrame:
    """The long per-layer table of a run (model, prompt_id, category, layer, statistic, value)."""
    frames = [store.read_table(params.activations_path(model, "layers")) for model in params.models]
    return pd.concat(frames, ignore_index=True)


def run_provenance(params: StudyParams) -> dict[str, Any]:
    """What a run's reports record: parameters, library versions, input hashes, model metadata."""
    models = {}
    for model in params.models:
        path = params.activations_path(model)
        if path.is_file():
            meta = store.read_metadata(path)
            models[model] = {**meta["model"], "device": meta.get("device"), "store_sha256": store.file_sha256(path)}
    return {
        "params": asdict(params),
        "prompt_file_sha256": store.file_sha256(params.prompts_path),
        "libraries": library_versions(),
        "models": models,
    }
