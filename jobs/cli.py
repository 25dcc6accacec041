"""`taskseed` command line: `taskseed [--config FILE] [--home DIR] [--set key=value ...] <command>`.

The one module that parses arguments and writes to the console. Stage modules take a `progress`
callback and return result objects (`summary_lines()`, `metrics()`); the commands here print
them: progress and summaries of long runs on stderr (so `--json` output on stdout stays
machine-readable), tables and query results on stdout. Nothing imports this module but the
`taskseed` console script; the stage modules are imported by the commands that run them (pyspark
and pandas take seconds to import, and `taskseed sim` or `--help` need neither).

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
from typing import Any, Callable, Sequence

from jobs.config import Config, ConfigError, EndpointConfig, SimulatorConfig, TasksConfig, load_config
from jobs.preflight import USER_FIXABLE_ERRNOS, check_endpoint, describe_os_error, os_error_behind
from jobs.progress import ProgressLine


_verbose = False  # set once by main() from --verbose
_open_update = False  # a ProgressLine is on the terminal without its newline


def progress(message: str) -> None:
    """The progress printer: one line to stderr, flushed. On a terminal, a progress update
    (jobs.progress.ProgressLine) is redrawn in place by the next update instead of adding a line;
    anywhere else (a file, a CI log) every update is its own line."""
    global _open_update
    stream = sys.stderr
    if isinstance(message, ProgressLine) and stream.isatty():
        stream.write(f"\r\x1b[K{message}")
        stream.flush()
        _open_update = True
        return
    if _open_update:
        stream.write("\n")
        _open_update = False
    print(message, file=stream, flush=True)


def open_lakehouse(config: Config, announce: bool = True):
    """The Lakehouse over a started Spark session. announce: say so on stderr first (long stages;
    `sql` and `tables` only when stderr is a terminal, so piped output is only the answer)."""
    from jobs.lakehouse import Lakehouse
    from jobs.preflight import check_home
    from jobs.runtime import get_spark, spark_log_path

    check_home(config.home)
    if announce or _verbose:
        where = "JVM output on this terminal" if _verbose else f"JVM output in {spark_log_path(config)}"
        progress(f"starting Spark ({config.spark.master}) with Delta; lakehouse home {config.home}; {where}")
    return Lakehouse(get_spark(config, jvm_output="console" if _verbose else "log"), config)


def _format_value(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


TABLE_MAX_WIDTH = 60  # characters of a cell in a text table


def _cell(value: Any) -> str:
    return _format_value(value).replace("\n", "\\n")


def format_table(columns: Sequence[str], rows: list[list[Any]], max_width: int | None = TABLE_MAX_WIDTH) -> str:
    """A plain text table; cells longer than `max_width` characters are cut with an ellipsis so rows
    stay on one line (None: never cut; `cells_cut` counts what a table cuts, for the caller to say)."""
    cells = [[_cell(v) for v in row] for row in rows]
    if max_width is not None:
        cells = [[c if len(c) <= max_width else c[: max_width - 1] + "…" for c in row] for row in cells]
    widths = [max([len(col)] + [len(row[i]) for row in cells]) for i, col in enumerate(columns)]
    line = "  ".join(col.ljust(w) for col, w in zip(columns, widths))
    rule = "  ".join("-" * w for w in widths)
    body = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join([line, rule, *body])


def cells_cut(rows: list[list[Any]], max_width: int = TABLE_MAX_WIDTH) -> int:
    """How many cells of `rows` `format_table(..., max_width)` shows cut."""
    return sum(len(_cell(v)) > max_width for row in rows for v in row)


def print_lines(result: Any, out: Callable[[str], None] = print) -> None:
    for line in result.summary_lines():
        out(line)


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

def print_estimate(stage: str, rows: list, config: Config, out: Callable[[str], None] = print) -> None:
    """The dry-run table of `jobs.llm_stage.estimate_stage` rows, with a TOTAL row and the budget."""
    from jobs.llm_stage import ESTIMATE_COLUMNS, EstimateRow
    from udfs.llm_rows import CHARS_PER_TOKEN

    total = EstimateRow("TOTAL", *[sum(getattr(r, c) for r in rows) for c in ESTIMATE_COLUMNS[1:]])
    table = [[getattr(r, c) for c in ESTIMATE_COLUMNS] for r in [*rows, total]]
    out(f"[{stage}] dry run: nothing was sent. Estimates: prompt = rendered characters / {CHARS_PER_TOKEN}; "
        "completion = expected output size capped at max_tokens (max_completion_tokens is the hard cap).")
    out(format_table(ESTIMATE_COLUMNS, table))
    limits = []
    if config.llm.max_requests is not None:
        limits.append(f"llm.max_requests={config.llm.max_requests}")
    if config.llm.max_tokens_budget is not None:
        limits.append(f"llm.max_tokens_budget={config.llm.max_tokens_budget}")
    if limits:
        out(f"[{stage}] a run would stop cleanly at {' / '.join(limits)}; a rerun continues from there.")


def llm_stage_command(args, config: Config, spec, run, needs_seeds: bool) -> int:
    """`taskseed generate|enrich [--dry-run] [--tasks] [--retry-failed]`: one body for both."""
    from jobs.generate import require_seeds
    from jobs.llm_stage import estimate_stage

    tasks = parse_tasks(getattr(args, "tasks", None))
    retry_failed = bool(getattr(args, "retry_failed", False)) or config.llm.retry_failed
    if not args.dry_run:
        check_endpoint(config)
    lakehouse = open_lakehouse(config)
    if needs_seeds:
        require_seeds(lakehouse, tasks)
    if args.dry_run:
        print_estimate(spec.name, estimate_stage(spec, lakehouse, config, tasks, retry_failed), config)
        return 0
    print_lines(run(lakehouse, config, tasks, progress=progress, retry_failed=retry_failed))
    return 0


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
        check_endpoint(config)
    print_lines(run_curate(open_lakehouse(config), config, tasks, progress=progress))
    return 0


# ---- run ---------------------------------------------------------------------------------

def cmd_run(args, config: Config) -> int:
    from jobs.pipeline import run_pipeline, select_stages

    stages = [s.strip() for s in args.stages.split(",") if s.strip()] if args.stages else None
    if any(stage.uses_endpoint(config) for stage in select_stages(stages, config)):
        check_endpoint(config)
    lakehouse = open_lakehouse(config)
    runs = run_pipeline(lakehouse, config, stages, progress=progress, refresh_catalog=args.refresh_catalog,
                        track=not args.no_mlflow)
    rows = [[lakehouse.table_name(name), lakehouse.read(name).count(), lakehouse.version(name)]
            for name in lakehouse.list_tables()]
    print(format_table(["table", "rows", "delta_version"], rows))
    print_where_to_look(args, config, runs.get("publish"), tracked=not args.no_mlflow)
    return 0


def program(name: str) -> str:
    """How to start the console script `name` of this installation from the shell the user is in:
    the bare name when PATH finds this installation's copy (an activated venv, a global install),
    else its path next to this interpreter (`.venv/bin/taskseed` after the README's setup command,
    which does not activate the venv), relative to the working directory when it lies inside it."""
    import shutil

    local = Path(sys.executable).parent / name
    if not local.exists():
        return name
    found = shutil.which(name)
    if found and Path(found).resolve() == local.resolve():
        return name
    try:
        return str(local.relative_to(Path.cwd()))
    except ValueError:
        return str(local)


def _cli_prefix(args) -> str:
    """`taskseed [--config F] [--home H] [--set k=v ...]` as this invocation spelled them, with the
    program as the user's shell can start it (`program`)."""
    import shlex

    parts = [program("taskseed")]
    if getattr(args, "config", None):
        parts += ["--config", args.config]
    if getattr(args, "home", None):
        parts += ["--home", args.home]
    for item in getattr(args, "overrides", None) or []:
        parts += ["--set", item]
    return " ".join(shlex.quote(p) for p in parts)


