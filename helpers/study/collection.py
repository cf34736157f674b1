"""Collecting one model's measurements, resumably: chunks stored under content hashes, verified when read.

``collect_model`` measures one model on a run's prompts and writes the prompt table, the
per-layer table and the mean-pooled hidden vectors (per prompt and layer, float16) to
``results/<run>/activations/`` with provenance. The workflow runs it once
per model (notebook 01).
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from helpers.base import code, paths, store
from helpers.study import (
    StudyParams,
    ensure_writable,
    library_versions,
    load_prompts,
    made_for,
)

CHUNK_SIZE = 32
"""Prompts per stored chunk (within one category): the unit that an interrupted run keeps."""
CHUNK_CACHE_BYTES = 256 * 2**20
"""Most bytes of chunks kept per model from other configurations (256 MiB; a configuration of the default
study takes a few MiB): returning to one reuses its chunks. Beyond it the least recently used go first;
the chunks of the configuration just collected are always kept."""


def _chunks(prompts: pd.DataFrame) -> list[pd.DataFrame]:
    """Consecutive slices of at most ``CHUNK_SIZE`` prompts within each category, in prompt order."""
    chunks: list[pd.DataFrame] = []
    for _, group in prompts.groupby("category", sort=False):
        chunks.extend(group.iloc[start : start + CHUNK_SIZE] for start in range(0, len(group), CHUNK_SIZE))
    return chunks


def _content_key(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


MEASUREMENT_CODE = (__name__,)
"""Where the measurement starts: this module. Everything it runs (its import closure: loading, registry,
converters, streaming, metrics, the kernels and their C++ sources) is the measurement code."""


def measurement_code_sha256() -> str:
    """The fingerprint of every file of code a collection runs (``helpers.base.code``): editing any re-measures."""
    return code.code_fingerprint(MEASUREMENT_CODE)


def folder_files(folder: str | Path) -> dict[str, str]:
    """Content hash of each file of a local model folder, by path inside it: its revision (timestamps ignored)."""
    folder = Path(folder).expanduser()
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.relative_to(folder).parts[0].startswith("."))
    return {path.relative_to(folder).as_posix(): store.file_sha256(path) for path in files}


CHUNK_PARTS: dict[str, str] = {
    "layers": "_layers",
    "vectors": "_vectors",
    "random_vectors": "_random_vectors",
    "prompts": "",
}
"""A chunk's files, in the order they are written: ``<key>_layers.parquet``, ``<key>_vectors.parquet``,
``<key>_random_vectors.parquet`` (the same prompts through a random-weights copy of the model, finding 5's
reference for selective units), then ``<key>.parquet`` (the prompt table, written last: its presence marks the
chunk complete)."""


def chunk_files(folder: Path, key: str) -> dict[str, Path]:
    """The files of the chunk ``key`` in ``folder``, by part (``CHUNK_PARTS``): the one naming of chunk files."""
    return {part: Path(folder) / f"{key}{suffix}.parquet" for part, suffix in CHUNK_PARTS.items()}


def chunk_of(path: Path) -> tuple[str, str] | None:
    """The (key, part) of a chunk file (``chunk_files`` inverted); None for any other file (a half-written
    ``.*.tmp``, the ``last_used.json`` record)."""
    name = Path(path).name
    if name.startswith(".") or not name.endswith(".parquet"):
        return None
    stem = name.removesuffix(".parquet")
    for part, suffix in sorted(CHUNK_PARTS.items(), key=lambda item: -len(item[1])):  # longest first
        if suffix and stem.endswith(suffix):
            return stem.removesuffix(suffix), part
    return stem, "prompts"


def complete_chunks(folder: Path) -> list[str]:
    """The keys of the chunks in ``folder`` whose prompt file, written last, exists: those a rerun can reuse."""
    found = (chunk_of(path) for path in sorted(Path(folder).glob("*.parquet")))
    return [found_[0] for found_ in found if found_ is not None and found_[1] == "prompts"]


LAST_USED = "last_used.json"
"""In a model's chunk folder: when each chunk key was last used (seconds since the epoch), for ``prune_chunks``."""


def prune_chunks(folder: Path, keep: list[str], limit: int = CHUNK_CACHE_BYTES) -> list[Path]:
    """Record ``keep`` as used now; remove the least recently used other chunks until they take at most ``limit`` bytes.

    A chunk is its files (``chunk_files``); when it was last used is in ``LAST_USED`` (else its files'
    modification time). Returns what was removed.
    """
    record = folder / LAST_USED
    try:
        last_used = json.loads(record.read_text(encoding="utf-8")) if record.is_file() else {}
    except (OSError, ValueError):
        last_used = {}
    now = time.time()
    last_used |= dict.fromkeys(keep, now)
    chunks: dict[str, list[Path]] = {}
    for path in folder.glob("*.parquet"):
        found = chunk_of(path)
        if found is not None and found[0] not in keep:
            chunks.setdefault(found[0], []).append(path)

    def used(key: str) -> float:
        return float(last_used.get(key, max(f.stat().st_mtime for f in chunks[key])))

    total = sum(f.stat().st_size for files in chunks.values() for f in files)
    removed = []
    for key in sorted(chunks, key=used):
        if total <= limit:
            break
        for path in chunks[key]:
            total -= path.stat().st_size
            path.unlink()
            removed.append(path)
        last_used.pop(key, None)
    present = {found[0] for p in folder.glob("*.parquet") if (found := chunk_of(p)) is not None}
    store.write_text(json.dumps({k: v for k, v in last_used.items() if k in present}, indent=0), record)
    return removed


