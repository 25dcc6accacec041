"""The LLM-stage package: the ledger-driven call step every calling stage goes through (call.py)."""

from jobs.llm_stage.call import Progress, RunAccounting, latest_calls, print_progress, run_llm_stage, terminal_statuses
from jobs.llm_stage.endpoint import call_endpoint, endpoint_for, endpoint_settings, shared_api_key

__all__ = ["Progress", "RunAccounting", "call_endpoint", "endpoint_for", "endpoint_settings", "latest_calls",
           "print_progress", "run_llm_stage", "shared_api_key", "terminal_statuses"]
