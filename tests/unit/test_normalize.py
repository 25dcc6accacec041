"""Normalization of real benchmark records through lm-eval's own task configs (no Spark).

One test per answer format present in the mirror (mcq with option texts, mcq with letter labels,
boolean, WinoGrande's two fillers, numeric with a worked solution, short_text with aliases),
each checked against the gold answer read straight from the raw record, over whole splits.
Then bad records: each quarantine reason, both from hand-made docs and end to end from a mirror
file, plus a task whose config fails.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from udfs.normalize import (
    CompiledTask,
    _gold_indices,
    RenderError,
    TaskSource,
    Unit,
    check_task_config,
    get_renderer,
    normalize_doc,
    process_unit,
    record_id,
    resolve_letter_choices,
    split_final_answer,
)

import lm_eval.tasks

LM_TASKS = Path(lm_eval.tasks.__file__).resolve().parent
YAML = {
    "arc_easy": "arc/arc_easy.yaml",
    "arc_challenge": "arc/arc_challenge.yaml",
    "gsm8k": "gsm8k/gsm8k.yaml",
    "boolq": "super_glue/boolq/default.yaml",
    "winogrande": "winogrande/default.yaml",
    "webqs": "webqs/webqs.yaml",
    "nq_open": "nq_open/nq_open.yaml",
    "sciq": "sciq/sciq.yaml",
    "piqa": "piqa/piqa.yaml",
    "mmlu_anatomy": "mmlu/default/mmlu_anatomy.yaml",
    "mmlu_college_physics": "mmlu/default/mmlu_college_physics.yaml",
}
OVERRIDES = {"winogrande": {"dataset_name": "winogrande_l"}}
# answer_format as the catalog classifies these tasks (jobs.catalog.classify_answer_format)
FORMATS = {"arc_easy": "mcq", "arc_challenge": "mcq", "gsm8k": "numeric", "boolq": "boolean",
           "winogrande": "mcq", "webqs": "short_text", "nq_open": "short_text", "sciq": "mcq",
           "piqa": "mcq", "mmlu_anatomy": "mcq", "mmlu_college_physics": "mcq"}


def source(task: str, mirror: Path) -> TaskSource:
    return TaskSource(task=task, yaml_path=str(LM_TASKS / YAML[task]), dataset_path=None,
                      dataset_name=None, mirror=str(mirror),
                      overrides_json=json.dumps(OVERRIDES.get(task, {})))


def normalize_split(task: str, split: str, mirror: Path, heldout: bool = False):
    """[(raw, Normalized | Quarantined)] for a whole split of the mirror."""
    renderer = get_renderer(source(task, mirror))
    return [
        (raw, doc if not isinstance(doc, dict) else renderer.normalize(doc, FORMATS[task], heldout))
        for _, raw, _, doc in renderer.iter_docs(split)
    ]


def ok(results):
    bad = [(raw, r) for raw, r in results if not hasattr(r, "question")]
    assert not bad, f"{len(bad)} quarantined, first: {bad[0]}"
    return results


# ---- one test per answer format ---------------------------------------------------------------

@pytest.mark.parametrize("task", ["arc_easy", "arc_challenge"])
def test_mcq_answer_text_is_the_gold_option_text(task, mirror):
    results = ok(normalize_split(task, "train", mirror))
    for raw, n in results:
        gold = raw["choices"]["text"][raw["choices"]["label"].index(raw["answerKey"])]
        assert n.answer_format == "mcq"
        assert n.choices == [c.strip() for c in raw["choices"]["text"]]
        assert n.answer_text == gold.strip() == n.choices[n.answer_index]
        assert n.question == raw["question"].strip()
        assert n.prompt_text == f"Question: {raw['question']}\nAnswer:"
        assert n.rationale is None and n.context is None


@pytest.mark.parametrize("task", ["mmlu_anatomy", "mmlu_college_physics"])
def test_mmlu_letter_choices_resolve_to_option_texts(task, mirror):
    results = ok(normalize_split(task, "test", mirror, heldout=True))
    for raw, n in results:
        assert n.choices == [c.strip() for c in raw["choices"]], "letters A-D must become option texts"
        assert n.answer_index == raw["answer"]
        assert n.answer_text == raw["choices"][raw["answer"]].strip()
        assert n.answer_text not in ("A", "B", "C", "D") or n.answer_text in raw["choices"]
        assert n.decontamination_text == n.prompt_text  # mmlu's YAML sets no decontamination query


def test_boolean_boolq_has_passage_context_and_yes_no_answer(mirror):
    results = ok(normalize_split("boolq", "train", mirror))
    assert len(results) == 9427
    for raw, n in results:
        assert n.answer_format == "boolean"
        assert n.choices == ["no", "yes"]
        assert n.answer_text == ("yes" if raw["label"] == 1 else "no")
        assert n.question == raw["question"].strip()
        assert n.context == raw["passage"].strip()


def test_boolq_heldout_decontamination_text_is_the_passage(mirror):
    raw, n = ok(normalize_split("boolq", "validation", mirror, heldout=True))[0]
    assert n.decontamination_text == raw["passage"]  # doc_to_decontamination_query: passage


def test_winogrande_is_one_sentence_with_a_blank_and_two_fillers(mirror):
    results = ok(normalize_split("winogrande", "train", mirror))
    assert len(results) == 10234
    for raw, n in results:
        options = [raw["option1"], raw["option2"]]
        assert n.question == raw["sentence"] and "_" in n.question
        assert n.choices == [o.strip() for o in options]
        assert n.answer_index == int(raw["answer"]) - 1
        assert n.answer_text == options[int(raw["answer"]) - 1].strip()


def test_numeric_gsm8k_splits_worked_solution_and_final_number(mirror):
    results = ok(normalize_split("gsm8k", "train", mirror))
    for raw, n in results:
        final = raw["answer"].split("####")[-1].strip().replace(",", "")
        assert n.answer_format == "numeric"
        assert n.answer_text == final
        assert n.rationale and "####" not in n.rationale and "<<" not in n.rationale
        assert n.choices is None and n.answer_index is None
    first = results[0][1]
    assert first.answer_text == "72"
    assert first.rationale.startswith("Natalia sold 48/2 = 24 clips in May.")


def test_short_text_webqs_keeps_accepted_answers(mirror):
    results = ok(normalize_split("webqs", "train", mirror))
    for raw, n in results:
        assert n.answer_format == "short_text"
        assert n.answer_index is None
        assert n.answer_text in raw["answers"]
        assert set(n.choices) <= set(raw["answers"])
        assert n.question == raw["question"]


def test_short_text_nq_open_first_accepted_answer(mirror):
    results = ok(normalize_split("nq_open", "validation", mirror, heldout=True))
    for raw, n in results:
        assert n.answer_text == raw["answer"][0].strip()
        assert n.choices == [a.strip() for a in raw["answer"]]
        assert n.question == raw["question"]
        assert n.decontamination_text == n.prompt_text  # should_decontaminate is off for nq_open


@pytest.mark.parametrize("task,split", [("sciq", "validation"), ("piqa", "validation")])
def test_other_heldout_mcq_tasks(task, split, mirror):
    results = ok(normalize_split(task, split, mirror, heldout=True))
    for raw, n in results:
        assert n.answer_text == n.choices[n.answer_index]
        gold = raw["correct_answer"] if task == "sciq" else [raw["sol1"], raw["sol2"]][raw["label"]]
        assert n.answer_text == gold.strip()
        assert n.decontamination_text


def test_compiled_templates_render_exactly_like_lm_eval(mirror):
    """The compiled-template fast path must give lm-eval's own results."""
    for task in ("arc_easy", "boolq", "gsm8k", "sciq", "nq_open", "mmlu_anatomy"):
        renderer = get_renderer(source(task, mirror))
        split = next(iter(renderer.splits))
        for i, (_, _, _, doc) in enumerate(renderer.iter_docs(split, 0, 40)):
            for method in ("doc_to_text", "doc_to_target"):
                assert getattr(renderer.compiled, method)(doc) == getattr(renderer.task, method)(doc)
            if renderer.task.config.doc_to_choice is not None:
                assert renderer.compiled.doc_to_choice(doc) == renderer.task.doc_to_choice(doc)


