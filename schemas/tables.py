"""Table schemas: the single source of truth for the columns of every Delta table taskseed writes.

Each `TableSpec` names its key columns (the MERGE condition that makes a stage idempotent) and
its columns. Every write goes through `jobs.lakehouse.Lakehouse`, which conforms the frame to the
spec (its columns, in order, cast to its types). Intermediate frames that are not tables declare
their own columns where they are built: an LLM stage's plan and parsed rows (jobs/llm_stage/spec.py,
the parsed rows derived from the output table's spec) and the normalizer's output rows
(udfs/normalize.py OUTPUT_COLUMNS).
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)


@dataclass(frozen=True)
class TableSpec:
    name: str
    keys: tuple[str, ...]
    schema: StructType
    description: str
    partition_by: tuple[str, ...] = ()
    # Delta table properties (TBLPROPERTIES) the table is created with and kept at
    properties: tuple[tuple[str, str], ...] = ()

    @property
    def columns(self) -> list[str]:
        return [f.name for f in self.schema.fields]


def _fields(*specs: tuple) -> StructType:
    """(name, type) or (name, type, nullable) tuples; columns are nullable unless said."""
    fields = []
    for spec in specs:
        name, dtype, *rest = spec
        fields.append(StructField(name, dtype, rest[0] if rest else True))
    return StructType(fields)


S, I, L, B, D, T = StringType(), IntegerType(), LongType(), BooleanType(), DoubleType(), TimestampType()
STRINGS = ArrayType(StringType())
INTS = ArrayType(IntegerType())
LONGS = ArrayType(LongType())

TASK_CATALOG = TableSpec(
    name="task_catalog",
    keys=("task",),
    description="One row per lm-eval task: where its data lives, its splits and formats, license, eligibility.",
    schema=_fields(
        ("task", S, False),
        ("family", S, False),
        ("groups", STRINGS),
        ("tags", STRINGS),
        ("yaml_path", S),
        ("dataset_path", S),
        ("dataset_name", S),
        ("training_split", S),
        ("validation_split", S),
        ("test_split", S),
        ("fewshot_split", S),
        ("output_type", S),
        ("answer_format", S),
        ("doc_to_text", S),
        ("doc_to_choice", S),
        ("doc_to_target", S),
        ("process_docs", S),
        ("doc_to_decontamination_query", S),
        ("license", S),
        ("license_class", S),
        ("commercial_ok", S),
        ("eligible", B, False),
        ("ineligible_reason", S),
        ("config_json", S),
        ("lm_eval_version", S),
        ("cataloged_at", T),
    ),
)

LICENSE_POLICY = TableSpec(
    name="license_policy",
    keys=("dataset_path",),
    description="License of each dataset lm-eval loads, its class and whether commercial use is allowed.",
    schema=_fields(
        ("dataset_path", S, False),
        ("license", S, False),
        ("license_class", S, False),
        ("commercial_ok", S, False),
        ("lm_eval_task_dirs", STRINGS),
        ("source_url", S),
        ("note", S),
    ),
)

# Seeds and heldout share the normalized record; heldout adds the decontamination text.
_NORMALIZED = (
    ("task", S, False),
    ("task_family", S),
    ("dataset_path", S),
    ("dataset_name", S),
    ("split", S, False),
    ("doc_index", L, False),
    ("answer_format", S),
    ("question", S),
    ("context", S),
    ("choices", STRINGS),
    ("answer_index", I),
    ("answer_text", S),
    ("rationale", S),
    ("prompt_text", S),
    ("source_record", S),
    ("license", S),
    ("license_class", S),
    ("ingested_at", T),
)

SEEDS = TableSpec(
    name="seeds",
    keys=("seed_id",),
    description="Normalized training-split records: the only input generation ever sees.",
    schema=_fields(("seed_id", S, False), *_NORMALIZED),
    partition_by=(),
)

HELDOUT = TableSpec(
    name="heldout",
    keys=("heldout_id",),
    description="Normalized validation/test records, used only for contamination checks.",
    schema=_fields(("heldout_id", S, False), *_NORMALIZED, ("decontamination_text", S)),
)

QUARANTINE = TableSpec(
    name="quarantine",
    keys=("stage", "source_key"),
    description="Records or responses that could not be used, with the reason and raw payload.",
    schema=_fields(
        ("stage", S, False),
        ("source_key", S, False),
        ("task", S),
        ("split", S),
        ("reason", S, False),
        ("detail", S),
        ("raw", S),
        ("run_id", S),
        ("quarantined_at", T),
    ),
)

LLM_CALLS = TableSpec(
    name="llm_calls",
    keys=("request_id",),
    description="Request ledger: one row per finished endpoint call (terminal statuses only).",
    # Columns added after the first release (reasoning_content, sampling_seed, sent_at) are
    # nullable: Lakehouse.ensure adds them in place to ledgers written before them.
    # An append-only ledger committed every few seconds: Delta's default checkpoint every 10
    # commits would rebuild the table state on the driver every ~20 s of a stage run (4-6 s each
    # on a 2-core machine, measured), and doubled the cost of every append and ledger read in
    # bench runs; 100 JSON commits replay in well under a second.
    properties=(("delta.checkpointInterval", "100"),),
    schema=_fields(
        ("request_id", S, False),
        ("stage", S, False),
        ("source_key", S),
        ("task", S),
        ("task_family", S),
        ("sample_index", I),
        ("model", S),
        ("prompt_version", S),
        ("status", S, False),
        ("content", S),
        ("reasoning_content", S),
        ("error_class", S),
        ("error_detail", S),
        ("attempts", I),
        ("latency_ms", D),
        ("prompt_tokens", I),
        ("completion_tokens", I),
        ("finish_reason", S),
        ("sampling_seed", L),
        ("run_id", S),
        ("micro_batch", I),
        ("sent_at", T),
        ("completed_at", T),
        ("batch_id", S),  # the batch that answered it (batch mode, udfs/llm_batch.py); null online
    ),
)

LLM_BATCH_REQUESTS = TableSpec(
    name="llm_batch_requests",
    keys=("batch_id", "request_id"),
    description="Batch membership: which batch each request was put in (written before the batch file is "
                "handed out) and the batch's status; HOLDING statuses keep a request out of every other "
                "batch, RELEASED ones (expired/cancelled/failed) free its unanswered requests "
                "(udfs/llm_batch.py).",
    schema=_fields(
        ("batch_id", S, False),
        ("request_id", S, False),
        ("stage", S, False),
        ("batch_status", S, False),
        ("shard", S),  # the batch's input file name
        ("created_at", T),
        ("updated_at", T),
        ("provider_batch_id", S),  # online mode: the Batch API's batch id (null until submitted)
        ("provider_file_id", S),  # online mode: the uploaded input file's id (null until uploaded)
    ),
)

GENERATED = TableSpec(
    name="generated",
    keys=("gen_id",),
    description="New task-aligned items parsed from generation responses, linked to their seed.",
    schema=_fields(
        ("gen_id", S, False),
        ("seed_id", S, False),
        ("sample_index", I),
        ("task", S),
        ("task_family", S),
        ("answer_format", S),
        ("question", S),
        ("context", S),
        ("choices", STRINGS),
        ("answer_index", I),
        ("answer_text", S),
        ("license", S),
        ("license_class", S),
        ("model", S),
        ("prompt_version", S),
        ("request_id", S),
        ("run_id", S),
        ("generated_at", T),
    ),
)

ENRICHED = TableSpec(
    name="enriched",
    keys=("gen_id", "sample"),
    description="Per sample: relevant knowledge, step-by-step reasoning and the extracted final answer.",
    schema=_fields(
        ("gen_id", S, False),
        ("sample", I, False),
        ("item_kind", S),
        ("task", S),
        ("task_family", S),
        ("answer_format", S),
        ("knowledge", S),
        ("reasoning", S),
        ("final_answer_raw", S),
        ("final_answer", S),
        ("final_answer_index", I),
        ("model", S),
        ("prompt_version", S),
        ("request_id", S),
        ("run_id", S),
        ("enriched_at", T),
    ),
)

MINHASH_SIGNATURES = TableSpec(
    name="minhash_signatures",
    keys=("doc_kind", "doc_id"),
    description="MinHash signature, LSH band hashes and shingle-hash set of each item's stimulus "
                "(context + question + options), of its question alone and its passage alone, for "
                "incremental near-duplicate detection.",
    schema=_fields(
        ("doc_kind", S, False),  # generated | seed | heldout
        ("doc_id", S, False),  # gen_id, seed_id or heldout_id
        ("source_hash", S, False),  # hash of the raw question, context and choices: a change re-signs
        ("params", S, False),  # udfs.minhash.MinHashParams.tag: a change re-signs
        ("num_shingles", I),
        ("shingles", INTS),  # sorted distinct 32-bit shingle hashes (uint32 stored bit for bit as int)
        ("signature", INTS),  # datasketch MinHash hash values (uint32 as int); null when no shingle
        ("band_hashes", LONGS),  # one per LSH band; null when no shingle
        ("question_shingles", INTS),  # the question alone (items with a passage; else null)
        ("question_band_hashes", LONGS),  # the question alone: one per LSH band (items with a passage)
        ("passage_shingles", INTS),  # the passage alone; null when the item has no passage
        ("signed_at", T),
    ),
)

FILTER_DECISIONS = TableSpec(
    name="filter_decisions",
    keys=("gen_id", "filter"),
    description="One decision per curated-candidate item and filter: passed, reason, score, evidence (JSON).",
    schema=_fields(
        ("gen_id", S, False),
        ("filter", S, False),
        ("passed", B, False),
        ("reason", S, False),
        ("score", D),
        ("evidence", S),
        ("item_kind", S),
        ("task", S),
        ("task_family", S),
        ("run_id", S),
        ("decided_at", T),
    ),
)
# Change columns of a decision: run_id and decided_at say when it was last *changed*.
FILTER_DECISION_CHANGE_COLUMNS = ["passed", "reason", "score", "evidence", "item_kind", "task", "task_family"]

_CURATED_FIELDS = (
    ("gen_id", S, False),
    ("item_kind", S, False),
    ("seed_id", S, False),
    ("task", S),
    ("task_family", S),
    ("answer_format", S),
    ("question", S),
    ("context", S),
    ("choices", STRINGS),
    ("answer_index", I),
    ("answer_text", S),
    ("knowledge", S),
    ("reasoning", S),
    ("document", S),
    ("votes_agree", I),
    ("votes_expected", I),
    ("votes_returned", I),
    ("votes_null", I),
    ("agreement", D),
    ("verification", S),
    ("license", S),
    ("license_class", S),
    ("commercial_ok", S),
    ("dataset_path", S),
    ("generation_request_id", S),
    ("generation_model", S),
    ("generation_prompt_version", S),
    ("enrichment_sample", I),
    ("enrichment_request_id", S),
    ("enrichment_model", S),
    ("enrichment_prompt_version", S),
    ("run_id", S),
    ("curated_at", T),
)

CURATED = TableSpec(
    name="curated",
    keys=("gen_id",),
    description="Items that passed every filter except license: item, one majority-agreeing enrichment, "
                "the pretraining document, votes, license and lineage.",
    schema=_fields(*_CURATED_FIELDS),
)

CURATED_COMMERCIAL = TableSpec(
    name="curated_commercial",
    keys=("gen_id",),
    description="The rows of `curated` whose license policy allows commercial training (license filter passed).",
    schema=_fields(*_CURATED_FIELDS),
)
# Everything but run_id / curated_at: a rerun that changes nothing commits nothing.
CURATED_CHANGE_COLUMNS = [f[0] for f in _CURATED_FIELDS if f[0] not in ("gen_id", "run_id", "curated_at")]

HELDOUT_KEYS = TableSpec(
    name="heldout_keys",
    keys=("kind", "key", "heldout_id"),
    description=(
        "Held-out index: every hash a held-out item can be matched on, by kind: 'ngram' (each distinct "
        "word n-gram of its question/options/answer, passage and decontamination text), 'stimulus' (its "
        "whole normalized question + options), 'band' (MinHash LSH bands of a short stimulus) and "
        "'edit_substituted'/'edit_deleted'/'edit_whole' (one-changed-word keys of a short stimulus). "
        "heldout_items counts the held-out items with that (kind, key); boilerplate marks what is "
        "skipped. Rebuilt only when heldout or the contamination settings change "
        "(udfs/decontamination.py, jobs/filters/contamination.py)."
    ),
    schema=_fields(
        ("kind", S, False),
        ("key", L, False),
        ("heldout_id", S, False),
        ("heldout_items", I, False),
        ("boilerplate", B, False),
    ),
)

HELDOUT_SHINGLES = TableSpec(
    name="heldout_shingles",
    keys=("heldout_id",),
    description=(
        "Held-out index, per held-out item: task, split, the normalized stimulus (question + options) "
        "and how many held-out items share it, the normalized accepted answers, and for short stimuli "
        "the character-shingle hashes of the stimulus and of the passage (the exact Jaccard check of "
        "near-duplicate candidates). Rebuilt with heldout_keys."
    ),
    schema=_fields(
        ("heldout_id", S, False),
        ("task", S, False),
        ("split", S, False),
        ("stimulus", S, False),
        ("stimulus_key", L, False),
        ("stimulus_items", I, False),
        ("boilerplate", B, False),
        ("n_words", I, False),
        ("n_ngrams", I, False),
        ("answers", STRINGS),
        ("shingles", INTS),
        ("context_shingles", INTS),
    ),
)

HELDOUT_EMBEDDINGS = TableSpec(
    name="heldout_embeddings",
    keys=("heldout_id",),
    description=(
        "Sentence embedding of every held-out item (question + options, udfs/paraphrase.py "
        "embedding_text), L2-normalized, for the paraphrase filter's retrieval. Rebuilt only when heldout "
        "or curate.paraphrase.model changes: the commit's userMetadata names both (jobs/filters/paraphrase.py)."
    ),
    schema=_fields(
        ("heldout_id", S, False),
        ("task", S, False),
        ("split", S, False),
        ("embedding", ArrayType(FloatType()), False),
    ),
)

TEXT_EMBEDDINGS = TableSpec(
    name="text_embeddings",
    keys=("model", "text_hash"),
    description=(
        "The embedding cache: one L2-normalized vector per (embedding model, sha256 of the exact text "
        "embedded), written by MERGE (insert-only, so a rerun commits nothing) by "
        "jobs/filters/embedding_cache.py: a text is embedded once per model across runs, by the local "
        "model (source 'local') or a /v1/embeddings endpoint (source 'endpoint'); the cross-lingual "
        "retrieval's vectors (model 'universal-sentence-encoder-multilingual-3', 512 dims) too."
    ),
    schema=_fields(
        ("model", S, False),
        ("text_hash", S, False),
        ("embedding", ArrayType(FloatType()), False),
        ("dim", I, False),
        ("source", S, False),
        ("embedded_at", T, False),
    ),
)

PARAPHRASE_JUDGMENTS = TableSpec(
    name="paraphrase_judgments",
    keys=("pair_id",),
    description=(
        "The paraphrase judge's verdict per (candidate, held-out item) pair whose similarity reached "
        "curate.paraphrase.floor: 'same' (the candidate is the held-out question reworded or translated) "
        "or 'different', the judge's reason, and the ledger request_id (stage 'judge')."
    ),
    schema=_fields(
        ("pair_id", S, False),
        ("gen_id", S, False),
        ("heldout_id", S, False),
        ("heldout_task", S),
        ("heldout_split", S),
        ("similarity", D),
        ("verdict", S, False),
        ("judge_reason", S),
        ("task", S),
        ("task_family", S),
        ("model", S),
        ("prompt_version", S),
        ("request_id", S),
        ("run_id", S),
        ("judged_at", T),
    ),
)

PUBLICATIONS = TableSpec(
    name="publications",
    keys=("dataset", "delta_version"),
    description="One row per published Delta version of a curated dataset: its export folder, shard "
                "layout, row count and manifest checksum (jobs/publish.py).",
    schema=_fields(
        ("dataset", S, False),
        ("delta_version", L, False),
        ("table_name", S),
        ("rows", L),
        ("shard_rows", I),
        ("shards", I),
        ("export_path", S),
        ("manifest_sha256", S),
        ("config_fingerprint", S),
        ("code_version", S),
        ("run_id", S),
        ("published_at", T),
    ),
)
CALIBRATION = TableSpec(
    name="calibration",
    keys=("task_family", "threshold_label"),
    description="The verification vote measured against gold on the calibration sample of seeds (issue 26; "
                "udfs/calibration.py): per task family and agreement threshold, seeds measured, passing and "
                "right, precision and coverage with 95% Wilson intervals; in_use marks the threshold curate "
                "applied, whose precision is the estimated answer accuracy of `curated` for that family.",
    schema=_fields(
        ("task_family", S, False),
        ("threshold_label", S, False),  # 'majority' (strict majority) or the threshold, e.g. '0.75'
        ("threshold", D),               # NULL = strict majority
        ("measured", L),                # seeds with a readable gold answer of a verifiable format
        ("passed", L),
        ("correct", L),
        ("precision", D),
        ("precision_low", D),
        ("precision_high", D),
        ("coverage", D),
        ("coverage_low", D),
        ("coverage_high", D),
        ("in_use", B),                  # the threshold the verification filter applied to the family
        ("source", S),                  # of the threshold in use: config | strict_majority | auto | auto_target_missed
        ("target_precision", D),        # curate.min_agreement.auto, if set
        ("samples_per_item", I),
        ("enrichment_model", S),
        ("run_id", S),
        ("measured_at", T),
    ),
)
CURATE_RUNS = TableSpec(
    name="curate_runs",
    keys=("run_id",),
    description="One row per curate run that evaluated its items (issue 28; jobs/curate.py, udfs/curate_state.py): "
                "its task scope, the Delta versions of the tables its decisions are a function of, digests of "
                "its settings and filter code, and its tally, so a rerun with none of these changed evaluates "
                "nothing and says so.",
    schema=_fields(
        ("run_id", S, False),
        ("scope", S, False),             # '*' (every task) or the sorted task names, comma-separated
        ("inputs", S),                   # JSON {table: Delta version or null}
        ("config_digest", S),            # sha256 of the curate settings (udfs/curate_state.py)
        ("code_digest", S),              # sha256 of the code version, filter sources and declared filters
        ("candidates", L),
        ("curated", L),
        ("curated_commercial", L),
        ("tally", S),                    # JSON [{filter, passed, reason, family, count}]
        ("not_checked", S),              # JSON {filter: why}
        ("seconds", D),                  # wall time of the run
        ("finished_at", T),
    ),
)
CALIBRATION_CHANGE_COLUMNS = ["threshold", "measured", "passed", "correct", "in_use", "source", "target_precision",
                              "samples_per_item", "enrichment_model"]

# A re-export of the same version with the same layout changes none of these: nothing is committed.
PUBLICATION_CHANGE_COLUMNS = ["rows", "shard_rows", "shards", "export_path", "manifest_sha256"]

ALL_TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (TASK_CATALOG, LICENSE_POLICY, SEEDS, HELDOUT, QUARANTINE, LLM_CALLS, LLM_BATCH_REQUESTS, GENERATED, ENRICHED,
                 MINHASH_SIGNATURES, FILTER_DECISIONS, CURATED, CURATED_COMMERCIAL,
                 HELDOUT_KEYS, HELDOUT_SHINGLES, HELDOUT_EMBEDDINGS, TEXT_EMBEDDINGS, PARAPHRASE_JUDGMENTS, CALIBRATION,
                 PUBLICATIONS, CURATE_RUNS)
}
