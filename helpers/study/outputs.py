"""What each notebook makes, by name, and where a run writes it: the one list of every table and figure of
a run, and ``RunOutputs``, a run's folders and files.

Light on purpose (no torch, nothing beyond the study's parameters): the Snakefile reads it to declare
every output, and the modules that make the outputs (``tables``, ``figures``, ``findings``) take their
names from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from helpers.base import paths
from helpers.study import MAIN_RUN, StudyParams, model_key

PUBLISHED_SUMMARIES: dict[str, str] = {
    "model_summary": "model_summary",
    "category_performance": "category_performance_across_models",
    "architecture_comparison": "architecture_comparison",
    "parameter_scale": "parameter_scale_analysis",
    "top10_final_activation": "top_10_by_final_activation",
    "top10_attention_entropy": "top_10_by_attention_entropy",
    "top10_lowest_sparsity": "top_10_by_lowest_sparsity_highest_density",
}
"""Our summary table -> the published CSV (data/reference/) it corresponds to."""

STUDY_TABLES: tuple[str, ...] = (
    "complete_results",
    "complete_results_extended",
    "sample_inputs",
    *PUBLISHED_SUMMARIES,
    "published_vs_reproduced_categories",
    "published_vs_reproduced_architectures",
    "published_vs_reproduced_models",
    "paper_consistency",
)
"""Every table notebook 03 makes and notebook 05 exports to paper/tables/ (CSV, Markdown, LaTeX)."""

STUDY_FIGURES: tuple[str, ...] = (
    "heatmap_final_activation",
    "heatmap_attention_entropy",
    "heatmap_max_sparsity",
    "heatmap_final_activation_by_model",
    "heatmap_attention_entropy_by_model",
    "heatmap_max_sparsity_by_model",
    "architecture_comparison",
    "layer_profiles",
    "entropy_vs_tokens",
    "category_ranking_attention_entropy",
)
"""Every figure notebook 04 makes (PNG and SVG in figures/)."""

FINDINGS_FIGURES: tuple[str, ...] = (
    "finding1_categories",
    "finding1_length_contrasts",
    "sparsity_variants",
    "sparsity_layer_profiles",
)
"""Every figure notebook 06 makes (PNG and SVG in figures/)."""

FINDINGS_TABLES: tuple[str, ...] = (
    "findings_scorecard",
    "findings_on_published_data",
    "power_analysis",
    "finding1_per_model",
    "finding1_categories",
    "finding1_length_contrasts",
    "finding3_gpt2_contrasts",
    "length_models",
    "sparsity_variants",
    "sparsity_interpretation",
    "operating_characteristics",
    "natural_experiments",
    "model_pair_contrasts",
    "cell_intervals",
    "top10_stability",
)
"""Every table notebook 06 exports to paper/tables/ (CSV, Markdown, LaTeX)."""

SIGNATURE_TABLES: tuple[str, ...] = (
    "signature_tests",
    "signature_verdicts",
    "signature_probes",
    "signature_units",
    "signature_unit_owners",
    "signature_transfer",
    "signature_sizes",
)
"""Every table notebook 08 (finding 5, activation signatures) exports to paper/tables/ (CSV, Markdown, LaTeX)."""

SIGNATURE_FIGURES: tuple[str, ...] = ("signature_probe_depth", "signature_units_depth")
"""Every figure notebook 08 makes (PNG and SVG in figures/)."""


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
    def signatures(self) -> Path:
        """Finding 5's per-model tests (notebook 08), which notebook 06 puts in the scorecard."""
        return self.params.results / "signatures.parquet"

    @property
    def aggregated(self) -> Path:
        return self.params.results / "tables"

    @property
    def records(self) -> Path:
        """Where the records of what each notebook wrote are committed with the outputs (``paper/records/``)."""
        return self._folder(paths.PAPER / "records")

    def record(self, notebook: str) -> Path:
        """The committed record of the outputs ``notebook`` wrote: their hashes (``helpers.study.reproduction``)."""
        return self.records / f"{notebook}.json"

    @property
    def reproduction_records(self) -> Path:
        return self.build / "reproduction"

    def reproduction(self, notebook: str) -> Path:
        """Where ``notebook`` records its reproduction check (``helpers.study.reproduction``)."""
        return self.reproduction_records / f"{notebook}.json"

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
