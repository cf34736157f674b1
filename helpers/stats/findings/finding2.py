"""Finding 2: decoders are sparser than encoders, about 7x (models as replicates), on the paper's S_max and
every other sparsity measure beside it."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from helpers.stats import robustness
from helpers.stats.findings.rules import (
    ALPHA,
    DOES_NOT_HOLD,
    HOLDS,
    INCONCLUSIVE,
    NOT_TESTABLE,
    Assessment,
    Finding,
    counted,
    significant,
)
from helpers.stats.robustness import StudyData

SPARSITY_VARIANTS: dict[str, str] = {
    "max_sparsity": "|h| < 0.01, max over layers (the paper's S_max; primary)",
    "max_sparsity_no_embedding": "|h| < 0.01, max over layers without the embedding output",
    "max_sparsity_0.001": "|h| < 0.001, max over layers",
    "max_sparsity_0.1": "|h| < 0.1, max over layers",
    "max_sparsity_relative_0.001": "|h| < 0.001 x the layer's SD, max over layers",
    "max_sparsity_relative_0.01": "|h| < 0.01 x the layer's SD, max over layers",
    "max_sparsity_relative_0.1": "|h| < 0.1 x the layer's SD, max over layers",
    "max_hoyer_sparsity": "Hoyer sparsity, max over layers (scale-free)",
    "max_hoyer_sparsity_no_embedding": "Hoyer sparsity, max over layers without the embedding output",
}
"""Every sparsity measure finding 2 is checked on; the first is pre-specified as primary (``PRIMARY_SPARSITY``)."""
PRIMARY_SPARSITY = "max_sparsity"
PRIMARY_SPARSITY_REASON = (
    "The claim is a statement about the paper's S_max (max over layers of the fraction |h| < 0.01), so S_max is "
    "the primary measure for both parts. It is not a measure of how sparse a model's representations are: in "
    "decoders its maximum sits at the embedding output (the layer with the smallest values), and a fixed "
    "threshold measures each layer's scale as much as its sparsity; Hoyer sparsity, scale-free, is dominated by "
    "a few massive activations in decoders' middle layers. The direction of 'decoders are sparser' can flip "
    "with the measure, so every other measure gets its own verdict beside the primary one, and the table "
    "'sparsity_interpretation' shows where each model's maximum sits and how large its massive activations are."
)
PAPER_SPARSITY = "max_sparsity"
SPARSER_MINIMUM = 1.1
MIN_MODELS_PER_ARCHITECTURE = 3
MIN_MODELS_FOR_ARCHITECTURES = 7


def _paper_sparsity_ratios() -> tuple[float, float]:
    """The paper's decoder/encoder ratio of S_max from its model x category table (data/reference): the ratio of
    arithmetic means over its cells (its headline, 7.08) and the ratio of geometric means of model means."""
    from helpers.study.reference import load_published

    cells = load_published("complete_analysis_results")
    arithmetic = cells.groupby("Architecture")["Max_Sparsity"].mean()
    per_model = cells.groupby(["Architecture", "Model"])["Max_Sparsity"].mean()
    geometric = np.exp(np.log(per_model).groupby(level="Architecture").mean())
    return (
        float(arithmetic["decoder"] / arithmetic["encoder"]),
        float(geometric["decoder"] / geometric["encoder"]),
    )


PAPER_SPARSITY_RATIO, PAPER_SPARSITY_RATIO_GEOMETRIC = _paper_sparsity_ratios()
"""The paper's ratio as it reports it (arithmetic means, 7.08) and on the estimand the rule tests (geometric, 4.40)."""
ABOUT_BAND = (PAPER_SPARSITY_RATIO_GEOMETRIC / 2, PAPER_SPARSITY_RATIO_GEOMETRIC * 2)
"""'About the paper's ratio': within a factor 2 of its geometric-mean ratio."""


