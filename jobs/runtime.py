"""Where the job runs: Java check, the Spark session, and whether we are on Databricks.

Locally we build a `local[*]` session with Delta's SQL extensions and catalog, few shuffle
partitions and the UI off; Delta's jars come from Maven Central through
`configure_spark_with_delta_pip` on first start (cached in ~/.ivy2 afterwards). On Databricks
the active session is used as-is: the cluster owns its configuration.

Console noise: the JVM that PySpark launches inherits this process's stdout/stderr file
descriptors and writes Ivy's dependency resolution (~80 lines) and log4j warnings to them for
its whole life. By default (`jvm_output="log"`) fds 1 and 2 point at `spark_log_path(config)`
(`<home>/logs/spark-<UTC date>.log`) only while the gateway JVM starts, so the JVM (and the
Python workers it forks) keep writing to that file, and Python's own output is restored at once.
`jvm_output="console"` (the CLI's `--verbose`) leaves them on the terminal. A JVM that fails to
start is one `SparkStartError` line quoting the log's telling line and naming the file.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator, Literal

from jobs.config import Config, ConfigError

REQUIRED_JAVA_MAJOR = 17
JvmOutput = Literal["log", "console"]


class SparkStartError(ConfigError):
    """The local JVM did not start; the message names the reason and the log file."""


def on_databricks() -> bool:
    return "DATABRICKS_RUNTIME_VERSION" in os.environ


def java_major_version(java_bin: str | None = None) -> int | None:
    """Major version of the `java` Spark will launch (JAVA_HOME first, then PATH), or None."""
    if java_bin is None:
        java_home = os.environ.get("JAVA_HOME")
        candidate = os.path.join(java_home, "bin", "java") if java_home else None
        java_bin = candidate if candidate and os.path.exists(candidate) else shutil.which("java")
    if not java_bin:
        return None
    try:
        out = subprocess.run([java_bin, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2)) if major == 1 and match.group(2) else major


def require_java() -> None:
    """Fail with one clear sentence instead of Spark's JAVA_GATEWAY_EXITED stack trace."""
    major = java_major_version()
    if major is None:
        raise ConfigError(
            f"Java {REQUIRED_JAVA_MAJOR} is required by Spark but no `java` was found on PATH or "
            "in JAVA_HOME. Install it (Debian: apt-get install openjdk-17-jre-headless) or set JAVA_HOME."
        )
    if major < REQUIRED_JAVA_MAJOR:
        raise ConfigError(
            f"Spark 4 needs Java {REQUIRED_JAVA_MAJOR} or newer, found Java {major}. "
            "Point JAVA_HOME at a Java 17 installation."
        )


def spark_log_path(config: Config, day: dt.date | None = None) -> Path:
    """`<home>/logs/spark-<YYYY-MM-DD>.log` (UTC date): where the local JVM's output goes."""
    day = day or dt.datetime.now(dt.timezone.utc).date()
    return Path(config.home) / "logs" / f"spark-{day.isoformat()}.log"


@contextlib.contextmanager
def fds_to_file(path: Path) -> Iterator[None]:
    """Point file descriptors 1 and 2 at `path` (appending) inside the block; restore them after.

    Child processes started inside the block (the Spark gateway JVM) keep the file as their
    stdout/stderr for their whole life; this process's own output is back on the terminal when
    the block ends, even if it raised."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = [os.dup(1), os.dup(2)]
    log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, log_fd):
            os.close(fd)


_NOISE = re.compile(r"^\s*($|at |\.\.\. \d+ more|::|confs:|found |downloading |:: |Ivy Default Cache|"
                    r"The jars for the packages|\S+ added as a dependency|\d\d/\d\d/\d\d .* (INFO|WARN) )")
_TELLING = re.compile(r"(Error|Exception|error:|Invalid|Could not|cannot|Cannot|unresolved|FAILED)")


def start_failure_reason(log_text: str) -> str:
    """The one line of a failed JVM start's output that says what went wrong (the first line that
    names an error, skipping Ivy's banner and stack frames), or the last non-empty line."""
    lines = [ln.strip() for ln in log_text.splitlines() if ln.strip()]
    for line in lines:
        if _TELLING.search(line) and not _NOISE.match(line):
            return line[:300]
    return lines[-1][:300] if lines else "no output"


_session: tuple[tuple, object] | None = None  # (settings, session) of the last local start


