"""`taskseed` command line: `taskseed [--config FILE] [--home DIR] [--set key=value ...] <command>`.

The commands and their arguments. Stage modules take a `progress` callback and return result
objects (`summary_lines()`, `metrics()`); the commands print them through jobs/console.py
(progress and summaries on stderr, tables and query results on stdout); `taskseed sim` is
jobs/sim_command.py. Nothing imports this module but the `taskseed` console script; the stage
modules are imported by the commands that run them (pyspark and pandas take seconds to import, and
`taskseed sim` or `--help` need neither).

Quiet by default: the local JVM's console output (Ivy's dependency resolution, log4j warnings)
goes to `<home>/logs/spark-<date>.log` (jobs.runtime.spark_log_path), not the terminal; `--verbose`
puts it back on the terminal and logs at INFO. User mistakes (bad config, missing Java, unknown
task, a JVM that does not start) print one clear message and exit 2; an error raised by Spark or
Delta while a command runs prints one line naming the log file (which gets the Python traceback)
and exits 1; so does any error behind which lies a full disk, a read-only file system or an
exceeded quota (Spark, Delta, a Python worker, MLflow's store: `jobs.preflight.os_error_behind`),
the line saying so first; only genuine bugs show a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from jobs import console
from jobs.config import Config, ConfigError, TasksConfig, driver_dir, load_config
from jobs.console import (
    STATUS_COLUMNS,
    TABLE_MAX_WIDTH,
    cells_cut,
    format_table,
    print_estimate,
    print_lines,
    print_where_to_look,
    progress,
    spark_error_line,
    status_rows,
)
from jobs.preflight import (USER_FIXABLE_ERRNOS, check_endpoint, describe_os_error, os_error_behind,
                            preflight_problems)
from jobs.progress import plural
from jobs.sim_command import add_sim_parser


def open_lakehouse(config: Config, announce: bool = True):
    """The Lakehouse over a started Spark session. announce: say so on stderr first (long stages;
    `sql` and `tables` only when stderr is a terminal, so piped output is only the answer)."""
    from jobs.lakehouse import Lakehouse
    from jobs.preflight import check_home
    from jobs.runtime import get_spark, spark_log_path

    verbose = console.verbose()
    check_home(driver_dir(config))  # a URI home is checked by Spark; its driver-local folder here
    if announce or verbose:
        where = "JVM output on this terminal" if verbose else f"JVM output in {spark_log_path(config)}"
        progress(f"starting Spark ({config.spark.master}) with Delta; lakehouse home {config.home}; {where}")
    return Lakehouse(get_spark(config, jvm_output="console" if verbose else "log"), config)


def parse_tasks(value: str | None) -> list[str] | None:
    """`--tasks a,b` → ["a", "b"]; None when the option is absent or empty; ConfigError when it
    names no task (" , ")."""
    if not value:
        return None
    tasks = [t.strip() for t in value.split(",") if t.strip()]
    if not tasks:
        raise ConfigError("--tasks needs at least one task name")
    return tasks


# ---- catalog, ingest ---------------------------------------------------------------------

def cmd_catalog(args, config: Config) -> int:
    from jobs.catalog import run_catalog

    lakehouse = open_lakehouse(config)
    print_lines(run_catalog(lakehouse, config, progress=progress))
    progress(f"task_catalog is at version {lakehouse.version('task_catalog')}")
    return 0


def ingest_config(args, config: Config) -> Config:
    """Command-line options mapped onto config.tasks.* (validated like the YAML)."""
    from jobs.ingest import task_names

    updates: dict[str, Any] = {}
    if getattr(args, "mirror", None):
        mirror = Path(args.mirror)
        if not mirror.is_dir():
            raise ConfigError(f"--mirror: folder not found: {mirror}")
        updates["mirror"] = mirror
    if getattr(args, "tasks", None) is not None:
        updates["select"] = task_names(args.tasks)
    if getattr(args, "heldout", None) is not None:
        updates["heldout_only"] = task_names(args.heldout)
    if getattr(args, "shard_rows", None) is not None:
        updates["shard_rows"] = args.shard_rows
    if not updates:
        return config
    try:
        tasks = TasksConfig.model_validate({**config.tasks.model_dump(), **updates})
    except Exception as exc:  # pydantic ValidationError → one line for the CLI
        raise ConfigError(f"invalid ingest options: {exc}") from None
    return config.model_copy(update={"tasks": tasks})


def cmd_ingest(args, config: Config) -> int:
    from jobs.ingest import run_ingest

    config = ingest_config(args, config)
    summary = run_ingest(open_lakehouse(config), config, progress=progress)
    print_lines(summary, progress)
    if getattr(args, "json", False):
        print(json.dumps(summary.to_dict(), ensure_ascii=False, default=str))
    produced = summary.total("seeds") + summary.total("heldout") + summary.total("quarantined")
    return 0 if produced or not summary.tasks else 1


# ---- generate, enrich --------------------------------------------------------------------

def llm_stage_command(args, config: Config, spec, run, needs_seeds: bool) -> int:
    """`taskseed generate|enrich [--dry-run] [--tasks] [--retry-failed]`: one body for both."""
    from jobs.generate import require_seeds
    from jobs.llm_stage import estimate_stage

    tasks = parse_tasks(getattr(args, "tasks", None))
    retry_failed = bool(getattr(args, "retry_failed", False)) or config.llm.retry_failed
    if not args.dry_run:
        check_endpoint(config, [spec.name])
    problems = dry_run_problems(config, [spec.name]) if args.dry_run else []
    lakehouse = open_lakehouse(config)
    if needs_seeds:
        require_seeds(lakehouse, tasks)
    if args.dry_run:
        print_estimate(spec.name, estimate_stage(spec, lakehouse, config, tasks, retry_failed), config)
        for problem in problems:  # after the table: the last thing on the terminal
            progress(f"taskseed: error: the real run would stop on: {problem}")
        return 2 if problems else 0
    print_lines(run(lakehouse, config, tasks, progress=progress, retry_failed=retry_failed))
    return 0


def dry_run_problems(config: Config, stages: list[str] | None = None) -> list[str]:
    """`--dry-run`: every preflight problem the real run would stop on (jobs.preflight.preflight_problems),
    checked before Spark starts and said together after the estimate (one stderr line each), the dry
    run then exiting 2. A home that cannot be written stops here (no estimate without Spark)."""
    problems = preflight_problems(config, stages)
    home_problem = next((p for p in problems if p.startswith("lakehouse home ")), None)
    if home_problem:
        raise ConfigError(home_problem)
    return problems


def cmd_generate(args, config: Config) -> int:
    from jobs.generate import GENERATE_SPEC, run_generate

    return llm_stage_command(args, config, GENERATE_SPEC, run_generate, needs_seeds=True)


def cmd_enrich(args, config: Config) -> int:
    from jobs.enrich import ENRICH_SPEC, run_enrich

    return llm_stage_command(args, config, ENRICH_SPEC, run_enrich, needs_seeds=config.enrich.enrich_seeds)


# ---- curate ------------------------------------------------------------------------------

def cmd_judge(args, config: Config) -> int:
    """`taskseed judge --dry-run [--tasks]`: what the paraphrase filter's judge would send for the
    generated items of the tasks (an upper bound: curate judges only the items that pass the cheaper
    filters). Computes the held-out embeddings if stale (kept in Delta), sends nothing; the judge
    itself runs inside `taskseed curate`."""
    from jobs.filters.paraphrase import estimate_judge, require_extra

    if not args.dry_run:
        raise ConfigError("taskseed judge only estimates (--dry-run); the judge runs inside `taskseed curate` "
                          "with curate.paraphrase.enabled: true")
    require_extra(config)
    tasks = parse_tasks(getattr(args, "tasks", None))
    lakehouse = open_lakehouse(config)
    items = lakehouse.read("generated")
    if tasks:
        items = items.where(items.task.isin(tasks))
    print_estimate("judge", estimate_judge(lakehouse, config, items), config)
    return 0


def cmd_curate(args, config: Config) -> int:
    from jobs.curate import STAGE, run_curate

    tasks = parse_tasks(getattr(args, "tasks", None))
    if STAGE.uses_endpoint(config):  # the judge calls the endpoint: one line now, not after the filters
        check_endpoint(config, ["judge"])
    print_lines(run_curate(open_lakehouse(config), config, tasks, progress=progress,
                           force=bool(getattr(args, "force", False))))
    return 0


# ---- run ---------------------------------------------------------------------------------

def cmd_run(args, config: Config) -> int:
    from jobs.pipeline import endpoint_stages, run_pipeline, select_stages

    stages = [s.strip() for s in args.stages.split(",") if s.strip()] if args.stages else None
    calling = endpoint_stages(select_stages(stages, config), config)
    if calling:
        check_endpoint(config, calling)
    lakehouse = open_lakehouse(config)
    runs = run_pipeline(lakehouse, config, stages, progress=progress, refresh_catalog=args.refresh_catalog,
                        track=not args.no_mlflow)
    rows = [[lakehouse.table_name(name), lakehouse.read(name).count(), lakehouse.version(name)]
            for name in lakehouse.list_tables()]
    print(format_table(["table", "rows", "delta_version"], rows))
    print_where_to_look(args, config, runs.get("publish"), tracked=not args.no_mlflow)
    return 0


# ---- publish, status ---------------------------------------------------------------------

def add_budget_arguments(parser) -> None:
    """`publish --budget/--weights/--tokenizer` (issue 26; docs/publishing.md)."""
    parser.add_argument("--budget", type=_positive_int,
                        help="export a subset of about this many tokens per dataset (per family: by --weights, "
                             "else proportional to what each family has) instead of the full export")
    parser.add_argument("--weights", help="with --budget: family=weight,... (families left out get nothing)")
    parser.add_argument("--tokenizer", help="with --budget: a tokenizer.json (tokenizers library) to count with; "
                                            "default: the packaged all-MiniLM-L6-v2 tokenizer when installed")


def cmd_budget_publish(args, config: Config) -> int:
    """`taskseed publish --budget N [--weights ...] [--tokenizer ...]`: token-budget subsets."""
    from jobs.publish import run_budget_publish
    from udfs.budget import BudgetError, parse_weights

    try:
        results = run_budget_publish(open_lakehouse(config), config, args.budget, parse_weights(args.weights),
                                     args.tokenizer, shard_rows=args.shard_rows, progress=progress)
    except BudgetError as exc:
        raise ConfigError(str(exc)) from None
    for r in results:
        b = r.manifest["budget"]
        print(f"[publish] {r.manifest['dataset']} v{r.manifest['delta_version']}: {r.rows} documents, "
              f"{b['total_tokens']} tokens of a {b['tokens']}-token budget: {r.folder}")
    return 0


def cmd_publish(args, config: Config) -> int:
    if getattr(args, "budget", None) is not None:
        return cmd_budget_publish(args, config)
    if getattr(args, "weights", None) or getattr(args, "tokenizer", None):
        raise ConfigError("--weights and --tokenizer go with --budget")
    from jobs.pipeline import lineage_tables
    from jobs.publish import run_publish

    if args.shard_rows is not None and args.shard_rows < 1:
        raise ConfigError("--shard-rows must be at least 1")
    result = run_publish(open_lakehouse(config), config, lineage_tables(config), shard_rows=args.shard_rows,
                         progress=progress)
    print_lines(result)
    for p in result.publications:
        print(f"data card: {p.card}")
    return 0


def cmd_status(args, config: Config) -> int:
    from jobs.status import pipeline_status

    statuses = pipeline_status(open_lakehouse(config), config)
    if args.json:
        for status in statuses:
            print(json.dumps(status.to_dict(), ensure_ascii=False, default=str))
        return 0

    print(format_table(STATUS_COLUMNS, status_rows(statuses), max_width=None))
    from jobs.status import cost_lines

    for line in cost_lines(open_lakehouse(config), config):
        print(line)
    return 0


# ---- sim ---------------------------------------------------------------------------------

def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


# ---- sql, tables -------------------------------------------------------------------------

TABLE_MAX_ROWS = 200


def cmd_sql(args, config: Config) -> int:
    """`taskseed sql QUERY`: a text table of at most --max-rows rows (default 200), or with --json
    every row as one JSON object per line, streamed a partition at a time (no limit unless
    --max-rows). Whenever rows are left out, stderr says how many were printed and how to get
    the rest; nothing is cut silently."""
    from pyspark.errors import AnalysisException, ParseException

    lakehouse = open_lakehouse(config, announce=sys.stderr.isatty())
    lakehouse.spark.sql(f"USE {lakehouse.namespace}")
    limit = args.max_rows if args.max_rows is not None else (None if args.json else TABLE_MAX_ROWS)
    try:
        df = lakehouse.spark.sql(args.query)
        if args.json:
            printed, truncated = _print_json_rows(df, limit)
        else:
            rows = df.limit(limit + 1).collect()
            truncated, rows = len(rows) > limit, rows[:limit]
            printed = len(rows)
            values = [[row[c] for c in range(len(df.columns))] for row in rows]
            print(format_table(df.columns, values))
            cut = cells_cut(values)
            if cut:
                progress(f"({plural(cut, 'value')} longer than {TABLE_MAX_WIDTH} characters shown cut with …; "
                         "--json prints every value whole)")
    except (AnalysisException, ParseException) as exc:
        raise ConfigError(f"SQL error: {spark_error_line(exc)}") from None
    if truncated:
        progress(f"({printed} rows shown, truncated at --max-rows {limit}: the query has more; raise --max-rows"
                 f"{'' if args.json else ' or use --json, which has no limit by default'})")
    elif not args.json:
        progress(f"({plural(printed, 'row')})")
    return 0


def _print_json_rows(df, limit: int | None) -> tuple[int, bool]:
    """Print `df` as JSON lines, at most `limit` (None = all); → (rows printed, more were left)."""
    source = df if limit is None else df.limit(limit + 1)
    printed = 0
    for row in source.toLocalIterator():
        if limit is not None and printed == limit:
            return printed, True
        print(json.dumps(row.asDict(recursive=True), ensure_ascii=False, default=str))
        printed += 1
    return printed, False


def cmd_tables(args, config: Config) -> int:
    lakehouse = open_lakehouse(config, announce=sys.stderr.isatty())
    out = []
    for name in lakehouse.list_tables():
        count = lakehouse.spark.table(lakehouse.table_name(name)).count()
        out.append([lakehouse.table_name(name), count, lakehouse.version(name)])
    if args.json:
        for name, count, version in out:
            print(json.dumps({"table": name, "rows": count, "version": version}))
    elif out:
        print(format_table(["table", "rows", "delta_version"], out))
    else:
        progress(f"no tables yet under {config.home}; run `taskseed catalog` first")
    return 0


# ---- batch (offline batch files, issue 27) ------------------------------------------------

def _batch_specs() -> dict:
    from jobs.enrich import ENRICH_SPEC
    from jobs.generate import GENERATE_SPEC

    return {GENERATE_SPEC.name: GENERATE_SPEC, ENRICH_SPEC.name: ENRICH_SPEC}


def cmd_batch_export(args, config: Config) -> int:
    """`taskseed batch export --stage generate|enrich [--out DIR] [--tasks] [--retry-failed]`: the
    stage's pending requests as OpenAI batch-format JSONL files (default `<home>/batches/<stage>`)."""
    from jobs.llm_stage.batch import export_batches

    tasks = parse_tasks(getattr(args, "tasks", None))
    out = Path(args.out) if args.out else Path(config.home) / "batches" / args.stage
    retry_failed = bool(args.retry_failed) or config.llm.retry_failed
    result = export_batches(_batch_specs()[args.stage], open_lakehouse(config), config, out, tasks, retry_failed)
    print_lines(result)
    return 0


