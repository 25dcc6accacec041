"""Import rules of the tree, read from the source (no import side effects): the CLI is a leaf that
only the console script imports; executor code (udfs/), the simulator and the schemas never import
the driver side (jobs/); no module imports by name (importlib), no modules import each other in a
circle, and no import runs back up the floors of `FLOORS`, counting imports inside functions; the
answer-format vocabulary is spelled out in schemas/ only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("jobs", "udfs", "simulator", "schemas")


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _modules(*packages: str) -> list[Path]:
    return sorted(p for package in packages for p in (REPO / package).rglob("*.py"))


# The floors of the house, top first: a module imports modules of its own floor or lower ones only
# (each names modules or packages by prefix).
FLOORS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("commands", ("jobs.cli", "jobs.console", "jobs.sim_command", "jobs.status")),
    ("the pipeline", ("jobs.pipeline",)),
    ("stages", ("jobs.catalog", "jobs.ingest", "jobs.generate", "jobs.enrich", "jobs.curate", "jobs.publish")),
    ("what stages are made of", ("jobs.llm_stage", "jobs.filters", "jobs.sqlmodels", "jobs.datacard", "jobs.export")),
    ("services", ("jobs.lakehouse", "jobs.runtime", "jobs.preflight", "jobs.tracking", "jobs.stage", "jobs.progress",
                  "jobs.config", "jobs")),
    ("executor code, simulator, schemas", ("udfs", "simulator", "schemas")),
)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    """{module: the tree's modules it imports}, anywhere in the file (functions too), a
    `from package import module` counted as importing that module, and `importlib.import_module`
    or `__import__` with a literal name counted like an import."""
    modules = {_module_name(p): p for p in _modules(*PACKAGES)}

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(resolve(a.name) for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets.update(resolve(f"{node.module}.{a.name}") if f"{node.module}.{a.name}" in modules
                               else resolve(node.module) for a in node.names)
            elif isinstance(node, ast.Call) and _by_name(node) and node.args \
                    and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                targets.add(resolve(node.args[0].value))
        graph[name] = {t for t in targets if t and t != name}
    return graph


def _by_name(node: ast.Call) -> bool:
    func = node.func
    return (isinstance(func, ast.Name) and func.id in ("import_module", "__import__")) or \
        (isinstance(func, ast.Attribute) and func.attr in ("import_module", "__import__"))


def _floor(module: str) -> int:
    best = None
    for i, (_, prefixes) in enumerate(FLOORS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (i, len(prefix))
    assert best is not None, f"{module} stands on no floor of FLOORS: add it there"
    return best[0]


@pytest.mark.parametrize("path", _modules(*PACKAGES), ids=lambda p: p.relative_to(REPO).as_posix())
def test_no_module_imports_by_name(path):
    """An import by name (importlib) hides an arrow from readers and from these checks: none names
    a module of the tree."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    constants = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
                 and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)
                 for t in n.targets if isinstance(t, ast.Name)}
    ours = {p.split(".")[0] for p in PACKAGES}
    for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call) and _by_name(n)):
        arg = call.args[0] if call.args else None
        name = arg.value if isinstance(arg, ast.Constant) else constants.get(getattr(arg, "id", None))
        # only a third-party package named by a constant may be loaded by name (an optional extra)
        assert isinstance(name, str) and name.split(".")[0] not in ours, f"line {call.lineno}: import by name"


def test_no_import_circle():
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert circles == []


def test_no_import_runs_back_up():
    up = sorted(f"{a} -> {b}" for a, targets in _graph().items() for b in targets if _floor(b) < _floor(a))
    assert up == []


def test_the_floor_check_sees_imports_inside_functions_and_by_name(tmp_path):
    source = "def f():\n    from jobs.pipeline import PIPELINE\n    importlib.import_module('jobs.cli')\n"
    tree = ast.parse(source)
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and _by_name(n)]
    froms = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert froms == ["jobs.pipeline"] and [c.args[0].value for c in calls] == ["jobs.cli"]
    assert _floor("jobs.pipeline") < _floor("jobs.publish") < _floor("jobs.filters.near_dup") < _floor("udfs.minhash")


@pytest.mark.parametrize("path", _modules(*PACKAGES), ids=lambda p: p.relative_to(REPO).as_posix())
def test_no_module_imports_the_cli(path):
    assert not {n for n in _imports(path) if n == "jobs.cli" or n.startswith("jobs.cli.")}


@pytest.mark.parametrize("path", _modules("udfs", "simulator", "schemas"), ids=lambda p: p.relative_to(REPO).as_posix())
def test_executor_code_simulator_and_schemas_do_not_import_jobs(path):
    assert not {n for n in _imports(path) if n == "jobs" or n.startswith("jobs.")}


def test_the_answer_format_vocabulary_is_declared_once():
    from schemas.answer_formats import ALL_FORMATS

    declarations = []
    for path in _modules(*PACKAGES):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                values = {e.value for e in node.elts if isinstance(e, ast.Constant)}
                if len(values & set(ALL_FORMATS)) >= 3:
                    declarations.append(path.relative_to(REPO).as_posix())
    assert declarations == [], declarations


def _tests_references(source: str) -> list[str]:
    """The string constants of `source` that point into the tests folder: a path with a `tests`
    part (`tests/data/x.json`, `../tests`, `tests\\data`) or the bare part `"tests"` that a path is
    joined from (`Path(...) / "tests" / "data"`). Docstrings are left out: a docstring that names
    the test proving a rule documents it; code that builds such a path reads it."""
    tree = ast.parse(source)
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant) and isinstance(node.body[0].value.value, str)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            parts = node.value.replace("\\", "/").split("/")
            if node.value.strip() == "tests" or ("tests" in parts and len(parts) > 1):
                found.append(node.value)
    return found


@pytest.mark.parametrize("source,found", [
    ('DATA = Path(__file__).parents[1] / "tests" / "data" / "x.json"', ["tests"]),
    ('open("tests/data/multilingual_items.json")', ["tests/data/multilingual_items.json"]),
    ('p = "../tests"', ["../tests"]),
    ('p = "tests\\\\data\\\\x.json"', ["tests\\data\\x.json"]),
    ('"""Measured by tests/unit/test_x.py."""\nx = 1', []),                 # a module docstring documents
    ('def f():\n    """See tests/spark/test_y.py."""\n    return "latest"', []),
    ('x = "contests/are/fine"', []),
    ('x = "unit tests pass"', []),
])
def test_the_tests_folder_check_tells_reads_from_documentation(source, found):
    assert _tests_references(source) == found


@pytest.mark.parametrize("path", _modules(*PACKAGES), ids=lambda p: p.relative_to(REPO).as_posix())
def test_no_product_module_reads_the_tests_folder(path):
    """Product code (jobs/, udfs/, simulator/, schemas/) never reads tests/ (issue 25: the simulator
    read its translations from tests/data; an installed package has no tests folder). Data a
    product module needs ships with it (package data, e.g. simulator/data/translations.json)."""
    assert _tests_references(path.read_text(encoding="utf-8")) == []
