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
    "deviations",
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
    "signature_operating_characteristics",
    "signature_earlier_rule",
)
"""Every table notebook 08 (finding 5, activation signatures) exports to paper/tables/ (CSV, Markdown, LaTeX)."""

SIGNATURE_FIGURES: tuple[str, ...] = ("signature_probe_depth", "signature_units_depth")
"""Every figure notebook 08 makes (PNG and SVG in figures/)."""


TABLE_DESCRIPTIONS: dict[str, str] = {
    "complete_results": "the paper's TABLE 1 recomputed: each model x category mean of A_f, H_att and S_max",
    "complete_results_extended": "TABLE 1 with tokens and every further metric (pre-norm A_f, normalised H_att, ...)",
    "sample_inputs": "one prompt per category with its token count in each model",
    "model_summary": "the paper's TABLE 2 recomputed: each model's means over its prompts",
    "category_performance": "the paper's TABLE 3 recomputed: each category's mean and SD over the cells",
    "architecture_comparison": "the paper's TABLE 4 recomputed: encoder and decoder means (pooled raw means)",
    "parameter_scale": "the paper's TABLE 5 recomputed: means by parameter count",
    "top10_final_activation": "the paper's TABLE 6: the ten model x category cells with the highest A_f",
    "top10_attention_entropy": "the paper's TABLE 6: the ten cells with the highest H_att",
    "top10_lowest_sparsity": "the paper's TABLE 6: the ten cells with the lowest S_max",
    "published_vs_reproduced_categories": "each category's mean and rank, the paper's beside this run's "
    "(pooled raw means)",
    "published_vs_reproduced_architectures": "decoder / encoder ratio of each metric, the paper's beside this run's "
    "(pooled raw means)",
    "published_vs_reproduced_models": "the paper's cells beside this run's for the paper's own models (when run)",
    "paper_consistency": "whether the paper's summary tables follow from its TABLE 1 (each value rederived)",
    "findings_scorecard": "every finding: claim, unit, evidence, test, interval and verdict",
    "findings_on_published_data": "every finding tested on the paper's own table, and its verdict there",
    "power_analysis": "how many prompts or models each rule needs for 80% power, beside what the paper had",
    "finding1_per_model": "finding 1 per model: math's rank at matched length, its closest rival and the verdict",
    "finding1_categories": "finding 1 per model and category: mean H_att raw and at matched length, rank interval",
    "finding1_length_contrasts": "finding 1 by prompt length: math minus each category along the token range",
    "finding3_gpt2_contrasts": "finding 3: GPT-2 minus each other model in A_f on shared prompts (when GPT-2 is run)",
    "length_models": "how much of each metric prompt length explains, per model (linear, n log n, spline)",
    "sparsity_variants": "finding 2 under every sparsity measure: each decoder / encoder pair and the overall ratio",
    "sparsity_interpretation": "where each model's S_max sits (embedding output or deeper) and its massive activations",
    "operating_characteristics": "each rule on simulated runs with a planted truth: how often it gives each verdict",
    "natural_experiments": "pairs of models that differ in one thing (size, fine-tune): paired contrasts per metric",
    "model_pair_contrasts": "every pair of models compared on shared prompts, per metric",
    "cell_intervals": "each model x category mean with its 95% bootstrap interval",
    "top10_stability": "how stable the top-10 cells are when prompts are resampled",
    "signature_tests": "finding 5 per model and probe: accuracy, words alone, layer 0, gain beyond the words, tests",
    "signature_verdicts": "finding 5 per model: what the words give, what the later layers add, verdict",
    "signature_probes": "finding 5 per model and layer: probe accuracy by depth beside the words alone and layer 0",
    "signature_units": "finding 5 per model and layer: selective units beyond layer 0 and a random-weights copy",
    "signature_unit_owners": "finding 5: how many selective units each category has, per model",
    "signature_transfer": "finding 5: a probe trained on one model's profiles tested on another's (cross-fitted, Holm)",
    "signature_sizes": "finding 5: the size of each model's stored vectors",
    "signature_operating_characteristics": "finding 5's rule on planted truths: negative controls, planted signals",
    "signature_earlier_rule": "finding 5 per model under its earlier rule (surface baseline), for the deviations log",
    "deviations": "each rule changed after data were seen: its verdict under the earlier and the current rule",
}
"""What each table shows, in one line (the front page's table list)."""

RELEASED_DATA: dict[str, str] = {
    "measurements": "every model x prompt: the paper's three metrics, every further metric, tokens and the prompt's "
    "surface covariates",
    "layer_summary": "every model x category x layer x per-layer statistic: mean, SD and count over the prompts",
}
"""The run's released data (paper/data[/<run>]/<name>.parquet and .csv, with DATA_CARD.md), written by notebook 05."""


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
    def data(self) -> Path:
        """The released per-prompt data (``RELEASED_DATA``) and its data card."""
        return self._folder(paths.PAPER / "data")

    def released(self, name: str, suffix: str = "parquet") -> Path:
        return self.data / f"{name}.{suffix}"

    @property
    def data_card(self) -> Path:
        return self.data / "DATA_CARD.md"

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
    def signatures_earlier(self) -> Path:
        """Finding 5's per-model tests under its earlier rule (notebook 08), for the deviations log (notebook 06)."""
        return self.params.results / "signatures_earlier_rule.parquet"

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
        reports: list[Path] = []
        for notebook in numbered_notebooks():
            models = self.params.models if notebook.startswith("01_") else [None]
            reports.extend(self.report(notebook, model) for model in models)
        return reports
