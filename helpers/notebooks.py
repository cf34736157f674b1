"""Run the numbered notebooks with papermill, render them to HTML, and write the report index.

``python -m helpers.notebooks run NOTEBOOK --params FILE [--model NAME]`` executes one notebook
into the build folder (never over the source) and renders a ``--no-input`` HTML report;
``python -m helpers.notebooks index --params FILE`` writes ``index.html``. The Snakefile calls
these; so can you.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from helpers import paths, store
from helpers.study import StudyParams, ensure_writable, load_params, model_key, run_provenance


def numbered_notebooks() -> dict[str, Path]:
    """The study's notebooks, found by glob: stem -> path, in order."""
    return {path.stem: path for path in sorted(paths.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))}


@dataclass(frozen=True)
class RunOutputs:
    """Where a run writes: the default run to figures/, paper/tables/, reports/; others to a subfolder."""

    params: StudyParams

    def _folder(self, base: Path) -> Path:
        return base if self.params.name == "default" else base / self.params.name

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


def render_html(executed: Path, target: Path) -> Path:
    """Render an executed notebook to a standalone HTML report without code cells (figures embedded)."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nbformat.read(executed, as_version=4))
    return store.write_text(body, target)


def run_notebook(notebook: str, params_file: str, model: str | None = None, progress: bool = True) -> Path:
    """Execute ``notebook`` (stem, e.g. '01_collect_activations') with papermill, then render its report."""
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
    os.environ.setdefault("PYTHONPATH", str(paths.ROOT))
    papermill.execute_notebook(
        str(notebooks[notebook]),
        str(executed),
        parameters=parameters,
        kernel_name="python3",
        cwd=str(paths.ROOT),
        progress_bar=progress,
        log_output=False,
    )
    return render_html(executed, outputs.report(notebook, model))


def write_index(params_file: str) -> Path:
    """reports/index.html: links to every report, with the run's parameters, library versions and input hashes."""
    params = load_params(params_file)
    outputs = RunOutputs(params)
    provenance = run_provenance(params)
    items = "\n".join(
        f'<li><a href="{html.escape(path.name)}">{html.escape(path.stem)}</a></li>' for path in outputs.all_reports()
    )
    body = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Neural activation patterns: run {html.escape(params.name)}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}pre{{background:#f4f4f4;padding:1em}}</style>
</head><body>
<h1>Neural activation patterns across language models</h1>
<p>Reproduction of arXiv 2605.15436, run <b>{html.escape(params.name)}</b> ({html.escape(str(params_file))}).</p>
<h2>Reports</h2>
<ol>
{items}
</ol>
<p>Tables: <code>{html.escape(str(outputs.tables.relative_to(paths.ROOT)))}</code>;
figures: <code>{html.escape(str(outputs.figures.relative_to(paths.ROOT)))}</code>.</p>
<h2>Parameters, library versions and input hashes</h2>
<pre>{html.escape(json.dumps(provenance, indent=2, sort_keys=True, default=str))}</pre>
</body></html>
"""
    return store.write_text(body, outputs.reports / "index.html")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.notebooks", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="execute one notebook and render its HTML report")
    run.add_argument("notebook", help="notebook stem, e.g. 01_collect_activations")
    run.add_argument("--params", required=True, help="parameter file, e.g. params/default.yaml")
    run.add_argument("--model", default=None, help="model name (notebook 01 only)")
    index = commands.add_parser("index", help="write the HTML index of a run")
    index.add_argument("--params", required=True)
    args = parser.parse_args(argv)
    if args.command == "run":
        print(run_notebook(args.notebook, args.params, args.model))
    else:
        print(write_index(args.params))
    return 0


if __name__ == "__main__":
    sys.exit(main())
