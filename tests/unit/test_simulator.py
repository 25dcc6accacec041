"""The simulator: deterministic answers to the project's own prompts, content faults, and the
HTTP behaviour of a real server (labels, usage, latency/queueing, rate limits, truncation)."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import urllib.error
import urllib.request

import pytest

from jobs.sim_command import add_sim_parser, settings_from_args
from tests.unit import seed_records
from udfs.prompts import render_enrichment_messages, render_generation_messages
from simulator import SimSettings, parse_contract, sim_answer, sim_truth


def _post(url: str, body: dict, headers: dict | None = None) -> tuple[int, dict, dict]:
    request = urllib.request.Request(url + "/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read())


def _gen_body(seed: dict, examples: list[dict], fmt: str, labels=None) -> dict:
    messages, _ = render_generation_messages(seed, examples, fmt, labels, seed["task"])
    return {"model": "taskseed-sim", "messages": messages}


# ---- pure answers --------------------------------------------------------------------------------
def test_truth_ignores_choice_order_and_whitespace():
    a = sim_truth("Which  metal is magnetic?", "mcq", ["iron", "gold", "copper"])
    assert a == sim_truth("which metal is magnetic?", "mcq", ["copper", "iron", "gold"])
    assert sim_truth("Is it?", "boolean") in ("yes", "no")
    assert sim_truth("x", "label", ["a", "b"], ["neutral", "entailment"]) in ("neutral", "entailment")
    assert sim_truth("Tom has 3 apples and buys 4 more.", "numeric") == "7"


def test_generation_keeps_the_frame_with_new_surface_text():
    seeds = seed_records.arc_easy(3)
    settings = SimSettings(seed=1)
    for i, seed in enumerate(seeds):
        item = json.loads(sim_answer(_gen_body(seed, seeds, "mcq"), settings, f"r{i}", f"c{i}"))
        assert len(item["choices"]) == len(seed["choices"])
        assert item["answer"] in item["choices"]
        assert item["answer"] == sim_truth(item["question"], "mcq", item["choices"])
        assert item["question"] != seed["question"]
        seed_words, new_words = set(seed["question"].split()), set(item["question"].split())
        assert len(seed_words & new_words) < 0.8 * len(seed_words)  # not a near-copy


@pytest.mark.parametrize("loader, fmt, labels", [
    (seed_records.boolq, "boolean", None),
    (seed_records.gsm8k, "numeric", None),
    (lambda n: [seed_records.nli_seed()], "label", ["entailment", "neutral", "contradiction"]),
])
def test_generation_other_formats(loader, fmt, labels):
    seed = loader(1)[0]
    item = json.loads(sim_answer(_gen_body(seed, [], fmt, labels), SimSettings(), "r", "c"))
    if fmt == "boolean":
        assert item["answer"] in ("yes", "no")
    elif fmt == "numeric":
        float(item["answer"])
    else:
        assert item["answer"] in labels


def test_enrichment_agrees_with_truth_unless_wrong_answers_are_injected():
    seed = seed_records.arc_easy(1)[0]
    item = {"task": "arc_easy", "question": seed["question"], "choices": seed["choices"], "context": None}
    messages, _ = render_enrichment_messages(item, "mcq")
    truth = sim_truth(seed["question"], "mcq", seed["choices"])
    good = json.loads(sim_answer({"messages": messages}, SimSettings(), "e1", "c"))
    assert good["final_answer"] == truth and good["knowledge"] and good["reasoning"]
    bad = json.loads(sim_answer({"messages": messages}, SimSettings(wrong_answer_rate=1.0), "e1", "c"))
    assert bad["final_answer"] != truth and bad["final_answer"] in seed["choices"]


def test_generation_wrong_answer_duplicate_and_heldout_copy(tmp_path):
    seeds = seed_records.arc_easy(2)
    body = _gen_body(seeds[0], seeds, "mcq")
    wrong = json.loads(sim_answer(body, SimSettings(wrong_answer_rate=1.0), "r1", "c"))
    assert wrong["answer"] != sim_truth(wrong["question"], "mcq", wrong["choices"])
    a = sim_answer(body, SimSettings(), "r1", "c")
    b = sim_answer(body, SimSettings(), "r2", "c")
    assert a != b  # different samples of one seed differ...
    dup = SimSettings(duplicate_rate=1.0)
    assert sim_answer(body, dup, "r1", "c") == sim_answer(body, dup, "r2", "c")  # ...unless duplicated
    heldout = tmp_path / "heldout.jsonl"
    row = {"question": "Which planet is known as the red planet?",
           "choices": ["Mars", "Venus", "Jupiter", "Saturn"], "answer_text": "Mars"}
    heldout.write_text(json.dumps(row) + "\n")
    copied = json.loads(sim_answer(body, SimSettings(heldout_copy_rate=1.0, heldout_file=str(heldout)),
                                   "r1", "c", [row]))
    assert (copied["question"], copied["answer"]) == (row["question"], "Mars")


def test_same_seed_same_answer_and_non_contract_prompts_get_generic_json():
    body = _gen_body(seed_records.arc_easy(1)[0], [], "mcq")
    assert sim_answer(body, SimSettings(seed=5), "r", "c") == sim_answer(body, SimSettings(seed=5), "r", "c")
    assert parse_contract([{"role": "user", "content": "hi"}]) is None
    generic = {"messages": [{"role": "user", "content": "hi"}], "response_format": {
        "type": "json_schema", "json_schema": {"name": "x", "schema": {
            "type": "object", "properties": {"a": {"type": "string"}, "n": {"type": "integer"}}}}}}
    assert json.loads(sim_answer(generic, SimSettings(), "r", "c")) == {"a": "simulated", "n": 0}
    assert "simulat" in sim_answer({"messages": [{"role": "user", "content": "hi"}]}, SimSettings(), "r", "c")


# ---- over HTTP -----------------------------------------------------------------------------------
def test_models_and_completions_are_labelled_and_report_usage(sim):
    with urllib.request.urlopen(sim.base_url + "/models", timeout=5) as resp:
        models = json.loads(resp.read())
    assert models["data"][0]["id"] == "taskseed-sim" and "not a model" in models["data"][0]["description"]
    status, headers, body = _post(sim.base_url, _gen_body(seed_records.arc_easy(1)[0], [], "mcq"))
    assert status == 200 and headers["X-Taskseed-Simulator"] == "1"
    assert body["system_fingerprint"] == "taskseed-simulator"
    usage = body["usage"]
    assert usage["prompt_tokens"] > 50 and usage["completion_tokens"] > 5
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    json.loads(body["choices"][0]["message"]["content"])


def test_max_tokens_truncates_with_finish_reason_length(sim):
    body = dict(_gen_body(seed_records.arc_easy(1)[0], [], "mcq"), max_tokens=5)
    _, _, resp = _post(sim.base_url, body)
    assert resp["choices"][0]["finish_reason"] == "length"
    assert len(resp["choices"][0]["message"]["content"]) == 20


def test_rate_limit_answers_429_with_retry_after(start_sim):
    server = start_sim(rate_limit_rps=1, rate_limit_burst=2, latency_ms=0)
    codes = [_post(server.base_url, {"messages": [{"role": "user", "content": f"{i}"}]}) for i in range(4)]
    assert [c[0] for c in codes] == [200, 200, 429, 429]
    assert int(codes[2][1]["Retry-After"]) >= 1 and "retry-after-ms" in {k.lower() for k in codes[2][1]}


def test_max_concurrency_queues_the_excess(start_sim):
    server = start_sim(latency_ms=100, latency_jitter_ms=0, max_concurrency=4)

    async def burst():
        loop = asyncio.get_running_loop()
        body = {"messages": [{"role": "user", "content": "x"}]}
        return await asyncio.gather(*[loop.run_in_executor(None, _post, server.base_url, body) for _ in range(12)])

    t0 = time.perf_counter()
    results = asyncio.run(burst())
    elapsed = time.perf_counter() - t0
    assert all(r[0] == 200 for r in results)
    assert server.stats()["peak_in_flight"] <= 4 and elapsed >= 0.29  # 12 requests / 4 slots x 100 ms


def test_faults_are_deterministic_per_seed(start_sim):
    def outcomes(seed):
        server = start_sim(seed=seed, fault_rate=0.5, latency_ms=0, hang_s=0.01,
                           fault_kinds=("500", "503", "429", "malformed", "truncate"))
        codes = [_post(server.base_url, {"messages": [{"role": "user", "content": f"q{i}"}]})[0] for i in range(30)]
        server.stop()
        return codes

    first = outcomes(4)
    assert first == outcomes(4) and 200 in first and set(first) - {200}
    assert first != outcomes(5)


def test_required_key_gives_401_without_it(start_sim):
    server = start_sim(require_api_key="sk-test-SECRET123")
    assert _post(server.base_url, {"messages": []})[0] == 401
    ok = _post(server.base_url, {"messages": [{"role": "user", "content": "x"}]},
               {"Authorization": "Bearer sk-test-SECRET123"})
    assert ok[0] == 200 and "sk-test-SECRET123" not in json.dumps(ok[2])


def test_cli_flags_map_to_settings(tmp_path):
    parser = argparse.ArgumentParser()
    add_sim_parser(parser.add_subparsers(dest="command"))
    heldout = tmp_path / "h.jsonl"
    heldout.write_text("")
    args = parser.parse_args(["sim", "--port", "0", "--seed", "9", "--latency-ms", "50", "--max-concurrency", "8",
                              "--rate-limit-rps", "20", "--fault-rate", "0.2", "--fault", "hang=0.05",
                              "--heldout-file", str(heldout)])
    settings = settings_from_args(args)
    assert (settings.seed, settings.latency_ms, settings.max_concurrency, settings.rate_limit_rps) == (9, 50, 8, 20)
    assert dict(settings.kind_rates())["hang"] == 0.05 and settings.heldout_file == str(heldout)
    with pytest.raises(SystemExit):
        parser.parse_args(["sim", "--fault", "explode=0.1"])


# ---- server behaviours for the client's response kinds (issue 11 F–I, issue 12 §3) ---------------
def _post_raw(url: str, body: dict) -> tuple[int, str, bytes]:
    request = urllib.request.Request(url + "/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read()


def test_body_seed_picks_the_sample(sim):
    """Same prompt: another seed gives another item, the same seed the same item, whatever the headers."""
    body = _gen_body(seed_records.arc_easy(1)[0], [], "mcq")
    items = {}
    for seed in (1, 2, 3):
        _, _, resp = _post(sim.base_url, dict(body, seed=seed), {"X-Taskseed-Request-Id": f"rid-{seed}"})
        items[seed] = resp["choices"][0]["message"]["content"]
    assert len(set(items.values())) == 3
    _, _, again = _post(sim.base_url, dict(body, seed=2), {"X-Taskseed-Request-Id": "another-id"})
    assert again["choices"][0]["message"]["content"] == items[2]
    # duplicates collapse samples onto one item even though the seeds differ
    dup = SimSettings(duplicate_rate=1.0)
    from simulator import SimulatorServer

    with SimulatorServer(dup) as server:
        contents = {_post(server.base_url, dict(body, seed=s))[2]["choices"][0]["message"]["content"] for s in (1, 2, 3)}
    assert len(contents) == 1


def test_new_fault_kinds_are_opt_in_and_shaped_like_real_servers(start_sim):
    from simulator import DEFAULT_FAULT_KINDS

    body = {"messages": [{"role": "user", "content": "x"}]}
    # `fault_rate` keeps meaning what it meant: spread over the original kinds only
    assert [k for k, _ in SimSettings(fault_rate=0.8).kind_rates()] == list(DEFAULT_FAULT_KINDS)
    assert SimSettings(fault_rate=0.8).kind_rates()[0][1] == 0.1

    html = start_sim(fault_rates=(("html_502", 1.0),), latency_ms=0)
    status, ctype, raw = _post_raw(html.base_url, body)
    assert (status, ctype.split(";")[0]) == (502, "text/html") and b"<title>502 Bad Gateway</title>" in raw

    err = start_sim(fault_rates=(("error_200", 1.0),), latency_ms=0)
    status, _, raw = _post_raw(err.base_url, body)
    payload = json.loads(raw)
    assert status == 200 and payload["object"] == "error" and payload["code"] == 400 and "choices" not in payload

    no_usage = start_sim(fault_rates=(("no_usage", 1.0),), latency_ms=0)
    status, _, raw = _post_raw(no_usage.base_url, body)
    payload = json.loads(raw)
    assert status == 200 and "usage" not in payload and payload["choices"][0]["message"]["content"]


@pytest.mark.parametrize("mode, field", [("split", "reasoning_content"), ("only", "reasoning_content"),
                                         ("only", "reasoning"), ("off", None)])
def test_reasoning_modes(start_sim, mode, field):
    server = start_sim(latency_ms=0, reasoning=mode, reasoning_field=field or "reasoning_content")
    body = _gen_body(seed_records.arc_easy(1)[0], [], "mcq")
    _, _, resp = _post(server.base_url, body)
    message = resp["choices"][0]["message"]
    if mode == "off":
        assert set(message) == {"role", "content"}
        return
    assert "step by step" in message[field] and "{" not in message[field].split("\n")[0]
    if mode == "split":
        assert json.loads(message["content"])["answer"]
    else:
        assert message["content"] is None and json.loads(message[field].split("\n", 1)[1])["answer"]
    assert resp["usage"]["completion_tokens"] > len(message[field]) // 4


@pytest.mark.parametrize("status", [400, 500])
def test_server_can_reject_json_schema_but_accept_json_object(start_sim, status):
    server = start_sim(latency_ms=0, reject_json_schema=status)
    body = _gen_body(seed_records.arc_easy(1)[0], [], "mcq")
    schema_format = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    code, _, resp = _post(server.base_url, dict(body, response_format=schema_format))
    assert code == status and '"text" or "json_object"' in resp["error"]["message"]
    code, _, resp = _post(server.base_url, dict(body, response_format={"type": "json_object"}))
    assert code == 200 and json.loads(resp["choices"][0]["message"]["content"])["question"]
    with pytest.raises(ValueError):
        SimSettings(reject_json_schema=200)
    with pytest.raises(ValueError):
        SimSettings(reasoning="verbose")


def test_new_faults_are_deterministic_per_seed(start_sim):
    def outcomes(seed):
        server = start_sim(seed=seed, latency_ms=0,
                           fault_rates=(("html_502", 0.2), ("error_200", 0.2), ("no_usage", 0.2)))
        out = []
        for i in range(30):
            status, _, raw = _post_raw(server.base_url, {"messages": [{"role": "user", "content": f"q{i}"}]})
            out.append((status, b'"object": "error"' in raw, b'"usage"' in raw))
        server.stop()
        return out

    first = outcomes(4)
    assert first == outcomes(4) and len(set(first)) == 4 and first != outcomes(5)


def test_cli_flags_for_reasoning_and_structured_output_rejection():
    parser = argparse.ArgumentParser()
    add_sim_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["sim", "--reasoning", "only", "--reasoning-field", "reasoning",
                              "--reject-json-schema", "500", "--fault", "html_502=0.1", "--fault", "error_200=0.05"])
    settings = settings_from_args(args)
    assert (settings.reasoning, settings.reasoning_field, settings.reject_json_schema) == ("only", "reasoning", 500)
    assert dict(settings.kind_rates()) == {"html_502": 0.1, "error_200": 0.05}
    with pytest.raises(SystemExit):
        parser.parse_args(["sim", "--reasoning", "loud"])
    bad = parser.parse_args(["sim", "--reject-json-schema", "200"])
    with pytest.raises(Exception, match="reject_json_schema"):
        settings_from_args(bad)


# ---- content faults of issue 29: what the copy and prompt-leak rules catch ------------------------
def _issue29_seeds() -> list[tuple[dict, str, list | None]]:
    labels = ["entailment", "neutral", "contradiction"]
    return ([(s, "boolean", None) for s in seed_records.boolq(3)] + [(s, "mcq", None) for s in seed_records.arc_easy(3)]
            + [(s, "numeric", None) for s in seed_records.gsm8k(3)] + [(s, "mcq", None) for s in seed_records.winogrande(2)]
            + [(s, "short_text", None) for s in seed_records.webqs(2)] + [(seed_records.nli_seed(), "label", labels)])


def _as_item(seed: dict, fmt: str, generated: dict) -> dict:
    return {"seed_id": seed["seed_id"], "task": seed["task"], "answer_format": fmt,
            "question": generated["question"], "context": generated["context"], "choices": generated["choices"],
            "answer_text": generated["answer"], "answer_index": None}


@pytest.mark.parametrize("k", range(4))
def test_seed_copy_fault_is_caught_by_the_copy_rule(k):
    from simulator.contract import shorten_passage
    from udfs.copies import SEED_WITH_ANSWER_CHANGED, SeedIndex, answers_differ, copy_decision

    cases = _issue29_seeds()
    settings = SimSettings(seed=k, seed_copy_rate=1.0)
    index = {task: SeedIndex.build([s for s, _, _ in cases if s["task"] == task]) for task in {s["task"] for s, _, _ in cases}}
    for seed, fmt, labels in cases:
        generated = json.loads(sim_answer(_gen_body(seed, [], fmt, labels), settings, f"r{k}", "c"))
        assert generated["question"] == seed["question"]
        assert generated["context"] in (seed["context"], shorten_passage(seed["context"] or ""))
        item = _as_item(seed, fmt, generated)
        assert answers_differ(item, seed)
        decision = copy_decision(item, index[seed["task"]])
        assert (decision.passed, decision.reason, decision.seed_id) == (False, SEED_WITH_ANSWER_CHANGED, seed["seed_id"])


def test_seed_copy_shortens_the_passage_on_some_draws():
    seed = seed_records.boolq(1)[0]
    contexts = {json.loads(sim_answer(_gen_body(seed, [], "boolean"), SimSettings(seed_copy_rate=1.0), f"r{i}", "c"))
                ["context"] for i in range(12)}
    assert seed["context"] in contexts and len(contexts) == 2


@pytest.mark.parametrize("k", range(4))
def test_prompt_leak_fault_is_caught_by_the_leak_rule(k):
    from udfs.prompt_leak import PROMPT_LEAK, prompt_leak_decision

    for seed, fmt, labels in _issue29_seeds():
        generated = json.loads(sim_answer(_gen_body(seed, [], fmt, labels), SimSettings(seed=k, prompt_leak_rate=1.0),
                                          f"r{k}", "c"))
        passed, reason, evidence = prompt_leak_decision(_as_item(seed, fmt, generated))
        assert (passed, reason) == (False, PROMPT_LEAK) and evidence
        assert generated["answer"] == sim_truth(generated["question"], fmt, generated["choices"], labels)


@pytest.mark.parametrize("fmt", ["boolean", "mcq", "numeric", "short_text", "freeform", "code", "label"])
def test_every_sentence_the_simulator_can_leak_is_detected(fmt):
    """Whichever sentence of whichever generation prompt the simulator picks, the rule finds it."""
    from simulator.contract import prompt_sentences_received
    from udfs.prompt_leak import find_prompt_leaks

    seed = dict(seed_records.arc_easy(1)[0], context="A passage.")
    labels = ["entailment", "neutral"] if fmt == "label" else None
    sentences = prompt_sentences_received(_gen_body(seed, [], fmt, labels)["messages"])
    assert sentences
    for sentence in sentences:
        assert find_prompt_leaks([f"Some passage. {sentence} More."]), sentence


def test_self_reference_fault_shapes():
    for seed, fmt, labels in _issue29_seeds():
        item = json.loads(sim_answer(_gen_body(seed, [], fmt, labels), SimSettings(self_reference_rate=1.0), "r", "c"))
        assert "this question" in item["question"]
        assert (item["context"] is None) == (not seed.get("context"))
        if fmt == "boolean":
            assert item["answer"] == "yes"
        elif fmt == "numeric":
            assert item["answer"] == str(len(item["question"].split()))
        elif fmt in ("mcq", "label"):
            assert item["answer"] in (labels or item["choices"])
        else:
            assert item["answer"] == item["question"].split()[0]


def test_content_fault_rates_at_zero_leave_the_output_byte_identical():
    """The digest of many answers (generation and enrichment, five real tasks and a label seed, with
    and without the older content faults) as computed by the simulator before issue 29's faults."""
    import hashlib

    seeds = (seed_records.arc_easy(6) + seed_records.boolq(6) + seed_records.gsm8k(6) + seed_records.winogrande(6)
             + seed_records.webqs(6) + [seed_records.nli_seed()])
    fmt = {"arc_easy": "mcq", "boolq": "boolean", "gsm8k": "numeric", "winogrande": "mcq", "webqs": "short_text",
           "nli_handwritten": "label"}
    digest = hashlib.blake2b(digest_size=16)
    for settings in (SimSettings(), SimSettings(seed=3, wrong_answer_rate=0.3, duplicate_rate=0.3)):
        for i, seed in enumerate(seeds):
            f = fmt[seed["task"]]
            same = [s for s in seeds if s["task"] == seed["task"]]
            for messages in (render_generation_messages(seed, same, f)[0], render_enrichment_messages(seed, f)[0]):
                for k in range(4):
                    digest.update(sim_answer({"messages": messages}, settings, f"v{i}-{k}", f"c{i}").encode())
    assert digest.hexdigest() == "2159cd8423ea747aa00208f01e959829"


def test_planted_content_faults_are_counted_in_stats(start_sim):
    server = start_sim(latency_ms=0, seed_copy_rate=0.5, prompt_leak_rate=1.0, wrong_answer_rate=1.0)
    seeds = seed_records.boolq(8)
    for i, seed in enumerate(seeds):
        assert _post(server.base_url, dict(_gen_body(seed, [], "boolean"), seed=i))[0] == 200
    faults = server.stats()["content_faults"]
    assert faults["seed_copy"] + faults["prompt_leak"] == len(seeds)
    assert 0 < faults["seed_copy"] < len(seeds) and faults["wrong_answer"] == faults["prompt_leak"]
    with pytest.raises(ValueError):
        SimSettings(prompt_leak_rate=1.5).validated()
