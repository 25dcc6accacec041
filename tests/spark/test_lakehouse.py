"""The one MERGE helper on a tiny quarantine table: insert new keys, rewrite changed rows, delete
the rows a source marks as healed (never inserting them), commit nothing when nothing changes; and
the access log that the pipeline compares with each stage's declarations."""

from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from schemas.tables import QUARANTINE
from udfs.normalize import duplicate_key

pytestmark = pytest.mark.spark

SCHEMA = "stage string, source_key string, reason string, detail string, usable boolean"


def _rows(lakehouse) -> dict[str, str]:
    return {r.source_key: r.reason for r in lakehouse.read(QUARANTINE.name).collect()}


def test_merge_inserts_updates_deletes_healed_rows_and_skips_no_ops(lakehouse):
    spark = lakehouse.spark
    merge = lambda rows: lakehouse.merge(  # noqa: E731
        spark.createDataFrame(rows, SCHEMA), QUARANTINE, update_when_changed=["reason", "detail"],
        delete_when=F.col("usable"))
    merge([("generate", "a", "truncated_json", None, False), ("generate", "b", "http_500", None, False),
           ("generate", "c", None, None, True)])  # c parses: nothing to delete, never inserted
    assert _rows(lakehouse) == {"a": "truncated_json", "b": "http_500"}
    version = lakehouse.version(QUARANTINE.name)

    merge([("generate", "a", "truncated_json", None, False), ("generate", "b", "http_500", None, False)])
    assert lakehouse.version(QUARANTINE.name) == version  # nothing changed, nothing committed

    # a parser fix: a now parses (deleted), b has a new reason (updated), d is new (inserted)
    merge([("generate", "a", None, None, True), ("generate", "b", "invalid_json", "x", False),
           ("generate", "d", "label_not_in_set", None, False)])
    assert _rows(lakehouse) == {"b": "invalid_json", "d": "label_not_in_set"}
    assert lakehouse.version(QUARANTINE.name) == version + 1  # one MERGE for all three changes


def test_merge_in_scope_inserts_updates_deletes_stale_rows_of_the_scope_only_and_skips_no_ops(lakehouse):
    """`merge_in_scope` (one full outer join with the target): inside the scope the table ends up
    holding exactly the source's rows (new inserted, changed updated, missing deleted), rows outside
    the scope are untouched, an unchanged rerun commits nothing, and a duplicated source key is
    merged once."""
    spark = lakehouse.spark
    merge = lambda rows, scope: lakehouse.merge_in_scope(  # noqa: E731
        spark.createDataFrame(rows, SCHEMA), QUARANTINE, ["reason", "detail"], scope)
    merge([("generate", "a", "r1", None, False), ("generate", "b", "r2", None, False),
           ("enrich", "x", "r3", None, False)], "true")
    assert _rows(lakehouse) == {"a": "r1", "b": "r2", "x": "r3"}
    version = lakehouse.version(QUARANTINE.name)
    merge([("generate", "a", "r1", None, False), ("generate", "b", "r2", None, False)], "stage = 'generate'")
    assert lakehouse.version(QUARANTINE.name) == version  # the scope holds exactly these rows: no commit
    # within generate: a gone (deleted), b changed detail (updated), c new (inserted, twice in the source)
    merge([("generate", "b", "r2", "d", False), ("generate", "c", "r4", None, False),
           ("generate", "c", "r4", None, False)], "stage = 'generate'")
    assert _rows(lakehouse) == {"b": "r2", "c": "r4", "x": "r3"}  # enrich's x is outside the scope
    assert lakehouse.version(QUARANTINE.name) == version + 1
    assert {r.source_key: r.detail for r in lakehouse.read(QUARANTINE.name).collect()}["b"] == "d"
    merge([], "stage = 'enrich'")  # an empty source empties its scope only
    assert _rows(lakehouse) == {"b": "r2", "c": "r4"}


def test_row_count_and_local_copy_keep_every_row(spark):
    """The MERGE source helpers: `row_count` counts what `count` counts, `local_copy` holds the same
    rows and schema over a local relation (whose size the planner knows)."""
    from jobs.lakehouse import local_copy, row_count

    df = spark.range(37).selectExpr("id", "CAST(id % 5 AS STRING) AS k").where("id % 3 <> 0").distinct().persist()
    try:
        copy = local_copy(df)
        assert row_count(df) == df.count() == 24
        assert copy.schema == df.schema and sorted(copy.collect()) == sorted(df.collect())
        assert "LocalRelation" in copy._jdf.queryExecution().analyzed().toString()
    finally:
        df.unpersist()


