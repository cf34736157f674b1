"""Every number in docs/ that describes a run or a rule is the run's or the rule's: read from the committed tables,
the prompt set or the code, never left to go stale (docs/signatures.md, finding 5's page, is not covered here)."""

from __future__ import annotations

import math
import re

import pandas as pd

from helpers.base import paths
from helpers.stats.findings import ABOUT_BAND, calibration, finding1, finding2, finding4, rules
from helpers.study import CATEGORIES, MIN_BOOTSTRAP_SAMPLES, load_prompts

DOCS = paths.ROOT / "docs"
TABLES = paths.PAPER / "tables"


def prose(page: str) -> str:
    """A docs page without code, links' targets and names that carry digits (notebooks, findings, model names)."""
    text = (DOCS / page).read_text(encoding="utf-8")
    text = re.sub(r"[ \t]*\n[ \t]*", " \n", text)  # a name broken over two lines is still a name
    text = re.sub(r"`[^`\n]*`", "", re.sub(r"```.*?```", "", text, flags=re.DOTALL))
    text = re.sub(r"\]\([^)]*\)", "]", text)
    text = re.sub(r"\b(?:[Nn]otebook|[Ff]indings?)\s+\d+(?:-\d+)?(?:'s)?", "", text)
    return re.sub(r"\b[\w.-]*\d+(?:\.\d+)?[BM]\b|Qwen2\.5-Coder|Gemma3-270M|EmbeddingGemma-300M", "", text)


def numbers(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w.])(?:\+-)?\d+(?:\.\d+)?%?(?![\w])", text))


def prompt_count() -> int:
    return len(load_prompts(paths.ROOT / "data" / "prompts" / "cognitive_tasks.csv"))


def test_every_number_on_the_statistics_page_is_the_code_s_or_the_prompt_set_s() -> None:
    without_digits, categories = finding1.categories_without_digits()
    effects = sorted({name.split("+")[1] for name in calibration.FINDING1_SCENARIOS if "+" in name}, key=float)
    checked = {
        f"{rules.ALPHA:.0%}": "the level",
        f"{1 - rules.ALPHA:.0%}": "two-sided intervals and rank sets",
        f"{1 - 2 * rules.ALPHA:.0%}": "the permutation interval of 'about'",
        f"{finding4.POWER_TARGET:.0%}": "the power target; the registered rule's simulated power (test_calibration)",
        "10%": "the earlier rule's simulated power (test_calibration)",
        str(prompt_count()): "the prompt set",
        str(calibration.PER_CATEGORY): "prompts per category in the simulations",
        **{effect: "planted effects (SD)" for effect in effects},
        str(finding2.SPARSER_MINIMUM): "'sparser' minimum",
        f"{finding2.PAPER_SPARSITY_RATIO:.2f}": "the paper's arithmetic ratio",
        f"{finding2.PAPER_SPARSITY_RATIO_GEOMETRIC:.2f}": "the paper's geometric ratio",
        f"{ABOUT_BAND[0]:.1f}": "the band",
        f"{ABOUT_BAND[1]:.1f}": "the band",
        f"{math.sqrt(ABOUT_BAND[1] / ABOUT_BAND[0]):g}": "the band's factor",
        str(finding2.MIN_MODELS_PER_ARCHITECTURE): "models per architecture",
        str(finding2.MIN_MODELS_FOR_ARCHITECTURES - finding2.MIN_MODELS_PER_ARCHITECTURE): "3 vs 4",
        f"+-{finding4.MONOTONIC_MINIMUM}": "finding 4's minimum",
        f"{finding4.NO_LINK:g}": "rho = 0",
        str(finding4.MODELS_TO_SUPPORT): "models for 'holds' at all",
        rules.significant(finding4.largest_rho_that_holds(finding4.MODELS_TO_SUPPORT), 2): "|rho| for 'holds' there",
        f"{finding4.verdict_shares(finding4.MODELS_TO_SUPPORT, finding4.NO_LINK)[rules.HOLDS]:.1%}": "P(holds) there",
        str(finding4.models_for_power(rules.HOLDS, finding4.NO_LINK)): "80% power for 'holds'",
        rules.significant(finding4.smallest_rho_that_refutes(8)): "|rho| that refutes with 8",
        str(MIN_BOOTSTRAP_SAMPLES): "bootstrap draws",
        str(len(CATEGORIES) - 1): "comparisons with math",
        str(without_digits): "categories without digits",
        str(categories): "categories",
    }
    assert finding4.smallest_rho_that_refutes(5) == finding4.smallest_rho_that_refutes(6) == 1.0  # "5 or 6 models"
    assert finding4.smallest_rho_that_refutes(7) < 1.0
    checked |= {"1": "|rho| = 1", "5": "refutes only at |rho| = 1", "6": "the same", "8": "models (and categories)"}
    assert without_digits == 8
    published = pd.read_csv(paths.ROOT / "data" / "reference" / "model_summary.csv")
    per_cell = published["Inputs_Analyzed"] / len(CATEGORIES)
    assert (per_cell == 2).all()  # "2 prompts per cell", "a factor 2" (above) and the paper's "six models"
    assert len(published) == 6
    text = prose("statistics.md")
    unchecked = numbers(text) - set(checked)
    assert not unchecked, f"numbers in docs/statistics.md that no test reads from the code or tables: {unchecked}"
    for number in ("2.2-8.8", "16 models", "39 models", "|rho| >= 0.929 with 8", "|rho| <= 0.0057 (1.3% of runs"):
        assert number in " ".join(text.split()), number


def test_the_workflow_pages_numbers_are_the_committed_tables() -> None:
    text = " ".join((DOCS / "workflow.md").read_text(encoding="utf-8").split())
    found = re.search(r"r >= ([\d.]+) in every model of the default study", text)
    assert found
    length_models = pd.read_csv(TABLES / "length_models.csv")
    assert length_models["r_with_tokens"].min() >= float(found[1])
    assert f"all {prompt_count()} prompts" in text


def test_the_reproducibility_pages_example_is_in_the_committed_tables() -> None:
    text = (DOCS / "reproducibility.md").read_text(encoding="utf-8")
    found = re.search(r"a Wilcoxon p of ([\d.e-]+) became ([\d.e-]+) on another machine", text)
    assert found
    committed = (TABLES / "sparsity_variants.csv").read_text(encoding="utf-8")
    assert found[1] in committed or found[2] in committed