def sparser_verdict(test: robustness.ShiftPermutationTest | None) -> str:
    """'Sparser' from the permutation test of the decoder - encoder log means: above log(SPARSER_MINIMUM)
    (one-sided, 5%) holds; below it (one-sided, 5%) does not hold."""
    if test is None or test.smallest_p() >= ALPHA:
        return NOT_TESTABLE
    threshold = math.log(SPARSER_MINIMUM)
    if test.p_above(threshold) < ALPHA:
        return HOLDS
    return DOES_NOT_HOLD if test.p_below(threshold) < ALPHA else INCONCLUSIVE


def about_verdict(test: robustness.ShiftPermutationTest | None) -> str:
    """'About the paper's ratio': inside ``ABOUT_BAND`` by two one-sided tests at 5% holds; below its lower or
    above its upper end (one-sided, 5%) does not hold."""
    if test is None or test.smallest_p() >= ALPHA:
        return NOT_TESTABLE
    low, high = (math.log(edge) for edge in ABOUT_BAND)
    if test.p_above(low) < ALPHA and test.p_below(high) < ALPHA:
        return HOLDS
    return DOES_NOT_HOLD if test.p_below(low) < ALPHA or test.p_above(high) < ALPHA else INCONCLUSIVE


def join_parts(sparser: str, about: str) -> str:
    """Finding 2's verdict: holds if both parts hold, does not hold if either does not, inconclusive otherwise."""
    if (sparser, about) == (HOLDS, HOLDS):
        return HOLDS
    return DOES_NOT_HOLD if DOES_NOT_HOLD in (sparser, about) else INCONCLUSIVE


