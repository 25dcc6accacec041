"""The CLI without Spark: `taskseed sim` takes every default from the config's simulator section
(jobs.config.SimulatorConfig), flags override it; `--tasks` parsing; a bad value is one line."""

from __future__ import annotations

import argparse

import pytest

from jobs.cli import main, parse_tasks
from jobs.sim_command import add_sim_parser, settings_from_args
from jobs.config import ConfigError, SimulatorConfig, load_config
from simulator import DEFAULT_FAULT_KINDS, SimSettings


def _sim_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_sim_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["sim", *argv])


def test_sim_without_flags_is_the_simulator_the_pipeline_starts():
    config = load_config(overrides=["simulator.latency_ms=7", "simulator.latency_dist=lognormal",
                                    "simulator.rate_limit_rps=30", "simulator.hang_s=4", "simulator.seed=11",
                                    "endpoint.model=my-model"])
    settings = settings_from_args(_sim_args(), config.simulator, config.endpoint.model)
    assert settings == SimSettings.from_config(config.simulator, model="my-model")
    assert (settings.latency_ms, settings.latency_dist, settings.rate_limit_rps, settings.hang_s, settings.seed) == \
        (7, "lognormal", 30, 4, 11)
    assert settings.fault_kinds == DEFAULT_FAULT_KINDS  # the opt-in kinds need --fault-kinds or --fault


def test_sim_flags_override_the_config():
    config = SimulatorConfig(latency_ms=7, wrong_answer_rate=0.3)
    settings = settings_from_args(_sim_args("--latency-ms", "50", "--fault-kinds", "500,drop", "--fault-rate", "0.2",
                                            "--model", "other"), config)
    assert (settings.latency_ms, settings.wrong_answer_rate, settings.model) == (50, 0.3, "other")
    assert dict(settings.kind_rates()) == {"500": 0.1, "drop": 0.1}


def test_sim_defaults_are_the_config_defaults():
    assert settings_from_args(_sim_args()) == SimSettings.from_config(SimulatorConfig(), model="taskseed-sim")


def test_sim_bad_values_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(ConfigError, match="heldout-file"):
        settings_from_args(_sim_args("--heldout-file", str(tmp_path / "missing.jsonl")))
    assert main(["--set", "simulator.latency_ms=-1", "sim"]) == 2
    assert "simulator.latency_ms" in capsys.readouterr().err


@pytest.mark.parametrize("value, tasks", [(None, None), ("", None), ("arc_easy", ["arc_easy"]), (" a, b ,,", ["a", "b"])])
def test_parse_tasks(value, tasks):
    assert parse_tasks(value) == tasks


def test_empty_tasks_option_is_an_error():
    with pytest.raises(ConfigError, match="--tasks needs at least one task"):
        parse_tasks(" , ")


def test_curate_command_passes_the_task_scope_and_prints_the_summary(monkeypatch, capsys):
    """`taskseed curate --tasks a,b` runs jobs.curate.run_curate on those tasks and prints its
    summary on stderr (the Spark side is tested in tests/spark/test_curate_sql.py and tests/e2e)."""
    import jobs.cli as cli
    import jobs.curate as curate

    calls = []

    class Result:
        def summary_lines(self):
            return ["[curate] 3 candidate items (gsm8k,arc_easy): curated=2, curated_commercial=1"]

    def fake_run_curate(lakehouse, config, tasks, progress, force=False):
        calls.append((lakehouse, tasks, progress, force))
        return Result()

    monkeypatch.setattr(cli, "open_lakehouse", lambda config: "the-lakehouse")
    monkeypatch.setattr(curate, "run_curate", fake_run_curate)
    args = cli.build_parser().parse_args(["curate", "--tasks", "gsm8k, arc_easy"])
    assert args.handler is cli.cmd_curate
    assert args.handler(args, load_config()) == 0
    assert calls == [("the-lakehouse", ["gsm8k", "arc_easy"], cli.progress, False)]
    printed = capsys.readouterr()
    # a stage summary is a report: stderr, as docs/configuration.md says (issue 29); stdout stays the answer
    assert "curated=2, curated_commercial=1" in printed.err and printed.out == ""
    assert cli.build_parser().parse_args(["curate"]).tasks is None
    forced = cli.build_parser().parse_args(["curate", "--force"])  # evaluate although nothing changed
    assert forced.handler(forced, load_config()) == 0 and calls[-1][1:] == (None, cli.progress, True)

