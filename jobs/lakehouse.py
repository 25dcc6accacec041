"""The lakehouse: Delta tables under `catalog.schema`, created from `schemas.tables` specs.

Off Databricks every table lives at `<home>/tables/<name>` and is registered in the session catalog
over that location; because that catalog is in memory, `Lakehouse` re-registers every table it
finds under the home when it is opened, so SQL by table name works in any new process. The home is
a folder on this machine (found and versioned with this machine's file system: a directory listing
is milliseconds) or a URI (`s3a://`, `gs://`, `abfss://`, `file:/`), found and versioned through
Hadoop's FileSystem in the Spark JVM, as Delta itself reaches it. Driver-local things (the writer
locks) stay on this machine: in the home, or for a URI home in `config.driver_dir`.
On Databricks (Unity Catalog) tables are managed by name and no paths are involved.

Writes are MERGEs on the spec's key columns, so every stage can be rerun without duplicates.

Every `read` and every write (`merge`, `append`, `overwrite`) is noted by table name while a
`recording()` block is open: the pipeline records each stage this way and compares what it did
with what the stage declares (jobs/stage.py). A MERGE's own look at its target to skip unchanged
rows is not a read.

A table written by an earlier version evolves in place: `ensure` adds the spec's new columns
(ALTER TABLE ADD COLUMNS, a metadata-only Delta commit; old rows read them as null).

Concurrent writers. Every commit this process makes carries its writer identity as the
commit's userMetadata (`writer_identity()`: taskseed, pid, host; an explicit `user_metadata`
wins), so `DESCRIBE HISTORY` says who wrote each version. A write that loses Delta's optimistic
concurrency check (`delta.exceptions`: ConcurrentAppendException and its siblings) is recomputed
against the new snapshot and retried (`COMMIT_RETRIES` times, with backoff): a MERGE compares
with the target again, so two writers never duplicate a key. If it still conflicts it raises
`WriterConflict`, one line naming the writer of the latest commit. Two runs of one LLM stage on
one lakehouse would both send every pending request and both append it to the ledger (blind
appends never conflict); `exclusive_writer` lets only one run a stage at a time (an flock on
`<home>/locks/<name>.lock`, released by the kernel when its process dies, so a SIGKILL leaves no
stale lock); on Databricks the job runs one at a time (`max_concurrent_runs: 1`).
"""

from __future__ import annotations

import contextlib
import fcntl
import operator
import os
import random
import socket
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import reduce
from pathlib import Path
from typing import Callable, Iterator

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.config import Config, driver_dir, is_uri
from schemas.tables import ALL_TABLES, TableSpec

_DELETE = "__taskseed_delete"
COMMIT_RETRIES = 4  # a write that loses Delta's concurrency check is retried this many times
USER_METADATA_CONF = "spark.databricks.delta.commitInfo.userMetadata"


MERGE_SOURCE_ROWS_PER_PARTITION = 1_000_000  # rows per partition of a MERGE's persisted source