class DecodersAreSparser(Finding):
    number = 2
    claim = f"Decoders are sparser than encoders, about {PAPER_SPARSITY_RATIO:.0f}x"
    unit = "models (architectures compared with models as replicates)"
    minimum_effect = (
        f"'sparser' is a decoder/encoder ratio above {SPARSER_MINIMUM}; 'about {PAPER_SPARSITY_RATIO:.0f}x' is a "
        f"ratio within a factor 2 of the paper's own ratio on the estimand tested here, the ratio of geometric "
        f"means of model means, {significant(PAPER_SPARSITY_RATIO_GEOMETRIC)} on its table (its "
        f"{significant(PAPER_SPARSITY_RATIO)} is a ratio of arithmetic means): "
        f"{significant(ABOUT_BAND[0])}-{significant(ABOUT_BAND[1])}; both on the primary measure, the paper's S_max"
    )
    rule = (
        "Each model is reduced to the log of its mean sparsity over the prompts every model saw; decoders and "
        "encoders are compared by an exact permutation test of the difference of mean logs (every assignment of "
        "the architecture labels to the models), so the ratio is one of geometric means. 'Sparser' holds if the "
        f"ratio is above {SPARSER_MINIMUM} (one-sided, 5%), does not hold if it is below {SPARSER_MINIMUM} "
        f"(one-sided, 5%), and is inconclusive otherwise. 'About {PAPER_SPARSITY_RATIO:.0f}x' holds if the ratio "
        "is inside the band by two one-sided tests at 5% (the 90% permutation interval inside it), does not hold "
        "if it is below the band's lower end or above its upper end (one-sided, 5%), inconclusive otherwise. The "
        "finding's verdict joins the two parts: holds if both hold, does not hold if either does not hold, "
        "inconclusive otherwise. Every other sparsity measure gets the same two verdicts, shown beside the "
        f"primary one (none decides silently). {PRIMARY_SPARSITY_REASON} Error rates: a part's 'holds' comes "
        "out at most 5% of the time when its claim is false, and its 'does not hold' at most 5% of the time when "
        "its claim is true (the permutation test is exact when models of both architectures vary alike)"
    )
    needs = (
        f"at least {MIN_MODELS_PER_ARCHITECTURE} encoders and {MIN_MODELS_PER_ARCHITECTURE} decoders and "
        f"{MIN_MODELS_FOR_ARCHITECTURES} models in all (3 vs 4): the smallest one-sided permutation p is then "
        "1/35, below 5%; with 2 vs 2 it is 1/6, so no test at 5% is possible"
    )

    def why_not_testable(self, data: StudyData) -> str:
        counts = data.models["architecture"].value_counts()
        encoders, decoders = int(counts.get("encoder", 0)), int(counts.get("decoder", 0))
        if min(encoders, decoders) < MIN_MODELS_PER_ARCHITECTURE or encoders + decoders < MIN_MODELS_FOR_ARCHITECTURES:
            return (
                f"{counted(encoders, 'encoder')} and {counted(decoders, 'decoder')}; needs at least "
                f"{MIN_MODELS_PER_ARCHITECTURE} of each and {MIN_MODELS_FOR_ARCHITECTURES} in all"
            )
        if PRIMARY_SPARSITY not in data.table:
            return f"the run has no {PRIMARY_SPARSITY}"
        return ""

    @staticmethod
    def pairs(data: StudyData) -> list[tuple[str, str]]:
        architecture = data.models["architecture"]
        return [
            (decoder, encoder)
            for decoder in architecture.index[architecture == "decoder"]
            for encoder in architecture.index[architecture == "encoder"]
        ]

    def variants(self, data: StudyData) -> pd.DataFrame:
        """Every sparsity variant: the architecture verdicts (where testable) and each decoder/encoder pair's ratio."""
        testable = not self.why_not_testable(data)
        rows = []
        for variant, description in SPARSITY_VARIANTS.items():
            if variant not in data.table:
                continue
            ratio = robustness.architecture_ratio(data, variant)
            for decoder, encoder in self.pairs(data):
                contrast = robustness.paired_contrast(data, variant, decoder, encoder)
                low, high = robustness.percentile_interval(contrast["ratio_draws"])
                rows.append(
                    {
                        "variant": variant,
                        "measure": description,
                        "primary": variant == PRIMARY_SPARSITY,
                        "comparison": f"{decoder} / {encoder}",
                        "ratio": contrast["ratio"],
                        "low": low,
                        "high": high,
                        "share_decoder_higher": contrast["share_first_higher"],
                        "wilcoxon_p": contrast["wilcoxon_p"],
                        "verdict_sparser": "",
                        "verdict_about": "",
                    }
                )
            rows.append(
                {
                    "variant": variant,
                    "measure": description,
                    "primary": variant == PRIMARY_SPARSITY,
                    "comparison": "decoders / encoders (models as replicates)",
                    "ratio": ratio["ratio"],
                    "low": ratio["low"],
                    "high": ratio["high"],
                    "verdict_sparser": sparser_verdict(ratio["test"]) if testable else NOT_TESTABLE,
                    "verdict_about": about_verdict(ratio["test"]) if testable else NOT_TESTABLE,
                }
            )
        return pd.DataFrame(rows)

    def decide(self, data: StudyData) -> Assessment:
        variants = self.variants(data)
        architecture_rows = variants[variants["comparison"].str.startswith("decoders")].set_index("variant")
        primary = architecture_rows.loc[PRIMARY_SPARSITY]
        verdict = join_parts(primary["verdict_sparser"], primary["verdict_about"])
        agreeing = int((architecture_rows["verdict_sparser"] == primary["verdict_sparser"]).sum())
        ratio = robustness.architecture_ratio(data, PRIMARY_SPARSITY)
        test = ratio["test"]
        n_decoders = int((data.models["architecture"] == "decoder").sum())
        n_encoders = int((data.models["architecture"] == "encoder").sum())
        evidence = (
            f"'sparser' {primary['verdict_sparser']}, 'about {PAPER_SPARSITY_RATIO:.0f}x' {primary['verdict_about']}: "
            f"decoder/encoder ratio of S_max {significant(primary['ratio'])} (90% interval "
            f"[{significant(primary['low'])}, {significant(primary['high'])}]) over {n_decoders} decoders and "
            f"{n_encoders} encoders; the same 'sparser' verdict on {agreeing} of {len(architecture_rows)} sparsity "
            "measures; "
            + ", ".join(
                f"{row.Index} {significant(row.ratio)} ({row.verdict_sparser})"
                for row in architecture_rows.itertuples()
                if row.Index != PRIMARY_SPARSITY
            )
        )
        mixed = robustness.crossed_mixed_model(data, PRIMARY_SPARSITY)
        return Assessment(
            self,
            verdict,
            evidence=evidence,
            test=f"exact permutation test on log model means ({len(test.assignments)} label assignments): "
            f"p(ratio > {SPARSER_MINIMUM}) = {significant(test.p_above(math.log(SPARSER_MINIMUM)), 2)}, "
            f"p(ratio < {SPARSER_MINIMUM}) = {significant(test.p_below(math.log(SPARSER_MINIMUM)), 2)}; crossed "
            f"mixed model (model, prompt) ratio {significant(mixed['ratio'])}",
            interval=f"ratio 90% permutation interval [{significant(primary['low'])}, {significant(primary['high'])}]"
            f" against the band {significant(ABOUT_BAND[0])}-{significant(ABOUT_BAND[1])}",
            tables={"sparsity_variants": variants},
        )

    def facts(self, data: StudyData) -> str:
        parts = []
        for variant in dict.fromkeys((PRIMARY_SPARSITY, "max_hoyer_sparsity")):
            if variant not in data.table:
                continue
            for decoder, encoder in self.pairs(data):
                contrast = robustness.paired_contrast(data, variant, decoder, encoder)
                low, high = robustness.percentile_interval(contrast["ratio_draws"])
                name = "Hoyer" if variant == "max_hoyer_sparsity" else "S_max"
                parts.append(
                    f"{decoder}/{encoder} {name} {significant(contrast['ratio'])} [{significant(low)}, "
                    f"{significant(high)}], higher on {contrast['share_first_higher']:.0%} of {data.item_kind}"
                )
        return "facts about these models: " + "; ".join(parts) if parts else ""

    def paper_evidence(self, published: StudyData, run: StudyData | None = None) -> dict[str, str]:
        means = robustness.model_means(published, "max_sparsity")
        encoders = list(means.index[means["architecture"] == "encoder"])
        pieces = sorted(
            (value / means.loc[encoders, "mean"].mean(), name)
            for name, value in means.loc[means["architecture"] == "decoder", "mean"].items()
        )
        return {
            "statistic": "decoder/encoder ratio of S_max: arithmetic means of cells (as the paper reports it) and "
            "geometric means of model means (the estimand tested here)",
            "value": f"{significant(PAPER_SPARSITY_RATIO)} and {significant(PAPER_SPARSITY_RATIO_GEOMETRIC)}",
            "interval": f"per decoder {significant(pieces[0][0])} to {significant(pieces[-1][0])}" if pieces else "",
            "detail": ", ".join(f"{name} {significant(ratio)}" for ratio, name in pieces)
            + f"; {counted(len(encoders), 'encoder')}, so no architecture test",
        }


