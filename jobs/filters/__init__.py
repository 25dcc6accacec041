"""The curation filters' Spark halves: each module wires tables to pure functions in `udfs/`.

- `near_dup`: MinHash near-duplicates among generated items and against seeds.
- `contamination`: matches of items (generated or seeds) against the held-out index.
"""
