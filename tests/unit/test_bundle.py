"""The Databricks bundle, loaded the way `databricks bundle validate -t <target>` sees it:
databricks.yml with resources/*.yml merged in and the target's overrides applied, validated
against the bundle JSON schema (../shared/reference/databricks-bundle-schema.json); every job
task's parameters, with `${var.*}` and `{{job.parameters.*}}` replaced by the target's values,
are parsed by the CLI's own argparse parser and their `--set` overrides by the config model; the
job's dependencies respect the tables each stage declares it reads and writes."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.conftest import REFERENCE

REPO = Path(__file__).resolve().parents[2]
TARGETS = ("dev", "prod")
JOB = "taskseed_pipeline"
VAR_REF = re.compile(r"\$\{var\.([A-Za-z][\w-]*)\}")
JOB_PARAM_REF = re.compile(r"\{\{\s*job\.parameters\.([\w-]+)\s*\}\}")


# ---- loading the bundle as the CLI does ---------------------------------------------------

def _merge(base, over, path=""):
    """Bundle merge semantics: mappings merge key by key, a job's `tasks` merge by task_key,
    anything else is replaced by the later value."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            out[key] = _merge(base[key], value, f"{path}.{key}") if key in base else copy.deepcopy(value)
        return out
    if path.endswith(".tasks") and isinstance(base, list) and isinstance(over, list):
        by_key = {t["task_key"]: t for t in base}
        for task in over:
            by_key[task["task_key"]] = _merge(by_key.get(task["task_key"], {}), task, path + "[]")
        return list(by_key.values())
    return copy.deepcopy(over)


def _include(root: dict) -> dict:
    """databricks.yml with every `include` glob's files merged in (a resource defined twice is an
    error, as in the bundle CLI)."""
    doc = copy.deepcopy(root)
    for pattern in root.get("include", []):
        files = sorted(REPO.glob(pattern))
        assert files, f"include {pattern!r} matches no file"
        for path in files:
            part = yaml.safe_load(path.read_text())
            for kind, items in part.get("resources", {}).items():
                existing = doc.setdefault("resources", {}).setdefault(kind, {})
                assert not set(items) & set(existing), f"{path.name}: {kind} defined twice: {set(items) & set(existing)}"
                existing.update(copy.deepcopy(items))
            assert set(part) <= {"resources"}, f"{path.name}: only `resources` belongs in an included file"
    return doc


def load_bundle(target: str) -> dict:
    """The merged configuration of `target`: includes, then the target's overrides (its
    `variables` set values; everything else merges over the top level)."""
    doc = _include(yaml.safe_load((REPO / "databricks.yml").read_text()))
    overrides = copy.deepcopy(doc["targets"][target] or {})
    values = overrides.pop("variables", {}) or {}
    for key in ("mode", "default"):
        overrides.pop(key, None)
    doc = _merge(doc, overrides)
    for name, value in values.items():
        assert name in doc["variables"], f"target {target} sets undeclared variable {name}"
        doc["variables"][name] = {**doc["variables"][name], "default": value}
    doc["bundle"] = {**doc["bundle"], "target": target}
    return doc


def variable_values(doc: dict) -> dict:
    """Every variable's value for the loaded target (defaults may use other variables)."""
    raw = {name: spec.get("default") for name, spec in doc["variables"].items()}
    missing = [name for name, value in raw.items() if value is None]
    assert not missing, f"variables without a value in this target: {missing}"
    return {name: substitute(value, raw, doc["bundle"]["target"]) for name, value in raw.items()}


def substitute(value, variables: dict, target: str, job_params: dict | None = None):
    """Replace ${var.x}, ${bundle.target} and {{job.parameters.x}} like the bundle CLI (deploy
    time) and the Jobs service (run time) do. A whole-string reference becomes the variable's
    value with its type (a list, a number); a reference inside text becomes text."""
    if isinstance(value, dict):
        return {k: substitute(v, variables, target, job_params) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, variables, target, job_params) for v in value]
    if not isinstance(value, str):
        return value
    whole = VAR_REF.fullmatch(value)
    if whole:
        return substitute(_lookup(variables, whole.group(1)), variables, target, job_params)
    for _ in range(5):  # nested references resolve in a few rounds
        value = VAR_REF.sub(lambda m: str(_lookup(variables, m.group(1))), value)
    value = value.replace("${bundle.target}", target)
    if job_params is not None:
        value = JOB_PARAM_REF.sub(lambda m: str(_lookup(job_params, m.group(1))), value)
    return value


def _lookup(values: dict, name: str):
    assert name in values, f"reference to undeclared {name}"
    return values[name]


