"""udfs/copies.py: an item that repeats a seed's question is not new, one that repeats its seed with
another answer contradicts gold (issue 29) — except where the question is a frame many seeds of the
task share, measured from the seeds themselves. On real seeds of the benchmark mirror."""

from __future__ import annotations

import json
from functools import lru_cache

import pytest

from tests.unit import seed_records
from tests.unit.seed_records import MIRROR
from udfs.copies import (
    COPIES_SEED_QUESTION,
    NEW_BODY_FOR_FRAME,
    NEW_QUESTION,
    SEED_WITH_ANSWER_CHANGED,
    SeedIndex,
    answers_differ,
    body_key,
    body_overlap,
    copy_decision,
    copy_decisions,
    frame_keys,
    question_key,
)
from udfs.hashing import stable_hash
from udfs.textnorm import normalize_text


@lru_cache(maxsize=None)
def _raw(relative: str) -> tuple[dict, ...]:
    with (MIRROR / relative).open(encoding="utf-8") as handle:
        return tuple(json.loads(line) for line in handle if line.strip())


def _seed(task: str, i: int, question: str, context=None, choices=None, answer_text=None, fmt="mcq") -> dict:
    return {"seed_id": stable_hash("seed", task, "train", i), "task": task, "question": question,
            "context": context, "choices": choices, "answer_text": answer_text, "answer_index": None,
            "answer_format": fmt}


@lru_cache(maxsize=None)
def boolq_seeds() -> tuple[dict, ...]:
    return tuple(_seed("boolq", i, r["question"], r["passage"], ["no", "yes"], ["no", "yes"][r["label"]], "boolean")
                 for i, r in enumerate(_raw("aps/super_glue/boolq/train.jsonl")))


@lru_cache(maxsize=None)
def arc_easy_seeds() -> tuple[dict, ...]:
    out = []
    for i, r in enumerate(_raw("allenai/ai2_arc/ARC-Easy/train.jsonl")):
        choices = r["choices"]["text"]
        out.append(_seed("arc_easy", i, r["question"], None, choices,
                         choices[r["choices"]["label"].index(r["answerKey"])]))
    return tuple(out)


def _mmlu_seeds(subject: str) -> list[dict]:
    return [_seed(f"mmlu_{subject}", i, r["question"], None, r["choices"], r["choices"][r["answer"]])
            for i, r in enumerate(_raw(f"cais/mmlu/{subject}/test.jsonl"))]


