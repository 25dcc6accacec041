"""Pretraining documents for tests: every (item, enrichment sample) rendered by the one renderer,
the SQL function `pretraining_document` the curate stage registers (jobs/sqlmodels.py), so a test
can check the text of every sample, not only the one `curated` keeps."""

from __future__ import annotations


def pretraining_documents(lakehouse):
    """One training text per (item, enrichment sample), generated items and seeds alike: gen_id,
    sample, item_kind, task, task_family, license, license_class, text (a lazy DataFrame)."""
    from pyspark.sql import functions as F

    from jobs.enrich import ITEM_COLUMNS, ITEM_SEED, enrichment_items
    from jobs.sqlmodels import register_udfs

    register_udfs(lakehouse.spark)
    seeds = lakehouse.read("seeds").select(F.col("seed_id").alias("gen_id"), F.lit(ITEM_SEED).alias("item_kind"),
                                           *ITEM_COLUMNS[2:])
    items = enrichment_items(lakehouse, lakehouse.config, include_seeds=False).unionByName(seeds)
    enriched = lakehouse.read("enriched").select(
        "gen_id", "sample", "item_kind", "knowledge", "reasoning", "final_answer_raw", "final_answer",
        "final_answer_index")
    return enriched.join(items, ["gen_id", "item_kind"], "inner").selectExpr(
        "gen_id", "sample", "item_kind", "task", "task_family", "license", "license_class",
        "pretraining_document(answer_format, question, context, choices, answer_index, answer_text, knowledge, "
        "reasoning, final_answer_raw, final_answer, final_answer_index) AS text")
