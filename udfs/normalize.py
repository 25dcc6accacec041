"""Seed normalization: one lm-eval task's records → the normalized seed/heldout record.

Runs inside Spark executors (and in plain unit tests): no Spark here. lm-eval's own task config
is the source of truth, so a record is normalized the way lm-eval evaluates it:

1. The task's YAML is loaded with lm-eval's loader (`!function` references resolved), per-task
   overrides from config are applied (e.g. winogrande → the `winogrande_l` files), and an
   lm-eval `ConfigurableTask` is built with `custom_dataset=` a callable that loads the splits
   from the local mirror (`<mirror>/<dataset_path>/<dataset_name|default>/<split>.jsonl|parquet`)
   or from the Hugging Face hub. That object is built **once per task per Python worker**
   (`get_renderer` caches it) and is then only used as a renderer.
2. For a shard of a split: the task's `process_docs` runs over the shard (as lm-eval does over a
   whole split), then every doc goes through `doc_to_text`, `doc_to_choice`, `doc_to_target`
   (and `doc_to_decontamination_query` for held-out rows) of that task object.
3. `normalize_doc` turns what lm-eval rendered into the semantic record: choices as option texts
   (letter labels such as A–D are resolved to the options they stand for), the gold option's
   text as `answer_text`, WinoGrande's "multiple input" form back into one sentence with a blank
   and two fillers, GSM8K-style `#### <number>` answers split into rationale + final number.

Anything that cannot be rendered becomes a `Quarantined(reason, detail)` with a short machine
reason (see `REASONS`); the rest of the shard goes on.

Options and gold answers (the rules, decided once for seeds and held-out rows):
- Option texts are read from the record, or from the prompt's "A. text" lines, each within its
  own line (the last run of lines labelled A, B, C... in order), so an empty option stays empty
  and never takes the next prompt line ("Answer:") or shifts the options after it.
- Seeds get the option check generated items get (`udfs.parsing.option_problem`, one function
  for both): an empty option is `empty_choice`, two options with the same text are
  `duplicate_choices` (case and sign count: "Rr"/"rr", "-1"/"1" are different options).
- lm-eval targets may list several gold options (its `multiple_target`: any listed option is
  correct). One distinct gold index is an ordinary item. For choice formats (mcq, boolean,
  label) the seeds table has one `answer_index`, so a record naming several gold options is
  quarantined as `multiple_gold` rather than keeping one of them silently. For open formats
  (short_text, freeform, numeric) `choices` holds every accepted answer (the first is
  `answer_text`), as for webqs/nq_open. Without a catalog format, a list naming every option is
  read as accepted answers (webqs), a list naming some of them as a choice item (→
  `multiple_gold` when it names more than one).
- Held-out rows only serve decontamination, which must see every benchmark question: they keep
  flawed options, and a choice record with several gold options keeps them all (`answer_index`
  null, `answer_text` = the gold option texts, one per line). A record whose only gold answer is
  empty is `empty_answer` in either role.

Row identity (documented here because every writer relies on it):
- `seed_id` / `heldout_id` = stable_hash(role, task, split, source_record[, sub_index]): the raw
  record's canonical JSON (sorted keys, null-valued keys dropped: `datasets` adds a null for
  every column a row lacks), so the same record ingested twice (rerun,
  re-ordered file, new shard size) is one row. Two byte-identical records inside one split are
  one row too; the second is quarantined as `duplicate_record` by the job, not dropped silently.
  `sub_index` only appears when a `process_docs` expands one record into several docs.
- Quarantine `source_key` = stable_hash("ingest", task, split, doc_index, raw record): stable
  across reruns of an unchanged source; for a repeat of an identical record,
  `duplicate_key(task, split, doc_index, record id)`.
"""

from __future__ import annotations

import ast
import copy
import functools
import json
import logging
import math
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.answer_formats import ALL_FORMATS, BOOLEAN, CHOICE_FORMATS, FREEFORM, MCQ, NUMERIC, SHORT_TEXT
from udfs.hashing import canonical_json, digest, stable_hash
from udfs.parsing import option_problem

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# vocabulary
# --------------------------------------------------------------------------------------------

REASONS = {
    "missing_field": "a field the templates read is absent or null",
    "non_string_text": "a text field, the prompt or a choice is not a string",
    "template_error": "doc_to_text/doc_to_choice/doc_to_target raised",
    "empty_choices": "doc_to_choice returned no options",
    "answer_index_out_of_range": "the gold index is outside the choices (e.g. hidden test labels)",
    "answer_not_in_choices": "the gold target text is not one of the choices",
    "empty_question": "the rendered question is empty",
    "empty_answer": "the gold answer is empty",
    "unresolved_letter_choices": "choices are letters and their option texts cannot be found",
    "process_docs_error": "the task's process_docs failed on this record",
    "filtered_by_process_docs": "the task's process_docs dropped this record",
    "duplicate_record": "an identical record of the same split was ingested already",
    "empty_choice": "seed: an option is empty (the check generated items get, udfs.parsing.option_problem)",
    "duplicate_choices": "seed: two options are the same text (udfs.parsing.option_key)",
    "multiple_gold": "seed: the target names several gold options; one answer_index cannot hold them",
    "malformed_record": "a line of a JSONL split is not a JSON object (the rest of the split is read)",
    "not_utf8": "a line of a JSONL split is not valid UTF-8 (the rest of the split is read)",
    "oversized_record": f"the rendered question + context + options exceed MAX_RECORD_CHARS characters",
}
# A rendered record longer than this (~64k tokens) cannot be a Q&A seed: it would not fit a
# generation prompt, and one such row would cost more than thousands of ordinary ones.
MAX_RECORD_CHARS = 262_144

# Field names that hold the question / the passage, in order of preference. A field is only used
# when the prompt lm-eval renders actually contains it (so an unrelated `question` is ignored).
QUESTION_FIELDS = (
    "question", "query", "question_stem", "goal", "problem", "prompt", "sentence", "input",
    "instruction", "ctx", "premise", "text", "Question", "Problem",
)
CONTEXT_FIELDS = (
    "passage", "context", "support", "paragraph", "article", "story", "background", "document",
    "ctx_a", "Context", "Passage",
)

_ROW = "__taskseed_row__"  # hidden column: raw row number, carried through process_docs
_LETTER = re.compile(r"\(?([A-Za-z])\)?[.:]?")  # used with fullmatch: one label, nothing else
# GSM8K's final-answer line: "#### 72", read within its line (the last such line wins).
_GSM_FINAL = re.compile(r"####[ \t]*([^\n]*?)[ \t]*$", re.MULTILINE)
_CALC_ANNOTATION = re.compile(r"<<[^<>]*>>")


