"""An interrupted collection loses nothing: a killed run resumes, recomputing only what is missing."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from helpers import study
from helpers.base import paths, store
from helpers.study import collection

MODEL = "smollm2-135m"


@pytest.fixture
def run_names() -> Iterator[tuple[str, str]]:
    names = (f"test-resume-{uuid.uuid4().hex[:8]}", f"test-uninterrupted-{uuid.uuid4().hex[:8]}")
    yield names
    for name in names:
        shutil.rmtree(paths.RESULTS / name, ignore_errors=True)


def _params(tmp_path: Path, name: str, prompts: Path) -> Path:
    path = tmp_path / f"{name}.yaml"
    raw = {"name": name, "models": [MODEL], "prompts": str(prompts), "prompts_per_category": 3, "batch_size": 3}
    path.write_text(yaml.safe_dump(raw))
    return path


PARTS = tuple(f"{suffix}.parquet" for suffix in collection.CHUNK_PARTS.values() if suffix)
"""A chunk's files besides its prompt file (written last)."""


def _read(path: Path) -> object:
    """A stored table, or a stored (ids, vectors) pair, verified."""
    return store.read_vectors(path) if path.stem.endswith("_vectors") else store.read_table(path)


def _chunk_times(params: study.StudyParams) -> dict[str, float]:
    folder = params.activations_path(MODEL).with_suffix(".chunks")
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("*.parquet") if not p.name.startswith(".")}  # no *.tmp


def test_killed_collection_resumes_and_equals_an_uninterrupted_run(tmp_path: Path, run_names: tuple[str, str]) -> None:
    prompts = tmp_path / "prompts.csv"
    shutil.copy(paths.PROMPTS / "cognitive_tasks.csv", prompts)
    killed = study.load_params(_params(tmp_path, run_names[0], prompts))
    params_file = str(_params(tmp_path, run_names[0], prompts))
    code = (
        "from helpers import study; from helpers.study import collection as c; "
        f"c.collect_model(study.load_params({params_file!r}), {MODEL!r})"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], cwd=paths.ROOT, env={**os.environ, "PYTHONPATH": str(paths.ROOT)}
    )
    deadline = time.monotonic() + 300
    while len([n for n in _chunk_times(killed) if not n.endswith(PARTS)]) < 3:
        assert process.poll() is None, "the collection ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not killed.activations_path(MODEL).exists(), "killed mid-collection: no final table yet"
    before = _chunk_times(killed)

    collection.collect_model(killed, MODEL, progress=False)  # resume: a half-written chunk is a *.tmp, never read
    after = _chunk_times(killed)
    complete = [n for n in before if not n.endswith(PARTS)]  # a chunk's prompt file is written last
    kept = [*complete, *(n.replace(".parquet", part) for n in complete for part in PARTS)]
    assert all(after[name] == before[name] for name in kept), "complete chunks were recomputed"
    assert len(after) == len(collection.CHUNK_PARTS) * len(study.CATEGORIES)
    assert not list(killed.activations_path(MODEL).with_suffix(".chunks").glob(".*.tmp")), "half-written files left"
    assert store.read_metadata(killed.activations_path(MODEL))["chunks_measured_now"] == len(study.CATEGORIES) - len(
        complete
    )

    uninterrupted = study.load_params(_params(tmp_path, run_names[1], prompts))
    collection.collect_model(uninterrupted, MODEL, progress=False)
    for kind in ("prompts", "layers"):
        pd.testing.assert_frame_equal(
            store.read_table(killed.activations_path(MODEL, kind)),
            store.read_table(uninterrupted.activations_path(MODEL, kind)),
        )
    resumed_ids, resumed = store.read_vectors(killed.activations_path(MODEL, "vectors"))
    whole_ids, whole = store.read_vectors(uninterrupted.activations_path(MODEL, "vectors"))
    assert resumed_ids == whole_ids and np.array_equal(resumed, whole)
    # the random-weights copy (finding 5's reference) is the same in another process for the same seed, and not
    # the trained model
    copy_ids, copy = store.read_vectors(killed.activations_path(MODEL, "random_vectors"))
    whole_copy_ids, whole_copy = store.read_vectors(uninterrupted.activations_path(MODEL, "random_vectors"))
    assert copy_ids == resumed_ids == whole_copy_ids and np.array_equal(copy, whole_copy)
    assert copy.shape == resumed.shape and not np.allclose(copy[:, 1:], resumed[:, 1:])

    # a changed prompt invalidates exactly its own chunk
    table = pd.read_csv(prompts)
    table.loc[table["prompt_id"] == "logical_puzzles_01", "text"] = "Is every square a rectangle?"
    table.to_csv(prompts, index=False)
    before = _chunk_times(killed)
    collection.collect_model(killed, MODEL, progress=False)
    assert store.read_metadata(killed.activations_path(MODEL))["chunks_measured_now"] == 1
    after = _chunk_times(killed)
    assert len(set(after) - set(before)) == len(collection.CHUNK_PARTS)  # one chunk (all its files) added
    assert all(after[name] == time for name, time in before.items())  # the old one kept (the configuration cache)

    # killed between a chunk's two writes: its layers file alone is not a chunk; a temporary file is junk
    folder = killed.activations_path(MODEL).with_suffix(".chunks")
    in_use = store.read_metadata(killed.activations_path(MODEL))["chunks"]  # not the old chunk the cache keeps
    (folder / f"{in_use[0]}.parquet").unlink()
    (folder / ".0123.parquet.abcd.tmp").write_bytes(b"half a parquet file")
    collection.collect_model(killed, MODEL, progress=False)
    assert store.read_metadata(killed.activations_path(MODEL))["chunks_measured_now"] == 1
    keys = store.read_metadata(killed.activations_path(MODEL))["chunks"]
    assert not list(folder.glob(".*.tmp")) and len(keys) == len(study.CATEGORIES)
    kinds = collection.CHUNK_PARTS.values()
    assert all((folder / f"{key}{kind}.parquet").is_file() for key in keys for kind in kinds)


