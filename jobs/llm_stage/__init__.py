"""The LLM-stage package: the ledger-driven call step every calling stage goes through (call.py)."""

from jobs.llm_stage.call import (
    Progress,
    RunAccounting,
    endpoint_for,
    endpoint_settings,
    latest_calls,
    print_progress,
    run_llm_stage,
    terminal_statuses,
)

__all__ = ["Progress", "RunAccounting", "endpoint_for", "endpoint_settings", "latest_calls", "print_progress",
           "run_llm_stage", "terminal_statuses"]
