"""Generated items that are their seed again: `copies_seed_question`, `seed_with_answer_changed`.

Issue 29: a small model answered "write a new item like this seed" with the seed's own question,
the passage shortened and the gold answer flipped. An item that repeats a seed's question is not a
new item; one that repeats it with another answer contradicts known gold. `exact_dup` does not see
it (the passage and the answer differ from the seed's, so the dedup keys differ).

Keys (both through `udfs.textnorm.normalize_text`, the one normalization curate's exact_dup,
near_dup and contamination compare on, so case, spacing, punctuation and number format never make a
copy new):
- `question_key(question)`: the question alone, never its passage (`context`) or options;
- `body_key(context, choices)`: what a question is asked *of*: the passage when there is one, else
  the options as a set (sorted), else "" (the question is the whole item).

Frames, measured from the seeds themselves (`frame_keys`): some tasks ask one question of many
passages or option sets (SocialIQA's "What will Others want to do next?", a reading task's "Which
is true?", ARC-Easy's "Which is an example of a chemical reaction?" with three different option
sets). Such a question is a frame: a new item may ask it of new content. A question key is a frame
of a task when at least `FRAME_MIN_SEEDS` of the task's seeds ask it of pairwise different bodies
(seeds that repeat question *and* body are duplicates of one item, not a frame: MMLU
abstract_algebra has one question three times with the same options). The default 3 is measured on
the benchmark mirror (/work/shared/data/hf, train splits; MMLU per subject, test split):
BoolQ 9427 seeds, GSM8K 7473, WinoGrande 10234, WebQuestions 3778: no question asked of >= 2
different bodies more than twice, so no frames, and a BoolQ item that repeats its seed's question is
always a copy; ARC-Easy: one frame ("which is an example of a chemical reaction", 3 option sets);
MMLU: "which of the following is true" (4), "which of the following statements is correct" (6).
A pair of seeds sharing a question (ARC-Easy has 4, MMLU 46) is as often one fact asked twice
("how many times does earth rotate on its axis in one day") as a frame, so 2 is not enough evidence.

The decision for one generated item (`copy_decision`), given its own seed and the index of its
task's seeds (`SeedIndex`):
1. its question key is its own seed's and the question is not a frame: it fails —
   `seed_with_answer_changed` when its body is taken from the seed's (`body_taken_from`: the same
   passage, or one kept/shortened/padded from the other) and its answer differs from the seed's gold
   (`answers_differ`), else `copies_seed_question`;
2. its question key is a frame: the body decides: a body taken from the body of a seed that asks the
   question (its own seed first) fails as in 1, any other body passes (`new_body_for_frame`);
3. its question key is another seed's of the task (not a frame): `copies_seed_question`;
4. otherwise it passes (`new_question`).
Evidence names the seed (`seed_id`), whether the question is a frame and how many seeds share it.
Pure, deterministic; a task's index is built once (`SeedIndex.build`) and serves every item.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from schemas.answer_formats import BOOLEAN, NUMERIC, SHORT_TEXT
from udfs.textnorm import normalize_text
from udfs.verification import answer_key

FRAME_MIN_SEEDS = 3
# A body is "taken from" another when this share of its word 3-grams is in the other's: a passage
# cut short (a prefix, a middle cut) or padded keeps nearly all of them; a new passage on the same
# topic shares few (measured on BoolQ train: 3000 random pairs of seed passages, max 0.125, p99 0.024).
BODY_CONTAINMENT = 0.8
_SHINGLE = 3

COPIES_SEED_QUESTION = "copies_seed_question"
SEED_WITH_ANSWER_CHANGED = "seed_with_answer_changed"
NEW_QUESTION = "new_question"
NEW_BODY_FOR_FRAME = "new_body_for_frame"
NO_QUESTION = "no_question"
FAILING_REASONS = (COPIES_SEED_QUESTION, SEED_WITH_ANSWER_CHANGED)


def question_key(question: Any) -> str:
    """The comparison form of a question without its passage: `normalize_text(question)`."""
    return normalize_text(question)


def body_key(context: Any, choices: Sequence[Any] | None) -> str:
    """What a question is asked of, normalized: the passage when non-blank, else the options as a
    sorted set joined by U+001F, else ""."""
    passage = normalize_text(context)
    if passage:
        return passage
    options = sorted({normalize_text(c) for c in choices or [] if normalize_text(c)})
    return "\x1f".join(options)


def _shingles(text: str) -> set[tuple[str, ...]]:
    words = text.split()
    if len(words) < _SHINGLE:
        return {tuple(words)} if words else set()
    return {tuple(words[i:i + _SHINGLE]) for i in range(len(words) - _SHINGLE + 1)}


def body_overlap(a: str, b: str) -> float:
    """How much of one body key is taken from the other: 1.0 when equal, else the larger of the two
    containments of word 3-grams (|A∩B|/|A|, |A∩B|/|B|); option sets (U+001F-joined) compare as
    sets of options. 0.0 when either is empty and the other is not."""
    if a == b:
        return 1.0
    if not a or not b:
        return 0.0
    if "\x1f" in a or "\x1f" in b:
        sa, sb = set(a.split("\x1f")), set(b.split("\x1f"))
    else:
        sa, sb = _shingles(a), _shingles(b)
    shared = len(sa & sb)
    return max(shared / len(sa), shared / len(sb)) if sa and sb else 0.0


def body_taken_from(a: str, b: str, threshold: float = BODY_CONTAINMENT) -> bool:
    """Whether body key `a` is `b` kept, shortened or padded (`body_overlap` >= threshold)."""
    return body_overlap(a, b) >= threshold


def _answer_form(answer_format: Any, answer_text: Any, answer_index: Any, choices: Any) -> str:
    if answer_format in (BOOLEAN, NUMERIC, SHORT_TEXT):
        key = answer_key(answer_format, answer_text, answer_index, choices)
        if key is not None:
            return key
    return normalize_text(answer_text)


def answers_differ(item: Mapping[str, Any], seed: Mapping[str, Any]) -> bool:
    """Whether the item's answer is not the seed's gold: `udfs.verification.answer_key` for boolean,
    numeric and short-text answers ("Yes"/"yes", "18.0"/"18"), the normalized answer text otherwise
    (an mcq option is compared by its text: the item's options may be in another order)."""
    fmt = item.get("answer_format") or seed.get("answer_format")
    return _answer_form(fmt, item.get("answer_text"), item.get("answer_index"), item.get("choices")) != \
        _answer_form(fmt, seed.get("answer_text"), seed.get("answer_index"), seed.get("choices"))


def frame_keys(seeds: Iterable[Mapping[str, Any]], min_seeds: int = FRAME_MIN_SEEDS) -> frozenset[str]:
    """The question keys of one task's seeds (rows with `question`, `context`, `choices`) that are
    frames: asked by at least `min_seeds` seeds of pairwise different bodies (`body_key`)."""
    bodies: dict[str, set[str]] = {}
    for seed in seeds:
        key = question_key(seed.get("question"))
        if key:
            bodies.setdefault(key, set()).add(body_key(seed.get("context"), seed.get("choices")))
    return frozenset(k for k, b in bodies.items() if len(b) >= min_seeds)


@dataclass(frozen=True)
class _SeedView:
    seed_id: str
    body: str
    answer_format: Any
    answer_text: Any
    answer_index: Any
    choices: Any

    def as_record(self) -> dict:
        return {"answer_format": self.answer_format, "answer_text": self.answer_text,
                "answer_index": self.answer_index, "choices": self.choices}


@dataclass(frozen=True)
class SeedIndex:
    """One task's seeds by question key, and the task's frames (`frame_keys`).

    Built from rows of the `seeds` table of ONE task: `seed_id`, `question`, `context`, `choices`,
    `answer_text`, `answer_index`, `answer_format` (all seeds of the task, not only the sampled ones:
    a copy of any of them is a copy)."""

    by_question: Mapping[str, tuple[_SeedView, ...]]
    frames: frozenset[str]
    min_seeds: int = FRAME_MIN_SEEDS
    _seeds: Mapping[str, _SeedView] = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, seeds: Iterable[Mapping[str, Any]], min_seeds: int = FRAME_MIN_SEEDS) -> "SeedIndex":
        rows = list(seeds)
        grouped: dict[str, list[_SeedView]] = {}
        views: dict[str, _SeedView] = {}
        for s in rows:
            view = _SeedView(str(s.get("seed_id")), body_key(s.get("context"), s.get("choices")),
                             s.get("answer_format"), s.get("answer_text"), s.get("answer_index"), s.get("choices"))
            views[view.seed_id] = view
            key = question_key(s.get("question"))
            if key:
                grouped.setdefault(key, []).append(view)
        by_question = {k: tuple(sorted(v, key=lambda x: x.seed_id)) for k, v in grouped.items()}
        return cls(by_question, frame_keys(rows, min_seeds), min_seeds, views)


