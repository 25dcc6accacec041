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
    # llm_batch_requests: requests a batch holds are left to it; batch mode writes the memberships
    assert declared["generate"] == ({"seeds", "llm_calls", "llm_batch_requests"}, {"llm_calls", "generated", "quarantine"})
    assert declared["enrich"] == ({"generated", "llm_calls", "llm_batch_requests"}, {"llm_calls", "enriched", "quarantine"})
    batch = Config.model_validate({"enrich": {"endpoint": {"mode": "batch"}}})
    assert "llm_batch_requests" in next(s for s in PIPELINE if s.name == "enrich").writes(batch)
    assert "llm_batch_requests" not in next(s for s in PIPELINE if s.name == "generate").writes(batch)
    # curate: the staging sources, the validation filter's ledger lookup, the near-dup engine's signatures
    assert declared["curate"][0] >= {"generated", "enriched", "seeds", "license_policy", "curated", "llm_calls",
                                     "minhash_signatures", "heldout", "heldout_keys", "heldout_shingles"}
    assert declared["curate"][1] >= {"filter_decisions", "curated", "curated_commercial", "minhash_signatures",
                                     "heldout_keys", "heldout_shingles"}
    # generated: the cost report attributes generation calls to the items they made (jobs/costs.py);
    # seeds, enriched, task_catalog: the card's per-task funnel from requests to rows
    assert declared["publish"] == ({"curated", "curated_commercial", "filter_decisions", "llm_calls", "quarantine",
                                    "generated", "seeds", "enriched", "task_catalog"}, {"publications"})
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


def test_a_run_opens_each_distinct_endpoint_once_and_every_stage_gets_its_own(monkeypatch):
    """`run_pipeline` opens the endpoints once per run, only when a selected stage declares it calls
    one, and hands every stage the {ledger stage: EndpointSettings} map: the stages whose endpoint
    has no base_url share one simulator (serving each of their models), a stage with its own
    configured endpoint gets that one; with no stage that calls one, nothing is opened."""
    import contextlib

    import jobs.llm_stage
    import jobs.pipeline as pipeline
    from jobs.lakehouse import TableAccess
    from simulator import SimulatorServer

    started, seen = [], {}
    real_start = SimulatorServer.start

    def counting_start(self):
        started.append(self.settings)
        return real_start(self)

    monkeypatch.setattr(SimulatorServer, "start", counting_start)

    class Lakehouse:
        @contextlib.contextmanager
        def recording(self):
            yield TableAccess()

    def stage(name, reads, writes, calls, ledger=()):
        return Stage(name=name, reads=tables(*reads), writes=tables(*writes), uses_endpoint=lambda _c: calls,
                     run=lambda ctx: seen.setdefault(name, ctx.endpoint), endpoint_stages=ledger)

    fake = (stage("make", (), ("a",), False), stage("gen", ("a",), ("b",), True, ("generate",)),
            stage("enr", ("b",), ("c",), True, ("enrich",)), stage("cur", ("c",), ("d",), True, ("judge",)))
    monkeypatch.setattr(pipeline, "PIPELINE", fake)
    config = Config.model_validate({
        "generate": {"endpoint": {"model": "big-gen"}},
        "enrich": {"endpoint": {"base_url": "http://10.0.0.7:8000/v1", "model": "reasoner", "api_key_env": None}},
        "curate": {"paraphrase": {"judge_endpoint": {"model": "small-judge"}}}})
    pipeline.run_pipeline(Lakehouse(), config, track=False)
    assert len(started) == 1 and (started[0].model, started[0].served_models) == ("big-gen", ("small-judge",))
    endpoints = seen["gen"]
    assert all(seen[name] is endpoints for name in ("enr", "cur"))
    assert endpoints["generate"].base_url == endpoints["judge"].base_url != endpoints["enrich"].base_url
    assert (endpoints["generate"].model, endpoints["enrich"].model, endpoints["judge"].model) == (
        "big-gen", "reasoner", "small-judge")
    pipeline.run_pipeline(Lakehouse(), config, ["make"], track=False)
    assert len(started) == 1  # no stage that calls one: nothing opened
