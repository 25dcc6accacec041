"""What the endpoint calls cost, per stage, task family, curated item and kept token (issue 26).

Reads `llm_calls` (tokens and model of every call), `generated` (which item a generation call made),
`filter_decisions` (which filters rejected an item) and `curated` (what was kept); writes nothing.
Prices: `costs: {<model>: ModelPrice}` of the config (jobs/config.py), arithmetic in udfs/costs.py.

- **Tokens per call**: the ledger's `prompt_tokens` / `completion_tokens`. Where the server sent no
  usage they are estimated, and the call counts as `estimated_calls`: completion = the response
  text (content, else reasoning) / 4 characters per token; prompt = the mean prompt tokens of the
  same stage and task among calls that have usage (the prompts of one stage and task differ only
  in the item), else 0. Failed calls count with what the server said they used (usually nothing).
- **Attribution** of a call to an item: a generation call to the item it produced (`generated`
  by request_id); an enrichment call to the item it voted on (`source_key` = gen_id, or a seed id);
  other calls (the paraphrase judge) to their stage only. An item's outcome: `curated` (a row of
  `curated`), `rejected` (decided, not in `curated`), else `calibration` (a seed enriched for the
  calibration sample that is no candidate) or `no_item` (a generation that produced no item, or an
  item no curate run decided yet).
- **Kept tokens**: the tokens of the curated documents, estimated as characters / 4 (the same rule as
  everywhere the project estimates; `taskseed publish --budget` counts with a real tokenizer).
- **Rejected spend by filter**: the cost of the items each filter rejected (an item several filters
  rejected counts under each of them, so the shares by filter can add up to more than the share of
  all rejected items, which counts each item once). The license filter only keeps items out of
  `curated_commercial`, so it is not a rejection here.

A model without a price is costed at 0 and listed in `unpriced`; all figures say so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import Window
from pyspark.sql import functions as F

from jobs.config import Config
from jobs.lakehouse import Lakehouse
from schemas.tables import CURATED, FILTER_DECISIONS, GENERATED, LLM_CALLS
from udfs.costs import CHARS_PER_TOKEN, ratio, tokens_cost

READS = (LLM_CALLS.name, GENERATED.name, FILTER_DECISIONS.name, CURATED.name)
NOT_A_REJECTION = ("license",)  # gates curated_commercial only
OUTCOMES = ("curated", "rejected", "calibration", "no_item")


def call_tokens(calls: DataFrame) -> DataFrame:
    """`llm_calls` with the tokens a call is costed at: `in_tokens`, `out_tokens` (ledger counts,
    else the estimates of the module docstring) and `estimated` (either was estimated)."""
    text = F.coalesce(F.col("content"), F.col("reasoning_content"))
    mean_prompt = F.avg("prompt_tokens").over(Window.partitionBy("stage", "task"))
    return (calls
            .withColumn("estimated", F.col("prompt_tokens").isNull() | F.col("completion_tokens").isNull())
            .withColumn("in_tokens", F.coalesce(F.col("prompt_tokens").cast("double"), mean_prompt, F.lit(0.0)))
            .withColumn("out_tokens", F.coalesce(F.col("completion_tokens").cast("double"),
                                                 F.ceil(F.length(text) / CHARS_PER_TOKEN).cast("double"),
                                                 F.lit(0.0))))


@dataclass
class CostReport:
    """Costs of every call in the ledger. Money is in the prices' currency; None where no call was
    priced. by_*: {key: {"cost", "in_tokens", "out_tokens", "calls"}}."""

    total: float = 0.0
    in_tokens: float = 0.0
    out_tokens: float = 0.0
    calls: int = 0
    estimated_calls: int = 0
    unpriced: list[str] = field(default_factory=list)
    rates: dict[str, float] = field(default_factory=dict)  # measured tokens/s per model (GPU-hour prices)
    by_stage: dict[str, dict[str, float]] = field(default_factory=dict)
    by_family: dict[str, dict[str, float]] = field(default_factory=dict)
    by_outcome: dict[str, dict[str, float]] = field(default_factory=dict)
    rejected_by_filter: dict[str, dict[str, float]] = field(default_factory=dict)
    curated_items: int = 0
    kept_tokens: float = 0.0

    @property
    def per_curated_item(self) -> float | None:
        return ratio(self.total, self.curated_items) if self.priced else None

    @property
    def per_kept_token(self) -> float | None:
        return ratio(self.total, self.kept_tokens) if self.priced else None

    models: list[str] = field(default_factory=list)

    @property
    def priced(self) -> bool:
        """Whether any call's model has a price."""
        return self.calls > 0 and len(self.unpriced) < len(self.models)

    def share(self, cost: float | None) -> float | None:
        return ratio(cost, self.total)

    def rejected_share(self) -> float | None:
        return self.share(self.by_outcome.get("rejected", {}).get("cost"))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(per_curated_item=self.per_curated_item, per_kept_token=self.per_kept_token,
                   rejected_share=self.rejected_share())
        return out

    def metrics(self) -> dict[str, float]:
        """MLflow metrics `cost.*`: total, tokens, per stage / family / curated item / kept token,
        the share spent on rejected items, overall and per filter."""
        m = {"cost.total": self.total, "cost.in_tokens": self.in_tokens, "cost.out_tokens": self.out_tokens,
             "cost.estimated_calls": float(self.estimated_calls), "cost.unpriced_models": float(len(self.unpriced))}
        for name, value in (("per_curated_item", self.per_curated_item), ("per_kept_token", self.per_kept_token),
                            ("rejected_share", self.rejected_share())):
            if value is not None:
                m[f"cost.{name}"] = float(value)
        for prefix, groups in (("stage", self.by_stage), ("family", self.by_family), ("outcome", self.by_outcome)):
            for key, g in groups.items():
                m[f"cost.{prefix}.{key}"] = float(g["cost"])
        for name, g in self.rejected_by_filter.items():
            share = self.share(g["cost"])
            if share is not None:
                m[f"cost.rejected_share.{name}"] = float(share)
        return m

    def summary_lines(self, prefix: str = "[cost]") -> list[str]:
        """Plain lines for `taskseed status` and the run summary."""
        def money(v: float | None) -> str:
            return "-" if v is None else f"{v:.6g}"

        lines = [f"{prefix} total {money(self.total)} for {self.calls} calls, {self.in_tokens:.0f} prompt + "
                 f"{self.out_tokens:.0f} completion tokens ({self.estimated_calls} calls with estimated tokens)"]
        if self.unpriced:
            lines.append(f"{prefix} no price for model(s) {', '.join(self.unpriced)}: costed at 0 (set costs.<model>)")
        lines.append(f"{prefix} by stage: " + (", ".join(f"{k} {money(g['cost'])}" for k, g in self.by_stage.items()) or "-"))
        lines.append(f"{prefix} by task family: " + (", ".join(f"{k} {money(g['cost'])}" for k, g in self.by_family.items()) or "-"))
        lines.append(f"{prefix} per curated item {money(self.per_curated_item)} ({self.curated_items} items); per kept "
                     f"token {money(self.per_kept_token)} ({self.kept_tokens:.0f} tokens ≈ characters / {CHARS_PER_TOKEN})")
        rej = self.rejected_share()
        by_filter = ", ".join(f"{k} {self.share(g['cost']):.1%}" for k, g in self.rejected_by_filter.items()
                              if self.share(g["cost"]) is not None)
        lines.append(f"{prefix} spent on rejected items: {'-' if rej is None else f'{rej:.1%}'}"
                     + (f" (by filter: {by_filter})" if by_filter else ""))
        return lines


