"""Issue 14, bad seed records: a line that is not JSON, not an object, not UTF-8, or a record whose
rendered text is 1 MB becomes one quarantine row with a reason; every other record of the split
is still a seed, and the unit's rows_in counts every line (seeds + quarantined = lines).

Breakage caught: before this, one malformed line made `datasets.load_dataset` fail the whole split
("task_error: ValueError: Expected object or value"), losing every good record of the task; a 1 MB
field became a seed and then a ~250k-token generation prompt. No Spark: `process_unit` is what
each ingest executor runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from udfs.normalize import MAX_RECORD_CHARS, REASONS, Unit, process_unit

REPO = Path(__file__).resolve().parents[2]
ARC_LINES = (REPO / "demo/data/hf/allenai/ai2_arc/ARC-Easy/train.jsonl").read_text(encoding="utf-8").splitlines()


def _arc_yaml() -> str:
    import lm_eval

    return str(Path(lm_eval.__file__).parent / "tasks/arc/arc_easy.yaml")


BAD_LINES = {
    "truncated_json": (b'{"id": "cut", "question": "Which gas', "malformed_record"),
    "json_array": (b'["not", "an", "object"]', "malformed_record"),
    "json_string": (b'"just a string"', "malformed_record"),
    "trailing_garbage": (ARC_LINES[5].encode() + b" }}", "malformed_record"),
    "latin1_byte": (ARC_LINES[6].encode().replace(b'"question": "', b'"question": "Caf\xe9 ', 1), "not_utf8"),
    "lone_surrogate_bytes": (ARC_LINES[7].encode().replace(b'"question": "', b'"question": "\xed\xa0\x80 ', 1),
                             "not_utf8"),
    "nul_and_control_bytes": (b'\x00\x01{"id": 1}', "malformed_record"),
}


def _unit(start: int = 0, end: int | None = None) -> Unit:
    return Unit(task="arc_easy", split="train", role="seed", start=start, end=end, yaml_path=_arc_yaml(),
                answer_format="mcq")


def _write_split(root: Path, lines: list[bytes]) -> Path:
    split = root / "allenai/ai2_arc/ARC-Easy"
    split.mkdir(parents=True, exist_ok=True)
    (split / "train.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    (split / "test.jsonl").write_bytes(ARC_LINES[0].encode() + b"\n")
    return root


@pytest.mark.parametrize("kind", list(BAD_LINES))
def test_one_bad_line_is_quarantined_and_the_split_goes_on(tmp_path, kind):
    bad, reason = BAD_LINES[kind]
    good = [line.encode() for line in ARC_LINES[:4]]
    rows = list(process_unit(_unit(), str(_write_split(tmp_path, [*good[:2], bad, *good[2:]]))))
    seeds = [r for r in rows if r["kind"] == "seed"]
    quarantined = [r for r in rows if r["kind"] == "quarantine"]
    unit = rows[-1]
    assert unit["kind"] == "unit" and unit.get("reason") is None, unit  # not a task_error
    assert [json.loads(r["source_record"])["id"] for r in seeds] == [json.loads(g)["id"] for g in good]
    assert [(r["reason"], r["doc_index"]) for r in quarantined] == [(reason, 2)]
    assert reason in REASONS
    assert "train.jsonl line 3" in quarantined[0]["detail"]
    assert json.loads(quarantined[0]["source_record"])["text"]  # the raw line is kept to inspect
    assert unit["rows_in"] == len(seeds) + len(quarantined) == 5


def test_bad_lines_are_quarantined_once_across_shards(tmp_path):
    """A split read in shards reports its bad lines in the unit that starts it, not in every shard."""
    lines = [ARC_LINES[0].encode(), BAD_LINES["json_array"][0], ARC_LINES[1].encode(), BAD_LINES["latin1_byte"][0],
             *[line.encode() for line in ARC_LINES[2:6]]]
    mirror = str(_write_split(tmp_path, lines))
    rows = [r for start, end in ((0, 3), (3, 6), (6, None)) for r in process_unit(_unit(start, end), mirror)]
    assert sorted(r["reason"] for r in rows if r["kind"] == "quarantine") == ["malformed_record", "not_utf8"]
    assert len([r for r in rows if r["kind"] == "seed"]) == 6
    assert sum(r["rows_in"] for r in rows if r["kind"] == "unit") == len(lines)


@pytest.mark.parametrize("field, size", [("question", 1_000_000), ("choices", 1_000_000),
                                         ("question", MAX_RECORD_CHARS + 1)])
def test_a_megabyte_field_is_quarantined_as_oversized(tmp_path, field, size):
    record = json.loads(ARC_LINES[1])
    if field == "question":
        record["question"] = "Which is it? " + "x" * size
    else:
        record["choices"]["text"][0] = "y" * size
    lines = [ARC_LINES[0].encode(), json.dumps(record).encode(), ARC_LINES[2].encode()]
    rows = list(process_unit(_unit(), str(_write_split(tmp_path, lines))))
    assert [r["kind"] for r in rows] == ["seed", "quarantine", "seed", "unit"]
    assert rows[1]["reason"] == "oversized_record" and str(MAX_RECORD_CHARS) in rows[1]["detail"]


def test_a_long_but_ordinary_record_is_a_seed(tmp_path):
    """The size rule must not catch real long items (a passage of tens of thousands of characters)."""
    record = json.loads(ARC_LINES[1])
    record["question"] = "Read the passage. " + "word " * 20_000 + "Which is it?"
    rows = list(process_unit(_unit(), str(_write_split(tmp_path, [json.dumps(record).encode()]))))
    assert [r["kind"] for r in rows] == ["seed", "unit"]
