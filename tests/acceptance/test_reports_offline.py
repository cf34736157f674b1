"""The front page and every report, opened in headless Chromium with the network closed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support import leaving_the_machine, requests_made, screenshot_folder, wait_for

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


READER_PROBLEMS = """
const found = [];
if (document.documentElement.scrollWidth > window.innerWidth + 1)
    found.push(`the page scrolls sideways: ${document.documentElement.scrollWidth} px wide in ${window.innerWidth}`);
for (const img of document.images) {
    const alt = img.getAttribute('alt') || '';
    if (!alt || alt.startsWith('No description')) found.push(`an image without alt text: ${img.src.slice(0, 60)}`);
}
for (const cell of document.querySelectorAll('td, th')) {
    const text = cell.innerText.trim();
    if (['nan', 'NaN', '<NA>', 'None'].includes(text)) found.push(`a cell reads ${text}`);
}
for (const head of document.querySelectorAll('tbody th')) {
    if (/^\\d+$/.test(head.innerText.trim())) { found.push(`a bare index column (${head.innerText})`); break; }
}
for (const table of document.querySelectorAll('table')) {
    if (table.querySelectorAll('tbody tr').length === 0) found.push('a table with a header and no rows');
    // a table wider than a narrow page scrolls inside its own box (numbers are never broken to fit)
    const box = table.closest('.table-box') || table;
    if (box.getBoundingClientRect().right > window.innerWidth + 1) found.push('a table wider than the page');
}
return found;
"""


def test_every_page_is_readable_at_800_px(browser: Any, smoke_run: Path) -> None:
    """No sideways scrolling, no nan, no bare index column, no empty table, an alt text on every image."""
    reports = smoke_run / "reports" / "smoke"
    problems: dict[str, list[str]] = {}
    browser.set_window_size(800, 1000)
    try:
        for page in [reports / "index.html", *sorted(reports.glob("0*.html"))]:
            open_page(browser, page)
            found = browser.execute_script(READER_PROBLEMS)
            if found:
                problems[page.name] = sorted(set(found))[:8]
    finally:
        browser.set_window_size(1280, 1400)
    assert problems == {}


def test_the_first_screen_gives_every_findings_verdict(browser: Any, smoke_run: Path) -> None:
    """At 1400 and at 800 px wide, the first 900 px of the front page hold every finding's verdict."""
    import pandas as pd

    index = smoke_run / "reports" / "smoke" / "index.html"
    scorecard = pd.read_csv(smoke_run / "paper" / "tables" / "smoke" / "findings_scorecard.csv")
    try:
        for width in (1400, 800):
            browser.set_window_size(width, 1000)
            open_page(browser, index)
            verdicts = browser.execute_script(
                "return [...document.querySelectorAll('ul.findings li .verdict')]"
                ".map(v => [v.innerText, v.getBoundingClientRect().bottom + window.scrollY]);"
            )
            assert [text.lower() for text, _ in verdicts] == [v.lower() for v in scorecard["verdict"]], width
            assert all(bottom <= 900 for _, bottom in verdicts), (width, verdicts)
            if width == 1400:
                browser.save_screenshot(str(screenshot_folder() / "index.png"))
    finally:
        browser.set_window_size(1280, 1400)


def test_index_links_resolve_and_shows_the_scorecard(browser: Any, smoke_run: Path) -> None:
    index = smoke_run / "reports" / "smoke" / "index.html"
    open_page(browser, index)
    hrefs = browser.execute_script(
        "return [...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href'))"
        ".filter(h => !h.startsWith('#'));"
    )
    missing = [href for href in hrefs if not (index.parent / href).resolve().is_file()]
    assert len(hrefs) > 40 and missing == []
    lines = browser.find_elements("css selector", "ul.findings li[class*='verdict-']")
    rows = browser.find_elements("css selector", ".scorecard table tbody tr[class^='verdict-']")
    assert len(lines) == len(rows) >= 4  # one line per finding of the scorecard, each coloured by its verdict
    details = browser.find_elements("css selector", "details")
    assert details and not any(d.get_attribute("open") for d in details)  # the long parts start collapsed
