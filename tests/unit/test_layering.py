"""The package's layers (docs/architecture.md), written down as data and checked by walking every module's imports.

A module imports from its own layer and the layers below it, never from one above (imports inside functions
count: they run too); the subpackages import one another without cycles; every module belongs to a layer.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from helpers.base import paths
from helpers.base.code import imported_modules, module_file, module_package

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base", ("helpers.base",)),
    ("core", ("helpers.core",)),
    ("study", ("helpers.study",)),
    ("stats", ("helpers.stats",)),
    ("report", ("helpers.report",)),
    ("workflow", ("helpers.workflow",)),
)
"""Bottom first: each layer and the subpackages (or modules) it is made of."""
FRONT = "helpers"
"""``helpers/__init__.py``: the public names, loaded from the core on first use; it imports no helpers module."""


def modules() -> dict[str, Path]:
    """Every module of the package by name (a package by its own name, for its ``__init__.py``)."""
    found = {}
    for path in sorted((paths.ROOT / "helpers").rglob("*.py")):
        parts = path.relative_to(paths.ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def layer_of(module: str) -> int | None:
    """The index in ``LAYERS`` of the layer ``module`` belongs to, or None."""
    for index, (_, members) in enumerate(LAYERS):
        if any(module == member or module.startswith(member + ".") for member in members):
            return index
    return None


def upward_imports(module: str, source: str) -> list[str]:
    """Each import in ``source`` (the text of ``module``) of a module in a layer above ``module``'s, in words."""
    own = layer_of(module)
    problems = []
    for target, line in sorted(imported_modules(ast.parse(source), module_package(module)).items()):
        layer = layer_of(target)
        if own is not None and layer is not None and layer > own:
            problems.append(
                f"{module} (layer {LAYERS[own][0]}), line {line}: imports {target} from a layer above it, "
                f"{LAYERS[layer][0]}"
            )
    return problems


def subpackage(module: str) -> str:
    """The subpackage a module is part of: a package is its own, and a module directly in ``helpers``
    (``helpers.workflow``) stands alone."""
    parent = module.rpartition(".")[0]
    return module if module_file(module).name == "__init__.py" or parent == FRONT else parent


def test_every_module_belongs_to_a_layer() -> None:
    assert [module for module in modules() if module != FRONT and layer_of(module) is None] == []


def test_the_layers_name_packages_and_modules_that_exist() -> None:
    assert [member for _, members in LAYERS for member in members if module_file(member) is None] == []


def test_no_module_imports_from_a_layer_above_it() -> None:
    problems = []
    for module, path in modules().items():
        problems += upward_imports(module, path.read_text(encoding="utf-8"))
    assert problems == []


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("helpers.core.metrics", "from helpers.report import figures\n"),
        ("helpers.base.store", "def f():\n    from helpers.study import load_params\n"),  # inside a function
        ("helpers.core.streaming", "from ..study import tables\n"),  # relative
        ("helpers.study.tables", "import helpers.stats.findings.scorecard\n"),
    ],
)
def test_the_check_flags_a_planted_upward_import(module: str, source: str) -> None:
    problems = upward_imports(module, source)
    assert len(problems) == 1 and "from a layer above" in problems[0] and module in problems[0]


def test_the_check_lets_a_module_import_its_own_layer_and_those_below() -> None:
    source = "from helpers.base import store\nfrom helpers.core import models\nfrom helpers.stats import robustness\n"
    assert upward_imports("helpers.stats.findings.rules", source) == []


def test_the_subpackages_import_one_another_without_cycles() -> None:
    edges: dict[str, set[str]] = {}
    for module, path in modules().items():
        if module == FRONT:
            continue
        source = path.read_text(encoding="utf-8")
        targets = {subpackage(t) for t in imported_modules(ast.parse(source), module_package(module)) if t != FRONT}
        edges.setdefault(subpackage(module), set()).update(targets - {subpackage(module)})
    cycles = []

    def visit(node: str, trail: list[str]) -> None:
        if node in trail:
            cycles.append(" -> ".join([*trail[trail.index(node) :], node]))
            return
        for target in sorted(edges.get(node, ())):
            visit(target, [*trail, node])

    for start in sorted(edges):
        visit(start, [])
    assert cycles == []


def test_the_public_names_come_from_the_core_on_first_use() -> None:
    tree = ast.parse(module_file(FRONT).read_text(encoding="utf-8"))
    assert imported_modules(tree, FRONT) == {}  # nothing imported when helpers is
    public = next(
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "_PUBLIC"
    )
    assert {LAYERS[layer_of(target)][0] for target in public.values()} == {"core"}


