"""Batch mode's pure rules (udfs/llm_batch.py) on real seed records: batch files in the OpenAI batch
format, answered by the simulator playing `vllm run-batch` (simulator/batch_files.py), classified as
online results are, and the exactly-once rules (holding statuses, deterministic batches, one
answer per request). The Spark round trip is tests/spark/test_llm_batch_files.py."""

from __future__ import annotations

import json

import pytest

from simulator.batch_files import run_batch_file
from tests.unit.seed_records import seed_rows
from udfs.llm_batch import (BATCH_STATUSES, HOLDING, MISSING_FROM_OUTPUT, RELEASED, BatchFileError, assign_batches,
                            batch_id_for, batch_line, holds, line_result, missing_result, read_output_line,
                            to_record)
from udfs.llm_client import build_body, classify_status
from udfs.llm_rows import generation_requests, parse_generation_row


def _requests() -> list[dict]:
    rows = []
    for seed in seed_rows(arc_easy=2, gsm8k=2, boolq=1):
        rows += generation_requests(seed, [], model="taskseed-sim", k=2, temperature=0.7, max_tokens=512)
    return rows


@pytest.mark.parametrize("status", BATCH_STATUSES)
def test_live_and_completed_batches_hold_their_requests_released_and_reconciled_do_not(status):
    assert holds(status) == (status in ("exported", "submitting", "validating", "in_progress", "finalizing",
                                        "completed"))
    assert holds(status) != (status in RELEASED or status == "reconciled")


def test_an_unknown_status_is_an_error():
    with pytest.raises(ValueError, match="unknown batch status 'running'"):
        holds("running")


def test_batches_are_cut_at_batch_rows_deterministically_and_exported_requests_keep_their_batch():
    ids = [r["request_id"] for r in _requests()]
    first = assign_batches("generate", ids, {}, batch_rows=4)
    sizes = sorted(list(first.values()).count(b) for b in set(first.values()))
    assert sizes == [2, 4, 4] and set(first) == set(ids)
    assert assign_batches("generate", list(reversed(ids)), {}, 4) == first  # same pending set, same batches
    kept = {rid: bid for rid, bid in first.items() if bid == first[sorted(ids)[0]]}
    again = assign_batches("generate", ids + ["new-request"], kept, 4)
    assert all(again[rid] == bid for rid, bid in kept.items())
    assert again["new-request"] not in kept.values()
    assert batch_id_for("enrich", ["a"]) != batch_id_for("generate", ["a"])
    with pytest.raises(ValueError):
        assign_batches("generate", ids, {}, 0)


def test_an_input_line_carries_the_online_body_and_round_trips_through_the_simulator(tmp_path):
    requests = _requests()
    lines = [batch_line(r, "taskseed-sim") for r in requests]
    assert all(set(ln) == {"custom_id", "method", "url", "body"} and ln["url"] == "/v1/chat/completions"
               and ln["method"] == "POST" for ln in lines)
    assert [ln["body"] for ln in lines] == [build_body(r, "taskseed-sim") for r in requests]
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("".join(json.dumps(ln) + "\n" for ln in lines))
    assert run_batch_file(src, out)["ok"] == len(requests)
    by_id = {r["request_id"]: r for r in requests}
    for text in out.read_text().splitlines():
        result = line_result(read_output_line(text))
        assert result["status"] == "ok" and result["error_class"] is None and result["prompt_tokens"] > 0
        parsed = parse_generation_row({**by_id[result["request_id"]], **result, "run_id": "r"})
        assert parsed["kind"] == "item", parsed


