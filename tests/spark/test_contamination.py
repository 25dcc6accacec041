"""The contamination filter's Spark half on tiny inline tables: the held-out index in Delta (built
once per heldout version, rebuilt when heldout or the settings change, boilerplate marked), and the
three rules as joins (which rule, which held-out item, what matched, tie-breaks)."""

from __future__ import annotations

import datetime as dt

import pytest

from jobs.filters.contamination import (
    INDEX_TABLES,
    MATCH_COLUMNS,
    contamination_matches,
    ensure_heldout_index,
    load_heldout_index,
)
from schemas.tables import HELDOUT, HELDOUT_KEYS, HELDOUT_SHINGLES

pytestmark = pytest.mark.spark

ITEM_SCHEMA = ("item_id string, question string, context string, choices array<string>, answer_text string, "
               "answer_format string")

PASSAGE = ("A rooster, also known as a gamecock, cockerel or cock, is an adult male gallinaceous bird, usually a "
           "male chicken (Gallus gallus domesticus). Roosters are almost always polygamous.")
STEM = "Which of the following statements about the process described in the passage above is most accurate"

HELDOUT_ROWS = [
    dict(heldout_id="h_arc", task="arc_easy", split="test", answer_format="mcq",
         question="Which piece of safety equipment is used to keep mold spores from entering the respiratory system?",
         choices=["safety goggles", "breathing mask", "rubber gloves", "lead apron"], answer_text="breathing mask",
         decontamination_text="Question: Which piece of safety equipment is used to keep mold spores from entering "
                              "the respiratory system?\nAnswer:"),
    dict(heldout_id="h_nq", task="nq_open", split="validation", answer_format="short_text",
         question="who wrote he ain't heavy he's my brother lyrics", choices=["Bobby Scott", "Bob Russell"],
         answer_text="Bobby Scott", decontamination_text="Q: who wrote he ain't heavy he's my brother lyrics?\nA:"),
    dict(heldout_id="h_boolq", task="boolq", split="validation", answer_format="boolean",
         question="is a chicken and rooster the same thing", context=PASSAGE, choices=["no", "yes"],
         answer_text="yes", decontamination_text=PASSAGE),
    dict(heldout_id="h_gsm", task="gsm8k", split="test", answer_format="numeric",
         question="Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins "
                  "for her friends every day with four. She sells the remainder at the farmers' market daily for $2 "
                  "per fresh duck egg. How much in dollars does she make every day at the farmers' market?",
         answer_text="18"),
    *[dict(heldout_id=f"h_mmlu{i}", task="mmlu_anatomy", split="test", answer_format="mcq",
           question=f"{STEM} in case {i}?", choices=[f"option {i} {c}" for c in "abcd"], answer_text=f"option {i} a")
      for i in range(3)],
]


def write_heldout(lakehouse, rows) -> None:
    spark = lakehouse.spark
    full = [{**{f.name: None for f in HELDOUT.schema.fields}, "doc_index": i, "ingested_at": dt.datetime(2026, 1, 1),
             **row} for i, row in enumerate(rows)]
    lakehouse.merge(spark.createDataFrame(full, HELDOUT.schema), HELDOUT)


def items(lakehouse, rows):
    return lakehouse.spark.createDataFrame(
        [(r["item_id"], r["question"], r.get("context"), r.get("choices"), r["answer_text"], r.get("answer_format"))
         for r in rows], ITEM_SCHEMA)


def versions(lakehouse) -> dict[str, int]:
    return {spec.name: lakehouse.version(spec.name) for spec in INDEX_TABLES}


