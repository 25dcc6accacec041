"""Configuration errors name the offending key in one line; valid input round-trips."""

import pytest

from jobs.config import Config, ConfigError, load_config, parse_override


def test_defaults_are_the_embedded_local_setup():
    config = load_config()
    assert config.spark.master == "local[*]"
    assert str(config.home) == "lakehouse"
    assert config.endpoint.base_url is None  # simulator
    assert config.schema_name == "taskseed"


def test_yaml_file_and_overrides_combine(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("endpoint:\n  model: llama\n  max_concurrency: 32\ntasks:\n  select: [arc_easy]\n")
    config = load_config(path, ["endpoint.max_concurrency=128", "generate.items_per_seed=3"], home=tmp_path / "h")
    assert config.endpoint.model == "llama"
    assert config.endpoint.max_concurrency == 128
    assert config.generate.items_per_seed == 3
    assert config.tasks.select == ["arc_easy"]
    assert config.home == tmp_path / "h"


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["endpoint.modle=x"], "endpoint.modle: unknown key"),
        (["endpoint.max_concurrency=lots"], "endpoint.max_concurrency:"),
        (["endpoint.max_concurrency=0"], "endpoint.max_concurrency:"),
        (["generate.items_per_seed="], "generate.items_per_seed:"),
        (["nonsense=1"], "nonsense: unknown key"),
        (["spark=3"], "spark:"),
        (["endpoint.secret_scope=s"], "secret_scope and secret_key must be set together"),
        (["schema=bad-name"], "schema"),
        (["noequals"], "must look like key.sub=value"),
    ],
)
def test_user_mistakes_give_one_clear_error_naming_the_key(overrides, expected):
    with pytest.raises(ConfigError) as info:
        load_config(overrides=overrides)
    assert expected in str(info.value)
    assert "Traceback" not in str(info.value)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("endpoint: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(scalar)


def test_override_values_are_parsed_as_yaml():
    assert parse_override("a.b=3") == ("a.b", 3)
    assert parse_override("a=[x, y]") == ("a", ["x", "y"])
    assert parse_override("a=true") == ("a", True)


def test_fingerprint_changes_with_settings_but_not_home(tmp_path):
    a = load_config(home=tmp_path / "a")
    b = load_config(home=tmp_path / "b")
    c = load_config(overrides=["endpoint.model=other"])
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_example_config_in_repo_is_valid():
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "taskseed.example.yaml"
    assert isinstance(load_config(example), Config)


def test_endpoint_mode_is_per_stage_and_batch_mode_refuses_replicas():
    config = load_config(overrides=["generate.endpoint.mode=batch"])
    assert config.endpoint.mode == "online" and config.stage_endpoint("generate").mode == "batch"
    assert config.stage_endpoint("enrich").mode == "online"
    assert load_config(overrides=["endpoint.mode=batch"]).stage_endpoint("enrich").mode == "batch"
    assert config.llm.batch_completion_window == "24h"
    with pytest.raises(ConfigError, match="mode"):
        load_config(overrides=["endpoint.mode=nightly"])
    with pytest.raises(ConfigError, match="replicas") as refused:
        load_config(overrides=["endpoint.mode=batch", 'endpoint.replicas=[{base_url: "http://a:8000/v1"}]'])
    assert "Value error" not in str(refused.value)  # the key and our message, not pydantic's wording
