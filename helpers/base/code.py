"""The code behind a result, in one place: the helpers modules a computation runs (its import closure), the
non-Python files they run, and one fingerprint of that code.

Read off the sources, never imported (no torch): ``module_closure`` follows every import of a ``helpers`` module
(imports inside functions included) and adds the ``__init__.py`` of every package on the way, since Python runs
them first. A module that runs a file that is not Python (a C++ kernel) declares it in ``CODE_FILES``, a
module-level tuple of file names or glob patterns relative to the module's folder, written as a literal::

    CODE_FILES = ("*.cpp",)  # the kernels' C++ sources, compiled at run time

``code_files`` adds them; a pattern that matches nothing is an error, and a test checks that every non-Python file
under ``helpers/`` is declared by some module. ``fingerprint`` hashes what the code does: a Python file's tokens
without its comments, blank lines and docstrings (string statements), so an edit of those alone changes no key;
any other file's bytes. The workflow's code inputs (``helpers.workflow``), the measurement chunks' key
(``helpers.study.collection``) and the figures' drawing code all come from here.
"""

from __future__ import annotations

import ast
import fnmatch
import functools
import hashlib
import io
import tokenize
from collections.abc import Iterable
from pathlib import Path

from helpers.base import paths

DECLARATION = "CODE_FILES"
"""The module-level name under which a module declares the non-Python files it runs."""


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


def module_closure(modules: Iterable[str]) -> set[str]:
    """``modules`` and every helpers module they import, transitively, with every package above each one (Python
    runs ``helpers/__init__.py``, then ``helpers/study/__init__.py``, before ``helpers.study.tables``)."""
    closure: set[str] = set()
    todo = set(modules)
    while todo:
        module = todo.pop()
        if module in closure:
            continue
        path = module_file(module)
        if path is None:
            raise ModuleNotFoundError(f"no helpers module {module!r} under {paths.ROOT}")
        closure.add(module)
        parent = module.rpartition(".")[0]
        if parent:
            todo.add(parent)
        todo |= set(imported_modules(_tree(path), module_package(module))) - closure
    return closure


def declared_files(module: str) -> list[Path]:
    """The non-Python files ``module`` declares in ``CODE_FILES`` (a literal tuple of names or glob patterns
    relative to its folder); ``FileNotFoundError`` for a pattern that matches no file."""
    path = module_file(module)
    if path is None:
        raise ModuleNotFoundError(f"no helpers module {module!r} under {paths.ROOT}")
    patterns: list[str] = []
    for node in _tree(path).body:
        if not isinstance(node, ast.Assign | ast.AnnAssign):
            continue
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        if any(isinstance(t, ast.Name) and t.id == DECLARATION for t in targets) and node.value is not None:
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                raise ValueError(f"{path}: {DECLARATION} must be a literal tuple of file names or patterns") from None
            patterns.extend([value] if isinstance(value, str) else list(value))
    found: list[Path] = []
    for pattern in patterns:
        matches = sorted(p for p in path.parent.iterdir() if p.is_file() and fnmatch.fnmatch(p.name, pattern))
        if not matches:
            raise FileNotFoundError(f"{path}: {DECLARATION} names {pattern!r}, which matches no file in {path.parent}")
        found.extend(matches)
    return found


def code_files(modules: Iterable[str]) -> list[Path]:
    """Every file that running ``modules`` runs: the closure's module files and the files they declare, sorted."""
    closure = module_closure(modules)
    files = {module_file(module) for module in closure}
    for module in closure:
        files.update(declared_files(module))
    return sorted(path for path in files if path is not None)


def _tree(path: Path) -> ast.Module:
    return ast.parse(Path(path).read_text(encoding="utf-8"), filename=str(path))


def _string_statements(tree: ast.AST) -> set[tuple[int, int]]:
    """Where each statement that is only a string (docstrings, attribute docstrings) starts: it does nothing."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            found.add((node.lineno, node.col_offset))
    return found


def python_code(source: str) -> str:
    """A Python source as what it does: its tokens, without comments, blank lines and string statements
    (docstrings), one token per line. An edit of a comment or docstring, or of spacing within a line, leaves it."""
    skipped = _string_statements(ast.parse(source))
    kept: list[str] = []
    in_string_statement = False
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type in (tokenize.COMMENT, tokenize.NL, tokenize.ENCODING):
            continue
        if token.start in skipped:  # a string statement: its strings up to its end of line are dropped
            in_string_statement = True
        if in_string_statement:
            if token.type == tokenize.NEWLINE or (token.type == tokenize.OP and token.string == ";"):
                in_string_statement = False
            continue
        kept.append(f"{tokenize.tok_name[token.type]} {token.string}")
    return "\n".join(kept)


@functools.lru_cache(maxsize=1024)
def _python_digest(data: bytes) -> str:
    return hashlib.sha256(python_code(data.decode("utf-8")).encode()).hexdigest()


def file_fingerprint(path: Path) -> str:
    """The hash of what a file's code does (``python_code`` for Python, the bytes of anything else)."""
    data = Path(path).read_bytes()
    return _python_digest(data) if Path(path).suffix == ".py" else hashlib.sha256(data).hexdigest()


def fingerprint(files: Iterable[Path]) -> str:
    """One hash of several code files: each one's path in the repository and ``file_fingerprint``."""
    digest = hashlib.sha256()
    for path in sorted(Path(p) for p in files):
        shown = path.relative_to(paths.ROOT).as_posix() if path.is_relative_to(paths.ROOT) else path.as_posix()
        digest.update(f"{shown}\0{file_fingerprint(path)}\n".encode())
    return digest.hexdigest()


def code_fingerprint(modules: Iterable[str]) -> str:
    """The fingerprint of everything running ``modules`` runs (``code_files``): the key of what they compute."""
    return fingerprint(code_files(modules))