def test_publish_and_status_commands_parse():
    from jobs.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["--home", "/tmp/h", "publish", "--shard-rows", "500"])
    assert args.command == "publish" and args.shard_rows == 500
    assert parser.parse_args(["status", "--json"]).json is True
    assert parser.parse_args(["publish"]).shard_rows is None


def test_run_ends_with_where_to_look(tmp_path):
    """The data card and export folder of each published dataset, three runnable SQL queries
    spelled with this invocation's --config/--home, and the MLflow UI command for the local store."""
    import shlex
    import shutil
    from pathlib import Path
    from types import SimpleNamespace

    from jobs.cli import build_parser
    from jobs.console import print_where_to_look

    home = tmp_path / "my home"
    home.mkdir()
    (home / "mlflow.db").write_bytes(b"")
    args = build_parser().parse_args(["--config", "demo/taskseed.demo.yaml", "--home", str(home), "run"])
    config = load_config("demo/taskseed.demo.yaml", home=home)
    folder = home / "exports" / "curated" / "v2"
    publication = SimpleNamespace(dataset="curated", delta_version=2, folder=folder, card=folder / "datacard.html")
    lines: list[str] = []
    print_where_to_look(args, config, SimpleNamespace(result=SimpleNamespace(publications=[publication])),
                        out=lines.append)
    text = "\n".join(lines)
    assert f"data card (curated v2): {folder / 'datacard.html'}" in text
    assert f"export folder:  {folder}/" in text
    sql = [shlex.split(line.strip()) for line in lines if " sql " in line]
    assert len(sql) == 3
    for argv in sql:
        assert shutil.which(argv[0]) and Path(argv[0]).name == "taskseed"  # startable as printed
        parsed = build_parser().parse_args(argv[1:])
        assert parsed.command == "sql" and parsed.home == str(home) and parsed.config == "demo/taskseed.demo.yaml"
        assert parsed.query.lower().startswith("select ")
    mlflow = shlex.split(next(line for line in lines if "mlflow ui" in line).split("MLflow UI:")[1])
    assert shutil.which(mlflow[0]) and Path(mlflow[0]).name == "mlflow"
    assert mlflow[1:3] == ["ui", "--backend-store-uri"]
    assert mlflow[3] == f"sqlite:///{home.resolve() / 'mlflow.db'}"


# ---- a full disk or a read-only mount behind an error raised mid-run -----------------------

# What Spark raises when a Delta write hits a full disk (a Py4JJavaError's text, shortened from a
# real one: tests/reliability/test_bad_input_cli.py::test_a_disk_that_fills_during_a_run_is_one_line).
JAVA_DISK_FULL = """An error occurred while calling o412.execute.
: org.apache.spark.SparkException: [TASK_WRITE_FAILED] Task failed while writing rows to file:/h/tables/task_catalog. SQLSTATE: 58030
\tat org.apache.spark.sql.errors.QueryExecutionErrors$.taskFailedWhileWritingRowsError(QueryExecutionErrors.scala:775)
Caused by: org.apache.hadoop.fs.FSError: java.io.IOException: No space left on device
Caused by: java.io.IOException: No space left on device
\tat java.base/java.io.FileOutputStream.writeBytes(Native Method)
"""


class FakeJavaError(Exception):
    """Stands in for PySpark's captured exception: a short message, the JVM trace in `_stackTrace`."""

    def __init__(self, message: str, stack_trace: str):
        super().__init__(message)
        self._stackTrace = stack_trace


def _raised(exc: BaseException, *, cause: BaseException | None = None, during: BaseException | None = None):
    """`exc` as Python leaves it after `raise exc from cause` inside `except during`."""
    try:
        try:
            if during is not None:
                raise during
            raise exc from cause
        except BaseException as first:
            if first is exc:
                raise
            raise exc from cause
    except BaseException as caught:
        return caught


def _mlflow_store_full(during: BaseException | None = None) -> Exception:
    """MLflow's local store on a full disk: MlflowException from sqlalchemy's OperationalError from
    sqlite3's (observed: `mlflow.set_tag` or `end_run` after a stage failed on the same disk)."""
    import sqlite3

    root = _raised(sqlite3.OperationalError("database or disk is full"), during=during)
    middle = _raised(RuntimeError("(sqlite3.OperationalError) database or disk is full\n[SQL: INSERT INTO tags]"),
                     cause=root)
    return _raised(Exception("(sqlite3.OperationalError) database or disk is full\n[SQL: INSERT INTO tags]"),
                   cause=middle)


