"""What a user sees: `taskseed` run as a subprocess on a fresh home prints the answer on stdout and
nothing from the JVM (Ivy's dependency resolution, log4j) on stderr; that output lands in
<home>/logs/spark-<date>.log; `--verbose` puts it back on the terminal; a JVM that cannot start
is one line naming the reason and the log file. Delta's jars are resolved once: a start after one
that resolved them puts the remembered jars on the classpath and runs no Ivy resolution.

Each test starts its own JVM (the point is the console of a fresh process), so they are few."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.heavy  # each test starts a JVM in a subprocess

REPO = Path(__file__).resolve().parents[2]
# Lines the JVM writes to its console on every start (Ivy resolution, log4j, JDK banners).
JVM_NOISE = (":: resolving dependencies ::", "Ivy Default Cache", "log4j", " WARN ", "WARNING:", "SLF4J",
             "confs: [default]", "Using Spark's default", "NativeCodeLoader", "artifacts copied")


def taskseed(home: Path, *argv: str, cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("taskseed")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "jobs.cli"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK_SUBMIT", "SPARK_"))}
    return subprocess.run([*cmd, "--home", str(home), "--set", "spark.master=local[1]", *argv],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def noise(text: str) -> list[str]:
    return [line for line in text.splitlines() if any(marker in line for marker in JVM_NOISE)]


def spark_log(home: Path) -> Path:
    (path,) = (home / "logs").glob("spark-*.log")
    return path


def test_sql_prints_only_the_answer(tmp_path):
    home = tmp_path / "home"
    done = taskseed(home, "sql", "select 1 as answer, 'forty two' as words", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "answer  words    \n------  ---------\n1       forty two\n"
    assert done.stderr == "(1 row)\n"
    log = spark_log(home).read_text()
    assert "Using Spark's default log4j profile" in log  # the JVM's output went to the log, not nowhere


def test_tables_prints_only_its_answer_and_resolves_no_jars_twice(tmp_path):
    """Also: the first start on a machine resolves Delta's jars with Ivy and remembers their paths
    (the session's own start did, or an earlier test's, or this one); every later start puts the
    remembered jars on the classpath and runs no resolution."""
    from jobs.runtime import delta_packages, remembered_jars

    packages = delta_packages()
    before = remembered_jars(packages)
    home = tmp_path / "home"
    done = taskseed(home, "tables", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert done.stderr == f"no tables yet under {home}; run `taskseed catalog` first\n"
    log = spark_log(home).read_text()
    assert noise(log)
    after = remembered_jars(packages)
    assert after and any(Path(jar).name.startswith("io.delta_delta-spark") for jar in after)
    if before is not None:
        assert ":: resolving dependencies ::" not in log


def test_verbose_shows_the_jvm_and_json_is_never_cut(tmp_path):
    """--verbose: the noise the quiet tests exclude is really there. --json: 250 rows (more than
    the table's default of 200) all reach stdout, and nothing says "truncated"."""
    home = tmp_path / "home"
    done = taskseed(home, "--verbose", "sql", "--json", "select id, id * 2 as twice from range(250)", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert rows == [{"id": i, "twice": 2 * i} for i in range(250)]
    assert "Using Spark's default log4j profile" in done.stderr and noise(done.stderr)
    assert "truncated" not in done.stderr
    assert not (home / "logs").exists() or not list((home / "logs").glob("spark-*.log"))


def test_a_jvm_that_cannot_start_is_one_line(tmp_path):
    home = tmp_path / "home"
    done = taskseed(home, "--set", "spark.driver_memory=lots", "sql", "select 1", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""
    log = spark_log(home)
    assert done.stderr == (f"taskseed: error: Spark failed to start: Invalid maximum heap size: -Xmxlots "
                           f"(JVM output in {log})\n")
    assert "Could not create the Java Virtual Machine" in log.read_text()
