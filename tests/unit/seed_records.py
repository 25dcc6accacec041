"""Real benchmark records from the shared mirror, shaped like rows of the seeds table.

Only what the prompt/parsing tests need: a few first rows of ARC-Easy, GSM8K, BoolQ, WinoGrande
and WebQuestions, mapped to the normalized record the way each task's lm-eval config reads them
(semantic answer text, 0-based answer_index). The full normalizer lives in udfs/normalize.py.
"""

from __future__ import annotations

import json
import os
from itertools import islice
from pathlib import Path

from schemas.answer_formats import BOOLEAN, MCQ, NUMERIC, SHORT_TEXT
from udfs.hashing import stable_hash

REPO = Path(__file__).resolve().parents[2]
MIRROR = Path(os.environ.get("TASKSEED_SHARED_DATA", REPO.parent / "shared" / "data")).resolve() / "hf"


def _rows(relative: str, n: int) -> list[dict]:
    path = MIRROR / relative
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in islice(handle, n)]


def _record(task: str, index: int, answer_format: str, raw: dict, **fields) -> dict:
    record = {
        "task": task,
        "split": "train",
        "doc_index": index,
        "answer_format": answer_format,
        "context": None,
        "choices": None,
        "answer_index": None,
        "rationale": None,
        "source_record": json.dumps(raw, ensure_ascii=False),
        **fields,
    }
    record["seed_id"] = stable_hash("seed", task, "train", index)
    return record


def arc_easy(n: int = 3) -> list[dict]:
    seeds = []
    for i, raw in enumerate(_rows("allenai/ai2_arc/ARC-Easy/train.jsonl", n)):
        index = raw["choices"]["label"].index(raw["answerKey"])
        choices = raw["choices"]["text"]
        seeds.append(_record("arc_easy", i, MCQ, raw, question=raw["question"], choices=choices,
                             answer_index=index, answer_text=choices[index]))
    return seeds


def gsm8k(n: int = 3) -> list[dict]:
    seeds = []
    for i, raw in enumerate(_rows("openai/gsm8k/main/train.jsonl", n)):
        rationale, answer = raw["answer"].split("####")
        seeds.append(_record("gsm8k", i, NUMERIC, raw, question=raw["question"],
                             answer_text=answer.strip(), rationale=rationale.strip()))
    return seeds


def boolq(n: int = 3) -> list[dict]:
    seeds = []
    for i, raw in enumerate(_rows("aps/super_glue/boolq/train.jsonl", n)):
        choices = ["no", "yes"]
        seeds.append(_record("boolq", i, BOOLEAN, raw, question=raw["question"], context=raw["passage"],
                             choices=choices, answer_index=raw["label"], answer_text=choices[raw["label"]]))
    return seeds


def winogrande(n: int = 3) -> list[dict]:
    seeds = []
    for i, raw in enumerate(_rows("allenai/winogrande/winogrande_l/train.jsonl", n)):
        choices = [raw["option1"], raw["option2"]]
        index = int(raw["answer"]) - 1
        seeds.append(_record("winogrande", i, MCQ, raw, question=raw["sentence"], choices=choices,
                             answer_index=index, answer_text=choices[index]))
    return seeds


def webqs(n: int = 3) -> list[dict]:
    return [
        _record("webqs", i, SHORT_TEXT, raw, question=raw["question"], answer_text=raw["answers"][0])
        for i, raw in enumerate(_rows("stanfordnlp/web_questions/default/train.jsonl", n))
    ]


def nli_seed() -> dict:
    """A label-format seed. The mirror has no NLI training split, so this one is written by hand
    (RTE-style premise/hypothesis) and says so."""
    raw = {"premise": "The museum opened its new wing to the public on Saturday.",
           "hypothesis": "The museum has a new wing.", "label": "entailment", "note": "hand-written test record"}
    return _record("nli_handwritten", 0, "label", raw, question=raw["hypothesis"], context=raw["premise"],
                   choices=["entailment", "neutral", "contradiction"], answer_index=0, answer_text="entailment")


FAMILY = {"arc_easy": "arc", "gsm8k": "gsm8k", "boolq": "boolq", "winogrande": "winogrande",
          "webqs": "webqs", "nli_handwritten": "nli"}


def seed_rows(**counts: int) -> list[dict]:
    """Real records from the mirror as full `seeds` rows, e.g. seed_rows(arc_easy=2, gsm8k=1)."""
    from schemas.tables import SEEDS

    rows = []
    for task, n in counts.items():
        records = [nli_seed()] if task == "nli_handwritten" else globals()[task](n)
        rows.extend(records)
    for row in rows:
        row.update(task_family=FAMILY[row["task"]], license="CC-BY-4.0", license_class="permissive",
                   dataset_path="mirror", dataset_name=None)
    return [{c: row.get(c) for c in SEEDS.columns} for row in rows]


def broken_seed() -> dict:
    """An mcq seed without options: cannot be rendered, must land in quarantine as render_error."""
    from schemas.tables import SEEDS

    row = {c: None for c in SEEDS.columns}
    row.update(seed_id="broken-seed-0001", task="arc_easy", task_family="arc", split="train", doc_index=999,
               answer_format="mcq", question="Which one is it?", answer_text="this one")
    return row
