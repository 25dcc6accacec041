"""Issue 14, crash and resume, and two writers: two `taskseed generate` started at once on one
lakehouse (one must stop at once with one line naming the other, having sent nothing); the other
SIGKILLed mid-run (after at least one ledger commit); `taskseed curate` SIGKILLed mid-write (after its filter_decisions MERGE, before its
last one), each rerun to the end; compared with an uninterrupted run of the same pipeline.

This is the suite's one killed-driver scenario: the simulators demand a distinctive API key, so
the killed generate also proves that the key is never written to disk, even by a driver SIGKILLed
mid-stage: every file written under /tmp since the kill run started (Spark's local dirs, PySpark's
broadcast files, the workers' temp files) and every file of the lakehouse home (the Delta ledger,
the spool the calling tasks write results to before the ledger commit) is scanned for the key:
plain, UTF-16, base64 at each alignment, and the pickled SecretBox the broadcast carries. Without
`spark.io.encryption.enabled` the broadcast's pickle is left in /tmp/spark-*/pyspark-*/ and
`test_the_killed_run_left_the_key_nowhere_on_disk` fails.

One module-scoped world, two lakehouses with the same demo seeds. The reference is the session's
`keyed_demo_run` (tests/worlds.py: generate → enrich → curate → publish uninterrupted, against a
simulator with the same seed and content faults as this module's); the crashed lakehouse starts as
a copy of its catalog, policy, seeds and held-out tables and gets the killed CLI processes (their
own JVM and Python workers, in their own session) and in-process reruns, against a simulator of
its own that counts every request id it receives.

Breakage caught: a crash that loses more than one commit unit of answered requests (results held
back and written at the end), a rerun that re-sends what the ledger already holds, a rerun that
duplicates or drops rows after a partial write (an append instead of a MERGE, a half-written
curate that a rerun does not repair), a killed driver that leaves its JVM or Python workers behind.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import pickle
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.reliability.cli_run import TASKSEED, session_pids
from tests.worlds import (DEMO_WITHOUT_CALIBRATION, KEYED_M, KEYED_SEEDS, KEYED_SIM, KEYED_TASKS, SEEDED_TABLES,
                          copy_seeded)
from udfs.llm_udf import SecretBox

pytestmark = [pytest.mark.spark, pytest.mark.e2e, pytest.mark.heavy]

REPO = Path(__file__).resolve().parents[2]
TASKS = list(KEYED_TASKS)
# columns that differ between two runs that did the same work (who ran it, when, how fast)
VOLATILE = {"run_id", "micro_batch", "latency_ms", "sent_at", "completed_at", "ingested_at", "generated_at",
            "enriched_at", "decided_at", "curated_at", "quarantined_at", "signed_at", "cataloged_at"}


def crash_loss_bound(config) -> int:
    """Answered requests a crash may lose (and a rerun re-send), jobs/llm_stage/call.py's unit of
    loss: per calling task, its in-flight window plus fewer than `llm.commit_rows` results not yet
    spooled (what is spooled is committed by the rerun, not re-sent); the tasks' windows sum to at
    most `endpoint.max_concurrency`. The one place this test reads the bound from."""
    return config.endpoint.max_concurrency + config.llm.call_tasks * (config.llm.commit_rows - 1)


def commit_unit_overrides(requests: int) -> list[str]:
    """The `--set` overrides that make a commit unit (a spool file) hold at most `requests` results,
    spooled at least every half second, with one calling task (the unit `crash_loss_bound` reads back)."""
    return [f"llm.commit_rows={requests}", "llm.commit_seconds=0.5", "llm.call_tasks=1"]


# The killed generate plans len(TASKS) * SEEDS * K = 24 requests in commit units of UNIT = 2: twelve
# units, so the kill (after the first commit) lands mid-run with units still to send, even when the
# second generate, which must stop before the first one ends, starts its JVM a few seconds late.
# Runs not under test (the crashed lakehouse's enrich) commit in units of BULK: the tables do not
# depend on the unit (`micro_batch` is volatile), the number of Delta commits does. SEEDS, K and M
# are the reference's (the keyed demo run's).
SEEDS, K, M, UNIT, BULK = KEYED_SEEDS, 2, KEYED_M, 2, 1000
KEY_ENV = "TASKSEED_CRASH_KEY"


def overrides(schema: str, base_url: str, unit: int = UNIT) -> list[str]:
    return [f"schema={schema}", "spark.master=local[2]", "spark.shuffle_partitions=2", "spark.driver_memory=1g",
            f"tasks.select=[{','.join(TASKS)}]", f"tasks.mirror={REPO / 'demo' / 'data' / 'hf'}",
            f"generate.seeds_per_task={SEEDS}", f"generate.items_per_seed={K}", f"enrich.samples_per_item={M}",
            f"endpoint.base_url={base_url}", "endpoint.model=taskseed-sim", f"endpoint.api_key_env={KEY_ENV}",
            "endpoint.max_concurrency=4", *commit_unit_overrides(unit), *DEMO_WITHOUT_CALIBRATION]


def delta_ops(home: Path, table: str) -> list[str]:
    """The operations of a Delta table's commits so far (from its _delta_log), in version order."""
    ops = []
    for path in sorted((home / "tables" / table / "_delta_log").glob("*.json")):
        try:
            for line in path.read_text().splitlines():
                info = json.loads(line).get("commitInfo")
                if info:
                    ops.append(info.get("operation"))
        except (OSError, ValueError):
            ops.append("?")  # being written right now
    return ops


