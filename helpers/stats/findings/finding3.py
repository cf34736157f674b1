"""Finding 3: GPT-2 has the highest final activation A_f (signed mean) of the models (paired, on the
shared prompts)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from helpers.stats import robustness
from helpers.stats.findings.rules import (
    ALPHA,
    DOES_NOT_HOLD,
    HOLDS,
    INCONCLUSIVE,
    MIN_SHARED_ITEMS,
    Assessment,
    Finding,
    significant,
)
from helpers.stats.robustness import StudyData

GPT2 = "GPT2-117M"
"""The model the claim names (the paper's display name)."""
D_Z_MINIMUM = 0.2
"""A model above GPT-2 refutes the claim only by at least this many SDs of the paired differences (d_z)."""


class GPT2HasHighestActivation(Finding):
    number = 3
    claim = "GPT-2 has the highest final activation A_f (signed mean) of the models"
    unit = "models, each compared with GPT-2 on the shared prompts"
    minimum_effect = (
        "'highest' is shown by GPT-2 above every other model; it is refuted only by a model above GPT-2 by at "
        f"least {D_Z_MINIMUM} SD of the paired differences (d_z >= {D_Z_MINIMUM})"
    )
    rule = (
        "GPT-2 is named by the claim, never picked from the data (so the paper's own table, from which it was "
        "picked, cannot test it). For each other model, the mean of the paired differences GPT-2 - model over the "
        "shared items, by a paired t test. Holds if GPT-2 is above every other model (each one-sided test at "
        f"{ALPHA:.0%}: an intersection-union test); does not hold if some model is above GPT-2 by at least the "
        f"minimum effect (one-sided at {ALPHA:.0%}, Bonferroni over the other models); inconclusive otherwise"
    )
    needs = f"GPT-2 ({GPT2}) and another model, with at least {MIN_SHARED_ITEMS} shared items"

    def why_not_testable(self, data: StudyData) -> str:
        if data.source != "this run":
            return f"GPT-2 was named from {data.source} itself, so testing it there would hold by selection"
        if GPT2 not in data.models.index:
            return "GPT-2 is not in this run"
        if len(data.models) < 2:
            return "GPT-2 is the only model"
        shared = len(data.wide("final_activation").dropna())
        if shared < MIN_SHARED_ITEMS:
            return f"{shared} shared items (needs {MIN_SHARED_ITEMS})"
        return ""

    def decide(self, data: StudyData) -> Assessment:
        others = [m for m in data.models.index if m != GPT2]
        grid = data.wide("final_activation")
        rows = []
        for other in others:
            difference = (grid[GPT2] - grid[other]).dropna().to_numpy()
            n, mean, sd = len(difference), float(difference.mean()), float(difference.std(ddof=1))
            se = sd / math.sqrt(n)
            minimum = D_Z_MINIMUM * sd
            rows.append(
                {
                    "model": other,
                    "items": n,
                    "gpt2_minus_model": mean,
                    "lower_95_one_sided": mean - stats.t.ppf(1 - ALPHA, n - 1) * se,
                    "p_gpt2_above": float(stats.t.sf(mean / se, n - 1)) if se > 0 else float(mean <= 0),
                    "minimum_effect": minimum,
                    "p_model_above_by_minimum": float(stats.t.sf((-mean - minimum) / se, n - 1)) if se > 0 else 1.0,
                    "share_gpt2_higher": float((difference > 0).mean()),
                }
            )
        table = pd.DataFrame(rows)
        if (table["p_gpt2_above"] < ALPHA).all():
            verdict = HOLDS
        elif (table["p_model_above_by_minimum"] < ALPHA / len(others)).any():
            verdict = DOES_NOT_HOLD
        else:
            verdict = INCONCLUSIVE
        return Assessment(
            self,
            verdict,
            evidence="; ".join(
                f"GPT-2 - {row.model} = {significant(row.gpt2_minus_model)}, GPT-2 higher on "
                f"{row.share_gpt2_higher:.0%} of {data.item_kind}"
                for row in table.itertuples()
            ),
            test=f"paired t tests, intersection-union over {len(others)} models; largest p "
            f"{significant(table['p_gpt2_above'].max(), 2)}",
            interval="one-sided 95% lower bounds of GPT-2 - model: "
            + ", ".join(f"{row.model} {significant(row.lower_95_one_sided)}" for row in table.itertuples()),
            tables={"finding3_gpt2_contrasts": table},
        )

    def facts(self, data: StudyData) -> str:
        means = data.wide("final_activation").dropna().mean().sort_values(ascending=False)
        if len(means) < 2:
            return ""
        first, second = means.index[0], means.index[1]
        contrast = robustness.paired_contrast(data, "final_activation", first, second)
        low, high = robustness.percentile_interval(contrast["difference_draws"])
        return (
            f"facts about these models: {first} has the highest mean A_f ({significant(means.iloc[0])}), above "
            f"{second} by {significant(contrast['difference'])} [{significant(low)}, {significant(high)}] on "
            f"{contrast['share_first_higher']:.0%} of {data.item_kind}; chosen from these data, so not a test"
        )

    def paper_evidence(self, published: StudyData, run: StudyData | None = None) -> dict[str, str]:
        means = published.wide("final_activation").mean()
        signed = means.sort_values(ascending=False)
        absolute = means.abs().sort_values(ascending=False)
        return {
            "statistic": "highest mean A_f, signed and absolute",
            "value": f"signed: {signed.index[0]} {significant(signed.iloc[0])}",
            "interval": f"absolute: {absolute.index[0]} {significant(absolute.iloc[0])}",
            "detail": f"GPT-2 is highest only in signed A_f; by |A_f| {absolute.index[0]} is larger "
            f"(GPT-2 {significant(abs(means.get(GPT2, np.nan)))})"
            if absolute.index[0] != GPT2
            else "GPT-2 is highest by signed and absolute A_f",
        }
