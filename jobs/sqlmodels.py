"""The SQL-model runner the curate stage uses: one `.sql` file under `jobs/sql/` is one model (a
single SELECT whose temp view is named like the file), layered like a dbt project:

    staging/       one cleaned view per source table
    intermediate/  the vote tally, the chosen enrichment sample, one model per filter
    curated/       the published tables

`bind_sql` replaces `${table.<name>}` with a temp view over the lakehouse table and `${<param>}`
with a SQL literal of a parameter; `run_models` runs models in the order given and registers each
as a session temp view the later models read. There is no Jinja and no registry: the order is the
caller's tuple. The SQL functions the models call (`register_udfs`) are pandas UDFs over pure
functions in udfs/: `normalize_text` (udfs/textnorm.py), `answer_key` (udfs/verification.py),
`pretraining_document` (udfs/formatting.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StringType

from jobs.config import Config, ConfigError
from jobs.lakehouse import Lakehouse
from schemas.tables import ALL_TABLES
from udfs.frames import to_python

SQL_DIR = Path(__file__).resolve().parent / "sql"


@dataclass(frozen=True)
class Model:
    """One SQL model: `jobs/sql/<path>`, registered as the temp view named like the file.
    materialize: checkpoint the result once (models read by many later models)."""

    path: str
    materialize: bool = False

    @property
    def name(self) -> str:
        return Path(self.path).stem

    @property
    def layer(self) -> str:
        return Path(self.path).parent.name

    def sql(self) -> str:
        return (SQL_DIR / self.path).read_text(encoding="utf-8")



@dataclass
class CurateContext:
    """What a prepare step and the runner share: the lakehouse, config, the run's task scope, the
    SQL parameters (a prepare step may add its own), and the temp views registered so far."""

    lakehouse: Lakehouse
    config: Config
    tasks: list[str] | None
    run_id: str
    params: dict[str, Any] = field(default_factory=dict)
    views: list[str] = field(default_factory=list)
    cached: list[DataFrame] = field(default_factory=list)  # engine results unpersisted by drop_views
    not_checked: dict[str, str] = field(default_factory=dict)
    progress: Callable[[str], None] | None = None  # the stage's progress printer (prepare steps may say what they do)
    endpoint: Any = None  # the endpoint the pipeline opened for the run (the paraphrase judge calls it); None: open one

    @property
    def spark(self) -> SparkSession:
        return self.lakehouse.spark

    def table(self, name: str) -> str:
        """What `${table.<name>}` binds to: a temp view `src_<name>` over `Lakehouse.read(name)`
        (created empty if it does not exist yet), so the stage's reads are on the lakehouse's
        access log like every other stage's. ConfigError for a table no TableSpec declares."""
        if name not in ALL_TABLES:
            raise ConfigError(f"curate: unknown table '{name}'")
        view = f"src_{name}"
        if view not in self.views:
            self.register(view, self.lakehouse.read(name))
        return view

    def register(self, name: str, df: DataFrame, cached: DataFrame | None = None) -> DataFrame:
        """A temp view `name` over df; `cached` (an engine's persisted result df derives from) is
        unpersisted with the views, when the run ends."""
        df.createOrReplaceTempView(name)
        if name not in self.views:
            self.views.append(name)
        if cached is not None:
            self.cached.append(cached)
        return df

    def drop_views(self) -> None:
        for name in self.views:
            self.spark.catalog.dropTempView(name)
        self.views.clear()
        for df in self.cached:
            df.unpersist()
        self.cached.clear()



_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:\.([A-Za-z_][A-Za-z0-9_]*))?\}")


