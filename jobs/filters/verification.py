"""The `verification` filter: does the majority of the enrichment samples agree with the item's
answer? Rules: jobs/sql/intermediate/filter_verification.sql over `int_votes`; answer keys from
udfs/verification.py."""

from jobs.filters.base import Filter
from jobs.sqlmodels import Model

FILTER = Filter("verification", Model("intermediate/filter_verification.sql"))
