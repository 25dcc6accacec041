"""Batch mode, offline path (issue 27): a stage's pending requests out as OpenAI batch-format JSONL
shards (`taskseed batch export`, the input `vllm run-batch` takes), the output and error files back
into `llm_calls` (`taskseed batch import`), exactly once through the ledger.

Tables: reads the stage's plan inputs (`spec.reads`), `llm_calls`, `llm_batch_requests`; writes
`llm_batch_requests` (membership and status), `llm_calls` (one row per answered request, `run_id`
= the import's id, `batch_id` = the batch) and, through the stage's parse step
(`jobs.llm_stage.parse.parse_plan`), its output table and `quarantine`.

Order of writes (what makes a crash at any point safe):
- export: memberships are MERGEd (insert-only) *before* any file is written; batch ids are a hash of
  their requests and an `exported` batch keeps its requests, so an export run again (after a crash,
  or to get the files once more) writes the same batches to the same file names.
- import: ledger rows first, skipping every request whose ledger already has `ok`/`parse_error` or
  a row of the same batch; then the batches it saw become `reconciled`; then the parse step. Run
  again, it appends nothing and MERGEs nothing.
The rules themselves are pure: udfs/llm_batch.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StructField, StructType

from jobs.config import Config, ConfigError
from jobs.lakehouse import Lakehouse
from jobs.llm_stage.call import terminal_statuses
from jobs.llm_stage.parse import StageResult, parse_plan
from jobs.llm_stage.plan import build_plan
from jobs.llm_stage.spec import REQUEST_COLUMNS, LLMStageSpec
from schemas.tables import LLM_BATCH_REQUESTS, LLM_CALLS
from udfs.llm_batch import (EXPORTED, HOLDING, RECONCILED, BatchFileError, assign_batches, batch_line,
                            line_result, missing_result, read_output_line, to_record)
from udfs.llm_client import STATUS_OK, STATUS_PARSE_ERROR, sampling_seed


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class BatchExport:
    """What `export_batches` wrote: batches (file name → requests), requests already answered or
    held by a batch in flight elsewhere, and render errors (never exported)."""

    stage: str
    out_dir: Path
    files: dict[str, int] = field(default_factory=dict)
    held: int = 0
    render_errors: int = 0

    @property
    def requests(self) -> int:
        return sum(self.files.values())

    def summary_lines(self) -> list[str]:
        return [f"[{self.stage}] exported {self.requests} requests in {len(self.files)} batch file(s) to "
                f"{self.out_dir}; held by batches in flight: {self.held}; unrenderable records: "
                f"{self.render_errors}"]


@dataclass
class BatchImport:
    """What `import_batches` reconciled: lines read, ledger rows written (by status), requests
    skipped because the ledger already answers them, lines naming no exported request, unreadable
    lines (file:line and why), requests of a reconciled batch no line answered, batches reconciled,
    and the parse step's result per stage."""

    lines: int = 0
    recorded: dict[str, int] = field(default_factory=dict)
    already_answered: int = 0
    unknown: int = 0
    unknown_ids: list[str] = field(default_factory=list)  # the first 20 of them, named in the summary
    unreadable: list[str] = field(default_factory=list)
    missing: int = 0
    batches: int = 0
    parsed: dict[str, StageResult] = field(default_factory=dict)

    def summary_lines(self) -> list[str]:
        lines = [f"[batch import] lines={self.lines} recorded={dict(sorted(self.recorded.items())) or '{}'} "
                 f"already_answered={self.already_answered} unknown_request_ids={self.unknown} "
                 f"unreadable_lines={len(self.unreadable)} missing_from_output={self.missing} "
                 f"batches_reconciled={self.batches}"]
        lines += [f"[batch import] unreadable: {where}" for where in self.unreadable[:20]]
        lines += [f"[batch import] custom_id {rid!r} names no exported request (line left out)"
                  for rid in self.unknown_ids]
        for result in self.parsed.values():
            lines += result.summary_lines()
        return lines


# ---- export ---------------------------------------------------------------------------------

