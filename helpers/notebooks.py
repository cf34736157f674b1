"""Run the numbered notebooks with papermill, render them to HTML reports, and write the study's front page.

``python -m helpers.notebooks run NOTEBOOK --params FILE [--model NAME]`` executes one notebook
into the build folder (never over the source) and renders a code-free HTML report;
``python -m helpers.notebooks index --params FILE`` writes ``index.html``, the study's front
page. The Snakefile calls these; so can you.

Report conventions (every notebook follows them):

* the first cell is Markdown: a ``# NN Title`` heading, then a paragraph whose first sentence
  says what the report shows (the index quotes it; the heading titles the report);
* cells tagged ``remove-cell`` (setup, bookkeeping, interactive widgets) and the
  ``parameters`` / ``injected-parameters`` cells are left out of the report; ``remove-output``
  keeps a cell's place but drops its output;
* no TeX in Markdown (reports load no MathJax): write <i>A</i><sub>f</sub> or plain text;
* reports load nothing from the network: no scripts, figures embedded.
"""

from __future__ import annotations

import argparse
import base64
import html
import os
import re
import shlex
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers import paths, store
from helpers.study import MAIN_RUN, StudyParams, ensure_writable, load_params, model_key, run_provenance


def numbered_notebooks() -> dict[str, Path]:
    """The study's notebooks, found by glob: stem -> path, in order."""
    return {path.stem: path for path in sorted(paths.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))}


@dataclass(frozen=True)
class RunOutputs:
    """Where a run writes: the default run to figures/, paper/tables/, reports/; others to a subfolder."""

    params: StudyParams

    def _folder(self, base: Path) -> Path:
        return base if self.params.name == MAIN_RUN else base / self.params.name

    @property
    def figures(self) -> Path:
        return self._folder(paths.FIGURES)

    @property
    def tables(self) -> Path:
        return self._folder(paths.TABLES)

    @property
    def reports(self) -> Path:
        return self._folder(paths.REPORTS)

    @property
    def build(self) -> Path:
        return paths.BUILD / self.params.name

    @property
    def metrics(self) -> Path:
        return self.params.results / "metrics.parquet"

    @property
    def aggregated(self) -> Path:
        return self.params.results / "tables"

    def job_name(self, notebook: str, model: str | None = None) -> str:
        return notebook if model is None else f"{notebook}_{model_key(model)}"

    def executed(self, notebook: str, model: str | None = None) -> Path:
        return self.build / f"{self.job_name(notebook, model)}.ipynb"

    def report(self, notebook: str, model: str | None = None) -> Path:
        return self.reports / f"{self.job_name(notebook, model)}.html"

    def all_reports(self) -> list[Path]:
        reports = []
        for notebook in numbered_notebooks():
            models = self.params.models if notebook.startswith("01_") else [None]
            reports.extend(self.report(notebook, model) for model in models)
        return reports


# --- what each notebook says about itself -----------------------------------------------------------


@dataclass(frozen=True)
class NotebookSummary:
    """A notebook's title (its first heading) and what it shows (the first sentence after it, Markdown)."""

    title: str
    description: str


def notebook_summary(path: Path) -> NotebookSummary:
    """Title and one-line description from the notebook's first Markdown cell (one place for both)."""
    import nbformat

    cells = nbformat.read(path, as_version=4).cells
    first = next((cell for cell in cells if cell.cell_type == "markdown"), None)
    lines = (first.source if first is not None else "").strip().splitlines()
    heading = lines[0].lstrip("#").strip() if lines and lines[0].startswith("#") else path.stem
    body = "\n".join(lines[1:] if lines and lines[0].startswith("#") else lines).strip()
    paragraph = " ".join(body.split("\n\n")[0].split()) if body else ""
    sentence = re.split(r"(?<=[.!?:])\s+(?=[A-Z*`<])", paragraph, maxsplit=1)[0] if paragraph else ""
    return NotebookSummary(heading, sentence.rstrip(":") + ("." if sentence.endswith(":") else ""))