class RenderError(Exception):
    """A record that cannot be normalized; `reason` is one of REASONS."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class Quarantined:
    reason: str
    detail: str


@dataclass
class Normalized:
    """The semantic record (columns of SEEDS/HELDOUT that depend on the doc).

    question      the question itself: the record's question-like field when the prompt shows it,
                  WinoGrande's sentence with its blank, else the rendered prompt
    context       the passage/support the prompt shows (BoolQ passage, SciQ support), else None
    choices       choice formats: the option texts (never bare letters), answer_index into them;
                  open formats: all accepted answers when lm-eval has several (webqs, nq_open),
                  answer_index None; else None
    answer_text   the gold option's text / the (first) accepted answer / the final number
                  (held-out choice records with several gold options: each gold text, one a line)
    rationale     the source's worked solution when it has one (GSM8K, `<<calc>>` notes removed)
    prompt_text   lm-eval's rendered doc_to_text
    decontamination_text  held-out only: lm-eval's doc_to_decontamination_query, else the prompt
    """

    question: str
    context: str | None
    choices: list[str] | None
    answer_index: int | None
    answer_text: str
    rationale: str | None
    prompt_text: str
    answer_format: str
    decontamination_text: str | None = None


def quiet_libraries() -> None:
    """lm-eval warns per task build (custom_dataset, default metrics); datasets draws bars."""
    for name in ("lm_eval", "lm-eval", "lm_eval.api.task", "lm_eval.tasks", "datasets", "fsspec"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        import datasets

        datasets.utils.logging.set_verbosity_error()
        datasets.disable_progress_bars()
    except Exception:  # pragma: no cover - datasets is a hard dependency
        pass


# --------------------------------------------------------------------------------------------
# the mirror
# --------------------------------------------------------------------------------------------


def mirror_dir(mirror: str | Path, dataset_path: str, dataset_name: str | None) -> Path:
    return Path(mirror) / dataset_path / (dataset_name or "default")


def split_files(mirror: str | Path, dataset_path: str, dataset_name: str | None,
                split: str) -> tuple[str, list[str]] | None:
    """(builder, files) for a split in the mirror, or None when it is not there.

    `<split>.jsonl|.json|.parquet`, or sharded `<split>-*.<ext>` / `<split>/*.<ext>`.
    """
    base = mirror_dir(mirror, dataset_path, dataset_name)
    if not base.is_dir():
        return None
    for ext, builder in (("jsonl", "json"), ("json", "json"), ("parquet", "parquet")):
        single = base / f"{split}.{ext}"
        if single.is_file():
            return builder, [str(single)]
        many = sorted(base.glob(f"{split}-*.{ext}")) + sorted((base / split).glob(f"*.{ext}"))
        if many:
            return builder, [str(p) for p in many]
    return None


def available_splits(mirror: str | Path, dataset_path: str, dataset_name: str | None,
                     splits: Iterable[str]) -> dict[str, tuple[str, list[str]]]:
    out = {}
    for split in splits:
        found = split_files(mirror, dataset_path, dataset_name, split)
        if found:
            out[split] = found
    return out


def count_rows(builder: str, files: list[str]) -> int:
    """Cheap row count without parsing records: parquet footers, or non-blank JSONL lines."""
    total = 0
    for path in files:
        if builder == "parquet":
            import pyarrow.parquet as pq

            total += pq.ParquetFile(path).metadata.num_rows
        else:
            with open(path, "rb") as fh:
                for line in fh:
                    if line.strip():
                        total += 1
    return total


# --------------------------------------------------------------------------------------------
# task config and the lm-eval task object
# --------------------------------------------------------------------------------------------

_SPLIT_KEYS = ("training_split", "validation_split", "test_split")
# Held-out even when the YAML does not name them (MMLU's `validation`): benchmark data either way.
STANDARD_HELDOUT_SPLITS = ("validation", "test")


@dataclass(frozen=True)
class TaskSource:
    """Everything an executor needs to rebuild one task's renderer (hashable: the cache key)."""

    task: str
    yaml_path: str | None
    dataset_path: str | None
    dataset_name: str | None
    mirror: str | None = None
    overrides_json: str = "{}"  # TaskOverride fields set for this task
    include_path: tuple[str, ...] = ()


def load_task_config(task: str, yaml_path: str | None, include_path: Iterable[str] = ()) -> dict:
    """The task's full config as lm-eval builds it: includes merged, `!function` resolved.

    Uses the YAML file directly when it defines `task` (fast, no index scan); otherwise falls back
    to lm-eval's TaskManager index (tasks defined inline in a group, user include paths).
    """
    from lm_eval.tasks._yaml_loader import load_yaml

    if yaml_path and Path(yaml_path).is_file():
        cfg = load_yaml(yaml_path, resolve_func=True, recursive=True)
        if cfg.get("task") == task and "class" not in cfg:
            return copy.deepcopy(cfg)
    index = _task_index(tuple(include_path))
    entry = index.get(task)
    if entry is None:
        raise KeyError(f"task {task!r} is not in lm-eval's task index")
    if entry.kind.name not in ("TASK",):
        raise ValueError(f"task {task!r} is a {entry.kind.name}, not a YAML task")
    if entry.yaml_path:
        cfg = load_yaml(entry.yaml_path, resolve_func=True, recursive=True)
    else:
        cfg = copy.deepcopy(entry.cfg or {})
    cfg["task"] = task
    return cfg


_INDEX_CACHE: dict[tuple[str, ...], dict] = {}


def _task_index(include_path: tuple[str, ...]) -> dict:
    if include_path not in _INDEX_CACHE:
        from lm_eval.tasks import TaskManager

        _INDEX_CACHE[include_path] = TaskManager(include_path=list(include_path) or None).task_index
    return _INDEX_CACHE[include_path]


def apply_overrides(cfg: dict, overrides: Mapping[str, Any]) -> dict:
    """TaskOverride fields (dataset_path, dataset_name, *_split) replace the YAML's values."""
    cfg = dict(cfg)
    for key, value in overrides.items():
        if value is not None:
            cfg[key] = value
    return cfg


