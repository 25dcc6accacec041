"""The data card of a published dataset: HTML (self-contained) and Markdown, from its numbers
(`CardData`). `gather_card` counts them with Spark from the dataset, `filter_decisions`, `llm_calls`
and `quarantine`; rendering needs no Spark: tests/unit/test_datacard.py renders cards from plain data.

What it shows, in the order a reviewer asks: what this is and where it came from (Delta versions,
models, prompt versions, code version, config fingerprint, whether the endpoint was the simulator),
the filter funnel (items left after each filter in evaluation order, and what each filter rejects
on its own), rows per task family, question / answer / document length distributions, verification
agreement, contamination hits by held-out benchmark and rule, near-duplicate component sizes, the
license mix, failures and quarantine reasons, and the LLM stages' requests, tokens and latency.
The sections follow what Hugging Face dataset cards and "Datasheets for Datasets" (Gebru et al.,
2021) ask of a dataset's provenance and composition, reduced to what this pipeline knows.

Plots: matplotlib through its object API (`matplotlib.figure.Figure` + the Agg canvas: no pyplot
global state, no display, no JavaScript), rendered once as PNG bytes. The HTML embeds them as base64
`data:` URIs, so the file opens offline and can be mailed or logged to MLflow alone; the Markdown
links the same PNGs written next to it under `plots/`. Templates are jinja2 (it ships with MLflow)
with autoescaping for the HTML: task names and reasons come from data and are escaped.

When the endpoint was the built-in simulator, both cards say at the top, in words, that the
questions and answers are simulator output and not a model's.
"""

from __future__ import annotations

import base64
import io
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

TEMPLATES = Path(__file__).resolve().parent / "templates"
PLOTS_DIR = "plots"
HTML_NAME = "datacard.html"
MD_NAME = "datacard.md"

SIMULATOR_NOTICE = (
    "Simulator output: the questions, answers, knowledge and reasoning in this dataset were produced "
    "by taskseed's built-in simulator (deterministic text for exercising the pipeline), not by a "
    "language model. Do not train on it.")


@dataclass
class LLMStageStats:
    """One LLM stage's ledger totals (all runs): requests by status, tokens, latency in ms."""

    stage: str
    model: str
    requests: int
    ok: int
    parse_error: int
    failed: int
    prompt_tokens: int
    completion_tokens: int
    latency_p50_ms: float | None
    latency_p90_ms: float | None
    latency_p99_ms: float | None


@dataclass
class CardData:
    """Everything a data card shows. Counts are rows; lengths are characters.

    funnel: [(label, items left)] starting with ("candidates", n), one step per gating filter in
    evaluation order. rejected_alone: {filter: items it rejects on its own}. reasons:
    {filter: {reason: items}} for failed decisions. not_checked: {filter: items recorded
    'not_checked'}. disabled: {filter: items recorded 'disabled'} (turned off by the config: its
    funnel step is labelled so). lengths: {"question"|"answer"|"document": [chars of each sampled row]};
    length_sample: rows the lengths were taken from. agreement: verification agreement of each
    published row (None for not verifiable). contamination: [(heldout_task, rule, items)].
    near_dup_components: {component size: components}. license_mix: [(license, class,
    commercial_ok, rows)]. quarantine: [(stage, reason, rows)]. llm_failures: [(stage,
    error_class, requests)].
    """

    dataset: str
    table: str
    delta_version: int
    rows: int
    created_at: str
    code_version: str
    config_fingerprint: str
    endpoint: str
    simulated: bool
    models: dict[str, list[str]] = field(default_factory=dict)
    prompt_versions: list[str] = field(default_factory=list)
    input_versions: dict[str, int | None] = field(default_factory=dict)
    files: list[dict[str, Any]] = field(default_factory=list)
    funnel: list[tuple[str, int]] = field(default_factory=list)
    rejected_alone: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, dict[str, int]] = field(default_factory=dict)
    not_checked: dict[str, int] = field(default_factory=dict)
    disabled: dict[str, int] = field(default_factory=dict)
    rows_per_family: dict[str, int] = field(default_factory=dict)
    rows_per_format: dict[str, int] = field(default_factory=dict)
    lengths: dict[str, list[int]] = field(default_factory=dict)
    length_sample: int = 0
    agreement: list[float | None] = field(default_factory=list)
    verification_reasons: dict[str, int] = field(default_factory=dict)
    contamination: list[tuple[str, str, int]] = field(default_factory=list)
    near_dup_components: dict[int, int] = field(default_factory=dict)
    near_dup_of_seed: int = 0
    license_mix: list[tuple[str, str, str, int]] = field(default_factory=list)
    quarantine: list[tuple[str, str, int]] = field(default_factory=list)
    llm_failures: list[tuple[str, str, int]] = field(default_factory=list)
    llm: list[LLMStageStats] = field(default_factory=list)
    # issue 26 (gather_calibration_and_cost; template blocks calibration_cost.*.j2)
    calibration: list[dict[str, Any]] = field(default_factory=list)  # rows of the `calibration` table
    cost: dict[str, Any] | None = None  # jobs.costs.CostReport.to_dict()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- plots ---------------------------------------------------------------------------------

