"""The Slurm cluster tests run only under ``make test-cluster`` (RUN_CLUSTER_TESTS=1).

``make test`` collects this folder too and skips every test in it with the reason below. The
``slurm`` fixture starts one single-node cluster for the session, inside a private network
namespace, and stops it (by PID) at the end, whatever happened.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import harness

HERE = Path(__file__).resolve().parent
SKIP_REASON = (
    "Slurm cluster tests run only with `make test-cluster` (RUN_CLUSTER_TESTS=1): "
    "they start a Slurm cluster on this machine as root"
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("RUN_CLUSTER_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def slurm() -> Iterator[harness.SlurmCluster]:
    """A running single-node Slurm cluster (config, state and logs in a temporary folder)."""
    reason = harness.why_not_possible()
    if reason:
        pytest.skip(reason)
    missing = harness.missing_packages()
    if missing:
        pytest.skip(f"Debian packages {missing} are not installed; `make test-cluster` installs them with apt-get")
    root = Path(tempfile.mkdtemp(prefix="slurm-", dir="/tmp"))  # short: munge's socket path must fit 108 bytes
    try:
        with harness.SlurmCluster(root) as cluster:
            yield cluster
    finally:
        shutil.rmtree(root)
