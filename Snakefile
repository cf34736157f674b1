# The study workflow: each rule runs one numbered notebook with papermill and renders its HTML
# report (helpers/report/notebooks.py). Collection is one job per model, so each can run on its own
# GPU or cluster node. Run it with `make reproduce` (local; profiles/default) or see docs/workflow.md
# for Slurm (profiles/slurm).
#
# Every rule declares what it reads, code included: every file of code its notebook runs
# (helpers.workflow.code_inputs: the import closure and the C++ sources its modules declare, from
# helpers.base.code), the parameter and prompt files, the paper's tables and a local model folder's
# files. So editing a module or a kernel reruns exactly the rules that use it, and deleting any
# intermediate file rebuilds it and what depends on it. Source inputs are declared by content
# (helpers.workflow.content_stamp; code by what it does, code_stamp, so a comment or docstring edit
# reruns nothing): an edit reruns even when it kept an older timestamp, a touch without a change
# reruns nothing. Every output is declared, in every
# format; the executed notebook is the rule's log, kept when it fails.
import json
import os
import re
import shlex
import sys
import time

sys.path.insert(0, workflow.basedir)

from helpers.base import paths  # noqa: E402
from helpers.core.registry import resolve  # noqa: E402
from helpers.study import MAIN_RUN, canonical_params, load_params, model_key  # noqa: E402
from helpers.study.outputs import (  # noqa: E402
    FINDINGS_FIGURES,
    FINDINGS_TABLES,
    RELEASED_DATA,
    SIGNATURE_FIGURES,
    SIGNATURE_TABLES,
    STUDY_FIGURES,
    STUDY_TABLES,
    RunOutputs,
    numbered_notebooks,
)
from helpers.base.code import code_files  # noqa: E402
from helpers.workflow import code_inputs, code_stamp, content_stamp, runner_inputs, text_stamp  # noqa: E402

# one spelling of the path: params/x.yaml, ./params/x.yaml and /abs/params/x.yaml are one command
PARAMS = canonical_params(config.get("params", "params/default.yaml"))
STUDY = load_params(PARAMS)  # checks every parameter before any job starts
OUT = RunOutputs(STUDY)
MODELS = {model_key(name): name for name in STUDY.models}
NOTEBOOKS = numbered_notebooks()
PY = shlex.quote(sys.executable)
RUN = f"{PY} -m helpers.report.notebooks run"
PARAMS_ARG = shlex.quote(PARAMS)
STAMPS = OUT.build / "inputs"


def stamped(files):
    """Each file (or model folder) as its content stamp, the rules' input in its place."""
    return [content_stamp(path, STAMPS) for path in files]


# the parameters as checked (a comment, a key order or the file's name changes nothing), the prompts by content
INPUTS = [text_stamp("parameters", json.dumps(STUDY.as_dict(), sort_keys=True), STAMPS), *stamped([STUDY.prompts_path])]
REFERENCE = stamped([*sorted(paths.REFERENCE.glob("*.csv")), *sorted((paths.REFERENCE / "raw").glob("*.txt"))])
FOLDERS = {key: stamped([name]) for key, name in MODELS.items() if resolve(name).source == "folder"}
ACTIVATIONS = STUDY.results / "activations"
# each model's prompt table, per-layer table, mean-pooled vectors and its random-weights copy's vectors
ACTIVATION_KINDS = ("", "_layers", "_vectors", "_random_vectors")
TABLE_FORMATS, FIGURE_FORMATS = ("csv", "md", "tex"), ("png", "svg")
FRONT_PAGE_CODE = code_files({"helpers.report.front_page"})


def code(stem):
    """The notebook (by content) and every file of code it runs (by what the code does: helpers.base.code)."""
    return [*stamped([NOTEBOOKS[stem]]), *(code_stamp(path, STAMPS) for path in code_inputs(NOTEBOOKS[stem]))]


# Committed outputs are update(): Snakemake does not delete them before the job, which checks them against what it
# computed and rewrites only those that differ beyond tolerance or were edited since their run wrote them
# (helpers/study/reproduction.py); the others keep their bytes and get a new modification time. Each such job
# records its comparisons in build/<run>/reproduction/<notebook>.json, which the front page and `make reproduce`
# summarise, and what it wrote (file hashes) in paper/records/[<run>/]<notebook>.json, committed with the outputs.
def tables(folder, names, flag=update):
    return [flag(folder / f"{name}.{suffix}") for name in names for suffix in TABLE_FORMATS]


def figures(names, flag=update):
    return [flag(OUT.figures / f"{name}.{suffix}") for name in names for suffix in FIGURE_FORMATS]


def released(flag=update):
    """The released data (paper/data[/<run>]/): each table as parquet and CSV, and the data card."""
    return [flag(OUT.released(name, suffix)) for name in RELEASED_DATA for suffix in ("parquet", "csv")] + [
        flag(OUT.data_card)
    ]


def plain(path):
    """A path without a flag: what rule all asks for (flags such as update() belong to outputs)."""
    return path


