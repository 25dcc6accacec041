"""Stage `catalog`: enumerate lm-eval's task registry offline into `task_catalog`.

Reads:  lm-eval's bundled task YAMLs (+ `tasks.include_path` folders of user YAMLs), with
        `include:` chains resolved by lm-eval's own TaskManager index; `schemas/license_policy.tsv`.
Writes: `license_policy` (dataset_path → license, class, commercial_ok, source_url)
        `task_catalog`   (one row per task; columns in schemas.tables.TASK_CATALOG)

Nothing is downloaded: the index is built from YAML alone, so `!function` references stay as
text (`!function winogrande/preprocess_winogrande.doc_to_text`). Groups and tags are kept so a
selection like `mmlu` or `ai2_arc` can be expanded to its leaf tasks (`resolve_selection`).

Idempotent: task_catalog is MERGEd on `task`, and a row is only rewritten when its content
changed, so a rerun with the same lm-eval version writes no new rows. In the pipeline the stage is
skipped when task_catalog is current for the installed lm-eval version (`catalog_is_current`).
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from jobs.config import Config, ConfigError
from jobs.stage import Stage, StageContext, quiet, tables
from schemas.answer_formats import BOOLEAN, CODE, FREEFORM, LABEL, MCQ, NUMERIC, SHORT_TEXT
from schemas.licenses import license_for, load_policy
from schemas.tables import LICENSE_POLICY, TASK_CATALOG

log = logging.getLogger(__name__)

# Tasks whose lm-eval formulation hides their real answer format. lm-eval scores webqs as a
# multiple-choice over the accepted answer aliases, but what a generator must produce is a
# short factual answer.
FORMAT_OVERRIDES: dict[str, str] = {"webqs": SHORT_TEXT, "triviaqa": SHORT_TEXT, "nq_open": SHORT_TEXT}

CODE_FAMILIES = {"humaneval", "humaneval_infilling", "mbpp", "code_x_glue", "cruxeval", "jsonschema_bench"}
_YES_NO_WORDS = {
    "yes", "no", "true", "false", "sí", "si", "non", "oui", "ja", "nein", "nei", "cert", "fals",
    "falso", "verdadero", "vero", "sim", "não", "bai", "ez", "예", "아니오", "はい", "いいえ",
}
_LETTER_CHOICE = re.compile(r"^\(?[A-Za-z0-9]\)?[.:]?$")
_FREEFORM_METRICS = {"bleu", "chrf", "ter", "rouge", "rouge1", "rouge2", "rougel", "bert_score", "bleurt",
                     "bleu_acc", "bleu_max", "bleu_diff", "meteor", "wer", "perplexity"}
_NUMERIC_REGEX_HINT = re.compile(r"\[[^\]]*0-9[^\]]*\]|\\d")


def lm_eval_version() -> str:
    return metadata.version("lm-eval")


def lm_eval_tasks_root() -> Path:
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).resolve().parent


# ---- pure classification -----------------------------------------------------------------

def template_text(value: Any, roots: tuple[Path, ...] = ()) -> str | None:
    """A doc_to_* value as readable text: templates verbatim, function refs as `!function rel.path`."""
    if value is None:
        return None
    if isinstance(value, str):
        for root in roots:
            prefix = root.as_posix().rstrip("/") + "/"
            if value.startswith(prefix):
                return "!function " + value[len(prefix):]
        if value.startswith("/") and "." in Path(value).name:
            return "!function " + value
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def relative_yaml_path(path: Path, roots: tuple[Path, ...]) -> str:
    """A task YAML's path relative to the task folder it came from (stable across machines)."""
    resolved = Path(path).resolve()
    for root in roots:
        try:
            return resolved.relative_to(root).as_posix()
        except ValueError:
            continue
    return resolved.as_posix()


def _metric_names(cfg: dict[str, Any]) -> set[str]:
    names = set()
    for metric in cfg.get("metric_list") or []:
        name = metric.get("metric") if isinstance(metric, dict) else metric
        if isinstance(name, str):
            names.add(name.rsplit(".", 1)[-1].lower())
    return names


