"""The study layer: a study run's parameter file and prompts (this module), and its parts below.

A parameter file (YAML) names the models and the prompt file; ``load_params`` checks it before
any model work starts. ``load_prompts`` reads and checks a prompt file; ``load_metrics`` and
``load_layers`` read a run's measurements (made by ``helpers.study.collection``).

The package's modules: ``collection`` (measuring a run's models, resumably), ``outputs`` (every
table and figure of a run by name, and where a run writes them), ``tables`` (the study's tables),
``reference`` (the paper's published tables) and ``reproduction`` (committed outputs checked
against a rerun). Light: nothing here imports torch (the Snakefile imports this package).
"""

from __future__ import annotations

import csv
import importlib.metadata
import os
import platform
import re
import tempfile
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from helpers.base import paths, store
from helpers.base.checks import ParameterError, is_blank

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
DTYPE_NAMES = ("float32", "bfloat16", "float16")
DEVICE_PATTERN = r"auto|cpu|mps|cuda(:[0-9]+)?"
RUN_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]*"
MAIN_RUN = "default"
"""The main study's run name: its outputs go to figures/, paper/tables/, reports/ and the README."""
MAIN_PARAMS = paths.PARAMS / "default.yaml"
"""The only parameter file that may run the main study (``load_params`` refuses the name elsewhere)."""
LIBRARIES = ("torch", "transformers", "tokenizers", "gguf", "pandas", "numpy", "pyarrow", "matplotlib", "seaborn")


class PromptFileError(ValueError):
    """A prompt file that cannot be used as it is."""


class StudyParams(BaseModel):
    """The contents of a parameter file (params/*.yaml), checked by a schema before any model work.

    Unknown keys, wrong types (no silent "8" -> 8) and out-of-range values are errors naming
    the key, the value and what is allowed (the field's description).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    models: list[str] = Field(
        min_length=1, description="a non-empty list of registry names, hub ids 'owner/name' or existing model folders"
    )
    name: str = Field(
        "default",
        pattern=rf"^{RUN_NAME_PATTERN}$",
        description="one path component: letters, digits, '.', '_' and '-', starting with a letter or digit",
    )
    prompts: str = Field(
        "data/prompts/cognitive_tasks.csv", description="an existing CSV, relative to the repository root or absolute"
    )
    prompts_per_category: int | None = Field(None, ge=1, description="null (every prompt) or a positive integer")
    categories: list[str] = Field(
        default_factory=lambda: list(CATEGORIES),
        min_length=1,
        description=f"a non-empty list of distinct categories among {list(CATEGORIES)} (or your own with "
        "custom_categories: true)",
    )
    custom_categories: bool = Field(
        False, description="true or false; true lets `categories` name a prompt set's own categories"
    )
    batch_size: int = Field(16, ge=1, description="a positive integer")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description=f"one of {list(DTYPE_NAMES)}")
    device: str = Field("auto", pattern=rf"^({DEVICE_PATTERN})$", description="auto, cpu, mps, cuda or cuda:N")
    max_length: int | None = Field(
        None, ge=2, description="null (a too-long prompt is an error) or an integer above the model's special tokens"
    )
    seed: int = Field(0, ge=0, le=2**32 - 1, description="an integer from 0 to 2**32 - 1")
    bootstrap_samples: int = Field(
        1000, ge=MIN_BOOTSTRAP_SAMPLES, description=f"an integer of at least {MIN_BOOTSTRAP_SAMPLES}"
    )
    calibration_runs: int = Field(
        100, ge=2, le=100_000, description="simulated runs per planted truth of finding 1 (notebook 06), 2 or more"
    )

    @model_validator(mode="after")
    def _consistent(self) -> StudyParams:
        for key in ("models", "categories"):
            items = getattr(self, key)
            blank = [item for item in items if not item.strip()]
            if blank:
                raise ValueError(f"{key!r} has an empty name: {items!r}")
            duplicated = sorted({item for item in items if items.count(item) > 1})
            if duplicated:
                raise ValueError(f"{key!r} has duplicates {duplicated}")
        unknown = [c for c in self.categories if c not in CATEGORIES]
        if unknown and not self.custom_categories:
            raise ValueError(
                f"categories {unknown} are not among the paper's 12 {list(CATEGORIES)}; for your own prompt set's "
                "categories set custom_categories: true"
            )
        keys: dict[str, str] = {}
        for model in self.models:
            check_model_name(model)
            key = model_key(model).casefold()  # case-insensitive file systems would merge Bert and bert
            if key in keys:
                raise ValueError(
                    f"models {keys[key]!r} and {model!r} would share the output file key {model_key(model)!r}; "
                    "rename one (for a local folder, use another path to it)"
                )
            keys[key] = model
        _check_display_names(self.models)
        if self.device.startswith("cuda"):
            _check_cuda(self.device)
        if not self.prompts_path.is_file():
            raise ValueError(f"prompt file {self.prompts_path} does not exist (key 'prompts')")
        return self

    @property
    def prompts_path(self) -> Path:
        path = Path(self.prompts).expanduser()
        return path if path.is_absolute() else paths.ROOT / path

    @property
    def results(self) -> Path:
        return paths.RESULTS / self.name

    def activations_path(self, model: str, kind: str = "prompts") -> Path:
        suffix = "" if kind == "prompts" else f"_{kind}"
        return self.results / "activations" / f"{model_key(model)}{suffix}.parquet"

    def as_dict(self) -> dict[str, Any]:
        """The parameters as plain values (for provenance)."""
        return self.model_dump()


def _check_display_names(models: list[str]) -> None:
    """Two models whose tables would share a display name (two folders both called ``model``) are an error."""
    from helpers.core.registry import resolve

    seen: dict[str, str] = {}
    for model in models:
        shown = resolve(model).display_name
        if shown.casefold() in seen:
            raise ValueError(
                f"models {seen[shown.casefold()]!r} and {model!r} would both be shown as {shown!r}, so their rows "
                "would merge in every table; rename one of the folders (its last component is the display name)"
            )
        seen[shown.casefold()] = model


def _check_cuda(device: str) -> None:
    """A CUDA device the machine lacks is an error before any work (imports torch only for a CUDA device)."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(device.partition(":")[2] or 0)
    if index >= count:
        raise ValueError(
            f"device {device!r}: this machine has {count} CUDA device(s); use auto, cpu"
            + (f" or cuda:0..cuda:{count - 1}" if count else "")
        )


