"""The run's released data: every model x prompt measurement and per-layer summaries, as parquet and CSV beside a
data card (paper/data[/<run>]/), kept where the run reproduces the committed files.

``write_release`` (notebook 05) writes ``RELEASED_DATA`` (``helpers.study.outputs``) and ``DATA_CARD.md``; the
card's column list is made from the tables themselves and ``COLUMNS`` (what each column is, its unit), so a
column without a description is named there as undocumented rather than left out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from helpers.base import store
from helpers.study import reproduction
from helpers.study.comparison import compare_text, table_csv
from helpers.study.outputs import RELEASED_DATA, RunOutputs

COLUMNS: dict[str, tuple[str, str]] = {
    "model": ("", "the model's name in the compendium's registry (docs/models.md)"),
    "display_name": ("", "the model's display name"),
    "family": ("", "the model's family (BERT, Llama, Gemma 3, ...)"),
    "architecture": ("", "encoder or decoder"),
    "n_parameters": ("parameters", "the model's parameter count"),
    "n_layers": ("layers", "transformer layers"),
    "n_heads": ("heads", "attention heads per layer"),
    "hidden_size": ("units", "width of the hidden state"),
    "prompt_id": ("", "the prompt's id in the prompt file"),
    "category": ("", "the prompt's category"),
    "text": ("", "the prompt's text, as measured"),
    "line": ("", "the prompt's line in the prompt file"),
    "n_words": ("words", "words in the prompt (split at white space): a surface covariate"),
    "n_digits": ("digits", "digits 0-9 in the prompt: a surface covariate"),
    "n_question_marks": ("question marks", "question marks in the prompt: a surface covariate"),
    "n_tokens": ("tokens", "tokens the model's tokenizer makes of the prompt, special tokens included"),
    "tokens": ("", "those tokens as the tokenizer writes them, a JSON list"),
    "truncated": ("", "whether the prompt was cut to the run's max_length"),
    "nonfinite_layers": ("layers", "layers whose hidden state held a non-finite value (0 for every usable prompt)"),
    "final_activation": ("activation units", "the paper's A_f: mean of the last hidden state over tokens and units"),
    "final_activation_pre_norm": ("activation units", "A_f before the decoder's final norm"),
    "attention_entropy": (
        "nats",
        "the paper's H_att: attention entropy summed over query rows, mean over layers and "
        "heads (grows with prompt length)",
    ),  # fmt: skip
    "attention_entropy_normalized": ("0-1", "mean over query rows of row entropy / log(keys the row may see)"),
    "max_sparsity": (
        "fraction 0-1",
        "the paper's S_max: largest share of hidden-state entries with |h| < 0.01 in "
        "any layer (embedding output included)",
    ),  # fmt: skip
    "max_sparsity_no_embedding": ("fraction 0-1", "S_max without the embedding output"),
    "max_sparsity_0.001": ("fraction 0-1", "S_max with the threshold |h| < 0.001"),
    "max_sparsity_0.1": ("fraction 0-1", "S_max with the threshold |h| < 0.1"),
    "max_sparsity_relative_0.001": ("fraction 0-1", "S_max with |h| < 0.001 x the layer's SD"),
    "max_sparsity_relative_0.01": ("fraction 0-1", "S_max with |h| < 0.01 x the layer's SD"),
    "max_sparsity_relative_0.1": ("fraction 0-1", "S_max with |h| < 0.1 x the layer's SD"),
    "max_hoyer_sparsity": ("0-1", "largest Hoyer sparsity of the token vectors in any layer (scale-free)"),
    "max_hoyer_sparsity_no_embedding": ("0-1", "the same without the embedding output"),
    "attention_path": ("", "which attention path measured the prompt (fused or eager, docs/metrics.md)"),
    "layer": ("", "the layer: 0 is the embedding output, L the last hidden state"),
    "statistic": ("", "the per-layer statistic (docs/metrics.md: mean, std, near_zero_0.01, hoyer, ...)"),
    "prompts": ("prompts", "how many prompts the mean and SD are over"),
    "mean": ("the statistic's unit", "mean over the category's prompts"),
    "sd": ("the statistic's unit", "standard deviation over the category's prompts"),
}
"""Every column the released tables may have: (unit, what it is)."""

PER_HEAD = "attention_entropy_head"
"""The per-head rows of the per-layer table, left out of the summaries (they would be tens of MB)."""


def measurements(metrics: pd.DataFrame) -> pd.DataFrame:
    """The run's per-prompt table as released: every model x prompt, in the run's order, every column; a column of
    lists (the tokens) as JSON text, so that the CSV and the parquet file hold the same."""
    table = metrics.reset_index(drop=True).copy()
    for column in table.columns:
        if table[column].map(lambda value: isinstance(value, list | tuple | np.ndarray)).any():
            table[column] = table[column].map(lambda value: json.dumps([str(item) for item in value]))
    return table


def layer_summary(layers: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """Per model, category, layer and per-layer statistic: the mean, SD and count over the category's prompts.

    ``layers``: the run's long per-layer table (``load_layers``); ``metrics``: the per-prompt table, which gives each
    prompt's category.
    """
    keep = layers[(layers["statistic"] != PER_HEAD) & layers["head"].isna()]
    if "category" not in keep:
        categories = metrics[["model", "prompt_id", "category"]].drop_duplicates()
        keep = keep.merge(categories, on=["model", "prompt_id"], how="left")
    order = {name: index for index, name in enumerate(dict.fromkeys(metrics["model"]))}
    grouped = keep.groupby(["model", "category", "layer", "statistic"], sort=False)["value"]
    summary = grouped.agg(prompts="count", mean="mean", sd="std").reset_index()
    summary = summary.sort_values(
        ["model", "category", "statistic", "layer"], key=lambda c: c.map(order) if c.name == "model" else c
    )
    return summary.reset_index(drop=True)


def released_tables(metrics: pd.DataFrame, layers: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Every table of ``RELEASED_DATA``, by name."""
    tables = {"measurements": measurements(metrics), "layer_summary": layer_summary(layers, metrics)}
    assert tuple(tables) == tuple(RELEASED_DATA)
    return tables