def start_cli(argv: list[str], log: Path) -> subprocess.Popen:
    """`taskseed <argv>` in its own session (its JVM and Python workers inherit the session id)."""
    with log.open("wb") as out:
        return subprocess.Popen([TASKSEED, *argv], cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def kill_session(proc: subprocess.Popen) -> list[int]:
    """SIGKILL the process group of `proc`, then wait (≤ 30 s) for every process of its session to
    be gone; returns the pids still there (killed too, so nothing is left running)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    until = time.monotonic() + 30
    while session_pids(proc.pid) and time.monotonic() < until:
        time.sleep(0.5)
    leftovers = session_pids(proc.pid)
    for pid in leftovers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return leftovers


def wait_for(ready, procs: list[subprocess.Popen], logs: list[Path], deadline_s: float = 900) -> None:
    deadline = time.monotonic() + deadline_s
    while not ready():
        assert any(p.poll() is None for p in procs), "\n".join(log.read_text()[-2000:] for log in logs)
        assert time.monotonic() < deadline, "the run never reached the kill point"
        time.sleep(0.1)


def kill_when(argv: list[str], ready, log: Path) -> dict:
    """Start the CLI, SIGKILL its whole session as soon as `ready()` is true."""
    proc = start_cli(argv, log)
    try:
        wait_for(ready, [proc], [log])
        assert proc.poll() is None, f"exited ({proc.returncode}) before the kill:\n{log.read_text()[-3000:]}"
    finally:
        leftovers = kill_session(proc)
    return {"alive_at_kill": True, "leftovers": leftovers}


def two_generates_one_killed(argv: list[str], home: Path, root: Path) -> dict:
    """Two `taskseed generate` on one lakehouse at once: one must stop at once, naming the other;
    the other is SIGKILLed after its first ledger commit."""
    logs = [root / "generate-a.log", root / "generate-b.log"]
    procs = [start_cli(argv, log) for log in logs]
    try:
        wait_for(lambda: any(p.poll() is not None for p in procs) and "WRITE" in delta_ops(home, "llm_calls"),
                 procs, logs)
        losers = [i for i, p in enumerate(procs) if p.poll() is not None]
        assert len(losers) == 1, [log.read_text()[-2000:] for log in logs]
        loser, winner = procs[losers[0]], procs[1 - losers[0]]
        outcome = {"loser_status": loser.returncode, "loser_output": logs[losers[0]].read_text(),
                   "winner_pid": winner.pid, "alive_at_kill": winner.poll() is None}
    finally:
        outcome_leftovers = [kill_session(p) for p in procs]
    outcome["leftovers"] = [pid for pids in outcome_leftovers for pid in pids]
    return outcome


def key_forms(key: str) -> list[bytes]:
    """The key as it could land in a file: raw, UTF-16, base64 at each byte alignment, and the
    pickle of the broadcast's value (what PySpark writes for an unencrypted broadcast)."""
    raw = key.encode()
    forms = [raw, key.encode("utf-16-le")]
    for shift in range(3):
        forms.append(base64.b64encode(b"x" * shift + raw)[4 if shift else 0:][:-4].rstrip(b"="))
    forms.append(pickle.dumps(SecretBox(key), protocol=pickle.HIGHEST_PROTOCOL))
    forms.append(base64.b64encode(pickle.dumps(SecretBox(key), protocol=pickle.HIGHEST_PROTOCOL)))
    return [f for f in forms if len(f) >= 12]


def files_to_scan(roots: list[Path], since: float) -> list[Path]:
    """Regular files under `roots`; under /tmp only those written since `since` (epoch seconds)."""
    out = []
    for root in roots:
        for dirpath, _dirs, names in os.walk(root, onerror=lambda e: None):
            for name in names:
                path = Path(dirpath, name)
                try:
                    st = path.lstat()
                except OSError:
                    continue
                if path.is_symlink() or not path.is_file():
                    continue
                if root == Path("/tmp") and max(st.st_mtime, st.st_ctime) < since:
                    continue
                out.append(path)
    return out


def scan_for_key(key: str, roots: list[Path], since: float) -> dict:
    """{"scanned": files read, "hits": paths holding a form of `key`}."""
    forms = key_forms(key)
    scanned, hits = 0, []
    for path in files_to_scan(roots, since):
        try:
            data = path.read_bytes()
        except OSError:
            continue
        scanned += 1
        if any(form in data for form in forms):
            hits.append(str(path))
    return {"scanned": scanned, "hits": hits}


def content(lakehouse, table: str) -> list[str]:
    """A table's rows without the volatile columns, as sorted canonical JSON (order-free compare)."""
    df = lakehouse.read(table)
    df = df.select(*[c for c in df.columns if c not in VOLATILE])
    return sorted(json.dumps(r.asDict(recursive=True), sort_keys=True, default=str) for r in df.collect())


def digest(rows: list[str]) -> str:
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16]