@pytest.mark.parametrize("shuffle_partitions", [8, 200])
def test_a_merge_writes_files_by_its_row_count_not_by_the_shuffle_before_it(lakehouse, shuffle_partitions):
    """Issue 28: with 200 shuffle partitions (a cluster's default) a first MERGE of 50 rows wrote 45
    files; the persisted source is coalesced to `merge_source_partitions(rows)` first: one file."""
    import json

    from jobs.lakehouse import merge_source_partitions

    spark = lakehouse.spark
    before = spark.conf.get("spark.sql.shuffle.partitions")
    spark.conf.set("spark.sql.shuffle.partitions", str(shuffle_partitions))
    try:
        rows = spark.createDataFrame([("generate", f"k{i}", "r", None, False) for i in range(50)], SCHEMA)
        lakehouse.merge(rows.repartition(shuffle_partitions).distinct(), QUARANTINE, update_when_changed=["reason"])
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", before)
    log = lakehouse.table_path(QUARANTINE.name) / "_delta_log" / f"{lakehouse.version(QUARANTINE.name):020d}.json"
    adds = [a for a in map(json.loads, log.read_text().splitlines()) if "add" in a]
    assert len(adds) == merge_source_partitions(50) == 1 and len(_rows(lakehouse)) == 50
    assert [merge_source_partitions(n, 10) for n in (0, 1, 10, 11, 95)] == [1, 1, 1, 2, 10]
    with pytest.raises(ValueError):
        merge_source_partitions(-1)


def test_version_from_the_log_folder_is_what_delta_history_says(lakehouse):
    """`Lakehouse.version` lists `_delta_log` instead of querying DESCRIBE HISTORY: after a
    create, MERGEs, a no-op MERGE and a compaction, both say the same number."""
    spark = lakehouse.spark
    name = QUARANTINE.name
    history = lambda: spark.sql(f"DESCRIBE HISTORY {lakehouse.table_name(name)} LIMIT 1").first()["version"]  # noqa: E731
    lakehouse.ensure(QUARANTINE)
    assert lakehouse.version(name) == history()
    for i in range(3):
        lakehouse.merge(spark.createDataFrame([("generate", f"k{i}", "r", None, False)], SCHEMA), QUARANTINE)
        assert lakehouse.version(name) == history()
    lakehouse.merge(spark.createDataFrame([("generate", "k0", "r", None, False)], SCHEMA), QUARANTINE)  # no-op
    from delta.tables import DeltaTable
    DeltaTable.forName(spark, lakehouse.table_name(name)).optimize().executeCompaction()
    assert lakehouse.version(name) == history()
    assert lakehouse.version("no_such_table") is None


def test_access_log_notes_reads_and_writes_inside_a_recording_only(lakehouse):
    spark = lakehouse.spark
    lakehouse.read("seeds")  # outside any recording: not noted anywhere
    with lakehouse.recording() as outer:
        lakehouse.read("generated")
        with lakehouse.recording() as inner:
            lakehouse.merge(spark.createDataFrame([("ingest", "k", "r", None, False)], SCHEMA), QUARANTINE)
    assert (outer.reads, outer.writes) == ({"generated"}, {"quarantine"})
    assert (inner.reads, inner.writes) == (set(), {"quarantine"})  # the MERGE's look at its target is no read


def test_duplicate_key_is_the_key_earlier_releases_wrote_with_spark(spark):
    """Quarantine keys of repeated records were once made in Spark as sha2(concat_ws('|', ...)):
    the Python key must give the very same values, or a rerun would insert every repeat again."""
    rows = [("winogrande", "train", 40315, "6f1c0e1a3b0e4d2f9a7c5b3d1e0f2a4c"),
            ("mmlu_économie", "test", 0, "ab" * 16)]
    df = spark.createDataFrame(rows, "task string, split string, doc_index long, row_id string")
    legacy = df.select(F.substring(F.sha2(F.concat_ws("|", F.lit("ingest-duplicate"), "task", "split",
                                                      F.col("doc_index").cast("string"), "row_id"), 256), 1, 32)
                       .alias("key")).collect()
    assert [r.key for r in legacy] == [duplicate_key(*row) for row in rows]
