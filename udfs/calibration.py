"""Calibration of the verification vote against gold answers (issue 26): pure functions.

A calibration sample of seeds (`enrich.calibration_per_family` per task family, chosen by a hash of
the seed id) is enriched like generated items, with the same model, prompt and M vote samples, plus
one more sample, index M, that plays the generated item's own answer (the "stand-in": what the
model believes the answer is, as a generator's answer is). Each seed then is an item whose answer
is the stand-in, voted on exactly as verification votes on a generated item, and whose right
answer is known (the gold). For each family and agreement threshold t:

- **passes(t)**: verification would pass the stand-in at t (the rules of
  jobs/sql/intermediate/filter_verification.sql and int_votes.sql): it has a key, some vote names an
  answer, no other answer has as many votes, and `votes_agree / votes_expected >= t`, or more than
  half of `votes_expected` for the strict majority (t None); `votes_expected = max(votes returned, M)`.
- **precision(t)** = seeds passing whose stand-in equals gold / seeds passing: how often an item
  that passes verification has the gold answer, i.e. the estimated answer accuracy of `curated`.
- **coverage(t)** = seeds passing / seeds measured (format verifiable, gold readable, stand-in back).

Answers are compared with the key verification compares with (`udfs.verification.answer_key`).
Intervals are Wilson score intervals (Wilson 1927; recommended over the normal interval for small n
and proportions near 1 by Brown, Cai & DasGupta 2001) at `Z_95` (95%).

`auto_threshold`: the lowest threshold k/M on the curve whose precision lower bound meets a target
(`curate.min_agreement: {auto: <target>}`); when none does, the strictest (M of M) with
`target_met = False`, so the filter is as strict as it can be and says it missed the target.

Why a stand-in and not the vote's winner: a generated item passes only when its own answer *and*
the majority agree, so the winner alone would understate the precision whenever the generator errs
independently of the votes (tests/unit/test_calibration.py measures the estimate against the
simulator's known error rate). What the estimate assumes: seeds are as hard as the items generated
from them, and the solving prompt's sample errs like the generation prompt's answer.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

from udfs.verification import answer_key, is_verifiable

Z_95 = 1.959963984540054
STRICT_MAJORITY = None  # the threshold meaning "more than half" (curate.min_agreement unset)


def sample_rank(seed_id: str) -> str:
    """The order of the calibration sample: sha256 of the seed id (hex). The first N seeds of a
    family in this order are its sample, so a smaller sample is a subset of a larger one."""
    return hashlib.sha256(str(seed_id).encode("utf-8")).hexdigest()


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float | None, float | None]:
    """Wilson score interval of a proportion `successes / n`; (None, None) when n == 0.
    ValueError when successes is outside [0, n]."""
    if n == 0:
        return None, None
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be within [0, n], got {successes} of {n}")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # exact at the edges (floating point would leave 1 - 1e-16 above an all-successes sample)
    return (0.0 if successes == 0 else max(0.0, centre - half)), (1.0 if successes == n else min(1.0, centre + half))


@dataclass(frozen=True)
class Vote:
    """One calibration seed as a verified item. answer_key: the stand-in's key (None = unreadable);
    votes_agree: vote samples with that key; votes_top_other: the most votes of one other answer;
    votes_expected: max(vote samples returned, M); correct: answer_key equals the gold key."""

    family: str
    gold_key: str
    answer_key: str | None
    votes_agree: int
    votes_top_other: int
    votes_expected: int
    correct: bool

    def passes(self, threshold: float | None) -> bool:
        """Would verification pass the stand-in at `threshold` (None = strict majority)?"""
        if self.answer_key is None or self.votes_agree == 0 or self.votes_agree <= self.votes_top_other:
            return False
        if threshold is None:
            return self.votes_agree * 2 > self.votes_expected
        return self.votes_agree / self.votes_expected >= threshold - 1e-12


def seed_vote(family: str, answer_format: str, gold_answer: str | None, gold_index: int | None,
              choices: Sequence[str] | None, stand_in: tuple[str | None, int | None] | None,
              votes: Sequence[tuple[str | None, int | None]], samples_per_item: int) -> Vote | None:
    """The `Vote` of one seed from its gold answer, its stand-in sample's (final_answer,
    final_answer_index) and its M vote samples' (returned ones only); None when it cannot be
    measured: format not verifiable, gold without a key, or no stand-in sample came back."""
    if not is_verifiable(answer_format) or stand_in is None:
        return None
    gold = answer_key(answer_format, gold_answer, gold_index, choices)
    if gold is None:
        return None
    own = answer_key(answer_format, stand_in[0], stand_in[1], choices)
    counts = Counter(k for k in (answer_key(answer_format, a, i, choices) for a, i in votes) if k is not None)
    agree = counts.get(own, 0) if own is not None else 0
    other = max((n for k, n in counts.items() if k != own), default=0)
    return Vote(family, gold, own, agree, other, max(len(votes), samples_per_item), own is not None and own == gold)


def thresholds(samples_per_item: int) -> list[float]:
    """The thresholds that differ for M samples: k / M for k = 1..M (agreement takes no other values
    when every sample came back)."""
    return [k / samples_per_item for k in range(1, samples_per_item + 1)]


@dataclass(frozen=True)
class CurvePoint:
    """One (family, threshold) point of the calibration curve. threshold None = strict majority."""

    family: str
    threshold: float | None
    measured: int          # seeds with a readable gold answer of a verifiable format
    passed: int            # of which the vote passes at the threshold
    correct: int           # of which the winner equals gold
    precision: float | None
    precision_low: float | None
    precision_high: float | None
    coverage: float | None
    coverage_low: float | None
    coverage_high: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def curve_point(family: str, votes: Sequence[Vote], threshold: float | None) -> CurvePoint:
    passed = [v for v in votes if v.passes(threshold)]
    correct = sum(v.correct for v in passed)
    p_low, p_high = wilson_interval(correct, len(passed))
    c_low, c_high = wilson_interval(len(passed), len(votes))
    return CurvePoint(family, threshold, len(votes), len(passed), correct,
                      correct / len(passed) if passed else None, p_low, p_high,
                      len(passed) / len(votes) if votes else None, c_low, c_high)


def calibration_curve(votes: Iterable[Vote], samples_per_item: int) -> dict[str, list[CurvePoint]]:
    """{family: [the strict-majority point, then one point per threshold k/M ascending]}."""
    by_family: dict[str, list[Vote]] = {}
    for v in votes:
        by_family.setdefault(v.family, []).append(v)
    return {family: [curve_point(family, vs, STRICT_MAJORITY)]
            + [curve_point(family, vs, t) for t in thresholds(samples_per_item)]
            for family, vs in sorted(by_family.items())}


@dataclass(frozen=True)
class AutoChoice:
    """What `auto_threshold` chose for a family: the threshold, whether its precision lower bound met
    the target, and the point it stands on."""

    family: str
    target: float
    threshold: float
    target_met: bool
    point: CurvePoint


def auto_threshold(points: Sequence[CurvePoint], target: float) -> AutoChoice:
    """The lowest threshold k/M on a family's curve whose precision lower bound is >= target; else
    the strictest (highest) threshold with target_met False. ValueError for a curve with no k/M
    points or a target outside (0, 1]."""
    if not 0 < target <= 1:
        raise ValueError(f"target precision must be in (0, 1], got {target}")
    graded = sorted((p for p in points if p.threshold is not None), key=lambda p: p.threshold)
    if not graded:
        raise ValueError("a calibration curve needs at least one k/M threshold")
    for p in graded:
        if p.precision_low is not None and p.precision_low >= target:
            return AutoChoice(p.family, target, p.threshold, True, p)
    return AutoChoice(graded[-1].family, target, graded[-1].threshold, False, graded[-1])


def point_at(points: Sequence[CurvePoint], threshold: float | None) -> CurvePoint | None:
    """The curve's point at `threshold` (None = strict majority), or None."""
    for p in points:
        if (p.threshold is None and threshold is None) or (
                p.threshold is not None and threshold is not None and abs(p.threshold - threshold) < 1e-9):
            return p
    return None
