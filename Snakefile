# The study workflow: each rule runs one numbered notebook with papermill and renders its HTML
# report (helpers/notebooks.py). Collection is one job per model, so each can run on its own
# GPU or cluster node. Run it with `make reproduce` (local), or see the README for Slurm.
#
#   snakemake --cores 1 --config params=params/default.yaml
import sys

sys.path.insert(0, workflow.basedir)

from helpers.notebooks import RunOutputs  # noqa: E402
from helpers.study import load_params, model_key  # noqa: E402
from helpers.tables import OUTPUT_TABLES  # noqa: E402
from helpers.figures import OUTPUT_FIGURES, ROBUSTNESS_FIGURES  # noqa: E402
from helpers.robustness import ROBUSTNESS_TABLES  # noqa: E402

PARAMS = config.get("params", "params/default.yaml")
STUDY = load_params(PARAMS)
OUT = RunOutputs(STUDY)
MODELS = {model_key(name): name for name in STUDY.models}
PY = sys.executable
RUN = f"{PY} -m helpers.notebooks run"


def notebook(stem):
    return f"notebooks/{stem}.ipynb"


rule all:
    input:
        OUT.reports / "index.html",


rule collect:
    input:
        notebook("01_collect_activations"),
        PARAMS,
        STUDY.prompts_path,
    output:
        STUDY.results / "activations" / "{model}.parquet",
        STUDY.results / "activations" / "{model}_layers.parquet",
        OUT.reports / "01_collect_activations_{model}.html",
    params:
        name=lambda wildcards: MODELS[wildcards.model],
    shell:
        "{RUN} 01_collect_activations --params {PARAMS} --model '{params.name}'"


rule compute_metrics:
    input:
        notebook("02_compute_metrics"),
        expand(STUDY.results / "activations" / "{model}.parquet", model=MODELS),
    output:
        OUT.metrics,
        OUT.reports / "02_compute_metrics.html",
    shell:
        "{RUN} 02_compute_metrics --params {PARAMS}"


rule aggregate:
    input:
        notebook("03_aggregate"),
        OUT.metrics,
    output:
        [OUT.aggregated / f"{name}.parquet" for name in OUTPUT_TABLES],
        OUT.reports / "03_aggregate.html",
    shell:
        "{RUN} 03_aggregate --params {PARAMS}"


rule plot:
    input:
        notebook("04_plot"),
        [OUT.aggregated / f"{name}.parquet" for name in OUTPUT_TABLES],
    output:
        [OUT.figures / f"{name}.png" for name in OUTPUT_FIGURES],
        OUT.reports / "04_plot.html",
    shell:
        "{RUN} 04_plot --params {PARAMS}"


rule export_tables:
    input:
        notebook("05_export_tables"),
        [OUT.aggregated / f"{name}.parquet" for name in OUTPUT_TABLES],
    output:
        [OUT.tables / f"{name}.csv" for name in OUTPUT_TABLES],
        OUT.reports / "05_export_tables.html",
    shell:
        "{RUN} 05_export_tables --params {PARAMS}"


rule robustness:
    input:
        notebook("06_robustness"),
        OUT.metrics,
    output:
        [OUT.tables / f"{name}.csv" for name in ROBUSTNESS_TABLES],
        [OUT.figures / f"{name}.png" for name in ROBUSTNESS_FIGURES],
        OUT.reports / "06_robustness.html",
    shell:
        "{RUN} 06_robustness --params {PARAMS}"


# Notebook 07, the one-prompt explorer, rendered as a static report with its default prompt and
# the run's first model, placed among the run's prompts (metrics and that model's per-layer table).
rule explore:
    input:
        notebook("07_explore"),
        "helpers/explore.py",
        OUT.metrics,
        STUDY.activations_path(STUDY.models[0], "layers"),
    output:
        OUT.reports / "07_explore.html",
    shell:
        "{RUN} 07_explore --params {PARAMS}"


rule index:
    input:
        OUT.all_reports(),
    output:
        OUT.reports / "index.html",
    shell:
        "{PY} -m helpers.notebooks index --params {PARAMS}"
