"""The findings' cards, the abstract and the README's verdict table, counted from a run's committed tables.

A card says a finding's verdict, then one sentence counted from the per-model results ("does not hold in 6 of
8 models, inconclusive in 2 (SmolLM2-135M, Gemma3-270M)"), what the test showed in plain words, and this run's
key number beside the paper's. Every number is read from the run's tables (``paper/tables[/<run>]/*.csv``: the
scorecard, ``finding1_per_model``, ``sparsity_variants``, ``signature_verdicts``, ...) or the paper's published
tables (data/reference/), never parsed out of a sentence; each is written to at most 3 significant digits.
Findings without a card of their own here get one from the scorecard row (verdict, evidence quoted whole).
"""

from __future__ import annotations

import html
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from helpers.report.counting import count_verdicts, plural
from helpers.stats.findings.rules import ALPHA, DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, NOT_TESTABLE, significant

MATH = "mathematical_reasoning"
RATIO_INTERVAL_LEVEL = f"{1 - 2 * ALPHA:.0%}"
"""The level of finding 2's interval of the decoder / encoder ratio (two one-sided permutation tests at ALPHA)."""
VERDICT_ORDER = (HOLDS, DOES_NOT_HOLD, INCONCLUSIVE, NOT_TESTABLE)
"""The order in which the abstract tallies the findings' verdicts."""


@dataclass(frozen=True)
class Card:
    """What a reader sees of one finding: the answer first, in counts and plain words."""

    number: int
    claim: str
    verdict: str
    counts: str = ""
    """One sentence counted from the per-model verdicts, or why the finding is not testable."""
    test: str = ""
    """What the test showed, in plain words (one sentence; may be empty)."""
    ours: str = ""
    """This run's key number, saying what it is."""
    paper: str = ""
    """The paper's number beside it, saying what it is."""
    key_number: str = ""
    """The key number in a few words, for the README's table."""
    models: str = ""
    """The models behind the verdict, in a few words, for the README's table."""
    figure: str = ""
    """The finding's key figure (a name in figures/), or '' when it has none."""
    counted: str = ""
    """The verdicts counted over models ('does not hold in 6 of 8 models, ...'), when the rule judges each model."""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def sentences(self) -> str:
        """The card's text after the verdict: counts, then the test."""
        return " ".join(part for part in (self.counts, self.test) if part)


# --- reading the tables -------------------------------------------------------------------------------------------


def read_tables(folder: Path) -> dict[str, pd.DataFrame]:
    """Every CSV table of a run's table folder, by name (a table that is only a note counts as absent)."""
    tables = {}
    for path in sorted(Path(folder).glob("*.csv")):
        try:
            table = pd.read_csv(path, keep_default_na=True)
        except (OSError, ValueError, pd.errors.ParserError):
            continue
        if list(table.columns) != ["note"]:
            tables[path.stem] = table
    return tables


def _published(slug: str) -> pd.DataFrame | None:
    from helpers.study.reference import load_published

    try:
        return load_published(slug)
    except (OSError, ValueError, KeyError):
        return None


# --- counting models ------------------------------------------------------------------------------------------------


def _sentence(text: str) -> str:
    text = " ".join(str(text).split())
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text[:2] != text[:2].upper() else text


def _category(name: str) -> str:
    return str(name).replace("_", " ")


# --- one card per finding -------------------------------------------------------------------------------------------


def _math_rank_of_paper() -> tuple[list[int], int] | None:
    """Math's rank by mean H_att in each of the paper's models (its TABLE 1, 2 prompts a cell), and how many
    categories."""
    cells = _published("complete_analysis_results")
    if cells is None or MATH not in set(cells["Category"]):
        return None
    ranks = []
    for _, model in cells.groupby("Model", sort=False):
        ranked = model.set_index("Category")["Attention_Entropy"].rank(ascending=False, method="min")
        ranks.append(int(ranked[MATH]))
    return ranks, int(cells["Category"].nunique())


