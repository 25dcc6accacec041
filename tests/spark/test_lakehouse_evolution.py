"""A lakehouse written before a schema change keeps working: `Lakehouse.ensure` adds the spec's
new columns in place (no data file rewritten), old rows read them as null, new rows carry them."""

from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import functions as F

from pyspark.sql.types import StringType

from jobs.lakehouse import Lakehouse
from schemas.tables import LLM_CALLS, TableSpec, _fields

pytestmark = pytest.mark.spark

# The ledger as the first release wrote it (before reasoning_content, sampling_seed, sent_at).
_OLD_COLUMNS = ("request_id", "stage", "source_key", "task", "task_family", "sample_index", "model",
                "prompt_version", "status", "content", "error_class", "error_detail", "attempts",
                "latency_ms", "prompt_tokens", "completion_tokens", "finish_reason", "run_id",
                "micro_batch", "completed_at")
OLD_LEDGER = TableSpec(
    name=LLM_CALLS.name, keys=LLM_CALLS.keys, description="ledger, first release",
    schema=_fields(*[(f.name, f.dataType, f.nullable) for f in LLM_CALLS.schema.fields if f.name in _OLD_COLUMNS]),
)


def _frame(spark, spec: TableSpec, row: dict):
    return spark.createDataFrame([{name: row.get(name) for name in spec.columns}], spec.schema)


def test_old_ledger_evolves_in_place_and_old_and_new_rows_read_together(spark, lakehouse):
    assert OLD_LEDGER.columns == list(_OLD_COLUMNS)  # the fixture really is the old layout
    old_row = {"request_id": "a" * 32, "stage": "generate", "status": "parse_error", "content": '{"question": "q"',
               "error_class": "truncated", "attempts": 1, "prompt_tokens": 0, "completion_tokens": 0,
               "completed_at": dt.datetime(2024, 5, 1, 12, 0, 0)}
    lakehouse.append(_frame(spark, OLD_LEDGER, old_row), OLD_LEDGER)
    table = lakehouse.table_name(LLM_CALLS.name)
    old_file = spark.table(table).select(F.input_file_name().alias("f")).first().f
    versions_before = spark.sql(f"DESCRIBE HISTORY {table}").count()

    # A new process with the new code: its first ensure adds the columns, then it appends.
    fresh = Lakehouse(spark, lakehouse.config)
    sent = dt.datetime(2025, 1, 2, 3, 4, 5, 123000)
    new_row = {"request_id": "b" * 32, "stage": "generate", "status": "ok", "content": None,
               "reasoning_content": '{"question": "q2", "answer": "a"}', "finish_reason": "stop",
               "sampling_seed": 12345, "sent_at": sent, "completed_at": sent + dt.timedelta(seconds=2),
               "prompt_tokens": None, "completion_tokens": None, "attempts": 1}
    fresh.append(_frame(spark, LLM_CALLS, new_row), LLM_CALLS)

    ledger = fresh.read(LLM_CALLS.name)
    assert ledger.columns == LLM_CALLS.columns  # evolved table has the spec's column order
    rows = {r.request_id: r.asDict() for r in ledger.collect()}
    old, new = rows["a" * 32], rows["b" * 32]
    assert (old["status"], old["content"], old["error_class"]) == ("parse_error", '{"question": "q"', "truncated")
    assert old["reasoning_content"] is None and old["sent_at"] is None and old["sampling_seed"] is None
    assert new["reasoning_content"] == new_row["reasoning_content"] and new["sampling_seed"] == 12345
    assert new["sent_at"] == sent and new["completed_at"] - new["sent_at"] == dt.timedelta(seconds=2)
    assert new["prompt_tokens"] is None and new["completion_tokens"] is None  # unknown stays null

    # Nothing was rewritten: the old row is still in its original file; the history shows only
    # metadata commits (ADD COLUMNS, and SET TBLPROPERTIES for the spec's properties) between
    # the two writes.
    still = spark.table(table).where(F.col("request_id") == "a" * 32).select(F.input_file_name().alias("f")).first().f
    assert still == old_file
    ops = [r.operation for r in spark.sql(f"DESCRIBE HISTORY {table}").orderBy("version").collect()]
    added = ops[versions_before:-1]
    assert added and set(added) == {"ADD COLUMNS", "SET TBLPROPERTIES"} and ops[-1] == "WRITE"
    properties = {r.key: r.value for r in spark.sql(f"SHOW TBLPROPERTIES {table}").collect()}
    assert all(properties.get(k) == v for k, v in LLM_CALLS.properties) and LLM_CALLS.properties
    assert "MERGE" not in ops and not any("OVERWRITE" in op or "REPLACE" in op for op in ops)

    # A second open adds nothing (no new Delta version).
    versions = spark.sql(f"DESCRIBE HISTORY {table}").count()
    again = Lakehouse(spark, lakehouse.config)
    assert again.add_missing_columns(LLM_CALLS) == [] and again.set_missing_properties(LLM_CALLS) == {}
    assert spark.sql(f"DESCRIBE HISTORY {table}").count() == versions


def test_a_missing_not_null_column_is_a_clear_error(spark, lakehouse):
    narrow = TableSpec(name="evolve_probe", keys=("k",), description="probe", schema=_fields(("k", StringType(), False)))
    wide = TableSpec(name="evolve_probe", keys=("k",), description="probe",
                     schema=_fields(("k", StringType(), False), ("must", StringType(), False)))
    lakehouse.ensure(narrow)
    with pytest.raises(ValueError, match="NOT NULL.*must"):
        Lakehouse(spark, lakehouse.config).ensure(wide)
