"""The reproduction check: every committed output is checked for what it is, every time, and kept only where this
run reproduces it; the numbers a reader sees then come from the committed files.

Another machine (another CPU, thread count or batch composition) rounds float32 sums differently, so a rerun never
reproduces every digit. Each committed table (CSV, Markdown, LaTeX in paper/tables/), figure (figures/) and the
README's scorecard is therefore checked against what this run computed:

* a table's CSV number by number, under the tolerance of each number's kind (``TOLERANCES``, with the reasons);
  each cell within tolerance keeps its committed value, each cell beyond it takes the new one, and the Markdown
  and LaTeX files are generated again from that kept table: a file whose bytes differ from what its table gives
  is rewritten. The kept table is what the notebook goes on to show, draw and quote (``Check.table``), so a kept
  table and the text around it never disagree;
* a figure is kept only when its bytes are the ones a run recorded having made, with the drawing code and the
  data (its tables' kept CSVs) it has now; else it is drawn again. A record that this machine's last run did not
  write (a fresh clone, a pull, a record edited with its figure) is not trusted: the figure is drawn and kept
  only if it is the same picture (``same_picture``);
* the README's scorecard section must be what the kept scorecard gives.

What a run made is recorded next to the outputs, in ``paper/records/[<run>/]<notebook>.json`` (committed): each
output's file hashes, and a figure's drawing code and data. A file whose bytes are not the recorded ones was edited
after the run wrote it: it is reported by name and rewritten from this run's numbers, never kept. ``verify``
checks the files on disk against those records, and each record against the copy kept in this machine's log;
the workflow runs it at every start (an edited output forces its notebook to run again, even when nothing else
changed) and ``summary`` at the end of ``make reproduce``, so a summary always describes the files as they are,
never only the last check. Each notebook's comparisons are in
``build/<run>/reproduction/<notebook>.json``; ``summary`` reads them: "reproduced within tolerance: N of M numbers;
changed: ...".

``python -m helpers.study.reproduction summary --params FILE`` prints that summary (exit 1 when a file fails
``verify``); ``... verify --params FILE`` only checks the files.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from helpers.base import paths, store

# --- the tolerances, one place ------------------------------------------------------------------


@dataclass(frozen=True)
class Tolerance:
    """How far a recomputed number may lie from the committed one, and why."""

    kind: str
    rule: str
    reason: str


CONTINUOUS_RTOL = 1e-4
"""Continuous numbers (means, entropies, Hoyer sparsity, fits, intervals): relative to their column's scale."""
COLUMN_SCALE_FLOOR = 1e-3
"""A column's scale is the median of its |values|, at least this share of its largest |value|."""
THRESHOLD_ENTRIES = 2
"""Threshold fractions: how many entries per prompt may fall on the other side of the threshold."""
THRESHOLD_RTOL = 1e-2
"""Numbers derived from threshold fractions that are no fraction themselves (ratios, d_z, test statistics)."""
ACTIVATION_ATOL = 1e-6
"""Means of signed activations (final activation A_f and what is computed from it): absolute floor."""
P_VALUE_LOG10 = 0.02
"""p-values of continuous statistics: difference of log10 p (0.02 is 4.7% of p)."""
DISCRETE_P_SHARE = 0.1
"""p-values of statistics of counts (classifier accuracies, threshold fractions): a further share of |log10 p|."""
P_VALUE_FLOOR = 1e-300
"""p-values below this (underflow to 0) compare as this."""
SHARE_ITEMS = 2
"""Shares of prompts (share higher): how many items may change sides."""
SHARE_DEFAULT_ITEMS = 100
"""The items a share counts when neither its row nor the run says."""
ACCURACY_PROMPTS = 2
"""Classifier accuracies: how many prompts may be classified differently (a difference of two accuracies: twice)."""
UNIT_COUNT = 2
"""Counts of units that pass a statistical bar (selective units, and their mean and quantile under permutation):
how many units may fall on the other side of it."""
MONTE_CARLO_Z = 2.0
"""Frequencies over resampled draws (bootstrap, permutations): this many Monte Carlo standard errors."""

