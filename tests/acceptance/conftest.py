"""Browser fixtures: Debian's Chromium, headless, driven by selenium, with the network closed.

The browser is /usr/bin/chromium with /usr/bin/chromedriver (``apt-get install chromium
chromium-driver``); nothing is downloaded. Every host name but 127.0.0.1 resolves to nothing, and
the Chrome DevTools performance log records every request a page makes, so a test can show that
none left the machine. Without Chromium these tests skip, saying so.

The tests' screenshots (of the smoke run) go to build/screenshots/smoke/. The README's screenshots,
of the default study, are taken by ``make screenshots`` (``python -m tests.screenshots``), not by a test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import CHROMEDRIVER, CHROMIUM, chromium_driver, jupyterlab


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
    with chromium_driver(chromium, tmp_path_factory.mktemp("chromium-profile")) as driver:
        yield driver


@pytest.fixture(scope="session")
def lab(chromium: tuple[Path, Path], smoke_run: Path) -> Iterator[dict[str, Any]]:
    """JupyterLab over the smoke run's copy of the repository (``jupyterlab``)."""
    with jupyterlab(smoke_run) as started:
        yield started
