"""The Java check gives one clear sentence instead of Spark's JAVA_GATEWAY_EXITED trace. Fake `java`
binaries print real `java -version` outputs, so these test the code's parsing and its choice of
binary, not the machine's Java."""

import stat
from pathlib import Path

import pytest

from jobs.config import ConfigError
from jobs.runtime import java_major_version, require_java


def _fake_java(tmp_path, version_line: str, home: str = "jdk"):
    bin_dir = tmp_path / home / "bin"
    bin_dir.mkdir(parents=True)
    java = bin_dir / "java"
    java.write_text(f"#!/bin/sh\n/bin/cat >&2 <<'EOF'\n{version_line}\nEOF\n")
    java.chmod(java.stat().st_mode | stat.S_IEXEC)
    return tmp_path / home


@pytest.mark.parametrize(
    "line, major",
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('java version "1.8.0_392"', 8),
        ('openjdk version "21" 2023-09-19', 21),
        ('openjdk version "11.0.2" 2019-01-15', 11),
    ],
)
def test_java_version_is_read_from_java_home(tmp_path, monkeypatch, line, major):
    monkeypatch.setenv("JAVA_HOME", str(_fake_java(tmp_path, line)))
    assert java_major_version() == major


def test_old_java_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("JAVA_HOME", str(_fake_java(tmp_path, 'openjdk version "11.0.2" 2019-01-15')))
    with pytest.raises(ConfigError, match="needs Java 17 or newer, found Java 11"):
        require_java()


def test_missing_java_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="Java 17 is required by Spark but no `java` was found"):
        require_java()


@pytest.mark.parametrize(
    "output, major",
    [
        ("openjdk version \"17.0.15\" 2025-04-15\nOpenJDK Runtime Environment (build 17.0.15+6-Debian-1deb12u1)\n"
         "OpenJDK 64-Bit Server VM (build 17.0.15+6-Debian-1deb12u1, mixed mode, sharing)", 17),
        ("Picked up JAVA_TOOL_OPTIONS: -Dfile.encoding=UTF-8\nopenjdk version \"11.0.22\" 2024-01-16 LTS", 11),
        ("openjdk version \"17-ea\" 2021-09-14\nOpenJDK Runtime Environment (build 17-ea+35-Ubuntu)", 17),
        ("java version \"1.7.0_80\"\nJava(TM) SE Runtime Environment (build 1.7.0_80-b15)", 7),
        ("openjdk version \"22.0.1\" 2024-04-16\nOpenJDK Runtime Environment GraalVM CE 22.0.1+8.1", 22),
        ("Error: could not find libjava.so\nError: Could not find Java SE Runtime Environment.", None),
    ],
    ids=["debian-17", "tool-options-banner-11", "early-access-17", "oracle-1.7", "graalvm-22", "broken"],
)
def test_multi_line_version_outputs(tmp_path, monkeypatch, output, major):
    monkeypatch.setenv("JAVA_HOME", str(_fake_java(tmp_path, output)))
    assert java_major_version() == major


def test_java_home_wins_over_path(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(_fake_java(tmp_path, 'openjdk version "11.0.2" 2019-01-15', "old") / "bin"))
    monkeypatch.setenv("JAVA_HOME", str(_fake_java(tmp_path, 'openjdk version "17.0.15" 2025-04-15')))
    assert java_major_version() == 17
    require_java()  # Java 17 from JAVA_HOME is enough even though PATH has Java 11


def test_path_is_used_when_java_home_has_no_java(tmp_path, monkeypatch):
    (tmp_path / "empty-home").mkdir()
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "empty-home"))
    monkeypatch.setenv("PATH", str(_fake_java(tmp_path, 'openjdk version "21.0.3" 2024-04-16') / "bin"))
    assert java_major_version() == 21


# ---- Delta's jars: resolved once, then put on the classpath directly ------------------------------

def test_delta_packages_are_delta_helpers_coordinates_plus_the_users_own():
    """The coordinates come from `configure_spark_with_delta_pip` itself (the installed delta-spark
    and pyspark decide them); a user's spark.jars.packages are kept, not overwritten by Delta's."""
    from importlib.metadata import version

    from jobs.runtime import delta_packages

    delta = delta_packages()
    assert delta.startswith("io.delta:delta-spark_") and delta.endswith(":" + version("delta-spark"))
    assert "," not in delta
    with_user = delta_packages(" org.apache.hadoop:hadoop-aws:3.4.1 , com.example:x:1 ")
    assert with_user.split(",") == [delta, "org.apache.hadoop:hadoop-aws:3.4.1", "com.example:x:1"]