def test_index_is_built_once_per_heldout_version_and_settings(lakehouse, make_config):
    write_heldout(lakehouse, HELDOUT_ROWS)
    first = ensure_heldout_index(lakehouse, lakehouse.config)
    assert first.built and first.heldout_items == len(HELDOUT_ROWS)
    built = versions(lakehouse)
    assert all(lakehouse.commit_metadata(name) and f'"heldout_version": {first.heldout_version}' in lakehouse.commit_metadata(name)
               for name in built)

    again = ensure_heldout_index(lakehouse, lakehouse.config)
    assert not again.built and versions(lakehouse) == built  # no work, no commit

    write_heldout(lakehouse, [dict(heldout_id="h_new", task="webqs", split="test", answer_format="short_text",
                                   question="what does jamaican people speak?", answer_text="Jamaican English")])
    rebuilt = ensure_heldout_index(lakehouse, lakehouse.config)
    assert rebuilt.built and rebuilt.heldout_version == first.heldout_version + 1
    assert lakehouse.read(HELDOUT_SHINGLES.name).count() == len(HELDOUT_ROWS) + 1

    other = make_config(f"schema={lakehouse.config.schema_name}", "curate.contamination.ngram_n=10",
                        home=lakehouse.config.home)
    assert ensure_heldout_index(lakehouse, other).built  # new settings, new index
    assert not ensure_heldout_index(lakehouse, other).built


def test_boilerplate_ngrams_and_stimuli_are_marked(lakehouse):
    write_heldout(lakehouse, HELDOUT_ROWS)
    ensure_heldout_index(lakehouse, lakehouse.config)
    keys = lakehouse.read(HELDOUT_KEYS.name)
    stem_rows = keys.where("kind = 'ngram' AND heldout_id = 'h_mmlu0' AND heldout_items = 3").count()
    assert stem_rows > 0  # the stem's n-grams are in all three items...
    assert keys.where("kind = 'ngram' AND heldout_items = 3 AND boilerplate").count() == 0  # ...below the cutoff of 10
    assert keys.where("kind = 'ngram' AND heldout_items = 1 AND boilerplate").count() == 0


def test_the_three_rules(lakehouse):
    write_heldout(lakehouse, HELDOUT_ROWS)
    arc, nq, boolq = HELDOUT_ROWS[0], HELDOUT_ROWS[1], HELDOUT_ROWS[2]
    rows = [
        dict(item_id="verbatim", **{k: arc[k] for k in ("question", "choices", "answer_text", "answer_format")}),
        dict(item_id="formatting", question=arc["question"].upper().replace(" ", "  ").rstrip("?"),
             choices=["Lead apron.", "Rubber gloves.", "Breathing mask.", "Safety goggles."],
             answer_text="Breathing mask.", answer_format="mcq"),
        dict(item_id="embedded", question="In a lab, " + arc["question"].lower() + " Pick the best answer.",
             choices=["a fan", "a mask", "a hat"], answer_text="a mask", answer_format="mcq"),
        dict(item_id="short_edit", question="who wrote he ain't heavy he's my sister lyrics", answer_text="Bobby Scott",
             answer_format="short_text"),
        dict(item_id="short_edit_other_answer", question="who wrote he ain't heavy he's my sister lyrics",
             answer_text="Elton John", answer_format="short_text"),
        dict(item_id="short_verbatim_no_answer_check", question=nq["question"], answer_text="someone else",
             answer_format="short_text"),
        dict(item_id="boolq_edit", question="is a hen and rooster the same thing", context=PASSAGE,
             choices=["yes", "no"], answer_text="yes", answer_format="boolean"),
        dict(item_id="boolq_edit_other_passage", question="is a hen and rooster the same thing",
             context="A hen is an adult female chicken kept for its eggs on farms around the world.",
             choices=["yes", "no"], answer_text="yes", answer_format="boolean"),
        dict(item_id="boolq_edit_no_passage", question="is a hen and rooster the same thing", answer_text="yes",
             answer_format="boolean"),
        dict(item_id="gsm_edit", question=HELDOUT_ROWS[3]["question"].replace("Janet", "Maria"), answer_text="18",
             answer_format="numeric"),
        dict(item_id="clean", question="What is the boiling point of water at sea level in degrees Celsius?",
             answer_text="100", answer_format="numeric"),
    ]
    result = contamination_matches(lakehouse, lakehouse.config, items(lakehouse, rows))
    assert tuple(result.columns) == MATCH_COLUMNS
    got = {r["item_id"]: r.asDict() for r in result.collect()}
    result.unpersist()

    assert got["verbatim"]["rule"] == "whole_text" and got["verbatim"]["score"] == 1.0
    assert (got["verbatim"]["heldout_id"], got["verbatim"]["heldout_task"], got["verbatim"]["heldout_split"]) == (
        "h_arc", "arc_easy", "test")
    assert got["formatting"]["rule"] == "whole_text" and got["formatting"]["heldout_id"] == "h_arc"
    assert got["embedded"]["rule"] == "ngram" and got["embedded"]["heldout_id"] == "h_arc"
    assert len(got["embedded"]["matched"].split()) == 13 and got["embedded"]["matched"] in got["verbatim"]["matched"]
    assert 0 < got["embedded"]["score"] < 1
    assert got["short_edit"]["rule"] == "near_dup" and got["short_edit"]["heldout_id"] == "h_nq"
    assert got["short_edit"]["matched"] == "who wrote he ain t heavy he s my brother lyrics"
    assert "short_edit_other_answer" not in got  # a near copy keeps the answer
    assert got["short_verbatim_no_answer_check"]["rule"] == "whole_text"  # a verbatim question is a copy regardless
    assert got["boolq_edit"]["rule"] == "near_dup" and got["boolq_edit"]["heldout_id"] == "h_boolq"
    assert "boolq_edit_other_passage" not in got and "boolq_edit_no_passage" not in got
    assert got["gsm_edit"]["rule"] == "ngram" and got["gsm_edit"]["heldout_id"] == "h_gsm"  # long: n-grams survive
    assert "clean" not in got
    assert all(len(r["matched"]) <= 200 for r in got.values())


