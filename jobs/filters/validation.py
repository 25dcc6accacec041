"""The `validation` filter: is the item well-formed training data (fields, options, lengths,
lineage, no leftover template markers)? Rules: jobs/sql/intermediate/filter_validation.sql and the
marker patterns in udfs/validation.py."""

from jobs.filters.base import Filter
from jobs.sqlmodels import Model

FILTER = Filter("validation", Model("intermediate/filter_validation.sql"), reads=("seeds", "llm_calls"))
