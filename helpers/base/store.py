"""The on-disk store: every file written atomically with the umask's permissions; parquet tables carry
their provenance and a content hash that is verified whenever they are read; text outputs are
rounded to ``SIGNIFICANT_DIGITS`` so that float noise between machines does not change them."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

METADATA_KEY = b"compendium"
SIGNIFICANT_DIGITS = 4
"""Significant digits of every number in a text output (CSV, Markdown, LaTeX, README, figures' data).
Parquet keeps full precision. Four digits absorb the float noise of different CPUs (last-digit
differences at 1e-7 relative and below) except in the rare value that sits on a rounding edge."""


MEASUREMENT_DIGITS = 6
"""Significant digits the analysis reads measurements at: they come from float32 forward passes (about 7
digits, less after the many sums of a layer), so further digits are float noise that differs between CPUs."""


def at_measurement_precision(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with every float column rounded to ``MEASUREMENT_DIGITS`` (what the analysis notebooks read)."""
    return round_significant(table, MEASUREMENT_DIGITS)


class StoredTableError(OSError):
    """A stored table that cannot be trusted: unreadable, or its content differs from the hash it was written with."""


class NotMadeForError(StoredTableError):
    """A stored result that is intact but was made for another model, run, parameter set or prompt set."""


MADE_FOR = "made_for"
"""The metadata key under which a stored result records whose it is (model, run, parameters, prompt set)."""


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {item!r}" for key, item in value.items()) + "}"
    return repr(value)


def _differences(made: dict[str, Any], wanted: dict[str, Any]) -> tuple[str, str]:
    """How a result's record (``made``) and what reads it (``wanted``) differ, each in words: their differing keys,
    and of a mapping (the parameters) only its differing entries."""
    shown_made, shown_wanted = [], []
    for key in wanted:
        a, b = made.get(key), wanted[key]
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            keys = [k for k in dict.fromkeys([*a, *b]) if a.get(k) != b.get(k)]
            a, b = {k: a.get(k) for k in keys}, {k: b.get(k) for k in keys}
        shown_made.append(f"{key} {_shown(a)}")
        shown_wanted.append(f"{key} {_shown(b)}")
    return " and ".join(shown_made), " and ".join(shown_wanted)


def check_made_for(path: Path, metadata: dict[str, Any], expected: dict[str, Any] | None) -> None:
    """``NotMadeForError`` unless the result ``path`` (with ``metadata``) records that it was made for ``expected``
    (each key equal); the message names both. ``expected`` None: nothing to check."""
    if expected is None:
        return
    stored = metadata.get(MADE_FOR)
    if not isinstance(stored, dict):
        raise NotMadeForError(
            f"{path} does not record what it was made for (written by an older version); delete it and run again"
        )
    stored = json.loads(json.dumps(stored, default=str))
    wanted = json.loads(json.dumps(expected, default=str))  # as stored: JSON values
    made, read = _differences(stored, wanted)
    if made:
        raise NotMadeForError(
            f"{path} was made for {made}, but is read for {read}: it is another result's file (copied, or left from "
            "another configuration); delete it and run again, which makes it anew"
        )