def test_loaded_index_is_reused_until_heldout_changes(lakehouse):
    """One heldout version read per call while heldout is unchanged (same broadcast, same worker
    token); a new heldout version is matched against at once (a new index, a new token)."""
    write_heldout(lakehouse, HELDOUT_ROWS[:2])
    first = load_heldout_index(lakehouse, lakehouse.config)
    assert load_heldout_index(lakehouse, lakehouse.config) is first
    gsm = HELDOUT_ROWS[3]
    probe = items(lakehouse, [dict(item_id="gsm", question=gsm["question"], answer_text="18")])
    before = contamination_matches(lakehouse, lakehouse.config, probe)
    assert before.count() == 0
    before.unpersist()
    write_heldout(lakehouse, HELDOUT_ROWS[:4])
    second = load_heldout_index(lakehouse, lakehouse.config)
    assert second is not first and second.token != first.token and second.index.n_keys > first.index.n_keys
    after = contamination_matches(lakehouse, lakehouse.config, probe)
    assert [(r["item_id"], r["heldout_id"]) for r in after.collect()] == [("gsm", "h_gsm")]
    after.unpersist()


def test_boilerplate_is_skipped(lakehouse, make_config):
    write_heldout(lakehouse, HELDOUT_ROWS)
    probe = [dict(item_id="stem_only", question=f"{STEM} for a new case?", choices=["w", "x", "y", "z"],
                  answer_text="w", answer_format="mcq")]
    strict = make_config(f"schema={lakehouse.config.schema_name}", "curate.contamination.boilerplate_min_items=3",
                         home=lakehouse.config.home)
    skipped = contamination_matches(lakehouse, strict, items(lakehouse, probe))
    assert skipped.count() == 0  # the stem is in 3 held-out items: boilerplate at a cutoff of 3
    found = contamination_matches(lakehouse, lakehouse.config, items(lakehouse, probe))  # cutoff 10
    assert [r["rule"] for r in found.collect()] == ["ngram"]


