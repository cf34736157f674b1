"""The study through ``profiles/slurm`` and snakemake-executor-plugin-slurm on a real Slurm cluster.

Each run is ``make reproduce PROFILE=slurm ...`` (the README's command) in a temporary copy of the
repository, against the single-node cluster of ``conftest.py``. One extra profile is passed after
``profiles/slurm`` (``SNAKEFLAGS=--profile ...``) only to make the plugin look at job states every
few seconds instead of waiting 40 s first; the resume test's extra profile also drops the GPU
request, as a cluster without GPUs would.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers.base import paths, store
from helpers.study import CATEGORIES, collection, load_params, model_key
from tests.cluster.harness import SlurmCluster

PROFILE = paths.ROOT / "profiles" / "slurm" / "config.yaml"
IGNORED = shutil.ignore_patterns(".venv", ".git", "results", "build", "reports", ".snakemake", ".cache", "__pycache__")
FAST_STATUS = {"slurm-init-seconds-before-status-checks": 2}
RESUME_MODEL = "smollm2-135m"
MAKE_TIMEOUT = 900


def copy_repo(destination: Path) -> Path:
    """A copy of the repository without generated folders, using this checkout's .venv."""
    shutil.copytree(paths.ROOT, destination, ignore=IGNORED)
    for generated in ("figures/smoke", "paper/tables/smoke", "paper/records/smoke"):
        shutil.rmtree(destination / generated, ignore_errors=True)
    (destination / ".venv").symlink_to(paths.ROOT / ".venv", target_is_directory=True)
    return destination


@dataclass
class Run:
    """One ``make reproduce`` in a copy of the repository, its output in its own log file."""

    root: Path
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def finish(self, timeout: float = MAKE_TIMEOUT) -> tuple[int, str]:
        """Wait for make to end: its return code and output."""
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"make reproduce ran past {timeout:.0f} s:\n{self.output()[-6000:]}") from None
        return code, self.output()

    def diagnostics(self, cluster: SlurmCluster) -> str:
        """Everything that says why a cluster run went wrong: make's output, the job logs, the daemon logs."""
        job_logs = sorted((self.root / ".snakemake" / "slurm_logs").rglob("*.log"))
        parts = [f"--- {self.log} ---\n{self.output()[-6000:]}"]
        parts += [f"--- {log} ---\n{log.read_text(errors='replace')[-3000:]}" for log in job_logs]
        parts.append(cluster.log_tail())
        return "\n".join(parts)


