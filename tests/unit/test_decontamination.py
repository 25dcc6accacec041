"""The pure half of the contamination filter (udfs/decontamination.py), without Spark.

What each rule keys on, on both sides: formatting-only differences give the same keys; the
whole-text key covers items shorter than n; a one-word edit of a short question breaks every n-gram
but keeps the edit keys and most character shingles; the batched hashing and signatures equal the
one-text versions and datasketch; keys are the same in another process.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from udfs.decontamination import (
    CONTEXT,
    EDIT_DELETED,
    EDIT_SUBSTITUTED,
    EDIT_WHOLE,
    KEY_COLUMNS,
    QA,
    QUERY,
    STIMULUS,
    DecontaminationParams,
    accepted_answers,
    band_keys,
    checked_texts,
    edit_keys,
    featurize_frame,
    identity_options,
    ngram_batch,
    text_key,
    truncate,
    within_one_word,
    word_ngram_hashes,
)
from tests.unit.seed_records import MIRROR
from udfs.minhash import (
    jaccard,
    shingle_hashes,
    signature,
)

REPO = Path(__file__).resolve().parents[2]
PARAMS = DecontaminationParams()

ARC = {"question": "Which piece of safety equipment is used to keep mold spores from entering the respiratory system?",
       "choices": ["safety goggles", "breathing mask", "rubber gloves", "lead apron"],
       "answer_text": "breathing mask", "answer_format": "mcq"}


def edit_match(a: str, b: str) -> bool:
    """Whether two texts' edit keys match under the kind pairs the Spark join accepts."""
    kinds: dict[int, set[int]] = {}
    for k in edit_keys(a).view(np.uint64).tolist():
        kinds.setdefault(k >> 2, set()).add(k & 3)
    accepted = {(EDIT_SUBSTITUTED, EDIT_SUBSTITUTED), (EDIT_DELETED, EDIT_WHOLE), (EDIT_WHOLE, EDIT_DELETED)}
    return any((ka, k & 3) in accepted for k in edit_keys(b).view(np.uint64).tolist() for ka in kinds.get(k >> 2, ()))


# ---- the texts that are checked ---------------------------------------------------------------

@pytest.mark.parametrize("variant", [
    dict(question="WHICH piece of safety-equipment is used to keep mold spores from entering the respiratory system",
         choices=["Lead apron", "rubber gloves", "breathing  mask", "safety goggles"]),
    dict(question="  which piece of safety equipment is used to keep mold spores from entering the respiratory system ??",
         choices=("safety goggles.", "breathing mask.", "rubber gloves.", "lead apron.")),
    dict(question="Which piece of safety equipment is used to keep mold spores from entering the respiratory system?",
         choices=np.array(["ＳＡＦＥＴＹ goggles", "breathing mask", "rubber gloves", "lead apron"])),
])
def test_formatting_only_differences_give_the_same_texts_and_keys(variant):
    base = checked_texts(**ARC)
    other = checked_texts(**{**ARC, **variant})
    assert other == base
    assert text_key(other[STIMULUS]) == text_key(base[STIMULUS])
    assert np.array_equal(word_ngram_hashes(other[QA], 13), word_ngram_hashes(base[QA], 13))


def test_numbers_written_differently_are_the_same_text():
    a = checked_texts("A farmer sells 1,000 eggs at $2.50 each.", answer_text="2500", answer_format="numeric")
    b = checked_texts("A farmer sells 1000 eggs at $2.5 each", answer_text="2,500.00", answer_format="numeric")
    assert a == b


@pytest.mark.parametrize("fmt, choices, expected", [
    ("mcq", ["b", "A", "a", ""], ["a", "b"]),
    ("boolean", ["no", "yes"], []),
    ("label", ["entailment", "neutral", "contradiction"], []),
    ("short_text", ["Bobby Scott", "Bob Russell"], []),
    ("numeric", ["18"], []),
    (None, ["yes", "no"], []),
    (None, ["red", "blue"], ["blue", "red"]),
    ("mcq", None, []),
])
def test_identity_options(fmt, choices, expected):
    assert identity_options(choices, fmt) == expected


def test_views():
    texts = checked_texts(**ARC)
    assert texts[STIMULUS].endswith("breathing mask lead apron rubber gloves safety goggles")
    assert texts[QA] == texts[STIMULUS]  # the answer is one of the options
    boolq = checked_texts("is a chicken and rooster the same thing", context="A rooster is a male chicken.",
                          choices=["no", "yes"], answer_text="yes", answer_format="boolean",
                          decontamination_text="A rooster is a male chicken.")
    assert boolq[STIMULUS] == "is a chicken and rooster the same thing"
    assert boolq[QA] == "is a chicken and rooster the same thing yes"
    assert boolq[CONTEXT] == "a rooster is a male chicken"
    assert QUERY not in boolq  # the same text as the passage
    arc_query = checked_texts(ARC["question"], decontamination_text=f"Question: {ARC['question']}\nAnswer:")
    assert arc_query[QUERY].startswith("question which piece")
    assert checked_texts("", choices=None, answer_text="x") == {}
    assert checked_texts(float("nan"), context=None, choices=None, answer_text=None) == {}


