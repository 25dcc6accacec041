"""`taskseed sql` in-process on the suite's Spark session: JSON mode has no row limit, any limit
that cuts rows says so on stderr, a bad query or a Spark error is one line."""

from __future__ import annotations

import json

import pytest

from jobs.cli import TABLE_MAX_ROWS, main


@pytest.fixture
def sql(spark, tmp_path, capsys):
    """Run `taskseed sql ...` against the shared session; → (exit code, stdout, stderr)."""

    def run(*argv: str):
        code = main(["--home", str(tmp_path / "home"), "--set", "spark.master=local[2]",
                     "--set", "spark.shuffle_partitions=2", "sql", *argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_json_prints_every_row_by_default(sql):
    code, out, err = sql("--json", "select id, cast(id as string) as s from range(537)")
    assert code == 0 and err == ""
    assert [json.loads(line) for line in out.splitlines()] == [{"id": i, "s": str(i)} for i in range(537)]


@pytest.mark.parametrize("rows, limit, cut", [(12, 5, True), (5, 5, False), (4, 5, False)])
def test_json_limit_says_when_it_cuts(sql, rows, limit, cut):
    code, out, err = sql("--json", "--max-rows", str(limit), f"select id from range({rows}) order by id")
    assert code == 0
    assert [json.loads(line)["id"] for line in out.splitlines()] == list(range(min(rows, limit)))
    if cut:
        assert err == f"({limit} rows shown, truncated at --max-rows {limit}: the query has more; raise --max-rows)\n"
    else:
        assert err == ""


def test_table_default_limit_is_announced(sql):
    code, out, err = sql(f"select id from range({TABLE_MAX_ROWS + 1})")
    assert code == 0
    assert len(out.splitlines()) == 2 + TABLE_MAX_ROWS  # header, rule, rows
    assert "truncated at --max-rows 200" in err and "--json" in err
    code, out, err = sql(f"select id from range({TABLE_MAX_ROWS})")
    assert err == f"({TABLE_MAX_ROWS} rows)\n"


def test_a_bad_query_is_one_line(sql):
    code, out, err = sql("select * from no_such_table")
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1
    assert err.startswith("taskseed: error: SQL error: [TABLE_OR_VIEW_NOT_FOUND]")


def test_a_spark_error_at_run_time_is_one_line_and_the_trace_goes_to_the_log(sql, tmp_path):
    code, out, err = sql("select raise_error('the answer key is missing')")
    assert code == 1 and out == ""
    (line,) = err.splitlines()
    assert line.startswith("taskseed: error: ") and "the answer key is missing" in line
    log = next((tmp_path / "home" / "logs").glob("spark-*.log"))
    assert line.endswith(f"(details in {log})")
    assert "Traceback" in log.read_text()


def test_bad_max_rows_is_rejected(sql):
    with pytest.raises(SystemExit):
        sql("--max-rows", "0", "select 1")
