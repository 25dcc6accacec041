"""The ASCII fast path of udfs.textnorm.normalize_text gives exactly what the full rule path gives,
on every question, passage and option of the real benchmark mirror and on hand-made edge cases."""

from __future__ import annotations

import json

import pytest

from tests.conftest import MIRROR
from udfs import textnorm
from udfs.textnorm import normalize_text


def reference(text: str | None) -> str:
    """Every rule of the module docstring (`textnorm._full`), no fast path."""
    return "" if text is None else textnorm._full(str(text))


def mirror_strings() -> list[str]:
    strings = []
    for path in sorted(MIRROR.rglob("*.jsonl")):
        with path.open(encoding="utf-8") as handle:
            for n, line in enumerate(handle):
                if n % 3:
                    continue
                strings.extend(v for v in json.loads(line).values() if isinstance(v, str))
    return strings


def test_fast_path_equals_the_rules_on_the_mirror():
    strings = mirror_strings()
    assert len(strings) > 30000
    assert any(not s.isascii() for s in strings) and any(s.isascii() for s in strings)
    mismatches = [s for s in strings if normalize_text(s) != reference(s)]
    assert mismatches == []


@pytest.mark.parametrize("text", [
    "", " ", "\t\n\r\x0b\x0c\x00\x1f\x7f", "1,000.50 dollars", "$1,000 + 2.50% = {x}", "a_b-c~d|e\\f`g^h",
    "Don't STOP!!!", "café", "ﬁnal ＦＵＬＬ", "x²", "naïve 1,234,567.000", "<|im_start|> {{slot}}",
    # the digit-[,.]-digit pre-scan of the ASCII path: runs at the edges, doubled and lone separators
    "1.5", "0.0", "1.", ".5", "1,,000", "1,000,00", "a1,b2", "x 1,2 y", "10.50.", "3,000.", "A1.0B", "1 . 0",
    "7,500,000.000 and 1.10", "Version 2.0.1", "\x7f1,000\x00",
    # the characters that take the full path
    "AT&T", "a < b", "x=1", "well-known", "\\alpha", "+", "1 - 2",
])
def test_fast_path_equals_the_rules_on_edge_cases(text):
    assert normalize_text(text) == reference(text)
