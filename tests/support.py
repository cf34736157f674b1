"""What tests share (no test imports another test module): the test prompts and models, the workflow run on a
copy of the repository, the brute-force references the measurement is checked against, planted data for the
findings, and the browser's helpers (also used by ``python -m tests.screenshots``)."""

from __future__ import annotations

import functools
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import pytest
import torch

import helpers
from helpers import study
from helpers.base import paths
from helpers.core import models
from helpers.report.notebooks import install_lab_settings
from helpers.stats.findings import finding5_calibration
from helpers.stats.robustness import MATH
from helpers.study import CATEGORIES

# --- from tests/conftest.py ---

TINY_MODELS = sorted(models.TINY)


EMBEDDED_MODELS = sorted(models.EMBEDDED)


PROMPTS = [
    "What is 2+2?",
    "Write a short poem about the sea at night, with rhyme.",
    "If all bloops are razzies and all razzies are lazzies, are all bloops lazzies?",
]


SMOKE = ("--profile", "profiles/default", "--config", "params=params/smoke.yaml")
"""The smoke study through the default profile (2 cores: independent notebooks run side by side)."""


def command(*args: str) -> list[str]:
    """The README's way to run the workflow (``make reproduce``): Snakemake under the compendium's lock."""
    return [sys.executable, "-m", "helpers.workflow", "run", *SMOKE, *args]


def environment(root: Path) -> dict[str, str]:
    """The caller's environment, offline, importing ``helpers`` from ``root``."""
    return {**os.environ, "PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1"}