def _load_splits(source: TaskSource, cfg: dict) -> dict[str, Any]:
    """All splits that exist, as lazily memory-mapped `datasets.Dataset`s, keyed by split name."""
    import datasets

    dataset_path = cfg.get("dataset_path")
    dataset_name = cfg.get("dataset_name")
    if source.mirror:
        wanted = {s for s in (cfg.get(k) for k in (*_SPLIT_KEYS, "fewshot_split")) if s}
        wanted |= set(STANDARD_HELDOUT_SPLITS)
        found = available_splits(source.mirror, dataset_path, dataset_name, sorted(wanted))
        if not found:
            raise FileNotFoundError(
                f"no split of {dataset_path}/{dataset_name or 'default'} in mirror {source.mirror}"
            )
        by_builder: dict[str, dict[str, list[str]]] = {}
        out = {}
        for split, (builder, files) in found.items():
            if builder == "json" and all(f.endswith(".jsonl") for f in files) and not _utf8_files(files):
                # Arrow's JSON reader accepts invalid UTF-8 and fails later, on the first read
                # of the bad row: such a split is read line by line instead.
                out[split] = _load_jsonl_lenient(files)
                continue
            by_builder.setdefault(builder, {})[split] = files
        for builder, data_files in by_builder.items():
            try:  # one builder for all splits: a third of the per-split overhead
                out.update(datasets.load_dataset(builder, data_files=data_files))
            except Exception:  # noqa: BLE001 - e.g. splits whose columns differ: one by one
                for split, files in data_files.items():
                    try:
                        out[split] = datasets.load_dataset(builder, data_files={split: files}, split=split)
                    except Exception:  # noqa: BLE001 - a bad line: read the split line by line
                        if builder != "json" or not all(f.endswith(".jsonl") for f in files):
                            raise
                        out[split] = _load_jsonl_lenient(files)
        return out


