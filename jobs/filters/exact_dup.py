"""The `exact_dup` filter: one item per normalized (context, question, answer), and no copy of a
seed. Rules: jobs/sql/intermediate/filter_exact_dup.sql; the key from udfs/textnorm.py."""

from jobs.filters.base import Filter
from jobs.sqlmodels import Model

FILTER = Filter("exact_dup", Model("intermediate/filter_exact_dup.sql"))
