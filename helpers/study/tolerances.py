"""How far a recomputed number may lie from the committed one: each kind of number (``kind``), its tolerance and its
reason (``TOLERANCES``, quoted by docs/reproducibility.md), and the comparison of two numbers or two texts
(``within``, ``text_within``). The reproduction check (``helpers.study.reproduction``) applies them."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from helpers.base import store

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

CONCLUSION = re.compile(r"verdict|(^|_)rank($|_set)", re.IGNORECASE)
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
DRAWS_COLUMN = "simulated_runs"
_UNIT_COUNTS = ("selective", "selective_units", "null_mean", "null_q95")
"""Counts of units that pass a statistical bar (signature_units, signature_unit_owners)."""
_BINOMIAL_P = ("p_above_chance",)
"""p-values that are a binomial tail of the row's accuracy x prompts against its chance (signature transfer)."""
_COUNT_TABLES = re.compile(r"^signature_|^sparsity_variants$")
"""Tables whose statistics are computed from counts (classifier hits, threshold fractions)."""
CONTEXT_COLUMNS = ("metric", "variant", "statistic", "claim")


def is_threshold_statistic(name: str) -> bool:
    """Whether a metric or column name is a fraction below a threshold (max sparsity and its variants)."""
    lowered = str(name).lower()
    return ("sparsity" in lowered or "near_zero" in lowered) and "hoyer" not in lowered


def kind(column: str, row: Mapping[str, str], table: str = "", context: Context = Context()) -> str:
    """The kind of the number in ``column`` of a row of ``table``: conclusion, frequency, p_value (p_binomial,
    p_discrete), share, accuracy (accuracy_difference), threshold, activation or continuous."""
    threshold_row = any(is_threshold_statistic(row.get(c, "")) for c in CONTEXT_COLUMNS)
    if CONCLUSION.search(column) and "biserial" not in column.lower():
        return "conclusion"
    if (context.draws_of(table) or DRAWS_COLUMN in row) and _FREQUENCY.search(column):
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
    if "activation" in column.lower() or any("activation" in row.get(c, "").lower() for c in CONTEXT_COLUMNS):
        return "activation"
    return "continuous"


# --- comparing numbers --------------------------------------------------------------------------

_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+\.\d+|\.\d+|\d+)(?:[eE][-+]?\d+)?(?!\w|\.\d)")
"""A number in text, not the digits of a name (SmolLM2-135M, L6) nor a sentence's full stop."""


def parse_number(text: str) -> float | None:
    text = text.strip()
    if not text or not _NUMBER.fullmatch(text):
        return None
    return float(text)


def is_integer_text(text: str) -> bool:
    return re.fullmatch(r"[-+]?\d+", text.strip()) is not None


def half_unit(text: str, digits: int | None = None) -> float:
    """Half a unit in the last digit of a printed number: of ``digits`` significant digits when given (how a
    table prints its floats: 0.04091 -> 5e-6, 7.241e+04 -> 5), else of the digits ``text`` shows; 0 for zero."""
    value = parse_number(text)
    if not value:
        return 0.0
    if digits is not None:
        return 0.5 * 10.0 ** (math.floor(math.log10(abs(value))) - (digits - 1))
    mantissa, _, exponent = text.strip().lower().partition("e")
    decimals = len(mantissa.split(".", 1)[1]) if "." in mantissa else 0
    return 0.5 * 10.0 ** (int(exponent or 0) - decimals)


_NOT_A_FRACTION = re.compile(r"ratio|_over_|d_z|statistic|biserial|^low$|^high$|^value$", re.IGNORECASE)
"""Columns of threshold rows that hold no fraction (ratios, effect sizes, test statistics): compared relatively."""
OPERANDS = ("encoder", "decoder", "mean_first", "mean_second")
"""The means a ratio in the same row is made of (architecture comparison, pair contrasts)."""


def zero_within_rounding(header: list[str], old: list[str], new: list[str]) -> bool:
    """Whether every activation mean of a row is within ``ACTIVATION_ATOL`` of zero in both versions."""
    means = [i for i, c in enumerate(header) if c in OPERANDS or "activation" in c.lower()]
    values = [parse_number(row[i]) for row in (old, new) for i in means]
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

    accuracy, chance = parse_number(row.get("accuracy", "")), parse_number(row.get("chance", ""))
    n = items or context.prompts
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
    a, b = parse_number(committed), parse_number(computed)
    if a is None or b is None:
        return committed.strip() == computed.strip()
    if kind_ in ("conclusion", "exact"):
        return a == b
    if kind_ == "unit_count":
        integers = is_integer_text(committed) and is_integer_text(computed)
        rounding = 0.0 if integers else half_unit(committed, digits) + half_unit(computed, digits)
        return abs(a - b) <= UNIT_COUNT + rounding
    if is_integer_text(committed) and is_integer_text(computed):
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