def resolved_job(target: str) -> tuple[dict, dict]:
    doc = load_bundle(target)
    variables = variable_values(doc)
    job = substitute(doc["resources"]["jobs"][JOB], variables, target)
    return job, variables


# ---- schema validation ----------------------------------------------------------------------

def _python_pattern(pattern: str) -> str:
    """The schema's patterns are Go RE2 with Unicode classes, which Python's `re` lacks:
    [\\p{L}\\p{N}] (letter or digit) is [^\\W_], \\p{L} (letter) is [^\\W\\d_], \\p{N} is \\d."""
    return (pattern.replace(r"[\p{L}\p{N}]", r"[^\W_]")
            .replace(r"\p{L}", r"[^\W\d_]").replace(r"\p{N}", r"\d"))


def _pattern(validator, pattern, instance, schema):
    if validator.is_type(instance, "string") and not re.search(_python_pattern(pattern), instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


BundleValidator = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"pattern": _pattern})


@pytest.fixture(scope="module")
def bundle_schema():
    path = REFERENCE / "databricks-bundle-schema.json"
    if not path.is_file():
        pytest.fail(f"bundle schema not found at {path}")
    return json.loads(path.read_text())


def _errors(schema, document) -> list[str]:
    validator = BundleValidator(schema)
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(map(str, e.absolute_path))}: {_deepest(e)}" for e in errors[:5]]


def _deepest(error) -> str:
    """oneOf errors hide the useful message in their context; show the most specific one."""
    while error.context:
        error = max(error.context, key=lambda e: len(e.absolute_path))
    return error.message[:300]


@pytest.mark.parametrize("path", ["databricks.yml", *sorted(p.relative_to(REPO).as_posix()
                                                            for p in (REPO / "resources").glob("*.yml"))])
def test_each_bundle_file_validates(bundle_schema, path):
    assert not (errors := _errors(bundle_schema, yaml.safe_load((REPO / path).read_text()))), "\n".join(errors)


@pytest.mark.parametrize("target", TARGETS)
def test_merged_target_validates_before_and_after_substitution(bundle_schema, target):
    doc = load_bundle(target)
    doc["bundle"].pop("target")
    assert not (errors := _errors(bundle_schema, doc)), "\n".join(errors)
    resolved = substitute({k: v for k, v in doc.items() if k != "variables"}, variable_values(load_bundle(target)),
                          target)
    assert not (errors := _errors(bundle_schema, resolved)), "\n".join(errors)


def test_the_validator_rejects_what_the_bundle_cli_rejects(bundle_schema):
    """The checks above can fail: a misspelt task field, a bad pause status, a string where the
    schema wants a number are schema errors."""
    job = copy.deepcopy(load_bundle("dev"))
    tasks = job["resources"]["jobs"][JOB]["tasks"]
    tasks[0]["max_retry"] = 3
    assert any("max_retry" in e for e in _errors(bundle_schema, job))
    job = copy.deepcopy(load_bundle("dev"))
    job["resources"]["jobs"][JOB]["schedule"]["pause_status"] = "STOPPED"
    assert _errors(bundle_schema, job)
    job = copy.deepcopy(load_bundle("dev"))
    job["resources"]["jobs"][JOB]["tasks"][0]["max_retries"] = "two"
    assert _errors(bundle_schema, job)


# ---- the job ----------------------------------------------------------------------------------

def _subcommands() -> dict:
    import argparse

    from jobs.cli import build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, action.choices


def _task_params(job: dict) -> list[tuple[dict, list[str]]]:
    defaults = {p["name"]: p["default"] for p in job.get("parameters", [])}
    out = []
    for task in job["tasks"]:
        wheel = task["python_wheel_task"]
        assert (wheel["package_name"], wheel["entry_point"]) == ("taskseed", "taskseed"), task["task_key"]
        params = [str(p) for p in wheel["parameters"]]
        resolved = [JOB_PARAM_REF.sub(lambda m: str(_lookup(defaults, m.group(1))), p) for p in params]
        out.append((task, resolved))
    return out


def _command_index(params: list[str]) -> int:
    """Where the sub-command starts, after the global options (--set K=V, --config F, --home D)."""
    i = 0
    while i < len(params) and params[i] in ("--set", "--config", "--home"):
        i += 2
    return i


def _task_keys() -> list[str]:
    return [t["task_key"] for t in load_bundle("dev")["resources"]["jobs"][JOB]["tasks"]]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("task_key", _task_keys())
