"""Stage `ingest`: training splits → `seeds`, validation/test splits → `heldout`, failures → `quarantine`.

Reads:  `task_catalog` (dataset path/name, splits, answer_format, family, license per task), the
        datasets themselves (a local mirror `<dataset_path>/<config|default>/<split>.jsonl|parquet`
        or the Hugging Face hub), lm-eval's task YAMLs (templates, process_docs).
Writes: `seeds`      seed_id + the normalized record (schemas.tables.SEEDS)
        `heldout`    heldout_id + the normalized record + decontamination_text (HELDOUT)
        `quarantine` stage="ingest", source_key, task, split, reason, detail, raw (QUARANTINE)

How the work is split. The driver only plans: it resolves the selection (task names, groups,
tags, or every eligible task) against the catalog, checks each task's config (YAML + functions,
no data), finds each split's files and counts rows cheaply (JSONL lines, parquet footers), and
cuts large splits into shards of `tasks.shard_rows`. Each (task, split, role, row range) is one
work unit and one Spark partition; executors build the task's lm-eval renderer once per Python
worker (udfs.normalize.get_renderer) and map their unit to normalized rows with mapInPandas.
No record ever reaches the driver.

Which split goes where. A seeded task's `training_split` → seeds; its validation/test splits and
a few-shot split other than the training split → heldout. Tasks named as held-out-only
(`tasks.heldout_only`, `--heldout`, e.g. MMLU) contribute only their validation/test/few-shot
splits, never seeds. A training split that a task also evaluates on is never seeded.

Identity (see udfs.normalize): seed_id/heldout_id hash (role, task, split, raw record), so a
rerun, a re-ordered source or a different shard size inserts nothing new. A byte-identical record
repeated inside a split is one row; its repeats are quarantined as `duplicate_record` (so every
source row is accounted for: rows in = seeds/heldout + quarantined), keyed by
`udfs.normalize.duplicate_key`. All writes are insert-only MERGEs on those keys, and each of the
three tables is merged on every run (a MERGE with nothing new commits nothing).
"""

from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from jobs.config import Config, ConfigError
from jobs.progress import accumulator_progress, plural, spark_counter
from jobs.stage import Stage, quiet, tables
from schemas.tables import HELDOUT, QUARANTINE, SEEDS, TASK_CATALOG

SEED, HELDOUT_ROLE = "seed", "heldout"


# --------------------------------------------------------------------------------------------
# summary
# --------------------------------------------------------------------------------------------


@dataclass
class TaskSummary:
    """One selected task's outcome. `role` is seed (seeded task) or heldout (held-out only)."""

    task: str
    role: str
    rows_in: int = 0
    seeds: int = 0
    heldout: int = 0
    quarantined: int = 0
    skipped: str | None = None       # why the task produced nothing (data unavailable, config...)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. a configured split missing from the mirror
    reasons: dict[str, int] = field(default_factory=dict)  # quarantine reason → count
    splits: dict[str, int] = field(default_factory=dict)   # split → rows in


@dataclass
class IngestSummary:
    run_id: str
    tasks: dict[str, TaskSummary]
    units: int = 0
    inserted: dict[str, int] = field(default_factory=dict)  # table → rows inserted by this run
    seconds: float = 0.0

    @property
    def skipped(self) -> dict[str, str]:
        return {name: t.skipped for name, t in self.tasks.items() if t.skipped}

    def total(self, column: str) -> int:
        return sum(getattr(t, column) for t in self.tasks.values())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self) -> str:
        header = ["task", "role", "rows_in", "seeds", "heldout", "quarantined", "skipped / notes"]
        rows = []
        for name in sorted(self.tasks):
            t = self.tasks[name]
            remark = t.skipped or "; ".join(
                [*(f"error: {e}" for e in t.errors), *t.notes,
                 *(f"{r}={n}" for r, n in sorted(t.reasons.items()))]
            )
            rows.append([name, t.role, t.rows_in, t.seeds, t.heldout, t.quarantined, remark])
        rows.append(["TOTAL", "", self.total("rows_in"), self.total("seeds"), self.total("heldout"),
                     self.total("quarantined"), f"{len(self.skipped)} skipped"])
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header) - 1)]
        lines = []
        for r in [header, *rows]:
            cells = [str(v).ljust(w) if i == 0 or i == 1 else str(v).rjust(w)
                     for i, (v, w) in enumerate(zip(r, widths))]
            lines.append("  ".join(cells) + "  " + str(r[-1]))
        inserted = ", ".join(f"{k} +{v}" for k, v in sorted(self.inserted.items()))
        lines.append(f"{self.units} work units in {self.seconds:.1f}s; inserted: {inserted or 'nothing'}")
        return "\n".join(lines)

    def summary_lines(self) -> list[str]:
        return self.format().splitlines()