_BLUE, _GREY, _RED, _GREEN, _AMBER = "#3b6ea8", "#b8c2cc", "#c0392b", "#2e8b57", "#d68910"


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _hbar(ax, labels: Sequence[str], values: Sequence[float], color=_BLUE, annotate: Sequence[str] | None = None):
    positions = list(range(len(labels)))[::-1]
    ax.barh(positions, values, color=color)
    ax.set_yticks(positions, labels)
    top = max(values) if values else 0
    for pos, value, text in zip(positions, values, annotate or [f"{v:,.0f}" for v in values]):
        ax.text(value + top * 0.01, pos, text, va="center", fontsize=8)
    ax.set_xlim(0, top * 1.25 if top else 1)
    ax.spines[["top", "right"]].set_visible(False)


def plot_funnel(data: CardData) -> bytes | None:
    if not data.funnel:
        return None
    fig = _figure(7.5, 0.45 * len(data.funnel) + 1.0)
    ax = fig.add_subplot()
    labels = [label for label, _ in data.funnel]
    values = [n for _, n in data.funnel]
    notes = [f"{values[0]:,}"] + [f"{n:,}  (−{prev - n:,})" for prev, n in zip(values, values[1:])]
    _hbar(ax, labels, values, color=[_GREY] + [_BLUE] * (len(values) - 2) + [_GREEN], annotate=notes)
    ax.set_xlabel("items left after each filter (evaluation order)")
    return _png(fig)


def plot_families(data: CardData) -> bytes | None:
    if not data.rows_per_family:
        return None
    items = sorted(data.rows_per_family.items(), key=lambda kv: -kv[1])[:25]
    fig = _figure(7.5, 0.35 * len(items) + 1.0)
    ax = fig.add_subplot()
    _hbar(ax, [k for k, _ in items], [v for _, v in items])
    ax.set_xlabel("rows")
    return _png(fig)


