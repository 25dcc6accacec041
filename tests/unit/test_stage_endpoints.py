"""Per-stage endpoints and replicas in the config (jobs/config.py `Config.stage_endpoint`), their
settings (udfs/llm_client.EndpointSettings), and the preflight of every endpoint and replica
(jobs/preflight.py `check_stage_endpoints`) against simulator servers."""

from __future__ import annotations

import pytest

from jobs.config import Config, ConfigError, load_config
from jobs.preflight import check_endpoint, check_stage_endpoints
from simulator.server import free_port
from udfs.llm_client import EndpointSettings


@pytest.mark.parametrize("override, expected", [
    # a partial override inherits everything else from `endpoint`
    ({"model": "big"}, {"model": "big", "base_url": "http://a:1/v1", "max_concurrency": 10, "api_key_env": "K"}),
    ({"max_concurrency": 3, "structured_output": False},
     {"model": "m", "max_concurrency": 3, "structured_output": "none", "base_url": "http://a:1/v1"}),
    # location is a group: replicas replace the inherited base_url
    ({"replicas": [{"base_url": "http://r1:8000/v1", "max_concurrency": 4}, {"base_url": "http://r2:8000/v1"}]},
     {"base_url": None, "model": "m"}),
    # key source is a group: a secret scope replaces the inherited key variable
    ({"secret_scope": "llm", "secret_key": "nim"}, {"api_key_env": None, "secret_scope": "llm", "secret_key": "nim"}),
    ({"base_url": "http://b:2/v1", "api_key_env": None}, {"base_url": "http://b:2/v1", "api_key_env": None,
                                                          "max_concurrency": 10}),
])
@pytest.mark.parametrize("stage, key", [("generate", ("generate", "endpoint")), ("enrich", ("enrich", "endpoint")),
                                        ("judge", ("curate", "paraphrase", "judge_endpoint"))])
def test_a_stage_override_inherits_what_it_leaves_out(override, expected, stage, key):
    tree: dict = {"endpoint": {"base_url": "http://a:1/v1", "model": "m", "max_concurrency": 10, "api_key_env": "K"}}
    node = tree
    for part in key[:-1]:
        node = node.setdefault(part, {})
    node[key[-1]] = override
    config = Config.model_validate(tree)
    ep = config.stage_endpoint(stage)
    for name, value in expected.items():
        assert getattr(ep, name) == value, name
    others = {"generate", "enrich", "judge"} - {stage}
    assert all(config.stage_endpoint(other) == config.endpoint for other in others)


def test_replicas_sum_their_windows_and_default_to_the_endpoint_window():
    config = Config.model_validate({"enrich": {"endpoint": {"model": "r", "max_concurrency": 8, "replicas": [
        {"base_url": "http://r1:8000/v1", "max_concurrency": 32}, {"base_url": "http://r2:8000/v1"}]}}})
    ep = config.stage_endpoint("enrich")
    assert ep.total_concurrency() == 40
    settings = EndpointSettings.from_config(ep, require_key=False)
    assert settings.max_concurrency == 40 and settings.base_url == "http://r1:8000/v1"
    assert [(s.base_url, s.max_concurrency) for s in settings.replica_specs()] == [
        ("http://r1:8000/v1", 32), ("http://r2:8000/v1", 8)]


@pytest.mark.parametrize("overrides, message", [
    (["endpoint.base_url=http://a/v1", "endpoint.replicas=[{base_url: http://b/v1}]"], "not both"),
    (["enrich.endpoint.replicas=[{base_url: http://b/v1, max_concurrency: 0}]"], "enrich.endpoint.replicas"),
    (["generate.endpoint.secret_scope=llm"], "set together"),
    (["curate.paraphrase.judge_endpoint.max_concurrency=0"], "judge_endpoint.max_concurrency"),
    (["enrich.endpoint.modle=x"], "enrich.endpoint.modle: unknown key"),
])
def test_bad_stage_endpoints_are_one_line_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=overrides)


def _config(**stage_endpoints) -> Config:
    tree: dict = {"endpoint": {"api_key_env": None}}
    for stage, value in stage_endpoints.items():
        if stage == "judge":
            tree["curate"] = {"paraphrase": {"judge_endpoint": value}}
        else:
            tree[stage] = {"endpoint": value}
    return Config.model_validate(tree)


def test_preflight_names_a_replica_that_is_down_and_the_run_starts_without_it(start_sim):
    up = start_sim(model="reasoner")
    dead = f"http://127.0.0.1:{free_port()}/v1"
    config = _config(enrich={"model": "reasoner", "replicas": [{"base_url": up.base_url}, {"base_url": dead}]})
    lines = check_stage_endpoints(config, ["generate", "enrich"])
    assert len(lines) == 1 and dead in lines[0] and "unreachable" in lines[0] and "starts without it" in lines[0]
    assert "1 of 2 replicas of enrich.endpoint" in lines[0]
    printed: list[str] = []
    assert check_endpoint(config, ["enrich"], report=printed.append) == printed == lines


