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

from jobs.config import Config, ConfigError, EndpointConfig, driver_dir
from jobs.datacard import HTML_NAME, MD_NAME, RunNumbers, gather_card, gather_run_numbers, write_card
from jobs.export import MANIFEST, Column, ExportResult, export_folder, write_export
from jobs.lakehouse import Lakehouse
from jobs.progress import plural
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
# what the data card reads besides the dataset: the ledger, quarantine and filter decisions; generated
# (cost attribution, jobs/costs.py, and sample rows); seeds, enriched and task_catalog (the per-task funnel)
CARD_READS = ("filter_decisions", "llm_calls", "quarantine", "generated", "seeds", "enriched", "task_catalog")
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
    cost: Any = None  # jobs.costs.CostReport of the ledger at publish time (issue 26)

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
        if self.cost is not None:
            m.update(self.cost.metrics())
        return m

    def summary_lines(self) -> list[str]:
        lines = []
        for p in self.publications:
            shards = sum(1 for f in p.export.manifest["files"] if f["format"] == "parquet")
            state = "exported" if p.export.written else "already exported, unchanged"
            lines.append(f"[publish] {p.dataset} v{p.delta_version}: {plural(p.export.rows, 'row')} in "
                         f"{plural(shards, 'shard')}, "
                         f"{state}: {p.folder}")
        lines.append(f"[publish] publications: {'new version' if self.committed else 'unchanged'}")
        if self.cost is not None and self.cost.calls:
            lines.extend(self.cost.summary_lines("[publish] cost:"))
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


def stage_endpoints_line(config: Config) -> tuple[str, bool]:
    """(the endpoint the manifest and card name, whether generation or enrichment ran on the
    simulator): one URL (no credentials; replicas comma-separated; "simulator") when generate and
    enrich share an endpoint, else "generate: …; enrich: …" (per-stage endpoints, issue 24)."""
    from jobs.tracking import safe_endpoint_url

    def url(stage: str) -> str:
        ep = config.stage_endpoint(stage)
        return ",".join(safe_endpoint_url(u) for u in ([r.base_url for r in ep.replicas] or [ep.base_url]))

    gen, enr = url("generate"), url("enrich")
    simulated = "simulator" in (gen, enr)
    return (gen if gen == enr else f"generate: {gen}; enrich: {enr}"), simulated