def snakemake(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The workflow with the smoke parameters in ``root`` (a copy of the repository)."""
    return subprocess.run(command(*args), cwd=root, env=environment(root), capture_output=True, text=True, timeout=900)


# --- from tests/integration/test_streaming_exact.py ---

TOLERANCE = 1e-5


HIDDEN_RTOL = 1e-5
"""How far an entry near a threshold may move between two exact paths, relative to its token's RMS."""


THRESHOLDS: dict[str, tuple[float, bool, bool]] = {
    "max_sparsity": (0.01, False, True),
    "max_sparsity_no_embedding": (0.01, False, False),
    "max_sparsity_0.001": (0.001, False, True),
    "max_sparsity_0.1": (0.1, False, True),
    **{f"max_sparsity_relative_{eps:g}": (eps, True, True) for eps in (0.001, 0.01, 0.1)},
}
"""Each threshold statistic of ``measure``: (eps, relative to the layer's std, embedding output included)."""


@dataclass(frozen=True)
class Truth:
    """The brute force's values of one prompt, and how far each threshold statistic may be off (a fraction)."""

    values: dict[str, float]
    allowance: dict[str, float]

    def __getitem__(self, column: str) -> float:
        return self.values[column]


def threshold_allowance(hidden_states: tuple[torch.Tensor, ...]) -> dict[str, float]:
    """Per threshold statistic: the largest share of a layer's entries that lie within rounding of the threshold.

    ``hidden_states``: one prompt's (1, T, D) tensors, unpadded. An entry can be counted on one path and
    not the other only if its |h| is within ``HIDDEN_RTOL`` x its token's RMS of the threshold.
    """
    allowance = {}
    for column, (eps, relative, embedding) in THRESHOLDS.items():
        shares = []
        for h in hidden_states[0 if embedding else 1 :]:
            values = h[0].double().abs()
            threshold = eps * h[0].double().std(unbiased=False) if relative else torch.tensor(eps, dtype=torch.float64)
            slack = HIDDEN_RTOL * values.pow(2).mean(dim=-1, keepdim=True).sqrt()
            shares.append(((values - threshold).abs() <= slack).double().mean().item())
        allowance[column] = max(shares)
    return allowance


@functools.cache  # the same prompt's brute force serves every test that compares with it
def brute_force(name: str, text: str) -> Truth:
    loaded = helpers.load_model(name)
    model = loaded.model
    model.set_attn_implementation("eager")
    encoded = loaded.tokenizer([text], return_tensors="pt")
    with torch.no_grad():
        output = model(**encoded, output_attentions=True, output_hidden_states=True)
    hidden_states, attentions = output.hidden_states, output.attentions
    assert len(hidden_states) == loaded.n_layers + 1 and len(attentions) == loaded.n_layers
    total_entropy, normalized, rows = 0.0, 0.0, 0
    n_heads = attentions[0].shape[1]
    for layer_index, attention in enumerate(attentions):
        probs = attention[0].double()  # (H, T, T)
        row_entropies = -(probs * torch.log(probs.clamp_min(1e-300))).sum(-1)  # (H, T)
        total_entropy += row_entropies.sum().item()
        window = getattr(model.config, "sliding_window", None)
        layer_types = getattr(model.config, "layer_types", None)
        sliding = bool(window and layer_types and layer_types[layer_index] == "sliding_attention")
        n_keys = probs.shape[2]
        for i in range(probs.shape[1]):
            if loaded.architecture == "decoder":  # keys i - window < j <= i
                allowed = min(i + 1, window) if sliding else i + 1
            else:  # a bidirectional window is symmetric: keys |i - j| < window (EmbeddingGemma)
                allowed = min(n_keys, i + window) - max(0, i - window + 1) if sliding else n_keys
            if allowed > 1:
                normalized += (row_entropies[:, i] / math.log(allowed)).sum().item()
                rows += probs.shape[0]
    sparsities = {eps: [(h[0].abs() < eps).double().mean().item() for h in hidden_states] for eps in (0.001, 0.01, 0.1)}
    relative = {
        eps: [(h[0].abs() < eps * h[0].double().std(unbiased=False)).double().mean().item() for h in hidden_states]
        for eps in (0.001, 0.01, 0.1)
    }
    width = math.sqrt(hidden_states[0].shape[-1])
    hoyer = [
        ((width - h[0].double().abs().sum(-1) / h[0].double().norm(dim=-1)) / (width - 1)).mean().item()
        for h in hidden_states
    ]
    values = {
        "n_tokens": encoded["input_ids"].shape[1],
        "final_activation": hidden_states[-1][0].double().mean().item(),
        "attention_entropy": total_entropy / (loaded.n_layers * n_heads),
        "attention_entropy_normalized": normalized / rows if rows else math.nan,  # a one-token prompt: undefined
        "max_sparsity": max(sparsities[0.01]),
        "max_sparsity_no_embedding": max(sparsities[0.01][1:]),
        "max_sparsity_0.001": max(sparsities[0.001]),
        "max_sparsity_0.1": max(sparsities[0.1]),
        **{f"max_sparsity_relative_{eps:g}": max(shares) for eps, shares in relative.items()},
        "max_hoyer_sparsity": max(hoyer),
        "max_hoyer_sparsity_no_embedding": max(hoyer[1:]),
    }
    return Truth(values, threshold_allowance(hidden_states))


def assert_value_close(measured: float, expected: float, column: str, truth: Truth) -> None:
    """One value: a count exactly, a threshold statistic within its counted allowance, the rest to TOLERANCE."""
    if column in THRESHOLDS:
        allowance = truth.allowance[column]
        assert abs(measured - expected) <= allowance + 1e-12, f"{column}: {measured} vs {expected}, allowed {allowance}"
    elif isinstance(expected, int):
        assert measured == expected, column
    else:
        assert measured == pytest.approx(expected, rel=TOLERANCE, abs=1e-7), column


def assert_rows_close(measured: pd.DataFrame, expected: list[Truth]) -> None:
    """Every row of ``measure``'s table against the brute force of its prompt."""
    for row, truth in zip(measured.to_dict("records"), expected, strict=True):
        for column, value in truth.values.items():
            assert_value_close(row[column], value, column, truth)


def assert_measurements_close(first: pd.DataFrame, second: pd.DataFrame, truths: list[Truth]) -> None:
    """Two of ``measure``'s tables of the same prompts (another batch, padding or path) against each other.

    Every hidden state of either lies within ``HIDDEN_RTOL`` of the brute force's, so an entry counted
    by one and not the other lies within rounding of the threshold in the brute force: the same allowance.
    """
    numeric = first.columns.drop(["model", "text_index"])
    assert list(second.columns) == list(first.columns)
    for a, b, truth in zip(first.to_dict("records"), second.to_dict("records"), truths, strict=True):
        for column in numeric:
            if column in THRESHOLDS:
                assert_value_close(a[column], b[column], column, truth)
            elif pd.api.types.is_float_dtype(first[column]):
                assert a[column] == pytest.approx(b[column], rel=TOLERANCE, abs=1e-7, nan_ok=True), column
            else:
                assert a[column] == b[column], column


# --- from tests/integration/test_workflow.py ---


def planned_jobs(root: Path, *args: str) -> dict[str, int]:
    """The jobs a dry run would run: rule -> count (from Snakemake's job stats)."""
    result = snakemake(root, "--dry-run", *args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    text = result.stdout + result.stderr
    if "Nothing to be done" in text:
        return {}
    stats = text.split("Job stats:", 1)[1].split("total", 1)[0]
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)\s*$", stats, flags=re.MULTILINE))
    return {rule: int(count) for rule, count in jobs.items() if rule != "job"}


def start_and_wait_for_a_job(root: Path, *args: str) -> subprocess.Popen:
    """Start the workflow in its own process group; return once one of its jobs is running."""
    process = subprocess.Popen(
        command(*args), cwd=root, env=environment(root), start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    incomplete = root / ".snakemake" / "incomplete"
    deadline = time.monotonic() + 120
    while not (incomplete.is_dir() and any(incomplete.iterdir())):  # a job is running
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.05)
    return process


# --- from tests/unit/test_markdown_tables.py ---

UNESCAPED_PIPE = re.compile(r"(?<!\\)\|")
DELIMITER = re.compile(r"^\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?$")


def cells(line: str) -> list[str]:
    """A table row's cells, split at unescaped pipes (GitHub's rule), outer pipes dropped."""
    inner = line.strip()
    inner = inner[1:] if inner.startswith("|") else inner
    inner = inner[:-1] if inner.endswith("|") and not inner.endswith("\\|") else inner
    return [cell.strip() for cell in UNESCAPED_PIPE.split(inner)]


def markdown_tables(text: str) -> list[list[list[str]]]:
    """Every pipe table in ``text``: a header line, a delimiter line, then the rows up to a line without a pipe."""
    lines = text.splitlines()
    found = []
    for number, line in enumerate(lines[:-1]):
        if "|" in line and DELIMITER.match(lines[number + 1].strip()):
            rows = [cells(line)]
            for following in lines[number + 2 :]:
                if "|" not in following or not following.strip():
                    break
                rows.append(cells(following))
            found.append(rows)
    return found


def malformed(text: str) -> list[str]:
    """Rows whose cell count differs from their header's, and cells that read 'nan'."""
    problems = []
    for table in markdown_tables(text):
        header = table[0]
        for row in table[1:]:
            if len(row) != len(header):
                problems.append(f"{len(row)} cells under a {len(header)}-cell header {header[:3]}: {row[:4]}")
            if any(cell.lower() == "nan" for cell in row):
                problems.append(f"a cell reads nan: {row[:4]}")
    return problems


# --- from tests/unit/test_findings.py ---

THREE_MODELS = {"MiniLM": ("encoder", 22), "Smol": ("decoder", 135), "Gemma": ("decoder", 270)}


def synthetic(
    models: dict[str, tuple[str, int]] = THREE_MODELS,
    per_category: int = 40,
    math_effect: float = 0.0,
    math_longer: int = 0,
    seed: int = 0,
    sparsity: dict[str, float] | None = None,
    activation: dict[str, float] | None = None,
) -> pd.DataFrame:
    """A tidy per-prompt table like ``study.load_metrics``'s, with planted effects.

    ``math_effect``: math's entropy shift in noise SDs at every length; ``math_longer``: tokens
    added to every math prompt (a length-only confound); ``sparsity``/``activation``: each model's
    true mean max sparsity / final activation (prompt noise around it).
    """
    rng = np.random.default_rng(seed)
    prompts = []
    for category in CATEGORIES:
        for k in range(per_category):
            n = 8 + int((k + rng.uniform()) * 62 / per_category)  # spread over 8-70 tokens, as the prompt set is
            n += math_longer if category == MATH else 0
            prompts.append(
                {
                    "prompt_id": f"{category}_{k:02d}",
                    "category": category,
                    "n_tokens": n,
                    "n_words": max(1, round(n / 1.25)),
                    "n_digits": int(rng.poisson(4.4)) if category == MATH else 0,
                    "n_question_marks": int(rng.uniform() < 0.5),
                }
            )
    prompts = pd.DataFrame(prompts)
    prompt_effect = rng.normal(0, 1, len(prompts))
    rows = []
    for index, (name, (architecture, millions)) in enumerate(models.items()):
        n = prompts["n_tokens"].to_numpy(float)
        noise_sd = 0.5 + n / 70
        entropy = (1 + 0.2 * index) * n * np.log(n) / 10 + rng.normal(0, 1, len(n)) * noise_sd
        is_math = (prompts["category"] == MATH).to_numpy()
        entropy = entropy + math_effect * noise_sd * is_math + 0.3 * prompt_effect
        per_row = 0.9 - 0.05 * np.log(n) + 0.04 * (math_effect * is_math + rng.normal(0, 1, len(n)))
        sparse = (sparsity or {}).get(name, 0.3)
        active = (activation or {}).get(name, 0.0)
        rows.append(
            prompts.assign(
                display_name=name,
                model=name.lower(),
                architecture=architecture,
                n_parameters=millions * 1_000_000,
                attention_entropy=entropy,
                attention_entropy_normalized=per_row,
                final_activation=active + rng.normal(0, 1, len(n)) + 0.5 * prompt_effect,
                max_sparsity=sparse * np.exp(rng.normal(0, 0.1, len(n))),
                max_hoyer_sparsity=sparse * np.exp(rng.normal(0, 0.1, len(n))),
            )
        )
    return pd.concat(rows, ignore_index=True)


SEVEN_MODELS = {
    "E1": ("encoder", 100),
    "E2": ("encoder", 340),
    "E3": ("encoder", 60),
    "D1": ("decoder", 120),
    "D2": ("decoder", 500),
    "D3": ("decoder", 250),
    "D4": ("decoder", 900),
}


FOUR_MODELS = {name: SEVEN_MODELS[name] for name in ("E1", "E2", "D1", "D2")}


# --- from tests/unit/test_entropy_kernel.py ---

ENTROPY_RELATIVE = 1e-5


def attention_brute_force(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float, allowed: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Output (B, Q, H, Dv) and row entropies (B, H, Q), in float64, from the full attention map."""
    groups = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(groups, 1).double(), value.repeat_interleave(groups, 1).double()
    scores = (query.double() @ key.transpose(-1, -2) * scale).masked_fill(~allowed, float("-inf"))
    log_p = scores - scores.logsumexp(-1, keepdim=True)
    probs = torch.where(allowed, log_p.exp(), 0.0).nan_to_num(0.0)
    entropy = -torch.where(allowed, probs * log_p, 0.0).nan_to_num(0.0).sum(-1)
    return (probs @ value).transpose(1, 2), entropy


def attention_masks(batch: int, n: int) -> dict[str, tuple[torch.Tensor | None, bool, torch.Tensor]]:
    """name -> (mask given to the kernel, is_causal, the allowed (B|1, 1, Q, K) keys)."""
    causal = torch.tril(torch.ones(n, n, dtype=torch.bool))
    window = causal & ~torch.tril(torch.ones(n, n, dtype=torch.bool), diagonal=-7)
    left = torch.ones(batch, n, dtype=torch.bool)
    left[-1, : n // 3] = False  # the last prompt is left-padded
    right = left.flip(-1)  # and here right-padded
    full = torch.ones(1, 1, n, n, dtype=torch.bool)
    return {
        "bidirectional": (None, False, full),
        "causal": (None, True, causal[None, None]),
        "causal, left padding": (causal[None, None] & left[:, None, None, :], False, causal & left[:, None, None, :]),
        "causal, right padding": (causal & right[:, None, None, :], False, causal & right[:, None, None, :]),
        "bidirectional padding": (right[:, None, None, :].expand(batch, 1, n, n), False, right[:, None, None, :]),
        "sliding window, left padding": (window & left[:, None, None, :], False, window & left[:, None, None, :]),
    }


# --- from tests/unit/test_signatures.py ---


@functools.cache
def study_prompts(per_category: int = 20) -> pd.DataFrame:
    """The study's own prompts (a subset spread over lengths), with a token count: the lexical baseline is real."""
    prompts = study.load_prompts(paths.PROMPTS / "cognitive_tasks.csv", per_category=per_category)
    return prompts.assign(n_tokens=(1.3 * prompts["n_words"]).astype(int) + 2)


TRUTHS = {truth.name: truth for truth in finding5_calibration.truths()}


# --- from tests/acceptance/conftest.py ---

CHROMIUM = Path(os.environ.get("COMPENDIUM_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("COMPENDIUM_CHROMEDRIVER", "/usr/bin/chromedriver"))
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


@contextmanager
def chromium_driver(binaries: tuple[Path, Path], profile: Path) -> Iterator[Any]:
    """A headless Chromium (``binaries``: chromium, chromedriver) with a fresh ``profile`` folder and the
    performance log on; quit on leaving."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # selenium manager must never try to download a driver
    options = webdriver.ChromeOptions()
    options.binary_location = str(binaries[0])
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.add_argument("--window-size=1280,1400")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(binaries[1])), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


LOCAL_HOSTS = {"127.0.0.1", "localhost", ""}


def screenshot_folder() -> Path:
    """Where the browser tests' screenshots (of the smoke run) go: build/screenshots/smoke/."""
    folder = paths.BUILD / "screenshots" / "smoke"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


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


# --- from tests/acceptance/test_lab.py ---

LAB_NOTEBOOK = "build/lab/07_explore.ipynb"
"""Where the browser tests' copy of notebook 07 goes, relative to Lab's root."""
NOTEBOOK_PANEL = (
    "[...window.jupyterapp.shell.widgets('main')].find(w => w.sessionContext && w.content && w.content.widgets)"
)
"""The open notebook's panel (``shell.currentWidget`` follows focus, which may sit in the file browser)."""
ALL_EXECUTED = f"""
const panel = {NOTEBOOK_PANEL};
if (!panel || !panel.content || !panel.sessionContext.session) return false;
const kernel = panel.sessionContext.session.kernel;
const cells = panel.content.widgets.filter(c => c.model.type === 'code');
return kernel && kernel.status === 'idle' && cells.every(c => c.model.executionCount !== null);
"""


EXPLORER_IMAGES = """
const root = document.querySelector('.compendium-explorer');
if (!root) return null;
return [...root.querySelectorAll('img')].map(i => [i.src.length, i.naturalWidth, i.src.slice(-60)]);
"""


def open_and_run_all(browser: Any, lab: dict[str, Any], notebook: str = LAB_NOTEBOOK) -> None:
    """Open ``notebook`` (relative to Lab's root) in JupyterLab, run all cells, and wait for the explorer."""
    browser.get(f"{lab['url']}/lab/tree/{notebook}?token={lab['token']}&reset")
    wait_for(lambda: browser.execute_script("return !!window.jupyterapp"), 60, "JupyterLab to start")
    wait_for(
        lambda: browser.execute_script(
            f"const p = {NOTEBOOK_PANEL};"
            "return !!(p && p.sessionContext && p.sessionContext.session && p.sessionContext.session.kernel"
            " && p.sessionContext.session.kernel.status === 'idle');"
        ),
        90,
        "the notebook's kernel (Python (compendium)) to start",
    )
    kernel = browser.execute_script(f"return {NOTEBOOK_PANEL}.sessionContext.kernelDisplayName")
    assert kernel == "Python (compendium)"
    browser.execute_script(f"window.jupyterapp.shell.activateById({NOTEBOOK_PANEL}.id)")  # the commands act on it
    browser.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    wait_for(lambda: browser.execute_script(ALL_EXECUTED), 300, "every cell to run")


def decoded_images(images: list[list[Any]] | None) -> list[str] | None:
    """The images' identities when there are some and every one has decoded, else None."""
    if not images or any(width == 0 for _, width, _ in images):
        return None
    return [f"{length}:{tail}" for length, _, tail in images]


def screenshot_of_the_explorer(browser: Any, path: Path) -> None:
    """The explorer on its "In the study" tab: the prompt's percentiles and where it falls against length."""
    browser.execute_script("window.jupyterapp.shell.collapseLeft()")
    browser.execute_script("document.querySelector('.compendium-explorer').scrollIntoView()")
    tabs = browser.find_elements("css selector", ".compendium-explorer .lm-TabBar-tab")
    tabs[1].click()
    time.sleep(1.0)  # the tab's figure paints
    browser.save_screenshot(str(path))
