"""The curate stage's declarations without Spark: every SQL file is a declared model and every
declared model exists, placeholders bind to known tables and parameters, table reads are declared,
and the binder renders literals and names the model on a mistake."""

from __future__ import annotations

import re

import pytest

from jobs.config import ConfigError, load_config
from jobs.curate import CURATED_MODELS, INTERMEDIATE, READS, STAGING, WRITES, curate_params, reads, writes
from jobs.filters.base import GATE_COMMERCIAL, GATE_CURATED, Engine
from jobs.filters.registry import FILTERS
from jobs.sqlmodels import SQL_DIR, bind_sql, sql_literal
from schemas.tables import ALL_TABLES

ALL_MODELS = [*STAGING, *INTERMEDIATE, *(f.model for f in FILTERS), *CURATED_MODELS]
PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:\.([A-Za-z_][A-Za-z0-9_]*))?\}")


def test_every_sql_file_is_a_declared_model_and_back():
    on_disk = {p.relative_to(SQL_DIR).as_posix() for p in SQL_DIR.rglob("*.sql")}
    declared = [m.path for m in ALL_MODELS]
    assert sorted(declared) == sorted(on_disk)
    assert len({m.name for m in ALL_MODELS}) == len(ALL_MODELS)


def test_models_sit_in_their_layer():
    assert {m.layer for m in STAGING} == {"staging"}
    assert {m.layer for m in INTERMEDIATE} | {f.model.layer for f in FILTERS} == {"intermediate"}
    assert {m.layer for m in CURATED_MODELS} == {"curated"}
    assert [m.name for m in CURATED_MODELS] == ["filter_decisions", "curated", "curated_commercial"]


def test_filters_are_the_issues_filters_with_license_gating_the_commercial_subset():
    # issue 9's six, issue 29's seed_copy, and issue 15's paraphrase after the cheaper filters it reads
    # (its prepare step embeds only the items that passed validation, exact_dup, near_dup and contamination)
    assert [f.name for f in FILTERS] == ["validation", "verification", "exact_dup", "seed_copy", "near_dup",
                                         "contamination", "paraphrase", "license"]
    assert {f.name: f.gate for f in FILTERS if f.gate == GATE_COMMERCIAL} == {"license": GATE_COMMERCIAL}
    assert all(f.gate in (GATE_CURATED, GATE_COMMERCIAL) for f in FILTERS)
    for f in FILTERS:
        assert f"'{f.name}' AS filter" in f.model.sql(), f.model.path


def test_placeholders_bind_to_known_tables_and_parameters_and_reads_are_declared():
    """A staging or curated model reads only READS; a filter model only READS and its own reads; the
    stage's declaration covers them all."""
    config = load_config()
    params = curate_params(config, None, "run")
    owners = [(m, set(READS)) for m in (*STAGING, *INTERMEDIATE, *CURATED_MODELS)]
    owners += [(f.model, set(READS) | set(f.reads)) for f in FILTERS]
    for model, allowed in owners:
        for head, tail in PLACEHOLDER.findall(model.sql()):
            if tail:
                assert head == "table" and tail in ALL_TABLES, (model.path, head, tail)
                assert tail in allowed, (model.path, tail)
            else:
                assert head in params, (model.path, head)
        bind_sql(model.sql(), params, lambda t: f"ns.{t}", model.path)
    assert {t for f in FILTERS for t in f.reads} | set(READS) <= set(reads(config))
    assert set(WRITES) <= set(writes(config))


def test_engine_tables_are_declared_only_when_the_engine_runs():
    """near_dup's engine keeps `minhash_signatures`: declared while the filter is enabled and the
    engine installed; an engine whose module is absent declares nothing."""
    config = load_config()
    near_dup = next(f for f in FILTERS if f.name == "near_dup")
    assert near_dup.engine.available()
    assert "minhash_signatures" in reads(config) and "minhash_signatures" in writes(config)
    off = load_config(overrides=["curate.disabled_filters=[near_dup]"])
    assert "minhash_signatures" not in reads(off) and "minhash_signatures" not in writes(off)
    assert Engine("jobs.filters.no_such_engine", "f", _no_such_engine, reads=("x",)).available() is False


def _no_such_engine():
    from jobs.filters.no_such_engine import f

    return f


def test_an_engine_that_exists_but_cannot_import_is_an_error_not_absent(tmp_path, monkeypatch):
    package = tmp_path / "probe_engines"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "broken.py").write_text("import no_such_dependency_of_the_engine\n\ndef f():\n    pass\n")
    (package / "fine.py").write_text("def f():\n    return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    def absent():
        import probe_engines.absent as engine

        return engine.f

    def fine():
        import probe_engines.fine as engine

        return engine.f

    def broken():
        import probe_engines.broken as engine

        return engine.f

    def optional_engine(module: str, attribute: str):
        load = {"probe_engines.absent": absent, "probe_engines.fine": fine, "probe_engines.broken": broken}[module]
        return Engine(module, attribute, load).loaded()

    assert optional_engine("probe_engines.absent", "f") is None
    assert optional_engine("probe_engines.fine", "f")() == 1
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_of_the_engine"):
        optional_engine("probe_engines.broken", "f")


@pytest.mark.parametrize("value, literal", [
    (None, "NULL"), (True, "true"), (False, "false"), (3, "3"), (0.5, "0.5D"), ("it's", "'it\\'s'"),
    ("a\\b", "'a\\\\b'"), (["x", "y"], "array('x', 'y')"), ([], "CAST(array() AS ARRAY<STRING>)"),
    ({"a": 1}, "map('a', 1)"),
])
def test_sql_literals(value, literal):
    assert sql_literal(value) == literal


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), {}, object()])
def test_values_without_a_literal_are_refused(bad):
    with pytest.raises((ValueError, TypeError)):
        sql_literal(bad)


def test_bind_names_the_model_on_an_unknown_placeholder():
    assert bind_sql("SELECT ${x} FROM ${table.seeds}", {"x": 1}, lambda t: f"ns.{t}") == "SELECT 1 FROM ns.seeds"
    with pytest.raises(ConfigError, match=r"m.sql: no value bound for '\$\{y\}'"):
        bind_sql("SELECT ${y}", {}, str, "m.sql")
    with pytest.raises(ConfigError, match="m.sql: unknown placeholder namespace"):
        bind_sql("SELECT ${view.y}", {}, str, "m.sql")


def test_params_follow_the_config():
    config = load_config(overrides=["curate.min_agreement=0.75", "enrich.samples_per_item=5",
                                    "curate.validation.max_choices=6"])
    params = curate_params(config, ["gsm8k"], "r1")
    assert (params["min_agreement"], params["samples_per_item"], params["max_choices"]) == (0.75, 5, 6)
    assert (params["all_tasks"], params["tasks"], params["run_id"]) == (False, ["gsm8k"], "r1")
    assert curate_params(load_config(), None, "r")["all_tasks"] is True


@pytest.mark.parametrize("override, message", [
    ("curate.validation.min_question_chars=5000", "min_question_chars"),
    ("curate.validation.min_choices=12", "min_choices"),
    ("curate.min_agreement=1.5", "curate.min_agreement"),
    ("curate.validation.colour=red", "unknown key"),
    ("curate.disabled_filters=near_dup", "disabled_filters"),
])
def test_bad_curate_config_is_one_clear_line(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])
