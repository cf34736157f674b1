"""The study's front page (reports[/<run>]/index.html): the answer first, then the figures, reports, tables, data.

``python -m helpers.report.front_page --params FILE`` writes it (the Snakefile's index rule, after every report).
``write_index`` reads only the run's committed tables and figures (``helpers.report.cards`` counts the verdicts
from them), its reproduction records and its provenance. Every text from data is escaped where its HTML is made
(``helpers.report.tables`` and ``cards``); the page loads nothing and runs no script.
"""

from __future__ import annotations

import base64
import html
import os
import re
from pathlib import Path
from typing import Any

from helpers.base import paths, store
from helpers.report import cards as finding_cards
from helpers.report.style import STYLE
from helpers.report.tables import assert_script_free, html_table, provenance_html, relative
from helpers.study import StudyParams, load_params, run_provenance
from helpers.study.outputs import RELEASED_DATA, TABLE_DESCRIPTIONS, RunOutputs, numbered_notebooks

KEY_FIGURE_CAPTIONS: dict[str, str] = {
    "finding1_categories": "Finding 1's test: each category's mean attention entropy at matched prompt length, with "
    "its 95% interval, one panel per model; math in red.",
    "sparsity_variants": "Finding 2's test: the decoder / encoder sparsity ratio under every sparsity measure, with "
    "its interval, against the paper's 'about 7x' band.",
    "signature_probe_depth": "Finding 5's test: how well a layer's activations tell the category, against a probe "
    "of the prompt's surface alone (band) and a control task of random labels (grey).",
}
"""What each finding's key figure shows (the front page's captions); a card names its figure."""

KEY_FIGURES = KEY_FIGURE_CAPTIONS
"""The figures the front page may show (a test checks each is made by a notebook)."""


def _made_by(path: Path) -> str:
    """The notebook that made a figure (PNG metadata) or a table (its Markdown header)."""
    try:
        if path.suffix == ".png":
            from PIL import Image

            with Image.open(path) as image:
                return str(image.info.get("Description", "")).removeprefix("made by ")
        first = path.with_suffix(".md").read_text(encoding="utf-8").splitlines()[0]
        found = re.search(r"notebooks/[\w.-]+\.ipynb", first)
        return found.group(0) if found else ""
    except (OSError, IndexError):
        return ""


def _links(path: Path, folder: Path, suffixes: tuple[str, ...]) -> str:
    labels = {"csv": "CSV", "md": "Markdown", "tex": "LaTeX", "png": "PNG", "svg": "SVG", "parquet": "parquet"}
    links = []
    for suffix in suffixes:
        target = path.with_suffix(f".{suffix}")
        if target.is_file():
            href = html.escape(os.path.relpath(target, folder))
            links.append(f'<a href="{href}">{labels[suffix]}</a>')
    return " · ".join(links)