TOLERANCES: tuple[Tolerance, ...] = (
    Tolerance(
        "continuous",
        f"|new - committed| <= {CONTINUOUS_RTOL:g} x max(|committed|, the column's scale), the scale being the "
        f"median |value| of the column (at least {COLUMN_SCALE_FLOOR:g} of its largest)",
        "the measurements are float32 sums that differ between machines in the 6th-7th digit (the analysis reads "
        f"them at {store.MEASUREMENT_DIGITS} significant digits); a number derived from them carries the rounding of "
        "its operands, whose size its column shows: a contrast of -2.481e-05 in a column of values near 1 moves by "
        "about 1e-6 (seen between an AMD EPYC and an Intel Xeon), nothing relative to itself, everything relative "
        "to its column. 1e-4 of the scale leaves a margin of 10x and more.",
    ),
    Tolerance(
        "activation",
        f"as continuous, but at least {ACTIVATION_ATOL:g} absolute; ratios of such means by the floor over each "
        f"operand; effect sizes and test statistics of them {THRESHOLD_RTOL:g} relative; a row whose means are all "
        f"within {ACTIVATION_ATOL:g} of zero on both sides is zero within rounding, and its derived numbers and its "
        "order among such rows are not compared",
        "the final activation is a mean of signed entries that cancel to near zero (exactly zero up to rounding "
        "for a LayerNorm without bias, as in the tiny test models): its rounding is that of the entries, about 1e-7 "
        "of their RMS (about 1 after a norm), not of the mean itself.",
    ),
    Tolerance(
        "threshold",
        f"|new - committed| <= {THRESHOLD_ENTRIES} entries per prompt (k x mean over prompts of 1 / entries of a "
        f"layer, the largest over models), plus {THRESHOLD_RTOL:g} relative for ratios and statistics of them",
        "a fraction of entries with |h| below a threshold is not continuous: an entry within float rounding of the "
        "threshold is counted on one machine and not on another (tests/integration/test_streaming_exact.py counts, "
        "per layer, the entries within 1e-5 of their token's RMS of the threshold: 0-3 on MiniLM-L6 and SmolLM2, up "
        "to 18 on Gemma 3, whose tokens carry large entries; few of them change sides). "
        "Ratios of two fractions of about 0.01-0.05 each moved by that allowance move by about 1%.",
    ),
    Tolerance(
        "accuracy",
        f"|new - committed| <= {ACCURACY_PROMPTS} / n (n: the row's prompts, else the fewest prompts of a model in "
        f"the run); a difference of two accuracies (gain, selectivity) {2 * ACCURACY_PROMPTS} / n",
        "a probe's accuracy counts prompts classified right: a prompt whose scores are a near-tie is classified "
        "differently on another machine, and the accuracy moves by a whole prompt (1 of 540 is 0.00185; SmolLM2's "
        "scalar accuracy moved from 0.4481 to 0.4509, 1.5 prompts, between an AMD EPYC and an Intel Xeon).",
    ),
    Tolerance(
        "unit_count",
        f"|new - committed| <= {UNIT_COUNT} units (selective units per layer or category, and their permutation null)",
        "a unit whose effect size lies within rounding of the bar (|d| of 0.8 after FDR) passes it on one machine and "
        "not on another, like an entry at a sparsity threshold.",
    ),
    Tolerance(
        "frequency",
        f"|new - committed| <= {MONTE_CARLO_Z:g} x sqrt(max(p (1 - p), 1 / B) / B) over the B resampled draws "
        "(bootstrap samples, label permutations, simulated runs) the frequency counts",
        "how often a resampled statistic passes a bar (a cell stays in the top 10, a permuted gain beats the "
        "observed one) moves when a near-tie in one draw resolves the other way; a difference within the Monte "
        "Carlo error of the frequency itself says nothing.",
    ),
    Tolerance(
        "p_value",
        f"|log10 new - log10 committed| <= {P_VALUE_LOG10:g} (p below {P_VALUE_FLOOR:g} counts as {P_VALUE_FLOOR:g}); "
        f"for statistics of counts (accuracies, threshold fractions) plus {DISCRETE_P_SHARE:g} x |log10 p|; a "
        f"binomial tail of a count (p_above_chance) may be that of the count +- {ACCURACY_PROMPTS}",
        "a tail probability magnifies a tiny change of its statistic (p = 1e-87 moves by 0.5% when the statistic "
        "moves by 1e-4 of itself), so p-values are compared on the log scale; a statistic of counts moves by whole "
        "counts, and its p-value by a factor (one prompt more right moves a binomial p of 0.005 by a factor of "
        "1.5); whether p crosses a threshold is decided by the verdicts, which are compared exactly.",
    ),
    Tolerance(
        "share",
        f"|new - committed| <= {SHARE_ITEMS} / items (the row's items or prompts, else the run's; "
        f"{SHARE_DEFAULT_ITEMS} when neither says)",
        "a share of prompts changes by whole prompts when a near-tie changes sides.",
    ),
    Tolerance(
        "exact",
        "equal: counts, integers, text, ranks and verdicts (a changed rank or verdict is a changed conclusion)",
        "these are what the study concludes; rounding must never change them, and when it does, it is reported.",
    ),
    Tolerance(
        "rounding",
        f"plus half a unit in the last printed digit of both numbers (tables print {store.SIGNIFICANT_DIGITS} "
        "significant digits, text as written)",
        "a committed file holds the number rounded; the comparison allows for what that rounding hides.",
    ),
)
"""Every tolerance of the reproduction check, with its reason (docs/reproducibility.md quotes them)."""


@dataclass(frozen=True)
class Context:
    """What a run's tolerances depend on: the threshold fractions' entry counts, the prompts behind an accuracy,
    and the resampled draws behind a table's frequencies."""

    entries_inverse: float = 0.0
    """The largest, over models, mean over prompts of 1 / (tokens x hidden size): one entry as a fraction."""
    prompts: int = 0
    """The fewest prompts a model of the run has (0: unknown): the resolution of an accuracy over them."""
    draws: tuple[tuple[str, int], ...] = ()
    """(table, resampled draws B) for the tables that hold frequencies over resampled draws."""

    @classmethod
    def from_metrics(cls, metrics: pd.DataFrame, draws: Mapping[str, int] | None = None) -> Context:
        """From a run's tidy per-prompt table (``n_tokens`` and ``hidden_size`` per model) and, for the tables that
        count resampled draws, how many (``{"top10_stability": bootstrap samples}``)."""
        entries = metrics["n_tokens"].astype(float) * metrics["hidden_size"].astype(float)
        inverse = (1.0 / entries.where(entries > 0)).groupby(metrics["model"]).mean()
        prompts = metrics.groupby("model").size()
        return cls(
            float(inverse.max()) if len(inverse) else 0.0,
            int(prompts.min()) if len(prompts) else 0,
            tuple(sorted((draws or {}).items())),
        )

    @property
    def threshold_atol(self) -> float:
        return THRESHOLD_ENTRIES * self.entries_inverse

    def draws_of(self, table: str) -> int | None:
        """How many resampled draws the frequencies of ``table`` count (None: it holds none)."""
        return dict(self.draws).get(table)


