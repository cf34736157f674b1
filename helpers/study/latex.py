"""A table as LaTeX that compiles to pages and fits the text width: every column a p{} column (text ragged right,
wrapping; numbers right-aligned), widths shared by content, long tables as a longtable that breaks between rows,
every special character escaped.

The fragment needs ``\\usepackage{array,longtable}`` (both in texlive-latex-base); its first lines say so. Numbers
are written to ``store.SIGNIFICANT_DIGITS`` significant digits, as in the CSV the fragment is set from.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from helpers.base import store

LONG_TABLE_ROWS = 40
"""Tables with more rows break across pages (longtable); shorter ones are one tabular."""
LONG_TABLE_TEXT = 2500
"""Tables with more characters of text than this also break across pages (a tabular cannot, and would run off it)."""
SIZES: tuple[tuple[str, int, float, int], ...] = (
    ("small", 8, 6.0, 78),
    ("scriptsize", 12, 3.0, 100),
    ("tiny", 10**6, 1.5, 128),
)
"""(font size, most columns set at it, column gap \\tabcolsep in pt, about how many characters a line of the text
width holds at that size, article 10 pt): wider tables are set smaller."""
GAP_CHARACTERS = {"small": 2.7, "scriptsize": 1.7, "tiny": 1.1}
"""About how many characters the gaps beside one column take (2 x \\tabcolsep), at each size."""
LONGEST_WORD = 16
"""A text column is at least as wide as its longest word, up to this many characters (longer ones wrap anywhere
LaTeX can: hyphens, slashes)."""

_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_\allowbreak{}",
    "/": r"/\allowbreak{}",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
    "×": r"$\times$",
    "≥": r"$\geq$",
    "≤": r"$\leq$",
    "±": r"$\pm$",
    "…": r"\ldots{}",
    "–": "--",
    "—": "---",
    "−": "-",
    "→": r"$\rightarrow$",
    "∞": r"$\infty$",
    "·": r"$\cdot$",
    "°": r"\textdegree{}",
    "⁻": r"\textsuperscript{-}",
    **{digit: rf"\textsuperscript{{{plain}}}" for digit, plain in zip("⁰¹²³⁴⁵⁶⁷⁸⁹", "0123456789", strict=True)},
}


def escape(text: Any) -> str:
    """``text`` with every character LaTeX treats specially escaped, the symbols above written as LaTeX; other
    characters outside ASCII are kept (pdflatex reads them as UTF-8) only when LaTeX's UTF-8 support knows
    them (Latin letters); the rest become '?'."""
    out = []
    for character in str(text):
        if character in _SPECIAL:
            out.append(_SPECIAL[character])
        elif ord(character) < 128 or "LATIN" in _unicode_name(character):
            out.append(character)
        else:
            out.append("?")
    return "".join(out)


def _unicode_name(character: str) -> str:
    import unicodedata

    return unicodedata.name(character, "")


def _is_numeric(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)


def _cell(value: Any, numeric: bool, digits: int) -> str:
    if value is None or (isinstance(value, float | np.floating) and np.isnan(value)) or value is pd.NA:
        return ""
    if numeric and isinstance(value, float | np.floating):
        return escape(f"{value:.{digits}g}")
    return escape(value) if numeric else r"\hspace{0pt}" + escape(value)


def from_csv(text: str) -> pd.DataFrame:
    """A table read back from the CSV text the compendium wrote (what its LaTeX is set from)."""
    import io

    return pd.read_csv(io.StringIO(text))


def latex_table(table: pd.DataFrame, note: str = "", digits: int = store.SIGNIFICANT_DIGITS) -> str:
    """``table`` as a LaTeX fragment that compiles and fits the text width (see the module's docstring).

    Every column is a ``p{}`` column: numbers right-aligned as wide as their longest number or header word, text
    sharing the rest in proportion to its longest cell (none narrower than its longest word); headers (the column
    names in words) wrap. A long table (``LONG_TABLE_ROWS`` rows or ``LONG_TABLE_TEXT`` characters) is a longtable
    that breaks between rows, a short one a tabular.
    """
    numeric = [_is_numeric(table[column]) for column in table.columns]
    cells = [
        [_cell(value, n, digits) for value, n in zip(row, numeric, strict=True)]
        for row in table.itertuples(index=False, name=None)
    ]
    size, gap = _size(table, numeric, cells)
    widths = _widths(table, numeric, cells, size)
    spec = " ".join(
        rf">{{\{'raggedleft' if n else 'raggedright'}\arraybackslash}}p{{{widths[i]:.3f}\linewidth}}"
        for i, n in enumerate(numeric)
    )
    # \hspace{0pt}: TeX never hyphenates a paragraph's first word; this lets a narrow cell break it
    header = " & ".join(rf"\hspace{{0pt}}\textbf{{{escape(str(c).replace('_', ' '))}}}" for c in table.columns)
    header += r" \\"
    rows = [" & ".join(row) + r" \\" for row in cells]
    text = sum(len(cell) for row in cells for cell, n in zip(row, numeric, strict=True) if not n)
    head = [f"% {note}"] if note else []
    head.append("% needs \\usepackage{array,longtable} (both in texlive-latex-base)")
    opening = ["\\par\\noindent", f"{{\\{size}", f"\\setlength{{\\tabcolsep}}{{{gap:g}pt}}"]
    if len(table) > LONG_TABLE_ROWS or text > LONG_TABLE_TEXT:
        body = [*opening, f"\\begin{{longtable}}{{{spec}}}", "\\hline", header, "\\hline", "\\endhead",
                "\\hline", "\\endfoot", *rows, "\\end{longtable}", "}"]  # fmt: skip
    else:
        body = [*opening, f"\\begin{{tabular}}{{{spec}}}", "\\hline", header, "\\hline", *rows, "\\hline",
                "\\end{tabular}", "\\par", "}"]  # fmt: skip
    return "\n".join([*head, *body]) + "\n"


def _size(table: pd.DataFrame, numeric: list[bool], cells: list[list[str]]) -> tuple[str, float]:
    """The largest font size (and its column gap) at which every column's smallest width fits the line (the
    smallest size when none does); never larger than the column count allows (``SIZES``)."""
    need, _ = _needs(table, numeric, cells)
    for size, most, gap, per_line in SIZES:
        if len(table.columns) <= most and sum(need) <= per_line - GAP_CHARACTERS[size] * len(numeric):
            return size, gap
    return SIZES[-1][0], SIZES[-1][2]


def _needs(table: pd.DataFrame, numeric: list[bool], cells: list[list[str]]) -> tuple[list[float], list[int]]:
    """Each column's smallest width (characters: its longest number, or its longest word up to ``LONGEST_WORD``;
    headers in bold) and, for text, its longest cell."""
    need: list[float] = []
    longest: list[int] = []
    for index, (column, is_number) in enumerate(zip(table.columns, numeric, strict=True)):
        values = [row[index] for row in cells]
        header_words = [round(1.2 * len(w)) for w in str(column).replace("_", " ").split()] or [1]  # bold
        values = [v.replace("\\hspace{0pt}", "").replace("\\allowbreak{}", "") for v in values]
        widest = max([len(v) for v in values] or [0])
        if is_number:
            need.append(max(widest, max(header_words), 3) + 0.5)
            longest.append(0)
        else:
            words = [len(w) for v in values for w in v.replace("\\_", " ").split()] + header_words
            need.append(min(max(words), LONGEST_WORD))
            longest.append(max(widest, sum(header_words)))
    return need, longest


def _widths(table: pd.DataFrame, numeric: list[bool], cells: list[list[str]], size: str) -> list[float]:
    """Each column's width as a share of the line (the gaps between columns left out)."""
    per_line = next(entry[3] for entry in SIZES if entry[0] == size)
    room = per_line - GAP_CHARACTERS[size] * len(numeric)
    need, longest = _needs(table, numeric, cells)
    if sum(need) > room:  # more than fits: every column shrinks alike (the text wraps harder, numbers get smaller)
        return [n * room / sum(need) / per_line for n in need]
    spare = room - sum(need)
    total = sum(max(0, length - n) for length, n in zip(longest, need, strict=True))
    widths = [n + (spare * max(0, length - n) / total if total else 0) for n, length in zip(need, longest, strict=True)]
    # a text column need not be wider than its longest cell
    widths = [min(w, max(n, length)) if length else w for w, n, length in zip(widths, need, longest, strict=True)]
    return [w / per_line for w in widths]
