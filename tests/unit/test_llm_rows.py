"""Row logic of the LLM stages without Spark: request builders (K/M sample rows, few-shot exemplars
from the same task, render errors), row parsers over real simulator output and broken output,
exemplar choice, token estimates and quarantine rows."""

from __future__ import annotations

import json

import pytest

from schemas.answer_formats import BOOLEAN, CODE, LABEL, MCQ, NUMERIC
from simulator import SimSettings, sim_answer
from tests.unit.seed_records import broken_seed, seed_rows
from udfs import llm_rows
from udfs.llm_rows import (
    approx_prompt_tokens,
    choose_exemplars,
    enrichment_requests,
    estimate_enrichment_completion,
    generation_requests,
    label_set_for,
    parse_enrichment_row,
    parse_generation_row,
    quarantine_row,
)
from udfs.prompts import extract_input_payload


def test_generation_requests_k_samples_fewshot_same_task_never_the_seed():
    seeds = seed_rows(arc_easy=3)
    pool = [dict(s, split="train") for s in seeds]
    rows = generation_requests(seeds[0], choose_exemplars(seeds[0]["seed_id"], pool, 2), model="m", k=3,
                               temperature=0.9, max_tokens=512)
    assert [r["sample_index"] for r in rows] == [0, 1, 2]
    assert len({r["request_id"] for r in rows}) == 3  # the sample index separates the K samples
    assert len({r["messages_json"] for r in rows}) == 1  # rendered once per seed
    payload = extract_input_payload(json.loads(rows[0]["messages_json"]))
    assert len(payload["examples"]) == 2
    assert seeds[0]["question"] not in [e["question"] for e in payload["examples"]]
    assert {e["question"] for e in payload["examples"]} <= {s["question"] for s in seeds}
    assert rows[0]["est_prompt_tokens"] > 50 and 0 < rows[0]["est_completion_tokens"] <= 512
    # deterministic: same seed, same exemplars, same request ids
    again = generation_requests(seeds[0], choose_exemplars(seeds[0]["seed_id"], pool, 2), model="m", k=3,
                                temperature=0.9, max_tokens=512)
    assert [r["request_id"] for r in again] == [r["request_id"] for r in rows]
    # a changed temperature is a different request
    hotter = generation_requests(seeds[0], [], model="m", k=1, temperature=1.0, max_tokens=512)
    assert hotter[0]["request_id"] not in {r["request_id"] for r in rows}
    # an unrenderable seed is one render_error row, not an exception
    bad = generation_requests(broken_seed(), [], model="m", k=3, temperature=0.9, max_tokens=512)
    assert len(bad) == 1 and bad[0]["render_error"] == "render_error" and "choices" in bad[0]["render_detail"]


