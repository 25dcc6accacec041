"""The publish stage on tiny inline tables: an export per curated dataset pinned to its Delta
version, the data card's funnel and counts computed from filter_decisions / llm_calls / quarantine,
a rerun that writes and commits nothing, a new curated version that gets its own folder while the
old one stays, and a clear error before curate has run."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

pytestmark = pytest.mark.spark

FILTER_ORDER = ["validation", "verification", "exact_dup", "seed_copy", "near_dup", "contamination", "paraphrase",
                "license"]


def _curated_row(i: int, family: str, license_: str, commercial: str) -> dict:
    return {"gen_id": f"g{i}", "item_kind": "generated", "seed_id": f"s{i}", "task": family, "task_family": family,
            "answer_format": "mcq", "question": f"What is {i}?", "context": None, "choices": ["a", "b"],
            "answer_index": 0, "answer_text": "a", "knowledge": "k", "reasoning": "r",
            "document": f"Question: What is {i}?\n\nAnswer: (A) a\n", "votes_agree": 3, "votes_expected": 4,
            "votes_returned": 4, "votes_null": 0, "agreement": 0.75, "verification": "majority_agrees",
            "license": license_, "license_class": "permissive" if commercial == "yes" else "unknown",
            "commercial_ok": commercial, "dataset_path": f"ds/{family}", "generation_model": "taskseed-sim",
            "generation_prompt_version": "generate/mcq/v1", "enrichment_sample": 0, "enrichment_model": "taskseed-sim",
            "enrichment_prompt_version": "enrich/mcq/v1", "run_id": "r1", "curated_at": datetime.now(timezone.utc)}


DISABLED = ("paraphrase",)  # as in the demo config: its decisions say 'disabled'


def _decisions(fails: dict[str, tuple[str, str, str | None]], ids: list[str]) -> list[dict]:
    """Every filter's decision for every id; `fails` = {gen_id: (filter, reason, evidence)}."""
    rows = []
    for gid in ids:
        for name in FILTER_ORDER:
            failed = fails.get(gid, (None,))[0] == name
            rows.append({"gen_id": gid, "filter": name, "passed": not failed,
                         "reason": fails[gid][1] if failed else "disabled" if name in DISABLED else "ok",
                         "score": None,
                         "evidence": fails[gid][2] if failed else None, "task": "arc", "task_family": "arc",
                         "item_kind": "generated", "run_id": "r1", "decided_at": datetime.now(timezone.utc)})
    return rows


@pytest.fixture
def published_inputs(lakehouse):
    from schemas.tables import CURATED, CURATED_COMMERCIAL, FILTER_DECISIONS, LLM_CALLS, QUARANTINE

    spark = lakehouse.spark
    curated = [_curated_row(1, "arc", "cc-by-4.0", "yes"), _curated_row(2, "gsm8k", "mit", "yes"),
               _curated_row(3, "arc", "unknown", "unknown")]
    lakehouse.merge(spark.createDataFrame(curated, CURATED.schema), CURATED)
    lakehouse.merge(spark.createDataFrame(curated[:2], CURATED_COMMERCIAL.schema), CURATED_COMMERCIAL)
    ids = ["g1", "g2", "g3", "g4", "g5", "g6", "g7"]
    fails = {
        "g4": ("validation", "template_marker", None),
        "g5": ("contamination", "heldout_ngram", json.dumps({"heldout_task": "mmlu", "rule": "ngram"})),
        "g6": ("near_dup", "near_duplicate", json.dumps({"component_id": "g1", "component_size": 2})),
        "g7": ("verification", "tie", None),
        "g3": ("license", "unknown_license", None),
    }
    lakehouse.merge(spark.createDataFrame(_decisions(fails, ids), FILTER_DECISIONS.schema), FILTER_DECISIONS)
    calls = [{"request_id": f"q{i}", "stage": "generate" if i < 4 else "enrich", "status": st, "model": "taskseed-sim",
              "prompt_tokens": 100, "completion_tokens": 50, "latency_ms": float(10 * i),
              "error_class": "http_503" if st == "failed" else None}
             for i, st in enumerate(["ok", "ok", "ok", "parse_error", "ok", "ok", "failed"])]
    lakehouse.append(spark.createDataFrame(calls, "request_id string, stage string, status string, model string, "
                                                  "prompt_tokens int, completion_tokens int, latency_ms double, "
                                                  "error_class string"), LLM_CALLS)
    lakehouse.merge(spark.createDataFrame([{"stage": "enrich", "source_key": "x", "reason": "truncated_json"}],
                                          "stage string, source_key string, reason string"), QUARANTINE)
    return lakehouse