@pytest.mark.parametrize("problem", ["down", "model", "key"])
def test_preflight_stops_when_no_replica_of_a_stage_answers(start_sim, problem, monkeypatch):
    server = start_sim(model="small-judge", require_api_key="sk-right-key-123")
    monkeypatch.setenv("JUDGE_KEY", "sk-right-key-123" if problem != "key" else "sk-wrong-key-456")
    url = f"http://127.0.0.1:{free_port()}/v1" if problem == "down" else server.base_url
    model = "small-judge" if problem != "model" else "tiny-judge"
    config = _config(judge={"base_url": url, "model": model, "api_key_env": "JUDGE_KEY"})
    config.curate.paraphrase.enabled = True
    with pytest.raises(ConfigError) as info:
        check_stage_endpoints(config, ["judge"])
    text = str(info.value)
    expected = {"down": "is unreachable", "model": "'tiny-judge' is not served by",
                "key": "rejected the API key"}[problem]
    assert expected in text and url in text and "sk-" not in text
    assert len(text.splitlines()) == 1


def test_preflight_checks_each_distinct_endpoint_once_and_every_replica(start_sim):
    a, b = start_sim(model="gen"), start_sim(model="gen")
    config = _config(generate={"model": "gen", "replicas": [{"base_url": a.base_url}, {"base_url": b.base_url}]},
                     enrich={"model": "gen", "replicas": [{"base_url": a.base_url}, {"base_url": b.base_url}]})
    assert check_stage_endpoints(config, ["generate", "enrich", "judge"]) == []
    # generate and enrich share the fleet: one GET /models per replica; the judge is the simulator (no check)
    assert all(s.stats()["requests"] == 0 for s in (a, b))  # /models is not a chat request


def test_run_lines_params_and_card_name_each_stage_endpoint_without_credentials():
    """What a run prints, what MLflow records and what the card says about the endpoints: the model
    per stage, replicas listed, credentials in URLs (userinfo, query) dropped, the simulator named."""
    from jobs.pipeline import endpoint_lines
    from jobs.publish import stage_endpoints_line
    from jobs.tracking import stage_endpoint_params

    config = Config.model_validate({
        "endpoint": {"model": "sim-default"},
        "generate": {"endpoint": {"model": "gen-large", "replicas": [
            {"base_url": "http://user:sk-secret-1@gpu1:8000/v1?token=sk-secret-2", "max_concurrency": 128},
            {"base_url": "http://gpu2:8000/v1"}]}},
        "enrich": {"endpoint": {"base_url": "https://nim.example/v1", "model": "reasoner"}}})
    settings = {stage: EndpointSettings.from_config(config.stage_endpoint(stage), require_key=False,
                                                    base_url=None if stage != "judge" else "http://127.0.0.1:9/v1")
                for stage in ("generate", "enrich", "judge")}
    lines = endpoint_lines(config, settings)
    params = stage_endpoint_params(config)
    card, simulated = stage_endpoints_line(config)
    text = "\n".join([*lines, *params.values(), card])
    assert "sk-secret" not in text and "user" not in text
    assert "endpoint [generate]: model=gen-large on 2 replicas: http://gpu1:8000/v1 ×128, http://gpu2:8000/v1 ×64" \
        in lines
    assert "endpoint [enrich]: https://nim.example/v1 model=reasoner" in lines
    assert "built-in simulator" in lines[2] and "sim-default" in lines[2]
    batch = Config.model_validate({"endpoint": {"mode": "batch"}})
    said = endpoint_lines(batch, {stage: settings[stage] for stage in ("enrich", "judge")})
    assert "batch mode" in said[0] and "batch mode" not in said[1]  # the judge calls online
    assert params["model.generate"] == "gen-large" and params["max_concurrency.generate"] == "192"
    assert params["endpoint_url.judge"] == "simulator" and params["model.judge"] == "sim-default"
    assert card == "generate: http://gpu1:8000/v1,http://gpu2:8000/v1; enrich: https://nim.example/v1"
    assert not simulated
    assert "model.embeddings" not in params  # the paraphrase filter is off
    with_tei = Config.model_validate({"curate": {"paraphrase": {"enabled": True, "embeddings_endpoint": {
        "base_url": "http://k:sk-secret-3@tei:8080/v1", "model": "bge"}}}})
    embed_params = stage_endpoint_params(with_tei)
    assert embed_params["model.embeddings"] == "bge" and embed_params["endpoint_url.embeddings"] == "http://tei:8080/v1"
    assert "sk-secret" not in "\n".join(embed_params.values())


def test_preflight_checks_the_paraphrase_embeddings_server_when_curate_calls_it(start_sim, tmp_path):
    """`curate.paraphrase.embeddings_endpoint` is checked like a chat endpoint when curate (ledger
    stage `judge`) runs: a server that does not list the embedding model is one line naming the key;
    one that does passes; a generate-only run does not look at it."""
    import pytest as _pytest

    from jobs.config import ConfigError, load_config
    from jobs.preflight import check_endpoint, preflight_problems
    from simulator.embeddings import SIM_EMBEDDING_MODEL

    server = start_sim(model="chat")
    def cfg(model):
        return load_config(None, ["curate.paraphrase.enabled=true",
                                  f"curate.paraphrase.embeddings_endpoint={{base_url: '{server.base_url}', "
                                  f"model: {model}, api_key_env: null}}"], home=tmp_path / "home")

    assert check_endpoint(cfg(SIM_EMBEDDING_MODEL), ["judge"], report=lambda line: None) == []
    with _pytest.raises(ConfigError, match=r"'no-such-embedder' is not served .*curate\.paraphrase\.embeddings_endpoint"):
        check_endpoint(cfg("no-such-embedder"), ["judge"], report=lambda line: None)
    assert check_endpoint(cfg("no-such-embedder"), ["generate"], report=lambda line: None) == []
    assert any("no-such-embedder" in p for p in preflight_problems(cfg("no-such-embedder")))
