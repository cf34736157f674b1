"""The rule machinery every finding shares: the verdicts, the ``Finding`` a rule is written as, the
``Assessment`` it gives, and the small helpers its sentences and tests use.

A finding states its claim, its unit of analysis, its minimum effect and its decision rule
before any data are seen, says what a run needs for a verdict, and then decides:

* ``holds``: the data give evidence for the claim;
* ``does not hold``: the data give evidence *against* it, never mere absence of evidence;
* ``inconclusive``: neither;
* ``not testable here``: the run lacks what the claim needs (models of each architecture,
  GPT-2, enough prompts per category, ...); the assessment then says what *can* be said.

Claims about models or architectures need models as replicates; prompts are replicates only
within a model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pandas as pd

from helpers.stats import robustness
from helpers.stats.robustness import StudyData

HOLDS, DOES_NOT_HOLD, INCONCLUSIVE, NOT_TESTABLE = "holds", "does not hold", "inconclusive", "not testable here"
VERDICTS: tuple[str, ...] = (HOLDS, DOES_NOT_HOLD, INCONCLUSIVE, NOT_TESTABLE)
ALPHA = 0.05
MIN_PROMPTS_PER_CATEGORY = 12
MIN_MODELS_FOR_CATEGORIES = 2
MIN_SHARED_ITEMS = 10


def significant(value: float, digits: int = 3) -> str:
    """``value`` to ``digits`` significant digits, as text (the way every number in a sentence is written)."""
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{value:.{digits}g}"


def counted(n: int, noun: str) -> str:
    """``n`` and ``noun``, plural unless ``n`` is 1 ("2 encoders", "1 model size")."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def holm(p_values: list[float]) -> list[float]:
    """Holm-adjusted p-values: the k-th smallest times (m - k + 1), made monotone, capped at 1.

    Written out because statsmodels' ``multipletests(method="holm")`` runs ``gc.collect()`` on every
    call (0.5 s each with a notebook's objects alive); ``test_findings`` checks the two agree.
    """
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p, kind="stable")
    scaled = np.maximum.accumulate(p[order] * (len(p) - np.arange(len(p))))
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(scaled, 1.0)
    return adjusted.tolist()


@dataclass
class Assessment:
    """A finding assessed on one data set: the scorecard row and the tables behind it."""

    finding: Finding
    verdict: str
    why_not_testable: str = ""
    evidence: str = ""
    test: str = ""
    interval: str = ""
    reason: str = ""  # one sentence saying why the verdict, for the front page ('' lets it use the evidence)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def testable_here(self) -> str:
        return "yes" if self.verdict != NOT_TESTABLE else f"no: {self.why_not_testable}"


class Finding(ABC):
    """One of the paper's findings: what it claims, at which unit, and the rule that decides it."""

    number: ClassVar[int]
    claim: ClassVar[str]
    unit: ClassVar[str]
    minimum_effect: ClassVar[str]
    rule: ClassVar[str]
    needs: ClassVar[str]

    @robustness.single_threaded_blas
    def assess(self, data: StudyData) -> Assessment:
        """The verdict on ``data``, or ``not testable here`` with what can honestly be said instead."""
        why = self.why_not_testable(data)
        if why:
            return Assessment(self, NOT_TESTABLE, why_not_testable=why, evidence=self.facts(data))
        return self.decide(data)

    def verdict_on(self, data: StudyData) -> str:
        """The verdict on ``data`` alone (a finding may compute it without its evidence tables)."""
        return self.assess(data).verdict

    @abstractmethod
    def why_not_testable(self, data: StudyData) -> str:
        """Empty when ``data`` has what the claim needs; otherwise the reason, in words."""

    @abstractmethod
    def decide(self, data: StudyData) -> Assessment:
        """Apply the rule (only called when testable)."""

    @abstractmethod
    def facts(self, data: StudyData) -> str:
        """What can be said when the claim itself is not testable (facts about these models)."""

    @abstractmethod
    def paper_evidence(self, published: StudyData, run: StudyData | None = None) -> dict[str, str]:
        """What the paper's own table says: statistic, value, interval, detail (``run``: this run's data, where
        a statistic of the table needs prompt-level data to be read)."""
