"""The pipeline's order comes from what each stage declares it reads and writes (no Spark here)."""

from __future__ import annotations

import pytest

from jobs.config import Config
from jobs.pipeline import PIPELINE, STAGES, select_stages
from jobs.stage import Stage, dag_order, tables


def _stage(name: str, reads=(), writes=()) -> Stage:
    return Stage(name=name, reads=tables(*reads), writes=tables(*writes), run=lambda ctx: None)


def test_the_pipeline_runs_catalog_ingest_generate_enrich_curate_publish():
    assert STAGES == ("catalog", "ingest", "generate", "enrich", "curate", "publish")
    config = Config()
    declared = {stage.name: (set(stage.reads(config)), set(stage.writes(config))) for stage in PIPELINE}
    assert declared["generate"] == ({"seeds", "llm_calls"}, {"llm_calls", "generated", "quarantine"})
    assert declared["enrich"] == ({"generated", "llm_calls"}, {"llm_calls", "enriched", "quarantine"})
    # curate: the staging sources, the validation filter's ledger lookup, the near-dup engine's signatures
    assert declared["curate"][0] >= {"generated", "enriched", "seeds", "license_policy", "curated", "llm_calls",
                                     "minhash_signatures", "heldout", "heldout_keys", "heldout_shingles"}
    assert declared["curate"][1] >= {"filter_decisions", "curated", "curated_commercial", "minhash_signatures",
                                     "heldout_keys", "heldout_shingles"}
    # generated: the cost report attributes generation calls to the items they made (jobs/costs.py)
    assert declared["publish"] == ({"curated", "curated_commercial", "filter_decisions", "llm_calls", "quarantine",
                                    "generated"}, {"publications"})
    assert "calibration" not in declared["curate"][1]
    config.enrich.calibration_per_family = 50  # a calibration sample: enrich reads seeds, curate writes calibration
    assert "seeds" in next(s for s in PIPELINE if s.name == "enrich").reads(config)
    assert "calibration" in next(s for s in PIPELINE if s.name == "curate").writes(config)
    assert "calibration" in next(s for s in PIPELINE if s.name == "publish").reads(config)
    config.enrich.calibration_per_family = 0
    config.enrich.enrich_seeds = True
    assert "seeds" in next(s for s in PIPELINE if s.name == "enrich").reads(config)
    config.curate.disabled_filters = ["near_dup"]  # a disabled filter's engine reads and writes nothing
    config.curate.contamination.enabled = False
    curate = next(s for s in PIPELINE if s.name == "curate")
    assert not {"minhash_signatures", "heldout_keys", "heldout_shingles", "heldout"} & set(curate.writes(config))
    assert not {"heldout", "heldout_keys"} & set(curate.reads(config))


def test_a_publication_records_every_table_its_rows_derive_from_and_not_itself():
    from jobs.pipeline import lineage_tables

    config = Config()
    lineage = lineage_tables(config)
    assert {"task_catalog", "license_policy", "seeds", "heldout", "llm_calls", "generated", "enriched",
            "minhash_signatures", "heldout_keys", "heldout_shingles", "filter_decisions", "quarantine"} <= set(lineage)
    assert not {"curated", "curated_commercial", "publications"} & set(lineage)
    assert lineage.index("seeds") < lineage.index("generated") < lineage.index("filter_decisions")
    config.curate.paraphrase.enabled = True
    assert {"heldout_embeddings", "paraphrase_judgments"} <= set(lineage_tables(config))
    config.curate.contamination.enabled = False
    assert "heldout_keys" not in lineage_tables(config)


def test_a_stage_declared_first_runs_after_the_stages_it_reads_from():
    report = _stage("report", reads=("publications",), writes=("reports",))
    order = [s.name for s in dag_order([report, *PIPELINE], Config())]
    assert order == ["catalog", "ingest", "generate", "enrich", "curate", "publish", "report"]


def test_a_shared_ledger_is_not_a_dependency_but_a_cycle_is_an_error():
    a = _stage("a", reads=("ledger", "x"), writes=("ledger", "y"))
    b = _stage("b", reads=("ledger", "y"), writes=("ledger", "z"))
    assert [s.name for s in dag_order([b, a], Config())] == ["a", "b"]
    with pytest.raises(ValueError, match="read each other's outputs"):
        dag_order([_stage("p", reads=("q_out",), writes=("p_out",)), _stage("q", reads=("p_out",), writes=("q_out",))],
                  Config())


def test_stages_subset_keeps_dag_order_and_names_unknown_stages():
    from jobs.config import ConfigError

    assert [s.name for s in select_stages(["enrich", "generate"], Config())] == ["generate", "enrich"]
    assert [s.name for s in select_stages(["curate", "enrich"], Config())] == ["enrich", "curate"]
    assert [s.name for s in select_stages(["publish", "curate"], Config())] == ["curate", "publish"]
    with pytest.raises(ConfigError, match="unknown stage.*report"):
        select_stages(["report"], Config())


def test_stages_declare_whether_they_call_the_endpoint_curate_when_the_judge_is_on():
    """`taskseed run` opens one endpoint (or one simulator) when a selected stage declares it calls
    one, and hands it to every stage: the paraphrase judge inside curate runs on it too."""
    config = Config()
    uses = {stage.name: stage.uses_endpoint(config) for stage in PIPELINE}
    assert uses == {"catalog": False, "ingest": False, "generate": True, "enrich": True, "curate": False,
                    "publish": False}
    config.curate.paraphrase.enabled = True
    assert next(s for s in PIPELINE if s.name == "curate").uses_endpoint(config)
    assert not any(s.uses_endpoint(config) for s in select_stages(["catalog", "publish"], config))


def test_a_run_opens_one_endpoint_and_every_stage_that_calls_one_gets_it(monkeypatch):
    """`run_pipeline` opens the endpoint (or starts the simulator) once, only when a selected stage
    declares it calls one, and hands that one to every stage: three stages that call it (as
    generate, enrich and curate with the judge on do) share one simulator per `taskseed run`."""
    import contextlib
    from types import SimpleNamespace

    import jobs.llm_stage
    import jobs.pipeline as pipeline
    from jobs.lakehouse import TableAccess

    opened, seen = [], {}

    @contextlib.contextmanager
    def endpoint_for(config):
        opened.append(SimpleNamespace(base_url=f"http://127.0.0.1:{8000 + len(opened)}/v1"))
        yield opened[-1]

    class Lakehouse:
        @contextlib.contextmanager
        def recording(self):
            yield TableAccess()

    def stage(name, reads, writes, calls):
        return Stage(name=name, reads=tables(*reads), writes=tables(*writes), uses_endpoint=lambda _c: calls,
                     run=lambda ctx: seen.setdefault(name, ctx.endpoint))

    fake = (stage("make", (), ("a",), False), stage("ask", ("a",), ("b",), True),
            stage("ask_more", ("b",), ("c",), True), stage("judge", ("c",), ("d",), True))
    monkeypatch.setattr(pipeline, "PIPELINE", fake)
    monkeypatch.setattr(jobs.llm_stage, "endpoint_for", endpoint_for)
    pipeline.run_pipeline(Lakehouse(), Config(), track=False)
    assert len(opened) == 1
    assert [seen[name] for name in ("ask", "ask_more", "judge")] == [opened[0]] * 3
    pipeline.run_pipeline(Lakehouse(), Config(), ["make"], track=False)
    assert len(opened) == 1  # no stage that calls it: nothing opened
