"""Whether a curate run has anything new to decide (issue 28): the fingerprint of what a curate
run's decisions are a function of, and the comparison of two fingerprints. Pure functions; the
stage reads and writes fingerprints in `curate_runs` (jobs/curate.py).

A curate run's decisions are a function of (a) the Delta versions of the tables it reads and of the
tables it keeps itself (signatures, held-out index, judge verdicts), (b) the settings its filters
read (`curate_settings`: `curate.*`, the `enrich` keys the vote and staging read, the judge's model)
and (c) the filter code: `CURATE_CODE_VERSION`, a sha256 over the source of the SQL models, the
filters, the stage and `udfs/`, and the declared filters (name, model, gate, engine and whether it
is installed). Two runs of the same scope with equal fingerprints decide the same things, so the
second has nothing to evaluate; a run whose last decisions include a reason that a retry can change
(`RETRY_REASONS`: a judge request that got no answer) is not "nothing new".
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

# Bump when the filters decide differently for a reason the source digest cannot see (a changed
# dependency's behaviour, a model file swapped in place).
CURATE_CODE_VERSION = 1

# Decision reasons a rerun may turn into another decision without any input changing.
RETRY_REASONS = frozenset({"judge_unanswered"})

ALL_TASKS = "*"  # the scope of a run over every task


def scope_key(tasks: Iterable[str] | None) -> str:
    """The scope a fingerprint belongs to: `ALL_TASKS`, or the sorted distinct task names joined
    by ','. Runs of different scopes never stand in for each other."""
    names = sorted(set(tasks or ()))
    return ",".join(names) if names else ALL_TASKS


def digest(payload: Any) -> str:
    """sha256 hex of `payload` as canonical JSON (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def source_digest(files: Iterable[tuple[str, bytes]]) -> str:
    """sha256 hex over (relative path, content) pairs, in path order: a rename, an edit or a new
    file each change it."""
    h = hashlib.sha256()
    for path, content in sorted(files):
        h.update(path.encode())
        h.update(b"\0")
        h.update(hashlib.sha256(content).digest())
    return h.hexdigest()


@dataclass(frozen=True)
class CurateFingerprint:
    """What one curate run's decisions are a function of. scope: `scope_key`; inputs: table name →
    Delta version (None: the table does not exist); config: `digest` of the curate settings; code:
    `digest` of the code version, source digest and declared filters."""

    scope: str
    inputs: Mapping[str, int | None]
    config: str
    code: str

    def inputs_json(self) -> str:
        return json.dumps(dict(self.inputs), sort_keys=True)

    @staticmethod
    def parse_inputs(text: str | None) -> dict[str, int | None]:
        """`inputs_json` back to a mapping; ValueError on anything but an object of table → int/null."""
        value = json.loads(text or "{}")
        if not isinstance(value, dict) or not all(v is None or isinstance(v, int) for v in value.values()):
            raise ValueError(f"curate_runs.inputs is not an object of table → version: {text!r}")
        return value


def versions_text(inputs: Mapping[str, int | None]) -> str:
    """'enriched v5, generated v3, heldout (none)' in table order."""
    return ", ".join(f"{t} v{v}" if v is not None else f"{t} (none)" for t, v in sorted(inputs.items()))


def what_changed(previous: CurateFingerprint | None, current: CurateFingerprint) -> list[str]:
    """Why `current` must be evaluated although `previous` (the last recorded run of the same
    scope) exists: one phrase per difference — each input table whose version differs ('heldout
    v3 → v4', 'minhash_signatures new', 'calibration dropped'), 'curate settings', 'filter code'.
    Empty: nothing changed. No previous run: ['no earlier curate run of this scope']."""
    if previous is None:
        return ["no earlier curate run of this scope"]
    if previous.scope != current.scope:
        raise ValueError(f"comparing fingerprints of different scopes: {previous.scope!r} vs {current.scope!r}")
    changes = []
    for table in sorted(set(previous.inputs) | set(current.inputs)):
        before, after = previous.inputs.get(table), current.inputs.get(table)
        if table not in previous.inputs:
            changes.append(f"{table} new" + (f" (v{after})" if after is not None else ""))
        elif table not in current.inputs:
            changes.append(f"{table} no longer read")
        elif before != after:
            changes.append(f"{table} v{before} → v{after}" if before is not None and after is not None
                           else f"{table} {'created' if before is None else 'dropped'}")
    if previous.config != current.config:
        changes.append("curate settings")
    if previous.code != current.code:
        changes.append("filter code")
    return changes


def retry_pending(tally: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Decisions of the last run with a `RETRY_REASONS` reason, as reason → count (`tally` rows:
    filter, passed, reason, family, count)."""
    out: dict[str, int] = {}
    for row in tally:
        if row["reason"] in RETRY_REASONS:
            out[row["reason"]] = out.get(row["reason"], 0) + int(row["count"])
    return out