# --------------------------------------------------------------------------------------------
# planning (driver, no records)
# --------------------------------------------------------------------------------------------


def resolve_yaml_path(value: str | None, include_paths: Iterable[Path] = ()) -> str | None:
    """The catalog's yaml_path as an absolute file: it may be absolute, or relative to lm-eval's
    task folder or an include path, possibly written as `!function <path>`."""
    if not value:
        return None
    text = value.removeprefix("!function").strip()
    path = Path(text)
    if path.is_absolute():
        return str(path) if path.is_file() else None
    import lm_eval.tasks

    roots = [*(Path(p) for p in include_paths), Path(lm_eval.tasks.__file__).resolve().parent]
    for root in roots:
        candidate = root / path
        if candidate.is_file():
            return str(candidate.resolve())
    return None


def task_names(value: Iterable[str] | str | None) -> list[str]:
    """Names from a comma-separated string or a list of them (blanks dropped)."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    return [n.strip() for item in value for n in str(item).split(",") if n.strip()]


def resolve_names(names: list[str], catalog: dict[str, dict], config: Config,
                  index: Any = None, progress: Callable[[str], None] = quiet
                  ) -> tuple[list[str], list[str]]:
    """Expand task/group/tag names to leaf task names: (tasks, unknown names).

    Cheap first: a catalog task name, or a tag/group listed on catalog rows. Anything else
    (nested groups such as `mmlu` → `mmlu_stem` → tag) goes through lm-eval's index via
    jobs.catalog.resolve_selection (the index is built once, ~10 s, unless one is passed in).
    """
    found: list[str] = []
    unknown: list[str] = []
    need_index: list[str] = []
    for name in names:
        if name in catalog:
            found.append(name)
            continue
        members = sorted(t for t, row in catalog.items()
                         if name in (row.get("tags") or []) or name in (row.get("groups") or []))
        if members:
            found.extend(members)
        else:
            need_index.append(name)
    if need_index:
        from jobs.catalog import build_task_index, resolve_selection

        if index is None:
            progress(f"ingest: resolving {', '.join(need_index)} with lm-eval's task index…")
            index = build_task_index(list(config.tasks.include_path))
        tasks, missing = resolve_selection(index, need_index)
        found.extend(tasks)
        unknown.extend(missing)
    return list(dict.fromkeys(found)), unknown


@dataclass
class PlannedTask:
    task: str
    role: str
    row: dict
    source: dict  # effective dataset_path, dataset_name, yaml_path, overrides_json
    splits: list[tuple[str, str]]  # (split, role)
    named_splits: frozenset[str] = frozenset()  # splits the YAML (or an override) names


def _effective(row: dict, config: Config) -> tuple[dict, dict]:
    """Catalog row + config.tasks.overrides → (effective fields, overrides as dict)."""
    override = config.tasks.overrides.get(row["task"])
    ov = override.model_dump(exclude_none=True) if override is not None else {}
    eff = {k: row.get(k) for k in ("dataset_path", "dataset_name", "training_split",
                                   "validation_split", "test_split", "fewshot_split")}
    eff.update(ov)
    return eff, ov


def split_roles(eff: dict, role: str) -> tuple[list[tuple[str, str]], list[str]]:
    """[(split, role)] for a task and notes. Held-out = the YAML's validation, test and few-shot
    splits plus any split named `validation`/`test` the data has (MMLU's unnamed validation
    split), never the training split; the training split is seeded only for seeded tasks and
    never when the task also evaluates on it. Splits absent from the data are dropped later."""
    from udfs.normalize import STANDARD_HELDOUT_SPLITS

    notes = []
    train = eff.get("training_split")
    named = (eff.get("validation_split"), eff.get("test_split"), eff.get("fewshot_split"))
    held = [s for s in (*named, *STANDARD_HELDOUT_SPLITS) if s and s != train]
    out: list[tuple[str, str]] = []
    if role == SEED and train:
        if train in (eff.get("validation_split"), eff.get("test_split")):
            notes.append(f"training split '{train}' is also an evaluation split: not seeded")
            held.insert(0, train)
        else:
            out.append((train, SEED))
    for split in dict.fromkeys(held):
        out.append((split, HELDOUT_ROLE))
    return out, notes


def plan_units(planned: list[PlannedTask], config: Config, summaries: dict[str, TaskSummary],
               ) -> list[dict]:
    """Work units: one per shard of each available split. Missing splits become notes; a task
    with no available split is skipped with the reason."""
    from udfs.normalize import count_rows, split_files

    mirror = str(config.tasks.mirror) if config.tasks.mirror else None
    shard_rows = config.tasks.shard_rows
    units: list[dict] = []
    for p in planned:
        summary = summaries[p.task]
        task_units = []
        missing = []
        for split, role in p.splits:
            named = split in p.named_splits
            if mirror:
                found = split_files(mirror, p.source["dataset_path"], p.source["dataset_name"], split)
                if found is None:
                    if named:
                        missing.append(split)
                    continue
                n_rows = count_rows(*found)
            else:
                n_rows = _hub_split_rows(p.source["dataset_path"], p.source["dataset_name"], split)
                if n_rows is None and not named:
                    continue  # an unnamed standard split is only taken when the data has it
            bounds = _shards(n_rows, shard_rows)
            for start, end in bounds:
                task_units.append({
                    "task": p.task, "split": split, "role": role, "start": start, "end": end,
                    "size": (n_rows if n_rows is not None else shard_rows) - start if end is None else end - start,
                    "task_family": p.row.get("family"),
                    "dataset_path": p.source["dataset_path"], "dataset_name": p.source["dataset_name"],
                    "yaml_path": p.source["yaml_path"], "answer_format": p.row.get("answer_format"),
                    "license": p.row.get("license"), "license_class": p.row.get("license_class"),
                    "overrides_json": p.source["overrides_json"],
                })
        where = (f"{p.source['dataset_path']}/{p.source['dataset_name'] or 'default'}"
                 + (f" in mirror {mirror}" if mirror else ""))
        if not task_units:
            wanted = [s for s, _ in p.splits if s in p.named_splits]
            summary.skipped = f"data unavailable: no split of {where}" + (
                f" ({', '.join(wanted)} wanted)" if wanted else " (no splits configured)")
        elif missing:
            summary.notes.append(f"split(s) {', '.join(missing)} not available at {where}")
        units.extend(task_units)
    return units


def require_mirror_data(planned: list[PlannedTask], units: list[dict], mirror: str | Path | None,
                        cwd: Path | None = None) -> None:
    """ConfigError when `tasks.mirror` is set and holds no split of any planned task: a relative
    mirror path is read from the working directory, so a run started elsewhere would otherwise
    find nothing and finish with 0 curated rows and a complete-looking card (issue 29). The
    message names the path as given, where it was looked for and the tasks."""
    if not mirror or not planned or units:
        return
    cwd = cwd or Path.cwd()
    given = Path(mirror)
    where = given if given.is_absolute() else cwd / given
    exists = "" if where.is_dir() else " (no such folder)"
    relative = (f"; a relative tasks.mirror is read from the working directory ({cwd}): run taskseed from "
                "the folder the config expects, or give an absolute path") if not given.is_absolute() else ""
    raise ConfigError(f"tasks.mirror {mirror} holds none of the selected tasks' data: looked in {where}{exists} "
                      f"for {', '.join(sorted(p.task for p in planned))}{relative}")


def _shards(n_rows: int | None, shard_rows: int) -> list[tuple[int, int | None]]:
    """Row ranges; the last is open-ended so rows beyond the estimate are never lost."""
    if not n_rows or n_rows <= shard_rows:
        return [(0, None)]
    starts = list(range(0, n_rows, shard_rows))
    return [(s, s + shard_rows) for s in starts[:-1]] + [(starts[-1], None)]


def _hub_split_rows(dataset_path: str, dataset_name: str | None, split: str) -> int | None:
    """Row count from the hub's dataset info (metadata only); None when unknown → one shard."""
    try:
        import datasets

        info = datasets.load_dataset_builder(dataset_path, dataset_name).info
        return int(info.splits[split].num_examples) if info.splits and split in info.splits else None
    except Exception:  # noqa: BLE001 - unknown size only means one shard
        return None