def plot_lengths(data: CardData) -> bytes | None:
    series = [(name, values) for name, values in data.lengths.items() if values]
    if not series:
        return None
    fig = _figure(9.5, 2.6)
    axes = fig.subplots(1, len(series), squeeze=False)[0]
    for ax, (name, values) in zip(axes, series):
        ax.hist(values, bins=min(30, max(5, len(set(values)))), color=_BLUE)
        ordered = sorted(values)
        median = ordered[len(ordered) // 2]
        ax.axvline(median, color=_AMBER, linewidth=1.2)
        ax.set_title(f"{name} (median {median:,} chars)", fontsize=9)
        ax.set_xlabel("characters", fontsize=8)
        ax.spines[["top", "right"]].set_visible(False)
    axes[0].set_ylabel("rows")
    return _png(fig)


def plot_agreement(data: CardData) -> bytes | None:
    values = [v for v in data.agreement if v is not None]
    if not values:
        return None
    fig = _figure(5.5, 2.4)
    ax = fig.add_subplot()
    ax.hist(values, bins=[i / 10 for i in range(11)], color=_GREEN, edgecolor="white")
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of enrichment samples agreeing with the item's answer")
    ax.set_ylabel("rows")
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def plot_near_dup(data: CardData) -> bytes | None:
    sizes = {k: v for k, v in data.near_dup_components.items() if k > 1}
    if not sizes:
        return None
    items = sorted(sizes.items())
    fig = _figure(5.5, 2.4)
    ax = fig.add_subplot()
    ax.bar([str(k) for k, _ in items], [v for _, v in items], color=_AMBER)
    ax.set_xlabel("items in the near-duplicate component")
    ax.set_ylabel("components")
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def plot_licenses(data: CardData) -> bytes | None:
    if not data.license_mix:
        return None
    items = sorted(data.license_mix, key=lambda r: -r[3])[:20]
    colors = [_GREEN if ok == "yes" else _RED if ok == "no" else _GREY for _, _, ok, _ in items]
    fig = _figure(7.5, 0.35 * len(items) + 1.0)
    ax = fig.add_subplot()
    _hbar(ax, [f"{lic} ({cls})" for lic, cls, _, _ in items], [n for *_, n in items], color=colors)
    ax.set_xlabel("rows (green: commercial use allowed, red: not allowed, grey: unknown)")
    return _png(fig)


def plot_calibration(data: CardData) -> bytes | None:
    """Calibration curve per family: precision (with its 95% Wilson interval) and coverage by
    agreement threshold; the threshold in use is ringed."""
    graded = [r for r in data.calibration if r["threshold"] is not None and r["measured"]]
    if not graded:
        return None
    families = sorted({r["task_family"] for r in graded})
    fig = _figure(7.0, 2.6)
    ax_p, ax_c = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    colors = [_BLUE, _AMBER, _GREEN, _RED, "#7d3c98", "#117a65", _GREY]
    for i, family in enumerate(families):
        pts = sorted((r for r in graded if r["task_family"] == family), key=lambda r: r["threshold"])
        color = colors[i % len(colors)]
        with_p = [r for r in pts if r["precision"] is not None]
        ax_p.errorbar([r["threshold"] for r in with_p], [r["precision"] for r in with_p],
                      yerr=[[r["precision"] - r["precision_low"] for r in with_p],
                            [r["precision_high"] - r["precision"] for r in with_p]],
                      color=color, marker="o", ms=3, capsize=2, label=family)
        ax_c.plot([r["threshold"] for r in pts], [r["coverage"] for r in pts], color=color, marker="o", ms=3)
        for r in data.calibration:
            if r["task_family"] == family and r["in_use"] and r["threshold"] is not None and r["precision"] is not None:
                ax_p.plot([r["threshold"]], [r["precision"]], marker="o", ms=9, mfc="none", color=color)
    ax_p.set_xlabel("agreement threshold")
    ax_p.set_ylabel("precision vs gold")
    ax_c.set_xlabel("agreement threshold")
    ax_c.set_ylabel("coverage (share passing)")
    ax_c.set_ylim(0, 1.02)
    ax_p.legend(fontsize=7, frameon=False)
    for ax in (ax_p, ax_c):
        ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


PLOTS = {
    "funnel": plot_funnel,
    "families": plot_families,
    "lengths": plot_lengths,
    "agreement": plot_agreement,
    "near_dup": plot_near_dup,
    "licenses": plot_licenses,
    "calibration": plot_calibration,
}


def render_plots(data: CardData) -> dict[str, bytes]:
    """{plot name: PNG bytes} for every plot the data has something to show in."""
    out = {}
    for name, plot in PLOTS.items():
        png = plot(data)
        if png is not None:
            out[name] = png
    return out


# ---- documents -----------------------------------------------------------------------------

def _environment(autoescape: bool):
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=autoescape,
                             trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True)
    env.filters["num"] = lambda v: "–" if v is None else (f"{v:,.0f}" if isinstance(v, (int, float)) else v)
    env.filters["ms"] = lambda v: "–" if v is None else (f"{v:,.1f}" if v < 100 else f"{v:,.0f}")
    env.filters["pct"] = lambda v, total: f"{100 * v / total:.1f}%" if total else "–"
    env.filters["md"] = lambda v: str(v).replace("|", "\\|").replace("\n", " ")
    return env


def _context(data: CardData, images: dict[str, str]) -> dict[str, Any]:
    llm_totals = {
        "requests": sum(s.requests for s in data.llm), "prompt_tokens": sum(s.prompt_tokens for s in data.llm),
        "completion_tokens": sum(s.completion_tokens for s in data.llm),
    }
    agreement = [v for v in data.agreement if v is not None]
    return {
        "d": data, "images": defaultdict(str, images), "notice": SIMULATOR_NOTICE, "llm_totals": llm_totals,
        "not_verifiable": sum(1 for v in data.agreement if v is None),
        "mean_agreement": sum(agreement) / len(agreement) if agreement else None,
        "contamination_total": sum(n for *_, n in data.contamination),
        "near_dup_clusters": sum(v for k, v in data.near_dup_components.items() if k > 1),
        "families": sorted(data.rows_per_family.items(), key=lambda kv: -kv[1]),
        "formats": sorted(data.rows_per_format.items(), key=lambda kv: -kv[1]),
        "licenses": sorted(data.license_mix, key=lambda r: -r[3]),
        "calibration_in_use": [r for r in data.calibration if r["in_use"]],
    }


