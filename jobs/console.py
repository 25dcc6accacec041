"""The console: what `taskseed` commands print and how. Progress lines and summaries on stderr
(so `--json` output on stdout stays machine-readable), plain text tables, the dry-run estimate,
`taskseed status`'s rows, the "where to look" ending of `taskseed run`, and one-line errors whose
traceback goes to the Spark log file. jobs/cli.py is its only user."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from jobs.config import Config
from jobs.progress import ProgressLine

_verbose = False  # set once by jobs.cli.main from --verbose (set_verbose)
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


def set_verbose(verbose: bool) -> None:
    global _verbose
    _verbose = verbose


def verbose() -> bool:
    return _verbose


def end_update_line() -> None:
    """End a progress update left open on the terminal (so what follows starts on its own line)."""
    global _open_update
    if _open_update:
        sys.stderr.write("\n")
        sys.stderr.flush()
        _open_update = False



def format_value(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


TABLE_MAX_WIDTH = 60  # characters of a cell in a text table


def _cell(value: Any) -> str:
    return format_value(value).replace("\n", "\\n")


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


def print_lines(result: Any, out: Callable[[str], None] | None = None) -> None:
    """A stage's summary lines (`result.summary_lines()`), to stderr through `progress` by default:
    summaries are reports, like progress, and stdout carries only the answer (docs/configuration.md)."""
    for line in result.summary_lines():
        (out or progress)(line)


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
    out(projected_cost_line(stage, total, config))


def projected_cost_line(stage: str, total, config: Config) -> str:
    """The dry run's projected cost (issue 26): the estimated tokens still to send at the price of
    the stage's model in `costs`, with the hard cap (max_completion_tokens) as the upper end."""
    from jobs.costs import projected_cost

    model = config.stage_endpoint(stage).model
    batch = config.stage_endpoint(stage).mode == "batch"  # billed at the Batch API's price
    low = projected_cost(config, model, total.est_prompt_tokens, total.est_completion_tokens, batch)
    high = projected_cost(config, model, total.est_prompt_tokens, total.max_completion_tokens, batch)
    if low is None:
        why = "no price" if model not in config.costs else "a GPU-hour price needs costs.<model>.tokens_per_second"
        return f"[{stage}] projected cost: unknown ({why} for model {model}; see the costs section in docs/configuration.md)"
    return f"[{stage}] projected cost of what would be sent: {low:.4g} (at most {high:.4g} if every answer hit max_tokens)"


STATUS_COLUMNS = ["stage", "tables", "requests", "failed", "quarantined", "last run", "model"]


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
        run = last_run_text(last, getattr(s, "last_write", None))
        models = getattr(s, "models", None) or {}
        model = ", ".join(m if name == s.stage else f"{name}: {m}" for name, m in models.items()) or "-"
        rows.append([s.stage, tables[0], dash(s.requests), dash(s.failed), dash(s.quarantined), run, model])
        rows += [["", table, "", "", "", "", ""] for table in tables[1:]]
    return rows


def last_run_text(last: dict[str, Any] | None, write: dict[str, Any] | None) -> str:
    """The `last run` cell of `taskseed status`: the newest MLflow stage run; else, for a stage run
    on its own without MLflow, its newest write found in the tables (`jobs.status.last_writes`:
    the ledger's newest row of the stage, or the newest Delta commit of a table it writes); else
    `never`."""
    if last:
        return f"{last['start']} {last['outcome']} (run {last['run_id']})"
    if write:
        run = f", run {write['run_id']}" if write.get("run_id") else ""
        return f"{write['at']} wrote {write['source']}{run} (no MLflow run)"
    return "never"


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


# Three questions a reader of the published data asks first (docs/curation.md "Querying curation").
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


def is_spark_error(exc: BaseException) -> bool:
    """Raised by the JVM side (Spark, Delta) rather than by our code; only checked once pyspark
    is imported (commands that never start Spark cannot raise these)."""
    if "pyspark" not in sys.modules:
        return False
    from py4j.protocol import Py4JError
    from pyspark.errors import PySparkException

    return isinstance(exc, (Py4JError, PySparkException))


def failure_line(exc: BaseException) -> str:
    """One line for what failed: `spark_error_line` for Spark and Delta, else `Type: first line`."""
    if is_spark_error(exc):
        return spark_error_line(exc)
    kind = type(exc).__qualname__ if type(exc).__module__ == "builtins" else \
        f"{type(exc).__module__}.{type(exc).__qualname__}"
    text = str(exc).strip()
    return f"{kind}: {text.splitlines()[0].strip()[:400]}" if text else kind


def report_error(exc: BaseException, config: Config | None, message: str | None = None) -> None:
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