# --------------------------------------------------------------------------------------------
# executor side
# --------------------------------------------------------------------------------------------


def _output_schema():
    from pyspark.sql.types import (ArrayType, IntegerType, LongType, StringType, StructField,
                                   StructType)

    from udfs.normalize import OUTPUT_COLUMNS

    types = {"doc_index": LongType(), "rows_in": LongType(), "answer_index": IntegerType(),
             "choices": ArrayType(StringType())}
    return StructType([StructField(c, types.get(c, StringType()), True) for c in OUTPUT_COLUMNS])


def pack_units(units: list[dict], n_bins: int) -> list[list[int]]:
    """Longest-processing-time packing of units (largest first onto the lightest bin), so small
    units (MMLU's 57 subjects × 2 splits) share partitions and big shards spread out."""
    n_bins = max(1, min(n_bins, len(units)))
    bins: list[list[int]] = [[] for _ in range(n_bins)]
    loads = [0] * n_bins
    for i in sorted(range(len(units)), key=lambda i: (-units[i]["size"], units[i]["task"])):
        b = loads.index(min(loads))
        bins[b].append(i)
        loads[b] += max(1, units[i]["size"])
    return [b for b in bins if b]


def make_mapper(units: list[dict], bins: list[list[int]], mirror: str | None,
                include_path: tuple[str, ...], batch_rows: int = 2000, rows_done=None,
                ) -> Callable[[Iterator[Any]], Iterator[Any]]:
    """mapInPandas function over `spark.range(len(bins))`: each id is a bin of unit indexes; the
    unit list travels in the closure (small: one dict per shard, no records). rows_done: a Spark
    accumulator each finished unit adds its source rows (`size`) to (progress in rows)."""

    def mapper(batches):
        from udfs.normalize import Unit, process_unit, quiet_libraries

        quiet_libraries()
        for batch in batches:
            for bin_id in batch["id"].tolist():
                for unit_id in bins[int(bin_id)]:
                    spec = units[unit_id]
                    unit = Unit(**{k: spec[k] for k in Unit.__dataclass_fields__ if k in spec})
                    rows: list[dict] = []
                    for row in process_unit(unit, mirror, include_path):
                        rows.append(row)
                        if len(rows) >= batch_rows:
                            yield frame(rows)
                            rows = []
                    if rows:
                        yield frame(rows)
                    if rows_done is not None:
                        rows_done.add(int(spec["size"]))

    def frame(rows):
        # Column by column as object dtype: a key absent from every row must stay None, not
        # become a float NaN column (which Arrow cannot turn into a string column).
        import pandas as pd

        from udfs.normalize import OUTPUT_COLUMNS

        return pd.DataFrame({c: pd.Series([r.get(c) for r in rows], dtype=object)
                             for c in OUTPUT_COLUMNS})

    return mapper


