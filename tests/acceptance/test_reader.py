"""What a reader sees, in headless Chromium: the answer in the first screen, figures legible at the width they are
shown, no table taller than a screen and a half, previous / next links, no script from data, the README's first
screen.

The smoke run's pages (tiny models: most findings not testable) and the default study's front page, made from the
committed tables and figures (``helpers.report.front_page.page`` in the
smoke run's copy of the repository: what a fresh clone's `make reproduce` shows, before its own numbers).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from helpers.base import paths
from tests.support import screenshot_folder, wait_for

WIDTH, HEIGHT = 1400, 900
TALLEST_TABLE = 1500
SMALLEST_TEXT_PX = 12.0
"""9 pt at 96 px per inch: the smallest text a figure may show at the width it is displayed."""


def open_page(driver: Any, page: Path, width: int = WIDTH, height: int = HEIGHT) -> None:
    driver.set_window_size(width, height)
    driver.get(page.as_uri())
    wait_for(lambda: driver.execute_script("return document.readyState") == "complete", 30, f"{page.name} to load")
    inner = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    if inner != [width, height]:  # the window's frame: make the viewport itself width x height
        driver.set_window_size(2 * width - inner[0], 2 * height - inner[1])


@pytest.fixture(scope="module")
def default_front_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default study's front page, from the committed tables and figures (``front_page.page``; the default
    parameters unchecked, since its models need not be installed to read its committed outputs)."""
    import yaml

    from helpers.report import front_page
    from helpers.study import StudyParams

    raw = yaml.safe_load((paths.PARAMS / "default.yaml").read_text(encoding="utf-8"))
    params = StudyParams.model_construct(**{**raw, "name": "default"})
    target = tmp_path_factory.mktemp("default-front-page") / "index.html"
    target.write_text(front_page.page(params, "params/default.yaml"), encoding="utf-8")
    return target


def reports(smoke_run: Path) -> list[Path]:
    folder = smoke_run / "reports" / "smoke"
    return [folder / "index.html", *sorted(folder.glob("0*.html"))]


CARDS = """return [...document.querySelectorAll('ul.findings > li.finding')].map(li => ({
    verdict: li.querySelector('.verdict').innerText.toLowerCase(), text: li.innerText,
    bottom: li.getBoundingClientRect().bottom + window.scrollY}));"""


def test_the_default_front_page_answers_with_counted_verdicts_in_the_first_screen(
    browser: Any, default_front_page: Path
) -> None:
    """At 1400 x 900: the abstract, then all five cards, each within the first screen, each counting models or saying
    why not testable, its verdict the scorecard's, nothing cut."""
    open_page(browser, default_front_page)
    scorecard = pd.read_csv(paths.TABLES / "findings_scorecard.csv")
    cards = browser.execute_script(CARDS)
    assert [c["verdict"] for c in cards] == [v.lower() for v in scorecard["verdict"]]
    assert len(cards) == 5 and all(c["bottom"] <= HEIGHT for c in cards), [c["bottom"] for c in cards]
    for card in cards:
        counted = " models" in card["text"] or "not testable" in card["verdict"] or "as replicates" in card["text"]
        assert counted and "…" not in card["text"], card["text"]
    per_model = pd.read_csv(paths.TABLES / "finding1_per_model.csv")["verdict"].value_counts()
    assert f"{per_model.max()} of {per_model.sum()} models" in cards[0]["text"]  # counted from the committed table
    abstract = browser.execute_script("return document.querySelector('p.abstract').getBoundingClientRect().top")
    assert abstract < browser.execute_script(CARDS)[0]["bottom"]
    browser.save_screenshot(str(screenshot_folder() / "default_index_1400.png"))


IMAGES = """return [...document.images].filter(i => i.offsetParent !== null).map(i => ({
    alt: (i.getAttribute('alt') || '').slice(0, 60), natural: i.naturalWidth, shown: i.getBoundingClientRect().width,
    href: i.closest('a') ? i.closest('a').getAttribute('href') : ''}));"""


def test_every_figure_is_shown_at_least_half_its_natural_width(browser: Any, smoke_run: Path) -> None:
    problems = []
    for page in reports(smoke_run):
        open_page(browser, page)
        browser.execute_script("document.querySelectorAll('details').forEach(d => d.open = true)")
        for image in browser.execute_script(IMAGES):
            if image["natural"] > 0 and image["shown"] < image["natural"] / 2:
                problems.append(f"{page.name}: {image['alt']} ({image['natural']} px shown at {image['shown']:.0f})")
    assert problems == []


def smallest_text_px(png: Path, shown: float) -> float | None:
    """The smallest text of a saved figure in CSS px at the width it is shown (its PNG records the size in pt)."""
    from PIL import Image

    with Image.open(png) as image:
        recorded = str(image.info.get("Smallest text", "")).removesuffix(" pt")
        dpi = float(image.info.get("dpi", (150, 150))[0])
        natural = image.width
    if not recorded:
        return None
    return float(recorded) * dpi / 72 * min(1.0, shown / natural)


