"""What the Snakefile needs beyond paths: each rule's code inputs, and a run that survives being killed.

``code_inputs(notebook)`` lists every ``helpers`` module a numbered notebook runs, found by
reading the imports of its code cells and, transitively, of the modules (imports inside
functions included, and the ``__init__.py`` of every package on the way), so that editing a
module reruns exactly the rules whose code uses it.

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

from helpers.base import paths

LOCK = paths.ROOT / ".snakemake" / "compendium.lock"
RUNNER = ("helpers.report.notebooks", "helpers.study", "helpers.base.paths", "helpers.base.store")
"""Modules every notebook rule runs: the papermill runner and what it imports (closed over below)."""


def module_file(module: str) -> Path | None:
    """The file of a helpers module or package (``helpers.study`` -> helpers/study/__init__.py); None if none."""
    relative = Path(*module.split("."))
    for candidate in (paths.ROOT / relative.with_suffix(".py"), paths.ROOT / relative / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_package(module: str) -> str:
    """The package a module's relative imports start from: the module itself for a package, else its parent."""
    path = module_file(module)
    return module if path is not None and path.name == "__init__.py" else module.rpartition(".")[0]


def imported_modules(tree: ast.AST, package: str = "") -> dict[str, int]:
    """The helpers modules imported anywhere in ``tree`` (imports inside functions too), each with the line of its
    first import. ``from X import name`` imports module ``X.name`` where there is one, else ``X`` (a package's
    ``__init__.py`` for a name it defines); ``package``: where relative imports start (``module_package``)."""
    found: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([base] if base else [])])
            targets = [f"{base}.{a.name}" if module_file(f"{base}.{a.name}") else base for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            continue
        for target in targets:
            if target.split(".")[0] == "helpers" and module_file(target) is not None:
                found[target] = min(found.get(target, node.lineno), node.lineno)
    return found


def module_closure(modules: set[str]) -> set[str]:
    """``modules`` and every helpers module they import, transitively, with every package above each one (Python
    runs ``helpers/__init__.py``, then ``helpers/study/__init__.py``, before ``helpers.study.tables``)."""
    closure: set[str] = set()
    todo = set(modules)
    while todo:
        module = todo.pop()
        if module in closure:
            continue
        closure.add(module)
        parent = module.rpartition(".")[0]
        if parent:
            todo.add(parent)
        source = module_file(module).read_text(encoding="utf-8")
        todo |= set(imported_modules(ast.parse(source), module_package(module))) - closure
    return closure


def notebook_imports(notebook: Path) -> set[str]:
    """The helpers modules a notebook's code cells import (IPython magics and shell lines skipped)."""
    cells = json.loads(Path(notebook).read_text(encoding="utf-8"))["cells"]
    modules = set()
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
        modules |= set(imported_modules(ast.parse("\n".join(lines))))
    return modules


def code_inputs(notebook: Path) -> list[Path]:
    """Every helpers module file that running ``notebook`` through the runner executes, sorted."""
    closure = module_closure(notebook_imports(notebook) | set(RUNNER))
    return sorted(module_file(module) for module in closure)


def runner_inputs() -> list[Path]:
    """The helpers module files the runner itself executes (the index rule runs only these)."""
    return sorted(module_file(module) for module in module_closure(set(RUNNER)))


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
