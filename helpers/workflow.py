"""What the Snakefile needs beyond paths: each rule's code inputs, and a run that survives being killed.

``code_inputs(notebook)`` lists every file of code a numbered notebook runs: the closure of the
imports of its code cells, with the non-Python files those modules declare (``helpers.base.code``,
the one place that computes it), so that editing a module or a kernel's source reruns exactly the
rules whose code uses it. ``code_stamp`` stands for a code file by what its code does: an edit of a
comment or docstring alone reruns nothing.

``python -m helpers.workflow run [snakemake arguments]`` runs Snakemake under an exclusive
lock on ``.snakemake/compendium.lock`` (``fcntl.flock``: the kernel releases it when the
holder dies, however it dies). Snakemake inherits the locked file, so the lock lives as long as
either process does, and Snakemake is sent SIGTERM if the runner dies first (Linux
``PR_SET_PDEATHSIG``): a killed runner never leaves a Snakemake running unseen. Holding the lock
proves that no other run is alive, so a Snakemake lock left by a killed run is stale and is
cleared (``--unlock``) before the run; a second live run gets a clear error instead of a
LockException.
"""

from __future__ import annotations

import argparse
import ast
import ctypes
import fcntl
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from helpers.base import code, paths

LOCK = paths.ROOT / ".snakemake" / "compendium.lock"
RUNNER = ("helpers.report.notebooks", "helpers.study", "helpers.base.paths", "helpers.base.store")
"""Modules every notebook rule runs: the papermill runner and what it imports (closed over below)."""


def notebook_imports(notebook: Path) -> set[str]:
    """The helpers modules a notebook's code cells import (IPython magics and shell lines skipped)."""
    cells = json.loads(Path(notebook).read_text(encoding="utf-8"))["cells"]
    modules = set()
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
        modules |= set(code.imported_modules(ast.parse("\n".join(lines))))
    return modules


def code_inputs(notebook: Path) -> list[Path]:
    """Every file of code that running ``notebook`` through the runner executes (modules and the files they
    declare), sorted."""
    return code.code_files(notebook_imports(notebook) | set(RUNNER))


def runner_inputs() -> list[Path]:
    """The files of code the runner itself executes (the index rule runs only these)."""
    return code.code_files(set(RUNNER))


def _label(path: Path) -> str:
    """A file-name-safe label for ``path``: relative to the repository when inside it."""
    path = Path(path).expanduser().resolve()
    shown = path.relative_to(paths.ROOT).as_posix() if path.is_relative_to(paths.ROOT) else path.as_posix()
    return re.sub(r"[^A-Za-z0-9._-]+", "_", shown).strip("_")


def content_stamp(path: Path, folder: Path) -> Path:
    """A stamp file in ``folder`` that stands for ``path``'s content: the rules' input instead of ``path`` itself.

    Its name carries the content hash (of the file, or of every file of a model folder), and it is
    written only when no stamp of that content exists. So Snakemake decides on content, not on
    modification times: an edit shows as another input file (its ``input`` rerun trigger) even when
    the edit kept an older timestamp (``touch -d``, ``cp -p``, ``tar x``, ``rsync -a``); a touch
    without a change, or a change undone, reruns nothing.
    """
    from helpers.base import store

    path = Path(path).expanduser()
    if path.is_dir():
        from helpers.study.collection import folder_files

        return text_stamp(_label(path), json.dumps(folder_files(path), sort_keys=True, indent=0), folder)
    digest = store.file_sha256(path)
    return _stamp(folder / f"{_label(path)}.{digest[:20]}.sha256", digest)


def code_stamp(path: Path, folder: Path) -> Path:
    """A stamp file in ``folder`` for a file of code, named by what its code does (``helpers.base.code``): an edit
    of its comments or docstrings alone keeps the stamp, so it reruns nothing."""
    digest = code.file_fingerprint(path)
    return _stamp(Path(folder) / f"{_label(path)}.{digest[:20]}.code", digest)


def text_stamp(label: str, text: str, folder: Path) -> Path:
    """A stamp file in ``folder`` for ``text`` (``content_stamp``'s for what is not one file: checked parameters)."""
    digest = hashlib.sha256(text.encode()).hexdigest()
    return _stamp(Path(folder) / f"{label}.{digest[:20]}.sha256", text)