def test_record_identity_is_content_not_position():
    raw = {"question": "q", "answer": "#### 1"}
    assert record_id("seed", "gsm8k", "train", raw) == record_id("seed", "gsm8k", "train", dict(reversed(raw.items())))
    assert record_id("seed", "gsm8k", "train", raw) == record_id("seed", "gsm8k", "train", {**raw, "extra": None})
    assert record_id("seed", "gsm8k", "train", raw) != record_id("heldout", "gsm8k", "test", raw)
    assert record_id("seed", "gsm8k", "train", raw) != record_id("seed", "gsm8k", "train", raw, sub_index=1)


# ---- pure helpers --------------------------------------------------------------------------

def test_split_final_answer():
    assert split_final_answer("a <<1+1=2>>2 b\n#### 1,234") == ("a 2 b", "1234")
    assert split_final_answer("no marker") == (None, "no marker")


def test_letter_choices_from_prompt_lines_and_paired_labels():
    prompt = "Q?\n(A) red\n(B) blue\nAnswer:"
    assert resolve_letter_choices(["(A)", "(B)"], {"q": "Q?"}, prompt) == ["red", "blue"]
    doc = {"options": {"text": ["x", "y"], "label": ["A", "B"]}}
    assert resolve_letter_choices(["A", "B"], doc, "no options shown") == ["x", "y"]
    assert resolve_letter_choices(["yes", "no"], {}, "") == ["yes", "no"]
    with pytest.raises(RenderError) as err:
        resolve_letter_choices(["A", "B"], {"a": ["1", "2"], "b": ["3", "4"]}, "nothing")
    assert err.value.reason == "unresolved_letter_choices"