@contextlib.contextmanager
def make_reproduce(root: Path, environment: dict[str, str], *variables: str) -> Iterator[Run]:
    """Run ``make reproduce VARIABLES`` in ``root`` for the ``with`` block.

    ``-o`` keeps make from reinstalling the shared .venv from the copy: it is installed already.
    If the block ends with make still running (a failed assertion), its process group gets SIGINT,
    as from a Ctrl-C (Snakemake then cancels its Slurm jobs), and SIGKILL 60 s later.
    """
    command = ["make", "-o", ".venv/.installed", "-o", ".venv/.installed-cluster", "reproduce", *variables]
    log = root / f"make-{len(list(root.glob('make-*.log'))) + 1}.log"
    with open(log, "wb") as stream:
        stream.write(f"$ {' '.join(command)}\n".encode())
        stream.flush()
        process = subprocess.Popen(
            command, cwd=root, env=environment, stdout=stream, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield Run(root, process, log)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def write_profile(path: Path, settings: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(settings, sort_keys=False))
    return path


def rules_of_snakefile() -> list[str]:
    """Every rule that runs as a Slurm job: all but the Snakefile's ``localrules`` (``all`` only collects
    targets; ``index`` writes one small page), which run on the login node."""
    text = (paths.ROOT / "Snakefile").read_text()
    block = re.search(r"^localrules:\n((?:[ \t]+\w+,?[ \t]*\n)+)", text, re.M)
    local = set(re.findall(r"\w+", block.group(1))) if block else set()
    assert "all" in local, "the Snakefile's localrules block was not found"
    return [r for r in re.findall(r"^rule (\w+):", text, re.M) if r not in local]


def run_id(make_output: str) -> str:
    found = re.findall(r"SLURM run ID: (\S+)", make_output)
    assert len(found) == 1, f"expected one 'SLURM run ID' in the output, found {found}"
    return found[0]


def jobs_of_run(cluster: SlurmCluster, run: str) -> dict[str, dict[str, Any]]:
    """The Slurm jobs of one Snakemake run (the plugin names every job after the run), by job id, with their steps."""
    rows = cluster.accounting()
    jobs = {row["JobID"]: {**row, "steps": {}} for row in rows if row["JobName"] == run and "." not in row["JobID"]}
    for row in rows:
        job, _, step = row["JobID"].partition(".")
        if step and job in jobs:
            jobs[job]["steps"][step] = row
    return jobs


def tres(text: str) -> dict[str, str]:
    """'billing=4,cpu=4,gres/gpu=1,mem=32000M,node=1' -> {'cpu': '4', ...}."""
    return dict(item.split("=", 1) for item in text.split(",") if item)


def requested(profile: dict[str, Any], rule: str) -> dict[str, Any]:
    """What the profile asks Slurm for, for one rule: default resources, then the rule's own."""
    return {**profile.get("default-resources", {}), **profile.get("set-resources", {}).get(rule, {})}


def assert_allocation_follows_profile(job: dict[str, Any], resources: dict[str, Any]) -> None:
    allocated = tres(job["AllocTRES"])
    assert allocated.get("cpu") == str(resources["cpus_per_task"]), (job["Comment"], allocated)
    assert allocated.get("mem") == f"{resources['mem_mb']}M", (job["Comment"], allocated)
    gres = str(resources.get("gres") or "")
    gpus = gres.rsplit(":", 1)[-1] if gres.startswith("gpu") else None
    assert allocated.get("gres/gpu") == (gpus if gpus is None or gpus.isdigit() else "1"), (job["Comment"], allocated)
    minutes = int(resources["runtime"])
    assert job["Timelimit"] == f"{minutes // 60:02d}:{minutes % 60:02d}:00", (job["Comment"], job["Timelimit"])


def test_smoke_study_through_slurm_gives_the_tables_of_a_local_run(
    slurm: SlurmCluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    base = tmp_path_factory.mktemp("smoke")
    local, cluster = copy_repo(base / "local"), copy_repo(base / "slurm")
    fast = write_profile(base / "fast-status" / "config.yaml", FAST_STATUS)

    variables = ("PROFILE=slurm", "PARAMS=params/smoke.yaml", f"SNAKEFLAGS=--profile {fast}")
    # side by side: the cluster run mostly waits on Slurm, the local run computes
    with (
        make_reproduce(local, dict(os.environ), "PARAMS=params/smoke.yaml") as local_run,
        make_reproduce(cluster, slurm.environment, *variables) as cluster_run,
    ):
        code, log = local_run.finish()
        assert code == 0, log[-6000:]
        assert "SLURM run ID" not in log  # the reference run is local
        code, log = cluster_run.finish()
        assert code == 0, cluster_run.diagnostics(slurm)

    def tables(root: Path) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted((root / "paper" / "tables" / "smoke").glob("*.csv"))}

    expected, got = tables(local), tables(cluster)
    assert len(expected) > 20 and got.keys() == expected.keys()
    assert [name for name in expected if got[name] != expected[name]] == []

    # every job went through sbatch, ran its command in an srun step, and got what the profile asks for
    profile = yaml.safe_load(PROFILE.read_text())
    models = [model_key(m) for m in load_params(paths.PARAMS / "smoke.yaml").models]
    wanted = {
        f"rule_{rule}_wildcards_{m}" if rule == "collect" else f"rule_{rule}": rule
        for rule in rules_of_snakefile()
        for m in (models if rule == "collect" else [None])
    }
    jobs = jobs_of_run(slurm, run_id(log))
    assert sorted(job["Comment"] for job in jobs.values()) == sorted(wanted), jobs
    for job in jobs.values():
        assert (job["State"], job["ExitCode"]) == ("COMPLETED", "0:0"), job
        assert job["steps"].get("0", {}).get("State") == "COMPLETED", f"no srun step for {job['Comment']}: {job}"
        assert_allocation_follows_profile(job, requested(profile, wanted[job["Comment"]]))
    assert any("gres/gpu" in job["AllocTRES"] for job in jobs.values()), "no job asked for a GPU"


def chunk_times(folder: Path) -> dict[str, int]:
    """Every chunk file in ``folder`` (``collection.chunk_of``: no half-written ``.*.tmp``) by name: its time."""
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("*.parquet") if collection.chunk_of(p) is not None}


