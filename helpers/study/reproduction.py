"""The reproduction check: a rerun compares what it computed with the committed outputs and rewrites a
committed file only when a number in it differs beyond its tolerance.

Another machine (another CPU, thread count or batch composition) rounds float32 sums differently,
so a rerun never reproduces every digit: continuous numbers move in their last digits, and a
threshold statistic (the fraction of entries with |h| below a threshold) moves by whole entries
when one lies within rounding of the threshold. Each committed table (CSV, Markdown, LaTeX in
paper/tables/), figure (figures/) and the README's scorecard is therefore compared, number by
number, with what the rerun computed, under the tolerance of its kind (``TOLERANCES``, with the
reasons). Within tolerance, the committed files are kept byte for byte (their modification time
is renewed, so Snakemake sees an up-to-date output); beyond it, they are rewritten and the
numbers listed. Each notebook records its checks in ``build/<run>/reproduction/<notebook>.json``;
``summary`` reads them for the front page and for the end of ``make reproduce``:
"reproduced within tolerance: N of M numbers; changed: ...".

``python -m helpers.study.reproduction summary --params FILE`` prints that summary.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

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
"""Continuous numbers (means, entropies, Hoyer sparsity, fits, intervals): relative, on top of rounding."""
THRESHOLD_ENTRIES = 2
"""Threshold fractions: how many entries per prompt may fall on the other side of the threshold."""
THRESHOLD_RTOL = 1e-2
"""Numbers derived from threshold fractions that are no fraction themselves (ratios, d_z, test statistics)."""
ACTIVATION_ATOL = 1e-6
"""Means of signed activations (final activation A_f and what is computed from it): absolute floor."""
P_VALUE_LOG10 = 0.02
"""p-values: difference of log10 p (0.02 is 4.7% of p)."""
P_VALUE_FLOOR = 1e-300
"""p-values below this (underflow to 0) compare as this."""
SHARE_ITEMS = 2
"""Shares of prompts or draws (share higher, share of draws in the top 10): how many items may change sides."""
SHARE_DEFAULT_ITEMS = 100
"""The items a share counts when its row does not say (top-10 stability): at least 100 draws."""

TOLERANCES: tuple[Tolerance, ...] = (
    Tolerance(
        "continuous",
        f"|new - committed| <= {CONTINUOUS_RTOL:g} x max(|committed|, 1e-3 x the column's largest |value|)",
        "the measurements are float32 sums that differ between machines in the 6th-7th digit (the analysis reads "
        f"them at {store.MEASUREMENT_DIGITS} significant digits); 1e-4 leaves a margin of 10x and more. Near-zero "
        "numbers (a mean of signed values) carry the rounding of their column's scale, hence the column floor.",
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
        "p_value",
        f"|log10 new - log10 committed| <= {P_VALUE_LOG10:g} (p below {P_VALUE_FLOOR:g} counts as {P_VALUE_FLOOR:g})",
        "a tail probability magnifies a tiny change of its statistic (p = 1e-87 moves by 0.5% when the statistic "
        "moves by 1e-4 of itself), so p-values are compared on the log scale; whether p crosses a threshold is "
        "decided by the verdicts, which are compared exactly.",
    ),
    Tolerance(
        "share",
        f"|new - committed| <= {SHARE_ITEMS} / items (the row's items or prompts; {SHARE_DEFAULT_ITEMS} when it "
        "gives none)",
        "a share of prompts (or of bootstrap draws) changes by whole prompts when a near-tie changes sides.",
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
    """What a run's tolerances depend on: the threshold fractions' entry counts."""

    entries_inverse: float = 0.0
    """The largest, over models, mean over prompts of 1 / (tokens x hidden size): one entry as a fraction."""

    @classmethod
    def from_metrics(cls, metrics: pd.DataFrame) -> Context:
        """From a run's tidy per-prompt table (``n_tokens`` and ``hidden_size`` per model)."""
        entries = metrics["n_tokens"].astype(float) * metrics["hidden_size"].astype(float)
        inverse = (1.0 / entries.where(entries > 0)).groupby(metrics["model"]).mean()
        return cls(float(inverse.max()) if len(inverse) else 0.0)

    @property
    def threshold_atol(self) -> float:
        return THRESHOLD_ENTRIES * self.entries_inverse