def _finding1(row: pd.Series, tables: Mapping[str, pd.DataFrame]) -> Card:
    per_model = tables.get("finding1_per_model")
    card = _from_scorecard(row, tables)
    if per_model is None or "verdict" not in per_model or card.verdict == NOT_TESTABLE:
        return Card(**{**card.__dict__, "figure": "finding1_categories"})
    n = len(per_model)
    categories = tables.get("finding1_categories")
    n_categories = int(categories["category"].nunique()) if categories is not None and "category" in categories else 0
    of = f" of {n_categories}" if n_categories else ""
    test = []
    if "p_some_category_above_holm" in per_model:
        above = int((per_model["p_some_category_above_holm"] < ALPHA).sum())
        if above:
            test.append(
                f"in {above}, some category's attention entropy is significantly above math's at matched prompt length"
            )
    if "p_math_highest" in per_model:
        highest = int((per_model["p_math_highest"] < ALPHA).sum())
        if highest:
            test.append(f"in {highest}, math's is significantly above every other category's")
    ours = key = ""
    if "math_rank" in per_model:
        ranks = per_model["math_rank"].dropna().astype(int)
        if len(ranks):
            low, high, median = int(ranks.min()), int(ranks.max()), float(ranks.median())
            spread = f"{low}" if low == high else f"{low} to {high}"
            first = int((ranks == 1).sum())
            ours = (
                f"math's median rank at matched prompt length {significant(median)}{of} (1 = highest; {spread} "
                f"across models, first in {first} of {n})"
            )
            key = f"math's median rank {significant(median)}{of} at matched length, first in {first} of {n}"
    paper = ""
    published = _math_rank_of_paper()
    if published:
        ranks_paper, total = published
        same = len(set(ranks_paper)) == 1
        where = (
            f"{ranks_paper[0]} of {total} in each of its {len(ranks_paper)} models"
            if same
            else f"{min(ranks_paper)} to {max(ranks_paper)} of {total} across its {len(ranks_paper)} models"
        )
        paper = f"math ranks {where} (raw means of 2 prompts, length not matched)"
        key += f" (the paper: first in {sum(r == 1 for r in ranks_paper)} of {len(ranks_paper)})" if key else ""
    return Card(
        card.number,
        card.claim,
        card.verdict,
        counts=_sentence(count_verdicts(per_model) + (": " + "; ".join(test) if test else "")),
        ours=ours,
        paper=paper,
        key_number=key,
        models=count_verdicts(per_model),
        figure="finding1_categories",
        counted=count_verdicts(per_model),
    )


def _finding2(row: pd.Series, tables: Mapping[str, pd.DataFrame]) -> Card:
    card = _from_scorecard(row, tables)
    variants = tables.get("sparsity_variants")
    if variants is None or "comparison" not in variants or card.verdict == NOT_TESTABLE:
        return Card(**{**card.__dict__, "figure": "sparsity_variants" if variants is not None else ""})
    overall = variants[variants["comparison"].astype(str).str.startswith("decoders")]
    primary = overall[overall["primary"].astype(str) == "True"] if "primary" in overall else overall.iloc[:1]
    if primary.empty:
        return card
    first = primary.iloc[0]
    pairs = variants[(variants["variant"] == first["variant"]) & ~variants.index.isin(overall.index)]
    decoder_names = {str(c).split(" / ")[0] for c in pairs["comparison"]}
    decoders = len(decoder_names)
    encoders = len({str(c).split(" / ")[-1] for c in pairs["comparison"]})
    level = RATIO_INTERVAL_LEVEL
    interval = f"{significant(first['low'])} to {significant(first['high'])}"
    ratio = f"{significant(first['ratio'])}x ({level} interval {interval})"
    same = int((overall["verdict_sparser"] == first["verdict_sparser"]).sum())
    from helpers.stats.findings import finding2

    paper_ratio = getattr(finding2, "PAPER_SPARSITY_RATIO", None)
    about = f"about {paper_ratio:.0f}x" if paper_ratio is not None else "about the paper's ratio"
    counts = (
        f"'sparser' {first['verdict_sparser']} and '{about}' {first['verdict_about']} with "
        f"{plural(decoders, 'decoder')} and {plural(encoders, 'encoder')} as replicates; {same} of {len(overall)} "
        "sparsity measures give the same 'sparser' verdict"
    )
    paper = ""
    reference = _published("model_summary")
    if paper_ratio is not None:
        made = ""
        if reference is not None and "Architecture" in reference:
            kinds = reference["Architecture"].value_counts()
            encoders_paper, decoders_paper = int(kinds.get("encoder", 0)), int(kinds.get("decoder", 0))
            made = f", {plural(encoders_paper, 'encoder')} and {plural(decoders_paper, 'decoder')}"
        paper = f"decoder / encoder ratio of mean S_max: {significant(paper_ratio)}x (its table{made})"
    return Card(
        card.number,
        card.claim,
        card.verdict,
        counts=_sentence(counts),
        ours=f"decoders' S_max (largest share of near-zero activations in a layer) is {ratio} the encoders'"
        + _where_s_max_sits(tables, overall, decoder_names),
        paper=paper,
        key_number=f"decoder / encoder S_max {ratio}"
        + (f" (the paper: {significant(paper_ratio)}x)" if paper_ratio is not None else ""),
        models=f"{plural(decoders, 'decoder')} and {plural(encoders, 'encoder')}, models as replicates",
        figure="sparsity_variants",
    )