class ModelFailedError(RuntimeError):
    """A model gave no usable measurement (inf or NaN on every prompt): the run fails rather than drop it."""


class ChunkNotTrustedWarning(UserWarning):
    """A stored chunk failed verification (unreadable, other prompts, or altered) and was measured again."""


def _read_chunk_vectors(path: Path, key: str, prompt_ids: list[str]) -> np.ndarray:
    """A chunk's stored vectors, verified: intact, this chunk's key, exactly its prompt ids in order."""
    vector_ids, vectors = store.read_vectors(path)
    if store.read_metadata(path).get("chunk_key") != key or vector_ids != prompt_ids:
        raise store.StoredTableError(f"{path} belongs to another chunk")
    return vectors


def _verified_chunk(files: dict[str, Path], key: str, prompt_ids: list[str]) -> tuple | None:
    """A stored chunk's (prompt table, layer table, vectors, random-copy vectors) if all verify, else None with a
    warning naming the file.

    Verified: every file (``chunk_files``) reads with its content hash intact (``store.read_table``,
    ``store.read_vectors``), carries this chunk's key, and holds exactly this chunk's prompt ids (the prompt table
    and the vectors in order).
    """
    if not all(path.is_file() for path in files.values()):
        return None
    try:
        vectors = _read_chunk_vectors(files["vectors"], key, prompt_ids)
        random_vectors = _read_chunk_vectors(files["random_vectors"], key, prompt_ids)
        tables = []
        for path in (files["prompts"], files["layers"]):
            table = store.read_table(path)
            metadata = store.read_metadata(path)
            if metadata.get("chunk_key") != key or metadata.get("prompt_ids") != prompt_ids:
                raise store.StoredTableError(f"{path} belongs to another chunk")
            tables.append(table)
        if tables[0]["prompt_id"].tolist() != prompt_ids or set(tables[1]["prompt_id"]) != set(prompt_ids):
            raise store.StoredTableError(f"{files['prompts']} holds other prompts than its metadata says")
    except (store.StoredTableError, KeyError) as error:
        warnings.warn(f"stored chunk not used, measuring it again: {error}", ChunkNotTrustedWarning, stacklevel=3)
        return None
    return tables[0], tables[1], vectors, random_vectors