def _stamp(stamp: Path, text: str) -> Path:
    from helpers.base import store

    if not stamp.is_file():
        store.write_text(text + "\n", stamp)
    return stamp


def _die_with_parent() -> None:
    """In the child, before exec: receive SIGTERM when the parent (the runner) dies (Linux only)."""
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


LOCK_WAIT_SECONDS = 15.0
"""How long a run waits for the lock when the runner that took it is gone: the processes of a run
killed a moment ago may still be exiting. While that runner lives, a second run fails at once."""


def _alive(pid: str) -> bool:
    """Whether ``pid`` (as written in the lock file) is a live process."""
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _lock_within(handle: Any, seconds: float) -> bool:
    """Take the exclusive lock on ``handle``, waiting at most ``seconds``; whether it was taken."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)


class RunInProgressError(RuntimeError):
    """Another run of the workflow is alive in this repository."""


def run(snakemake_arguments: list[str]) -> int:
    """Run Snakemake with ``snakemake_arguments`` under the compendium's lock; return its exit status."""
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK, "a+") as handle:
        handle.seek(0)
        holder = handle.read().strip()
        if not _lock_within(handle, 0.0 if _alive(holder) else LOCK_WAIT_SECONDS):
            handle.seek(0)
            raise RunInProgressError(
                f"another run of the workflow is in progress in {paths.ROOT} (pid {handle.read().strip() or '?'}); "
                "wait for it, or stop it, then run the same command again"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        command = [sys.executable, "-m", "snakemake", *snakemake_arguments]
        environment = {**os.environ, "PYTHONPATH": str(paths.ROOT)}
        locks = paths.ROOT / ".snakemake" / "locks"
        if locks.is_dir() and any(locks.iterdir()):  # left by a killed run: no live run holds our lock
            print("Clearing the lock of an earlier run that was killed (no other run is alive).", file=sys.stderr)
            subprocess.run([*command, "--unlock"], cwd=paths.ROOT, env=environment, check=True, capture_output=True)
        process = subprocess.Popen(
            command, cwd=paths.ROOT, env=environment, pass_fds=(handle.fileno(),), preexec_fn=_die_with_parent
        )
        try:
            return process.wait()
        except KeyboardInterrupt:  # Ctrl-C reached Snakemake too (same process group): let it shut down
            return process.wait()


RUN_STATUS = re.compile(r'<div id="run-status"[^>]*>.*?</div>\n?', re.DOTALL)
"""The front page's run-status element, put right after its opening <body> tag while a run is going or failed."""
STALE = 86400
"""The modification time (2 January 1970) that a marked front page gets: older than any input, so that the next
run remakes it even when nothing else is out of date (Snakemake reads a time of 0 as unknown)."""


def _status(state: str, run: str, log: str) -> str:
    from datetime import datetime

    now = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    style = "border:3px solid #b00020;background:#fdecea;color:#000;padding:0.8em 1em;margin:0 0 1em 0"
    if state == "running":
        title = f"Run {run} in progress (started {now})"
        text = (
            "A run of this study started and has not finished: it is still running, or it was stopped before its "
            "end. The results, tables and figures on this page may be partly from that run and partly from an "
            "earlier one. Run the same command again (make reproduce) to complete it; this notice then goes."
        )
    else:
        title = f"Run {run} failed ({now})"
        text = (
            "The last run of this study failed; its results, tables and figures may be missing or out of date, and "
            "this page may describe an earlier run. Each failed job's executed notebook is in the run's build "
            f"folder{log}. Fix the cause and run it again; this notice then goes."
        )
    return f'<div id="run-status" role="alert" style="{style}"><strong>{title}.</strong> {text}</div>\n'


def mark_front_page(page: Path, run: str, state: str | None, log: str | Path | list[str] | None = None) -> Path:
    """Put a run's state at the top of its front page (``state`` "running" or "failed"), or take it away (None).

    The workflow marks the page "running" when its jobs start (Snakefile ``onstart``), so a run killed however
    hard (SIGKILL) leaves a page that says so, never an earlier page looking current; "failed" on error; and
    unmarks it on success. The notice is a ``<div id="run-status">`` right after the opening ``<body>`` tag (a
    page that does not exist yet gets a page of its own); a marked page is dated ``STALE``, so the next run remakes
    it whatever else it has to do.
    """
    import html as html_

    page = Path(page)
    text = page.read_text(encoding="utf-8") if page.is_file() else ""
    text = RUN_STATUS.sub("", text)
    if state is None:
        if page.is_file() and text != page.read_text(encoding="utf-8"):
            from helpers.base import store

            store.write_text(text, page)  # dated now: the run that unmarks it has brought everything up to date
        return page
    logs = [str(log)] if isinstance(log, str | Path) else [str(item) for item in log or []]
    where = f" (Snakemake's log: {', '.join(logs)})" if logs else ""
    status = _status(state, html_.escape(run), html_.escape(where))
    body = re.search(r"<body[^>]*>\n?", text, re.IGNORECASE)
    if body is None:
        title = html_.escape(f"Run {run} {'in progress' if state == 'running' else 'failed'}")
        text = (
            f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{title}</title></head><body>\n</body></html>\n"
        )
        body = re.search(r"<body[^>]*>\n?", text)
        assert body is not None  # the page just written has one
    from helpers.base import store

    store.write_text(text[: body.end()] + status + text[body.end() :], page)
    os.utime(page, (STALE, STALE))
    return page


TIMES_START, TIMES_END = "<!-- run-times:start -->", "<!-- run-times:end -->"


def run_times(benchmarks: Path) -> str:
    """The last run's time and peak memory per Snakemake job, from its benchmark files (``build/<run>/benchmarks``),
    as a Markdown table with a total; "" when the run has none."""
    import pandas as pd

    from helpers.base import store

    rows = []
    for path in sorted(benchmarks.glob("*.tsv")):
        table = pd.read_csv(path, sep="\t")
        if table.empty:
            continue
        last = table.iloc[-1]
        rows.append(
            {
                "job": path.stem.replace("_", " ", 1) if path.stem.startswith("collect_") else path.stem,
                "minutes": round(float(last["s"]) / 60, 1),
                "peak memory (GiB)": round(float(last["max_rss"]) / 1024, 2),
            }
        )
    if not rows:
        return ""
    frame = pd.DataFrame(rows)
    total = {"job": "**all jobs (sum)**", "minutes": round(frame["minutes"].sum(), 1), "peak memory (GiB)": None}
    frame = pd.concat([frame, pd.DataFrame([total])], ignore_index=True)
    return store.markdown_table(frame, floatfmt="g")


def write_run_times(readme: Path, table: str, source: str) -> bool:
    """Put ``table`` between the README's run-times markers; False if they are missing."""
    from helpers.base import store

    note = f"<!-- generated by {source} from the run's Snakemake benchmark files; do not edit by hand -->"
    return store.write_between_markers(readme, TIMES_START, TIMES_END, f"\n{note}\n\n{table}\n\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.workflow", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="run snakemake under the lock; further arguments go to snakemake")
    code = commands.add_parser("code", help="print the helpers modules a notebook runs")
    code.add_argument("notebook")
    where = commands.add_parser("where", help="print where a run's reports, tables and figures are")
    where.add_argument("--params", required=True)
    times = commands.add_parser("times", help="print a run's time and peak memory per job (its benchmark files)")
    times.add_argument("--params", required=True)
    times.add_argument("--readme", action="store_true", help="also write the table into README.md's run-times section")
    args, rest = parser.parse_known_args(argv)
    if args.command == "times":
        from helpers.study import load_params
        from helpers.study.outputs import RunOutputs

        table = run_times(RunOutputs(load_params(args.params)).build / "benchmarks")
        if not table:
            print("error: this run has no benchmark files: run make reproduce first", file=sys.stderr)
            return 1
        print(table)
        if args.readme and not write_run_times(paths.ROOT / "README.md", table, "python -m helpers.workflow times"):
            print(f"error: README.md has no {TIMES_START} section", file=sys.stderr)
            return 1
        return 0
    if args.command == "where":
        from helpers.study import load_params
        from helpers.study.outputs import RunOutputs

        outputs = RunOutputs(load_params(args.params))
        print(f"Reports: {outputs.reports / 'index.html'}\nTables:  {outputs.tables}/\nFigures: {outputs.figures}/")
        return 0
    if args.command == "code":
        print("\n".join(str(p.relative_to(paths.ROOT)) for p in code_inputs(Path(args.notebook))))
        return 0
    try:
        return run(rest)
    except RunInProgressError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