def cmd_batch_import(args, config: Config) -> int:
    """`taskseed batch import <folder> [--tasks]`: batch output and error files into `llm_calls`,
    then the stages' parse steps."""
    from jobs.llm_stage.batch import import_batches

    if not Path(args.folder).is_dir():  # before Spark starts
        raise ConfigError(f"batch import: folder not found: {args.folder}")
    result = import_batches(open_lakehouse(config), config, args.folder, _batch_specs(),
                            parse_tasks(getattr(args, "tasks", None)))
    print_lines(result)
    return 0


def _add_batch_parser(commands) -> None:
    batch = commands.add_parser("batch", help="offline batch inference: export pending requests as OpenAI "
                                              "batch JSONL (vllm run-batch input), import the output files")
    sub = batch.add_subparsers(dest="batch_command", required=True, metavar="<export|import>")
    export = sub.add_parser("export", help="write a stage's pending requests as batch input files")
    export.add_argument("--stage", required=True, choices=("generate", "enrich"))
    export.add_argument("--out", help="folder for the batch files (default <home>/batches/<stage>)")
    export.add_argument("--tasks", help="comma-separated task names (default: every task)")
    export.add_argument("--retry-failed", action="store_true", help="export `failed` requests again too")
    export.set_defaults(handler=cmd_batch_export)
    imp = sub.add_parser("import", help="reconcile batch output/error files into llm_calls, then parse")
    imp.add_argument("folder", help="folder of *.jsonl output and error files")
    imp.add_argument("--tasks", help="comma-separated task names the stages' parse step covers (default: all)")
    imp.set_defaults(handler=cmd_batch_import)


