"""Issue 5's Done-when: ARC-Easy, GSM8K, BoolQ, WinoGrande and WebQuestions seeds from the shared
mirror → generate (K=2) → enrich (M=3, seeds too) against the simulator, with injected faults.

Seeds come through the real catalog + ingest stages (lm-eval's own configs normalize them). To keep
the test fast the mirror is narrowed to the first 40 training records of each dataset (copied
verbatim into a temporary mirror; no validation/test files, so nothing goes to heldout), and
`generate.seeds_per_task=5` picks five of them per task. The full splits are ingest's own test.

Checked: K ledger requests per seed and M per item, every request in exactly one place (generated
or enriched, else quarantine with a reason), a rerun of both stages sends no request and changes
no table, and every enriched sample renders as a pretraining document.
"""

from __future__ import annotations

from collections import Counter
from itertools import islice

import pytest
from pyspark.sql import functions as F

from schemas.tables import ENRICHED, GENERATED, LLM_CALLS, QUARANTINE, SEEDS
from udfs.llm_client import EndpointSettings

pytestmark = [pytest.mark.e2e, pytest.mark.spark, pytest.mark.heavy]

TASKS = ["arc_easy", "gsm8k", "boolq", "winogrande", "webqs"]
TRAIN_FILES = [
    "allenai/ai2_arc/ARC-Easy/train.jsonl",
    "openai/gsm8k/main/train.jsonl",
    "aps/super_glue/boolq/train.jsonl",
    "allenai/winogrande/winogrande_l/train.jsonl",
    "stanfordnlp/web_questions/default/train.jsonl",
]
RECORDS_PER_TASK, SEEDS_PER_TASK, K, M = 40, 5, 2, 3


@pytest.fixture
def small_mirror(mirror, tmp_path):
    root = tmp_path / "mirror"
    for relative in TRAIN_FILES:
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        with (mirror / relative).open(encoding="utf-8") as src:
            target.write_text("".join(islice(src, RECORDS_PER_TASK)), encoding="utf-8")
    return root


def _ids(df, column="request_id") -> set[str]:
    return {r[0] for r in df.select(column).collect()}


def _snapshot(lakehouse) -> dict[str, int | None]:
    return {name: lakehouse.version(name) for name in (GENERATED.name, ENRICHED.name, QUARANTINE.name)}