# Three questions a reader of the published data asks first (README "SQL over curated data").
WHERE_TO_LOOK_SQL = (
    "select filter, reason, count(*) items from filter_decisions where not passed "
    "group by filter, reason order by items desc",
    "select task_family, count(*) rows, round(avg(agreement), 2) agreement from curated "
    "group by task_family order by rows desc",
    "select dataset, delta_version, rows, shards, export_path from publications order by published_at desc",
)


def print_where_to_look(args, config: Config, publish_run, tracked: bool = True,
                        out: Callable[[str], None] = print) -> None:
    """The end of `taskseed run`: the data card, the export folders, three SQL queries, the MLflow UI."""
    import shlex

    from jobs.tracking import tracking_store

    prefix = _cli_prefix(args)
    out("")
    out("Where to look:")
    result = getattr(publish_run, "result", None)
    for p in getattr(result, "publications", []):
        out(f"  data card ({p.dataset} v{p.delta_version}): {p.card}")
        out(f"  export folder:  {p.folder}/  (jsonl/, parquet/, manifest.json, datacard.md)")
    if result is None:
        out("  (publish did not run in this invocation: `" + prefix + " publish` writes exports and the data card)")
    out("  SQL:")
    for query in WHERE_TO_LOOK_SQL:
        out(f"    {prefix} sql \"{query}\"")
    uri = tracking_store(config)
    if tracked and uri and uri != "databricks":
        out(f"  MLflow UI: {shlex.quote(program('mlflow'))} ui --backend-store-uri {shlex.quote(uri)}   "
            "(then open http://127.0.0.1:5000, "
            "experiment 'taskseed')")
    elif uri == "databricks":
        out("  MLflow: the workspace experiment /Shared/taskseed-" + config.schema_name)