def test_accepted_answers():
    assert accepted_answers("Bobby Scott", ["Bobby Scott", "Bob Russell"], "short_text") == ["bob russell", "bobby scott"]
    assert accepted_answers("breathing mask", ARC["choices"], "mcq") == ["breathing mask"]
    assert accepted_answers(None) == []


# ---- n-grams, whole-text keys -----------------------------------------------------------------

def test_ngram_hashes_are_positional_and_shared_across_texts():
    text = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen"
    hashes = word_ngram_hashes(text, 13)
    assert len(hashes) == 2
    assert hashes[1] == word_ngram_hashes(text.split(" ", 1)[1], 13)[0]
    assert len(set(word_ngram_hashes("a " * 20, 13).tolist())) == 1
    assert word_ngram_hashes("too short to have a thirteen gram", 13).size == 0


def test_ngram_batch_equals_one_text_at_a_time():
    rng = random.Random(3)
    vocab = ["w%d" % i for i in range(30)]
    texts = [" ".join(rng.choice(vocab) for _ in range(rng.randint(0, 40))) for _ in range(60)]
    offsets, hashes = ngram_batch(texts, 9)
    for i, t in enumerate(texts):
        assert np.array_equal(hashes[offsets[i]:offsets[i + 1]], word_ngram_hashes(t, 9))


CROSS_PROCESS = """
import json, sys
from udfs.decontamination import DecontaminationParams, band_keys, edit_keys, text_key, word_ngram_hashes
from udfs.minhash import shingle_hashes, signature
t, p = sys.argv[1], DecontaminationParams()
sh = shingle_hashes(t, "char", p.shingle_size)
print(json.dumps({"ngrams": word_ngram_hashes(t, 8).tolist(), "key": text_key(t), "edits": edit_keys(t).tolist(),
                  "shingles": sh.tolist(), "bands": band_keys(signature(sh, p.minhash_params), *p.bands_rows).tolist()}))
"""


def test_keys_are_stable_across_processes():
    text = "is a chicken and rooster the same thing as a hen in the farmyard of old mcdonald"
    out = [subprocess.run([sys.executable, "-c", CROSS_PROCESS, text], capture_output=True, text=True, check=True,
                          cwd=REPO, env={"PYTHONHASHSEED": seed, "PATH": ""}).stdout for seed in ("1", "12345")]
    assert out[0] == out[1]
    keys = json.loads(out[0])
    assert keys["key"] == text_key(text) and keys["edits"] == edit_keys(text).tolist()
    assert len(keys["bands"]) == PARAMS.bands_rows[0] and len(keys["ngrams"]) == len(text.split()) - 7


# ---- the short-item holes ---------------------------------------------------------------------

SHORT_QUESTIONS = [
    "who wrote he ain't heavy he's my brother lyrics",
    "is a chicken and rooster the same thing",
    "What is an individual living creature called?",
    "when was the last time anyone was on the moon",
    "Smooth muscle cells contain",
    "where did the greek alphabet come from?",
]


@pytest.mark.parametrize("question", SHORT_QUESTIONS)
def test_short_items_have_no_ngram_but_a_whole_text_key(question):
    texts = checked_texts(question)
    assert word_ngram_hashes(texts[QA], 13).size == 0  # the Janitor's hole
    assert text_key(texts[STIMULUS]) == text_key(checked_texts(question.upper() + " ")[STIMULUS])


@pytest.mark.parametrize("question", SHORT_QUESTIONS)
@pytest.mark.parametrize("position", [0, 2, -1])
def test_one_word_edit_of_a_short_question_keeps_the_edit_keys(question, position):
    original = checked_texts(question)[STIMULUS]
    words = original.split()
    words[position] = "zebra"
    edited = " ".join(words)
    assert edit_match(original, edited)
    assert not set(word_ngram_hashes(edited, 8).tolist()) & set(word_ngram_hashes(original, 8).tolist()) or len(words) > 8
    if len(original) >= 40:  # long enough for character shingles to carry most of the text
        assert jaccard(shingle_hashes(original, "char", 5), shingle_hashes(edited, "char", 5)) >= 0.5