def sparsity_interpretation(layers: pd.DataFrame, display_names: dict[str, str]) -> pd.DataFrame:
    """Per model: what S_max and Hoyer sparsity measure. The share of prompts whose S_max layer is the embedding
    output, the median relative depth of the Hoyer maximum, and massive activations (median over prompts of the
    largest max|h| / SD over the hidden layers).

    ``layers``: the long per-layer table (``model, prompt_id, layer, statistic, value``; layer 0 = embeddings);
    ``display_names``: registry name -> display name.
    """
    rows = []
    for model, frame in layers[layers["head"].isna()].groupby("model", sort=False):
        wide = frame.pivot_table(index=["prompt_id", "layer"], columns="statistic", values="value", aggfunc="first")
        needed = {"near_zero_0.01", "hoyer", "max_abs", "std"}
        if not needed <= set(wide.columns):
            continue
        n_layers = int(wide.index.get_level_values("layer").max())
        sparsest = wide["near_zero_0.01"].groupby(level="prompt_id").idxmax().map(lambda key: key[1])
        hoyer_layer = wide["hoyer"].groupby(level="prompt_id").idxmax().map(lambda key: key[1])
        ratio = (wide["max_abs"] / wide["std"]).drop(index=0, level="layer")
        rows.append(
            {
                "model": display_names.get(model, model),
                "layers": n_layers,
                "share_s_max_at_embedding": float((sparsest == 0).mean()),
                "median_depth_of_hoyer_max": float((hoyer_layer / n_layers).median()),
                "massive_activation_ratio": float(ratio.groupby(level="prompt_id").max().median()),
            }
        )
    return pd.DataFrame(rows)