# ---- publish, status ---------------------------------------------------------------------

def cmd_publish(args, config: Config) -> int:
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
    return 0


STATUS_COLUMNS = ["stage", "tables", "requests", "failed", "quarantined", "last run"]


def status_rows(statuses) -> list[list[str]]:
    """The rows of `taskseed status`'s table: one line per table of a stage, the stage's figures on
    its first line, nothing cut (a stage writes up to five tables)."""
    def dash(value: Any) -> str:
        return "-" if value is None else str(value)

    rows = []
    for s in statuses:
        tables = [f"{t['table']} {dash(t['rows'])} rows v{dash(t['delta_version'])}"
                  if t["delta_version"] is not None else f"{t['table']} (none)" for t in s.tables] or ["-"]
        last = s.last_run
        run = f"{last['start']} {last['outcome']} (run {last['run_id']})" if last else "never (under MLflow)"
        rows.append([s.stage, tables[0], dash(s.requests), dash(s.failed), dash(s.quarantined), run])
        rows += [["", table, "", "", "", ""] for table in tables[1:]]
    return rows


# ---- sim ---------------------------------------------------------------------------------

def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a probability in [0, 1]")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def _kind_rate(text: str) -> tuple[str, float]:
    from simulator import FAULT_KINDS

    kind, sep, rate = text.partition("=")
    if not sep or kind not in FAULT_KINDS:
        raise argparse.ArgumentTypeError(f"expected KIND=RATE with KIND one of {', '.join(FAULT_KINDS)}")
    return kind, _rate(rate)