def data_card(
    tables: Mapping[str, pd.DataFrame], provenance: Mapping[str, Any], notebook: str, run: str, folder: Path
) -> str:
    """The data card (Markdown) written in ``folder``: what the files are, every column with its unit, how they were
    made, the models' hashes, the licence."""
    import os

    from helpers.base import paths

    def link(path: str) -> str:
        return os.path.relpath(paths.ROOT / path, folder)

    models = provenance.get("models", {})
    params = provenance.get("params", {})
    lines = [
        f"<!-- Generated by {notebook}; do not edit by hand. -->",
        "",
        f"# Data card: the per-prompt measurements of run `{run}`",
        "",
        "What each model does with each prompt of the study, as measured by the compendium "
        "(`helpers.measure_with_layers`, docs/metrics.md), released so that every number of the reports can be "
        f"recomputed without running a model. Back to the [README]({link('README.md')}).",
        "",
        "## Files",
        "",
        "| file | rows | what it holds |",
        "|---|---|---|",
    ]
    for name, table in tables.items():
        lines.append(
            f"| `{name}.parquet`, `{name}.csv` | {len(table)} | {store.markdown_cell(RELEASED_DATA.get(name, ''))} |"
        )
    lines += [
        "",
        "The parquet files keep every value at the precision it was measured (float32 or float64); the CSV files "
        f"write numbers to {store.SIGNIFICANT_DIGITS} significant digits, as every table of the compendium. "
        "Read them with `pandas.read_parquet` or `pandas.read_csv`.",
        "",
    ]
    for name, table in tables.items():
        lines += [f"## Columns of `{name}`", "", "| column | unit | what it is |", "|---|---|---|"]
        for column in table.columns:
            unit, what = COLUMNS.get(str(column), ("", "undocumented: see docs/metrics.md"))
            lines.append(f"| `{store.markdown_cell(column)}` | {unit or '-'} | {store.markdown_cell(what)} |")
        lines.append("")
    lines += [
        "## How they were made",
        "",
        f"`make reproduce` with `{params.get('name', run) if isinstance(params, Mapping) else run}`'s parameter "
        f"file: notebook 01 measured every prompt of `{params.get('prompts', '')}` with every model "
        f"(dtype {params.get('dtype', '')}, max_length {params.get('max_length', '')}), storing each model's table "
        "with "
        f"its provenance; {notebook} joins them. The prompt file's sha256 is "
        f"`{provenance.get('prompt_file_sha256', '')}`.",
        "",
        "## The models",
        "",
        "| model | display name | architecture | parameters | revision: the files measured and their sha256 |",
        "|---|---|---|---|---|",
    ]
    for name, meta in models.items():
        lines.append(
            f"| `{store.markdown_cell(name)}` | {store.markdown_cell(meta.get('display_name', ''))} | "
            f"{store.markdown_cell(meta.get('architecture', ''))} | {meta.get('n_parameters', '')} | "
            f"{store.markdown_cell(meta.get('revision', ''))} |"
        )
    lines += [
        "",
        f"The models' own files and their hashes are listed in [docs/models.md]({link('docs/models.md')}).",
        "",
        "## Licence",
        "",
        "The measurements and the prompts are released under the MIT licence of the compendium "
        f"([LICENSE]({link('LICENSE')})). They are numbers measured from third-party models, which keep their own "
        "licences (docs/models.md); no model weights are included.",
        "",
    ]
    return "\n".join(lines)


