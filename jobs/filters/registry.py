"""The curation filters, in evaluation order: a filter may read earlier filters' views (the dedup
filters prefer survivors that passed validation and verification; paraphrase embeds only what the
cheaper filters kept), so this order matters. Adding a filter is one line here (docs/curation.md)."""

from jobs.filters import (contamination, exact_dup, license, near_dup, paraphrase, seed_copy, validation,
                          verification)
from jobs.filters.base import Filter

FILTERS: tuple[Filter, ...] = (
    validation.FILTER,
    verification.FILTER,
    exact_dup.FILTER,
    seed_copy.FILTER,
    near_dup.FILTER,
    contamination.FILTER,
    paraphrase.FILTER,
    license.FILTER,
)