def test_ties_break_on_rule_then_heldout_id(lakehouse):
    twin = dict(HELDOUT_ROWS[1], heldout_id="h_nq_a", task="webqs", split="test")
    write_heldout(lakehouse, [dict(HELDOUT_ROWS[1], heldout_id="h_nq_b"), twin])
    result = contamination_matches(lakehouse, lakehouse.config, items(lakehouse, [
        dict(item_id="copy", question=HELDOUT_ROWS[1]["question"], answer_text="Bobby Scott",
             answer_format="short_text")]))
    (row,) = result.collect()
    assert (row["rule"], row["heldout_id"], row["heldout_task"]) == ("whole_text", "h_nq_a", "webqs")


def test_items_without_answer_format_and_bad_input(lakehouse):
    write_heldout(lakehouse, HELDOUT_ROWS)
    spark = lakehouse.spark
    arc = HELDOUT_ROWS[0]
    df = spark.createDataFrame([("x1", arc["question"], None, arc["choices"], arc["answer_text"]),
                                ("x2", "", None, None, "nothing")],
                               "item_id string, question string, context string, choices array<string>, answer_text string")
    assert [r["item_id"] for r in contamination_matches(lakehouse, lakehouse.config, df).collect()] == ["x1"]
    with pytest.raises(ValueError, match="answer_text"):
        contamination_matches(lakehouse, lakehouse.config, df.drop("answer_text"))
    assert contamination_matches(lakehouse, lakehouse.config, df.limit(0)).count() == 0


# ---- real data: held-out rows of the mirror planted into generated-like items --------------------

REAL_HELDOUT = {  # task → (lm-eval yaml, answer format, held-out split, rows, training split, clean rows)
    "arc_easy": ("arc/arc_easy.yaml", "mcq", "test", 1200, "train", 700),
    "gsm8k": ("gsm8k/gsm8k.yaml", "numeric", "test", 1319, "train", 700),
    "boolq": ("super_glue/boolq/default.yaml", "boolean", "validation", 1200, "train", 700),
}
PLANTED_PER_TASK = 30  # half of them short (< 13 words with options and answer) where the task has any


def _records(mirror, task: str, split: str, role: str, end: int) -> list[dict]:
    """The first `end` records of a split, normalized exactly as ingest normalizes them."""
    from pathlib import Path

    import lm_eval.tasks

    from udfs.normalize import Unit, process_unit, quiet_libraries

    quiet_libraries()
    yaml_rel, fmt = REAL_HELDOUT[task][:2]
    unit = Unit(task=task, split=split, role=role, start=0, end=end, task_family=task.split("_")[0],
                yaml_path=str(Path(lm_eval.tasks.__file__).resolve().parent / yaml_rel), answer_format=fmt)
    rows = [r for r in process_unit(unit, str(mirror)) if r["kind"] == role]
    assert len(rows) >= end * 0.95, (task, split, len(rows))
    return rows


def _short(row: dict) -> bool:
    from udfs.textnorm import normalize_text

    text = " ".join([row["question"], *(row["choices"] or []), row["answer_text"] or ""])
    return len(normalize_text(text).split()) < 13


def _one_word_edit(question: str, rng) -> str:
    words = question.split()
    i = rng.randrange(len(words))
    words[i] = rng.choice([w for w in ("zebra", "violet", "quietly", "seven", "harbor") if w != words[i].lower()])
    return " ".join(words)


