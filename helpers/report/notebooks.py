"""Run the numbered notebooks with papermill, render them to HTML reports, and write the study's front page.

``python -m helpers.report.notebooks run NOTEBOOK --params FILE [--model NAME]`` executes one notebook
into the build folder (never over the source) and renders a code-free HTML report;
``python -m helpers.report.notebooks explore --prompt TEXT [--model NAME]`` renders the explorer for your own prompt
(``make explore``). The study's front page is ``python -m helpers.report.front_page --params FILE``. The Snakefile
calls these; so can you.

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
import os
import re
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers.base import paths, store
from helpers.report.style import STYLE
from helpers.report.tables import REPORT_FOLDER_ENVIRONMENT, assert_script_free, relative
from helpers.report.tables import csv_link as csv_link  # re-exported: the notebooks call notebooks.show_table, ...
from helpers.report.tables import files_table as files_table
from helpers.report.tables import provenance_html as provenance_html
from helpers.report.tables import show_provenance as show_provenance
from helpers.report.tables import show_table as show_table
from helpers.report.tables import show_text as show_text
from helpers.study import ensure_writable, load_params
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
def _report_environment(report_folder: Path | None = None) -> Iterator[None]:
    """Environment of a papermill run: no progress bars in the kernel, static views (``interactive`` is False),
    links to tables relative to ``report_folder``; restored afterwards."""
    quiet = {"COMPENDIUM_REPORT": "1", "TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    if report_folder is not None:
        quiet[REPORT_FOLDER_ENVIRONMENT] = str(report_folder)
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

_STYLE = STYLE

_REPORT_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block extra_css -%}<style type="text/css">{{ resources.compendium.style }}</style>{%- endblock extra_css -%}
{%- block body_header -%}
{{ super() }}
<nav class="compendium"><a href="{{ resources.compendium.index }}" rel="index">&#8962; Study index</a>
{%- if resources.compendium.previous %}
 <a href="{{ resources.compendium.previous[0] | escape }}" rel="prev">&larr;
 {{- resources.compendium.previous[1] | escape }}</a>
{%- endif %}
{%- if resources.compendium.next %}
 <a href="{{ resources.compendium.next[0] | escape }}" rel="next">{{ resources.compendium.next[1] | escape }} &rarr;</a>
{%- endif %}
 <span class="where">{{ resources.compendium.run | escape }} &middot; made by
 <code>{{ resources.compendium.notebook | escape }}</code></span></nav>
{%- endblock body_header -%}
{% block data_png scoped %}
<div class="jp-RenderedImage jp-OutputArea-output {{ extra_class }}">
<img src="data:image/png;base64,{{ output.data['image/png'] | escape_html }}"
 alt="{{ output | get_metadata('alt', 'image/png') | default('figure', true) | escape_html }}">
</div>
{%- endblock data_png %}
"""
"""The report page: JupyterLab's nbconvert template without any script (no require.js, MathJax,
mermaid or widget manager from a CDN), with a bar linking to the index and to the previous and next
reports; every image has the alt text ``describe_figures`` gives it."""


_FIGURE_NAME = re.compile(
    r"""\[["']([\w.-]+)["']\]|\bshow\(["']([^"']+)["']\)|\b(?:explore|explore_figures|figures|finding_figures)\.(\w+)\("""
)


def _plain(markdown: str) -> str:
    """Markdown or HTML as plain text: tags, emphasis and code marks dropped, whitespace collapsed."""
    text = re.sub(r"<[^>]+>", "", markdown)
    text = re.sub(r"^#+\s*", "", text, flags=re.MULTILINE)
    return " ".join(text.replace("*", "").replace("`", "").split())


def describe_figures(node: Any) -> int:
    """Give every PNG output of an executed notebook an alt text: the figure's name and its caption.

    The name is read off the cell (``study_figures["layer_profiles"]`` or ``explore_figures.head_view(...)``,
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


Link = tuple[str, str]
"""A link in a report's bar: (href relative to the report, its text)."""


def render_html(
    executed: Path,
    target: Path,
    title: str = "",
    run: str = "",
    notebook: str = "",
    previous: Link | None = None,
    next_: Link | None = None,
    index: str = "index.html",
) -> Path:
    """Render an executed notebook to a standalone HTML report: no code, no scripts, figures embedded.

    Cells tagged ``remove-cell`` (and the parameters cells) are left out, ``remove-output`` cells
    lose their output; the page is titled ``title`` and links to ``index`` (the study's front page) and to
    the ``previous`` and ``next_`` reports. A page that would run code in a browser is refused
    (``tables.assert_script_free``): every text from data must reach it escaped.
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
        "compendium": {
            "style": _STYLE,
            "index": index,
            "run": run,
            "notebook": notebook,
            "previous": previous,
            "next": next_,
        },
    }
    body, _ = exporter.from_notebook_node(node, resources=resources)
    return store.write_text(assert_script_free(body, f"the report {Path(target).name}"), target)


def neighbours(outputs: RunOutputs, notebook: str, model: str | None = None) -> tuple[Link | None, Link | None]:
    """The reports before and after this one in the study's order (``RunOutputs.all_reports``), as links."""
    order: list[tuple[str, str | None]] = []
    for stem in numbered_notebooks():
        order.extend((stem, m) for m in (outputs.params.models if stem.startswith("01_") else [None]))
    if (notebook, model) not in order:
        return None, None
    position = order.index((notebook, model))

    def link(at: int) -> Link | None:
        if not 0 <= at < len(order):
            return None
        stem, of = order[at]
        return outputs.report(stem, of).name, report_title(stem, of)

    return link(position - 1), link(position + 1)


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
    with _report_environment(outputs.reports):
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
    previous, next_ = neighbours(outputs, notebook, model)
    return render_html(
        executed,
        outputs.report(notebook, model),
        title=report_title(notebook, model, params.name),
        run=run,
        notebook=f"notebooks/{notebook}.ipynb",
        previous=previous,
        next_=next_,
    )


