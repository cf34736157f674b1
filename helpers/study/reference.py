"""The paper's published result tables, parsed from its fixed-width results file into CSV.

The source is ``data/reference/raw/llm_brain_analysis_tables_20250803_232237.txt``, copied verbatim
from the paper's repository. Each ``TABLE N: TITLE`` section is a pandas ``to_string`` print-out;
``python -m helpers.study.reference`` regenerates ``data/reference/<slug>.csv`` from it.
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pandas as pd

from helpers.base import paths

RAW_TABLES: Path = paths.REFERENCE / "raw" / "llm_brain_analysis_tables_20250803_232237.txt"

_TABLE_HEADING = re.compile(r"^TABLE (\d+): (.+?)\s*$")
_RULE = re.compile(r"^-+\s*$")
_TOKEN = re.compile(r"\S+")
_SCALE = re.compile(r"^(\d+(?:\.\d+)?)([KMBT])$")
_MILLIONS_PER_UNIT = {"K": Decimal("0.001"), "M": Decimal(1), "B": Decimal(1000), "T": Decimal(1_000_000)}


def slugify(title: str) -> str:
    """Snake-case slug of a table title: ``"Top 10 by Lowest Sparsity (Highest Density):"`` -> ``top_10_by_...``."""
    return re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_")


def parameters_to_millions(value: str) -> float:
    """Published parameter count (``"109.5M"``, ``"1.4B"``) in millions, exactly as printed (no float drift)."""
    match = _SCALE.match(value.strip())
    if match is None:
        raise ValueError(f"unrecognised parameter count {value!r}")
    return float(Decimal(match.group(1)) * _MILLIONS_PER_UNIT[match.group(2)])


def _blocks(lines: list[str]) -> list[list[str]]:
    """Split a section body into runs of non-blank lines."""
    blocks: list[list[str]] = [[]]
    for line in lines:
        if line.strip():
            blocks[-1].append(line)
        elif blocks[-1]:
            blocks.append([])
    return [block for block in blocks if block]


def _parse_block(block: list[str]) -> pd.DataFrame:
    """Parse one pandas ``to_string`` print-out, checking every cell sits in its fixed-width column."""
    header = list(_TOKEN.finditer(block[0]))
    index_name: str | None = None
    rows = block[1:]
    # A named index prints its name alone on a second header line, left-justified at column 0.
    second = block[1].split() if len(block) > 1 else []
    if len(header) > 1 and len(second) == 1 and not block[1][0].isspace() and block[0][0].isspace():
        index_name, rows = second[0], block[2:]
    columns = [token.group() for token in header]
    ends = [token.end() for token in header]
    records: list[list[str]] = []
    for row in rows:
        cells = list(_TOKEN.finditer(row))
        if index_name is not None:
            if not cells or cells[0].start() != 0:
                raise ValueError(f"index label not left-justified in row {row!r}")
            cells = cells[1:]
        if len(cells) != len(columns) or [cell.end() for cell in cells] != ends:
            raise ValueError(f"row does not line up with header {columns}: {row!r}")
        records.append(([row.split()[0]] if index_name is not None else []) + [cell.group() for cell in cells])
    names = ([index_name] if index_name is not None else []) + columns
    frame = pd.DataFrame(records, columns=names)
    for name in names:
        try:
            frame[name] = pd.to_numeric(frame[name])
        except (ValueError, TypeError):
            pass  # a text column (model, category, published parameter count) stays text
    if "Parameters" in frame.columns:
        millions = frame["Parameters"].map(parameters_to_millions).astype("float64")
        frame.insert(frame.columns.get_loc("Parameters") + 1, "Parameters_millions", millions)
    return frame


def parse_published_tables(path: Path = RAW_TABLES) -> dict[str, pd.DataFrame]:
    """Parse every ``TABLE N: TITLE`` section of the results file into DataFrames keyed by title slug.

    A section holding several sub-tables, each introduced by a line ending in ``:`` (TABLE 6's
    "Top 10 by ..." lists), yields one entry per sub-table, keyed by the sub-title's slug.
    """
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    headings = [(i, m) for i, line in enumerate(lines) if (m := _TABLE_HEADING.match(line))]
    if not headings:
        raise ValueError(f"no 'TABLE N: TITLE' sections in {path}")
    tables: dict[str, pd.DataFrame] = {}
    for k, (start, match) in enumerate(headings):
        stop = headings[k + 1][0] if k + 1 < len(headings) else len(lines)
        body = [line for line in lines[start + 1 : stop] if not _RULE.match(line)]
        for block in _blocks(body):
            if block[0].rstrip().endswith(":"):
                slug, block = slugify(block[0]), block[1:]
            else:
                slug = slugify(match.group(2))
            if slug in tables:
                raise ValueError(f"duplicate table slug {slug!r} in {path}")
            tables[slug] = _parse_block(block)
    return tables


def write_reference_csvs(out_dir: Path = paths.REFERENCE) -> list[Path]:
    """Write each published table to ``out_dir/<slug>.csv`` and return the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for slug, frame in parse_published_tables().items():
        target = out_dir / f"{slug}.csv"
        frame.to_csv(target, index=False, lineterminator="\n")
        written.append(target)
    return written


def load_published(name: str) -> pd.DataFrame:
    """Read the published table ``name`` (a slug, e.g. ``"model_summary"``) from its committed CSV."""
    available = list(parse_published_tables())
    if name not in available:
        raise ValueError(f"unknown published table {name!r}; available: {', '.join(available)}")
    return pd.read_csv(paths.REFERENCE / f"{name}.csv")


if __name__ == "__main__":
    for written_path in write_reference_csvs():
        print(written_path.relative_to(paths.ROOT))
