"""Stable content hashes: the keys that make every stage an idempotent MERGE.

A key is the SHA-256 of a canonical JSON encoding (sorted keys, no whitespace, UTF-8) of the
parts that define the row, truncated to 32 hex characters (128 bits: collisions are not a
practical concern at billions of rows). Pure functions, usable on the driver and in executors.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def stable_hash(*parts: Any) -> str:
    return hashlib.sha256(canonical_json(list(parts)).encode("utf-8")).hexdigest()[:32]