@pytest.mark.heavy  # a whole publish run
def test_publish_exports_each_dataset_at_its_version_with_manifest_and_card(published_inputs, tmp_path):
    from jobs.export import read_manifest
    from jobs.pipeline import lineage_tables
    from jobs.publish import run_publish

    lakehouse = published_inputs
    result = run_publish(lakehouse, lakehouse.config, lineage_tables(lakehouse.config), shard_rows=2, run_id="run-1")
    by_dataset = {p.dataset: p for p in result.publications}
    assert set(by_dataset) == {"curated", "curated_commercial"} and result.committed
    curated = by_dataset["curated"]
    assert curated.folder == lakehouse.home / "exports" / "curated" / f"v{lakehouse.version('curated')}"
    manifest = read_manifest(curated.folder)
    assert manifest["rows"] == 3 and manifest["run_id"] == "run-1" and manifest["simulated"] is True
    assert [f["rows"] for f in manifest["files"] if f["format"] == "parquet"] == [2, 1]
    assert manifest["counts"]["task_family"] == {"arc": 2, "gsm8k": 1}
    assert manifest["counts"]["license"] == {"cc-by-4.0": 1, "mit": 1, "unknown": 1}
    assert manifest["models"] == {"generation": ["taskseed-sim"], "enrichment": ["taskseed-sim"]}
    assert manifest["prompt_versions"] == ["enrich/mcq/v1", "generate/mcq/v1"]
    # the tables the rows derive from, at the versions they were read; the datasets are not their own inputs
    assert manifest["input_versions"]["filter_decisions"] == lakehouse.version("filter_decisions")
    assert manifest["delta_version"] == lakehouse.version("curated")
    assert not {"curated", "curated_commercial", "publications"} & set(manifest["input_versions"])
    first = json.loads((curated.folder / "jsonl" / "part-00000.jsonl").read_text().splitlines()[0])
    assert first["gen_id"] == "g1" and first["text"].startswith("Question: What is 1?")
    assert read_manifest(by_dataset["curated_commercial"].folder)["rows"] == 2
    rows = {r["dataset"]: r for r in lakehouse.read("publications").collect()}
    assert rows["curated"]["rows"] == 3 and rows["curated"]["shards"] == 2
    assert rows["curated"]["export_path"] == curated.folder.as_posix()
    html = (curated.folder / "datacard.html").read_text()
    assert "Simulator output" in html


def test_the_card_funnel_and_counts_come_from_the_decisions_and_the_ledger(published_inputs):
    from jobs.datacard import gather_card
    from jobs.pipeline import lineage_tables
    from jobs.publish import base_manifest, input_versions

    lakehouse = published_inputs
    config = lakehouse.config
    for dataset, gating_end in (("curated", 3), ("curated_commercial", 2)):
        df = lakehouse.read(dataset)
        manifest = {**base_manifest(lakehouse, config, dataset, lakehouse.version(dataset), df, "r",
                                    input_versions(lakehouse, lineage_tables(config))), "files": []}
        card = gather_card(lakehouse, config, dataset, df, df.count(), manifest)
        steps = dict(card.funnel)
        assert card.funnel[0] == ("candidates", 7)
        assert steps["validation"] == 6 and steps["verification"] == 5 and steps["near_dup"] == 4
        assert steps["contamination"] == 3
        assert card.funnel[-1][1] == gating_end
        assert ("license" in steps) == (dataset == "curated_commercial")
        assert "paraphrase (disabled)" in steps and "paraphrase" not in steps  # the funnel says so
        assert card.disabled == {"paraphrase": 7}
    assert card.rejected_alone["validation"] == 1 and card.rejected_alone["exact_dup"] == 0
    assert card.reasons["verification"] == {"tie": 1}
    assert card.contamination == [("mmlu", "ngram", 1)]
    assert card.near_dup_components == {2: 1}
    assert card.quarantine == [("enrich", "truncated_json", 1)]
    assert card.llm_failures == [("enrich", "http_503", 1)]
    llm = {s.stage: s for s in card.llm}
    assert (llm["generate"].requests, llm["generate"].ok, llm["generate"].parse_error) == (4, 3, 1)
    assert (llm["enrich"].failed, llm["enrich"].prompt_tokens) == (1, 300)
    assert card.rows_per_family == {"arc": 1, "gsm8k": 1}


@pytest.mark.heavy  # three whole publish runs
def test_republishing_writes_and_commits_nothing_a_new_version_gets_its_own_folder(published_inputs):
    from jobs.pipeline import lineage_tables
    from jobs.publish import run_publish
    from schemas.tables import CURATED

    lakehouse = published_inputs
    first = run_publish(lakehouse, lakehouse.config, lineage_tables(lakehouse.config), shard_rows=2)
    version = lakehouse.version("publications")
    manifest = first.publications[0].folder / "manifest.json"
    stamp = manifest.stat().st_mtime_ns

    again = run_publish(lakehouse, lakehouse.config, lineage_tables(lakehouse.config), shard_rows=2)
    assert not again.committed and lakehouse.version("publications") == version
    assert not any(p.export.written for p in again.publications)
    assert manifest.stat().st_mtime_ns == stamp

    old_version = lakehouse.version("curated")
    lakehouse.merge(lakehouse.spark.createDataFrame([_curated_row(8, "boolq", "mit", "yes")], CURATED.schema), CURATED)
    third = run_publish(lakehouse, lakehouse.config, lineage_tables(lakehouse.config), shard_rows=2)
    curated = next(p for p in third.publications if p.dataset == "curated")
    assert curated.delta_version == old_version + 1 and curated.export.written and curated.export.rows == 4
    assert (lakehouse.home / "exports" / "curated" / f"v{old_version}" / "manifest.json").is_file()
    assert third.committed and lakehouse.read("publications").count() == 3


def test_publish_before_curate_is_a_clear_error(lakehouse):
    from jobs.config import ConfigError
    from jobs.pipeline import lineage_tables
    from jobs.publish import run_publish

    with pytest.raises(ConfigError, match="run `taskseed curate`"):
        run_publish(lakehouse, lakehouse.config, lineage_tables(lakehouse.config))
