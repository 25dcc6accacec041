"""The curation filters: `base.py` (what a filter is, the decision contract), one module per filter
(its declaration; for near_dup, contamination and paraphrase also the Spark engine and its prepare
step), and `registry.py` (the filters in evaluation order). Row logic is pure, in udfs/."""