@pytest.fixture(scope="module")
def crash_world(spark, tmp_path_factory, keyed_demo_run):
    from jobs.config import load_config
    from jobs.lakehouse import Lakehouse
    from jobs.pipeline import run_pipeline
    from simulator import SimSettings, SimulatorServer

    ref = keyed_demo_run["lakehouse"]
    assert (keyed_demo_run["config"].generate.items_per_seed, keyed_demo_run["config"].tasks.select) == (K, TASKS)
    root = tmp_path_factory.mktemp("reliab-crash")
    demo = REPO / "demo" / "taskseed.demo.yaml"
    key = f"sk-taskseed-{uuid.uuid4().hex}"
    server = SimulatorServer(SimSettings(**KEYED_SIM, latency_ms=60, latency_jitter_ms=0, require_api_key=key)).start()
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv(KEY_ENV, key)  # the in-process runs and the CLIs they start read the key from here
    quiet = lambda _line: None  # noqa: E731
    world: dict = {"seconds": {}}
    clock = time.monotonic()

    def lap(name: str) -> None:
        nonlocal clock
        world["seconds"][name] = round(time.monotonic() - clock, 1)
        clock = time.monotonic()

    try:
        # the crashed lakehouse starts as a copy of what the reference's catalog + ingest wrote
        copy_seeded(keyed_demo_run, root / "run")
        argv_overrides = overrides("crash_run", server.base_url)
        config = load_config(demo, argv_overrides, home=root / "run")
        home = Path(config.home)
        lh = Lakehouse(spark, config)  # registers the copied tables under its own schema
        assert sorted(lh.list_tables()) == sorted([*SEEDED_TABLES, "minhash_signatures"])
        lap("copy of the reference's seeds")
        cli = ["--config", str(demo), "--home", str(home), *[a for o in argv_overrides for a in ("--set", o)]]

        # 1. two generates at once: one stops naming the other, which is killed after its first ledger commit
        started = time.time() - 1
        world["generate_kill"] = two_generates_one_killed([*cli, "generate"], home, root)
        time.sleep(0.5)  # handlers of requests that arrived just before the kill finish counting
        world["hits_at_kill"] = server.stats()["by_request_id"]
        world["outcomes_at_kill"] = dict(server.stats()["outcomes"])
        lap("two generate CLIs, one killed")
        world["key_scan"] = scan_for_key(key, [Path("/tmp"), root], started)
        lap("key scan")
        sent_killed = set(world["hits_at_kill"])
        lh = Lakehouse(spark, config)  # registers the tables the killed process created
        recorded = {r.request_id for r in lh.read("llm_calls").select("request_id").collect()}
        server.reset()
        runs = run_pipeline(lh, config, ("generate",), progress=quiet, track=False)
        world.update(sent_killed=sent_killed, recorded=recorded, resent=set(server.stats()["by_request_id"]),
                     generate=runs["generate"].result,
                     spool_left=sorted(str(p) for p in (home / "spool").rglob("*") if p.is_file()))
        bulk = load_config(demo, overrides("crash_run", server.base_url, BULK), home=home)
        run_pipeline(Lakehouse(spark, bulk), bulk, ("enrich",), progress=quiet, track=False)
        lap("generate rerun + enrich")

        # 2. curate, killed after its filter_decisions MERGE
        world["curate_kill"] = kill_when([*cli, "curate"], lambda: "MERGE" in delta_ops(home, "filter_decisions"),
                                         root / "curate.log")
        world["curate_ops_at_kill"] = {t: delta_ops(home, t) for t in ("filter_decisions", "curated",
                                                                       "curated_commercial")}
        lap("curate CLI, killed")
        lh = Lakehouse(spark, config)
        run_pipeline(lh, config, ("curate",), progress=quiet, track=False)
        lap("curate rerun")
        print("crash_world phase seconds:", world["seconds"], "load average:", os.getloadavg())
        world.update(ref=ref, lh=lh, config=config)
        yield world
    finally:
        monkeypatch.undo()
        server.stop()
        spark.sql("DROP SCHEMA IF EXISTS crash_run CASCADE")