def render_html(data: CardData, plots: dict[str, bytes]) -> str:
    """The self-contained HTML card: plots embedded as base64 PNG data URIs, inline CSS, no script,
    no external reference."""
    images = {name: "data:image/png;base64," + base64.b64encode(png).decode("ascii") for name, png in plots.items()}
    return _environment(autoescape=True).get_template("datacard.html.j2").render(**_context(data, images))


def render_markdown(data: CardData, plots: dict[str, bytes]) -> str:
    """The Markdown card: tables, and the plots linked as `plots/<name>.png` next to it."""
    images = {name: f"{PLOTS_DIR}/{name}.png" for name in plots}
    return _environment(autoescape=False).get_template("datacard.md.j2").render(**_context(data, images))


def write_card(folder: Path, data: CardData) -> list[str]:
    """Write datacard.html, datacard.md and plots/*.png into `folder`; returns their relative paths."""
    folder = Path(folder)
    plots = render_plots(data)
    written = []
    if plots:
        (folder / PLOTS_DIR).mkdir(parents=True, exist_ok=True)
        for name, png in plots.items():
            (folder / PLOTS_DIR / f"{name}.png").write_bytes(png)
            written.append(f"{PLOTS_DIR}/{name}.png")
    (folder / HTML_NAME).write_text(render_html(data, plots), encoding="utf-8")
    (folder / MD_NAME).write_text(render_markdown(data, plots), encoding="utf-8")
    return [HTML_NAME, MD_NAME, *written]


# ---- gathering the numbers (Spark; imported only when called) ----------------------------------
def _collect_counts(df, *columns: str) -> list[tuple]:
    from pyspark.sql import functions as F

    return [tuple(r) for r in df.groupBy(*columns).count().orderBy(F.desc("count"), *columns).collect()]


