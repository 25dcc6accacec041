"""Export folders (jobs/export.py, no Spark): exact shard sizes in JSONL and Parquet with the same
rows in the same order, a manifest whose counts and checksums describe the files, atomic
replacement, nothing left that looks complete after a crash, and no rewrite of an identical export."""

from __future__ import annotations

import hashlib
import json

import pyarrow.parquet as pq
import pytest

from jobs.export import MANIFEST, Column, existing_export, export_folder, read_manifest, write_export

COLUMNS = (Column("text"), Column("gen_id"), Column("task_family"), Column("license"), Column("agreement", "double"))


def _rows(n: int, offset: int = 0):
    for i in range(offset, offset + n):
        yield {"text": f"Question: q{i} — ünïcode\n\nAnswer: {i}\n", "gen_id": f"g{i:05d}",
               "task_family": ("arc", "gsm8k", "boolq")[i % 3], "license": None if i % 5 == 0 else "mit",
               "agreement": i / 10 if i % 4 else None, "not_exported": "x"}


@pytest.mark.parametrize("n, shard_rows, sizes", [(10, 4, [4, 4, 2]), (8, 4, [4, 4]), (3, 10, [3]), (0, 5, [])])
def test_shards_hold_exactly_shard_rows_in_order_in_both_formats(tmp_path, n, shard_rows, sizes):
    folder = export_folder(tmp_path, "curated", 7)
    result = write_export(folder, _rows(n), COLUMNS, shard_rows, {"dataset": "curated", "delta_version": 7},
                          count_by=("task_family", "license"))
    assert result.written and folder == tmp_path / "curated" / "v7"
    manifest = read_manifest(folder)
    assert manifest == result.manifest and manifest["rows"] == n and manifest["delta_version"] == 7
    jsonl = [f for f in manifest["files"] if f["format"] == "jsonl"]
    parquet = [f for f in manifest["files"] if f["format"] == "parquet"]
    assert [f["rows"] for f in jsonl] == [f["rows"] for f in parquet] == sizes
    from_jsonl = [json.loads(line) for f in jsonl for line in (folder / f["path"]).read_text("utf-8").splitlines()]
    from_parquet = [r for f in parquet for r in pq.read_table(folder / f["path"]).to_pylist()]
    expected = [{c.name: r[c.name] for c in COLUMNS} for r in _rows(n)]
    assert from_jsonl == from_parquet == expected
    for f in manifest["files"]:
        data = (folder / f["path"]).read_bytes()
        assert f["bytes"] == len(data) and f["sha256"] == hashlib.sha256(data).hexdigest()
    families = {}
    for r in expected:
        families[r["task_family"]] = families.get(r["task_family"], 0) + 1
    assert manifest["counts"]["task_family"] == dict(sorted(families.items()))
    assert sum(manifest["counts"]["license"].values()) == n
    assert manifest["counts"]["license"].get("(null)", 0) == sum(1 for r in expected if r["license"] is None)


def test_same_version_and_layout_is_kept_as_is_other_layout_replaces_it(tmp_path):
    folder = export_folder(tmp_path, "curated", 1)
    first = write_export(folder, _rows(9), COLUMNS, 4, {"dataset": "curated"})
    stamp = (folder / MANIFEST).stat().st_mtime_ns

    def boom():
        raise AssertionError("rows must not be read when the export is kept")
        yield

    again = write_export(folder, boom(), COLUMNS, 4, {"dataset": "curated"})
    assert not again.written and again.manifest == first.manifest
    assert (folder / MANIFEST).stat().st_mtime_ns == stamp

    other = write_export(folder, _rows(9), COLUMNS, 5, {"dataset": "curated"})
    assert other.written and read_manifest(folder)["shard_rows"] == 5
    assert sorted(p.name for p in (folder / "parquet").iterdir()) == ["part-00000.parquet", "part-00001.parquet"]
    assert [p.name for p in folder.parent.iterdir()] == ["v1"]  # the replaced folder is gone


def test_a_crash_while_writing_leaves_no_folder_that_looks_complete(tmp_path):
    folder = export_folder(tmp_path, "curated", 3)

    def crashing():
        yield from _rows(6)
        raise RuntimeError("executor lost")

    with pytest.raises(RuntimeError, match="executor lost"):
        write_export(folder, crashing(), COLUMNS, 4, {"dataset": "curated"})
    assert not folder.exists() and list(folder.parent.iterdir()) == []

    # a crash that killed the process leaves a hidden temp folder: the next export removes it
    (folder.parent / ".tmp-v3-deadbeef" / "jsonl").mkdir(parents=True)
    result = write_export(folder, _rows(6), COLUMNS, 4, {"dataset": "curated"})
    assert result.written and [p.name for p in folder.parent.iterdir()] == ["v3"]


def test_a_damaged_export_is_not_taken_as_complete(tmp_path):
    folder = export_folder(tmp_path, "curated", 2)
    write_export(folder, _rows(5), COLUMNS, 2, {"dataset": "curated"})
    assert existing_export(folder, 2) is not None
    (folder / "jsonl" / "part-00001.jsonl").write_text("truncated")
    assert existing_export(folder, 2) is None
    assert write_export(folder, _rows(5), COLUMNS, 2, {"dataset": "curated"}).written


def test_extra_files_are_sealed_with_the_export_and_listed(tmp_path):
    folder = export_folder(tmp_path, "curated_commercial", 4)

    def card(tmp, manifest):
        assert manifest["rows"] == 3 and not folder.exists()  # written before the folder is visible
        (tmp / "datacard.md").write_text(f"# {manifest['rows']} rows\n")
        return ["datacard.md"]

    result = write_export(folder, _rows(3), COLUMNS, 10, {"dataset": "curated_commercial"}, extra=card)
    assert result.manifest["documents"] == ["datacard.md"]
    assert (folder / "datacard.md").read_text() == "# 3 rows\n"


def test_shard_rows_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="shard_rows"):
        write_export(tmp_path / "x" / "v1", _rows(1), COLUMNS, 0, {})