def test_the_key_figures_write_no_text_smaller_than_9_pt_at_the_width_shown(browser: Any, smoke_run: Path) -> None:
    index = smoke_run / "reports" / "smoke" / "index.html"
    open_page(browser, index)
    figures = [image for image in browser.execute_script(IMAGES) if image["href"].endswith(".png")]
    assert figures, "no key figure on the front page"
    for image in figures:
        size = smallest_text_px((index.parent / image["href"]).resolve(), image["shown"])
        assert size is not None and size >= SMALLEST_TEXT_PX, (image["alt"], size)


TABLES = """return [...document.querySelectorAll('table')]
    .filter(t => t.offsetParent !== null && !t.closest('details:not([open])'))
    .map(t => Math.round(t.getBoundingClientRect().height));"""


def test_no_visible_table_is_taller_than_a_screen_and_a_half(
    browser: Any, smoke_run: Path, default_front_page: Path
) -> None:
    problems = {}
    for page in [*reports(smoke_run), default_front_page]:
        open_page(browser, page)
        heights = browser.execute_script(TABLES)
        if any(height > TALLEST_TABLE for height in heights):
            problems[f"{page.parent.name}/{page.name}"] = heights
    assert problems == {}


def test_every_report_links_to_the_index_and_to_its_neighbours_in_order(browser: Any, smoke_run: Path) -> None:
    """From the first report, 'next' visits every report of the run once, in the index's order, and back."""
    pages = reports(smoke_run)[1:]
    visited = [pages[0].name]
    open_page(browser, pages[0])
    assert browser.find_elements("css selector", 'nav.compendium a[rel="prev"]') == []
    while True:
        assert browser.find_elements("css selector", 'nav.compendium a[rel="index"][href="index.html"]'), visited[-1]
        following = browser.find_elements("css selector", 'nav.compendium a[rel="next"]')
        if not following:
            break
        href = following[0].get_attribute("href")
        open_page(browser, Path(href.removeprefix("file://")))
        back = browser.find_element("css selector", 'nav.compendium a[rel="prev"]').get_attribute("href")
        assert back.endswith(visited[-1])
        visited.append(Path(href).name)
    assert visited == [page.name for page in pages]


def test_a_report_with_a_hostile_prompt_and_category_runs_no_script(browser: Any, tmp_path: Path) -> None:
    """A prompt with <script> and a category with onerror, through show_table into a rendered report: shown as text."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

    from helpers.report import notebooks

    hostile = pd.DataFrame(
        {
            "category": ["<img src=x onerror=\"document.title='PWNED'\">"],
            "text": ["<script>document.title='PWNED'</script>What is 2+2?"],
        }
    )
    html = notebooks.show_table(hostile).data + notebooks.show_text("In <img src=y onerror=alert(1)> prompts").data
    cells = [
        new_markdown_cell("# 09 Demo\n\nA demo."),
        new_code_cell("x", outputs=[new_output("display_data", data={"text/html": html})]),
    ]
    executed = tmp_path / "executed.ipynb"
    nbformat.write(new_notebook(cells=cells), executed)
    page = notebooks.render_html(executed, tmp_path / "report.html", "09 Demo", "run x", "notebooks/09.ipynb")
    open_page(browser, page)
    assert browser.title == "09 Demo"
    assert browser.execute_script("return document.querySelectorAll('script, [onerror]').length") == 0
    assert "<script>document.title='PWNED'</script>What is 2+2?" in browser.find_element("css selector", "body").text


GITHUB_LIKE = """
body { font-family: -apple-system, "Segoe UI", "Noto Sans", Helvetica, Arial, sans-serif; font-size: 16px;
  line-height: 1.5; margin: 0; }