def write_release(
    tables: Mapping[str, pd.DataFrame],
    outputs: RunOutputs,
    provenance: Mapping[str, Any],
    notebook: str,
    check: reproduction.Check | None = None,
) -> list[Path]:
    """Write each released table (parquet, zstd, and CSV) and the data card into ``outputs.data``.

    With a ``check``, a table whose committed CSV this run reproduces within tolerance is left as committed (both
    files, their time renewed), as every committed table; the comparison is recorded in the check.
    """
    written = []
    for name, table in tables.items():
        parquet, csv = outputs.released(name, "parquet"), outputs.released(name, "csv")
        written += [parquet, csv]
        output = f"data/{name}"
        if check is not None:
            kept = check.table(output, table, {"csv": csv}, lambda shown: {"csv": table_csv(shown)})
        else:
            kept = table
            store.write_text(table_csv(table), csv)
        edited = check is not None and bool(check.edited(output, [parquet]))
        if edited or not (parquet.is_file() and _same_parquet(parquet, kept)):
            with store.atomic_path(parquet) as temporary:
                kept.to_parquet(temporary, index=False, compression="zstd")
        if check is not None:  # the record holds both files' bytes, so an edit of either is found at the next start
            comparison = check.table_comparison(output)
            if comparison is not None:
                check.add(comparison, [parquet, csv])
    card = data_card(tables, provenance, notebook, outputs.params.name, outputs.data)
    committed = outputs.data_card.read_text(encoding="utf-8") if outputs.data_card.is_file() else None
    comparison = compare_text("data/DATA_CARD.md", committed, card)
    if not comparison.reproduced:
        store.write_text(card, outputs.data_card)
    if check is not None:
        check.add(comparison, [outputs.data_card], written=not comparison.reproduced)
    return [*written, outputs.data_card]


def _same_parquet(path: Path, table: pd.DataFrame) -> bool:
    """Whether the parquet file at ``path`` holds exactly ``table`` (an unreadable file does not)."""
    try:
        return bool(pd.read_parquet(path).equals(table.reset_index(drop=True)))
    except Exception:  # noqa: BLE001 - a damaged file is rewritten
        return False
