"""Stable content hashes: the keys that make every stage an idempotent MERGE.

Every key taskseed writes is `digest` of a text: the SHA-256 of its UTF-8 bytes, truncated to 32
hex characters (128 bits: collisions are not a practical concern at billions of rows). The text
is the canonical JSON (sorted keys, no whitespace) of the parts that define the row
(`stable_hash`), except for one key that predates it and keeps its encoding so stored rows keep
their keys (udfs.normalize.duplicate_key). Keys are computed in Python only, on the driver or in
executors, never with Spark's own hash functions, so there is one definition of each.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def digest(text: str) -> str:
    """The 32-hex-character SHA-256 prefix of `text` (UTF-8)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def stable_hash(*parts: Any) -> str:
    """The key of the row defined by `parts` (any JSON-serializable values, in order)."""
    return digest(canonical_json(list(parts)))
