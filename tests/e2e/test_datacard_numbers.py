"""issue 29: the data card's numbers are the tables' numbers. On the session's keyed demo run
(tests/worlds.py: arc_easy, gsm8k, boolq against the simulator), the card's "what each filter alone
removed" equals the query of that name in docs/curation.md run as written, its funnel per task
equals SQL counts over llm_calls, quarantine, generated and curated, every asked-for task has a
row, and its latency figures are the ones the stage's terminal summary printed for the same rows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.worlds import KEYED_TASKS

pytestmark = [pytest.mark.spark, pytest.mark.e2e]

CURATION = Path(__file__).resolve().parents[2] / "docs" / "curation.md"


def _docs_query(label: str) -> str:
    """The `taskseed sql "<query>"` line after the comment `# <label>:` in docs/curation.md."""
    text = CURATION.read_text()
    match = re.search(rf"# {re.escape(label)}:.*\ntaskseed sql \"([^\"]+)\"", text)
    assert match, f"docs/curation.md has no query '{label}'"
    return match.group(1)


@pytest.fixture(scope="module")
def card(keyed_demo_run):
    from jobs.datacard import gather_card

    world = keyed_demo_run
    lakehouse, config = world["lakehouse"], world["config"]
    df = lakehouse.read("curated")
    manifest = {"delta_version": lakehouse.version("curated"), "created_at": "now", "code_version": "test",
                "config_fingerprint": config.fingerprint(), "endpoint": "simulator", "simulated": True,
                "models": {}, "prompt_versions": [], "input_versions": {}, "files": []}
    return gather_card(lakehouse, config, "curated", df, df.count(), manifest)


def test_filter_alone_is_the_readme_query(card, keyed_demo_run):
    from jobs.datacard import FILTER_ALONE_LABEL

    lakehouse = keyed_demo_run["lakehouse"]
    query = re.sub(r"\bfilter_decisions\b", lakehouse.table_name("filter_decisions"), _docs_query(FILTER_ALONE_LABEL))
    expected = {r[0]: r[1] for r in lakehouse.spark.sql(query).collect()}
    assert expected, "the world's filters rejected some items alone"
    assert {f: n for f, n in card.rejected_alone.items() if n} == expected
    # and it is not "every rejection of the filter" (the number the card used to show)
    assert sum(card.rejected.values()) > sum(expected.values())


def test_the_funnel_per_task_is_the_tables_counts(card, keyed_demo_run):
    lakehouse = keyed_demo_run["lakehouse"]
    rows = {r.task: r for r in card.task_funnel}
    assert set(KEYED_TASKS) <= set(rows)

    def sql(query: str) -> dict[str, int]:
        return {r[0]: r[1] for r in lakehouse.spark.sql(query).collect()}

    requests = sql(f"select task, count(distinct request_id) from {lakehouse.table_name('llm_calls')} "
                   "where stage = 'generate' group by task")
    quarantined = sql(f"select task, count(*) from {lakehouse.table_name('quarantine')} where stage = 'generate' group by task")
    generated = sql(f"select task, count(*) from {lakehouse.table_name('generated')} group by task")
    curated = sql(f"select task, count(*) from {lakehouse.table_name('curated')} group by task")
    for task in KEYED_TASKS:
        row = rows[task]
        assert row.generate_requests == requests.get(task, 0) > 0
        assert row.generate_quarantined == quarantined.get(task, 0)
        assert row.generated == generated.get(task, 0)
        assert row.published == curated.get(task, 0)
        assert row.generate_requests == row.generate_quarantined + row.generated  # nothing lost
        assert row.enrich_requests == row.enrich_quarantined + lakehouse.read("enriched").where(
            f"task = '{task}' and item_kind = 'generated'").count()
    assert sum(r.published for r in card.task_funnel) == card.rows


def test_latency_figures_are_the_terminal_summary_figures(card, keyed_demo_run):
    first = keyed_demo_run["first"]
    for stats in card.llm:
        accounting = first[stats.stage].result.accounting  # the first run sent every request; the rerun none
        assert (stats.latency_p50_ms, stats.latency_p95_ms, stats.latency_p99_ms) == pytest.approx(
            (accounting.latency_ms_p50, accounting.latency_ms_p95, accounting.latency_ms_p99))