def _embedded_png(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def scorecard_html(path: Path) -> str:
    """The findings scorecard (every column) as an HTML table, rows coloured by verdict, verdicts never broken."""
    import pandas as pd

    if not path.is_file():
        return f"<p>No findings scorecard in this run (<code>{html.escape(relative(path))}</code> is missing).</p>"
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    classes = [finding_cards.verdict_class(v) for v in table["verdict"]] if "verdict" in table else None
    body = html_table(list(table.columns), table.values.tolist(), classes)
    return f'<div class="scorecard">{body}</div>'


def headline_numbers_html(tables: Path) -> str:
    """The paper's headline numbers recomputed the paper's way (pooled raw means, no test), beside the paper's:
    math's rank by attention entropy and the decoder / encoder ratio of each metric; '' without those tables."""
    import pandas as pd

    rows = []
    categories = tables / "published_vs_reproduced_categories.csv"
    architectures = tables / "published_vs_reproduced_architectures.csv"
    if categories.is_file():
        ranks = pd.read_csv(categories)
        entropy = ranks[ranks["metric"] == "Attention_Entropy"]
        math = entropy[entropy["Category"] == "mathematical_reasoning"]
        if len(math):
            n = int(entropy["Category"].nunique())

            def rank(value: Any) -> str:
                return f"{int(value)} of {n}" if pd.notna(value) else "n/a"

            rows.append(
                [
                    "math's rank by mean attention entropy <i>H</i><sub>att</sub>, all models pooled (1 = highest)",
                    rank(math["published_rank"].iloc[0]),
                    rank(math["reproduced_rank"].iloc[0]),
                ]
            )
    if architectures.is_file():
        ratios = pd.read_csv(architectures).pivot_table(
            index="metric", columns="source", values="decoder_over_encoder", dropna=False
        )
        labels = {
            "Max_Sparsity": "<i>S</i><sub>max</sub>",
            "Attention_Entropy": "<i>H</i><sub>att</sub>",
            "Final_Activation": "<i>A</i><sub>f</sub>",
        }
        for metric, label in labels.items():
            if metric in ratios.index:
                shown = [ratios.loc[metric].get(source, float("nan")) for source in ("published", "reproduced")]
                rows.append([f"mean {label} of decoders / mean {label} of encoders, prompts pooled",
                             *(f"{value:.3g}x" if pd.notna(value) else "n/a" for value in shown)])  # fmt: skip
    if not rows:
        return ""
    body = "".join(f'<tr><td>{a}</td><td class="number">{b}</td><td class="number">{c}</td></tr>' for a, b, c in rows)
    return (
        '<table class="headline"><thead><tr><th>the paper\'s number, computed its way (pooled raw means, no test)</th>'
        f'<th class="number">paper</th><th class="number">this run</th></tr></thead><tbody>{body}</tbody></table>'
    )


def reproduction_html(records: Path) -> str:
    """The run's reproduction check (``helpers.study.reproduction``): the headline, and every number beyond
    tolerance."""
    from helpers.study import reproduction

    comparisons = reproduction.read_records(records)
    if not comparisons:
        return "<p>No reproduction check recorded for this run yet.</p>"
    summary = reproduction.summarise(comparisons)
    headline, *_ = summary.lines()
    rows = [
        [c.output, d.where, d.column, d.kind, d.committed, d.computed] for c in summary.changed for d in c.differences
    ]
    notes = [f"<li>{html.escape(c.output)}: {html.escape(c.note)}</li>" for c in summary.changed if c.note]
    details = f"<ul>{''.join(notes)}</ul>" if notes else ""
    if rows:
        table = html_table(["output", "where", "column", "kind", "committed", "computed"], rows)
        details += f"<details><summary>{len(rows)} numbers beyond tolerance</summary>{table}</details>"
    css = "verdict-does-not-hold" if summary.conclusion_changed else ("verdict-holds" if not summary.changed else "")
    return f'<p class="{css}">{html.escape(headline)}</p>{details}'


def key_figures_html(found: list[finding_cards.Card], figures: Path, folder: Path) -> str:
    """One figure per finding that has one (its card names it), embedded, at most its natural width."""
    from PIL import Image

    items = []
    for card in found:
        path = figures / f"{card.figure}.png" if card.figure else None
        if path is None or not path.is_file():
            continue
        with Image.open(path) as image:
            width = image.width * 96 // int(round(image.info.get("dpi", (150, 150))[0]))
        caption = KEY_FIGURE_CAPTIONS.get(card.figure, "")
        href = html.escape(os.path.relpath(path, folder))
        alt = html.escape(f"Figure {card.figure.replace('_', ' ')}: finding {card.number}, {card.verdict}. {caption}")
        items.append(
            f'<figure id="figure-finding-{card.number}"><a href="{href}"><img src="{_embedded_png(path)}" alt="{alt}" '
            f'style="max-width: min(100%, {width}px)"></a><figcaption><b>Finding {card.number} '
            f"({html.escape(card.verdict)})</b>: {html.escape(caption)} Click for full size.</figcaption></figure>"
        )
    return f'<div class="figures">{"".join(items)}</div>' if items else "<p>No key figures yet.</p>"


def _run_counts(params: Any) -> tuple[str, str]:
    """'3 models (names)', '24 prompts in 12 categories' for the page's 'Measured' line."""
    from helpers.study import load_prompts

    provenance_models = run_provenance(params).get("models", {})
    model_names = ", ".join(str(meta.get("display_name", name)) for name, meta in provenance_models.items())
    model_names = model_names or ", ".join(params.models)
    n_models = f"{len(params.models)} model" + ("s" if len(params.models) != 1 else "")
    try:
        prompts = load_prompts(params.prompts_path, params.categories, params.prompts_per_category)
        return f"{n_models} ({model_names})", f"{len(prompts)} prompts in {prompts['category'].nunique()} categories"
    except (OSError, ValueError):
        return f"{n_models} ({model_names})", f"the prompts of {relative(params.prompts_path)}"


def write_index(params_file: str) -> Path:
    """reports[/<run>]/index.html: the study's front page (``page``), its parameters checked first."""
    params = load_params(params_file)
    folder = RunOutputs(params).reports
    return store.write_text(page(params, params_file), folder / "index.html")


def page(params: StudyParams, params_file: str) -> str:
    """The study's front page of the run ``params`` (read from ``params_file``), as HTML.

    First screen: the question, a generated abstract, and one card per finding (verdict, counts over models,
    this run's key number beside the paper's). Below: the key figure of each finding, the paper's headline
    numbers computed its way (labelled as pooled raw means), the reproduction check, one line per report, every
    table (what it shows) and figure, the released data, and the run's provenance, long parts behind a click.
    """
    from nbconvert.filters.markdown_mistune import markdown2html_mistune

    outputs = RunOutputs(params)
    folder = outputs.reports
    models_line, prompt_line = _run_counts(params)
    tables = finding_cards.read_tables(outputs.tables)
    found = finding_cards.cards(tables)
    abstract = finding_cards.abstract(found, tables)

    report_rows = []
    for notebook, path in numbered_notebooks().items():
        from helpers.report.notebooks import notebook_summary

        summary = notebook_summary(path)
        description = markdown2html_mistune(summary.description).strip().removeprefix("<p>").removesuffix("</p>")
        models_of = params.models if notebook.startswith("01_") else [None]
        links = " ".join(
            f'<a href="{html.escape(outputs.report(notebook, m).name)}">{html.escape(m or summary.title)}</a>'
            for m in models_of
        )
        title = html.escape(summary.title) + (f": {links}" if notebook.startswith("01_") else "")
        report_rows.append([title if notebook.startswith("01_") else links, description])

    table_rows = [
        [f"<b>{html.escape(path.stem)}</b>", html.escape(TABLE_DESCRIPTIONS.get(path.stem, "")),
         _links(path, folder, ("csv", "md", "tex")), html.escape(_made_by(path))]
        for path in sorted(outputs.tables.glob("*.csv"))
    ]  # fmt: skip
    figure_rows = [
        [html.escape(path.stem), _links(path, folder, ("png", "svg")), html.escape(_made_by(path))]
        for path in sorted(outputs.figures.glob("*.png"))
    ]
    data_rows = [
        [f"<b>{html.escape(name)}</b>", html.escape(what), _links(outputs.released(name), folder, ("parquet", "csv"))]
        for name, what in RELEASED_DATA.items()
        if outputs.released(name).is_file()
    ]
    card_link = ""
    if outputs.data_card.is_file():
        card_href = html.escape(os.path.relpath(outputs.data_card, folder))
        card_link = (
            "<p>What every column means, its unit, how it was made and its licence: "
            f'<a href="{card_href}">the data card</a>.</p>'
        )
    scorecard = outputs.tables / "findings_scorecard.csv"
    scorecard_links = _links(scorecard, folder, ("csv", "md", "tex")) if scorecard.is_file() else ""
    rules = html.escape(outputs.report("06_robustness").name)
    deviations = outputs.tables / "deviations.csv"  # rules changed after data were seen (helpers.stats.findings)
    registered = html.escape(os.path.relpath(paths.PAPER / "preregistered_rules.md", folder))
    deviations_line = (
        f' Rules changed after data were seen: <a href="{registered}">the deviations log</a> and each change\'s '
        f"verdict under the earlier and the current rule ({_links(deviations, folder, ('csv', 'md', 'tex'))})."
        if deviations.is_file()
        else ""
    )
    run_line = f"run <b>{html.escape(params.name)}</b> (<code>{html.escape(relative(Path(params_file)))}</code>)"
    headline = headline_numbers_html(outputs.tables)
    findings = (
        finding_cards.cards_html(found)
        if found
        else f"<p>No findings scorecard in this run (<code>{html.escape(relative(scorecard))}</code> is missing).</p>"
    )
    body = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Neural activation patterns across language models: run {html.escape(params.name)}</title>
<style>{STYLE}</style>
</head>
<body>
<div class="compendium-page">
<h1>Do the findings of <i>Neural Activation Patterns Across Language Model Architectures</i> hold?</h1>
<p class="abstract">{html.escape(abstract)}</p>
{findings}
<p><b>Measured</b> ({run_line}): {html.escape(models_line)} on {html.escape(prompt_line)}. The full scorecard
({scorecard_links}) is made by <code>notebooks/06_robustness.ipynb</code>; its <a href="{rules}">report</a> states
every rule before applying it.{deviations_line}</p>
<details><summary>The whole scorecard (every column)</summary>{scorecard_html(scorecard)}</details>

<h2>Key figures: each finding's test</h2>
{key_figures_html(found, outputs.figures, folder)}

<h2>The paper's headline numbers, computed its way</h2>
<p>The paper pooled raw means over its models and prompts, without a test and without matching prompt length.
The same numbers for this run, for comparison only: the verdicts above come from the tests, not from these.</p>
{headline}

<h2>Does this run reproduce the committed outputs?</h2>
<p>Every committed table, figure and the README's summary, compared number by number with what this run
computed, under the tolerance of each kind of number (<code>helpers/study/reproduction.py</code>,
<code>docs/reproducibility.md</code>); files within tolerance are kept as committed.</p>
{reproduction_html(outputs.reproduction_records)}

<h2>Reports</h2>
<p>Each notebook, executed for this run and rendered without code.</p>
{html_table(["report", "what it shows"], report_rows, raw=True)}

<h2>Tables, figures and data</h2>
<details><summary>Every table ({len(table_rows)}): what it shows, its files, the notebook that made it</summary>
{html_table(["table", "what it shows", "files", "made by"], table_rows, raw=True) if table_rows else "<p>No tables yet.</p>"}
</details>
<details><summary>Every figure ({len(figure_rows)}), with the notebook that made it</summary>
{html_table(["figure", "files", "made by"], figure_rows, raw=True) if figure_rows else "<p>No figures yet.</p>"}
</details>
<details><summary>The released per-prompt data ({len(data_rows)} tables)</summary>
{html_table(["data", "what it holds", "files"], data_rows, raw=True) if data_rows else "<p>No released data in this run yet.</p>"}
{card_link}
</details>

<h2>Provenance</h2>
{provenance_html(run_provenance(params), "Parameters, library versions, input hashes and models of this run")}
</div>
</body></html>
"""  # noqa: E501
    return assert_script_free(body, "the front page")


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m helpers.report.front_page", description=__doc__.splitlines()[0])
    parser.add_argument("--params", required=True, help="parameter file, e.g. params/default.yaml")
    print(write_index(parser.parse_args(argv).params))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
