"""License policy data: which dataset carries which license, and may it feed a commercial subset.

The data lives in `license_policy.tsv` beside this file (derived from the reference table of
licenses of the datasets lm-eval loads, each row with its source URL). A dataset that is not in
the table is `unknown`: taskseed never guesses a license, and unknown rows are excluded from
the commercial subset downstream.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

LICENSE_CLASSES = ("permissive", "share-alike", "non-commercial", "no-derivatives", "unknown", "other")
COMMERCIAL_OK_VALUES = ("yes", "no", "unknown")


@dataclass(frozen=True)
class LicenseEntry:
    dataset_path: str
    license: str
    license_class: str
    commercial_ok: str
    lm_eval_task_dirs: tuple[str, ...]
    source_url: str | None
    note: str | None


UNKNOWN = LicenseEntry("", "unknown", "unknown", "unknown", (), None, None)


def parse_policy(text: str) -> dict[str, LicenseEntry]:
    """Parse the TSV (lines starting with '#' are comments) and check every class and flag."""
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    policy: dict[str, LicenseEntry] = {}
    for lineno, row in enumerate(csv.DictReader(io.StringIO("\n".join(lines)), delimiter="\t"), 2):
        if row["license_class"] not in LICENSE_CLASSES:
            raise ValueError(f"license_policy.tsv row {lineno}: unknown class {row['license_class']!r}")
        if row["commercial_ok"] not in COMMERCIAL_OK_VALUES:
            raise ValueError(f"license_policy.tsv row {lineno}: commercial_ok must be yes/no/unknown")
        policy[row["dataset_path"]] = LicenseEntry(
            dataset_path=row["dataset_path"],
            license=row["license"],
            license_class=row["license_class"],
            commercial_ok=row["commercial_ok"],
            lm_eval_task_dirs=tuple(d for d in row["lm_eval_task_dirs"].split(",") if d),
            source_url=row["source_url"] or None,
            note=row["note"] or None,
        )
    return policy


@lru_cache(maxsize=1)
def load_policy() -> dict[str, LicenseEntry]:
    text = resources.files("schemas").joinpath("license_policy.tsv").read_text(encoding="utf-8")
    return parse_policy(text)


def license_for(dataset_path: str | None, policy: dict[str, LicenseEntry] | None = None) -> LicenseEntry:
    policy = load_policy() if policy is None else policy
    return policy.get(dataset_path or "", UNKNOWN)