# --- what kind a number is ----------------------------------------------------------------------

_CONCLUSION = re.compile(r"verdict|(^|_)rank($|_set)", re.IGNORECASE)
_P_VALUE = re.compile(r"(^|_)p($|_)", re.IGNORECASE)
_SHARE = re.compile(r"share", re.IGNORECASE)
_CONTEXT_COLUMNS = ("metric", "variant", "statistic", "claim")


def is_threshold_statistic(name: str) -> bool:
    """Whether a metric or column name is a fraction below a threshold (max sparsity and its variants)."""
    lowered = str(name).lower()
    return ("sparsity" in lowered or "near_zero" in lowered) and "hoyer" not in lowered


def kind(column: str, row: Mapping[str, str]) -> str:
    """The kind of the number in ``column`` of a table row: conclusion, p_value, share, threshold or continuous."""
    if _CONCLUSION.search(column) and "biserial" not in column.lower():
        return "conclusion"
    if _P_VALUE.search(column):
        return "p_value"
    if _SHARE.search(column):
        return "share"
    if is_threshold_statistic(column) or any(is_threshold_statistic(row.get(c, "")) for c in _CONTEXT_COLUMNS):
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
_OPERANDS = ("encoder", "decoder", "mean_first", "mean_second")
"""The means a ratio in the same row is made of (architecture comparison, pair contrasts)."""


def _zero_within_rounding(header: list[str], old: list[str], new: list[str]) -> bool:
    """Whether every activation mean of a row is within ``ACTIVATION_ATOL`` of zero in both versions."""
    means = [i for i, c in enumerate(header) if c in _OPERANDS or "activation" in c.lower()]
    values = [_number(row[i]) for row in (old, new) for i in means]
    return bool(means) and all(v is not None and abs(v) < ACTIVATION_ATOL for v in values)


"""Columns of threshold rows that hold no fraction (ratios, effect sizes, test statistics): compared relatively."""


def allowed_difference(
    kind_: str, committed: float, scale: float, context: Context, items: float | None, column: str = ""
) -> float:
    """The tolerance of ``kind_`` around ``committed`` (before rounding is allowed for); p-values aside."""
    if kind_ == "threshold":
        if _NOT_A_FRACTION.search(column):
            return THRESHOLD_RTOL * abs(committed) + context.threshold_atol
        return context.threshold_atol
    if kind_ == "activation":
        if _NOT_A_FRACTION.search(column):
            return THRESHOLD_RTOL * abs(committed) + ACTIVATION_ATOL
        return max(CONTINUOUS_RTOL * abs(committed), ACTIVATION_ATOL)
    if kind_ == "share":
        return SHARE_ITEMS / (items or SHARE_DEFAULT_ITEMS)
    if kind_ == "continuous":
        return CONTINUOUS_RTOL * max(abs(committed), 1e-3 * scale)
    return 0.0


def within(
    kind_: str,
    committed: str,
    computed: str,
    scale: float = 0.0,
    context: Context = Context(),
    items: float | None = None,
    column: str = "",
    digits: int | None = None,
) -> bool:
    """Whether two printed numbers agree within the tolerance of ``kind_`` once their rounding is allowed for.

    ``digits``: the significant digits both were printed with (tables); without it, the digits each shows.
    """
    a, b = _number(committed), _number(computed)
    if a is None or b is None:
        return committed.strip() == computed.strip()
    if kind_ in ("conclusion", "exact") or (_is_integer_text(committed) and _is_integer_text(computed)):
        return a == b
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    rounding = half_unit(committed, digits) + half_unit(computed, digits)
    if abs(a - b) <= rounding:
        return True
    if kind_ == "p_value":
        return abs(math.log10(max(a, P_VALUE_FLOOR)) - math.log10(max(b, P_VALUE_FLOOR))) <= P_VALUE_LOG10
    return abs(a - b) <= rounding + allowed_difference(kind_, a, scale, context, items, column)


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


# --- comparing files ----------------------------------------------------------------------------


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