def _group(rows, key: str, price_of, rates) -> dict[str, dict[str, float]]:
    """Rows (with model, in/out tokens, calls and, when present, `batched`) summed and priced per `key`."""
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        g = out.setdefault(r[key] if r[key] is not None else "(none)", {"cost": 0.0, "in_tokens": 0.0,
                                                                         "out_tokens": 0.0, "calls": 0})
        batched = bool((r.asDict() if hasattr(r, "asDict") else r).get("batched"))
        cost = tokens_cost(r["in_tokens"], r["out_tokens"], price_of(r["model"]), rates.get(r["model"]), batched) or 0.0
        g["cost"] += cost
        g["in_tokens"] += r["in_tokens"]
        g["out_tokens"] += r["out_tokens"]
        g["calls"] += r["calls"]
    return dict(sorted(out.items()))


def attributed_calls(lakehouse: Lakehouse) -> DataFrame:
    """`call_tokens` of the ledger with `gen_id` (the item a call is attributed to, or NULL),
    `family` (coalesce(task_family, task)) and `outcome` (OUTCOMES, NULL for unattributed stages)."""
    spark = lakehouse.spark
    calls = call_tokens(lakehouse.read(LLM_CALLS.name))
    if lakehouse.exists(GENERATED.name):
        made = lakehouse.read(GENERATED.name).select(F.col("request_id").alias("_rid"), F.col("gen_id").alias("_made"))
        calls = calls.join(made, calls.request_id == made._rid, "left").drop("_rid")
    else:
        calls = calls.withColumn("_made", F.lit(None).cast("string"))
    calls = calls.withColumn("gen_id", F.when(F.col("stage") == "generate", F.col("_made"))
                             .when(F.col("stage") == "enrich", F.col("source_key"))).drop("_made")
    empty = "gen_id string"
    decided = (lakehouse.read(FILTER_DECISIONS.name).select("gen_id").distinct()
               if lakehouse.exists(FILTER_DECISIONS.name) else spark.createDataFrame([], empty))
    curated = (lakehouse.read(CURATED.name).select("gen_id")
               if lakehouse.exists(CURATED.name) else spark.createDataFrame([], empty))
    generated = (lakehouse.read(GENERATED.name).select("gen_id")
                 if lakehouse.exists(GENERATED.name) else spark.createDataFrame([], empty))
    flags = (decided.withColumn("_decided", F.lit(True))
             .join(curated.withColumn("_curated", F.lit(True)), "gen_id", "full")
             .join(generated.withColumn("_generated", F.lit(True)), "gen_id", "full"))
    calls = calls.join(flags, "gen_id", "left")
    outcome = (F.when(F.col("stage").isin("generate", "enrich") == False, F.lit(None))  # noqa: E712
               .when(F.col("_curated"), "curated")
               .when(F.col("_decided"), "rejected")
               .when((F.col("stage") == "enrich") & F.col("_generated").isNull() & F.col("gen_id").isNotNull(),
                     "calibration")
               .otherwise("no_item"))
    return (calls.withColumn("outcome", outcome)
            .withColumn("family", F.coalesce("task_family", "task"))
            .drop("_decided", "_curated", "_generated"))


