"""A committed table against the rerun: cell by cell under ``helpers.study.tolerances`` (``compare_table``), the
table a rerun keeps (``kept_table``: committed values where within tolerance), texts compared number by number,
and which tables each figure draws (``FIGURE_DATA``)."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from helpers.base import store
from helpers.study.tolerances import (
    ACTIVATION_ATOL,
    CONCLUSION,
    CONTEXT_COLUMNS,
    DRAWS_COLUMN,
    OPERANDS,
    Context,
    column_scale,
    is_integer_text,
    kind,
    parse_number,
    text_within,
    within,
    zero_within_rounding,
)

# --- comparing tables -----------------------------------------------------------------------------


@dataclass
class Difference:
    """One number (or cell) beyond its tolerance."""

    where: str
    column: str
    kind: str
    committed: str
    computed: str


@dataclass
class Comparison:
    """One committed output against the rerun: how many numbers, which differ, and what was done."""

    output: str
    numbers: int = 0
    differences: list[Difference] = field(default_factory=list)
    conclusion_changed: bool = False
    action: str = "kept"
    """``kept`` (committed file reproduced: left as it is), ``written`` (new or changed beyond tolerance)."""
    note: str = ""

    @property
    def reproduced(self) -> bool:
        return not self.differences and not self.note


def _rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def table_csv(table: pd.DataFrame) -> str:
    """A table as the compendium writes it to CSV (``store.SIGNIFICANT_DIGITS`` significant digits)."""
    return table.to_csv(index=False, float_format=f"%.{store.SIGNIFICANT_DIGITS}g")


def _compare_rows(
    name: str, table: pd.DataFrame, old: list[list[str]], context: Context
) -> tuple[Comparison, set[tuple[int, str]]]:
    """Compare a computed table with the committed CSV rows ``old``, number by number: the comparison, and the
    cells (row index, column) beyond tolerance."""
    comparison = Comparison(output=name)
    new = _rows(table_csv(table))
    beyond: set[tuple[int, str]] = set()
    if not old or not new or old[0] != new[0]:
        comparison.note = "columns differ"
        comparison.conclusion_changed = any(CONCLUSION.search(c) for c in set(old[0] if old else []) ^ set(new[0]))
        return comparison, beyond
    header = new[0]
    if len(old) != len(new):
        comparison.note = f"{len(old) - 1} rows committed, {len(new) - 1} computed"
        return comparison, beyond
    scales = {column: column_scale(table[column]) for column in header if pd.api.types.is_numeric_dtype(table[column])}
    for index, (old_row, new_row) in enumerate(zip(old[1:], new[1:], strict=True)):
        row = dict(zip(header, new_row, strict=True))
        draws = context.draws_of(name) or parse_number(row.get(DRAWS_COLUMN, ""))
        where = f"row {index + 1}" + "".join(f" {row[c]}" for c in header[:3] if parse_number(row[c]) is None)
        items = next((parse_number(row[c]) for c in ("items", "prompts", "n_prompts", "units") if c in row), None)
        numeric = [c for c, v in row.items() if parse_number(v) is not None]
        about_activation = any("activation" in row.get(c, "").lower() for c in CONTEXT_COLUMNS) or (
            numeric and all(kind(c, row, name, context) == "activation" for c in numeric)
        )
        if about_activation and zero_within_rounding(header, old_row, new_row):
            # zero within rounding: not compared
            comparison.numbers += sum(parse_number(v) is not None for v in new_row)
            continue
        operands = [abs(v) for c in OPERANDS if c in row and (v := parse_number(row[c]))]
        for column, a, b in zip(header, old_row, new_row, strict=True):
            kind_ = kind(column, row, name, context)
            is_ratio = kind_ == "activation" and ("ratio" in column.lower() or "_over_" in column)
            ratio_floor = sum(ACTIVATION_ATOL / v for v in operands) if is_ratio else 0.0
            if parse_number(a) is not None or parse_number(b) is not None:
                comparison.numbers += 1
                integer = pd.api.types.is_integer_dtype(table[column])
                exact = kind_ == "conclusion" or (integer and kind_ != "unit_count")
                rule = "exact" if exact and kind_ != "conclusion" else kind_
                ok = within(
                    rule, a, b, scales.get(column, 0.0), context, items, column, store.SIGNIFICANT_DIGITS, row, draws
                )
                if not ok and ratio_floor and (x := parse_number(a)) is not None and (y := parse_number(b)) is not None:
                    ok = abs(x - y) <= abs(x) * ratio_floor  # a ratio of means moves by the floor over each mean
            else:
                ok, count = text_within(a, b, "exact" if kind_ == "conclusion" else kind_)
                comparison.numbers += count
            if not ok:
                beyond.add((index, column))
                comparison.differences.append(Difference(where, column, kind_, a, b))
                comparison.conclusion_changed |= kind_ == "conclusion"
    return comparison, beyond


def _committed_rows(path: Path) -> list[list[str]] | None:
    """The rows of a committed CSV; None if it cannot be read as CSV text (a file damaged or replaced by hand)."""
    try:
        return _rows(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, csv.Error):
        return None


UNREADABLE = "unreadable as CSV text (damaged or replaced): written again"


def compare_table(name: str, table: pd.DataFrame, committed: Path, context: Context) -> Comparison:
    """Compare a computed table with the committed CSV ``committed``, number by number."""
    if not Path(committed).is_file():
        return Comparison(output=name, note="new (no committed file)")
    old = _committed_rows(committed)
    if old is None:
        return Comparison(output=name, note=UNREADABLE)
    return _compare_rows(name, table, old, context)[0]


def _committed_value(text: str, column: pd.Series) -> Any:
    """A committed CSV cell as a value of ``column``'s dtype (numbers parsed; anything else kept as its text)."""
    if pd.api.types.is_float_dtype(column):
        return float(text) if text.strip() else float("nan")
    if pd.api.types.is_integer_dtype(column) and is_integer_text(text):
        return int(text)
    return text


