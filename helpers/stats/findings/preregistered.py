"""Pre-registration: every finding's rule as Markdown, and where the repository recorded it.

``rules_markdown`` writes the claim, unit, minimum effect, rule and needs of each of ``FINDINGS``;
``paper/preregistered_rules.md`` holds that text as committed before the results it judges (``python -m
helpers.stats.findings preregister`` writes it; a test keeps it equal to the code), and ``preregistration``
names the commits that recorded and last changed it.
"""

from __future__ import annotations

from helpers.base import paths
from helpers.stats.findings.deviations import deviations_markdown
from helpers.stats.findings.rules import ALPHA
from helpers.stats.findings.scorecard import FINDINGS


def rules_markdown() -> str:
    """Every finding's claim, unit, minimum effect, rule and needs, as Markdown (pre-registered: see
    ``PREREGISTERED_RULES``)."""
    lines = [
        "Verdicts: **holds** (evidence for the claim), **does not hold** (evidence against it, never mere absence "
        "of evidence), **inconclusive**, **not testable here** (the run lacks what the claim needs). "
        f"Tests at the {ALPHA:.0%} level; each rule can give either verdict, and each states both error rates."
    ]
    for finding in FINDINGS:
        lines.append(
            f"\n**Finding {finding.number}: {finding.claim}.** *Unit:* {finding.unit}. "
            f"*Minimum effect:* {finding.minimum_effect}. *Rule:* {finding.rule}. *Needs:* {finding.needs}."
        )
    return "\n".join(lines) + "\n\n" + deviations_markdown()


PREREGISTERED_RULES = paths.PAPER / "preregistered_rules.md"
"""The rules' text (``rules_markdown``) as committed before the eight-model run; a test keeps it equal to the code,
so a changed rule shows in the repository's history before any result it judges."""


def preregistration() -> str:
    """A sentence naming the commit that first recorded the rules and the commit that last changed them."""
    import subprocess

    def log(*options: str) -> str:
        try:
            return subprocess.run(
                ["git", "log", *options, "--format=%h (%ad): %s", "--date=short", "--", str(PREREGISTERED_RULES)],
                cwd=paths.ROOT,
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    history = log().splitlines()
    if not history:
        return "This copy has no git history, so the commit that fixed the rules cannot be named here."
    current = PREREGISTERED_RULES.read_text(encoding="utf-8") == rules_markdown()
    return (
        f"The rules above were first committed in {history[-1]} and last changed in {history[0]} "
        f"({len(history)} commit(s) in all, `{PREREGISTERED_RULES.relative_to(paths.ROOT)}`); the code's rules "
        + ("are that text exactly." if current else "DIFFER from that text: they changed after it was committed.")
    )