def test_resolved_jars_are_remembered_per_set_of_coordinates(tmp_path, monkeypatch):
    from jobs.runtime import delta_classpath_file, remember_jars, remembered_jars

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    ivy = tmp_path / "ivy jars"
    ivy.mkdir()
    a, b, own = ivy / "delta-spark.jar", ivy / "delta-storage.jar", tmp_path / "own.jar"
    for jar in (a, b, own):
        jar.write_bytes(b"PK")
    packages = "io.delta:delta-spark_4.2_2.13:4.4.0"
    assert remembered_jars(packages) is None  # never resolved: Ivy resolves
    # what Spark reports after resolution: URIs (spaces escaped), the user's own jar among them
    remember_jars(packages, f"file://{a.as_uri()[7:]},{b.as_uri()},{own.as_uri()}", own=str(own))
    assert remembered_jars(packages) == [str(a), str(b)]
    assert remembered_jars(packages + ",com.example:x:1") is None  # other coordinates: other record
    assert delta_classpath_file(packages).parent == tmp_path / "cache" / "taskseed"
    b.unlink()  # a cleaned Ivy cache: resolve again rather than start without a jar
    assert remembered_jars(packages) is None


@pytest.mark.parametrize("reported", ["", None, "spark://driver:7077/jars/x.jar", "hdfs:///jars/x.jar"])
def test_nothing_local_to_remember_records_nothing(tmp_path, monkeypatch, reported):
    from jobs.runtime import delta_classpath_file, remember_jars

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    remember_jars("io.delta:delta-spark_4.2_2.13:4.4.0", reported)
    assert not delta_classpath_file("io.delta:delta-spark_4.2_2.13:4.4.0").exists()


def test_an_unwritable_cache_is_not_an_error(tmp_path, monkeypatch):
    from jobs.runtime import remember_jars, remembered_jars

    (tmp_path / "file").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))  # a file where the folder would go
    jar = tmp_path / "d.jar"
    jar.write_bytes(b"PK")
    remember_jars("p:q:1", jar.as_uri())
    assert remembered_jars("p:q:1") is None


# ---- session settings: partitions follow the data, a cluster's settings come from config ------------

@pytest.mark.parametrize("master,cores", [("local", 1), ("local[2]", 2), ("local[3,2]", 3), ("local[16]", 16)])
def test_a_local_master_starts_4_shuffle_partitions_a_core_and_aqe_coalesces_them(master, cores):
    from jobs.config import SparkConfig
    from jobs.runtime import session_conf

    conf = session_conf(SparkConfig(master=master), "/venv/bin/python")
    assert conf["spark.sql.shuffle.partitions"] == str(4 * cores)
    assert conf["spark.default.parallelism"] == str(max(2, cores))
    assert conf["spark.sql.adaptive.enabled"] == conf["spark.sql.adaptive.coalescePartitions.enabled"] == "true"
    assert conf["spark.pyspark.python"] == "/venv/bin/python"


def test_local_star_uses_this_machines_cores(monkeypatch):
    from jobs.config import SparkConfig
    from jobs.runtime import session_conf

    monkeypatch.setattr("os.cpu_count", lambda: 6)
    assert session_conf(SparkConfig(master="local[*]"), None)["spark.sql.shuffle.partitions"] == "24"


@pytest.mark.parametrize("master", ["spark://10.0.0.5:7077", "yarn", "k8s://https://api:6443", "local-cluster[2,1,1024]"])
def test_a_cluster_takes_nothing_from_the_drivers_machine(master, monkeypatch):
    """No parallelism from the driver's CPU count, no driver interpreter path, no fixed partition
    count: Spark's defaults (the executors' cores) or config."""
    from jobs.config import SparkConfig
    from jobs.runtime import auto_shuffle_partitions, executor_python, session_conf

    monkeypatch.delenv("PYSPARK_PYTHON", raising=False)
    spark = SparkConfig(master=master)
    assert executor_python(spark) is None
    conf = session_conf(spark, executor_python(spark))
    assert not {"spark.default.parallelism", "spark.pyspark.python", "spark.sql.shuffle.partitions"} & set(conf)
    configured = SparkConfig(master=master, default_parallelism=96, python="/opt/conda/bin/python", shuffle_partitions=640)
    conf = session_conf(configured, executor_python(configured))
    assert (conf["spark.default.parallelism"], conf["spark.pyspark.python"], conf["spark.sql.shuffle.partitions"]) \
        == ("96", "/opt/conda/bin/python", "640")
    assert auto_shuffle_partitions(master, 2) == 200 and auto_shuffle_partitions(master, 96) == 384