def measured_rates(calls: DataFrame) -> dict[str, float]:
    """{model: tokens per second}: the model's tokens over the wall-clock span of its calls (first
    sent_at, else completed_at minus latency, to last completed_at)."""
    start = F.coalesce(F.col("sent_at"), F.col("completed_at"))
    rows = (calls.groupBy("model")
            .agg((F.sum("in_tokens") + F.sum("out_tokens")).alias("tokens"),
                 (F.max(F.col("completed_at").cast("double")) - F.min(start.cast("double"))).alias("span"))
            .collect())
    return {r["model"]: r["tokens"] / r["span"] for r in rows if r["model"] and r["span"] and r["span"] > 0}


def cost_report(lakehouse: Lakehouse, config: Config) -> CostReport:
    """The ledger's cost with `config.costs` (see the module docstring); an empty report when there
    is no ledger yet."""
    report = CostReport()
    if not lakehouse.exists(LLM_CALLS.name):
        return report
    calls = attributed_calls(lakehouse).localCheckpoint(eager=True)
    report.rates = measured_rates(calls)
    sums = [F.sum("in_tokens").alias("in_tokens"), F.sum("out_tokens").alias("out_tokens"),
            F.count(F.lit(1)).alias("calls")]
    calls = calls.withColumn("batched", F.col("batch_id").isNotNull())  # a Batch API call: batch price
    grouped = calls.groupBy("stage", "family", "outcome", "model", "batched").agg(
        *sums, F.count_if(F.col("estimated")).alias("estimated")).collect()
    models = sorted({r["model"] for r in grouped if r["model"]})
    report.models = models
    report.unpriced = [m for m in models if m not in config.costs]
    price_of = config.costs.get
    report.calls = sum(r["calls"] for r in grouped)
    report.estimated_calls = sum(r["estimated"] for r in grouped)
    report.in_tokens = float(sum(r["in_tokens"] or 0 for r in grouped))
    report.out_tokens = float(sum(r["out_tokens"] or 0 for r in grouped))
    report.by_stage = _group(grouped, "stage", price_of, report.rates)
    report.by_family = _group(grouped, "family", price_of, report.rates)
    report.by_outcome = _group([r for r in grouped if r["outcome"]], "outcome", price_of, report.rates)
    report.total = sum(g["cost"] for g in report.by_stage.values())
    if lakehouse.exists(FILTER_DECISIONS.name):
        failed = (lakehouse.read(FILTER_DECISIONS.name).where(~F.col("passed") & ~F.col("filter").isin(*NOT_A_REJECTION))
                  .select("gen_id", "filter"))
        by_filter = (calls.where(F.col("outcome") == "rejected").join(failed, "gen_id")
                     .groupBy("filter", "model", "batched").agg(*sums).collect())
        report.rejected_by_filter = _group(by_filter, "filter", price_of, report.rates)
    if lakehouse.exists(CURATED.name):
        kept = lakehouse.read(CURATED.name).agg(F.count(F.lit(1)).alias("n"),
                                               F.sum(F.ceil(F.length("document") / CHARS_PER_TOKEN)).alias("t")).first()
        report.curated_items, report.kept_tokens = int(kept["n"]), float(kept["t"] or 0)
    return report


def projected_cost(config: Config, model: str, prompt_tokens: float, completion_tokens: float,
                   batch: bool = False) -> float | None:
    """What a dry-run plan's estimated tokens would cost at `config.costs[model]` (None: no price, or
    a GPU-hour price without `tokens_per_second`, since a plan has no measured rate); `batch`: sent
    through a Batch API (`endpoint.mode: batch`: the price less its `batch_discount`)."""
    return tokens_cost(prompt_tokens, completion_tokens, config.costs.get(model), batch=batch)