def test_seeds_from_the_mirror_generate_k_enrich_m_all_accounted_rerun_sends_none(
        spark, small_mirror, make_config, start_sim, task_index):
    from jobs.catalog import TaskIndex, resolve_selection, run_catalog
    from jobs.enrich import run_enrich
    from jobs.generate import run_generate
    from jobs.ingest import run_ingest
    from jobs.lakehouse import Lakehouse
    from tests.documents import pretraining_documents

    config = make_config(
        "schema=t_e2e_generate_enrich", f"tasks.mirror={small_mirror}",
        "tasks.overrides={winogrande: {dataset_name: winogrande_l}}",
        f"generate.items_per_seed={K}", f"generate.seeds_per_task={SEEDS_PER_TASK}",
        f"enrich.samples_per_item={M}", "enrich.enrich_seeds=true", "llm.commit_rows=100",
    )
    lakehouse = Lakehouse(spark, config)
    try:
        full = task_index
        wanted, _ = resolve_selection(full, TASKS)
        index = TaskIndex(tasks={t: full.tasks[t] for t in wanted}, group_members=full.group_members,
                          tag_members=full.tag_members, roots=full.roots)
        run_catalog(lakehouse, config, progress=lambda _: None, index=index)
        run_ingest(lakehouse, config, tasks=TASKS, heldout_tasks=[], progress=lambda _: None, index=index)
        seeds_per_task = Counter(r.task for r in lakehouse.read(SEEDS.name).select("task").collect())
        assert set(seeds_per_task) == set(TASKS) and min(seeds_per_task.values()) >= SEEDS_PER_TASK

        # a simulator with transport and content faults; few retries so some calls fail for good
        server = start_sim(seed=5, latency_ms=3, latency_jitter_ms=2, fault_rate=0.15,
                           fault_kinds=("500", "malformed", "truncate"), wrong_answer_rate=0.1)
        endpoint = EndpointSettings(base_url=server.base_url, model="taskseed-sim", require_key=False,
                                    max_concurrency=32, timeout_s=5.0, max_retries=1,
                                    backoff_base_s=0.01, backoff_max_s=0.05)

        gen = run_generate(lakehouse, config, progress=lambda _: None, endpoint=endpoint)
        n_seeds = SEEDS_PER_TASK * len(TASKS)
        assert gen.planned == n_seeds * K and gen.unsent == 0 and gen.accounting.reconciles()
        assert gen.items + gen.quarantined == n_seeds * K and gen.render_errors == 0
        gen_ledger = lakehouse.read(LLM_CALLS.name).where(F.col("stage") == "generate")
        per_seed = Counter(r.source_key for r in gen_ledger.select("source_key").collect())
        assert len(per_seed) == n_seeds and set(per_seed.values()) == {K}  # K requests per seed
        generated = lakehouse.read(GENERATED.name)
        quarantined = lakehouse.read(QUARANTINE.name)
        gen_q = quarantined.where(F.col("stage") == "generate")
        # every generate request is exactly one generated item or one quarantine row (with a reason)
        assert _ids(generated) | _ids(gen_q, "source_key") == _ids(gen_ledger)
        assert not _ids(generated) & _ids(gen_q, "source_key")
        assert gen_q.where("reason IS NULL OR reason = ''").count() == 0
        families = {r.task_family for r in generated.select("task_family").distinct().collect()}
        assert len(families) == len(TASKS)  # every task produced items (family names come from lm-eval)
        assert generated.where("license IS NULL OR seed_id IS NULL OR prompt_version IS NULL").count() == 0
        mcq = generated.where("answer_format = 'mcq'").collect()
        assert mcq and all(r.choices[r.answer_index] == r.answer_text for r in mcq)

        enr = run_enrich(lakehouse, config, progress=lambda _: None, endpoint=endpoint)
        n_items = gen.items + n_seeds  # generated items + the answer-enriched seeds
        assert enr.planned == n_items * M and enr.unsent == 0 and enr.accounting.reconciles()
        assert enr.items + enr.quarantined == n_items * M
        enr_ledger = lakehouse.read(LLM_CALLS.name).where(F.col("stage") == "enrich")
        per_item = Counter(r.source_key for r in enr_ledger.select("source_key").collect())
        assert len(per_item) == n_items and set(per_item.values()) == {M}  # M samples per item
        enriched = lakehouse.read(ENRICHED.name)
        enr_q = lakehouse.read(QUARANTINE.name).where(F.col("stage") == "enrich")
        assert _ids(enriched) | _ids(enr_q, "source_key") == _ids(enr_ledger)
        assert not _ids(enriched) & _ids(enr_q, "source_key")
        kinds = Counter(r.item_kind for r in enriched.select("item_kind").collect())
        assert kinds["generated"] > 0 and kinds["seed"] > 0
        samples = Counter((r.gen_id, r.sample) for r in enriched.select("gen_id", "sample").collect())
        assert set(samples.values()) == {1} and {s for _, s in samples} <= set(range(M))

        docs = pretraining_documents(lakehouse)
        assert docs.count() == enriched.count()
        assert docs.where("text NOT LIKE '%Question:%' OR text NOT LIKE '%Answer:%'").count() == 0

        # a rerun of both stages sends no request and commits nothing
        sent, versions = server.stats()["requests"], _snapshot(lakehouse)
        gen2 = run_generate(lakehouse, config, progress=lambda _: None, endpoint=endpoint)
        enr2 = run_enrich(lakehouse, config, progress=lambda _: None, endpoint=endpoint)
        assert gen2.accounting.sent == 0 and enr2.accounting.sent == 0
        assert server.stats()["requests"] == sent
        assert (gen2.items, gen2.quarantined, enr2.items, enr2.quarantined) == \
               (gen.items, gen.quarantined, enr.items, enr.quarantined)
        assert _snapshot(lakehouse) == versions
        print(f"\ne2e: seeds={n_seeds} generate {gen.items} items / {gen.quarantined} quarantined "
              f"{gen.quarantined_by_reason}; enrich {enr.items} samples / {enr.quarantined} quarantined "
              f"{enr.quarantined_by_reason}; simulator requests={sent}")
    finally:
        spark.sql(f"DROP SCHEMA IF EXISTS {lakehouse.namespace} CASCADE")
