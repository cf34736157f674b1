"""The findings' cards, the abstract and the README's verdict table (helpers.report.cards): counted from the tables,
in plain words, numbers to at most 3 significant digits, nothing cut."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from helpers.base import paths
from helpers.report import cards
from helpers.stats.findings import finding2

MODELS = ["MiniLM-L6", "all-mpnet-base-v2", "SmolLM2-135M", "Gemma3-270M"]


def scorecard(verdicts: dict[int, str], testable: dict[int, str] | None = None) -> pd.DataFrame:
    claims = {
        1: "Mathematical reasoning prompts have the highest attention entropy H_att",
        2: "Decoders are sparser than encoders, about 7x",
        3: "GPT-2 has the highest final activation A_f (signed mean) of the models",
        4: "There is no monotonic link between parameter count and final activation",
        5: "Prompt categories have activation signatures beyond surface features",
    }
    rows = []
    for number, verdict in verdicts.items():
        rows.append(
            {
                "finding": number,
                "claim": claims[number],
                "unit": "models; the verdict speaks for these" if number in (2, 4) else "prompts within each model",
                "testable_here": (testable or {}).get(number, "yes"),
                "evidence_this_run": "Spearman rho(parameters, mean A_f) = 0.712 over 4 models" if number == 4 else "x",
                "verdict": verdict,
            }
        )
    return pd.DataFrame(rows)


def study_tables() -> dict[str, pd.DataFrame]:
    per_model = pd.DataFrame(
        {
            "model": MODELS,
            "prompts": [540] * 4,
            "math_rank": [9, 11, 1, 6],
            "p_math_highest": [1.0, 1.0, 0.25, 0.99],
            "p_some_category_above_holm": [0.0036, 0.01, 1.0, 1.0],
            "verdict": ["does not hold", "does not hold", "inconclusive", "inconclusive"],
        }
    )
    categories = pd.DataFrame({"model": "MiniLM-L6", "category": [f"c{i}" for i in range(12)]})
    pairs = [f"{d} / {e}" for d in MODELS[2:] for e in MODELS[:2]]
    variants = pd.DataFrame(
        {
            "variant": ["max_sparsity"] * 5 + ["hoyer"],
            "primary": [True] * 5 + [False],
            "comparison": [
                *pairs,
                "decoders / encoders (models as replicates)",
                "decoders / encoders (models as replicates)",
            ],
            "ratio": [1.9, 2.2, 0.3, 0.35, 3.4731, 1.4],
            "low": [1.8, 2.1, 0.29, 0.33, 0.34781, 0.67],
            "high": [2.0, 2.3, 0.31, 0.36, 26.8012, 2.48],
            "verdict_sparser": ["", "", "", "", "inconclusive", "inconclusive"],
            "verdict_about": ["", "", "", "", "inconclusive", "inconclusive"],
        }
    )
    signatures = pd.DataFrame({"model": MODELS, "verdict": ["holds"] * 4})
    published = pd.DataFrame(
        {
            "finding": [3, 4],
            "statistic": ["highest mean A_f", "Spearman rho(parameters, mean A_f) over 6 models"],
            "value": ["GPT2-117M 0.328", "0.086"],
            "interval": ["", "95% CI [-0.78, 0.84]"],
        }
    )
    return {
        "findings_scorecard": scorecard(
            {1: "does not hold", 2: "inconclusive", 3: "not testable here", 4: "inconclusive", 5: "holds"},
            {3: "no: GPT-2 is not in this run"},
        ),
        "finding1_per_model": per_model,
        "finding1_categories": categories,
        "sparsity_variants": variants,
        "signature_verdicts": signatures,
        "findings_on_published_data": published,
    }


def numbers_in(text: str) -> list[str]:
    """Decimal numbers in a text (model names such as 'MiniLM-L6' or 'Qwen2.5' left out)."""
    return re.findall(r"(?<![\w.-])-?\d+(?:\.\d+)?(?![\w.])", text)


def test_each_card_counts_models_and_says_the_verdict_first() -> None:
    found = cards.cards(study_tables())
    assert [c.number for c in found] == [1, 2, 3, 4, 5]
    first = found[0]
    assert first.counts.startswith("Does not hold in 2 of 4 models, inconclusive in 2 (SmolLM2-135M, Gemma3-270M)")
    assert (
        "in 2, some category's attention entropy is significantly above math's at matched prompt length" in first.counts
    )
    assert "median rank at matched prompt length 7.5 of 12" in first.ours and "first in 1 of 4" in first.ours
    assert "math ranks 1 of 12 in each of its 6 models" in first.paper  # the paper's TABLE 1 (data/reference)
    assert found[1].counts.startswith("'sparser' inconclusive and 'about 7x' inconclusive with 2 decoders and 2")
    assert "3.47x (90% interval 0.348 to 26.8)" in found[1].ours and "7.08x" in found[1].paper
    assert found[2].counts == "Not testable here: GPT-2 is not in this run." and found[2].paper.endswith("0.328")
    assert found[3].counts.startswith("Spearman rho") and found[3].models == "4 models as replicates"
    assert found[3].paper == "Spearman rho(parameters, mean A_f) over 6 models: 0.086 (95% CI [-0.78, 0.84])"
    assert found[4].counts == "Holds in all 4 models." and found[4].figure == "signature_probe_depth"


def test_no_card_number_has_more_than_three_significant_digits_and_nothing_is_cut() -> None:
    for card in cards.cards(study_tables()):
        for text in (card.counts, card.test, card.ours, card.key_number):
            assert "…" not in text and "..." not in text
            for number in numbers_in(text):
                digits = number.lstrip("-").replace(".", "").lstrip("0")
                assert len(digits) <= 3, (number, text)


def test_finding_5s_card_reads_the_gain_columns_when_the_table_has_them() -> None:
    tables = study_tables()
    tables["signature_verdicts"] = tables["signature_verdicts"].assign(
        gain_beyond_words=[-0.012, 0.03456, 0.02, 0.074],
        gain_low=[-0.05, 0.0, -0.01, 0.02],
        gain_high=[0.02, 0.07, 0.05, 0.12],
        lexical_accuracy=[0.81, 0.82, 0.82, 0.83],
        layer0_accuracy=[0.85, 0.86, 0.88, 0.87],
        layers_accuracy=[0.9, 0.91, 0.93, 0.95],
    )
    card = cards.cards(tables)[4]
    assert card.ours == "accuracy points the later layers add beyond the words: -1.2 to +7.4 across 4 models"
    assert (
        card.key_number
        == "words alone 0.81 to 0.83, layer 0 0.85 to 0.88; later layers -1.2 to +7.4 points beyond the words"
    )
    assert (
        "the words alone, with no model, give 0.81 to 0.83 and each model's layer 0 (its input tokens) 0.85 to "
        "0.88" in card.test
    )


def test_finding_2s_card_says_where_s_max_sits_and_the_ratio_without_that_layer() -> None:
    tables = study_tables()
    variants = tables["sparsity_variants"]
    without = variants.iloc[[-1]].assign(variant=finding2.NO_EMBEDDING_SPARSITY, ratio=0.5536, primary=False)
    tables["sparsity_variants"] = pd.concat([variants, without], ignore_index=True)
    assert cards.cards(tables)[1].ours.endswith("the encoders'")  # no table of where S_max sits: nothing said
    tables["sparsity_interpretation"] = pd.DataFrame(
        {"model": MODELS, "share_s_max_at_embedding": [0.0, 0.026, 0.94, 1.0]}
    )
    assert cards.cards(tables)[1].ours.endswith(
        "the encoders'; in 94-100% of decoder prompts that layer is the embedding output, and without it the ratio "
        "is 0.554x (90% interval 0.67 to 2.48)"
    )


def test_finding_4s_key_number_is_its_statistic_and_no_other_finding_takes_one_models_clause() -> None:
    tables = study_tables()
    long = (
        "Spearman rho(parameters, mean A_f) = 0.62 over 9 models (with 9 models 'does not hold' needs |rho| >= "
        "0.917 and 'holds' is impossible (possible from 16 models); 80% power for 'holds' at rho = 0 needs 39 models)"
    )
    contrasts = "; ".join(f"GPT-2 - {m} = 0.21, GPT-2 higher on 83% of prompts" for m in MODELS)
    tables["findings_scorecard"] = scorecard(
        {1: "does not hold", 2: "inconclusive", 3: "does not hold", 4: "inconclusive", 5: "holds"}, {}
    ).assign(evidence_this_run=["", "", contrasts, long, ""])
    found = cards.cards(tables)
    assert found[3].key_number == "Spearman rho(parameters, mean A_f) = 0.62 over 9 models"
    assert found[2].key_number == ""  # a list of per-model contrasts: no single one stands for the finding


def test_a_finding_that_is_not_testable_shows_why_not_a_count() -> None:
    tables = study_tables()
    tables["findings_scorecard"] = scorecard({1: "not testable here", 5: "not testable here"},
                                             {1: "no: 0 model(s) can be tested", 5: "no: too few prompts"})  # fmt: skip
    first, fifth = cards.cards(tables)
    assert first.counts == "Not testable here: 0 model(s) can be tested." and first.ours == ""
    assert fifth.counts == "Not testable here: too few prompts." and fifth.figure == "signature_probe_depth"


def test_the_abstract_and_the_readme_table_come_from_the_cards(tmp_path: Path) -> None:
    tables = study_tables()
    found = cards.cards(tables)
    text = cards.abstract(found, tables)
    assert text.startswith(
        "We re-tested the findings of Neural Activation Patterns Across Language Model Architectures"
    )
    assert "on 4 models (2 encoders, 2 decoders) and 540 prompts in 12 categories" in text
    assert (
        "Finding 1 (mathematical reasoning prompts have the highest attention entropy H_att) does not hold; by "
        "model: does not hold in 2 of" in text
    )
    assert (
        "Finding 3 (GPT-2 has the highest final activation A_f (signed mean) of the models) could not be tested" in text
    )
    assert text.endswith("In all: 1 holds, 1 does not hold, 2 inconclusive, 1 not testable here.")
    table = cards.verdict_table_markdown(found)
    rows = table.splitlines()
    assert rows[0] == "| finding | verdict | key number | models |" and len(rows) == 2 + 5
    assert "| **does not hold** |" in rows[2] and "(the paper: first in 6 of 6)" in rows[2]
    for name, frame in tables.items():
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
    section = cards.readme_summary(tmp_path, "notebooks/06_robustness.ipynb")
    assert section.startswith("<!-- generated by notebooks/06_robustness.ipynb from paper/tables/")
    assert table in section and max(len(line) for line in section.splitlines()) <= 300


def test_the_committed_readme_quotes_the_committed_tables() -> None:
    """The README's generated section is what the committed default tables give (no number typed by hand)."""
    readme = (paths.ROOT / "README.md").read_text(encoding="utf-8")
    start, end = "<!-- scorecard:start -->", "<!-- scorecard:end -->"
    committed = readme.split(start, 1)[1].split(end, 1)[0].strip()
    assert committed == cards.readme_summary(paths.TABLES, "notebooks/06_robustness.ipynb").strip()