# --------------------------------------------------------------------------------------------
# the job
# --------------------------------------------------------------------------------------------


def run_ingest(
    lakehouse,
    config: Config,
    tasks: list[str] | None = None,
    heldout_tasks: list[str] | None = None,
    progress: Callable[[str], None] = quiet,
    index: Any = None,
    run_id: str | None = None,
) -> IngestSummary:
    """Ingest the selected tasks; returns the per-task summary (`summary_lines()` prints it).

    tasks: names/groups/tags to seed (None → config.tasks.select; empty → every eligible task).
    heldout_tasks: eval-only names/groups/tags (None → config.tasks.heldout_only).
    index: a jobs.catalog.TaskIndex to reuse for group/tag expansion (built when needed).
    """
    from pyspark import StorageLevel
    from pyspark.sql import functions as F
    from pyspark.sql.window import Window

    from udfs.normalize import check_task_config

    t0 = time.time()
    run_id = run_id or uuid.uuid4().hex[:16]
    spark = lakehouse.spark
    select = task_names(tasks if tasks is not None else config.tasks.select)
    heldout_names = task_names(heldout_tasks if heldout_tasks is not None else config.tasks.heldout_only)

    catalog_df = lakehouse.read(TASK_CATALOG.name)
    columns = ["task", "family", "groups", "tags", "yaml_path", "dataset_path", "dataset_name",
               "training_split", "validation_split", "test_split", "fewshot_split",
               "answer_format", "license", "license_class", "eligible", "ineligible_reason"]
    catalog = {r["task"]: r.asDict(recursive=True) for r in catalog_df.select(*columns).collect()}
    if not catalog:
        raise ConfigError("task_catalog is empty: run `taskseed catalog` first")

    summaries: dict[str, TaskSummary] = {}
    if select:
        seeded, unknown = resolve_names(select, catalog, config, index, progress)
    else:
        seeded, unknown = sorted(t for t, r in catalog.items() if r["eligible"]), []
    held_only, unknown_held = resolve_names(heldout_names, catalog, config, index, progress) \
        if heldout_names else ([], [])
    why_unknown = "unknown task, group or tag"
    if (unknown or unknown_held) and config.tasks.include_path:
        from jobs.catalog import unloadable_task_yamls

        broken = unloadable_task_yamls(list(config.tasks.include_path))
        if broken:  # the task may be in a user YAML lm-eval could not load: say which and why
            why_unknown += "; user task YAMLs lm-eval could not load: " + "; ".join(
                f"{path} ({reason})" for path, reason in broken.items())
    for name in [*unknown, *unknown_held]:
        summaries[name] = TaskSummary(name, SEED if name in unknown else HELDOUT_ROLE, skipped=why_unknown)

    planned: list[PlannedTask] = []
    roles = {t: SEED for t in seeded}
    for t in held_only:
        roles.setdefault(t, HELDOUT_ROLE)
    for task, role in roles.items():
        summary = summaries[task] = TaskSummary(task, role)
        row = catalog.get(task)
        if row is None:
            summary.skipped = "not in task_catalog (run `taskseed catalog` with its include_path)"
            continue
        if role == SEED and not row["eligible"]:
            summary.skipped = f"not eligible for seeding: {row.get('ineligible_reason') or 'see task_catalog'}"
            continue
        eff, ov = _effective(row, config)
        yaml_path = resolve_yaml_path(row.get("yaml_path"), config.tasks.include_path)
        error = check_task_config(task, yaml_path, ov, [str(p) for p in config.tasks.include_path])
        if error:
            summary.skipped = f"config error: {error}"
            continue
        if not eff.get("dataset_path"):
            summary.skipped = "config error: no dataset_path"
            continue
        splits, notes = split_roles(eff, role)
        summary.notes.extend(notes)
        planned.append(PlannedTask(task, role, row, {
            "dataset_path": eff["dataset_path"], "dataset_name": eff.get("dataset_name"),
            "yaml_path": yaml_path, "overrides_json": json.dumps(ov, sort_keys=True),
        }, splits, frozenset(v for k, v in eff.items() if k.endswith("_split") and v)))

    units = plan_units(planned, config, summaries)
    require_mirror_data(planned, units, config.tasks.mirror)
    units.sort(key=lambda u: -u["size"])  # biggest first: better balance across executors
    progress(f"ingest: {plural(len(planned), 'benchmark task')}, {plural(len(units), 'work unit')}; "
             f"{sum(1 for s in summaries.values() if s.skipped)} skipped before reading data "
             f"(planned in {time.time() - t0:.1f}s)")
    summary = IngestSummary(run_id=run_id, tasks=summaries, units=len(units))
    if not units:
        summary.seconds = time.time() - t0
        return summary

    mirror = str(Path(config.tasks.mirror).resolve()) if config.tasks.mirror else None
    include = tuple(str(Path(p).resolve()) for p in config.tasks.include_path)
    total_rows = sum(u["size"] for u in units)
    n_bins = max(-(-total_rows // config.tasks.shard_rows), 2 * _parallelism(spark))
    bins = pack_units(units, n_bins)
    rows_done = spark_counter(spark)  # progress in benchmark rows (the units' source rows), never Spark tasks
    mapped = spark.range(0, len(bins), 1, numPartitions=len(bins)).mapInPandas(
        make_mapper(units, bins, mirror, include, rows_done=rows_done), _output_schema())

    # Repeats of a byte-identical record within a run keep the lowest doc_index; the others
    # become quarantine rows (reason duplicate_record), so every source row is accounted for.
    is_record = F.col("kind").isin(SEED, HELDOUT_ROLE)
    same_id = Window.partitionBy("row_id")
    ranked = mapped.withColumn(
        "_rank", F.when(is_record, F.row_number().over(same_id.orderBy("doc_index", "split")))
        .otherwise(F.lit(1))
    ).withColumn("_first", F.min("doc_index").over(same_id))
    dup = is_record & (F.col("_rank") > 1)
    final = ranked.select(
        *[c for c in mapped.columns if c not in ("kind", "row_id", "reason", "detail")],
        F.when(dup, F.lit("quarantine")).otherwise(F.col("kind")).alias("kind"),
        "row_id",  # a repeat keeps its record's id here; its quarantine key is made when it is written
        F.when(dup, F.lit("duplicate_record")).otherwise(F.col("reason")).alias("reason"),
        F.when(dup, F.concat(F.lit("row "), F.col("doc_index").cast("string"),
                             F.lit(" repeats row "), F.col("_first").cast("string"),
                             F.lit(" of this split ("), F.col("kind"), F.lit("_id "), F.col("row_id"),
                             F.lit(")")))
        .otherwise(F.col("detail")).alias("detail"),
    ).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        progress(f"ingest: normalizing on executors ({len(units)} units, {total_rows} rows, "
                 f"in {len(bins)} partitions)…")
        with accumulator_progress(rows_done, "ingest: normalizing", progress, total_rows, unit="rows"):
            stats = (final.groupBy("task", "split", "kind", "reason")
                     .agg(F.count(F.lit(1)).alias("n"), F.sum("rows_in").alias("rows_in"),
                          F.max(F.when(F.col("reason") == "task_error", F.col("detail"))).alias("error"))
                     .collect())
        counts = _apply_stats(stats, summaries)
        progress(f"ingest: normalized {sum(counts.values())} rows ({time.time() - t0:.1f}s)")
        now = F.current_timestamp()
        seeds = final.filter(F.col("kind") == SEED).withColumn("seed_id", F.col("row_id")) \
            .withColumn("ingested_at", now)
        held = final.filter(F.col("kind") == HELDOUT_ROLE).withColumn("heldout_id", F.col("row_id")) \
            .withColumn("ingested_at", now)
        quarantined = final.filter(F.col("kind") == "quarantine")
        source_key = F.when(F.col("reason") == "duplicate_record",
                            _duplicate_key_udf("task", "split", "doc_index", "row_id")).otherwise(F.col("row_id"))
        quarantine = quarantined.select(
            F.lit("ingest").alias("stage"), source_key.alias("source_key"), "task", "split",
            "reason", "detail", F.col("source_record").alias("raw"),
            F.lit(run_id).alias("run_id"), now.alias("quarantined_at"))
        versions = {spec.name: _merge(lakehouse, df, spec, progress)
                    for df, spec in ((seeds, SEEDS), (held, HELDOUT), (quarantine, QUARANTINE))}
    finally:
        final.unpersist()
    summary.inserted = {name: _inserted(lakehouse, name, version) for name, version in versions.items()}
    summary.seconds = time.time() - t0
    return summary


def _duplicate_key_udf(*columns: str):
    """udfs.normalize.duplicate_key as a Spark column (a Python UDF: only quarantine rows use it)."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType

    from udfs.normalize import duplicate_key

    return F.udf(lambda task, split, doc_index, record_id: duplicate_key(task, split, doc_index, record_id),
                 StringType())(*columns)


def _parallelism(spark) -> int:
    try:
        return int(spark.sparkContext.defaultParallelism)
    except Exception:  # noqa: BLE001 - Spark Connect has no SparkContext
        return int(spark.conf.get("spark.default.parallelism", "8"))


def _apply_stats(stats, summaries: dict[str, TaskSummary]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    errors: dict[str, set] = defaultdict(set)
    for row in stats:
        s = summaries[row["task"]]
        kind, n = row["kind"], int(row["n"])
        if kind == "unit":
            s.rows_in += int(row["rows_in"] or 0)
            s.splits[row["split"]] = s.splits.get(row["split"], 0) + int(row["rows_in"] or 0)
            if row["reason"] == "task_error" and row["error"]:
                errors[row["task"]].add(f"{row['split']}: {row['error']}")
            continue
        counts[kind] += n
        if kind == SEED:
            s.seeds += n
        elif kind == HELDOUT_ROLE:
            s.heldout += n
        elif kind == "quarantine":
            s.quarantined += n
            s.reasons[row["reason"]] = s.reasons.get(row["reason"], 0) + n
    for task, messages in errors.items():
        s = summaries[task]
        s.errors = sorted(messages)
        if not (s.seeds or s.heldout or s.quarantined):
            s.skipped = "task error: " + "; ".join(s.errors)
    return counts


def _merge(lakehouse, df, spec, progress) -> int | None:
    before = lakehouse.version(spec.name)
    t0 = time.time()
    progress(f"ingest: merging into {lakehouse.table_name(spec.name)}…")  # no count: Spark tasks are not the user's unit
    lakehouse.merge(df, spec)
    progress(f"ingest: merged into {lakehouse.table_name(spec.name)} ({time.time() - t0:.1f}s)")
    return before


def _inserted(lakehouse, name: str, version_before: int | None) -> int:
    """Rows the MERGE inserted, from the Delta log (no data scan)."""
    rows = lakehouse.spark.sql(f"DESCRIBE HISTORY {lakehouse.table_name(name)} LIMIT 1").collect()
    if not rows or (version_before is not None and int(rows[0]["version"]) <= version_before):
        return 0
    metrics = rows[0]["operationMetrics"] or {}
    return int(metrics.get("numTargetRowsInserted", 0) or 0)


# --------------------------------------------------------------------------------------------
# the stage
# --------------------------------------------------------------------------------------------

STAGE = Stage(
    name="ingest",
    reads=tables(TASK_CATALOG.name),
    writes=tables(SEEDS.name, HELDOUT.name, QUARANTINE.name),
    run=lambda ctx: run_ingest(ctx.lakehouse, ctx.config, progress=ctx.progress, index=ctx.task_index),
)
