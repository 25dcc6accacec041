"""The paraphrase filter embeds and judges only what the cheaper filters of `AFTER` kept
(jobs/filters/paraphrase.py): an item seed_copy rejected (issue 29: its seed's question again) is
never sent to the embeddings or the judge. On a tiny inline table, with an engine that records what
it was handed."""

from __future__ import annotations

import pytest

from jobs.filters import paraphrase
from jobs.filters.base import DECISION_SCHEMA
from jobs.filters.registry import FILTERS
from jobs.sqlmodels import CurateContext

pytestmark = pytest.mark.spark


def test_after_names_filters_that_run_before_paraphrase():
    order = [f.name for f in FILTERS]
    assert "seed_copy" in paraphrase.AFTER
    assert all(order.index(name) < order.index("paraphrase") for name in paraphrase.AFTER)


@pytest.mark.parametrize("rejected_by", paraphrase.AFTER)
def test_an_item_rejected_by_an_after_filter_is_not_embedded(lakehouse, make_config, rejected_by):
    spark = lakehouse.spark
    spark.createDataFrame(
        [("g1", "boolq", "boolq", "is there a j in the italian alphabet", "A passage.", ["no", "yes"], "yes"),
         ("g2", "boolq", "boolq", "does ethanol take more energy to make than it produces", None, ["no", "yes"], "no")],
        "gen_id string, task string, task_family string, question string, context string, "
        "choices array<string>, answer_text string").createOrReplaceTempView("stg_candidates")
    for name in paraphrase.AFTER:
        rows = [(gid, name, not (name == rejected_by and gid == "g1"), "r", None, None) for gid in ("g1", "g2")]
        spark.createDataFrame(rows, DECISION_SCHEMA).createOrReplaceTempView(f"filter_{name}")
    seen = []

    def engine(_lakehouse, _config, eligible, _progress, endpoint=None):
        seen.extend(r["gen_id"] for r in eligible.collect())
        return spark.createDataFrame([], paraphrase.MATCH_SCHEMA)

    ctx = CurateContext(lakehouse=lakehouse, config=make_config(), tasks=None, run_id="t")
    try:
        paraphrase.prepare(ctx, engine)
    finally:
        ctx.drop_views()
        for name in ("stg_candidates", *[f"filter_{n}" for n in paraphrase.AFTER]):
            spark.catalog.dropTempView(name)
    assert sorted(seen) == ["g2"]