def test_edit_keys_agree_with_the_plain_definition():
    rng = random.Random(0)
    vocab = list("abcdefgh")
    for _ in range(20000):
        a = " ".join(rng.choice(vocab) for _ in range(rng.randint(0, 6)))
        words = a.split()
        if words and rng.random() < 0.6:
            op, i = rng.choice("sid"), rng.randrange(len(words))
            if op == "s":
                words[i] = rng.choice(vocab)
            elif op == "i":
                words.insert(i, rng.choice(vocab))
            else:
                del words[i]
            b = " ".join(words)
        else:
            b = " ".join(rng.choice(vocab) for _ in range(rng.randint(0, 6)))
        assert edit_match(a, b) == within_one_word(a, b), (a, b)


def test_a_one_word_edit_keeps_an_ngram_exactly_when_the_text_has_2n_words_or_more():
    n = PARAMS.ngram_n
    for length in range(n, 2 * n + 3):
        words = [f"w{i}" for i in range(length)]
        original = set(word_ngram_hashes(" ".join(words), n).tolist())
        survives = []
        for p in range(length):
            edited = list(words)
            edited[p] = "other"
            survives.append(bool(original & set(word_ngram_hashes(" ".join(edited), n).tolist())))
        assert all(survives) == (length > PARAMS.near_dup_max_words), length


# ---- shingles, signatures, bands --------------------------------------------------------------

def test_bands_follow_the_signature():
    a = signature(shingle_hashes("is a chicken and rooster the same thing", "char", 5), PARAMS.minhash_params)
    b = a.copy()
    b[0] += 1  # differs in the first band only
    ka, kb = band_keys(a, 42, 3), band_keys(b, 42, 3)
    assert ka[0] != kb[0] and np.array_equal(ka[1:], kb[1:])
    assert np.array_equal(band_keys(np.stack([a, b]), 42, 3), np.stack([ka, kb]))


def test_params_tag_names_what_decides_the_index():
    assert DecontaminationParams().tag == DecontaminationParams().tag
    assert DecontaminationParams(ngram_n=8).tag != DecontaminationParams().tag
    assert DecontaminationParams(boilerplate_min_items=3).tag != DecontaminationParams().tag
    with pytest.raises(ValueError):
        DecontaminationParams(near_dup_threshold=0)


# ---- a batch of items -------------------------------------------------------------------------

def test_featurize_frame_item_side():
    frame = pd.DataFrame([
        {"id": "g1", **ARC},
        {"id": "g2", "question": "is a chicken and rooster the same thing", "context": "A rooster is a male chicken.",
         "choices": ["yes", "no"], "answer_text": "yes", "answer_format": "boolean"},
        {"id": "g3", "question": "", "context": None, "choices": None, "answer_text": "x", "answer_format": None},
        {"id": "g4", "question": " ".join(f"word{i}" for i in range(40)), "context": None, "choices": None,
         "answer_text": "7", "answer_format": "numeric"},
    ])
    frame.loc[0, "context"] = None
    out = featurize_frame(frame, PARAMS, heldout=False).set_index("id")
    assert list(out.reset_index().columns) == list(KEY_COLUMNS)
    assert list(out.index) == ["g1", "g2", "g4"]  # g3 has no stimulus
    assert out.at["g1", "n_ngrams"] == len(out.at["g1", "ngrams"]) == len(out.at["g1", "qa"].split()) - 12
    assert out.at["g1", "context_shingles"] is None and len(out.at["g1", "bands"]) == PARAMS.bands_rows[0]
    assert out.at["g2", "context_shingles"] is not None and out.at["g2", "answers"] == ["yes"]
    assert out.at["g4", "bands"] is None and out.at["g4", "edit_keys"] is None  # 40 words: n-grams cover edits
    assert out.at["g4", "n_ngrams"] == 41 - 13 + 1


def test_featurize_frame_heldout_side_indexes_passage_and_query_and_keeps_columns():
    passage = " ".join(f"p{i}" for i in range(30))
    frame = pd.DataFrame([{"id": "h1", "task": "boolq", "question": "is it", "context": passage, "choices": ["no", "yes"],
                           "answer_text": "no", "answer_format": "boolean",
                           "decontamination_text": "Question: is it " + passage}])
    out = featurize_frame(frame, PARAMS, heldout=True, keep=("task",))
    row = out.iloc[0]
    assert row["task"] == "boolq"
    expected = set(word_ngram_hashes(checked_texts(passage)[STIMULUS], 13).tolist())
    expected |= set(word_ngram_hashes(checked_texts("Question: is it " + passage)[STIMULUS], 13).tolist())
    assert set(row["ngrams"].tolist()) == expected and row["n_ngrams"] == len(expected)


