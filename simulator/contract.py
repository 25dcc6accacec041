"""What the simulator answers: deterministic JSON for taskseed's own prompts (pure functions).

The contract (docs/prompt-contract.md): the system message's first line names
`taskseed-prompt: <stage>/<answer_format>/<prompt_version>` and the last user message ends with the
task input as JSON between `<input>` and `</input>`. `parse_contract` reads it; `sim_answer`
returns the assistant content for a request body: a "similar question" for generation (numbers
changed, content words swapped, the answer set to `sim_truth`), knowledge + reasoning + final
answer for enrichment, plus the content faults the filters must catch (wrong answers, duplicate
items, copies of held-out items; issue 29: the seed again with its gold changed, a sentence of the
prompt in the item, a trivial self-referential item) at the rates of `SimSettings`. Transport faults (errors,
truncation, latency) are the server's business (simulator/server.py).
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

from schemas.answer_formats import BOOLEAN, CODE, LABEL, MCQ, NUMERIC, SHORT_TEXT
from simulator.rewording import reword
from simulator.translations import is_translation
from simulator.settings import SimSettings, hash64, uniform01


def _norm(text: Any) -> str:
    return " ".join(str(text or "").lower().split())


# ---------------------------------------------------------------------------------------------
# The truth function shared by generation and enrichment
# ---------------------------------------------------------------------------------------------
_STOP = frozenset(
    "the a an and or of to in on for with by from at as is are was were be been which what who "
    "whom whose when where why how that this these those it its into than then there their they "
    "does did do can could would should will not no yes".split()
)
_NUM = re.compile(r"-?\d+(?:\.\d+)?")
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]{3,}")


def sim_truth(
    question: str,
    answer_format: str,
    choices: list[str] | None = None,
    label_set: list[str] | None = None,
) -> str:
    """The simulator's "correct" answer: a pure function of the normalized question text.

    Choice-based formats pick from the *sorted* options, so shuffling choices never changes the
    truth; boolean answers yes/no; numeric sums the numbers in the question; text formats pick a
    content word. Generation sets an item's answer to this and enrichment answers with it, so
    majority voting agrees with generation unless a wrong answer was injected.
    """
    q = _norm(question)
    h = hash64("truth", q)
    if answer_format == LABEL and label_set:
        options = sorted(label_set, key=_norm)
        return options[h % len(options)]
    if answer_format == BOOLEAN:
        return "yes" if h % 2 == 0 else "no"
    if choices:
        options = sorted(choices, key=_norm)
        return options[h % len(options)]
    if answer_format == NUMERIC:
        numbers = [float(n) for n in _NUM.findall(q)]
        total = sum(numbers) if numbers else float(h % 100)
        return str(int(total)) if total == int(total) else f"{total:.2f}"
    words = sorted({w for w in _WORD.findall(q) if w not in _STOP})
    if answer_format == CODE:
        return f"def solution(x):\n    return x * {h % 9 + 2}\n"
    if not words:
        return "unknown"
    word = words[h % len(words)]
    return word if answer_format == SHORT_TEXT else f"The answer turns on {word}."


def _other_answer(truth: str, answer_format: str, choices: list[str] | None,
                  label_set: list[str] | None, salt: int) -> str:
    """A deliberately wrong answer (content fault the verification filter must catch)."""
    if answer_format == BOOLEAN:
        return "no" if truth == "yes" else "yes"
    options = (label_set if answer_format == LABEL and label_set else choices) or []
    others = [o for o in options if _norm(o) != _norm(truth)]
    if others:
        return sorted(others, key=_norm)[salt % len(others)]
    if answer_format == NUMERIC:
        try:
            return str(int(float(truth)) + 1 + salt % 7)
        except ValueError:
            return "0"
    return f"not {truth}"


# ---------------------------------------------------------------------------------------------
# Surface rewriting for "similar questions"
# ---------------------------------------------------------------------------------------------
_POOL = (
    "river mountain battery engine garden planet metal crystal forest animal plant energy "
    "market library teacher student island bridge signal window machine season weather farmer "
    "village ocean desert circuit magnet protein language history painter doctor village"
).split()
_TOKEN = re.compile(r"\d+(?:\.\d+)?|[A-Za-z][A-Za-z'-]*|[^A-Za-z\d]+")


def _rewrite(text: str, rng: random.Random, pool: list[str], rate: float) -> str:
    """New surface text with the same frame: numbers changed, ~`rate` of content words swapped."""
    out = []
    changed = False
    for tok in _TOKEN.findall(text):
        if tok[0].isdigit():
            digits = len(tok.split(".")[0])
            new = str(rng.randint(10 ** (digits - 1) if digits > 1 else 1, 10**digits - 1 + (digits == 1) * 8))
            changed = changed or new != tok
            out.append(new)
        elif tok[0].isalpha() and len(tok) > 3 and tok.lower() not in _STOP and rng.random() < rate:
            new = pool[rng.randrange(len(pool))]
            if tok[0].isupper():
                new = new[:1].upper() + new[1:]
            changed = changed or new.lower() != tok.lower()
            out.append(new)
        else:
            out.append(tok)
    result = "".join(out)
    if not changed:
        result = f"{pool[rng.randrange(len(pool))].capitalize()} case: {result}"
    return result


def _word_pool(*texts: Any) -> list[str]:
    words = {w.lower() for t in texts if t for w in _WORD.findall(str(t)) if w.lower() not in _STOP}
    return sorted(words | set(_POOL))


# ---------------------------------------------------------------------------------------------
# Contract parsing and answering (pure)
# ---------------------------------------------------------------------------------------------
_HEADER = re.compile(r"^taskseed-prompt:\s*(generate|enrich|judge)/([a-z_]+)/(\S+)\s*$")


def parse_contract(messages: list[dict]) -> tuple[str, str, str, dict] | None:
    """(stage, answer_format, prompt_version, input) if the messages follow the contract."""
    if not messages or not isinstance(messages, list):
        return None
    system = messages[0]
    if not isinstance(system, dict) or system.get("role") != "system":
        return None
    first_line = str(system.get("content") or "").split("\n", 1)[0].strip()
    match = _HEADER.match(first_line)
    if not match:
        return None
    user = next((m for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"), None)
    text = str((user or {}).get("content") or "")
    start, end = text.rfind("<input>"), text.rfind("</input>")
    if start < 0 or end < start:
        return None
    try:
        payload = json.loads(text[start + len("<input>"):end])
    except ValueError:
        return None
    if not isinstance(payload, dict):
        return None
    return match.group(1), match.group(2), match.group(3), payload


def load_heldout(path: str | None) -> list[dict]:
    """Held-out items (JSONL of {question, choices, answer_text, ...}) generation may copy."""
    if not path:
        return []
    items = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line:
            row = json.loads(line)
            if row.get("question"):
                items.append(row)
    return items


def load_known_answers(path: str | None) -> dict[str, str]:
    """{normalized question: answer} from a JSONL of {question, answer} (`SimSettings.known_answers_file`):
    the answers the simulator's enrichment "knows" (the gold of seeds, for calibration, issue 26)."""
    if not path:
        return {}
    known = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            if row.get("question") and row.get("answer") is not None:
                known[_norm(row["question"])] = str(row["answer"])
    return known