# ---- bad records → quarantine reasons --------------------------------------------------------

def _arc(**changes):
    doc = {"id": "x", "question": "Which is a metal?",
           "choices": {"text": ["iron", "wood"], "label": ["A", "B"]}, "answerKey": "A"}
    doc.update(changes)
    return doc


BAD_DOCS = [
    ("arc_easy", _arc(question=None), "missing_field"),
    ("arc_easy", {k: v for k, v in _arc().items() if k != "question"}, "missing_field"),
    ("arc_easy", _arc(answerKey="E"), "template_error"),
    ("arc_easy", _arc(choices={"text": [], "label": []}), "empty_choices"),
    ("arc_easy", _arc(choices={"text": [1, 2], "label": ["A", "B"]}), "non_string_text"),
    ("arc_easy", _arc(question=42), "non_string_text"),
    ("boolq", {"question": "is it", "passage": "p", "label": 2, "idx": 0}, "answer_index_out_of_range"),
    ("boolq", {"question": "is it", "passage": "p", "label": -1, "idx": 0}, "answer_index_out_of_range"),
    ("mmlu_anatomy", {"question": "Q", "subject": "anatomy", "choices": ["a", "b", "c", "d"], "answer": 7},
     "answer_index_out_of_range"),
    ("mmlu_anatomy", {"question": "Q", "subject": "anatomy", "choices": ["a", "b"], "answer": 0},
     "missing_field"),
    ("winogrande", {"sentence": "no blank here", "option1": "a", "option2": "b", "answer": "1"},
     "template_error"),
    ("winogrande", {"sentence": "A _ b.", "option1": "a", "option2": "b", "answer": "3"}, "missing_field"),
    ("gsm8k", {"question": "   ", "answer": "#### 3"}, "empty_question"),
    ("gsm8k", {"question": "How many?", "answer": ""}, "empty_answer"),
    ("webqs", {"url": "", "question": "who?", "answers": []}, "template_error"),
]