def test_boilerplate_phrases_hash_alike_in_every_item():
    """The index counts held-out items per n-gram hash: a phrase shared by many items must give one
    hash wherever it appears (then it is marked boilerplate and skipped)."""
    stem = "which of the following statements about the process described above is most correct"
    frame = pd.DataFrame([{"id": f"h{i}", "question": f"{stem} topic{i}", "context": None,
                           "choices": [f"a{i}", f"b{i}"], "answer_text": f"a{i}", "answer_format": "mcq"} for i in range(5)])
    out = featurize_frame(frame, PARAMS, heldout=True)
    shared = set.intersection(*(set(g.tolist()) for g in out["ngrams"]))
    assert shared == set(word_ngram_hashes(stem, 13).tolist()) and len(shared) == 1


def test_truncate():
    assert truncate("abc", 5) == "abc"
    assert truncate("x" * 300) == "x" * 199 + "…" and len(truncate("x" * 300)) == 200


# ---- the in-memory matcher (HeldoutIndex), on real held-out records ------------------------------

def _index_of(heldout: pd.DataFrame, params: DecontaminationParams = PARAMS):
    """A HeldoutIndex built the way `ensure_heldout_index` lays the keys out (no boilerplate: the
    test sets are tiny), from `featurize_frame(..., heldout=True)`."""
    import pyarrow as pa

    from udfs.decontamination import HeldoutIndex

    f = featurize_frame(heldout.rename(columns={"heldout_id": "id"}), params, heldout=True,
                        keep=("task", "split")).sort_values("id").reset_index(drop=True)
    edit_kind = {EDIT_SUBSTITUTED: "edit_substituted", EDIT_DELETED: "edit_deleted", EDIT_WHOLE: "edit_whole"}
    kinds, keys, rows = [], [], []
    for row, r in f.iterrows():
        def add(kind, values):
            for v in values:
                kinds.append(kind), keys.append(int(v)), rows.append(row)
        add("ngram", r["ngrams"])
        add("stimulus", [r["stimulus_key"]])
        if r["bands"] is not None:
            add("band", r["bands"])
        for raw in (r["edit_keys"] if r["edit_keys"] is not None else []):
            kinds.append(edit_kind[int(raw) & 3]), keys.append(int(raw) >> 2), rows.append(row)
    key_table = pa.table({"kind": kinds, "key": pa.array(keys, pa.int64()), "row": pa.array(rows, pa.int32())})
    items = pa.Table.from_pandas(f.rename(columns={"id": "heldout_id"})[
        ["heldout_id", "task", "split", "stimulus", "answers", "shingles", "context_shingles"]], preserve_index=False)
    return HeldoutIndex.from_arrow(key_table, items, params)


def _match(index, items: pd.DataFrame) -> dict[str, dict]:
    batch = featurize_frame(items.rename(columns={"item_id": "id"}), index.params, heldout=False)
    import pyarrow as pa

    got = index.match_batch(pa.RecordBatch.from_pandas(batch, preserve_index=False)).to_pylist()
    return {m["item_id"]: m for m in got}


def _jsonl(relative: str, n: int) -> list[dict]:
    from itertools import islice

    with (MIRROR / relative).open(encoding="utf-8") as handle:
        return [json.loads(line) for line in islice(handle, n)]


def _real_heldout(n: int = 60) -> pd.DataFrame:
    """ARC-Easy test and GSM8K test records from the mirror, in heldout's columns."""
    rows = []
    for i, r in enumerate(_jsonl("allenai/ai2_arc/ARC-Easy/test.jsonl", n)):
        labels = r["choices"]["label"]
        rows.append({"heldout_id": f"arc:{i:04d}", "task": "arc_easy", "split": "test", "question": r["question"],
                     "context": None, "choices": r["choices"]["text"], "answer_format": "mcq",
                     "answer_text": r["choices"]["text"][labels.index(r["answerKey"])], "decontamination_text": None})
    for i, r in enumerate(_jsonl("openai/gsm8k/main/test.jsonl", n)):
        rows.append({"heldout_id": f"gsm:{i:04d}", "task": "gsm8k", "split": "test", "question": r["question"],
                     "context": None, "choices": None, "answer_format": "numeric",
                     "answer_text": r["answer"].split("####")[-1].strip(), "decontamination_text": None})
    return pd.DataFrame(rows)


def _item(row: pd.Series, item_id: str, **changes) -> dict:
    item = {"item_id": item_id, **{c: row[c] for c in ("question", "context", "choices", "answer_text", "answer_format")}}
    return {**item, **changes}


def _replace_word(text: str, position: int, word: str = "zebra") -> str:
    words = text.split(" ")
    words[position] = word
    return " ".join(words)