# Committed outputs are checked against the record of the run that wrote them (paper/records/), and each record
# against the copy this machine's last run kept (build/<run>/reproduction/), at every start: a file edited since
# (a number, a figure swapped by hand, with or without its record) or a record made elsewhere makes its notebook
# run again, which reports it by name and rewrites it, even when nothing else changed. A stamp per notebook, dated now when one of its files fails.
from snakemake_interface_executor_plugins.settings import ExecMode  # noqa: E402

from helpers.study.reproduction import verify  # noqa: E402


from helpers.study.reproduction import CHECKED_NOTEBOOKS as CHECKED  # noqa: E402  (outputs committed and checked)


def verified(notebook):
    """The stamp that stands for ``notebook``'s committed outputs being those its last run wrote: rewritten (new
    content, which Snakemake compares besides the time) whenever one of them fails its record."""
    stamp = STAMPS / f"outputs-{notebook}.verified"
    if not stamp.is_file():
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text("no committed output of this notebook has failed its record yet\n")
        os.utime(stamp, (86400, 86400))
    if workflow.exec_mode == ExecMode.DEFAULT:  # the main process: not once more in every job
        edited = verify(OUT.record(notebook), OUT.reproduction(notebook))
        if edited:
            print(f"Changed since the run that wrote them, so {notebook} runs again:", file=sys.stderr)
            lines = [item.line() for item in edited]
            print("".join(f"  {line}\n" for line in lines), end="", file=sys.stderr)
            stamp.write_text(f"found {time.time()}:\n" + "".join(f"{line}\n" for line in lines))
    return stamp


def benchmark(name):
    return OUT.build / "benchmarks" / f"{name}.tsv"


wildcard_constraints:
    model="|".join(map(re.escape, MODELS)),


localrules:
    all,
    index,


rule all:
    input:
        OUT.reports / "index.html",
        # every intermediate and every output too, so that deleting one (or a failed job's removing
        # its outputs) rebuilds it and what depends on it: Snakemake rebuilds only what is asked for
        expand(ACTIVATIONS / "{model}{kind}.parquet", model=MODELS, kind=ACTIVATION_KINDS),
        OUT.metrics,
        OUT.signatures,
        OUT.signatures_earlier,
        [OUT.aggregated / f"{name}.parquet" for name in STUDY_TABLES],
        OUT.all_reports(),
        tables(OUT.tables, [*STUDY_TABLES, *FINDINGS_TABLES, *SIGNATURE_TABLES], plain),
        released(plain),
        figures([*STUDY_FIGURES, *FINDINGS_FIGURES, *SIGNATURE_FIGURES], plain),
        [OUT.record(notebook) for notebook in CHECKED],


rule collect:
    input:
        code("01_collect_activations"),
        INPUTS,
        lambda wildcards: FOLDERS.get(wildcards.model, []),  # a local model folder's files, by content
    output:
        ACTIVATIONS / "{model}.parquet",
        ACTIVATIONS / "{model}_layers.parquet",
        ACTIVATIONS / "{model}_vectors.parquet",
        ACTIVATIONS / "{model}_random_vectors.parquet",
        OUT.reports / "01_collect_activations_{model}.html",
    log:
        OUT.build / "01_collect_activations_{model}.ipynb",
    benchmark:
        OUT.build / "benchmarks" / "collect_{model}.tsv"
    params:
        name=lambda wildcards: shlex.quote(MODELS[wildcards.model]),
    threads: 2
    resources:
        mem_mb=16000,
        runtime=120,
    shell:
        "OMP_NUM_THREADS={threads} {RUN} 01_collect_activations --params {PARAMS_ARG} --model {params.name}"


rule compute_metrics:
    input:
        code("02_compute_metrics"),
        INPUTS,
        expand(ACTIVATIONS / "{model}.parquet", model=MODELS),
    output:
        OUT.metrics,
        OUT.reports / "02_compute_metrics.html",
    log:
        OUT.executed("02_compute_metrics"),
    benchmark:
        benchmark("compute_metrics")
    shell:
        "{RUN} 02_compute_metrics --params {PARAMS_ARG}"


rule aggregate:
    input:
        code("03_aggregate"),
        INPUTS,
        REFERENCE,
        OUT.metrics,
    output:
        [OUT.aggregated / f"{name}.parquet" for name in STUDY_TABLES],
        OUT.reports / "03_aggregate.html",
    log:
        OUT.executed("03_aggregate"),
    benchmark:
        benchmark("aggregate")
    shell:
        "{RUN} 03_aggregate --params {PARAMS_ARG}"


rule plot:
    input:
        code("04_plot"),
        INPUTS,
        OUT.metrics,
        expand(ACTIVATIONS / "{model}_layers.parquet", model=MODELS),
        [OUT.aggregated / f"{name}.parquet" for name in STUDY_TABLES],
        OUT.reproduction("05_export_tables"),  # the tables behind the figures, checked and kept
        verified("04_plot"),
    output:
        figures(STUDY_FIGURES),
        OUT.reproduction("04_plot"),
        update(OUT.record("04_plot")),
        OUT.reports / "04_plot.html",
    log:
        OUT.executed("04_plot"),
    benchmark:
        benchmark("plot")
    shell:
        "{RUN} 04_plot --params {PARAMS_ARG}"


