"""`taskseed publish [--shard-rows N]`: export the curated datasets at pinned Delta versions, with a
manifest and a data card, and record what was published in `publications`.

For each dataset in `publish.datasets` (`curated`, `curated_commercial`):

1. pin its current Delta version N and read the table *as of N* (time travel), so the export is
   exactly version N even if curate commits meanwhile;
2. write `<exports>/<dataset>/vN/` atomically (jobs/export.py): JSONL and Parquet shards of
   `shard_rows` documents ordered by gen_id (`EXPORT_COLUMNS`: the rendered training text plus ids,
   task, license and lineage columns), the data card (jobs/datacard.py) and `manifest.json`: row
   counts, rows per task family / task / license / license class, the Delta versions of every
   input table (`LINEAGE_TABLES`), config fingerprint, models, prompt versions, code version, the
   endpoint (scheme://host/path only, or "simulator"), the pipeline run id. Never a key: nothing
   here reads the environment or the endpoint's credentials;
3. MERGE one `publications` row keyed by (dataset, N).

Publishing a version that already has a complete export with the same `shard_rows` rewrites
nothing and commits nothing; a new curated version gets a new folder next to the old ones (old
versions stay, so a training run can pin a version).

Reads (declared in `STAGE`): the datasets, `filter_decisions` (funnel, contamination, near-dups),
`llm_calls` (requests, tokens, latency, failures) and `quarantine`. The other lineage tables are
only looked at for their Delta version.

Shards are written from the driver (`toLocalIterator`, one Spark partition in memory at a time):
exact shard sizes and deterministic names and order, at the cost of the driver's write speed,
which is ample for Q&A datasets of millions of rows.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.config import Config, ConfigError, EndpointConfig
from jobs.datacard import HTML_NAME, MD_NAME, CardData, LLMStageStats, write_card
from jobs.export import MANIFEST, Column, ExportResult, export_folder, write_export
from jobs.lakehouse import Lakehouse
from jobs.stage import Stage, StageContext, dag_order, quiet
from schemas.tables import CURATED, CURATED_COMMERCIAL, PUBLICATION_CHANGE_COLUMNS, PUBLICATIONS

# The exported columns: the training text first, then what a data loader filters or groups on.
EXPORT_COLUMNS: tuple[Column, ...] = (
    Column("text"), Column("gen_id"), Column("item_kind"), Column("seed_id"), Column("task"),
    Column("task_family"), Column("answer_format"), Column("license"), Column("license_class"),
    Column("commercial_ok"), Column("dataset_path"), Column("agreement", "double"),
    Column("generation_model"), Column("generation_prompt_version"),
    Column("enrichment_model"), Column("enrichment_prompt_version"),
)
# Counted per value in the manifest (`counts`), from the rows as they are written.
COUNT_BY = ("task_family", "task", "license", "license_class", "answer_format")
CARD_READS = ("filter_decisions", "llm_calls", "quarantine")
STAGE_NAME = "publish"
# The simulator's default model id: rows carrying it were answered by the simulator, whatever the
# config of the publishing run says.
SIMULATOR_MODEL = EndpointConfig().model


@dataclass
class Publication:
    """One dataset's publish outcome: the export (folder, manifest, whether it was written now)."""

    dataset: str
    delta_version: int
    export: ExportResult

    @property
    def folder(self) -> Path:
        return self.export.folder

    @property
    def card(self) -> Path:
        return self.folder / HTML_NAME


@dataclass
class PublishResult:
    """What one publish run exported and recorded."""

    publications: list[Publication] = field(default_factory=list)
    committed: bool = False  # did `publications` get a new Delta version

    def metrics(self) -> dict[str, float]:
        """`publish.<dataset>.rows`, `.delta_version`, `.shards`, `.written` and rows per task family."""
        m: dict[str, float] = {"publish.committed": float(self.committed)}
        for p in self.publications:
            prefix = f"publish.{p.dataset}."
            m[prefix + "rows"] = float(p.export.rows)
            m[prefix + "delta_version"] = float(p.delta_version)
            m[prefix + "shards"] = float(sum(1 for f in p.export.manifest["files"] if f["format"] == "parquet"))
            m[prefix + "written"] = float(p.export.written)
            for family, n in p.export.manifest["counts"].get("task_family", {}).items():
                m[f"{prefix}rows.{family}"] = float(n)
        return m

    def summary_lines(self) -> list[str]:
        lines = []
        for p in self.publications:
            shards = sum(1 for f in p.export.manifest["files"] if f["format"] == "parquet")
            state = "exported" if p.export.written else "already exported, unchanged"
            lines.append(f"[publish] {p.dataset} v{p.delta_version}: {p.export.rows} rows in {shards} shard(s), "
                         f"{state}: {p.folder}")
        lines.append(f"[publish] publications: {'new version' if self.committed else 'unchanged'}")
        return lines

    def artifacts(self) -> dict[str, list[Path]]:
        """{artifact folder: files} to log with the run: each dataset's manifest and data cards."""
        return {p.dataset: [p.folder / MANIFEST, p.folder / HTML_NAME, p.folder / MD_NAME]
                for p in self.publications}


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------
def export_rows(df: DataFrame) -> DataFrame:
    """The curated rows as exported: `EXPORT_COLUMNS` (text = the rendered `document`), by gen_id."""
    select = [F.col("document").alias("text") if c.name == "text" else F.col(c.name) for c in EXPORT_COLUMNS]
    return df.select(*select).orderBy("gen_id")


