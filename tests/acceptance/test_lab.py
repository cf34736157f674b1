"""Notebook 07 in JupyterLab, driven through Chromium: run all, the explorer renders, a new prompt redraws it.

JupyterLab runs on 127.0.0.1 over the smoke run's copy of the repository; the notebook is a copy
of notebooks/07_explore.ipynb with the smoke parameter file (tiny models), as a user would set it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat

from helpers.report.notebooks import NBSTRIPOUT_ARGUMENTS
from tests.support import (
    EXPLORER_IMAGES,
    decoded_images,
    leaving_the_machine,
    open_and_run_all,
    requests_made,
    screenshot_folder,
    screenshot_of_the_explorer,
    wait_for,
)

NOTEBOOK = "build/lab/07_explore.ipynb"
NEW_PROMPT = "Zebra lighthouse quantum"
STDERR = '[data-mime-type="application/vnd.jupyter.stderr"]'


BELOW_THE_EXPLORER = """
return [...document.querySelectorAll('.jp-OutputArea-output')]
    .filter(o => !o.closest('.compendium-explorer')).map(o => o.innerText).join(' ');
"""


def smoke_copy_of_the_explorer(root: Path) -> Path:
    """notebooks/07_explore.ipynb with the smoke parameter file, where Lab can open it."""
    source = nbformat.read(root / "notebooks" / "07_explore.ipynb", as_version=4)
    parameters = next(cell for cell in source.cells if "parameters" in cell.metadata.get("tags", []))
    lines = parameters.source.splitlines()
    lines = [
        'params_file = "params/smoke.yaml"  # the smoke run' if line.startswith("params_file") else line
        for line in lines
    ]
    parameters.source = "\n".join(lines)
    target = root / NOTEBOOK
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(source, target)
    return target


def stripped(path: Path) -> str:
    """``path`` as the project's git filter stores it (nbstripout with the project's arguments)."""
    command = [sys.executable, "-m", "nbstripout", *NBSTRIPOUT_ARGUMENTS, "--textconv", str(path)]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def test_explorer_runs_in_jupyterlab_and_redraws_for_a_new_prompt(browser: Any, lab: dict[str, Any]) -> None:
    notebook = smoke_copy_of_the_explorer(lab["root"])
    committed = stripped(notebook)
    requests_made(browser)
    open_and_run_all(browser, lab)
    news = browser.execute_script(
        "return [...document.querySelectorAll('.Toastify__toast, .jp-Notification-Toast')].map(t => t.innerText)"
    )
    assert not any("news" in text.lower() for text in news), news  # no "notified about Jupyter news?" pop-up

    first = wait_for(lambda: decoded_images(browser.execute_script(EXPLORER_IMAGES)), 60, "the explorer's figures")
    before = browser.find_element("css selector", ".compendium-explorer .compendium-status").text
    assert "percentile" in before, before  # the prompt placed in the smoke run's study
    assert browser.find_elements("css selector", STDERR) == []

    textarea = browser.find_element("css selector", ".compendium-explorer textarea")
    textarea.clear()
    textarea.send_keys(NEW_PROMPT)
    browser.find_element("css selector", ".compendium-explorer button.mod-primary").click()
    wait_for(
        lambda: "zebra" in browser.find_element("css selector", ".compendium-explorer").text.lower(),
        60,
        "the explorer to show the new prompt's tokens",
    )
    wait_for(  # every figure redrawn: as many as before, none the same
        lambda: (
            (images := decoded_images(browser.execute_script(EXPLORER_IMAGES)))
            and len(images) == len(first)
            and set(images).isdisjoint(first)
        ),
        60,
        "every figure of the explorer to be redrawn for the new prompt",
    )
    wait_for(  # the static sections below the explorer follow its prompt
        lambda: "zebra" in browser.execute_script(BELOW_THE_EXPLORER).lower(),
        60,
        "the sections below the explorer to show the new prompt",
    )
    status = browser.find_element("css selector", ".compendium-explorer .compendium-status").text
    assert "percentile" in status and status != before, status
    assert browser.find_elements("css selector", STDERR) == []
    screenshot_of_the_explorer(browser, screenshot_folder() / "explorer.png")

    browser.execute_script("window.jupyterapp.commands.execute('docmanager:save')")
    wait_for(
        lambda: json.loads(notebook.read_text()).get("cells", [{}])[4].get("outputs"),
        30,
        "the saved notebook to hold outputs",
    )
    assert stripped(notebook) == committed  # what git would store is unchanged by running it
    assert leaving_the_machine(requests_made(browser)) == []
