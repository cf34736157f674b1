"""pyproject.toml and environment.yml carry the same pins."""

from __future__ import annotations

import tomllib

import yaml

from helpers.base import paths


def _pins(requirements: list[str]) -> dict[str, str]:
    pins = {}
    for line in requirements:
        name, _, version = line.partition("==")
        assert version, f"{line!r} is not pinned with =="
        pins[name.strip().lower()] = version.strip()
    return pins


def test_environment_yml_pins_agree_with_pyproject() -> None:
    project = tomllib.loads((paths.ROOT / "pyproject.toml").read_text())["project"]
    declared = _pins(project["dependencies"] + project["optional-dependencies"]["dev"])
    environment = yaml.safe_load((paths.ROOT / "environment.yml").read_text())
    pip_section = next(item["pip"] for item in environment["dependencies"] if isinstance(item, dict))
    assert _pins(pip_section) == declared
    assert "python=3.11" in environment["dependencies"]


def test_torch_is_pinned_to_the_local_cpu_build_version() -> None:
    project = tomllib.loads((paths.ROOT / "pyproject.toml").read_text())["project"]
    assert "torch==2.13.0" in project["dependencies"]


def test_every_install_step_of_the_makefile_is_valid_shell() -> None:
    """The install steps run through the Makefile's ``retry``: each must still be one valid shell command (a comma
    inside ``$(call retry,...)`` once split ``".[dev,cluster]"`` and broke ``make install-cluster``)."""
    import subprocess

    for target in (".venv/.installed", ".venv/.installed-cluster"):
        planned = subprocess.run(
            ["make", "-n", "-W", "pyproject.toml", target], cwd=paths.ROOT, capture_output=True, text=True, timeout=60
        )
        assert planned.returncode == 0, planned.stderr
        installs = [line for line in planned.stdout.splitlines() if "pip install" in line]
        assert installs, planned.stdout
        for line in installs:
            assert subprocess.run(["bash", "-n", "-c", line], capture_output=True, timeout=60).returncode == 0, line
    assert '".[dev,cluster]"' in planned.stdout
