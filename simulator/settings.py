"""What shapes the simulator's behaviour (`SimSettings`) and its only source of randomness.

Every random decision of the simulator is a hash of (seed, purpose, request content, how many
times that content was seen): `hash64`/`uniform01` below. Same seed, same behaviour, and a retried
request can succeed where its first attempt failed, reproducibly.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

DEFAULT_FAULT_KINDS = ("429", "500", "503", "hang", "drop", "bad_body", "malformed", "truncate")
# Later kinds are opt-in (fault_kinds / fault_rates), so `fault_rate` keeps its old meaning.
FAULT_KINDS = DEFAULT_FAULT_KINDS + ("html_502", "error_200", "no_usage")
REASONING_MODES = ("off", "split", "only")
REASONING_FIELDS = ("reasoning_content", "reasoning")


@dataclass(frozen=True)
class SimSettings:
    """Everything that shapes the simulator's behaviour; the CLI maps one flag to each field.

    `fault_rate` is the total probability of an injected fault per HTTP request, split evenly
    over `fault_kinds`; `fault_rates` (kind → rate) overrides the rate of single kinds.
    `rate_limit_rps` (0 = off) is a token bucket in front of the queue; `max_concurrency` caps
    requests being "processed" (sleeping their latency), the rest queue.
    """

    seed: int = 0
    model: str = "taskseed-sim"
    served_models: tuple[str, ...] = ()  # more model ids /v1/models lists (one simulator for several stages' models)
    latency_ms: float = 20.0
    latency_jitter_ms: float = 10.0
    latency_dist: str = "uniform"  # fixed | uniform (± jitter) | lognormal (sigma from jitter)
    max_concurrency: int = 256
    rate_limit_rps: float = 0.0
    rate_limit_burst: float | None = None
    retry_after_s: float = 1.0
    fault_rate: float = 0.0
    fault_kinds: tuple[str, ...] = DEFAULT_FAULT_KINDS
    fault_rates: tuple[tuple[str, float], ...] = ()
    hang_s: float = 120.0
    wrong_answer_rate: float = 0.0
    duplicate_rate: float = 0.0
    heldout_copy_rate: float = 0.0
    heldout_paraphrase_rate: float = 0.0  # generation answers a reworded held-out item (simulator/rewording.py)
    heldout_file: str | None = None
    # JSONL of {question, answer} the simulator "knows" (issue 26): enrichment answers such a
    # question with its answer instead of `sim_truth`, so seeds enriched for calibration are answered
    # with their gold (before wrong votes at wrong_answer_rate), like a model that learned them
    known_answers_file: str | None = None
    # content faults of issue 29 (simulator/contract.py `_generate`): the seed's own question with its
    # gold changed, a sentence of the received prompt in the item, a trivial self-referential item
    seed_copy_rate: float = 0.0
    prompt_leak_rate: float = 0.0
    self_reference_rate: float = 0.0
    require_api_key: str | None = field(default=None, repr=False)
    reasoning: str = "off"  # off | split | only (see simulator/server.py's docstring)
    reasoning_field: str = "reasoning_content"  # or "reasoning" (newer vLLM, OpenRouter)
    reject_json_schema: int = 0  # HTTP status for requests with response_format json_schema; 0 = accept
    # the Batch API (simulator/batch_api.py): simulated seconds from a batch's creation to `completed`,
    # share of batches that expire (seeded per input file content), share of lines in the error file
    batch_seconds: float = 2.0
    batch_expire_rate: float = 0.0
    batch_error_rate: float = 0.0

    def __post_init__(self) -> None:
        unknown = [k for k in (*self.fault_kinds, *dict(self.fault_rates)) if k not in FAULT_KINDS]
        if unknown:
            raise ValueError(f"unknown fault kinds {unknown}; known: {', '.join(FAULT_KINDS)}")
        if self.latency_dist not in ("fixed", "uniform", "lognormal"):
            raise ValueError("latency_dist must be fixed, uniform or lognormal")
        if self.max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        if self.reasoning not in REASONING_MODES or self.reasoning_field not in REASONING_FIELDS:
            raise ValueError(f"reasoning must be one of {', '.join(REASONING_MODES)}; "
                             f"reasoning_field one of {', '.join(REASONING_FIELDS)}")
        if self.batch_seconds < 0:
            raise ValueError("batch_seconds must be >= 0")
        if self.reject_json_schema and not 400 <= self.reject_json_schema <= 599:
            raise ValueError("reject_json_schema must be 0 or an HTTP error status (400-599)")

    def validated(self) -> "SimSettings":
        """Self, after checking every probability and the fault-rate total (ValueError)."""
        for name in ("fault_rate", "wrong_answer_rate", "duplicate_rate", "heldout_copy_rate",
                     "heldout_paraphrase_rate", "seed_copy_rate", "prompt_leak_rate", "self_reference_rate",
                     "batch_expire_rate", "batch_error_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        if any(not 0.0 <= r <= 1.0 for _, r in self.fault_rates):
            raise ValueError("each fault rate must be in [0, 1]")
        if self.latency_ms < 0 or self.latency_jitter_ms < 0 or self.rate_limit_rps < 0:
            raise ValueError("latency and rate limit must be >= 0")
        self.kind_rates()
        return self

    def kind_rates(self) -> list[tuple[str, float]]:
        """Effective per-kind fault probabilities (sum must stay <= 1)."""
        explicit = dict(self.fault_rates)
        share = self.fault_rate / len(self.fault_kinds) if self.fault_kinds else 0.0
        rates = [(k, explicit.get(k, share if k in self.fault_kinds else 0.0)) for k in FAULT_KINDS]
        if sum(r for _, r in rates) > 1.0 + 1e-9:
            raise ValueError("fault rates sum to more than 1")
        return [(k, r) for k, r in rates if r > 0]

    @classmethod
    def from_config(cls, sim_config: Any, **overrides: Any) -> "SimSettings":
        """From `jobs.config.SimulatorConfig` (fields with the same names)."""
        names = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in sim_config.model_dump().items() if k in names}
        values.update(overrides)
        return cls(**values)



def settings_from_json(text: str) -> SimSettings:
    values = json.loads(text)
    for key in ("fault_kinds", "served_models"):
        if key in values:
            values[key] = tuple(values[key])
    if "fault_rates" in values:
        values["fault_rates"] = tuple((k, float(v)) for k, v in values["fault_rates"])
    return SimSettings(**values)


# ---------------------------------------------------------------------------------------------
# Deterministic randomness
# ---------------------------------------------------------------------------------------------
def hash64(*parts: Any) -> int:
    """64-bit hash of the parts: the only source of randomness in the simulator."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def uniform01(*parts: Any) -> float:
    """A number in [0, 1) from the parts (`hash64` scaled): compare it with a rate."""
    return hash64(*parts) / 2.0**64
