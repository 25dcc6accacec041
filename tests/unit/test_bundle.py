"""databricks.yml and resources/*.yml validate against the Databricks bundle JSON schema, and the
job DAG runs the same CLI commands as the local pipeline."""

from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.conftest import REFERENCE

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bundle_schema():
    import json

    path = REFERENCE / "databricks-bundle-schema.json"
    if not path.is_file():
        pytest.fail(f"bundle schema not found at {path}")
    return json.loads(path.read_text())


@pytest.mark.parametrize("path", ["databricks.yml", *sorted(p.relative_to(REPO).as_posix() for p in (REPO / "resources").glob("*.yml"))])
def test_bundle_files_validate_against_the_schema(bundle_schema, path):
    document = yaml.safe_load((REPO / path).read_text())
    validator = jsonschema.Draft202012Validator(bundle_schema)
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message[:200]}" for e in errors[:5])


def test_job_runs_each_stage_as_a_cli_command_in_dependency_order():
    from jobs.cli import build_parser

    job = yaml.safe_load((REPO / "resources" / "taskseed_job.yml").read_text())["resources"]["jobs"]["taskseed_pipeline"]
    keys = [t["task_key"] for t in job["tasks"]]
    assert keys == ["catalog", "ingest", "generate", "enrich"]
    parser = build_parser()
    for task in job["tasks"]:
        params = task["python_wheel_task"]["parameters"]
        assert task["python_wheel_task"]["entry_point"] == "taskseed"
        args = parser.parse_args([p.replace("{{job.parameters.tasks}}", "arc_easy") for p in params])
        assert args.command == task["task_key"]
        assert "runtime=databricks" in args.overrides
    assert not any("api_key" in str(p).lower() and "=" in str(p) and "env" not in str(p) for t in job["tasks"] for p in t["python_wheel_task"]["parameters"])