def compare_table(name: str, table: pd.DataFrame, committed: Path, context: Context) -> Comparison:
    """Compare a computed table with the committed CSV ``committed``, number by number."""
    comparison = Comparison(output=name)
    if not committed.is_file():
        comparison.note = "new (no committed file)"
        return comparison
    old, new = _rows(committed.read_text(encoding="utf-8")), _rows(table_csv(table))
    if not old or not new or old[0] != new[0]:
        comparison.note = "columns differ"
        comparison.conclusion_changed = any(_CONCLUSION.search(c) for c in set(old[0] if old else []) ^ set(new[0]))
        return comparison
    header = new[0]
    if len(old) != len(new):
        comparison.note = f"{len(old) - 1} rows committed, {len(new) - 1} computed"
        return comparison
    scales = {
        column: float(pd.to_numeric(table[column], errors="coerce").abs().max() or 0.0)
        for column in header
        if pd.api.types.is_numeric_dtype(table[column])
    }
    for index, (old_row, new_row) in enumerate(zip(old[1:], new[1:], strict=True)):
        row = dict(zip(header, new_row, strict=True))
        where = f"row {index + 1}" + "".join(f" {row[c]}" for c in header[:3] if _number(row[c]) is None)
        items = next((_number(row[c]) for c in ("items", "prompts") if c in row), None)
        numeric = [c for c, v in row.items() if _number(v) is not None]
        about_activation = any("activation" in row.get(c, "").lower() for c in _CONTEXT_COLUMNS) or (
            numeric and all(kind(c, row) == "activation" for c in numeric)
        )
        if about_activation and _zero_within_rounding(header, old_row, new_row):
            comparison.numbers += sum(_number(v) is not None for v in new_row)  # zero within rounding: not compared
            continue
        operands = [abs(v) for c in _OPERANDS if c in row and (v := _number(row[c]))]
        for column, a, b in zip(header, old_row, new_row, strict=True):
            kind_ = kind(column, row)
            is_ratio = kind_ == "activation" and ("ratio" in column.lower() or "_over_" in column)
            ratio_floor = sum(ACTIVATION_ATOL / v for v in operands) if is_ratio else 0.0
            if _number(a) is not None or _number(b) is not None:
                comparison.numbers += 1
                exact = kind_ == "conclusion" or pd.api.types.is_integer_dtype(table[column])
                rule = "exact" if exact and kind_ != "conclusion" else kind_
                ok = within(rule, a, b, scales.get(column, 0.0), context, items, column, store.SIGNIFICANT_DIGITS)
                if not ok and ratio_floor and (x := _number(a)) is not None and (y := _number(b)) is not None:
                    ok = abs(x - y) <= abs(x) * ratio_floor  # a ratio of means moves by the floor over each mean
            else:
                ok, count = text_within(a, b, "exact" if kind_ == "conclusion" else kind_)
                comparison.numbers += count
            if not ok:
                comparison.differences.append(Difference(where, column, kind_, a, b))
                comparison.conclusion_changed |= kind_ == "conclusion"
    return comparison


def compare_text(name: str, committed: str | None, computed: str) -> Comparison:
    """Compare a generated text (the README's scorecard section) with the committed one."""
    comparison = Comparison(output=name)
    if committed is None:
        comparison.note = "new (no committed text)"
        return comparison
    ok, comparison.numbers = text_within(committed, computed)
    if not ok:
        verdicts = ("holds", "does not hold", "inconclusive", "not testable here")
        comparison.conclusion_changed = any(committed.count(v) != computed.count(v) for v in verdicts)
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
    "finding1_categories": ("finding1_categories",),
    "finding1_length_contrasts": ("finding1_length_contrasts",),
    "signature_probe_depth": ("signature_probes",),
    "signature_units_depth": ("signature_units",),
    "sparsity_variants": ("sparsity_variants",),
    "sparsity_layer_profiles": ("sparsity_variants",),
}  # fmt: skip
"""The committed tables that hold the numbers each figure draws, or (for the figures drawn from per-prompt and
per-layer data) their cell means and maxima over layers: a figure is redrawn when one of them changed."""


