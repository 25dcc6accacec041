"""The README's table reference matches the declared tables: every table in schemas.tables is a
row naming its key and every column, and every row is a declared table."""

from __future__ import annotations

import re
from pathlib import Path

from schemas.tables import ALL_TABLES

README = Path(__file__).resolve().parents[2] / "README.md"


def reference_rows() -> dict[str, list[str]]:
    """{table: cells} of the README's "Tables (reference)" section."""
    text = README.read_text()
    start = text.index("### Tables (reference)")
    end = text.index("\n#", start + 1)
    rows = {}
    for line in text[start:end].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] not in ("table", "") and not set(cells[0]) <= set("-"):
            rows[cells[0]] = cells
    return rows


def test_every_declared_table_and_column_is_documented():
    rows = reference_rows()
    for name, spec in ALL_TABLES.items():
        assert name in rows, f"README table reference lacks {name}"
        cells = rows[name]
        named = set(re.findall(r"\w+", cells[-1]))
        assert not (missing := [c for c in spec.columns if c not in named]), f"{name}: columns {missing} undocumented"
        assert all(k in cells[2] for k in spec.keys), f"{name}: key {spec.keys} not in {cells[2]!r}"


def test_every_documented_table_is_declared():
    assert not (extra := set(reference_rows()) - set(ALL_TABLES)), f"README documents undeclared tables {extra}"


def _section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"## {title}")
    return text[start:text.index("\n## ", start + 1)]


def test_every_guarantee_names_a_test_that_exists():
    """Every row of README "Guarantees" names at least one test module, and every test it names
    (`tests/x.py`, `tests/x.py::test_y`, `::test_z` continuing the previous module) is there."""
    repo = README.parent
    rows = [line for line in _section("Guarantees").splitlines()
            if line.startswith("| ") and not line.startswith("| promise")]
    assert len(rows) >= 15
    for row in rows:
        proof = row.rstrip().rstrip("|").rsplit("|", 1)[1]
        refs = re.findall(r"`(tests/[\w/]+\.py)?(?:::(\w+))?`", proof)
        assert any(module for module, _ in refs), f"no proving test named in: {row[:120]}"
        module = None
        for path, name in refs:
            module = path or module
            source = (repo / module).read_text(encoding="utf-8")
            if name:
                assert re.search(rf"^(async )?def {name}\(", source, re.M), f"{module}::{name} does not exist"
