"""The data card of a published dataset: HTML (self-contained) and Markdown, from its numbers
(`CardData`). `gather_card` counts them with Spark from the dataset, `filter_decisions`, `llm_calls`
and `quarantine`; what does not depend on the dataset (`RunNumbers`) is gathered once per publish
run for all its cards (`gather_run_numbers`: 214 Spark jobs for the demo's two cards before, 103
after, identical cards); rendering needs no Spark: tests/unit/test_datacard.py renders cards from
plain data.

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

from jobs.progress import plural
from udfs.llm_rows import latency_percentiles

TEMPLATES = Path(__file__).resolve().parent / "templates"
PLOTS_DIR = "plots"
# the length series of the card: a row's passage (context) and question together, its answer, its document
LENGTH_SERIES = ("passage + question", "answer", "document")
HTML_NAME = "datacard.html"
MD_NAME = "datacard.md"

SIMULATOR_NOTICE = (
    "Simulator output: the questions, answers, knowledge and reasoning in this dataset were produced "
    "by taskseed's built-in simulator (deterministic text for exercising the pipeline), not by a "
    "language model. Do not train on it.")


@dataclass
class LLMStageStats:
    """One LLM stage's ledger totals (all runs): requests by status, tokens, latency in ms
    (`udfs.llm_rows.latency_percentiles` of the stage's ledger rows: the function the stage's
    terminal summary uses, so a single run's card and terminal show the same figures)."""

    stage: str
    model: str
    requests: int
    ok: int
    parse_error: int
    failed: int
    prompt_tokens: int
    completion_tokens: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None


# ---- issue 29: the run's funnel from requests, sample rows, what verification measured -------
@dataclass
class TaskFunnel:
    """One task's (or, summed, one family's) way from seeds and requests to published rows. Counts:
    seeds (rows of `seeds`), generate_requests / enrich_requests (distinct request_id of the
    `llm_calls` ledger of that stage), generate_quarantined / enrich_quarantined (`quarantine`
    rows of that stage: failed calls and unusable responses, one per request), generated (rows of
    `generated`), enriched (distinct gen_id of `enriched` with item_kind 'generated': items with
    at least one usable answer sample), candidates (distinct gen_id of `filter_decisions`: items
    the filters decided), published (rows of this dataset). `tasks`: how many tasks a family row
    sums (1 for a task row)."""

    task: str
    task_family: str
    seeds: int = 0
    generate_requests: int = 0
    generate_quarantined: int = 0
    generated: int = 0
    enrich_requests: int = 0
    enrich_quarantined: int = 0
    enriched: int = 0
    candidates: int = 0
    published: int = 0
    tasks: int = 1


# (column of TaskFunnel, header in the cards), in the order of the pipeline
FUNNEL_COLUMNS: tuple[tuple[str, str], ...] = (
    ("seeds", "seeds"), ("generate_requests", "generate requests"),
    ("generate_quarantined", "quarantined at generate"), ("generated", "generated items"),
    ("enrich_requests", "enrich requests"), ("enrich_quarantined", "quarantined at enrich"),
    ("enriched", "enriched items"), ("candidates", "decided by the filters"), ("published", "published rows"),
)
_FUNNEL_COUNTS = tuple(name for name, _ in FUNNEL_COLUMNS)


def task_funnel(families: dict[str, str], counts: dict[str, dict[str, int]]) -> list[TaskFunnel]:
    """One TaskFunnel per task of `families` ({task: family}: every task that was asked for or
    appears in any table) from `counts` ({TaskFunnel count column: {task: n}}); a task missing
    from a count has 0 there, so a task that produced nothing is a row of zeros, never absent.
    Sorted by family, then task."""
    rows = [TaskFunnel(task, family or "(none)", **{c: int(counts.get(c, {}).get(task, 0)) for c in _FUNNEL_COUNTS})
            for task, family in families.items()]
    return sorted(rows, key=lambda r: (r.task_family, r.task))


def family_funnel(tasks: Sequence[TaskFunnel]) -> list[TaskFunnel]:
    """The task rows summed per task family (task = the family's name, tasks = its task count)."""
    out: dict[str, TaskFunnel] = {}
    for row in tasks:
        total = out.setdefault(row.task_family, TaskFunnel(row.task_family, row.task_family, tasks=0))
        total.tasks += 1
        for column in _FUNNEL_COUNTS:
            setattr(total, column, getattr(total, column) + getattr(row, column))
    return [out[k] for k in sorted(out)]


@dataclass
class SampleRow:
    """One item shown as an example: published (`filter` None) or rejected by `filter` for
    `reason`. Text fields are cut to SAMPLE_TEXT_CHARS characters (`cut_text`)."""

    gen_id: str
    task: str
    question: str
    answer: str
    filter: str | None = None
    reason: str | None = None
    detail: str | None = None


SAMPLE_TEXT_CHARS = 240  # characters of a sample row's passage + question, answer or evidence
SAMPLES_PUBLISHED = 3    # published rows shown
SAMPLES_PER_FILTER = 2   # rejected items shown per filter that rejected any


def cut_text(text: str | None, limit: int = SAMPLE_TEXT_CHARS) -> str:
    """`text` on one line, cut to `limit` characters with an ellipsis ("" for None)."""
    flat = " ".join(str(text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


# What verification measured (issue 29): majority voting over the enrichment samples measures the
# model's agreement with itself, not correctness; only a calibration against gold answers says how
# often an agreeing majority is right (issue 26 adds it to the card as `CardData.calibration`).
VERIFICATION_SELF_AGREEMENT = (
    "Verification measured self-agreement, uncalibrated: an item passed when the majority of {m} "
    "answer samples from the enrichment model agreed with the item's own answer. That is the model "
    "agreeing with itself, not correctness against gold answers: a model can agree with itself on "
    "a wrong answer. No calibration against gold was run for this dataset.")
VERIFICATION_CALIBRATED = (
    "Verification measured self-agreement of {m} answer samples, calibrated against gold: {summary}")


def verification_meaning(samples_per_item: int | None, calibration: Sequence[dict[str, Any]] | None = None) -> str:
    """The card's line on what verification measured for this run: self-agreement over M samples,
    uncalibrated, unless the `calibration` table has rows (issue 26, jobs/calibration.py): then the
    precision against gold at the threshold in use, per task family, with its Wilson interval."""
    m = "M" if samples_per_item is None else str(samples_per_item)
    in_use = [r for r in calibration or () if r.get("in_use")]
    if in_use:
        summary = "; ".join(
            f"{r['task_family']}: {r['precision']:.1%} of {r['passed']} passing seeds had the gold answer "
            f"(95% {r['precision_low']:.1%}–{r['precision_high']:.1%})" if r.get("precision") is not None
            else f"{r['task_family']}: not measured (none of its {r['measured']} calibration seeds passed)"
            for r in in_use)
        return VERIFICATION_CALIBRATED.format(m=m, summary=summary)
    return VERIFICATION_SELF_AGREEMENT.format(m=m)


# the README's query "what each filter alone removed" (docs/curation.md, "Querying curation"): the
# card runs this text with the table's qualified name, so the card and the query give one number
FILTER_ALONE_LABEL = "what each filter alone removed"
FILTER_ALONE_SQL = (
    "select filter, count(*) as only_this_filter from {filter_decisions} where not passed and filter <> 'license' "
    "and gen_id in (select gen_id from {filter_decisions} where not passed and filter <> 'license' group by gen_id "
    "having count(*) = 1) group by filter order by filter")


@dataclass
class CardData:
    """Everything a data card shows. Counts are rows; lengths are characters.

    funnel: [(label, items left)] starting with ("candidates", n), one step per gating filter in
    evaluation order. rejected_alone: {filter: items rejected by that filter and by no other
    except license} (FILTER_ALONE_SQL, the README's "what each filter alone removed"); rejected:
    {filter: every item it rejected}. reasons:
    {filter: {reason: items}} for failed decisions. not_checked: {filter: items recorded
    'not_checked'}. disabled: {filter: items recorded 'disabled'} (turned off by the config: its
    funnel step is labelled so). lengths: {"passage + question"|"answer"|"document": [chars of each
    sampled row]} (LENGTH_SERIES);
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
    rejected: dict[str, int] = field(default_factory=dict)
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
    # issue 29: the run from its requests, per task and family; examples; what verification means
    task_funnel: list[TaskFunnel] = field(default_factory=list)
    samples_published: list[SampleRow] = field(default_factory=list)
    samples_rejected: list[SampleRow] = field(default_factory=list)
    samples_per_item: int | None = None

    # issue 26 (gather_calibration_and_cost; template blocks calibration_cost.*.j2)
    calibration: list[dict[str, Any]] = field(default_factory=list)  # rows of the `calibration` table
    cost: dict[str, Any] | None = None  # jobs.costs.CostReport.to_dict()

    @property
    def verification_meaning(self) -> str:
        return verification_meaning(self.samples_per_item, self.calibration)

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
    env.filters["plural"] = plural
    return env


def _context(data: CardData, images: dict[str, str]) -> dict[str, Any]:
    llm_totals = {
        "requests": sum(s.requests for s in data.llm), "prompt_tokens": sum(s.prompt_tokens for s in data.llm),
        "completion_tokens": sum(s.completion_tokens for s in data.llm),
    }
    agreement = [v for v in data.agreement if v is not None]
    return {**_run_context(data),
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


def _run_context(data: CardData) -> dict[str, Any]:
    """issue 29's part of the template context: the funnel totals and headline (published rows of
    the generation requests sent), per-family rows, whether nothing was published, what
    verification measured."""
    total = TaskFunnel("all tasks", "", tasks=len(data.task_funnel))
    for row in data.task_funnel:
        for column in _FUNNEL_COUNTS:
            setattr(total, column, getattr(total, column) + getattr(row, column))
    return {
        "funnel_columns": FUNNEL_COLUMNS, "task_rows": data.task_funnel, "family_rows": family_funnel(data.task_funnel),
        "funnel_total": total, "requested": total.generate_requests, "nothing_published": data.rows == 0,
        "empty_tasks": [r.task for r in data.task_funnel if r.published == 0],
        "verification_meaning": data.verification_meaning, "filter_alone_label": FILTER_ALONE_LABEL,
        "sample_filters": list(dict.fromkeys(r.filter for r in data.samples_rejected if r.filter)),
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


@dataclass
class RunNumbers:
    """The numbers every data card of one publish run shares: they come from `filter_decisions`,
    `llm_calls`, `quarantine`, `seeds`, `generated`, `enriched`, `task_catalog`, `calibration` and
    the cost report, not from the dataset, so `run_publish` gathers them once for all its datasets.

    card: CardData fields (rejected, rejected_alone, reasons, not_checked, disabled,
    verification_reasons, contamination, near_dup_components, near_dup_of_seed, quarantine,
    llm_failures, llm, samples_rejected, samples_per_item, calibration, cost). candidates: distinct
    gen_id of `filter_decisions` (the funnel's first step). counts: the per-task funnel's counts
    but `published` ({TaskFunnel count: {task: n}}); families: {task: family or None}.
    cost_report: the `jobs.costs.CostReport` the card's cost section shows."""

    candidates: int
    card: dict[str, Any]
    counts: dict[str, dict[str, int]]
    families: dict[str, str | None]
    cost_report: Any = None


def _ordered(rows: Sequence[tuple]) -> list[tuple]:
    """`rows` (columns..., count) in `_collect_counts`' order: count descending, then the columns
    (nulls first, as Spark's ascending order puts them)."""
    return sorted(rows, key=lambda r: (-r[-1], *[(x is not None, x) for x in r[:-1]]))


def gather_card(lakehouse, config, dataset: str, df, rows: int,
                manifest: dict[str, Any], run: RunNumbers | None = None) -> CardData:
    """The data card's numbers for `df` (the dataset at its pinned version): what depends on the
    dataset (its funnel through its gating filters, rows per family / format / license, lengths,
    agreement, published rows per task, sample rows), plus `run` (`gather_run_numbers`; gathered
    here when None); `manifest` the dataset's manifest."""
    from pyspark.sql import functions as F

    from jobs.filters.base import GATE_CURATED
    from jobs.filters.registry import FILTERS

    run = run if run is not None else gather_run_numbers(lakehouse, config)
    gating = [f.name for f in FILTERS if dataset != "curated" or f.gate == GATE_CURATED]
    decisions = lakehouse.read("filter_decisions")
    card = CardData(
        dataset=dataset, table=lakehouse.table_name(dataset), delta_version=manifest["delta_version"], rows=rows,
        created_at=manifest["created_at"], code_version=manifest["code_version"],
        config_fingerprint=manifest["config_fingerprint"], endpoint=manifest["endpoint"],
        simulated=manifest["simulated"], models=manifest["models"], prompt_versions=manifest["prompt_versions"],
        input_versions=manifest["input_versions"], files=manifest["files"], **run.card,
    )
    # funnel: items left after each gating filter in evaluation order
    rank = F.create_map(*[x for i, name in enumerate(gating) for x in (F.lit(name), F.lit(i))])
    first_fail = dict(
        decisions.where(~F.col("passed") & F.col("filter").isin(gating))
        .groupBy("gen_id").agg(F.min(rank[F.col("filter")]).alias("step"))
        .groupBy("step").count().collect())
    left = run.candidates
    card.funnel = [("candidates", left)]
    for i, name in enumerate(gating):
        left -= first_fail.get(i, 0)
        card.funnel.append((f"{name} (disabled)" if name in card.disabled else name, left))

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
    card.lengths = dict(zip(LENGTH_SERIES, ([r["q"] or 0 for r in picked], [r["a"] or 0 for r in picked],
                                            [r["d"] or 0 for r in picked])))
    card.agreement = [r["agreement"] for r in picked]
    published = {r["task"]: int(r["n"]) for r in df.where(F.col("task").isNotNull()).groupBy("task")
                 .agg(F.count(F.lit(1)).alias("n")).collect()}
    families = {**{t: None for t in published}, **run.families}
    card.task_funnel = task_funnel({t: f or "(none)" for t, f in families.items()},
                                   {**run.counts, "published": published})
    card.samples_published = [
        SampleRow(r["gen_id"], r["task"] or "", cut_text(r["stimulus"]), cut_text(r["answer_text"]))
        for r in df.select("gen_id", "task", F.concat_ws("\n", "context", "question").alias("stimulus"), "answer_text")
        .orderBy("gen_id").limit(SAMPLES_PUBLISHED).collect()]
    return card


def gather_run_numbers(lakehouse, config) -> RunNumbers:
    """`RunNumbers` from the current `filter_decisions`, `llm_calls`, `quarantine` and the other
    tables the per-task funnel, calibration and cost sections read."""
    from pyspark.sql import functions as F

    from jobs.filters.registry import FILTERS

    decisions = lakehouse.read("filter_decisions")
    card: dict[str, Any] = {}
    candidates = decisions.select("gen_id").distinct().count()
    # every count by (filter, passed, reason) in one query: rejections, reasons, unchecked, verification
    tally = [(r["filter"], r["passed"], r["reason"], int(r["count"]))
             for r in decisions.groupBy("filter", "passed", "reason").count().collect()]

    def summed(keep, key) -> list[tuple]:
        out: dict[tuple, int] = defaultdict(int)
        for f, passed, reason, n in tally:
            if keep(f, passed, reason):
                out[key(f, passed, reason)] += n
        return _ordered([(*k, n) for k, n in out.items()])

    unchecked = summed(lambda f, p, r: r in ("not_checked", "disabled"), lambda f, p, r: (r, f))
    card["not_checked"] = {name: n for reason, name, n in unchecked if reason == "not_checked"}
    card["disabled"] = {name: n for reason, name, n in unchecked if reason == "disabled"}
    card["rejected"] = {f.name: 0 for f in FILTERS}
    for name, n in summed(lambda f, p, r: p is False, lambda f, p, r: (f,)):
        card["rejected"][name] = n
    card["rejected_alone"] = filter_alone_counts(lakehouse, [f.name for f in FILTERS])
    card["reasons"] = {}
    for name, reason, n in summed(lambda f, p, r: p is False, lambda f, p, r: (f, r)):
        card["reasons"].setdefault(name, {})[reason] = n
    card["verification_reasons"] = dict(summed(lambda f, p, r: f == "verification", lambda f, p, r: (r,)))
    card["near_dup_of_seed"] = sum(n for _f, _p, r, n in tally if r == "near_dup_of_seed")
    failed = decisions.where(~F.col("passed"))
    # paraphrase hits (reworded/translated held-out items) count as contamination by held-out
    # benchmark too, under their reason ('paraphrase_of_heldout', 'judge_unanswered') as the rule
    contaminated = failed.where(F.col("filter").isin("contamination", "paraphrase")).select(
        F.coalesce(F.get_json_object("evidence", "$.heldout_task"), F.lit("(unknown)")).alias("heldout_task"),
        F.coalesce(F.get_json_object("evidence", "$.rule"), F.col("reason")).alias("rule"))
    card["contamination"] = _collect_counts(contaminated, "heldout_task", "rule")
    near = decisions.where((F.col("filter") == "near_dup") & F.col("evidence").isNotNull()).select(
        F.get_json_object("evidence", "$.component_id").alias("component"),
        F.get_json_object("evidence", "$.component_size").cast("int").alias("size")).distinct()
    card["near_dup_components"] = {size: n for size, n in _collect_counts(near.where("size IS NOT NULL"), "size")}

    # failures, quarantine, LLM accounting (the whole ledger)
    card["quarantine"] = _collect_counts(lakehouse.read("quarantine"), "stage", "reason")
    calls = lakehouse.read("llm_calls")
    card["llm_failures"] = _collect_counts(
        calls.where(F.col("status") == "failed").fillna({"error_class": "(none)"}), "stage", "error_class")
    stats = (calls.groupBy("stage", "model").agg(
        F.count(F.lit(1)).alias("requests"),
        F.sum(F.when(F.col("status") == "ok", 1).otherwise(0)).alias("ok"),
        F.sum(F.when(F.col("status") == "parse_error", 1).otherwise(0)).alias("parse_error"),
        F.sum(F.when(F.col("status") == "failed", 1).otherwise(0)).alias("failed"),
        F.sum(F.coalesce("prompt_tokens", F.lit(0))).alias("prompt_tokens"),
        F.sum(F.coalesce("completion_tokens", F.lit(0))).alias("completion_tokens"),
    ).orderBy("stage", "model").collect())
    latencies = _ledger_latencies(calls)
    card["llm"] = [LLMStageStats(r["stage"], r["model"] or "(none)", r["requests"], r["ok"], r["parse_error"],
                                 r["failed"], r["prompt_tokens"], r["completion_tokens"],
                                 *(latencies.get((r["stage"], r["model"])) or (None, None, None)))
                   for r in stats]
    counts, families = gather_run_view(lakehouse, config, card, decisions)
    cost = gather_calibration_and_cost(lakehouse, config, card)
    return RunNumbers(candidates=candidates, card=card, counts=counts, families=families, cost_report=cost)


def _ledger_latencies(calls) -> dict[tuple[str, str | None], tuple[float, float, float] | None]:
    """{(stage, model): `latency_percentiles` of its ledger rows}: the values are brought to the
    driver (stage, model and one double per request, through Arrow, in one query) so the card and
    the terminal use one function."""
    frame = calls.select("stage", "model", "latency_ms").toPandas()
    return {(stage, None if model != model else model): latency_percentiles(group["latency_ms"].tolist())
            for (stage, model), group in frame.groupby(["stage", "model"], dropna=False, sort=False)}


def filter_alone_counts(lakehouse, filters: Sequence[str]) -> dict[str, int]:
    """{filter: items it alone removed}: FILTER_ALONE_SQL (the README's query of that name) over
    the lakehouse's `filter_decisions`, 0 for a filter the query does not list (license is never
    listed: the query leaves it out)."""
    query = FILTER_ALONE_SQL.format(filter_decisions=lakehouse.table_name("filter_decisions"))
    found = {r["filter"]: int(r["only_this_filter"]) for r in lakehouse.spark.sql(query).collect()}
    return {name: found.get(name, 0) for name in filters if name != "license"} | \
        {name: n for name, n in found.items() if name not in filters}


def gather_run_view(lakehouse, config, card: dict[str, Any], decisions) -> tuple[dict, dict]:
    """issue 29's numbers that do not depend on the dataset: the per-task funnel's counts (TaskFunnel,
    all but `published`) from `seeds`, `llm_calls`, `quarantine`, `generated`, `enriched` and
    `filter_decisions`, and the families of every task that was asked for (`tasks.select` entries
    that name a task of `task_catalog`) or appears in any of those tables (from `task_catalog`,
    else the tables' task_family); returned as (counts, families). Into `card` (CardData fields):
    samples_per_item and the sample rows of each filter's rejections with reason and evidence (the
    smallest gen_ids: content hashes, so a stable pseudo-random choice)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    def by_task(frame, distinct: str | None = None, split: str | None = None) -> dict:
        """{task: n}, or with `split` {value of split: {task: n}} in one query."""
        frame = frame.where(F.col("task").isNotNull())
        agg = F.countDistinct(distinct) if distinct else F.count(F.lit(1))
        keys = [split, "task"] if split else ["task"]
        out: dict = {}
        for r in frame.groupBy(*keys).agg(agg.alias("n")).collect():
            (out.setdefault(r[split], {}) if split else out)[r["task"]] = int(r["n"])
        return out

    def table(name: str):
        return lakehouse.read(name) if lakehouse.exists(name) else None

    counts: dict[str, dict[str, int]] = {}
    families: dict[str, str | None] = {}
    seeds, calls, quarantine = table("seeds"), table("llm_calls"), table("quarantine")
    generated, enriched = table("generated"), table("enriched")
    if seeds is not None:
        counts["seeds"] = by_task(seeds)
    stages = ("generate", "enrich")
    if calls is not None:
        requests = by_task(calls.where(F.col("stage").isin(*stages)), "request_id", split="stage")
        counts.update({f"{stage}_requests": requests.get(stage, {}) for stage in stages})
    if quarantine is not None:
        held = by_task(quarantine.where(F.col("stage").isin(*stages)), split="stage")
        counts.update({f"{stage}_quarantined": held.get(stage, {}) for stage in stages})
    if generated is not None:
        counts["generated"] = by_task(generated)
    if enriched is not None:
        counts["enriched"] = by_task(enriched.where(F.col("item_kind") == "generated"), "gen_id")
    counts["candidates"] = by_task(decisions, "gen_id")
    for frame in (seeds, generated, calls):
        if frame is not None:
            for r in frame.where(F.col("task").isNotNull()).select("task", "task_family").distinct().collect():
                families.setdefault(r["task"], r["task_family"])
    for per_task in counts.values():
        for task in per_task:
            families.setdefault(task, None)
    if lakehouse.exists("task_catalog"):
        catalog = lakehouse.read("task_catalog")
        asked = [t for t in (config.tasks.select or []) if isinstance(t, str)]
        wanted = set(families) | set(asked)
        for r in catalog.where(F.col("task").isin(list(wanted))).select("task", "family").collect():
            families[r["task"]] = r["family"]
    card["samples_per_item"] = config.enrich.samples_per_item
    card["samples_rejected"] = []
    if generated is None:
        return counts, families
    ranked = decisions.where(~F.col("passed")).select(
        "gen_id", "filter", "reason", "evidence",
        F.row_number().over(Window.partitionBy("filter").orderBy("gen_id")).alias("_n")
    ).where(F.col("_n") <= SAMPLES_PER_FILTER)
    joined = ranked.join(generated.select("gen_id", "task", "question", "context", "answer_text"), "gen_id", "left")
    order = {f: i for i, f in enumerate(card["rejected"])}
    picked = sorted(joined.collect(), key=lambda r: (order.get(r["filter"], len(order)), r["filter"], r["gen_id"]))
    card["samples_rejected"] = [
        SampleRow(r["gen_id"], r["task"] or "", cut_text("\n".join(x for x in (r["context"], r["question"]) if x)),
                  cut_text(r["answer_text"]), r["filter"], r["reason"], cut_text(r["evidence"], 160) or None)
        for r in picked]
    return counts, families


def gather_calibration_and_cost(lakehouse, config, card: dict[str, Any]):
    """Issue 26's numbers into `card` (CardData fields `calibration`, `cost`): the `calibration`
    table (jobs/calibration.py) and the ledger's cost report (jobs/costs.py), which it returns."""
    from jobs.calibration import read_calibration
    from jobs.costs import cost_report

    card["calibration"] = read_calibration(lakehouse)
    report = cost_report(lakehouse, config)
    card["cost"] = report.to_dict()
    return report