def _utf8_files(files: list[str]) -> bool:
    """True when every file decodes as UTF-8 (read in 1 MiB chunks, nothing kept)."""
    import codecs

    for path in files:
        decoder = codecs.getincrementaldecoder("utf-8")()
        try:
            with open(path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    decoder.decode(chunk)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return False
    return True


def _load_jsonl_lenient(files: list[str]):
    """A JSONL split read line by line because some lines are not UTF-8 JSON objects: a
    `datasets.Dataset` of the good records, with attribute `bad_lines` = [(line index among
    non-blank lines, reason, detail, the line decoded with replacement characters)].
    `process_unit` quarantines the bad lines in the unit that starts the split, so one broken
    line never costs the task its other records."""
    import datasets

    good: list[dict] = []
    bad: list[tuple[int, str, str, str]] = []
    index = 0
    for path in files:
        with open(path, "rb") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                where = f"{Path(path).name} line {number}"
                try:
                    record = json.loads(line.decode("utf-8").strip())
                except UnicodeDecodeError as exc:
                    bad.append((index, "not_utf8", f"{where}: byte {exc.start} is not UTF-8",
                                line.decode("utf-8", "replace")))
                except ValueError as exc:
                    bad.append((index, "malformed_record", f"{where}: {exc}", line.decode("utf-8", "replace")))
                else:
                    if isinstance(record, dict):
                        good.append(record)
                    else:
                        bad.append((index, "malformed_record", f"{where}: a JSON {type(record).__name__}, "
                                                              "not an object", line.decode("utf-8", "replace")))
                index += 1
    dataset = datasets.Dataset.from_list(good) if good else datasets.Dataset.from_dict({})
    dataset.bad_lines = bad  # read by Renderer.bad_lines
    return dataset
    kwargs = dict(cfg.get("dataset_kwargs") or {})
    kwargs.pop("trust_remote_code", None)
    return dict(datasets.load_dataset(dataset_path, dataset_name, **kwargs))


class Renderer:
    """One lm-eval task, built once per worker: its ConfigurableTask and its split data.

    The ConfigurableTask is built from the task's own config with `custom_dataset=` returning the
    loaded splits. What evaluation needs and ingest does not is switched off for the build only
    (few-shot sampler, metric list, filters: they may need the hub or materialize a whole split);
    none of them affects how a doc renders.
    """

    def __init__(self, source: TaskSource):
        quiet_libraries()
        from lm_eval.api.task import ConfigurableTask

        self.source = source
        cfg = load_task_config(source.task, source.yaml_path, source.include_path)
        cfg = apply_overrides(cfg, json.loads(source.overrides_json or "{}"))
        if source.dataset_path:  # the driver's effective values (catalog + overrides) win
            cfg["dataset_path"] = source.dataset_path
            cfg["dataset_name"] = source.dataset_name
        self.config = cfg
        self.splits: dict[str, Any] = {}
        self.process_docs = cfg.get("process_docs") if callable(cfg.get("process_docs")) else None
        self.task = self._build_task(ConfigurableTask, cfg)
        self.multiple_input = bool(getattr(self.task, "multiple_input", 0))
        self.compiled = CompiledTask(self.task)

    def _build_task(self, task_cls, cfg: dict):
        """lm-eval's ConfigurableTask, built with `custom_dataset=` loading the splits.

        lm-eval's constructor runs process_docs over its whole eval split and renders that split's
        first doc as a self-test. Ingest reads shards itself, so the constructor is handed a
        one-row probe of each split (same features); when the probe row itself is bad, the next
        rows are tried, so one broken record cannot fail a whole task.
        """
        build = dict(cfg)
        for key in ("tag", "group", "task_list", "class"):
            build.pop(key, None)
        build.update(metric_list=None, filter_list=None, process_results=None, fewshot_split=None,
                     fewshot_config=None, num_fewshot=0)
        probe_row = [0]

        def custom_dataset(**_kwargs):
            return {name: ds.select([min(probe_row[0], len(ds) - 1)])
                    for name, ds in self.splits.items() if len(ds)}

        self.splits = _load_splits(self.source, cfg)
        self.bad_lines = {name: getattr(ds, "bad_lines", []) for name, ds in self.splits.items()}
        present = [name for name, ds in self.splits.items() if len(ds)]
        if not present:
            raise ValueError("every available split is empty")
        # Only splits that exist are named to the constructor (it reads the eval split: test,
        # else validation); shards read `self.splits` by name, never through these fields.
        for key in ("validation_split", "test_split", "training_split"):
            if build.get(key) not in present:
                build[key] = None
        if not build.get("test_split") and not build.get("validation_split"):
            build["test_split"] = present[0]
        eval_split = build.get("test_split") or build.get("validation_split")
        build["custom_dataset"] = custom_dataset
        first_error: Exception | None = None
        for row in range(min(50, len(self.splits[eval_split]))):
            probe_row[0] = row
            try:
                return task_cls(config=dict(build))
            except Exception as exc:  # noqa: BLE001
                first_error = first_error or exc
        raise RuntimeError(f"lm-eval could not build the task: {_describe(first_error)}")

    # ---- docs ----------------------------------------------------------------------------
    def num_rows(self, split: str) -> int:
        return len(self.splits[split])

    def iter_docs(self, split: str, start: int = 0, end: int | None = None
                  ) -> Iterator[tuple[int, dict, int, dict | Quarantined]]:
        """(doc_index, raw record, sub_index, processed doc or Quarantined) for rows [start, end).

        process_docs runs over the whole shard (one datasets.map, as lm-eval runs it). The raw row
        number travels in a hidden column so dropped rows are known; if process_docs removes the
        column or raises, it is re-run record by record so each record gets its own outcome.
        """
        dataset = self.splits[split]
        stop = len(dataset) if end is None else min(end, len(dataset))
        if start >= stop:
            return
        shard = dataset.select(range(start, stop))
        raws = [_plain(r) for r in shard]
        if self.process_docs is None:
            for i, raw in enumerate(raws):
                yield start + i, raw, 0, copy.deepcopy(raw)
            return
        indexed = shard.add_column(_ROW, list(range(start, stop)))
        try:
            processed = list(self.process_docs(indexed))
            mapped = all(isinstance(d, Mapping) and _ROW in d for d in processed)
        except Exception as exc:  # noqa: BLE001 - any failure: fall back to per-record
            log.debug("process_docs failed on shard of %s: %s", self.source.task, exc)
            processed, mapped = None, False
        if processed is not None and mapped:
            by_row: dict[int, list[dict]] = {}
            for doc in processed:
                doc = _plain(doc)
                by_row.setdefault(int(doc.pop(_ROW)), []).append(doc)
            for i, raw in enumerate(raws):
                docs = by_row.get(start + i)
                if not docs:
                    yield start + i, raw, 0, Quarantined(
                        "filtered_by_process_docs", "process_docs returned no doc for this record")
                    continue
                for sub, doc in enumerate(docs):
                    yield start + i, raw, sub, doc
            return
        yield from self._per_record(split, raws, start)

    def _per_record(self, split: str, raws: list[dict], start: int):
        import datasets

        features = self.splits[split].features
        for i, raw in enumerate(raws):
            try:
                one = datasets.Dataset.from_list([raw], features=features)
                docs = [_plain(d) for d in self.process_docs(one)]
            except Exception as exc:  # noqa: BLE001
                yield start + i, raw, 0, Quarantined("process_docs_error", _describe(exc))
                continue
            if not docs:
                yield start + i, raw, 0, Quarantined(
                    "filtered_by_process_docs", "process_docs returned no doc for this record")
            for sub, doc in enumerate(docs):
                yield start + i, raw, sub, doc

    # ---- rendering ----------------------------------------------------------------------
    def normalize(self, doc: dict, answer_format: str | None, heldout: bool) -> Normalized | Quarantined:
        try:
            result = normalize_doc(self.compiled, doc, answer_format=answer_format, heldout=heldout,
                                   multiple_input=self.multiple_input)
            size = len(result.question or "") + len(result.context or "") + sum(len(c or "") for c in result.choices or [])
            if size > MAX_RECORD_CHARS:
                return Quarantined("oversized_record", f"{size} characters rendered (limit {MAX_RECORD_CHARS})")
            return result
        except RenderError as exc:
            return Quarantined(exc.reason, exc.detail)
        except Exception as exc:  # noqa: BLE001 - an unexpected failure is still one record
            return Quarantined(*_classify(exc))


class CompiledTask:
    """lm-eval's doc_to_text / doc_to_choice / doc_to_target with each Jinja template compiled once.

    lm-eval compiles a template string on every call (`env.from_string`), which is ~80% of the
    cost of ingest. lm-eval's methods accept the template as an argument; this passes them a
    callable that renders the pre-compiled template (same Jinja environment, StrictUndefined) and
    applies lm-eval's own post-processing for template strings (digits → index, "[...]" → list,
    doc_to_choice → literal_eval). Field names, functions and lists go to lm-eval unchanged.
    tests/unit/test_normalize.py checks this gives lm-eval's results on real records.
    """

    def __init__(self, task: Any):
        self.task = task
        self.config = task.config
        self.features = list(getattr(task, "features", None) or [])
        self.multiple_input = getattr(task, "multiple_input", 0)
        usable = getattr(task, "prompt", None) is None
        self._text = self._compile(self.config.doc_to_text) if usable else None
        self._choice = self._compile(self.config.doc_to_choice) if usable else None
        self._target = self._compile(self.config.doc_to_target) if usable else None
        self._has_choice = self.config.doc_to_choice is not None
        self._extra: dict[str, Any] = {}

    def _compile(self, template: Any):
        if not isinstance(template, str) or template in self.features:
            return None
        from lm_eval.utils import env

        try:
            return env.from_string(template)
        except Exception:  # noqa: BLE001 - let lm-eval raise the syntax error per record
            return None

    def render_template(self, template: str, doc: Mapping) -> str:
        """lm_eval.utils.apply_template with the compiled template cached."""
        compiled = self._extra.get(template)
        if compiled is None:
            from lm_eval.utils import env

            compiled = self._extra[template] = env.from_string(template)
        return compiled.render(**doc)

    def doc_to_text(self, doc):
        if self._text is None:
            return self.task.doc_to_text(doc)

        def render(d):
            text = self._text.render(**d)
            return ast.literal_eval(text) if text.isdigit() and self._has_choice else text

        return self.task.doc_to_text(doc, doc_to_text=render)

    def doc_to_choice(self, doc):
        if self._choice is None:
            return self.task.doc_to_choice(doc)
        return self.task.doc_to_choice(doc, doc_to_choice=lambda d: ast.literal_eval(self._choice.render(**d)))

    def doc_to_target(self, doc):
        if self._target is None:
            return self.task.doc_to_target(doc)

        def render(d):
            text = self._target.render(**d)
            if text.isdigit() and self._has_choice:
                return ast.literal_eval(text)
            if len(text) >= 2 and text[0] == "[" and text[-1] == "]":
                try:
                    return ast.literal_eval(text)
                except (SyntaxError, ValueError):
                    return text
            return text

        return self.task.doc_to_target(doc, doc_to_target=render)


_RENDERERS: OrderedDict[TaskSource, Renderer] = OrderedDict()
_RENDERERS_LOCK = threading.Lock()
MAX_RENDERERS = 64  # a long-lived worker meets hundreds of tasks: keep the recent ones


def get_renderer(source: TaskSource) -> Renderer:
    """The Renderer for a task, built once per Python worker (Spark reuses workers)."""
    with _RENDERERS_LOCK:
        renderer = _RENDERERS.get(source)
        if renderer is None:
            renderer = Renderer(source)
            _RENDERERS[source] = renderer
            while len(_RENDERERS) > MAX_RENDERERS:
                _RENDERERS.popitem(last=False)
        else:
            _RENDERERS.move_to_end(source)
        return renderer


def check_task_config(task: str, yaml_path: str | None, overrides: Mapping[str, Any] | None = None,
                      include_path: Iterable[str] = ()) -> str | None:
    """Driver-side check that needs no data: the YAML loads, functions import, TaskConfig accepts
    it and it renders something. Returns an error message, or None when the config is usable."""
    quiet_libraries()
    try:
        from lm_eval.config.task import TaskConfig

        cfg = apply_overrides(load_task_config(task, yaml_path, tuple(include_path)), overrides or {})
        if "class" in cfg:
            return "python task class (not a YAML task): not supported by ingest"
        cfg = {k: v for k, v in cfg.items() if k not in ("tag", "group", "task_list")}
        TaskConfig(**cfg)
        if cfg.get("doc_to_text") is None and not cfg.get("use_prompt"):
            return "config has no doc_to_text"
        if not cfg.get("dataset_path") and not callable(cfg.get("custom_dataset")):
            return "config has no dataset_path"
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}"
    return None