def sql_literal(value: Any) -> str:
    """A Python value as a Spark SQL literal: None, bool, int, float (double), str (escaped), a list
    (array; an empty list is an empty array<string>) or a dict (map)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"no SQL literal for {value!r}")
        return f"{value!r}D"
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, (list, tuple)):
        if not value:
            return "CAST(array() AS ARRAY<STRING>)"
        return "array(" + ", ".join(sql_literal(v) for v in value) + ")"
    if isinstance(value, dict):
        if not value:
            raise ValueError("no SQL literal for an empty map")
        return "map(" + ", ".join(f"{sql_literal(k)}, {sql_literal(v)}" for k, v in value.items()) + ")"
    raise TypeError(f"no SQL literal for {type(value).__name__}")


def bind_sql(text: str, params: dict[str, Any], table: Callable[[str], str], model: str = "<sql>") -> str:
    """Replace `${table.<name>}` with `table(name)` and `${<param>}` with the parameter's SQL
    literal. An unknown parameter or namespace is an error naming the model."""
    def replace(match: re.Match) -> str:
        head, tail = match.group(1), match.group(2)
        if tail is not None:
            if head != "table":
                raise ConfigError(f"{model}: unknown placeholder namespace '${{{head}.{tail}}}'")
            return table(tail)
        if head not in params:
            raise ConfigError(f"{model}: no value bound for '${{{head}}}'")
        return sql_literal(params[head])

    return _PLACEHOLDER.sub(replace, text)


def run_model(ctx: CurateContext, model: Model) -> DataFrame:
    """Bind, run and register one model as its temp view; checkpointed if `materialize`."""
    df = ctx.spark.sql(bind_sql(model.sql(), ctx.params, ctx.table, model.path))
    if model.materialize:
        df = df.localCheckpoint(eager=True)
    return ctx.register(model.name, df)


def run_models(ctx: CurateContext, models: Sequence[Model], on_done: Callable[[str], None] | None = None) -> None:
    """Run `models` in order; `on_done(name)` after each (progress)."""
    for model in models:
        run_model(ctx, model)
        if on_done is not None:
            on_done(model.name)



# ---- SQL functions the models call (thin wrappers over pure functions in udfs/) ----
def _normalize_text_batch(text: pd.Series) -> pd.Series:
    from udfs.textnorm import normalize_text

    return text.map(normalize_text)


def _answer_key_batch(answer_format: pd.Series, answer: pd.Series, answer_index: pd.Series,
                      choices: pd.Series) -> pd.Series:
    from udfs.verification import answer_key

    return pd.Series([answer_key(to_python(f), to_python(a), to_python(i), to_python(c))
                      for f, a, i, c in zip(answer_format, answer, answer_index, choices)], dtype=object)


def _document_batch(answer_format: pd.Series, question: pd.Series, context: pd.Series, choices: pd.Series,
                    answer_index: pd.Series, answer_text: pd.Series, knowledge: pd.Series,
                    reasoning: pd.Series, final_answer_raw: pd.Series, final_answer: pd.Series,
                    final_answer_index: pd.Series) -> pd.Series:
    from udfs.formatting import format_pretraining_document

    out = []
    for row in zip(answer_format, question, context, choices, answer_index, answer_text, knowledge, reasoning,
                   final_answer_raw, final_answer, final_answer_index):
        (fmt, q, ctx, ch, idx, ans, kn, rs, far, fa, fai) = (to_python(v) for v in row)
        item = {"answer_format": fmt, "question": q, "context": ctx, "choices": ch,
                "answer_index": int(idx) if idx is not None else None, "answer_text": ans}
        enrichment = {"knowledge": kn, "reasoning": rs, "final_answer_raw": far, "final_answer": fa,
                      "final_answer_index": int(fai) if fai is not None else None}
        out.append(format_pretraining_document(item, enrichment))
    return pd.Series(out, dtype=object)


def _prompt_leak_batch(question: pd.Series, context: pd.Series, choices: pd.Series,
                       answer_text: pd.Series) -> pd.Series:
    from udfs.prompt_leak import find_prompt_leaks, item_texts

    out = []
    for q, c, ch, a in zip(question, context, choices, answer_text):
        found = find_prompt_leaks(item_texts({"question": to_python(q), "context": to_python(c),
                                              "choices": to_python(ch), "answer_text": to_python(a)}))
        out.append(found[0][:200] if found else None)
    return pd.Series(out, dtype=object)


def _self_reference_batch(question: pd.Series, context: pd.Series, answer_text: pd.Series) -> pd.Series:
    from udfs.self_reference import self_reference_decision

    out = []
    for q, c, a in zip(question, context, answer_text):
        decision = self_reference_decision({"question": to_python(q), "context": to_python(c),
                                            "answer_text": to_python(a)})
        out.append(None if decision.passed else decision.where)
    return pd.Series(out, dtype=object)


def register_udfs(spark: SparkSession) -> None:
    """Register the SQL functions the models call: normalize_text(s), answer_key(format, answer,
    index, choices), pretraining_document(format, question, context, choices, answer_index,
    answer_text, knowledge, reasoning, final_answer_raw, final_answer, final_answer_index),
    prompt_leak(question, context, choices, answer_text) (the first piece of our own prompt the
    item's text carries, udfs/prompt_leak.py, or NULL), self_reference(question, context, answer_text)
    (where a trivial item about itself shows it: 'question', 'passage' or 'answer_from_question',
    udfs/self_reference.py, or NULL)."""
    from pyspark.sql.functions import pandas_udf

    spark.udf.register("prompt_leak", pandas_udf(_prompt_leak_batch, StringType()))
    spark.udf.register("self_reference", pandas_udf(_self_reference_batch, StringType()))
    spark.udf.register("normalize_text", pandas_udf(_normalize_text_batch, StringType()))
    spark.udf.register("answer_key", pandas_udf(_answer_key_batch, StringType()))
    spark.udf.register("pretraining_document", pandas_udf(_document_batch, StringType()))

