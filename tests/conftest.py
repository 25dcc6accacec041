"""Shared fixtures: one SparkSession for the whole suite, a fresh lakehouse per test that wants one,
and the path to the real benchmark mirror in ../shared/data/hf. The session's expensive worlds
(lm-eval's task index, whole pipeline runs) are in tests/worlds.py.

Markers follow what a test uses, so the lanes cannot drift: every test that uses the `spark`
fixture (directly or through `lakehouse` or a world) is marked `spark`; every test that reads a
whole-pipeline world (`HEAVY_WORLDS`) is marked `heavy`, as are, by hand, the tests that run a whole
stage (run_catalog, run_ingest, run_generate, run_enrich, run_curate, run_publish, run_pipeline)
or start a JVM in a subprocess. `pytest -m "not heavy"` is the fast lane: the pure rules and the
Spark tests of one SQL model, engine or table at a time."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jobs.config import Config, load_config

pytest_plugins = ["tests.fixtures_sim", "tests.worlds"]

# session worlds that run a whole pipeline: a test reading one is `heavy`
HEAVY_WORLDS = {"keyed_demo_run", "small_demo_run"}

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("TASKSEED_SHARED_DATA", REPO.parent / "shared" / "data")).resolve()
MIRROR = SHARED_DATA / "hf"
REFERENCE = SHARED_DATA.parent / "reference"

# The `taskseed` runs the tests start in subprocesses (tests/reliability/cli_run.py and the crash,
# batch-kill, catalog and console tests) are short JVMs on a few rows: they start theirs with C1
# JIT only (no C2 compiles competing for the two cores), through the variable PySpark's
# launch_gateway reads. `taskseed status` on a demo home, alternated: 0.67x and 0.64x the wall time
# (load average 7). This process's own session (`spark`) starts without it. A user's setting wins.
CHILD_SUBMIT_ARGS = "--driver-java-options -XX:TieredStopAtLevel=1 pyspark-shell"
os.environ.setdefault("PYSPARK_SUBMIT_ARGS", CHILD_SUBMIT_ARGS)


@pytest.fixture(scope="session")
def mirror() -> Path:
    if not MIRROR.is_dir():
        pytest.fail(f"benchmark mirror not found at {MIRROR} (set TASKSEED_SHARED_DATA)")
    return MIRROR


@pytest.fixture(scope="session")
def spark_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("lakehouse-session")


@pytest.fixture(scope="session")
def spark(spark_home, tmp_path_factory):
    import fcntl

    from jobs.runtime import get_spark

    # adaptive query execution off in this session (the CLI runs the tests start keep the default, on):
    # on tables of a few rows it decides nothing and runs each query stage as its own job; a curate
    # of four items ran 109 Spark jobs instead of 200, 0.83x the wall time (same process, alternated)
    config = load_config(overrides=["spark.master=local[2]", "spark.shuffle_partitions=2", "spark.adaptive=false"],
                         home=spark_home)
    # pytest-xdist workers start their sessions at the same moment: one at a time, so that on a fresh
    # machine only the first resolves Delta's jars into the Ivy cache and the others reuse them
    lock = tmp_path_factory.getbasetemp().parent / "spark-start.lock"
    with open(lock, "w") as handle, pytest.MonkeyPatch.context() as env:
        if os.environ.get("PYSPARK_SUBMIT_ARGS") == CHILD_SUBMIT_ARGS:
            env.delenv("PYSPARK_SUBMIT_ARGS")  # the children's JVM options, not this long-lived session's
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            return get_spark(config)
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture
def make_config(tmp_path):
    """Config factory with a fresh home per test; overrides are `key=value` strings."""

    def _make(*overrides: str, **kwargs) -> Config:
        home = kwargs.pop("home", tmp_path / "lakehouse")
        return load_config(
            overrides=["spark.master=local[2]", "spark.shuffle_partitions=2", *overrides], home=home
        )

    return _make


@pytest.fixture
def lakehouse(spark, make_config, request):
    """A Lakehouse in its own schema and home, so tests never see each other's tables."""
    from jobs.lakehouse import Lakehouse

    schema = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name)[:60]
    config = make_config(f"schema={schema}")
    lh = Lakehouse(spark, config)
    yield lh
    spark.sql(f"DROP SCHEMA IF EXISTS {lh.namespace} CASCADE")


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by these markers and xdist reads its groups
def pytest_collection_modifyitems(config, items):
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if "spark" in used:
            item.add_marker(pytest.mark.spark)
        if used & HEAVY_WORLDS:
            item.add_marker(pytest.mark.heavy)
        item.add_marker(pytest.mark.xdist_group(xdist_group(item.nodeid, used)))
    items[:] = longest_groups_first(items)


# what a test weighs when the groups are ordered (`longest_groups_first`): a guess from its markers
# (a whole pipeline or a CLI JVM ≈ minutes, a Spark test ≈ seconds, a pure test ≈ milliseconds)
GROUP_WEIGHTS = (("heavy", 60.0), ("spark", 3.0))


def longest_groups_first(items: list) -> list:
    """The items reordered so the xdist groups that weigh most come first (each group's items keep
    their order). With `--no-loadscope-reorder` (pyproject's addopts) xdist hands the groups out in
    this order, which is the longest-processing-time-first rule of scheduling: a one-test group that
    runs a whole pipeline no longer starts last and runs alone after the other worker has finished
    (xdist's own order is by number of tests, which puts exactly those last)."""
    def group_of(item) -> str:
        return next(m.args[0] for m in item.iter_markers("xdist_group"))

    def weight(item) -> float:
        return next((w for name, w in GROUP_WEIGHTS if item.get_closest_marker(name)), 0.02)

    cost: dict[str, float] = {}
    first: dict[str, int] = {}
    for index, item in enumerate(items):
        group = group_of(item)
        cost[group] = cost.get(group, 0.0) + weight(item)
        first.setdefault(group, index)
    return sorted(items, key=lambda item: (-cost[group_of(item)], first[group_of(item)]))


def xdist_group(nodeid: str, fixtures: set[str]) -> str:
    """The pytest-xdist group (`--dist loadgroup`, pyproject's addopts) a test runs in, so that no
    world is built twice: every test of a session world (HEAVY_WORLDS) in that world's group, every
    other test with its module (module-scoped fixtures). The group is the suffix after `@` in the
    node ids xdist reports."""
    worlds = sorted(fixtures & HEAVY_WORLDS)
    return "+".join(worlds) if worlds else Path(nodeid.split("::")[0]).stem