def _permissions() -> int:
    """What a newly created file gets under the current umask (0644 under 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def folder_permissions() -> int:
    """What a newly created folder gets under the current umask (0755 under 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o777 & ~mask


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is given the umask's permissions and renamed
    into place, so a reader never sees a half-written file; on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp" + path.suffix)
    os.close(handle)
    try:
        yield Path(temporary)
        os.chmod(temporary, _permissions())  # mkstemp creates 0600 whatever the umask
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def content_sha256(table: pd.DataFrame) -> str:
    """Hash of a table's columns, dtypes and values (independent of the file format)."""
    digest = hashlib.sha256(json.dumps([list(map(str, table.columns)), list(map(str, table.dtypes))]).encode())
    hashable = table.copy(deep=False)
    for column in hashable.columns[[pd.api.types.is_object_dtype(dtype) for dtype in hashable.dtypes]]:
        as_text = hashable[column].map(lambda v: json.dumps(list(v)) if isinstance(v, list | np.ndarray) else v)
        hashable[column] = as_text  # lists (token strings) hash as their JSON text
    digest.update(pd.util.hash_pandas_object(hashable, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def write_table(table: pd.DataFrame, path: Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``table`` to ``path`` as parquet with ``metadata`` (JSON) and its content hash, atomically."""
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    schema_metadata = dict(arrow.schema.metadata or {})
    stored = {**(metadata or {}), "content_sha256": content_sha256(table)}
    schema_metadata[METADATA_KEY] = json.dumps(stored, sort_keys=True, default=str).encode()
    with atomic_path(path) as temporary:
        pq.write_table(arrow.replace_schema_metadata(schema_metadata), temporary)
    return Path(path)


def write_text(text: str, path: Path) -> Path:
    """Write a text file atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)


def write_between_markers(path: Path, start: str, end: str, section: str) -> bool:
    """Replace what stands between the markers ``start`` and ``end`` in the text file ``path`` with ``section``
    (atomically); False, and nothing written, if the file or either marker is missing."""
    text = Path(path).read_text(encoding="utf-8") if Path(path).is_file() else ""
    if start not in text or end not in text:
        return False
    head, rest = text.split(start, 1)
    write_text(f"{head}{start}{section}{end}{rest.split(end, 1)[1]}", path)
    return True


def markdown_cell(value: Any) -> str:
    """One Markdown table cell's text: ``|`` escaped, newlines as ``<br>``, so a cell never splits a row."""
    text = str(value).replace("\r\n", "\n").replace("\r", "\n")
    return text.replace("\\|", "|").replace("|", "\\|").replace("\n", "<br>")


def markdown_table(table: pd.DataFrame, floatfmt: str = "g", empty: str = "(no rows)") -> str:
    """``table`` as a Markdown (GitHub pipe) table: the one way the compendium writes one.

    Text cells and headers go through ``markdown_cell`` (pipes escaped, newlines as ``<br>``),
    numbers through ``floatfmt``; missing values are empty cells, never ``nan``. A table without
    rows is ``empty`` (a sentence saying why), not a header on its own.
    """
    if not len(table):
        return empty

    def cell(value: Any) -> Any:
        if isinstance(value, float | np.floating) and not np.isfinite(value) and np.isnan(value):
            return ""
        if value is None or value is pd.NA or value is pd.NaT:
            return ""
        return value if isinstance(value, int | float | np.integer | np.floating | bool) else markdown_cell(value)

    shown = table.map(cell).rename(columns=lambda name: markdown_cell(name))
    return shown.to_markdown(index=False, floatfmt=floatfmt)


def read_table(path: Path, made_for: dict[str, Any] | None = None) -> pd.DataFrame:
    """Read a table written by ``write_table``; ``StoredTableError`` if unreadable or not what was written, and
    ``NotMadeForError`` unless it records that it was made for ``made_for`` (``check_made_for``), when given."""
    try:
        table = pq.read_table(path).to_pandas()
        expected = read_metadata(path).get("content_sha256")
    except (OSError, pa.ArrowException, ValueError) as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise StoredTableError(f"{path} is unreadable ({type(error).__name__}: {error}); delete it and rerun") from None
    if expected is None:
        raise StoredTableError(f"{path} carries no content hash (written by an older version); delete it and rerun")
    if content_sha256(table) != expected:
        raise StoredTableError(f"{path} does not match the content hash it was written with; delete it and rerun")
    check_made_for(path, read_metadata(path), made_for)
    return table


def read_metadata(path: Path) -> dict[str, Any]:
    """The provenance stored with a table by ``write_table``."""
    metadata = pq.read_schema(path).metadata or {}
    return json.loads(metadata.get(METADATA_KEY, b"{}"))


def file_sha256(path: Path) -> str:
    """Content hash of a file (for provenance)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def round_significant(values: Any, digits: int = SIGNIFICANT_DIGITS) -> Any:
    """Round every float in a number, array, Series or DataFrame to ``digits`` significant digits.

    The one rounding of the compendium's text outputs and of the data its figures draw, so that
    float noise between machines changes neither. Integers, text and non-finite values pass through.
    """
    if isinstance(values, pd.DataFrame):
        return values.apply(lambda column: round_significant(column, digits))
    if isinstance(values, pd.Series):
        if not pd.api.types.is_float_dtype(values):
            return values
        return pd.Series(round_significant(values.to_numpy(), digits), index=values.index, name=values.name)
    array = np.asarray(values, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        magnitude = np.where(np.isfinite(array) & (array != 0), np.floor(np.log10(np.abs(array))), 0)
        scale = 10.0 ** (digits - 1 - magnitude)
        rounded = np.where(np.isfinite(array), np.round(array * scale) / scale, array)
    return float(rounded) if np.ndim(values) == 0 else rounded


VECTOR_DTYPE = np.float16
"""How stored hidden vectors are kept: float16 (2 bytes a value). Mean-pooled states stay inside its range
(+-65504) in the models measured so far (the largest: Gemma3-270M's outlier dimension, 3.9e4 on 180 study
prompts); a value beyond it is clipped, with a warning and a count in the file's metadata."""


def vectors_sha256(ids: list[str], vectors: np.ndarray) -> str:
    """Hash of the row ids, the array's shape and dtype, and its values."""
    digest = hashlib.sha256(json.dumps([ids, list(vectors.shape), str(vectors.dtype)]).encode())
    digest.update(np.ascontiguousarray(vectors).tobytes())
    return digest.hexdigest()


def write_vectors(ids: list[str], vectors: np.ndarray, path: Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``vectors`` (n, ...) as float16, one parquet row per id, with ``metadata`` and a content hash, atomically.

    Read back with ``read_vectors``, which verifies the hash.
    """
    limit = float(np.finfo(VECTOR_DTYPE).max)
    wide = np.asarray(vectors, dtype=np.float32)
    saturated = int(np.sum(np.isfinite(wide) & (np.abs(wide) > limit)))
    if saturated:  # beyond float16's range: kept at its largest value (counted in the metadata), never inf
        warnings.warn(f"{path}: {saturated} value(s) beyond float16's range were clipped to +-{limit:g}", stacklevel=2)
        wide = np.where(np.isfinite(wide), np.clip(wide, -limit, limit), wide)
    array = np.ascontiguousarray(wide, dtype=VECTOR_DTYPE)
    if array.shape[0] != len(ids):
        raise ValueError(f"{len(ids)} ids for {array.shape[0]} rows of vectors")
    width = int(np.prod(array.shape[1:], dtype=np.int64))
    flat = pa.array(array.reshape(-1), type=pa.float16())
    arrow = pa.table({"id": pa.array(ids, pa.string()), "vector": pa.FixedSizeListArray.from_arrays(flat, width)})
    stored = {**(metadata or {}), "shape": list(array.shape), "saturated_values": saturated}
    stored["content_sha256"] = vectors_sha256(ids, array)
    arrow = arrow.replace_schema_metadata({METADATA_KEY: json.dumps(stored, sort_keys=True, default=str).encode()})
    with atomic_path(path) as temporary:
        pq.write_table(arrow, temporary)
    return Path(path)


def read_vectors(path: Path, made_for: dict[str, Any] | None = None) -> tuple[list[str], np.ndarray]:
    """The ids and the (n, ...) float16 array written by ``write_vectors``; ``StoredTableError`` unless they verify
    (and ``NotMadeForError`` unless made for ``made_for``, when given)."""
    try:
        arrow = pq.read_table(path)
        metadata = read_metadata(path)
        ids = arrow.column("id").to_pylist()
        flat = arrow.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        vectors = np.asarray(flat, dtype=VECTOR_DTYPE).reshape(metadata["shape"])
    except (OSError, pa.ArrowException, ValueError, KeyError) as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise StoredTableError(f"{path} is unreadable ({type(error).__name__}: {error}); delete it and rerun") from None
    if metadata.get("content_sha256") != vectors_sha256(ids, vectors):
        raise StoredTableError(f"{path} does not match the content hash it was written with; delete it and rerun")
    check_made_for(path, metadata, made_for)
    return ids, vectors
