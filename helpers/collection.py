"""Collecting one model's measurements, resumably: chunks stored under content hashes, verified when read.

``collect_model`` measures one model on a run's prompts and writes the prompt table, the
per-layer table and the mean-pooled hidden vectors (per prompt and layer, float16) to
``results/<run>/activations/`` with provenance. The workflow runs it once
per model (notebook 01).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from helpers import paths, store
from helpers.study import (
    ParameterError,
    StudyParams,
    ensure_writable,
    library_versions,
    load_prompts,
)

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
    for module in ("models.py", "metrics.py", "streaming.py", "collection.py"):
        digest.update((paths.ROOT / "helpers" / module).read_bytes())
    return digest.hexdigest()


def _folder_files(folder: str) -> list[tuple[str, int, int]]:
    """Name, size and modification time of each file of a local model folder: its revision."""
    return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in Path(folder).iterdir() if p.is_file())


class ChunkNotTrustedWarning(UserWarning):
    """A stored chunk failed verification (unreadable, other prompts, or altered) and was measured again."""


def _verified_chunk(
    prompt_path: Path, layer_path: Path, vector_path: Path, key: str, prompt_ids: list[str]
) -> tuple | None:
    """A stored chunk's (prompt table, layer table, vectors) if all verify, else None with a warning naming the file.

    Verified: every file reads with its content hash intact (``store.read_table``, ``store.read_vectors``),
    carries this chunk's key, and holds exactly this chunk's prompt ids (the prompt table and the vectors in order).
    """
    if not (prompt_path.is_file() and layer_path.is_file() and vector_path.is_file()):
        return None
    try:
        vector_ids, vectors = store.read_vectors(vector_path)
        if store.read_metadata(vector_path).get("chunk_key") != key or vector_ids != prompt_ids:
            raise store.StoredTableError(f"{vector_path} belongs to another chunk")
        tables = []
        for path in (prompt_path, layer_path):
            table = store.read_table(path)
            metadata = store.read_metadata(path)
            if metadata.get("chunk_key") != key or metadata.get("prompt_ids") != prompt_ids:
                raise store.StoredTableError(f"{path} belongs to another chunk")
            tables.append(table)
        if tables[0]["prompt_id"].tolist() != prompt_ids or set(tables[1]["prompt_id"]) != set(prompt_ids):
            raise store.StoredTableError(f"{prompt_path} holds other prompts than its metadata says")
    except (store.StoredTableError, KeyError) as error:
        warnings.warn(f"stored chunk not used, measuring it again: {error}", ChunkNotTrustedWarning, stacklevel=3)
        return None
    return tables[0], tables[1], vectors


def check_max_length(tokenizer: Any, max_length: int | None, model: str) -> None:
    """``max_length`` must leave room for text: above the special tokens the tokenizer adds to every prompt."""
    if max_length is None:
        return
    special = len(tokenizer("")["input_ids"])
    if max_length <= special:
        raise ParameterError(
            f"max_length={max_length} leaves no room for text with {model!r}, whose tokenizer adds {special} special "
            f"token(s) to every prompt; use max_length of at least {special + 1}, or null"
        )


def collect_model(params: StudyParams, model: str, *, progress: bool = True) -> dict[str, Path]:
    """Measure ``model`` on the run's prompts; write its prompt and per-layer tables with provenance.

    Resumable: prompts are measured in chunks (per category, ``CHUNK_SIZE`` at most), each stored
    atomically under a hash of what it depends on (model, revision, dtype, max_length, library
    versions, the measurement code, and the chunk's prompt ids, categories and texts), with that
    key, its prompt ids and a content hash in its metadata. A rerun measures only chunks that are
    missing or fail verification (``ChunkNotTrustedWarning`` names them); a changed prompt, model
    revision or parameter changes the hash of exactly the chunks that depend on it.
    """
    from tqdm.auto import tqdm

    from helpers.models import load_model
    from helpers.streaming import check_lengths, measure_with_layers

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
        "batch_size": params.batch_size,  # padding changes float rounding, so it is part of the result
        "device": params.device,
        "folder_files": _folder_files(loaded.name) if loaded.source == "folder" else None,
        "libraries": {name: versions[name] for name in ("torch", "transformers", "tokenizers", "gguf")},
        "measurement_code": measurement_code_sha256(),
    }
    prompt_frames, layer_frames, vector_arrays, keys, measured = [], [], [], [], 0
    for chunk in tqdm(_chunks(prompts), desc=f"collect {loaded.name}", unit="chunk", disable=not progress):
        key = _content_key(fingerprint, chunk.drop(columns="tokens").to_dict("records"))
        keys.append(key)
        prompt_ids = chunk["prompt_id"].tolist()
        prompt_path, layer_path = chunk_folder / f"{key}.parquet", chunk_folder / f"{key}_layers.parquet"
        vector_path = chunk_folder / f"{key}_vectors.parquet"
        stored = _verified_chunk(prompt_path, layer_path, vector_path, key, prompt_ids)
        if stored is None:
            result = measure_with_layers(
                loaded,
                chunk["text"].tolist(),
                batch_size=params.batch_size,
                device=params.device,
                dtype=params.dtype,
                max_length=params.max_length,
                progress=False,
            )
            identity = chunk[["prompt_id", "category"]].reset_index(drop=True)
            described = chunk[["text", "tokens", "n_words", "n_digits", "n_question_marks"]].reset_index(drop=True)
            prompt_table = pd.concat([identity, result.prompts.drop(columns="text_index"), described], axis=1)
            layer_table = result.layers.merge(identity.rename_axis("text_index").reset_index(), on="text_index")
            metadata = {"fingerprint": fingerprint, "chunk_key": key, "prompt_ids": prompt_ids}
            store.write_table(layer_table.drop(columns="text_index"), layer_path, metadata)
            store.write_vectors(prompt_ids, result.vectors, vector_path, metadata)
            store.write_table(prompt_table, prompt_path, metadata)  # written last: the marker
            stored = _verified_chunk(prompt_path, layer_path, vector_path, key, prompt_ids)
            if stored is None:
                raise store.StoredTableError(f"chunk {prompt_path} did not verify right after it was written")
            measured += 1
        prompt_frames.append(stored[0])
        layer_frames.append(stored[1])
        vector_arrays.append(stored[2])
    for stale in chunk_folder.glob("*.parquet"):  # chunks of earlier prompt files or parameters
        if stale.name.removesuffix(".parquet").removesuffix("_layers").removesuffix("_vectors") not in keys:
            stale.unlink()
    provenance = {
        "model": loaded.metadata(),
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
    all_prompts = pd.concat(prompt_frames, ignore_index=True)
    return {
        "vectors": store.write_vectors(
            all_prompts["prompt_id"].tolist(),
            np.concatenate(vector_arrays),
            params.activations_path(model, "vectors"),
            provenance,
        ),
        "prompts": store.write_table(all_prompts, params.activations_path(model), provenance),
        "layers": store.write_table(
            pd.concat(layer_frames, ignore_index=True), params.activations_path(model, "layers"), provenance
        ),
    }