def kept_table(
    name: str, table: pd.DataFrame, committed: Path, context: Context
) -> tuple[Comparison, pd.DataFrame, dict[str, str]]:
    """The table as kept: each cell within tolerance of the committed CSV ``committed`` takes its committed value,
    each cell beyond it the computed one (all of them when the committed file is new or has another shape).

    Returns the comparison, the kept table (the computed one's dtypes) and the text cells it changed
    (computed text -> committed text), so that text made from them can follow (``Check.kept_text``).
    """
    if not Path(committed).is_file():
        return Comparison(output=name, note="new (no committed file)"), table, {}
    old = _committed_rows(committed)
    if old is None:
        return Comparison(output=name, note=UNREADABLE), table, {}
    comparison, beyond = _compare_rows(name, table, old, context)
    if comparison.note:  # another shape: nothing of it can be kept
        return comparison, table, {}
    new = _rows(table_csv(table))
    kept = table.copy()
    substitutions: dict[str, str] = {}
    for index, (old_row, new_row) in enumerate(zip(old[1:], new[1:], strict=True)):
        for position, (column, a, b) in enumerate(zip(new[0], old_row, new_row, strict=True)):
            if a == b or (index, column) in beyond:
                continue
            value = _committed_value(a, kept[column])
            textual = pd.api.types.is_object_dtype(kept[column]) or pd.api.types.is_string_dtype(kept[column])
            if not isinstance(value, int | float) and not textual:
                kept[column] = kept[column].astype(object)
            kept.iat[index, position] = value
            if isinstance(table.iat[index, position], str):
                substitutions[table.iat[index, position]] = a
    return comparison, kept, substitutions


def compare_text(name: str, committed: str | None, computed: str) -> Comparison:
    """Compare a generated text (the README's scorecard section) with the committed one: equal, or its numbers
    listed where they differ beyond tolerance, or a note that its words differ."""
    comparison = Comparison(output=name)
    if committed is None:
        comparison.note = "new (no committed text)"
        return comparison
    ok, comparison.numbers = text_within(committed, computed)
    if committed == computed:
        return comparison
    verdicts = ("holds", "does not hold", "inconclusive", "not testable here")
    comparison.conclusion_changed = any(committed.count(v) != computed.count(v) for v in verdicts)
    if ok:
        comparison.note = "its text differs from what the kept tables give (edited by hand?): written again"
    else:
        comparison.differences.append(Difference("section", "text", "text", _excerpt(committed), _excerpt(computed)))
    return comparison


def _excerpt(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


FIGURE_DATA: dict[str, tuple[str, ...]] = {
    **{f"heatmap_{m}{by}": ("complete_results",) for m in ("final_activation", "attention_entropy", "max_sparsity")
       for by in ("", "_by_model")},
    "architecture_comparison": ("complete_results", "complete_results_extended"),
    "layer_profiles": ("complete_results_extended",),
    "entropy_vs_tokens": ("complete_results_extended",),
    "category_ranking_attention_entropy": ("published_vs_reproduced_categories",),
    "finding1_categories": ("finding1_categories", "finding1_per_model", "findings_scorecard"),
    "finding1_length_contrasts": ("finding1_length_contrasts",),
    "signature_probe_depth": ("signature_probes", "signature_verdicts"),
    "signature_units_depth": ("signature_units",),
    "sparsity_variants": ("sparsity_variants", "findings_scorecard"),
    "sparsity_layer_profiles": ("sparsity_variants",),
}  # fmt: skip
"""The committed tables that hold the numbers each figure draws, or (for the figures drawn from per-prompt and
per-layer data) their cell means and maxima over layers: a figure is redrawn when one of them changed."""


def committed_tables(tables: Mapping[str, pd.DataFrame], folder: Path, context: Context) -> dict[str, pd.DataFrame]:
    """This run's ``tables`` as their committed CSVs in ``folder`` hold them, cell by cell within tolerance
    (``kept_table``): what a notebook draws from the tables another notebook checked and wrote."""
    return {name: kept_table(name, table, folder / f"{name}.csv", context)[1] for name, table in tables.items()}


def keep(paths_: Iterable[Path]) -> None:
    """Leave committed files as they are but renew their modification time, so Snakemake sees them up to date."""
    for path in paths_:
        os.utime(path, None)
