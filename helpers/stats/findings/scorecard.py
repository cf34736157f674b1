"""The scorecard: every finding assessed on a run and on the paper's own table, what each verdict speaks
for, the power each rule would need, the generated conclusions, and notebook 06's one call (``analyse``).

``FINDINGS`` holds the paper's findings in its order, one object each from ``finding1`` to ``finding5``;
adding a finding means adding its module and one object here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from helpers.base import store
from helpers.stats import between_models, matched_length, robustness
from helpers.stats.findings import deviations, finding4, finding5, finding5_earlier
from helpers.stats.findings.finding1 import FINDING1_SCALES, MathHasHighestEntropy
from helpers.stats.findings.finding2 import (
    ABOUT_BAND,
    MIN_MODELS_FOR_ARCHITECTURES,
    MIN_MODELS_PER_ARCHITECTURE,
    PAPER_SPARSITY_RATIO_GEOMETRIC,
    PRIMARY_SPARSITY,
    SPARSER_MINIMUM,
    SPARSITY_INTERPRETATION_KEY,
    DecodersAreSparser,
    sparsity_interpretation,
)
from helpers.stats.findings.finding3 import GPT2HasHighestActivation
from helpers.stats.findings.finding4 import (
    MIN_MODELS_FOR_ORDER,
    MODELS_TO_SUPPORT,
    MONOTONIC_MINIMUM,
    NoMonotonicParameterLink,
)
from helpers.stats.findings.rules import (
    ALPHA,
    DOES_NOT_HOLD,
    HOLDS,
    INCONCLUSIVE,
    MIN_MODELS_FOR_CATEGORIES,
    NOT_TESTABLE,
    Assessment,
    Finding,
    counted,
    significant,
)
from helpers.stats.robustness import StudyData
from helpers.study import reproduction
from helpers.study.outputs import FINDINGS_TABLES

FINDINGS: tuple[Finding, ...] = (
    MathHasHighestEntropy(),
    DecodersAreSparser(),
    GPT2HasHighestActivation(),
    NoMonotonicParameterLink(),
    finding5.ActivationSignatures(),
)
"""The paper's findings, in its order, and finding 5 (activation signatures)."""

# --- the scorecard and what the paper's own table says --------------------------------------------------


def assess_all(data: StudyData) -> list[Assessment]:
    """Every finding assessed on ``data``."""
    return [finding.assess(data) for finding in FINDINGS]


def population(data: StudyData) -> str:
    """What population a run's verdicts speak for: its models by architecture, kind of checkpoint and quantization
    (from the registry; a hub id or folder the registry does not describe counts as 'not described')."""
    from helpers.core.registry import known_models

    registry = known_models()
    parts = []
    for architecture in ("encoder", "decoder"):
        names = data.models.index[data.models["architecture"] == architecture]
        if not len(names):
            continue
        specs = [registry.get(str(data.models.loc[name, "model"])) for name in names]
        kinds = list(dict.fromkeys(spec.trained_as if spec and spec.trained_as else "not described" for spec in specs))
        quantized = sum(bool(spec and spec.quantized) for spec in specs)
        parts.append(
            f"{counted(len(names), architecture)} ({', '.join(kinds)}"
            + (f"; {quantized} de-quantized from 4-bit checkpoints" if quantized else "")
            + ")"
        )
    return (
        "these " + " and ".join(parts) + ", not language models in general; the paper's six were base models"
        if parts
        else ""
    )


def scorecard(run: list[Assessment], published: StudyData, run_data: StudyData | None = None) -> pd.DataFrame:
    """One row per finding: claim, unit, testable here (and why not), the evidence of this run and of the
    paper's table, the test and its statistic, the interval and the verdict."""
    rows = []
    for assessment in run:
        finding = assessment.finding
        paper = finding.paper_evidence(published, run_data)
        speaks_for = population(run_data) if run_data is not None else ""
        rows.append(
            {
                "finding": finding.number,
                "claim": finding.claim,
                "unit": finding.unit + (f"; the verdict speaks for {speaks_for}" if speaks_for else ""),
                "testable_here": assessment.testable_here,
                "evidence_this_run": assessment.evidence,
                "evidence_paper_table": f"{paper['statistic']}: {paper['value']} ({paper['interval']})",
                "test_and_statistic": assessment.test or "none: not testable here",
                "interval": assessment.interval or "none: not testable here",
                "verdict": assessment.verdict,
                "reason": assessment.reason,
            }
        )
    return pd.DataFrame(rows)