def model_key(name: str) -> str:
    """A file-name-safe key for a model name (``StudyParams`` rejects two models with one key)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "--", name)


def check_model_name(name: str) -> None:
    """Raise ``ValueError`` if ``name`` cannot name a model that loads here; load nothing.

    ``helpers.core.registry.check_model_name`` (a registry name, an existing model folder, or a hub id
    'owner/name' that is cached or reachable), with its message; no torch.
    """
    from helpers.core.registry import ModelUnavailableError
    from helpers.core.registry import check_model_name as check

    try:
        check(name)
    except ModelUnavailableError as error:
        raise ValueError(str(error)) from None


def parse_params(raw: Any, source: str = "parameters") -> StudyParams:
    """Check a parsed parameter mapping and return ``StudyParams``; errors name the key and what is allowed."""
    if not isinstance(raw, dict):
        raise ParameterError(f"{source}: expected a mapping of keys to values, got {type(raw).__name__}")
    valid = list(StudyParams.model_fields)
    unknown = sorted(map(str, set(raw) - set(valid)))
    if unknown:
        raise ParameterError(f"{source}: unknown key(s) {unknown}; valid keys are {valid}")
    if "models" not in raw or raw["models"] in (None, [], ""):
        raise ParameterError(f"{source}: 'models' is missing or empty; give a list of model names, e.g. [minilm-l6]")
    try:
        return StudyParams(**raw)
    except ValidationError as error:
        problems = []
        for problem in error.errors():
            key = ".".join(str(part) for part in problem["loc"])
            field = StudyParams.model_fields.get(str(problem["loc"][0])) if problem["loc"] else None
            message = problem["msg"].removeprefix("Value error, ")
            text = f"{key!r}: {message}" if key else message
            if problem["type"] != "value_error":
                text += f", got {problem['input']!r} ({type(problem['input']).__name__})"
                if field is not None and field.description:
                    text += f"; allowed: {field.description}"
            problems.append(text)
        raise ParameterError(f"{source}: " + "; ".join(problems)) from None


def params_path(path: str | Path) -> Path:
    """Where a parameter file is: as given, else relative to the repository root (the file need not exist)."""
    path = Path(path).expanduser()
    return path if path.is_absolute() or path.exists() else paths.ROOT / path


def canonical_params(path: str | Path) -> str:
    """One spelling of a parameter file's path (relative to the repository when inside it, else absolute), so the
    workflow sees ``params/smoke.yaml``, ``./params/smoke.yaml`` and its absolute path as one command."""
    resolved = params_path(path).resolve()
    return resolved.relative_to(paths.ROOT).as_posix() if resolved.is_relative_to(paths.ROOT) else str(resolved)


def load_params(path: str | Path) -> StudyParams:
    """Read and check a parameter file, then its prompt set against what every notebook needs (``check_run``),
    before any model work; the run name defaults to the file's stem."""
    path = params_path(path)
    if not path.is_file():
        raise ParameterError(f"parameter file {path} does not exist; the shipped ones are in {paths.PARAMS}")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader) or {}
    except yaml.YAMLError as error:
        raise ParameterError(f"{path}: not valid YAML ({error})") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ParameterError(f"parameter file {path} could not be read as UTF-8 text: {error}") from None
    if isinstance(raw, dict):
        raw.setdefault("name", path.stem)
        if raw["name"] == MAIN_RUN and path.resolve() != MAIN_PARAMS.resolve():
            raise ParameterError(
                f"{path}: the run name {MAIN_RUN!r} (from the file name or the 'name' key) is reserved for the main "
                f"study, {MAIN_PARAMS}, whose outputs are committed; give this run another name (rename the file or "
                "set `name:`)"
            )
    params = parse_params(raw, str(path))
    check_run(params, str(path))
    return params


