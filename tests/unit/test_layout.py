"""Import rules of the tree, read from the source (no import side effects): the CLI is a leaf that
only the console script imports; executor code (udfs/), the simulator and the schemas never import
the driver side (jobs/); the answer-format vocabulary is spelled out in schemas/ only."""

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