@pytest.mark.parametrize("exc, code", [
    (RuntimeError(JAVA_DISK_FULL), "ENOSPC"),
    (FakeJavaError("[TASK_WRITE_FAILED] Task failed while writing rows", "Caused by: java.io.IOException: "
                   "Read-only file system"), "EROFS"),
    (FakeJavaError("[DELTA_COMMIT] commit failed", "java.io.IOException: Disk quota exceeded"), "EDQUOT"),
    (RuntimeError("An exception was thrown from the Python worker.\nOSError: [Errno 28] No space left on device: "
                  "'/h/spool/x'"), "ENOSPC"),
    (_mlflow_store_full(), "ENOSPC"),
    (_raised(RuntimeError("mlflow: could not log artifact"), cause=OSError(13, "Permission denied", "/h/mlruns")),
     "EACCES"),
], ids=["java_trace_enospc", "jvm_stack_trace_erofs", "jvm_stack_trace_edquot", "python_worker_enospc",
        "mlflow_sqlite_full", "oserror_in_chain"])
def test_an_os_error_a_user_can_fix_is_found_behind_a_failure(exc, code):
    import errno

    from jobs.preflight import os_error_behind

    found = os_error_behind(exc)
    assert found is not None
    assert found[0].errno == getattr(errno, code)


@pytest.mark.parametrize("exc", [
    RuntimeError("[TASK_WRITE_FAILED] Task failed while writing rows: java.lang.OutOfMemoryError: Java heap space"),
    FakeJavaError("[DELTA_CONCURRENT_APPEND] files were added", "io.delta.exceptions.ConcurrentAppendException"),
    _raised(RuntimeError("fetch failed"), cause=ConnectionRefusedError(111, "Connection refused")),
    ValueError("a genuine bug"),
], ids=["oom", "delta_conflict", "connection_refused", "bug"])
def test_other_failures_have_no_os_error_behind_them(exc):
    from jobs.preflight import os_error_behind

    assert os_error_behind(exc) is None


def test_the_first_failure_is_named_not_the_cleanup_that_failed_the_same_way():
    """`taskseed run` on a disk that fills: the Delta write fails, then MLflow fails to record the
    run as FAILED on the same disk; the error names the Delta write (furthest down the chain)."""
    from jobs.preflight import os_error_behind

    spark_error = RuntimeError(JAVA_DISK_FULL)
    _, shown_by = os_error_behind(_mlflow_store_full(during=_mlflow_store_full(during=spark_error)))
    assert shown_by is spark_error


def _command_raising(monkeypatch, exc: BaseException) -> None:
    import jobs.cli as cli

    def handler(args, config):
        raise exc

    monkeypatch.setattr(cli, "cmd_tables", handler)  # build_parser binds the handler when main() runs


@pytest.mark.parametrize("exc, failed", [
    (_mlflow_store_full(), "(sqlite3.OperationalError: database or disk is full)"),
    (RuntimeError(JAVA_DISK_FULL), "(RuntimeError: An error occurred while calling o412.execute.)"),
], ids=["mlflow", "java"])
def test_a_full_disk_mid_run_is_one_line_and_the_log_gets_the_traceback(tmp_path, monkeypatch, capsys, exc, failed):
    _command_raising(monkeypatch, exc)
    home = tmp_path / "h"
    assert main(["--home", str(home), "tables"]) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"taskseed: error: No space left on device: the disk is full {failed}"), lines[0]
    logs = list((home / "logs").glob("spark-*.log"))
    assert len(logs) == 1 and f"(details in {logs[0]})" in lines[0]
    assert "Traceback" in logs[0].read_text()


def test_a_genuine_bug_still_shows_its_traceback(tmp_path, monkeypatch):
    _command_raising(monkeypatch, ValueError("a genuine bug"))
    with pytest.raises(ValueError, match="a genuine bug"):
        main(["--home", str(tmp_path / "h"), "tables"])


