"""Where the job runs: Java check, the Spark session, and whether we are on Databricks.

Off Databricks we build a session against `spark.master` with Delta's SQL extensions and catalog,
shuffle partitions that adaptive query execution coalesces to the data (`session_conf`) and the UI
off. A local master takes its parallelism and Python from this machine; a cluster master
(`spark://`, `yarn`, `k8s://`) takes them from config, gets the project shipped as a zip
(`project_zip`, unless `spark.project_installed`) and a probe job that makes an executor unable to
import taskseed one line (`check_executors_import_project`); docs/cluster.md. A home on a URI
adds its Hadoop connector's package (`connector_packages`). Delta's jars come from Maven Central through
`configure_spark_with_delta_pip` on first start (cached in ~/.ivy2.5.2 afterwards). The jar paths
that resolution produced are remembered (`delta_classpath_file`), so later starts put them on the
classpath directly: no Ivy resolution (4–8 s of every start) and no network. On Databricks the
active session is used as-is: the cluster owns its configuration.

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

from jobs.config import Config, ConfigError, SparkConfig, driver_dir, uri_scheme

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
    """`<home>/logs/spark-<YYYY-MM-DD>.log` (UTC date; on a URI home the driver's folder for it,
    `driver_dir`): where the driver JVM's output goes."""
    day = day or dt.datetime.now(dt.timezone.utc).date()
    return driver_dir(config) / "logs" / f"spark-{day.isoformat()}.log"


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


_session: tuple[tuple, object] | None = None  # (settings, session) of the last start


def is_local_master(master: str) -> bool:
    """True for `local`, `local[N]`, `local[*]`, `local[N,F]`: one JVM on this machine, Python
    workers forked from this interpreter. `local-cluster[...]`, `spark://`, `yarn`, `k8s://` are
    clusters (executors in JVMs of their own)."""
    return master == "local" or master.startswith("local[")


def local_cores(master: str) -> int:
    """The cores a local master uses: `local` 1, `local[N]`/`local[N,F]` N, `local[*]` this
    machine's CPU count. ValueError for a cluster master."""
    if not is_local_master(master):
        raise ValueError(f"{master!r} is not a local master")
    if master == "local":
        return 1
    n = master[len("local["):].split(",")[0].rstrip("]").strip()
    return os.cpu_count() or 1 if n == "*" else max(1, int(n))


def auto_shuffle_partitions(master: str, parallelism: int) -> int:
    """`spark.shuffle_partitions: auto`: how many partitions a shuffle starts with before adaptive
    query execution coalesces the small ones (to ~1 MB or more each, spark.sql.adaptive.*).
    4 x the local master's cores (local[2] -> 8: every core busy, tiny tables end in one or two
    partitions); on a cluster max(200, 4 x parallelism) (Spark's own default is 200; 4 tasks a core
    keeps a slow task from idling the rest), where parallelism is the executors' total cores."""
    if is_local_master(master):
        return 4 * local_cores(master)
    return max(200, 4 * parallelism)


def session_conf(spark: SparkConfig, executor_python: str | None) -> dict[str, str]:
    """The Spark settings taskseed's session starts with (before the user's `spark.conf`, which wins).

    Parallelism and Python come from the local master (this machine's cores, this interpreter) or,
    on a cluster, from config (`spark.default_parallelism`, `spark.python`; unset = Spark's own).
    Shuffle partitions: the configured number, or on a local master `auto_shuffle_partitions`;
    a cluster's auto number is set once the executors are known (`apply_auto_partitions`)."""
    local = is_local_master(spark.master)
    parallelism = spark.default_parallelism or (max(2, local_cores(spark.master)) if local else None)
    conf = {
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.adaptive.enabled": str(spark.adaptive).lower(),
        "spark.sql.adaptive.coalescePartitions.enabled": str(spark.adaptive).lower(),
        "spark.sql.adaptive.skewJoin.enabled": str(spark.adaptive).lower(),
        "spark.ui.enabled": str(spark.ui_enabled).lower(),
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.memory": spark.driver_memory,
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        # Delta rebuilds table state with this many tasks; 50 is meant for big clusters.
        "spark.databricks.delta.snapshotPartitions": "2" if local else "50",
        "spark.databricks.delta.schema.autoMerge.enabled": "false",
        "spark.python.worker.reuse": "true",
        # The endpoint's API key reaches the Python workers as a broadcast; with IO encryption
        # PySpark hands the pickled value to the JVM over a socket and the JVM writes only
        # ciphertext (key held in memory) — without it the key is a plain pickle in
        # <spark.local.dir>/spark-*/pyspark-*/ that survives a crash (jobs/llm_stage/endpoint.py).
        "spark.io.encryption.enabled": "true",
    }
    if parallelism:
        conf["spark.default.parallelism"] = str(parallelism)
    if spark.shuffle_partitions != "auto":
        conf["spark.sql.shuffle.partitions"] = str(spark.shuffle_partitions)
    elif local:
        conf["spark.sql.shuffle.partitions"] = str(auto_shuffle_partitions(spark.master, parallelism))
    if executor_python:
        conf["spark.pyspark.python"] = executor_python
    return conf