def _where_s_max_sits(tables: Mapping[str, pd.DataFrame], overall: pd.DataFrame, decoders: set[str]) -> str:
    """'; in 94-100% of decoder prompts that layer is the embedding output, and without it the ratio is 0.554x
    (90% interval ...)' from the committed ``sparsity_interpretation`` and ``sparsity_variants`` ('' where either
    lacks it)."""
    from helpers.stats.findings import finding2

    where = tables.get("sparsity_interpretation")
    without = overall[overall["variant"] == finding2.NO_EMBEDDING_SPARSITY]
    if where is None or not {"model", "share_s_max_at_embedding"} <= set(where.columns) or without.empty:
        return ""
    shares = where[where["model"].isin(decoders)]["share_s_max_at_embedding"]
    if shares.empty:
        return ""
    ratio = without.iloc[0]
    interval = f"{RATIO_INTERVAL_LEVEL} interval {significant(ratio['low'])} to {significant(ratio['high'])}"
    return (
        f"; in {finding2.share_span(shares)} of decoder prompts that layer is the embedding output, and without it "
        f"the ratio is {significant(ratio['ratio'])}x ({interval})"
    )


def _finding3(row: pd.Series, tables: Mapping[str, pd.DataFrame]) -> Card:
    card = _from_scorecard(row, tables)
    contrasts = tables.get("finding3_gpt2_contrasts")
    if card.verdict == NOT_TESTABLE or contrasts is None or "p_gpt2_above" not in contrasts:
        return card
    n = len(contrasts)
    above = int((contrasts["p_gpt2_above"] < ALPHA).sum())
    counts = f"GPT-2's A_f is significantly above {above} of the {plural(n, 'other model')} on shared prompts"
    return Card(**{**card.__dict__, "counts": _sentence(counts), "models": f"GPT-2 and {plural(n, 'other model')}"})


def _finding5(row: pd.Series, tables: Mapping[str, pd.DataFrame]) -> Card:
    from helpers.stats.findings import finding5

    card = _from_scorecard(row, tables)
    verdicts = tables.get("signature_verdicts")
    if verdicts is None or "verdict" not in verdicts or card.verdict == NOT_TESTABLE:
        return Card(**{**card.__dict__, "figure": "signature_probe_depth"})
    n = len(verdicts)
    test, ours, key = "", "", ""
    if {"gain_beyond_words", "lexical_accuracy", "layer0_accuracy"} <= set(verdicts.columns):
        test = finding5.words_and_layers(verdicts)
        spread = finding5.points(verdicts["gain_beyond_words"])
        ours = f"accuracy points the later layers add beyond the words: {spread} across {plural(n, 'model')}"
        key = finding5.key_number(verdicts)
    return Card(
        card.number,
        card.claim,
        card.verdict,
        counts=_sentence(count_verdicts(verdicts)),
        test=test,
        ours=ours,
        paper=card.paper,
        key_number=key,
        models=count_verdicts(verdicts),
        figure="signature_probe_depth",
        counted=count_verdicts(verdicts),
    )


def _from_scorecard(row: pd.Series, tables: Mapping[str, pd.DataFrame]) -> Card:
    """A card from the scorecard row alone: the verdict, why not testable or the evidence quoted whole, and the
    paper's statistic from ``findings_on_published_data``."""
    number = int(row["finding"])
    verdict = str(row.get("verdict", ""))
    testable = str(row.get("testable_here", "yes") or "yes")
    counts = ""
    if verdict == NOT_TESTABLE or testable.lower().startswith("no"):
        counts = _sentence("not testable here: " + (testable.split(":", 1)[1].strip() if ":" in testable else testable))
    else:
        counts = _sentence(str(row.get("evidence_this_run", "") or ""))
    paper = ""
    published = tables.get("findings_on_published_data")
    if published is not None and "finding" in published:
        match = published[published["finding"].astype(str) == str(number)]
        if len(match):
            first = match.fillna("").iloc[0]
            statistic, value, interval = (str(first.get(c, "")) for c in ("statistic", "value", "interval"))
            paper = value if statistic in ("", "none") else f"{statistic}: {value}"
            if statistic not in ("", "none") and interval and not interval.startswith("no "):
                paper += f" ({interval})"
    key = counts.rstrip(".") if len(counts) <= 120 else ""
    if verdict == NOT_TESTABLE:
        key = counts.removeprefix("Not testable here: ").rstrip(".")
    unit = str(row.get("unit", "") or "").split(";")[0].strip()
    models = ""
    if verdict != NOT_TESTABLE and unit.startswith("models"):
        n = n_models(tables)
        models = f"{plural(n, 'model')} as replicates" if n else "models as replicates"
    return Card(number, str(row.get("claim", "")), verdict, counts=counts, paper=paper, key_number=key, models=models)


