"""issue 29: a relative `tasks.mirror` is read from the working directory; a run from another folder
must stop with a clear error instead of ingesting nothing and publishing an empty, finished-looking
card. Uses the demo mirror (real files) from the repository root and from elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.config import ConfigError, load_config
from jobs.ingest import PlannedTask, TaskSummary, plan_units, require_mirror_data

REPO = Path(__file__).resolve().parents[2]
ARC = PlannedTask("arc_easy", "seed", {"family": "arc"},
                  {"dataset_path": "allenai/ai2_arc", "dataset_name": "ARC-Easy", "yaml_path": None,
                   "overrides_json": "{}"}, [("train", "seed")], frozenset({"train"}))


def _units(mirror: str, tmp_path):
    config = load_config(None, [f"tasks.mirror={mirror}"], home=tmp_path / "home")
    return plan_units([ARC], config, {"arc_easy": TaskSummary("arc_easy", "seed")})


@pytest.mark.parametrize("cwd, mirror, fails", [
    (REPO, "demo/data/hf", False),               # the README's demo command, from the repo root
    (REPO / "demo", "demo/data/hf", True),       # the same config from another folder
    (REPO / "demo", str(REPO / "demo/data/hf"), False),  # an absolute mirror works from anywhere
    (REPO, "demo/data/none", True),              # a mirror folder that does not exist
])
def test_a_mirror_with_none_of_the_tasks_is_a_clear_error(cwd, mirror, fails, tmp_path, monkeypatch):
    monkeypatch.chdir(cwd)
    units = _units(mirror, tmp_path)
    assert bool(units) != fails
    if not fails:
        require_mirror_data([ARC], units, mirror)
        return
    with pytest.raises(ConfigError) as err:
        require_mirror_data([ARC], units, mirror)
    text = str(err.value)
    assert f"tasks.mirror {mirror} holds none of the selected tasks' data" in text and "arc_easy" in text
    if not Path(mirror).is_absolute():
        assert "read from the working directory" in text and str(cwd) in text
