"""Calibration of the verification vote against gold (issue 26): the Spark side of udfs/calibration.py.

- **The sample** (`calibration_sample`): per task family (`coalesce(task_family, task)`), the first
  `enrich.calibration_per_family` seeds of a verifiable answer format in the order of
  sha256(seed_id) (`udfs.calibration.sample_rank`), so a smaller sample is a subset of a larger one
  and a rerun picks the same seeds. enrich enriches them like generated items (same model, prompt
  and M, plus sample M, the stand-in for a generated item's own answer: udfs/calibration.py;
  `item_kind = 'seed'`, jobs/enrich.py); they become curated items only with `enrich.enrich_seeds`
  (and then vote with their M samples like any answer-enriched seed).
- **The measurement** (`measure_calibration`, run by curate before its filters): reads `seeds` and
  `enriched` (the sample's samples), collects them to the driver (families × N × M rows: small)
  and computes each seed's vote, the curve per family and the threshold in use per family
  (`curate.min_agreement`: a number, unset = strict majority, or `{auto: target}`).
- **The table** `calibration` (schemas/tables.py CALIBRATION): written by curate (`CalibrationResult.rows`,
  jobs/curate.py), read by publish's
  data card; `in_use` marks the point whose precision estimates the answer accuracy of `curated`.

Errors: `ConfigError` when `min_agreement: {auto: ...}` is set without a calibration sample.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Sequence

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from jobs.config import Config, ConfigError
from jobs.lakehouse import Lakehouse
from schemas.tables import CALIBRATION, ENRICHED, SEEDS
from udfs.calibration import (
    AutoChoice,
    CurvePoint,
    Vote,
    auto_threshold,
    calibration_curve,
    curve_point,
    point_at,
    seed_vote,
)
from udfs.verification import VERIFIABLE_FORMATS

READS = (SEEDS.name, ENRICHED.name)
WRITES = (CALIBRATION.name,)

SOURCE_CONFIG, SOURCE_MAJORITY = "config", "strict_majority"
SOURCE_AUTO, SOURCE_AUTO_MISSED, SOURCE_NO_CALIBRATION = "auto", "auto_target_missed", "no_calibration"


def enabled(config: Config) -> bool:
    """Whether the run has a calibration sample (`enrich.calibration_per_family` > 0)."""
    return config.enrich.calibration_per_family > 0


def calibration_sample(seeds: DataFrame, per_family: int) -> DataFrame:
    """The calibration sample of `seeds` (same columns): per family the first `per_family` seeds of a
    verifiable format by sha256(seed_id) (ties, which need a hash collision, by seed_id)."""
    family = F.coalesce("task_family", "task")
    order = Window.partitionBy(family).orderBy(F.sha2("seed_id", 256), "seed_id")
    return (seeds.where(F.col("answer_format").isin(*VERIFIABLE_FORMATS))
            .withColumn("_rank", F.row_number().over(order))
            .where(F.col("_rank") <= per_family).drop("_rank"))


def sample_ids(lakehouse: Lakehouse, config: Config, tasks: Sequence[str] | None = None) -> frozenset[str]:
    """The seed ids of the calibration sample (collected: families × N ids); empty when disabled."""
    if not enabled(config):
        return frozenset()
    return frozenset(r[0] for r in sample_seeds(lakehouse, config, tasks).select("seed_id").collect())


def sample_seeds(lakehouse: Lakehouse, config: Config, tasks: Sequence[str] | None = None) -> DataFrame:
    """The calibration sample of the `seeds` table, within `tasks` (None = every task)."""
    seeds = lakehouse.read(SEEDS.name)
    if tasks:
        seeds = seeds.where(F.col("task").isin(list(tasks)))
    return calibration_sample(seeds, config.enrich.calibration_per_family)


def threshold_label(threshold: float | None) -> str:
    """'majority' for the strict majority, else the threshold with up to 4 decimals ('0.75')."""
    return "majority" if threshold is None else f"{threshold:.4f}".rstrip("0").rstrip(".")


@dataclass
class FamilyCalibration:
    """One family: its curve, the threshold in use (None = strict majority), where that came from
    and the point at it (the estimated answer accuracy of the family's curated items)."""

    family: str
    curve: list[CurvePoint]
    threshold: float | None
    source: str
    in_use: CurvePoint
    auto: AutoChoice | None = None


@dataclass
class CalibrationResult:
    """What `measure_calibration` measured: per family, plus the seeds of the sample that had no
    enrichment sample yet (enrich has not run on them) or no stand-in sample, and the target
    precision of auto mode."""

    families: dict[str, FamilyCalibration] = field(default_factory=dict)
    not_enriched: int = 0
    no_stand_in: int = 0  # enriched seeds whose stand-in sample (index M) did not come back
    target: float | None = None
    samples_per_item: int = 0
    model: str | None = None

    def auto_thresholds(self) -> dict[str, float]:
        """{family: threshold} of the families whose threshold came from calibration (auto mode)."""
        return {f: c.threshold for f, c in self.families.items()
                if c.source in (SOURCE_AUTO, SOURCE_AUTO_MISSED) and c.threshold is not None}

    def sources(self) -> dict[str, str]:
        return {f: c.source for f, c in self.families.items()}

    def rows(self, run_id: str) -> list[dict[str, Any]]:
        """The `calibration` table rows: every curve point, plus the in-use point when it is off the
        curve's grid (a configured threshold such as 0.6 with M = 4)."""
        now = datetime.now(timezone.utc)
        out = []
        for fam in self.families.values():
            points = list(fam.curve)
            if fam.in_use not in points:
                points.append(fam.in_use)
            for p in points:
                out.append({**{k: v for k, v in p.to_dict().items() if k not in ("family",)},
                            "task_family": fam.family, "threshold_label": threshold_label(p.threshold),
                            "in_use": p is fam.in_use, "source": fam.source if p is fam.in_use else None,
                            "target_precision": self.target, "samples_per_item": self.samples_per_item,
                            "enrichment_model": self.model, "run_id": run_id, "measured_at": now})
        return out

    def metrics(self) -> dict[str, float]:
        """MLflow metrics: per family the threshold in use (-1 = strict majority), its estimated
        precision, lower bound and coverage, and the seeds measured."""
        m: dict[str, float] = {"calibration.not_enriched": float(self.not_enriched),
                               "calibration.no_stand_in": float(self.no_stand_in)}
        for fam in self.families.values():
            prefix = f"calibration.{fam.family}."
            p = fam.in_use
            m[prefix + "threshold"] = -1.0 if fam.threshold is None else float(fam.threshold)
            m[prefix + "measured"] = float(p.measured)
            m[prefix + "target_met"] = float(fam.auto.target_met) if fam.auto else 1.0
            for name in ("precision", "precision_low", "coverage"):
                if getattr(p, name) is not None:
                    m[prefix + name] = float(getattr(p, name))
        return m

    def summary_lines(self) -> list[str]:
        lines = []
        for fam in self.families.values():
            p = fam.in_use
            est = ("n/a" if p.precision is None
                   else f"{p.precision:.3f} [{p.precision_low:.3f}, {p.precision_high:.3f}]")
            lines.append(f"[curate] calibration {fam.family}: {p.measured} seeds, threshold "
                         f"{threshold_label(fam.threshold)} ({fam.source}): precision {est}, coverage "
                         f"{'n/a' if p.coverage is None else f'{p.coverage:.3f}'}")
        if self.not_enriched:
            lines.append(f"[curate] calibration: {self.not_enriched} sample seeds have no enrichment yet "
                         "(run `taskseed enrich`)")
        return lines


def family_calibration(family: str, votes: Sequence[Vote], samples_per_item: int, config: Config) -> FamilyCalibration:
    """The curve of one family's votes and the threshold the config puts in use for it."""
    curve = calibration_curve(votes, samples_per_item)[family]
    target = config.curate.auto_target
    if target is not None:
        choice = auto_threshold(curve, target)
        source = SOURCE_AUTO if choice.target_met else SOURCE_AUTO_MISSED
        return FamilyCalibration(family, curve, choice.threshold, source, choice.point, choice)
    threshold = config.curate.fixed_min_agreement
    source = SOURCE_CONFIG if threshold is not None else SOURCE_MAJORITY
    point = point_at(curve, threshold) or curve_point(family, votes, threshold)
    return FamilyCalibration(family, curve, threshold, source, point)


def measure_calibration(lakehouse: Lakehouse, config: Config, tasks: Sequence[str] | None = None) -> CalibrationResult:
    """Votes of the calibration sample against gold, per family (see the module docstring).
    Returns an empty result when the sample has no enrichment yet."""
    m = config.enrich.samples_per_item
    sample = sample_seeds(lakehouse, config, tasks).select(
        "seed_id", F.coalesce("task_family", "task").alias("family"), "answer_format", "answer_text",
        "answer_index", "choices")
    samples = (lakehouse.read(ENRICHED.name).where(F.col("item_kind") == "seed")
               .select(F.col("gen_id").alias("seed_id"), "sample", "final_answer", "final_answer_index", "model"))
    rows = (sample.join(samples, "seed_id", "left")
            .groupBy("seed_id", "family", "answer_format", "answer_text", "answer_index", "choices")
            .agg(F.collect_list(F.when(F.col("sample").isNotNull(),
                                       F.struct("sample", "final_answer", "final_answer_index"))).alias("samples"),
                 F.max("model").alias("model"))
            .collect())
    result = CalibrationResult(target=config.curate.auto_target, samples_per_item=m)
    votes: dict[str, list[Vote]] = {}
    models = set()
    for r in rows:
        if not r["samples"]:
            result.not_enriched += 1
            continue
        models.add(r["model"])
        stand_in = [(s["final_answer"], s["final_answer_index"]) for s in r["samples"] if s["sample"] == m]
        vote = seed_vote(r["family"], r["answer_format"], r["answer_text"], r["answer_index"], r["choices"],
                         stand_in[0] if stand_in else None,
                         [(s["final_answer"], s["final_answer_index"]) for s in r["samples"] if s["sample"] < m], m)
        if vote is None and stand_in == [] and r["answer_format"] in VERIFIABLE_FORMATS:
            result.no_stand_in += 1
        if vote is not None:
            votes.setdefault(r["family"], []).append(vote)
    result.model = ",".join(sorted(x for x in models if x)) or None
    for family in sorted(votes):
        result.families[family] = family_calibration(family, votes[family], m, config)
    return result


def verification_params(config: Config, calibration: CalibrationResult | None) -> dict[str, Any]:
    """The SQL parameters filter_verification.sql reads besides `min_agreement`: per family threshold
    and its source as JSON maps, and the target precision. ConfigError for auto mode without a
    calibration sample."""
    target = config.curate.auto_target
    if target is not None and calibration is None:
        raise ConfigError("curate.min_agreement: {auto: ...} needs a calibration sample: set "
                          "enrich.calibration_per_family (e.g. 200) and run `taskseed enrich`")
    by_family = calibration.auto_thresholds() if calibration is not None and target is not None else {}
    sources = calibration.sources() if calibration is not None else {}
    return {"min_agreement": config.curate.fixed_min_agreement,
            "min_agreement_by_family": json.dumps(by_family, sort_keys=True),
            "min_agreement_source_by_family": json.dumps(sources, sort_keys=True),
            "min_agreement_default_source": (SOURCE_NO_CALIBRATION if target is not None else
                                             SOURCE_CONFIG if config.curate.fixed_min_agreement is not None
                                             else SOURCE_MAJORITY),
            "target_precision": target}


def read_calibration(lakehouse: Lakehouse, version: int | None = None) -> list[dict[str, Any]]:
    """The `calibration` rows as dicts sorted by family and threshold (strict majority first); []
    when the table does not exist."""
    if not lakehouse.exists(CALIBRATION.name):
        return []
    rows = [r.asDict() for r in lakehouse.read(CALIBRATION.name, version=version).collect()]
    return sorted(rows, key=lambda r: (r["task_family"], r["threshold"] is not None, r["threshold"] or 0.0))
