"""The `license` filter: may the item feed a commercial training run? It gates
`curated_commercial` only, and cannot be disabled (it is that table's only guard). Rules:
jobs/sql/intermediate/filter_license.sql over the `license_policy` table."""

from jobs.filters.base import GATE_COMMERCIAL, Filter
from jobs.sqlmodels import Model

FILTER = Filter("license", Model("intermediate/filter_license.sql"), gate=GATE_COMMERCIAL, required=True)