def _regex_patterns(cfg: dict[str, Any]) -> list[str]:
    patterns = []
    for pipeline in cfg.get("filter_list") or []:
        for step in (pipeline.get("filter") or []) if isinstance(pipeline, dict) else []:
            if isinstance(step, dict) and step.get("regex_pattern"):
                patterns.append(str(step["regex_pattern"]))
    return patterns


def classify_answer_format(task: str, family: str, cfg: dict[str, Any]) -> str:
    """The shape of a correct answer, which decides prompts, parsing and verification downstream.

    mcq: pick one of several options (texts or letters); boolean: a yes/no-like pair;
    label: one of a fixed label set (NLI, sentiment); numeric: a number (math word problems);
    short_text: a short exact-match answer; freeform: open text scored by overlap metrics
    (translation, summarisation, LM corpora); code: a program.
    """
    if task in FORMAT_OVERRIDES:
        return FORMAT_OVERRIDES[task]
    output_type = cfg.get("output_type") or "generate_until"
    choices = cfg.get("doc_to_choice")
    metrics = _metric_names(cfg)
    if family in CODE_FAMILIES or any(m.startswith("pass@") or m == "code_eval" for m in metrics):
        return CODE
    if output_type == "loglikelihood_rolling":
        return FREEFORM
    if output_type == "multiple_choice":
        if isinstance(choices, list) and choices and all(isinstance(c, str) for c in choices):
            lowered = [c.strip().lower() for c in choices]
            if len(choices) == 2 and all(c in _YES_NO_WORDS for c in lowered):
                return BOOLEAN
            if all(_LETTER_CHOICE.match(c.strip()) for c in choices):
                return MCQ
            if len(choices) == 3 and set(lowered) == {"yes", "no", "maybe"}:
                return LABEL
            return LABEL
        return MCQ
    if output_type == "loglikelihood":
        return SHORT_TEXT
    if metrics & _FREEFORM_METRICS:
        return FREEFORM
    if "math_verify" in metrics or any(_NUMERIC_REGEX_HINT.search(p) for p in _regex_patterns(cfg)):
        return NUMERIC
    if isinstance(choices, list) and choices:
        return LABEL
    return SHORT_TEXT


def eligibility(cfg: dict[str, Any], answer_format: str) -> tuple[bool, str | None]:
    """A task is a seed source when it has a training split of question/answer records."""
    if not cfg.get("training_split"):
        return False, "no training split declared (held-out only)"
    if not cfg.get("dataset_path"):
        return False, "no dataset_path: data is produced by custom code, not loadable as a split"
    if (cfg.get("output_type") or "") == "loglikelihood_rolling":
        return False, "loglikelihood_rolling: a language-modelling corpus, no question/answer pairs"
    return True, None


# ---- the task index ----------------------------------------------------------------------

@dataclass
class TaskIndex:
    """lm-eval's index reduced to what the catalog needs: leaf tasks, groups and tags."""

    tasks: dict[str, Any]           # name -> lm-eval Entry (kind TASK or PY_TASK)
    group_members: dict[str, list[str]]
    tag_members: dict[str, list[str]]
    roots: tuple[Path, ...]
    # user task YAMLs lm-eval left out of its index: path -> why (see `unloadable_task_yamls`)
    unloadable: dict[str, str] = field(default_factory=dict)

    def family_of(self, entry) -> str:
        path = Path(entry.yaml_path) if entry.yaml_path else None
        if path is None:
            return "unknown"
        for root in self.roots:
            try:
                return path.resolve().relative_to(root).parts[0]
            except (ValueError, IndexError):
                continue
        return path.parent.name


def _members(spec: Any) -> list[str]:
    if isinstance(spec, str):
        return [spec]
    if isinstance(spec, dict):
        name = spec.get("task") or spec.get("group")
        return _members(name) if name else []
    if isinstance(spec, list):
        return [m for item in spec for m in _members(item)]
    return []


