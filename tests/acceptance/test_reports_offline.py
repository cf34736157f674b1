"""The front page and every report, opened in headless Chromium with the network closed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.acceptance.conftest import leaving_the_machine, requests_made, screenshot_folder, wait_for

BROKEN_IMAGES = """return [...document.images].filter(i => !(i.complete && i.naturalWidth > 0))
    .map(i => i.alt || i.src.slice(0, 80));"""
WITH_FIGURES = ("index", "04_", "06_", "07_")
STDERR = '[data-mime-type="application/vnd.jupyter.stderr"], .output_stderr, .jp-OutputArea-output.stderr'


def open_page(driver: Any, page: Path) -> None:
    driver.get(page.as_uri())
    wait_for(lambda: driver.execute_script("return document.readyState") == "complete", 30, f"{page.name} to load")


def test_index_and_every_report_work_offline(browser: Any, smoke_run: Path) -> None:
    reports = smoke_run / "reports" / "smoke"
    pages = [reports / "index.html", *sorted(reports.glob("0*.html"))]
    assert len(pages) >= 10
    requests_made(browser)  # drop what came before
    problems: dict[str, list[str]] = {}
    for page in pages:
        open_page(browser, page)
        found = []
        broken = browser.execute_script(BROKEN_IMAGES)
        if broken:
            found.append(f"images that do not decode: {broken}")
        if page.name.startswith(WITH_FIGURES) and browser.execute_script("return document.images.length") == 0:
            found.append("no figures")
        if browser.find_elements("css selector", STDERR):
            found.append("a stderr output is shown")
        title = browser.title.strip()
        if not title or title == "Notebook":
            found.append(f"title is {title!r}")
        if page.name != "index.html" and not browser.find_elements("css selector", 'a[href="index.html"]'):
            found.append("no link back to index.html")
        outside = leaving_the_machine(requests_made(browser))
        if outside:
            found.append(f"requests leaving the machine: {outside[:5]}")
        if found:
            problems[page.name] = found
    assert problems == {}


def test_index_links_resolve_and_shows_the_scorecard(browser: Any, smoke_run: Path) -> None:
    index = smoke_run / "reports" / "smoke" / "index.html"
    open_page(browser, index)
    hrefs = browser.execute_script(
        "return [...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href'))"
        ".filter(h => !h.startsWith('#'));"
    )
    missing = [href for href in hrefs if not (index.parent / href).resolve().is_file()]
    assert len(hrefs) > 40 and missing == []
    verdicts = browser.find_elements("css selector", ".scorecard > table tr[class^='verdict-']")
    assert len(verdicts) == 4  # one coloured row per finding
    details = browser.find_element("css selector", "details")
    assert not details.get_attribute("open")  # provenance starts collapsed
    browser.save_screenshot(str(screenshot_folder() / "index.png"))