def collect_model(params: StudyParams, model: str, *, progress: bool = True) -> dict[str, Path]:
    """Measure ``model`` on the run's prompts; write its prompt and per-layer tables with provenance.

    Resumable: prompts are measured in chunks (per category, ``CHUNK_SIZE`` at most), each stored
    atomically under a hash of what it depends on (model, revision or a local folder's file hashes,
    dtype, max_length, device, library versions, the measurement code, and the chunk's prompt ids,
    categories and texts; not batch_size, which changes nothing beyond float rounding), with that
    key, its prompt ids and a content hash in its metadata. A rerun measures only chunks that are
    missing or fail verification (``ChunkNotTrustedWarning`` names them); a changed prompt, model
    revision or parameter changes the hash of exactly the chunks that depend on it. Chunks of
    other configurations are kept up to ``CHUNK_CACHE_BYTES`` (``prune_chunks``), so returning to
    a configuration reuses them. A model with inf or NaN on every prompt is ``ModelFailedError``.
    """
    from tqdm.auto import tqdm

    from helpers.core.models import load_model
    from helpers.core.random_copy import random_copy
    from helpers.core.streaming import check_lengths, check_max_length, measure_with_layers

    prompts = load_prompts(params.prompts_path, params.categories, params.prompts_per_category)
    chunk_folder = ensure_writable(params.activations_path(model).with_suffix(".chunks"))
    for leftover in chunk_folder.glob(".*.tmp*"):  # half-written chunks of a killed run: never read, now removed
        leftover.unlink()
    loaded = load_model(model, dtype=params.dtype, seed=params.seed)
    check_max_length(loaded.tokenizer, params.max_length, model)
    truncation = {"truncation": params.max_length is not None, "max_length": params.max_length}
    encoded = loaded.tokenizer(prompts["text"].tolist(), **truncation)["input_ids"]
    check_lengths(loaded, [len(ids) for ids in encoded], names=prompts["prompt_id"].tolist())  # before any chunk
    prompts = prompts.assign(tokens=[loaded.tokenizer.convert_ids_to_tokens(ids) for ids in encoded])
    versions = library_versions()
    fingerprint = {
        "model": loaded.name,
        "revision": loaded.revision,
        "dtype": params.dtype,
        "max_length": params.max_length,
        # batch_size is left out: padding changes a value by float rounding only (within 1e-5 relative, 1e-7
        # absolute, on every architecture: test_metrics_are_the_same_alone_or_in_a_padded_batch), so another
        # batch size reuses the stored chunks
        "device": params.device,
        "folder_files": folder_files(loaded.name) if loaded.source == "folder" else None,
        "libraries": {name: versions[name] for name in ("torch", "transformers", "tokenizers", "gguf")},
        "measurement_code": measurement_code_sha256(),
    }
    prompt_frames, layer_frames, vector_arrays, random_arrays, keys, measured = [], [], [], [], [], 0
    untrained = None  # the random-weights copy (same config, seed params.seed), built when a chunk needs it
    attention_paths: set[str] = set()
    for chunk in tqdm(_chunks(prompts), desc=f"collect {loaded.name}", unit="chunk", disable=not progress):
        key = _content_key(fingerprint, chunk.drop(columns="tokens").to_dict("records"))
        keys.append(key)
        prompt_ids = chunk["prompt_id"].tolist()
        files = chunk_files(chunk_folder, key)
        prompt_path = files["prompts"]
        stored = _verified_chunk(files, key, prompt_ids)
        if stored is None:
            texts = chunk["text"].tolist()
            untrained = untrained or random_copy(loaded, params.seed)
            result, random_result = (
                measure_with_layers(
                    measured,
                    texts,
                    batch_size=params.batch_size,
                    device=params.device,
                    dtype=params.dtype,
                    max_length=params.max_length,
                    progress=False,
                )
                for measured in (loaded, untrained)
            )
            if result.vectors is None or random_result.vectors is None:
                raise store.StoredTableError(f"{model!r}: the measurement returned no mean-pooled vectors")
            identity = chunk[["prompt_id", "category"]].reset_index(drop=True)
            described = chunk[["text", "tokens", "n_words", "n_digits", "n_question_marks"]].reset_index(drop=True)
            prompt_table = pd.concat([identity, result.prompts.drop(columns="text_index"), described], axis=1)
            layer_table = result.layers.merge(identity.rename_axis("text_index").reset_index(), on="text_index")
            metadata = {
                "fingerprint": fingerprint,
                "chunk_key": key,
                "prompt_ids": prompt_ids,
                "attention_path": result.attention_path,
            }
            store.write_table(layer_table.drop(columns="text_index"), files["layers"], metadata)
            store.write_vectors(prompt_ids, result.vectors, files["vectors"], metadata)
            store.write_vectors(prompt_ids, random_result.vectors, files["random_vectors"], metadata)
            store.write_table(prompt_table, prompt_path, metadata)  # written last: the marker
            stored = _verified_chunk(files, key, prompt_ids)
            if stored is None:
                raise store.StoredTableError(f"chunk {prompt_path} did not verify right after it was written")
            measured += 1
        prompt_frames.append(stored[0])
        layer_frames.append(stored[1])
        vector_arrays.append(stored[2])
        random_arrays.append(stored[3])
        attention_paths.add(store.read_metadata(prompt_path).get("attention_path", "unknown"))
    prune_chunks(chunk_folder, keys)
    prompt_table = pd.concat(prompt_frames, ignore_index=True)
    if (prompt_table["nonfinite_layers"] > 0).all():  # notebooks 02-06 would leave every row out
        raise ModelFailedError(
            f"{model!r} gave inf or NaN activations on every one of its {len(prompt_table)} prompts with dtype "
            f"{params.dtype!r}: it would be missing from every table. Use dtype float32 (or bfloat16), or leave the "
            "model out of the parameter file"
        )
    provenance = {
        store.MADE_FOR: made_for(params, model),
        # attn_implementation is what the loader set; attention_path is what computed the entropies
        "model": {**loaded.metadata(), "attention_path": ", ".join(sorted(attention_paths))},
        "params": params.as_dict(),
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
    random_provenance = {**provenance, "random_copy": {"of": loaded.name, "seed": params.seed}}
    return {
        "random_vectors": store.write_vectors(
            prompt_table["prompt_id"].tolist(),
            np.concatenate(random_arrays),
            params.activations_path(model, "random_vectors"),
            random_provenance,
        ),
        "vectors": store.write_vectors(
            prompt_table["prompt_id"].tolist(),
            np.concatenate(vector_arrays),
            params.activations_path(model, "vectors"),
            provenance,
        ),
        "prompts": store.write_table(prompt_table, params.activations_path(model), provenance),
        "layers": store.write_table(
            pd.concat(layer_frames, ignore_index=True), params.activations_path(model, "layers"), provenance
        ),
    }
