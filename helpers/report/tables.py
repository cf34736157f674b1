"""HTML tables for the reports and the front page: the one place where a table becomes HTML, every text escaped.

Every text that comes from data (prompts, categories, model names, paths) reaches a page through ``cell`` or
``html_table`` here, escaped once; numbers are written to ``DIGITS`` significant digits and never broken across
lines; headers read as words; a table longer than ``FOLD_ROWS`` rows is folded behind ``<details>`` with a link
to its CSV. ``show_table`` is the notebooks' call; ``assert_script_free`` is the reports' last check.
"""

from __future__ import annotations

import html
import math
import os
import re
from collections.abc import Mapping, Sequence
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from helpers.base import paths

DIGITS = 3
"""Significant digits of every number a report's table shows (the CSV keeps the stored precision)."""

FOLD_ROWS = 25
"""Tables with more rows are shown folded (``<details>``), with a link to their CSV: a page never shows a table
taller than a screen and a half."""

REPORT_FOLDER_ENVIRONMENT = "COMPENDIUM_REPORT_FOLDER"
"""Set by the report runs to the folder the report is written to, so links from a report to a table's CSV are
relative to the report; elsewhere (JupyterLab) they are relative to notebooks/."""

LONG_WORD = 28
"""A cell with a word longer than this (a hash, a path) may break anywhere; other cells break between words only."""

HEADER_WORDS: dict[str, str] = {
    "p": "p",
    "sd": "SD",
    "se": "SE",
    "ci": "CI",
    "holm": "(Holm)",
    "pct": "%",
    "n": "n",
}
"""Words of a column name written otherwise in a header (``residual_sd`` -> 'residual SD')."""


def header(name: Any) -> str:
    """A column name as words: ``math_rank_set_per_row`` -> 'math rank set per row', ``residual_sd`` -> 'residual
    SD'; a name with spaces or capitals is kept as it is (it was written for reading)."""
    text = " ".join(str(part) for part in name if str(part)) if isinstance(name, tuple) else str(name)
    if " " in text or any(character.isupper() for character in text):
        return text.replace("_", " ")
    return " ".join(HEADER_WORDS.get(word, word) for word in text.split("_") if word)


def number(value: Any, digits: int = DIGITS) -> str:
    """A number as a reader sees it: integers whole, other values to ``digits`` significant digits, missing
    values blank (never 'nan'), infinities as ∞."""
    if value is None or isinstance(value, bool):
        return "" if value is None else str(value).lower()
    try:
        value = float(value) if not isinstance(value, int) else value
    except (TypeError, ValueError):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return ""
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    if value == int(value) and abs(value) < 10**6:
        return str(int(value))
    if value == 0 or not 1e-3 <= abs(value) < 1e6:
        text = f"{value:.{digits}g}"
    else:  # plain decimals: 1230, 45.1, 0.00123 (no exponent where a reader needs none)
        exponent = math.floor(math.log10(abs(float(f"{value:.{digits}g}"))))
        text = f"{float(f'{value:.{digits}g}'):.{max(0, digits - 1 - exponent)}f}"
        text = text.rstrip("0").rstrip(".") if "." in text else text
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def _is_number(value: Any) -> bool:
    import numpy as np

    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool | np.bool_)


def _is_missing(value: Any) -> bool:
    import pandas as pd

    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def cell(value: Any, digits: int = DIGITS) -> tuple[str, str]:
    """One table cell: (escaped HTML, CSS class). Numbers get ``number`` and the class 'number' (right-aligned,
    never broken); text is escaped, and a text with a word longer than ``LONG_WORD`` gets 'breakable'."""
    if _is_missing(value):
        return "", ""
    if _is_number(value):
        return html.escape(number(value, digits)), "number"
    text = str(value)
    css = "breakable" if any(len(word) > LONG_WORD for word in text.split()) else ""
    return html.escape(text), css