def test_heldout_index_finds_copies_edits_and_short_items_on_real_records():
    heldout = _real_heldout()
    index = _index_of(heldout)
    arc_short = heldout[(heldout["task"] == "arc_easy")
                        & (heldout["question"].str.split().str.len() <= 12)].iloc[0]
    gsm = heldout[(heldout["task"] == "gsm8k") & (heldout["question"].str.split().str.len() > 40)].iloc[0]
    arc = heldout[heldout["task"] == "arc_easy"].iloc[5]
    clean = _jsonl("openai/gsm8k/main/train.jsonl", 3)
    items = pd.DataFrame([
        _item(arc, "verbatim_arc", choices=list(reversed(arc["choices"]))),    # shuffled options: same item
        _item(gsm, "verbatim_gsm", question=gsm["question"].upper()),          # formatting only
        _item(gsm, "edited_gsm", question=_replace_word(gsm["question"], 7)),  # long: an n-gram survives
        _item(arc_short, "edited_short", question=_replace_word(arc_short["question"], 1)),
        *({"item_id": f"clean{i}", "question": r["question"], "context": None, "choices": None,
           "answer_text": r["answer"].split("####")[-1].strip(), "answer_format": "numeric"}
          for i, r in enumerate(clean)),
    ])
    found = _match(index, items)
    assert found["verbatim_arc"]["rule"] == "whole_text" and found["verbatim_arc"]["heldout_id"] == arc["heldout_id"]
    assert found["verbatim_arc"]["score"] == 1.0
    assert found["verbatim_gsm"]["heldout_id"] == gsm["heldout_id"] and found["verbatim_gsm"]["score"] == 1.0
    assert found["edited_gsm"]["rule"] == "ngram" and found["edited_gsm"]["heldout_id"] == gsm["heldout_id"]
    assert 0 < found["edited_gsm"]["score"] < 1
    # the matched words are the item's first shared n-gram, as they appear in its normalized text
    assert len(found["edited_gsm"]["matched"].split()) == PARAMS.ngram_n
    assert found["edited_short"]["rule"] == "near_dup" and found["edited_short"]["heldout_id"] == arc_short["heldout_id"]
    assert not any(k.startswith("clean") for k in found)


def test_heldout_index_ties_go_to_the_smallest_heldout_id_and_batches_are_independent():
    heldout = _real_heldout(20)
    twin = heldout.iloc[[2]].assign(heldout_id="arc:zzzz")   # the same item twice in held-out
    first = heldout.iloc[[2]].assign(heldout_id="arc:0000a")
    index = _index_of(pd.concat([heldout, twin, first], ignore_index=True))
    items = pd.DataFrame([_item(r, f"i{k}") for k, (_, r) in enumerate(heldout.iterrows())])
    together = _match(index, items)
    assert together["i2"]["heldout_id"] == "arc:0000a"
    one_by_one = {}
    for k in range(len(items)):
        one_by_one.update(_match(index, items.iloc[[k]]))
    assert together == one_by_one
    assert set(together) == set(items["item_id"])  # every held-out item matches itself


def test_heldout_index_answer_must_survive_a_near_copy():
    """Templated questions that differ in one word and in their answer are not copies."""
    heldout = _real_heldout(30)
    index = _index_of(heldout)
    short = heldout[(heldout["task"] == "arc_easy") & (heldout["question"].str.split().str.len() <= 12)].iloc[0]
    wrong = [c for c in short["choices"] if c != short["answer_text"]][0]
    items = pd.DataFrame([_item(short, "same_answer", question=_replace_word(short["question"], 1)),
                          _item(short, "other_answer", question=_replace_word(short["question"], 1),
                                choices=None, answer_format="short_text", answer_text=wrong)])
    found = _match(index, items)
    assert "same_answer" in found and "other_answer" not in found


