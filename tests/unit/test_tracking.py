"""MLflow run parameters without Spark or a store: the endpoint is named without credentials, and
the built-in simulator is labelled as such (the data card and manifest say the same)."""

import pytest

from jobs.config import load_config
from jobs.tracking import run_params, safe_endpoint_url


@pytest.mark.parametrize("url, shown", [
    (None, "simulator"),
    ("", "simulator"),
    ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1"),
    ("https://user:sk-secret@host.example/v1?api_key=sk-secret", "https://host.example/v1"),
    ("https://host.example:8443/serving-endpoints/llm/invocations#frag", "https://host.example:8443/serving-endpoints/llm/invocations"),
])
def test_the_endpoint_is_named_without_credentials(url, shown):
    assert safe_endpoint_url(url) == shown


def test_a_run_on_the_built_in_simulator_says_simulator(monkeypatch):
    monkeypatch.setenv("TASKSEED_PARAMS_KEY", "sk-params-never-logged")
    params = run_params(load_config(overrides=["endpoint.api_key_env=TASKSEED_PARAMS_KEY"]))
    assert params["endpoint_url"] == "simulator" and params["model"]
    assert not any("sk-params-never-logged" in f"{k}={v}" for k, v in params.items())
    keyed = run_params(load_config(overrides=["endpoint.base_url=https://u:sk-params-never-logged@h.example/v1",
                                              "endpoint.api_key_env=TASKSEED_PARAMS_KEY"]))
    assert keyed["endpoint_url"] == "https://h.example/v1"
    assert not any("sk-params-never-logged" in f"{k}={v}" for k, v in keyed.items())
