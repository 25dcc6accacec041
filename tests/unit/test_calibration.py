"""Calibration of the verification vote against gold (udfs/calibration.py, issue 26).

The rules are checked case by case; the proof runs real benchmark seeds (ARC-Easy, BoolQ, GSM8K
from ../shared/data) through the simulator with a known wrong-answer rate: the calibration sample is
enriched with the project's own prompts and parsers over HTTP, and the precision it estimates at the
strict majority is compared with the truth, the share of generated items passing verification whose
answer is the simulator's truth (generation plants a wrong answer at the same rate, and knows which).
"""

from __future__ import annotations

import json
import math

import pytest

from simulator import SimSettings, SimulatorServer
from simulator.contract import sim_truth
from udfs.calibration import (
    Vote,
    auto_threshold,
    calibration_curve,
    sample_rank,
    seed_vote,
    thresholds,
    wilson_interval,
)
from udfs.llm_client import EndpointSettings, call_batch
from udfs.llm_rows import enrichment_requests, generation_requests, parse_enrichment_row, parse_generation_row
from udfs.verification import answer_key

from tests.unit.seed_records import seed_rows


@pytest.mark.parametrize("successes, n, low, high", [
    # reference values: Brown, Cai & DasGupta (2001) / statsmodels proportion_confint(method="wilson")
    (81, 263, 0.2553, 0.3662),
    (0, 10, 0.0, 0.2775),
    (10, 10, 0.7225, 1.0),
    (50, 100, 0.4038, 0.5962),
])
def test_wilson_interval_reference_values(successes, n, low, high):
    lo, hi = wilson_interval(successes, n)
    assert lo == pytest.approx(low, abs=1e-4) and hi == pytest.approx(high, abs=1e-4)


def test_wilson_interval_edges():
    assert wilson_interval(0, 0) == (None, None)
    with pytest.raises(ValueError):
        wilson_interval(5, 4)


MCQ_CHOICES = ["copper", "wood", "glass", "plastic"]


@pytest.mark.parametrize("stand_in, votes, expected", [
    # stand-in, vote samples, (agree, top_other, expected, correct, passes strict, passes 0.5, passes 1.0)
    (("copper", None), [("copper", None)] * 4, (4, 0, 4, True, True, True, True)),
    (("copper", None), [("copper", None)] * 3 + [("wood", None)], (3, 1, 4, True, True, True, False)),
    (("copper", None), [("copper", None)] * 2 + [("wood", None)] * 2, (2, 2, 4, True, False, False, False)),  # tie
    (("wood", None), [("wood", None)] * 3 + [("copper", None)], (3, 1, 4, False, True, True, False)),  # wrong passes
    (("B", None), [(None, 1)] * 2 + [(None, None)] * 2, (2, 0, 4, False, False, True, False)),  # letter, index, nulls
    (("copper", None), [("copper", None)] * 2, (2, 0, 4, True, False, True, False)),  # two samples lost
    (("nonsense", None), [("copper", None)] * 4, (0, 4, 4, False, False, False, False)),  # unreadable stand-in
])
def test_seed_vote_follows_the_verification_rules(stand_in, votes, expected):
    vote = seed_vote("arc", "mcq", "copper", 0, MCQ_CHOICES, stand_in, votes, 4)
    agree, other, exp, correct, strict, half, full = expected
    assert (vote.votes_agree, vote.votes_top_other, vote.votes_expected, vote.correct) == (agree, other, exp, correct)
    assert (vote.passes(None), vote.passes(0.5), vote.passes(1.0)) == (strict, half, full)


def test_seed_vote_not_measurable():
    assert seed_vote("x", "freeform", "a", None, None, ("a", None), [("a", None)], 4) is None
    assert seed_vote("x", "numeric", "no number", None, None, ("4", None), [("4", None)], 4) is None
    assert seed_vote("x", "numeric", "4", None, None, None, [("4", None)], 4) is None


def _votes(spec):
    """[(agree, top_other, correct, count)] → Votes of family 'f' with M = 4."""
    return [Vote("f", "k", "k" if c else "w", a, o, 4, c) for a, o, c, n in spec for _ in range(n)]


def test_curve_counts_and_auto_threshold():
    votes = _votes([(4, 0, True, 90), (4, 0, False, 1), (3, 1, True, 40), (3, 1, False, 10),
                    (2, 1, True, 10), (2, 1, False, 20), (1, 1, False, 5)])
    curve = calibration_curve(votes, 4)["f"]
    assert [p.threshold for p in curve] == [None, *thresholds(4)]
    by = {p.threshold: p for p in curve}
    assert (by[None].passed, by[None].correct) == (141, 130)  # 3 or 4 of 4
    assert (by[0.5].passed, by[0.5].correct) == (171, 140)    # 2 of 4 with top_other 1 passes 0.5
    assert (by[1.0].passed, by[1.0].correct, by[1.0].measured) == (91, 90, 176)
    assert by[1.0].coverage == pytest.approx(91 / 176)
    assert by[0.25].passed == by[0.5].passed  # 1 of 4 ties with another answer: never passes
    choice = auto_threshold(curve, 0.9)
    assert choice.target_met and choice.threshold == 1.0  # 0.75: 130/141, lower bound 0.866 < 0.9
    assert by[0.75].precision_low < 0.9 <= by[1.0].precision_low
    missed = auto_threshold(curve, 0.999)
    assert not missed.target_met and missed.threshold == 1.0
    assert auto_threshold(curve, 0.5).threshold == 0.25  # the lowest threshold meeting the target