def interactive() -> bool:
    """False in the papermill runs that render reports, True in JupyterLab or any other session."""
    return os.environ.get("COMPENDIUM_REPORT", "") != "1"


def show_progress() -> bool:
    """Whether to draw progress bars: for people at a screen (``interactive``), never in reports."""
    return interactive()


@contextmanager
def _report_environment() -> Iterator[None]:
    """Environment of a papermill run: no progress bars in the kernel; restored afterwards."""
    quiet = {"COMPENDIUM_REPORT": "1", "TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    quiet["PYTHONPATH"] = os.environ.get("PYTHONPATH") or str(paths.ROOT)
    previous = {key: os.environ.get(key) for key in quiet}
    os.environ.update(quiet)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# --- notebooks in git ------------------------------------------------------------------------------

LANGUAGE_DETAILS = ("codemirror_mode", "file_extension", "mimetype", "nbconvert_exporter", "pygments_lexer", "version")
NBSTRIPOUT_ARGUMENTS: tuple[str, ...] = (
    "--keep-id",
    "--extra-keys",
    " ".join(f"metadata.language_info.{key}" for key in LANGUAGE_DETAILS),
)
"""How the git filter runs nbstripout: outputs, execution counts and the interpreter details a
kernel adds to ``metadata.language_info`` are dropped (its name stays); cell ids and the kernelspec
are kept. A committed notebook is what this filter makes of it."""


def install_git_filter(root: Path = paths.ROOT) -> str:
    """Set the ``nbstripout`` git filter that .gitattributes names, so notebook outputs never reach git.

    The command runs ``.venv/bin/python`` relative to the work tree (git runs filters from its
    top level), so each checkout uses its own environment. Returns what was set, or why not.
    """
    import subprocess

    if subprocess.run(["git", "-C", str(root), "rev-parse", "--git-dir"], capture_output=True).returncode != 0:
        return f"{root} is not a git checkout: no filter set"
    clean = " ".join([".venv/bin/python", "-m", "nbstripout", *(shlex.quote(a) for a in NBSTRIPOUT_ARGUMENTS)])
    settings = {
        "filter.nbstripout.clean": clean,
        "filter.nbstripout.smudge": "cat",
        "filter.nbstripout.required": "true",
        "diff.ipynb.textconv": f"{clean} --textconv",
    }
    for key, value in settings.items():
        subprocess.run(["git", "-C", str(root), "config", key, value], check=True)
    return f"git filter nbstripout: {clean}"


# --- reports ---------------------------------------------------------------------------------------

REMOVE_CELL_TAGS = frozenset({"remove-cell", "parameters", "injected-parameters"})
"""Cells left out of the reports: setup and interactive cells (tag ``remove-cell``) and papermill's parameters."""
REMOVE_OUTPUT_TAGS = frozenset({"remove-output"})
"""Cells whose output is left out of the reports."""

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
nav.compendium { font-size: 0.9em; padding: 0.5em 1em; margin: 0 0 1em 0; background: #f3f5f8;
  border-bottom: 1px solid #d0d7de; }
nav.compendium a { text-decoration: none; }
.compendium-page { max-width: 72em; margin: 1em auto; padding: 0 1em; line-height: 1.45; }
.compendium-page table { border-collapse: collapse; margin: 0.5em 0 1em 0; font-size: 0.92em; }
.compendium-page th, .compendium-page td { border: 1px solid #d0d7de; padding: 0.3em 0.6em; text-align: left;
  vertical-align: top; }
.compendium-page th { background: #f3f5f8; }
.compendium-page code { background: #f3f5f8; padding: 0 0.2em; }
.verdict-holds { background: #dff3e4; } .verdict-weakened { background: #fff4d6; }
.verdict-does-not-hold { background: #fbe0e0; } .verdict-not-testable { background: #eeeeee; }
.figures { display: grid; grid-template-columns: repeat(auto-fit, minmax(30em, 1fr)); gap: 1.2em; }
.figures figure { margin: 0; } .figures img { width: 100%; border: 1px solid #d0d7de; }
figcaption { font-size: 0.9em; color: #444; }
details { margin: 0.5em 0 1em 0; } summary { cursor: pointer; font-weight: 600; }
"""

_REPORT_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block extra_css -%}<style type="text/css">{{ resources.compendium.style }}</style>{%- endblock extra_css -%}
{%- block body_header -%}
{{ super() }}
<nav class="compendium"><a href="{{ resources.compendium.index }}">&larr; Study index</a>
 &middot; {{ resources.compendium.run | escape }}
 &middot; made by <code>{{ resources.compendium.notebook | escape }}</code></nav>
{%- endblock body_header -%}
"""
"""The report page: JupyterLab's nbconvert template without any script (no require.js, MathJax,
mermaid or widget manager from a CDN), with a bar linking back to the index."""


def report_title(notebook: str, model: str | None = None, run: str | None = None) -> str:
    """'01 Collect activations: minilm-l6 (run default)' from the notebook's heading."""
    title = notebook_summary(numbered_notebooks()[notebook]).title
    title += f": {model}" if model else ""
    return title + (f" (run {run})" if run and run != "default" else "")


def render_html(executed: Path, target: Path, title: str = "", run: str = "", notebook: str = "") -> Path:
    """Render an executed notebook to a standalone HTML report: no code, no scripts, figures embedded.

    Cells tagged ``remove-cell`` (and the parameters cells) are left out, ``remove-output`` cells
    lose their output; the page is titled ``title`` and links back to ``index.html`` beside it.
    """
    import jinja2
    import nbformat
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import TagRemovePreprocessor

    node = nbformat.read(executed, as_version=4)
    node.metadata.pop("widgets", None)  # widget state is for a live kernel; reports have no widget manager
    exporter = HTMLExporter(
        template_name="lab",
        extra_loaders=[jinja2.DictLoader({"compendium_report.html.j2": _REPORT_TEMPLATE})],
        template_file="compendium_report.html.j2",
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
    )
    exporter.register_preprocessor(
        TagRemovePreprocessor(
            remove_cell_tags=set(REMOVE_CELL_TAGS), remove_all_outputs_tags=set(REMOVE_OUTPUT_TAGS), enabled=True
        ),
        enabled=True,
    )
    resources = {
        "metadata": {"name": title or Path(executed).stem},
        "compendium": {"style": _STYLE, "index": "index.html", "run": run, "notebook": notebook},
    }
    body, _ = exporter.from_notebook_node(node, resources=resources)
    return store.write_text(body, target)


def run_notebook(notebook: str, params_file: str, model: str | None = None, progress: bool = False) -> Path:
    """Execute ``notebook`` (stem, e.g. '01_collect_activations') with papermill, then render its report.

    The kernel runs without progress bars (``show_progress`` is False there); ``progress`` shows
    papermill's own per-cell bar on the terminal.
    """
    import papermill

    notebooks = numbered_notebooks()
    if notebook not in notebooks:
        raise ValueError(f"unknown notebook {notebook!r}; the notebooks are {list(notebooks)}")
    params = load_params(params_file)
    outputs = RunOutputs(params)
    for folder in (outputs.build, outputs.reports, outputs.figures, outputs.tables, params.results):
        ensure_writable(folder)  # fail before any model work, naming the folder
    executed = outputs.executed(notebook, model)
    parameters: dict[str, str] = {"params_file": str(params_file)}
    if model is not None:
        parameters["model"] = model
    with _report_environment():
        papermill.execute_notebook(
            str(notebooks[notebook]),
            str(executed),
            parameters=parameters,
            kernel_name="python3",  # the kernel of the Python running this (the project's .venv)
            cwd=str(paths.ROOT),
            progress_bar=progress,
            log_output=False,
        )
    run = f"run {params.name} ({Path(params_file).name})"
    return render_html(
        executed,
        outputs.report(notebook, model),
        title=report_title(notebook, model, params.name),
        run=run,
        notebook=f"notebooks/{notebook}.ipynb",
    )


# --- readable tables for reports -------------------------------------------------------------------


def _relative(path: Path, start: Path = paths.ROOT) -> str:
    path = Path(path)
    return str(path.relative_to(start)) if path.is_relative_to(start) else str(path)


def _size(n_bytes: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n_bytes < 1024 or unit == "GiB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024
    return ""


def files_table(written: Mapping[str, Path] | list[Path]) -> Any:
    """The files a notebook wrote, as a table (path relative to the repository, size), not a repr of paths."""
    import pandas as pd

    items = list(written.items()) if isinstance(written, Mapping) else [(Path(p).suffix[1:], p) for p in written]
    rows = [
        {"what": what, "file": _relative(path), "size": _size(Path(path).stat().st_size) if Path(path).exists() else ""}
        for what, path in items
    ]
    return pd.DataFrame(rows).style.hide(axis="index")


def show_table(table: Any, digits: int = 4) -> Any:
    """A DataFrame for a report: floats to ``digits`` significant digits, no bare 0..n-1 index column."""
    import pandas as pd

    floats = table.select_dtypes("float").columns
    styler = table.style.format(lambda v: "" if pd.isna(v) else f"{v:.{digits}g}", subset=floats)
    return styler.hide(axis="index") if isinstance(table.index, pd.RangeIndex) else styler


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested mappings as (dotted key, text) rows; lists joined with commas."""
    if isinstance(value, Mapping):
        rows = []
        for key, inner in value.items():
            rows.extend(_flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return rows
    if isinstance(value, list | tuple):
        shown = ", ".join(str(item) for item in value)
        return [(prefix, shown if len(value) <= 12 else f"{len(value)} items: {shown[:200]}…")]
    return [(prefix, "" if value is None else str(value))]


def _html_table(header: list[str], rows: list[list[str]], classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for index, row in enumerate(rows):
        css = f' class="{classes[index]}"' if classes and classes[index] else ""
        body.append(f"<tr{css}>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def provenance_html(provenance: Mapping[str, Any], summary: str = "Provenance") -> str:
    """Provenance as tables inside a collapsed ``<details>``: one table per section, models one row each."""
    sections, general = [], []
    for key, value in provenance.items():
        if isinstance(value, Mapping) and value and all(isinstance(v, Mapping) for v in value.values()):
            fields = list(dict.fromkeys(field for inner in value.values() for field in inner))
            rows = [
                [html.escape(str(name))] + [html.escape(str(inner.get(f, ""))) for f in fields]
                for name, inner in value.items()
            ]
            sections.append(f"<h4>{html.escape(key)}</h4>" + _html_table([key, *fields], rows))
        elif isinstance(value, Mapping):
            rows = [[html.escape(k), html.escape(v)] for k, v in _flatten(value)]
            sections.append(f"<h4>{html.escape(key)}</h4>" + _html_table(["key", "value"], rows))
        else:
            general.extend(_flatten(value, key))
    if general:
        rows = [[html.escape(k), html.escape(v)] for k, v in general]
        sections.insert(0, _html_table(["key", "value"], rows))
    return f"<details><summary>{html.escape(summary)}</summary>{''.join(sections)}</details>"


def show_provenance(provenance: Mapping[str, Any], summary: str = "Provenance") -> Any:
    """``provenance_html`` for a notebook cell."""
    from IPython.display import HTML

    return HTML(provenance_html(provenance, summary))


# --- the front page --------------------------------------------------------------------------------

SCORECARD_COLUMNS = ("finding", "claim", "evidence in this run", "test and statistic", "interval", "verdict")
"""The scorecard columns the front page shows first when the table has them all (all columns are a click away)."""

KEY_FIGURES: dict[str, str] = {
    "finding1_categories": "Does math keep the highest attention entropy once prompt length is controlled?",
    "entropy_vs_tokens": "Raw attention entropy sums over query rows: it grows with prompt length.",
    "heatmap_attention_entropy_by_model": "Attention entropy per category, z-scored within each model "
    "(raw values annotated).",
    "sparsity_variants": "Sparsity of each model by measure (|h| thresholds and Hoyer), against the paper's 7x.",
}
"""Figures shown on the front page (when the run made them), with what each answers; each is one of
``outputs.STUDY_FIGURES`` or ``outputs.FINDINGS_FIGURES`` (a test checks it)."""


def _column_key(name: str) -> str:
    return " ".join(str(name).replace("_", " ").split()).lower()


def scorecard_html(path: Path) -> str:
    """The findings scorecard (any columns) as an HTML table; verdict rows coloured."""
    import pandas as pd

    if not path.is_file():
        return f"<p>No findings scorecard in this run (<code>{html.escape(_relative(path))}</code> is missing).</p>"
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    keys = {_column_key(column): column for column in table.columns}
    verdict = keys.get("verdict")
    classes = [f"verdict-{_column_key(v).replace(' ', '-')}" for v in table[verdict]] if verdict else None

    def render(columns: list[str]) -> str:
        rows = [[html.escape(str(row[c])) for c in columns] for _, row in table.iterrows()]
        return _html_table([_column_key(c) for c in columns], rows, classes)

    if all(key in keys for key in SCORECARD_COLUMNS):
        shown = [keys[key] for key in SCORECARD_COLUMNS]
    else:  # another schema: every column but yes/no flags, which the verdict sums up
        shown = [c for c in table.columns if not set(table[c].str.lower()) <= {"true", "false", "yes", "no", ""}]
    every = ""
    if shown != list(table.columns):
        every = f"<details><summary>All {len(table.columns)} columns</summary>{render(list(table.columns))}</details>"
    return f'<div class="scorecard">{render(shown)}{every}</div>'


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
    labels = {"csv": "CSV", "md": "Markdown", "tex": "LaTeX", "png": "PNG", "svg": "SVG"}
    links = []
    for suffix in suffixes:
        target = path.with_suffix(f".{suffix}")
        if target.is_file():
            href = html.escape(os.path.relpath(target, folder))
            links.append(f'<a href="{href}">{labels[suffix]}</a>')
    return " · ".join(links)


def _embedded_png(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def write_index(params_file: str) -> Path:
    """reports[/<run>]/index.html: the study's front page.

    A summary, the findings scorecard, the key figures (embedded), one line per report (from each
    notebook's first Markdown cell), links to every table and figure, and the run's provenance
    (parameters, library versions, input hashes) in a collapsed table.
    """
    from nbconvert.filters.markdown_mistune import markdown2html_mistune

    params = load_params(params_file)
    outputs = RunOutputs(params)
    folder = outputs.reports
    provenance = run_provenance(params)
    models = provenance.get("models", {})
    model_names = ", ".join(html.escape(str(meta.get("display_name", name))) for name, meta in models.items())
    model_names = model_names or html.escape(", ".join(params.models))
    n_models = f"{len(params.models)} model" + ("s" if len(params.models) != 1 else "")

    report_rows = []
    for notebook, path in numbered_notebooks().items():
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
        [html.escape(path.stem), _links(path, folder, ("csv", "md", "tex")), html.escape(_made_by(path))]
        for path in sorted(outputs.tables.glob("*.csv"))
    ]
    figure_rows = [
        [html.escape(path.stem), _links(path, folder, ("png", "svg")), html.escape(_made_by(path))]
        for path in sorted(outputs.figures.glob("*.png"))
    ]
    key_figures = []
    for name, caption in KEY_FIGURES.items():
        path = outputs.figures / f"{name}.png"
        if path.is_file():
            href = html.escape(os.path.relpath(path, folder))
            key_figures.append(
                f'<figure><a href="{href}"><img src="{_embedded_png(path)}" alt="{html.escape(name)}"></a>'
                f"<figcaption><b>{html.escape(name)}</b>: {html.escape(caption)}</figcaption></figure>"
            )
    scorecard = outputs.tables / "findings_scorecard.csv"
    scorecard_links = _links(scorecard, folder, ("csv", "md", "tex")) if scorecard.is_file() else ""
    run_line = f"run <b>{html.escape(params.name)}</b> (<code>{html.escape(_relative(Path(params_file)))}</code>)"
    body = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Neural activation patterns across language models: run {html.escape(params.name)}</title>
<style>{_STYLE}</style>
</head><body><div class="compendium-page">
<h1>Neural activation patterns across language model architectures</h1>
<p>A tested reproduction of <i>Neural Activation Patterns Across Language Model Architectures</i>
(arXiv 2605.15436), {run_line}. The paper measured, per prompt, the final activation
<i>A</i><sub>f</sub>, the attention entropy <i>H</i><sub>att</sub> and the max sparsity
<i>S</i><sub>max</sub> of six models on prompts from 12 categories, and drew four findings from 2 prompts
per cell. This run measured {n_models} ({model_names}) on its prompt set, recomputed
the paper's tables, and tested each finding at its own unit of analysis: claims about prompt categories
with prompts as replicates within each model, at matched prompt length; claims about architectures and
model size with models as replicates, or <i>not testable here</i> when the run has too few models.</p>

<h2>Does each finding hold?</h2>
<p>The findings scorecard made by <code>notebooks/06_robustness.ipynb</code> ({scorecard_links}); the verdict
rule is stated in <a href="{html.escape(outputs.report("06_robustness").name)}">its report</a>.</p>
{scorecard_html(scorecard)}

<h2>Key figures</h2>
<div class="figures">{"".join(key_figures) or "<p>No figures yet.</p>"}</div>

<h2>Reports</h2>
<p>Each notebook, executed for this run and rendered without code.</p>
{_html_table(["report", "what it shows"], report_rows)}

<h2>Tables</h2>
{_html_table(["table", "files", "made by"], table_rows) if table_rows else "<p>No tables yet.</p>"}

<h2>Figures</h2>
{_html_table(["figure", "files", "made by"], figure_rows) if figure_rows else "<p>No figures yet.</p>"}

<h2>Provenance</h2>
{provenance_html(provenance, "Parameters, library versions, input hashes and models of this run")}
</div></body></html>
"""
    return store.write_text(body, folder / "index.html")


def write_failed_index(params: StudyParams, log: str | Path | list[str] | None = None) -> Path:
    """Replace a run's front page with one that says the run failed (the workflow's ``onerror``).

    The earlier page would show the earlier run's scorecard with links to outputs the failed jobs
    removed. The page is dated 2 January 1970, older than any input, so that the next run rewrites it
    (Snakemake reads a time of 0 as unknown).
    """
    outputs = RunOutputs(params)
    target = outputs.reports / "index.html"
    logs = [str(log)] if isinstance(log, str | Path) else [str(item) for item in log or []]
    where = f" Snakemake's log: <code>{html.escape(', '.join(logs))}</code>." if logs else ""
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Run {html.escape(params.name)} failed</title>"
        f"</head><body><h1>Run {html.escape(params.name)} failed</h1><p>The last run of this study failed; "
        "its results, tables and figures may be missing or out of date. Each failed job's executed notebook is in "
        f"<code>{html.escape(_relative(outputs.build))}/</code>.{where} Fix the cause and run it again; this page "
        "is then replaced by the study's front page.</p></body></html>\n"
    )
    store.write_text(page, target)
    os.utime(target, (86400, 86400))
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.notebooks", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="execute one notebook and render its HTML report")
    run.add_argument("notebook", help="notebook stem, e.g. 01_collect_activations")
    run.add_argument("--params", required=True, help="parameter file, e.g. params/default.yaml")
    run.add_argument("--model", default=None, help="model name (notebook 01 only)")
    index = commands.add_parser("index", help="write the HTML index of a run")
    index.add_argument("--params", required=True)
    commands.add_parser("git-filter", help="set the nbstripout git filter named in .gitattributes")
    args = parser.parse_args(argv)
    if args.command == "run":
        print(run_notebook(args.notebook, args.params, args.model))
    elif args.command == "index":
        print(write_index(args.params))
    else:
        print(install_git_filter())
    return 0


if __name__ == "__main__":
    sys.exit(main())
