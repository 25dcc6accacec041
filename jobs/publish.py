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
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.config import Config, ConfigError, EndpointConfig, driver_dir
from jobs.datacard import HTML_NAME, MD_NAME, gather_card, write_card
from jobs.export import MANIFEST, Column, ExportResult, export_folder, write_export
from jobs.lakehouse import Lakehouse
from jobs.stage import Stage, quiet
from schemas.tables import PUBLICATION_CHANGE_COLUMNS, PUBLICATIONS

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


def input_versions(lakehouse: Lakehouse, lineage: Sequence[str]) -> dict[str, int | None]:
    """{table: Delta version} of the `lineage` tables that exist."""
    return {name: lakehouse.version(name) for name in lineage if lakehouse.exists(name)}


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
    return Path(config.publish.exports_dir or driver_dir(config) / "exports").resolve()


def run_publish(lakehouse: Lakehouse, config: Config, lineage: Sequence[str], shard_rows: int | None = None,
                progress: Callable[[str], None] = quiet, run_id: str | None = None) -> PublishResult:
    """Export every dataset of `publish.datasets` at its current Delta version (shards, manifest,
    data card) and MERGE their `publications` rows. lineage: the tables the published rows derive
    from (`jobs.pipeline.lineage_tables`), whose versions the manifest records.
    shard_rows: default `publish.shard_rows`.
    run_id: the pipeline run (MLflow) that publishes, recorded in the manifest; a new id if None.
    ConfigError when a dataset table does not exist yet (curate has not run)."""
    shard_rows = shard_rows or config.publish.shard_rows
    if shard_rows < 1:
        raise ConfigError(f"--shard-rows must be at least 1, got {shard_rows}")
    run_id = run_id or uuid.uuid4().hex
    missing = [d for d in config.publish.datasets if not lakehouse.exists(d)]
    if missing:
        raise ConfigError(f"publish: no table {', '.join(missing)} yet; run `taskseed curate` (or `taskseed run`) first")
    versions = input_versions(lakehouse, lineage)
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
    run=lambda ctx: run_publish(ctx.lakehouse, ctx.config, ctx.lineage, progress=ctx.progress, run_id=ctx.run_id),
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