def add_sim_parser(subparsers) -> argparse.ArgumentParser:
    """`taskseed sim`: every simulator setting is a flag; a flag left out takes the config's
    `simulator.*` value (defaults in jobs.config.SimulatorConfig), so a standalone simulator
    behaves like the one `taskseed run` starts when `endpoint.base_url` is null."""
    from simulator import DEFAULT_FAULT_KINDS, FAULT_KINDS

    d = SimulatorConfig()
    p = subparsers.add_parser(
        "sim",
        help="run the built-in OpenAI-compatible simulator (not a model)",
        description="Serve /v1/chat/completions and /v1/models with deterministic answers to "
                    "taskseed's prompts, realistic latency, concurrency limits, rate limits and "
                    "injected faults. It is a simulator for exercising the pipeline, not a model. "
                    "Flags left out take the config's simulator.* values.",
    )

    def config_flag(flag: str, help_text: str, **kwargs) -> None:
        key = flag.lstrip("-").replace("-", "_")
        p.add_argument(flag, default=None, help=f"{help_text} (simulator.{key}, default {getattr(d, key)})", **kwargs)

    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    config_flag("--seed", "same seed, same behaviour", type=int)
    p.add_argument("--model", default=None, help="model id reported by /v1/models (default: endpoint.model)")
    config_flag("--latency-ms", "median service time", type=float)
    config_flag("--latency-jitter-ms", "spread of the service time", type=float)
    config_flag("--latency-dist", "service time distribution", choices=("fixed", "uniform", "lognormal"))
    config_flag("--max-concurrency", "requests processed at once; the rest queue", type=int)
    config_flag("--rate-limit-rps", "token-bucket rate (0 = off); excess gets 429", type=float)
    config_flag("--rate-limit-burst", "token-bucket size", type=float)
    config_flag("--retry-after-s", "Retry-After of injected 429s", type=float)
    config_flag("--fault-rate", "total injected-fault probability, split over --fault-kinds", type=_rate)
    p.add_argument("--fault-kinds", default=None,
                   help=f"comma-separated kinds --fault-rate covers (default {','.join(DEFAULT_FAULT_KINDS)}; "
                        f"all: {','.join(FAULT_KINDS)})")
    p.add_argument("--fault", type=_kind_rate, action="append", default=[], metavar="KIND=RATE",
                   help="rate of one fault kind (repeatable; overrides its share of --fault-rate)")
    config_flag("--hang-s", "how long a 'hang' fault stalls", type=float)
    config_flag("--wrong-answer-rate", "probability of a deliberately wrong answer", type=_rate)
    config_flag("--duplicate-rate", "probability of a duplicate generated item", type=_rate)
    config_flag("--heldout-copy-rate", "probability of copying a held-out item", type=_rate)
    config_flag("--heldout-file", "JSONL of {question, choices, answer_text} that generation may copy from")
    config_flag("--reasoning", "reasoning output like vLLM/SGLang reasoning parsers: split = thoughts in the "
                               "reasoning field and the answer in content; only = everything in the reasoning "
                               "field, content null", choices=("off", "split", "only"))
    config_flag("--reasoning-field", "the message field reasoning text goes in",
                choices=("reasoning_content", "reasoning"))
    config_flag("--reject-json-schema", "answer requests with response_format json_schema with this HTTP error "
                                        "status (e.g. 400 or 500, as llama.cpp servers do; 0 = accept)", type=int)
    p.add_argument("--require-key-env", default=None,
                   help="answer 401 unless requests carry the key held in this environment variable")
    p.set_defaults(handler=cmd_sim)
    return p


_SIM_FLAGS = ("seed", "latency_ms", "latency_jitter_ms", "latency_dist", "max_concurrency", "rate_limit_rps",
              "rate_limit_burst", "retry_after_s", "fault_rate", "hang_s", "wrong_answer_rate", "duplicate_rate",
              "heldout_copy_rate", "heldout_file", "reasoning", "reasoning_field", "reject_json_schema")


def settings_from_args(args: argparse.Namespace, sim_config: SimulatorConfig | None = None,
                       model: str | None = None):
    """Validated `simulator.SimSettings`: the flags given, else `sim_config`'s values (default
    SimulatorConfig()), the model from --model, else `model`, else endpoint.model's default.
    ConfigError on bad values."""
    from simulator import SimSettings

    overrides: dict[str, Any] = {k: getattr(args, k) for k in _SIM_FLAGS if getattr(args, k, None) is not None}
    overrides["model"] = args.model or model or EndpointConfig().model
    if args.fault_kinds is not None:
        overrides["fault_kinds"] = tuple(k.strip() for k in args.fault_kinds.split(",") if k.strip())
    overrides["fault_rates"] = tuple(args.fault)
    if args.require_key_env:
        overrides["require_api_key"] = os.environ.get(args.require_key_env)
        if not overrides["require_api_key"]:
            raise ConfigError(f"--require-key-env: environment variable {args.require_key_env} is not set")
    heldout_file = overrides.get("heldout_file") or (sim_config.heldout_file if sim_config else None)
    if heldout_file and not os.path.isfile(heldout_file):
        raise ConfigError(f"--heldout-file: no such file {heldout_file}")
    try:
        return SimSettings.from_config(sim_config or SimulatorConfig(), **overrides).validated()
    except ValueError as exc:
        raise ConfigError(f"sim: {exc}") from None


