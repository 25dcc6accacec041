-- stg_candidates: one row per item the curate stage decides on, limited to the run's tasks.
--   item_kind 'generated': a row of `generated` (gen_id, linked to its seed and generation request);
--   item_kind 'seed':      an answer-enriched seed (enrich.enrich_seeds), gen_id = seed_id, its gold
--                          answer as the answer; it has no generation request. Seeds enriched only as
--                          the calibration sample (enrich.calibration_per_family) are not candidates.
-- Adds the keys every filter compares on:
--   answer_key  the item's own answer as a comparison key (udfs/verification.py; NULL = unreadable
--               or a format with no comparable answer)
--   dedup_key   sha256 of the normalized context, question and answer (udfs/textnorm.py): two items
--               with the same key say the same thing up to case, spacing, punctuation, number format.
WITH generated_items AS (
    SELECT gen_id, 'generated' AS item_kind, seed_id, task, task_family, answer_format, question, context,
           choices, answer_index, answer_text, license, license_class,
           request_id AS generation_request_id, model AS generation_model,
           prompt_version AS generation_prompt_version
    FROM ${table.generated}
    WHERE ${all_tasks} OR array_contains(${tasks}, task)
),
enriched_seed_ids AS (
    SELECT DISTINCT gen_id AS seed_id FROM ${table.enriched} WHERE item_kind = 'seed' AND ${enrich_seeds}
),
seed_items AS (
    SELECT s.seed_id AS gen_id, 'seed' AS item_kind, s.seed_id, s.task, s.task_family, s.answer_format,
           s.question, s.context, s.choices, s.answer_index, s.answer_text, s.license, s.license_class,
           CAST(NULL AS STRING) AS generation_request_id, CAST(NULL AS STRING) AS generation_model,
           CAST(NULL AS STRING) AS generation_prompt_version
    FROM ${table.seeds} s
    JOIN enriched_seed_ids e ON e.seed_id = s.seed_id
    WHERE ${all_tasks} OR array_contains(${tasks}, s.task)
),
items AS (
    SELECT * FROM generated_items
    UNION ALL
    SELECT * FROM seed_items
)
SELECT items.*,
       answer_key(answer_format, answer_text, answer_index, choices) AS answer_key,
       sha2(concat_ws('\u001f', normalize_text(context), normalize_text(question), normalize_text(answer_text)), 256)
           AS dedup_key
FROM items