# --- what kind a number is ----------------------------------------------------------------------

_CONCLUSION = re.compile(r"verdict|(^|_)rank($|_set)", re.IGNORECASE)
_P_VALUE = re.compile(r"(^|_)p($|_)", re.IGNORECASE)
_SHARE = re.compile(r"share", re.IGNORECASE)
_ACCURACY = re.compile(r"accuracy", re.IGNORECASE)
_ACCURACY_DIFFERENCE = re.compile(r"(^|_)(gain|selectivity|over_embeddings)($|_)", re.IGNORECASE)
_FREQUENCY = re.compile(
    r"share_of_draws|jaccard|^p_permutation$|^p_value$|^holds$|^does_not_hold$|^inconclusive$|^wrong_verdicts$|^power$",
    re.IGNORECASE,
)
"""Frequencies over resampled draws, in a table that counts draws (``Context.draws``) or whose rows say how many
(``simulated_runs``): bootstrap shares, permutation p-values, verdict shares over simulated runs."""
_DRAWS_COLUMN = "simulated_runs"
_UNIT_COUNTS = ("selective", "selective_units", "null_mean", "null_q95")
"""Counts of units that pass a statistical bar (signature_units, signature_unit_owners)."""
_BINOMIAL_P = ("p_above_chance",)
"""p-values that are a binomial tail of the row's accuracy x prompts against its chance (signature transfer)."""
_COUNT_TABLES = re.compile(r"^signature_|^sparsity_variants$")
"""Tables whose statistics are computed from counts (classifier hits, threshold fractions)."""
_CONTEXT_COLUMNS = ("metric", "variant", "statistic", "claim")


def is_threshold_statistic(name: str) -> bool:
    """Whether a metric or column name is a fraction below a threshold (max sparsity and its variants)."""
    lowered = str(name).lower()
    return ("sparsity" in lowered or "near_zero" in lowered) and "hoyer" not in lowered


def kind(column: str, row: Mapping[str, str], table: str = "", context: Context = Context()) -> str:
    """The kind of the number in ``column`` of a row of ``table``: conclusion, frequency, p_value (p_binomial,
    p_discrete), share, accuracy (accuracy_difference), threshold, activation or continuous."""
    threshold_row = any(is_threshold_statistic(row.get(c, "")) for c in _CONTEXT_COLUMNS)
    if _CONCLUSION.search(column) and "biserial" not in column.lower():
        return "conclusion"
    if (context.draws_of(table) or _DRAWS_COLUMN in row) and _FREQUENCY.search(column):
        return "frequency"
    if column in _BINOMIAL_P:
        return "p_binomial"
    if column in _UNIT_COUNTS:
        return "unit_count"
    if _P_VALUE.search(column):
        return "p_discrete" if _COUNT_TABLES.search(table) or threshold_row else "p_value"
    if _SHARE.search(column):
        return "share"
    if _ACCURACY.search(column):
        return "accuracy"
    if _ACCURACY_DIFFERENCE.search(column) and any(_ACCURACY.search(c) for c in row):
        return "accuracy_difference"
    if is_threshold_statistic(column) or threshold_row:
        return "threshold"
    if "activation" in column.lower() or any("activation" in row.get(c, "").lower() for c in _CONTEXT_COLUMNS):
        return "activation"
    return "continuous"


# --- comparing numbers --------------------------------------------------------------------------

_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+\.\d+|\.\d+|\d+)(?:[eE][-+]?\d+)?(?!\w|\.\d)")
"""A number in text, not the digits of a name (SmolLM2-135M, L6) nor a sentence's full stop."""


def _number(text: str) -> float | None:
    text = text.strip()
    if not text or not _NUMBER.fullmatch(text):
        return None
    return float(text)


def _is_integer_text(text: str) -> bool:
    return re.fullmatch(r"[-+]?\d+", text.strip()) is not None


def half_unit(text: str, digits: int | None = None) -> float:
    """Half a unit in the last digit of a printed number: of ``digits`` significant digits when given (how a
    table prints its floats: 0.04091 -> 5e-6, 7.241e+04 -> 5), else of the digits ``text`` shows; 0 for zero."""
    value = _number(text)
    if not value:
        return 0.0
    if digits is not None:
        return 0.5 * 10.0 ** (math.floor(math.log10(abs(value))) - (digits - 1))
    mantissa, _, exponent = text.strip().lower().partition("e")
    decimals = len(mantissa.split(".", 1)[1]) if "." in mantissa else 0
    return 0.5 * 10.0 ** (int(exponent or 0) - decimals)


_NOT_A_FRACTION = re.compile(r"ratio|_over_|d_z|statistic|biserial|^low$|^high$|^value$", re.IGNORECASE)
"""Columns of threshold rows that hold no fraction (ratios, effect sizes, test statistics): compared relatively."""
_OPERANDS = ("encoder", "decoder", "mean_first", "mean_second")
"""The means a ratio in the same row is made of (architecture comparison, pair contrasts)."""