# --------------------------------------------------------------------------------------------
# normalization (pure given a task object with lm-eval's doc_to_* methods)
# --------------------------------------------------------------------------------------------


def normalize_doc(task: Any, doc: dict, *, answer_format: str | None = None, heldout: bool = False,
                  multiple_input: bool | None = None) -> Normalized:
    """Render one processed doc through lm-eval's task and return the semantic record.

    `task` is an lm-eval ConfigurableTask (anything with doc_to_text/doc_to_choice/doc_to_target
    and `.config`). Raises RenderError with a REASONS key when the record is unusable.
    """
    config = task.config
    _precheck_fields(config.doc_to_text, doc, getattr(task, "features", None) or [])

    text = _call(task.doc_to_text, doc, "doc_to_text")
    has_choices = config.doc_to_choice is not None
    choices_raw = _call(task.doc_to_choice, doc, "doc_to_choice") if has_choices else None
    if choices_raw is not None:
        choices_raw = _check_choices(choices_raw)
    target = _call(task.doc_to_target, doc, "doc_to_target")

    if multiple_input is None:
        multiple_input = isinstance(text, int) and not isinstance(text, bool) and has_choices

    fmt = answer_format if answer_format in ALL_FORMATS else infer_answer_format(
        config.output_type, choices_raw, target)

    rationale = None
    if multiple_input:
        question, choices, answer_index = _from_multiple_input(
            text, choices_raw, target, doc, config.target_delimiter)
        prompt_text = question
        answer_text = choices[answer_index]
    else:
        if not isinstance(text, str):
            raise RenderError("non_string_text", f"doc_to_text returned {type(text).__name__}")
        prompt_text = text
        question = _pick_field(doc, QUESTION_FIELDS, prompt_text) or prompt_text
        choices, answer_index, answer_text = None, None, None
        if choices_raw is not None and (fmt in CHOICE_FORMATS or not isinstance(target, list)):
            golds = _gold_indices(target, choices_raw)
            choices = [c.strip() for c in resolve_letter_choices(choices_raw, doc, prompt_text)]
            if len(golds) == 1:
                answer_index, answer_text = golds[0], choices[golds[0]]
            elif heldout:  # kept for decontamination: every gold option, none picked
                answer_text = "\n".join(choices[g] for g in golds)
            else:
                raise RenderError("multiple_gold", f"gold options {golds} of {len(choices)}: "
                                  + "; ".join(repr(choices[g][:40]) for g in golds))
        else:
            accepted = _accepted_answers(target, choices_raw)
            answer_text = accepted[0]
            if isinstance(target, list):  # all accepted answers (webqs, nq_open) are kept
                choices = accepted
            if fmt == NUMERIC or "####" in answer_text:
                rationale, answer_text = split_final_answer(answer_text)

    if not heldout and choices is not None and (answer_index is not None or fmt in CHOICE_FORMATS):
        problem = option_problem(choices)  # options, not accepted answers (webqs aliases)
        if problem:
            raise RenderError(*problem)
    context = _pick_field(doc, CONTEXT_FIELDS, prompt_text, exclude=question)
    question = question.strip() if isinstance(question, str) else question
    if not question:
        raise RenderError("empty_question", "the rendered question is empty")
    if answer_text is None or not str(answer_text).strip():
        raise RenderError("empty_answer", "the gold answer is empty")
    decontam = None
    if heldout:
        decontam = _call(lambda d: decontamination_query(task, d), doc, "doc_to_decontamination_query")
        if not decontam:
            decontam = question if multiple_input else prompt_text
    return Normalized(
        question=question,
        context=context,
        choices=choices,
        answer_index=answer_index,
        answer_text=str(answer_text).strip(),
        rationale=rationale,
        prompt_text=prompt_text,
        answer_format=fmt,
        decontamination_text=decontam,
    )


def decontamination_query(task: Any, doc: Mapping) -> str | None:
    """The text lm-eval decontaminates on: `doc_to_decontamination_query` (a field name, a
    function or a Jinja template), or doc_to_text when the YAML sets should_decontaminate without
    a query. lm-eval 0.4.13 literal_evals a rendered template, which fails on plain text such as
    ARC's "Question: ...": the template's rendering is used as is here. None when the YAML does
    not ask for decontamination (callers fall back to the prompt)."""
    config = task.config
    if not config.should_decontaminate:
        return None
    query = config.doc_to_decontamination_query
    if query is None:
        text = task.doc_to_text(doc)
        return text if isinstance(text, str) else None
    if callable(query):
        value = query(doc)
    elif isinstance(query, str) and query in (getattr(task, "features", None) or []):
        value = doc[query]
    elif hasattr(task, "render_template"):
        value = task.render_template(str(query), doc)
    else:
        from lm_eval.utils import apply_template

        value = apply_template(str(query), dict(doc))
    if value is None:
        return None
    return value if isinstance(value, str) else canonical_json(value)


