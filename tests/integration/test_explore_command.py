"""`make explore PROMPT=... MODEL=...`: the explorer for your own prompt and model, rendered to HTML through
papermill, placed among a run's prompts; bad input refused before any model work."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support import environment

PROMPT = 'What is "2+2"? <b>Explain</b>'


def explore(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "helpers.report.notebooks", "explore", "--params", "params/smoke.yaml", *args]
    return subprocess.run(command, cwd=root, env=environment(root), capture_output=True, text=True, timeout=600)


def test_the_explorer_renders_your_prompt_and_model_to_a_static_page(smoke_run: Path) -> None:
    try:
        rendered(smoke_run)
    finally:  # the smoke copy as found: its reports folder holds the run's declared outputs only
        for made in ("reports/smoke/explore", "build/smoke/explore"):
            shutil.rmtree(smoke_run / made, ignore_errors=True)


def rendered(smoke_run: Path) -> None:
    result = explore(smoke_run, "--prompt", PROMPT, "--model", "tiny-gpt2", "--layer", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    page = Path(result.stdout.strip().splitlines()[-1])
    assert page.parent == smoke_run / "reports" / "smoke" / "explore" and page.is_file()
    html = page.read_text(encoding="utf-8")
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', html)) >= 5  # every view drawn, none blank
    assert "&lt;" in html and "<b>Explain</b>" not in html  # the prompt's tokens, markup shown as text
    assert "tiny-gpt2" in html and 'href="../index.html"' in html
    assert "percentile" in html  # placed among the smoke run's prompts


def test_bad_input_is_refused_before_any_model_work(smoke_run: Path) -> None:
    empty = explore(smoke_run, "--prompt", "   ")
    assert empty.returncode == 2 and "the prompt is empty" in empty.stderr
    unknown = explore(smoke_run, "--prompt", "Hello", "--model", "no-such-model")
    assert unknown.returncode == 2 and "no-such-model" in unknown.stderr and "Traceback" not in unknown.stderr
