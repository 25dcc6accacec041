"""The CLI without Spark: `taskseed sim` takes every default from the config's simulator section
(jobs.config.SimulatorConfig), flags override it; `--tasks` parsing; a bad value is one line."""

from __future__ import annotations

import argparse

import pytest

from jobs.cli import add_sim_parser, main, parse_tasks, settings_from_args
from jobs.config import ConfigError, SimulatorConfig, load_config
from simulator import DEFAULT_FAULT_KINDS, SimSettings


def _sim_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_sim_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["sim", *argv])


def test_sim_without_flags_is_the_simulator_the_pipeline_starts():
    config = load_config(overrides=["simulator.latency_ms=7", "simulator.latency_dist=lognormal",
                                    "simulator.rate_limit_rps=30", "simulator.hang_s=4", "simulator.seed=11",
                                    "endpoint.model=my-model"])
    settings = settings_from_args(_sim_args(), config.simulator, config.endpoint.model)
    assert settings == SimSettings.from_config(config.simulator, model="my-model")
    assert (settings.latency_ms, settings.latency_dist, settings.rate_limit_rps, settings.hang_s, settings.seed) == \
        (7, "lognormal", 30, 4, 11)
    assert settings.fault_kinds == DEFAULT_FAULT_KINDS  # the opt-in kinds need --fault-kinds or --fault


def test_sim_flags_override_the_config():
    config = SimulatorConfig(latency_ms=7, wrong_answer_rate=0.3)
    settings = settings_from_args(_sim_args("--latency-ms", "50", "--fault-kinds", "500,drop", "--fault-rate", "0.2",
                                            "--model", "other"), config)
    assert (settings.latency_ms, settings.wrong_answer_rate, settings.model) == (50, 0.3, "other")
    assert dict(settings.kind_rates()) == {"500": 0.1, "drop": 0.1}


def test_sim_defaults_are_the_config_defaults():
    assert settings_from_args(_sim_args()) == SimSettings.from_config(SimulatorConfig(), model="taskseed-sim")


def test_sim_bad_values_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(ConfigError, match="heldout-file"):
        settings_from_args(_sim_args("--heldout-file", str(tmp_path / "missing.jsonl")))
    assert main(["--set", "simulator.latency_ms=-1", "sim"]) == 2
    assert "simulator.latency_ms" in capsys.readouterr().err


@pytest.mark.parametrize("value, tasks", [(None, None), ("", None), ("arc_easy", ["arc_easy"]), (" a, b ,,", ["a", "b"])])
def test_parse_tasks(value, tasks):
    assert parse_tasks(value) == tasks


def test_empty_tasks_option_is_an_error():
    with pytest.raises(ConfigError, match="--tasks needs at least one task"):
        parse_tasks(" , ")


def test_curate_command_passes_the_task_scope_and_prints_the_summary(monkeypatch, capsys):
    """`taskseed curate --tasks a,b` runs jobs.curate.run_curate on those tasks and prints its
    summary (the Spark side is tested in tests/spark/test_curate_sql.py and tests/e2e)."""
    import jobs.cli as cli
    import jobs.curate as curate

    calls = []

    class Result:
        def summary_lines(self):
            return ["[curate] 3 candidate items (gsm8k,arc_easy): curated=2, curated_commercial=1"]

    def fake_run_curate(lakehouse, config, tasks, progress):
        calls.append((lakehouse, tasks, progress))
        return Result()

    monkeypatch.setattr(cli, "open_lakehouse", lambda config: "the-lakehouse")
    monkeypatch.setattr(curate, "run_curate", fake_run_curate)
    args = cli.build_parser().parse_args(["curate", "--tasks", "gsm8k, arc_easy"])
    assert args.handler is cli.cmd_curate
    assert args.handler(args, load_config()) == 0
    assert calls == [("the-lakehouse", ["gsm8k", "arc_easy"], cli.progress)]
    assert "curated=2, curated_commercial=1" in capsys.readouterr().out
    assert cli.build_parser().parse_args(["curate"]).tasks is None

def test_publish_and_status_commands_parse():
    from jobs.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["--home", "/tmp/h", "publish", "--shard-rows", "500"])
    assert args.command == "publish" and args.shard_rows == 500
    assert parser.parse_args(["status", "--json"]).json is True
    assert parser.parse_args(["publish"]).shard_rows is None


def test_run_ends_with_where_to_look(tmp_path):
    """The data card and export folder of each published dataset, three runnable SQL queries
    spelled with this invocation's --config/--home, and the MLflow UI command for the local store."""
    import shlex
    from pathlib import Path
    from types import SimpleNamespace

    from jobs.cli import build_parser, print_where_to_look

    home = tmp_path / "my home"
    home.mkdir()
    (home / "mlflow.db").write_bytes(b"")
    args = build_parser().parse_args(["--config", "demo/taskseed.demo.yaml", "--home", str(home), "run"])
    config = load_config("demo/taskseed.demo.yaml", home=home)
    folder = home / "exports" / "curated" / "v2"
    publication = SimpleNamespace(dataset="curated", delta_version=2, folder=folder, card=folder / "datacard.html")
    lines: list[str] = []
    print_where_to_look(args, config, SimpleNamespace(result=SimpleNamespace(publications=[publication])),
                        out=lines.append)
    text = "\n".join(lines)
    assert f"data card (curated v2): {folder / 'datacard.html'}" in text
    assert f"export folder:  {folder}/" in text
    sql = [shlex.split(line.strip()) for line in lines if " sql " in line]
    assert len(sql) == 3
    for argv in sql:
        parsed = build_parser().parse_args(argv[1:])
        assert parsed.command == "sql" and parsed.home == str(home) and parsed.config == "demo/taskseed.demo.yaml"
        assert parsed.query.lower().startswith("select ")
    mlflow = shlex.split(next(line for line in lines if "mlflow ui" in line).split("MLflow UI:")[1])
    assert mlflow[:3] == ["mlflow", "ui", "--backend-store-uri"]
    assert mlflow[3] == f"sqlite:///{home.resolve() / 'mlflow.db'}"