def _iter_rows(df: DataFrame) -> Iterator[dict[str, Any]]:
    for row in df.toLocalIterator(prefetchPartitions=True):
        yield row.asDict()


def lineage_tables(config: Config) -> list[str]:
    """The tables the published rows derive from with this config, whose Delta versions the manifest
    records: every table a stage before publish reads or writes (in DAG order, so the held-out
    index tables, `heldout_embeddings` and `paraphrase_judgments` appear when their filters are
    enabled), except the published datasets themselves (their version is `delta_version`)."""
    from jobs.pipeline import PIPELINE  # the pipeline imports this module

    published = {CURATED.name, CURATED_COMMERCIAL.name}
    names: list[str] = []
    for stage in dag_order(PIPELINE, config):
        if stage.name == STAGE_NAME:
            continue
        names.extend(t for t in (*stage.reads(config), *stage.writes(config)) if t not in published and t not in names)
    return names


def input_versions(lakehouse: Lakehouse, config: Config) -> dict[str, int | None]:
    """{table: Delta version} of the `lineage_tables` that exist."""
    return {name: lakehouse.version(name) for name in lineage_tables(config) if lakehouse.exists(name)}


def _collect_counts(df: DataFrame, *columns: str) -> list[tuple]:
    return [tuple(r) for r in df.groupBy(*columns).count().orderBy(F.desc("count"), *columns).collect()]