def test_program_is_what_the_shell_can_start(tmp_path, monkeypatch):
    """After the README's setup command the venv is not activated: the printed command must be the
    venv's script path (relative to the working directory), not a bare name PATH does not find;
    with the venv's bin on PATH the bare name is enough."""
    import os
    import sys
    from pathlib import Path

    from jobs.console import program

    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "taskseed").exists():
        pytest.skip("taskseed is not installed next to this interpreter")
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH
    monkeypatch.chdir(bin_dir.parent.parent)
    assert program("taskseed") == os.path.join(bin_dir.parent.name, bin_dir.name, "taskseed")
    monkeypatch.chdir(tmp_path)
    assert program("taskseed") == str(bin_dir / "taskseed")
    monkeypatch.setenv("PATH", str(bin_dir))
    assert program("taskseed") == "taskseed"
    assert program("no-such-program-here") == "no-such-program-here"


def test_tables_say_what_they_cut_and_status_cuts_nothing():
    from types import SimpleNamespace

    from jobs.console import STATUS_COLUMNS, cells_cut, format_table, status_rows

    long = "/a/very/long/export/path/" + "x" * 80
    assert "…" in format_table(["path"], [[long]]) and long not in format_table(["path"], [[long]])
    assert long in format_table(["path"], [[long]], max_width=None)
    assert cells_cut([[long, "short", None], ["y" * 60, ["a"] * 30]]) == 2  # > 60 characters, lists as JSON
    tables = [{"table": name, "rows": 10, "delta_version": 3}
              for name in ("filter_decisions", "curated", "curated_commercial", "minhash_signatures", "heldout_keys")]
    status = SimpleNamespace(stage="curate", tables=tables, requests=None, failed=None, quarantined=None,
                             last_run={"start": "2026-12-01 09:00", "outcome": "FINISHED", "run_id": "abc"})
    rows = status_rows([status, SimpleNamespace(stage="catalog", tables=[], requests=None, failed=None,
                                                quarantined=None, last_run=None)])
    assert [r[1] for r in rows[:5]] == [f"{t['table']} 10 rows v3" for t in tables]
    assert rows[0][0] == "curate" and all(r[0] == "" for r in rows[1:5]) and rows[5][:2] == ["catalog", "-"]
    assert "heldout_keys 10 rows v3" in format_table(STATUS_COLUMNS, rows, max_width=None)


@pytest.mark.parametrize("last, write, text", [
    ({"start": "2026-12-07T10:00:00Z", "outcome": "done", "run_id": "abc"}, None, "2026-12-07T10:00:00Z done (run abc)"),
    (None, {"at": "2026-12-07T10:05:00Z", "source": "llm_calls", "run_id": "r1"},
     "2026-12-07T10:05:00Z wrote llm_calls, run r1 (no MLflow run)"),
    (None, {"at": "2026-12-07T10:06:00Z", "source": "curated v3", "run_id": None},
     "2026-12-07T10:06:00Z wrote curated v3 (no MLflow run)"),
    (None, None, "never"),
])
def test_status_reads_a_stage_run_from_the_tables_when_mlflow_has_none(last, write, text):
    """issue 29: a stage run on its own (no MLflow run) shows its last write, not `never (under MLflow)`."""
    from types import SimpleNamespace

    from jobs.console import STATUS_COLUMNS, last_run_text, status_rows

    assert last_run_text(last, write) == text
    row = status_rows([SimpleNamespace(stage="generate", tables=[], requests=3, failed=0, quarantined=0,
                                       last_run=last, last_write=write)])[0]
    assert row[STATUS_COLUMNS.index("last run")] == text and "under MLflow" not in row[-1]


def test_dry_run_reports_every_preflight_problem_at_once(tmp_path, monkeypatch):
    """issue 29: an unset key variable and an endpoint that is down are both reported (the real run
    would stop on the first); a keyless simulator config has none."""
    import socket

    from jobs.config import load_config
    from jobs.preflight import preflight_problems

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.delenv("TASKSEED_TEST_UNSET_KEY", raising=False)
    config = load_config(None, [f"endpoint.base_url=http://127.0.0.1:{port}/v1", "endpoint.model=m",
                                "endpoint.api_key_env=TASKSEED_TEST_UNSET_KEY"], home=tmp_path / "home")
    problems = preflight_problems(config)
    assert len(problems) == 2, problems
    assert "TASKSEED_TEST_UNSET_KEY" in problems[0]
    assert "unreachable" in problems[1]
    assert preflight_problems(load_config(None, [], home=tmp_path / "home")) == []