def test_sample_rank_is_sha256_of_the_seed_id():
    assert sample_rank("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


# ---- the proof against the simulator's known error rate -----------------------------------------

M, K = 4, 3  # vote samples per item; generated items per seed (more items: a tighter truth)


def _send(server, rows):
    settings = EndpointSettings(base_url=server.base_url, model="taskseed-sim", api_key_env=None, require_key=False,
                                max_concurrency=32, timeout_s=30)
    results, _ = call_batch(settings, rows, 32)
    by_id = {r["request_id"]: r for r in results}
    return [{**row, **by_id[row["request_id"]]} for row in rows]


def _keyed_votes(parsed, answer_format, choices, m):
    samples = sorted((p for p in parsed if p["kind"] == "sample"), key=lambda p: p["sample"])
    return [(s["final_answer"], s["final_answer_index"]) for s in samples if s["sample"] < m], \
        next(((s["final_answer"], s["final_answer_index"]) for s in samples if s["sample"] == m), None)


@pytest.mark.parametrize("wrong_rate", [0.3])
def test_estimate_matches_the_simulators_truth_within_its_interval(tmp_path, wrong_rate):
    """Calibration sample: 150 real seeds per family, M + 1 samples each. Truth: K items generated per
    seed (450 per family; about 190-310 pass), each voted on by M samples; an item is right when its answer is the
    simulator's truth (`sim_truth`, what generation answers unless it plants a wrong answer). The
    truth must lie within the estimate's 95% Wilson interval per family, and the estimate must see
    the error rate: precision below 1 when the votes err at `wrong_rate`."""
    seeds = seed_rows(arc_easy=150, boolq=150, gsm8k=150)
    known = tmp_path / "known.jsonl"
    known.write_text("".join(json.dumps({"question": s["question"], "answer": s["answer_text"]}) + "\n"
                             for s in seeds), encoding="utf-8")
    options = dict(model="taskseed-sim", temperature=0.7, max_tokens=512)
    with SimulatorServer(SimSettings(seed=11, wrong_answer_rate=wrong_rate, latency_ms=0, latency_jitter_ms=0,
                                     known_answers_file=str(known))) as server:
        # the calibration sample: M + 1 samples per seed, as jobs/enrich.py asks for them
        calib_rows = [r for s in seeds for r in enrichment_requests({**s, "gen_id": s["seed_id"], "item_kind": "seed"},
                                                                    m=M + 1, **options)]
        calib = {}
        for row in _send(server, calib_rows):
            calib.setdefault(row["source_key"], []).append(parse_enrichment_row(row))
        # generated items and their M votes
        gen_rows = [r for s in seeds for r in generation_requests(s, [], k=K, **options)]
        items = [p for p in (parse_generation_row(r) for r in _send(server, gen_rows)) if p["kind"] == "item"]
        for item in items:
            item["task_family"] = next(s["task_family"] for s in seeds if s["seed_id"] == item["seed_id"])
        vote_rows = [r for it in items for r in enrichment_requests({**it, "item_kind": "generated"}, m=M, **options)]
        voted = {}
        for row in _send(server, vote_rows):
            voted.setdefault(row["source_key"], []).append(parse_enrichment_row(row))

    estimates = {}
    by_family: dict[str, list[Vote]] = {}
    for s in seeds:
        votes, stand_in = _keyed_votes(calib[s["seed_id"]], s["answer_format"], s["choices"], M)
        vote = seed_vote(s["task_family"], s["answer_format"], s["answer_text"], s["answer_index"], s["choices"],
                         stand_in, votes, M)
        if vote is not None:
            by_family.setdefault(vote.family, []).append(vote)
    for family, curve in calibration_curve([v for vs in by_family.values() for v in vs], M).items():
        estimates[family] = curve[0]  # the strict majority, the default threshold

    truth = {}
    for item in items:
        fmt, choices = item["answer_format"], item["choices"]
        votes, _ = _keyed_votes(voted.get(item["gen_id"], []), fmt, choices, M)
        as_seed = seed_vote(item["task_family"], fmt, sim_truth(item["question"], fmt, choices, None), None, choices,
                            (item["answer_text"], item["answer_index"]), votes, M)
        if as_seed is not None and as_seed.passes(None):  # verification's rule with the item's own answer
            right, passed = truth.get(item["task_family"], (0, 0))
            truth[item["task_family"]] = (right + as_seed.correct, passed + 1)

    assert set(estimates) == set(truth) == {"arc", "boolq", "gsm8k"}
    for family, point in estimates.items():
        right, passed = truth[family]
        assert passed > 150 and point.passed > 50, (family, passed, point.passed)
        true_precision = right / passed
        assert point.precision_low <= true_precision <= point.precision_high, (
            family, wrong_rate, point.precision, (point.precision_low, point.precision_high), true_precision)
        assert not math.isclose(point.precision_low, point.precision_high)
    # yes/no: a wrong item answer and a wrong majority coincide at the rate the simulator plants
    assert estimates["boolq"].precision < 1.0 and truth["boolq"][0] < truth["boolq"][1]