def infer_answer_format(output_type: str | None, choices: list[str] | None, target: Any) -> str:
    """Fallback when the catalog has no answer_format: decide from what lm-eval rendered."""
    if choices is not None:
        if isinstance(target, list) and _covers_every_choice(target, choices):
            return SHORT_TEXT  # all accepted answers as "choices" (webqs-style)
        # a list naming some of the options is a choice item with several gold options (K)
        lowered = sorted(c.strip().lower() for c in choices)
        if lowered in (["no", "yes"], ["false", "true"]):
            return BOOLEAN
        return MCQ
    if output_type in ("loglikelihood", "loglikelihood_rolling"):
        return FREEFORM
    text = _target_text(target, None) if target is not None else ""
    if any(m.group(1) for m in _GSM_FINAL.finditer(text)) or _is_number(text):
        return NUMERIC
    return SHORT_TEXT if len(text.split()) <= 12 else FREEFORM


def split_final_answer(text: str) -> tuple[str | None, str]:
    """GSM8K-style "worked solution\\n#### 72" → (solution without <<calc>> notes, "72").

    The final answer is the rest of the last `####` line, never more than that line; lines after
    it (rare) stay in the rationale. No `####` line with an answer: (None, the text)."""
    match = next((m for m in reversed(list(_GSM_FINAL.finditer(text or ""))) if m.group(1)), None)
    if match is None:
        return None, (text or "").strip()
    rest = "\n".join(part.strip() for part in (text[:match.start()], text[match.end():]) if part.strip())
    rationale = _CALC_ANNOTATION.sub("", rest).strip() or None
    final = match.group(1).strip()
    if _is_number(final.replace(",", "")):
        final = final.replace(",", "")
    return rationale, final


def resolve_letter_choices(choices: list[str], doc: Mapping, prompt_text: str) -> list[str]:
    """Option texts for choices that are only labels ("A".."D", "(a)"), else choices unchanged.

    Looked up, in order: a list of option strings in the record whose items all occur in the
    prompt; "A. text" / "(A) text" lines of the prompt; a record list paired with a label list
    equal to the letters (ARC's choices.text/choices.label); the only list of that length.
    """
    letters = [_LETTER.fullmatch(c.strip()) for c in choices]
    if len(choices) < 2 or not all(letters):
        return list(choices)
    labels = [m.group(1) for m in letters]
    if [label.upper() for label in labels] != [chr(ord("A") + i) for i in range(len(labels))]:
        return list(choices)  # not an A, B, C… label sequence: real one-letter options
    n = len(choices)
    candidates = list(_string_lists(doc, n, exclude=[c.strip() for c in choices]))
    for _, values, _ in candidates:
        if all(v.strip() and v.strip() in prompt_text for v in values):
            return [v.strip() for v in values]
    parsed = _options_from_prompt(labels, prompt_text)
    if parsed:
        return parsed
    for _, values, paired in candidates:
        if paired is not None and [p.strip().strip("().").upper() for p in paired] == [
            label.upper() for label in labels
        ]:
            return [v.strip() for v in values]
    if len(candidates) == 1:
        return [v.strip() for v in candidates[0][1]]
    raise RenderError(
        "unresolved_letter_choices",
        f"choices {choices} are labels and no option texts were found in the record or prompt",
    )


# ---- helpers ---------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """datasets rows → JSON-able python (numpy scalars, nested lists/dicts)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and not isinstance(value, (str, bytes)):
        try:
            return value.item()
        except Exception:  # noqa: BLE001
            return value
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 500 else text[:497] + "..."


def _classify(exc: BaseException) -> tuple[str, str]:
    """Map an exception raised while rendering to a REASONS key."""
    try:
        from jinja2.exceptions import TemplateSyntaxError, UndefinedError
    except Exception:  # pragma: no cover
        TemplateSyntaxError = UndefinedError = ()  # type: ignore[assignment]
    if isinstance(exc, RenderError):
        return exc.reason, exc.detail
    if UndefinedError and isinstance(exc, UndefinedError):
        message = str(exc)
        if "has no attribute" in message and "Undefined" not in message and "'None" not in message:
            return "non_string_text", _describe(exc)
        return "missing_field", _describe(exc)
    if TemplateSyntaxError and isinstance(exc, TemplateSyntaxError):
        return "template_error", _describe(exc)
    if isinstance(exc, KeyError):
        return "missing_field", _describe(exc)
    if isinstance(exc, (AttributeError, TypeError)):
        return "non_string_text", _describe(exc)
    return "template_error", _describe(exc)


def _call(fn, doc: dict, what: str):
    try:
        return fn(doc)
    except RenderError:
        raise
    except Exception as exc:  # noqa: BLE001
        reason, detail = _classify(exc)
        raise RenderError(reason, f"{what}: {detail}") from None


def _template_vars(template: Any) -> frozenset[str]:
    if not isinstance(template, str) or "{" not in template:
        return frozenset()
    return _parsed_vars(template)


@functools.lru_cache(maxsize=4096)
def _parsed_vars(template: str) -> frozenset[str]:
    """Top-level variables a Jinja template reads (parsed once per template string)."""
    try:
        from jinja2 import meta
        from lm_eval.utils import env

        return frozenset(set(meta.find_undeclared_variables(env.parse(template))) - set(env.globals))
    except Exception:  # noqa: BLE001 - syntax errors surface when rendering
        return frozenset()


def _precheck_fields(doc_to_text: Any, doc: Mapping, features: list[str]) -> None:
    """Name the problem before jinja does: a referenced field that is absent/null, or a text field
    (question, passage, ...) that is not a string. A plain field-name doc_to_text counts too."""
    names = set(_template_vars(doc_to_text))
    if isinstance(doc_to_text, str) and doc_to_text in features:
        names = {doc_to_text}
    text_fields = set(QUESTION_FIELDS) | set(CONTEXT_FIELDS)
    for name in sorted(names):
        if name not in doc or doc[name] is None:
            raise RenderError("missing_field", f"doc_to_text reads '{name}', which is absent or null")
        if name in text_fields and not isinstance(doc[name], str):
            raise RenderError(
                "non_string_text", f"field '{name}' is {type(doc[name]).__name__}, not text")
    blank_questions = [n for n in names if n in QUESTION_FIELDS and not str(doc[n]).strip()]
    if blank_questions and all(not str(doc[n]).strip() for n in names if isinstance(doc[n], str)):
        raise RenderError("empty_question", f"field '{blank_questions[0]}' is blank")


def _check_choices(choices: Any) -> list[str]:
    if isinstance(choices, str):
        raise RenderError("non_string_text", "doc_to_choice returned a string, not a list")
    if not isinstance(choices, (list, tuple)):
        raise RenderError("non_string_text", f"doc_to_choice returned {type(choices).__name__}")
    if len(choices) == 0:
        raise RenderError("empty_choices", "doc_to_choice returned no options")
    bad = [c for c in choices if not isinstance(c, str)]
    if bad:
        raise RenderError("non_string_text", f"choice {bad[0]!r} is {type(bad[0]).__name__}, not text")
    return list(choices)


