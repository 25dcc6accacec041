"""Training-ready export folders: JSONL and Parquet shards plus a `manifest.json`, written atomically.

One folder per published Delta version of a dataset, `<exports>/<dataset>/v<delta_version>/`:

    manifest.json              what is in the folder (below); written last
    jsonl/part-00000.jsonl     one JSON document per line, `shard_rows` rows per shard
    parquet/part-00000.parquet the same rows, same order, same shard boundaries (zstd)
    datacard.html, datacard.md, plots/*.png   written by the caller's `extra` step (jobs/datacard.py)

The folder is assembled under a hidden temporary name next to it (`.tmp-v<N>-<uuid>`) and renamed
into place in one `os.rename`, so a folder named `v<N>` is always complete: a crash leaves only a
hidden temp folder, which the next export removes. A complete folder whose manifest has the same
`shard_rows` and layout `FORMAT` is kept as is (`existing_export`): publishing a version twice
writes nothing. A folder with other shard settings is replaced by a fresh one (old one renamed
aside first, deleted after the new one is in place).

Rows arrive as an iterable of dicts in their final order (the caller sorts them; jobs/publish.py
orders by gen_id, so the same Delta version always gives byte-identical shards). Shards are
re-batched to exactly `shard_rows` rows (the last one may be shorter), so memory holds one shard.
The writer counts rows per value of `count_by` columns while it writes, so the manifest's counts
are the counts of the files, not of a separate query.

No Spark here: tests/unit/test_export.py exercises it with plain rows.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

FORMAT = "taskseed-export/1"
MANIFEST = "manifest.json"
TMP_PREFIX = ".tmp-"
OLD_PREFIX = ".old-"


@dataclass(frozen=True)
class Column:
    """One exported column: its name and pyarrow type name ("string", "int32", "double", "bool")."""

    name: str
    type: str = "string"


@dataclass
class ExportResult:
    """Where an export is and what is in it; `written` is False when an identical one was kept."""

    folder: Path
    manifest: dict[str, Any]
    written: bool

    @property
    def rows(self) -> int:
        return int(self.manifest["rows"])


@dataclass
class _ShardWriter:
    folder: Path
    columns: Sequence[Column]
    count_by: Sequence[str]
    files: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, Counter] = field(default_factory=dict)
    rows: int = 0

    def write(self, index: int, rows: list[Mapping[str, Any]]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        names = [c.name for c in self.columns]
        stem = f"part-{index:05d}"
        jsonl = self.folder / "jsonl" / f"{stem}.jsonl"
        with jsonl.open("w", encoding="utf-8", newline="\n") as out:
            for row in rows:
                out.write(json.dumps({n: row.get(n) for n in names}, ensure_ascii=False) + "\n")
        schema = pa.schema([pa.field(c.name, getattr(pa, _ARROW_TYPES[c.type])()) for c in self.columns])
        table = pa.Table.from_pylist([{n: row.get(n) for n in names} for row in rows], schema=schema)
        parquet = self.folder / "parquet" / f"{stem}.parquet"
        pq.write_table(table, parquet, compression="zstd")
        for path, kind in ((jsonl, "jsonl"), (parquet, "parquet")):
            self.files.append({"path": path.relative_to(self.folder).as_posix(), "format": kind,
                               "rows": len(rows), "bytes": path.stat().st_size, "sha256": _sha256(path)})
        for column in self.count_by:
            counter = self.counts.setdefault(column, Counter())
            counter.update("(null)" if row.get(column) is None else str(row.get(column)) for row in rows)
        self.rows += len(rows)


_ARROW_TYPES = {"string": "string", "int32": "int32", "int64": "int64", "double": "float64", "bool": "bool_"}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _chunks(rows: Iterable[Mapping[str, Any]], size: int) -> Iterator[list[Mapping[str, Any]]]:
    chunk: list[Mapping[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def export_folder(exports_root: Path, dataset: str, delta_version: int) -> Path:
    """`<exports_root>/<dataset>/v<delta_version>`."""
    return Path(exports_root) / dataset / f"v{delta_version}"


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The folder's manifest, or None when the folder or its manifest is missing or unreadable."""
    try:
        return json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def existing_export(folder: Path, shard_rows: int) -> dict[str, Any] | None:
    """The manifest of a complete export at `folder` made with the same layout and `shard_rows`
    whose files are all present with their recorded sizes; None otherwise."""
    manifest = read_manifest(folder)
    if not manifest or manifest.get("format") != FORMAT or manifest.get("shard_rows") != shard_rows:
        return None
    for entry in manifest.get("files", []):
        path = Path(folder) / entry["path"]
        if not path.is_file() or path.stat().st_size != entry["bytes"]:
            return None
    return manifest