MOVED_DRAWING_CODE: dict[str, str] = {"0b8f993c11003909": "45f2f5d65b44c1b3"}
"""Drawing code that moved without drawing anything differently: the hash a committed figure records -> the hash
of the same code in its new place. ``helpers/figures.py`` became ``helpers/report/figures.py`` in the package
layout with only its imports, docstrings and the figures' source label changed, so the figures it drew stand;
any further edit of the module changes its hash, and they are drawn again."""


def compare_figure(name: str, drawn_by: str | None, code: str, tables: list[Comparison]) -> Comparison:
    """Whether a committed figure stands: it exists, ``code`` drew it, and the tables behind it reproduced."""
    comparison = Comparison(output=f"figure {name}")
    checked = {c.output: c for c in tables}
    sources = FIGURE_DATA.get(name, ())
    if drawn_by is None:
        comparison.note = "new (no committed figure)"
    elif MOVED_DRAWING_CODE.get(drawn_by, drawn_by) != code:
        comparison.note = "drawn by other code (helpers/report/figures.py changed)"
    elif not sources:
        comparison.note = "no table holds its data: drawn again"
    else:
        changed = [t for t in sources if t not in checked or not checked[t].reproduced]
        if changed:
            comparison.note = "its data changed beyond tolerance: " + ", ".join(changed)
            comparison.conclusion_changed = any(checked[t].conclusion_changed for t in changed if t in checked)
    comparison.action = "kept" if comparison.reproduced else "written"
    return comparison


def keep(paths: Iterable[Path]) -> None:
    """Leave committed files as they are but renew their modification time, so Snakemake sees them up to date."""
    for path in paths:
        os.utime(path, None)


# --- a notebook's record, and the run's summary ---------------------------------------------------


@dataclass
class Check:
    """The checks of one notebook run, saved to ``record`` (JSON) after each one."""

    record: Path
    context: Context = field(default_factory=Context)
    comparisons: list[Comparison] = field(default_factory=list)

    def add(self, comparison: Comparison) -> Comparison:
        self.comparisons = [c for c in self.comparisons if c.output != comparison.output] + [comparison]
        self.save()
        return comparison

    def save(self) -> Path:
        payload = {"context": asdict(self.context), "comparisons": [asdict(c) for c in self.comparisons]}
        return store.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n", self.record)

    def table(self, name: str) -> Comparison | None:
        return next((c for c in self.comparisons if c.output == name), None)


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

    def lines(self, limit: int = 50) -> list[str]:
        """The summary as text lines: the headline, then each changed output and number."""
        changed = "none" if not self.changed else ", ".join(c.output for c in self.changed)
        verdict = "a verdict or rank CHANGED" if self.conclusion_changed else "no verdict or rank changed"
        compared = self.outputs - len(self.new)
        kept = compared - len(self.changed)
        new = f"; {len(self.new)} outputs new (nothing committed to compare with)" if self.new else ""
        lines = [
            f"Reproduced within tolerance: {self.reproduced} of {self.numbers} numbers "
            f"({kept} of {compared} committed outputs kept as they are); changed: {changed}; {verdict}{new}."
        ]
        shown = 0
        for comparison in self.changed:
            what = comparison.note or f"{len(comparison.differences)} numbers beyond tolerance"
            lines.append(f"  {comparison.output}: {what}")
            for d in comparison.differences:
                if shown == limit:
                    lines.append("  ... (every number is in build/<run>/reproduction/*.json)")
                    return lines
                lines.append(f"    {d.where}, {d.column} ({d.kind}): {d.committed} -> {d.computed}")
                shown += 1
        return lines


def summarise(comparisons: list[Comparison]) -> Summary:
    """Sum the comparisons of a run (figures count as outputs; their numbers are their tables')."""
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
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.study.reproduction", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    summary = commands.add_parser("summary", help="print the reproduction summary of a run")
    summary.add_argument("--params", required=True)
    args = parser.parse_args(argv)
    from helpers.study import load_params
    from helpers.study.outputs import RunOutputs

    folder = RunOutputs(load_params(args.params)).reproduction_records
    comparisons = read_records(folder)
    if not comparisons:
        print(f"No reproduction check recorded yet ({folder} is empty): run the study first.")
        return 0
    print("\n".join(summarise(comparisons).lines()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