def html_table(
    header_row: Sequence[Any],
    rows: Sequence[Sequence[Any]],
    row_classes: Sequence[str] | None = None,
    digits: int = DIGITS,
    raw: bool = False,
    css: str = "",
    number_columns: Sequence[Any] = (),
) -> str:
    """A ``<table>`` from a header and rows of values, each value escaped through ``cell``.

    ``raw``: the rows are HTML already made by this module's callers from escaped parts (links, markup of their
    own); headers are escaped either way. ``row_classes``: one CSS class per row (e.g. a verdict's colour).
    """
    head = "".join(
        f'<th class="number">{html.escape(header(h))}</th>'
        if h in number_columns
        else f"<th>{html.escape(header(h))}</th>"
        for h in header_row
    )
    body = []
    for index, row in enumerate(rows):
        css_row = row_classes[index] if row_classes and index < len(row_classes) and row_classes[index] else ""
        cells = []
        for value in row:
            text, css_cell = (str(value), "") if raw else cell(value, digits)
            cells.append(f'<td class="{css_cell}">{text}</td>' if css_cell else f"<td>{text}</td>")
        body.append((f'<tr class="{css_row}">' if css_row else "<tr>") + "".join(cells) + "</tr>")
    table_class = f' class="{html.escape(css)}"' if css else ""
    table = f"<table{table_class}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    return f'<div class="table-box">{table}</div>'  # wider than a narrow screen: it scrolls, its numbers unbroken


def _link_start() -> Path:
    folder = os.environ.get(REPORT_FOLDER_ENVIRONMENT)
    return Path(folder) if folder else paths.NOTEBOOKS


def csv_link(csv: Path, start: Path | None = None, label: str = "CSV") -> str:
    """``<a href=...>`` to a table's CSV, relative to ``start`` (the report's folder; ``_link_start`` by default)."""
    href = os.path.relpath(Path(csv), start or _link_start())
    return f'<a href="{html.escape(href)}">{html.escape(label)}</a>'


def frame_html(
    table: Any,
    digits: int = DIGITS,
    empty: str = "no rows",
    csv: Path | None = None,
    fold_rows: int = FOLD_ROWS,
    start: Path | None = None,
) -> str:
    """A DataFrame as a report's HTML table (see ``show_table``)."""
    import pandas as pd

    if isinstance(table, pd.Series):
        table = table.to_frame()
    if table.empty:
        return f'<p class="compendium-empty"><i>{html.escape(empty)}</i></p>'
    if isinstance(table.columns, pd.MultiIndex):
        table = table.set_axis([" ".join(str(part) for part in column if part) for column in table.columns], axis=1)
    named = any(name is not None for name in table.index.names)
    table = table.reset_index() if named else table.reset_index(drop=True)
    rows = [list(row) for row in table.itertuples(index=False, name=None)]
    numbers = list(table.select_dtypes("number").columns.difference(table.select_dtypes("bool").columns))
    body = html_table(list(table.columns), rows, digits=digits, css="compendium-table", number_columns=numbers)
    link = csv_link(csv, start) if csv is not None else ""
    if len(table) <= fold_rows:
        return f"{body}<p class='table-source'>The table as {link}.</p>" if link else body
    where = f" (or download the {link})" if link else ""
    summary = f"{len(table)} rows × {len(table.columns)} columns: click to show the table{where}"
    return f"<details class='long-table'><summary>{summary}</summary>{body}</details>"


def show_table(
    table: Any,
    digits: int = DIGITS,
    empty: str = "no rows",
    csv: Path | None = None,
    fold_rows: int = FOLD_ROWS,
) -> Any:
    """A DataFrame for a report, as HTML made here: every text escaped, numbers to ``digits`` significant digits
    (right-aligned, never broken), missing values blank, headers as words, no bare 0..n-1 index column.

    A named index (a ``groupby`` result) becomes ordinary columns; an unnamed one is dropped. A table without rows
    is a sentence instead: ``empty`` says why. A table of more than ``fold_rows`` rows is folded behind a click,
    with a link to ``csv`` (the committed table it shows) when given.
    """
    from IPython.display import HTML

    return HTML(frame_html(table, digits, empty, csv, fold_rows))


def show_text(text: str) -> Any:
    """A paragraph made from data (a generated sentence with model and category names), escaped, for a report."""
    from IPython.display import HTML

    paragraphs = [part.strip() for part in str(text).split("\n\n") if part.strip()]
    return HTML("".join(f"<p>{html.escape(' '.join(part.split()))}</p>" for part in paragraphs))


def relative(path: Path, start: Path = paths.ROOT) -> str:
    """``path`` relative to the repository (or ``start``) when inside it, else as it is."""
    path = Path(path)
    return str(path.relative_to(start)) if path.is_relative_to(start) else str(path)