def _zero_within_rounding(header: list[str], old: list[str], new: list[str]) -> bool:
    """Whether every activation mean of a row is within ``ACTIVATION_ATOL`` of zero in both versions."""
    means = [i for i, c in enumerate(header) if c in _OPERANDS or "activation" in c.lower()]
    values = [_number(row[i]) for row in (old, new) for i in means]
    return bool(means) and all(v is not None and abs(v) < ACTIVATION_ATOL for v in values)


def column_scale(values: Iterable[Any]) -> float:
    """A column's scale: the median of its finite |values|, at least ``COLUMN_SCALE_FLOOR`` of the largest."""
    numbers = pd.to_numeric(pd.Series(list(values)), errors="coerce").abs()
    numbers = numbers[numbers.map(math.isfinite)]
    if numbers.empty:
        return 0.0
    return float(max(numbers.median(), COLUMN_SCALE_FLOOR * numbers.max()))


def allowed_difference(
    kind_: str, committed: float, scale: float, context: Context, items: float | None, column: str = "", draws=None
) -> float:
    """The tolerance of ``kind_`` around ``committed`` (before rounding is allowed for); p-values aside."""
    if kind_ == "threshold":
        if _NOT_A_FRACTION.search(column):
            return THRESHOLD_RTOL * abs(committed) + context.threshold_atol
        return context.threshold_atol
    if kind_ == "activation":
        if _NOT_A_FRACTION.search(column):
            return THRESHOLD_RTOL * abs(committed) + ACTIVATION_ATOL
        return max(CONTINUOUS_RTOL * max(abs(committed), scale), ACTIVATION_ATOL)
    if kind_ == "share":
        return SHARE_ITEMS / (items or context.prompts or SHARE_DEFAULT_ITEMS)
    if kind_ in ("accuracy", "accuracy_difference"):
        prompts = items or context.prompts or SHARE_DEFAULT_ITEMS
        return ACCURACY_PROMPTS * (2 if kind_ == "accuracy_difference" else 1) / prompts
    if kind_ == "frequency":
        b = float(draws or context.draws_of("") or 1000)
        p = min(max(committed, 0.0), 1.0)
        return MONTE_CARLO_Z * math.sqrt(max(p * (1 - p), 1 / b) / b)
    if kind_ == "continuous":
        return CONTINUOUS_RTOL * max(abs(committed), scale)
    return 0.0


def _binomial_within(committed: float, computed: float, row: Mapping[str, str], context: Context, items) -> bool:
    """Whether a binomial tail p (``p_above_chance``) is that of the row's count moved by at most
    ``ACCURACY_PROMPTS`` (the count: its accuracy x prompts; the chance: its ``chance``)."""
    from scipy import stats

    accuracy, chance, n = _number(row.get("accuracy", "")), _number(row.get("chance", "")), items or context.prompts
    if accuracy is None or chance is None or not n:
        return False
    hits = round(accuracy * n)
    low = stats.binom.sf(min(hits + ACCURACY_PROMPTS, n) - 1, n, chance)
    high = stats.binom.sf(max(hits - ACCURACY_PROMPTS, 0) - 1, n, chance)
    return all(low * (1 - 1e-3) <= p <= high * (1 + 1e-3) for p in (committed, computed))


def within(
    kind_: str,
    committed: str,
    computed: str,
    scale: float = 0.0,
    context: Context = Context(),
    items: float | None = None,
    column: str = "",
    digits: int | None = None,
    row: Mapping[str, str] | None = None,
    draws: float | None = None,
) -> bool:
    """Whether two printed numbers agree within the tolerance of ``kind_`` once their rounding is allowed for.

    ``digits``: the significant digits both were printed with (tables); without it, the digits each shows.
    ``row``: the row as printed (a binomial p's count and chance); ``draws``: the resampled draws of a frequency.
    """
    a, b = _number(committed), _number(computed)
    if a is None or b is None:
        return committed.strip() == computed.strip()
    if kind_ in ("conclusion", "exact"):
        return a == b
    if kind_ == "unit_count":
        integers = _is_integer_text(committed) and _is_integer_text(computed)
        rounding = 0.0 if integers else half_unit(committed, digits) + half_unit(computed, digits)
        return abs(a - b) <= UNIT_COUNT + rounding
    if _is_integer_text(committed) and _is_integer_text(computed):
        return a == b
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    rounding = half_unit(committed, digits) + half_unit(computed, digits)
    if abs(a - b) <= rounding:
        return True
    if kind_ == "p_binomial" and row is not None and _binomial_within(a, b, row, context, items):
        return True
    if kind_ in ("p_value", "p_discrete", "p_binomial"):
        log_a, log_b = math.log10(max(a, P_VALUE_FLOOR)), math.log10(max(b, P_VALUE_FLOOR))
        allowed = P_VALUE_LOG10 + (DISCRETE_P_SHARE * abs(log_a) if kind_ != "p_value" else 0.0)
        return abs(log_a - log_b) <= allowed
    return abs(a - b) <= rounding + allowed_difference(kind_, a, scale, context, items, column, draws)


