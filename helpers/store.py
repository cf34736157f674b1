"""The on-disk store: parquet tables written atomically, with provenance in their metadata."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

METADATA_KEY = b"compendium"


def write_table(table: pd.DataFrame, path: Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``table`` to ``path`` as parquet with ``metadata`` (JSON) in the schema, atomically.

    The file is written next to its target and renamed into place, so a reader never sees a
    half-written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    schema_metadata = dict(arrow.schema.metadata or {})
    schema_metadata[METADATA_KEY] = json.dumps(metadata or {}, sort_keys=True, default=str).encode()
    arrow = arrow.replace_schema_metadata(schema_metadata)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        pq.write_table(arrow, temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return path


def write_text(text: str, path: Path) -> Path:
    """Write a text file atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return path


def read_table(path: Path) -> pd.DataFrame:
    """Read a table written by ``write_table``."""
    return pq.read_table(path).to_pandas()


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