def base_manifest(lakehouse: Lakehouse, config: Config, dataset: str, version: int, df: DataFrame,
                  run_id: str | None, versions: dict[str, int | None]) -> dict[str, Any]:
    """The caller's part of a manifest (jobs/export.py adds rows, files and counts). Allow-listed
    fields only: no endpoint credentials, no environment."""
    from jobs.tracking import code_version

    models = {"generation": _distinct(df, "generation_model"), "enrichment": _distinct(df, "enrichment_model")}
    if config.curate.paraphrase.enabled:
        models["paraphrase judge"] = [config.stage_endpoint("judge").model]
    endpoint, simulated = stage_endpoints_line(config)
    return {
        "dataset": dataset,
        "table": lakehouse.table_name(dataset),
        "delta_version": version,
        "created_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "run_id": run_id,
        "config_fingerprint": config.fingerprint(),
        "code_version": code_version(),
        "endpoint": endpoint,
        "simulated": simulated or any(m == SIMULATOR_MODEL for ms in models.values() for m in ms),
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
    shared: list[RunNumbers] = []  # what every card of this run shows alike: gathered once, at the first card

    def run_numbers() -> RunNumbers:
        if not shared:
            shared.append(gather_run_numbers(lakehouse, config))
        return shared[0]

    for dataset in config.publish.datasets:
        version = lakehouse.version(dataset)
        df = lakehouse.read(dataset, version=version)
        folder = export_folder(exports_root(config), dataset, version)
        manifest = base_manifest(lakehouse, config, dataset, version, df, run_id, versions)
        rows = df.count()
        progress(f"[publish] {dataset} v{version}: {rows} rows → {folder}")

        def card(tmp: Path, full: dict[str, Any], dataset=dataset, df=df, rows=rows) -> list[str]:
            return write_card(tmp, gather_card(lakehouse, config, dataset, df, rows, full, run_numbers()))

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
    if shared:
        result.cost = shared[0].cost_report
    else:  # every export was complete already: no card was gathered
        from jobs.costs import cost_report

        result.cost = cost_report(lakehouse, config)
    return result


STAGE = Stage(
    name=STAGE_NAME,
    reads=lambda config: (*config.publish.datasets, *CARD_READS,
                          *(("calibration",) if config.enrich.calibration_per_family else ())),
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



# ---------------------------------------------------------------------------------------------
# Token-budget subsets (issue 26; rules in udfs/budget.py)
# ---------------------------------------------------------------------------------------------
def budget_folder(exports_root_: Path, dataset: str, version: int, budget: int, tag: str) -> Path:
    """`<exports>/<dataset>/v<N>-budget<B>-<tag>`; tag: 8 hex of the tokenizer and weights, so
    another tokenizer or other weights never reuse a folder."""
    return Path(exports_root_) / dataset / f"v{version}-budget{budget}-{tag}"


def run_budget_publish(lakehouse: Lakehouse, config: Config, budget: int, weights: dict[str, float] | None = None,
                       tokenizer_path: str | Path | None = None, shard_rows: int | None = None,
                       progress: Callable[[str], None] = quiet) -> list[ExportResult]:
    """Export a token-budget subset of each dataset of `publish.datasets` at its current Delta
    version (udfs/budget.py): count every document's tokens with the tokenizer, give each family its
    budget, keep each family's prefix in sha256(gen_id) order, and write the kept rows (in gen_id
    order, like a full export) with a manifest whose `budget` section names the tokenizer (path,
    sha256), budget, weights and per family the budget, tokens and documents kept and available.
    Nothing is recorded in `publications` (a subset is a view of a published version, named by
    its folder). ConfigError / BudgetError for a missing dataset or bad options."""
    from udfs.budget import Doc, cut, file_sha256, load_tokenizer, count_tokens

    shard_rows = shard_rows or config.publish.shard_rows
    tokenizer, tok_path = load_tokenizer(tokenizer_path)
    tok_sha = file_sha256(tok_path)
    tag = hashlib.sha256(json.dumps([tok_sha, sorted((weights or {}).items())]).encode()).hexdigest()[:8]
    missing = [d for d in config.publish.datasets if not lakehouse.exists(d)]
    if missing:
        raise ConfigError(f"publish: no table {', '.join(missing)} yet; run `taskseed curate` (or `taskseed run`) first")
    out = []
    for dataset in config.publish.datasets:
        version = lakehouse.version(dataset)
        df = lakehouse.read(dataset, version=version)
        rows = export_rows(df)
        docs, batch = [], []

        def flush() -> None:
            counts = count_tokens(tokenizer, [r["text"] for r in batch])
            docs.extend(Doc(r["gen_id"], r["task_family"] or r["task"], n) for r, n in zip(batch, counts))
            batch.clear()

        for row in rows.select("gen_id", "task_family", "task", "text").toLocalIterator(prefetchPartitions=True):
            batch.append(row.asDict())
            if len(batch) >= 1000:
                flush()
        flush()
        cuts = cut(docs, budget, weights)
        keep = {g for c in cuts.values() for g in c.gen_ids}
        folder = budget_folder(exports_root(config), dataset, version, budget, tag)
        manifest = base_manifest(lakehouse, config, dataset, version, df, None, {})
        manifest["budget"] = {
            "tokens": budget, "weights": weights, "mode": "weights" if weights else "proportional",
            "tokenizer": {"path": tok_path.as_posix(), "sha256": tok_sha},
            "order": "sha256(gen_id), longest prefix within each family's budget",
            "full_export": export_folder(exports_root(config), dataset, version).as_posix(),
            "families": {f: {"budget": c.budget, "tokens": c.tokens, "documents": len(c.gen_ids),
                             "available_tokens": c.available_tokens, "available_documents": c.available_docs,
                             "next_document_tokens": c.next_tokens} for f, c in cuts.items()},
            "total_tokens": sum(c.tokens for c in cuts.values()),
        }
        progress(f"[publish] {dataset} v{version}: budget {budget} tokens → {len(keep)} of {len(docs)} documents, "
                 f"{manifest['budget']['total_tokens']} tokens → {folder}")
        selected = (r for r in _iter_rows(rows) if r["gen_id"] in keep)
        out.append(write_export(folder, selected, EXPORT_COLUMNS, shard_rows, manifest, count_by=COUNT_BY,
                                progress=progress))
    return out
