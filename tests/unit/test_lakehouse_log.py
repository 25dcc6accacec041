"""`jobs.lakehouse.latest_commit_version`: the newest Delta commit from the log folder's file
names, ignoring every other file Delta and Hadoop leave there."""

from __future__ import annotations

import pytest

from jobs.lakehouse import latest_commit_version


def _touch(folder, *names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_text("{}")


@pytest.mark.parametrize("names, expected", [
    (["00000000000000000000.json"], 0),
    (["00000000000000000000.json", "00000000000000000001.json", "00000000000000000012.json"], 12),
    # a checkpoint, its CRC, a compacted log range, the checkpoint pointer: not commits
    (["00000000000000000009.json", "00000000000000000010.checkpoint.parquet", "00000000000000000010.crc",
      "00000000000000000003.00000000000000000011.compacted.json", "_last_checkpoint"], 9),
    # Hadoop's temp file of a commit still being written, and a name of the wrong width
    (["00000000000000000004.json", ".00000000000000000005.json.1b2c.tmp", "5.json", "0000000000000000000x.json"], 4),
    # log cleanup removed the early commits; only a checkpoint and later ones remain
    (["00000000000000000020.checkpoint.parquet", "00000000000000000021.json"], 21),
    ([], None),
])
def test_the_newest_commit_file_names_the_version(tmp_path, names, expected):
    _touch(tmp_path / "_delta_log", *names)
    assert latest_commit_version(tmp_path / "_delta_log") == expected


def test_no_log_folder_or_a_file_in_its_place_is_no_version(tmp_path):
    assert latest_commit_version(tmp_path / "missing" / "_delta_log") is None
    (tmp_path / "_delta_log").write_text("not a folder")
    assert latest_commit_version(tmp_path / "_delta_log") is None