# ---------------------------------------------------------------------------------------------
# Content faults of issue 29 (what a small real model got past curation)
# ---------------------------------------------------------------------------------------------
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n")
_LIST_MARK = re.compile(r"^\s*(?:[-*]|\d+[.)])\s+")
PROMPT_LEAK_MIN_WORDS = 10


def prompt_sentences_received(messages: list[dict]) -> list[str]:
    """The sentences of the system message a request carried (its header line left out, list
    bullets dropped) with at least `PROMPT_LEAK_MIN_WORDS` words: what a leak repeats. Read from
    the prompt as received (placeholders filled in), not from the template files."""
    system = next((str(m.get("content") or "") for m in messages
                   if isinstance(m, dict) and m.get("role") == "system"), "")
    text = system.split("\n", 1)[1] if "\n" in system else ""
    pieces = (_LIST_MARK.sub("", p).strip() for p in _SENTENCE_END.split(text))
    return [p for p in pieces if len(p.split()) >= PROMPT_LEAK_MIN_WORDS]


def shorten_passage(text: str) -> str:
    """A passage cut short, as a model that "rewrites" by deleting does: the first half of its
    sentences (rounded up), or of its words (at least 3) when it is one sentence."""
    sentences = [p for p in re.split(r"(?<=[.!?])\s+", text.strip()) if p]
    if len(sentences) > 1:
        return " ".join(sentences[: (len(sentences) + 1) // 2])
    words = text.split()
    return " ".join(words[: max(3, (len(words) + 1) // 2)])


def _seed_copy(seed: dict, fmt: str, label_set: list[str] | None, s: int, variant_key: str) -> dict:
    """The seed's own question with its gold answer changed (`_other_answer`: a flipped yes/no,
    another option, another number); its passage kept or (every other draw) `shorten_passage`d;
    its options kept as they are."""
    context = seed.get("context")
    if context and hash64(s, "seed-copy-cut", variant_key) % 2:
        context = shorten_passage(str(context))
    choices = list(seed.get("choices") or []) or None
    gold = str(seed.get("answer_text") or "")
    answer = _other_answer(gold, fmt, choices, label_set, hash64(s, "seed-copy-other", variant_key))
    return {"question": seed.get("question"), "context": context, "choices": choices, "answer": answer}


SELF_REFERENCE_PASSAGE = "This passage is the passage of this question."


def _self_reference(seed: dict, fmt: str, label_set: list[str] | None) -> dict:
    """A trivial item about itself, one fixed shape per format (answerable from its own wording, no
    content): boolean "Is this question a question?" (yes); numeric "How many words are in this
    question?" (7); mcq/label "Which option is the answer to this question?" (the seed's options or
    labels, the first in sorted order); code "Write a function that returns this question."; text
    formats "What is the first word of this question?" ("What"). A seed with a passage gets
    `SELF_REFERENCE_PASSAGE`, one without none."""
    context = SELF_REFERENCE_PASSAGE if seed.get("context") else None
    choices = list(seed.get("choices") or []) or None
    if fmt == BOOLEAN:
        return {"question": "Is this question a question?", "context": context, "choices": choices, "answer": "yes"}
    if fmt == NUMERIC:
        return {"question": "How many words are in this question?", "context": context, "choices": None,
                "answer": "7"}
    if fmt in (MCQ, LABEL) and (choices or label_set):
        options = sorted(label_set if fmt == LABEL and label_set else choices or [], key=_norm)
        return {"question": "Which option is the answer to this question?", "context": context,
                "choices": choices, "answer": options[0]}
    if fmt == CODE:
        return {"question": "Write a function that returns this question.", "context": context, "choices": None,
                "answer": 'def solution():\n    return "Write a function that returns this question."\n'}
    return {"question": "What is the first word of this question?", "context": context, "choices": None,
            "answer": "What"}


def _generate(inp: dict, answer_format: str, settings: SimSettings, variant_key: str,
              content_key: str, heldout: list[dict], messages: list[dict] | None = None,
              planted: Counter | None = None) -> dict:
    seed = inp.get("seed") or {}
    label_set = inp.get("label_set")
    fmt = inp.get("answer_format") or answer_format
    s = settings.seed
    planted = planted if planted is not None else Counter()
    # A duplicate answers as if it were "the" canonical sample of this seed prompt, so every
    # sample that draws a duplicate returns the very same item.
    if uniform01(s, "dup", variant_key) < settings.duplicate_rate:
        variant_key = f"canonical:{content_key}"
        planted["duplicate"] += 1
    if heldout and uniform01(s, "heldout-paraphrase", variant_key) < settings.heldout_paraphrase_rate:
        n = len(seed.get("choices") or [])
        fitting = [h for h in heldout if len(h.get("choices") or []) == n] or heldout
        item = fitting[hash64(s, "pick-paraphrase", variant_key) % len(fitting)]
        planted["heldout_paraphrase"] += 1
        return {"question": reword(item["question"]), "context": item.get("context"),
                "choices": item.get("choices") or None, "answer": str(item.get("answer_text", ""))}
    if heldout and uniform01(s, "heldout", variant_key) < settings.heldout_copy_rate:
        n = len(seed.get("choices") or [])
        fitting = [h for h in heldout if len(h.get("choices") or []) == n] or heldout
        item = fitting[hash64(s, "pick", variant_key) % len(fitting)]
        planted["heldout_copy"] += 1
        return {"question": item["question"], "context": item.get("context"),
                "choices": item.get("choices") or None, "answer": str(item.get("answer_text", ""))}
    if seed.get("question") and uniform01(s, "seed-copy", variant_key) < settings.seed_copy_rate:
        planted["seed_copy"] += 1
        return _seed_copy(seed, fmt, label_set, s, variant_key)
    if uniform01(s, "self-reference", variant_key) < settings.self_reference_rate:
        planted["self_reference"] += 1
        return _self_reference(seed, fmt, label_set)
    leak = None
    if uniform01(s, "prompt-leak", variant_key) < settings.prompt_leak_rate:
        sentences = prompt_sentences_received(messages or [])
        leak = sentences[hash64(s, "prompt-leak-pick", variant_key) % len(sentences)] if sentences else None
    rng = random.Random(hash64(s, "gen", variant_key))
    pool = _word_pool(seed.get("question"), *[e.get("question") for e in inp.get("examples") or []])
    question = _rewrite(str(seed.get("question") or "What is the answer?"), rng, pool, 0.45)
    context = seed.get("context")
    if context:
        context = _rewrite(str(context), rng, pool, 0.3)
    seed_choices = list(seed.get("choices") or [])
    choices: list[str] | None
    if fmt == MCQ and seed_choices:
        n = int(inp.get("n_choices") or len(seed_choices))
        base = (seed_choices * (n // max(1, len(seed_choices)) + 1))[:n]
        choices, seen = [], set()
        for option in base:
            new = _rewrite(str(option), rng, pool, 0.5)
            while _norm(new) in seen:
                new = _rewrite(new, rng, pool, 1.0)
            seen.add(_norm(new))
            choices.append(new)
        rng.shuffle(choices)
    else:
        choices = seed_choices or None  # labels / yes-no keep the seed's label frame verbatim
    if leak is not None:
        # the prompt's sentence opens the passage when the item has one, else the question
        planted["prompt_leak"] += 1
        if context:
            context = f"{leak} {context}"
        else:
            question = f"{leak} {question}"
    answer = sim_truth(question, fmt, choices, label_set)
    if uniform01(s, "wrong-gen", variant_key) < settings.wrong_answer_rate:
        answer = _other_answer(answer, fmt, choices, label_set, hash64(s, "other", variant_key))
        planted["wrong_answer"] += 1
    return {"question": question, "context": context, "choices": choices, "answer": answer}


def _enrich(inp: dict, answer_format: str, settings: SimSettings, variant_key: str,
            planted: Counter | None = None, known: dict[str, str] | None = None) -> dict:
    item = inp.get("item") or {}
    fmt = inp.get("answer_format") or answer_format
    label_set = inp.get("label_set")
    question = str(item.get("question") or "")
    choices = item.get("choices") or None
    final = (known or {}).get(_norm(question)) or sim_truth(question, fmt, choices, label_set)
    if uniform01(settings.seed, "wrong-enrich", variant_key) < settings.wrong_answer_rate:
        final = _other_answer(final, fmt, choices, label_set, hash64(settings.seed, "other", variant_key))
        if planted is not None:
            planted["wrong_vote"] += 1
    words = [w for w in _WORD.findall(question) if w.lower() not in _STOP][:3] or ["the question"]
    return {
        "knowledge": f"Relevant background: the question involves {', '.join(words)}.",
        "reasoning": f"Consider what is asked about {words[0]}. Weighing the options, "
                     f"the best supported answer is {final}.",
        "final_answer": final,
    }


def _judge(inp: dict) -> dict:
    """The paraphrase judge: "same" when the candidate's question is the held-out question, or the
    held-out question reworded by `simulator.rewording.reword` (the rewording this simulator plants
    and the benchmark builds), compared after case and whitespace normalization, or one of the
    translations `simulator.translations` knows; "different" otherwise. A stand-in: it recognises
    only these rewordings and translations, never a free paraphrase."""
    candidate = str((inp.get("candidate") or {}).get("question") or "")
    heldout = str((inp.get("heldout") or {}).get("question") or "")
    same = bool(candidate.strip()) and (_norm(candidate) in {_norm(heldout), _norm(reword(heldout))}
                                        or is_translation(candidate, heldout))
    if same:
        return {"verdict": "same", "reason": "The candidate asks the held-out question in other words."}
    return {"verdict": "different", "reason": "The two items ask different things."}


def _from_schema(schema: Any) -> Any:
    """A minimal value satisfying a JSON schema (generic answer to non-contract prompts)."""
    if not isinstance(schema, dict):
        return "simulated"
    if "enum" in schema and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return _from_schema(schema[key][0])
    kind = schema.get("type", "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties") or {}
        return {k: _from_schema(v) for k, v in props.items()}
    if kind == "array":
        return [_from_schema(schema.get("items") or {})] * int(schema.get("minItems", 0))
    return {"string": "simulated", "integer": 0, "number": 0, "boolean": False, "null": None}.get(kind, "simulated")


def sim_answer(body: dict, settings: SimSettings, variant_key: str, content_key: str,
               heldout: list[dict] | None = None, planted: Counter | None = None,
               known: dict[str, str] | None = None) -> str:
    """The assistant message content for a request body (pure; no transport faults applied here).
    `known`: {normalized question: answer} enrichment answers with (`load_known_answers`).

    `planted`, when given, counts the content faults this answer carries, by kind: "duplicate",
    "heldout_paraphrase", "heldout_copy", "seed_copy", "self_reference", "prompt_leak",
    "wrong_answer" (generation), "wrong_vote" (enrichment)."""
    messages = body.get("messages") or []
    contract = parse_contract(messages)
    if contract is not None:
        stage, answer_format, _version, inp = contract
        if stage == "generate":
            obj = _generate(inp, answer_format, settings, variant_key, content_key, heldout or [], messages, planted)
        elif stage == "judge":
            obj = _judge(inp)
        else:
            obj = _enrich(inp, answer_format, settings, variant_key, planted, known)
        return json.dumps(obj, ensure_ascii=False)
    response_format = body.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        return json.dumps(_from_schema(schema))
    if response_format.get("type") == "json_object":
        return json.dumps({"answer": "simulated"})
    return "This is a simulated reply from the taskseed simulator (not a model)."


def sim_thought(body: dict) -> str:
    """Simulated reasoning text for `body` (no braces, so it never looks like an answer object)."""
    contract = parse_contract(body.get("messages") or [])
    what = f"a {contract[0]} request for a {contract[1]} item" if contract else "the request"
    return (f"Okay, this is {what}. Let me work through it step by step, check the constraints, "
            "and then write the answer in the requested format.")


def approx_tokens(text: str) -> int:
    return len(text) // 4 + 1
