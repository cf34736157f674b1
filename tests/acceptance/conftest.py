"""Browser fixtures: Debian's Chromium, headless, driven by selenium, with the network closed.

The browser is /usr/bin/chromium with /usr/bin/chromedriver (``apt-get install chromium
chromium-driver``); nothing is downloaded. Every host name but 127.0.0.1 resolves to nothing, and
the Chrome DevTools performance log records every request a page makes, so a test can show that
none left the machine. Without Chromium these tests skip, saying so.

The tests' screenshots (of the smoke run) go to build/screenshots/smoke/. The README's screenshots,
of the default study, are taken by ``test_screenshots.py`` into the folder named by
``COMPENDIUM_SCREENSHOTS`` (``make screenshots`` sets figures/screenshots); without it that test skips.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from helpers.base import paths
from helpers.report.notebooks import install_lab_settings

CHROMIUM = Path(os.environ.get("COMPENDIUM_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("COMPENDIUM_CHROMEDRIVER", "/usr/bin/chromedriver"))
LOCAL_HOSTS = {"127.0.0.1", "localhost", ""}
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
)


SCREENSHOTS_ENVIRONMENT = "COMPENDIUM_SCREENSHOTS"
"""Set (by ``make screenshots``) to the folder where the README's screenshots of the default study go."""


def screenshot_folder(readme: bool = False) -> Path:
    """Where a screenshot goes: the tests' own (of the smoke run) in build/screenshots/smoke/; the README's
    (``readme``, of the default study) in ``COMPENDIUM_SCREENSHOTS`` (relative to the repository root)."""
    folder = Path(os.environ.get(SCREENSHOTS_ENVIRONMENT, paths.BUILD / "screenshots")) if readme else None
    folder = folder or paths.BUILD / "screenshots" / "smoke"
    folder = folder if folder.is_absolute() else paths.ROOT / folder
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def chromium() -> tuple[Path, Path]:
    """Chromium and chromedriver from the Debian packages; skip (with the reason) where they are absent."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.is_file()]
    if missing:
        pytest.skip(
            f"browser tests need Chromium: {', '.join(missing)} missing (apt-get install chromium chromium-driver)"
        )
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.skip("browser tests need selenium (pip install -e '.[dev]')")
    return CHROMIUM, CHROMEDRIVER


@pytest.fixture(scope="session")
def browser(chromium: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One headless Chromium for the session, with a fresh profile and the performance log on."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # selenium manager must never try to download a driver
    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium[0])
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    options.add_argument("--window-size=1280,1400")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(chromium[1])), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def requests_made(driver: Any) -> list[str]:
    """URLs requested since the log was last read (Chrome DevTools ``Network.requestWillBeSent`` events)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def leaving_the_machine(urls: list[str]) -> list[str]:
    """The URLs that would leave the machine: any network scheme to a host other than this one."""
    outside = []
    for url in urls:
        parsed = urlparse(url)
        if parsed.scheme in {"file", "data", "blob", "about", "chrome", "devtools"}:
            continue
        if parsed.hostname not in LOCAL_HOSTS:
            outside.append(url)
    return outside


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    """Poll ``condition`` until it returns something true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


PROJECT_KERNEL = "neural-activation-compendium"


def write_kernelspec(share: Path) -> None:
    """The project's kernel (as ``make install`` installs it), here for this Python, under ``share``."""
    folder = share / "kernels" / PROJECT_KERNEL
    folder.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python (compendium)",
        "language": "python",
        "metadata": {"debugger": True},
    }
    (folder / "kernel.json").write_text(json.dumps(spec, indent=1))


@contextmanager
def jupyterlab(root: Path) -> Iterator[dict[str, Any]]:
    """JupyterLab on 127.0.0.1 (a free port, a token) over ``root``, a copy of the repository or the repository.

    Its Jupyter folders are temporary (no user settings or workspaces leak in); the project's
    kernel is installed there, and the Lab defaults, as ``make install`` does. Yields url, token,
    root and the log path.
    """
    home = Path(tempfile.mkdtemp(prefix="compendium-lab-"))
    share = home / "share"
    write_kernelspec(share)
    install_lab_settings()  # as make install and make lab do: no news prompt, no attempt to fetch any
    port, token = free_port(), os.urandom(16).hex()
    environment = {
        **os.environ,
        "PYTHONPATH": str(root),
        "HF_HUB_OFFLINE": "1",
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_DATA_DIR": str(share),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTER_PATH": str(share),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
        "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
        "IPYTHONDIR": str(home / "ipython"),
    }
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--LabApp.expose_app_in_browser=True",
        "--LabApp.news_url=",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")
    log = home / "lab.log"
    with open(log, "w") as stream:
        process = subprocess.Popen(command, env=environment, stdout=stream, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        import urllib.request

        def answers() -> bool:
            if process.poll() is not None:
                pytest.fail(f"JupyterLab exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as response:
                    return response.status == 200
            except OSError:
                return False

        wait_for(answers, 90, "JupyterLab to answer on 127.0.0.1")
        yield {"url": url, "token": token, "root": root, "log": log}
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def lab(chromium: tuple[Path, Path], smoke_run: Path) -> Iterator[dict[str, Any]]:
    """JupyterLab over the smoke run's copy of the repository (``jupyterlab``)."""
    with jupyterlab(smoke_run) as started:
        yield started