def _local_session(master: str, shuffle_partitions: int, ui_enabled: bool, driver_memory: str,
                   extra_conf: tuple[tuple[str, str], ...], log_path: str | None = None):
    """The cached session for these settings (the log path is not part of the key: the JVM's
    output goes where the call that started it said)."""
    global _session
    settings = (master, shuffle_partitions, ui_enabled, driver_memory, extra_conf)
    if _session is not None and _session[0] == settings:
        return _session[1]
    spark = _start_local_session(*settings, log_path=log_path)
    _session = (settings, spark)
    return spark


def _start_local_session(master: str, shuffle_partitions: int, ui_enabled: bool, driver_memory: str,
                         extra_conf: tuple[tuple[str, str], ...], log_path: str | None):
    from delta import configure_spark_with_delta_pip
    from pyspark.sql import SparkSession

    require_java()
    # Python workers must run this interpreter (the venv with pandas, lm-eval, openai), not the
    # `python3` on PATH; PySpark reads the variable, not spark.pyspark.python, in local mode.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master(master)
        .appName("taskseed")
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.default.parallelism", str(max(2, os.cpu_count() or 2)))
        .config("spark.ui.enabled", str(ui_enabled).lower())
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.memory", driver_memory)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        # Delta rebuilds table state with this many tasks; 50 is meant for big clusters.
        .config("spark.databricks.delta.snapshotPartitions", "2")
        .config("spark.databricks.delta.schema.autoMerge.enabled", "false")
        .config("spark.python.worker.reuse", "true")
        # The endpoint's API key reaches the Python workers as a broadcast; with IO encryption
        # PySpark hands the pickled value to the JVM over a socket and the JVM writes only
        # ciphertext (key held in memory) — without it the key is a plain pickle in
        # <spark.local.dir>/spark-*/pyspark-*/ that survives a crash (jobs/llm_stage/endpoint.py).
        .config("spark.io.encryption.enabled", "true")
    )
    for key, value in extra_conf:
        builder = builder.config(key, value)
    builder = configure_spark_with_delta_pip(builder)
    if log_path is None:
        spark = builder.getOrCreate()
        spark.sparkContext.setLogLevel("ERROR")
        return spark
    path = Path(log_path)
    start = path.stat().st_size if path.exists() else 0
    try:
        with fds_to_file(path):
            spark = builder.getOrCreate()
    except Exception as exc:  # JAVA_GATEWAY_EXITED and friends: the reason is in the log
        with open(path, encoding="utf-8", errors="replace") as fh:
            fh.seek(start)
            reason = start_failure_reason(fh.read())
        raise SparkStartError(f"Spark failed to start: {reason} (JVM output in {path})") from exc
    # The file is the JVM's console from now on: keep warnings there for whoever debugs.
    spark.sparkContext.setLogLevel("WARN")
    pyspark_loggers_to(path)
    return spark


# PySpark's own loggers that print a JSON line to stderr for every error it raises to Python (the
# CLI reports the same error as one line of its own).
PYSPARK_ERROR_LOGGERS = ("SQLQueryContextLogger", "DataFrameQueryContextLogger")


def pyspark_loggers_to(path: Path) -> None:
    """Send PySpark's error-context loggers to `path` instead of stderr (idempotent)."""
    import logging

    try:
        from pyspark.logger import PySparkLogger
    except ImportError:  # a PySpark without structured logging
        return
    for name in PYSPARK_ERROR_LOGGERS:
        logger = PySparkLogger.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
        logger.addHandler(logging.FileHandler(path, delay=True, encoding="utf-8"))


def get_spark(config: Config, jvm_output: JvmOutput = "log"):
    """The active session on Databricks, otherwise a local Delta-enabled session (cached).

    jvm_output: "log" sends the local JVM's console output (Ivy resolution, log4j) to
    `spark_log_path(config)`; "console" leaves it on the terminal. Only the first call that
    starts the JVM decides. SparkStartError (a ConfigError) when the JVM does not start."""
    if on_databricks() or config.runtime == "databricks":
        from pyspark.sql import SparkSession

        spark = SparkSession.getActiveSession()
        if spark is None:
            raise ConfigError("runtime is databricks but there is no active Spark session")
        return spark
    return _local_session(
        config.spark.master,
        config.spark.shuffle_partitions,
        config.spark.ui_enabled,
        config.spark.driver_memory,
        tuple(sorted(config.spark.conf.items())),
        str(spark_log_path(config)) if jvm_output == "log" else None,
    )
