"""Finding 2: decoders are sparser than encoders, about 7x (models as replicates), on the paper's S_max and
every other sparsity measure beside it."""

from __future__ import annotations

import math
from typing import TypedDict

import numpy as np
import pandas as pd
from scipy import stats

from helpers.stats import between_models, robustness
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
NO_EMBEDDING_SPARSITY = "max_sparsity_no_embedding"
SCALE_FREE_SPARSITY = "max_hoyer_sparsity"
"""The measures the evidence sets beside S_max: S_max without the embedding output, and the scale-free Hoyer one."""


def smallest_permutation_p(first: int, second: int) -> float:
    """The smallest one-sided p an exact permutation test of ``first`` vs ``second`` models can give: one over the
    number of ways to label them."""
    return 1 / math.comb(first + second, first)


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


def sparser_verdict(test: between_models.ShiftPermutationTest | None) -> str:
    """'Sparser' from the permutation test of the decoder - encoder log means: above log(SPARSER_MINIMUM)
    (one-sided, 5%) holds; below it (one-sided, 5%) does not hold."""
    if test is None or test.smallest_p() >= ALPHA:
        return NOT_TESTABLE
    threshold = math.log(SPARSER_MINIMUM)
    if test.p_above(threshold) < ALPHA:
        return HOLDS
    return DOES_NOT_HOLD if test.p_below(threshold) < ALPHA else INCONCLUSIVE