@pytest.fixture(scope="module")
def real(spark, mirror, tmp_path_factory):
    """A lakehouse whose heldout holds real ARC-Easy test, GSM8K test and BoolQ validation rows; the
    matches of planted copies (verbatim, one word changed) and of clean training questions."""
    import random

    from jobs.config import load_config
    from jobs.lakehouse import Lakehouse

    config = load_config(overrides=["spark.master=local[2]", "spark.shuffle_partitions=2", "schema=t_contam_real"],
                         home=tmp_path_factory.mktemp("contam-real"))
    lakehouse = Lakehouse(spark, config)
    rng = random.Random(7)
    heldout, planted, clean = [], [], []
    for task, (_, _, split, n_heldout, train_split, n_clean) in REAL_HELDOUT.items():
        rows = _records(mirror, task, split, "heldout", n_heldout)
        heldout += rows
        short = [r for r in rows if _short(r)]
        picked = rng.sample(short, min(len(short), PLANTED_PER_TASK // 2))
        picked += rng.sample([r for r in rows if r not in picked], PLANTED_PER_TASK - len(picked))
        for r in picked:
            base = dict(question=r["question"], context=r["context"], choices=r["choices"],
                        answer_text=r["answer_text"], answer_format=r["answer_format"],
                        source=r["row_id"], short=_short(r))
            planted.append(dict(base, item_id=f"verbatim:{r['row_id']}", kind="verbatim"))
            planted.append(dict(base, item_id=f"edit:{r['row_id']}", kind="edit",
                                question=_one_word_edit(r["question"], rng)))
        clean += [dict(question=r["question"], context=r["context"], choices=r["choices"], answer_text=r["answer_text"],
                       answer_format=r["answer_format"], item_id=f"train:{r['row_id']}", kind="train", source=None,
                       short=_short(r)) for r in _records(mirror, task, train_split, "seed", n_clean)]
    write_heldout(lakehouse, [{k: r[k] for k in ("task", "split", "doc_index", "question", "context", "choices",
                                                 "answer_index", "answer_text", "answer_format",
                                                 "decontamination_text")} | {"heldout_id": r["row_id"]}
                              for r in heldout])
    query = planted + clean
    result = contamination_matches(lakehouse, config, items(lakehouse, query))
    matches = {r["item_id"]: r.asDict() for r in result.collect()}
    result.unpersist()
    by_id = {r["row_id"]: r for r in heldout}
    yield dict(lakehouse=lakehouse, config=config, query=query, matches=matches, heldout=by_id)
    spark.sql(f"DROP SCHEMA IF EXISTS {lakehouse.namespace} CASCADE")


def _same_item(a: dict, b: dict) -> bool:
    """Two held-out items with the same normalized question and options (duplicates across a split
    are real: the best match then names the smallest heldout_id)."""
    from udfs.decontamination import checked_texts

    texts = lambda r: checked_texts(r["question"], None, r["choices"], None, r["answer_format"])  # noqa: E731
    return texts(a).get("stimulus") == texts(b).get("stimulus")


def test_real_verbatim_copies_are_all_found_with_their_heldout_item(real):
    verbatim = [q for q in real["query"] if q["kind"] == "verbatim"]
    assert sum(q["short"] for q in verbatim) >= 15  # the short items a 13-gram rule cannot see are in
    missed = [q["item_id"] for q in verbatim if q["item_id"] not in real["matches"]]
    assert missed == []
    for q in verbatim:
        m = real["matches"][q["item_id"]]
        assert m["heldout_id"] == q["source"] or _same_item(real["heldout"][m["heldout_id"]], real["heldout"][q["source"]])
        held = real["heldout"][q["source"]]
        assert (m["heldout_task"], m["heldout_split"]) == (held["task"], held["split"])
        assert m["rule"] in ("whole_text", "ngram") and m["matched"]


def test_real_one_word_edits_are_found(real):
    edits = [q for q in real["query"] if q["kind"] == "edit"]
    found = [q for q in edits if q["item_id"] in real["matches"]]
    right = [q for q in found if real["matches"][q["item_id"]]["heldout_id"] == q["source"]
             or _same_item(real["heldout"][real["matches"][q["item_id"]]["heldout_id"]], real["heldout"][q["source"]])]
    assert len(found) / len(edits) >= 0.95, [q["question"] for q in edits if q not in found]
    assert len(right) == len(found)
    short = [q for q in edits if q["short"]]
    assert short and all(q["item_id"] in real["matches"] for q in short)
    assert {real["matches"][q["item_id"]]["rule"] for q in short} <= {"near_dup", "whole_text"}


def _independently_clean(query: dict, heldout: dict) -> bool:
    """Training splits leak held-out items (ARC train/test share questions, GSM8K train/test share
    sentences, BoolQ shares passages), so "clean" is decided without taskseed's rules, as in the
    benchmark: no 13-gram of the item's question + options + answer in any held-out text (question,
    options, answer, passage, decontamination query), and not the same normalized question."""
    from udfs.textnorm import normalize_text

    def grams(text):
        w = normalize_text(text).split()
        return {tuple(w[i:i + 13]) for i in range(len(w) - 12)}

    if "grams" not in heldout:
        heldout["grams"] = set().union(*(grams(" ".join([h["question"], *(h["choices"] or []), h["answer_text"] or "",
                                                         h["context"] or "", h["decontamination_text"] or ""]))
                                         for h in heldout["rows"].values()))
        heldout["questions"] = {normalize_text(h["question"]) for h in heldout["rows"].values()}
    text = " ".join([query["question"], *(query["choices"] or []), query["answer_text"] or ""])
    return not (grams(text) & heldout["grams"]) and normalize_text(query["question"]) not in heldout["questions"]


def test_real_clean_training_questions_are_rarely_flagged(real):
    cache = {"rows": real["heldout"]}
    trained = [q for q in real["query"] if q["kind"] == "train"]
    clean = [q for q in trained if _independently_clean(q, cache)]
    flagged = [q for q in clean if q["item_id"] in real["matches"]]
    assert len(clean) > 2000 * 0.9
    # The exact rules (n-gram, whole text) flag almost none of them.
    exact = [q for q in flagged if real["matches"][q["item_id"]]["rule"] != "near_dup"]
    assert len(exact) / len(clean) <= 0.005, [(q["question"][:60], real["matches"][q["item_id"]]) for q in exact]
    # The near-duplicate rule flags items the 13-gram definition above calls clean (short reworded
    # test questions, BoolQ passages shared across splits): each such flag must be a real near-duplicate
    # by an exact character-shingle Jaccard, computed here without MinHash, of question + options or of
    # the passage, within MinHash's estimation error of the configured threshold.
    from udfs.textnorm import normalize_text

    def jaccard(a, b, k=real["config"].curate.contamination.shingle_size):
        sa, sb = ({t[i:i + k] for i in range(max(1, len(t) - k + 1))} for t in (normalize_text(a), normalize_text(b)))
        return len(sa & sb) / len(sa | sb) if sa | sb else 0.0

    floor = real["config"].curate.contamination.near_dup_threshold - 0.15
    for q in flagged:
        if q in exact:
            continue
        h = real["heldout"][real["matches"][q["item_id"]]["heldout_id"]]
        stim = lambda r: " ".join([r["question"], *(r["choices"] or [])])  # noqa: E731
        sims = [jaccard(stim(q), stim(h))]
        if q["context"] and h["context"]:
            sims.append(jaccard(q["context"], h["context"]))
        assert max(sims) >= floor, (q["question"][:80], h["question"][:80], sims)
    leaked = [q for q in trained if q not in clean]
    assert all(q["item_id"] in real["matches"] for q in leaked if
               any(q["question"] == h["question"] for h in real["heldout"].values()))  # verbatim leaks are found


def test_real_second_call_reuses_the_index_and_commits_nothing(real):
    lakehouse, config = real["lakehouse"], real["config"]
    before = versions(lakehouse)
    status = ensure_heldout_index(lakehouse, config)
    assert not status.built and versions(lakehouse) == before
    again = contamination_matches(lakehouse, config, items(lakehouse, real["query"][:4]))
    assert again.count() == 4 and versions(lakehouse) == before
    again.unpersist()
