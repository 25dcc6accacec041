"""Fixtures shared by the reliability modules."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def demo_index():
    """`demo_index(tasks)`: lm-eval's task index (jobs.catalog.TaskIndex) restricted to `tasks`, no
    groups or tags, so the catalog stage lists only these. The whole index (a scan of ~13k task
    YAMLs) is built once per session for every heavy module that asks."""
    from jobs.catalog import TaskIndex, build_task_index

    full = build_task_index()

    def narrow(tasks: list[str]) -> TaskIndex:
        return TaskIndex(tasks={t: full.tasks[t] for t in tasks}, group_members={}, tag_members={}, roots=full.roots)

    return narrow