def gather_card(lakehouse, config, dataset: str, df, rows: int,
                manifest: dict[str, Any]) -> CardData:
    """The data card's numbers for `df` (the dataset at its pinned version) and the current
    `filter_decisions`, `llm_calls` and `quarantine`; `manifest` the dataset's manifest."""
    from pyspark.sql import functions as F

    from jobs.filters.base import GATE_CURATED
    from jobs.filters.registry import FILTERS

    gating = [f.name for f in FILTERS if dataset != "curated" or f.gate == GATE_CURATED]
    decisions = lakehouse.read("filter_decisions")
    card = CardData(
        dataset=dataset, table=lakehouse.table_name(dataset), delta_version=manifest["delta_version"], rows=rows,
        created_at=manifest["created_at"], code_version=manifest["code_version"],
        config_fingerprint=manifest["config_fingerprint"], endpoint=manifest["endpoint"],
        simulated=manifest["simulated"], models=manifest["models"], prompt_versions=manifest["prompt_versions"],
        input_versions=manifest["input_versions"], files=manifest["files"],
    )
    # funnel: items left after each gating filter in evaluation order
    total = decisions.select("gen_id").distinct().count()
    rank = F.create_map(*[x for i, name in enumerate(gating) for x in (F.lit(name), F.lit(i))])
    first_fail = dict(
        decisions.where(~F.col("passed") & F.col("filter").isin(gating))
        .groupBy("gen_id").agg(F.min(rank[F.col("filter")]).alias("step"))
        .groupBy("step").count().collect())
    unchecked = _collect_counts(decisions.where(F.col("reason").isin("not_checked", "disabled")), "reason", "filter")
    card.not_checked = {name: n for reason, name, n in unchecked if reason == "not_checked"}
    card.disabled = {name: n for reason, name, n in unchecked if reason == "disabled"}
    left = total
    card.funnel = [("candidates", total)]
    for i, name in enumerate(gating):
        left -= first_fail.get(i, 0)
        card.funnel.append((f"{name} (disabled)" if name in card.disabled else name, left))
    failed = decisions.where(~F.col("passed"))
    card.rejected_alone = {f.name: 0 for f in FILTERS}
    for name, n in _collect_counts(failed, "filter"):
        card.rejected_alone[name] = n
    for name, reason, n in _collect_counts(failed, "filter", "reason"):
        card.reasons.setdefault(name, {})[reason] = n
    card.verification_reasons = dict(_collect_counts(decisions.where(F.col("filter") == "verification"), "reason"))
    # paraphrase hits (reworded/translated held-out items) count as contamination by held-out
    # benchmark too, under their reason ('paraphrase_of_heldout', 'judge_unanswered') as the rule
    contaminated = failed.where(F.col("filter").isin("contamination", "paraphrase")).select(
        F.coalesce(F.get_json_object("evidence", "$.heldout_task"), F.lit("(unknown)")).alias("heldout_task"),
        F.coalesce(F.get_json_object("evidence", "$.rule"), F.col("reason")).alias("rule"))
    card.contamination = _collect_counts(contaminated, "heldout_task", "rule")
    near = decisions.where((F.col("filter") == "near_dup") & F.col("evidence").isNotNull()).select(
        F.get_json_object("evidence", "$.component_id").alias("component"),
        F.get_json_object("evidence", "$.component_size").cast("int").alias("size")).distinct()
    card.near_dup_components = {size: n for size, n in _collect_counts(near.where("size IS NOT NULL"), "size")}
    card.near_dup_of_seed = decisions.where(F.col("reason") == "near_dup_of_seed").count()

    # the dataset itself
    card.rows_per_family = dict(_collect_counts(df.fillna({"task_family": "(none)"}), "task_family"))
    card.rows_per_format = dict(_collect_counts(df.fillna({"answer_format": "(none)"}), "answer_format"))
    card.license_mix = _collect_counts(
        df.fillna({"license": "(none)", "license_class": "(none)", "commercial_ok": "(none)"}),
        "license", "license_class", "commercial_ok")
    sample = df if rows <= config.publish.card_sample_rows else df.sample(
        fraction=min(1.0, 1.2 * config.publish.card_sample_rows / rows), seed=0).limit(config.publish.card_sample_rows)
    picked = sample.select(
        F.length(F.concat_ws("\n", "context", "question")).alias("q"), F.length("answer_text").alias("a"),
        F.length("document").alias("d"),
        F.when(F.col("verification") == "not_verifiable", F.lit(None)).otherwise(F.col("agreement")).alias("agreement"),
    ).collect()
    card.length_sample = len(picked)
    card.lengths = {"question": [r["q"] or 0 for r in picked], "answer": [r["a"] or 0 for r in picked],
                    "document": [r["d"] or 0 for r in picked]}
    card.agreement = [r["agreement"] for r in picked]

    # failures, quarantine, LLM accounting (the whole ledger)
    card.quarantine = _collect_counts(lakehouse.read("quarantine"), "stage", "reason")
    calls = lakehouse.read("llm_calls")
    card.llm_failures = _collect_counts(
        calls.where(F.col("status") == "failed").fillna({"error_class": "(none)"}), "stage", "error_class")
    stats = (calls.groupBy("stage", "model").agg(
        F.count(F.lit(1)).alias("requests"),
        F.sum(F.when(F.col("status") == "ok", 1).otherwise(0)).alias("ok"),
        F.sum(F.when(F.col("status") == "parse_error", 1).otherwise(0)).alias("parse_error"),
        F.sum(F.when(F.col("status") == "failed", 1).otherwise(0)).alias("failed"),
        F.sum(F.coalesce("prompt_tokens", F.lit(0))).alias("prompt_tokens"),
        F.sum(F.coalesce("completion_tokens", F.lit(0))).alias("completion_tokens"),
        F.percentile_approx("latency_ms", [0.5, 0.9, 0.99]).alias("latency"),
    ).orderBy("stage", "model").collect())
    card.llm = [LLMStageStats(r["stage"], r["model"] or "(none)", r["requests"], r["ok"], r["parse_error"],
                              r["failed"], r["prompt_tokens"], r["completion_tokens"],
                              *(list(r["latency"]) if r["latency"] else [None, None, None]))
                for r in stats]
    gather_calibration_and_cost(lakehouse, config, card)
    return card


def gather_calibration_and_cost(lakehouse, config, card: CardData) -> None:
    """Issue 26's numbers into `card`: the `calibration` table (jobs/calibration.py) and the ledger's
    cost report (jobs/costs.py)."""
    from jobs.calibration import read_calibration
    from jobs.costs import cost_report

    card.calibration = read_calibration(lakehouse)
    card.cost = cost_report(lakehouse, config).to_dict()