def _gold_indices(target: Any, choices: list[str]) -> list[int]:
    """The distinct gold indices of a choice task's target, in order: lm-eval's target is an
    index, the choice text, or a list of them (its `multiple_target`: any listed option is
    correct, e.g. ReCoRD's several answer spans)."""
    if not isinstance(target, list):
        return [_gold_index(target, choices)]
    if not target:
        raise RenderError("empty_answer", "doc_to_target returned an empty list")
    golds: list[int] = []
    for item in target:
        gold = _gold_index(item, choices)
        if gold not in golds:
            golds.append(gold)
    return golds


def _gold_index(target: Any, choices: list[str]) -> int:
    """One gold option of a choice task: an index or the choice text."""
    if isinstance(target, bool):
        target = int(target)
    if isinstance(target, float) and target.is_integer():
        target = int(target)
    if isinstance(target, int):
        if not 0 <= target < len(choices):
            raise RenderError(
                "answer_index_out_of_range", f"answer index {target} with {len(choices)} choices")
        return target
    if isinstance(target, str):
        stripped = target.strip()
        for i, choice in enumerate(choices):
            if choice.strip() == stripped:
                return i
        if re.fullmatch(r"-?\d+", stripped):
            return _gold_index(int(stripped), choices)
        raise RenderError("answer_not_in_choices", f"target {target!r} is not one of {choices}")
    if target is None:
        raise RenderError("missing_field", "doc_to_target returned None")
    raise RenderError("non_string_text", f"doc_to_target returned {type(target).__name__}")


def _covers_every_choice(target: Any, choices: list[str]) -> bool:
    """A list target naming every option (webqs: the options are the accepted answers)."""
    try:
        return isinstance(target, list) and len(_gold_indices(target, choices)) == len(choices)
    except RenderError:
        return True  # not option indices/texts: read as accepted answers, as before


def _accepted_answers(target: Any, choices: list[str] | None) -> list[str]:
    """Open formats: every accepted answer as text, lm-eval's first one first."""
    if isinstance(target, list):
        if not target:
            raise RenderError("empty_answer", "doc_to_target returned an empty list")
        out = [_target_text(t, choices) for t in target]
        return [a for a in out if a.strip()] or out
    return [_target_text(target, choices)]


def _target_text(target: Any, choices: list[str] | None) -> str:
    """Open formats: the (first) accepted answer as text."""
    if isinstance(target, list):
        if not target:
            raise RenderError("empty_answer", "doc_to_target returned an empty list")
        target = target[0]
    if isinstance(target, int) and not isinstance(target, bool) and choices is not None:
        if not 0 <= target < len(choices):
            raise RenderError(
                "answer_index_out_of_range", f"answer index {target} with {len(choices)} choices")
        return choices[target]
    if target is None:
        raise RenderError("missing_field", "doc_to_target returned None")
    if isinstance(target, (dict, list)):
        raise RenderError("non_string_text", f"doc_to_target returned {type(target).__name__}")
    return str(target)


def _from_multiple_input(text: Any, contexts: list[str] | None, target: Any, doc: Mapping,
                         delimiter: str) -> tuple[str, list[str], int]:
    """lm-eval's "multiple input" form (WinoGrande): doc_to_text is the gold index, each choice
    is a context ending in one filler, doc_to_target the shared continuation. Back to one
    sentence with a blank plus the fillers: fillers are record strings each context ends with
    (option1/option2), else what follows the contexts' common prefix."""
    if contexts is None:
        raise RenderError("empty_choices", "multiple-input task without choices")
    if not isinstance(text, int) or isinstance(text, bool):
        raise RenderError("non_string_text", f"doc_to_text returned {type(text).__name__}, expected index")
    if not 0 <= text < len(contexts):
        raise RenderError("answer_index_out_of_range", f"answer index {text} with {len(contexts)} choices")
    if not isinstance(target, str):
        raise RenderError("non_string_text", f"doc_to_target returned {type(target).__name__}")
    strings = [v for v in doc.values() if isinstance(v, str) and v.strip()]
    fillers: list[str] | None = []
    prefixes = set()
    for ctx in contexts:
        match = max((v for v in strings if ctx.endswith(v) and v != ctx), key=len, default=None)
        if match is None:
            fillers = None
            break
        fillers.append(match)
        prefixes.add(ctx[: len(ctx) - len(match)])
    if fillers is None or len(prefixes) != 1 or len(set(fillers)) != len(fillers):
        common = os.path.commonprefix(contexts)
        cut = common.rfind(" ") + 1 if not common.endswith(" ") else len(common)
        prefix = common[:cut]
        fillers = [c[len(prefix):] for c in contexts]
    else:
        prefix = prefixes.pop()
    if any(not f.strip() for f in fillers):
        raise RenderError("empty_choices", "a filler of the multiple-input task is empty")
    # Prefer the record's own sentence with its blank (keeps "_'s" spacing exact).
    original = next((v for v in strings if v.startswith(prefix + "_")
                     and v.rstrip().endswith(target.strip())), None)
    if original is not None:
        question = original
    else:
        question = f"{prefix}_{delimiter}{target}".strip() if target else f"{prefix}_".strip()
    return question, [f.strip() for f in fillers], text


def _pick_field(doc: Mapping, names: Iterable[str], prompt_text: str, exclude: str | None = None
                ) -> str | None:
    for name in names:
        value = doc.get(name)
        if isinstance(value, str) and value.strip() and value.strip() != (exclude or "").strip():
            if value.strip() in prompt_text:
                return value.strip()
    return None


def _string_lists(doc: Mapping, n: int, exclude: list[str]):
    """(name, list of n strings, paired label list or None) found in the doc, one level deep."""
    for key, value in doc.items():
        if _is_str_list(value, n) and [v.strip() for v in value] != exclude:
            yield key, value, None
        elif isinstance(value, Mapping):
            lists = {k: v for k, v in value.items() if _is_str_list(v, n)}
            for sub, values in lists.items():
                if [v.strip() for v in values] == exclude:
                    continue
                paired = next((v for k, v in lists.items() if k != sub
                               and [x.strip() for x in v] == exclude), None)
                yield f"{key}.{sub}", values, paired


def _is_str_list(value: Any, n: int) -> bool:
    return isinstance(value, list) and len(value) == n and all(isinstance(v, str) for v in value)