def test_unwritable_output_folder_is_named_before_model_work(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(study.OutputNotWritableError, match=re.escape(str(blocker))):
        study.ensure_writable(blocker / "results")


def test_a_too_long_prompt_is_named_by_id_before_any_chunk_is_measured(tmp_path: Path) -> None:
    table = pd.read_csv(paths.PROMPTS / "cognitive_tasks.csv").groupby("category").head(2)
    table.loc[table["prompt_id"] == table["prompt_id"].iloc[-1], "text"] = "word " * 700  # the last prompt
    table.to_csv(tmp_path / "prompts.csv", index=False)
    name = f"test-too-long-{uuid.uuid4().hex[:8]}"
    raw = {"name": name, "models": ["tiny-bert"], "prompts": str(tmp_path / "prompts.csv"), "prompts_per_category": 2}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    params = study.load_params(tmp_path / "params.yaml")
    try:
        with pytest.raises(ValueError, match=rf"{table['prompt_id'].iloc[-1]} \(70\d tokens\).*max_length=512"):
            collection.collect_model(params, "tiny-bert", progress=False)
        assert not list(params.activations_path("tiny-bert").with_suffix(".chunks").glob("*.parquet"))
        params = study.parse_params({**raw, "max_length": 512})
        prompts = store.read_table(collection.collect_model(params, "tiny-bert", progress=False)["prompts"])
        assert prompts["truncated"].sum() == 1 and prompts["n_tokens"].max() == 512
    finally:
        shutil.rmtree(paths.RESULTS / name, ignore_errors=True)


def test_a_stored_chunk_that_fails_verification_is_measured_again_never_used(tmp_path: Path) -> None:
    name = f"test-verify-{uuid.uuid4().hex[:8]}"
    raw = {"name": name, "models": ["tiny-bert"], "prompts_per_category": 2, "batch_size": 4}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    params = study.load_params(tmp_path / "params.yaml")
    try:
        written = collection.collect_model(params, "tiny-bert", progress=False)
        expected = {kind: _read(path) for kind, path in written.items()}
        folder = params.activations_path("tiny-bert").with_suffix(".chunks")
        first, second, third = sorted(p for p in folder.glob("*.parquet") if not p.name.endswith(PARTS))[:3]
        shutil.copy(second, first)  # another valid chunk in its place: other prompts, valid file
        third.write_bytes(third.read_bytes()[:300])  # truncated
        with pytest.warns(collection.ChunkNotTrustedWarning) as caught:
            written = collection.collect_model(params, "tiny-bert", progress=False)
        messages = " ".join(str(w.message) for w in caught)
        assert first.name in messages and third.name in messages
        assert store.read_metadata(written["prompts"])["chunks_measured_now"] == 2
        for kind, path in written.items():
            if kind in ("vectors", "random_vectors"):
                assert _read(path)[0] == expected[kind][0] and np.array_equal(_read(path)[1], expected[kind][1])
            else:
                pd.testing.assert_frame_equal(_read(path), expected[kind])
        vector_chunk = next(folder.glob("*_vectors.parquet"))  # an altered vector file is caught too
        table = pq.read_table(vector_chunk)
        flat = table.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False).copy()
        flat[0] += np.float16(1)
        width = table.column("vector").type.list_size
        changed = table.set_column(1, "vector", pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float16()), width))
        pq.write_table(changed, vector_chunk)  # same metadata (the old hash), one value changed
        with pytest.warns(collection.ChunkNotTrustedWarning, match=vector_chunk.name):
            collection.collect_model(params, "tiny-bert", progress=False)
    finally:
        shutil.rmtree(paths.RESULTS / name, ignore_errors=True)