def test_adaptive_execution_can_be_turned_off_and_a_fixed_count_kept():
    from jobs.config import SparkConfig
    from jobs.runtime import session_conf

    conf = session_conf(SparkConfig(master="local[2]", adaptive=False, shuffle_partitions=4), None)
    assert conf["spark.sql.adaptive.enabled"] == "false" and conf["spark.sql.shuffle.partitions"] == "4"


@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_a_bad_partition_count_is_a_config_error(value):
    from jobs.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="spark.shuffle_partitions"):
        load_config(overrides=[f"spark.shuffle_partitions={value}"])


# ---- the home as a URI ---------------------------------------------------------------------------

@pytest.mark.parametrize("home,uri", [("s3a://lake/taskseed", True), ("gs://b/p", True), ("file:/tmp/h", True),
                                      ("abfss://c@acct.dfs.core.windows.net/p", True), ("file:///tmp/h", True),
                                      ("lakehouse", False), ("/data/lake", False), ("C:/lake", False)])
def test_a_uri_home_is_kept_whole_and_its_driver_files_stay_on_this_machine(home, uri, tmp_path, monkeypatch):
    from jobs.config import driver_dir, is_uri, load_config

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    config = load_config(home=home)
    assert is_uri(config.home) is uri
    if uri:
        assert config.home == home  # not folded into s3a:/lake by Path
        local = driver_dir(config)
        assert local.parent == tmp_path / "taskseed" / "homes" and local.name.startswith(home.split(":")[0] + "-")
        assert driver_dir(load_config(home=home + "/")) == local and driver_dir(load_config(home=home + "x")) != local
    else:
        assert driver_dir(config) == Path(home)


@pytest.mark.parametrize("key", ["llm.spool_dir", "publish.exports_dir"])
def test_spool_and_exports_take_a_folder_or_file_uri_and_refuse_object_storage(key):
    from jobs.config import ConfigError, load_config

    section, name = key.split(".")
    assert str(getattr(getattr(load_config(overrides=[f"{key}=file:///tmp/x"]), section), name)) == "/tmp/x"
    with pytest.raises(ConfigError, match=f"{key}: .*s3a://b/x: must be a folder on this machine or a mount"):
        load_config(overrides=[f"{key}=s3a://b/x"])


def test_only_a_home_on_object_storage_adds_its_hadoop_connector():
    from jobs.runtime import connector_packages, hadoop_version

    version = hadoop_version()
    assert version.count(".") == 2
    assert connector_packages(["/tmp/lake", "file:/tmp/lake", "gs://b/x"]) == []
    assert connector_packages(["s3a://b/x"]) == [f"org.apache.hadoop:hadoop-aws:{version}"]
    assert connector_packages(["abfss://c@a.dfs.core.windows.net/x"]) == [f"org.apache.hadoop:hadoop-azure:{version}"]
    assert connector_packages(["s3a://b/x"], "org.apache.hadoop:hadoop-aws:3.4.1,x:y:1") == []  # the user's wins


def test_the_shipped_zip_holds_the_project_and_imports_without_the_installed_one(tmp_path):
    """The zip an executor gets: every module and data file of the four packages, the same bytes
    for the same files, importable by a Python that has nothing but the zip (-S -I: no site-packages,
    no editable install), package data readable through importlib.resources."""
    import subprocess
    import sys
    import zipfile

    from jobs.runtime import PROJECT_PACKAGES, project_files, project_zip

    first = project_zip(tmp_path / "a")
    assert project_zip(tmp_path / "b").read_bytes() == first.read_bytes()
    names = set(zipfile.ZipFile(first).namelist())
    assert names == {name for name, _ in project_files()}
    assert {"udfs/llm_udf.py", "jobs/sql/curated/curated.sql", "schemas/license_policy.tsv"} <= names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    probe = ("import importlib.resources as r, sys; import " + ", ".join(PROJECT_PACKAGES) +
             "; print(udfs.__file__); print(sorted(p.name for p in (r.files('udfs') / 'prompts').iterdir())[:1]);"
             " print(r.files('schemas').joinpath('license_policy.tsv').read_text()[:7])")
    out = subprocess.run([sys.executable, "-S", "-I", "-c", f"import sys; sys.path.insert(0, {str(first)!r}); {probe}"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert out.returncode == 0, out.stderr
    where, prompt, policy = out.stdout.splitlines()
    assert where.startswith(str(first)) and prompt.endswith(".txt']") and policy