def _reference_matches(index, features: pd.DataFrame) -> dict[str, tuple]:
    """The matching rules pair by pair in plain Python (sets, no arrays): every (item, held-out row)
    of the index, each rule decided on its own, the best per item by (score, rule order, smallest
    heldout_id). What `HeldoutIndex.match_batch` computes for the whole batch at once."""
    from udfs.decontamination import INDEX_KINDS, ITEM_EDIT_KINDS

    by_row: dict[tuple[str, int], set] = {}
    for code, (keys, rows) in index.keys.items():
        for k, r in zip(keys.tolist(), rows.tolist()):
            by_row.setdefault((INDEX_KINDS[code], r), set()).add(k)

    def csr_set(csr, r):
        off, val, ok = csr
        return set(val[off[r]:off[r + 1]].tolist()) if ok[r] else None

    t = index.params.near_dup_threshold
    best = {}
    for f in features.itertuples():
        ngrams = set(int(v) for v in f.ngrams)
        bands = set() if f.bands is None else {int(v) for v in f.bands}
        edits: dict[str, set] = {}
        for raw in ([] if f.edit_keys is None else f.edit_keys):
            edits.setdefault(ITEM_EDIT_KINDS[int(raw) & 3], set()).add(int(raw) >> 2)
        shingles = None if f.shingles is None else set(int(v) for v in f.shingles)
        context = None if f.context_shingles is None else set(int(v) for v in f.context_shingles)
        options = []
        for r in range(len(index.ids)):
            if f.stimulus_key in by_row.get(("stimulus", r), ()) and f.stimulus == index.stimuli[r]:
                held_context = csr_set(index.context_shingles, r)  # over a passage: answer or passage agree
                if held_context is None or index.answers[r].intersection(f.answers) or (
                        context is not None and len(context & held_context) / len(context | held_context) >= t):
                    options.append((1.0, 0, index.ids[r], "whole_text"))
            shared = len(ngrams & by_row.get(("ngram", r), set()))
            if shared:
                options.append((shared / f.n_ngrams, -1, index.ids[r], "ngram"))
            by_edit = any(keys & by_row.get((kind, r), set()) for kind, keys in edits.items())
            by_band = bool(bands & by_row.get(("band", r), set()))
            held = csr_set(index.shingles, r)
            if (by_edit or by_band) and shingles is not None and held is not None and \
                    index.answers[r].intersection(f.answers):
                held_context = csr_set(index.context_shingles, r)
                jaccard = len(shingles & held) / len(shingles | held)
                context_ok = held_context is None or (
                    context is not None and len(context & held_context) / len(context | held_context) >= t)
                if context_ok and (by_edit or jaccard >= t):
                    options.append((jaccard, -2, index.ids[r], "near_dup"))
        if options:
            score, _, heldout_id, rule = min(options, key=lambda o: (-o[0], -o[1], o[2]))
            best[f.id] = (rule, heldout_id, score)
    return best


def _real_items(heldout: pd.DataFrame) -> pd.DataFrame:
    """Copies, one-word edits (short and long), answer changes and clean GSM8K training items."""
    rows = []
    for k, (_, r) in enumerate(heldout.iterrows()):
        n = len(r["question"].split(" "))
        if k % 3 == 0:
            rows.append(_item(r, f"copy{k}"))
        if k % 3 == 1:
            rows.append(_item(r, f"edit{k}", question=_replace_word(r["question"], k % n)))
        if k % 5 == 2:
            rows.append(_item(r, f"other_answer{k}", question=_replace_word(r["question"], k % n),
                              choices=None, answer_format="short_text", answer_text="zebra"))
    for i, r in enumerate(_jsonl("openai/gsm8k/main/train.jsonl", 40)):
        rows.append({"item_id": f"clean{i}", "question": r["question"], "context": None, "choices": None,
                     "answer_text": r["answer"].split("####")[-1].strip(), "answer_format": "numeric"})
    return pd.DataFrame(rows)


def test_match_batch_equals_the_pair_by_pair_rules_on_real_records():
    import pyarrow as pa

    heldout = _real_heldout(40)
    index = _index_of(heldout)
    items = _real_items(heldout)
    features = featurize_frame(items.rename(columns={"item_id": "id"}), index.params, heldout=False)
    got = index.match_batch(pa.RecordBatch.from_pandas(features, preserve_index=False)).to_pylist()
    expected = _reference_matches(index, features)
    assert {m["item_id"]: (m["rule"], m["heldout_id"], m["score"]) for m in got} == expected
    assert {rule for rule, _, _ in expected.values()} == {"whole_text", "ngram", "near_dup"}
    assert not any(k.startswith("other_answer") and v[0] == "near_dup" for k, v in expected.items())


def test_near_dup_answers_skip_only_items_that_cannot_match_near():
    """Items whose answer no held-out item accepts get no near-dup keys, and the matches stay the same."""
    import pyarrow as pa

    from udfs.decontamination import featurize_batch

    heldout = _real_heldout(40)
    index = _index_of(heldout)
    items = _real_items(heldout).rename(columns={"item_id": "id"})
    items["choices"] = [None if c is None else [str(x) for x in c] for c in items["choices"]]
    batch = pa.RecordBatch.from_pandas(items, preserve_index=False)
    full = featurize_batch(batch, index.params, heldout=False)
    pruned = featurize_batch(batch, index.params, heldout=False, near_dup_answers=index.near_dup_answers)
    assert index.match_batch(full).to_pylist() == index.match_batch(pruned).to_pylist()
    answers, short = full.column("answers").to_pylist(), full.column("shingles").is_valid().to_pylist()
    kept = pruned.column("shingles").is_valid().to_pylist()
    dropped = [i for i in range(full.num_rows) if short[i] and not kept[i]]
    assert dropped and all(not set(answers[i]) & index.near_dup_answers for i in dropped)
    assert all(kept[i] == (short[i] and bool(set(answers[i]) & index.near_dup_answers)) for i in range(full.num_rows))
    assert index.near_dup_answers < set(index.answer_numbers)  # GSM8K's long items have no near-dup answers


