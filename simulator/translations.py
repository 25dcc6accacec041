"""Translations the simulator's paraphrase judge recognises (issue 25, item 15): a candidate that is
a translation of the held-out question, from the `translations` of tests/data/multilingual_items.json
(English quiz questions written for taskseed, CC0, with their translations into zh, ja, th, ko, ar
and hi by the same authors).

Like `simulator.rewording`, this is what lets the cross-lingual half of the paraphrase filter run
end to end against the simulator: the judge says "same" for exactly these translations, never for
a free one. Outside a source checkout (the file is not packaged) the table is empty and the judge
recognises no translation.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "multilingual_items.json"


def _key(text: str) -> str:
    return " ".join(str(text).casefold().split())


@lru_cache(maxsize=1)
def translation_pairs() -> frozenset[tuple[str, str]]:
    """(translated text, English text) pairs, whitespace- and case-normalized; empty without the file."""
    if not DATA.is_file():
        return frozenset()
    rows = json.loads(DATA.read_text(encoding="utf-8")).get("translations", [])
    return frozenset((_key(text), _key(row["en"])) for row in rows for lang, text in row.items() if lang != "en")


def is_translation(candidate: str, heldout: str) -> bool:
    """True when `candidate` is one of the known translations of `heldout` (either direction)."""
    a, b = _key(candidate), _key(heldout)
    pairs = translation_pairs()
    return (a, b) in pairs or (b, a) in pairs