def _skeleton(text: str) -> tuple[str, list[str]]:
    """Text with its numbers taken out (whitespace and table rules normalised), and the numbers."""
    numbers = _NUMBER.findall(text)
    rest = _NUMBER.sub("#", text)
    rest = re.sub(r"-{3,}", "---", re.sub(r"\s+", " ", rest)).strip()
    return rest, numbers


def text_within(committed: str, computed: str, kind_: str = "continuous") -> tuple[bool, int]:
    """Whether two texts agree: the same words, every number in them within tolerance; and how many numbers."""
    (rest_a, numbers_a), (rest_b, numbers_b) = _skeleton(committed), _skeleton(computed)
    if rest_a != rest_b or len(numbers_a) != len(numbers_b):
        return False, max(len(numbers_a), len(numbers_b))
    return all(within(kind_, a, b) for a, b in zip(numbers_a, numbers_b, strict=True)), len(numbers_a)


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
        comparison.conclusion_changed = any(_CONCLUSION.search(c) for c in set(old[0] if old else []) ^ set(new[0]))
        return comparison, beyond
    header = new[0]
    if len(old) != len(new):
        comparison.note = f"{len(old) - 1} rows committed, {len(new) - 1} computed"
        return comparison, beyond
    scales = {column: column_scale(table[column]) for column in header if pd.api.types.is_numeric_dtype(table[column])}
    for index, (old_row, new_row) in enumerate(zip(old[1:], new[1:], strict=True)):
        row = dict(zip(header, new_row, strict=True))
        draws = context.draws_of(name) or _number(row.get(_DRAWS_COLUMN, ""))
        where = f"row {index + 1}" + "".join(f" {row[c]}" for c in header[:3] if _number(row[c]) is None)
        items = next((_number(row[c]) for c in ("items", "prompts", "n_prompts", "units") if c in row), None)
        numeric = [c for c, v in row.items() if _number(v) is not None]
        about_activation = any("activation" in row.get(c, "").lower() for c in _CONTEXT_COLUMNS) or (
            numeric and all(kind(c, row, name, context) == "activation" for c in numeric)
        )
        if about_activation and _zero_within_rounding(header, old_row, new_row):
            comparison.numbers += sum(_number(v) is not None for v in new_row)  # zero within rounding: not compared
            continue
        operands = [abs(v) for c in _OPERANDS if c in row and (v := _number(row[c]))]
        for column, a, b in zip(header, old_row, new_row, strict=True):
            kind_ = kind(column, row, name, context)
            is_ratio = kind_ == "activation" and ("ratio" in column.lower() or "_over_" in column)
            ratio_floor = sum(ACTIVATION_ATOL / v for v in operands) if is_ratio else 0.0
            if _number(a) is not None or _number(b) is not None:
                comparison.numbers += 1
                integer = pd.api.types.is_integer_dtype(table[column])
                exact = kind_ == "conclusion" or (integer and kind_ != "unit_count")
                rule = "exact" if exact and kind_ != "conclusion" else kind_
                ok = within(
                    rule, a, b, scales.get(column, 0.0), context, items, column, store.SIGNIFICANT_DIGITS, row, draws
                )
                if not ok and ratio_floor and (x := _number(a)) is not None and (y := _number(b)) is not None:
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
    if pd.api.types.is_integer_dtype(column) and _is_integer_text(text):
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


# --- what a run wrote: the committed record, and checking files against it ------------------------


def _relative(path: Path) -> str:
    path = Path(path).resolve()
    return path.relative_to(paths.ROOT).as_posix() if path.is_relative_to(paths.ROOT) else path.as_posix()


def _absolute(shown: str) -> Path:
    return Path(shown) if Path(shown).is_absolute() else paths.ROOT / shown


def section_of(text: str, start: str, end: str) -> str | None:
    """What stands between the markers ``start`` and ``end`` in ``text``; None if either is missing."""
    if start not in text or end not in text.split(start, 1)[1]:
        return None
    return text.split(start, 1)[1].split(end, 1)[0]


def file_hash(path: Path, section: tuple[str, str] | list[str] | None = None) -> str | None:
    """The sha256 of a file (of its ``section`` between two markers when given); None if it (or it) is missing."""
    path = Path(path)
    if not path.is_file():
        return None
    if section is None:
        return store.file_sha256(path)
    found = section_of(path.read_text(encoding="utf-8", errors="replace"), *section)
    return None if found is None else hashlib.sha256(found.encode()).hexdigest()


PICTURE_BLOCK = 4
"""Pictures are compared as the means of blocks of this many pixels square."""
PICTURE_TOLERANCE = 0.08
"""Two PNGs are the same picture when they have the same size and no block mean of a channel (0-1) differs by more
than this: data that moved within tolerance shifts a line or a dot by a small fraction of a pixel on another
machine (a block moves by a few hundredths at most); another picture (a swapped figure, a line added or moved, a
bar changed) moves some block by far more."""


