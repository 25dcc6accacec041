"""udfs/self_reference.py: a trivial item about itself fails validation as `self_reference` (issue 29),
in every shape and language of the rule; real benchmark records never do (false-positive rate on
every record of the mirror, counted)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import pytest

from tests.unit.seed_records import MIRROR
from udfs.self_reference import (
    NOT_SELF_REFERENTIAL,
    SELF_REFERENCE,
    VOCABULARY,
    answer_from_question,
    is_self_referential,
    points_at_itself,
    self_reference_decision,
)

# (language, question, context, answer, where the rule fires) — written for this test, not the
# simulator's strings.
SELF_REFERENTIAL = [
    ("en", "What is the answer to this question?", None, "42", "question"),
    ("en", "Which option is listed first?", None, "copper", "question"),
    ("en", "Is this statement a question?", None, "no", "question"),
    ("en", "How many words does this sentence have?", None, "5", "question"),
    ("en", "What is the last letter of this question?", None, "n", "question"),
    ("en", "Does this question end with a question mark?", "A short note.", "yes", "question"),
    ("en", "Is the first option the correct answer?", None, "yes", "question"),
    ("en", "Which choice is given second?", None, "wood", "question"),
    ("en", "How many letters are in this passage?", "The passage is short.", "21", "question"),
    ("en", "Is this item about itself?", None, "yes", "question"),
    ("en", "Who wrote the novel Dune?", "This paragraph is the paragraph of this item.", "Frank Herbert", "passage"),
    ("en", "Write a program that prints this question.", None,
     'print("Write a program that prints this question.")', "answer_from_question"),
    ("de", "Was ist die Antwort auf diese Frage?", None, "42", "question"),
    ("de", "Wie viele Wörter hat dieser Satz?", None, "5", "question"),
    ("de", "Welche Option ist die erste?", None, "Kupfer", "question"),
    ("fr", "Quelle est la réponse à cette question ?", None, "42", "question"),
    ("fr", "Combien de mots contient cette phrase ?", None, "5", "question"),
    ("fr", "Quelle option est listée en premier ?", None, "cuivre", "question"),
    ("es", "¿Cuál es la primera palabra de esta pregunta?", None, "Cuál", "question"),
    ("es", "¿Esta afirmación es una pregunta?", None, "no", "question"),
    ("it", "Qual è la risposta a questa domanda?", None, "42", "question"),
    ("it", "Quante parole ha questa frase?", None, "4", "question"),
    ("pt", "Qual é a resposta desta pergunta?", None, "42", "question"),
    ("pt", "Quantas letras tem esta frase?", None, "20", "question"),
]

# Frames and real questions that look close: their content is in the passage, the options or the
# world, so they pass.
ABOUT_CONTENT = [
    ("en", "Which is true?", "Mara sold her bike to pay rent.", "She needed money."),
    ("en", "Which of the following statements is correct?", None, "Water boils at 100 C at sea level."),
    ("en", "Which one of the statements below is false?", None, "The moon is a star."),
    ("en", "In this passage, which statement is true?", "Kai lent Robin a pen.", "Robin had no pen."),
    ("en", "Does a word have to have a vowel?", "Words such as 'rhythm' have none.", "no"),
    ("en", "What is the first element of the periodic table?", None, "hydrogen"),
    ("en", "What will Others want to do next?", "Jordan threw a party for the team.", "celebrate"),
    ("en", "How many words are in the sentence 'the cat sat on the mat'?", None, "6"),
    ("en", "In this question, assume the train leaves at noon. When does it arrive?", None, "3 pm"),
    ("en", "Which option is the best answer?", None, "copper"),
    ("de", "Welche Aussage ist richtig?", "Der Rhein fließt in die Nordsee.", "Der Rhein mündet in die Nordsee."),
    ("fr", "Quelle affirmation est vraie ?", "Paris est la capitale.", "Paris est la capitale."),
    ("es", "¿Cuál de las siguientes opciones es correcta?", None, "El agua hierve a 100 C."),
    ("it", "Quale di queste affermazioni è vera?", "Roma è in Italia.", "Roma è in Italia."),
    ("pt", "Qual é a capital do Brasil?", None, "Brasília"),
]


@pytest.mark.parametrize("lang,question,context,answer,where", SELF_REFERENTIAL,
                         ids=[f"{r[0]}-{i}" for i, r in enumerate(SELF_REFERENTIAL)])
def test_trivial_items_about_themselves_fail(lang, question, context, answer, where):
    assert lang in VOCABULARY
    decision = self_reference_decision({"question": question, "context": context, "answer_text": answer})
    assert (decision.passed, decision.reason, decision.where) == (False, SELF_REFERENCE, where)


@pytest.mark.parametrize("lang,question,context,answer", ABOUT_CONTENT,
                         ids=[f"{r[0]}-{i}" for i, r in enumerate(ABOUT_CONTENT)])
def test_frames_and_real_questions_pass(lang, question, context, answer):
    decision = self_reference_decision({"question": question, "context": context, "answer_text": answer})
    assert (decision.passed, decision.reason, decision.where) == (True, NOT_SELF_REFERENTIAL, None)


def test_a_content_word_makes_any_shape_about_content():
    assert is_self_referential("Which option is listed first?")
    assert not is_self_referential("Which planet is listed first?")
    assert is_self_referential("What is the first word of this sentence?")
    assert not is_self_referential("What is the first word of this sentence about rivers?")


def test_languages_are_read_one_at_a_time():
    """A word that is a function word in one language is content in another: German 'war' (was)
    does not make the English 'war' empty."""
    assert not is_self_referential("Was this war the first?")
    assert not is_self_referential("Is this question a die?")  # 'die' is a German article, English content
    assert is_self_referential("Welche Frage war die erste?")


@pytest.mark.parametrize("question,answer,expected", [
    ("Write a program that prints this question.", 'print("Write a program that prints this question.")', True),
    ("Copy this sentence exactly.", "Copy this sentence exactly.", True),
    ("Write a program that prints the word hello.", 'print("Write a program that prints the word hello.")', False),
    ("This question refers to the following information. Who led the march?", "Gandhi", False),
    ("Copy this sentence exactly.", "Copy", False),
])
def test_answer_from_question_needs_the_question_to_point_at_itself(question, answer, expected):
    assert answer_from_question(question, answer) is expected


def test_points_at_itself_reads_the_deixis_right_before_the_item_word():
    assert points_at_itself("Is this statement true?")
    assert points_at_itself("¿Esta pregunta tiene respuesta?")
    assert not points_at_itself("In this passage, which statement is true?")


def test_the_simulators_self_reference_fault_is_caught():
    """The simulator's planted shapes (docs/prompt-contract.md) — one example of the kind."""
    from simulator.contract import _self_reference

    seed = {"question": "Which gas do plants absorb?", "context": "Plants take in air.",
            "choices": ["oxygen", "carbon dioxide"], "answer_text": "carbon dioxide"}
    for fmt in ("boolean", "numeric", "mcq", "label", "code", "short_text", "freeform"):
        item = _self_reference(seed, fmt, ["entailment", "contradiction"] if fmt == "label" else None)
        decision = self_reference_decision({"question": item["question"], "context": item["context"],
                                            "answer_text": item["answer"]})
        assert not decision.passed, (fmt, item)


