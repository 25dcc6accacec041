"""The calling tasks' spool (udfs/llm_udf.py), without Spark: whole files only, flushed by rows
and by age, typed like the ledger, with the stop marker the tasks poll; the config keys."""

from __future__ import annotations

import os
import time

import pyarrow.parquet as pq
import pytest
from pyspark.sql.types import IntegerType, StringType, StructField, StructType

from jobs.config import load_config
from tests.fixtures_sim import make_request_rows
from udfs.llm_client import empty_result
from udfs.llm_udf import SpoolWriter, result_schema, spool_files, stop_reason, write_stop_marker

PASSTHROUGH = ("stage", "source_key", "sample_index")
INPUT = StructType([StructField("request_id", StringType()), StructField("stage", StringType()),
                    StructField("source_key", StringType()), StructField("sample_index", IntegerType())])


def _pairs(n: int, offset: int = 0, sample_index=0):
    out = []
    for row in make_request_rows(n, offset=offset):
        row = {**row, "sample_index": sample_index}
        result = empty_result(row["request_id"])
        result.update(status="ok", content='{"a": 1}', attempts=1, latency_ms=12.5, prompt_tokens=10)
        out.append((row, result))
    return out


def _writer(tmp_path, rows=5, seconds=60.0):
    return SpoolWriter(str(tmp_path / "run"), result_schema(INPUT, PASSTHROUGH), PASSTHROUGH, rows, seconds,
                       partition=3, attempt=1)


def test_full_buffers_become_whole_files_with_the_ledger_columns(tmp_path):
    writer = _writer(tmp_path, rows=5)
    written = writer.add(_pairs(12))
    assert [n for _, n in written] == [5, 5] and writer.add([]) == []  # 2 buffered, young
    assert [n for _, n in writer.close()] == [2] and writer.close() == []
    files = spool_files(str(tmp_path / "run"))
    assert len(files) == 3 and all(os.path.basename(f).startswith("p00003-a1-") for f in files)
    table = pq.read_table(files[0])
    assert table.column_names == [f.name for f in result_schema(INPUT, PASSTHROUGH).fields]
    assert str(table.schema.field("sample_index").type) == "int32"
    assert str(table.schema.field("latency_ms").type) == "double"
    assert sum(pq.read_metadata(f).num_rows for f in files) == 12


def test_old_buffer_is_flushed_on_tick_and_nan_integers_are_nulls(tmp_path):
    writer = _writer(tmp_path, rows=100, seconds=0.05)
    assert writer.add(_pairs(2, sample_index=float("nan"))) == []
    time.sleep(0.08)
    [(path, rows)] = writer.tick()
    assert rows == 2 and pq.read_table(path).column("sample_index").to_pylist() == [None, None]
    assert writer.close() == []


def test_files_being_written_and_markers_are_not_spool_files(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".p00000-a0-000000-abc.parquet").write_bytes(b"partial")
    assert spool_files(str(run)) == [] and stop_reason(str(run)) is None
    write_stop_marker(str(run), "max_tokens_budget=10 reached")
    assert stop_reason(str(run)) == "max_tokens_budget=10 reached" and spool_files(str(run)) == []
    assert spool_files(str(tmp_path / "missing")) == []


@pytest.mark.parametrize("overrides, rows", [([], 200), (["llm.commit_rows=50"], 50),
                                              (["llm.micro_batch_rows=8"], 8),
                                              (["llm.commit_rows=50", "llm.micro_batch_rows=8"], 8)])
def test_commit_unit_rows_and_the_deprecated_name(overrides, rows):
    assert load_config(overrides=overrides).llm.commit_unit_rows == rows


def test_spool_dir_is_required_on_databricks(tmp_path):
    from jobs.config import ConfigError
    from jobs.llm_stage.call import spool_root

    assert spool_root(load_config(home=tmp_path)) == tmp_path / "spool"
    with pytest.raises(ConfigError, match="llm.spool_dir"):
        spool_root(load_config(overrides=["runtime=databricks"]))
    assert str(spool_root(load_config(overrides=["runtime=databricks", "llm.spool_dir=/Volumes/c/s/v/spool"]))) \
        == "/Volumes/c/s/v/spool"
