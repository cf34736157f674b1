"""The front page's run status (helpers.workflow.mark_front_page): a run in progress or failed says so at the top of
the page, and the page is dated so that the next run remakes it (issue 35, case 8)."""

from __future__ import annotations

from pathlib import Path

from helpers import workflow


def test_a_page_is_marked_while_a_run_goes_then_failed_then_unmarked_byte_for_byte(tmp_path: Path) -> None:
    page = tmp_path / "index.html"
    original = '<!DOCTYPE html>\n<html><head><title>x</title></head><body class="a">\n<h1>Findings</h1></body></html>\n'
    page.write_text(original)
    workflow.mark_front_page(page, "smoke", "running")
    text = page.read_text()
    assert text.startswith('<!DOCTYPE html>\n<html><head><title>x</title></head><body class="a">\n<div id="run-status"')
    assert "Run smoke in progress" in text and page.stat().st_mtime == workflow.STALE
    workflow.mark_front_page(page, "smoke", "failed", ".snakemake/log/x.log")
    text = page.read_text()
    assert text.count('id="run-status"') == 1 and "Run smoke failed" in text and "in progress" not in text
    assert ".snakemake/log/x.log" in text and page.stat().st_mtime == workflow.STALE
    workflow.mark_front_page(page, "smoke", None)
    assert page.read_text() == original and page.stat().st_mtime > workflow.STALE


def test_a_run_without_a_page_yet_gets_one_that_says_so_escaped(tmp_path: Path) -> None:
    page = tmp_path / "reports" / "index.html"
    workflow.mark_front_page(page, "<b>run</b>", "running")
    text = page.read_text()
    assert 'id="run-status"' in text and "&lt;b&gt;run&lt;/b&gt;" in text and "<b>run</b>" not in text
    workflow.mark_front_page(tmp_path / "none.html", "x", None)  # nothing to unmark: nothing written
    assert not (tmp_path / "none.html").exists()
