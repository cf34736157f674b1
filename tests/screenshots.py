"""Not a test: the README's screenshots of the default study (front page and explorer), taken by ``make screenshots``.

``python -m tests.screenshots [folder]`` (figures/screenshots by default) needs the default run's reports and
results (``make reproduce``) and Debian's Chromium; it says what is missing and exits non-zero, and checks that
each image it wrote is a non-empty PNG.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from helpers.base import paths
from helpers.study import ParameterError, load_params
from helpers.study.outputs import RunOutputs
from tests.support import (
    CHROMEDRIVER,
    CHROMIUM,
    EXPLORER_IMAGES,
    chromium_driver,
    decoded_images,
    jupyterlab,
    open_and_run_all,
    screenshot_of_the_explorer,
    wait_for,
)

NOTEBOOK = "build/lab-default/07_explore.ipynb"
"""Where the copy of notebook 07 that Lab runs goes (Lab saves its outputs there, never in notebooks/)."""
WIDTH, HEIGHT = 1400, 1000
PNG = b"\x89PNG\r\n\x1a\n"


def missing() -> list[str]:
    """What the screenshots need and this machine lacks, each with how to get it."""
    problems = [f"{path} (apt-get install chromium chromium-driver)" for path in (CHROMIUM, CHROMEDRIVER)]
    problems = [problem for problem, path in zip(problems, (CHROMIUM, CHROMEDRIVER), strict=True) if not path.is_file()]
    try:
        run = RunOutputs(load_params(paths.PARAMS / "default.yaml"))
    except ParameterError as error:
        return [*problems, f"the default study's parameters do not load: {error}"]
    for path in (run.reports / "index.html", run.metrics):
        if not path.is_file():
            problems.append(f"{path.relative_to(paths.ROOT)} (run `make reproduce`, the default study, first)")
    return problems


def take(folder: Path) -> list[Path]:
    """The front page and the explorer, as PNG files in ``folder``."""
    run = RunOutputs(load_params(paths.PARAMS / "default.yaml"))
    folder.mkdir(parents=True, exist_ok=True)
    target = paths.ROOT / NOTEBOOK
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(paths.NOTEBOOKS / "07_explore.ipynb", target)
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        with chromium_driver((CHROMIUM, CHROMEDRIVER), Path(profile)) as browser:
            browser.set_window_size(WIDTH, HEIGHT)
            browser.get((run.reports / "index.html").as_uri())
            wait_for(lambda: browser.execute_script("return document.readyState") == "complete", 30, "the front page")
            browser.save_screenshot(str(folder / "index.png"))
            with jupyterlab(paths.ROOT) as lab:
                open_and_run_all(browser, lab, NOTEBOOK)
                wait_for(lambda: decoded_images(browser.execute_script(EXPLORER_IMAGES)), 120, "the explorer's figures")
                screenshot_of_the_explorer(browser, folder / "explorer.png")
    written = [folder / "index.png", folder / "explorer.png"]
    for path in written:
        if not path.is_file() or not path.read_bytes().startswith(PNG):
            raise RuntimeError(f"{path} was not written as a PNG image")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.screenshots", description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default="figures/screenshots", help="where the PNG files go")
    folder = Path(parser.parse_args(argv).folder)
    folder = folder if folder.is_absolute() else paths.ROOT / folder
    problems = missing()
    if problems:
        print("make screenshots: cannot take the screenshots; missing:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    for path in take(folder):
        print(f"wrote {path.relative_to(paths.ROOT) if path.is_relative_to(paths.ROOT) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
