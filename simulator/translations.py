"""Translations the simulator's paraphrase judge recognises (issue 25, item 15): a candidate that is
a translation of the held-out question, from the simulator's own data file
simulator/data/translations.json (English quiz questions written for taskseed, CC0 1.0, with their
translations into zh, ja, th, ko, ar and hi by the same authors; packaged with the simulator).

Like `simulator.rewording`, this is what lets the cross-lingual half of the paraphrase filter run
end to end against the simulator: the judge says "same" for exactly these translations, never for
a free one. The benchmark (bench/bench_paraphrase.py) and the tests plant the same rows
(`translation_rows`), so what the judge knows and what they plant cannot drift apart.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

LANGUAGES = ("zh", "ja", "th", "ko", "ar", "hi")


@lru_cache(maxsize=1)
def translation_rows() -> tuple[dict[str, str], ...]:
    """The rows of simulator/data/translations.json: each {"en": question, "zh": …, "ja": …, "th": …,
    "ko": …, "ar": …, "hi": …}. ValueError when a row lacks a language (a broken data file is an
    error, not a judge that silently knows fewer translations)."""
    text = (resources.files("simulator") / "data" / "translations.json").read_text("utf-8")
    rows = tuple(json.loads(text)["translations"])
    for row in rows:
        missing = [lang for lang in ("en",) + LANGUAGES if not str(row.get(lang) or "").strip()]
        if missing:
            raise ValueError(f"simulator/data/translations.json: row {row.get('en')!r} lacks {missing}")
    return rows


def _key(text: str) -> str:
    return " ".join(str(text).casefold().split())


@lru_cache(maxsize=1)
def translation_pairs() -> frozenset[tuple[str, str]]:
    """(translated text, English text) pairs, whitespace- and case-normalized."""
    return frozenset((_key(row[lang]), _key(row["en"])) for row in translation_rows() for lang in LANGUAGES)


def is_translation(candidate: str, heldout: str) -> bool:
    """True when `candidate` is one of the known translations of `heldout` (either direction)."""
    a, b = _key(candidate), _key(heldout)
    pairs = translation_pairs()
    return (a, b) in pairs or (b, a) in pairs