def test_killed_runs_leave_no_process_behind(crash_world):
    for stage in ("generate", "curate"):
        killed = crash_world[f"{stage}_kill"]
        assert killed["alive_at_kill"], stage
        assert killed["leftovers"] == [], f"{stage}: processes of the killed run left behind: {killed['leftovers']}"


def test_a_second_generate_on_the_same_lakehouse_stops_at_once_naming_the_first(crash_world):
    killed = crash_world["generate_kill"]
    output = killed["loser_output"]
    errors = [line for line in output.splitlines() if line.startswith("taskseed: error:")]
    assert killed["loser_status"] == 1 and "Traceback" not in output, output[-3000:]
    assert len(errors) == 1 and f"pid={killed['winner_pid']} " in errors[0], output[-3000:]
    # it sent nothing: every request the server saw by the kill came once (from the other run)
    assert crash_world["hits_at_kill"] and set(crash_world["hits_at_kill"].values()) == {1}


def test_the_generate_crash_re_sends_at_most_the_window_and_one_commit_unit(crash_world):
    sent, recorded, resent = crash_world["sent_killed"], crash_world["recorded"], crash_world["resent"]
    result = crash_world["generate"]
    assert recorded and sent >= recorded  # the kill came after a ledger commit ...
    acc = result.accounting  # ... and mid-run: what the ledger lacked at the kill was spooled (committed first by
    # the rerun's recovery) or is sent now
    assert acc.already_done == len(recorded) + acc.recovered and acc.recovered + acc.sent > 0
    assert not resent & recorded  # nothing the ledger holds is asked again
    lost = sent - recorded  # answered (or in flight) when the process died, not in the ledger then
    assert resent & sent <= lost  # what was spooled but not committed is committed by the rerun, not re-sent
    assert len(resent & sent) <= crash_loss_bound(crash_world["config"])
    assert result.accounting.reconciles(), result.accounting.problems()


def test_the_killed_run_left_the_key_nowhere_on_disk(crash_world):
    """The workers held the right key (the simulator answered the killed run's requests, none with
    401), and no file scanned after the kill holds it."""
    assert crash_world["hits_at_kill"] and "401" not in crash_world["outcomes_at_kill"]
    scan = crash_world["key_scan"]
    assert scan["scanned"] > 20  # the run's files were there to scan (Delta log, Spark temp files)
    assert not scan["hits"], f"the API key was found on disk in: {scan['hits']}"


def test_the_generate_rerun_left_nothing_to_recover(crash_world):
    """What the killed run spooled was committed by the rerun and nothing is left in the spool (the
    ledger the rerun leaves equals an uninterrupted run's: test_final_tables_equal_an_uninterrupted_run)."""
    assert crash_world["spool_left"] == []


def test_curate_was_killed_mid_write(crash_world):
    ops = crash_world["curate_ops_at_kill"]
    assert "MERGE" in ops["filter_decisions"]
    assert "MERGE" not in ops["curated_commercial"], ops  # its last write had not happened


@pytest.mark.parametrize("table", ["llm_calls", "generated", "enriched", "quarantine", "filter_decisions",
                                   "curated", "curated_commercial"])
def test_final_tables_equal_an_uninterrupted_run(crash_world, table):
    ref, got = content(crash_world["ref"], table), content(crash_world["lh"], table)
    if table not in ("quarantine",):
        assert ref, table
    assert len(got) == len(ref) and digest(got) == digest(ref), (table, len(got), len(ref),
                                                                 sorted(set(got) ^ set(ref))[:3])