def findings_on_published_data(published: StudyData, run_data: StudyData | None = None) -> pd.DataFrame:
    """The same findings on the paper's own model x category table: its evidence and the framework's verdict."""
    rows = []
    for finding, assessment in zip(FINDINGS, assess_all(published), strict=True):
        rows.append(
            {"finding": finding.number, "claim": finding.claim, **finding.paper_evidence(published, run_data)}
            | {"testable_here": assessment.testable_here, "verdict": assessment.verdict}
        )
    return pd.DataFrame(rows)


def power_analysis(run: StudyData, published: StudyData) -> pd.DataFrame:
    """Replicates each finding's rule needs for 80% power (normal/t approximations of the rules' own tests).

    Findings 2 and 4 are about models, so their replicates are models, not prompts. The operating
    characteristics table (``helpers.stats.findings.calibration``) gives the rules' simulated power at this run's size.
    """
    from statsmodels.stats.power import TTestIndPower, TTestPower

    def ceil(value: float) -> str:
        return str(int(math.ceil(value))) if np.isfinite(value) else "n/a"

    def smallest_n(power: Any, effect: float, alpha: float, target: float) -> float:
        """The smallest n (per group, or of pairs) whose one-sided t test has ``target`` power at ``effect``:
        doubling, then bisection, on statsmodels' power function (its root finder fails past its bounds)."""
        if not (np.isfinite(effect) and effect > 0):
            return np.nan

        def enough(n: int) -> bool:
            return power.power(effect, n, alpha, alternative="larger") >= target

        high = 2
        while not enough(high):
            if high > 10**9:
                return np.inf
            high *= 2
        low = max(2, high // 2)
        while low < high:
            middle = (low + high) // 2
            low, high = (middle + 1, high) if not enough(middle) else (low, middle)
        return float(high)

    scales, others = len(FINDING1_SCALES), len(robustness.CATEGORIES) - 1
    testable = [r for r in MathHasHighestEntropy().comparisons(run).values() if not isinstance(r, str)]
    models = max(len(testable), 1)
    rows = [
        {
            "finding": 1,
            "effect": f"'holds': math 0.5 residual SD above each of the {others} other categories on both scales",
            "spread": "standardised (residual SD at matched length = 1); plain category means, so a lower bound",
            "unit": "prompts per category and model",
            "needed_at_80_percent_power": ceil(smallest_n(TTestIndPower(), 0.5, ALPHA, 0.8 ** (1 / (others * scales)))),
            "the_paper_had": "2",
        },
        {
            "finding": 1,
            "effect": "'does not hold': one category 0.5 residual SD above math on both scales",
            "spread": f"standardised; Holm's first step over {others} categories x {models} model(s)",
            "unit": "prompts per category and model",
            "needed_at_80_percent_power": ceil(
                smallest_n(TTestIndPower(), 0.5, ALPHA / (others * models), 0.8 ** (1 / scales))
            ),
            "the_paper_had": "2",
        },
    ]
    # finding 2: models per architecture, from the spread of log S_max between the paper's decoders
    means = between_models.model_means(published, "max_sparsity")
    sd = float(np.log(means.loc[means["architecture"] == "decoder", "mean"]).std(ddof=1))
    sparser = (math.log(PAPER_SPARSITY_RATIO_GEOMETRIC) - math.log(SPARSER_MINIMUM)) / sd
    k = 2
    while k < 1000 and (stats.t.ppf(1 - ALPHA, 2 * k - 2) + stats.norm.ppf(0.9)) * sd * math.sqrt(2 / k) > math.log(2):
        k += 1  # 'about': the 90% interval (two one-sided tests at 5%) inside a factor 2 either way w.p. 0.8
    rows += [
        {
            "finding": 2,
            "effect": f"'sparser': a true ratio of {significant(PAPER_SPARSITY_RATIO_GEOMETRIC)} (the paper's, "
            f"geometric means) against the minimum {SPARSER_MINIMUM}",
            "spread": f"SD of log S_max between the paper's decoders = {significant(sd, 3)}",
            "unit": "models per architecture",
            "needed_at_80_percent_power": ceil(smallest_n(TTestIndPower(), sparser, ALPHA, 0.8)),
            "the_paper_had": "1 encoder, 5 decoders",
        },
        {
            "finding": 2,
            "effect": f"'about': the 90% interval inside {significant(ABOUT_BAND[0])}-{significant(ABOUT_BAND[1])} "
            f"when the ratio is {significant(PAPER_SPARSITY_RATIO_GEOMETRIC)}",
            "spread": f"SD of log S_max between the paper's decoders = {significant(sd, 3)}",
            "unit": "models per architecture",
            "needed_at_80_percent_power": str(k),
            "the_paper_had": "1 encoder, 5 decoders",
        },
    ]
    # finding 3: the paper published no prompt-level A_f, so only the rule's minimum effect can be used
    rivals = 5
    rows.append(
        {
            "finding": 3,
            "effect": "the rule's minimum: GPT-2 above each of 5 models by d_z = 0.2 (the paper's margin cannot be "
            "put on a prompt-level scale)",
            "spread": "standardised (SD of the paired differences = 1)",
            "unit": "shared prompts",
            "needed_at_80_percent_power": ceil(smallest_n(TTestPower(), 0.2, ALPHA, 0.8 ** (1 / rivals))),
            "the_paper_had": "24 (12 cells of 2)",
        }
    )
    # finding 4: models; its own rule simulated (finding4.models_for_power), not an approximation
    simulated = f"the rule simulated ({finding4.POWER_DRAWS:,} runs per number of models), Fisher z interval"
    rows += [
        {
            "finding": 4,
            "effect": f"'holds' possible at all: the interval can lie inside +-{MONOTONIC_MINIMUM} (rho = 0 exactly)",
            "spread": "Fisher z, Bonett-Wright variance",
            "unit": "models",
            "needed_at_80_percent_power": str(MODELS_TO_SUPPORT),
            "the_paper_had": str(len(published.models)),
        },
        {
            "finding": 4,
            "effect": f"'holds' (no link): the interval inside +-{MONOTONIC_MINIMUM} when rho = {finding4.NO_LINK:g}",
            "spread": simulated,
            "unit": "models",
            "needed_at_80_percent_power": str(finding4.models_for_power(HOLDS, finding4.NO_LINK, 0.8)),
            "the_paper_had": str(len(published.models)),
        },
        {
            "finding": 4,
            "effect": f"'does not hold': the interval above {MONOTONIC_MINIMUM} when rho = {finding4.STRONG_LINK:g}",
            "spread": simulated,
            "unit": "models",
            "needed_at_80_percent_power": str(finding4.models_for_power(DOES_NOT_HOLD, finding4.STRONG_LINK, 0.8)),
            "the_paper_had": str(len(published.models)),
        },
    ]
    return pd.DataFrame(rows)


def conclusions(run: list[Assessment], published: StudyData, run_data: StudyData | None = None) -> str:
    """A short paragraph, generated from the verdicts, on what can and cannot be concluded."""
    on_paper = {a.finding.number: a for a in assess_all(published)}
    decided = [a for a in run if a.verdict in (HOLDS, DOES_NOT_HOLD)]
    open_ = [a for a in run if a.verdict == INCONCLUSIVE]
    untestable = [a for a in run if a.verdict == NOT_TESTABLE]
    sentences = []
    for a in decided:
        sentences.append(
            f"Finding {a.finding.number} ({a.finding.claim[0].lower() + a.finding.claim[1:]}) "
            f"{a.verdict} in this run: {a.evidence}."
        )
    for a in open_:
        sentences.append(f"Finding {a.finding.number} is inconclusive: {a.evidence}.")
    if untestable:
        sentences.append(
            "Not testable here: "
            + "; ".join(f"finding {a.finding.number} ({a.why_not_testable})" for a in untestable)
            + ". What these models show instead is a fact about them, not about architectures or model size."
        )
    speaks_for = population(run_data) if run_data is not None else ""
    if speaks_for:
        sentences.append(f"The verdicts speak for {speaks_for}.")
    paper = [f"finding {n}: {a.verdict}" for n, a in on_paper.items()]
    sentences.append(
        "The paper's own table (means of 2 prompts per model and category, without token counts, from one encoder "
        "and five decoders), under the same rules, gives " + "; ".join(paper) + "."
    )
    return " ".join(sentences)


README_START, README_END = "<!-- scorecard:start -->", "<!-- scorecard:end -->"
README_COLUMNS = ("finding", "claim", "unit", "testable_here", "evidence_this_run", "evidence_paper_table", "verdict")


def quote_in_readme(
    scorecard: pd.DataFrame, paragraph: str, readme: Path, source: str, check: reproduction.Check | None = None
) -> bool:
    """Replace the README's scorecard section (between its markers) with the scorecard table and ``paragraph``;
    False if the markers are missing (``quote_section_in_readme``)."""
    body = store.markdown_table(scorecard[list(README_COLUMNS)])
    note = f"<!-- generated by {source} from paper/tables/findings_scorecard.csv; do not edit by hand -->"
    return quote_section_in_readme(f"{note}\n\n{body}\n\n{paragraph}", readme, check)


def quote_section_in_readme(section: str, readme: Path, check: reproduction.Check | None = None) -> bool:
    """Replace the README's scorecard section (between its markers) with ``section``, a generated text naming its
    maker; False if the markers are missing.

    With a ``check``, a section that is already ``section`` is left as it is.
    """
    text = readme.read_text(encoding="utf-8")
    if README_START not in text or README_END not in text:
        return False
    section = f"\n{section.strip()}\n\n"
    markers = (README_START, README_END)
    comparison = check.section("README.md scorecard", readme, markers, section) if check is not None else None
    if comparison is None or not comparison.reproduced:
        store.write_between_markers(readme, README_START, README_END, section)
    if check is not None and comparison is not None:
        check.add(comparison, [readme])
    return True


# --- notebook 06's one call ------------------------------------------------------------------------------


PAIR_METRICS = (
    "final_activation",
    "final_activation_pre_norm",
    "attention_entropy",
    "attention_entropy_normalized",
    "max_sparsity",
    "max_hoyer_sparsity",
)


@dataclass
class FindingsAnalysis:
    """Everything notebook 06 shows: the assessments, their tables, and the generated conclusions."""

    run: StudyData
    published: StudyData
    assessments: list[Assessment]
    tables: dict[str, pd.DataFrame]
    conclusions: str


def analyse(
    metrics: pd.DataFrame,
    published_cells: pd.DataFrame,
    samples: int,
    seed: int,
    layers: pd.DataFrame | None = None,
    display_names: dict[str, str] | None = None,
    calibration_runs: int = 100,
    signatures: pd.DataFrame | None = None,
    signatures_earlier: pd.DataFrame | None = None,
) -> FindingsAnalysis:
    """Assess every finding on a run's tidy per-prompt table and on the paper's table; make every output table.

    ``metrics``: finite rows only (``tables.finite_only``); ``samples``: bootstrap draws (at least
    ``robustness.MIN_BOOTSTRAP_SAMPLES``), one weight matrix shared by every bootstrap statistic; ``layers``:
    the run's long per-layer table (for ``sparsity_interpretation``), with ``display_names`` (registry name ->
    display name); ``calibration_runs``: simulated runs per finding-1 scenario in the operating characteristics;
    ``signatures``: finding 5's per-model tests (notebook 08, ``signatures``), if the run has them;
    ``signatures_earlier``: the same under finding 5's earlier rule (for the deviations log).
    """
    if samples < robustness.MIN_BOOTSTRAP_SAMPLES:
        raise ValueError(f"samples={samples}: at least {robustness.MIN_BOOTSTRAP_SAMPLES} bootstrap draws are needed")
    cached = {finding5.CACHE_KEY: signatures, finding5_earlier.CACHE_KEY: signatures_earlier}
    return _analyse(metrics, published_cells, samples, seed, layers, display_names or {}, calibration_runs, cached)


@robustness.single_threaded_blas
def _analyse(
    metrics: pd.DataFrame,
    published_cells: pd.DataFrame,
    samples: int,
    seed: int,
    layers: pd.DataFrame | None,
    display_names: dict[str, str],
    calibration_runs: int,
    cached: dict[str, pd.DataFrame | None],
) -> FindingsAnalysis:
    from helpers.stats.findings import calibration

    run = StudyData.from_metrics(store.at_measurement_precision(metrics), samples, seed)
    run.cache.update({key: table for key, table in cached.items() if table is not None})  # notebook 08's tests
    interpretation = sparsity_interpretation(layers, display_names) if layers is not None else pd.DataFrame()
    run.cache[SPARSITY_INTERPRETATION_KEY] = interpretation  # finding 2's evidence says what S_max measures
    published = StudyData.from_published(published_cells, samples, seed)
    assessments = assess_all(run)
    tables: dict[str, pd.DataFrame] = {
        "findings_scorecard": scorecard(assessments, published, run),
        "findings_on_published_data": findings_on_published_data(published, run),
        "power_analysis": power_analysis(run, published),
    }
    for assessment in assessments:
        tables |= assessment.tables
    if "sparsity_variants" not in tables:
        tables["sparsity_variants"] = DecodersAreSparser().variants(run)
    for name, finding in (
        ("finding1_per_model", FINDINGS[0]),
        ("finding1_categories", FINDINGS[0]),
        ("finding1_length_contrasts", FINDINGS[0]),
        ("finding3_gpt2_contrasts", FINDINGS[2]),
    ):
        if name not in tables:
            tables[name] = pd.DataFrame({"note": [f"not testable here: {finding.why_not_testable(run)}"]})
    tables["sparsity_interpretation"] = interpretation
    testable = [r for r in MathHasHighestEntropy().comparisons(run).values() if not isinstance(r, str)]
    counts = run.models["architecture"].value_counts()
    encoders, decoders = int(counts.get("encoder", 0)), int(counts.get("decoder", 0))
    if min(encoders, decoders) < MIN_MODELS_PER_ARCHITECTURE or encoders + decoders < MIN_MODELS_FOR_ARCHITECTURES:
        encoders, decoders = MIN_MODELS_PER_ARCHITECTURE, MIN_MODELS_FOR_ARCHITECTURES - MIN_MODELS_PER_ARCHITECTURE
    tables["operating_characteristics"] = calibration.operating_characteristics(
        finding1_models=max(len(testable), MIN_MODELS_FOR_CATEGORIES),
        encoders=encoders,
        decoders=decoders,
        size_models=max(run.models["n_parameters"].nunique(), MIN_MODELS_FOR_ORDER),
        seeds=calibration_runs,
    )
    tables["natural_experiments"] = natural_experiments(run)
    tables["deviations"] = deviations.deviations_table(run, FINDINGS)
    tables["length_models"] = matched_length.length_models(run) if "n_tokens" in run.table else pd.DataFrame()
    tables["model_pair_contrasts"] = robustness.model_pair_contrasts(run, PAIR_METRICS)
    tables["cell_intervals"] = robustness.cell_intervals(
        run, tuple(dict.fromkeys(("final_activation", "attention_entropy", PRIMARY_SPARSITY, "max_hoyer_sparsity")))
    )
    tables["top10_stability"] = pd.concat(
        [
            robustness.top10_stability(run, "final_activation"),
            robustness.top10_stability(run, "attention_entropy"),
            robustness.top10_stability(run, "max_sparsity", lowest=True),
        ],
        ignore_index=True,
    )
    for name, table in tables.items():
        if table.empty:
            tables[name] = pd.DataFrame({"note": ["no rows: the run has too few models or prompts"]})
    tables = {name: tables[name] for name in FINDINGS_TABLES}
    return FindingsAnalysis(run, published, assessments, tables, conclusions(assessments, published, run))


def natural_experiments(data: StudyData) -> pd.DataFrame:
    """The registry's natural experiments (``registry.NATURAL_EXPERIMENTS``) present in the run: per pair and
    metric, the paired contrast of the two models on their shared prompts (facts about them, not findings)."""
    from helpers.core.registry import NATURAL_EXPERIMENTS

    by_name = {str(row.model): name for name, row in data.models.iterrows()}
    rows = []
    for first, second, differs in NATURAL_EXPERIMENTS:
        if first not in by_name or second not in by_name:
            continue
        for metric in NATURAL_EXPERIMENT_METRICS:
            if metric not in data.table:
                continue
            contrast = robustness.paired_contrast(data, metric, by_name[first], by_name[second])
            low, high = robustness.percentile_interval(contrast["ratio_draws"])
            rows.append(
                {
                    "pair": f"{by_name[first]} / {by_name[second]}",
                    "what_differs": differs,
                    "metric": metric,
                    "mean_first": contrast["mean_first"],
                    "mean_second": contrast["mean_second"],
                    "ratio": contrast["ratio"],
                    "ratio_low": low,
                    "ratio_high": high,
                    "share_first_higher": contrast["share_first_higher"],
                    "wilcoxon_p": contrast["wilcoxon_p"],
                }
            )
    return pd.DataFrame(rows)


NATURAL_EXPERIMENT_METRICS = (
    "final_activation",
    "attention_entropy",
    "attention_entropy_normalized",
    "max_sparsity",
    "max_sparsity_no_embedding",
    "max_hoyer_sparsity",
)
