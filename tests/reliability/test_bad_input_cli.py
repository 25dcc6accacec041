"""Issue 14, bad input through the CLI: every user mistake is one clear line and exit status 2,
never a traceback, and the cheap ones are caught before Spark starts (seconds, not minutes).

Each case runs the real `taskseed` console script in a subprocess. What breakage each test catches:
- a config file that is not YAML, not UTF-8, not a mapping, names an unknown key or a wrong type:
  a traceback from the YAML/pydantic layer, or PyYAML's multi-line message;
- a lakehouse home that cannot be written (read-only / permission / a file in the path / a full
  disk): the `OSError` traceback `Lakehouse` or MLflow raised after a minute of Spark start-up;
- a disk that fills during a run (a small tmpfs): the chained MLflow/SQLAlchemy traceback of
  `taskseed run` recording its failed run on the same disk, or a Spark line that does not say the
  disk is full (the log it would name cannot be written either);
- an endpoint that is down, rejects the key (401), does not serve the model (404 / not listed),
  or a key variable that is not set: a ledger full of `failed` rows or a `KeyResolutionError`
  traceback after Spark started; and the wrong key must not be echoed.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.reliability.cli_run import assert_one_clear_line, run_cli

WRONG_KEY = "sk-WRONG-key-77c1d2"
RIGHT_KEY = "sk-right-key-19e4aa"


@pytest.mark.parametrize("content, mention", [
    (b"tasks: [unclosed\n", "not valid YAML: expected ',' or ']'"),
    (b"- a\n- b\n", "top level must be a mapping"),
    (b"endpoint:\n  max_concurrency: many\n", "endpoint.max_concurrency"),
    (b"endpoint:\n  max_concurrency: 0\n", "endpoint.max_concurrency"),
    (b"tasks:\n  selct: [gsm8k]\n", "tasks.selct"),
    (b"home: lakehouse\n\xff\xfe\x00bad\n", "not UTF-8"),
    (b"generate:\n  items_per_seed: -2\n", "generate.items_per_seed"),
], ids=["yaml_syntax", "not_a_mapping", "wrong_type", "out_of_range", "unknown_key", "not_utf8", "negative"])
def test_invalid_config_file_is_one_line(tmp_path, content, mention):
    config = tmp_path / "bad.yaml"
    config.write_bytes(content)
    assert_one_clear_line(run_cli("--config", str(config), "--home", str(tmp_path / "h"), "tables"),
                          must_mention=mention)


@pytest.mark.parametrize("argv, mention", [
    (["--config", "/nonexistent/taskseed.yaml", "tables"], "config file not found"),
    (["--set", "endpoint.timeout_s=soon", "tables"], "endpoint.timeout_s"),
    (["--set", "nonsense", "tables"], "nonsense"),
    (["generate", "--tasks", " , "], "--tasks needs at least one task"),
], ids=["missing_file", "override_type", "override_syntax", "empty_tasks"])
def test_invalid_command_line_is_one_line(tmp_path, argv, mention):
    assert_one_clear_line(run_cli("--home", str(tmp_path / "h"), *argv), must_mention=mention)


def _unwritable_homes(tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    return {"path_through_a_file": a_file / "lakehouse",
            "read_only_sysfs": "/sys/kernel/taskseed-home",
            "proc_dir": "/proc/self/taskseed-home"}


@pytest.mark.parametrize("which", ["path_through_a_file", "read_only_sysfs", "proc_dir"])
@pytest.mark.parametrize("command", ["tables", "run"])
def test_unwritable_home_is_one_line_before_spark_starts(tmp_path, which, command):
    home = _unwritable_homes(tmp_path)[which]
    line = assert_one_clear_line(run_cli("--home", str(home), command), must_mention="is not writable")
    assert str(home) in line


@pytest.fixture
def tmpfs(tmp_path):
    """`tmpfs(size)`: a fresh tmpfs of `size` (e.g. "256k") mounted on a folder under tmp_path;
    unmounted at teardown (lazily if a JVM that is still exiting holds it). Skipped when this
    process may not mount (not root, or a container without CAP_SYS_ADMIN): checked by trying."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        where = tmp_path / f"tmpfs-{len(mounted)}"
        where.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN): {proc.stderr.strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in reversed(mounted):
        for _ in range(20):
            if subprocess.run(["umount", str(where)], capture_output=True).returncode == 0:
                break
            time.sleep(0.5)
        else:
            subprocess.run(["umount", "-l", str(where)], check=True)


def fill(where: Path) -> None:
    """Write a file in `where` until its file system says ENOSPC, then check no block is left."""
    fd = os.open(where / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    assert shutil.disk_usage(where).free == 0


@pytest.mark.parametrize("command", ["catalog", "run"])
def test_a_full_disk_is_one_line_before_spark_starts(tmpfs, command):
    disk = tmpfs("256k")
    fill(disk)
    home = disk / "lakehouse"
    line = assert_one_clear_line(run_cli("--home", str(home), command),
                                 must_mention="No space left on device: the disk is full")
    assert f"lakehouse home {home} is not writable" in line
    assert not (home / "logs").exists() and not (home / "tables").exists()  # Spark never started


@pytest.mark.spark
@pytest.mark.heavy
def test_a_disk_that_fills_during_a_run_is_one_line(tmpfs, tmp_path):
    """`taskseed run --stages catalog` on a 2 MB tmpfs: the preflight's write passes, Spark starts,
    MLflow's store (~1 MB) is made, license_policy is committed, then task_catalog (~2.7 MB of
    Parquet) fills the disk; MLflow then fails to record the failed run on the same full disk."""
    disk = tmpfs("2m")
    home = disk / "home"
    result = run_cli("--home", str(home), "--set", "spark.master=local[2]", "--set", "spark.shuffle_partitions=2",
                     "--set", "spark.driver_memory=1g", "run", "--stages", "catalog", cwd=tmp_path, timeout=900)
    line = assert_one_clear_line(result, must_mention="No space left on device: the disk is full", status=1,
                                 only_line=False)
    assert [text for text in result.stderr.splitlines() if text.strip()][-1] == line, result.stderr[-3000:]
    # the disk filled during the run, after Spark started and committed a table
    assert list((home / "tables" / "license_policy" / "_delta_log").glob("*.json")), sorted(home.rglob("*"))
    assert (home / "mlflow.db").is_file()
    assert shutil.disk_usage(disk).free < 64 * 1024


def test_mlflow_on_a_full_disk_raises_what_the_cli_reports_as_one_line(tmpfs):
    """The error MLflow's SQLite store really raises when the disk is full (an MlflowException
    over SQLAlchemy's and sqlite3's OperationalError) is one the CLI's rule recognises, without
    starting Spark: MLflow runs in a subprocess so its tracking URI does not leak into this one."""
    disk = tmpfs("256k")
    script = (
        "import sys\n"
        "from jobs.config import load_config\n"
        "from jobs.preflight import describe_os_error, os_error_behind\n"
        "from jobs.tracking import pipeline_run\n"
        "try:\n"
        "    with pipeline_run(load_config(home=sys.argv[1]), 'x'):\n"
        "        pass\n"
        "except Exception as exc:\n"
        "    found = os_error_behind(exc)\n"
        "    print(type(exc).__name__, '|', found and describe_os_error(found[0]), '|', found and found[1])\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(disk / "home")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]  # MLflow logs none
    raised, reason, shown_by = (part.strip() for part in proc.stdout.strip().split("|"))
    assert raised != "" and reason == "No space left on device: the disk is full", proc.stdout
    assert shown_by == "database or disk is full", proc.stdout


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


@pytest.fixture
def keyed_sim(start_sim):
    return start_sim(require_api_key=RIGHT_KEY, model="served-model", latency_ms=0, latency_jitter_ms=0)


@pytest.mark.parametrize("command", [["generate"], ["enrich"], ["run", "--stages", "generate,enrich"],
                                     # the paraphrase filter's judge calls the endpoint from curate
                                     ["--set", "curate.paraphrase.enabled=true", "curate"]])
@pytest.mark.parametrize("case", ["unreachable", "wrong_key_401", "unknown_model", "key_env_not_set"])
def test_endpoint_mistakes_are_one_line_before_spark_starts(tmp_path, keyed_sim, case, command):
    base_url = keyed_sim.base_url
    model, key, mention = "served-model", RIGHT_KEY, ""
    if case == "unreachable":
        base_url, mention = f"http://127.0.0.1:{_closed_port()}/v1", "is unreachable"
    elif case == "wrong_key_401":
        key, mention = WRONG_KEY, "rejected the API key (HTTP 401)"
    elif case == "unknown_model":
        model, mention = "no-such-model", "model 'no-such-model' is not served"
    elif case == "key_env_not_set":
        key, mention = "", "no API key found in environment variable TASKSEED_RELIAB_KEY"
    env = {"TASKSEED_RELIAB_KEY": key} if key else {"TASKSEED_RELIAB_KEY": ""}
    before = keyed_sim.stats()["requests"]
    result = run_cli("--home", str(tmp_path / "h"), "--set", f"endpoint.base_url={base_url}",
                     "--set", f"endpoint.model={model}", "--set", "endpoint.api_key_env=TASKSEED_RELIAB_KEY",
                     *command, env=env, timeout=120)
    line = assert_one_clear_line(result, must_mention=mention)
    assert WRONG_KEY not in result.stderr + result.stdout and RIGHT_KEY not in result.stderr + result.stdout
    if case == "unknown_model":
        assert "served-model" in line  # names what the server does serve
    assert not (tmp_path / "h" / "tables").exists()  # nothing started: no table folder was made
    assert keyed_sim.stats()["requests"] == before  # no chat completion was sent (only GET /models)


def test_a_correct_endpoint_passes_the_preflight(keyed_sim, monkeypatch):
    """The other side of the checks above: with the right key and model nothing is raised, so the
    preflight cannot be what stops a good run."""
    from jobs.config import load_config
    from jobs.preflight import check_endpoint

    monkeypatch.setenv("TASKSEED_RELIAB_KEY", RIGHT_KEY)
    check_endpoint(load_config(overrides=[f"endpoint.base_url={keyed_sim.base_url}", "endpoint.model=served-model",
                                          "endpoint.api_key_env=TASKSEED_RELIAB_KEY"]))
    check_endpoint(load_config())  # the built-in simulator: nothing to check