@pytest.mark.parametrize("task", ["arc_easy", "gsm8k", "boolq", "winogrande", "webqs", "nli_handwritten"])
def test_every_format_round_trips_through_plan_simulator_and_parsers(task):
    seed = seed_rows(**{task: 1})[0]
    [request] = generation_requests(seed, [], model="m", k=1, temperature=0.9, max_tokens=1024)
    content = sim_answer({"messages": json.loads(request["messages_json"])}, SimSettings(), "g", "g")
    item = parse_generation_row(dict(request, status="ok", content=content, run_id="r"))
    assert item["kind"] == "item", item
    assert item["seed_id"] == seed["seed_id"] and item["license"] == "CC-BY-4.0"
    enrich_item = dict(item, item_kind="generated", gen_id=item["gen_id"])
    [erequest] = enrichment_requests(enrich_item, model="m", m=1, temperature=0.7, max_tokens=1024)
    econtent = sim_answer({"messages": json.loads(erequest["messages_json"])}, SimSettings(), "e", "e")
    sample = parse_enrichment_row(dict(erequest, status="ok", content=econtent, run_id="r"))
    assert sample["kind"] == "sample" and sample["gen_id"] == item["gen_id"]
    assert sample["final_answer"] is not None and sample["reasoning"]
    # broken outputs become quarantine rows carrying the raw text and the typed reason
    broken = parse_generation_row(dict(request, status="parse_error", content=content[: len(content) // 2]))
    assert broken["kind"] == "quarantine" and broken["reason"] == "truncated_json"
    assert broken["raw"] == content[: len(content) // 2] and broken["source_key"] == request["request_id"]
    failed = parse_enrichment_row(dict(erequest, status="failed", content=None, error_class="http_503"))
    assert failed["kind"] == "quarantine" and failed["reason"] == "http_503"




# ---- which text a ledger row is parsed from (issue 11 F) -------------------------------------
def _sim_output(task: str, stage: str):
    """(request row, simulator answer) for one generate or enrich request of `task`."""
    seed = seed_rows(**{task: 1})[0]
    [request] = generation_requests(seed, [], model="m", k=1, temperature=0.9, max_tokens=1024)
    content = sim_answer({"messages": json.loads(request["messages_json"])}, SimSettings(), "g", "g")
    if stage == "generate":
        return request, content
    item = parse_generation_row(dict(request, status="ok", content=content, run_id="r"))
    [erequest] = enrichment_requests(dict(item, item_kind="generated"), model="m", m=1, temperature=0.7,
                                     max_tokens=1024)
    return erequest, sim_answer({"messages": json.loads(erequest["messages_json"])}, SimSettings(), "e", "e")


THOUGHT = "Okay, let me think step by step about what the question asks and check each option."


@pytest.mark.parametrize("stage, parse", [("generate", parse_generation_row), ("enrich", parse_enrichment_row)])
@pytest.mark.parametrize("task", ["arc_easy", "gsm8k", "boolq"])
@pytest.mark.parametrize("case, usable", [
    ("content", True),                         # plain server: the answer in content
    ("content_beside_reasoning", True),        # reasoning parser: thoughts apart, answer in content
    ("reasoning_only_null_content", True),     # reasoning parser never saw </think>: all in the reasoning
    ("reasoning_only_blank_content", True),    # same, content "" or whitespace
    ("reasoning_only_old_status", True),       # the same row written as parse_error by an older version
    ("thoughts_only", False),                  # no answer anywhere: the parser rejects it
    ("reasoning_cut_at_limit", False),         # finish_reason=length with reasoning only: ran out thinking
    ("no_reasoning_column", True),             # a ledger written before the column existed
])
def test_rows_are_parsed_from_content_else_the_reasoning_text(stage, parse, task, case, usable):
    request, answer = _sim_output(task, stage)
    row = dict(request, run_id="r", status="ok", finish_reason="stop")
    row.update({
        "content": dict(content=answer, reasoning_content=None),
        "content_beside_reasoning": dict(content=answer, reasoning_content=THOUGHT + ' Draft: {"final_answer": "x"}'),
        "reasoning_only_null_content": dict(content=None, reasoning_content=THOUGHT + "\n" + answer),
        "reasoning_only_blank_content": dict(content=" \n", reasoning_content=THOUGHT + "\n" + answer),
        "reasoning_only_old_status": dict(status="parse_error", content=None, reasoning_content=answer),
        "thoughts_only": dict(content=None, reasoning_content=THOUGHT),
        "reasoning_cut_at_limit": dict(content=None, reasoning_content=THOUGHT + "\n" + answer[:20],
                                       finish_reason="length"),
        "no_reasoning_column": dict(content=answer),
    }[case])
    out = parse(row)
    if case == "thoughts_only" and stage == "enrich":
        # enrichment keeps prose without an answer as a vote for nothing (final_answer NULL)
        assert out["kind"] == "sample" and out["final_answer"] is None, out
        return
    assert (out["kind"] != "quarantine") == usable, out
    expected = parse(dict(request, run_id="r", status="ok", content=answer, finish_reason="stop"))
    if usable:  # the same item/sample as from a plain server, whatever field held the answer
        assert {k: v for k, v in out.items()} == expected
    else:
        assert out["source_key"] == request["request_id"]
        assert out["raw"] == (row["reasoning_content"] if case == "thoughts_only" else None)


def test_a_failed_row_is_quarantined_with_its_class_whatever_its_reasoning_text():
    request, answer = _sim_output("arc_easy", "generate")
    out = parse_generation_row(dict(request, status="failed", error_class="truncated", finish_reason="length",
                                    error_detail="finish_reason=length with reasoning only, no content",
                                    content=None, reasoning_content=THOUGHT + answer))
    assert (out["kind"], out["reason"]) == ("quarantine", "truncated") and "reasoning only" in out["detail"]


# ---- exemplars, estimates, labels -----------------------------------------------------------

def test_exemplars_never_include_the_seed_and_rotate_by_seed_id():
    pool = [{"seed_id": f"s{i}", "question": f"q{i}"} for i in range(6)]
    picks = {s["seed_id"]: [e["seed_id"] for e in choose_exemplars(s["seed_id"], pool, 2)] for s in pool}
    assert all(seed not in chosen and len(chosen) == 2 for seed, chosen in picks.items())
    assert len({tuple(c) for c in picks.values()}) > 1  # different seeds see different exemplars
    assert choose_exemplars("s0", pool, 2) == choose_exemplars("s0", list(pool), 2)
    assert [e["seed_id"] for e in choose_exemplars("s0", pool, 99)] and len(choose_exemplars("s0", pool, 99)) == 5
    assert choose_exemplars("s0", pool, 0) == [] and choose_exemplars("s0", pool[:1], 3) == []


def test_token_estimates_are_capped_at_max_tokens():
    messages = [{"role": "system", "content": "x" * 400}, {"role": "user", "content": "y" * 400}]
    assert approx_prompt_tokens(messages) == 800 // llm_rows.CHARS_PER_TOKEN + 1
    assert estimate_enrichment_completion(CODE, 4096) > estimate_enrichment_completion(MCQ, 4096)
    assert estimate_enrichment_completion(CODE, 100) == 100
    assert estimate_enrichment_completion(None, 4096) == 300  # unknown format: a middle guess
    [row] = generation_requests(seed_rows(gsm8k=1)[0], [], model="m", k=1, temperature=0.5, max_tokens=20)
    assert row["est_completion_tokens"] == 20


@pytest.mark.parametrize("record, fmt, labels", [
    ({"choices": ["a", "b"]}, BOOLEAN, ["no", "yes"]),
    ({"choices": ["entailment", "neutral"]}, LABEL, ["entailment", "neutral"]),
    ({"choices": ["a", "b", "c"]}, MCQ, None),
    ({"choices": None}, NUMERIC, None),
])
def test_label_set_for_each_format(record, fmt, labels):
    assert label_set_for(record, fmt) == labels


# ---- parsing: what reaches quarantine, and with which reason --------------------------------

def _generation_request(task="arc_easy"):
    return generation_requests(seed_rows(**{task: 1})[0], [], model="m", k=1, temperature=0.9, max_tokens=1024)[0]


@pytest.mark.parametrize("wrap", [
    lambda s: s,
    lambda s: "```json\n" + s + "\n```",
    lambda s: "Here is the new item:\n" + s,
], ids=["bare", "code-fence", "prose-before"])
def test_generation_output_wrapped_the_way_models_do_still_parses(wrap):
    request = _generation_request()
    content = sim_answer({"messages": json.loads(request["messages_json"])}, SimSettings(), "g", "g")
    row = parse_generation_row(dict(request, status="parse_error", content=wrap(content), run_id="r"))
    assert row["kind"] == "item" and row["question"] == json.loads(content)["question"]
    assert row["gen_id"] == parse_generation_row(dict(request, status="ok", content=content))["gen_id"]


@pytest.mark.parametrize("content", [None, "", "I cannot help with that.", "[1, 2, 3]"])
def test_unusable_generation_output_is_quarantined_with_the_raw_text(content):
    request = _generation_request()
    row = parse_generation_row(dict(request, status="parse_error", content=content, run_id="r"))
    assert row["kind"] == "quarantine" and row["reason"] and row["reason"] != "parser_exception"
    assert row["raw"] == content and row["source_key"] == request["request_id"] and row["task"] == "arc_easy"


def test_failed_calls_are_quarantined_with_their_error_class():
    request = _generation_request()
    row = parse_generation_row(dict(request, status="failed", content=None, error_class=None, error_detail="x" * 5000))
    assert row["kind"] == "quarantine" and row["reason"] == "failed" and len(row["detail"]) == 1000


def test_a_parser_bug_quarantines_the_row_instead_of_failing_the_partition(monkeypatch):
    def broken_parser(*_args, **_kwargs):
        raise KeyError("choices")

    monkeypatch.setattr(llm_rows, "parse_enrichment", broken_parser)
    item = dict(seed_rows(arc_easy=1)[0], gen_id="g1", item_kind="seed")
    [request] = enrichment_requests(item, model="m", m=1, temperature=0.7, max_tokens=512)
    row = parse_enrichment_row(dict(request, status="ok", content='{"final_answer": "x"}', run_id="r"))
    assert row["kind"] == "quarantine" and row["reason"] == "parser_exception" and "KeyError" in row["detail"]


def test_quarantine_row_defaults():
    row = quarantine_row({"request_id": "r1", "task": "t", "split": "train"}, None, "", "raw text")
    assert (row["source_key"], row["reason"], row["detail"], row["raw"], row["split"]) == \
        ("r1", "unknown", None, "raw text", "train")


def test_enrichment_requests_m_samples_and_render_errors():
    item = dict(seed_rows(boolq=1)[0], gen_id="g1", item_kind="seed")
    rows = enrichment_requests(item, model="m", m=3, temperature=0.7, max_tokens=512)
    assert [r["sample_index"] for r in rows] == [0, 1, 2] and len({r["request_id"] for r in rows}) == 3
    assert {r["source_key"] for r in rows} == {"g1"} and rows[0]["item_kind"] == "seed"
    assert "answer_text" not in extract_input_payload(json.loads(rows[0]["messages_json"]))["item"]
    bad = enrichment_requests(dict(broken_seed(), gen_id="g2"), model="m", m=3, temperature=0.7, max_tokens=512)
    assert len(bad) == 1 and bad[0]["render_error"] == "render_error" and bad[0]["source_key"] == "g2"