def same_picture(drawn: Path, committed: Path) -> bool:
    """Whether the PNG ``committed`` shows what ``drawn`` shows, within ``PICTURE_TOLERANCE``."""
    import matplotlib.image
    import numpy as np

    if not Path(committed).is_file():
        return False
    if store.file_sha256(drawn) == store.file_sha256(committed):
        return True
    try:
        new, old = matplotlib.image.imread(drawn), matplotlib.image.imread(committed)
    except (OSError, ValueError, SyntaxError):
        return False
    if new.shape != old.shape:
        return False
    k = PICTURE_BLOCK
    rows, columns = (new.shape[0] // k) * k, (new.shape[1] // k) * k
    difference = np.asarray(new, dtype=float)[:rows, :columns] - np.asarray(old, dtype=float)[:rows, :columns]
    blocks = difference.reshape(rows // k, k, columns // k, k, -1).mean(axis=(1, 3))
    return float(np.abs(blocks).max(initial=0.0)) <= PICTURE_TOLERANCE


def read_outputs_record(path: Path | None) -> dict[str, Any]:
    """The committed record of what a notebook's last run wrote (empty if none or unreadable)."""
    if path is None or not Path(path).is_file():
        return {}
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


@dataclass(frozen=True)
class Unverified:
    """A committed file whose bytes are not those its run recorded: it was edited after the run wrote it."""

    output: str
    file: str
    record: str

    def line(self) -> str:
        if self.output in ("no output", "record"):
            return f"{self.file}: {self.record}"
        return f"{self.file} ({self.output}): its bytes are not those its run wrote ({self.record})"


def verify(record: Path, log: Path | None = None) -> list[Unverified]:
    """Every file a notebook's committed record lists whose bytes on disk differ from the recorded hash (a missing
    file is Snakemake's to remake, not listed). Never trusts the last check: it hashes the files now.

    With ``log`` (this machine's log of the notebook's last run, ``Check.save``) the committed record is checked
    too: one that is not the record this machine's last run wrote (edited together with its files, pulled from
    elsewhere, or never made here) is listed, so the notebook checks its outputs again instead of trusting it."""
    found = []
    if Path(record).is_file() and not read_outputs_record(record):
        return [Unverified("record", _relative(record), "unreadable: its notebook writes it again")]
    if log is not None and Path(record).is_file():
        made_here = read_outputs_record(log).get("committed")
        if made_here != read_outputs_record(record):
            why = "no run on this machine made it" if made_here is None else "not the one this machine's last run wrote"
            found.append(Unverified("record", _relative(record), f"{why}: its notebook checks its outputs again"))
    entries = read_outputs_record(record).get("outputs", {})
    for output, entry in sorted(entries.items()):
        for shown, digest in sorted(entry.get("files", {}).items()):
            now = file_hash(_absolute(shown), entry.get("section"))
            if now is not None and now != digest:
                found.append(Unverified(output, shown, _relative(record)))
    return found


# --- a notebook's check -------------------------------------------------------------------------------


@dataclass
class Check:
    """The checks of one notebook run: its comparisons (saved to ``record``, the build folder's log, after each)
    and what it wrote (saved to ``committed``, the record committed with the outputs, which the next run checks
    the files against)."""

    record: Path
    context: Context = field(default_factory=Context)
    committed: Path | None = None
    tables_folder: Path | None = None
    made_by: str = ""
    made_for: dict[str, Any] = field(default_factory=dict)
    comparisons: list[Comparison] = field(default_factory=list)
    substitutions: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        committed = read_outputs_record(self.committed)
        self.previous: dict[str, Any] = committed.get("outputs", {})
        # whether the committed record is the one this machine's last run of the notebook wrote (its log says so):
        # only then are a figure's recorded bytes trusted without drawing it (helpers.report.figures.save_figures)
        self.made_here = bool(committed) and read_outputs_record(self.record).get("committed") == committed
        self.entries: dict[str, Any] = dict(self.previous)
        self._pending: dict[str, dict[str, Any]] = {}

    @classmethod
    def start(cls, outputs: Any, notebook: str, context: Context | None = None) -> Check:
        """The check of ``notebook`` in the run of ``outputs`` (``study.outputs.RunOutputs``)."""
        from helpers.study import made_for

        return cls(
            outputs.reproduction(notebook),
            context or Context(),
            outputs.record(notebook),
            outputs.tables,
            f"notebooks/{notebook}.ipynb",
            made_for(outputs.params),
        )

    # -- what the last run wrote -----------------------------------------------------------------------

    def edited(self, output: str, files: Iterable[Path], section: tuple[str, str] | None = None) -> list[Path]:
        """The files of ``output`` whose bytes are not those the last run recorded (none when it recorded none)."""
        recorded = self.previous.get(output, {}).get("files", {})
        edited = []
        for path in files:
            digest = recorded.get(_relative(path))
            now = file_hash(path, section)
            if digest is not None and now is not None and now != digest:
                edited.append(Path(path))
        return edited

    # -- tables --------------------------------------------------------------------------------------------

    def table(
        self,
        name: str,
        table: pd.DataFrame,
        files: Mapping[str, Path],
        render: Callable[[pd.DataFrame], dict[str, str]],
    ) -> pd.DataFrame:
        """Check one table against its committed files (``files``: suffix -> path, the CSV under "csv"), write what
        differs from the kept table (``render`` gives each file's text), record it; return the kept table."""
        edited = self.edited(name, files.values())
        comparison, kept, substitutions = kept_table(name, table, files["csv"], self.context)
        if files["csv"] in edited:  # its numbers cannot be trusted: this run's numbers replace them all
            kept, substitutions = table, {}
        texts = render(kept)
        rewritten = []
        for suffix, path in files.items():
            if not (Path(path).is_file() and Path(path).read_bytes() == texts[suffix].encode("utf-8")):
                store.write_text(texts[suffix], path)
                rewritten.append(Path(path))
        if edited:
            names = ", ".join(Path(p).name for p in edited)
            comparison.note = f"edited after the run that wrote it: {names}" + (
                f"; {comparison.note}" if comparison.note else ""
            )
        elif rewritten and comparison.reproduced:
            comparison.note = "rewritten, not what its checked CSV gives (edited by hand?): " + ", ".join(
                p.name for p in rewritten
            )
        self.substitutions.update(substitutions)
        self.add(comparison, files.values(), written=bool(rewritten))
        return kept

    def kept_text(self, text: str) -> str:
        """``text`` made from this run's tables with every text cell that a kept table keeps in its committed
        wording put back (the scorecard's evidence in the conclusions), so that it says what the tables say."""
        for computed in sorted(self.substitutions, key=len, reverse=True):
            text = text.replace(computed, self.substitutions[computed])
        return text

    # -- figures ---------------------------------------------------------------------------------------------

    def _data(self, name: str) -> dict[str, str | None]:
        folder = self.tables_folder
        return {t: (file_hash(folder / f"{t}.csv") if folder else None) for t in FIGURE_DATA.get(name, ())}

    def figure(self, name: str, files: list[Path], drawing_code: str) -> Comparison:
        """Whether a committed figure stands: its bytes are those its run recorded, drawn by ``drawing_code`` from
        the data (its tables' kept CSVs) it has now. Draw it again when not, then ``add`` the comparison."""
        output = f"figure {name}"
        comparison = Comparison(output=output)
        entry = self.previous.get(output, {})
        data = self._data(name)
        if not all(Path(p).is_file() for p in files):
            comparison.note = "new (no committed figure)"
        elif not entry:
            comparison.note = "no record of the run that drew it: drawn again"
        elif self.edited(output, files) or set(entry.get("files", {})) != {_relative(p) for p in files}:
            comparison.note = "edited after the run that wrote it: drawn again"
        elif entry.get("drawing_code") != drawing_code:
            comparison.note = "drawn by other code: drawn again"
        elif not data:
            comparison.note = "no table holds its data: drawn again"
        elif entry.get("data") != data:
            changed = [t for t in data if entry.get("data", {}).get(t) != data[t]]
            comparison.note = "its data changed: " + ", ".join(changed)
        comparison.action = "kept" if comparison.reproduced else "written"
        self._pending[output] = {
            "drawing_code": drawing_code,
            "data": data,
            "before": {p: file_hash(p) for p in files},
        }
        return comparison

    # -- text sections ------------------------------------------------------------------------------------

    def section(self, name: str, path: Path, markers: tuple[str, str], section: str) -> Comparison:
        """Whether the section between ``markers`` in ``path`` is what this run makes (``section``); write it
        when not, then ``add`` the comparison with the same markers."""
        text = Path(path).read_text(encoding="utf-8") if Path(path).is_file() else ""
        committed = section_of(text, *markers)
        comparison = compare_text(name, committed, section)
        comparison.action = "kept" if comparison.reproduced else "written"
        self._pending[name] = {"section": list(markers)}
        return comparison

    # -- recording -----------------------------------------------------------------------------------------

    def add(self, comparison: Comparison, files: Iterable[Path] = (), written: bool | None = None) -> Comparison:
        """Record ``comparison`` and the bytes its ``files`` now have; a file left as committed gets a new time."""
        files = [Path(p) for p in files]
        pending = self._pending.pop(comparison.output, {})
        before = pending.pop("before", None)
        if before is not None and all(file_hash(p) == before[p] for p in files) and before and all(before.values()):
            comparison.note, comparison.action = "", "kept"  # drawn again, byte for byte the committed figure
        if written is not None:
            comparison.action = "written" if written else comparison.action
        if comparison.action == "kept" and files:
            keep([p for p in files if p.is_file()])
        self.comparisons = [c for c in self.comparisons if c.output != comparison.output] + [comparison]
        if files:
            section = pending.get("section")
            hashes = {_relative(p): file_hash(p, section) for p in files}
            self.entries[comparison.output] = {
                "files": {shown: digest for shown, digest in hashes.items() if digest is not None},
                **pending,
            }
        self.save()
        return comparison

    def save(self) -> Path:
        """Write the log (comparisons, and a copy of the committed record: what ``verify`` checks that record
        against) and the committed record."""
        payload: dict[str, Any] = {
            "context": asdict(self.context),
            "comparisons": [asdict(c) for c in self.comparisons],
        }
        record: dict[str, Any] | None = None
        if self.committed is not None:
            entries = {output: entry for output, entry in self.entries.items() if entry.get("files")}
            record = {"made_by": self.made_by, "made_for": self.made_for, "outputs": entries}
            payload["committed"] = json.loads(json.dumps(record))  # as read back: tuples become lists
        written = store.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n", self.record)
        if self.committed is not None and record is not None:
            text = json.dumps(record, indent=1, sort_keys=True) + "\n"
            if read_outputs_record(self.committed) != record or not self.committed.is_file():
                store.write_text(text, self.committed)
            else:
                keep([self.committed])
        return written

    def table_comparison(self, name: str) -> Comparison | None:
        return next((c for c in self.comparisons if c.output == name), None)


# --- a notebook's log, and the run's summary ---------------------------------------------------


def read_record(path: Path) -> list[Comparison]:
    """The comparisons one notebook recorded (empty when it has not run)."""
    if not path.is_file():
        return []
    comparisons = []
    for raw in json.loads(path.read_text(encoding="utf-8")).get("comparisons", []):
        raw["differences"] = [Difference(**d) for d in raw.get("differences", [])]
        comparisons.append(Comparison(**raw))
    return comparisons


def read_records(folder: Path) -> list[Comparison]:
    """Every comparison recorded in ``folder`` (``build/<run>/reproduction/``), in file order."""
    return [comparison for path in sorted(folder.glob("*.json")) for comparison in read_record(path)]


@dataclass(frozen=True)
class Summary:
    """The run's reproduction summary: numbers within tolerance, every output that changed, and the new ones."""

    numbers: int
    reproduced: int
    changed: list[Comparison]
    new: list[Comparison]
    outputs: int
    conclusion_changed: bool
    unverified: list[Unverified] = field(default_factory=list)

    def lines(self, limit: int = 50) -> list[str]:
        """The summary as text lines: the headline, then each changed output and number, then every file that
        fails the record of the run that wrote it."""
        changed = "none" if not self.changed else ", ".join(c.output for c in self.changed)
        verdict = "a verdict or rank CHANGED" if self.conclusion_changed else "no verdict or rank changed"
        compared = self.outputs - len(self.new)
        kept = compared - len(self.changed)
        new = f"; {len(self.new)} outputs new (nothing committed to compare with)" if self.new else ""
        lines = [
            f"Reproduced within tolerance: {self.reproduced} of {self.numbers} numbers "
            f"({kept} of {compared} committed outputs kept as they are); changed: {changed}; {verdict}{new}."
        ]
        if self.unverified:
            lines[0] = "NOT VERIFIED: files were changed after the run that wrote them. " + lines[0]
        shown = 0
        for comparison in self.changed:
            what = comparison.note or f"{len(comparison.differences)} numbers beyond tolerance"
            lines.append(f"  {comparison.output}: {what}")
            for d in comparison.differences:
                if shown == limit:
                    lines.append("  ... (every number is in build/<run>/reproduction/*.json)")
                    break
                lines.append(f"    {d.where}, {d.column} ({d.kind}): {d.committed} -> {d.computed}")
                shown += 1
        for item in self.unverified:
            remedy = "" if item.output == "no output" else ": run make reproduce again to rewrite it"
            lines.append(f"  NOT VERIFIED {item.line()}{remedy}")
        return lines


def summarise(comparisons: list[Comparison], unverified: list[Unverified] | None = None) -> Summary:
    """Sum the comparisons of a run (figures count as outputs; their numbers are their tables'), with the files
    that fail their record now (``verify``)."""
    numbers = sum(c.numbers for c in comparisons)
    beyond = sum(len(c.differences) for c in comparisons)
    new = [c for c in comparisons if c.note.startswith("new")]
    return Summary(
        numbers=numbers,
        reproduced=numbers - beyond,
        changed=[c for c in comparisons if not c.reproduced and c not in new],
        new=new,
        outputs=len(comparisons),
        conclusion_changed=any(c.conclusion_changed for c in comparisons),
        unverified=list(unverified or []),
    )


CHECKED_NOTEBOOKS = ("04_plot", "05_export_tables", "06_robustness", "08_signatures")
"""The notebooks whose outputs are committed, checked and recorded (the Snakefile's ``CHECKED``)."""


def verify_run(outputs: Any, notebooks: Iterable[str] = ()) -> list[Unverified]:
    """Every committed file of a run (``study.outputs.RunOutputs``) that fails the record of the run that wrote it,
    and, once every notebook of ``notebooks`` has a record, every table or figure file in the run's folders that no
    record lists (no notebook of the study made it, yet the front page would show it as the study's)."""
    records = sorted(outputs.records.glob("*.json"))
    found = [item for path in records for item in verify(path, outputs.reproduction(path.stem))]
    if notebooks and all(outputs.record(notebook).is_file() for notebook in notebooks):
        listed = {shown for path in records for entry in read_outputs_record(path).get("outputs", {}).values()
                  for shown in entry.get("files", {})}  # fmt: skip
        for folder, suffixes in ((outputs.tables, (".csv", ".md", ".tex")), (outputs.figures, (".png", ".svg"))):
            for path in sorted(Path(folder).glob("*")):
                if path.is_file() and path.suffix in suffixes and _relative(path) not in listed:
                    found.append(
                        Unverified("no output", _relative(path), "no notebook of this study made it: delete it")
                    )
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.study.reproduction", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for command, text in (("summary", "print the reproduction summary of a run"), ("verify", "check its files")):
        commands.add_parser(command, help=text).add_argument("--params", required=True)
    args = parser.parse_args(argv)
    from helpers.study import load_params
    from helpers.study.outputs import RunOutputs

    outputs = RunOutputs(load_params(args.params))
    unverified = verify_run(outputs, CHECKED_NOTEBOOKS)
    if args.command == "verify":
        for item in unverified:
            print(f"NOT VERIFIED {item.line()}")
        return 1 if unverified else 0
    comparisons = read_records(outputs.reproduction_records)
    if not comparisons and not unverified:
        print(f"No reproduction check recorded yet ({outputs.reproduction_records} is empty): run the study first.")
        return 0
    print("\n".join(summarise(comparisons, unverified).lines()))
    return 1 if unverified else 0


if __name__ == "__main__":
    sys.exit(main())
