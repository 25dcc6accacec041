"""Issue 26 on the session's keyed demo run (tests/worlds.py): what the calls cost, checked against SQL
over the world's ledger; token-budget subsets of its curated export; and the calibration sample
through enrich and curate on a copy of the world (only the calibration requests are sent)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.worlds import DEMO_CONFIG, DEMO_MIRROR, KEYED_M, KEYED_TASKS, LOCAL_SPARK, copy_home

pytestmark = [pytest.mark.spark, pytest.mark.e2e]

PRICE = {"input_per_mtok": 0.6, "output_per_mtok": 2.4}


def _priced(config, **price):
    from jobs.config import ModelPrice

    return config.model_copy(update={"costs": {"taskseed-sim": ModelPrice(**(price or PRICE))}})


def _sql_cost(spark, table: str, where: str = "true") -> tuple[int, float]:
    row = spark.sql(f"SELECT count(*) AS n, coalesce(sum(prompt_tokens * {PRICE['input_per_mtok']} + "
                    f"completion_tokens * {PRICE['output_per_mtok']}), 0) / 1e6 AS cost FROM {table} l "
                    f"WHERE {where}").first()
    return row["n"], row["cost"]


def test_cost_arithmetic_matches_sql_over_the_ledger(keyed_demo_run):
    from jobs.costs import cost_report

    lakehouse = keyed_demo_run["lakehouse"]
    config = _priced(keyed_demo_run["config"])
    spark = lakehouse.spark
    calls, gen, cur, fd = (lakehouse.table_name(t) for t in ("llm_calls", "generated", "curated", "filter_decisions"))
    report = cost_report(lakehouse, config)

    n, total = _sql_cost(spark, calls)
    usage = spark.sql(f"SELECT sum(prompt_tokens) AS p, sum(completion_tokens) AS c, "
                      f"count_if(prompt_tokens IS NULL OR completion_tokens IS NULL) AS missing FROM {calls}").first()
    assert usage["missing"] == 0  # the simulator sends usage: nothing is estimated here
    assert (report.calls, report.in_tokens, report.out_tokens, report.estimated_calls) == (
        n, usage["p"], usage["c"], 0)
    assert report.total == pytest.approx(total) and total > 0
    for stage in ("generate", "enrich"):
        assert report.by_stage[stage]["cost"] == pytest.approx(_sql_cost(spark, calls, f"stage = '{stage}'")[1])
    families = [r[0] for r in spark.sql(f"SELECT DISTINCT coalesce(task_family, task) FROM {calls}").collect()]
    for family in families:
        where = f"coalesce(task_family, task) = '{family}'"
        assert report.by_family[family]["cost"] == pytest.approx(_sql_cost(spark, calls, where)[1])

    # attribution: a generation call to the item it made, an enrichment call to the item it voted on
    item_of = (f"(CASE WHEN l.stage = 'generate' THEN (SELECT g.gen_id FROM {gen} g WHERE g.request_id = l.request_id) "
               f"WHEN l.stage = 'enrich' THEN l.source_key END)")
    _, curated_cost = _sql_cost(spark, calls, f"{item_of} IN (SELECT gen_id FROM {cur})")
    assert report.by_outcome["curated"]["cost"] == pytest.approx(curated_cost) and curated_cost > 0
    rejected = f"SELECT gen_id FROM {fd} WHERE gen_id NOT IN (SELECT gen_id FROM {cur})"
    _, rejected_cost = _sql_cost(spark, calls, f"{item_of} IN ({rejected})")
    assert report.rejected_share() == pytest.approx(rejected_cost / total)
    for name in ("verification", "exact_dup"):
        failing = f"SELECT gen_id FROM {fd} WHERE filter = '{name}' AND NOT passed AND gen_id NOT IN (SELECT gen_id FROM {cur})"
        _, cost = _sql_cost(spark, calls, f"{item_of} IN ({failing})")
        assert report.rejected_by_filter.get(name, {"cost": 0.0})["cost"] == pytest.approx(cost)
    assert report.rejected_by_filter["verification"]["cost"] > 0  # the world plants wrong answers
    kept = spark.sql(f"SELECT count(*) AS n, sum(ceil(length(document) / 4)) AS t FROM {cur}").first()
    assert report.per_curated_item == pytest.approx(total / kept["n"])
    assert report.per_kept_token == pytest.approx(total / kept["t"])
    metrics = report.metrics()
    assert metrics["cost.total"] == pytest.approx(total) and "cost.rejected_share.verification" in metrics
    assert any("per kept token" in line for line in report.summary_lines())


def test_calls_without_usage_are_estimated_and_marked(keyed_demo_run):
    from pyspark.sql import functions as F

    from jobs.costs import call_tokens

    ledger = keyed_demo_run["lakehouse"].read("llm_calls").where("stage = 'enrich' AND status = 'ok'")
    first = ledger.orderBy("request_id").limit(3).select("request_id").collect()
    blank = [r["request_id"] for r in first]
    stripped = ledger.withColumn("prompt_tokens", F.when(F.col("request_id").isin(blank), None)
                                 .otherwise(F.col("prompt_tokens"))).withColumn(
        "completion_tokens", F.when(F.col("request_id").isin(blank), None).otherwise(F.col("completion_tokens")))
    rows = {r["request_id"]: r for r in call_tokens(stripped).collect()}
    for rid, row in rows.items():
        if rid in blank:
            same = [r["prompt_tokens"] for r in rows.values() if r["task"] == row["task"] and r["prompt_tokens"] is not None]
            assert row["estimated"] and row["out_tokens"] == math.ceil(len(row["content"]) / 4)
            assert row["in_tokens"] == pytest.approx(sum(same) / len(same))
        else:
            assert not row["estimated"] and row["in_tokens"] == row["prompt_tokens"]


def _exported(folder: Path) -> dict[str, dict]:
    rows = {}
    for shard in sorted((folder / "jsonl").glob("*.jsonl")):
        for line in shard.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            rows[row["gen_id"]] = row
    return rows


def test_budget_subsets_nest_fit_their_budget_and_say_so_in_the_manifest(keyed_demo_run, tmp_path):
    from jobs.publish import run_budget_publish
    from udfs.budget import count_tokens, default_tokenizer_path, file_sha256, load_tokenizer

    lakehouse = keyed_demo_run["lakehouse"]
    config = keyed_demo_run["config"].model_copy(deep=True)
    config.publish.exports_dir = tmp_path
    config.publish.datasets = ["curated"]
    tokenizer, _ = load_tokenizer(None)
    kept, manifests = [], []
    for budget in (300, 1_200, 10**7):
        (result,) = run_budget_publish(lakehouse, config, budget)
        manifest, rows = result.manifest, _exported(result.folder)
        manifests.append(manifest)
        kept.append(set(rows))
        b = manifest["budget"]
        assert (b["tokens"], b["mode"], b["weights"]) == (budget, "proportional", None)
        assert b["tokenizer"] == {"path": default_tokenizer_path().as_posix(), "sha256": file_sha256(default_tokenizer_path())}
        assert manifest["rows"] == len(rows) == sum(f["documents"] for f in b["families"].values())
        for family, f in b["families"].items():
            texts = [r["text"] for r in rows.values() if r["task_family"] == family]
            assert sum(count_tokens(tokenizer, texts)) == f["tokens"] <= f["budget"]  # recounted from the files
            if f["documents"] < f["available_documents"]:  # within one document of the budget
                assert f["budget"] - f["tokens"] < f["next_document_tokens"]
            else:
                assert f["tokens"] == f["available_tokens"] and f["next_document_tokens"] is None
    assert kept[0] <= kept[1] <= kept[2] and len(kept[0]) < len(kept[2])
    assert kept[2] == set(keyed_demo_run["curated"])  # a budget above everything is everything
    families = sorted(manifests[-1]["budget"]["families"])
    weights = {families[0]: 1.0}  # one family only: the others get nothing
    (weighted,) = run_budget_publish(lakehouse, config, 1_200, weights)
    assert weighted.folder != run_budget_publish(lakehouse, config, 1_200)[0].folder
    assert weighted.manifest["budget"]["weights"] == weights
    assert {r["task_family"] for r in _exported(weighted.folder).values()} == {families[0]}


def test_calibration_sample_goes_through_enrich_and_curate(keyed_demo_run, tmp_path):
    """A copy of the world with a calibration sample of 10 seeds per family and min_agreement
    {auto: 0.8}: enrich sends only the sample's M + 1 requests per seed (the generated items' are in
    the ledger), curate measures the vote against gold, writes `calibration` and applies each
    family's threshold, and the seeds (enrich_seeds off) are no candidates."""
    from jobs.config import load_config
    from jobs.curate import run_curate
    from jobs.enrich import run_enrich
    from jobs.lakehouse import Lakehouse
    from simulator import SimSettings, SimulatorServer

    world = keyed_demo_run
    home = copy_home(Path(world["config"].home), tmp_path / "lakehouse")
    seeds = world["lakehouse"].read("seeds").select("question", "answer_text").collect()
    known = tmp_path / "known.jsonl"
    known.write_text("".join(json.dumps({"question": r["question"], "answer": r["answer_text"]}) + "\n" for r in seeds))
    per_family = 10
    with SimulatorServer(SimSettings(seed=4, wrong_answer_rate=0.2, latency_ms=1, latency_jitter_ms=0,
                                     known_answers_file=str(known))) as server:
        config = load_config(DEMO_CONFIG, [
            "schema=calib_copy", *LOCAL_SPARK, f"tasks.select=[{','.join(KEYED_TASKS)}]", f"tasks.mirror={DEMO_MIRROR}",
            "generate.seeds_per_task=4", f"enrich.samples_per_item={KEYED_M}",
            f"enrich.calibration_per_family={per_family}", "curate.min_agreement={auto: 0.8}",
            f"endpoint.base_url={server.base_url}", "endpoint.model=taskseed-sim", "endpoint.api_key_env=null",
            "curate.disabled_filters=[near_dup]"], home=home)
        lakehouse = Lakehouse(world["lakehouse"].spark, config)
        try:
            run_enrich(lakehouse, config)
            families = len(KEYED_TASKS)
            assert server.stats()["requests"] == families * per_family * (KEYED_M + 1)
            result = run_curate(lakehouse, config)
            calibration = result.calibration
            assert len(calibration.families) == families and calibration.not_enriched == 0
            rows = [r.asDict() for r in lakehouse.read("calibration").collect()]
            in_use = {r["task_family"]: r for r in rows if r["in_use"]}
            assert set(in_use) == set(calibration.families)
            assert all(r["source"] in ("auto", "auto_target_missed") and r["target_precision"] == 0.8
                       for r in in_use.values())
            assert all(r["measured"] <= per_family and r["samples_per_item"] == KEYED_M for r in rows)
            decisions = lakehouse.read("filter_decisions").where("filter = 'verification'").collect()
            for d in decisions:
                evidence = json.loads(d["evidence"])
                chosen = in_use[d["task_family"]]
                assert (evidence.get("min_agreement"), evidence["min_agreement_source"]) == (
                    chosen["threshold"], chosen["source"])
            assert lakehouse.read("curated").where("item_kind = 'seed'").count() == 0
            assert all(f"calibration.{family}.threshold" in result.metrics() for family in in_use)
        finally:
            lakehouse.spark.sql(f"DROP SCHEMA IF EXISTS {lakehouse.namespace} CASCADE")