# ---- parser ------------------------------------------------------------------------------

def _add_llm_stage_parser(commands, stage: str, help_text: str, tasks_help: str, handler) -> None:
    parser = commands.add_parser(stage, help=help_text)
    parser.add_argument("--dry-run", action="store_true",
                        help="print per task family the requests and token estimate; send nothing")
    parser.add_argument("--retry-failed", action="store_true",
                        help="send again the requests whose ledger row is `failed` (retries exhausted)")
    parser.add_argument("--tasks", help=tasks_help)
    parser.set_defaults(handler=handler)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taskseed",
        description="Turn lm-eval training splits into curated synthetic Q&A data (Spark + Delta + MLflow).",
    )
    parser.add_argument("--config", help="YAML config file (see taskseed.example.yaml)")
    parser.add_argument("--home", help="lakehouse home folder (default ./lakehouse)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override one config key, e.g. --set endpoint.max_concurrency=128 (repeatable)",
    )
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log at INFO level and show the JVM's output (Ivy, log4j) on the terminal "
                             "instead of <home>/logs/spark-<date>.log")
    commands = parser.add_subparsers(dest="command", required=True, metavar="<command>")

    catalog = commands.add_parser("catalog", help="enumerate lm-eval tasks into task_catalog")
    catalog.set_defaults(handler=cmd_catalog)

    ingest = commands.add_parser(
        "ingest", help="normalize training splits into seeds and validation/test splits into heldout")
    ingest.add_argument("--mirror", help="local dataset mirror <dataset_path>/<config|default>/<split>.jsonl "
                                         "(tasks.mirror; default: the Hugging Face hub)")
    ingest.add_argument("--tasks", help="comma-separated task/group/tag names to seed "
                                        "(tasks.select; default: every eligible task)")
    ingest.add_argument("--heldout", help="comma-separated eval-only tasks/groups whose validation/test "
                                          "splits feed heldout (tasks.heldout_only), e.g. mmlu")
    ingest.add_argument("--shard-rows", type=int, help="rows per work unit of a large split (tasks.shard_rows)")
    ingest.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    ingest.set_defaults(handler=cmd_ingest)

    _add_llm_stage_parser(commands, "generate", "generate K new items per seed through the LLM endpoint into "
                          "`generated`", "comma-separated task names (default: every seeded task)", cmd_generate)
    _add_llm_stage_parser(commands, "enrich", "solve every generated item (and optionally seeds) M times into "
                          "`enriched`", "comma-separated task names (default: every task)", cmd_enrich)

    curate = commands.add_parser(
        "curate", help="evaluate every filter on every item into filter_decisions; publish what passed into "
                       "curated and curated_commercial")
    curate.add_argument("--tasks", help="comma-separated task names (default: every task); rows of other tasks "
                                        "are left as they are")
    curate.add_argument("--force", action="store_true",
                        help="evaluate every item even when nothing changed since the last curate of these tasks")
    curate.set_defaults(handler=cmd_curate)
    judge = commands.add_parser(
        "judge", help="dry run of the paraphrase filter's judge: pairs above the similarity floor and their "
                      "token estimate for the generated items (the judge runs inside curate)")
    judge.add_argument("--dry-run", action="store_true", help="required: print the estimate; send nothing")
    judge.add_argument("--tasks", help="comma-separated task names (default: every task)")
    judge.set_defaults(handler=cmd_judge)

    run = commands.add_parser("run", help="run the whole pipeline (every stage, in DAG order)")
    run.add_argument("--stages", help="comma-separated subset of the stages (run in DAG order; default: all)")
    run.add_argument("--refresh-catalog", action="store_true",
                     help="rebuild task_catalog even if it is current for this lm-eval version")
    run.add_argument("--no-mlflow", action="store_true", help="do not record an MLflow run")
    run.set_defaults(handler=cmd_run)

    publish = commands.add_parser(
        "publish", help="export curated datasets (JSONL + Parquet shards, manifest, data card) and record them")
    publish.add_argument("--shard-rows", type=int, help="documents per shard (publish.shard_rows, default 10000)")
    add_budget_arguments(publish)
    publish.set_defaults(handler=cmd_publish)

    status = commands.add_parser("status", help="per stage: tables, rows, Delta versions, failures, last MLflow run")
    status.add_argument("--json", action="store_true", help="one JSON object per stage")
    status.set_defaults(handler=cmd_status)

    add_sim_parser(commands)
    _add_batch_parser(commands)

    sql = commands.add_parser("sql", help="run a SQL query over the lakehouse tables")
    sql.add_argument("query")
    sql.add_argument("--json", action="store_true",
                     help="every row as one JSON object per line (no row limit unless --max-rows)")
    sql.add_argument("--max-rows", type=_positive_int, default=None,
                     help=f"print at most N rows (default {TABLE_MAX_ROWS} for the table, all rows with --json); "
                          "stderr says when rows were left out")
    sql.set_defaults(handler=cmd_sql)

    tables = commands.add_parser("tables", help="list tables with row counts and Delta versions")
    tables.add_argument("--json", action="store_true")
    tables.set_defaults(handler=cmd_tables)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    console.set_verbose(bool(args.verbose))
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    config = None
    try:
        config = load_config(args.config, args.overrides, home=args.home)
        return args.handler(args, config) or 0
    except ConfigError as exc:
        console.end_update_line()
        print(f"taskseed: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        console.end_update_line()
        print("taskseed: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `taskseed sql --json ... | head`: the reader has what it wanted; Python would otherwise
        # print a traceback while flushing stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        if exc.errno not in USER_FIXABLE_ERRNOS:
            raise
        console.end_update_line()
        print(f"taskseed: error: {describe_os_error(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:
        console.end_update_line()
        from jobs.lakehouse import WriterConflict  # only a lakehouse raises it, so it is imported by now

        if isinstance(exc, WriterConflict):  # another writer on the same lakehouse: one line, no traceback
            print(f"taskseed: error: {exc}", file=sys.stderr)
            return 1
        behind = os_error_behind(exc)
        if behind is not None:  # the disk filled or a mount turned read-only under Spark, Delta or MLflow
            os_error, shown_by = behind
            console.report_error(exc, config, f"{describe_os_error(os_error)} ({console.failure_line(shown_by)})")
            return 1
        if not console.is_spark_error(exc):
            raise
        console.report_error(exc, config)
        return 1
    finally:
        console.end_update_line()


if __name__ == "__main__":
    sys.exit(main())
