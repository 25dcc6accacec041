"""What every LLM stage shares: a stage is a declared `LLMStageSpec` (spec.py) and this package
runs plan → call → parse for any spec (`run_stage`, `estimate_stage` in runner.py).

- spec.py      the declaration, the plan row's columns, the parsed row's columns
- plan.py      items → request rows on executors; the dry-run estimate
- call.py      the ledger-driven call step: one streaming calling job, spool → ledger commits, recovery, budgets, accounting, progress
- endpoint.py  the endpoint (or the built-in simulator), the key broadcast, the lazy call
- parse.py     the plan joined with the ledger → output table + quarantine; `StageResult`
- batch.py     batch mode, offline: pending requests → OpenAI batch JSONL files, output files → the ledger (rules: udfs/llm_batch.py)
- batch_online.py  batch mode through a Batch API (`endpoint.mode: batch`): submit, poll, reconcile, resume after a crash

The row logic a spec plugs in (request builders, row parsers) is pure and lives in udfs/llm_rows.py.
"""

from jobs.llm_stage.call import Progress, RunAccounting, latest_calls, print_progress, run_llm_stage, terminal_statuses
from jobs.llm_stage.endpoint import (call_endpoint, endpoint_for, endpoint_settings, endpoints_for, shared_api_key,
                                    stage_settings)
from jobs.llm_stage.parse import StageResult, parse_plan
from jobs.llm_stage.plan import ESTIMATE_COLUMNS, EstimateRow, build_plan, plan_estimate
from jobs.llm_stage.runner import estimate_stage, pipeline_stage, run_stage
from jobs.llm_stage.spec import LLMStageSpec, typed_fields

__all__ = [
    "ESTIMATE_COLUMNS", "EstimateRow", "LLMStageSpec", "Progress", "RunAccounting", "StageResult", "build_plan",
    "call_endpoint", "endpoint_for", "endpoint_settings", "endpoints_for", "stage_settings", "estimate_stage",
    "latest_calls", "parse_plan",
    "pipeline_stage", "plan_estimate", "print_progress", "run_llm_stage", "run_stage", "shared_api_key", "terminal_statuses", "typed_fields",
]
