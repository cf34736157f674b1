"""profiles/slurm agrees with the Snakefile and pyproject.toml (the cluster run itself: tests/cluster/)."""

from __future__ import annotations

import re
import subprocess
import tomllib

import yaml

from helpers.base import paths

PROFILE = paths.ROOT / "profiles" / "slurm" / "config.yaml"


def _rules() -> set[str]:
    return set(re.findall(r"^rule (\w+):", (paths.ROOT / "Snakefile").read_text(), re.M))


def test_slurm_profile_names_only_rules_of_the_snakefile() -> None:
    profile = yaml.safe_load(PROFILE.read_text())
    assert profile["executor"] == "slurm"
    named = set(profile.get("set-resources", {})) | set(profile.get("set-threads", {}))
    assert "collect" in named
    assert named <= _rules(), f"profile names rules the Snakefile lacks: {sorted(named - _rules())}"


def test_every_job_asks_for_time_memory_and_cpus_and_collection_for_a_gpu() -> None:
    profile = yaml.safe_load(PROFILE.read_text())
    for rule in _rules() - {"all"}:
        resources = {**profile["default-resources"], **profile.get("set-resources", {}).get(rule, {})}
        assert {"runtime", "mem_mb", "cpus_per_task"} <= set(resources), rule
        wants_gpu = str(resources.get("gres", "")).startswith("gpu") or bool(resources.get("gpu"))
        assert wants_gpu == (rule == "collect"), rule
    assert profile["set-threads"]["collect"] == profile["set-resources"]["collect"]["cpus_per_task"]


def test_cluster_extra_pins_the_executor_plugin() -> None:
    extras = tomllib.loads((paths.ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    pins = dict(item.split("==") for item in extras["cluster"])
    assert set(pins) == {"snakemake-executor-plugin-slurm", "snakemake-executor-plugin-slurm-jobstep"}
    assert all(re.fullmatch(r"\d+\.\d+\.\d+", version) for version in pins.values()), pins


def test_make_reproduce_with_profile_slurm_runs_snakemake_with_the_profile() -> None:
    result = subprocess.run(
        ["make", "-n", "reproduce", "PROFILE=slurm", "PARAMS=params/smoke.yaml"],
        cwd=paths.ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    [line] = [line for line in result.stdout.splitlines() if "helpers.workflow run" in line]
    assert "--profile profiles/slurm" in line and "params=params/smoke.yaml" in line, line
    assert "--workflow-profile none" in line, line  # profiles/default (cores: 2) must not override it


def test_make_reproduce_runs_the_default_profile_by_default() -> None:
    result = subprocess.run(
        ["make", "-n", "reproduce"], cwd=paths.ROOT, capture_output=True, text=True, check=True
    )  # fmt: skip
    [line] = [line for line in result.stdout.splitlines() if "helpers.workflow run" in line]
    assert "--profile profiles/default" in line and "--workflow-profile" not in line, line