def gather_card(lakehouse: Lakehouse, config: Config, dataset: str, df: DataFrame, rows: int,
                manifest: dict[str, Any]) -> CardData:
    """The data card's numbers for `df` (the dataset at its pinned version) and the current
    `filter_decisions`, `llm_calls` and `quarantine`."""
    from jobs.curate import FILTERS, GATE_CURATED

    gating = [f.name for f in FILTERS if dataset != "curated" or f.gate == GATE_CURATED]
    decisions = lakehouse.read("filter_decisions")
    card = CardData(
        dataset=dataset, table=lakehouse.table_name(dataset), delta_version=manifest["delta_version"], rows=rows,
        created_at=manifest["created_at"], code_version=manifest["code_version"],
        config_fingerprint=manifest["config_fingerprint"], endpoint=manifest["endpoint"],
        simulated=manifest["simulated"], models=manifest["models"], prompt_versions=manifest["prompt_versions"],
        input_versions=manifest["input_versions"], files=manifest["files"],
    )
    # funnel: items left after each gating filter in evaluation order
    total = decisions.select("gen_id").distinct().count()
    rank = F.create_map(*[x for i, name in enumerate(gating) for x in (F.lit(name), F.lit(i))])
    first_fail = dict(
        decisions.where(~F.col("passed") & F.col("filter").isin(gating))
        .groupBy("gen_id").agg(F.min(rank[F.col("filter")]).alias("step"))
        .groupBy("step").count().collect())
    unchecked = _collect_counts(decisions.where(F.col("reason").isin("not_checked", "disabled")), "reason", "filter")
    card.not_checked = {name: n for reason, name, n in unchecked if reason == "not_checked"}
    card.disabled = {name: n for reason, name, n in unchecked if reason == "disabled"}
    left = total
    card.funnel = [("candidates", total)]
    for i, name in enumerate(gating):
        left -= first_fail.get(i, 0)
        card.funnel.append((f"{name} (disabled)" if name in card.disabled else name, left))
    failed = decisions.where(~F.col("passed"))
    card.rejected_alone = {f.name: 0 for f in FILTERS}
    for name, n in _collect_counts(failed, "filter"):
        card.rejected_alone[name] = n
    for name, reason, n in _collect_counts(failed, "filter", "reason"):
        card.reasons.setdefault(name, {})[reason] = n
    card.verification_reasons = dict(_collect_counts(decisions.where(F.col("filter") == "verification"), "reason"))
    # paraphrase hits (reworded/translated held-out items, issue 15) count as contamination by held-out
    # benchmark too, under their reason ('paraphrase_of_heldout', 'judge_unanswered') as the rule
    contaminated = failed.where(F.col("filter").isin("contamination", "paraphrase")).select(
        F.coalesce(F.get_json_object("evidence", "$.heldout_task"), F.lit("(unknown)")).alias("heldout_task"),
        F.coalesce(F.get_json_object("evidence", "$.rule"), F.col("reason")).alias("rule"))
    card.contamination = _collect_counts(contaminated, "heldout_task", "rule")
    near = decisions.where((F.col("filter") == "near_dup") & F.col("evidence").isNotNull()).select(
        F.get_json_object("evidence", "$.component_id").alias("component"),
        F.get_json_object("evidence", "$.component_size").cast("int").alias("size")).distinct()
    card.near_dup_components = {size: n for size, n in _collect_counts(near.where("size IS NOT NULL"), "size")}
    card.near_dup_of_seed = decisions.where(F.col("reason") == "near_dup_of_seed").count()

    # the dataset itself
    card.rows_per_family = dict(_collect_counts(df.fillna({"task_family": "(none)"}), "task_family"))
    card.rows_per_format = dict(_collect_counts(df.fillna({"answer_format": "(none)"}), "answer_format"))
    card.license_mix = _collect_counts(
        df.fillna({"license": "(none)", "license_class": "(none)", "commercial_ok": "(none)"}),
        "license", "license_class", "commercial_ok")
    sample = df if rows <= config.publish.card_sample_rows else df.sample(
        fraction=min(1.0, 1.2 * config.publish.card_sample_rows / rows), seed=0).limit(config.publish.card_sample_rows)
    picked = sample.select(
        F.length(F.concat_ws("\n", "context", "question")).alias("q"), F.length("answer_text").alias("a"),
        F.length("document").alias("d"),
        F.when(F.col("verification") == "not_verifiable", F.lit(None)).otherwise(F.col("agreement")).alias("agreement"),
    ).collect()
    card.length_sample = len(picked)
    card.lengths = {"question": [r["q"] or 0 for r in picked], "answer": [r["a"] or 0 for r in picked],
                    "document": [r["d"] or 0 for r in picked]}
    card.agreement = [r["agreement"] for r in picked]

    # failures, quarantine, LLM accounting (the whole ledger)
    card.quarantine = _collect_counts(lakehouse.read("quarantine"), "stage", "reason")
    calls = lakehouse.read("llm_calls")
    card.llm_failures = _collect_counts(
        calls.where(F.col("status") == "failed").fillna({"error_class": "(none)"}), "stage", "error_class")
    stats = (calls.groupBy("stage", "model").agg(
        F.count(F.lit(1)).alias("requests"),
        F.sum(F.when(F.col("status") == "ok", 1).otherwise(0)).alias("ok"),
        F.sum(F.when(F.col("status") == "parse_error", 1).otherwise(0)).alias("parse_error"),
        F.sum(F.when(F.col("status") == "failed", 1).otherwise(0)).alias("failed"),
        F.sum(F.coalesce("prompt_tokens", F.lit(0))).alias("prompt_tokens"),
        F.sum(F.coalesce("completion_tokens", F.lit(0))).alias("completion_tokens"),
        F.percentile_approx("latency_ms", [0.5, 0.9, 0.99]).alias("latency"),
    ).orderBy("stage", "model").collect())
    card.llm = [LLMStageStats(r["stage"], r["model"] or "(none)", r["requests"], r["ok"], r["parse_error"],
                              r["failed"], r["prompt_tokens"], r["completion_tokens"],
                              *(list(r["latency"]) if r["latency"] else [None, None, None]))
                for r in stats]
    return card


def _distinct(df: DataFrame, *columns: str) -> list[str]:
    values = set()
    for column in columns:
        values.update(r[0] for r in df.select(column).distinct().collect() if r[0] is not None)
    return sorted(values)