def merge_source_partitions(rows: int, per_partition: int = MERGE_SOURCE_ROWS_PER_PARTITION) -> int:
    """How many partitions `Lakehouse.merge` coalesces its source of `rows` rows to: one per
    `per_partition` rows (at least one). Without it the source keeps the partitions of the shuffle
    before it (`spark.sql.shuffle.partitions`: 200 or more on a cluster, where adaptive execution
    cannot coalesce a cached plan's output), and an insert-only MERGE writes one file per partition."""
    if rows < 0 or per_partition < 1:
        raise ValueError(f"rows must be >= 0 and per_partition >= 1, got {rows}, {per_partition}")
    return max(1, -(-rows // per_partition))


# A MERGE source of at most this many rows is collected into the JVM driver and read back as a
# local relation (`local_copy`): the MERGE's joins then broadcast it (no shuffle, fewer Spark jobs).
MERGE_LOCAL_SOURCE_ROWS = 10_000


def row_count(df: DataFrame) -> int:
    """How many rows `df` has, counted on its physical plan's RDD (`QueryExecution.toRdd`): one
    Spark job over a persisted or checkpointed relation (no shuffle), where `DataFrame.count`
    aggregates through an exchange (two jobs under adaptive execution) and `isEmpty` may take
    several (it scans partitions a few at a time)."""
    return int(df._jdf.queryExecution().toRdd().count())


def local_copy(df: DataFrame) -> DataFrame:
    """`df`'s rows collected into the JVM driver (one Spark job; never through Python) and returned
    as a DataFrame over a local relation of the same schema: its size is known to the planner, so
    joins broadcast it. Only for small frames (the caller bounds the rows)."""
    jdf = df._jdf
    local = df.sparkSession._jsparkSession.createDataFrame(jdf.collectAsList(), jdf.schema())
    return DataFrame(local, df.sparkSession)


class WriterConflict(RuntimeError):
    """Another writer is working on the same table or stage; the message names it (one line)."""


def writer_identity() -> str:
    """Who this process is, for commit userMetadata and lock files: `taskseed pid=<pid>
    host=<host> since=<UTC start> (<program>)`; no arguments (they could carry paths a user would
    not log)."""
    program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    return (f"taskseed pid={os.getpid()} host={socket.gethostname()} "
            f"since={_STARTED:%Y-%m-%d %H:%M:%S} UTC ({program})")


_STARTED = datetime.now(timezone.utc)


def _conflict_classes() -> tuple[type[BaseException], ...]:
    from delta.exceptions import (ConcurrentAppendException, ConcurrentDeleteDeleteException,
                                  ConcurrentDeleteReadException, ConcurrentTransactionException,
                                  ConcurrentWriteException, DeltaConcurrentModificationException,
                                  MetadataChangedException, ProtocolChangedException)

    return (ConcurrentAppendException, ConcurrentDeleteDeleteException, ConcurrentDeleteReadException,
            ConcurrentTransactionException, ConcurrentWriteException, DeltaConcurrentModificationException,
            MetadataChangedException, ProtocolChangedException)


@contextlib.contextmanager
def exclusive_writer(home: Path | str, name: str) -> Iterator[None]:
    """Hold `<home>/locks/<name>.lock` for the block, or raise `WriterConflict` at once, naming the
    holder (what it wrote into the file: `writer_identity()`). An flock: per open file, released
    by the kernel when the holder exits or is killed, so a crash never leaves a stale lock."""
    path = Path(home) / "locks" / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 1024, 0).decode("utf-8", "replace").strip() or "a process that has not said who it is"
            raise WriterConflict(f"another run of {name} is writing this lakehouse ({holder}); wait for it to "
                                 f"finish or stop it, then rerun (lock: {path})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, (writer_identity() + "\n").encode(), 0)
        yield
    finally:
        os.close(fd)


def latest_commit_version(delta_log: Path) -> int | None:
    """The highest N of the commit files `<N as 20 digits>.json` in a Delta log folder (Delta's
    protocol: version N's commit is created atomically under that name and the newest commit is
    never removed by log cleanup); None when the folder is missing or holds no commit."""
    latest = None
    try:
        with os.scandir(delta_log) as entries:
            for entry in entries:
                stem, dot, ext = entry.name.partition(".")
                if ext == "json" and len(stem) == 20 and stem.isdigit():
                    n = int(stem)
                    if latest is None or n > latest:
                        latest = n
    except (FileNotFoundError, NotADirectoryError):
        return None
    return latest


def hadoop_fs(spark: SparkSession, location: str):
    """(Hadoop FileSystem, Hadoop Path) for `location` through the session's JVM and Hadoop
    configuration (the `spark.hadoop.*` settings: endpoint, credentials provider): what Delta uses."""
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(location)
    return path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), path


def latest_commit_version_fs(spark: SparkSession, delta_log: str) -> int | None:
    """`latest_commit_version` for a Delta log at a URI: one `listStatus` through Hadoop's
    FileSystem; None when the folder is missing or holds no commit."""
    fs, path = hadoop_fs(spark, delta_log)
    try:
        statuses = fs.listStatus(path)
    except Exception as exc:  # noqa: BLE001 - py4j wraps java.io.FileNotFoundException
        if "FileNotFoundException" in str(exc):
            return None
        raise
    latest = None
    for status in statuses:
        stem, _, ext = status.getPath().getName().partition(".")
        if ext == "json" and len(stem) == 20 and stem.isdigit():
            latest = max(latest if latest is not None else -1, int(stem))
    return latest


def read_text_fs(spark: SparkSession, location: str) -> str | None:
    """A small UTF-8 file at a URI, read through Hadoop's FileSystem; None when it does not exist."""
    fs, path = hadoop_fs(spark, location)
    if not fs.exists(path):
        return None
    stream = fs.open(path)
    try:
        return spark.sparkContext._jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8")
    finally:
        stream.close()


@dataclass
class TableAccess:
    """Tables read and written inside one `Lakehouse.recording()` block."""

    reads: set[str] = field(default_factory=set)
    writes: set[str] = field(default_factory=set)


class Lakehouse:
    def __init__(self, spark: SparkSession, config: Config):
        self.spark = spark
        self.config = config
        self.managed = config.runtime == "databricks"
        self.remote = is_uri(config.home)
        # `home`: this machine's folder of the lakehouse (for a URI home the driver's folder for its
        # locks); `root`: where Spark finds the tables (the resolved folder, or the URI)
        self.home = driver_dir(config).resolve()
        self.root = str(config.home).rstrip("/") if self.remote else self.home.as_posix()
        self.namespace = (
            f"{config.catalog}.{config.schema_name}" if config.catalog else config.schema_name
        )
        self._recordings: list[TableAccess] = []
        if not self.managed and not self.remote:
            (self.home / "tables").mkdir(parents=True, exist_ok=True)
        self._evolved: set[str] = set()  # tables whose columns were checked against their spec
        spark.conf.set(USER_METADATA_CONF, writer_identity())
        self.conflicts_retried = 0  # writes retried after losing Delta's concurrency check
        spark.sql(f"CREATE SCHEMA IF NOT EXISTS {self.namespace}")
        if not self.managed:
            self._register_existing()

    # ---- naming -------------------------------------------------------------------------
    def table_name(self, name: str) -> str:
        return f"{self.namespace}.{name}"

    def table_location(self, name: str) -> str:
        """`<home>/tables/<name>` as Spark reads it: a plain absolute path, or a URI."""
        return f"{self.root}/tables/{name}"

    def table_path(self, name: str) -> Path:
        """The table's folder on this machine; ValueError for a home on a URI (`table_location`)."""
        if self.remote:
            raise ValueError(f"{self.root} is not a folder on this machine: use table_location")
        return self.home / "tables" / name

    def _register_existing(self) -> None:
        for name in self.table_folders():
            self.spark.sql(
                f"CREATE TABLE IF NOT EXISTS {self.table_name(name)} USING DELTA "
                f"LOCATION '{self.table_location(name)}'"
            )

    def table_folders(self) -> list[str]:
        """Names of the Delta tables under `<home>/tables` (folders with a `_delta_log`), sorted:
        a glob on this machine, or Hadoop's `globStatus` for a URI home."""
        if not self.remote:
            return [log.parent.name for log in sorted((self.home / "tables").glob("*/_delta_log"))]
        fs, pattern = hadoop_fs(self.spark, f"{self.root}/tables/*/_delta_log")
        found = fs.globStatus(pattern) or []
        return sorted(status.getPath().getParent().getName() for status in found)

    def _latest_commit(self, name: str) -> int | None:
        if not self.remote:
            return latest_commit_version(self.table_path(name) / "_delta_log")
        return latest_commit_version_fs(self.spark, f"{self.table_location(name)}/_delta_log")

    # ---- lifecycle ----------------------------------------------------------------------
    def exists(self, name: str) -> bool:
        return self.spark.catalog.tableExists(self.table_name(name))

    def ensure(self, spec: TableSpec) -> None:
        """Create the table (empty, with the spec's schema) if it does not exist yet; if it exists,
        add the spec's columns it lacks (once per Lakehouse object, see `add_missing_columns`)."""
        from delta.tables import DeltaTable

        if self.exists(spec.name):
            if spec.name not in self._evolved:
                self.add_missing_columns(spec)
                self.set_missing_properties(spec)
                self._evolved.add(spec.name)
            return
        builder = (
            DeltaTable.createIfNotExists(self.spark)
            .tableName(self.table_name(spec.name))
            .addColumns(spec.schema)
            .comment(spec.description)
        )
        if spec.partition_by:
            builder = builder.partitionedBy(*spec.partition_by)
        for key, value in spec.properties:
            builder = builder.property(key, value)
        if not self.managed:
            builder = builder.location(self.table_location(spec.name))
        builder.execute()

    def set_missing_properties(self, spec: TableSpec) -> dict[str, str]:
        """Give an existing table the spec's Delta properties it lacks or holds at another value
        (one ALTER TABLE SET TBLPROPERTIES commit, none when they all match); returns what was set.
        Tables created before a property joined the spec get it on their first `ensure`."""
        if not spec.properties:
            return {}
        table = self.table_name(spec.name)
        current = {r.key: r.value for r in self.spark.sql(f"SHOW TBLPROPERTIES {table}").collect()}
        wanted = {k: v for k, v in spec.properties if current.get(k) != v}
        if wanted:
            assignments = ", ".join(f"'{k}' = '{v}'" for k, v in wanted.items())
            self.spark.sql(f"ALTER TABLE {table} SET TBLPROPERTIES ({assignments})")
        return wanted

    def add_missing_columns(self, spec: TableSpec) -> list[str]:
        """Evolve an existing table in place: ALTER TABLE ADD COLUMNS for every spec column it
        lacks, each placed after its predecessor in the spec (so evolved and new tables have one
        column order). Metadata-only: no data file is rewritten; existing rows read null.

        Returns the added column names. Columns the table has but the spec does not are left
        alone; types of existing columns are not changed. ValueError when a missing column is
        declared NOT NULL (existing rows could not satisfy it).
        """
        table = self.table_name(spec.name)
        present = {f.name.lower() for f in self.spark.table(table).schema.fields}
        missing = [f for f in spec.schema.fields if f.name.lower() not in present]
        if not missing:
            return []
        strict = [f.name for f in missing if not f.nullable]
        if strict:
            raise ValueError(f"{table}: cannot add NOT NULL column(s) {strict} to an existing table")
        names = spec.columns
        for f in missing:  # one ALTER per column: each AFTER names a column that exists by then
            i = names.index(f.name)
            position = f"AFTER `{names[i - 1]}`" if i else "FIRST"
            self.spark.sql(f"ALTER TABLE {table} ADD COLUMNS (`{f.name}` {f.dataType.simpleString()} {position})")
        return [f.name for f in missing]

    def ensure_all(self) -> None:
        for spec in ALL_TABLES.values():
            self.ensure(spec)

    def read(self, name: str, version: int | None = None) -> DataFrame:
        """The table as a lazy DataFrame (created empty first if it is a known spec); with
        `version`, the table as of that Delta version (time travel)."""
        self._note("reads", name)
        if version is None:
            return self._table(name)
        self._table(name)
        return self.spark.sql(f"SELECT * FROM {self.table_name(name)} VERSION AS OF {int(version)}")

    def _table(self, name: str) -> DataFrame:
        if name in ALL_TABLES:
            self.ensure(ALL_TABLES[name])
        return self.spark.table(self.table_name(name))

    # ---- access log ---------------------------------------------------------------------
    @contextlib.contextmanager
    def recording(self) -> Iterator[TableAccess]:
        """Note the tables read and written until the block ends (blocks may nest)."""
        access = TableAccess()
        self._recordings.append(access)
        try:
            yield access
        finally:
            self._recordings.remove(access)

    def _note(self, kind: str, name: str) -> None:
        for access in self._recordings:
            getattr(access, kind).add(name)

    def version(self, name: str) -> int | None:
        """The table's current Delta version (None if it does not exist). A lakehouse under a
        home reads it from the newest commit file in `_delta_log` (one directory listing: milliseconds
        on this machine, one LIST request on object storage); a managed (Unity Catalog) table asks Delta (`DESCRIBE HISTORY ... LIMIT 1`,
        a Spark query: 0.5-1 s)."""
        if not self.managed:
            latest = self._latest_commit(name)
            if latest is not None:
                return latest
        if not self.exists(name):
            return None
        row = self.spark.sql(f"DESCRIBE HISTORY {self.table_name(name)} LIMIT 1").first()
        return int(row["version"]) if row else None

    def list_tables(self) -> list[str]:
        return sorted(
            row.tableName
            for row in self.spark.sql(f"SHOW TABLES IN {self.namespace}").collect()
            if not row.isTemporary
        )

    # ---- writes -------------------------------------------------------------------------
    @staticmethod
    def _conformed(df: DataFrame, spec: TableSpec) -> list[Column]:
        present = set(df.columns)
        return [(F.col(f.name) if f.name in present else F.lit(None)).cast(f.dataType).alias(f.name)
                for f in spec.schema.fields]

    @classmethod
    def conform(cls, df: DataFrame, spec: TableSpec) -> DataFrame:
        """Select the spec's columns in order, cast to the spec's types (missing → null)."""
        return df.select(*cls._conformed(df, spec))

    def merge(self, df: DataFrame, spec: TableSpec, update_when_changed: list[str] | None = None,
              delete_when: Column | str | None = None) -> None:
        """MERGE `df` into the table on the spec's keys: insert rows whose key is new; with
        `update_when_changed`, also rewrite a matched row when one of those columns differs
        (null-safe); with `delete_when` (a boolean Column or SQL expression over `df`'s rows), a
        row for which it holds deletes the target row with its key, if any, and is never inserted
        (quarantine rows whose request now parses are removed this way).

        Rows are deduplicated on the key first (MERGE refuses two source rows for one target row),
        rows that would change nothing are dropped, and when nothing is left no MERGE runs, so an
        unchanged rerun commits no Delta version. A table nothing has been written to yet
        (`is_unwritten`) is not compared against: every upsert is new. The write is a MERGE either
        way, so two writers racing on one table still conflict and the loser is retried.
        """
        self.ensure(spec)
        self._note("writes", spec.name)
        self._committing(spec.name, lambda: self._merge_once(df, spec, update_when_changed, delete_when))

    def _merge_once(self, df: DataFrame, spec: TableSpec, update_when_changed: list[str] | None,
                    delete_when: Column | str | None) -> None:
        keys = list(spec.keys)
        deletes = delete_when is not None
        if deletes:
            condition = F.expr(delete_when) if isinstance(delete_when, str) else delete_when
            df = df.withColumn(_DELETE, F.coalesce(condition, F.lit(False)))
        source = df.select(*self._conformed(df, spec), *([F.col(_DELETE)] if deletes else [])).dropDuplicates(keys)
        upserts = source.where(~F.col(_DELETE)) if deletes else source
        if self.is_unwritten(spec.name):  # nothing to compare with, nothing to delete
            todo = upserts.withColumn(_DELETE, F.lit(False)) if deletes else upserts
        else:
            target = self._table(spec.name)
            compared = list(dict.fromkeys([*keys, *(update_when_changed or [])]))
            # rows whose key is new or whose compared columns differ (null-safe): one anti join
            same = [F.col(f"s.`{c}`").eqNullSafe(F.col(f"t.`{c}`")) for c in compared]
            todo = upserts.alias("s").join(target.select(*compared).alias("t"), reduce(operator.and_, same),
                                           "left_anti")
            if deletes:
                todo = todo.unionByName(source.where(F.col(_DELETE)).join(target.select(*keys), keys, "left_semi"))
        self._merge_todo(todo, spec, update_when_changed, deletes)

    def _merge_todo(self, todo: DataFrame, spec: TableSpec, update_when_changed: list[str] | None,
                    deletes: bool) -> None:
        """MERGE the rows that change the table (`todo`: the spec's columns, plus `_DELETE` when
        `deletes`; what `_merge_once` or `_merge_in_scope_once` found to differ); nothing when empty."""
        from delta.tables import DeltaTable

        keys = list(spec.keys)
        # persisted: the row count and the MERGE must not each recompute the comparison
        persisted = todo.persist()
        try:
            rows = row_count(persisted)  # one job over the comparison's result
            if rows == 0:  # an unchanged rerun stops here
                return
            # a few rows: the MERGE reads them as a local relation (`local_copy`), so its joins with
            # the target broadcast them. Either way as many partitions as its rows need
            # (`merge_source_partitions`), whatever the shuffle before it left: a MERGE writes a file
            # per partition of what it inserts
            todo = (local_copy(persisted) if rows <= MERGE_LOCAL_SOURCE_ROWS else persisted).coalesce(
                merge_source_partitions(rows))
            columns = {c: f"s.`{c}`" for c in spec.columns}
            keep = f"NOT s.`{_DELETE}`" if deletes else None
            merge = (
                DeltaTable.forName(self.spark, self.table_name(spec.name))
                .alias("t")
                .merge(todo.alias("s"), " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys))
            )
            if deletes:
                merge = merge.whenMatchedDelete(condition=f"s.`{_DELETE}`")
            if update_when_changed:
                changed = " OR ".join(f"NOT (t.`{c}` <=> s.`{c}`)" for c in update_when_changed)
                merge = merge.whenMatchedUpdate(condition=f"{keep} AND ({changed})" if keep else changed, set=columns)
            merge.whenNotMatchedInsert(condition=keep, values=columns).execute()
        finally:
            persisted.unpersist()

    def is_unwritten(self, name: str) -> bool:
        """True when the table under this home holds no rows because nothing was ever written to it:
        its only commit is version 0 and that commit adds no data file (`ensure` created it).
        Reads one small JSON file; False for managed tables and anything else."""
        if self.managed or self._latest_commit(name) != 0:
            return False
        if self.remote:
            text = read_text_fs(self.spark, f"{self.table_location(name)}/_delta_log/{0:020d}.json")
            return text is not None and not any(line.startswith('{"add"') for line in text.splitlines())
        try:
            with open(self.table_path(name) / "_delta_log" / f"{0:020d}.json", encoding="utf-8") as commit:
                return not any(line.startswith('{"add"') for line in commit)
        except OSError:
            return False

    def append(self, df: DataFrame, spec: TableSpec) -> None:
        """Blind append: only for tables whose writers guarantee new keys (the ledger). Never
        retried on a conflict (Delta conflicts blind appends only on a concurrent schema or protocol
        change): `df` may be the endpoint's lazy results, and evaluating it again would pay again."""
        self.ensure(spec)
        self._note("writes", spec.name)
        self._committing(spec.name, lambda: self.conform(df, spec).write.format("delta").mode("append")
                         .saveAsTable(self.table_name(spec.name)), retries=0)

    def overwrite(self, df: DataFrame, spec: TableSpec, user_metadata: str | None = None) -> None:
        """Replace the table's rows with `df`'s (one Delta commit); `user_metadata` is recorded as
        the commit's userMetadata (DESCRIBE HISTORY)."""
        self.ensure(spec)
        self._note("writes", spec.name)
        writer = self.conform(df, spec).write.format("delta").mode("overwrite").option("overwriteSchema", "false")
        if user_metadata is not None:
            writer = writer.option("userMetadata", user_metadata)
        self._committing(spec.name, lambda: writer.saveAsTable(self.table_name(spec.name)))

    # ---- concurrent writers -------------------------------------------------------------
    def exclusive(self, name: str):
        """`exclusive_writer` on this lakehouse's home (a no-op on Databricks, where the job runs
        one at a time)."""
        return contextlib.nullcontext() if self.managed else exclusive_writer(self.home, name)

    def _committing(self, table: str, write: Callable[[], None], retries: int | None = None) -> None:
        """Run `write` (one Delta commit, recomputed from scratch on every call); when it loses
        Delta's concurrency check, wait (jittered exponential backoff) and run it again, at most
        `retries` (default COMMIT_RETRIES) times; then raise WriterConflict naming the latest
        commit's writer."""
        conflicts = _conflict_classes()
        retries = COMMIT_RETRIES if retries is None else retries
        for attempt in range(retries + 1):
            try:
                write()
                return
            except conflicts as exc:
                if attempt == retries:
                    raise WriterConflict(
                        f"{self.table_name(table)}: a concurrent write by another writer ({self._last_writer(table)}) "
                        f"conflicted with this one {attempt + 1} times ({type(exc).__name__}); rerun when it "
                        "has finished: every stage is idempotent") from None
                self.conflicts_retried += 1
                time.sleep(min(5.0, 0.2 * 2 ** attempt) * (0.5 + random.random()))

    def _last_writer(self, table: str) -> str:
        try:
            row = self.spark.sql(f"DESCRIBE HISTORY {self.table_name(table)} LIMIT 1").first()
        except Exception:  # noqa: BLE001 - naming the writer must not hide the conflict
            return "unknown"
        if row is None:
            return "unknown"
        who = row["userMetadata"] if row["userMetadata"] and row["userMetadata"].startswith("taskseed") else None
        return f"{who or 'not taskseed'}, {row['operation']} of version {row['version']} at {row['timestamp']}"

    # ---- commit metadata and scoped MERGEs ------------------------------------------------
    def commit_metadata(self, name: str) -> str | None:
        """The userMetadata of the table's latest Delta commit (None when the table does not
        exist): what a derived table records it was built from (the held-out index, embeddings)."""
        if not self.exists(name):
            return None
        row = self.spark.sql(f"DESCRIBE HISTORY {self.table_name(name)} LIMIT 1").first()
        return row["userMetadata"] if row else None

    def merge_in_scope(self, df: DataFrame, spec: TableSpec, change_columns: list[str], scope: str) -> None:
        """MERGE `df` into `spec`'s table so that, inside `scope` (a SQL predicate over the table's
        columns), the table ends up holding exactly `df`'s rows: new keys inserted, changed rows
        updated, and rows of the scope whose key `df` lacks deleted, in one MERGE (one Delta
        version; none when nothing differs). Rows outside the scope are never touched. The
        target's keys are read as the MERGE's own look at its target, not as a stage input.

        What differs is found with one full outer join of `df` (deduplicated on the keys, as
        `merge` does) and the target on the keys (null-safe), the target read once: a source row
        is new or changed when no target row has its key or its `change_columns` differ
        (null-safe); a target row of the scope that no source row matches is stale."""
        self.ensure(spec)
        self._note("writes", spec.name)
        self._committing(spec.name, lambda: self._merge_in_scope_once(df, spec, change_columns, scope))

    def _merge_in_scope_once(self, df: DataFrame, spec: TableSpec, change_columns: list[str], scope: str) -> None:
        keys = list(spec.keys)
        source = df.select(*self._conformed(df, spec)).dropDuplicates(keys)
        if self.is_unwritten(spec.name):  # nothing to compare with, nothing to delete
            self._merge_todo(source.withColumn(_DELETE, F.lit(False)), spec, change_columns, True)
            return
        compared = list(dict.fromkeys([*keys, *change_columns]))
        target = self._table(spec.name).select(
            *[F.col(f"`{c}`").alias(f"_t_{c}") for c in compared],
            F.coalesce(F.expr(scope), F.lit(False)).alias("_t_in_scope"), F.lit(True).alias("_t_present"))
        joined = source.withColumn("_s_present", F.lit(True)).join(
            target, reduce(operator.and_, [F.col(f"`{k}`").eqNullSafe(F.col(f"_t_{k}")) for k in keys]), "full_outer")
        in_source, in_target = F.col("_s_present").isNotNull(), F.col("_t_present").isNotNull()
        same = reduce(operator.and_, [F.col(f"`{c}`").eqNullSafe(F.col(f"_t_{c}")) for c in compared])
        stale = ~in_source & F.col("_t_in_scope")
        todo = (joined.where((in_source & (~in_target | ~same)) | stale)
                .select(*[(F.when(stale, F.col(f"_t_{c}")).otherwise(F.col(f"`{c}`")) if c in keys else F.col(f"`{c}`"))
                          .alias(c) for c in spec.columns],
                        stale.alias(_DELETE)))
        self._merge_todo(todo, spec, change_columns, True)