article { max-width: 980px; margin: 0 auto; padding: 32px; box-sizing: border-box; }
h1 { font-size: 2em; border-bottom: 1px solid #d1d9e0; padding-bottom: .3em; margin: .67em 0 16px; }
h2 { font-size: 1.5em; border-bottom: 1px solid #d1d9e0; padding-bottom: .3em; margin: 24px 0 16px; }
p, pre, table { margin: 0 0 16px; }
pre { padding: 16px; font-size: 85%; line-height: 1.45; background: #f6f8fa; overflow: auto; }
table { border-collapse: collapse; display: block; width: max-content; max-width: 100%; overflow: auto; }
td, th { padding: 6px 13px; border: 1px solid #d1d9e0; }
img { max-width: 100%; }
"""
"""A code host's README page, near enough: a 980-px column, 16-px text, its table and code block spacing."""


def test_the_readme_first_screen_says_what_this_is_the_verdicts_and_the_two_commands(
    browser: Any, tmp_path: Path
) -> None:
    from nbconvert.filters.markdown_mistune import markdown2html_mistune

    body = markdown2html_mistune((paths.ROOT / "README.md").read_text(encoding="utf-8"))
    page = tmp_path / "README.html"
    page.write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'><style>{GITHUB_LIKE}</style></head>"
                    f"<body><article>{body}</article></body></html>")  # fmt: skip
    open_page(browser, page)
    first = browser.execute_script(
        """const table = [...document.querySelectorAll('table')].find(t => t.innerText.includes('key number'));
        const code = [...document.querySelectorAll('pre')].find(p => p.innerText.includes('make reproduce'));
        return {table: table ? table.getBoundingClientRect().bottom : 1e9,
                rows: table ? table.tBodies[0].rows.length : 0,
                code: code ? code.getBoundingClientRect().bottom : 1e9,
                right: table ? table.getBoundingClientRect().right : 1e9,
                verdicts: table ? [...table.tBodies[0].rows].map(r => r.cells[1].innerText) : []};"""
    )
    browser.save_screenshot(str(screenshot_folder() / "readme_1400.png"))
    scorecard = pd.read_csv(paths.TABLES / "findings_scorecard.csv")
    assert first["rows"] == 5 and first["verdicts"] == list(scorecard["verdict"])
    assert first["code"] <= HEIGHT and first["table"] <= HEIGHT, first
    assert first["right"] <= WIDTH


HOSTILE_CATEGORY = "<img src=x onerror=\"document.title='PWNED'\">"
HOSTILE_PROMPT = "<script>document.title='PWNED'</script> What is 2+2?"
HOSTILE_NOTEBOOKS = (
    ("01_collect_activations", "tiny-bert"),
    ("01_collect_activations", "tiny-gpt2"),
    ("02_compute_metrics", None),
    ("03_aggregate", None),
    ("05_export_tables", None),
    ("08_signatures", None),
)
"""The reports that show prompt texts or category names (issue 35: 01, 02, 03, 05 and 08)."""


@pytest.fixture(scope="module")
def hostile_reports(smoke_run: Path) -> Iterator[Path]:
    """The real notebooks, run on a prompt set whose prompt holds a <script> and whose category an onerror, in the
    smoke run's copy of the repository (its own run name: the smoke outputs are untouched)."""
    import subprocess
    import sys

    from tests.support import environment

    texts = [HOSTILE_PROMPT, "Write a poem about <i>rain</i>.", "Name three colours & explain.", "Why? </td></table>"]
    categories = [HOSTILE_CATEGORY, "plain & <b>simple</b>"]
    pd.DataFrame(
        {"prompt_id": [f"p{i}" for i in range(4)], "category": [categories[i % 2] for i in range(4)], "text": texts}
    ).to_csv(smoke_run / "data" / "prompts" / "hostile.csv", index=False)
    quoted = ", ".join("'" + c.replace("'", "''") + "'" for c in categories)
    (smoke_run / "params" / "hostile.yaml").write_text(
        "models: [tiny-bert, tiny-gpt2]\nprompts: data/prompts/hostile.csv\n"
        f"categories: [{quoted}]\ncustom_categories: true\nbatch_size: 4\ndevice: cpu\n"
    )
    for notebook, model in HOSTILE_NOTEBOOKS:
        command = [sys.executable, "-m", "helpers.report.notebooks", "run", notebook, "--params", "params/hostile.yaml"]
        command += ["--model", model] if model else []
        result = subprocess.run(command, cwd=smoke_run, env=environment(smoke_run), capture_output=True, text=True)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    yield smoke_run / "reports" / "hostile"
    for made in ("results", "reports", "build", "paper/tables", "paper/data", "figures"):  # the smoke copy as found
        shutil.rmtree(smoke_run / made / "hostile", ignore_errors=True)
    for made in ("data/prompts/hostile.csv", "params/hostile.yaml"):
        (smoke_run / made).unlink(missing_ok=True)


def test_prompts_and_categories_with_markup_stay_text_in_every_report(browser: Any, hostile_reports: Path) -> None:
    """No report runs the <script> of a prompt or the onerror of a category: both are shown as text."""
    pages = sorted(hostile_reports.glob("0*.html"))
    assert len(pages) == len(HOSTILE_NOTEBOOKS)
    shown_as_text = []
    for page in pages:
        open_page(browser, page)
        assert browser.title != "PWNED", page.name
        assert browser.execute_script("return document.querySelectorAll('script, [onerror]').length") == 0, page.name
        text = browser.find_element("css selector", "body").text
        shown_as_text += [name for name in (HOSTILE_PROMPT, HOSTILE_CATEGORY) if name in text]
    assert HOSTILE_PROMPT in shown_as_text and shown_as_text.count(HOSTILE_CATEGORY) >= 3