def executor_python(spark: SparkConfig) -> str | None:
    """The interpreter Python workers run: `spark.python` if set; on a local master this one
    (the venv with pandas, lm-eval, openai — not the `python3` on PATH); on a cluster None
    (PYSPARK_PYTHON if the environment has it, else Spark's `python3`)."""
    if spark.python:
        return spark.python
    return sys.executable if is_local_master(spark.master) else os.environ.get("PYSPARK_PYTHON")


# Hadoop's own connector for a URI scheme, resolved from Maven Central at the version of the Hadoop
# client PySpark bundles (the two must match). gs:// needs Google's gcs-connector: the user adds it
# to spark.conf's spark.jars.packages (docs/cluster.md).
HADOOP_CONNECTORS = {"s3a": "hadoop-aws", "abfs": "hadoop-azure", "abfss": "hadoop-azure",
                     "wasb": "hadoop-azure", "wasbs": "hadoop-azure"}


def hadoop_version() -> str:
    """The version of the Hadoop client jars in the installed pyspark (`hadoop-client-api-<v>.jar`)."""
    import pyspark

    jars = sorted((Path(pyspark.__file__).parent / "jars").glob("hadoop-client-api-*.jar"))
    if not jars:
        raise ConfigError("cannot tell the Hadoop version of the installed pyspark (no hadoop-client-api jar)")
    return jars[-1].name[len("hadoop-client-api-"):-len(".jar")]


def connector_packages(locations, user_packages: str | None = None) -> list[str]:
    """Maven coordinates of the Hadoop connectors the URI `locations` need (`s3a://` ->
    org.apache.hadoop:hadoop-aws:<hadoop_version()>; the AWS SDK bundle comes with it, ~690 MB on a
    fresh machine), none for plain paths and none the user's `spark.jars.packages` already names."""
    artifacts = {HADOOP_CONNECTORS[s] for s in map(uri_scheme, locations) if s in HADOOP_CONNECTORS}
    named = user_packages or ""
    return [f"org.apache.hadoop:{a}:{hadoop_version()}" for a in sorted(artifacts) if f":{a}:" not in named]


def _local_session(spark_config: SparkConfig, log_path: str | None = None, packages: tuple[str, ...] = ()):
    """The cached session for these settings and connector `packages` (the log path is not part of
    the key: the JVM's output goes where the call that started it said)."""
    global _session
    settings = (spark_config.model_dump_json(), packages)
    if _session is not None and _session[0] == settings:
        return _session[1]
    spark = _start_session(spark_config, log_path=log_path, packages=packages)
    _session = (settings, spark)
    return spark


def delta_packages(extra: str | None = None) -> str:
    """The Maven coordinates `configure_spark_with_delta_pip` asks Spark to resolve for the
    installed delta-spark and pyspark (e.g. `io.delta:delta-spark_4.2_2.13:4.4.0`), plus `extra`
    (a user's own `spark.jars.packages`, comma-separated), which Delta's helper would otherwise
    overwrite."""
    from delta import configure_spark_with_delta_pip
    from pyspark.sql import SparkSession

    extras = [p.strip() for p in (extra or "").split(",") if p.strip()]
    # a throwaway builder (no JVM starts); the helper's one setting is read back from it
    builder = configure_spark_with_delta_pip(SparkSession.Builder(), extra_packages=extras)
    return builder._options["spark.jars.packages"]