@dataclass(frozen=True)
class CopyDecision:
    """The verdict on one item: `passed`, `reason` (one of the module's reason constants) and the
    evidence: the seed it copies (`seed_id`, None when it passes), whether its question is a frame,
    how many seeds ask the question, and the body overlap with that seed."""

    passed: bool
    reason: str
    seed_id: str | None = None
    frame: bool = False
    seeds_with_question: int = 0
    body_overlap: float | None = None

    def evidence(self) -> dict:
        return {"seed_id": self.seed_id, "frame": self.frame, "seeds_with_question": self.seeds_with_question,
                "body_overlap": None if self.body_overlap is None else round(self.body_overlap, 3)}


def _copy(item: Mapping[str, Any], body: str, seed: _SeedView, frame: bool, n: int) -> CopyDecision:
    overlap = body_overlap(body, seed.body)
    changed = overlap >= BODY_CONTAINMENT and answers_differ(item, seed.as_record())
    return CopyDecision(False, SEED_WITH_ANSWER_CHANGED if changed else COPIES_SEED_QUESTION,
                        seed.seed_id, frame, n, overlap)


def copy_decision(item: Mapping[str, Any], index: SeedIndex) -> CopyDecision:
    """The copy rule for one generated item (`seed_id`, `question`, `context`, `choices`,
    `answer_text`, `answer_index`, `answer_format`) against the `SeedIndex` of its task; the item's
    own seed is `item["seed_id"]` (see the module docstring for the rule)."""
    key = question_key(item.get("question"))
    if not key:
        return CopyDecision(True, NO_QUESTION)
    same = index.by_question.get(key, ())
    if not same:
        return CopyDecision(True, NEW_QUESTION)
    frame = key in index.frames
    body = body_key(item.get("context"), item.get("choices"))
    own_id = str(item.get("seed_id")) if item.get("seed_id") is not None else None
    ordered = sorted(same, key=lambda s: (s.seed_id != own_id, s.seed_id))  # its own seed first
    if not frame:
        return _copy(item, body, ordered[0], False, len(same))
    for seed in ordered:
        if body_taken_from(body, seed.body):
            return _copy(item, body, seed, True, len(same))
    return CopyDecision(True, NEW_BODY_FOR_FRAME, None, True, len(same))


def copy_decisions(items: Iterable[Mapping[str, Any]], seeds: Iterable[Mapping[str, Any]],
                   min_seeds: int = FRAME_MIN_SEEDS) -> list[CopyDecision]:
    """`copy_decision` of every item, each against the seeds of its own `task` (one index per task)."""
    by_task: dict[Any, list[Mapping[str, Any]]] = {}
    for s in seeds:
        by_task.setdefault(s.get("task"), []).append(s)
    indexes = {task: SeedIndex.build(rows, min_seeds) for task, rows in by_task.items()}
    empty = SeedIndex.build([], min_seeds)
    return [copy_decision(item, indexes.get(item.get("task"), empty)) for item in items]
