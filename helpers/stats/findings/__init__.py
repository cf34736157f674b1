"""The paper's findings, tested at the right unit: one module per finding and the rule machinery they share.

``rules`` (verdicts, ``Finding``, ``Assessment``), ``finding1`` to ``finding5`` (each finding's claim, unit,
minimum effect and rule, stated before any data are seen), ``signatures`` (finding 5's probes and selective
units, notebook 08), ``calibration`` (each rule on planted truths), ``scorecard`` (every finding assessed,
notebook 06's one call), ``deviations`` (every rule changed after data were seen, its earlier rule runnable) and
``preregistered`` (the rules' committed text, the deviations log included). ``python -m helpers.stats.findings
preregister`` records the rules.

The names below are what notebook 06 and the other layers use.
"""

from __future__ import annotations

from helpers.stats.findings.finding2 import ABOUT_BAND, PRIMARY_SPARSITY_REASON
from helpers.stats.findings.preregistered import PREREGISTERED_RULES, preregistration, rules_markdown
from helpers.stats.findings.rules import (
    DOES_NOT_HOLD,
    HOLDS,
    INCONCLUSIVE,
    NOT_TESTABLE,
    VERDICTS,
    Assessment,
    Finding,
)
from helpers.stats.findings.scorecard import (
    FINDINGS,
    README_COLUMNS,
    README_END,
    README_START,
    FindingsAnalysis,
    analyse,
    assess_all,
    quote_in_readme,
)

__all__ = [
    "ABOUT_BAND",
    "DOES_NOT_HOLD",
    "FINDINGS",
    "HOLDS",
    "INCONCLUSIVE",
    "NOT_TESTABLE",
    "PREREGISTERED_RULES",
    "PRIMARY_SPARSITY_REASON",
    "README_COLUMNS",
    "README_END",
    "README_START",
    "VERDICTS",
    "Assessment",
    "Finding",
    "FindingsAnalysis",
    "analyse",
    "assess_all",
    "preregistration",
    "quote_in_readme",
    "rules_markdown",
]