def taskseed_cache() -> Path:
    """This machine's cache of taskseed: `$XDG_CACHE_HOME/taskseed` (default ~/.cache/taskseed)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "taskseed"


def delta_classpath_file(packages: str) -> Path:
    """Where the jar paths resolved for `packages` are remembered: one file per set of
    coordinates under `taskseed_cache()`."""
    return taskseed_cache() / f"classpath-{re.sub(r'[^A-Za-z0-9_.-]+', '_', packages)}.txt"


def remembered_jars(packages: str) -> list[str] | None:
    """The jar paths a previous start resolved for `packages`, or None when there is no record or
    one of its jars is gone (a cleaned Ivy cache): the caller then resolves again."""
    try:
        jars = delta_classpath_file(packages).read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    return jars if jars and all(Path(j).is_file() for j in jars) else None


def remember_jars(packages: str, spark_jars: str | None, own: str | None = None) -> None:
    """Record the local jar paths a start resolved for `packages`: the file URIs in the session's
    `spark.jars` (comma-separated), less the user's `own` spark.jars. Best effort: a read-only
    home only means the next start resolves again."""
    from urllib.parse import unquote, urlparse

    mine = {str(Path(j).resolve()) for j in (own or "").split(",") if j and "://" not in j}
    uris = [urlparse(j) for j in (spark_jars or "").split(",")]
    jars = [p for p in (unquote(u.path) for u in uris if u.scheme == "file") if str(Path(p).resolve()) not in mine]
    if not jars:
        return
    target = delta_classpath_file(packages)
    with contextlib.suppress(OSError):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text("\n".join(jars) + "\n", encoding="utf-8")
        tmp.replace(target)


def _start_session(spark_config: SparkConfig, log_path: str | None, packages: tuple[str, ...] = ()):
    from pyspark.sql import SparkSession

    require_java()
    local = is_local_master(spark_config.master)
    python = executor_python(spark_config)
    # PySpark's driver reads the workers' interpreter from this variable (not from
    # spark.pyspark.python) when it is not started by spark-submit.
    if spark_config.python:
        os.environ["PYSPARK_PYTHON"] = spark_config.python
    elif local:
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.master(spark_config.master).appName("taskseed")
    for key, value in session_conf(spark_config, python).items():
        builder = builder.config(key, value)
    extra_conf = spark_config.conf
    conf = dict(extra_conf)
    packages = delta_packages(",".join(filter(None, [conf.pop("spark.jars.packages", None), *packages])))
    for key, value in conf.items():
        builder = builder.config(key, value)
    jars = remembered_jars(packages)
    if jars is not None:  # the user's own spark.jars (if any) stay in front
        builder = builder.config("spark.jars", ",".join(filter(None, [conf.get("spark.jars"), *jars])))
    else:
        builder = builder.config("spark.jars.packages", packages)
    if log_path is None:
        spark = builder.getOrCreate()
        spark.sparkContext.setLogLevel("ERROR")
    else:
        spark = _started_with_output_to(builder, Path(log_path))
    if jars is None:
        remember_jars(packages, spark.sparkContext.getConf().get("spark.jars"), conf.get("spark.jars"))
    if not local:
        apply_auto_partitions(spark, spark_config)
        if not spark_config.project_installed:
            spark.sparkContext.addPyFile(str(project_zip(taskseed_cache() / "pyfiles")))
        check_executors_import_project(spark, spark_config)
    return spark


def apply_auto_partitions(spark, spark_config: SparkConfig) -> None:
    """On a cluster with `shuffle_partitions: auto` (and no spark.sql.shuffle.partitions of the
    user's): set the session's shuffle partitions from the executors' total cores
    (`SparkContext.defaultParallelism`, or `spark.default_parallelism`), a runtime SQL setting."""
    if spark_config.shuffle_partitions != "auto" or "spark.sql.shuffle.partitions" in spark_config.conf:
        return
    parallelism = spark_config.default_parallelism or spark.sparkContext.defaultParallelism
    spark.conf.set("spark.sql.shuffle.partitions", str(auto_shuffle_partitions(spark_config.master, parallelism)))


# ---- shipping the project to a cluster's executors ------------------------------------------------

PROJECT_PACKAGES = ("jobs", "udfs", "schemas", "simulator")  # what executors import from taskseed
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # one timestamp for every entry: same files, same zip bytes


def project_files() -> list[tuple[str, Path]]:
    """(name inside the zip, file) for every file of `PROJECT_PACKAGES` as this interpreter imports
    them (.py modules and package data: prompts, SQL, templates, the license policy), sorted;
    no __pycache__."""
    import jobs
    import schemas
    import simulator
    import udfs

    files = []
    for package in PROJECT_PACKAGES:
        root = Path({"jobs": jobs, "udfs": udfs, "schemas": schemas, "simulator": simulator}[package].__file__).parent
        for path in sorted(root.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                files.append((f"{package}/{path.relative_to(root).as_posix()}", path))
    return files


def project_zip(directory: Path) -> Path:
    """`<directory>/taskseed-<sha256 of names and contents, 12 hex>.zip` holding `project_files()`,
    written once per content (atomic rename): what `sc.addPyFile` ships to a cluster's executors,
    which import it with zipimport (package data is read through importlib.resources)."""
    import hashlib
    import zipfile

    files = project_files()
    digest = hashlib.sha256()
    for name, path in files:
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    target = directory / f"taskseed-{digest.hexdigest()[:12]}.zip"
    if target.is_file():
        return target
    directory.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, path in files:
            archive.writestr(zipfile.ZipInfo(name, _ZIP_EPOCH), path.read_bytes(), zipfile.ZIP_DEFLATED)
    tmp.replace(target)
    return target


def _probe_imports():
    """What one executor says about its Python: (error or "", the module it could not find or "",
    interpreter, host). Built as a closure so cloudpickle ships it by value: it must run where
    taskseed cannot be imported."""
    def probe(_):
        import socket
        import sys as _sys

        error = missing = ""
        try:  # the project's packages and the dependencies executors use most
            import jobs.config  # noqa: F401
            import pandas  # noqa: F401
            import pyarrow  # noqa: F401
            import schemas.tables  # noqa: F401
            import udfs.llm_udf  # noqa: F401
            import udfs.minhash  # noqa: F401
        except Exception as exc:  # noqa: BLE001 - reported, one line
            error, missing = f"{type(exc).__name__}: {exc}", getattr(exc, "name", None) or ""
        return error, missing, _sys.executable, socket.gethostname()
    return probe


def check_executors_import_project(spark, spark_config: SparkConfig) -> None:
    """On a cluster: run a tiny job (one task per executor core, at least 2) that imports the
    project's packages and its main dependencies (`_probe_imports`) on the executors; ConfigError,
    one line, naming the first failure, the interpreter and host, and what to set, when one cannot.
    Costs one Python worker start per executor (about a second)."""
    sc = spark.sparkContext
    tasks = max(2, sc.defaultParallelism)
    try:
        answers = sc.parallelize(range(tasks), tasks).map(_probe_imports()).collect()
    except Exception as exc:  # noqa: BLE001 - a worker that cannot even start Python
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        reason = next((ln for ln in lines if re.search(r"(Error|Exception):", ln)), lines[0] if lines else "")
        raise ConfigError(f"executors of {spark_config.master} cannot run taskseed's Python: {reason[:300]}; set "
                          "spark.python to an interpreter on every worker with taskseed's dependencies "
                          "(docs/cluster.md)") from None
    failed = [answer for answer in answers if answer[0]]
    if failed:
        error, missing, python, host = failed[0]
        hint = ("set spark.project_installed=false to ship the project, or install taskseed there"
                if spark_config.project_installed and missing.split(".")[0] in PROJECT_PACKAGES
                else "set spark.python to an interpreter on every worker with taskseed's dependencies")
        raise ConfigError(f"executors of {spark_config.master} cannot import taskseed: {error} (python {python} on "
                          f"{host}); {hint} (docs/cluster.md)")


def _started_with_output_to(builder, path: Path):
    """`builder.getOrCreate()` with the JVM's console going to `path` (module docstring)."""
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
    connectors = connector_packages([config.home], config.spark.conf.get("spark.jars.packages"))
    return _local_session(config.spark, str(spark_log_path(config)) if jvm_output == "log" else None,
                          tuple(connectors))