def _finding4(row: pd.Series, tables: Mapping[str, pd.DataFrame]) -> Card:
    """Finding 4's card; its key number is the evidence's statistic before the parenthesis that says what the
    rule needs ('Spearman rho(parameters, mean A_f) = 0.62 over 9 models')."""
    card = _from_scorecard(row, tables)
    if card.verdict == NOT_TESTABLE or card.key_number:
        return card
    statistic = card.counts.split(" (", 1)[0].rstrip(".")
    return Card(**{**card.__dict__, "key_number": statistic if len(statistic) <= 120 else ""})


def n_models(tables: Mapping[str, pd.DataFrame]) -> int:
    """How many models the run's per-model tables have (0 when none says)."""
    for name in ("finding1_per_model", "signature_verdicts", "sparsity_interpretation", "model_summary"):
        table = tables.get(name)
        if table is not None and len(table):
            return len(table)
    return 0


CARDS: dict[int, Callable[[pd.Series, Mapping[str, pd.DataFrame]], Card]] = {
    1: _finding1,
    2: _finding2,
    3: _finding3,
    4: _finding4,
    5: _finding5,
}
"""A finding's card maker by its number; any other finding gets ``_from_scorecard``."""


def cards(tables: Mapping[str, pd.DataFrame]) -> list[Card]:
    """One card per row of the run's scorecard, in its order; [] when the run has no scorecard."""
    scorecard = tables.get("findings_scorecard")
    if scorecard is None or not {"finding", "claim", "verdict"} <= set(scorecard.columns):
        return []
    result = []
    for _, row in scorecard.iterrows():
        make = CARDS.get(int(row["finding"]), _from_scorecard)
        result.append(make(row, tables))
    return result


# --- what cards make: the front page's list, the abstract, the README's table --------------------------------------


def verdict_class(verdict: str) -> str:
    import re

    return "verdict-" + re.sub(r"[^a-z0-9]+", "-", str(verdict).lower()).strip("-")


def short_claim(claim: str) -> str:
    """A claim without its trailing symbol definitions, as a card's title."""
    return str(claim).rstrip(". ")


def cards_html(found: list[Card]) -> str:
    """The cards as a list: verdict first, the claim, the counted sentence, ours beside the paper's. Every text is
    escaped here."""
    items = []
    for card in found:
        numbers = ""
        if card.ours or card.paper:
            parts = []
            if card.ours:
                parts.append(f"<span class='ours'><b>This run:</b> {html.escape(card.ours)}</span>")
            if card.paper:
                parts.append(f"<span class='paper'><b>The paper:</b> {html.escape(card.paper)}</span>")
            numbers = f"<div class='numbers'>{''.join(parts)}</div>"
        items.append(
            f'<li class="finding {verdict_class(card.verdict)}" id="finding-{card.number}">'
            f'<span class="verdict">{html.escape(card.verdict)}</span> '
            f"<b>Finding {card.number}: {html.escape(short_claim(card.claim))}.</b> "
            f"<span class='counts'>{html.escape(card.sentences)}</span>{numbers}</li>"
        )
    return f'<ul class="findings">{"".join(items)}</ul>'


def _verdict_phrase(card: Card) -> str:
    return {
        HOLDS: "holds",
        DOES_NOT_HOLD: "does not hold",
        INCONCLUSIVE: "is inconclusive",
        NOT_TESTABLE: "could not be tested",
    }.get(card.verdict, card.verdict)