def build_task_index(include_paths: list[Path] | None = None, include_defaults: bool = True) -> TaskIndex:
    """Index lm-eval's bundled tasks plus user YAML folders, with `include:` chains resolved.

    include_defaults=False indexes only the user folders (fast; used by tests).
    """
    from lm_eval.tasks import TaskManager
    from lm_eval.tasks._index import Kind

    for path in include_paths or []:
        if not Path(path).is_dir():
            raise ConfigError(f"tasks.include_path: folder not found: {path}")
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    manager = TaskManager(
        include_path=[str(p) for p in include_paths] if include_paths else None,
        include_defaults=include_defaults,
    )
    tasks, groups, tags = {}, {}, {}
    for name, entry in manager.task_index.items():
        if entry.kind in (Kind.TASK, Kind.PY_TASK):
            tasks[name] = entry
        elif entry.kind == Kind.GROUP:
            groups[name] = _members((entry.cfg or {}).get("task"))
        elif entry.kind == Kind.TAG:
            tags[name] = sorted(entry.tags)
    roots = tuple(Path(p).resolve() for p in (include_paths or [])) + (lm_eval_tasks_root(),)
    indexed = {Path(entry.yaml_path).resolve() for entry in manager.task_index.values() if entry.yaml_path}
    return TaskIndex(tasks=tasks, group_members=groups, tag_members=tags, roots=roots,
                     unloadable=unloadable_task_yamls(include_paths or [], indexed))


def unloadable_task_yamls(include_paths: list[Path], indexed: set[Path] | None = None) -> dict[str, str]:
    """The YAML files under the user's `tasks.include_path` folders that lm-eval's index left out,
    each with the reason: lm-eval's own loader error (YAML syntax, an `include:` that does not
    resolve, an include cycle, not a mapping), or, for a file that loads and names a `task`, that
    lm-eval did not index it. lm-eval's TaskIndex skips such files with a debug-level log line only,
    so a user who then selects the task would see nothing but 'unknown task'. Files that load and
    declare no task/group/tag are include templates and are not reported. `indexed` None (no index
    at hand): only the files lm-eval's loader rejects.

    Returns {path: reason (one line, <= 300 chars)}, sorted by path."""
    from lm_eval.tasks._index import TaskIndex as LmEvalIndex
    from lm_eval.tasks._yaml_loader import load_yaml

    found: dict[str, str] = {}
    for root in include_paths:
        for path in LmEvalIndex._iter_yaml_files(Path(root)):
            if indexed is not None and Path(path).resolve() in indexed:
                continue
            try:
                cfg = load_yaml(path, resolve_func=False, recursive=True)
            except Exception as exc:  # noqa: BLE001 - any loader error is the reason we report
                detail = " ".join(str(exc).split())
                found[str(path)] = f"{type(exc).__name__}: {detail}"[:300]
                continue
            names = [cfg.get(key) for key in ("task", "group", "tag") if isinstance(cfg.get(key), str)]
            if names and indexed is not None:
                found[str(path)] = f"declares {names[0]!r} but lm-eval did not index it"
    return dict(sorted(found.items()))


def resolve_selection(index: TaskIndex, names: list[str]) -> tuple[list[str], list[str]]:
    """Expand task, group and tag names to leaf tasks. Returns (tasks, unknown names)."""
    found: list[str] = []
    unknown: list[str] = []
    seen: set[str] = set()

    def visit(name: str, depth: int = 0) -> bool:
        if depth > 20:
            return False
        if name in index.tasks:
            if name not in seen:
                seen.add(name)
                found.append(name)
            return True
        members = index.group_members.get(name) or index.tag_members.get(name)
        if members is None:
            return False
        for member in members:
            visit(member, depth + 1)
        return True

    for name in names:
        if not visit(name.strip()):
            unknown.append(name)
    return found, unknown


