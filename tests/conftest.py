"""Shared fixtures: models are loaded once per session (``load_model`` caches them), and one smoke
workflow run (``smoke_run``) serves every test that needs a whole run's outputs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from helpers.base import paths  # noqa: E402
from tests.support import PROMPTS, snakemake

IGNORED = shutil.ignore_patterns(".venv", ".git", "results", "build", "reports", ".snakemake", ".cache", "__pycache__")
"""What a temporary copy of the repository leaves out: environments and every generated folder."""


@pytest.fixture(scope="session")
def prompts() -> list[str]:
    return list(PROMPTS)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temporary copy of the repository after a smoke workflow run (tiny models, 2 prompts per category).

    One run per test session: the workflow tests and the browser tests read its results, tables,
    figures and reports. Tests that change it (a forced rerun) must leave the same outputs.
    ``COMPENDIUM_SMOKE_RUN=<folder>`` keeps the copy there and reuses it in later sessions: the
    sources are copied over it (modification times kept) and the workflow reruns only what they
    changed, so an up-to-date copy costs seconds. For iterating on tests.
    """
    reuse = os.environ.get("COMPENDIUM_SMOKE_RUN")
    if reuse:
        root = Path(reuse)
        shutil.copytree(paths.ROOT, root, ignore=IGNORED, dirs_exist_ok=True)
        shutil.copy(root / "README.md", root.parent / "README.before.md")
        result = snakemake(root)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
        return root
    root = tmp_path_factory.mktemp("compendium") / "repo"
    shutil.copytree(paths.ROOT, root, ignore=IGNORED)
    for generated in ("figures/smoke", "paper/tables/smoke", "paper/records/smoke"):
        shutil.rmtree(root / generated, ignore_errors=True)
    shutil.copy(root / "README.md", root.parent / "README.before.md")
    result = snakemake(root)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return root
