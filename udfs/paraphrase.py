"""The paraphrase judge's row logic (pure, no Spark): what is embedded, the judge prompt, its request
rows, and the parser of its verdicts. The Spark half is jobs/filters/paraphrase.py.

The method is NeMo-Skills' contamination check for its math data (after LMSYS's "Rethinking
Benchmark and Contamination for Language Models with Rephrased Samples", 2023, which showed that
rephrased and translated test items pass n-gram decontamination): embed every candidate and every
held-out item, retrieve each candidate's top-k most similar held-out items, and ask an LLM whether
each retrieved pair is the same question. Only pairs whose cosine similarity is at or above a floor
are judged, so the judge's cost is the number of such pairs, not candidates × held-out items.

- `embedding_text(question, choices)`: what both sides embed: the question, then the options
  (a passage is not embedded: a long shared passage would dominate the vector and make every
  question about it a neighbour; shared passages are the contamination filter's business).
- `judge_requests(pair, ...)`: one plan row per (candidate, held-out item) pair, temperature 0,
  rendered from the versioned template `udfs/prompts/judge_paraphrase.txt` with the contract of
  docs/prompt-contract.md (header `taskseed-prompt: judge/paraphrase/<version>`, `<input>` block
  with the candidate, the held-out item and its task). source_key = `pair_id(gen_id, heldout_id)`.
- `parse_verdict(text)`: "same" or "different" from messy output (JSON with the verdict under
  several names, booleans, fenced or wrapped in prose, or a bare word); anything else raises
  `OutputRejected` (reasons of udfs/parsing.py plus `no_verdict`, `ambiguous_verdict`) and the
  response goes to quarantine: a pair without a verdict is never called clean (the filter fails
  the item with reason `judge_unanswered`).
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import resources
from typing import Any, Mapping, Sequence

from schemas.llm_outputs import JUDGE_OUTPUT_SCHEMA, JUDGE_VERDICTS, response_format
from udfs.embeddings_e5 import SCRIPTS as E5_SCRIPTS
from udfs.embeddings_multilingual import SCRIPTS as MULTILINGUAL_SCRIPTS
from udfs.hashing import stable_hash
from udfs.llm_rows import _lineage, _parse_row, approx_prompt_tokens
from udfs.parsing import OutputRejected, ParseError, ValidationError, extract_json_object
from udfs.prompts import PromptTemplate, _input_block, compute_request_id, parse_template
from udfs.scripts import mostly_non_latin, non_latin_script

JUDGE = "judge"
JUDGE_FORMAT = "paraphrase"
SAME, DIFFERENT = JUDGE_VERDICTS
VERDICT_KIND = "verdict"  # `kind` of a usable parsed judge row
# plan-row fields the parser needs beyond the request columns
JUDGE_RECORD = ("pair_id", "gen_id", "heldout_id", "heldout_task", "heldout_split", "similarity", "split")
MAX_SHOWN_CHARS = 3000       # per text field shown to the judge (a passage can be a page long)
EST_COMPLETION_TOKENS = 40   # {"verdict": "same", "reason": "<one sentence>"}


def embedding_text(question: Any, choices: Sequence[Any] | None = None) -> str:
    """The text a candidate or held-out item is embedded as: the question, then its options, one per
    line ('' for an item without a question)."""
    parts = [str(question).strip()] if isinstance(question, str) and question.strip() else []
    options = [] if choices is None else list(choices)  # a list, or a numpy array from Arrow
    parts += [str(c).strip() for c in options if c is not None and str(c).strip()]
    return "\n".join(parts)


def stated_numbers(text: Any) -> frozenset[str]:
    """The numbers a question states, canonical (`udfs.parsing.numbers_in_text` after
    `udfs.textnorm.normalize_text`'s digit folding: `1,000` = `1000`, `٣` = `3`); empty for none."""
    if not isinstance(text, str) or not text:
        return frozenset()
    from udfs.parsing import numbers_in_text
    from udfs.textnorm import normalize_text

    return frozenset(numbers_in_text(normalize_text(text)))


def numbers_disagree(candidate_numbers: frozenset[str], heldout_numbers: frozenset[str]) -> bool:
    """Whether a pair cannot be the same question by the judge's own rule ("the same story with
    different numbers is different"): both questions state numbers and they share none. Such a
    pair is not sent to the judge (issue 25: GSM8K's templated word problems are near each other in
    embedding space; their numbers are not)."""
    return bool(candidate_numbers) and bool(heldout_numbers) and not (candidate_numbers & heldout_numbers)


def answers_agree(candidate_answer: Any, heldout_answer: Any, similarity: float | None = None, *,
                  floor: float, question_similarity: float | None = None,
                  joint_floor: float | None = None) -> bool | None:
    """Whether a retrieved pair's answers can be one answer, in any script: the second signal of the
    cross-lingual retrieval (issue 25), after the similarity of the questions and before the judge.
    A translated copy of a held-out item carries its answer (translated: `二氧化碳` for "carbon
    dioxide", `१००` for 100); a clean item on the same topic asks something else and has another
    answer (`Mg` against "Au", `水` against "hydrogen"). Measured in bench/bench_paraphrase.py.

    `candidate_answer`, `heldout_answer`: the two `answer_text`s. `similarity`: the cosine of the two
    answers' vectors from the cross-lingual model that retrieved the pair (USE multilingual v3, or
    multilingual-e5-small for the e5 route; the caller embeds them; None when it did not).
    Returns, in this order:
    - None (no signal: the caller keeps the pair for the judge) when either answer is missing or
      blank, or when the answers need the model and `similarity` is None;
    - True when both read as the same number under the vote's answer algebra
      (`udfs.verification.answer_key`, numeric: `\\frac{3}{4}` = `0.75` = `3/4`, `seven` = `7`);
    - both answers state numbers (`stated_numbers`: digits of every script folded, `1,000` = `1000`):
      True iff they share one (a translation keeps its numbers; units and words around them differ);
    - the same text after `udfs.textnorm.normalize_text` (case, width, marks of Latin letters), or
      both answers without letters of a non-Latin script and one containing the other as whole
      words (`Mg` in "Mg (magnesium)"): True; both without non-Latin letters otherwise: False
      (`Au` against `Mg`: nothing a model should be asked);
    - otherwise (a non-Latin side: a translated answer): `similarity` ≥ `floor`
      (`curate.paraphrase.answer_floor`) and, when `joint_floor` is given, `question_similarity` (the
      pair's cosine, of the same model) + `similarity` ≥ `joint_floor`
      (`curate.paraphrase.joint_floor`: a pair whose questions are only just similar needs answers
      that are clearly one; measured in bench/bench_paraphrase.py). ValueError when `joint_floor`
      is given without `question_similarity`."""
    if not (isinstance(candidate_answer, str) and candidate_answer.strip()
            and isinstance(heldout_answer, str) and heldout_answer.strip()):
        return None
    from udfs.verification import answer_key

    # the vote's answer algebra first (issue 25, item 10): `\frac{3}{4}` = `0.75`, `seven` = `7`
    cand_key, held_key = answer_key("numeric", candidate_answer), answer_key("numeric", heldout_answer)
    if cand_key is not None and cand_key == held_key:
        return True
    cand_numbers, held_numbers = stated_numbers(candidate_answer), stated_numbers(heldout_answer)
    if cand_numbers and held_numbers:
        return bool(cand_numbers & held_numbers)
    from udfs.textnorm import normalize_text

    a, b = normalize_text(candidate_answer), normalize_text(heldout_answer)
    if a and a == b:
        return True
    if not (mostly_non_latin(candidate_answer, share=1e-9) or mostly_non_latin(heldout_answer, share=1e-9)):
        if not (a and b):
            return None
        shorter, longer = sorted((a, b), key=len)
        return f" {shorter} " in f" {longer} "
    if similarity is None:
        return None
    if joint_floor is not None:
        if question_similarity is None:
            raise ValueError("answers_agree: joint_floor needs the question similarity")
        if float(question_similarity) + float(similarity) < joint_floor:
            return False
    return float(similarity) >= floor


# Which rule put a retrieved pair before the judge (`retrieval_rule`, `multilingual_rule`; recorded
# in the evidence as `retrieved_by`).
BY_FLOOR, BY_MARGIN, BY_MULTILINGUAL, BY_E5 = "floor", "margin", "multilingual", "e5"
# Which retrieval an item goes to (`retrieval_route`): the English model, USE multilingual v3, or
# multilingual-e5-small.
ROUTE_ENGLISH, ROUTE_MULTILINGUAL, ROUTE_E5 = "english", "multilingual", "e5"


def cross_lingual(text: Any, scripts: frozenset[str] | None = None) -> bool:
    """Whether an item (its `embedding_text`) is retrieved by the cross-lingual retrieval instead of
    the English one: at least half of its letters are of a script other than Latin
    (`udfs.scripts.mostly_non_latin`) and the most frequent of those is one the multilingual model
    was trained on (`scripts`, default `udfs.embeddings_multilingual.SCRIPTS`: Arabic, Han, kana,
    Hangul, Thai, Cyrillic). Issue 25, item 15: the English model retrieves no translation of a held-out
    item, and it embeds every Thai, Korean or Hindi text near every other (its word pieces are
    mostly [UNK] there; bench/bench_paraphrase.py: 1.9 to 4.7 judge pairs per clean item of
    those scripts). Latin-script text, text without letters, scripts outside `scripts`
    (Devanagari, Hebrew, Greek, …): False (Devanagari takes the e5 route: `retrieval_route`)."""
    return mostly_non_latin(text) and non_latin_script(text) in (MULTILINGUAL_SCRIPTS if scripts is None else scripts)


def retrieval_route(text: Any, *, multilingual: bool = True, e5: bool = True,
                    multilingual_scripts: frozenset[str] | None = None,
                    e5_scripts: frozenset[str] | None = None) -> str:
    """Which retrieval an item (its `embedding_text`) goes to, as jobs/filters/paraphrase.neighbours
    routes it (issue 25):

    - `ROUTE_MULTILINGUAL` ("multilingual"): `cross_lingual(text, multilingual_scripts)` (mostly
      letters of a non-Latin script USE multilingual v3 was trained on: Arabic, Han, kana, Hangul,
      Thai, Cyrillic), when `multilingual` (the model is configured and installed);
    - `ROUTE_E5` ("e5"): mostly letters of a non-Latin script whose most frequent one is in
      `e5_scripts` (default `udfs.embeddings_e5.SCRIPTS`: Devanagari, the one measured), when `e5`
      (multilingual-e5-small configured and installed). USE's scripts go to USE first: on them it
      retrieves better than e5 (bench/README.md);
    - `ROUTE_ENGLISH` ("english"): everything else: Latin-script text, text without letters, a
      script neither model covers (Hebrew, Greek, Bengali, …), or a script whose model is off or
      missing."""
    if not mostly_non_latin(text):
        return ROUTE_ENGLISH
    script = non_latin_script(text)
    if multilingual and script in (MULTILINGUAL_SCRIPTS if multilingual_scripts is None else multilingual_scripts):
        return ROUTE_MULTILINGUAL
    if e5 and script in (E5_SCRIPTS if e5_scripts is None else e5_scripts):
        return ROUTE_E5
    return ROUTE_ENGLISH


def multilingual_rule(similarity: float, *, floor: float, by: str = BY_MULTILINGUAL) -> str | None:
    """`by` (default `BY_MULTILINGUAL`; `BY_E5` for the e5 retrieval) when a pair a cross-lingual
    retrieval found (cosine similarity of its model) is at or above `floor`
    (`curate.paraphrase.multilingual_floor`, or `e5_floor`), else None.
    No margin rule here: with USE multilingual v3 the ratio margin did not tell translations from
    topical neighbours (bench/bench_paraphrase.py: Thai translations of ARC-like questions have
    margins 0.95-1.02, below clean neighbours'). The numbers rule applies, in the caller."""
    return by if similarity >= floor else None


def ratio_margins(similarities: Any) -> "np.ndarray":
    """The ratio margin of each retrieved neighbour (Artetxe & Schwenk, "Margin-based Parallel
    Corpus Mining with Multilingual Sentence Embeddings", ACL 2019, forward direction): its cosine
    similarity divided by the mean similarity of the candidate's retrieved neighbours.

    `similarities`: (candidates, k') float, one candidate's top-k' similarities per row (as
    `udfs.embeddings.top_k` returns them). Returns a float64 array of the same shape. A reworded
    copy of one held-out item stands out from the candidate's other neighbours (0.9 against 0.6:
    margin ≈ 1.3); a question on a common topic has several neighbours alike (0.72 against 0.68:
    ≈ 1.05). A row with fewer than 2 neighbours, or whose mean is ≤ 0, has margin 1.0 (nothing to
    stand out from: the margin rule never applies to it). NaN similarities raise ValueError."""
    import numpy as np

    sims = np.asarray(similarities, dtype=np.float64)
    if sims.ndim != 2:
        raise ValueError(f"similarities must be (candidates, k), got shape {sims.shape}")
    if np.isnan(sims).any():
        raise ValueError("similarities contain NaN")
    out = np.ones_like(sims)
    if sims.shape[1] < 2:
        return out
    mean = sims.mean(axis=1, keepdims=True)
    rows = mean[:, 0] > 0
    out[rows] = sims[rows] / mean[rows]
    return out


def retrieval_rule(similarity: float, margin: float, *, floor: float, margin_floor: float | None,
                   min_margin: float) -> str | None:
    """Which rule sends a retrieved pair to the judge, if any (issue 25: recall above the floor's
    at a judge bill below it):

    - `BY_FLOOR` ("floor"): similarity ≥ `floor` (every pair the filter judged before the margin rule);
    - `BY_MARGIN` ("margin"): `margin_floor` ≤ similarity < `floor` and `margin` ≥ `min_margin` (the
      neighbour stands out from the candidate's other neighbours, `ratio_margins`: a copy, not a
      topic; measured in bench/bench_paraphrase.py);
    - None: not judged. `margin_floor` None turns the margin rule off.
    The numbers rule (`numbers_disagree`) applies to either, in the caller."""
    if similarity >= floor:
        return BY_FLOOR
    if margin_floor is not None and similarity >= margin_floor and margin >= min_margin:
        return BY_MARGIN
    return None


def pair_id(gen_id: str, heldout_id: str) -> str:
    """The key of one judged (candidate, held-out item) pair."""
    return stable_hash("paraphrase_pair", gen_id, heldout_id)


@lru_cache(maxsize=None)
def judge_template() -> PromptTemplate:
    """The packaged judge template, read once per process."""
    text = (resources.files("udfs") / "prompts" / f"{JUDGE}_{JUDGE_FORMAT}.txt").read_text("utf-8")
    return parse_template(text, JUDGE, JUDGE_FORMAT)


def _shown(value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip()
        return (value[:MAX_SHOWN_CHARS] + " …") if len(value) > MAX_SHOWN_CHARS else (value or None)
    return value


def _view(item: Mapping[str, Any]) -> dict[str, Any]:
    choices = item.get("choices")
    return {"question": _shown(item.get("question")) or "", "context": _shown(item.get("context")),
            "choices": [_shown(str(c)) for c in choices] if choices else None,
            "answer": _shown(item.get("answer_text"))}


def render_judge_messages(candidate: Mapping[str, Any], heldout: Mapping[str, Any],
                          heldout_task: str) -> tuple[list[dict], str]:
    """Messages asking whether `candidate` is `heldout` reworded or translated, and the template's
    prompt_version. Both items are shown with question, passage, options and answer (fields cut
    at MAX_SHOWN_CHARS); ids, splits and similarities are never shown."""
    if not (candidate.get("question") and heldout.get("question")):
        raise ValueError("a judge pair needs a question on both sides")
    template = judge_template()
    from string import Template

    values = {"heldout_task": heldout_task or "unknown"}
    payload = {"heldout_task": heldout_task, "candidate": _view(candidate), "heldout": _view(heldout)}
    system = template.header + "\n" + Template(template.system).substitute(values)
    user = Template(template.user).substitute(values) + "\n\n" + _input_block(payload)
    return [{"role": "system", "content": system}, {"role": "user", "content": user}], template.prompt_version


def judge_requests(pair: Mapping[str, Any], *, model: str, max_tokens: int) -> list[dict]:
    """The one plan row of a pair (source_key = pair_id; task/task_family = the candidate's).

    `pair` holds gen_id, task, task_family, question, context, choices, answer_text (the candidate)
    and heldout_id, heldout_task, heldout_split, heldout_question, heldout_context, heldout_choices,
    heldout_answer_text, similarity. A pair that cannot be rendered gives one render_error row."""
    pid = pair_id(pair.get("gen_id"), pair.get("heldout_id"))
    base = {"stage": JUDGE, "source_key": pid, "task": pair.get("task"), "task_family": pair.get("task_family"),
            "model": model, "pair_id": pid, "gen_id": pair.get("gen_id"), "heldout_id": pair.get("heldout_id"),
            "heldout_task": pair.get("heldout_task"), "heldout_split": pair.get("heldout_split"),
            "similarity": pair.get("similarity"), "split": None}
    candidate = {k: pair.get(k) for k in ("question", "context", "choices", "answer_text")}
    heldout = {k: pair.get(f"heldout_{k}") for k in ("question", "context", "choices", "answer_text")}
    try:
        messages, version = render_judge_messages(candidate, heldout, pair.get("heldout_task"))
    except (ValueError, KeyError, TypeError) as exc:
        return [dict(base, render_error="render_error", render_detail=f"{type(exc).__name__}: {exc}"[:500])]
    params = {"temperature": 0.0, "max_tokens": int(max_tokens)}
    fmt = response_format(JUDGE_OUTPUT_SCHEMA, f"taskseed_{JUDGE}_{JUDGE_FORMAT}")
    return [dict(base, prompt_version=version, messages_json=json.dumps(messages, ensure_ascii=False),
                 response_format_json=json.dumps(fmt), temperature=0.0, max_tokens=int(max_tokens),
                 est_prompt_tokens=approx_prompt_tokens(messages),
                 est_completion_tokens=min(EST_COMPLETION_TOKENS, int(max_tokens)),
                 request_id=compute_request_id(model, version, messages, params, 0), sample_index=0)]


# ---------------------------------------------------------------------------------------------
# Verdicts
# ---------------------------------------------------------------------------------------------
_VERDICT_KEYS = ("verdict", "answer", "decision", "label", "result", "judgement", "judgment", "same_question",
                 "is_same", "same", "paraphrase", "is_paraphrase", "contaminated")
_SAME_WORDS = {"same", "yes", "true", "identical", "paraphrase", "reworded", "translated", "duplicate",
               "same question", "same_question", "equivalent", "contaminated", "match"}
_DIFFERENT_WORDS = {"different", "no", "false", "distinct", "not same", "not the same", "not_same",
                    "different question", "different_question", "unrelated", "not a paraphrase", "clean",
                    "no match"}
_WORD_RE = re.compile(r"\b(same|different)\b", re.IGNORECASE)


def _verdict_word(value: Any) -> str | None:
    if isinstance(value, bool):
        return SAME if value else DIFFERENT
    if not isinstance(value, str):
        return None
    text = " ".join(re.sub(r"[\"'*`.!:]", " ", value).lower().split())
    if text in _SAME_WORDS:
        return SAME
    if text in _DIFFERENT_WORDS:
        return DIFFERENT
    words = {w.lower() for w in _WORD_RE.findall(text)}
    if len(words) == 1 and not re.search(r"\bnot\b", text):
        return words.pop()
    return None


_ADVERB = r"(?:(?:actually|really|in fact|indeed|essentially|clearly|basically|truly|then|therefore|still|both)\s+)?"
_SUBJECT = (r"(?:they|these|those|both(?:\s+questions|\s+items)?|the two(?:\s+questions|\s+items)?|"
            r"the (?:candidate|question|questions|item|items|held-?out(?:\s+item|\s+question)?)"
            r"(?:\s+(?:question|item))?|it|this|that)")
# A stated conclusion, in the prose around a verdict or in its reason: which verdict it states.
_CONCLUSION_RES = (
    (DIFFERENT, re.compile(rf"\b{_SUBJECT}\s+(?:are|is|were|'re)\s+{_ADVERB}(?:not\s+(?:the\s+)?same|different|distinct|"
                           rf"unrelated|not\s+(?:a\s+)?paraphrases?)\b", re.IGNORECASE)),
    (SAME, re.compile(rf"\b{_SUBJECT}\s+(?:are|is|were|'re)\s+{_ADVERB}(?:(?:the\s+)?same|identical|equivalent|"
                      rf"(?:a\s+)?paraphrases?|(?:a\s+)?(?:translation|rewording)s?)\b(?!\s+(?:topic|subject|"
                      rf"number|numbers|format|length|style))", re.IGNORECASE)),
    (DIFFERENT, re.compile(r"(?<!\bnot\s)(?<!\bnot a\s)\bdifferent\s+questions?\b", re.IGNORECASE)),
    (SAME, re.compile(r"(?<!\bnot\s)(?<!\bnot the\s)(?<!\bdifferent\s)\bsame\s+question\b", re.IGNORECASE)),
    (DIFFERENT, re.compile(rf"\b{_SUBJECT}\s+(?:do\s+not|don't|does\s+not|doesn't)\s+match\b", re.IGNORECASE)),
    (SAME, re.compile(rf"\b{_SUBJECT}\s+{_ADVERB}match(?:es)?\b", re.IGNORECASE)),
    (None, re.compile(r"[\"']?(?:verdict|answer|decision)[\"']?\s*(?:[:=]|should\s+be|is)\s*[\"'*]*(same|different)\b",
                      re.IGNORECASE)),
    # a labelled conclusion: "Conclusion: same.", "In conclusion: identical questions", "Final answer - different"
    (SAME, re.compile(r"\b(?:conclusion|final\s+(?:answer|verdict|decision)|overall|in\s+short|in\s+summary)\s*[:,\-–—]\s*"
                      r"[\"'*]*(?:they\s+are\s+|it\s+is\s+)?(?:the\s+)?(?:same|identical|equivalent|duplicates?|"
                      r"paraphrases?|translations?)\b", re.IGNORECASE)),
    (DIFFERENT, re.compile(r"\b(?:conclusion|final\s+(?:answer|verdict|decision)|overall|in\s+short|in\s+summary)\s*[:,\-–—]\s*"
                           r"[\"'*]*(?:they\s+are\s+|it\s+is\s+)?(?:different|distinct|unrelated|not\s+the\s+same)\b",
                           re.IGNORECASE)),
    # one item stated as a copy of the other, any subject: "B is a translation of A", "it is a rewording of the held-out item"
    (SAME, re.compile(rf"(?<!\bnot\s)\b(?:is|are|was|were|'s|'re)\s+{_ADVERB}(?:just\s+|simply\s+|merely\s+)?(?:an?\s+|the\s+)?"
                      r"(?:(?:direct|literal|close|exact|near|mere)\s+)?(?:translations?|paraphrases?|rewordings?|rephrasings?|"
                      r"duplicates?|cop(?:y|ies)|restatements?)\s+of\b", re.IGNORECASE)),
    # "They are duplicates.", "identical questions", "the questions are copies"
    (SAME, re.compile(rf"\b{_SUBJECT}\s+(?:are|is|were|'re)\s+{_ADVERB}(?:duplicates?|cop(?:y|ies)|the\s+same\s+thing)\b",
                      re.IGNORECASE)),
    (SAME, re.compile(r"(?<!\bnot\s)(?<!\bnot\sthe\s)(?<!n't\s)\b(?:identical|equivalent|duplicate)\s+(?:questions?|items?)\b",
                      re.IGNORECASE)),
    # Chinese, Japanese, Korean conclusions that they are one question (the negated forms are not)
    (SAME, re.compile(r"(?<!不)(?<!不是)(?:是同一(?:个|道)?问题|是相同的问题|是一样的问题|是重复的|同一(?:个|道)问题)|"
                      r"同じ(?:質問|問題)(?:です|だ|である)|(?:같은|동일한)\s*(?:질문|문제)(?:이다|입니다|예요|이에요)")),
)
_THINK_RE = re.compile(r"(?is)<(think|thinking|thought|reasoning)\b[^>]*>.*?</\1\s*>")


def stated_verdicts(text: str) -> set[str]:
    """The verdicts that `text` states as conclusions ("they are actually the same question",
    "the verdict should be different", a second `"verdict": ...`), reasoning blocks left out."""
    text = _THINK_RE.sub(" ", text)
    found = set()
    for verdict, pattern in _CONCLUSION_RES:
        for match in pattern.finditer(text):
            found.add(verdict or match.group(1).lower())
    return found


def parse_verdict(text: str | None) -> tuple[str, str | None]:
    """(verdict, reason) from a judge response: verdict "same" or "different", reason the model's
    explanation if it gave one. Reads a JSON object first (udfs.parsing.extract_json_object: fences,
    prose, reasoning blocks), the verdict under any of several keys, as a word or a boolean (keys
    like `is_same` / `contaminated`: true = same); else a bare answer word ("Same.", "**different**").
    Raises OutputRejected: the parser's JSON reasons, `no_verdict`, or `ambiguous_verdict` (both
    words, or a negated one, in a free-text answer; or a verdict that the response then contradicts:
    `{"verdict": "different"}` followed by prose, a reason or a second object that concludes they are
    the same question, so a judge that corrects itself is never read as "clean")."""
    verdict, reason = _first_verdict(text)
    contrary = stated_verdicts(str(text)) - {verdict}
    if contrary:
        raise ValidationError("ambiguous_verdict", f"{verdict}, then {sorted(contrary)[0]}: {str(text)[:160]}")
    return verdict, reason


def _first_verdict(text: str | None) -> tuple[str, str | None]:
    if text is None or not str(text).strip():
        raise ParseError("empty", "no content")
    try:
        obj = extract_json_object(text, _VERDICT_KEYS)
    except ParseError as err:
        if err.reason not in ("no_json",):
            raise
        obj = None
    if obj is not None:
        lowered = {str(k).lower(): v for k, v in obj.items()}
        reason = lowered.get("reason") or lowered.get("explanation") or lowered.get("rationale")
        reason = str(reason) if reason is not None else None
        for key in _VERDICT_KEYS:
            if key in lowered:
                verdict = _verdict_word(lowered[key])
                if verdict is None:
                    raise ValidationError("no_verdict", f"{key}={str(lowered[key])[:80]!r}")
                return verdict, reason
        raise ValidationError("no_verdict", f"no verdict key in {sorted(lowered)[:8]}")
    plain = re.sub(r"(?is)^.*</think>", "", str(text)).strip()
    verdict = _verdict_word(plain)
    if verdict is None:
        words = {w.lower() for w in _WORD_RE.findall(plain)}
        if words:
            raise ValidationError("ambiguous_verdict", plain[:200])
        raise ValidationError("no_verdict", plain[:200])
    return verdict, None


def parse_judge_row(rec: Mapping[str, Any]) -> dict:
    """A judge plan row joined with its ledger row → a `paraphrase_judgments` row (kind 'verdict')
    or a quarantine row (failed call, unreadable verdict)."""

    def verdict_row(parsed: tuple[str, str | None]) -> dict:
        verdict, reason = parsed
        return {**_lineage(rec), "kind": VERDICT_KIND, "source_key": rec.get("pair_id"),
                **{k: rec.get(k) for k in JUDGE_RECORD if k != "split"},
                "verdict": verdict, "judge_reason": (reason or "")[:1000] or None}

    return _parse_row(rec, parse_verdict, verdict_row)


__all__ = ["BY_E5", "BY_FLOOR", "BY_MARGIN", "BY_MULTILINGUAL", "DIFFERENT", "JUDGE", "JUDGE_FORMAT", "JUDGE_RECORD", "SAME",
           "OutputRejected", "answers_agree", "cross_lingual", "embedding_text", "judge_requests", "judge_template", "multilingual_rule",
           "numbers_disagree", "pair_id", "parse_judge_row", "parse_verdict", "ratio_margins", "retrieval_route",
           "retrieval_rule", "ROUTE_E5", "ROUTE_ENGLISH", "ROUTE_MULTILINGUAL",
           "render_judge_messages", "stated_numbers", "stated_verdicts"]