def _shorten(passage: str) -> str:
    sentences = passage.split(". ")
    return ". ".join(sentences[: (len(sentences) + 1) // 2])


# ---- keys ----------------------------------------------------------------------------------------
def test_question_key_is_the_projects_text_key_without_the_passage():
    seed = boolq_seeds()[0]
    assert question_key(seed["question"]) == normalize_text(seed["question"])
    assert question_key("  Is THE sky blue?! ") == question_key("is the sky blue")
    assert body_key(seed["context"], seed["choices"]) == normalize_text(seed["context"])
    assert body_key(None, ["B", "a"]) == body_key("", ["A", "b"])  # options as a set
    assert body_key(None, None) == ""


# ---- frames, measured on real tasks ---------------------------------------------------------------
@pytest.mark.parametrize("loader, expected", [
    (boolq_seeds, set()),  # 9427 seeds: no question shared by three different passages
    (arc_easy_seeds, {"which is an example of a chemical reaction"}),
    (lambda: _mmlu_seeds("high_school_microeconomics"), {"which of the following is true"}),
    (lambda: _mmlu_seeds("nutrition"), {"which of the following statements is correct"}),
])
def test_frames_are_measured_from_the_seeds(loader, expected):
    assert set(frame_keys(loader())) == expected


@pytest.mark.parametrize("i", [0, 13, 57])
def test_a_question_repeated_with_the_same_options_is_a_duplicate_not_a_frame(i):
    """A real MMLU record present three times (a split with duplicated rows) asks its question of one
    option set, three times: duplicates of one item, not a frame."""
    seeds = _mmlu_seeds("abstract_algebra")
    record = seeds[i]
    repeated = seeds + [dict(record, seed_id=f"copy-{n}") for n in range(2)]
    key = question_key(record["question"])
    assert sum(question_key(s["question"]) == key for s in repeated) >= 3
    assert key not in frame_keys(repeated)
    assert key in frame_keys(repeated, min_seeds=1)


# ---- the decision on real BoolQ seeds (no frames) -------------------------------------------------
BOOLQ_INDEXES = [0, 7, 42, 1000, 5000]


@pytest.fixture(scope="module")
def boolq_index():
    return SeedIndex.build(boolq_seeds())


def _flip(answer: str) -> str:
    return "no" if answer == "yes" else "yes"


@pytest.mark.parametrize("i", BOOLQ_INDEXES)
def test_seed_question_with_shortened_passage_and_flipped_gold_fails(boolq_index, i):
    seed = boolq_seeds()[i]
    item = dict(seed, seed_id=seed["seed_id"], context=_shorten(seed["context"]),
                answer_text=_flip(seed["answer_text"]))
    decision = copy_decision(item, boolq_index)
    assert (decision.passed, decision.reason, decision.seed_id) == (False, SEED_WITH_ANSWER_CHANGED, seed["seed_id"])
    assert decision.evidence()["frame"] is False and decision.body_overlap >= 0.8


@pytest.mark.parametrize("i", BOOLQ_INDEXES)
@pytest.mark.parametrize("variant", ["same_answer", "new_passage", "reformatted_question", "no_passage"])
def test_seed_question_otherwise_fails_as_a_copy(boolq_index, i, variant):
    seed = boolq_seeds()[i]
    other = boolq_seeds()[i + 1]
    item = dict(seed)
    if variant == "new_passage":  # a passage of another seed: still the seed's question, not new
        item.update(context=other["context"], answer_text=_flip(seed["answer_text"]))
    elif variant == "reformatted_question":
        item.update(question="  " + seed["question"].upper() + "?! ")
    elif variant == "no_passage":
        item.update(context=None, answer_text=_flip(seed["answer_text"]))
    decision = copy_decision(item, boolq_index)
    assert (decision.passed, decision.reason, decision.seed_id) == (False, COPIES_SEED_QUESTION, seed["seed_id"])


@pytest.mark.parametrize("i", BOOLQ_INDEXES)
def test_another_seeds_question_fails_naming_that_seed(boolq_index, i):
    seed, other = boolq_seeds()[i], boolq_seeds()[i + 3]
    item = dict(seed, question=other["question"])  # generated from `seed`, asks `other`'s question
    decision = copy_decision(item, boolq_index)
    assert (decision.passed, decision.reason, decision.seed_id) == (False, COPIES_SEED_QUESTION, other["seed_id"])


@pytest.mark.parametrize("question", [
    "is the capital of australia sydney",
    "does a bigger passage make a better question",
    "is this the first season of coke studio",  # one word away from a real seed's question
])
def test_a_new_question_passes(boolq_index, question):
    seed = boolq_seeds()[0]
    decision = copy_decision(dict(seed, question=question), boolq_index)
    assert (decision.passed, decision.reason, decision.seed_id) == (True, NEW_QUESTION, None)


# ---- frames: new items are not called copies ------------------------------------------------------
FRAME = "Which is an example of a chemical reaction?"


@pytest.fixture(scope="module")
def arc_index():
    return SeedIndex.build(arc_easy_seeds())


def _frame_seeds() -> list[dict]:
    return [s for s in arc_easy_seeds() if question_key(s["question"]) == question_key(FRAME)]


@pytest.mark.parametrize("options", [
    ["iron rusting", "ice melting", "sugar dissolving", "glass breaking"],
    ["wood burning", "water boiling", "salt mixing with sand", "paper folding"],
    ["milk souring", "a rock splitting", "fog forming", "butter softening"],
])
def test_new_options_for_a_frame_question_pass(arc_index, options):
    own = _frame_seeds()[0]
    item = dict(own, choices=options, answer_text=options[0])
    decision = copy_decision(item, arc_index)
    assert (decision.passed, decision.reason) == (True, NEW_BODY_FOR_FRAME)
    assert decision.frame and decision.seeds_with_question == 3


@pytest.mark.parametrize("k", [0, 1, 2])
def test_a_frame_seed_with_its_own_options_and_another_answer_fails(arc_index, k):
    seeds = _frame_seeds()
    own, copied = seeds[0], seeds[k]  # generated from seeds[0]; copies the options of seeds[k]
    wrong = next(c for c in copied["choices"] if normalize_text(c) != normalize_text(copied["answer_text"]))
    item = dict(own, choices=list(reversed(copied["choices"])), answer_text=wrong)
    decision = copy_decision(item, arc_index)
    assert (decision.passed, decision.reason, decision.seed_id) == (False, SEED_WITH_ANSWER_CHANGED, copied["seed_id"])
    same = copy_decision(dict(item, answer_text=copied["answer_text"]), arc_index)
    assert (same.passed, same.reason) == (False, COPIES_SEED_QUESTION)


# A SocialIQA-shaped task (the mirror has no SocialIQA): one frame question over many contexts.
SOCIAL_CONTEXTS = [
    "Tracy didn't go home that evening and resisted Riley's attacks.",
    "Sydney walked past a homeless woman asking for change but did not have any money to give.",
    "Sasha protected the patients' rights by making new laws regarding consent.",
    "Jordan was in charge of taking the food on the camping trip and left all the food at home.",
    "Kendall opened their mouth to speak and what came out shocked everyone.",
]


@pytest.fixture(scope="module")
def social():
    seeds = [_seed("siqa_like", i, "What will Others want to do next?", c, ["a", "b", "c"], "a")
             for i, c in enumerate(SOCIAL_CONTEXTS)]
    seeds.append(_seed("siqa_like", 99, "How would Sasha feel afterwards?", SOCIAL_CONTEXTS[2], ["x", "y", "z"], "x"))
    return seeds, SeedIndex.build(seeds)


@pytest.mark.parametrize("context", [
    "Robin lent her bicycle to a neighbour who had to get to the hospital quickly.",
    "Casey forgot the keys inside the car while the engine was still running.",
])
def test_frame_question_with_a_new_context_passes(social, context):
    seeds, index = social
    item = dict(seeds[0], context=context, answer_text="b")
    decision = copy_decision(item, index)
    assert (decision.passed, decision.reason, decision.frame) == (True, NEW_BODY_FOR_FRAME, True)


@pytest.mark.parametrize("k", [0, 3])
def test_frame_question_with_a_seeds_context_is_that_seed(social, k):
    seeds, index = social
    item = dict(seeds[1], context=seeds[k]["context"], answer_text="c")
    decision = copy_decision(item, index)
    assert (decision.passed, decision.reason, decision.seed_id) == (False, SEED_WITH_ANSWER_CHANGED, seeds[k]["seed_id"])


def test_a_question_only_one_seed_asks_is_no_frame_even_in_a_frame_task(social):
    seeds, index = social
    item = dict(seeds[-1], context="Someone else entirely did something new today at the market.")
    decision = copy_decision(item, index)
    assert (decision.passed, decision.reason, decision.frame) == (False, COPIES_SEED_QUESTION, False)


# ---- helpers --------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt, a, b, differ", [
    ("boolean", "Yes", "yes", False),
    ("boolean", "yes", "no", True),
    ("numeric", "18.0", "18", False),
    ("numeric", "1,000", "1000", False),
    ("numeric", "18", "19", True),
    ("mcq", "Iron  rusting.", "iron rusting", False),
    ("short_text", "The Bahamas", "bahamas", False),
    ("short_text", "Chicago Bulls", "Boston Celtics", True),
])
def test_answers_differ(fmt, a, b, differ):
    assert answers_differ({"answer_format": fmt, "answer_text": a}, {"answer_format": fmt, "answer_text": b}) is differ


def test_body_overlap_of_real_passages():
    seeds = boolq_seeds()
    passage = normalize_text(seeds[3]["context"])
    assert body_overlap(normalize_text(_shorten(seeds[3]["context"])), passage) == 1.0
    assert body_overlap(passage + " and a sentence more at the end", passage) == 1.0
    assert body_overlap(normalize_text(seeds[4]["context"]), passage) < 0.2
    assert body_overlap("", passage) == 0.0


def test_copy_decisions_use_the_seeds_of_the_items_own_task():
    boolq = seed_records.boolq(3)
    arc = seed_records.arc_easy(3)
    items = [dict(arc[0], seed_id="gen-1", task="boolq", question=arc[0]["question"]),  # arc's question in boolq
             dict(boolq[1], seed_id=boolq[1]["seed_id"], answer_text=_flip(boolq[1]["answer_text"]))]
    first, second = copy_decisions(items, boolq + arc)
    assert (first.passed, first.reason) == (True, NEW_QUESTION)
    assert (second.passed, second.reason, second.seed_id) == (False, SEED_WITH_ANSWER_CHANGED, boolq[1]["seed_id"])