# ---- false positives on real records ------------------------------------------------------------------
def _jsonl(relative: str) -> list[dict]:
    with (MIRROR / relative).open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _arc(relative: str) -> list[dict]:
    return [{"question": r["question"], "answer_text": r["choices"]["text"][r["choices"]["label"].index(r["answerKey"])]}
            for r in _jsonl(relative)]


@lru_cache(maxsize=None)
def real_records() -> dict[str, list[dict]]:
    mmlu = []
    for path in sorted((MIRROR / "cais" / "mmlu").glob("*/*.jsonl")):
        mmlu += [{"question": r["question"], "answer_text": r["choices"][r["answer"]]}
                 for r in _jsonl(str(path.relative_to(MIRROR)))]
    return {
        "arc_easy": _arc("allenai/ai2_arc/ARC-Easy/train.jsonl"),
        "arc_challenge": _arc("allenai/ai2_arc/ARC-Challenge/train.jsonl"),
        "boolq": [{"question": r["question"], "context": r["passage"], "answer_text": ["no", "yes"][r["label"]]}
                  for r in _jsonl("aps/super_glue/boolq/train.jsonl")],
        "gsm8k": [{"question": r["question"], "answer_text": r["answer"].split("####")[-1].strip()}
                  for r in _jsonl("openai/gsm8k/main/train.jsonl")],
        "winogrande": [{"question": r["sentence"], "answer_text": r["option" + r["answer"]]}
                       for r in _jsonl("allenai/winogrande/winogrande_l/train.jsonl")],
        "webqs": [{"question": r["question"], "answer_text": (r.get("answers") or [""])[0]}
                  for r in _jsonl("stanfordnlp/web_questions/default/train.jsonl")],
        "mmlu": mmlu,
        "sciq": [{"question": r["question"], "context": r["support"], "answer_text": r["correct_answer"]}
                 for r in _jsonl("allenai/sciq/default/validation.jsonl")],
        "nq_open": [{"question": r["question"], "answer_text": r["answer"][0]}
                    for r in _jsonl("google-research-datasets/nq_open/default/validation.jsonl")],
        "piqa": [{"question": r["goal"], "answer_text": r["sol1"] if r["label"] == 0 else r["sol2"]}
                 for r in _jsonl("baber/piqa/default/validation.jsonl")],
    }


@pytest.mark.parametrize("task", ["arc_easy", "arc_challenge", "boolq", "gsm8k", "winogrande", "webqs", "mmlu",
                                  "sciq", "nq_open", "piqa"])
def test_no_real_record_is_flagged(task):
    records = real_records()[task]
    assert len(records) > 900
    flagged = [(r["question"][:80], self_reference_decision(r).where) for r in records
               if not self_reference_decision(r).passed]
    assert flagged == [], f"{len(flagged)}/{len(records)} real {task} records flagged: {flagged[:5]}"


def test_the_mirror_is_what_the_docstring_counts():
    assert sum(len(v) for v in real_records().values()) == 56588
    assert isinstance(MIRROR, Path)