EXPLORER = "07_explore"


def _slug(text: str, limit: int = 40) -> str:
    """A file-name-safe short form of a prompt: 'what-is-the-derivative-of-x-squared'."""
    words = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return (words[:limit].rstrip("-") or "prompt") + "-" + __import__("hashlib").sha256(text.encode()).hexdigest()[:8]


def explore_report(
    params_file: str,
    prompt: str,
    model: str | None = None,
    layer: int | None = None,
    head: int = 0,
    progress: bool = False,
) -> Path:
    """Render the explorer (notebook 07) for your own ``prompt`` and ``model`` to an HTML report, through papermill.

    The page goes to ``reports[/<run>]/explore/<slug of the prompt>.html`` (the executed notebook beside the run's
    in ``build/<run>/explore/``), placed among the run's prompts when the run has been made. The prompt and the
    model are checked before any model work. ``make explore PROMPT="..." MODEL=...`` calls this.
    """
    import papermill

    from helpers.base.checks import is_blank
    from helpers.core.registry import UnknownModelError, resolve

    if is_blank(prompt):
        raise ValueError('the prompt is empty: give some text (make explore PROMPT="What is 2+2?")')
    params = load_params(params_file)
    model = model or params.models[0]
    try:
        resolve(model)
    except UnknownModelError as error:
        raise ValueError(f"model {model!r}: {error}") from None
    outputs = RunOutputs(params)
    slug = _slug(prompt)
    executed = outputs.build / "explore" / f"{slug}.ipynb"
    target = outputs.reports / "explore" / f"{slug}.html"
    for folder in (executed.parent, target.parent):
        ensure_writable(folder)
    parameters: dict[str, Any] = {"params_file": str(params_file), "prompt": prompt, "model": model, "head": head}
    if layer is not None:
        parameters["layer"] = layer
    with _report_environment(target.parent):
        papermill.execute_notebook(
            str(numbered_notebooks()[EXPLORER]),
            str(executed),
            parameters=parameters,
            kernel_name="python3",
            cwd=str(paths.ROOT),
            progress_bar=progress,
            log_output=False,
        )
    return render_html(
        executed,
        target,
        title=f"Explore one prompt: {model} (run {params.name})",
        run=f"run {params.name} ({Path(params_file).name})",
        notebook=f"notebooks/{EXPLORER}.ipynb",
        index="../index.html",
    )


# --- the front page: its own module and command (helpers.report.front_page), not imported here: the runner every
# notebook rule runs stays free of the findings' code (helpers.workflow.RUNNER); only a failed run's page is here ----

_relative = relative


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.report.notebooks", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="execute one notebook and render its HTML report")
    run.add_argument("notebook", help="notebook stem, e.g. 01_collect_activations")
    run.add_argument("--params", required=True, help="parameter file, e.g. params/default.yaml")
    run.add_argument("--model", default=None, help="model name (notebook 01 only)")
    explore = commands.add_parser("explore", help="render the explorer for your own prompt and model to HTML")
    explore.add_argument("--params", default="params/default.yaml", help="the run to place the prompt among")
    explore.add_argument("--prompt", required=True, help="the prompt's text")
    explore.add_argument("--model", default=None, help="a model name (default: the run's first model)")
    explore.add_argument("--layer", type=int, default=None, help="the layer whose attention is drawn (1..L)")
    explore.add_argument("--head", type=int, default=0, help="the head whose attention pattern is drawn")
    commands.add_parser("git-filter", help="set the nbstripout git filter named in .gitattributes")
    commands.add_parser("lab-settings", help="JupyterLab without the news pop-up, for this environment")
    args = parser.parse_args(argv)
    if args.command == "run":
        print(run_notebook(args.notebook, args.params, args.model))
    elif args.command == "explore":
        try:
            print(explore_report(args.params, args.prompt, args.model or None, args.layer, args.head, progress=True))
        except ValueError as error:
            print(f"make explore: {error}", file=sys.stderr)
            return 2
    elif args.command == "lab-settings":
        print(install_lab_settings())
    else:
        print(install_git_filter())
    return 0


if __name__ == "__main__":
    sys.exit(main())
