"""The `seed_copy` filter: a generated item that is its seed again — the seed's question (or any
seed's of its task) with the same or a shortened passage, often with the gold answer changed.
Rules, frames and reasons: udfs/copies.py. Seeds (item_kind 'seed') pass as `seed_item`.

The prepare step groups this run's generated candidates with every seed of their tasks (all of a
task's seeds: a copy of any of them is a copy) and decides per task in one pandas call
(`SeedIndex.build` once per task, `copy_decision` per item); the model joins the verdicts to every
candidate."""

from __future__ import annotations

import json
import pandas as pd
from pyspark.sql import functions as F

from jobs.filters.base import Filter
from jobs.sqlmodels import CurateContext, Model
from udfs.copies import SeedIndex, copy_decision
from udfs.frames import python_row

_COLUMNS = ("seed_id", "task", "question", "context", "choices", "answer_text", "answer_index", "answer_format")
CHECKS_SCHEMA = "gen_id string, passed boolean, reason string, evidence string"


def decide_task(rows: pd.DataFrame) -> pd.DataFrame:
    """One task's rows (`_kind` 'seed' or 'item', the `_COLUMNS` and gen_id) → gen_id, passed,
    reason, evidence (JSON) for each item."""
    records = [python_row(r) for r in rows.to_dict("records")]
    index = SeedIndex.build(r for r in records if r["_kind"] == "seed")
    out = []
    for item in (r for r in records if r["_kind"] == "item"):
        decision = copy_decision(item, index)
        out.append((item["gen_id"], decision.passed, decision.reason,
                    json.dumps(decision.evidence(), sort_keys=True)))
    return pd.DataFrame(out, columns=["gen_id", "passed", "reason", "evidence"])


def prepare(ctx: CurateContext, _engine) -> None:
    """Register `seed_copy_checks` (gen_id, passed, reason, evidence) for this run's generated
    candidates."""
    items = ctx.spark.sql(
        "SELECT gen_id, 'item' AS _kind, " + ", ".join(_COLUMNS) + " FROM stg_candidates "
        "WHERE item_kind = 'generated'")
    seeds = (ctx.lakehouse.read("seeds").join(items.select("task").distinct(), "task", "left_semi")
             .select(F.lit(None).cast("string").alias("gen_id"), F.lit("seed").alias("_kind"),
                     *[F.col(c).cast(items.schema[c].dataType).alias(c) for c in _COLUMNS]))
    checks = items.unionByName(seeds).groupBy("task").applyInPandas(decide_task, CHECKS_SCHEMA)
    ctx.register("seed_copy_checks", checks)


FILTER = Filter("seed_copy", Model("intermediate/filter_seed_copy.sql"), reads=("seeds",), prepare=prepare)