@pytest.mark.parametrize("task,doc,reason", BAD_DOCS,
                         ids=[f"{t}-{r}-{i}" for i, (t, _, r) in enumerate(BAD_DOCS)])
def test_bad_record_gets_a_quarantine_reason(task, doc, reason, mirror):
    renderer = get_renderer(source(task, mirror))
    result = renderer.normalize(doc, FORMATS[task], heldout=False)
    assert not hasattr(result, "question"), f"expected quarantine, got {result}"
    assert result.reason == reason, result.detail
    assert result.detail


def test_template_syntax_error_is_a_template_error(mirror):
    renderer = get_renderer(source("arc_easy", mirror))

    class Broken(CompiledTask):
        def doc_to_text(self, doc):
            return self.task.doc_to_text(doc, doc_to_text="{{ question ")

    with pytest.raises(RenderError) as err:
        normalize_doc(Broken(renderer.task), _arc(), answer_format="mcq")
    assert err.value.reason == "template_error"


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_bad_records_in_a_split_are_quarantined_and_the_rest_go_on(tmp_path, mirror):
    good = [json.loads(line) for line in (mirror / "allenai/ai2_arc/ARC-Easy/train.jsonl").open()][:5]
    bad = [_arc(id="m", question=None), _arc(id="e", answerKey="E"),
           _arc(id="c", choices={"text": [], "label": []})]
    _write_jsonl(tmp_path / "allenai/ai2_arc/ARC-Easy/train.jsonl", [*good[:2], *bad, *good[2:]])
    _write_jsonl(tmp_path / "allenai/ai2_arc/ARC-Easy/test.jsonl", good[:1])
    unit = Unit(task="arc_easy", split="train", role="seed", start=0, end=None,
                yaml_path=str(LM_TASKS / YAML["arc_easy"]), answer_format="mcq")
    rows = list(process_unit(unit, str(tmp_path)))
    kinds = [r["kind"] for r in rows]
    assert kinds.count("seed") == 5 and kinds.count("quarantine") == 3 and kinds[-1] == "unit"
    assert rows[-1]["rows_in"] == 8
    quarantined = {r["doc_index"]: r["reason"] for r in rows if r["kind"] == "quarantine"}
    assert quarantined == {2: "missing_field", 3: "template_error", 4: "empty_choices"}
    raw = json.loads(next(r for r in rows if r["doc_index"] == 3)["source_record"])
    assert raw["answerKey"] == "E"  # the raw record is kept for inspection
    assert [r["doc_index"] for r in rows if r["kind"] == "seed"] == [0, 1, 5, 6, 7]


USER_TASK = """\
task: toy_filtered
dataset_path: toy/filtered
output_type: multiple_choice
training_split: train
test_split: test
process_docs: !function toy_utils.process_docs
doc_to_text: "Question: {{question}}\\nAnswer:"
doc_to_choice: "{{options}}"
doc_to_target: gold
"""
USER_UTILS = """\
def process_docs(dataset):
    def check(doc):
        if doc["question"] == "boom":
            raise ValueError("cannot process boom")
        return {**doc, "question": doc["question"].strip().capitalize()}
    return dataset.filter(lambda d: not d["skip"]).map(check)
"""


