"""`taskseed` command line: `taskseed [--config FILE] [--home DIR] [--set key=value ...] <command>`.

User mistakes (bad config, missing Java, unknown task) print one clear message and exit 2;
only genuine bugs show a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any, Callable

from jobs.config import Config, ConfigError, load_config


def progress(message: str) -> None:
    """Progress and summaries go to stderr so `--json` output on stdout stays machine-readable."""
    print(message, file=sys.stderr, flush=True)


def _open_lakehouse(config: Config):
    from jobs.lakehouse import Lakehouse
    from jobs.runtime import get_spark

    progress(f"starting Spark ({config.spark.master}) with Delta; lakehouse home {config.home}")
    spark = get_spark(config)
    return Lakehouse(spark, config)


# ---- commands ----------------------------------------------------------------------------

def cmd_catalog(args, config: Config) -> int:
    from jobs.catalog import print_catalog_summary, run_catalog

    lakehouse = _open_lakehouse(config)
    rows = run_catalog(lakehouse, config, progress=progress)
    print_catalog_summary(rows, out=print)
    progress(f"task_catalog is at version {lakehouse.version('task_catalog')}")
    return 0


def _format_value(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def format_table(columns: list[str], rows: list[list[Any]], max_width: int = 60) -> str:
    """A plain text table; long cells are cut with an ellipsis so rows stay on one line."""
    cells = [[_format_value(v).replace("\n", "\\n") for v in row] for row in rows]
    cells = [[c if len(c) <= max_width else c[: max_width - 1] + "…" for c in row] for row in cells]
    widths = [max([len(col)] + [len(row[i]) for row in cells]) for i, col in enumerate(columns)]
    line = "  ".join(col.ljust(w) for col, w in zip(columns, widths))
    rule = "  ".join("-" * w for w in widths)
    body = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join([line, rule, *body])


def _row_to_python(row) -> dict[str, Any]:
    return {k: v for k, v in row.asDict(recursive=True).items()}


def cmd_sql(args, config: Config) -> int:
    from pyspark.errors import AnalysisException, ParseException

    lakehouse = _open_lakehouse(config)
    lakehouse.spark.sql(f"USE {lakehouse.namespace}")
    try:
        df = lakehouse.spark.sql(args.query)
        rows = df.limit(args.max_rows + 1).collect()
    except (AnalysisException, ParseException) as exc:
        raise ConfigError(f"SQL error: {exc.getMessage() if hasattr(exc, 'getMessage') else exc}") from None
    truncated = len(rows) > args.max_rows
    rows = rows[: args.max_rows]
    if args.json:
        for row in rows:
            print(json.dumps(_row_to_python(row), ensure_ascii=False, default=str))
    else:
        print(format_table(df.columns, [[row[c] for c in range(len(df.columns))] for row in rows]))
        progress(f"({len(rows)} row{'s' if len(rows) != 1 else ''}{', truncated: raise --max-rows' if truncated else ''})")
    return 0


def cmd_tables(args, config: Config) -> int:
    lakehouse = _open_lakehouse(config)
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
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    commands = parser.add_subparsers(dest="command", required=True, metavar="<command>")

    catalog = commands.add_parser("catalog", help="enumerate lm-eval tasks into task_catalog")
    catalog.set_defaults(handler=cmd_catalog)

    sql = commands.add_parser("sql", help="run a SQL query over the lakehouse tables")
    sql.add_argument("query")
    sql.add_argument("--json", action="store_true", help="one JSON object per row")
    sql.add_argument("--max-rows", type=int, default=200)
    sql.set_defaults(handler=cmd_sql)

    tables = commands.add_parser("tables", help="list tables with row counts and Delta versions")
    tables.add_argument("--json", action="store_true")
    tables.set_defaults(handler=cmd_tables)

    _register_optional(commands)
    return parser


def _register_optional(commands) -> None:
    """Commands contributed by stage modules, each registering its own sub-parser."""
    from importlib import import_module

    for module_name, register in (
        ("jobs.ingest", "add_ingest_parser"),
        ("jobs.sim_cli", "add_sim_parser"),
        ("jobs.generate", "add_generate_parser"),
        ("jobs.enrich", "add_enrich_parser"),
        ("jobs.pipeline", "add_run_parser"),
    ):
        try:
            module = import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue
            raise
        added = getattr(module, register)(commands)
        if module_name == "jobs.sim_cli":
            # the simulator is standalone: no lakehouse, no pipeline config
            run_sim = module.run_sim
            added.set_defaults(handler=lambda args, _config: run_sim(args), needs_config=False)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    handler: Callable = args.handler
    try:
        if getattr(args, "needs_config", True):
            config = load_config(args.config, args.overrides, home=args.home)
        else:
            config = None
        return handler(args, config) or 0
    except ConfigError as exc:
        print(f"taskseed: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("taskseed: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