def remove_leftovers(dataset_root: Path) -> list[Path]:
    """Delete temp and set-aside folders a crashed export left under `dataset_root`; returns them."""
    removed = []
    if Path(dataset_root).is_dir():
        for path in Path(dataset_root).iterdir():
            if path.is_dir() and path.name.startswith((TMP_PREFIX, OLD_PREFIX)):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed


def write_export(
    folder: Path,
    rows: Iterable[Mapping[str, Any]],
    columns: Sequence[Column],
    shard_rows: int,
    manifest: Mapping[str, Any],
    *,
    count_by: Sequence[str] = (),
    extra: Callable[[Path, dict[str, Any]], Sequence[str]] | None = None,
    progress: Callable[[str], None] | None = None,
) -> ExportResult:
    """Write `rows` (dicts in their final order) as shards of `shard_rows` into `folder`, atomically.

    manifest: the caller's fields (dataset, Delta versions, config fingerprint, models, ...); the
    writer adds `format`, `shard_rows`, `rows`, `columns`, `files` (path, format, rows, bytes,
    sha256 of each shard) and `counts` ({column: {value: rows}} for each `count_by` column).
    extra(tmp_folder, manifest): writes more files into the folder before it is sealed (the data
    card) and returns their relative paths, listed in the manifest under `documents`.
    Returns the ExportResult; when a complete export with the same `shard_rows` already exists,
    nothing is written and its manifest is returned (`written=False`).
    Raises ValueError for shard_rows < 1; an exception while writing leaves no `folder` behind.
    """
    if shard_rows < 1:
        raise ValueError(f"shard_rows must be at least 1, got {shard_rows}")
    folder = Path(folder)
    kept = existing_export(folder, shard_rows)
    if kept is not None:
        return ExportResult(folder, kept, written=False)
    folder.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(folder.parent)
    tmp = folder.parent / f"{TMP_PREFIX}{folder.name}-{uuid.uuid4().hex[:8]}"
    (tmp / "jsonl").mkdir(parents=True)
    (tmp / "parquet").mkdir()
    try:
        writer = _ShardWriter(tmp, columns, count_by)
        for index, chunk in enumerate(_chunks(rows, shard_rows)):
            writer.write(index, chunk)
            if progress is not None:
                progress(f"[publish] {folder.parent.name}: shard {index} written ({writer.rows} rows so far)")
        full = {**manifest, "format": FORMAT, "shard_rows": shard_rows, "rows": writer.rows,
                "columns": [{"name": c.name, "type": c.type} for c in columns],
                "counts": {c: dict(sorted(writer.counts.get(c, Counter()).items())) for c in count_by},
                "files": writer.files}
        documents = list(extra(tmp, full)) if extra is not None else []
        full["documents"] = documents
        (tmp / MANIFEST).write_text(json.dumps(full, indent=2, ensure_ascii=False, default=str) + "\n",
                                    encoding="utf-8")
        _seal(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportResult(folder, full, written=True)


def _seal(tmp: Path, folder: Path) -> None:
    """Move the finished temp folder to its final name (replacing an outdated export)."""
    old = None
    if folder.exists():
        old = folder.parent / f"{OLD_PREFIX}{folder.name}-{uuid.uuid4().hex[:8]}"
        os.rename(folder, old)
    os.rename(tmp, folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