def test_process_docs_filtering_and_errors_are_quarantined(tmp_path):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "toy.yaml").write_text(USER_TASK)
    (tasks / "toy_utils.py").write_text(USER_UTILS)
    rows = [
        {"question": " what is up ", "options": ["red", "blue"], "gold": 1, "skip": False},
        {"question": "dropped", "options": ["red", "blue"], "gold": 0, "skip": True},
        {"question": "boom", "options": ["red", "blue"], "gold": 0, "skip": False},
        {"question": "fine", "options": ["red", "blue"], "gold": 0, "skip": False},
    ]
    _write_jsonl(tmp_path / "hf/toy/filtered/default/train.jsonl", rows)
    _write_jsonl(tmp_path / "hf/toy/filtered/default/test.jsonl", rows[:1])
    unit = Unit(task="toy_filtered", split="train", role="seed", start=0, end=None,
                yaml_path=str(tasks / "toy.yaml"), answer_format="mcq")
    out = list(process_unit(unit, str(tmp_path / "hf")))
    by_index = {r["doc_index"]: r for r in out if r["kind"] != "unit"}
    assert by_index[0]["kind"] == "seed" and by_index[0]["question"] == "What is up"
    assert by_index[1]["reason"] == "filtered_by_process_docs"
    assert by_index[2]["reason"] == "process_docs_error" and "boom" in by_index[2]["detail"]
    assert by_index[3]["answer_text"] == "red"
    assert out[-1]["rows_in"] == 4


def test_a_task_whose_config_fails_is_reported(tmp_path, mirror):
    (tmp_path / "bad.yaml").write_text(USER_TASK.replace("toy_filtered", "toy_bad")
                                       .replace("toy_utils.process_docs", "nowhere.process_docs"))
    error = check_task_config("toy_bad", str(tmp_path / "bad.yaml"))
    assert error and "nowhere" in error
    unit = Unit(task="toy_bad", split="train", role="seed", start=0, end=None,
                yaml_path=str(tmp_path / "bad.yaml"))
    rows = list(process_unit(unit, str(mirror)))
    assert len(rows) == 1 and rows[0]["kind"] == "unit" and rows[0]["reason"] == "task_error"
    assert check_task_config("arc_easy", str(LM_TASKS / YAML["arc_easy"])) is None


def test_a_split_missing_from_the_mirror_is_a_task_error(tmp_path):
    unit = Unit(task="arc_easy", split="train", role="seed", start=0, end=None,
                yaml_path=str(LM_TASKS / YAML["arc_easy"]))
    rows = list(process_unit(unit, str(tmp_path)))
    assert rows[0]["reason"] == "task_error" and "no split" in rows[0]["detail"]


# ---- issue 11 J: seeds get the option checks generated items get --------------------------------

def _mmlu(choices, answer, question="Which bone is the longest?"):
    return {"question": question, "subject": "anatomy", "choices": choices, "answer": answer}


@pytest.mark.parametrize(
    "doc, reason",
    [
        (_mmlu(["#15", "#16", "#17", ""], 3), "empty_choice"),
        (_mmlu(["humerus", "", "femur", "tibia"], 2), "empty_choice"),
        (_mmlu(["humerus", "femur", "tibia", "  "], 1), "empty_choice"),
        (_mmlu(["Employee rights", "Employee rights", "Employer duties", "Employee duties"], 3), "duplicate_choices"),
        (_mmlu(["Paris", "London", "Paris", "Rome"], 0), "duplicate_choices"),
        (_mmlu(["0.015 joule.", "0.15 joule.", "0.015 joule", "1.15 joule."], 1), "duplicate_choices"),
    ],
    ids=["empty_gold", "empty_middle", "blank_last", "duplicate", "duplicate_gold", "duplicate_final_period"],
)
def test_seeds_with_empty_or_duplicate_options_are_quarantined(doc, reason, mirror):
    renderer = get_renderer(source("mmlu_anatomy", mirror))
    result = renderer.normalize(doc, "mcq", heldout=False)
    assert not hasattr(result, "question"), f"expected quarantine, got {result}"
    assert result.reason == reason, result.detail


@pytest.mark.parametrize(
    "task, doc",
    [
        ("arc_easy", _arc(choices={"text": ["iron", "", "wood"], "label": ["A", "B", "C"]})),
        ("arc_easy", _arc(choices={"text": ["iron", "wood", "iron"], "label": ["A", "B", "C"]})),
    ],
)
def test_option_checks_hold_for_every_choice_task(task, doc, mirror):
    result = get_renderer(source(task, mirror)).normalize(doc, FORMATS[task], heldout=False)
    assert result.reason in ("empty_choice", "duplicate_choices")