@pytest.mark.parametrize("line, status, error_class", [
    ({"response": {"status_code": 500, "body": {"error": {"message": "boom", "type": "server_error"}}}},
     "failed", "http_500"),
    ({"response": {"status_code": 429, "body": "slow down"}}, "failed", "rate_limited"),
    ({"response": None, "error": {"code": "rate_limit_error", "message": "quota"}}, "failed", "rate_limited"),
    ({"response": None, "error": {"code": "batch_expired", "message": "not done in 24h"}}, "failed", "batch_error"),
    ({"response": {"status_code": 200, "body": '{"choices": [{"mess'}}, "failed", "invalid_response"),
    ({"response": {"status_code": 200, "body": {"object": "error", "message": "bad", "code": 400}}},
     "failed", "http_400"),
    ({"response": {"status_code": 200, "body": {"choices": [{"message": {"content": "{}"},
                                                             "finish_reason": "length"}]}}}, "ok", "truncated"),
    ({"response": {"status_code": 200, "body": {"choices": [{"message": {"content": ""},
                                                             "finish_reason": "stop"}]}}}, "failed", "empty_content"),
    ({"response": {"status_code": 400, "body": {"error": {"message": "response_format json_schema not supported"}}}},
     "failed", "structured_output_unsupported"),
])
def test_a_line_gets_the_status_and_error_class_an_online_result_gets(line, status, error_class):
    result = line_result({"id": "x", "custom_id": "rid-1", **line})
    assert (result["request_id"], result["status"], result["error_class"]) == ("rid-1", status, error_class)
    code = (line.get("response") or {}).get("status_code")
    if code and code != 200:  # the online path classifies the same status the same way
        assert classify_status(code, "response_format json_schema not supported" if code == 400 else "x",
                               structured=True).error_class == error_class


@pytest.mark.parametrize("text, why", [("{not json", "not JSON"), ('{"id": "x"}', "no custom_id"),
                                       ('["a"]', "no custom_id")])
def test_an_unreadable_output_line_is_a_clear_error(text, why):
    with pytest.raises(BatchFileError, match=why):
        read_output_line(text)


def test_one_answer_per_request_the_ledger_answer_wins_and_a_missing_one_is_failed_not_silent():
    results = [{"request_id": "a", "status": "ok"}, {"request_id": "a", "status": "failed"},
               {"request_id": "b", "status": "ok"}, {"request_id": "c", "status": "failed"}]
    assert [(r["request_id"], r["status"]) for r in to_record(results, answered={"b"})] == [("a", "ok"), ("c", "failed")]
    missing = missing_result("d", "generate-1")
    assert missing["status"] == "failed" and missing["error_class"] == MISSING_FROM_OUTPUT
    assert set(HOLDING) & set(RELEASED) == set()


def test_the_simulator_s_error_and_dropped_lines_are_classified(tmp_path):
    src, out, err = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "err.jsonl"
    src.write_text("".join(json.dumps(batch_line(r, "taskseed-sim")) + "\n" for r in _requests()))
    counts = run_batch_file(src, out, err, error_rate=0.3, http_error_rate=0.2, drop_rate=0.1)
    got = [line_result(read_output_line(t)) for f in (out, err) for t in f.read_text().splitlines()]
    classes = {r["error_class"] for r in got if r["status"] == "failed"}
    assert len(got) == counts["ok"] + counts["error"] + counts["http_500"] == 10 - counts["dropped"]
    assert classes == {"http_500"} and counts["error"] and counts["http_500"] and counts["dropped"]
    assert sum(r["error_class"] == "http_500" for r in got) == counts["http_500"] + counts["error"]