def dangling_imports(source: str, package: str = "") -> list[str]:
    """Each helpers import in ``source`` that names no module of the package (nor a public name of ``helpers``):
    an import left behind by a move (an installed copy of the package elsewhere could still answer it)."""
    problems = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([base] if base else [])])
            if base.split(".")[0] != "helpers":
                continue
            if module_file(base) is None:
                problems.append(f"line {node.lineno}: from {base} import ...")
            elif base == FRONT:
                known = _public() | {name for name in _defined(module_file(FRONT))}
                problems += [
                    f"line {node.lineno}: from helpers import {alias.name}"
                    for alias in node.names
                    if alias.name not in known and module_file(f"helpers.{alias.name}") is None
                ]
        elif isinstance(node, ast.Import):
            problems += [
                f"line {node.lineno}: import {alias.name}"
                for alias in node.names
                if alias.name.split(".")[0] == "helpers" and module_file(alias.name) is None
            ]
    return problems


def _code(path: Path) -> str:
    """A Python file's text, or a notebook's code cells (IPython magics and shell lines left out)."""
    if path.suffix != ".ipynb":
        return path.read_text(encoding="utf-8")
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    lines = "\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code").splitlines()
    return "\n".join(line for line in lines if not line.lstrip().startswith(("%", "!")))


def test_every_helpers_import_names_a_module_that_exists() -> None:
    files = [
        *modules().values(),
        *sorted(paths.ROOT.glob("tests/**/*.py")),
        *sorted(paths.ROOT.glob("benchmarks/*.py")),
    ]
    files += sorted(paths.NOTEBOOKS.glob("*.ipynb"))
    problems = []
    for path in files:
        module = next((name for name, file in modules().items() if file == path), "")
        found = dangling_imports(_code(path), module_package(module) if module else "")
        problems += [f"{path.relative_to(paths.ROOT)} {problem}" for problem in found]
    assert problems == []


def test_the_check_flags_an_import_left_behind() -> None:
    source = "from helpers import collection, measure, study\nimport helpers.findings\nfrom helpers.tables import x\n"
    assert len(dangling_imports(source)) == 3


def test_the_explorers_measurements_draw_nothing() -> None:
    tree = ast.parse(module_file("helpers.report.explore_measure").read_text(encoding="utf-8"))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    drawing = ("matplotlib", "ipywidgets", "IPython", "helpers.report.explore", "helpers.report.figures")
    assert [name for name in imported if name.startswith(drawing) and name != "helpers.report.explore_measure"] == []


def _defined(path: Path) -> set[str]:
    """The names a module defines or imports at its top level."""
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    return names


def _stale(name: str) -> bool:
    """Whether a dotted ``helpers.x.y`` name in the docs names nothing: no module, and no name the longest module
    it starts with defines (``helpers.measure``: a public name of ``helpers/__init__.py``)."""
    parts = name.split(".")
    for length in range(len(parts), 0, -1):
        path = module_file(".".join(parts[:length]))
        if path is not None:
            known = _defined(path) | (_public() if length == 1 else set())
            return length < len(parts) and parts[length] not in known
    return True


def _public() -> set[str]:
    return set(re.findall(r'^    "(\w+)": "helpers', module_file(FRONT).read_text(encoding="utf-8"), re.MULTILINE))


@pytest.mark.parametrize(
    "page", [paths.ROOT / "README.md", *sorted((paths.ROOT / "docs").glob("*.md"))], ids=lambda p: p.name
)
def test_the_docs_name_only_modules_and_files_that_exist(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    files = []
    for found in re.findall(r"helpers/[\w./{},]*\w/?", text):
        head, _, rest = found.partition("{")
        alternatives, _, tail = rest.partition("}")
        files += [head + choice + tail for choice in alternatives.split(",")] if rest else [found]
    missing = [f for f in files if not (paths.ROOT / f).exists()]
    missing += [name for name in re.findall(r"\bhelpers(?:\.\w+)+", text) if _stale(name)]
    assert missing == []


def test_the_architecture_page_describes_every_layer() -> None:
    page = (paths.ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    for _, members in LAYERS:
        for member in members:
            shown = member.replace(".", "/") + ("/" if module_file(member).name == "__init__.py" else ".py")
            assert f"`{shown}`" in page, shown