def test_options_are_read_within_their_line_and_never_shift(mirror):
    """Held-out rows keep flawed options (decontamination needs every benchmark question), so
    they show what was read: option texts stay in their own slots."""
    renderer = get_renderer(source("mmlu_anatomy", mirror))
    n = renderer.normalize(_mmlu(["humerus", "", "femur", "tibia"], 2), "mcq", heldout=True)
    assert n.choices == ["humerus", "", "femur", "tibia"]
    assert (n.answer_index, n.answer_text) == (2, "femur")
    n = renderer.normalize(_mmlu(["#15", "#16", "#17", ""], 1), "mcq", heldout=True)
    assert n.choices == ["#15", "#16", "#17", ""] and n.answer_text == "#16"
    gone = renderer.normalize(_mmlu(["#15", "#16", "#17", ""], 3), "mcq", heldout=True)
    assert gone.reason == "empty_answer"  # never "Answer:" from the next prompt line


def test_options_that_differ_in_case_or_sign_are_different_options(mirror):
    renderer = get_renderer(source("mmlu_anatomy", mirror))
    for choices in (["WW or ww", "WW or Ww", "WW only", "Ww only"], ["1", "-1", "i", "-i"], ["2", "II", "I", "ii"]):
        n = renderer.normalize(_mmlu(choices, 1), "mcq", heldout=False)
        assert n.choices == choices and n.answer_text == choices[1]


@pytest.mark.parametrize(
    "prompt, expected",
    [
        ("Q?\nA. #15\nB. #16\nC. #17\nD.\nAnswer:", ["#15", "#16", "#17", ""]),
        ("Q?\nA. humerus\nB. \nC. femur\nD. tibia\nAnswer:", ["humerus", "", "femur", "tibia"]),
        ("Q?\n(A) red\n\n(B) blue\n\nAnswer:", ["red", "blue"]),
        ("Steps:\nA. mix\nB. bake\nWhich comes first?\nA. mixing\nB. baking\nAnswer:", ["mixing", "baking"]),
        ("Q?\nA: one\nB: two\nAnswer:", ["one", "two"]),
    ],
    ids=["empty_last", "empty_middle", "blank_lines", "labels_in_question", "colon_labels"],
)
def test_letter_options_from_prompt_lines(prompt, expected):
    assert resolve_letter_choices(["A", "B", "C", "D"][:len(expected)], {}, prompt) == expected


def test_gsm_final_answer_is_read_within_its_line():
    assert split_final_answer("Work: 2+2=4\n#### 4\nNote: checked twice") == ("Work: 2+2=4\nNote: checked twice", "4")
    assert split_final_answer("Work\n####\n7") == (None, "Work\n####\n7")  # no answer on the marker line
    assert split_final_answer("First try #### 5\nSecond try\n#### 6")[1] == "6"


# ---- issue 11 K: a target naming several gold answers ----------------------------------------

MULTI_TASK = """\
task: toy_multi_gold
dataset_path: toy/multi
output_type: multiple_choice
training_split: train
test_split: test
doc_to_text: "Question: {{question}}\\nAnswer:"
doc_to_choice: "{{options}}"
doc_to_target: "{{gold}}"
"""
MULTI_ROWS = [
    {"question": "Which are primary colours?", "options": ["red", "green", "blue", "black"], "gold": [0, 2]},
    {"question": "Which is a metal?", "options": ["iron", "wood", "glass", "wool"], "gold": [0]},
    {"question": "Which is a metal (twice)?", "options": ["iron", "wood", "glass", "wool"], "gold": [0, 0]},
    {"question": "Name the capital of France.", "options": ["Paris", "paris, france"], "gold": [0, 1]},
    {"question": "Which numbers are even?", "options": ["one", "two", "three", "four"], "gold": [3, 1]},
]