def _real_boolq(n: int) -> pd.DataFrame:
    """BoolQ validation records (question + passage, yes/no answer) in heldout's columns."""
    return pd.DataFrame([
        {"heldout_id": f"boolq:{i:04d}", "task": "boolq", "split": "validation", "question": r["question"],
         "context": r["passage"], "choices": ["no", "yes"], "answer_format": "boolean",
         "answer_text": "yes" if r["label"] else "no", "decontamination_text": r["passage"]}
        for i, r in enumerate(_jsonl("aps/super_glue/boolq/validation.jsonl", n))])


def test_deferred_passages_give_the_same_matches_and_shingle_only_candidates():
    """featurize_batch(defer_passages=True) + match_batch equals the eager path on items with passages:
    copies, one-word edits, the same question over another passage, a passage equal to the question,
    no passage; and only items that reach a near-duplicate candidate get their passage shingled."""
    import pyarrow as pa

    from udfs.decontamination import HeldoutIndex, featurize_batch

    heldout = _real_boolq(40)
    index = _index_of(heldout)
    rows = []
    for k, (_, r) in enumerate(heldout.iterrows()):
        n = len(r["question"].split(" "))
        other = heldout.iloc[(k + 7) % len(heldout)]["context"]
        rows += [_item(r, f"copy{k}"), _item(r, f"edit{k}", question=_replace_word(r["question"], k % n)),
                 _item(r, f"other_passage{k}", question=_replace_word(r["question"], k % n), context=other),
                 _item(r, f"passage_is_question{k}", context=r["question"]), _item(r, f"no_passage{k}", context=None)]
    for i, r in enumerate(_jsonl("aps/super_glue/boolq/train.jsonl", 60)):
        rows.append({"item_id": f"train{i}", "question": r["question"], "context": r["passage"],
                     "choices": ["no", "yes"], "answer_text": "yes" if r["label"] else "no", "answer_format": "boolean"})
    items = pd.DataFrame(rows).rename(columns={"item_id": "id"})
    batch = pa.RecordBatch.from_pandas(items, preserve_index=False)
    eager = featurize_batch(batch, index.params, heldout=False, near_dup_answers=index.near_dup_answers)
    deferred = featurize_batch(batch, index.params, heldout=False, near_dup_answers=index.near_dup_answers,
                               defer_passages=True)
    assert deferred.column("context_shingles").null_count == deferred.num_rows
    assert eager.column("context_shingles").null_count < eager.num_rows
    shingled = []
    original = HeldoutIndex._passage_shingles

    def spy(self, features, which):
        shingled.extend(features.column("id").to_pylist()[i] for i in which.tolist())
        return original(self, features, which)

    HeldoutIndex._passage_shingles = spy
    try:
        got = index.match_batch(deferred).to_pylist()
    finally:
        HeldoutIndex._passage_shingles = original
    assert got == index.match_batch(eager).to_pylist()
    by_id = {m["item_id"]: m for m in got}
    edited = [f"edit{k}" for k in range(len(heldout))]
    assert all(by_id[e]["rule"] in ("near_dup", "ngram") for e in edited)
    assert not any(by_id.get(f"other_passage{k}", {}).get("rule") == "near_dup" for k in range(len(heldout)))
    # planted copies and edits are near candidates of their source; clean training items mostly not
    assert {f"edit{k}" for k in range(len(heldout))} <= set(shingled)
    assert sum(s.startswith("train") for s in shingled) < 60 // 4
    with pytest.raises(ValueError, match="item side"):
        featurize_batch(batch, index.params, heldout=True, defer_passages=True)


def test_heldout_index_pickles_without_its_derived_fields():
    import pickle

    import pyarrow as pa

    heldout = _real_heldout(10)
    index = _index_of(heldout)
    state = index.__getstate__()
    assert not set(state) & {"id_rank", "answer_numbers", "answer_codes", "near_dup_answers"}
    copy = pickle.loads(pickle.dumps(index))
    assert copy.answer_numbers == index.answer_numbers and np.array_equal(copy.id_rank, index.id_rank)
    batch = pa.RecordBatch.from_pandas(featurize_frame(_real_items(heldout).rename(columns={"item_id": "id"}),
                                                       index.params, heldout=False), preserve_index=False)
    assert copy.match_batch(batch).to_pylist() == index.match_batch(batch).to_pylist()