def _options_from_prompt(labels: list[str], prompt_text: str) -> list[str] | None:
    """Option texts from the prompt's "A. text" / "(B) text" lines: the last run of lines that
    carries the labels in order (blank lines between them allowed). Each option is read within
    its own line, so an empty option ("D." alone) stays empty instead of taking the next line."""
    lines = [line for line in prompt_text.splitlines() if line.strip()]
    patterns = [re.compile(rf"[ \t]*\(?{re.escape(label)}[.):][ \t]*(.*?)[ \t]*") for label in labels]
    for start in range(len(lines) - len(labels), -1, -1):
        texts = []
        for offset, pattern in enumerate(patterns):
            match = pattern.fullmatch(lines[start + offset])
            if not match:
                break
            texts.append(match.group(1))
        else:
            return texts
    return None


def _is_number(text: str) -> bool:
    return bool(re.fullmatch(r"[-+]?\$?\d[\d,]*(\.\d+)?%?|[-+]?\.\d+", (text or "").strip()))


# --------------------------------------------------------------------------------------------
# one work unit → output rows (what the Spark job maps over)
# --------------------------------------------------------------------------------------------


@dataclass
class Unit:
    """One (task, split, role, row range) of work. Columns of the ingest job's unit frame."""

    task: str
    split: str
    role: str  # seed | heldout
    start: int
    end: int | None
    task_family: str | None = None
    dataset_path: str | None = None
    dataset_name: str | None = None
    yaml_path: str | None = None
    answer_format: str | None = None
    license: str | None = None
    license_class: str | None = None
    overrides_json: str = "{}"


OUTPUT_COLUMNS = (
    "kind", "row_id", "task", "task_family", "dataset_path", "dataset_name", "split", "role",
    "doc_index", "answer_format", "question", "context", "choices", "answer_index", "answer_text",
    "rationale", "prompt_text", "source_record", "license", "license_class",
    "decontamination_text", "reason", "detail", "rows_in",
)


def strip_nulls(value: Any) -> Any:
    """The record without null-valued keys (recursively in objects). `datasets` gives every row
    every column of its split (and of sibling splits loaded together), filling absent keys with
    null; identity must not change when a sibling split or a new column appears."""
    if isinstance(value, Mapping):
        return {k: strip_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [strip_nulls(v) for v in value]
    return value


def record_id(role: str, task: str, split: str, raw: Mapping, sub_index: int = 0) -> str:
    parts: list[Any] = [role, task, split, canonical_json(strip_nulls(raw))]
    if sub_index:
        parts.append(sub_index)
    return stable_hash(*parts)


def quarantine_key(task: str, split: str, doc_index: int, raw: Any, sub_index: int = 0) -> str:
    return stable_hash("ingest", task, split, doc_index, sub_index, canonical_json(strip_nulls(raw)))


def duplicate_key(task: str, split: str, doc_index: int, record_id: str) -> str:
    """Quarantine key of row `doc_index` of a split when it repeats an identical record whose id is
    `record_id` (reason duplicate_record). The text is the "|"-joined parts, the encoding the first
    release wrote these keys with (as Spark's sha2(concat_ws)); kept so a rerun on an existing
    lakehouse finds its rows instead of inserting them again."""
    return digest("|".join(["ingest-duplicate", task, split, str(doc_index), record_id]))


def process_unit(unit: Unit, mirror: str | None, include_path: tuple[str, ...] = ()) -> Iterator[dict]:
    """Normalize one unit. Yields output rows (dicts over OUTPUT_COLUMNS):

    - kind = "seed" | "heldout": a normalized record (row_id = seed_id / heldout_id);
    - kind = "quarantine": a record that failed (reason, detail, source_record = raw JSON);
    - kind = "unit": exactly one per unit, rows_in = raw records read; when the task's config or
      data could not be loaded, reason = "task_error" and detail says why (nothing else yielded).
    """
    base = {
        "task": unit.task, "task_family": unit.task_family, "dataset_path": unit.dataset_path,
        "dataset_name": unit.dataset_name, "split": unit.split, "role": unit.role,
        "license": unit.license, "license_class": unit.license_class,
    }
    source = TaskSource(
        task=unit.task, yaml_path=unit.yaml_path, dataset_path=unit.dataset_path,
        dataset_name=unit.dataset_name, mirror=mirror, overrides_json=unit.overrides_json,
        include_path=tuple(include_path),
    )
    try:
        renderer = get_renderer(source)
        if unit.split not in renderer.splits:
            raise FileNotFoundError(f"split {unit.split!r} is not available")
    except Exception as exc:  # noqa: BLE001 - a task that cannot be built fails alone
        yield {**base, "kind": "unit", "rows_in": 0, "reason": "task_error", "detail": _describe(exc),
               "doc_index": unit.start}
        return
    heldout = unit.role == "heldout"
    rows_in = 0
    last_index = None
    if not unit.start:  # lines of the split that are not UTF-8 JSON objects: quarantined once
        for line_index, reason, detail, text in getattr(renderer, "bad_lines", {}).get(unit.split, []):
            rows_in += 1
            raw = {"line": line_index, "text": text}
            yield {**base, "kind": "quarantine", "doc_index": line_index,
                   "row_id": quarantine_key(unit.task, unit.split, -1 - line_index, raw),
                   "reason": reason, "detail": detail, "source_record": canonical_json(raw)}
    for doc_index, raw, sub, doc in renderer.iter_docs(unit.split, unit.start, unit.end):
        if doc_index != last_index:
            rows_in += 1
            last_index = doc_index
        raw_json = canonical_json(strip_nulls(raw))
        result = doc if isinstance(doc, Quarantined) else renderer.normalize(doc, unit.answer_format, heldout)
        if isinstance(result, Quarantined):
            yield {**base, "kind": "quarantine", "doc_index": doc_index,
                   "row_id": quarantine_key(unit.task, unit.split, doc_index, raw, sub),
                   "reason": result.reason, "detail": f"row {doc_index}: {result.detail}",
                   "source_record": raw_json}
            continue
        yield {
            **base,
            "kind": unit.role,
            "row_id": record_id(unit.role, unit.task, unit.split, raw, sub),
            "doc_index": doc_index,
            "answer_format": result.answer_format,
            "question": result.question,
            "context": result.context,
            "choices": result.choices,
            "answer_index": result.answer_index,
            "answer_text": result.answer_text,
            "rationale": result.rationale,
            "prompt_text": result.prompt_text,
            "source_record": raw_json,
            "decontamination_text": result.decontamination_text,
        }
    yield {**base, "kind": "unit", "rows_in": rows_in, "doc_index": unit.start}