def about_verdict(test: between_models.ShiftPermutationTest | None) -> str:
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
        f"the architecture labels to the models; beyond {between_models.PERMUTATION_ENUMERATION_LIMIT:,} assignments, "
        f"that many drawn at random), so the ratio is one of geometric means. 'Sparser' holds if the ratio is above "
        f"{SPARSER_MINIMUM} (one-sided, {ALPHA:.0%}), does not hold if it is below {SPARSER_MINIMUM} (one-sided, "
        f"{ALPHA:.0%}), and is inconclusive otherwise. 'About {PAPER_SPARSITY_RATIO:.0f}x' holds if the ratio is "
        f"inside the band by two one-sided tests at {ALPHA:.0%} (the {1 - 2 * ALPHA:.0%} permutation interval inside "
        f"it), does not hold if it is below the band's lower end or above its upper end (one-sided, {ALPHA:.0%}), "
        "inconclusive otherwise. The finding's verdict joins the two parts: holds if both hold, does not hold if "
        "either does not hold, inconclusive otherwise. Every other sparsity measure gets the same two verdicts, "
        f"shown beside the primary one (none decides silently). {PRIMARY_SPARSITY_REASON} Error rates: a part's "
        f"'holds' comes out at most {ALPHA:.0%} of the time when its claim is false, and its 'does not hold' at most "
        f"{ALPHA:.0%} of the time when its claim is true (the permutation test is exact when models of both "
        "architectures vary alike)"
    )
    needs = (
        f"at least {MIN_MODELS_PER_ARCHITECTURE} encoders and {MIN_MODELS_PER_ARCHITECTURE} decoders and "
        f"{MIN_MODELS_FOR_ARCHITECTURES} models in all ({MIN_MODELS_PER_ARCHITECTURE} vs "
        f"{MIN_MODELS_FOR_ARCHITECTURES - MIN_MODELS_PER_ARCHITECTURE}): the smallest one-sided permutation p is then "
        f"1/{math.comb(MIN_MODELS_FOR_ARCHITECTURES, MIN_MODELS_PER_ARCHITECTURE)}, below {ALPHA:.0%}; with 2 vs 2 "
        f"it is 1/{math.comb(4, 2)}, so no test at {ALPHA:.0%} is possible"
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
            ratio = between_models.architecture_ratio(data, variant)
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

    @robustness.single_threaded_blas
    def verdict_on(self, data: StudyData) -> str:
        """The verdict on the primary measure alone (the same two parts as ``decide``, without the other measures
        and the mixed model)."""
        if self.why_not_testable(data):
            return NOT_TESTABLE
        test = between_models.architecture_ratio(data, PRIMARY_SPARSITY)["test"]
        return join_parts(sparser_verdict(test), about_verdict(test))

    def decide(self, data: StudyData) -> Assessment:
        variants = self.variants(data)
        architecture_rows = variants[variants["comparison"].str.startswith("decoders")].set_index("variant")
        primary = architecture_rows.loc[PRIMARY_SPARSITY]
        verdict = join_parts(primary["verdict_sparser"], primary["verdict_about"])
        agreeing = int((architecture_rows["verdict_sparser"] == primary["verdict_sparser"]).sum())
        ratio = between_models.architecture_ratio(data, PRIMARY_SPARSITY)
        test = ratio["test"]
        n_decoders = int((data.models["architecture"] == "decoder").sum())
        n_encoders = int((data.models["architecture"] == "encoder").sum())
        spread = log_spread(data, PRIMARY_SPARSITY)
        parts = what_s_max_measures(data, architecture_rows)
        measures = measures_text(parts)
        evidence = (
            f"'sparser' {primary['verdict_sparser']}, 'about {PAPER_SPARSITY_RATIO:.0f}x' {primary['verdict_about']}: "
            f"decoder/encoder ratio of S_max {significant(primary['ratio'])} ({1 - 2 * ALPHA:.0%} interval "
            f"[{significant(primary['low'])}, {significant(primary['high'])}]) over {n_decoders} decoders and "
            f"{n_encoders} encoders; the same 'sparser' verdict on {agreeing} of {len(architecture_rows)} sparsity "
            "measures; "
            + ", ".join(
                f"{row.Index} {significant(row.ratio)} ({row.verdict_sparser})"
                for row in architecture_rows.itertuples()
                if row.Index != PRIMARY_SPARSITY
            )
            + (f"; what S_max measures here: {measures}" if measures else "")
            + f"; {exchangeability_caveat(spread)}"
        )
        mixed = between_models.crossed_mixed_model(data, PRIMARY_SPARSITY)
        return Assessment(
            self,
            verdict,
            evidence=evidence,
            test=f"exact permutation test on log model means ({len(test.assignments)} label assignments): "
            f"p(ratio > {SPARSER_MINIMUM}) = {significant(test.p_above(math.log(SPARSER_MINIMUM)), 2)}, "
            f"p(ratio < {SPARSER_MINIMUM}) = {significant(test.p_below(math.log(SPARSER_MINIMUM)), 2)}; crossed "
            f"mixed model (model, prompt) ratio {significant(mixed['ratio'])}",
            interval=f"ratio {1 - 2 * ALPHA:.0%} permutation interval [{significant(primary['low'])}, "
            f"{significant(primary['high'])}] against the band "
            f"{significant(ABOUT_BAND[0])}-{significant(ABOUT_BAND[1])}",
            reason=reason(verdict, primary, parts),
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
        means = between_models.model_means(published, "max_sparsity")
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


# --- what S_max measures in a run, the exchangeability of the permutation test, the earlier rule ---------------

SPARSITY_INTERPRETATION_KEY = "sparsity_interpretation"
"""Where a run's ``StudyData.cache`` holds ``sparsity_interpretation`` (it needs the per-layer table)."""


def log_spread(data: StudyData, metric: str) -> dict[str, float]:
    """Per architecture: the SD (n - 1) of the log model means of ``metric`` over the items every model has."""
    means = between_models.model_means(data, metric)
    means = means[means["mean"] > 0]
    return {
        str(architecture): float(np.log(group["mean"]).std(ddof=1)) if len(group) > 1 else float("nan")
        for architecture, group in means.groupby("architecture")
    }


def exchangeability_caveat(spread: dict[str, float]) -> str:
    """The permutation test's assumption, against the run's spread of log model means (computed)."""
    shown = " vs ".join(f"{significant(spread[a])} ({a}s)" for a in ("encoder", "decoder") if a in spread)
    return (
        "the permutation test treats the models as exchangeable across architectures (alike in spread): the SD of "
        f"log S_max model means is {shown}"
        + (
            f", a ratio of {significant(spread['decoder'] / spread['encoder'])}"
            if {"encoder", "decoder"} <= set(spread) and spread["encoder"] > 0
            else ""
        )
    )


class FamilyPair(TypedDict):
    """One natural experiment: its decoder and encoder, how they differ, and the decoder/encoder ratios."""

    decoder: str
    encoder: str
    differs: str
    ratios: dict[str, float]


def within_family(data: StudyData) -> list[FamilyPair]:
    """The registry's natural experiments in ``data`` whose two models differ in architecture (one family,
    bidirectional vs causal): per pair, the decoder/encoder ratio of mean S_max, S_max without the embedding output
    and Hoyer sparsity on their shared prompts (facts about the pair)."""
    from helpers.core.registry import NATURAL_EXPERIMENTS

    by_name = {str(row.model): (str(name), row.architecture) for name, row in data.models.iterrows()}
    pairs: list[FamilyPair] = []
    for first, second, differs in NATURAL_EXPERIMENTS:
        if first not in by_name or second not in by_name or by_name[first][1] == by_name[second][1]:
            continue
        (decoder, _), (encoder, _) = sorted((by_name[first], by_name[second]), key=lambda item: item[1] != "decoder")
        ratios = {
            metric: robustness.paired_contrast(data, metric, decoder, encoder)["ratio"]
            for metric in (PRIMARY_SPARSITY, NO_EMBEDDING_SPARSITY, SCALE_FREE_SPARSITY)
            if metric in data.table
        }
        pairs.append(FamilyPair(decoder=decoder, encoder=encoder, differs=differs, ratios=ratios))
    return pairs


def share_span(values: pd.Series) -> str:
    """Shares (fractions) as a percent span: '94-100%' ('100%' when they round alike)."""
    low, high = round(100 * values.min()), round(100 * values.max())
    return f"{low}%" if low == high else f"{low}-{high}%"


def what_s_max_measures(data: StudyData, architecture_rows: pd.DataFrame) -> dict[str, str]:
    """What S_max measures in the run's models, in parts (each missing where the run lacks what it needs):
    ``embedding``: in how many prompts its maximum sits at the embedding output (``sparsity_interpretation`` in the
    cache); ``no_embedding`` and ``scale_free``: the decoder/encoder ratio without the embedding output and on Hoyer
    sparsity, with the 'sparser' verdict; ``within_family``: the natural experiments of one family, bidirectional vs
    causal."""
    parts: dict[str, str] = {}
    interpretation = data.cache.get(SPARSITY_INTERPRETATION_KEY)
    if interpretation is not None and len(interpretation) and "share_s_max_at_embedding" in interpretation:
        architecture = data.models["architecture"]
        shares = interpretation.set_index("model")["share_s_max_at_embedding"]
        decoders = shares.reindex(architecture.index[architecture == "decoder"]).dropna()
        encoders = shares.reindex(architecture.index[architecture == "encoder"]).dropna()
        if len(decoders):
            encoder_share = f" ({share_span(encoders)} of encoder prompts)" if len(encoders) else ""
            parts["embedding"] = f"{share_span(decoders)} of decoder prompts{encoder_share}"
    for key, variant in (("no_embedding", NO_EMBEDDING_SPARSITY), ("scale_free", SCALE_FREE_SPARSITY)):
        if variant in architecture_rows.index:
            row = architecture_rows.loc[variant]
            parts[key] = f"{significant(row['ratio'])} ('sparser' {row['verdict_sparser']})"
    pairs = []
    for pair in within_family(data):
        ratios = pair["ratios"]
        shown = ", ".join(
            f"{name} {significant(ratios[metric])}"
            for metric, name in (
                (PRIMARY_SPARSITY, "S_max"),
                (NO_EMBEDDING_SPARSITY, "without the embedding output"),
                (SCALE_FREE_SPARSITY, "Hoyer"),
            )
            if metric in ratios
        )
        pairs.append(f"{pair['decoder']} / {pair['encoder']} ({pair['differs']}): {shown}")
    if pairs:
        parts["within_family"] = "; ".join(pairs)
    return parts


MEASURE_WORDS = {
    "embedding": "its maximum sits at the embedding output in {}",
    "no_embedding": "decoder/encoder ratio without the embedding output {}",
    "scale_free": "on scale-free Hoyer sparsity {}",
    "within_family": "natural experiment {}",
}
"""How the evidence names each part of ``what_s_max_measures``."""


def measures_text(parts: dict[str, str]) -> str:
    """``what_s_max_measures``' parts as the evidence's clause."""
    return "; ".join(MEASURE_WORDS[key].format(value) for key, value in parts.items())


def reason(verdict: str, primary: pd.Series, parts: dict[str, str]) -> str:
    """The one sentence the front page shows for finding 2: the verdict on S_max and, when the run has them, what S_max
    measures in these models and what the other measures give."""
    sentence = (
        f"{verdict[0].upper() + verdict[1:]} on the paper's S_max: decoders / encoders "
        f"{significant(primary['ratio'])} ({1 - 2 * ALPHA:.0%} interval {significant(primary['low'])}-"
        f"{significant(primary['high'])}; 'sparser' needs above {SPARSER_MINIMUM}, 'about' "
        f"{significant(ABOUT_BAND[0])}-{significant(ABOUT_BAND[1])})"
    )
    if "embedding" in parts:
        sentence += (
            f"; in these models S_max measures the embedding output, where its maximum sits in {parts['embedding']}"
        )
    others = [
        f"{words} {parts[key].split(' (')[0]}"
        for key, words in (("no_embedding", "without the embedding output"), ("scale_free", "on Hoyer sparsity"))
        if key in parts
    ]
    if others:
        sentence += f"; the ratio is {', '.join(others)}"
    if "within_family" in parts:
        sentence += f"; {parts['within_family']}"
    return sentence


EARLIER_PRIMARY_SPARSITY = "max_hoyer_sparsity"
"""The primary measure of 'sparser' in the rule as committed with the three-model run (7a725e3)."""
EARLIER_ABOUT_BAND = (round(PAPER_SPARSITY_RATIO, 2) / 2, round(PAPER_SPARSITY_RATIO, 2) * 2)
"""That rule's 'about 7x' band: a factor 2 around the paper's arithmetic ratio as it had it (7.08), on S_max."""


def t_interval_ratio(data: StudyData, metric: str, level: float = 1 - ALPHA) -> tuple[float, float, float]:
    """Decoder/encoder ratio of geometric model means with the pooled two-sample t interval on the log model means
    (models - 2 degrees of freedom): the test of the rule before c0e16e4. NaNs without 2 models of each."""
    means = between_models.model_means(data, metric)
    logs = np.log(means["mean"].where(means["mean"] > 0))
    decoder, encoder = logs[means["architecture"] == "decoder"], logs[means["architecture"] == "encoder"]
    if len(decoder) < 2 or len(encoder) < 2 or logs.isna().any():
        return float("nan"), float("nan"), float("nan")
    df = len(logs) - 2
    pooled = math.sqrt(((len(decoder) - 1) * decoder.var(ddof=1) + (len(encoder) - 1) * encoder.var(ddof=1)) / df)
    se = pooled * math.sqrt(1 / len(decoder) + 1 / len(encoder))
    estimate = float(decoder.mean() - encoder.mean())
    critical = float(stats.t.ppf(1 - (1 - level) / 2, df))
    return math.exp(estimate), math.exp(estimate - critical * se), math.exp(estimate + critical * se)


def verdict_before_c0e16e4(data: StudyData) -> str:
    """Finding 2 under the rule as committed with the three-model run (7a725e3, changed by c0e16e4): 'sparser' on
    Hoyer sparsity (95% t interval of the ratio above 1.1 holds, below it does not), 'about 7x' on S_max (the interval
    inside a factor 2 of the paper's arithmetic 7.08 holds, wholly outside it does not); at least 2 of each."""
    counts = data.models["architecture"].value_counts()
    if (
        min(int(counts.get("encoder", 0)), int(counts.get("decoder", 0))) < 2
        or EARLIER_PRIMARY_SPARSITY not in data.table
    ):
        return NOT_TESTABLE
    _, low, high = t_interval_ratio(data, EARLIER_PRIMARY_SPARSITY)
    if not np.isfinite(low):
        return NOT_TESTABLE
    sparser = HOLDS if low > SPARSER_MINIMUM else DOES_NOT_HOLD if high < SPARSER_MINIMUM else INCONCLUSIVE
    _, low, high = t_interval_ratio(data, PAPER_SPARSITY)
    if not np.isfinite(low):
        about = INCONCLUSIVE
    elif EARLIER_ABOUT_BAND[0] <= low and high <= EARLIER_ABOUT_BAND[1]:
        about = HOLDS
    else:
        about = DOES_NOT_HOLD if high < EARLIER_ABOUT_BAND[0] or low > EARLIER_ABOUT_BAND[1] else INCONCLUSIVE
    return join_parts(sparser, about)