rule export_tables:
    input:
        code("05_export_tables"),
        INPUTS,
        [OUT.aggregated / f"{name}.parquet" for name in STUDY_TABLES],
        OUT.metrics,  # the entry counts behind the threshold tolerance, and the released per-prompt data
        expand(ACTIVATIONS / "{model}_layers.parquet", model=MODELS),  # the released per-layer summaries
        verified("05_export_tables"),
    output:
        tables(OUT.tables, STUDY_TABLES),
        released(),
        OUT.reproduction("05_export_tables"),
        update(OUT.record("05_export_tables")),
        OUT.reports / "05_export_tables.html",
    log:
        OUT.executed("05_export_tables"),
    benchmark:
        benchmark("export_tables")
    shell:
        "{RUN} 05_export_tables --params {PARAMS_ARG}"


rule robustness:
    input:
        code("06_robustness"),
        INPUTS,
        REFERENCE,
        OUT.metrics,
        expand(ACTIVATIONS / "{model}_layers.parquet", model=MODELS),
        OUT.signatures,  # finding 5's per-model tests, from notebook 08
        OUT.signatures_earlier,  # and under its earlier rule (the deviations log)
        verified("06_robustness"),
    output:
        tables(OUT.tables, FINDINGS_TABLES),
        figures(FINDINGS_FIGURES),
        OUT.reproduction("06_robustness"),
        update(OUT.record("06_robustness")),
        OUT.reports / "06_robustness.html",
        # the default run quotes its scorecard in the README, rewriting only the marked section
        [update(paths.ROOT / "README.md")] if STUDY.name == MAIN_RUN else [],
    log:
        OUT.executed("06_robustness"),
    benchmark:
        benchmark("robustness")
    shell:
        "{RUN} 06_robustness --params {PARAMS_ARG}"


# Notebook 08, finding 5 (activation signatures): probes and selective units from every model's stored
# prompt table, per-layer table and mean-pooled vectors; its per-model tests feed notebook 06's scorecard.
rule signatures:
    input:
        code("08_signatures"),
        INPUTS,
        expand(ACTIVATIONS / "{model}{kind}.parquet", model=MODELS, kind=ACTIVATION_KINDS),
        OUT.metrics,  # the entry counts behind the threshold tolerance of the reproduction check
        verified("08_signatures"),
    output:
        OUT.signatures,
        OUT.signatures_earlier,
        tables(OUT.tables, SIGNATURE_TABLES),
        figures(SIGNATURE_FIGURES),
        OUT.reproduction("08_signatures"),
        update(OUT.record("08_signatures")),
        OUT.reports / "08_signatures.html",
        # the default run quotes its per-model answer in docs/signatures.md, rewriting only the marked section
        [update(paths.ROOT / "docs" / "signatures.md")] if STUDY.name == MAIN_RUN else [],
    log:
        OUT.executed("08_signatures"),
    benchmark:
        benchmark("signatures")
    threads: 2
    shell:
        "OMP_NUM_THREADS={threads} {RUN} 08_signatures --params {PARAMS_ARG}"


# Notebook 07, the one-prompt explorer, rendered as a static report with its default prompt and
# the run's first model, placed among the run's prompts (metrics and that model's per-layer table).
rule explore:
    input:
        code("07_explore"),
        INPUTS,
        OUT.metrics,
        ACTIVATIONS / f"{model_key(STUDY.models[0])}_layers.parquet",
        ACTIVATIONS / f"{model_key(STUDY.models[0])}.parquet",  # the category probes (finding 5) fit on these
        ACTIVATIONS / f"{model_key(STUDY.models[0])}_vectors.parquet",
    output:
        OUT.reports / "07_explore.html",
    log:
        OUT.executed("07_explore"),
    benchmark:
        benchmark("explore")
    shell:
        "{RUN} 07_explore --params {PARAMS_ARG}"


rule index:
    input:
        OUT.all_reports(),
        [OUT.reproduction(n) for n in CHECKED],  # the front page's summary
        stamped(NOTEBOOKS.values()),  # each report's one-line description comes from its notebook
        [code_stamp(path, STAMPS) for path in FRONT_PAGE_CODE],  # the front page's own code (its cards count the findings' tables)
        INPUTS,
    output:
        OUT.reports / "index.html",
    shell:
        "{PY} -m helpers.report.front_page --params {PARAMS_ARG}"


# No front page shows an earlier run's results as if current: it says that a run is going from the moment jobs
# start (so a run killed however hard leaves it saying so), that the run failed on error, and nothing on success
# (helpers.workflow.mark_front_page).
onstart:
    from helpers.workflow import mark_front_page

    mark_front_page(OUT.reports / "index.html", STUDY.name, "running")


onsuccess:
    from helpers.workflow import mark_front_page

    mark_front_page(OUT.reports / "index.html", STUDY.name, None)


onerror:
    from helpers.workflow import mark_front_page

    mark_front_page(OUT.reports / "index.html", STUDY.name, "failed", log)
