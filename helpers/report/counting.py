"""Models counted by verdict, in words ("does not hold in 6 of 8 models, inconclusive in 2 (SmolLM2-135M, ...)"),
for the cards and the figures' titles; light on purpose (no statistics imported), so that the figures of notebook 04
do not depend on the findings' rules."""

from __future__ import annotations

from typing import Any


def plural(n: int, noun: str) -> str:
    """``n`` and ``noun``, plural unless ``n`` is 1."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def names(models: list[str], limit: int = 3) -> str:
    """Up to ``limit`` model names, then how many more."""
    shown = ", ".join(models[:limit])
    return shown + (f" and {len(models) - limit} more" if len(models) > limit else "")


def count_verdicts(per_model: Any, model: str = "model", verdict: str = "verdict") -> str:
    """'does not hold in 6 of 8 models, inconclusive in 2 (SmolLM2-135M, Gemma3-270M)': the most frequent verdict
    first (ties in the table's order), then the others, each naming its models; '' without the columns."""
    if per_model is None or len(per_model) == 0 or verdict not in per_model or model not in per_model:
        return ""
    total = len(per_model)
    groups: dict[str, list[str]] = {}
    for name, value in zip(per_model[model].astype(str), per_model[verdict].astype(str), strict=True):
        groups.setdefault(value, []).append(name)
    order = sorted(groups, key=lambda v: -len(groups[v]))  # stable: ties keep the table's order
    first = order[0]
    if len(order) == 1:
        return f"{first} in {'all ' if total > 1 else ''}{plural(total, 'model')}"
    parts = [f"{first} in {len(groups[first])} of {plural(total, 'model')}"]
    parts += [f"{v} in {len(groups[v])} ({names(groups[v])})" for v in order[1:]]
    return ", ".join(parts)