@pytest.mark.parametrize("texts", [
    [], [""], ["one"], ["", "a b", ""], ["the cat the cat", "cat", "a b c d e f g"],
    ["naive cafe 1000 5", "x" * 300, "日本 語 テキスト"], [" a  b ", "   ", "c"],
])
def test_word_values_are_the_words_of_str_split(texts):
    from udfs.decontamination import _word_value, word_values

    flat, lengths = word_values(texts)
    assert lengths.tolist() == [len(t.split()) for t in texts]
    assert flat.tolist() == [_word_value(w) for t in texts for w in t.split()]


def test_pair_jaccard_equals_python_sets():
    from udfs.decontamination import _pair_jaccard

    rng = random.Random(3)
    sets = [rng.sample(range(-2**31, 2**31), rng.randrange(0, 30)) for _ in range(40)]
    sets += [[5, -7, 2**31 - 1], [5, -7, 2**31 - 1], []]
    sets = [sorted(set(s)) for s in sets]
    off = np.concatenate([[0], np.cumsum([len(s) for s in sets])]).astype(np.int64)
    val = np.array([v for s in sets for v in s], dtype=np.int32)
    a = np.array([rng.randrange(len(sets)) for _ in range(200)] + [40, 42], dtype=np.int64)
    b = np.array([rng.randrange(len(sets)) for _ in range(200)] + [41, 42], dtype=np.int64)
    got = _pair_jaccard((off, val), a, (off, val), b)
    for g, i, j in zip(got, a, b):
        x, y = set(sets[i]), set(sets[j])
        assert (np.isnan(g) and not x | y) or g == len(x & y) / len(x | y)


def test_featurize_batch_reads_a_sliced_batch_as_its_own_rows():
    """Spark hands mapInArrow slices of larger Arrow buffers: list columns (choices) and strings
    must be read from the slice's offsets, as a batch built from those rows alone."""
    import pyarrow as pa

    from udfs.decontamination import featurize_batch

    heldout = _real_heldout(12)
    items = _real_items(heldout).rename(columns={"item_id": "id"})
    items["choices"] = [None if c is None else [str(x) for x in c] for c in items["choices"]]
    batch = pa.RecordBatch.from_pandas(items, preserve_index=False)
    start, length = 3, len(items) - 7
    alone = pa.RecordBatch.from_pandas(items.iloc[start:start + length].reset_index(drop=True), preserve_index=False)
    for heldout_side in (False, True):
        got = featurize_batch(batch.slice(start, length), PARAMS, heldout=heldout_side)
        assert got.to_pylist() == featurize_batch(alone, PARAMS, heldout=heldout_side).to_pylist()
        assert any(row["answers"] for row in got.to_pylist())


@pytest.mark.parametrize("raw, others, expected", [
    ("The Passage.", ["a question", "a question yes"], "the passage"),
    ("A question?", ["a question", "a question yes"], ""),       # the passage is the question: no passage
    ("a question YES", ["a question", "a question yes"], ""),    # ... or the question + answer
    (None, ["a question"], ""),
    ("  ...  ", ["a question"], ""),                              # nothing left after normalization
])
def test_item_passage_is_no_passage_when_it_repeats_the_item(raw, others, expected):
    from udfs.decontamination import item_passage

    assert item_passage(raw, others) == expected


def test_eager_and_deferred_featurization_agree_on_a_passage_that_is_the_question():
    import pyarrow as pa

    from udfs.decontamination import featurize_batch

    row = {"id": "x", "question": "is the sky blue", "context": "Is the sky blue?", "choices": None,
           "answer_text": "yes", "answer_format": "boolean"}
    batch = pa.RecordBatch.from_pylist([row, {**row, "id": "y", "context": "The sky is blue on clear days."}])
    eager = featurize_batch(batch, PARAMS, heldout=False).column("context_shingles").to_pylist()
    assert eager[0] is None and eager[1]


def test_build_heldout_index_matches_like_the_stored_index_and_drops_boilerplate():
    from udfs.decontamination import build_heldout_index

    heldout = _real_heldout(60)
    items = _real_items(heldout)
    assert _match(build_heldout_index(heldout, PARAMS), items) == _match(_index_of(heldout), items)
    # a question shared by `boilerplate_min_items` held-out items is boilerplate: never matched
    shared = heldout.iloc[:PARAMS.boilerplate_min_items].assign(question="Which of the following is correct?",
                                                               choices=None, answer_format="short_text")
    index = build_heldout_index(pd.concat([heldout, shared.assign(heldout_id=shared["heldout_id"] + "b")]), PARAMS)
    probe = pd.DataFrame([{"item_id": "p", "question": "Which of the following is correct?", "context": None,
                           "choices": None, "answer_text": "zebra", "answer_format": "short_text"}])
    assert _match(index, probe) == {}