MIN_PROMPTS_PER_CATEGORY = 2
"""Fewest prompts a category may have in a run: finding 5's probes (notebook 08) cross-validate with stratified
folds, which need at least 2 prompts of every category."""


def check_run(params: StudyParams, source: str = "parameters") -> pd.DataFrame:
    """Read the run's prompt set and check it against every requirement a notebook has, naming the offending
    category and the key to change (``ParameterError``); return the prompts. ``load_params`` runs it, so a run is
    refused before any model work rather than in its last notebook."""
    try:
        prompts = load_prompts(params.prompts_path, params.categories, params.prompts_per_category)
    except PromptFileError as error:
        raise ParameterError(f"{source}: {error}") from None
    counts = prompts["category"].value_counts().reindex(list(params.categories), fill_value=0)
    few = {str(category): int(count) for category, count in counts.items() if count < MIN_PROMPTS_PER_CATEGORY}
    if few:
        shown = ", ".join(f"{category!r} has {count}" for category, count in few.items())
        selection = f" with prompts_per_category: {params.prompts_per_category}" if params.prompts_per_category else ""
        raise ParameterError(
            f"{source}: every category needs at least {MIN_PROMPTS_PER_CATEGORY} prompts (finding 5's probes in "
            f"notebook 08 cross-validate within categories), but in {params.prompts_path}{selection} {shown}; add "
            "prompts, raise prompts_per_category, or leave the category out of `categories`"
        )
    return prompts


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader that refuses a mapping with a key given twice (plain YAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice; give each key once", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


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
    prompts = _read_prompt_csv(path)
    where = prompts["line"]

    def lines(mask: pd.Series) -> str:
        shown = [f"line {n} ({pid!r})" for n, pid in zip(where[mask], prompts.loc[mask, "prompt_id"], strict=True)]
        return ", ".join(shown[:10]) + (f" and {len(shown) - 10} more" if len(shown) > 10 else "")

    if (blank := prompts["prompt_id"].str.strip() == "").any():
        raise PromptFileError(f"prompt file {path}: empty prompt_id on {lines(blank)}; each prompt needs one")
    if (duplicated := prompts["prompt_id"].duplicated(keep=False)).any():
        raise PromptFileError(f"prompt file {path}: duplicate prompt_id(s) on {lines(duplicated)}")
    if (empty := prompts["text"].map(is_blank)).any():
        raise PromptFileError(
            f"prompt file {path}: empty text, or only whitespace or invisible characters, on {lines(empty)}"
        )
    # a subset of the paper's categories selects from a file that has them all; any other category is an error
    unselected = prompts["category"].isin([c for c in CATEGORIES if c not in categories])
    prompts, where = prompts[~unselected], where[~unselected]
    if (unknown := ~prompts["category"].isin(list(categories))).any():
        names = sorted(set(prompts.loc[unknown, "category"]))
        raise PromptFileError(
            f"prompt file {path}: unknown categor(y/ies) {names} on {lines(unknown)}; allowed: {list(categories)} "
            "(the parameter file's `categories`, with custom_categories: true for your own)"
        )
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


def _read_prompt_csv(path: Path) -> pd.DataFrame:
    """The rows of a prompt CSV as text, with the file line each starts on; errors name the file and line."""
    try:
        with open(path, encoding="utf-8", newline="") as stream:
            reader = csv.reader(stream, strict=True)
            header = next(reader, None)
            if header is None:
                raise PromptFileError(f"prompt file {path} is empty; expected a header {','.join(PROMPT_COLUMNS)}")
            if header and header[0].startswith("\ufeff"):
                header[0] = header[0].removeprefix("\ufeff")  # a byte-order mark (Excel's "CSV UTF-8") is no text
            repeated = sorted({column for column in header if header.count(column) > 1})
            if repeated:
                raise PromptFileError(
                    f"prompt file {path}, line 1: column(s) {repeated} appear more than once in the header "
                    f"{','.join(header)}; give each of {list(PROMPT_COLUMNS)} once"
                )
            missing = [column for column in PROMPT_COLUMNS if column not in header]
            if missing:
                raise PromptFileError(
                    f"prompt file {path} lacks column(s) {missing}; required: {list(PROMPT_COLUMNS)}, found {header}"
                )
            rows, starts, start = [], [], reader.line_num + 1
            for row in reader:
                if row and len(row) != len(header):
                    raise PromptFileError(
                        f"prompt file {path}, line {start}: {len(row)} fields where the header has {len(header)} "
                        f"({','.join(header)}); wrap a text that contains a comma in double quotes"
                    )
                if row:
                    rows.append(row)
                    starts.append(start)
                start = reader.line_num + 1
    except UnicodeDecodeError as error:
        raise PromptFileError(f"prompt file {path} is not UTF-8 text ({error.reason} at byte {error.start})") from None
    except csv.Error as error:
        raise PromptFileError(f"prompt file {path}, line {reader.line_num}: not valid CSV ({error})") from None
    except OSError as error:
        raise PromptFileError(f"prompt file {path} could not be read: {error.strerror or error}") from None
    if not rows:
        raise PromptFileError(f"prompt file {path} has a header but no prompts")
    return pd.DataFrame(rows, columns=header, dtype=str).assign(line=starts)


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
    return store.markdown_table(pd.DataFrame(rows), floatfmt="g")


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


def made_for(params: StudyParams, model: str | None = None) -> dict[str, Any]:
    """Whose a stored result is: the model (for one model's files), the run, its checked parameters and its prompt
    file (by hash). Written into every result's metadata (``store.MADE_FOR``) and checked when it is read."""
    identity: dict[str, Any] = {} if model is None else {"model": model}
    return identity | {
        "run": params.name,
        "parameters": params.as_dict(),
        "prompts_sha256": store.file_sha256(params.prompts_path)[:16],
    }


def read_result(path: Path, params: StudyParams, model: str | None = None) -> pd.DataFrame:
    """A stored result of this run (and ``model``), verified: intact (``store.read_table``) and made for them
    (``made_for``), else an error naming what it was made for and what reads it."""
    return store.read_table(path, made_for(params, model))


def load_metrics(params: StudyParams) -> pd.DataFrame:
    """The tidy per-prompt table of a run: every model's prompt table with its model metadata."""
    frames = []
    for model in params.models:
        path = params.activations_path(model)
        if not path.is_file():
            raise FileNotFoundError(f"no measurements for {model!r} at {path}: run notebook 01 (or `make reproduce`)")
        table = read_result(path, params, model)
        meta = store.read_metadata(path)["model"]
        keys = ("display_name", "family", "architecture", "n_parameters", "n_layers", "n_heads", "hidden_size")
        identity = pd.DataFrame({key: [meta[key]] * len(table) for key in keys})
        frames.append(pd.concat([table[["model"]], identity, table.drop(columns="model")], axis=1))
    return pd.concat(frames, ignore_index=True)


def load_layers(params: StudyParams) -> pd.DataFrame:
    """The long per-layer table of a run (model, prompt_id, category, layer, statistic, value)."""
    frames = [read_result(params.activations_path(model, "layers"), params, model) for model in params.models]
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
        store.MADE_FOR: made_for(params),
        "params": params.as_dict(),
        "prompt_file_sha256": store.file_sha256(params.prompts_path),
        "libraries": library_versions(),
        "models": models,
    }
