"""Run the numbered notebooks with papermill, render them to HTML reports, and write the study's front page.

``python -m helpers.report.notebooks run NOTEBOOK --params FILE [--model NAME]`` executes one notebook
into the build folder (never over the source) and renders a code-free HTML report;
``python -m helpers.report.notebooks index --params FILE`` writes ``index.html``, the study's front
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

from helpers.base import paths, store
from helpers.study import StudyParams, ensure_writable, load_params, run_provenance
from helpers.study.outputs import RunOutputs, numbered_notebooks

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


LAB_SETTINGS: dict[str, dict[str, Any]] = {
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False},
}
"""JupyterLab defaults for the project's environment: no "get notified about Jupyter news?" pop-up and no
update check (so Lab never asks to reach the network)."""


def install_lab_settings(prefix: Path | None = None) -> Path:
    """Write ``LAB_SETTINGS`` into ``<prefix>/share/jupyter/lab/settings/overrides.json`` (``prefix``: this
    Python's environment, .venv), merged with what is there; a user's own Lab settings still win."""
    import json

    path = Path(prefix or sys.prefix) / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    current = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    for plugin, settings in LAB_SETTINGS.items():
        current[plugin] = {**current.get(plugin, {}), **settings}
    return store.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n", path)


# --- reports ---------------------------------------------------------------------------------------

REMOVE_CELL_TAGS = frozenset({"remove-cell", "parameters", "injected-parameters"})
"""Cells left out of the reports: setup and interactive cells (tag ``remove-cell``) and papermill's parameters."""
REMOVE_OUTPUT_TAGS = frozenset({"remove-output"})
"""Cells whose output is left out of the reports."""

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; margin: 0; }
nav.compendium { font-size: 0.9em; padding: 0.5em 1em; margin: 0 0 1em 0; background: #f3f5f8;
  border-bottom: 1px solid #d0d7de; }
nav.compendium a { text-decoration: none; }
.compendium-page { max-width: 72em; margin: 1em auto; padding: 0 1em; line-height: 1.45; }
.compendium-page h1 { font-size: 1.6em; margin: 0.4em 0; }
.compendium-page table { border-collapse: collapse; margin: 0.5em 0 1em 0; font-size: 0.92em; }
.compendium-page th, .compendium-page td { border: 1px solid #d0d7de; padding: 0.3em 0.6em; text-align: left;
  vertical-align: top; }
.compendium-page th { background: #f3f5f8; }
.compendium-page code { background: #f3f5f8; padding: 0 0.2em; }
table { max-width: 100%; }
th, td { overflow-wrap: anywhere; white-space: normal !important; }
td.number, th.number { text-align: right; }
img { max-width: 100%; height: auto; }
.jp-RenderedHTMLCommon table { table-layout: auto; }
.jp-RenderedHTMLCommon td, .jp-RenderedHTMLCommon th { text-align: left; vertical-align: top; }
.verdict-holds { background: #dff3e4; } .verdict-weakened { background: #fff4d6; }
.verdict-does-not-hold { background: #fbe0e0; } .verdict-not-testable-here { background: #eeeeee; }
.verdict-inconclusive { background: #fff4d6; }
ul.findings { list-style: none; padding: 0; margin: 0.5em 0 1em 0; }
ul.findings li { margin: 0 0 0.45em 0; padding: 0.35em 0.6em; border-left: 0.35em solid #d0d7de; }
ul.findings .verdict { font-weight: 700; text-transform: uppercase; font-size: 0.85em; letter-spacing: 0.02em; }
ul.findings .paper { display: block; font-size: 0.9em; color: #333; }
.figures { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(30em, 100%), 1fr)); gap: 1.2em; }
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
{% block data_png scoped %}
<div class="jp-RenderedImage jp-OutputArea-output {{ extra_class }}">
<img src="data:image/png;base64,{{ output.data['image/png'] | escape_html }}"
 alt="{{ output | get_metadata('alt', 'image/png') | default('figure', true) | escape_html }}">
</div>
{%- endblock data_png %}
"""
"""The report page: JupyterLab's nbconvert template without any script (no require.js, MathJax,
mermaid or widget manager from a CDN), with a bar linking back to the index; every image has the
alt text ``describe_figures`` gives it."""


_FIGURE_NAME = re.compile(r"""\[["']([\w.-]+)["']\]|\bshow\(["']([^"']+)["']\)|\b(?:explore|figures)\.(\w+)\(""")


def _plain(markdown: str) -> str:
    """Markdown or HTML as plain text: tags, emphasis and code marks dropped, whitespace collapsed."""
    text = re.sub(r"<[^>]+>", "", markdown)
    text = re.sub(r"^#+\s*", "", text, flags=re.MULTILINE)
    return " ".join(text.replace("*", "").replace("`", "").split())


def describe_figures(node: Any) -> int:
    """Give every PNG output of an executed notebook an alt text: the figure's name and its caption.

    The name is read off the cell (``study_figures["layer_profiles"]`` or ``explore.head_view(...)``,
    one per image, in order); the caption is the first sentence of the Markdown cell above it.
    Returns how many images were described.
    """
    caption, described = "", 0
    for cell in node.cells:
        if cell.cell_type == "markdown":
            lines = cell.source.strip().splitlines()
            title = _plain(" ".join(line for line in lines if line.startswith("#")))
            body = _plain("\n".join(line for line in lines if not line.startswith("#")))
            sentence = re.split(r"(?<=[.!?:])\s+", body, maxsplit=1)[0].rstrip(":") if body else ""
            caption = ". ".join(part.rstrip(".") for part in (title, sentence) if part) + ("." if sentence else "")
            continue
        if cell.cell_type != "code":
            continue
        found = ("".join(groups) for groups in _FIGURE_NAME.findall(cell.source))
        names = [name for name in found if name not in {"show", "show_table"}]
        images = [output for output in cell.get("outputs", []) if "image/png" in output.get("data", {})]
        for index, output in enumerate(images):
            name = names[index] if index < len(names) else (names[-1] if names else "figure")
            alt = f"Figure {name.replace('_', ' ')}" + (f": {caption}" if caption else "")
            output.setdefault("metadata", {}).setdefault("image/png", {})["alt"] = alt
            described += 1
    return described


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
    describe_figures(node)
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


def show_table(table: Any, digits: int = 4, empty: str = "no rows") -> Any:
    """A DataFrame for a report: floats to ``digits`` significant digits, missing values blank (never ``nan``),
    text left-aligned and numbers right-aligned, no bare 0..n-1 (or filtered) index column.

    A named index (a ``groupby`` result) becomes ordinary columns; an unnamed one is dropped. A
    table without rows is a sentence instead of a header on its own: ``empty`` says why
    (``"no rows: ..."``).
    """
    import pandas as pd
    from IPython.display import HTML

    if isinstance(table, pd.Series):
        table = table.to_frame()
    if table.empty:
        return HTML(f'<p class="compendium-empty"><i>{html.escape(empty)}</i></p>')
    if isinstance(table.columns, pd.MultiIndex):
        table = table.set_axis([" ".join(str(part) for part in column if part) for column in table.columns], axis=1)
    named = any(name is not None for name in table.index.names)
    table = table.reset_index() if named else table.reset_index(drop=True)
    floats = table.select_dtypes("float").columns
    numbers = table.select_dtypes("number").columns
    text = [column for column in table.columns if column not in numbers]
    styler = table.style.format(na_rep="").format(lambda v: "" if pd.isna(v) else f"{v:.{digits}g}", subset=floats)
    styler = styler.set_properties(subset=text, **{"text-align": "left"})
    styler = styler.set_properties(subset=list(numbers), **{"text-align": "right"})
    return styler.hide(axis="index")


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
    return [(prefix, "none" if value is None else str(value))]


def _html_table(header: list[str], rows: list[list[str]], classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for index, row in enumerate(rows):
        css = f' class="{classes[index]}"' if classes and classes[index] else ""
        body.append(f"<tr{css}>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _provenance_value(value: Any) -> str:
    """A provenance value as text: never blank (None is 'none', a missing field 'n/a')."""
    if value is None:
        return "none"
    if isinstance(value, list | tuple):
        return ", ".join(str(item) for item in value) or "none"
    return str(value) if str(value) != "" else "n/a"


def provenance_html(provenance: Mapping[str, Any], summary: str = "Provenance") -> str:
    """Provenance as tables inside a collapsed ``<details>``: one table per section.

    A section of one mapping per model (``models``) is a field x model table: one row per field,
    one column per model, so it stays narrow however many fields a model records; no cell is
    blank ('none' for an unset value, 'n/a' for a field a model lacks).
    """
    sections, general = [], []
    for key, value in provenance.items():
        if isinstance(value, Mapping) and value and all(isinstance(v, Mapping) for v in value.values()):
            fields = list(dict.fromkeys(field for inner in value.values() for field in inner))
            rows = [
                [html.escape(str(field))]
                + [
                    html.escape(_provenance_value(inner.get(field, "")) if field in inner else "n/a")
                    for inner in value.values()
                ]
                for field in fields
            ]
            sections.append(f"<h4>{html.escape(key)}</h4>" + _html_table(["field", *map(str, value)], rows))
        elif isinstance(value, Mapping):
            rows = [[html.escape(k), html.escape(_provenance_value(v))] for k, v in _flatten(value)]
            sections.append(f"<h4>{html.escape(key)}</h4>" + _html_table(["key", "value"], rows))
        else:
            general.extend(_flatten(value, key))
    if general:
        rows = [[html.escape(k), html.escape(_provenance_value(v))] for k, v in general]
        sections.insert(0, _html_table(["key", "value"], rows))
    return f"<details><summary>{html.escape(summary)}</summary>{''.join(sections)}</details>"


def show_provenance(provenance: Mapping[str, Any], summary: str = "Provenance") -> Any:
    """``provenance_html`` for a notebook cell."""
    from IPython.display import HTML

    return HTML(provenance_html(provenance, summary))


# --- the front page --------------------------------------------------------------------------------

FRONT_PAGE_COLUMNS: dict[str, str] = {
    "finding": "finding",
    "claim": "claim",
    "verdict": "verdict",
    "evidence": "evidence_this_run",
    "paper": "evidence_paper_table",
}
"""The scorecard columns the front page reads (role -> column of ``findings_scorecard.csv``); every other
column is shown only in the full table behind a click."""

OPTIONAL_FRONT_PAGE_COLUMNS: dict[str, str] = {"reason": "reason", "testable": "testable_here"}
"""Read when present: ``reason``, one sentence saying why the verdict (used as it is), and ``testable_here``
("yes", or "no: why"). Without ``reason`` the sentence is made from ``testable_here`` and the evidence."""

REASON_LENGTH = 170
"""At most this many characters of evidence make a finding's one-line reason on the front page."""

KEY_FIGURES: dict[str, str] = {
    "finding1_categories": "Finding 1: does math keep the highest attention entropy once prompt length is matched?",
    "sparsity_variants": "Finding 2: decoder / encoder sparsity under every sparsity measure, against the paper's 7x.",
    "entropy_vs_tokens": "Raw attention entropy sums over query rows: it grows with prompt length.",
    "heatmap_attention_entropy_by_model": "Attention entropy per category, z-scored within each model "
    "(raw values annotated).",
    "signature_probe_depth": "Finding 5: can a layer's activations tell the category better than the prompt's "
    "surface (band) and better than a control task of random labels (gray)?",
}
"""Figures shown on the front page (when the run made them), with what each answers; each is one of
``outputs.STUDY_FIGURES`` or ``outputs.FINDINGS_FIGURES`` (a test checks it)."""


def _column_key(name: str) -> str:
    return " ".join(str(name).replace("_", " ").split()).lower()


def _verdict_class(verdict: str) -> str:
    return "verdict-" + re.sub(r"[^a-z0-9]+", "-", str(verdict).lower()).strip("-")


def shorten(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters at a clause or word boundary, with '…' when cut."""
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    for boundary in ("; ", ", ", " "):
        position = cut.rfind(boundary)
        if position > limit // 2:
            return cut[:position].rstrip(" ,;:") + "…"
    return cut + "…"


def finding_reason(row: Mapping[str, str]) -> str:
    """One sentence saying why a finding got its verdict, from the scorecard row (``FRONT_PAGE_COLUMNS``).

    The row's ``reason`` when the scorecard has one; for ``not testable here`` the reason it gives
    (``testable_here``); otherwise the first item of the evidence, saying how many more there are.
    """
    reason = str(row.get(OPTIONAL_FRONT_PAGE_COLUMNS["reason"], "") or "").strip()
    if reason:
        return _sentence(reason)
    testable = str(row.get(OPTIONAL_FRONT_PAGE_COLUMNS["testable"], "") or "").strip()
    if testable.lower().startswith("no"):
        why = testable.split(":", 1)[1].strip() if ":" in testable else testable
        return _sentence(f"Not testable with this run: {shorten(why, REASON_LENGTH)}")
    evidence = str(row.get(FRONT_PAGE_COLUMNS["evidence"], "") or "").strip()
    items = [item.strip() for item in _top_level_items(evidence) if item.strip()]
    if not items:
        return "No evidence recorded."
    first = shorten(items[0][0].upper() + items[0][1:], REASON_LENGTH)
    more = f" (and {len(items) - 1} more like it in the scorecard)" if len(items) > 1 else ""
    return _sentence(f"{first}{more}")


def _top_level_items(evidence: str) -> list[str]:
    """``evidence`` split at each "; " outside brackets: one item per model, its parenthesised details kept whole."""
    items, depth, start = [], 0, 0
    for index, character in enumerate(evidence):
        depth += {"(": 1, "[": 1, ")": -1, "]": -1}.get(character, 0)
        if depth == 0 and evidence.startswith("; ", index):
            items.append(evidence[start:index])
            start = index + 2
    return [*items, evidence[start:]]


def _sentence(text: str) -> str:
    """``text`` ending as a sentence does: a full stop unless it ends with one already (or with '…')."""
    return text if text.endswith((".", "?", "!", "…")) else text + "."


def findings_summary_html(path: Path, details_href: str = "") -> str:
    """One line per finding of the scorecard at ``path``: verdict first, the claim, a one-sentence reason, and
    the paper's own evidence beside it; then the whole scorecard behind a click.

    Reads only ``FRONT_PAGE_COLUMNS`` (and ``OPTIONAL_FRONT_PAGE_COLUMNS`` when present), one row per finding,
    in the scorecard's order; a scorecard without them is shown as a table.
    """
    import pandas as pd

    if not path.is_file():
        return f"<p>No findings scorecard in this run (<code>{html.escape(_relative(path))}</code> is missing).</p>"
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [column for column in FRONT_PAGE_COLUMNS.values() if column not in table.columns]
    if missing:
        return scorecard_html(path)
    lines = []
    for _, row in table.iterrows():
        column = FRONT_PAGE_COLUMNS
        verdict = row[column["verdict"]]
        paper = shorten(row[column["paper"]], REASON_LENGTH)
        lines.append(
            f'<li class="finding {_verdict_class(verdict)}"><span class="verdict">{html.escape(verdict)}</span> '
            f"<b>Finding {html.escape(str(row[column['finding']]))}:</b> {html.escape(row[column['claim']])}. "
            f"{html.escape(finding_reason(row))}"
            f'<span class="paper">The paper\'s own table: {html.escape(paper)}</span></li>'
        )
    summary = f"The whole scorecard ({len(table.columns)} columns)"
    full = f"<details><summary>{summary}</summary>{scorecard_html(path)}</details>"
    return f'<ul class="findings">{"".join(lines)}</ul>{full}'


def scorecard_html(path: Path) -> str:
    """The findings scorecard (every column) as an HTML table; rows coloured by verdict; long text wraps."""
    import pandas as pd

    if not path.is_file():
        return f"<p>No findings scorecard in this run (<code>{html.escape(_relative(path))}</code> is missing).</p>"
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    keys = {_column_key(column): column for column in table.columns}
    verdict = keys.get("verdict")
    classes = [_verdict_class(v) for v in table[verdict]] if verdict else None
    rows = [[html.escape(str(row[c])) for c in table.columns] for _, row in table.iterrows()]
    return f'<div class="scorecard">{_html_table([_column_key(c) for c in table.columns], rows, classes)}</div>'


def headline_numbers_html(tables: Path) -> str:
    """The paper's headline numbers beside this run's, from the run's published-vs-reproduced tables.

    Math's rank by attention entropy among the categories, and the decoder / encoder ratio of each of
    the paper's three metrics; '' when the run has not made those tables.
    """
    import pandas as pd

    rows = []
    categories, architectures = (
        tables / f"{name}.csv"
        for name in ("published_vs_reproduced_categories", "published_vs_reproduced_architectures")
    )
    if categories.is_file():
        ranks = pd.read_csv(categories)
        math = ranks[(ranks["metric"] == "Attention_Entropy") & (ranks["Category"] == "mathematical_reasoning")]
        if len(math):
            n = int(ranks[ranks["metric"] == "Attention_Entropy"]["Category"].nunique())

            def rank(value: Any) -> str:
                return f"{int(value)} of {n}" if pd.notna(value) else "n/a"

            rows.append(
                [
                    "math's rank by attention entropy <i>H</i><sub>att</sub> (1 = highest)",
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
                rows.append([f"decoder / encoder ratio of mean {label}",
                             *(f"{value:.3g}x" if pd.notna(value) else "n/a" for value in shown)])  # fmt: skip
    if not rows:
        return ""
    body = "".join(f'<tr><td>{a}</td><td class="number">{b}</td><td class="number">{c}</td></tr>' for a, b, c in rows)
    return ('<table class="headline"><thead><tr><th>the paper\'s headline number</th><th class="number">paper</th>'
            f'<th class="number">this run</th></tr></thead><tbody>{body}</tbody></table>')  # fmt: skip


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
        [html.escape(c.output), html.escape(d.where), html.escape(d.column), html.escape(d.kind),
         html.escape(d.committed), html.escape(d.computed)]
        for c in summary.changed for d in c.differences
    ]  # fmt: skip
    notes = [f"<li>{html.escape(c.output)}: {html.escape(c.note)}</li>" for c in summary.changed if c.note]
    details = f"<ul>{''.join(notes)}</ul>" if notes else ""
    if rows:
        table = _html_table(["output", "where", "column", "kind", "committed", "computed"], rows)
        details += f"<details><summary>{len(rows)} numbers beyond tolerance</summary>{table}</details>"
    css = "verdict-does-not-hold" if summary.conclusion_changed else ("verdict-holds" if not summary.changed else "")
    return f'<p class="{css}">{html.escape(headline)}</p>{details}'


def write_index(params_file: str) -> Path:
    """reports[/<run>]/index.html: the study's front page.

    The first screen says what was asked, what was measured (models, prompts) and one line per
    finding, verdict first, with a one-sentence reason and the paper's own evidence beside it
    (``findings_summary_html``), then the paper's headline numbers beside this run's. Below: the
    key figures (embedded), one line per report, links to every table and figure, and the run's
    provenance, the long parts behind ``<details>``. Readable at 800 px: long text wraps.
    """
    from nbconvert.filters.markdown_mistune import markdown2html_mistune

    from helpers.study import load_prompts

    params = load_params(params_file)
    outputs = RunOutputs(params)
    folder = outputs.reports
    provenance = run_provenance(params)
    models = provenance.get("models", {})
    model_names = ", ".join(html.escape(str(meta.get("display_name", name))) for name, meta in models.items())
    model_names = model_names or html.escape(", ".join(params.models))
    n_models = f"{len(params.models)} model" + ("s" if len(params.models) != 1 else "")
    try:
        prompts = load_prompts(params.prompts_path, params.categories, params.prompts_per_category)
        n_categories = prompts["category"].nunique()
        prompt_line = f"{len(prompts)} prompts in {n_categories} categories"
    except (OSError, ValueError):
        prompt_line = f"the prompts of <code>{html.escape(_relative(params.prompts_path))}</code>"

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
            alt = html.escape(f"Figure {name.replace('_', ' ')}: {caption}")
            key_figures.append(
                f'<figure><a href="{href}"><img src="{_embedded_png(path)}" alt="{alt}"></a>'
                f"<figcaption><b>{html.escape(name)}</b>: {html.escape(caption)} (click for full size)</figcaption>"
                "</figure>"
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
    run_line = f"run <b>{html.escape(params.name)}</b> (<code>{html.escape(_relative(Path(params_file)))}</code>)"
    headline = headline_numbers_html(outputs.tables)
    body = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Neural activation patterns across language models: run {html.escape(params.name)}</title>
<style>{_STYLE}</style>
</head><body><div class="compendium-page">
<h1>Do the findings of <i>Neural Activation Patterns Across Language Model Architectures</i> hold?</h1>
<p><b>Asked:</b> the paper (arXiv 2605.15436) measured the final activation <i>A</i><sub>f</sub>, the
attention entropy <i>H</i><sub>att</sub> and the max sparsity <i>S</i><sub>max</sub> of six models on 2
prompts per category and drew four findings. Can its numbers be recomputed, and does each finding hold
when tested at its own unit?
<b>Measured</b> ({run_line}): {n_models} ({model_names}) on {prompt_line}.</p>

<h2>The findings</h2>
{findings_summary_html(scorecard)}
<p>The scorecard ({scorecard_links}) is made by <code>notebooks/06_robustness.ipynb</code>; its
<a href="{rules}">report</a> states every rule before applying it.{deviations_line}</p>
{headline}

<h2>Does this run reproduce the committed outputs?</h2>
<p>Every committed table, figure and the README's scorecard, compared number by number with what this run
computed, under the tolerance of each kind of number (<code>helpers/study/reproduction.py</code>,
<code>docs/reproducibility.md</code>); files within tolerance are kept as committed.</p>
{reproduction_html(outputs.reproduction_records)}

<h2>Key figures</h2>
<div class="figures">{"".join(key_figures) or "<p>No figures yet.</p>"}</div>

<h2>Reports</h2>
<p>Each notebook, executed for this run and rendered without code.</p>
{_html_table(["report", "what it shows"], report_rows)}

<h2>Tables and figures</h2>
<details><summary>Every table ({len(table_rows)}), with the notebook that made it</summary>
{_html_table(["table", "files", "made by"], table_rows) if table_rows else "<p>No tables yet.</p>"}
</details>
<details><summary>Every figure ({len(figure_rows)}), with the notebook that made it</summary>
{_html_table(["figure", "files", "made by"], figure_rows) if figure_rows else "<p>No figures yet.</p>"}
</details>

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
    parser = argparse.ArgumentParser(prog="python -m helpers.report.notebooks", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="execute one notebook and render its HTML report")
    run.add_argument("notebook", help="notebook stem, e.g. 01_collect_activations")
    run.add_argument("--params", required=True, help="parameter file, e.g. params/default.yaml")
    run.add_argument("--model", default=None, help="model name (notebook 01 only)")
    index = commands.add_parser("index", help="write the HTML index of a run")
    index.add_argument("--params", required=True)
    commands.add_parser("git-filter", help="set the nbstripout git filter named in .gitattributes")
    commands.add_parser("lab-settings", help="JupyterLab without the news pop-up, for this environment")
    args = parser.parse_args(argv)
    if args.command == "run":
        print(run_notebook(args.notebook, args.params, args.model))
    elif args.command == "index":
        print(write_index(args.params))
    elif args.command == "lab-settings":
        print(install_lab_settings())
    else:
        print(install_git_filter())
    return 0


if __name__ == "__main__":
    sys.exit(main())