def test_every_task_parameter_is_accepted_by_the_cli(target, task_key):
    from jobs.config import load_config

    parser, commands = _subcommands()
    job, _ = resolved_job(target)
    (task, params), = [(t, p) for t, p in _task_params(job) if t["task_key"] == task_key]
    if task_key not in commands:
        pytest.skip(f"`taskseed {task_key}` is not a sub-command of jobs.cli's parser on this branch yet; "
                    f"its task runs `taskseed ... {' '.join(params[_command_index(params):])}`")
    assert not any(VAR_REF.search(p) or JOB_PARAM_REF.search(p) or "${" in p for p in params), params
    args = parser.parse_args(params)  # argparse exits (SystemExit) on anything it does not accept
    assert args.command == task_key
    config = load_config(overrides=args.overrides)  # every --set names a real config key and value
    assert config.runtime == "databricks"
    assert config.schema_name == resolved_job(target)[1]["schema"]
    if task_key in ("ingest", "generate", "enrich", "curate"):
        assert args.tasks == job["parameters"][0]["default"], "the job's `tasks` parameter must reach the stage"


def test_parameter_check_fails_on_a_flag_the_cli_does_not_have():
    parser, _ = _subcommands()
    with pytest.raises(SystemExit):
        parser.parse_args(["--set", "runtime=databricks", "generate", "--max-rows", "5"])


@pytest.mark.parametrize("target", TARGETS)
def test_job_covers_the_pipeline_in_an_order_the_tables_allow(target):
    """Every pipeline stage is a task; a task runs after every task whose stage writes a table it
    reads (from the stages' own declarations, jobs/stage.py), and curate/publish close the DAG."""
    from jobs.config import Config
    from jobs.pipeline import PIPELINE

    job, _ = resolved_job(target)
    tasks = {t["task_key"]: t for t in job["tasks"]}
    assert {s.name for s in PIPELINE} <= set(tasks)
    assert list(tasks)[-2:] == ["curate", "publish"]
    assert [d["task_key"] for d in tasks["curate"]["depends_on"]] == ["enrich"]
    assert [d["task_key"] for d in tasks["publish"]["depends_on"]] == ["curate"]

    def ancestors(key: str) -> set[str]:
        seen, todo = set(), [d["task_key"] for d in tasks[key].get("depends_on", [])]
        while todo:
            k = todo.pop()
            if k not in seen:
                seen.add(k)
                todo.extend(d["task_key"] for d in tasks[k].get("depends_on", []))
        return seen

    config = Config()
    for stage in PIPELINE:
        own = set(stage.writes(config))  # its own state (the llm_calls ledger), as in jobs.stage.dag_order
        for table in set(stage.reads(config)) - own:
            for writer in (s.name for s in PIPELINE if table in s.writes(config) and s.name != stage.name):
                assert writer in ancestors(stage.name), f"{stage.name} reads {table} but does not wait for {writer}"


@pytest.mark.parametrize("target, pause", [("dev", "PAUSED"), ("prod", "UNPAUSED")])
def test_schedule_retries_and_notifications(target, pause):
    job, variables = resolved_job(target)
    assert job["schedule"]["pause_status"] == pause
    assert len(job["schedule"]["quartz_cron_expression"].split()) in (6, 7)  # Quartz: seconds first
    assert isinstance(job["email_notifications"]["on_failure"], list)
    for task in job["tasks"]:
        assert task["max_retries"] >= 1 and task["min_retry_interval_millis"] >= 60_000, task["task_key"]
        assert task["retry_on_timeout"] is True and task["timeout_seconds"] > 0, task["task_key"]


@pytest.mark.parametrize("target", TARGETS)
def test_the_experiment_is_the_one_tracking_logs_to(target):
    from jobs.tracking import EXPERIMENT

    doc = load_bundle(target)
    variables = variable_values(doc)
    experiments = substitute(doc["resources"]["experiments"], variables, target)
    assert [e["name"] for e in experiments.values()] == [f"/Shared/{EXPERIMENT}-{variables['schema']}"]


def test_targets_differ_only_in_databricks_yml():
    """resources/ never names a target; the environments' differences are the targets' blocks."""
    for path in (REPO / "resources").glob("*.yml"):
        text = path.read_text()
        assert not re.search(r"\b(dev|prod)\b", re.sub(r"#.*", "", text)), path.name
    dev, prod = resolved_job("dev")[0], resolved_job("prod")[0]
    assert dev["schedule"]["pause_status"] != prod["schedule"]["pause_status"]


def test_no_secret_in_any_parameter():
    job, _ = resolved_job("prod")
    for task, params in _task_params(job):
        for p in params:
            key = p.split("=", 1)[0].lower()
            assert not any(word in key for word in ("api_key", "token", "password")), (task["task_key"], p)
