"""Issue 14, concurrency: two writers on one lakehouse.

- One run of an LLM stage at a time (`jobs.lakehouse.exclusive_writer`, taken by every LLM stage
  run): a second run fails at once with one line naming the first (pid, host, start time), and a
  SIGKILLed holder leaves no stale lock. Breakage caught: two `taskseed generate` on one home both
  sending every pending request and both appending it to the ledger (Delta never conflicts two
  blind appends, so the ledger would hold every row twice).
- Two MERGEs racing on one Delta table: the loser is recomputed against the new snapshot and
  retried, so every key lands once and nothing is lost; when conflicts persist the error is one
  line naming the other writer (commit userMetadata). Breakage caught: a conflict surfacing as a
  Java stack trace, a retry that re-inserts the other writer's rows.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

HOLDER = textwrap.dedent("""
    import sys, time
    from jobs.lakehouse import exclusive_writer
    with exclusive_writer(sys.argv[1], "llm-stage-generate"):
        print("held", flush=True)
        time.sleep(600)
""")


def test_one_stage_run_at_a_time_named_and_released_by_a_kill(tmp_path):
    from jobs.lakehouse import WriterConflict, exclusive_writer

    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == b"held"
        with pytest.raises(WriterConflict) as caught:
            with exclusive_writer(tmp_path, "llm-stage-generate"):
                pytest.fail("two writers held the stage at once")
        message = str(caught.value)
        assert f"pid={holder.pid} " in message and "llm-stage-generate" in message and "\n" not in message
        with exclusive_writer(tmp_path, "llm-stage-enrich"):  # another stage is not blocked
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
    with exclusive_writer(tmp_path, "llm-stage-generate"):  # the kernel released the killed holder's lock
        assert f"pid={os.getpid()} " in (tmp_path / "locks" / "llm-stage-generate.lock").read_text()


@pytest.mark.spark
def test_racing_merges_keep_every_key_once(lakehouse):
    from schemas.tables import QUARANTINE

    spark = lakehouse.spark
    lakehouse.ensure(QUARANTINE)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def writer(stage: str) -> None:
        try:
            for round_ in range(4):
                rows = [(stage, f"{stage}-{round_}-{i}", "arc_easy", "bad") for i in range(3)]
                df = spark.createDataFrame(rows, "stage string, source_key string, task string, reason string")
                barrier.wait(60)
                lakehouse.merge(df, QUARANTINE, update_when_changed=["reason"])
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=writer, args=(stage,)) for stage in ("generate", "enrich")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert not errors, errors
    keys = [(r.stage, r.source_key) for r in lakehouse.read(QUARANTINE.name).collect()]
    assert len(keys) == len(set(keys)) == 24
    history = spark.sql(f"DESCRIBE HISTORY {lakehouse.table_name(QUARANTINE.name)}").collect()
    assert sum(r.operation == "MERGE" for r in history) == 8
    assert all(r.userMetadata.startswith(f"taskseed pid={os.getpid()} ") for r in history if r.operation == "MERGE")
    print(f"conflicts retried: {lakehouse.conflicts_retried}")


@pytest.mark.spark
def test_racing_first_writes_of_the_same_keys_land_once(lakehouse):
    """Two writers MERGE the same rows into a table nothing was written to yet (where `merge` skips
    the comparison with the target): the loser of the race is retried against the winner's
    snapshot and finds nothing left to write. Breakage caught: a first write as a blind append
    (Delta never conflicts two of those: every row twice)."""
    from schemas.tables import QUARANTINE

    spark = lakehouse.spark
    lakehouse.ensure(QUARANTINE)
    assert lakehouse.is_unwritten(QUARANTINE.name)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []
    rows = [("generate", f"key-{i}", "arc_easy", "bad") for i in range(5)]

    def writer() -> None:
        try:
            df = spark.createDataFrame(rows, "stage string, source_key string, task string, reason string")
            barrier.wait(60)
            lakehouse.merge(df, QUARANTINE, update_when_changed=["reason"])
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert not errors, errors
    keys = [(r.stage, r.source_key) for r in lakehouse.read(QUARANTINE.name).collect()]
    assert sorted(keys) == sorted((stage, key) for stage, key, _, _ in rows)
    assert not lakehouse.is_unwritten(QUARANTINE.name)


@pytest.mark.spark
def test_a_persistent_conflict_is_one_line_naming_the_other_writer(lakehouse, monkeypatch):
    from delta.exceptions import ConcurrentAppendException

    from jobs import lakehouse as lakehouse_module
    from jobs.lakehouse import WriterConflict
    from schemas.tables import QUARANTINE

    lakehouse.ensure(QUARANTINE)
    monkeypatch.setattr(lakehouse_module, "COMMIT_RETRIES", 1)
    calls = []

    def always_loses() -> None:
        calls.append(time.monotonic())
        raise ConcurrentAppendException(message="Files were added to the root of the table by a concurrent update.")

    with pytest.raises(WriterConflict) as caught:
        lakehouse._committing(QUARANTINE.name, always_loses)
    message = str(caught.value)
    assert len(calls) == 2 and "\n" not in message
    assert f"taskseed pid={os.getpid()} " in message and "conflicted with this one 2 times" in message
    assert "ConcurrentAppendException" in message and lakehouse.table_name(QUARANTINE.name) in message