def test_the_batch_commands_parse_and_a_missing_folder_is_one_line_before_spark(tmp_path, capsys):
    from jobs.cli import build_parser, main

    parser = build_parser()
    args = parser.parse_args(["batch", "export", "--stage", "enrich", "--out", "b", "--retry-failed"])
    assert (args.stage, args.out, args.retry_failed) == ("enrich", "b", True)
    assert parser.parse_args(["batch", "import", "results"]).folder == "results"
    with pytest.raises(SystemExit):
        parser.parse_args(["batch", "export", "--stage", "curate"])
    assert main(["--home", str(tmp_path / "h"), "batch", "import", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.strip().endswith(f"batch import: folder not found: {tmp_path / 'nowhere'}")


# ---- the online path's pure rules (jobs/llm_stage/batch_online.py) ---------------------------

def test_submitting_holds_its_requests_and_a_salt_gives_new_batch_ids():
    from udfs.llm_batch import SUBMITTING

    assert holds(SUBMITTING)
    ids = [r["request_id"] for r in _requests()]
    plain, salted = assign_batches("generate", ids, {}, 4), assign_batches("generate", ids, {}, 4, salt="run1-1")
    assert plain == assign_batches("generate", ids, {}, 4, salt="")  # the offline export's ids are unchanged
    assert set(plain.values()).isdisjoint(salted.values())
    assert assign_batches("generate", ids, {}, 4, salt="run1-1") == salted


@pytest.mark.parametrize("provider,recorded", [("validating", "validating"), ("in_progress", "in_progress"),
                                               ("finalizing", "finalizing"), ("cancelling", "in_progress"),
                                               ("completed", "completed"), ("expired", "expired"),
                                               ("cancelled", "cancelled"), ("failed", "failed")])
def test_provider_statuses_map_to_membership_statuses(provider, recorded):
    from udfs.llm_batch import membership_status

    assert membership_status(provider) == recorded
    assert holds(recorded) == (provider not in ("expired", "cancelled", "failed"))


def test_an_unknown_provider_status_is_an_error():
    from udfs.llm_batch import membership_status

    with pytest.raises(ValueError, match="unknown provider batch status"):
        membership_status("paused")


def test_poll_delay_doubles_up_to_the_cap():
    from udfs.llm_batch import poll_delay

    assert [poll_delay(n, 5.0, 60.0) for n in range(6)] == [5.0, 10.0, 20.0, 40.0, 60.0, 60.0]


@pytest.mark.parametrize("line,released", [
    ({"custom_id": "a", "response": None, "error": {"code": "batch_expired", "message": "m"}}, True),
    ({"custom_id": "a", "response": None, "error": {"code": "batch_cancelled", "message": "m"}}, True),
    ({"custom_id": "a", "response": None, "error": {"code": "server_error", "message": "m"}}, False),
    ({"custom_id": "a", "response": {"status_code": 200, "body": {}}, "error": None}, False)])
def test_only_unrun_lines_of_expired_or_cancelled_batches_are_released(line, released):
    from udfs.llm_batch import unrun

    assert unrun(line) == released


def test_a_provider_batch_is_found_by_its_taskseed_id_in_metadata():
    from types import SimpleNamespace

    from udfs.llm_batch import find_provider_batch

    listed = [SimpleNamespace(id="b3", metadata=None), SimpleNamespace(id="b2", metadata={"taskseed_batch_id": "x"}),
              {"id": "b1", "metadata": {"taskseed_batch_id": "generate-1"}}]
    assert find_provider_batch(listed, "generate-1")["id"] == "b1"
    assert find_provider_batch(listed, "x").id == "b2"
    assert find_provider_batch(listed, "generate-2") is None


def test_the_eta_comes_from_the_providers_request_counts():
    from udfs.llm_batch import batches_eta

    assert batches_eta([(100, 25, 10.0), (100, 25, 10.0)]) == pytest.approx(30.0)  # 150 left at 5/s
    assert batches_eta([(100, 0, 10.0)]) is None
    assert batches_eta([]) is None


def test_the_crash_hook_names_its_points_and_is_a_no_op_when_unset(monkeypatch):
    from jobs.llm_stage.batch_online import CRASH_ENV, CRASH_POINTS, crash_point

    monkeypatch.delenv(CRASH_ENV, raising=False)
    for point in CRASH_POINTS:
        crash_point(point)  # returns: nothing set
    monkeypatch.setenv(CRASH_ENV, "after_lunch")
    with pytest.raises(ValueError, match="before_upload, after_upload, after_submit, polling, before_reconcile"):
        crash_point("polling")