def base_manifest(lakehouse: Lakehouse, config: Config, dataset: str, version: int, df: DataFrame,
                  run_id: str | None, versions: dict[str, int | None]) -> dict[str, Any]:
    """The caller's part of a manifest (jobs/export.py adds rows, files and counts). Allow-listed
    fields only: no endpoint credentials, no environment."""
    from jobs.tracking import code_version, safe_endpoint_url

    models = {"generation": _distinct(df, "generation_model"), "enrichment": _distinct(df, "enrichment_model")}
    endpoint = safe_endpoint_url(config.endpoint.base_url)
    return {
        "dataset": dataset,
        "table": lakehouse.table_name(dataset),
        "delta_version": version,
        "created_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "run_id": run_id,
        "config_fingerprint": config.fingerprint(),
        "code_version": code_version(),
        "endpoint": endpoint,
        "simulated": endpoint == "simulator" or any(m == SIMULATOR_MODEL for ms in models.values() for m in ms),
        "models": models,
        "prompt_versions": _distinct(df, "generation_prompt_version", "enrichment_prompt_version"),
        "input_versions": versions,
    }


# ---------------------------------------------------------------------------------------------
# The stage
# ---------------------------------------------------------------------------------------------
def exports_root(config: Config) -> Path:
    return Path(config.publish.exports_dir or Path(config.home) / "exports").resolve()


def run_publish(lakehouse: Lakehouse, config: Config, shard_rows: int | None = None,
                progress: Callable[[str], None] = quiet, run_id: str | None = None) -> PublishResult:
    """Export every dataset of `publish.datasets` at its current Delta version (shards, manifest,
    data card) and MERGE their `publications` rows. shard_rows: default `publish.shard_rows`.
    run_id: the pipeline run (MLflow) that publishes, recorded in the manifest; a new id if None.
    ConfigError when a dataset table does not exist yet (curate has not run)."""
    shard_rows = shard_rows or config.publish.shard_rows
    if shard_rows < 1:
        raise ConfigError(f"--shard-rows must be at least 1, got {shard_rows}")
    run_id = run_id or uuid.uuid4().hex
    missing = [d for d in config.publish.datasets if not lakehouse.exists(d)]
    if missing:
        raise ConfigError(f"publish: no table {', '.join(missing)} yet; run `taskseed curate` (or `taskseed run`) first")
    versions = input_versions(lakehouse, config)
    result = PublishResult()
    rows_out = []
    for dataset in config.publish.datasets:
        version = lakehouse.version(dataset)
        df = lakehouse.read(dataset, version=version)
        folder = export_folder(exports_root(config), dataset, version)
        manifest = base_manifest(lakehouse, config, dataset, version, df, run_id, versions)
        rows = df.count()
        progress(f"[publish] {dataset} v{version}: {rows} rows → {folder}")

        def card(tmp: Path, full: dict[str, Any], dataset=dataset, df=df, rows=rows) -> list[str]:
            return write_card(tmp, gather_card(lakehouse, config, dataset, df, rows, full))

        export = write_export(folder, _iter_rows(export_rows(df)), EXPORT_COLUMNS, shard_rows, manifest,
                              count_by=COUNT_BY, extra=card, progress=progress)
        result.publications.append(Publication(dataset, version, export))
        kept = export.manifest
        rows_out.append({
            "dataset": dataset, "delta_version": version, "table_name": lakehouse.table_name(dataset),
            "rows": kept["rows"], "shard_rows": kept["shard_rows"],
            "shards": sum(1 for f in kept["files"] if f["format"] == "parquet"),
            "export_path": folder.as_posix(),
            "manifest_sha256": hashlib.sha256((folder / MANIFEST).read_bytes()).hexdigest(),
            "config_fingerprint": kept["config_fingerprint"], "code_version": kept["code_version"],
            "run_id": kept.get("run_id"), "published_at": datetime.now(timezone.utc),
        })
    before = lakehouse.version(PUBLICATIONS.name)
    lakehouse.merge(lakehouse.spark.createDataFrame(
        [tuple(r.get(c) for c in PUBLICATIONS.columns) for r in rows_out], PUBLICATIONS.schema),
        PUBLICATIONS, update_when_changed=PUBLICATION_CHANGE_COLUMNS)
    result.committed = lakehouse.version(PUBLICATIONS.name) != before
    return result


STAGE = Stage(
    name=STAGE_NAME,
    reads=lambda config: (*config.publish.datasets, *CARD_READS),
    writes=lambda _config: (PUBLICATIONS.name,),
    run=lambda ctx: run_publish(ctx.lakehouse, ctx.config, progress=ctx.progress, run_id=ctx.run_id),
)


def latest_publications(lakehouse: Lakehouse) -> dict[str, dict[str, Any]]:
    """{dataset: its newest `publications` row as a dict} (empty when nothing was published)."""
    if not lakehouse.exists(PUBLICATIONS.name):
        return {}
    rows = lakehouse.spark.table(lakehouse.table_name(PUBLICATIONS.name)).orderBy(F.desc("delta_version")).collect()
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        out.setdefault(row["dataset"], row.asDict())
    return out