def export_batches(spec: LLMStageSpec, lakehouse: Lakehouse, config: Config, out_dir: Path | str,
                   tasks: Sequence[str] | None = None, retry_failed: bool = False) -> BatchExport:
    """Write the stage's pending requests as batch input files `<out_dir>/<batch_id>.jsonl` (at most
    `llm.batch_rows` lines each; one line = `udfs.llm_batch.batch_line`) and record each request's
    batch in `llm_batch_requests` (status `exported`) before any file is written.

    Pending = plan requests without a terminal ledger row (`failed` counts as pending with
    `retry_failed`) that no batch in a HOLDING status other than `exported` holds; requests of
    `exported` batches keep their batch (the same file is written again). Lines are written on the
    driver (`toLocalIterator`, in batch order), each file atomically (temp name, then rename).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ep = config.stage_endpoint(spec.name)
    with lakehouse.exclusive(f"llm-stage-{spec.name}"):
        plan = build_plan(spec, lakehouse, config, tasks).localCheckpoint(eager=True)
        render_errors = plan.where(F.col("render_error").isNotNull()).count()
        requests = plan.where(F.col("render_error").isNull()).select(*REQUEST_COLUMNS).dropDuplicates(["request_id"])
        done = (lakehouse.read(LLM_CALLS.name).where(F.col("status").isin(*terminal_statuses(retry_failed)))
                .select("request_id").distinct())
        members = lakehouse.read(LLM_BATCH_REQUESTS.name).where(F.col("stage") == spec.name)
        held = (members.where(F.col("batch_status").isin(*[s for s in HOLDING if s != EXPORTED]))
                .select("request_id").distinct())
        pending = requests.join(done, "request_id", "left_anti")
        held_n = pending.join(held, "request_id", "left_semi").count()
        pending = pending.join(held, "request_id", "left_anti").localCheckpoint(eager=True)
        kept = {r.request_id: r.batch_id for r in members.where(F.col("batch_status") == EXPORTED)
                .groupBy("request_id").agg(F.min("batch_id").alias("batch_id")).collect()}
        ids = [r.request_id for r in pending.select("request_id").collect()]
        assignment = assign_batches(spec.name, ids, kept, int(config.llm.batch_rows))
        result = BatchExport(stage=spec.name, out_dir=out, held=held_n, render_errors=render_errors)
        if not assignment:
            return result
        now = _now()
        rows = pd.DataFrame({"batch_id": list(assignment.values()), "request_id": list(assignment.keys())})
        rows = rows.assign(stage=spec.name, batch_status=EXPORTED, shard=rows["batch_id"] + ".jsonl",
                           created_at=now, updated_at=now, provider_batch_id=None, provider_file_id=None)
        spark = lakehouse.spark
        membership = spark.createDataFrame(rows[LLM_BATCH_REQUESTS.columns], LLM_BATCH_REQUESTS.schema)
        lakehouse.merge(membership, LLM_BATCH_REQUESTS)  # insert-only: kept rows are unchanged
        assigned = spark.createDataFrame(rows[["request_id", "batch_id"]])
        ordered = pending.join(assigned, "request_id").orderBy("batch_id", "request_id")
        handle, current, count = None, None, 0
        try:
            for row in ordered.toLocalIterator():
                if row.batch_id != current:
                    if handle is not None:
                        _finish(handle, out / f"{current}.jsonl")
                        result.files[f"{current}.jsonl"] = count
                    current, count = row.batch_id, 0
                    handle = open(out / f".{current}.jsonl.tmp", "w", encoding="utf-8")
                handle.write(json.dumps(batch_line(row.asDict(), ep.model, ep.structured_output),
                                        ensure_ascii=False) + "\n")
                count += 1
            if handle is not None:
                _finish(handle, out / f"{current}.jsonl")
                result.files[f"{current}.jsonl"] = count
                handle = None
        finally:
            if handle is not None:
                handle.close()
        return result


def _finish(handle, path: Path) -> None:
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()
    os.replace(handle.name, path)


# ---- import ---------------------------------------------------------------------------------

def read_batch_folder(folder: Path | str) -> tuple[list[dict], list[str], int]:
    """(decoded lines, unreadable lines as `file:line: why`, lines read) of every `*.jsonl` file in
    `folder` (sorted by name; not recursive). ConfigError when the folder does not exist or holds
    no `.jsonl` file."""
    path = Path(folder)
    if not path.is_dir():
        raise ConfigError(f"batch import: folder not found: {path}")
    files = sorted(p for p in path.glob("*.jsonl") if p.is_file())
    if not files:
        raise ConfigError(f"batch import: no .jsonl output or error files in {path}")
    lines, bad, n = [], [], 0
    for file in files:
        with open(file, encoding="utf-8", errors="replace") as handle:
            for number, text in enumerate(handle, 1):
                if not text.strip():
                    continue
                n += 1
                try:
                    line = read_output_line(text)
                    if "response" not in line and "error" not in line:
                        raise BatchFileError("an input line (no response or error): import reads output files")
                    lines.append(line)
                except BatchFileError as exc:
                    bad.append(f"{file.name}:{number}: {exc}")
    return lines, bad, n


def import_batches(lakehouse: Lakehouse, config: Config, folder: Path | str,
                   specs: Mapping[str, LLMStageSpec], tasks: Sequence[str] | None = None) -> BatchImport:
    """Reconcile batch output and error files into `llm_calls`, then run each touched stage's parse
    step (same parsers, same quarantine as online results).

    A line counts for the batch that holds its request (a HOLDING membership, else the batch it was
    reconciled in); a line whose custom_id no batch of `llm_batch_requests` holds is counted as
    unknown and not written. Ledger rows carry the plan's request columns (left join: a request
    no longer in the plan keeps its stage and id), `run_id` = `batch-import-<uuid>`, `batch_id`.
    Every request of a batch this import saw that got no line becomes a `failed` row
    (`missing_from_batch_output`). specs: {stage name: spec} of the stages that may appear.
    """
    lines, bad, n = read_batch_folder(folder)
    with contextlib.ExitStack() as locks:
        for stage in sorted(specs):
            locks.enter_context(lakehouse.exclusive(f"llm-stage-{stage}"))
        return reconcile_lines(lakehouse, config, lines, specs, tasks, BatchImport(lines=n, unreadable=bad))


def reconcile_lines(lakehouse: Lakehouse, config: Config, lines: list[dict], specs: Mapping[str, LLMStageSpec],
                    tasks: Sequence[str] | None, result: BatchImport, *, batches: Sequence[str] = (),
                    release_missing: Sequence[str] = (), parse: bool = True,
                    run_id: str | None = None, final_status: Mapping[str, str] | None = None,
                    metas: "DataFrame | None" = None) -> BatchImport:
    """`import_batches`' work on decoded output/error lines, for a caller that holds the stages'
    locks (the batch-mode runner, jobs/llm_stage/batch_online.py). `batches`: batch ids to reconcile
    even if no line names them (a completed batch whose files came back empty); `release_missing`:
    batch ids (expired / cancelled) whose unanswered requests are released for the next batch rather
    than recorded `failed`; `parse`: run the stages' parse step after. `run_id` of the ledger rows
    (default `batch-import-<uuid>`). `final_status`: {batch_id: status} a reconciled batch ends with
    instead of `reconciled` (a released batch keeps its provider status). `metas`: the request
    columns of the ledger rows (`_append_results`), instead of planning the stages again."""
    spark = lakehouse.spark
    run_id = run_id or f"batch-import-{uuid.uuid4().hex[:12]}"
    stages = sorted(specs)
    members = lakehouse.read(LLM_BATCH_REQUESTS.name).where(F.col("stage").isin(*stages)).localCheckpoint(eager=True)
    rank = F.when(F.col("batch_status").isin(*HOLDING), 0).when(F.col("batch_status") == RECONCILED, 1).otherwise(2)
    line_ids = spark.createDataFrame(pd.DataFrame({"request_id": sorted({ln["custom_id"] for ln in lines})}),
                                     "request_id string")
    owners = (members.join(line_ids, "request_id", "left_semi").withColumn("_rank", rank).where("_rank < 2")
              .orderBy("request_id", "_rank", "batch_id").collect())
    owner: dict[str, tuple[str, str]] = {}
    for r in owners:  # the best-ranked batch of each request (HOLDING, else reconciled)
        owner.setdefault(r.request_id, (r.batch_id, r.stage))
    seen_batches = sorted({owner[ln["custom_id"]][0] for ln in lines if ln["custom_id"] in owner} | set(batches))
    batch_members = (members.where(F.col("batch_id").isin(*seen_batches)).select("request_id", "batch_id", "stage")
                     .collect() if seen_batches else [])
    involved = spark.createDataFrame(
        pd.DataFrame({"request_id": sorted(set(owner) | {m.request_id for m in batch_members})}),
        "request_id string")
    ledger = lakehouse.read(LLM_CALLS.name).join(involved, "request_id", "left_semi")
    answered = {r.request_id for r in ledger.where(F.col("status").isin(STATUS_OK, STATUS_PARSE_ERROR))
                .select("request_id").collect()}
    in_batch = {(r.request_id, r.batch_id) for r in ledger.where(F.col("batch_id").isNotNull())
                .select("request_id", "batch_id").collect()}
    results = []
    for line in lines:
        rid = line["custom_id"]
        if rid not in owner:
            result.unknown += 1
            if len(result.unknown_ids) < 20:
                result.unknown_ids.append(str(rid))
            continue
        batch_id, stage = owner[rid]
        structured = config.stage_endpoint(stage).structured_output != "none"
        results.append({**line_result(line, structured), "batch_id": batch_id, "stage": stage})
    got = {r["request_id"] for r in results}
    released = set(release_missing)
    for m in batch_members:  # requests of the batches seen here that no line answered
        if m.batch_id in released:
            continue
        if m.request_id not in got and m.request_id not in answered and (m.request_id, m.batch_id) not in in_batch:
            results.append({**missing_result(m.request_id, m.batch_id), "batch_id": m.batch_id, "stage": m.stage})
            result.missing += 1
    fresh = [r for r in results if (r["request_id"], r["batch_id"]) not in in_batch]
    keep = to_record(fresh, answered)
    result.already_answered = len(results) - len(keep)
    if keep:
        _append_results(lakehouse, keep, run_id, specs, config, tasks, metas)
    for r in keep:
        result.recorded[r["status"]] = result.recorded.get(r["status"], 0) + 1
    if seen_batches:
        final = F.lit(RECONCILED)
        for bid, status in sorted((final_status or {}).items()):
            final = F.when(F.col("batch_id") == bid, F.lit(status)).otherwise(final)
        done = (members.where(F.col("batch_id").isin(*seen_batches) & (F.col("batch_status") != RECONCILED))
                .withColumn("batch_status", final).withColumn("updated_at", F.lit(_now())))
        result.batches = done.select("batch_id").distinct().count()
        if result.batches:
            lakehouse.merge(done, LLM_BATCH_REQUESTS, update_when_changed=["batch_status"])
    for stage in sorted({r["stage"] for r in results}) if parse else ():
        spec = specs[stage]
        result.parsed[stage] = parse_plan(spec, lakehouse, build_plan(spec, lakehouse, config, tasks))
    return result


def _append_results(lakehouse: Lakehouse, results: list[dict], run_id: str, specs: Mapping[str, LLMStageSpec],
                    config: Config, tasks: Sequence[str] | None, metas: "DataFrame | None" = None) -> None:
    """Append result rows to the ledger with the plan's request columns (source_key, task, ...,
    sampling_seed from the body the export wrote = `sampling_seed(request_id)`); `metas`: a frame
    with those columns (the caller's plan), else the stages are planned here."""
    spark = lakehouse.spark
    now = _now()
    records = [{**r, "run_id": run_id, "completed_at": now, "sampling_seed": sampling_seed(r["request_id"])}
               for r in results]
    fields = [StructField(f.name, f.dataType, True) for f in LLM_CALLS.schema.fields if f.name in records[0]]
    rows = spark.createDataFrame([tuple(r.get(f.name) for f in fields) for r in records], StructType(fields))
    meta_cols = ["request_id", "source_key", "task", "task_family", "sample_index", "model", "prompt_version"]
    for stage in sorted({r["stage"] for r in records}) if metas is None else ():
        plan = build_plan(specs[stage], lakehouse, config, tasks).where(F.col("render_error").isNull())
        part = plan.select(*meta_cols).dropDuplicates(["request_id"])
        metas = part if metas is None else metas.unionByName(part)
    if metas is not None:
        metas = metas.select(*meta_cols).dropDuplicates(["request_id"])
    ledger_rows = rows.join(metas, "request_id", "left") if metas is not None else rows
    lakehouse.append(ledger_rows, LLM_CALLS)