def test_a_collection_job_cancelled_with_scancel_resumes_without_remeasuring(
    slurm: SlurmCluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    base = tmp_path_factory.mktemp("resume")
    root = copy_repo(base / "repo")
    raw = {
        "name": "cluster-resume",
        "models": [RESUME_MODEL],
        "prompts_per_category": 8,  # 12 chunks of 8 prompts: long enough to cancel mid-run
        "batch_size": 4,
        "device": "cpu",
    }
    (root / "params" / "cluster-resume.yaml").write_text(yaml.safe_dump(raw))
    params = load_params(root / "params" / "cluster-resume.yaml")
    profile = yaml.safe_load(PROFILE.read_text())
    without_gpu = {rule: dict(values) for rule, values in profile["set-resources"].items()}
    without_gpu["collect"].pop("gres")  # a cluster without GPUs: the rest of the request stands
    extra = write_profile(base / "no-gpu" / "config.yaml", {**FAST_STATUS, "set-resources": without_gpu})
    variables = ("PROFILE=slurm", "PARAMS=params/cluster-resume.yaml", f"SNAKEFLAGS=--profile {extra} --until collect")
    chunks = root / "results" / params.name / "activations" / f"{model_key(RESUME_MODEL)}.chunks"
    final = root / "results" / params.name / "activations" / f"{model_key(RESUME_MODEL)}.parquet"
    comment = f"rule_collect_wildcards_{model_key(RESUME_MODEL)}"

    with make_reproduce(root, slurm.environment, *variables) as run:
        deadline = time.monotonic() + 600
        while len(collection.complete_chunks(chunks)) < 3:
            assert run.process.poll() is None, "the run ended before it could be cancelled:\n" + run.diagnostics(slurm)
            assert time.monotonic() < deadline, "no 3 chunks in 600 s:\n" + run.diagnostics(slurm)
            time.sleep(0.1)
        queue = slurm.run("squeue", "--noheader", "--format=%i|%k").stdout.split()
        job_ids = [line.split("|", 1)[0] for line in queue if line.endswith(f"|{comment}")]
        assert len(job_ids) == 1, queue
        slurm.run("scancel", job_ids[0])
        # Snakemake must notice by itself (profiles/slurm: slurm-status-command squeue) and stop
        code, log = run.finish(timeout=300)
    assert code != 0, "Snakemake should report the cancelled job as failed:\n" + log[-4000:]
    assert f"SLURM-job '{job_ids[0]}' failed, SLURM status is: 'CANCELLED'" in log, log[-4000:]
    _wait_until_gone(slurm, job_ids[0])  # its processes are ended: no chunk is written after this
    before = chunk_times(chunks)
    complete = collection.complete_chunks(chunks)
    assert 3 <= len(complete) < len(CATEGORIES), f"cancelled after {len(complete)} of {len(CATEGORIES)} chunks"
    assert not final.exists(), "cancelled mid-collection: no final table yet"
    cancelled = jobs_of_run(slurm, run_id(log))
    assert [job["State"] for job in cancelled.values()] == ["CANCELLED by 0"], cancelled

    with make_reproduce(root, slurm.environment, *variables) as run:
        code, log = run.finish()
        assert code == 0, run.diagnostics(slurm)
    after = chunk_times(chunks)
    kept = [path.name for key in complete for path in collection.chunk_files(chunks, key).values()]
    assert {name: after.get(name) for name in kept} == {name: before[name] for name in kept}, "chunks re-measured"
    assert len(after) == len(collection.CHUNK_PARTS) * len(CATEGORIES) and not list(chunks.glob(".*.tmp"))
    assert store.read_metadata(final)["chunks_measured_now"] == len(CATEGORIES) - len(complete)
    resumed = jobs_of_run(slurm, run_id(log))
    assert [job["Comment"] for job in resumed.values()] == [comment]
    for job in resumed.values():
        assert job["State"] == "COMPLETED", job
        assert_allocation_follows_profile(job, requested({**profile, "set-resources": without_gpu}, "collect"))
    print(f"cancelled after {len(complete)} chunks; the rerun measured {len(CATEGORIES) - len(complete)}")


def _wait_until_gone(cluster: SlurmCluster, job_id: str, timeout: float = 120) -> None:
    """Wait until Slurm has ended every process of the job (it leaves the queue after COMPLETING)."""
    deadline = time.monotonic() + timeout
    while cluster.run("squeue", "--noheader", f"--jobs={job_id}", "--format=%T", check=False).stdout.strip():
        assert time.monotonic() < deadline, f"job {job_id} still in the queue {timeout:.0f} s after scancel"
        time.sleep(0.5)
