"""The README's screenshots, of the default study: the front page and the explorer (``make screenshots``).

They need the default run's reports and results (``make reproduce``) and run only when
``COMPENDIUM_SCREENSHOTS`` names the folder to write to (``make screenshots`` sets
figures/screenshots); otherwise they skip, saying so. The other browser tests use the smoke run.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from helpers.base import paths
from helpers.study import ParameterError, load_params
from helpers.study.outputs import RunOutputs
from tests.acceptance.conftest import SCREENSHOTS_ENVIRONMENT, jupyterlab, screenshot_folder, wait_for
from tests.acceptance.test_lab import EXPLORER_IMAGES, _decoded, open_and_run_all, screenshot_of_the_explorer

pytestmark = pytest.mark.skipif(
    not os.environ.get(SCREENSHOTS_ENVIRONMENT),
    reason=f"the README's screenshots are taken by `make screenshots` ({SCREENSHOTS_ENVIRONMENT} unset)",
)
NOTEBOOK = "build/lab-default/07_explore.ipynb"
WIDTH, HEIGHT = 1400, 1000


def default_run() -> RunOutputs:
    """Where the default study writes (its parameters are checked only here, when a screenshot is taken)."""
    try:
        return RunOutputs(load_params(paths.PARAMS / "default.yaml"))
    except ParameterError as error:
        pytest.skip(f"the default study's parameters do not load here: {error}")


def needs(path: Path) -> None:
    if not path.is_file():
        pytest.skip(f"{path.relative_to(paths.ROOT)} is missing: run `make reproduce` (the default study) first")


def test_screenshot_of_the_front_page(browser: Any) -> None:
    index = default_run().reports / "index.html"
    needs(index)
    browser.set_window_size(WIDTH, HEIGHT)
    browser.get(index.as_uri())
    wait_for(lambda: browser.execute_script("return document.readyState") == "complete", 30, "the front page")
    browser.save_screenshot(str(screenshot_folder(readme=True) / "index.png"))


def test_screenshot_of_the_explorer(browser: Any) -> None:
    needs(default_run().metrics)
    target = paths.ROOT / NOTEBOOK
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(paths.NOTEBOOKS / "07_explore.ipynb", target)  # a copy: Lab saves its outputs there
    browser.set_window_size(WIDTH, HEIGHT)
    with jupyterlab(paths.ROOT) as lab:
        open_and_run_all(browser, lab, NOTEBOOK)
        wait_for(lambda: _decoded(browser.execute_script(EXPLORER_IMAGES)), 120, "the explorer's figures")
        screenshot_of_the_explorer(browser, screenshot_folder(readme=True) / "explorer.png")