def _multi_unit(tmp_path, role="seed", answer_format=None):
    tasks = tmp_path / "tasks"
    tasks.mkdir(exist_ok=True)
    (tasks / "multi.yaml").write_text(MULTI_TASK)
    _write_jsonl(tmp_path / "hf/toy/multi/default/train.jsonl", MULTI_ROWS)
    _write_jsonl(tmp_path / "hf/toy/multi/default/test.jsonl", MULTI_ROWS)
    unit = Unit(task="toy_multi_gold", split="train" if role == "seed" else "test", role=role, start=0,
                end=None, yaml_path=str(tasks / "multi.yaml"), answer_format=answer_format)
    rows = list(process_unit(unit, str(tmp_path / "hf")))
    assert rows[-1]["kind"] == "unit" and rows[-1]["rows_in"] == len(MULTI_ROWS)
    return {r["doc_index"]: r for r in rows if r["kind"] != "unit"}


@pytest.mark.parametrize("answer_format", [None, "mcq"], ids=["no_catalog_format", "mcq"])
def test_several_gold_options_are_quarantined_as_multiple_gold(tmp_path, answer_format):
    rows = _multi_unit(tmp_path, answer_format=answer_format)
    for i in (0, 4):
        assert rows[i]["kind"] == "quarantine" and rows[i]["reason"] == "multiple_gold", rows[i]
    assert json.loads(rows[0]["source_record"])["gold"] == [0, 2]
    for i in (1, 2):  # one distinct gold: an ordinary mcq seed
        assert rows[i]["kind"] == "seed" and rows[i]["answer_format"] == "mcq"
        assert (rows[i]["answer_index"], rows[i]["answer_text"]) == (0, "iron")
        assert rows[i]["choices"] == ["iron", "wood", "glass", "wool"]


def test_every_option_gold_is_an_open_question_with_accepted_answers(tmp_path):
    rows = _multi_unit(tmp_path)
    seed = rows[3]  # webqs-style: the options are the accepted answers
    assert seed["kind"] == "seed" and seed["answer_format"] == "short_text"
    assert seed["choices"] == ["Paris", "paris, france"] and seed["answer_text"] == "Paris"
    assert seed["answer_index"] is None


def test_open_format_keeps_every_gold_answer(tmp_path):
    rows = _multi_unit(tmp_path, answer_format="short_text")
    assert rows[0]["kind"] == "seed" and rows[0]["choices"] == ["red", "blue"]
    assert rows[0]["answer_text"] == "red" and rows[0]["answer_index"] is None
    assert rows[4]["choices"] == ["four", "two"]  # lm-eval's order: the first listed gold first


@pytest.mark.parametrize(
    "target, golds",
    [([0, 2], [0, 2]), ([2, 2], [2]), (["blue", "red"], [2, 0]), (["red", 0], [0]), ("1", [1]), (1, [1]),
     ([True], [1])],
)
def test_gold_indices(target, golds):
    assert _gold_indices(target, ["red", "green", "blue"]) == golds


@pytest.mark.parametrize("target, reason", [([], "empty_answer"), ([0, 5], "answer_index_out_of_range"),
                                            (["red", "pink"], "answer_not_in_choices")])
def test_gold_indices_errors(target, reason):
    with pytest.raises(RenderError) as err:
        _gold_indices(target, ["red", "green", "blue"])
    assert err.value.reason == reason


def test_heldout_keeps_several_gold_options_for_decontamination(tmp_path):
    rows = _multi_unit(tmp_path, role="heldout", answer_format="mcq")
    held = rows[0]
    assert held["kind"] == "heldout" and held["choices"] == ["red", "green", "blue", "black"]
    assert held["answer_index"] is None and held["answer_text"].split("\n") == ["red", "blue"]
    assert held["decontamination_text"] == "Question: Which are primary colours?\nAnswer:"