def _parent_groups(index: TaskIndex) -> dict[str, list[str]]:
    parents: dict[str, set[str]] = defaultdict(set)
    for group, members in index.group_members.items():
        for member in members:
            parents[member].add(group)
    return {name: sorted(groups) for name, groups in parents.items()}


def catalog_rows(index: TaskIndex, config: Config) -> list[dict[str, Any]]:
    """One task_catalog row per leaf task (pure: no Spark), with config overrides applied."""
    policy = load_policy()
    parents = _parent_groups(index)
    version = lm_eval_version()
    now = datetime.now(timezone.utc).replace(microsecond=0)
    rows = []
    for name in sorted(index.tasks):
        entry = index.tasks[name]
        cfg = dict(entry.cfg or {})
        override = config.tasks.overrides.get(name)
        if override is not None:
            cfg.update(override.model_dump(exclude_none=True))
        family = index.family_of(entry)
        answer_format = classify_answer_format(name, family, cfg)
        eligible, reason = eligibility(cfg, answer_format)
        lic = license_for(cfg.get("dataset_path"), policy)
        rows.append(
            {
                "task": name,
                "family": family,
                "groups": parents.get(name, []),
                "tags": sorted(entry.tags),
                "yaml_path": relative_yaml_path(entry.yaml_path, index.roots) if entry.yaml_path else None,
                "dataset_path": cfg.get("dataset_path"),
                "dataset_name": cfg.get("dataset_name"),
                "training_split": cfg.get("training_split"),
                "validation_split": cfg.get("validation_split"),
                "test_split": cfg.get("test_split"),
                "fewshot_split": cfg.get("fewshot_split"),
                "output_type": cfg.get("output_type") or "generate_until",
                "answer_format": answer_format,
                "doc_to_text": template_text(cfg.get("doc_to_text"), index.roots),
                "doc_to_choice": template_text(cfg.get("doc_to_choice"), index.roots),
                "doc_to_target": template_text(cfg.get("doc_to_target"), index.roots),
                "process_docs": template_text(cfg.get("process_docs"), index.roots),
                "doc_to_decontamination_query": template_text(
                    cfg.get("doc_to_decontamination_query"), index.roots
                ),
                "license": lic.license,
                "license_class": lic.license_class,
                "commercial_ok": lic.commercial_ok,
                "eligible": eligible,
                "ineligible_reason": reason,
                "config_json": json.dumps(
                    {k: template_text(v, index.roots) if isinstance(v, str) else v for k, v in cfg.items()},
                    sort_keys=True, ensure_ascii=False, default=str,
                ),
                "lm_eval_version": version,
                "cataloged_at": now,
            }
        )
    return rows


def family_summary(rows: list[dict[str, Any]]) -> list[tuple[str, int, int, str]]:
    """(family, tasks, eligible, answer formats of eligible tasks) sorted by eligible count."""
    total = Counter(r["family"] for r in rows)
    eligible = Counter(r["family"] for r in rows if r["eligible"])
    formats: dict[str, Counter] = defaultdict(Counter)
    for r in rows:
        if r["eligible"]:
            formats[r["family"]][r["answer_format"]] += 1
    summary = [
        (family, total[family], eligible[family],
         ",".join(f"{fmt}:{n}" for fmt, n in formats[family].most_common()))
        for family in total
    ]
    return sorted(summary, key=lambda s: (-s[2], s[0]))


# ---- the Spark job -----------------------------------------------------------------------

CHANGE_COLUMNS = [c for c in TASK_CATALOG.columns if c not in ("task", "cataloged_at")]


def write_license_policy(lakehouse) -> int:
    rows = [
        {
            "dataset_path": e.dataset_path, "license": e.license, "license_class": e.license_class,
            "commercial_ok": e.commercial_ok, "lm_eval_task_dirs": list(e.lm_eval_task_dirs),
            "source_url": e.source_url, "note": e.note,
        }
        for e in load_policy().values()
    ]
    df = lakehouse.spark.createDataFrame(rows, schema=LICENSE_POLICY.schema)
    lakehouse.merge(df, LICENSE_POLICY, update_when_changed=[c for c in LICENSE_POLICY.columns])
    return len(rows)