def study_size(tables: Mapping[str, pd.DataFrame]) -> str:
    """'8 pretrained models (4 encoders, 4 decoders) on 540 prompts in 12 categories', from the run's tables."""
    per_model = tables.get("finding1_per_model")
    categories = tables.get("finding1_categories")
    variants = tables.get("sparsity_variants")
    parts = []
    if per_model is not None and "model" in per_model:
        n = len(per_model)
        kinds = ""
        if variants is not None and "comparison" in variants:
            pairs = variants[~variants["comparison"].astype(str).str.startswith("decoders")]
            if "variant" in pairs and len(pairs):
                pairs = pairs[pairs["variant"] == pairs["variant"].iloc[0]]
            decoders = len({str(c).split(" / ")[0] for c in pairs["comparison"]})
            encoders = len({str(c).split(" / ")[-1] for c in pairs["comparison"]})
            if decoders and encoders and decoders + encoders == n:
                kinds = f" ({plural(encoders, 'encoder')}, {plural(decoders, 'decoder')})"
        parts.append(plural(n, "model") + kinds)
        if "prompts" in per_model and per_model["prompts"].notna().any():
            prompts = int(per_model["prompts"].max())
            text = plural(prompts, "prompt")
            if categories is not None and "category" in categories:
                n_categories = int(categories["category"].nunique())
                text += f" in {n_categories} {'category' if n_categories == 1 else 'categories'}"
            parts.append(text)
    return " and ".join(parts)


def abstract(found: list[Card], tables: Mapping[str, pd.DataFrame]) -> str:
    """One paragraph, generated from the verdicts: what was tested on what, then each finding's verdict with its
    count."""
    if not found:
        return ""
    size = study_size(tables)
    opening = (
        "We re-tested the findings of Neural Activation Patterns Across Language Model Architectures "
        "(arXiv 2605.15436)" + (f" on {size}" if size else "") + ", each at its own unit of analysis."
    )
    sentences = [opening]
    for card in found:
        claim = f"Finding {card.number} ({_lower_first(short_claim(card.claim))})"
        detail = card.counts.rstrip(".")
        if card.verdict == NOT_TESTABLE:
            detail = detail.removeprefix("Not testable here: ")
        if card.counted:  # counted over models: the run's verdict, then the count
            sentences.append(f"{claim} {_verdict_phrase(card)}; by model: {card.counted}.")
        else:
            sentences.append(f"{claim} {_verdict_phrase(card)}" + (f": {detail}." if detail else "."))
    counts = pd.Series([card.verdict for card in found]).value_counts()
    order = [v for v in (HOLDS, DOES_NOT_HOLD, INCONCLUSIVE, NOT_TESTABLE) if v in counts] + [
        v for v in counts.index if v not in VERDICT_ORDER
    ]
    sentences.append("In all: " + ", ".join(f"{counts[v]} {v}" for v in order) + ".")
    return " ".join(sentences)


def verdict_table_markdown(found: list[Card]) -> str:
    """The README's table: finding | verdict | key number | models; one row per finding, cells without pipes."""

    def cell(text: str) -> str:
        return " ".join(str(text).replace("|", "/").split()) or "–"

    rows = ["| finding | verdict | key number | models |", "|---|---|---|---|"]
    for card in found:
        title = f"{card.number}. {short_claim(card.claim)}"
        rows.append(f"| {cell(title)} | **{cell(card.verdict)}** | {cell(card.key_number)} | {cell(card.models)} |")
    return "\n".join(rows)


README_SOURCES = ("findings_scorecard", "findings_on_published_data", "finding1_per_model", "sparsity_variants",
                  "signature_verdicts")  # fmt: skip
"""The tables the README's summary counts from (besides the paper's published tables in data/reference/)."""


def readme_summary(folder: Path, source: str) -> str:
    """The README's generated section: the verdict table, then the abstract, from the run's tables in ``folder``
    (``source``: the notebook that writes it, named in the section's first line)."""
    tables = read_tables(folder)
    found = cards(tables)
    names = ", ".join(README_SOURCES)
    note = f"<!-- generated by {source} from paper/tables/ ({names}); do not edit by hand -->"
    if not found:
        return f"{note}\n\nNo findings scorecard yet: run `make reproduce`."
    paragraph = textwrap.fill(abstract(found, tables), width=104, break_long_words=False, break_on_hyphens=False)
    return f"{note}\n\n{verdict_table_markdown(found)}\n\n{paragraph}"


def show_cards(folder: Path) -> Any:
    """The run's cards (``cards_html``) for a notebook cell, from the tables in ``folder``."""
    from IPython.display import HTML

    found = cards(read_tables(folder))
    return HTML(cards_html(found) if found else "<p><i>No findings scorecard in this run yet.</i></p>")