@pytest.mark.parametrize("width", [300])
def test_no_readme_line_is_longer_than_a_screen_can_show(width: int) -> None:
    lines = (paths.ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert [i + 1 for i, line in enumerate(lines) if len(line) > width] == []


def test_every_table_says_what_it_shows() -> None:
    """The front page's table list gives each table one line (helpers.study.outputs.TABLE_DESCRIPTIONS)."""
    from helpers.study.outputs import FINDINGS_TABLES, SIGNATURE_TABLES, STUDY_TABLES, TABLE_DESCRIPTIONS

    tables = {*STUDY_TABLES, *FINDINGS_TABLES, *SIGNATURE_TABLES}
    assert sorted(tables - set(TABLE_DESCRIPTIONS)) == [] and sorted(set(TABLE_DESCRIPTIONS) - tables) == []


def test_the_citation_file_and_the_licence_are_there_and_name_the_paper() -> None:
    import yaml

    citation = yaml.safe_load((paths.ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert citation["cff-version"] == "1.2.0" and citation["license"] == "MIT"
    assert {"message", "title", "authors", "date-released"} <= set(citation)
    paper = citation["references"][0]
    assert paper["identifiers"][0]["value"] == "arXiv:2605.15436" and paper["type"] == "article"
    licence = (paths.ROOT / "LICENSE").read_text(encoding="utf-8")
    assert licence.startswith("MIT License") and "data/reference/raw/LICENSE.paper-repository" in licence