def size(n_bytes: float) -> str:
    """A file size in words: '812 B', '3.4 MiB'."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n_bytes < 1024 or unit == "GiB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024
    return ""


def files_table(written: Mapping[str, Path] | list[Path]) -> Any:
    """The files a notebook wrote, as a table (path relative to the repository, size), not a repr of paths."""
    from IPython.display import HTML

    items = list(written.items()) if isinstance(written, Mapping) else [(Path(p).suffix[1:], p) for p in written]
    rows = [
        [what, relative(Path(path)), size(Path(path).stat().st_size) if Path(path).exists() else ""]
        for what, path in items
    ]
    return HTML(html_table(["what", "file", "size"], rows, css="compendium-table"))


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested mappings as (dotted key, text) rows; lists joined with commas."""
    if isinstance(value, Mapping):
        rows = []
        for key, inner in value.items():
            rows.extend(_flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return rows
    if isinstance(value, list | tuple):
        shown = ", ".join(str(item) for item in value)
        return [(prefix, shown if len(value) <= 12 else f"{len(value)} items: {shown[:200]}…")]
    return [(prefix, "none" if value is None else str(value))]


def _provenance_value(value: Any) -> str:
    """A provenance value as text: never blank (None is 'none', a missing field 'n/a')."""
    if value is None:
        return "none"
    if isinstance(value, list | tuple):
        return ", ".join(str(item) for item in value) or "none"
    return str(value) if str(value) != "" else "n/a"


def _plain_table(header_row: list[str], rows: list[list[str]]) -> str:
    """Rows of text (escaped here), headers as given (escaped, not turned into words: they are keys)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header_row)
    body = []
    for row in rows:
        cells = []
        for value in row:
            text, css = cell(value)
            cells.append(f'<td class="{css}">{text}</td>' if css else f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="table-box"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def provenance_html(provenance: Mapping[str, Any], summary: str = "Provenance") -> str:
    """Provenance as tables inside a collapsed ``<details>``: one table per section.

    A section of one mapping per model (``models``) is a field x model table: one row per field,
    one column per model, so it stays narrow however many fields a model records; no cell is
    blank ('none' for an unset value, 'n/a' for a field a model lacks).
    """
    sections, general = [], []
    for key, value in provenance.items():
        if isinstance(value, Mapping) and value and all(isinstance(v, Mapping) for v in value.values()):
            fields = list(dict.fromkeys(field for inner in value.values() for field in inner))
            rows = [
                [str(field)]
                + [_provenance_value(inner.get(field, "")) if field in inner else "n/a" for inner in value.values()]
                for field in fields
            ]
            sections.append(f"<h4>{html.escape(key)}</h4>" + _plain_table(["field", *map(str, value)], rows))
        elif isinstance(value, Mapping):
            rows = [[k, _provenance_value(v)] for k, v in _flatten(value)]
            sections.append(f"<h4>{html.escape(key)}</h4>" + _plain_table(["key", "value"], rows))
        else:
            general.extend(_flatten(value, key))
    if general:
        rows = [[k, _provenance_value(v)] for k, v in general]
        sections.insert(0, _plain_table(["key", "value"], rows))
    return f"<details><summary>{html.escape(summary)}</summary>{''.join(sections)}</details>"


def show_provenance(provenance: Mapping[str, Any], summary: str = "Provenance") -> Any:
    """``provenance_html`` for a notebook cell."""
    from IPython.display import HTML

    return HTML(provenance_html(provenance, summary))


# --- the reports' last check -----------------------------------------------------------------------------------

_ACTIVE_URL = re.compile(r"^\s*(javascript|vbscript|data:text/html)", re.IGNORECASE)


class _ActiveContent(HTMLParser):
    """Collects what would run in a browser: script elements, event-handler attributes, script URLs."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in {"script", "iframe", "object", "embed"}:
            self.found.append(f"a <{tag}> element")
        for name, value in attrs:
            if name.lower().startswith("on"):
                self.found.append(f"an event handler {name}= on <{tag}>")
            elif name.lower() in {"href", "src", "action", "formaction"} and value and _ACTIVE_URL.match(value):
                self.found.append(f"a script URL in {name}= on <{tag}>")


class ActiveContentError(ValueError):
    """A page that would run code in the reader's browser (the reports are script-free)."""


def assert_script_free(page: str, name: str = "the page") -> str:
    """``page`` unchanged when nothing in it would run in a browser; else ``ActiveContentError`` naming what.

    Every text from data is escaped where HTML is made (this module); this check is the last line: a report
    that would carry a script (a prompt or category that slipped through unescaped) is never written.
    """
    parser = _ActiveContent()
    parser.feed(page)
    parser.close()
    if parser.found:
        found = sorted(set(parser.found))
        raise ActiveContentError(
            f"{name} would run code in a browser ({'; '.join(found[:5])}): a text from data reached the HTML "
            "unescaped; escape it where the HTML is made (helpers.report.tables)"
        )
    return page
