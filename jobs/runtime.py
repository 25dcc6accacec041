"""Where the job runs: Java check, the Spark session, and whether we are on Databricks.

Locally we build a `local[*]` session with Delta's SQL extensions and catalog, few shuffle
partitions and the UI off; Delta's jars come from Maven Central through
`configure_spark_with_delta_pip` on first start (cached in ~/.ivy2 afterwards). On Databricks
the active session is used as-is: the cluster owns its configuration.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from functools import lru_cache

from jobs.config import Config, ConfigError

REQUIRED_JAVA_MAJOR = 17


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


@lru_cache(maxsize=1)
def _local_session(master: str, shuffle_partitions: int, ui_enabled: bool, driver_memory: str,
                   extra_conf: tuple[tuple[str, str], ...]):
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
    )
    for key, value in extra_conf:
        builder = builder.config(key, value)
    spark = configure_spark_with_delta_pip(builder).getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def get_spark(config: Config):
    """The active session on Databricks, otherwise a local Delta-enabled session (cached)."""
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
    )