def cmd_sim(args, config: Config) -> int:
    """Serve until Ctrl-C."""
    from simulator import run_simulator

    settings = settings_from_args(args, config.simulator, config.endpoint.model)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    run_simulator(args.host, args.port, settings)
    return 0


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
                progress(f"({cut} value{'s' if cut != 1 else ''} longer than {TABLE_MAX_WIDTH} characters shown cut with …; "
                         "--json prints every value whole)")
    except (AnalysisException, ParseException) as exc:
        raise ConfigError(f"SQL error: {spark_error_line(exc)}") from None
    if truncated:
        progress(f"({printed} rows shown, truncated at --max-rows {limit}: the query has more; raise --max-rows"
                 f"{'' if args.json else ' or use --json, which has no limit by default'})")
    elif not args.json:
        progress(f"({printed} row{'s' if printed != 1 else ''})")
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
    publish.set_defaults(handler=cmd_publish)

    status = commands.add_parser("status", help="per stage: tables, rows, Delta versions, failures, last MLflow run")
    status.add_argument("--json", action="store_true", help="one JSON object per stage")
    status.set_defaults(handler=cmd_status)

    add_sim_parser(commands)

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


def spark_error_line(exc: BaseException) -> str:
    """One line for an error raised by Spark or Delta: the `SomeException: message` line of a
    Py4J trace, else the first line of the message (PySpark's `[ERROR_CLASS] message`)."""
    text = str(exc).strip()
    for line in text.splitlines():
        line = line.strip().removeprefix(": ")
        if line and ("Exception: " in line or "Error: " in line) and not line.startswith("at "):
            return line[:400]
    first = text.splitlines()[0].strip() if text else type(exc).__name__
    return first[:400]


def _is_spark_error(exc: BaseException) -> bool:
    """Raised by the JVM side (Spark, Delta) rather than by our code; only checked once pyspark
    is imported (commands that never start Spark cannot raise these)."""
    if "pyspark" not in sys.modules:
        return False
    from py4j.protocol import Py4JError
    from pyspark.errors import PySparkException

    return isinstance(exc, (Py4JError, PySparkException))


def _failure_line(exc: BaseException) -> str:
    """One line for what failed: `spark_error_line` for Spark and Delta, else `Type: first line`."""
    if _is_spark_error(exc):
        return spark_error_line(exc)
    kind = type(exc).__qualname__ if type(exc).__module__ == "builtins" else \
        f"{type(exc).__module__}.{type(exc).__qualname__}"
    text = str(exc).strip()
    return f"{kind}: {text.splitlines()[0].strip()[:400]}" if text else kind


def _report_error(exc: BaseException, config: Config | None, message: str | None = None) -> None:
    """Print `taskseed: error: <message>` (default: the Spark error's line), naming the log file
    that gets the traceback (unless --verbose, which prints it; or the log cannot be written)."""
    import traceback

    from jobs.runtime import spark_log_path

    line = f"taskseed: error: {message or spark_error_line(exc)}"
    if config is not None and not _verbose:
        path = spark_log_path(config)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(f"\n--- taskseed: {line}\n{''.join(traceback.format_exception(exc))}\n")
            line += f" (details in {path})"
        except OSError:
            pass
    elif _verbose:
        traceback.print_exception(exc, file=sys.stderr)
    print(line, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    global _verbose
    parser = build_parser()
    args = parser.parse_args(argv)
    _verbose = bool(args.verbose)
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
        _end_update_line()
        print(f"taskseed: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _end_update_line()
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
        _end_update_line()
        print(f"taskseed: error: {describe_os_error(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:
        _end_update_line()
        from jobs.lakehouse import WriterConflict  # only a lakehouse raises it, so it is imported by now

        if isinstance(exc, WriterConflict):  # another writer on the same lakehouse: one line, no traceback
            print(f"taskseed: error: {exc}", file=sys.stderr)
            return 1
        behind = os_error_behind(exc)
        if behind is not None:  # the disk filled or a mount turned read-only under Spark, Delta or MLflow
            os_error, shown_by = behind
            _report_error(exc, config, f"{describe_os_error(os_error)} ({_failure_line(shown_by)})")
            return 1
        if not _is_spark_error(exc):
            raise
        _report_error(exc, config)
        return 1
    finally:
        _end_update_line()


def _end_update_line() -> None:
    """End a progress update left open on the terminal (so what follows starts on its own line)."""
    global _open_update
    if _open_update:
        sys.stderr.write("\n")
        sys.stderr.flush()
        _open_update = False


if __name__ == "__main__":
    sys.exit(main())
