"""The lakehouse: Delta tables under `catalog.schema`, created from `schemas.tables` specs.

Locally every table lives at `<home>/tables/<name>` and is registered in the session catalog
over that path; because the local catalog is in memory, `Lakehouse` re-registers every table
it finds under the home when it is opened, so SQL by table name works in any new process.
On Databricks (Unity Catalog) tables are managed by name and no paths are involved.

Writes are MERGEs on the spec's key columns, so every stage can be rerun without duplicates.
"""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.config import Config
from schemas.tables import ALL_TABLES, TableSpec


class Lakehouse:
    def __init__(self, spark: SparkSession, config: Config):
        self.spark = spark
        self.config = config
        self.managed = config.runtime == "databricks"
        self.home = Path(config.home).resolve()
        self.namespace = (
            f"{config.catalog}.{config.schema_name}" if config.catalog else config.schema_name
        )
        if not self.managed:
            (self.home / "tables").mkdir(parents=True, exist_ok=True)
        spark.sql(f"CREATE SCHEMA IF NOT EXISTS {self.namespace}")
        if not self.managed:
            self._register_existing()

    # ---- naming -------------------------------------------------------------------------
    def table_name(self, name: str) -> str:
        return f"{self.namespace}.{name}"

    def table_path(self, name: str) -> Path:
        return self.home / "tables" / name

    def _register_existing(self) -> None:
        for delta_log in sorted((self.home / "tables").glob("*/_delta_log")):
            name = delta_log.parent.name
            self.spark.sql(
                f"CREATE TABLE IF NOT EXISTS {self.table_name(name)} USING DELTA "
                f"LOCATION '{delta_log.parent.as_posix()}'"
            )

    # ---- lifecycle ----------------------------------------------------------------------
    def exists(self, name: str) -> bool:
        return self.spark.catalog.tableExists(self.table_name(name))

    def ensure(self, spec: TableSpec) -> None:
        """Create the table (empty, with the spec's schema) if it does not exist yet."""
        from delta.tables import DeltaTable

        if self.exists(spec.name):
            return
        builder = (
            DeltaTable.createIfNotExists(self.spark)
            .tableName(self.table_name(spec.name))
            .addColumns(spec.schema)
            .comment(spec.description)
        )
        if spec.partition_by:
            builder = builder.partitionedBy(*spec.partition_by)
        if not self.managed:
            builder = builder.location(self.table_path(spec.name).as_posix())
        builder.execute()

    def ensure_all(self) -> None:
        for spec in ALL_TABLES.values():
            self.ensure(spec)

    def read(self, name: str) -> DataFrame:
        if name in ALL_TABLES:
            self.ensure(ALL_TABLES[name])
        return self.spark.table(self.table_name(name))

    def version(self, name: str) -> int | None:
        if not self.exists(name):
            return None
        row = self.spark.sql(f"DESCRIBE HISTORY {self.table_name(name)} LIMIT 1").first()
        return int(row["version"]) if row else None

    def list_tables(self) -> list[str]:
        return sorted(
            row.tableName
            for row in self.spark.sql(f"SHOW TABLES IN {self.namespace}").collect()
            if not row.isTemporary
        )

    # ---- writes -------------------------------------------------------------------------
    @staticmethod
    def conform(df: DataFrame, spec: TableSpec) -> DataFrame:
        """Select the spec's columns in order, cast to the spec's types (missing → null)."""
        present = set(df.columns)
        return df.select(
            *[
                (F.col(f.name) if f.name in present else F.lit(None)).cast(f.dataType).alias(f.name)
                for f in spec.schema.fields
            ]
        )

    def merge(self, df: DataFrame, spec: TableSpec, update_when_changed: list[str] | None = None) -> None:
        """Insert rows whose key is new; with update_when_changed, also rewrite a matched row when
        one of those columns differs (null-safe).

        Unchanged rows are dropped before the MERGE, and when nothing is new or changed no MERGE
        runs, so an unchanged rerun commits no Delta version. Rows are deduplicated on the key
        first: MERGE refuses two source rows for one target row.
        """
        from delta.tables import DeltaTable

        self.ensure(spec)
        keys = list(spec.keys)
        source = self.conform(df, spec).dropDuplicates(keys)
        compared = list(dict.fromkeys([*keys, *(update_when_changed or [])]))
        changed_keys = source.select(*compared).subtract(self.read(spec.name).select(*compared)).select(*keys)
        # persisted: the emptiness check and the MERGE must not each recompute the comparison
        source = source.join(changed_keys, keys, "left_semi").persist()
        try:
            if source.isEmpty():
                return
            merge = (
                DeltaTable.forName(self.spark, self.table_name(spec.name))
                .alias("t")
                .merge(source.alias("s"), " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys))
            )
            if update_when_changed:
                changed = " OR ".join(f"NOT (t.`{c}` <=> s.`{c}`)" for c in update_when_changed)
                merge = merge.whenMatchedUpdateAll(condition=changed)
            merge.whenNotMatchedInsertAll().execute()
        finally:
            source.unpersist()

    def append(self, df: DataFrame, spec: TableSpec) -> None:
        """Blind append: only for tables whose writers guarantee new keys (the ledger)."""
        self.ensure(spec)
        self.conform(df, spec).write.format("delta").mode("append").saveAsTable(
            self.table_name(spec.name)
        )

    def overwrite(self, df: DataFrame, spec: TableSpec) -> None:
        self.ensure(spec)
        self.conform(df, spec).write.format("delta").mode("overwrite").option(
            "overwriteSchema", "false"
        ).saveAsTable(self.table_name(spec.name))