@dataclass
class CatalogResult:
    """The catalog rows written by one run (pure dicts, columns of TASK_CATALOG)."""

    rows: list[dict[str, Any]]
    unloadable: dict[str, str] = field(default_factory=dict)  # user task YAMLs lm-eval left out: path -> why

    def metrics(self) -> dict[str, float]:
        return {"tasks": float(len(self.rows)), "eligible": float(sum(1 for r in self.rows if r["eligible"]))}

    def summary_lines(self) -> list[str]:
        """Per family with at least one eligible task; the rest are counted in one line."""
        rows = self.rows
        summary = family_summary(rows)
        seeded = [s for s in summary if s[2]]
        width = max(len(s[0]) for s in seeded) if seeded else 6
        lines = [f"{'family':<{width}}  tasks  eligible  answer formats (eligible)"]
        lines += [f"{family:<{width}}  {total:>5}  {eligible:>8}  {formats}" for family, total, eligible, formats in seeded]
        held_only = [s for s in summary if not s[2]]
        lines.append(f"{len(held_only)} more families ({sum(s[1] for s in held_only)} tasks) have no eligible task: "
                     "see `taskseed sql \"select family, ineligible_reason, count(*) from task_catalog where not "
                     "eligible group by 1, 2\"`")
        eligible_rows = [r for r in rows if r["eligible"]]
        families = {r["family"] for r in eligible_rows}
        datasets = {r["dataset_path"] for r in eligible_rows}
        unknown = sum(1 for r in eligible_rows if r["license_class"] == "unknown")
        lines.append(f"total: {len(rows)} tasks, {len(eligible_rows)} eligible in {len(families)} families "
                     f"from {len(datasets)} datasets; {unknown} eligible tasks have an unknown license")
        lines += [f"skipped user task YAML {path}: {reason}" for path, reason in self.unloadable.items()]
        return lines


def run_catalog(
    lakehouse,
    config: Config,
    progress: Callable[[str], None] = quiet,
    index: TaskIndex | None = None,
) -> CatalogResult:
    """Build the index (unless given one), then MERGE license_policy and task_catalog."""
    if index is None:
        progress("catalog: indexing lm-eval task YAMLs (offline)…")
        index = build_task_index(list(config.tasks.include_path))
    progress(f"catalog: {len(index.tasks)} tasks, {len(index.group_members)} groups, "
             f"{len(index.tag_members)} tags; classifying…")
    rows = catalog_rows(index, config)
    progress(f"catalog: writing license_policy ({write_license_policy(lakehouse)} datasets)…")
    df = lakehouse.spark.createDataFrame(rows, schema=TASK_CATALOG.schema)
    progress(f"catalog: merging {len(rows)} rows into {lakehouse.table_name('task_catalog')}…")
    lakehouse.merge(df, TASK_CATALOG, update_when_changed=CHANGE_COLUMNS)
    return CatalogResult(rows, unloadable=dict(index.unloadable))


def catalog_is_current(lakehouse) -> bool:
    """task_catalog has rows, all written with the installed lm-eval version."""
    if not lakehouse.exists(TASK_CATALOG.name):
        return False
    row = lakehouse.read(TASK_CATALOG.name).selectExpr("min(lm_eval_version) v", "count(*) n").first()
    return bool(row["n"]) and row["v"] == lm_eval_version()


def _skip_if_current(ctx: StageContext) -> str | None:
    if ctx.refresh_catalog or not catalog_is_current(ctx.lakehouse):
        return None
    return "task_catalog is current for this lm-eval version (--refresh-catalog to rebuild)"


STAGE = Stage(
    name="catalog",
    reads=tables(),
    writes=tables(LICENSE_POLICY.name, TASK_CATALOG.name),
    run=lambda ctx: run_catalog(ctx.lakehouse, ctx.config, progress=ctx.progress, index=ctx.task_index),
    skip=_skip_if_current,
)
